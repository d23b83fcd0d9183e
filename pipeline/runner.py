"""One run end to end without Prefect: inputs -> tables -> result folder (used by the flow's tasks)."""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipeline import __version__, schema
from pipeline.io import write_json, write_parquet, write_private
from pipeline.process import Tables
from pipeline.review import review_csv_bytes, review_frame

OUTPUT_FILES = {
    "mentions": "mentions.parquet",
    "labs": "labs.parquet",
    "conditions": "conditions.parquet",
    "cases": "cases.parquet",
}


def versions() -> dict:
    """Versions of what made the run, from the installed distributions' metadata (importing
    Prefect only to read its version would cost a run that does not use it seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "calcmine": __version__,
        "python": platform.python_version(),
        "spacy": installed("spacy"),
        "scispacy": installed("scispacy"),
        "pandas": pd.__version__,
        "prefect": installed("prefect"),
    }


def write_results(tables: Tables, out: Path, run_info: dict, notes: pd.DataFrame | None = None,
                  report: bool = True) -> dict:
    """Write every table, review.csv and run.json into ``out``; returns the run manifest.

    ``notes`` (the valid notes, schema NOTES) are kept as notes.parquet so the report can
    highlight their text; ``report`` writes the HTML chart-review report into ``out/report/``.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, filename in OUTPUT_FILES.items():
        write_parquet(getattr(tables, name), schema.TABLES[name], out / filename)
        paths[name] = str(out / filename)
    if notes is not None:
        write_parquet(notes.assign(source=notes.get("source")), schema.NOTES, out / "notes.parquet")
        paths["notes"] = str(out / "notes.parquet")
    write_private(out / "review.csv", review_csv_bytes(review_frame(tables.cases, tables.mentions, tables.labs)))
    paths["review"] = str(out / "review.csv")
    return write_run_info(out, run_info, tables.counts, paths, failure_records(tables.failures), report)


def failure_records(failures: pd.DataFrame) -> list[dict]:
    """The failures table as run.json lists it (missing values as null)."""
    return failures.astype(object).where(failures.notna(), None).to_dict("records")


def write_run_info(out: Path, run_info: dict, counts: dict, paths: dict, failures: list[dict], report: bool = True) -> dict:
    """run.json (and the HTML report when ``report``) for tables already written into ``out``;
    returns the run manifest. ``paths`` is extended with run.json and the report."""
    manifest = {
        "calcmine": __version__,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **run_info,
        "counts": counts,
        "outputs": paths,
        "failures": failures,
        "versions": versions(),
    }
    write_json(manifest, out / "run.json")
    paths["run"] = str(out / "run.json")
    if report:  # from the folder just written, as `calcmine report` does; then run.json lists it
        from pipeline.report import write_report

        paths["report"] = str(write_report(out))
        write_json(manifest, out / "run.json")
    return manifest


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self._last = self.t0

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = round(now - self._last, 3)
        self._last = now

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 3)
