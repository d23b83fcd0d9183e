"""Archive runs: incremental, crash-safe, sharded, from files and SQL; the Prefect flow with
local worker processes and on a local Dask cluster."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from pipeline import archive

COLUMNS = {"id": "note_id", "patient": "patient_id", "text": "text"}


def run_local(inputs, out, shard_size=10, sql=None, query=None, stop_after=None):
    """The archive flow's steps without Prefect: plan, process shards, aggregate."""
    store = archive.ShardStore(out)
    plan = store.plan(archive.discover([str(i) for i in inputs], sql, query), COLUMNS, shard_size)
    for i, staged in enumerate(plan.staged):
        if stop_after is not None and i >= stop_after:
            return None, plan
        archive.process_shard(staged, str(out), store.version)
    info = {"staged": plan.staged, "counts": plan.counts, "failures": plan.failures, "read": plan.read}
    return archive.aggregate_run(str(out), store.version, info, None, None, False, {}), plan


def tables(out: Path) -> dict[str, pd.DataFrame]:
    keys = {"mentions": ["note_id", "start"], "labs": ["note_id", "start", "analyte", "value", "source"],
            "conditions": ["note_id", "start", "condition"], "cases": ["patient_id"]}
    return {name: pd.read_parquet(out / f"{name}.parquet").sort_values(k).reset_index(drop=True) for name, k in keys.items()}


def assert_same(a: dict, b: dict) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_like=False, obj=name)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, root):
    out = tmp_path_factory.mktemp("baseline")
    result, plan = run_local([root / "examples" / "archive"], out)
    assert plan.counts["new"] == 88 and len(plan.staged) == 9
    return out, tables(out)


def test_rerun_processes_nothing_and_changes_nothing(baseline, root):
    out, before = baseline
    result, plan = run_local([root / "examples" / "archive"], out)
    assert plan.counts == {"seen": 88, "new": 0, "changed": 0, "unchanged": 88, "invalid": 0}
    assert plan.staged == []
    assert_same(before, tables(out))
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 88 and manifest["note_id"].is_unique
    assert set(manifest.columns) >= {"note_id", "content_hash", "version"}


def test_changed_and_new_notes_only_are_processed(tmp_path, root):
    src = tmp_path / "notes.jsonl"
    rows = pd.read_json(root / "examples" / "archive" / "radiology.jsonl", lines=True, dtype=False)
    rows.to_json(src, orient="records", lines=True)
    out = tmp_path / "out"
    run_local([src], out)
    target = rows["note_id"].iloc[0]
    rows.loc[0, "text"] = "FINDINGS: Bilateral medullary nephrocalcinosis. No calcified granuloma."
    extra = pd.DataFrame([{"note_id": "NEW-1", "patient_id": "P999", "note_date": "2024-01-01", "note_type": "radiology",
                           "text": "Calcified granuloma in the left upper lobe."}])
    pd.concat([rows, extra]).to_json(src, orient="records", lines=True)
    _, plan = run_local([src], out)
    assert (plan.counts["new"], plan.counts["changed"], plan.counts["unchanged"]) == (1, 1, len(rows) - 1)
    mentions = pd.read_parquet(out / "mentions.parquet")
    changed = mentions[mentions["note_id"] == target]
    assert sorted(changed["concept"]) == ["calcified_granuloma", "nephrocalcinosis"]  # old rows gone, no duplicates
    assert not mentions.duplicated(["note_id", "start"]).any()
    assert "P999" in set(pd.read_parquet(out / "cases.parquet")["patient_id"])


def test_a_new_nlp_version_reprocesses_every_note_once(tmp_path, baseline, root, monkeypatch):
    out = tmp_path / "out"
    run_local([root / "examples" / "archive"], out)
    old = archive.nlp_version()
    monkeypatch.setattr(archive, "NLP_MODULES", archive.NLP_MODULES + ("cases",))  # as if the code changed
    assert archive.nlp_version() != old
    _, plan = run_local([root / "examples" / "archive"], out)
    assert plan.counts["changed"] + plan.counts["new"] == 88 and len(plan.staged) == 9
    assert_same(baseline[1], tables(out))  # same code in fact: same rows, none twice
    assert set(pd.read_parquet(out / "manifest.parquet")["version"]) == {archive.nlp_version()}


def test_interrupted_run_resumes_to_the_same_result(tmp_path, baseline, root):
    out = tmp_path / "out"
    _, plan = run_local([root / "examples" / "archive"], out, stop_after=4)
    # what a kill leaves: committed shards, staged shards, a half-written shard folder
    (out / ".calcmine" / "shards" / ".000099-half.tmp").mkdir()
    # and what a kill during an aggregation leaves: its spool files, a half-written result file
    (out / ".calcmine" / "aggregate").mkdir(parents=True)
    (out / ".calcmine" / "aggregate" / "in-mentions-0001.arrow").write_bytes(b"partial")
    (out / ".mentions.parquet.x1y2.tmp").write_bytes(b"partial")
    assert len(archive.ShardStore(out).committed()) == 4
    result, plan = run_local([root / "examples" / "archive"], out)
    assert plan.counts["unchanged"] == 40 and plan.counts["new"] == 48
    assert_same(baseline[1], tables(out))
    assert not (out / ".calcmine" / "aggregate").exists() and not list(out.glob(".*.tmp"))


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, baseline, root):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(root / "examples" / "archive"), "--out", str(out),
           "--shard-size", "5", "--no-report"]
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shards = out / ".calcmine" / "shards"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if shards.is_dir() and len([d for d in shards.iterdir() if not d.name.startswith(".")]) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "cases.parquet").exists(), "the run finished before it could be killed"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert_same(baseline[1], tables(out))


def test_bad_file_among_good_ones(tmp_path, root):
    folder = tmp_path / "archive"
    folder.mkdir()
    pd.read_csv(root / "examples" / "archive" / "clinical.csv", dtype=str).to_csv(folder / "good.csv", index=False)
    (folder / "broken.csv").write_bytes(b"note_id,patient_id,text\nx1,p1,\xff\xfe\n")
    (folder / "wrong.csv").write_text("id,text\n1,hello\n")
    out = tmp_path / "out"
    result, plan = run_local([folder], out)
    assert plan.counts["new"] == 44
    errors = [f["error"] for f in json.loads((out / "run.json").read_text())["failures"]]
    assert any("broken.csv" in e and "UTF-8" in e for e in errors)
    assert any("wrong.csv" in e and "missing column" in e for e in errors)


def test_notes_with_and_without_a_date_in_one_file(tmp_path):
    # one CSV where some rows leave note_date / note_type empty: pandas reads those cells as NaN
    # next to strings; the planner must hash them as missing, not stop with a TypeError
    notes = tmp_path / "mixed.csv"
    notes.write_text(
        "note_id,patient_id,note_date,note_type,text\n"
        "m1,p1,2024-03-05,radiology,Calcified granuloma in the right upper lobe.\n"
        "m2,p1,,,Mitral annular calcification.\n"
        "m3,p2,03/07/2024,,No calcification.\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result, plan = run_local([notes], out)
    assert plan.counts == {"seen": 3, "new": 3, "changed": 0, "unchanged": 0, "invalid": 0}
    assert result["counts"]["notes_failed"] == 0
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("note_id")
    text = "Mitral annular calcification."
    assert manifest.at["m2", "content_hash"] == archive.note_hash("m2", "p1", None, None, text)
    mentions = pd.read_parquet(out / "mentions.parquet").set_index("note_id")
    assert mentions.at["m2", "concept"] == "valvular_calcification"
    assert mentions.at["m2", "note_date"] is None or pd.isna(mentions.at["m2", "note_date"])
    assert mentions.at["m1", "note_date"] == "2024-03-05"
    assert mentions.at["m3", "note_date"] == "2024-03-07"  # read as a date, written as ISO
    again, plan = run_local([notes], out)
    assert plan.counts["unchanged"] == 3 and plan.staged == []


def test_sql_source(tmp_path, root):
    db = tmp_path / "notes.db"
    rows = pd.read_csv(root / "examples" / "archive" / "clinical.csv", dtype=str)
    with sqlite3.connect(db) as conn:
        rows.rename(columns={"note_id": "doc_id"}).to_sql("notes", conn, index=False)
    out = tmp_path / "out"
    query = "SELECT doc_id AS note_id, patient_id, note_date, note_type, text FROM notes"
    result, plan = run_local([], out, sql=f"sqlite:///{db}", query=query)
    assert plan.counts["new"] == len(rows)
    assert plan.read == [f"sql:sqlite:///{db}"]
    assert len(pd.read_parquet(out / "cases.parquet")) == rows["patient_id"].nunique()
    with pytest.raises(archive.InputError, match="query failed"):
        run_local([], tmp_path / "out2", sql=f"sqlite:///{db}", query="SELECT * FROM missing_table")


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_with_two_worker_processes_matches_in_process(harness, tmp_path, baseline, root):
    from flows.archive_flow import with_runner

    out = tmp_path / "out"
    result = with_runner(2, None)(inputs=[str(root / "examples" / "archive")], out=str(out), workers=2,
                                  shard_size=10, report=False)
    assert result["incremental"]["new"] == 88
    assert_same(baseline[1], tables(out))
    texts = pd.read_csv(root / "examples" / "archive" / "clinical.csv", dtype=str)["text"]
    assert not any(t[:40] in json.dumps(result) for t in texts)


def test_flow_on_a_local_dask_cluster(harness, tmp_path, baseline, root):
    pytest.importorskip("prefect_dask")
    from flows.archive_flow import with_runner

    out = tmp_path / "out"
    result = with_runner(2, "local")(inputs=[str(root / "examples" / "archive")], out=str(out), shard_size=30, report=False)
    assert result["incremental"]["new"] == 88
    assert_same(baseline[1], tables(out))


def test_schedule_builds_a_cron_deployment(root):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "schedule", str(root / "examples" / "archive"),
                             "--out", "/tmp/calcmine-scheduled", "--cron", "30 1 * * *", "--dry-run"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "cron '30 1 * * *'" in result.stdout


BUCKET_NOTES = [  # (note_id, patient_id, date, text); with shard size 3, P001 and P002 span shards
    ("B01", "P001", "2023-01-05", "CT CHEST: Calcified granuloma in the right upper lobe. No effusion."),
    ("B02", "P002", "2023-02-11", "ECHO: Mitral annular calcification. Normal LV function."),
    ("B03", "P003", "2023-03-02", "US KIDNEYS: Bilateral medullary nephrocalcinosis. History of primary hyperparathyroidism. "
                                  "PTH 210 pg/mL, calcium 11.4 mg/dL."),
    ("B04", "P004", "2023-03-09", "CXR: No calcified nodules. Lungs are clear."),
    ("B05", "P005", "2023-04-20", "CT: Atherosclerotic calcifications of the thoracic aorta. Calcium 9.4 mg/dL, albumin 4.1 g/dL."),
    ("B06", "P006", "2023-05-14", "Vascular calcification of the thighs, concerning for calciphylaxis. ESRD on hemodialysis. "
                                  "Phosphorus 7.9 mg/dL, Ca 10.9 mg/dL."),
    ("B07", "P002", "2023-06-01", "Labs: creatinine 1.1 mg/dL, calcium 9.2 mg/dL, albumin 3.1 g/dL. Coronary artery calcium score 412."),
    ("B08", "P001", "2023-07-19", "NEPHROLOGY: ESRD on hemodialysis. Calcium 11.8 mg/dL, albumin 2.9 g/dL, phosphorus 6.8 mg/dL."),
    ("B09", "P005", "2023-08-30", "Cannot exclude calcification of the aortic valve. Creatinine 0.9 mg/dL."),
    ("B10", "P007", "2023-09-02", "Calcified right hilar lymph nodes, consistent with prior granulomatous disease."),
]


def test_bucketed_aggregation_equals_one_bucket(tmp_path):
    """Patients split into buckets (here 5) give the same tables, in the same order, as one bucket,
    after an incremental run that changed a note and moved another to a new patient."""
    def write(rows):
        pd.DataFrame(rows, columns=["note_id", "patient_id", "note_date", "text"]).to_json(src, orient="records", lines=True)

    src = tmp_path / "notes.jsonl"
    write(BUCKET_NOTES)
    out = tmp_path / "out"
    run_local([src], out, shard_size=3)
    rows = [list(r) for r in BUCKET_NOTES]
    rows[0][3] = "CT CHEST: Calcified granuloma in the right upper lobe. Dense aortic calcification. Calcium 12.6 mg/dL."
    rows[6][1] = "P008"  # the note now belongs to another patient: its old rows must drop out of P002
    write(rows)
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,analyte,value,unit,taken_at\nP004,Calcium,2.9,mmol/L,2023-03-10\n"
                    "P009,PO4,5.1,mg/dL,2023-01-01\nP002,Calcium,abc,mg/dL,2023-02-01\nP007,albumin,3.0,g/dL,2023-09-02\n")
    store = archive.ShardStore(out)
    plan = store.plan(archive.discover([str(src)]), COLUMNS, 3)
    assert (plan.counts["changed"], plan.counts["unchanged"]) == (2, 8)
    for staged in plan.staged:
        archive.process_shard(staged, str(out), store.version)
    info = {"staged": plan.staged, "counts": plan.counts, "failures": plan.failures, "read": plan.read}
    patients = [r[1] for r in rows] + ["P009"]
    assert len(set(archive._bucket_of(patients, 5).tolist())) >= 3  # the patients really are spread

    def aggregate(buckets, pool=None):
        archive.aggregate_run(str(out), store.version, info, None, str(labs), False, {}, buckets=buckets, pool=pool)
        names = ("mentions", "labs", "conditions", "cases", "manifest")
        run = json.loads((out / "run.json").read_text())
        return ({n: pd.read_parquet(out / f"{n}.parquet") for n in names}, (out / "review.csv").read_bytes(),
                run["counts"], run["failures"])

    one, many = aggregate(1), aggregate(5)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_workers = aggregate(5, pool)  # buckets classified in worker processes, as the flow does
    for other in (many, in_workers):
        for name in one[0]:
            pd.testing.assert_frame_equal(one[0][name], other[0][name], obj=name)  # content and row order
        assert one[1:] == other[1:]
    frames = many[0]
    assert not frames["mentions"].duplicated(["note_id", "start"]).any()
    assert "P008" in set(frames["cases"]["patient_id"]) and frames["cases"]["patient_id"].is_monotonic_increasing
    b07 = frames["labs"][frames["labs"]["note_id"] == "B07"]
    assert set(b07["patient_id"]) == {"P008"}  # the moved note's rows, once, under its new patient
    assert set(frames["labs"]["source"]) == {"text", "derived", "structured"}
    assert any("not a number" in f["error"] for f in many[3])
    assert len(frames["manifest"]) == 10 and not list((out / ".calcmine").glob("aggregate*/*"))
