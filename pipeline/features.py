"""Per-patient numeric features for a trained case classifier, from the transparent classifier's evidence.

``case_features(notes, mentions, conditions, labs)`` returns one row per patient (index
``patient_id``, sorted) and the columns below, always in this order (``feature_names()``):

1. ``n_mentions``, then ``n_<assertion>`` for every ANNOTATION.md assertion (mention counts).
2. ``present_<concept>`` for every ANNOTATION.md concept: present mentions of that concept.
3. Mention scores from ``CaseClassifier.mention_score`` over present mentions, exactly as the
   transparent classifier scores them: ``score_sum``, ``score_max``, ``score_min``, ``score_mean``
   (0 with no present mention), ``n_mech_metastatic`` / ``n_mech_dystrophic`` /
   ``n_mech_unclear`` (each mention's mechanism, as in the mentions table) and ``n_conflicting``
   (mentions left unclear because the evidence pulls both ways; ``CaseClassifier.score_patient``).
4. Patient context from ``CaseClassifier.systemic_evidence`` / ``local_evidence``:
   ``systemic`` and ``local`` (the capped totals the mention scores use), ``systemic_raw``
   (uncapped), ``systemic_labs`` / ``systemic_conditions`` (sums of lab and condition evidence),
   ``n_systemic_evidence``, ``n_local_evidence``.
5. Labs from ``cases.lab_summary``: each of ``LAB_FEATURES`` (NaN when not measured) followed by
   ``<name>_missing`` (1.0 when not measured). A trained pipeline imputes the NaNs.
6. ``cond_<condition>`` for every condition code of the rule files: 1.0 when the patient has
   that condition asserted ``present`` or ``historical``.

``notes`` only supplies the patient ids (any frame with a ``patient_id`` column, e.g. the cases
table). Nothing here reads note text except the mention sentences the evidence model's cues read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.cases import CaseClassifier, lab_summaries

LAB_FEATURES: tuple[str, ...] = (
    "max_calcium", "max_calcium_corrected", "max_phosphate", "max_pth", "min_egfr",
    "max_calcium_phosphate_product", "max_vitamin_d_25oh", "latest_calcium", "latest_calcium_corrected",
)
CONDITION_ASSERTIONS: tuple[str, ...] = ("present", "historical")


def condition_codes() -> tuple[str, ...]:
    """Condition codes of the shipped rule files (systemic then local, each sorted)."""
    from pipeline import resources

    codes: list[str] = []
    for _group, rows in resources.condition_rules().items():
        for code in sorted({r["condition"] for r in rows}):
            if code not in codes:
                codes.append(code)
    return tuple(codes)


def feature_names() -> list[str]:
    """Every column of ``case_features``, in order."""
    names = ["n_mentions"] + [f"n_{a}" for a in vocab.ASSERTIONS]
    names += [f"present_{c}" for c in vocab.CONCEPTS]
    names += ["score_sum", "score_max", "score_min", "score_mean", "n_mech_metastatic", "n_mech_dystrophic", "n_mech_unclear",
              "n_conflicting"]
    names += ["systemic", "local", "systemic_raw", "systemic_labs", "systemic_conditions", "n_systemic_evidence", "n_local_evidence"]
    for lab in LAB_FEATURES:
        names += [lab, f"{lab}_missing"]
    names += [f"cond_{c}" for c in condition_codes()]
    return names


def default_ranges() -> dict:
    """Reference ranges per analyte, as ``process.assemble`` passes them to the classifier."""
    from pipeline.labs import UnitTable

    units = UnitTable()
    return {a: units.reference(a) for a in units.ranges}


def case_features(
    notes: pd.DataFrame,
    mentions: pd.DataFrame,
    conditions: pd.DataFrame,
    labs: pd.DataFrame,
    classifier: CaseClassifier | None = None,
    ranges: dict | None = None,
) -> pd.DataFrame:
    """One row of numeric features per patient of ``notes`` (see the module docstring)."""
    clf = classifier or CaseClassifier()
    ranges = default_ranges() if ranges is None else ranges
    summaries = lab_summaries(labs)
    names = feature_names()
    cond_cols = {n for n in names if n.startswith("cond_")}
    patient_ids = sorted(pd.Series(notes["patient_id"]).dropna().astype(str).unique().tolist())
    by_mentions = dict(list(mentions.groupby("patient_id", sort=False)))
    by_conditions = dict(list(conditions.groupby("patient_id", sort=False)))
    rows = []
    for pid in patient_ids:
        pm = by_mentions.get(pid, mentions.iloc[0:0])
        pc = by_conditions.get(pid, conditions.iloc[0:0])
        summ = summaries.get(pid, {})
        # Exactly what CaseClassifier.classify computes for the patient (caps, conflicts, mechanisms).
        ctx = clf.score_patient(pm.astype(object).where(pm.notna(), None).to_dict("records"), pc, summ, ranges)
        sys_ev, loc_ev = ctx["sys_ev"], ctx["loc_ev"]
        systemic_raw, systemic, local = ctx["systemic_raw"], ctx["systemic"], ctx["local"]
        row: dict = {"n_mentions": float(len(pm))}
        counts = pm["assertion"].value_counts()
        for a in vocab.ASSERTIONS:
            row[f"n_{a}"] = float(counts.get(a, 0))
        present = pm[pm["assertion"] == "present"]
        per_concept = present["concept"].value_counts()
        for c in vocab.CONCEPTS:
            row[f"present_{c}"] = float(per_concept.get(c, 0))
        scores = [x.score for x in ctx["scored"]]
        mechs = [x.mechanism for x in ctx["scored"]]
        row["score_sum"] = float(sum(scores))
        row["score_max"] = float(max(scores, default=0.0))
        row["score_min"] = float(min(scores, default=0.0))
        row["score_mean"] = float(np.mean(scores)) if scores else 0.0
        row["n_mech_metastatic"] = float(mechs.count("metastatic"))
        row["n_mech_dystrophic"] = float(mechs.count("dystrophic"))
        row["n_mech_unclear"] = float(mechs.count("unclear"))
        row["n_conflicting"] = float(sum(x.conflict is not None for x in ctx["scored"]))
        row["systemic"] = float(systemic)
        row["local"] = float(local)
        row["systemic_raw"] = float(systemic_raw)
        row["systemic_labs"] = float(sum(e.weight for e in sys_ev if e.kind == "lab"))
        row["systemic_conditions"] = float(sum(e.weight for e in sys_ev if e.kind == "condition"))
        row["n_systemic_evidence"] = float(len(sys_ev))
        row["n_local_evidence"] = float(len(loc_ev))
        for lab in LAB_FEATURES:
            value = summ.get(lab)
            row[lab] = float(value) if value is not None else np.nan
            row[f"{lab}_missing"] = 0.0 if value is not None else 1.0
        asserted = pc[pc["assertion"].isin(CONDITION_ASSERTIONS)]["condition"]
        for code in set(asserted.dropna().astype(str)):
            if f"cond_{code}" in cond_cols:
                row[f"cond_{code}"] = 1.0
        rows.append(row)
    frame = pd.DataFrame(rows, columns=names, index=pd.Index(patient_ids, name="patient_id"), dtype="float64")
    frame[sorted(cond_cols, key=names.index)] = frame[sorted(cond_cols, key=names.index)].fillna(0.0)
    return frame
