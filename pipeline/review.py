"""The chart-review CSV: one row per case, safe to open in a spreadsheet.

UTF-8 with BOM, every field quoted, and any cell that a spreadsheet would read as a formula
(starting with = + - @, tab or carriage return) is prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd

from pipeline import schema

REVIEW_COLUMNS = (
    "patient_id", "label", "confidence", "reasons", "key_labs", "evidence", "n_notes", "n_mentions",
    "reviewer_label", "reviewer_comment",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
KEY_ANALYTES = ("calcium", "calcium_corrected", "phosphate", "pth", "egfr", "creatinine", "vitamin_d_25oh")


def safe_cell(value) -> str:
    if type(value) is str:  # the common case first
        return "'" + value if value.startswith(_FORMULA_START) else value
    if schema.is_missing(value):
        return ""
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _key_lab_picks(labs: pd.DataFrame) -> dict[str, list[dict]]:
    """Per patient, for each key analyte, the max (min for eGFR) value with its date and note."""
    usable = labs[labs["analyte"].isin(KEY_ANALYTES) & labs["value_std"].notna()].astype(
        {"patient_id": object, "analyte": object, "note_id": object, "note_date": object, "flag": object, "unit_std": object})
    if usable.empty:
        return {}
    usable = usable.assign(_key=usable["value_std"].where(usable["analyte"] != "egfr", -usable["value_std"]))
    picks = usable.sort_values("_key", ascending=False, kind="stable").drop_duplicates(["patient_id", "analyte"])
    order = {a: i for i, a in enumerate(KEY_ANALYTES)}
    picks = picks.assign(_order=picks["analyte"].map(order)).sort_values(["patient_id", "_order"], kind="stable")
    out: dict[str, list[dict]] = {}
    for r in schema.records(picks):
        out.setdefault(r["patient_id"], []).append(r)
    return out


def _key_labs(picks: list[dict]) -> str:
    parts = []
    for pick in picks:
        date = pick["note_date"] if isinstance(pick["note_date"], str) else "undated"
        flag = f" {pick['flag']}" if isinstance(pick["flag"], str) and pick["flag"] != "normal" else ""
        source = pick["note_id"] if isinstance(pick["note_id"], str) else "structured"
        parts.append(f"{pick['analyte']} {pick['value_std']:g} {pick['unit_std']}{flag} ({date}, {source})")
    return "; ".join(parts)


def _snippets(case_evidence: str, by_position: dict, limit: int = 3) -> str:
    out = []
    for item in json.loads(case_evidence or "[]"):
        if item.get("kind") != "mention":
            continue
        m = by_position.get((item["note_id"], item["start"]))
        if m is None:
            continue
        sentence = m["sentence"] if len(m["sentence"]) <= 160 else m["sentence"][:157] + "..."
        section = m["section"] if isinstance(m["section"], str) else "no section"
        date = m["note_date"] if isinstance(m["note_date"], str) else "undated"
        out.append(f"[{m['note_id']} {date} {section}] {sentence}")
        if len(out) >= limit:
            break
    return " || ".join(out)


def review_columns(cases: pd.DataFrame, mentions: pd.DataFrame, labs: pd.DataFrame) -> dict[str, list]:
    """The review table's columns as lists, one entry per case in ``cases`` order."""
    cols = ["note_id", "start", "sentence", "section", "note_date"]
    records = schema.records(mentions[cols].astype(object).where(mentions[cols].notna(), None))
    by_position = {(r["note_id"], int(r["start"])): r for r in records}
    key_labs = _key_lab_picks(labs)
    patients = cases["patient_id"].tolist()
    n = len(patients)
    return {
        "patient_id": patients,
        "label": cases["label"].tolist(),
        "confidence": [f"{c:.2f}" for c in cases["confidence"].tolist()],
        "reasons": [" | ".join(r.split(" | ")[:4]) for r in cases["reasons"].tolist()],
        "key_labs": [_key_labs(key_labs.get(p, [])) for p in patients],
        "evidence": [_snippets(e, by_position) for e in cases["evidence"].tolist()],
        "n_notes": cases["n_notes"].tolist(),
        "n_mentions": cases["n_mentions"].tolist(),
        "reviewer_label": [""] * n,
        "reviewer_comment": [""] * n,
    }


def review_frame(cases: pd.DataFrame, mentions: pd.DataFrame, labs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(review_columns(cases, mentions, labs), columns=list(REVIEW_COLUMNS))


def review_csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(frame.columns)
    for row in frame.itertuples(index=False):
        writer.writerow([safe_cell(v) for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
