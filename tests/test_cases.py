"""The case classifier's rules (pipeline/cases.py, data/classifier/evidence-v1.json) on realistic notes.

Each test runs the whole pipeline on one or two short notes in the style of published case reports
and checks the label, and for the newer rules the reason a reviewer sees and its pointer.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.cases import CaseClassifier
from pipeline.process import process


def run(*texts: str, types: tuple[str, ...] = ()) -> tuple[dict, pd.DataFrame, dict]:
    """One patient with the given notes -> (case row, mentions table, note texts)."""
    notes = pd.DataFrame([
        {"note_id": f"n{i}", "patient_id": "p1", "note_date": f"2024-01-{i + 10:02d}",
         "note_type": types[i] if i < len(types) else "clinic", "text": t}
        for i, t in enumerate(texts)
    ])
    tables = process(notes)
    case = tables.cases.iloc[0].to_dict()
    return case, tables.mentions, dict(zip(notes["note_id"], notes["text"]))


def pointers_land(case: dict, texts: dict) -> None:
    for item in json.loads(case["evidence"]):
        assert item["note_id"] in texts
        assert 0 <= item["start"] < item["end"] <= len(texts[item["note_id"]])


# -- local tissue damage only counts where it damages tissue --------------------------------------

def test_lupus_does_not_make_medial_calcification_dystrophic():
    case, _, _ = run(
        "29F with lupus nephritis, CKD 4, never smoker, no diabetes. Phos 6.4, Ca 9.3, PTH 410.",
        "XR TIBIA/FIBULA: Continuous tram-track medial calcification of the posterior tibial arteries "
        "(Monckeberg pattern).",
        types=("clinic", "radiology"))
    assert case["label"] == "metastatic"
    assert "connective-tissue disease" not in case["reasons"].split(" | ")[0]


def test_local_damage_applies_to_the_tissues_it_damages():
    clf = CaseClassifier()
    rows = [{"condition": "connective_tissue_disease", "assertion": "present", "detail": None, "note_id": "n0", "start": 0, "end": 5},
            {"condition": "pancreatitis", "assertion": "present", "detail": None, "note_id": "n0", "start": 6, "end": 18}]
    ev = clf.local_evidence(rows)
    ctd = clf.model.data["conditions"]["connective_tissue_disease"]["weight"]
    pan = clf.model.data["conditions"]["pancreatitis"]["weight"]
    assert clf.local_for(ev, "skin") == pytest.approx(ctd)
    assert clf.local_for(ev, "pancreas") == pytest.approx(pan)
    assert clf.local_for(ev, "artery") == 0
    assert clf.local_for(ev, "unspecified") == pytest.approx(max(ctd + pan, clf.model.data["local_cap"]))


def test_scleroderma_calcinosis_with_normal_labs_is_dystrophic():
    case, _, texts = run(
        "Limited cutaneous systemic sclerosis (CREST). Ca 9.4, phos 3.5, Cr 0.8.",
        "XR HANDS: Clumped calcinosis in the soft tissues of the fingertips.", types=("clinic", "radiology"))
    assert case["label"] == "dystrophic"
    pointers_land(case, texts)


# -- a driver only in the past history weighs half ------------------------------------------------

def test_cured_hyperparathyroidism_in_past_history_leaves_calcific_stenosis_dystrophic():
    case, _, _ = run(
        "PAST MEDICAL HISTORY:\n- Primary hyperparathyroidism, s/p parathyroidectomy 2009, cured\n- Hypertension\n"
        "Labs: Ca 9.4, Cr 1.0.\nA/P: Symptomatic severe degenerative calcific aortic stenosis; TAVR work-up.")
    assert case["label"] == "dystrophic"
    assert "primary hyperparathyroidism, historical" in case["reasons"] or case["confidence"] >= 0.6


def test_historical_condition_weighs_half():
    clf = CaseClassifier()
    rows = [{"condition": "primary_hyperparathyroidism", "assertion": a, "detail": None, "note_id": "n0", "start": 0, "end": 5}
            for a in ("historical",)]
    (ev,) = clf.systemic_evidence({}, rows, {})
    assert ev.weight == pytest.approx(0.5 * clf.model.data["conditions"]["primary_hyperparathyroidism"]["weight"])
    assert ev.reason.endswith(", historical")


# -- evidence pulling both ways on one deposit ----------------------------------------------------

def test_pancreatic_calcification_in_hypercalcaemic_hyperparathyroidism_is_indeterminate():
    case, mentions, texts = run(
        "Recurrent pancreatitis. Ca 12.3 (H), intact PTH 214 (H); sestamibi shows a parathyroid adenoma. "
        "CT abdomen: multiple coarse calcifications throughout the pancreatic head and body, consistent with "
        "chronic calcific pancreatitis.\nDiagnoses: chronic calcific pancreatitis; primary hyperparathyroidism.")
    assert case["label"] == "indeterminate"
    assert "conflicting evidence on one deposit" in case["reasons"].split(" | ")[0]
    assert json.loads(case["evidence"])[0]["reason"].startswith("conflicting evidence")
    present = mentions[mentions["assertion"] == "present"]
    assert (present["mechanism"] == "unclear").all()
    pointers_land(case, texts)


def test_alcoholic_pancreatic_calcification_with_normal_calcium_stays_dystrophic():
    case, _, _ = run(
        "Alcohol-related chronic pancreatitis. Ca 9.0, phos 3.4. CT: coarse parenchymal calcifications of the pancreas.")
    assert case["label"] == "dystrophic"


# -- vascular calcification: intimal or medial ----------------------------------------------------

def test_vascular_calcification_with_ckd_and_atherosclerotic_risk_is_indeterminate():
    case, _, texts = run(
        "XR RIGHT KNEE: Moderate medial compartment joint space narrowing. Vascular calcifications of the "
        "superficial femoral and popliteal arteries.",
        "72F with type 2 diabetes, former smoker (35 pack-years), peripheral arterial disease and CKD stage 3b. "
        "Cr 1.6, Ca 9.3, phos 4.4.", types=("radiology", "clinic"))
    assert case["label"] == "indeterminate"
    assert "atherosclerotic risk" in case["reasons"].split(" | ")[0]
    pointers_land(case, texts)


def test_report_describing_both_intimal_and_medial_calcification_is_indeterminate():
    case, _, _ = run(
        "CKD 3b, phos 4.6. CT: extensive vascular calcification of the iliac arteries with a mixed intimal and medial pattern.")
    assert case["label"] == "indeterminate"
    assert "both intimal (plaque) and medial" in case["reasons"]


def test_monckeberg_calcification_with_high_phosphate_in_esrd_is_metastatic():
    case, _, _ = run(
        "ESRD on hemodialysis, diabetic. Phos 7.8, PTH 820. XR feet: tram-track medial calcification of the "
        "dorsalis pedis arteries (Monckeberg).")
    assert case["label"] == "metastatic"


# -- granulomatous calcification while calcium is high --------------------------------------------

def test_calcified_nodes_with_active_hypercalcaemia_are_indeterminate():
    case, _, texts = run(
        "CT CHEST: Bilateral hilar lymph nodes with peripheral eggshell calcification. Perihilar fibrosis.",
        "Sarcoidosis since 1998. Ca 11.4 (H), PTH 11, 1,25-dihydroxyvitamin D 79 (H). Calcitriol-mediated hypercalcemia.",
        types=("radiology", "clinic"))
    assert case["label"] == "indeterminate"
    assert "granulomatous calcification may be old or laid down by the driver" in case["reasons"]
    pointers_land(case, texts)


def test_calcified_granulomas_with_normal_calcium_stay_dystrophic():
    case, _, _ = run(
        "CT CHEST: Multiple calcified granulomas in the right upper lobe and calcified right hilar nodes, "
        "consistent with prior histoplasmosis.",
        "No history of kidney disease, sarcoidosis or hyperparathyroidism. Ca 9.5, phos 3.3.",
        types=("radiology", "clinic"))
    assert case["label"] == "dystrophic"


def test_generic_calcification_at_a_granuloma_site_is_read_as_the_granuloma():
    case, mentions, _ = run(
        "ESRD on hemodialysis. Ca 9.2, phos 5.0, PTH 280 at goal.",
        "CT CHEST: Two punctate calcifications in the right upper lobe, unchanged since 2015.\n"
        "IMPRESSION: Calcified granulomas in the right upper lobe, sequela of old granulomatous disease.",
        types=("progress", "radiology"))
    assert case["label"] == "dystrophic"
    present = mentions[mentions["assertion"] == "present"]
    generic = present[present["concept"] == "calcification"]
    assert len(generic) and (generic["mechanism"] == "dystrophic").all()


# -- the report offers both mechanisms ------------------------------------------------------------

def test_report_offering_metastatic_calcification_as_alternative_is_indeterminate():
    case, _, _ = run(
        "ESRD on hemodialysis. Phos 5.6, PTH 520.",
        "CT CHEST: Calcified nodules in both upper lobes and calcified mediastinal lymph nodes. These may represent "
        "sequelae of old granulomatous disease or metastatic pulmonary calcification.",
        types=("progress", "radiology"))
    assert case["label"] == "indeterminate"


def test_explicit_dystrophic_statement_outweighs_context():
    case, _, texts = run(
        "CT PELVIS: Several round calcifications in the subcutaneous fat of both buttocks.\n"
        "IMPRESSION: Dystrophic calcification at prior intramuscular injection sites.",
        "ESRD on hemodialysis. Ca 9.0, Phos 6.2 (H), iPTH 380.", types=("radiology", "progress"))
    assert case["label"] == "dystrophic"
    assert "metastatic only by context" in case["reasons"]
    pointers_land(case, texts)


def test_clean_dystrophic_lesion_decides_over_an_unclear_aorta():
    case, _, _ = run(
        "CXR: Stable calcified left ventricular apical aneurysm from an old anterior myocardial infarction. "
        "Tortuous calcified aorta.",
        "CKD 3a, coronary artery disease, former smoker. Ca 8.8, phos 3.4.", types=("radiology", "clinic"))
    assert case["label"] == "dystrophic"


# -- cues and sites -------------------------------------------------------------------------------

def test_porcelain_gallbladder_is_dystrophic():
    case, _, _ = run(
        "CT ABDOMEN: Continuous curvilinear calcification of the gallbladder wall (porcelain gallbladder). Ca 9.4.")
    assert case["label"] == "dystrophic"
    assert "chronic cholecystitis" in case["reasons"]


def test_liver_metastases_calcified_as_treatment_response_are_dystrophic():
    case, _, _ = run(
        "CT: The hepatic metastases have decreased in size and are now partially calcified, compatible with treatment "
        "response. Ca 9.2.")
    assert case["label"] == "dystrophic"


# -- the features the trained model sees follow the same rules ------------------------------------

def test_features_count_conflicting_mentions():
    from pipeline.features import case_features

    notes = pd.DataFrame([{"note_id": "n0", "patient_id": "p1", "text":
                           "Recurrent pancreatitis. Ca 12.3 (H), intact PTH 214 (H). CT: coarse calcifications throughout "
                           "the pancreas, consistent with chronic calcific pancreatitis. Primary hyperparathyroidism."}])
    tables = process(notes)
    feats = case_features(tables.cases, tables.mentions, tables.conditions, tables.labs)
    present = tables.mentions[tables.mentions["assertion"] == "present"]
    assert feats.loc["p1", "n_conflicting"] == len(present) > 0
    assert feats.loc["p1", "n_mech_unclear"] == (present["mechanism"] == "unclear").sum()


# -- a deposit whose own description names a damaged-tissue lesion --------------------------------

def test_calcified_fibroid_in_a_dialysis_patient_stays_dystrophic():
    case, _, _ = run(
        "A 50-year-old woman on hemodialysis (phosphate 6.5 mg/dL) had a pelvic radiograph showing a coarse popcorn "
        "calcification in the pelvis, consistent with a calcified uterine fibroid.")
    assert case["label"] == "dystrophic"
    assert "calcified fibroid" in case["reasons"]


def test_negated_cue_does_not_count():
    clf = CaseClassifier()
    _, with_cue = clf.mention_score("calcification", "soft_tissue", "Calcification within necrotic fat.", 0.0, 0.0)
    _, negated = clf.mention_score("calcification", "soft_tissue", "Calcification of the thigh, without necrosis or mass.", 0.0, 0.0)
    assert "calcium in necrotic tissue" in [why for _, why in with_cue]
    assert "calcium in necrotic tissue" not in [why for _, why in negated]


@pytest.mark.parametrize("sentence", [
    "Ossified mass in the left thigh with peripheral calcification, likely myositis\nossificans.",
    "Ossified mass in the left thigh with peripheral calcification, likely myositis  ossificans.",
    "Ossified mass in the left thigh with peripheral calcification, likely myositis\r\nossificans.",
])
def test_sentence_cues_read_wrapped_lines_tabs_and_runs_of_blanks_as_one_space(sentence):
    clf = CaseClassifier()
    _, parts = clf.mention_score("calcification", "soft_tissue", sentence, 0.0, 0.0)
    assert "calcified old hematoma or injury" in [why for _, why in parts]


# -- the report's own differential between the two mechanisms -------------------------------------

def test_differential_of_old_granulomas_versus_metastatic_calcification_is_indeterminate():
    case, _, texts = run(
        "CT CHEST: Several densely calcified nodules in both upper lobes and calcified right hilar nodes.\n"
        "IMPRESSION: Calcified upper lobe nodules. Differential includes sequelae of prior granulomatous "
        "infection versus metastatic pulmonary calcification given end-stage renal disease.",
        "Nephrology: ESRD on HD MWF. Ca 9.3, Phos 6.1, iPTH 610.",
        types=("radiology", "clinic"))
    assert case["label"] == "indeterminate"
    assert "differential weighs metastatic calcification against a dystrophic cause" in case["reasons"].split(" | ")[0]
    pointers_land(case, texts)


def test_a_hedged_metastatic_calcification_alone_does_not_make_a_case_indeterminate():
    case, _, _ = run(
        "CT CHEST: Diffuse centrilobular ground-glass nodules with calcification in the upper lobes. "
        "Possible metastatic pulmonary calcification.",
        "ESRD on hemodialysis. Ca 10.9, phosphorus 7.8, PTH 1,240.",
        types=("radiology", "clinic"))
    assert case["label"] == "metastatic"


# -- the "medial" cue means the vessel wall's media, not the medial side of a joint ------------------

def test_medial_side_of_the_knee_is_not_a_medial_vascular_pattern():
    clf = CaseClassifier()
    why = [w for _, w in clf._sentence_cues(
        "FINDINGS: Linear calcification of the medial and lateral menisci, consistent with chondrocalcinosis.")]
    assert not any("medial" in w.lower() or "monckeberg" in w.lower() for w in why)
    why = [w for _, w in clf._sentence_cues("Moderate medial compartment narrowing with vascular calcification.")]
    assert not any("medial" in w.lower() or "monckeberg" in w.lower() for w in why)
    for sentence in ("Extensive medial arterial calcification of the tibial arteries.",
                     "Medial-type vascular calcification of the femoral arteries.",
                     "CKD-related medial calcific sclerosis of the iliac arteries."):
        why = [w for _, w in clf._sentence_cues(sentence)]
        assert any("medial" in w.lower() or "monckeberg" in w.lower() for w in why), sentence


def test_a_screening_exam_title_and_a_queried_diagnosis_are_not_findings():
    case, mentions, _ = run(
        "XR ABDOMEN LATERAL (VASCULAR CALCIFICATION SCREENING)\nFindings: No calcification of the abdominal aorta.",
        "INDICATION: Painful calf lesion, ?calciphylaxis.\nFINDINGS: No soft tissue or vascular calcification.",
        types=("radiology", "radiology"))
    assert "present" not in set(mentions["assertion"])
    assert case["label"] == "no_calcification"
