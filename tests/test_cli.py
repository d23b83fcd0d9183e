"""The calcmine command: outputs and schemas, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import cli, schema

NOTES = [
    {"note_id": "n1", "patient_id": "p1", "note_date": "2024-02-01", "note_type": "radiology",
     "text": "FINDINGS: Calcified granuloma in the right upper lobe. No effusion."},
    {"note_id": "n2", "patient_id": "p2", "note_date": "2024-02-03", "note_type": "progress",
     "text": "HPI: ESRD on HD. Ca 10.9, Phos 7.8, iPTH 1,250 pg/mL.\nA/P: Calciphylaxis of both thighs, biopsy-proven."},
    {"note_id": "n3", "patient_id": "p3", "note_date": "2024-02-05", "note_type": "clinic",
     "text": "Calcium carbonate 500 mg BID. No nephrocalcinosis on ultrasound."},
]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=os.environ | {"PYTHONWARNINGS": "ignore"}, timeout=300)


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_run_writes_every_table_with_its_schema(tmp_path):
    src = write_csv(tmp_path / "notes.csv", NOTES)
    out = tmp_path / "out"
    assert cli.main(["run", str(src), "--out", str(out), "--no-prefect"]) == 0
    for name, arrow_schema in schema.TABLES.items():
        table = pq.read_table(out / f"{name}.parquet")
        assert table.schema.names == arrow_schema.names, name
        assert table.schema.equals(arrow_schema, check_metadata=False), name
    cases = pd.read_parquet(out / "cases.parquet").set_index("patient_id")
    assert cases.loc["p1", "label"] == "dystrophic"
    assert cases.loc["p2", "label"] == "metastatic"
    assert cases.loc["p3", "label"] == "no_calcification"
    assert "phosphate 7.8" in cases.loc["p2", "reasons"]
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["notes_processed"] == 3 and run["failures"] == []
    assert oct((out / "cases.parquet").stat().st_mode & 0o777) == "0o600"


def test_formats_and_column_mapping(tmp_path):
    frame = pd.DataFrame(NOTES).rename(columns={"note_id": "doc", "patient_id": "mrn", "text": "body"})
    frame.to_parquet(tmp_path / "a.parquet")
    with open(tmp_path / "b.jsonl", "w", encoding="utf-8") as fh:
        for n in NOTES:
            fh.write(json.dumps(n | {"note_id": n["note_id"] + "j"}) + "\n")
    (tmp_path / "txt" / "p9").mkdir(parents=True)
    (tmp_path / "txt" / "p9" / "r1.txt").write_text("Bilateral medullary nephrocalcinosis.", encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["run", str(tmp_path / "a.parquet"), "--id-col", "doc", "--patient-col", "mrn", "--text-col", "body",
                     "--out", str(out), "--no-prefect"]) == 0
    assert len(pd.read_parquet(out / "cases.parquet")) == 3
    out2 = tmp_path / "out2"
    assert cli.main(["run", str(tmp_path / "b.jsonl"), str(tmp_path / "txt"), "--out", str(out2), "--no-prefect"]) == 0
    mentions = pd.read_parquet(out2 / "mentions.parquet")
    assert {"n1j", "r1"} <= set(mentions["note_id"])
    assert mentions.loc[mentions["note_id"] == "r1", "patient_id"].item() == "p9"


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "missing.csv", "input not found"),
        (lambda d: write_csv(d / "x.csv", [{"id": 1, "patient_id": 1, "text": "a"}]), "missing column 'note_id'"),
        (lambda d: put(d / "x.csv", b"note_id,patient_id,text\nn1,p1,\xff\xfe bad\n"), "not UTF-8"),
        (lambda d: put(d / "x.xlsx", b"PK"), "unsupported file type"),
        (lambda d: put(d / "x.jsonl", b"{not json}\n"), "cannot be read"),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero_exit(tmp_path, setup, message):
    path = setup(tmp_path)
    result = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--no-prefect")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_notes_are_reported_and_the_rest_processed(tmp_path):
    rows = NOTES + [
        {"note_id": "e1", "patient_id": "p4", "note_date": None, "note_type": None, "text": "   "},
        {"note_id": "e2", "patient_id": None, "note_date": None, "note_type": None, "text": "Calcified aorta."},
        {"note_id": "n1", "patient_id": "p1", "note_date": None, "note_type": None, "text": "A different text."},
        dict(NOTES[0]),  # an exact duplicate is kept once, silently
    ]
    out = tmp_path / "out"
    assert cli.main(["run", str(write_csv(tmp_path / "n.csv", rows)), "--out", str(out), "--no-prefect"]) == 0
    run = json.loads((out / "run.json").read_text())
    failed = {(f["note_id"], f["error"].split(";")[0]) for f in run["failures"]}
    assert failed == {("e1", "empty text"), ("e2", "no patient_id"), ("n1", "duplicate note_id with different text")}
    mentions = pd.read_parquet(out / "mentions.parquet")
    assert (mentions["note_id"] == "n1").sum() == 1  # not duplicated
    assert run["counts"]["notes_processed"] == 3


def test_unreadable_file_in_a_folder_is_recorded_others_processed(tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    write_csv(folder / "good.csv", NOTES)
    (folder / "bad.csv").write_bytes(b"note_id,patient_id,text\nq1,p1,\xff\n")
    out = tmp_path / "out"
    assert cli.main(["run", str(folder), "--out", str(out), "--no-prefect"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert len(run["failures"]) == 1 and "bad.csv" in run["failures"][0]["error"]
    assert run["counts"]["notes_processed"] == 3


def test_review_csv_is_spreadsheet_safe(tmp_path):
    rows = [dict(NOTES[0], patient_id="=HYPERLINK(\"http://x\",\"y\")"), NOTES[1]]
    out = tmp_path / "out"
    assert cli.main(["run", str(write_csv(tmp_path / "n.csv", rows)), "--out", str(out), "--no-prefect"]) == 0
    raw = (out / "review.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(out / "review.csv", encoding="utf-8-sig", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {"reviewer_label", "reviewer_comment", "label", "confidence", "reasons", "evidence"} <= set(table[0])
    for row in table:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert any(r["patient_id"] == "'=HYPERLINK(\"http://x\",\"y\")" for r in table)


def test_check_rules_command():
    result = run_cli("check-rules")
    assert result.returncode == 0 and "all valid" in result.stdout


def test_structured_labs_are_merged_normalised_and_used(tmp_path):
    src = write_csv(tmp_path / "notes.csv", [NOTES[0]])  # a calcified granuloma, no labs in the text
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,analyte,value,unit,taken_at\n"
                    "p1,Calcium,2.6,mmol/L,2024-02-01\np1,PO4,3.9,mg/dL,2024-02-01\np1,sodium,140,mmol/L,2024-02-01\n")
    out = tmp_path / "out"
    assert cli.main(["run", str(src), "--labs", str(labs), "--out", str(out), "--no-prefect", "--no-report"]) == 0
    table = pd.read_parquet(out / "labs.parquet")
    structured = table[table["source"] == "structured"].set_index("analyte")
    assert structured.loc["calcium", "value_std"] == pytest.approx(10.42, rel=1e-3)  # 2.6 mmol/L x 4.008
    assert structured.loc["phosphate", "flag"] == "normal"
    case = pd.read_parquet(out / "cases.parquet").set_index("patient_id").loc["p1"]
    assert case["label"] == "dystrophic" and "measured and normal" in case["reasons"]
    failures = json.loads((out / "run.json").read_text())["failures"]
    assert len(failures) == 1 and "unknown analyte 'sodium'" in failures[0]["error"]
    result = run_cli("run", str(src), "--labs", str(tmp_path / "missing.csv"), "--out", str(out), "--no-prefect")
    assert result.returncode == 2 and "labs file not found" in result.stderr


def test_structured_lab_reasons_name_their_file_row_and_date(tmp_path):
    src = write_csv(tmp_path / "notes.csv", [NOTES[0]])
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,analyte,value,unit,taken_at\np1,Calcium,12.4,mg/dL,2024-03-05\n")
    out = tmp_path / "out"
    assert cli.main(["run", str(src), "--labs", str(labs), "--out", str(out), "--no-prefect", "--no-report"]) == 0
    reasons = pd.read_parquet(out / "cases.parquet").set_index("patient_id").loc["p1", "reasons"].split(" | ")
    calcium = [r for r in reasons if r.startswith("serum calcium 12.4")]
    assert calcium and all(r.endswith("(structured labs labs.csv:2, taken 2024-03-05)") for r in calcium)
