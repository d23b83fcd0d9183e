"""Patient-level case labels: dystrophic, metastatic, indeterminate or no_calcification.

The default classifier is transparent evidence scoring with weights kept as a versioned data
artifact (``data/classifier/evidence-v1.json``; ``--model`` may name another). Precedence:

1. A patient with no mention asserted ``present`` is ``no_calcification``.
2. Patient context is scored once: *systemic* evidence (high calcium, phosphate, PTH, kidney
   failure; ESRD, dialysis, hyperparathyroidism, vitamin D intoxication, ...; capped; a driver
   only in the past history weighs ``condition_assertion_factor``, half) and *local* tissue damage
   (connective-tissue disease, necrosis, trauma, ...), each local condition counting only for the
   tissues it damages (its ``sites``: lupus damages skin, not the vessel media). Normal measured
   calcium and phosphate count against metastatic.
3. Each present mention gets a score = intrinsic(concept) + site weight + cues in its sentence
   + susceptibility(concept) x (systemic + local damage at its site), and a ``mechanism``
   (a sentence cue counts only when not negated just before it, "no necrosis"; a deposit whose
   own evidence names a damaged-tissue lesion, ``named_lesion``, e.g. a calcified fibroid, takes
   the systemic context with a granuloma's low susceptibility):
   metastatic when the score is at least the threshold, dystrophic when at most minus the
   threshold, else unclear. Then the ``conflicts`` of the evidence model may leave a deposit
   unclear because the evidence pulls both ways (``score_patient``): both sides strong on one
   deposit (pancreatitis with hypercalcaemic hyperparathyroidism, calcinosis in scleroderma on
   dialysis); vascular calcification described as both intimal and medial, or as neither in a
   patient with kidney disease and atherosclerotic risk; a granulomatous or nodal deposit while
   calcium is high; the report itself offering the other mechanism ("granulomatous disease or
   metastatic pulmonary calcification"); a deposit metastatic only by context when the report
   calls the calcification dystrophic. A generic "calcification" at the site of a specific
   dystrophic lesion (a calcified granuloma) is read as that lesion.
4. The case is ``metastatic`` if any present mention is metastatic (deposits in normal tissue are
   what matter clinically; a co-existing dystrophic or conflicting pattern lowers confidence and is
   listed), else ``dystrophic`` if any is dystrophic, else ``indeterminate`` (a conflict, listed
   first among the reasons, or too little evidence either way).

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
from typing import Iterator

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
    sites: tuple[str, ...] | None = None
    key: str = ""

    def pointer(self) -> dict:
        return {"note_id": self.note_id, "start": self.start, "end": self.end, "kind": self.kind,
                "weight": round(self.weight, 2), "reason": self.reason}


@dataclass
class EvidenceModel:
    """The evidence weights, validated."""

    data: dict
    source: str
    cues: list[tuple[re.Pattern, float, str]] = field(default_factory=list)
    cue_any: re.Pattern | None = None  # all cue patterns in one: most sentences match none of them
    cue_any_lower: re.Pattern | None = None  # the same, case-sensitive, for lower-cased ASCII text (cheaper)

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
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: dict, source: str) -> "EvidenceModel":
        """A validated model from its parsed JSON, sentence cues compiled."""
        model = cls(data, source)
        model._validate()
        model.cues = [(re.compile(c["pattern"], re.IGNORECASE), float(c["weight"]), c["why"]) for c in data["sentence_cues"]]
        if model.cues:
            combined = "|".join(f"(?:{c['pattern']})" for c in data["sentence_cues"])
            model.cue_any = re.compile(combined, re.IGNORECASE)
            if not re.search(r"[A-Z]", re.sub(r"\\.", "", combined)):  # no upper-case letter outside escapes
                model.cue_any_lower = re.compile(combined)
        return model

    def any_cue(self, sentence: str) -> bool:
        """Could any sentence cue match? (False means none does.)"""
        if self.cue_any is None:
            return False
        if self.cue_any_lower is not None and sentence.isascii():
            return self.cue_any_lower.search(sentence.lower()) is not None
        return self.cue_any.search(sentence) is not None

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
    return schema.records(rows) if isinstance(rows, pd.DataFrame) else list(rows)


def _group_records(frame: pd.DataFrame, keep_index: bool = False) -> dict[str, list[dict]]:
    """Rows of ``frame`` as plain dicts grouped by patient (pandas is slow row by row)."""
    out: dict[str, list[dict]] = {}
    records = schema.records(frame.astype(object).where(frame.notna(), None))
    for index, r in zip(frame.index, records):
        if keep_index:
            r["_index"] = index
        out.setdefault(r["patient_id"], []).append(r)
    return out


_SUMMARY_SPECS = (
    ("calcium", "max"), ("calcium_corrected", "max"), ("phosphate", "max"), ("pth", "max"),
    ("egfr", "min"), ("calcium_phosphate_product", "max"), ("vitamin_d_25oh", "max"),
    ("calcium", "latest"), ("calcium_corrected", "latest"),
)


def _summary_picks(labs: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """For each summary column prefix (``max_calcium`` ...), the picked row of every patient that has
    one (indexed by patient_id)."""
    usable = labs[labs["value_std"].notna() & labs["plausible"].fillna(True).astype(bool)]
    usable = usable.astype({"patient_id": object, "analyte": object, "note_id": object, "note_date": object})
    for analyte, how in _SUMMARY_SPECS:
        sub = usable[usable["analyte"] == analyte]
        if sub.empty:
            continue
        if how == "latest":
            pick = sub.sort_values(["note_date", "start"], na_position="first", kind="stable").groupby("patient_id").tail(1)
        else:
            order = sub.sort_values("value_std", ascending=(how == "min"), kind="stable")
            pick = order.groupby("patient_id").head(1)
        yield f"{how}_{analyte}", pick.set_index("patient_id")


def lab_summary(labs: pd.DataFrame) -> pd.DataFrame:
    """Per patient: max / latest calcium and corrected calcium, max phosphate, max PTH, min eGFR,
    max Ca x P, max 25-OH vitamin D, each with the note and offsets it came from (vectorised)."""
    columns: dict[str, pd.Series] = {}
    for prefix, pick in _summary_picks(labs):
        columns[prefix] = pick["value_std"].astype(float)
        columns[prefix + "_note"] = pick["note_id"]
        columns[prefix + "_start"] = pick["start"].astype("Int64")
        columns[prefix + "_end"] = pick["end"].astype("Int64")
        # a structured row has no note: its file:row and date say where the value came from
        structured = pick["note_id"].isna()
        columns[prefix + "_row"] = pick["text"].where(structured, None) if "text" in pick else None
        columns[prefix + "_date"] = pick["note_date"].where(structured, None)
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
            row = summary.get(prefix + "_row")
            if summary.get(prefix + "_note") is None and row:
                taken = summary.get(prefix + "_date")
                text += f" (structured labs {row.split(' ')[0]}" + (f", taken {taken})" if taken else ")")
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
        rank = {a: i for i, a in enumerate(("present", "historical"))}
        for row in sorted(_records(conditions), key=lambda r: rank.get(r["assertion"], 9)):
            if row["assertion"] not in allowed:
                continue
            key = row["condition"]
            detail = row["detail"] if isinstance(row["detail"], str) else None
            if key == "ckd" and detail and re.search(r"[45]", detail):
                key = "ckd_advanced"
            if key not in weights or key in seen:
                continue
            w = float(weights[key]["weight"])
            if w == 0 or (w > 0) != positive:
                continue
            seen.add(key)
            factor = float(d.get("condition_assertion_factor", {}).get(row["assertion"], 1.0))
            why = weights[key]["why"] + (f" ({detail})" if detail else "")
            if factor != 1.0:
                why += f", {row['assertion']}"
            sites = weights[key].get("sites")
            ev.append(Evidence(w * factor, why, row["note_id"], int(row["start"]), int(row["end"]), "condition",
                               tuple(sites) if sites else None, key))
        return ev

    # -- mentions -------------------------------------------------------------------------------

    def local_for(self, loc_ev: list[Evidence], site: str) -> float:
        """Local tissue damage that applies to a mention at ``site`` (capped): a condition damages
        the tissues listed for it in the evidence model (all tissues when none are listed, or when
        the mention's site is unspecified)."""
        local_cap = float(self.model.data.get("local_cap", -4.0))
        total = sum(e.weight for e in loc_ev if e.sites is None or site == "unspecified" or site in e.sites)
        return max(total, local_cap)

    def mention_score(self, concept: str, site: str, sentence: str, systemic: float, local: float) -> tuple[float, list[tuple[float, str]]]:
        d = self.model.data
        c = d["concepts"][concept]
        parts: list[tuple[float, str]] = [(float(c["intrinsic"]), c["why"])]
        if concept not in NO_SITE_CONCEPTS:
            s = d["sites"].get(site)
            if s:
                parts.append((float(s["weight"]), s["why"]))
        parts.extend(self._sentence_cues(sentence or ""))
        sus = float(c["susceptibility"])
        named = d.get("named_lesion")
        if named and sus > float(named["susceptibility"]) and sum(w for w, _ in parts) <= float(named["own_at_most"]):
            # the deposit's own description names a damaged-tissue lesion (a degenerated fibroid, an
            # old hematoma): the patient's calcium and phosphate shape it little, as for a granuloma
            sus = float(named["susceptibility"])
        if sus and systemic:
            parts.append((sus * systemic, SYSTEMIC_PART))
        if sus and local:
            parts.append((sus * local, LOCAL_PART))
        return sum(w for w, _ in parts), parts

    def _sentence_cues(self, sentence: str) -> tuple[tuple[float, str], ...]:
        """The (weight, why) of every sentence cue affirmed in ``sentence``; remembered per sentence
        (report templates repeat sentences across patients)."""
        sentence = " ".join(sentence.split())  # cues are written with one space: read wrapped lines, tabs and runs the same
        memo = self.__dict__.setdefault("_cue_memo", {})
        found = memo.get(sentence)
        if found is None:
            if len(memo) >= 20_000:  # bounded: a classifier lives through every bucket of a run
                memo.clear()
            found = memo[sentence] = tuple(
                (weight, why) for pattern, weight, why in self.model.cues if _affirmed_match(pattern, sentence)
            ) if self.model.any_cue(sentence) else ()
        return found

    def _pattern(self, key: str, default: str) -> re.Pattern:
        cache = self.__dict__.setdefault("_patterns", {})
        if key not in cache:
            cache[key] = re.compile(self.model.data.get("conflicts", {}).get(key, default), re.IGNORECASE)
        return cache[key]

    def score_patient(self, pm: list[dict], pc, summ: dict, ranges: dict) -> dict:
        """Everything the case decision and the trained model's features need for one patient:
        the systemic and local evidence, and every present mention scored with its mechanism
        (``metastatic`` / ``dystrophic`` / ``unclear``) and, when the unclear mechanism comes from
        evidence pulling both ways, the conflict that made it so."""
        d = self.model.data
        threshold = float(d["mechanism_threshold"])
        cap = float(d["systemic"].get("cap", 6.0))
        cf = d.get("conflicts", {})
        sys_ev = self.systemic_evidence(summ, pc, ranges)
        loc_ev = self.local_evidence(pc)
        systemic_raw = sum(e.weight for e in sys_ev)
        systemic = max(min(systemic_raw, cap), -cap)
        local_all = max(sum(e.weight for e in loc_ev), float(d.get("local_cap", -4.0)))
        keys = {e.key for e in sys_ev}
        cond_keys = {r["condition"] for r in _records(pc) if r["assertion"] in ("present", "historical")}
        scored: list[Scored] = []
        for m in pm:
            if m["assertion"] != "present":
                continue
            local = self.local_for(loc_ev, m["site"])
            score, parts = self.mention_score(m["concept"], m["site"], m["sentence"], systemic, local)
            own = sum(w for w, why in parts if why not in (SYSTEMIC_PART, LOCAL_PART))
            mech = "metastatic" if score >= threshold else "dystrophic" if score <= -threshold else "unclear"
            scored.append(Scored(score, parts, m, mech, own))
        if not cf:
            return {"sys_ev": sys_ev, "loc_ev": loc_ev, "systemic": systemic, "systemic_raw": systemic_raw,
                    "local": local_all, "scored": scored}
        hedged = {
            mech: [m for m in pm if m["assertion"] == "possible" and m["concept"] == f"{mech}_calcification"]
            for mech in ("metastatic", "dystrophic")
        }
        alternative = self._pattern("dystrophic_alternative", r"granulomat|histoplasm|tubercul|\btb\b|dystrophic")
        differential = [h for h in hedged["metastatic"] if alternative.search(h["sentence"] or "")]
        explicit_dys = [s for s in scored if s.mention["concept"] == "dystrophic_calcification"]
        active = [e for e in sys_ev if e.key in set(cf.get("active_labs", ()))]
        active += [e for e in sys_ev if e.kind == "condition" and e.key in set(cf.get("active_conditions", ()))
                   and not e.reason.endswith(", historical")]
        kidney = cond_keys & set(cf.get("kidney_conditions", ()))
        athero = cond_keys & set(cf.get("atherosclerotic_conditions", ()))
        both = cf.get("both_sides")
        specific_dys = [s for s in scored if s.mechanism == "dystrophic" and s.mention["concept"] != "calcification"]
        for s in scored:
            m, concept = s.mention, s.mention["concept"]
            if concept in EXPLICIT_CONCEPTS:
                continue
            sentence = m["sentence"] or ""
            # 1. generic wording at a site where a specific dystrophic lesion is described: same lesion
            if concept == "calcification" and s.mechanism != "dystrophic" and s.own < threshold:
                twin = next((t for t in specific_dys if _same_site(t.mention["site"], m["site"])), None)
                if twin is not None:
                    s.mechanism, s.twin = "dystrophic", twin
                    s.note = Evidence(-threshold, f"same site as {twin.parts[0][1].split(':')[0]}, read as the same lesion",
                                      twin.mention["note_id"], int(twin.mention["start"]), int(twin.mention["end"]), "mention")
            # 2. evidence pulling both ways on the same deposit
            if both:
                pos = sum(w for w, _ in s.parts if w > 0)
                neg = -sum(w for w, _ in s.parts if w < 0)
                if pos >= both["min_each_side"] and neg >= both["min_each_side"] and abs(s.score) < both["margin"]:
                    s.conflict = Evidence(0.0, f"conflicting evidence on one deposit: +{_fmt(round(pos, 1))} metastatic against "
                                          f"-{_fmt(round(neg, 1))} dystrophic ({concept}, site {m['site']})",
                                          m["note_id"], int(m["start"]), int(m["end"]), "mention")
            # 3. vascular calcification: the report describes both intimal and medial calcification, or
            #    states neither in a patient with kidney disease and atherosclerotic risk (labs not high)
            if s.conflict is None and concept in cf.get("mixed_vascular_concepts", ()):
                medial = self._pattern("medial_pattern", r"\bmedial\b|m[oö]nckeberg|tram[- ]?track|circumferential mural").search(sentence)
                intimal = self._pattern("intimal_pattern", r"\bintimal\b|atheroscler|atheromatous|plaque").search(sentence)
                if medial and intimal:
                    s.conflict = Evidence(0.0, "the report describes both intimal (plaque) and medial vascular calcification",
                                          m["note_id"], int(m["start"]), int(m["end"]), "mention")
                elif not medial and not intimal and kidney and athero and not keys & set(cf.get("mixed_vascular_unless_labs", ())):
                    s.conflict = Evidence(0.0, "vascular calcification with both kidney disease (" + ", ".join(k.upper() if len(k) <= 4 else k.replace("_", " ") for k in sorted(kidney))
                                          + ") and atherosclerotic risk (" + ", ".join(a.replace("_", " ") for a in sorted(athero))
                                          + "): medial or intimal not stated", m["note_id"], int(m["start"]), int(m["end"]), "mention")
            # 4. a granulomatous / nodal deposit while calcium or phosphate is high now
            if s.conflict is None and s.mechanism == "dystrophic" and concept in cf.get("driver_sensitive_concepts", ()) and active:
                e = active[0]
                s.conflict = Evidence(0.0, f"{e.reason}: granulomatous calcification may be old or laid down by the driver",
                                      e.note_id, e.start, e.end, e.kind)
            # 5. the report raises the other mechanism itself ("... versus metastatic calcification")
            other = hedged["metastatic" if s.mechanism == "dystrophic" else "dystrophic"] if s.mechanism != "unclear" else []
            if s.conflict is None and other and not (s.mechanism == "metastatic" and s.own >= threshold):
                h = other[0]
                s.conflict = Evidence(0.0, f"the report also offers {h['concept'].replace('_', ' ')} ({h['assertion']})",
                                      h["note_id"], int(h["start"]), int(h["end"]), "mention")
            #    ... or weighs metastatic calcification against a dystrophic cause in one differential
            #    ("granulomatous disease versus metastatic pulmonary calcification"): context cannot settle it
            if s.conflict is None and differential and s.mechanism == "metastatic" and s.own < threshold:
                h = differential[0]
                s.conflict = Evidence(0.0, "the report's differential weighs metastatic calcification against a "
                                      "dystrophic cause (old granulomatous disease)", h["note_id"], int(h["start"]),
                                      int(h["end"]), "mention")
            # 6. an explicit 'dystrophic calcification' outweighs a deposit called metastatic only by context
            if s.conflict is None and explicit_dys and s.mechanism == "metastatic" and s.own < threshold:
                x = explicit_dys[0].mention
                s.conflict = Evidence(0.0, "the report calls the calcification dystrophic; this deposit is metastatic only by context",
                                      x["note_id"], int(x["start"]), int(x["end"]), "mention")
            if s.conflict is not None:
                s.mechanism = "unclear"
        # a generic mention read as the same lesion as a specific one shares that lesion's conflict
        for s in scored:
            if s.twin is not None and s.twin.conflict is not None and s.conflict is None:
                s.conflict, s.mechanism = s.twin.conflict, "unclear"
        return {"sys_ev": sys_ev, "loc_ev": loc_ev, "systemic": systemic, "systemic_raw": systemic_raw,
                "local": local_all, "scored": scored, "explicit_dystrophic": bool(explicit_dys)}

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
        self._cue_memo = {}  # sentences of this call only (the archive classifies bucket after bucket)
        mechanism = pd.Series("", index=mentions.index, dtype="string")
        notes_per = notes.groupby("patient_id")["note_id"].nunique()
        rows = []
        by_patient_m = _group_records(mentions, keep_index=True)
        # only a patient with a present mention is scored: only theirs are needed of the rest
        scored_ids = set(mentions.loc[mentions["assertion"] == "present", "patient_id"].tolist())
        by_patient_c = _group_records(conditions[conditions["patient_id"].isin(scored_ids)])
        summaries = lab_summaries(labs[labs["patient_id"].isin(scored_ids)])
        mechanisms: dict = {}
        no_present = {"scored": [], "sys_ev": [], "loc_ev": []}  # a case with nothing present: read from its mentions only
        for pid in patient_ids:
            pm = by_patient_m.get(pid, [])
            if pid in scored_ids:
                ctx = self.score_patient(pm, by_patient_c.get(pid, []), summaries.get(pid, {}), ranges)
                for s in ctx["scored"]:
                    mechanisms[s.mention["_index"]] = s.mechanism
            else:
                ctx = no_present
            rows.append(self._case_row(pid, int(notes_per.get(pid, 0)), len(pm), ctx, threshold, pm))
        cases = pd.DataFrame(rows, columns=schema.CASES.names)
        if mechanisms:
            mechanism.loc[list(mechanisms)] = list(mechanisms.values())
        return schema.conform(cases, schema.CASES), mechanism

    def _case_row(self, pid, n_notes, n_mentions, ctx, threshold, pm) -> dict:
        scored, sys_ev, loc_ev = ctx["scored"], ctx["sys_ev"], ctx["loc_ev"]
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
        met = [s for s in scored if s.mechanism == "metastatic"]
        dys = [s for s in scored if s.mechanism == "dystrophic"]
        conflicted = [s for s in scored if s.conflict is not None]
        if met:
            label, lead = "metastatic", max(met, key=lambda s: s.score)
            conf = 0.5 + 0.5 * math.tanh(abs(lead.score) / 4)
            if dys or conflicted:
                conf -= 0.1
        elif dys:
            # a clean dystrophic deposit (or the report's own 'dystrophic calcification') decides;
            # a conflicting deposit elsewhere lowers the confidence
            label, lead = "dystrophic", min(dys, key=lambda s: s.score)
            conf = 0.5 + 0.5 * math.tanh(max(abs(lead.score), threshold) / 4)
            if conflicted:
                conf -= 0.15
        elif conflicted:
            label, lead = "indeterminate", max(conflicted, key=lambda s: abs(s.score))
            conf = 0.65
        else:
            label, lead = "indeterminate", max(scored, key=lambda s: abs(s.score))
            conf = 0.5 + 0.4 * (1 - abs(lead.score) / threshold)
        evidence = self._ranked_evidence(label, lead, scored, sys_ev, loc_ev, threshold)
        reasons = []
        for e in evidence:
            if e.reason not in reasons:
                reasons.append(e.reason)
        return base | {"label": label, "confidence": round(max(0.05, min(conf, 0.99)), 3), "score": round(lead.score, 3),
                       "reasons": " | ".join(reasons[:8]), "evidence": json.dumps([e.pointer() for e in evidence])}

    @staticmethod
    def _ranked_evidence(label, lead, scored, sys_ev, loc_ev, threshold) -> list[Evidence]:
        sign = 1 if label == "metastatic" else -1 if label == "dystrophic" else 0
        lead_m = lead.mention
        ev: list[Evidence] = []
        m_ptr = dict(note_id=lead_m["note_id"], start=int(lead_m["start"]), end=int(lead_m["end"]), kind="mention")
        if label == "indeterminate" and lead.conflict is not None:
            ev.append(lead.conflict)
        for i, (w, why) in enumerate(lead.parts):
            if why in (SYSTEMIC_PART, LOCAL_PART):
                continue
            text = f"{why} ({lead_m['assertion']}, site {lead_m['site']})" if i == 0 else why
            ev.append(Evidence(w, text, **m_ptr))
        if lead.note is not None:
            ev.append(lead.note)
        for e in sys_ev + loc_ev:
            ev.append(e)
        head = ev[:1] if label == "indeterminate" and lead.conflict is not None else []
        rest = ev[len(head):]
        if sign == 0:
            rest.sort(key=lambda e: -abs(e.weight))
        else:
            rest.sort(key=lambda e: -(sign * e.weight))
        ev = head + rest
        # the other present mentions come after the lead mention's own evidence and the patient's
        others = sorted((s for s in scored if s is not lead), key=lambda s: -(sign * s.score) if sign else -abs(s.score))
        for s in others:
            m = s.mention
            ev.append(Evidence(s.score, f"also {s.parts[0][1]} ({s.mechanism} pattern, site {m['site']})", m["note_id"],
                               int(m["start"]), int(m["end"]), "mention"))
            if s.conflict is not None and s.conflict.reason not in {e.reason for e in ev}:
                ev.append(s.conflict)
        return ev


# Concepts whose name already says where the calcium sits (no site weight) ...
NO_SITE_CONCEPTS = ("calcified_granuloma", "metastatic_calcification", "dystrophic_calcification", "calciphylaxis")
# ... and those that state the mechanism outright (never overruled by a conflict).
EXPLICIT_CONCEPTS = ("metastatic_calcification", "dystrophic_calcification", "calciphylaxis")
SYSTEMIC_PART = "systemic drivers of high calcium or phosphate"
LOCAL_PART = "local tissue damage"
_SITE_GROUPS = ({"lymph_node", "mediastinum"},)


_NEGATED_BEFORE = re.compile(r"\b(?:no|not|without|negative for|free of|absence of|rather than)\b[^.;:,]{0,30}$", re.IGNORECASE)


def _affirmed_match(pattern: re.Pattern, sentence: str) -> bool:
    """A cue counts when one of its matches is not negated just before it ("no necrosis" does not
    say the tissue is necrotic)."""
    if pattern.search(sentence) is None:
        return False
    return any(not _NEGATED_BEFORE.search(sentence[max(0, m.start() - 40):m.start()]) for m in pattern.finditer(sentence))


def _same_site(a: str, b: str) -> bool:
    if a == b:
        return a != "unspecified"
    return any(a in g and b in g for g in _SITE_GROUPS)


@dataclass
class Scored:
    """A present mention with its score, the parts of the score, and its mechanism."""

    score: float
    parts: list[tuple[float, str]]
    mention: dict
    mechanism: str
    own: float  # intrinsic + site + sentence cues (the deposit's own evidence, without patient context)
    conflict: Evidence | None = None
    note: Evidence | None = None
    twin: "Scored | None" = None


def lab_summaries(labs: pd.DataFrame) -> dict[str, dict]:
    """``lab_summary`` as one plain dict per patient (missing values left out), filled straight
    from the picks (a patient has a handful of the summary's columns)."""
    out: dict[str, dict] = {}
    if not len(labs):
        return out
    has_text = "text" in labs.columns
    for prefix, pick in _summary_picks(labs):
        n = len(pick)
        texts = pick["text"].tolist() if has_text else [None] * n
        for pid, value, note, start, end, text, date in zip(
            pick.index.tolist(), pick["value_std"].astype(float).tolist(), pick["note_id"].tolist(),
            pick["start"].tolist(), pick["end"].tolist(), texts, pick["note_date"].tolist(),
        ):
            d = out.setdefault(pid, {})
            missing = schema.is_missing
            if not missing(value):
                d[prefix] = value
            if not missing(start):
                d[prefix + "_start"] = int(start)
            if not missing(end):
                d[prefix + "_end"] = int(end)
            if not missing(note):
                d[prefix + "_note"] = note
            else:  # a structured row has no note: its file:row and date say where it came from
                if not missing(text):
                    d[prefix + "_row"] = text
                if not missing(date):
                    d[prefix + "_date"] = date
    return out
