"""Patient-level case labels: dystrophic, metastatic, indeterminate or no_calcification.

The default classifier is transparent evidence scoring with weights kept as a versioned data
artifact (``data/classifier/evidence-v1.json``; ``--model`` may name another). Precedence:

1. A patient with no mention asserted ``present`` is ``no_calcification``.
2. Patient context is scored once: *systemic* evidence (high calcium, phosphate, PTH, kidney
   failure; ESRD, dialysis, hyperparathyroidism, vitamin D intoxication, ...; capped) and *local*
   tissue damage (connective-tissue disease, necrosis, trauma, ...; capped). Normal measured
   calcium and phosphate count against metastatic.
3. Each present mention gets a score = intrinsic(concept) + site weight + cues in its sentence
   + susceptibility(concept) x (systemic + local), and a ``mechanism``: metastatic when the score
   is at least the threshold, dystrophic when at most minus the threshold, else unclear.
4. The case is ``metastatic`` if any present mention is metastatic (deposits in normal tissue are
   what matter clinically; a co-existing dystrophic pattern lowers confidence and is listed),
   else ``dystrophic`` if any is dystrophic, else ``indeterminate``.

Worked example: ESRD on hemodialysis, phosphate 7.8, "calcified granuloma in the right upper lobe".
Systemic = 2.5 (ESRD) + 2.5 (dialysis) + 2 + 1 (phosphate) = 8, capped at 6. The granuloma scores
-3.0 (intrinsic) + 1.0 (lung) - 2.0 ("granuloma" cue) + 0.1 x 6 = -3.4: dystrophic. With no other
present mention the case is dystrophic: the patient's calcium is in an old granuloma, whatever
the kidneys do. Had the report said "vascular calcification of the thighs", that mention would
score -1.0 + 1.0 x 6 = 5.0 (metastatic) and the case would be metastatic, granuloma listed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path

import pandas as pd

from pipeline import schema, vocab
from pipeline.errors import CalcmineError

DEFAULT_MODEL = "evidence-v1.json"


@dataclass
class Evidence:
    weight: float
    reason: str
    note_id: str | None = None
    start: int | None = None
    end: int | None = None
    kind: str = ""

    def pointer(self) -> dict:
        return {"note_id": self.note_id, "start": self.start, "end": self.end, "kind": self.kind,
                "weight": round(self.weight, 2), "reason": self.reason}


@dataclass
class EvidenceModel:
    """The evidence weights, validated."""

    data: dict
    source: str
    cues: list[tuple[re.Pattern, float, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "EvidenceModel":
        if path is None:
            text = importlib_resources.files("pipeline.data").joinpath("classifier").joinpath(DEFAULT_MODEL).read_text("utf-8")
            source = f"package:{DEFAULT_MODEL}"
        else:
            p = Path(path)
            if not p.is_file():
                raise CalcmineError(f"model file not found: {p}; pass --model a calcmine evidence JSON or trained model")
            text, source = p.read_text("utf-8"), str(p)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalcmineError(f"{source}: not valid JSON (line {exc.lineno}); fix the file or use the default model") from None
        model = cls(data, source)
        model._validate()
        model.cues = [(re.compile(c["pattern"], re.IGNORECASE), float(c["weight"]), c["why"]) for c in data["sentence_cues"]]
        return model

    def _validate(self) -> None:
        d = self.data
        for key in ("name", "version", "mechanism_threshold", "concepts", "sites", "sentence_cues", "systemic", "conditions"):
            if key not in d:
                raise CalcmineError(f"{self.source}: evidence model lacks '{key}'")
        unknown = set(d["concepts"]) - set(vocab.CONCEPTS)
        missing = set(vocab.CONCEPTS) - set(d["concepts"])
        if unknown or missing:
            raise CalcmineError(f"{self.source}: concepts must be exactly ANNOTATION.md's (unknown {sorted(unknown)}, missing {sorted(missing)})")
        bad_sites = set(d["sites"]) - set(vocab.SITES)
        if bad_sites:
            raise CalcmineError(f"{self.source}: unknown site codes {sorted(bad_sites)}")

    @property
    def version(self) -> str:
        return f"{self.data['name']}-{self.data['version']}"


# ----------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:g}"


def _records(rows) -> list[dict]:
    """Rows as dicts, from a DataFrame or a list of dicts."""
    return rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)


def _group_records(frame: pd.DataFrame, keep_index: bool = False) -> dict[str, list[dict]]:
    """Rows of ``frame`` as plain dicts grouped by patient (pandas is slow row by row)."""
    out: dict[str, list[dict]] = {}
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for index, r in zip(frame.index, records):
        if keep_index:
            r["_index"] = index
        out.setdefault(r["patient_id"], []).append(r)
    return out


def lab_summary(labs: pd.DataFrame) -> pd.DataFrame:
    """Per patient: max / latest calcium and corrected calcium, max phosphate, max PTH, min eGFR,
    max Ca x P, max 25-OH vitamin D, each with the note and offsets it came from (vectorised)."""
    usable = labs[labs["value_std"].notna() & labs["plausible"].fillna(True).astype(bool)]
    usable = usable.astype({"patient_id": object, "analyte": object, "note_id": object, "note_date": object})
    specs = [
        ("calcium", "max"), ("calcium_corrected", "max"), ("phosphate", "max"), ("pth", "max"),
        ("egfr", "min"), ("calcium_phosphate_product", "max"), ("vitamin_d_25oh", "max"),
        ("calcium", "latest"), ("calcium_corrected", "latest"),
    ]
    columns: dict[str, pd.Series] = {}
    for analyte, how in specs:
        sub = usable[usable["analyte"] == analyte]
        if sub.empty:
            continue
        if how == "latest":
            pick = sub.sort_values(["note_date", "start"], na_position="first", kind="stable").groupby("patient_id").tail(1)
        else:
            order = sub.sort_values("value_std", ascending=(how == "min"), kind="stable")
            pick = order.groupby("patient_id").head(1)
        pick = pick.set_index("patient_id")
        prefix = f"{how}_{analyte}"
        columns[prefix] = pick["value_std"].astype(float)
        columns[prefix + "_note"] = pick["note_id"]
        columns[prefix + "_start"] = pick["start"].astype("Int64")
        columns[prefix + "_end"] = pick["end"].astype("Int64")
    if not columns:
        return pd.DataFrame(columns=["patient_id"])
    return pd.DataFrame(columns).rename_axis("patient_id").reset_index()


class CaseClassifier:
    """Evidence scoring over a patient's mentions, conditions and labs (see module docstring)."""

    def __init__(self, model: EvidenceModel | None = None) -> None:
        self.model = model or EvidenceModel.load()

    # -- patient context ------------------------------------------------------------------------

    def systemic_evidence(self, summary: dict, conditions: pd.DataFrame, ranges: dict) -> list[Evidence]:
        d = self.model.data
        sy = d["systemic"]
        ev: list[Evidence] = []

        def lab(key: str, analyte: str, how: str, value: float, extra: dict | None = None) -> Evidence:
            prefix = f"{how}_{analyte}"
            lo, hi = ranges.get(analyte, (None, None))
            text = sy[key]["why"].format(value=_fmt(round(value, 2)), high=_fmt(hi) if hi is not None else "")
            return Evidence(sy[key]["weight"], text, summary.get(prefix + "_note"), summary.get(prefix + "_start"),
                            summary.get(prefix + "_end"), "lab")

        ca = max((summary.get(k) for k in ("max_calcium", "max_calcium_corrected") if summary.get(k) is not None), default=None)
        ca_key = "calcium" if summary.get("max_calcium") == ca else "calcium_corrected"
        ca_hi = ranges.get("calcium", (8.5, 10.5))[1]
        if ca is not None and ca > ca_hi:
            ev.append(lab("calcium_high", ca_key, "max", ca))
            if ca > 12:
                ev.append(lab("calcium_very_high", ca_key, "max", ca))
        p = summary.get("max_phosphate")
        p_hi = ranges.get("phosphate", (2.5, 4.5))[1]
        if p is not None and p > p_hi:
            ev.append(lab("phosphate_high", "phosphate", "max", p))
            if p > 6:
                ev.append(lab("phosphate_very_high", "phosphate", "max", p))
        pth = summary.get("max_pth")
        if pth is not None and pth > ranges.get("pth", (15, 65))[1]:
            ev.append(lab("pth_high", "pth", "max", pth))
        egfr = summary.get("min_egfr")
        if egfr is not None and egfr < 15:
            ev.append(lab("egfr_failure", "egfr", "min", egfr))
        caxp = summary.get("max_calcium_phosphate_product")
        if caxp is not None and caxp > 55:
            ev.append(lab("caxp_high", "calcium_phosphate_product", "max", caxp))
        vitd = summary.get("max_vitamin_d_25oh")
        if vitd is not None and vitd > 150:
            ev.append(lab("vitd_high", "vitamin_d_25oh", "max", vitd))
        if ca is not None and p is not None and ca <= ca_hi and p <= p_hi:
            ev.append(Evidence(sy["labs_normal"]["weight"], sy["labs_normal"]["why"], summary.get("max_calcium_note"),
                               summary.get("max_calcium_start"), summary.get("max_calcium_end"), "lab"))
        ev.extend(self._condition_evidence(conditions, positive=True))
        return ev

    def local_evidence(self, conditions: pd.DataFrame) -> list[Evidence]:
        return self._condition_evidence(conditions, positive=False)

    def _condition_evidence(self, conditions: pd.DataFrame, positive: bool) -> list[Evidence]:
        d = self.model.data
        weights = d["conditions"]
        allowed = set(d.get("condition_assertions", ["present", "historical"]))
        seen: set[str] = set()
        ev = []
        for row in _records(conditions):
            if row["assertion"] not in allowed:
                continue
            key = row["condition"]
            detail = row["detail"] if isinstance(row["detail"], str) else None
            if key == "ckd" and detail and re.search(r"[45]", detail):
                key = "ckd_advanced"
            if key not in weights or key in seen:
                continue
            w = float(weights[key]["weight"])
            if (w > 0) != positive:
                continue
            seen.add(key)
            why = weights[key]["why"] + (f" ({detail})" if detail else "")
            ev.append(Evidence(w, why, row["note_id"], int(row["start"]), int(row["end"]), "condition"))
        return ev

    # -- mentions -------------------------------------------------------------------------------

    def mention_score(self, concept: str, site: str, sentence: str, systemic: float, local: float) -> tuple[float, list[tuple[float, str]]]:
        d = self.model.data
        c = d["concepts"][concept]
        parts: list[tuple[float, str]] = [(float(c["intrinsic"]), c["why"])]
        if concept not in ("calcified_granuloma", "metastatic_calcification", "dystrophic_calcification", "calciphylaxis"):
            s = d["sites"].get(site)
            if s:
                parts.append((float(s["weight"]), s["why"]))
        for pattern, weight, why in self.model.cues:
            if pattern.search(sentence or ""):
                parts.append((weight, why))
        sus = float(c["susceptibility"])
        if sus and systemic:
            parts.append((sus * systemic, "systemic drivers of high calcium or phosphate"))
        if sus and local:
            parts.append((sus * local, "local tissue damage"))
        return sum(w for w, _ in parts), parts

    # -- the case -------------------------------------------------------------------------------

    def classify(
        self,
        patient_ids: list[str],
        notes: pd.DataFrame,
        mentions: pd.DataFrame,
        conditions: pd.DataFrame,
        labs: pd.DataFrame,
        ranges: dict,
    ) -> tuple[pd.DataFrame, pd.Series]:
        """Cases table, and the mechanism of every mention (aligned to ``mentions.index``)."""
        threshold = float(self.model.data["mechanism_threshold"])
        cap = float(self.model.data["systemic"].get("cap", 6.0))
        local_cap = float(self.model.data.get("local_cap", -4.0))
        summary = lab_summary(labs) if len(labs) else pd.DataFrame(columns=["patient_id"])
        summaries = {
            r["patient_id"]: {k: (int(v) if k.endswith(("_start", "_end")) else v) for k, v in r.items()
                              if k != "patient_id" and v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA}
            for r in summary.astype(object).to_dict("records")
        }
        mechanism = pd.Series("", index=mentions.index, dtype="string")
        notes_per = notes.groupby("patient_id")["note_id"].nunique()
        rows = []
        by_patient_m = _group_records(mentions, keep_index=True)
        by_patient_c = _group_records(conditions)
        mechanisms: dict = {}
        for pid in patient_ids:
            pm = by_patient_m.get(pid, [])
            pc = by_patient_c.get(pid, [])
            summ = summaries.get(pid, {})
            sys_ev = self.systemic_evidence(summ, pc, ranges)
            loc_ev = self.local_evidence(pc)
            systemic = max(min(sum(e.weight for e in sys_ev), cap), -cap)
            local = max(sum(e.weight for e in loc_ev), local_cap)
            scored: list[tuple[float, dict, list]] = []
            for m in pm:
                if m["assertion"] != "present":
                    continue
                score, parts = self.mention_score(m["concept"], m["site"], m["sentence"], systemic, local)
                mechanisms[m["_index"]] = "metastatic" if score >= threshold else "dystrophic" if score <= -threshold else "unclear"
                scored.append((score, m, parts))
            rows.append(self._case_row(pid, int(notes_per.get(pid, 0)), len(pm), scored, sys_ev, loc_ev, threshold, pm))
        cases = pd.DataFrame(rows, columns=schema.CASES.names)
        if mechanisms:
            mechanism.loc[list(mechanisms)] = list(mechanisms.values())
        return schema.conform(cases, schema.CASES), mechanism

    def _case_row(self, pid, n_notes, n_mentions, scored, sys_ev, loc_ev, threshold, pm) -> dict:
        base = {"patient_id": pid, "n_notes": n_notes, "n_mentions": n_mentions, "n_present": len(scored),
                "model": self.model.version}
        if not scored:
            doubtful = [m for m in pm if m["assertion"] in ("possible", "hypothetical")]
            conf = 0.7 if doubtful else 0.95
            reasons = ["no calcification mention asserted as present"]
            ev = []
            for m in pm[:3]:
                reasons.append(f"'{m['concept']}' {m['assertion']}")
                ev.append(Evidence(0.0, f"{m['concept']} {m['assertion']}", m["note_id"], int(m["start"]), int(m["end"]), "mention"))
            return base | {"label": "no_calcification", "confidence": conf, "score": 0.0,
                           "reasons": " | ".join(reasons), "evidence": json.dumps([e.pointer() for e in ev])}
        met = [s for s in scored if s[0] >= threshold]
        dys = [s for s in scored if s[0] <= -threshold]
        if met:
            label, lead = "metastatic", max(met, key=lambda s: s[0])
            score = lead[0]
            conf = 0.5 + 0.5 * math.tanh(abs(score) / 4)
            if dys:
                conf -= 0.1
        elif dys:
            label, lead = "dystrophic", min(dys, key=lambda s: s[0])
            score = lead[0]
            conf = 0.5 + 0.5 * math.tanh(abs(score) / 4)
        else:
            label, lead = "indeterminate", max(scored, key=lambda s: abs(s[0]))
            score = lead[0]
            conf = 0.5 + 0.4 * (1 - abs(score) / threshold)
        evidence = self._ranked_evidence(label, lead, scored, sys_ev, loc_ev, threshold)
        reasons = []
        for e in evidence:
            if e.reason not in reasons:
                reasons.append(e.reason)
        return base | {"label": label, "confidence": round(max(0.05, min(conf, 0.99)), 3), "score": round(score, 3),
                       "reasons": " | ".join(reasons[:8]), "evidence": json.dumps([e.pointer() for e in evidence])}

    @staticmethod
    def _ranked_evidence(label, lead, scored, sys_ev, loc_ev, threshold) -> list[Evidence]:
        sign = 1 if label == "metastatic" else -1 if label == "dystrophic" else 0
        lead_score, lead_m, lead_parts = lead
        ev: list[Evidence] = []
        m_ptr = dict(note_id=lead_m["note_id"], start=int(lead_m["start"]), end=int(lead_m["end"]), kind="mention")
        for w, why in lead_parts:
            if why in ("systemic drivers of high calcium or phosphate", "local tissue damage"):
                continue
            site = lead_m["site"]
            text = why if "{" not in why else why
            if why == lead_parts[0][1]:
                text = f"{why} ({lead_m['assertion']}, site {site})"
            ev.append(Evidence(w, text, **m_ptr))
        for e in sys_ev + loc_ev:
            ev.append(e)
        if sign == 0:
            ev.sort(key=lambda e: -abs(e.weight))
        else:
            ev.sort(key=lambda e: -(sign * e.weight))
        # the other present mentions come after the lead mention's own evidence and the patient's
        others = sorted((s for s in scored if s is not lead), key=lambda s: -(sign * s[0]) if sign else -abs(s[0]))
        for s, m, parts in others:
            mech = "metastatic" if s >= threshold else "dystrophic" if s <= -threshold else "unclear"
            ev.append(Evidence(s, f"also {parts[0][1]} ({mech} pattern, site {m['site']})", m["note_id"], int(m["start"]), int(m["end"]), "mention"))
        return ev
