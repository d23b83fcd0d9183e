"""Mentions, sites, laterality, assertion and sections on the language of real reports."""

from __future__ import annotations

import pytest

import pipeline


def mentions(nlp, text):
    return [(m.text.lower(), m.concept, m.sites, m.laterality, m.assertion) for m in nlp(text)._.calc_mentions]


@pytest.mark.parametrize(
    "text, concept, sites, laterality",
    [
        ("Calcified granuloma in the right upper lobe.", "calcified_granuloma", ("lung",), "right"),
        ("Calcified right hilar lymph nodes.", "lymph_node_calcification", ("lymph_node",), "right"),
        ("Aorta is heavily calcified and tortuous.", "vascular_calcification", ("aorta",), None),
        ("Atherosclerotic calcifications of the thoracic aorta.", "vascular_calcification", ("aorta",), None),
        ("Mitral annular calcification.", "valvular_calcification", ("heart_valve",), None),
        ("Coronary artery calcium score 412.", "coronary_artery_calcification", ("coronary_artery",), None),
        ("Bilateral medullary nephrocalcinosis.", "nephrocalcinosis", ("kidney",), "bilateral"),
        ("There is calcification of the aortic valve.", "valvular_calcification", ("heart_valve",), None),
        ("Calcifications of the aorta and coronary arteries.", "vascular_calcification", ("aorta", "coronary_artery"), None),
        ("Calcinosis cutis of the fingertips in this patient with CREST syndrome.", "calcinosis_cutis", ("skin",), None),
    ],
)
def test_real_report_mentions(nlp, text, concept, sites, laterality):
    found = mentions(nlp, text)
    assert len(found) == 1, found
    _, c, s, lat, assertion = found[0]
    assert (c, s, lat, assertion) == (concept, sites, laterality, "present")


@pytest.mark.parametrize(
    "text, assertion",
    [
        ("8 mm nodule, not definitively calcified.", "negated"),
        ("No change in the small calcified granuloma.", "present"),
        ("Cannot exclude calcification in the left breast.", "possible"),
        ("Skin biopsy is negative for calciphylaxis.", "negated"),
        ("Nephrocalcinosis is not seen.", "negated"),
        ("Renal ultrasound to evaluate for nephrocalcinosis.", "hypothetical"),
        ("Coronary artery calcium score of 0.", "negated"),
        ("History of calciphylaxis of the thighs in 2019.", "historical"),
        ("FAMILY HISTORY: Mother with nephrocalcinosis.", "family"),
        ("PAST MEDICAL HISTORY:\nCalciphylaxis 2019\nHypertension", "historical"),
        ("No pleural effusion but there is a calcified granuloma at the left apex.", "present"),
        ("NO PNEUMOTHORAX. STABLE CALCIFIED GRANULOMA RIGHT LUNG BASE.", "present"),
        ("Native kidneys are atrophic w/o nephrocalcinosis.", "negated"),
        ("The calcified hilar node from 2019 is no longer identified.", "negated"),
        ("Lack of calcification favors a soft tissue mass.", "negated"),
        ("Calcinosis cutis was raised by dermatology but thought unlikely.", "negated"),
        ("Minimal if any calcification of the aortic knob.", "possible"),
        # the technique names the contrast, not a finding that is absent
        ("CT ABDOMEN WITHOUT CONTRAST: Punctate calcifications in the left renal pelvis.", "present"),
        ("Noncontrast CT of the chest obtained w/o IV contrast shows dense coronary calcification.", "present"),
    ],
)
def test_assertion_of_mentions(nlp, text, assertion):
    found = mentions(nlp, text)
    assert [f[4] for f in found] == [assertion], found


@pytest.mark.parametrize(
    "text",
    [
        "No airspace disease, effusion or noncalcified nodule.",
        "A 6 mm non-calcified nodule in the right lower lobe.",
        "Calcium carbonate 500 mg twice daily with meals.",
        "Started on a calcium channel blocker for hypertension.",
        "Left renal calculus measuring 4 mm without hydronephrosis.",
        "Ca 11.2, calcitriol 0.25 mcg daily, calcitonin given.",
        "Fracture of the right calcaneus.",
    ],
)
def test_traps_are_not_mentions(nlp, text):
    assert mentions(nlp, text) == []


def test_abbreviation_defined_then_reused(nlp):
    found = mentions(nlp, "Moderate mitral annular calcification (MAC). The MAC causes mild stenosis.")
    assert [f[1] for f in found] == ["valvular_calcification", "valvular_calcification"]
    assert found[1][0] == "mac"


def test_numbered_impression_and_sections(nlp):
    doc = nlp("FINDINGS: Heart size normal.\nIMPRESSION:\n1. No acute disease.\n2. Calcified granuloma right upper lobe.")
    (m,) = doc._.calc_mentions
    assert m.section == "impression" and m.assertion == "present" and m.laterality == "right"
    assert [s.kind for s in doc._.calc_sections] == ["findings", "impression"]


def test_sentences_split_on_periods_lists_and_lines_but_not_decimals(nlp):
    doc = nlp("Ca 11.2 mg/dL today. Nodes vs. granuloma.\n1. First item\n2. Second item\nwrapped line continues here")
    sents = [s.text.strip() for s in doc.sents]
    assert sents[0] == "Ca 11.2 mg/dL today."
    assert sents[1] == "Nodes vs. granuloma."
    assert sents[2] == "1. First item"
    assert sents[3].startswith("2. Second item") and sents[3].endswith("continues here")


@pytest.mark.parametrize(
    "text, target, status",
    [
        ("The patient denies chest pain or shortness of breath.", "shortness of breath", "negated"),
        ("No pneumothorax, pleural effusion, or focal consolidation.", "focal consolidation", "negated"),
        ("No fever but reports a productive cough.", "productive cough", "present"),
        ("Pulmonary embolism was ruled out.", "Pulmonary embolism", "negated"),
        ("CT to rule out appendicitis.", "appendicitis", "hypothetical"),
        ("Possible early pneumonia in the left base.", "early pneumonia", "possible"),
        ("His father had a myocardial infarction at 50.", "myocardial infarction", "family"),
        ("History of deep vein thrombosis in 2015.", "deep vein thrombosis", "historical"),
        ("No change in the moderate cardiomegaly.", "moderate cardiomegaly", "present"),
        ("Gram negative rods in the blood culture.", "Gram negative rods", "present"),
        # "vs." (one token for spaCy) and "versus" reach the alternatives next to them, not the whole sentence
        ("Left basilar opacity, atelectasis vs. aspiration.", "aspiration", "possible"),
        ("Left basilar opacity, atelectasis vs. aspiration.", "atelectasis", "possible"),
        ("Left basilar opacity, atelectasis versus aspiration.", "Left basilar opacity", "present"),
        ("Her hypercalcemia is from primary hyperparathyroidism versus malignancy.",
         "hypercalcemia", "present"),
        ("Her hypercalcemia is from primary hyperparathyroidism versus malignancy.",
         "primary hyperparathyroidism", "possible"),
        ("Echogenic foci in the right renal pelvis versus small stones.", "Echogenic foci", "possible"),
    ],
)
def test_assess_assertions_on_any_condition(text, target, status):
    start = text.index(target)
    (a,) = pipeline.assess_assertions(text, [(start, start + len(target))])
    assert a.status == status, a
    assert a.negated == (status == "negated")


def test_assess_assertions_rejects_spans_outside_the_text():
    with pytest.raises(ValueError):
        pipeline.assess_assertions("No fever.", [(3, 40)])


@pytest.mark.parametrize("text", [
    "INDICATION: Evaluate for calciphylaxis in the setting of ESRD on hemodialysis.",
    "Reason for exam: assess for calciphylaxis in known ESRD on hemodialysis.",
])
def test_the_setting_of_an_exam_is_not_what_it_looks_for(nlp, text):
    doc = nlp(text)
    assert [(m.text, m.assertion) for m in doc._.calc_mentions] == [("calciphylaxis", "hypothetical")]
    assert [(c.condition, c.assertion) for c in doc._.calc_conditions] == [("esrd", "present"), ("dialysis", "present")]


def test_conditions_with_assertion_and_ckd_stage(nlp):
    doc = nlp("HPI: 61M with CKD stage IV and secondary hyperparathyroidism. Denies sarcoidosis.")
    found = {(c.condition, c.detail, c.assertion) for c in doc._.calc_conditions}
    assert ("ckd", "stage 4", "present") in found
    assert ("secondary_hyperparathyroidism", None, "present") in found
    assert ("sarcoidosis", None, "negated") in found


def test_saved_pipeline_round_trips(tmp_path, nlp):
    text = "FINDINGS: Calcified granuloma in the right upper lobe. No nephrocalcinosis. Ca 11.2 mg/dL. ESRD on HD."
    nlp.to_disk(tmp_path / "calcmine-nlp")
    loaded = pipeline.load_nlp(tmp_path / "calcmine-nlp")
    assert loaded.pipe_names == nlp.pipe_names
    a, b = nlp(text), loaded(text)
    assert a._.calc_mentions == b._.calc_mentions
    assert a._.calc_labs == b._.calc_labs
    assert a._.calc_conditions == b._.calc_conditions


def test_base_model_path_keeps_its_tokenizer(tmp_path):
    """An installed en_core_sci_* model is used as the base when given; tested with a small saved
    pipeline of our own (no download)."""
    import spacy

    base = spacy.blank("en")
    base.add_pipe("sentencizer")
    base.to_disk(tmp_path / "base")
    nlp = pipeline.build_nlp(base=tmp_path / "base")
    assert "calc_mentions" in nlp.pipe_names
    doc = nlp("Calcified granuloma in the left lower lobe.")
    assert [m.concept for m in doc._.calc_mentions] == ["calcified_granuloma"]


def test_multiprocess_pipe_gives_the_same_results(nlp):
    texts = ["Calcified granuloma right apex. Ca 10.1.", "No nephrocalcinosis. ESRD on HD.", "MAC (mitral annular calcification).",
             "Calcified  hilar\r\nlymph nodes."] * 4
    single = [list(d._.calc_mentions) for d in nlp.pipe(texts)]
    multi = [list(d._.calc_mentions) for d in nlp.pipe(texts, n_process=2, batch_size=4)]
    assert single == multi


# ---------------------------------------------------------------------------------------------
# the cheap pre-checks behind the speed work must not change what is found


def test_inline_titles_are_found_at_their_colons(nlp):
    doc = nlp("Stable appearance of the chest. IMPRESSION:  Calcified granuloma. FAMILY HISTORY: Mother with nephrocalcinosis.")
    assert [(s.kind, s.title) for s in doc._.calc_sections] == [
        ("impression", "IMPRESSION"), ("family_history", "FAMILY HISTORY")]
    impression = doc._.calc_sections[0]
    assert doc.text[impression.body_start:].startswith("Calcified granuloma")  # blanks after the colon skipped
    granuloma, nephro = doc._.calc_mentions
    assert granuloma.section == "impression" and granuloma.assertion == "present"
    assert nephro.section == "family_history" and nephro.assertion == "family"


def test_lower_case_words_before_a_colon_are_not_inline_titles(nlp):
    doc = nlp("Reason for the visit is as follows: impression: calcified nodes.")
    assert doc._.calc_sections == ()


def test_abbreviation_needs_its_long_form_right_before_the_brackets(nlp):
    spaced = mentions(nlp, "Severe mitral annular calcification ( MAC ) is seen. MAC is unchanged.")
    assert [f[0] for f in spaced] == ["mitral annular calcification", "mac"]
    detector = nlp.get_pipe("calc_abbreviations")
    assert detector.candidate("Dense MITRAL ANNULAR  CALCIFICATION (MAC) again seen.")
    assert not detector.candidate("Mitral annular calcification is seen. Sedation: MAC (monitored anesthesia care).")
    assert not detector.candidate("Coronary artery calcification, see CT (12/01).")


def test_longest_match_wins_and_overlaps_are_dropped():
    from pipeline.model import Match
    from pipeline.nlp import filter_longest

    no, no_evidence, evidence, later = Match(3, 4, "C"), Match(3, 6, "C"), Match(4, 6, "C"), Match(9, 10, "C")
    assert filter_longest([later, evidence, no, no_evidence]) == [no_evidence, later]
    assert filter_longest([later, no]) == [no, later]  # no overlap: text order
    tie_left, tie_right = Match(1, 3, "S"), Match(2, 4, "S")
    assert filter_longest([tie_right, tie_left]) == [tie_left]  # equal length: the earlier one


def test_sentence_boundaries_are_visible_to_spacy_for_one_sentence_docs(nlp):
    doc = nlp("Calcified granuloma")
    assert doc.has_annotation("SENT_START")
    assert [s.text for s in doc.sents] == ["Calcified granuloma"]

def found_sites(nlp, text):
    return [(m.concept, set(m.sites), m.laterality) for m in nlp(text)._.calc_mentions]


@pytest.mark.parametrize(
    "text, expected",
    [
        # coordinated site lists, after and before the mention
        ("Extensive vascular calcification of the aorta, iliac arteries and their branches.",
         [("vascular_calcification", {"aorta", "artery"}, None)]),
        ("Aorta and iliac arteries are calcified.", [("vascular_calcification", {"aorta", "artery"}, None)]),
        ("Mild coronary and aortic calcification.", [("vascular_calcification", {"coronary_artery", "aorta"}, None)]),
        ("Calcification of the distal abdominal aorta extending into the common iliac arteries.",
         [("vascular_calcification", {"aorta", "artery"}, None)]),
        ("Numerous calcified granulomas throughout both lungs and within the liver and spleen.",
         [("calcified_granuloma", {"lung", "liver", "spleen"}, "bilateral")]),
        # an adjective site coordinated before a head noun names where the head is
        ("Calcified hilar and mediastinal nodes.", [("lymph_node_calcification", {"lymph_node"}, None)]),
        ("Dense calcification of the aortic and mitral valves.", [("valvular_calcification", {"heart_valve"}, None)]),
        ("Tram-track calcification of the abdominal aorta, celiac, SMA, renal and iliac arteries.",
         [("vascular_calcification", {"aorta", "artery"}, None)]),
        ("Atherosclerotic calcifications of the intracranial internal carotid and vertebral arteries.",
         [("vascular_calcification", {"artery"}, None)]),
        ("Mild aortic valve sclerosis with calcification of the right coronary cusp.",
         [("valvular_calcification", {"heart_valve"}, None)]),
        ("Calcification of the right coronary artery.", [("coronary_artery_calcification", {"coronary_artery"}, None)]),
        ("Airways: Calcification of the tracheal and bronchial cartilage, age-related.",
         [("calcification", {"airway"}, None)]),
        # a generic vessel word gives way to a named vessel, not to the organ around it
        ("Benign-appearing vascular calcifications in the right breast.", [("vascular_calcification", {"artery"}, "right")]),
        ("Heavily calcified aortoiliac arteries without aneurysm.", [("vascular_calcification", {"aorta", "artery"}, None)]),
        # a list of findings is not a list of places; the next mention keeps its own sites
        ("IMPRESSION: Old granulomatous disease (calcified nodes, RUL scarring, splenic granulomas).",
         [("lymph_node_calcification", {"lymph_node"}, None)]),
        ("Extensive vascular calcification of the aorta and iliac arteries, and coronary artery calcifications.",
         [("vascular_calcification", {"aorta", "artery"}, None), ("coronary_artery_calcification", {"coronary_artery"}, None)]),
        ("heart normal size mediastinum normal there is calcification of the aortic knob lungs are clear",
         [("vascular_calcification", {"aorta"}, None)]),
        ("heart size normal. calcified aorta. calcified left hilar nodes. lungs clear.",
         [("vascular_calcification", {"aorta"}, None), ("lymph_node_calcification", {"lymph_node"}, "left")]),
        # the subject of the sentence; a section title ends the search for an organ heading
        ("Failed transplant kidney in the right iliac fossa, small and atrophic, with diffuse parenchymal calcification.",
         [("calcification", {"kidney"}, "right")]),
        ("RENAL ULTRASOUND\nBLADDER: Normal.\nIMPRESSION: Punctate medullary calcifications bilaterally.",
         [("calcification", {"kidney"}, "bilateral")]),
        # concepts
        ("Few punctate calcified splenic and hepatic granulomas.", [("calcified_granuloma", {"spleen", "liver"}, None)]),
        ("4 mm calcified nodule in the left upper lobe.", [("calcification", {"lung"}, "left")]),
        ("Calcified nodule in the right lower lobe, consistent with prior granulomatous disease.",
         [("calcified_granuloma", {"lung"}, "right")]),
        ("Calcified granulomas from old histoplasmosis, and coronary calcification on CT.",
         [("calcified_granuloma", {"unspecified"}, None), ("coronary_artery_calcification", {"coronary_artery"}, None)]),
        ("Heavily calcified coronary arteries and aortic valve.", [("calcification", {"coronary_artery", "heart_valve"}, None)]),
        ("Scattered subcutaneous calcifications in the buttocks.", [("calcification", {"skin"}, None)]),
        ("Calcinosis of the fingertips in limited scleroderma.", [("calcinosis_cutis", {"skin"}, None)]),
        ("Calcification in the wall of the right great saphenous vein.", [("vascular_calcification", {"vein"}, "right")]),
        ("Discharge diagnosis: calciphylaxis.", [("calciphylaxis", {"unspecified"}, None)]),
        ("Necrotic eschar on the left thigh, biopsy consistent with calciphylaxis.", [("calciphylaxis", {"skin"}, "left")]),
        # laterality from line labels and one-sided exam titles, not from chamber or vessel names
        ("RIGHT BREAST: Grouped coarse heterogeneous calcifications in the retroareolar region.",
         [("breast_calcification", {"breast"}, "right")]),
        ("RIGHT SHOULDER 3 VIEWS\nFINDINGS: Calcific tendinosis of the supraspinatus.",
         [("calcification", {"tendon_joint"}, "right")]),
        ("Left ventricle: apical aneurysm with curvilinear mural calcification.", [("calcification", {"myocardium"}, None)]),
        ("Calcified plaque in the left main coronary artery.", [("coronary_artery_calcification", {"coronary_artery"}, None)]),
        # more mentions in one sentence keep their own sites
        ("Calcified aorta, calcified coronaries, calcified mitral annulus.",
         [("vascular_calcification", {"aorta"}, None), ("coronary_artery_calcification", {"coronary_artery"}, None),
          ("valvular_calcification", {"heart_valve"}, None)]),
        ("Aortic, coronary and mitral annular calcifications.",
         [("calcification", {"aorta", "coronary_artery", "heart_valve"}, None)]),
        ("IMPRESSION: 1. CALCIFIED GRANULOMA RLL 2. AORTIC CALCIFICATION 3. MAC",
         [("calcified_granuloma", {"lung"}, "right"), ("vascular_calcification", {"aorta"}, None),
          ("valvular_calcification", {"heart_valve"}, None)]),
        # a vessel phrase on the coronaries is coronary; "possibly vascular" does not outrank the organ heading
        ("Calcified atherosclerotic plaque in the proximal LAD.", [("coronary_artery_calcification", {"coronary_artery"}, None)]),
        ("Kidneys: Normal size. Bilateral punctate nonobstructing calcifications, possibly vascular vs tiny stones.",
         [("calcification", {"kidney"}, "bilateral")]),
        # the exam title under a date line gives site and side; a clinical first line gives no side
        ("[**2150-1-1**] 10:00 AM\nLEFT SHOULDER 2 VIEWS\nFINDINGS: Calcific tendinitis.",
         [("calcification", {"tendon_joint"}, "left")]),
        ("[**2150-1-1**]\nTHYROID ULTRASOUND\nFINDINGS: 1 cm solid nodule with microcalcifications.",
         [("calcification", {"thyroid"}, None)]),
        ("HPI: 67M with left leg ulcer\nEXAM: Hard subcutaneous nodules over both elbows.\nCT: coronary calcification.",
         [("coronary_artery_calcification", {"coronary_artery"}, None)]),
    ],
)
def test_site_linking_on_real_report_language(nlp, text, expected):
    assert found_sites(nlp, text) == expected


def test_phrases_match_across_a_wrapped_line(nlp):
    text = ("FINDINGS: There is a 5 mm calcified\ngranuloma in the right upper\nlobe. No evidence\n"
            "of nephrocalcinosis.\n\nPatient has end stage\nrenal disease on hemodialysis.")
    doc = nlp(text)
    granuloma, nephro = doc._.calc_mentions
    assert (granuloma.concept, granuloma.sites, granuloma.laterality) == ("calcified_granuloma", ("lung",), "right")
    assert granuloma.text == "calcified\ngranuloma"  # offsets and text are the note's own
    assert nephro.assertion == "negated"
    assert [c.condition for c in doc._.calc_conditions] == ["esrd", "dialysis"]
    assert doc._.calc_text == text and len(doc.text) == len(text)


# the same report typed with Windows line endings, runs of blanks, tabs and no-break spaces (real exports
# are full of them: spaCy makes each such gap a token of its own)
_REPORT = (
    "EXAM: CT CHEST WITHOUT CONTRAST\n"
    "INDICATION: ESRD on hemodialysis. Evaluate for metastatic pulmonary calcification.\n"
    "FINDINGS: Coronary artery calcium score of 0. There is calcification of the aortic valve. A 4 mm\n"
    "calcified granuloma in the right upper lobe. Calcified right hilar and mediastinal lymph nodes.\n"
    "No evidence of nephrocalcinosis. Mitral annular calcification (MAC). MAC is moderate.\n\n"
    "IMPRESSION: Atherosclerotic calcifications of the thoracic aorta. 8 mm nodule in the left lower lobe,\n"
    "not definitively calcified."
)


def _gappy(text, gap):
    return text.replace("\n", "\r\n") if gap == "\r\n" else text.replace(" ", gap, 1).replace(" of ", f"{gap}of{gap}")


@pytest.mark.parametrize("gap", ["\r\n", "  ", "\t", "\u00a0", " \n  "])
def test_gaps_inside_running_text_change_nothing_but_offsets(nlp, gap):
    def read(text):
        doc = nlp(text)
        for m in doc._.calc_mentions:
            assert text[m.start : m.end] == m.text  # offsets and text are the note's own
        return ([(m.concept, m.sites, m.laterality, m.assertion) for m in doc._.calc_mentions],
                [(c.condition, c.assertion) for c in doc._.calc_conditions])

    plain = read(_REPORT)
    assert len(plain[0]) == 10 and ("esrd", "present") in plain[1]
    if gap == " \n  ":  # a line wrapped with blanks around the break
        text = _REPORT.replace("A 4 mm\ncalcified granuloma", "A 4 mm calcified" + gap + "granuloma")
    else:
        text = _gappy(_REPORT, gap).replace("lymph nodes", f"lymph{gap}nodes").replace("aortic valve", f"aortic{gap}valve")
    assert text != _REPORT
    assert read(text) == plain


def test_report_exported_with_indented_lines_and_two_spaces_after_periods(nlp):
    # the layout of a common de-identified chest radiograph export: every line indented by a blank, two
    # blanks after each period, hard-wrapped lines, blank lines holding a blank
    text = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___F with ESRD on HD, eval for pneumonia\n \n"
        " FINDINGS: \n \n"
        " Heart size is normal.  The aorta is calcified and tortuous.  Mitral annular\n"
        " calcification is noted.  There is a 5 mm calcified granuloma in the right upper\n"
        " lobe.  No pleural effusion or pneumothorax.  No evidence of metastatic pulmonary\n"
        " calcification.\n"
    )
    doc = nlp(text)
    assert [(m.concept, m.sites, m.laterality, m.assertion, m.section) for m in doc._.calc_mentions] == [
        ("vascular_calcification", ("aorta",), None, "present", "findings"),
        ("valvular_calcification", ("heart_valve",), None, "present", "findings"),
        ("calcified_granuloma", ("lung",), "right", "present", "findings"),
        ("metastatic_calcification", ("lung",), None, "negated", "findings"),
    ]
    assert [m.text for m in doc._.calc_mentions][-1] == "metastatic pulmonary\n calcification"
    assert [(c.condition, c.assertion) for c in doc._.calc_conditions] == [("esrd", "present"), ("dialysis", "present")]


def test_a_phrase_is_matched_across_gaps_but_not_across_a_blank_line(nlp):
    doc = nlp("Dense calcification of the aortic  valve.\tCalcified\t\tgranuloma.\r\n")
    assert [(m.text, m.concept, m.sites) for m in doc._.calc_mentions] == [
        ("calcification", "valvular_calcification", ("heart_valve",)),
        ("Calcified\t\tgranuloma", "calcified_granuloma", ("unspecified",)),
    ]
    # a blank line ends a phrase: "aortic" closes one paragraph, "valve replacement" opens the next
    doc = nlp("Calcification of the aortic\n\nvalve replacement was discussed.")
    assert [m.sites for m in doc._.calc_mentions] == [("aorta",)]


def test_assess_assertions_across_gaps():
    text = "No  evidence\tof pleural  effusion.\r\nPossible\u00a0early pneumonia."
    spans = [(text.index("pleural"), text.index("effusion") + 8), (text.index("early"), len(text) - 1)]
    assert [a.status for a in pipeline.assess_assertions(text, spans)] == ["negated", "possible"]


@pytest.mark.parametrize("text, found", [
    ("A/P: Zero coronary calcium. Repeat CAC in 5 yrs.", [("coronary calcium", "negated")]),
    ("Consider a coronary calcium score in 3-5 years.", []),
])
def test_a_calcium_score_still_to_come_is_not_a_finding(nlp, text, found):
    assert [(m.text, m.assertion) for m in nlp(text)._.calc_mentions] == found
