"""``process(notes) -> Tables``: the whole pipeline on a DataFrame of notes, no Prefect needed.

Reads like its table of contents: validate notes -> NLP -> rows -> labs -> cases.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pandas as pd
from spacy.language import Language

from pipeline import schema
from pipeline.cases import CaseClassifier
from pipeline.io import validate_notes
from pipeline.labs import UnitTable
from pipeline.nlp import build_nlp
from pipeline.tables import RowSet, normalise_labs, run_nlp


@dataclass
class Tables:
    """The results of a run, one DataFrame per output table."""

    mentions: pd.DataFrame
    labs: pd.DataFrame
    conditions: pd.DataFrame
    cases: pd.DataFrame
    failures: pd.DataFrame
    counts: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=2)
def default_nlp() -> Language:
    """The default pipeline, built once per process."""
    return build_nlp()


def extract(notes: pd.DataFrame, nlp: Language | None = None) -> RowSet:
    """NLP over valid notes -> rows (mentions, labs, conditions) and failures."""
    return run_nlp(nlp or default_nlp(), notes)


def _frame(rows, columns) -> pd.DataFrame:
    """Rows as a DataFrame: lists of dicts from the NLP, or DataFrames read back from shards."""
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=columns)


def assemble(notes: pd.DataFrame, rows: RowSet, classifier: CaseClassifier | None = None,
             extra_labs: pd.DataFrame | None = None) -> Tables:
    """Rows -> normalised tables -> classified cases."""
    units = UnitTable()
    mentions = schema.conform(_frame(rows.mentions, schema.MENTIONS.names), schema.MENTIONS)
    conditions = schema.conform(_frame(rows.conditions, schema.CONDITIONS.names), schema.CONDITIONS)
    labs = normalise_labs(rows.labs, units)
    if extra_labs is not None and len(extra_labs):
        labs = schema.conform(pd.concat([labs, extra_labs], ignore_index=True), schema.LABS)
    classifier = classifier or CaseClassifier()
    patient_ids = sorted(notes["patient_id"].unique().tolist())
    ranges = {a: units.reference(a) for a in units.ranges}
    cases, mechanism = classifier.classify(patient_ids, notes, mentions, conditions, labs, ranges)
    mentions["mechanism"] = mechanism.reindex(mentions.index).replace("", pd.NA).astype("string")
    failures = schema.conform(pd.DataFrame(rows.failures, columns=schema.FAILURES.names), schema.FAILURES)
    counts = {
        "notes": int(len(notes)),
        "patients": len(patient_ids),
        "notes_processed": rows.notes_done,
        "notes_with_calcification": rows.notes_with_mentions,
        "mentions": int(len(mentions)),
        "labs": int(len(labs)),
        "conditions": int(len(conditions)),
        "cases_by_label": {k: int(v) for k, v in cases["label"].value_counts().sort_index().items()},
        "notes_failed": int(len(failures)),
    }
    return Tables(mentions, labs, conditions, cases, failures, counts)


def process(notes: pd.DataFrame, nlp: Language | None = None, model: str | None = None) -> Tables:
    """Run calcmine on notes (columns note_id, patient_id, text; note_date, note_type optional)."""
    valid, invalid = validate_notes(notes)
    rows = extract(valid, nlp)
    rows.failures = invalid + rows.failures
    from pipeline.train import load_classifier

    return assemble(valid, rows, load_classifier(model) if model else None)


def classify_inputs(model: str | None = None, labs: str | None = None):
    """What classifying a run needs besides its rows: the case model (evidence JSON or trained
    .skops), and the structured labs with a failure record per unusable row (none without
    ``labs``). Returns (classifier, extra_labs or None, problems)."""
    from pipeline.train import load_classifier

    extra_labs, problems = None, []
    if labs:
        from pipeline.structured import load_structured_labs

        extra_labs, problems = load_structured_labs(labs)
    return load_classifier(model), extra_labs, problems


def classify_run(notes: pd.DataFrame, rows: RowSet, model: str | None = None, labs: str | None = None):
    """A run's rows -> tables: structured labs merged (unusable rows recorded as failures), the
    case model loaded (evidence JSON or trained .skops), tables assembled. Returns (tables, classifier).

    The archive aggregation uses the same parts (``classify_inputs`` then ``assemble``) one bucket
    of patients at a time: everything ``assemble`` computes is per patient or per note."""
    classifier, extra_labs, problems = classify_inputs(model, labs)
    if problems:
        rows.failures = list(rows.failures) + problems
    return assemble(notes, rows, classifier, extra_labs), classifier
