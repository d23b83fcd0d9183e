"""From Docs to table rows, and the table-level steps: lab normalisation and derived values.

One row per mention / lab value / condition, columns as declared in :mod:`pipeline.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd
from spacy.language import Language
from spacy.tokens import Doc

from pipeline import labs as labs_mod
from pipeline import schema
from pipeline.extensions import get, text_of

_NOTE_KEYS = ("note_id", "patient_id", "note_date")


@dataclass
class RowSet:
    mentions: list[dict] = field(default_factory=list)
    labs: list[dict] = field(default_factory=list)
    conditions: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    notes_done: int = 0
    notes_with_mentions: int = 0


def doc_rows(doc: Doc, note: dict, out: RowSet) -> None:
    """Append the rows of one processed note to ``out``."""
    key = {k: note.get(k) for k in _NOTE_KEYS}
    text = text_of(doc)
    mentions = get(doc, "calc_mentions") or ()
    for m in mentions:
        out.mentions.append(
            key
            | {
                "start": m.start, "end": m.end, "text": m.text, "concept": m.concept, "site": m.site,
                "sites": ";".join(m.sites), "laterality": m.laterality, "assertion": m.assertion,
                "section": m.section, "sentence": " ".join(text[m.sentence_start : m.sentence_end].split()),
                "sentence_start": m.sentence_start, "triggers": ";".join(m.triggers), "mechanism": None,
            }
        )
    for v in get(doc, "calc_labs") or ():
        out.labs.append(
            key
            | {
                "analyte": v.analyte, "value": v.value, "unit": v.unit, "comparator": v.comparator,
                "flag": v.flag_written, "source": "text", "start": v.start, "end": v.end, "text": v.text,
            }
        )
    for c in get(doc, "calc_conditions") or ():
        out.conditions.append(
            key
            | {
                "condition": c.condition, "group": c.group, "detail": c.detail, "assertion": c.assertion,
                "section": c.section, "start": c.start, "end": c.end, "text": c.text,
            }
        )
    out.notes_done += 1
    if mentions:
        out.notes_with_mentions += 1


def run_nlp(nlp: Language, notes: pd.DataFrame, batch_size: int = 64) -> RowSet:
    """Run the pipeline over notes; a note that fails is recorded and the batch goes on."""
    out = RowSet()
    records = notes[["note_id", "patient_id", "note_date", "text"]].to_dict("records")
    texts = ((r["text"], i) for i, r in enumerate(records))
    try:
        for doc, i in nlp.pipe(texts, as_tuples=True, batch_size=batch_size):
            doc_rows(doc, records[i], out)
        return out
    except Exception:  # noqa: BLE001 - find the failing note(s) one by one, keep the rest
        out = RowSet()
    for r in records:
        try:
            doc_rows(nlp(r["text"]), r, out)
        except Exception as exc:  # noqa: BLE001
            out.failures.append(
                {"note_id": r["note_id"], "patient_id": r["patient_id"], "stage": "nlp", "error": type(exc).__name__}
            )
    return out


def normalise_labs(rows: Iterable[dict] | pd.DataFrame, units: labs_mod.UnitTable | None = None) -> pd.DataFrame:
    """Labs table: standard units, plausibility, flags; plus derived corrected calcium and Ca x P."""
    units = units or labs_mod.UnitTable()
    columns = [c for c in schema.LABS.names if c not in ("value_std", "unit_std", "unit_inferred", "plausible")]
    frame = rows[columns].copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    if frame.empty:
        return schema.empty(schema.LABS)
    done: dict[tuple, tuple] = {}  # lab values repeat a lot: each distinct reading is worked out once
    std, unit_std, inferred, plausible, flags = [], [], [], [], []
    for key in zip(frame["analyte"].tolist(), frame["value"].tolist(), frame["unit"].tolist(), frame["flag"].tolist()):
        got = done.get(key)
        if got is None:
            analyte, value, unit, written = key
            n = units.normalise(analyte, float(value), unit if isinstance(unit, str) else None)
            got = done[key] = (n.value_std, n.unit_std, n.unit_inferred, n.plausible,
                               units.flag(analyte, n.value_std, written if isinstance(written, str) else None))
        std.append(got[0])
        unit_std.append(got[1])
        inferred.append(got[2])
        plausible.append(got[3])
        flags.append(got[4])
    frame["value_std"], frame["unit_std"], frame["unit_inferred"] = std, unit_std, inferred
    frame["plausible"], frame["flag"] = plausible, flags
    frame = pd.concat([frame, derived_labs(frame, units)], ignore_index=True)
    return schema.conform(frame, schema.LABS)


def _plain(column: pd.Series) -> list:
    """A column as plain Python values, missing ones as None (what ``astype(object)`` gives, cheaper)."""
    return [None if schema.is_missing(v) else v for v in column.tolist()]


def derived_labs(frame: pd.DataFrame, units: labs_mod.UnitTable) -> pd.DataFrame:
    """Per note: corrected calcium (Payne) from calcium and albumin, and the Ca x P product.

    Uses the first usable value of each analyte in the note (text order); skipped when the note
    states the derived value itself. Vectorised: one pass over all notes.
    """
    usable = frame[frame["value_std"].notna() & frame["plausible"].astype(bool) & (frame["source"] != "derived")
                   & frame["note_id"].notna()]
    if usable.empty:
        return pd.DataFrame()
    first = usable.sort_values(["note_id", "start"], kind="stable").drop_duplicates(["note_id", "analyte"])
    wide = first.pivot(index="note_id", columns="analyte", values="value_std")
    heads = first.drop_duplicates("note_id")
    meta = dict(zip(heads["note_id"].tolist(), zip(_plain(heads["patient_id"]), _plain(heads["note_date"]))))
    ca = first[first["analyte"] == "calcium"]
    ca_pos = dict(zip(ca["note_id"].tolist(), zip(_plain(ca["start"]), _plain(ca["end"]))))
    rows = []

    def add(note_id, analyte, value, text):
        (patient_id, note_date), (start, end) = meta[note_id], ca_pos[note_id]
        rows.append({"note_id": note_id, "patient_id": patient_id, "note_date": note_date, "analyte": analyte,
                     "value": value, "unit": vocab_units[analyte], "comparator": None, "value_std": value,
                     "unit_std": vocab_units[analyte], "unit_inferred": False, "plausible": True,
                     "flag": units.flag(analyte, value, None), "source": "derived",
                     "start": start, "end": end, "text": text})

    vocab_units = {"calcium_corrected": "mg/dL", "calcium_phosphate_product": "mg2/dL2"}
    nan = float("nan")

    def col(name: str) -> list[float]:  # plain lists: iterrows is slow
        return wide[name].tolist() if name in wide.columns else [nan] * len(wide)

    for note_id, ca, alb, p, cc, cxp in zip(wide.index.tolist(), col("calcium"), col("albumin"), col("phosphate"),
                                            col("calcium_corrected"), col("calcium_phosphate_product")):
        if pd.isna(ca):
            continue
        if pd.notna(alb) and pd.isna(cc):
            add(note_id, "calcium_corrected", labs_mod.corrected_calcium(ca, alb), f"corrected from calcium {ca:g} and albumin {alb:g}")
        if pd.notna(p) and pd.isna(cxp):
            add(note_id, "calcium_phosphate_product", labs_mod.calcium_phosphate_product(ca, p), f"calcium {ca:g} x phosphate {p:g}")
    return pd.DataFrame(rows)
