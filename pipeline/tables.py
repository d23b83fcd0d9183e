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
from pipeline.extensions import text_of

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
    for m in doc._.calc_mentions or ():
        out.mentions.append(
            key
            | {
                "start": m.start, "end": m.end, "text": m.text, "concept": m.concept, "site": m.site,
                "sites": ";".join(m.sites), "laterality": m.laterality, "assertion": m.assertion,
                "section": m.section, "sentence": " ".join(text[m.sentence_start : m.sentence_end].split()),
                "sentence_start": m.sentence_start, "triggers": ";".join(m.triggers), "mechanism": None,
            }
        )
    for v in doc._.calc_labs or ():
        out.labs.append(
            key
            | {
                "analyte": v.analyte, "value": v.value, "unit": v.unit, "comparator": v.comparator,
                "flag": v.flag_written, "source": "text", "start": v.start, "end": v.end, "text": v.text,
            }
        )
    for c in doc._.calc_conditions or ():
        out.conditions.append(
            key
            | {
                "condition": c.condition, "group": c.group, "detail": c.detail, "assertion": c.assertion,
                "section": c.section, "start": c.start, "end": c.end, "text": c.text,
            }
        )
    out.notes_done += 1
    if doc._.calc_mentions:
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


def normalise_labs(rows: Iterable[dict], units: labs_mod.UnitTable | None = None) -> pd.DataFrame:
    """Labs table: standard units, plausibility, flags; plus derived corrected calcium and Ca x P."""
    units = units or labs_mod.UnitTable()
    frame = pd.DataFrame(list(rows), columns=[c for c in schema.LABS.names if c not in ("value_std", "unit_std", "unit_inferred", "plausible")])
    if frame.empty:
        return schema.empty(schema.LABS)
    std, unit_std, inferred, plausible, flags = [], [], [], [], []
    for r in frame.itertuples(index=False):
        n = units.normalise(r.analyte, float(r.value), r.unit if isinstance(r.unit, str) else None)
        std.append(n.value_std)
        unit_std.append(n.unit_std)
        inferred.append(n.unit_inferred)
        plausible.append(n.plausible)
        written = r.flag if isinstance(r.flag, str) else None
        flags.append(units.flag(r.analyte, n.value_std, written))
    frame["value_std"], frame["unit_std"], frame["unit_inferred"] = std, unit_std, inferred
    frame["plausible"], frame["flag"] = plausible, flags
    frame = pd.concat([frame, derived_labs(frame, units)], ignore_index=True)
    return schema.conform(frame, schema.LABS)


def derived_labs(frame: pd.DataFrame, units: labs_mod.UnitTable) -> pd.DataFrame:
    """Per note: corrected calcium (Payne) from calcium and albumin, and the Ca x P product.

    Uses the first usable value of each analyte in the note; skipped when the note states the
    derived value itself.
    """
    rows = []
    usable = frame[frame["value_std"].notna() & frame["plausible"].astype(bool) & (frame["source"] != "derived")]
    for note_id, g in usable.groupby("note_id", sort=False):
        first = {a: sub.iloc[0] for a, sub in g.groupby("analyte", sort=False)}
        ca, alb, p = first.get("calcium"), first.get("albumin"), first.get("phosphate")
        base = {"note_id": note_id, "patient_id": g["patient_id"].iloc[0], "note_date": g["note_date"].iloc[0],
                "comparator": None, "unit_inferred": False, "plausible": True, "source": "derived"}
        if ca is not None and alb is not None and "calcium_corrected" not in first:
            v = labs_mod.corrected_calcium(ca["value_std"], alb["value_std"])
            rows.append(base | {"analyte": "calcium_corrected", "value": v, "unit": "mg/dL", "value_std": v,
                                "unit_std": "mg/dL", "flag": units.flag("calcium_corrected", v, None),
                                "start": ca["start"], "end": ca["end"],
                                "text": f"corrected from calcium {ca['value_std']:g} and albumin {alb['value_std']:g}"})
        if ca is not None and p is not None and "calcium_phosphate_product" not in first:
            v = labs_mod.calcium_phosphate_product(ca["value_std"], p["value_std"])
            rows.append(base | {"analyte": "calcium_phosphate_product", "value": v, "unit": "mg2/dL2", "value_std": v,
                                "unit_std": "mg2/dL2", "flag": units.flag("calcium_phosphate_product", v, None),
                                "start": ca["start"], "end": ca["end"],
                                "text": f"calcium {ca['value_std']:g} x phosphate {p['value_std']:g}"})
    return pd.DataFrame(rows)
