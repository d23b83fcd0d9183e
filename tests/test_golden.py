"""Golden end-to-end test: the whole pipeline on the bundled sample archive against its
hand-written gold (tests/gold/sample), plus floors on the hand-written gold sets.

The floors are set below the figures measured when they were written (see the issue notes) so a
regression fails the suite; raise them as the pipeline improves.
"""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from pipeline import evaluate as ev
from pipeline.io import load_inputs
from pipeline.process import process


@pytest.fixture(scope="module")
def sample(root):
    notes, failures, _ = load_inputs([root / "examples" / "archive"])
    assert not failures
    return notes, process(notes)


def _gold_items(root, notes, kind):
    texts = dict(zip(notes["note_id"], notes["text"]))
    items = []
    with open(root / "tests" / "gold" / "sample" / f"{kind}.jsonl", encoding="utf-8") as fh:
        for line in fh:
            g = json.loads(line)
            items.append({"id": g["note_id"], "text": texts[g["note_id"]], kind: g[kind]})
    return items


def test_sample_archive_size_and_coverage(sample):
    notes, tables = sample
    assert len(notes) >= 80 and notes["patient_id"].nunique() >= 30
    assert set(tables.cases["label"]) == {"dystrophic", "metastatic", "indeterminate", "no_calcification"}


def test_sample_case_labels_match_gold(root, sample):
    _, tables = sample
    with open(root / "tests" / "gold" / "sample" / "cases.csv", encoding="utf-8") as fh:
        gold = {r["patient_id"]: r["label"] for r in csv.DictReader(fh)}
    pred = dict(zip(tables.cases["patient_id"], tables.cases["label"]))
    assert set(pred) == set(gold)
    metrics, errors = ev.case_agreement(gold, pred)
    assert metrics["accuracy"] >= 0.90, errors


def test_sample_mentions_match_gold(root, sample, nlp):
    notes, _ = sample
    metrics, errors = ev.evaluate_mentions(_gold_items(root, notes, "mentions"), nlp)
    assert metrics["presence per text"]["f1"] >= 0.95, errors[:10]
    assert metrics["mentions (overlap)"]["f1"] >= 0.90, errors[:10]
    assert metrics["assertion accuracy"] >= 0.88, errors[:10]
    assert metrics["sites"]["f1"] >= 0.93, errors[:10]


def test_sample_labs_match_gold(root, sample, nlp):
    notes, _ = sample
    metrics, errors = ev.evaluate_labs(_gold_items(root, notes, "labs"), nlp)
    assert metrics["values"]["f1"] >= 0.98, errors[:10]


def test_every_case_reason_points_at_evidence(sample):
    notes, tables = sample
    texts = dict(zip(notes["note_id"], notes["text"]))
    for case in tables.cases.itertuples():
        evidence = json.loads(case.evidence)
        if case.label != "no_calcification":
            assert evidence, case.patient_id
        for item in evidence:
            assert item["note_id"] in texts
            note = texts[item["note_id"]]
            assert 0 <= item["start"] < item["end"] <= len(note)


def test_mechanism_column_is_set_for_present_mentions(sample):
    _, tables = sample
    present = tables.mentions[tables.mentions["assertion"] == "present"]
    assert present["mechanism"].notna().all()
    assert set(present["mechanism"]) <= {"dystrophic", "metastatic", "unclear"}
    assert tables.mentions.loc[tables.mentions["assertion"] != "present", "mechanism"].isna().all()


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_gold_set_floors(gold_dir, split):
    report = ev.evaluate_path(gold_dir, split)
    m = {name.split(" (")[0] + f" ({split})": metrics for name, metrics in report.sections.items()}
    mentions = m[f"mentions ({split})"]
    assert mentions["presence per text"]["f1"] >= 0.97
    assert mentions["sites"]["f1"] >= 0.78
    assert mentions["assertion accuracy"] >= 0.90
    assert m[f"negation ({split})"]["negation"]["f1"] >= 0.93
    assert m[f"labs ({split})"]["values"]["f1"] >= {"dev": 0.99, "heldout": 0.95}[split]
    assert m[f"cases ({split})"]["accuracy"] >= 0.88
