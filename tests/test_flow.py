"""The Prefect flow end to end on the temporary local server, and its tasks through ``.fn``."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_end_to_end_and_keeps_text_out_of_results(harness, tmp_path, root):
    from flows.archive_flow import with_runner

    out = tmp_path / "results"
    src = root / "examples" / "archive" / "radiology.jsonl"
    result = with_runner(1, None)(inputs=[str(src)], out=str(out))
    notes = pd.read_json(src, lines=True, dtype=False)
    assert result["counts"]["notes_processed"] == len(notes)
    for name in ("mentions", "labs", "conditions", "cases", "notes", "manifest"):
        assert (out / f"{name}.parquet").exists(), name
    assert (out / "report" / "index.html").exists() and (out / "review.csv").exists()
    assert json.loads((out / "run.json").read_text())["counts"] == result["counts"]
    dumped = json.dumps(result)
    assert not any(t[:40] in dumped for t in notes["text"])
    assert not list((out / ".calcmine" / "staging").glob("*"))


def test_plan_task_returns_paths_and_counts_only(tmp_path, root):
    from flows.archive_flow import plan_shards

    plan = plan_shards.fn([str(root / "examples" / "archive" / "clinical.csv")], str(tmp_path),
                          {"id": "note_id", "patient": "patient_id", "text": "text"}, 10, None, None)
    assert set(plan) == {"staged", "counts", "failures", "read", "version"}
    assert plan["counts"]["new"] == 44 and len(plan["staged"]) == 5
    assert all(p.endswith(".parquet") for p in plan["staged"])


def test_prefect_is_local_and_analytics_off():
    import os

    import flows.archive_flow  # noqa: F401  (configures Prefect before importing it)
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    assert settings.server.analytics_enabled is False
    assert os.environ["DO_NOT_TRACK"] == "1"
    assert settings.home.exists()
