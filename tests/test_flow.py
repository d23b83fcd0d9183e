"""The Prefect flow end to end on the temporary local server, and its tasks through ``.fn``."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_end_to_end_and_keeps_text_out_of_task_results(harness, tmp_path, root):
    from flows.calcmine_flow import calcmine_run

    out = tmp_path / "results"
    src = root / "examples" / "archive" / "radiology.jsonl"
    result = calcmine_run(inputs=[str(src)], out=str(out))
    assert result["counts"]["notes_processed"] == len(pd.read_json(src, lines=True))
    for name in ("mentions", "labs", "conditions", "cases"):
        assert (out / f"{name}.parquet").exists()
    assert json.loads((out / "run.json").read_text())["counts"] == result["counts"]
    notes = pd.read_json(src, lines=True)
    dumped = json.dumps(result)
    assert not any(t[:40] in dumped for t in notes["text"])
    assert not (out / ".work").exists()


def test_load_task_stages_notes_and_returns_paths_only(tmp_path, root):
    from flows.calcmine_flow import load_notes

    staged = load_notes.fn([str(root / "examples" / "archive" / "clinical.csv")], str(tmp_path), "note_id", "patient_id", "text")
    assert staged["n_notes"] > 0 and staged["notes"].endswith("notes.parquet")
    assert set(staged) == {"notes", "n_notes", "failures", "read"}


def test_prefect_is_local_and_analytics_off():
    import os

    import flows.calcmine_flow  # noqa: F401  (configures Prefect before importing it)
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    assert settings.server.analytics_enabled is False
    assert os.environ["DO_NOT_TRACK"] == "1"
    assert settings.home.exists()
