"""The chart-review CSV: one row per case, safe to open in a spreadsheet.

UTF-8 with BOM, every field quoted, and any cell that a spreadsheet would read as a formula
(starting with = + - @, tab or carriage return) is prefixed with an apostrophe.
"""

from __future__ import annotations

import csv
import io
import json

import pandas as pd

REVIEW_COLUMNS = (
    "patient_id", "label", "confidence", "reasons", "key_labs", "evidence", "n_notes", "n_mentions",
    "reviewer_label", "reviewer_comment",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
KEY_ANALYTES = ("calcium", "calcium_corrected", "phosphate", "pth", "egfr", "creatinine", "vitamin_d_25oh")


def safe_cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _key_labs(labs: pd.DataFrame) -> str:
    parts = []
    for analyte in KEY_ANALYTES:
        sub = labs[(labs["analyte"] == analyte) & labs["value_std"].notna()]
        if sub.empty:
            continue
        pick = sub.loc[sub["value_std"].idxmin()] if analyte == "egfr" else sub.loc[sub["value_std"].idxmax()]
        date = pick["note_date"] if isinstance(pick["note_date"], str) else "undated"
        flag = f" {pick['flag']}" if isinstance(pick["flag"], str) and pick["flag"] != "normal" else ""
        parts.append(f"{analyte} {pick['value_std']:g} {pick['unit_std']}{flag} ({date}, {pick['note_id']})")
    return "; ".join(parts)


def _snippets(case_evidence: str, mentions: pd.DataFrame, limit: int = 3) -> str:
    out = []
    for item in json.loads(case_evidence or "[]"):
        if item.get("kind") != "mention":
            continue
        hit = mentions[(mentions["note_id"] == item["note_id"]) & (mentions["start"] == item["start"])]
        if hit.empty:
            continue
        m = hit.iloc[0]
        sentence = m["sentence"] if len(m["sentence"]) <= 160 else m["sentence"][:157] + "..."
        section = m["section"] if isinstance(m["section"], str) else "no section"
        date = m["note_date"] if isinstance(m["note_date"], str) else "undated"
        out.append(f"[{m['note_id']} {date} {section}] {sentence}")
        if len(out) >= limit:
            break
    return " || ".join(out)


def review_frame(cases: pd.DataFrame, mentions: pd.DataFrame, labs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for case in cases.itertuples(index=False):
        pm = mentions[mentions["patient_id"] == case.patient_id]
        pl = labs[labs["patient_id"] == case.patient_id]
        rows.append(
            {
                "patient_id": case.patient_id,
                "label": case.label,
                "confidence": f"{case.confidence:.2f}",
                "reasons": " | ".join(case.reasons.split(" | ")[:4]),
                "key_labs": _key_labs(pl),
                "evidence": _snippets(case.evidence, pm),
                "n_notes": case.n_notes,
                "n_mentions": case.n_mentions,
                "reviewer_label": "",
                "reviewer_comment": "",
            }
        )
    return pd.DataFrame(rows, columns=list(REVIEW_COLUMNS))


def review_csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(frame.columns)
    for row in frame.itertuples(index=False):
        writer.writerow([safe_cell(v) for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
