"""Structured lab results (an EHR extract) merged into the labs table.

Input: CSV or Parquet with columns ``patient_id, analyte, value, unit, taken_at`` (``flag``
optional). Analyte names go through the same synonym data as note text (``data/labs/analytes.tsv``),
units through the same conversion table; rows that cannot be used are reported, not dropped
silently.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import schema
from pipeline.errors import InputError
from pipeline.io import read_table
from pipeline.labs import UnitTable
from pipeline import resources

COLUMNS = ("patient_id", "analyte", "value", "unit", "taken_at")


def _analyte_map() -> dict[str, str]:
    mapping = {r["synonym"]: r["analyte"] for r in resources.analyte_rules()}
    mapping.update({code: code for code in set(mapping.values())})
    return mapping


def load_structured_labs(path: str | Path, units: UnitTable | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Labs rows (``source = structured``) and a list of problems, one per unusable row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labs file not found: {path}; give a CSV or Parquet with {', '.join(COLUMNS)}")
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise InputError(f"{path}: unsupported labs file type '{path.suffix}'; use .csv or .parquet")
    frame = read_table(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, list(frame.columns)[:12])) or "none"
        raise InputError(f"{path}: missing labs columns {missing} (columns found: {found}); rename them to {', '.join(COLUMNS)}")
    units = units or UnitTable()
    names = _analyte_map()
    rows, problems = [], []
    for i, r in enumerate(frame.itertuples(index=False), start=2):
        raw_name = str(r.analyte).strip() if pd.notna(r.analyte) else ""
        analyte = names.get(" ".join(raw_name.lower().split()))
        where = f"{path.name}:{i}"
        if analyte is None:
            problems.append({"note_id": None, "patient_id": r.patient_id, "stage": "structured_labs",
                             "error": f"{where}: unknown analyte {raw_name!r}; use a name from data/labs/analytes.tsv"})
            continue
        try:
            value = float(str(r.value).replace(",", ""))
        except ValueError:
            problems.append({"note_id": None, "patient_id": r.patient_id, "stage": "structured_labs",
                             "error": f"{where}: value is not a number"})
            continue
        unit = str(r.unit).strip() if pd.notna(r.unit) and str(r.unit).strip() else None
        n = units.normalise(analyte, value, unit)
        written = None
        if "flag" in frame.columns and pd.notna(getattr(r, "flag")):
            written = {"h": "high", "high": "high", "l": "low", "low": "low", "n": "normal", "normal": "normal"}.get(str(r.flag).strip().lower())
        taken = pd.Timestamp(r.taken_at).date().isoformat() if pd.notna(r.taken_at) and str(r.taken_at).strip() else None
        rows.append({
            "note_id": None, "patient_id": str(r.patient_id), "note_date": taken, "analyte": analyte,
            "value": value, "unit": unit, "comparator": None, "value_std": n.value_std, "unit_std": n.unit_std,
            "unit_inferred": n.unit_inferred, "plausible": n.plausible,
            "flag": units.flag(analyte, n.value_std, written), "source": "structured",
            "start": None, "end": None, "text": f"{where} {raw_name}",
        })
    labs = pd.DataFrame(rows, columns=schema.LABS.names)
    return schema.conform(labs, schema.LABS) if len(labs) else schema.empty(schema.LABS), problems
