"""The main Prefect flow: load -> NLP -> tables -> cases -> write.

Tasks are thin wrappers over :mod:`pipeline` functions. They pass file paths and counts, never
note text: notes are staged to a private Parquet file in the output folder's work area, so
Prefect's parameters, results and logs hold no patient text.
"""

from __future__ import annotations

from pathlib import Path

from flows.settings import configure_prefect

configure_prefect()  # before Prefect is imported: local home, analytics off

import pandas as pd  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402

from pipeline import io as pio  # noqa: E402
from pipeline import schema  # noqa: E402
from pipeline.process import assemble, extract  # noqa: E402
from pipeline.runner import Timer, write_results  # noqa: E402
from pipeline.train import load_classifier  # noqa: E402


@task(retries=2, retry_delay_seconds=1)
def load_notes(inputs: list[str], work: str, id_col: str, patient_col: str, text_col: str) -> dict:
    """Read the inputs, validate notes, stage them as Parquet; returns the path and counts."""
    notes, failures, read = pio.load_inputs(inputs, id_col=id_col, patient_col=patient_col, text_col=text_col)
    valid, invalid = pio.validate_notes(notes)
    staged = Path(work) / "notes.parquet"
    pio.write_parquet(valid, schema.NOTES, staged)
    return {"notes": str(staged), "n_notes": int(len(valid)), "failures": failures + invalid, "read": read}


@task
def analyse(staged: dict, out: str, model: str | None, timer_marks: dict, report: bool = True) -> dict:
    """NLP over the staged notes, assemble and classify, write the result folder."""
    timer = Timer()
    notes = pd.read_parquet(staged["notes"])
    rows = extract(notes)
    rows.failures = staged["failures"] + rows.failures
    timer.mark("nlp")
    classifier = load_classifier(model)
    tables = assemble(notes, rows, classifier)
    timer.mark("tables_and_cases")
    manifest = write_results(
        tables,
        Path(out),
        {"inputs": staged["read"], "model": classifier.model.version, "timings": timer_marks | timer.marks},
        notes=notes, report=report,
    )
    Path(staged["notes"]).unlink(missing_ok=True)
    return {"counts": manifest["counts"], "outputs": manifest["outputs"]}


@flow(name="calcmine-run", log_prints=False)
def calcmine_run(
    inputs: list[str],
    out: str = "results",
    model: str | None = None,
    id_col: str = "note_id",
    patient_col: str = "patient_id",
    text_col: str = "text",
    report: bool = True,
) -> dict:
    """Process note archives into calcmine's result tables."""
    logger = get_run_logger()
    timer = Timer()
    work = Path(out) / ".work"
    staged = load_notes(inputs, str(work), id_col, patient_col, text_col)
    timer.mark("load")
    logger.info("loaded %d notes (%d failed on input)", staged["n_notes"], len(staged["failures"]))
    result = analyse(staged, out, model, timer.marks, report)
    logger.info("wrote results to %s", out)
    try:
        work.rmdir()
    except OSError:
        pass
    return result
