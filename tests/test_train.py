"""Retraining from chart review, end to end: run -> reviewed CSV -> train -> run --model -> evaluate --reviewed."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import cli, schema, vocab
from pipeline.errors import CalcmineError

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT / "examples" / "archive"
GOLD_CASES = ROOT / "tests" / "gold" / "sample" / "cases.csv"
NAME = "sample-test"
UNREVIEWED = "P008"  # left empty in the reviewed file: skipped by train


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=os.environ | {"PYTHONWARNINGS": "ignore"}, timeout=300)


def main_out(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(list(args))
    return code, buf.getvalue()


def main_err(*args: str) -> subprocess.CompletedProcess:
    """cli.main in-process (fast), shaped like a subprocess result for ``one_line_error``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return path


def one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


class Evil:
    """Any class skops does not know is an untrusted type."""

    def __init__(self) -> None:
        self.command = "echo pwned"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("train")
    run = base / "run"
    code, _ = main_out("run", str(ARCHIVE), "--no-prefect", "--out", str(run))
    assert code == 0
    gold = dict(pd.read_csv(GOLD_CASES)[["patient_id", "label"]].itertuples(index=False))
    rows = read_rows(run / "review.csv")
    assert {r["patient_id"] for r in rows} == set(gold)
    for r in rows:
        r["reviewer_label"] = "" if r["patient_id"] == UNREVIEWED else gold[r["patient_id"]]
    reviewed = write_rows(run / "reviewed.csv", rows)
    models = base / "models"
    code, out = main_out("train", str(reviewed), "--out", str(models), "--name", NAME)
    assert code == 0
    return {"base": base, "run": run, "reviewed": reviewed, "models": models, "gold": gold, "train_out": out}


def test_train_writes_model_and_card(sample):
    from pipeline.features import feature_names

    models = sample["models"]
    model, card_path, md = models / f"{NAME}.skops", models / f"{NAME}.json", models / f"{NAME}.md"
    assert model.is_file() and card_path.is_file() and md.is_file()
    assert oct(model.stat().st_mode & 0o777) == "0o600"
    assert model.read_bytes()[:4] == b"PK\x03\x04"  # a skops zip, not a pickle
    card = json.loads(card_path.read_text())
    assert card["name"] == NAME and card["model_file"] == model.name
    assert card["features"] == feature_names()
    assert card["n_cases"] == 31 and card["training_data"]["rows_unreviewed_skipped"] == 1
    expected = pd.Series([v for k, v in sample["gold"].items() if k != UNREVIEWED]).value_counts().to_dict()
    assert card["label_counts"] == expected
    files = card["training_data"]["files"]
    assert files["reviewed.csv"] == hashlib.sha256(sample["reviewed"].read_bytes()).hexdigest()
    for table in ("mentions", "labs", "conditions", "cases"):
        assert files[f"{table}.parquet"] == hashlib.sha256((sample["run"] / f"{table}.parquet").read_bytes()).hexdigest()
    assert card["version"] == f"{NAME}@{card['training_data']['sha256'][:12]}"
    cv = card["cross_validation"]
    assert cv["k"] == min(5, min(expected.values())) == 4 and cv["stratified"]
    assert 0.0 <= cv["accuracy"] <= 1.0
    assert set(cv["per_class"]) == set(expected)
    assert all({"precision", "recall", "support"} <= set(m) for m in cv["per_class"].values())
    matrix = cv["confusion"]["matrix"]
    assert cv["confusion"]["labels"] == list(vocab.LABELS) and len(matrix) == 4 and all(len(r) == 4 for r in matrix)
    assert sum(map(sum, matrix)) == 31
    assert sum(matrix[i][i] for i in range(4)) / 31 == pytest.approx(cv["accuracy"], abs=1e-3)
    assert {"scikit-learn", "calcmine", "skops"} <= set(card["versions"]) and card["created_at"]
    assert "run_labels_vs_reviewers" in card
    text = md.read_text()
    assert "Cross-validation" in text and files["reviewed.csv"] in text
    out = sample["train_out"]
    assert "cross-validation (4-fold, stratified): accuracy" in out and "confusion" in out
    assert str(model) in out and str(card_path) in out


def test_training_is_deterministic(sample, tmp_path):
    from pipeline.train import train

    again = train(sample["reviewed"], out_dir=tmp_path, name=NAME)
    first = json.loads((sample["models"] / f"{NAME}.json").read_text())
    assert again.card["cross_validation"] == first["cross_validation"]
    assert again.card["training_data"] == first["training_data"]


def test_features_follow_the_transparent_scoring(sample):
    from pipeline.cases import lab_summary
    from pipeline.features import LAB_FEATURES, case_features, feature_names

    run = sample["run"]
    tables = {n: pd.read_parquet(run / f"{n}.parquet") for n in ("mentions", "labs", "conditions", "cases")}
    feats = case_features(tables["cases"], tables["mentions"], tables["conditions"], tables["labs"])
    assert list(feats.columns) == feature_names() and list(feats.index) == sorted(tables["cases"]["patient_id"])
    mech = tables["mentions"].groupby("patient_id")["mechanism"].value_counts().unstack(fill_value=0)
    for kind in ("metastatic", "dystrophic", "unclear"):
        got = mech[kind] if kind in mech else pd.Series(dtype=int)
        assert (feats[f"n_mech_{kind}"] == got.reindex(feats.index, fill_value=0)).all(), kind
    assert (feats["n_present"] == tables["cases"].set_index("patient_id")["n_present"].reindex(feats.index)).all()
    summary_values = {c for c in lab_summary(tables["labs"]).columns if c != "patient_id" and not c.endswith(("_note", "_start", "_end", "_row", "_date"))}
    assert summary_values <= set(LAB_FEATURES)


def test_run_with_trained_model(sample, tmp_path):
    import pyarrow.parquet as pq

    model = sample["models"] / f"{NAME}.skops"
    out = tmp_path / "out"
    code, printed = main_out("run", str(ARCHIVE), "--no-prefect", "--out", str(out), "--model", str(model))
    assert code == 0 and "cases:" in printed
    table = pq.read_table(out / "cases.parquet")
    assert table.schema.equals(schema.CASES, check_metadata=False)
    cases = table.to_pandas()
    version = json.loads((sample["models"] / f"{NAME}.json").read_text())["version"]
    assert (cases["model"] == version).all() and version.startswith(NAME)
    assert json.loads((out / "run.json").read_text())["model"] == version
    assert set(cases["label"]) <= set(vocab.LABELS)
    assert cases["confidence"].between(0, 1).all()
    assert (cases.loc[cases["n_present"] == 0, "label"] == "no_calcification").all()
    present = cases[cases["n_present"] > 0]
    assert present["reasons"].str.startswith(f"trained model {NAME}: p(").all()
    assert all(f"p({lab})=" in r for lab, r in zip(present["label"], present["reasons"]))
    # evidence pointers and mention mechanisms are the transparent classifier's
    base = pd.read_parquet(sample["run"] / "cases.parquet").set_index("patient_id")
    assert (cases.set_index("patient_id")["evidence"] == base["evidence"]).all()
    m_new, m_old = pd.read_parquet(out / "mentions.parquet"), pd.read_parquet(sample["run"] / "mentions.parquet")
    assert m_new["mechanism"].fillna("").tolist() == m_old["mechanism"].fillna("").tolist()


def test_evaluate_reviewed_prints_agreement(sample):
    result = run_cli("evaluate", "--reviewed", str(sample["reviewed"]))
    assert result.returncode == 0, result.stderr
    rows = [r for r in read_rows(sample["reviewed"]) if r["reviewer_label"]]
    accuracy = sum(r["label"] == r["reviewer_label"] for r in rows) / len(rows)
    assert f"accuracy                     {accuracy:.3f}" in result.stdout
    assert "confusion" in result.stdout and "label metastatic" in result.stdout
    assert "cases                        31" in result.stdout


def test_loading_refuses_untrusted_or_foreign_files(tmp_path):
    import skops.io as sio

    from pipeline.train import load_classifier

    evil = tmp_path / "evil.skops"
    sio.dump({"format": "calcmine-trained-case-model", "payload": Evil()}, evil)
    with pytest.raises(CalcmineError, match="untrusted types"):
        load_classifier(evil)
    pickled = tmp_path / "pickled.skops"
    pickled.write_bytes(pickle.dumps({"format": "calcmine-trained-case-model"}))
    with pytest.raises(CalcmineError, match="not a skops model file"):
        load_classifier(pickled)
    foreign = tmp_path / "foreign.skops"
    sio.dump({"a": 1}, foreign)
    with pytest.raises(CalcmineError, match="not a calcmine trained case model"):
        load_classifier(foreign)
    one_line_error(run_cli("run", str(ARCHIVE), "--no-prefect", "--out", str(tmp_path / "o"), "--model", str(evil)), "untrusted types")


def test_reviewed_csv_is_read_like_a_spreadsheet_wrote_it(tmp_path):
    from pipeline.train import read_reviewed

    rows = [{"patient_id": "'=P1", "label": "dystrophic", "reviewer_label": " Metastatic "},
            {"patient_id": "P2", "label": "metastatic", "reviewer_label": ""}]
    got = read_reviewed(write_rows(tmp_path / "r.csv", rows), ("patient_id", "label", "reviewer_label"))
    assert got.to_dict("records") == [{"row": 2, "patient_id": "=P1", "label": "dystrophic", "reviewer_label": "metastatic"}]


def _bad_label(d: Path) -> Path:
    rows = read_rows(d["run"] / "review.csv")
    rows[0]["reviewer_label"], rows[1]["reviewer_label"] = "metastatic", "calcified?"
    return write_rows(d["run"] / "bad_label.csv", rows)


def _one_label(d: Path) -> Path:
    rows = read_rows(d["run"] / "review.csv")
    rows[0]["reviewer_label"] = rows[1]["reviewer_label"] = "dystrophic"
    return write_rows(d["run"] / "one_label.csv", rows)


def _stranger(d: Path) -> Path:
    rows = read_rows(d["run"] / "review.csv")
    rows[0]["reviewer_label"], rows[1]["reviewer_label"] = "metastatic", "dystrophic"
    rows[1]["patient_id"] = "NOT-IN-RUN"
    return write_rows(d["run"] / "stranger.csv", rows)


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda d: d["base"] / "missing.csv", [], "reviewed file not found"),
        (lambda d: d["run"] / "review.csv", [], "no reviewed rows"),
        (_bad_label, [], "row 3: reviewer_label 'calcified?' is not a case label"),
        (_one_label, [], "at least two different reviewer labels"),
        (_stranger, [], "row 3: patient not in"),
        (lambda d: d["reviewed"], ["--run", "/nonexistent/run"], "run folder not found"),
        (lambda d: d["reviewed"], ["--name", "../escape"], "not usable as a file name"),
    ],
)
def test_train_bad_input_is_one_line_and_exit_2(sample, tmp_path, make, extra, message):
    path = make(sample)
    one_line_error(main_err("train", str(path), "--out", str(tmp_path / "m"), *extra), message)
    assert not (tmp_path / "m").exists()


def test_evaluate_reviewed_bad_input(sample, tmp_path):
    one_line_error(main_err("evaluate", "--reviewed", str(tmp_path / "none.csv")), "reviewed file not found")
    one_line_error(main_err("evaluate", "--reviewed", str(sample["run"] / "review.csv")), "no reviewed rows")
    one_line_error(main_err("evaluate", "--reviewed", str(_bad_label(sample))), "is not a case label")
    one_line_error(main_err("evaluate"), "nothing to evaluate")
    # and once through a real process: exit code 2, one line, no traceback
    one_line_error(run_cli("train", str(tmp_path / "none.csv")), "reviewed file not found")
