"""Lab extraction formats, traps, unit conversion and derived values (worked examples)."""

from __future__ import annotations

import pytest

from pipeline.labs import LabExtractor, UnitTable, calcium_phosphate_product, corrected_calcium
from pipeline.tables import normalise_labs


@pytest.fixture(scope="module")
def x():
    return LabExtractor()


def values(x, text):
    return [(v.analyte, v.value, v.unit) for v in x.extract(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Ca 11.2", [("calcium", 11.2, None)]),
        ("calcium of 11.2 mg/dL", [("calcium", 11.2, "mg/dL")]),
        ("Calcium: 2.81 mmol/L (H)", [("calcium", 2.81, "mmol/L")]),
        ("Ca/Phos 9.8/6.2", [("calcium", 9.8, None), ("phosphate", 6.2, None)]),
        ("BMP: Na 138, K 4.1, Cl 101, CO2 24, BUN 45, Cr 6.2, Glu 110, Ca 10.9",
         [("bun", 45, None), ("creatinine", 6.2, None), ("calcium", 10.9, None)]),
        ("Calcium 11.4 H 8.5-10.5 mg/dL", [("calcium", 11.4, "mg/dL")]),
        ("Ca 12.1 -> 10.4", [("calcium", 12.1, None), ("calcium", 10.4, None)]),
        ("Cr 3.4 (baseline 1.1)", [("creatinine", 3.4, None), ("creatinine", 1.1, None)]),
        ("phosphorus elevated at 7.2", [("phosphate", 7.2, None)]),
        ("iPTH 1,250 pg/mL", [("pth", 1250, "pg/mL")]),
        ("25(OH)D 14 ng/mL", [("vitamin_d_25oh", 14, "ng/mL")]),
        ("eGFR <15", [("egfr", 15, None)]),
        ("CALCIUM:2.81MMOL/L", [("calcium", 2.81, "MMOL/L")]),
        ("[**2110-3-4**] 06:15AM BLOOD Calcium-8.9 Phos-4.1 Mg-2.0",
         [("calcium", 8.9, None), ("phosphate", 4.1, None), ("magnesium", 2.0, None)]),
        ("Calcium\n   10.2", [("calcium", 10.2, None)]),
        ("CALCIUM                  8.7 - 10.4 mg/dL         9.1          9.3",
         [("calcium", 9.1, "mg/dL"), ("calcium", 9.3, "mg/dL")]),
        ("GFR ESTIMATED            >=60 mL/min/1.73m2       9 (L)        11 (L)",
         [("egfr", 9, "mL/min/1.73m2"), ("egfr", 11, "mL/min/1.73m2")]),
        ("Calcium Lvl              11.2 ↑     10.9 ↑", [("calcium", 11.2, None), ("calcium", 10.9, None)]),
        ("serum calcium 3,12 mmol/l, creatinine 2,4 mg/dl", [("calcium", 3.12, "mmol/l"), ("creatinine", 2.4, "mg/dl")]),
        ("Ca 7.6  Mg 1.5  Phos 2.0", [("calcium", 7.6, None), ("magnesium", 1.5, None), ("phosphate", 2.0, None)]),
        ("K 4.6 BUN 51 Creat 7.4", [("bun", 51, None), ("creatinine", 7.4, None)]),
    ],
)
def test_lab_formats(x, text, expected):
    assert values(x, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Calcium carbonate 1250 mg daily.",
        "calcium acetate 667 mg TID with meals",
        "calcitriol 0.25 mcg daily; ergocalciferol 50,000 units weekly",
        "CA 19-9 was 35 and CA-125 was 40.",
        "Coronary artery calcium score 412.",
        "Vitamin D3 2000 IU daily.",
        "Magnesium oxide 400 mg BID",
    ],
)
def test_not_lab_values(x, text):
    assert values(x, text) == []


def test_flags_and_comparators(x):
    (v,) = x.extract("Calcium: 2.81 mmol/L (H)")
    assert v.flag_written == "high"
    (e,) = x.extract("eGFR <15")
    assert e.comparator == "<"
    first, second = x.extract("PHOSPHORUS               2.4 - 5.1 mg/dL          6.7 (H)      5.8 (H)")
    assert (first.flag_written, second.flag_written) == ("high", "high")
    (arrow,) = x.extract("Phosphorus Lvl 2.3 ↓")
    assert arrow.flag_written == "low"


@pytest.mark.parametrize(
    "analyte, value, unit, expected",
    [
        ("calcium", 2.81, "mmol/L", 11.2625),  # x 4.008
        ("phosphate", 2.1, "mmol/L", 6.5037),  # x 3.097
        ("creatinine", 550, "umol/L", 6.2216),  # / 88.4
        ("pth", 93, "pmol/L", 876.99),  # x 9.43
        ("vitamin_d_25oh", 35, "nmol/L", 14.021),  # / 2.496
        ("albumin", 31, "g/L", 3.1),  # / 10
        ("calcium", 11.2, "mg/dL", 11.2),
    ],
)
def test_unit_conversion_worked_examples(analyte, value, unit, expected):
    n = UnitTable().normalise(analyte, value, unit)
    assert n.value_std == pytest.approx(expected, rel=1e-3)
    assert not n.unit_inferred


def test_missing_unit_inferred_only_when_unambiguous():
    units = UnitTable()
    assert units.normalise("calcium", 11.2, None).value_std == 11.2  # only mg/dL fits
    assert units.normalise("calcium", 2.6, None).value_std == pytest.approx(10.42, rel=1e-3)  # only mmol/L fits
    ambiguous = units.normalise("phosphate", 2.1, None)  # 2.1 mg/dL and 2.1 mmol/L both possible
    assert ambiguous.value_std is None and not ambiguous.unit_inferred
    implausible = units.normalise("calcium", 95, None)
    assert implausible.value_std is None and implausible.plausible is False


def test_derived_values_per_note_worked_example():
    # Ca 8.0 mg/dL, albumin 2.0 g/dL -> corrected 8.0 + 0.8 x (4.0 - 2.0) = 9.6; Ca x P = 8.0 x 7.5 = 60
    assert corrected_calcium(8.0, 2.0) == 9.6
    assert calcium_phosphate_product(8.0, 7.5) == 60.0
    rows = [
        {"note_id": "n1", "patient_id": "p1", "note_date": "2024-01-02", "analyte": a, "value": v, "unit": u,
         "comparator": None, "flag": None, "source": "text", "start": i * 10, "end": i * 10 + 5, "text": ""}
        for i, (a, v, u) in enumerate([("calcium", 8.0, None), ("albumin", 20, "g/L"), ("phosphate", 7.5, "mg/dL")])
    ]
    labs = normalise_labs(rows)
    derived = labs[labs["source"] == "derived"].set_index("analyte")
    assert derived.loc["calcium_corrected", "value_std"] == 9.6
    assert derived.loc["calcium_phosphate_product", "value_std"] == 60.0
    assert derived.loc["calcium_phosphate_product", "flag"] == "high"
    assert labs.set_index("analyte").loc["phosphate", "flag"] == "high"
    assert labs.set_index("analyte").loc["albumin", "value_std"] == 2.0


def analytes_values(x, text):
    return [(v.analyte, v.value) for v in x.extract(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        # a patient's own range over time: both endpoints (DECISIONS 6, 38)
        ("Referred for Ca 10.8-11.1 over the past year on routine BMPs.", [("calcium", 10.8), ("calcium", 11.1)]),
        ("Calcium has run 10.6 to 11.2 on his last several BMPs; PTH pending.", [("calcium", 10.6), ("calcium", 11.2)]),
        ("Her calcium has been between 10.2 and 10.6 for years per old records.", [("calcium", 10.2), ("calcium", 10.6)]),
        ("58M CKD 3b (baseline Cr 1.6-1.8) admitted with AKI.", [("creatinine", 1.6), ("creatinine", 1.8)]),
        ("Labs: Cr 2.2 (baseline 1.0-1.2), BUN 40.", [("creatinine", 2.2), ("creatinine", 1.0), ("creatinine", 1.2), ("bun", 40)]),
        ("Phosphate has been 1.9 to 2.3 mmol/L since January.", [("phosphate", 1.9), ("phosphate", 2.3)]),
        # narrative trends and single values in prose (DECISIONS 5, 37)
        ("Calcium peaked at 13.2 on HD2 and improved to 9.8 after fluids.", [("calcium", 13.2), ("calcium", 9.8)]),
        ("Nadir phosphorus 2.1 on HD3, repleted orally.", [("phosphate", 2.1)]),
        ("Creatinine was 2.8 on admission and down to 1.5 at discharge.", [("creatinine", 2.8), ("creatinine", 1.5)]),
        ("Post-op calcium fell from 11.4 to 8.1 by POD2 with perioral tingling.", [("calcium", 11.4), ("calcium", 8.1)]),
        ("Calcium was 11.8 yesterday and 10.9 today.", [("calcium", 11.8), ("calcium", 10.9)]),
        ("Calcium 11.2 two weeks ago; repeat Ca 10.2 after stopping supplements.", [("calcium", 11.2), ("calcium", 10.2)]),
        ("Cr up to 3.1 from baseline 1.2, now 2.4 after 3 L LR.", [("creatinine", 3.1), ("creatinine", 1.2), ("creatinine", 2.4)]),
        ("PTH down to 310 from 540 on cinacalcet.", [("pth", 310), ("pth", 540)]),
        ("Calcium 10.1 (normal 8.5 to 10.5), improved from 10.9 in March.", [("calcium", 10.1), ("calcium", 10.9)]),
        ("Ca 9.7 today (was 12.3 at diagnosis).", [("calcium", 9.7), ("calcium", 12.3)]),
        ("Phos improved to 5.1 with better binder adherence (was 6.6 in June).", [("phosphate", 5.1), ("phosphate", 6.6)]),
        ("Calcium 9.1 on 10/2/2023 and 9.4 on 1/15/2024.", [("calcium", 9.1), ("calcium", 9.4)]),
        ("ED course: iCa 0.89 at 0130, 1.01 at 0400 after 2 amps calcium gluconate, 1.10 at 0715.",
         [("ionized_calcium", 0.89), ("ionized_calcium", 1.01), ("ionized_calcium", 1.10)]),
        ("Outpatient Ca trend: 10.9 (Jan), 11.4 (Mar), 12.1 (May).", [("calcium", 10.9), ("calcium", 11.4), ("calcium", 12.1)]),
        ("Calcium 9.9, 10.2, 10.5 on serial checks.", [("calcium", 9.9), ("calcium", 10.2), ("calcium", 10.5)]),
        ("Cr 2.9 (0.8 at admission), BUN 52.", [("creatinine", 2.9), ("creatinine", 0.8), ("bun", 52)]),
        ("Cr 1.8, baseline 1.0.", [("creatinine", 1.8), ("creatinine", 1.0)]),
        ("PTH appropriately suppressed at 8.", [("pth", 8)]),
        ("Ca 13.0 with albumin 3.6; corrected 13.3.", [("calcium", 13.0), ("albumin", 3.6), ("calcium_corrected", 13.3)]),
        # values split across lines, ALL-CAPS dumps, Ca++, comma and semicolon panels
        ("Labs (today):\nParathyroid Hormone, Intact\n142 (H)", [("pth", 142)]),
        ("LABS:\nBUN:\n  38\nCreatinine:\n  2.61 (H)", [("bun", 38), ("creatinine", 2.61)]),
        ("CA 7.8 L  PHOS 8.1 H  MG 2.6 H  ALB 3.4 L", [("calcium", 7.8), ("phosphate", 8.1), ("magnesium", 2.6), ("albumin", 3.4)]),
        ("Lytes: K 3.3, Ca++ 1.02 (L), Mg 1.5", [("ionized_calcium", 1.02), ("magnesium", 1.5)]),
        ("Ca++ 12.6 mg/dL, ionized 1.68 mmol/L.", [("calcium", 12.6), ("ionized_calcium", 1.68)]),
        ("Labs reviewed: Ca 10.4; albumin 4.0; phos 3.3; Cr 1.02, eGFR 74; BUN 19.",
         [("calcium", 10.4), ("albumin", 4.0), ("phosphate", 3.3), ("creatinine", 1.02), ("egfr", 74), ("bun", 19)]),
        ("CKD-MBD: Ca 9.2, P 5.1, PTH 287.", [("calcium", 9.2), ("phosphate", 5.1), ("pth", 287)]),
        ("Bone profile: Ca 2.74, adj Ca 2.77 (H), PO4 0.79", [("calcium", 2.74), ("calcium_corrected", 2.77), ("phosphate", 0.79)]),
        ("Ca 9.9, CaxP 73, iPTH 1,210 (H)", [("calcium", 9.9), ("calcium_phosphate_product", 73), ("pth", 1210)]),
        ("Ca 7.9 Phos 9.1 Mg 2.8", [("calcium", 7.9), ("phosphate", 9.1), ("magnesium", 2.8)]),
        # fishbone / BMP shorthand: BUN and creatinine by position (DECISIONS 10, 31, 41)
        ("BMP 138/4.9/104/20/62/4.4<118.", [("bun", 62), ("creatinine", 4.4)]),
        ("Sign-out: BMP 139 | 103 | 24 / 4.1 | 26 | 1.9 (glu 130).", [("bun", 24), ("creatinine", 1.9)]),
        ("Chem 7:\n134 | 100 | 31 /\n---------------- < 142\n3.4 | 22  | 1.6 \\", [("bun", 31), ("creatinine", 1.6)]),
        # lab tables with several date columns
        ("Ca            12.4 H   11.6 H   10.3     8.5-10.5 mg/dL", [("calcium", 12.4), ("calcium", 11.6), ("calcium", 10.3)]),
        ("PTHrP         6.8 H                      <2.0 pmol/L", [("pthrp", 6.8)]),
        ("Calcium     | 13.1 H | 12.0 H | 10.6 H", [("calcium", 13.1), ("calcium", 12.0), ("calcium", 10.6)]),
        ("Ionized Ca  | 1.71 H |        | 1.38 H", [("ionized_calcium", 1.71), ("ionized_calcium", 1.38)]),
        ("Creatinine 1.34 H 0.60-1.10 mg/dL\neGFR 41 L >60 mL/min/1.73m2", [("creatinine", 1.34), ("egfr", 41)]),
    ],
)
def test_new_lab_formats(x, text, expected):
    assert analytes_values(x, text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Call onc fellow at 617-555-0143. Ca 12.9 at 2200.", [("calcium", 12.9)]),  # phone number, time
        ("AKI - renally dose meds. Trend Cr\n2. Hypercalcemia - check PTHrP.", []),  # list numbering
        ("Plan to repeat BMP in AM; if Ca > 12 call MD.", []),  # threshold
        ("Bone disease - zoledronic acid 4 mg monthly, hold if Cr >3.", []),
        ("Replete K to >4, Mg to >2.", []),
        ("Goal PTH 130-600; goal phos 3.5-5.5.", []),  # targets
        ("Lytes: Phos 1.9 - repleting: K-Phos 15 mmol IV.", [("phosphate", 1.9)]),  # drug containing an analyte name
        ("65F on HCTZ 25 mg and calcium + D (Caltrate 600+D) BID.", []),
        ("Change to 2.0 Ca bath. Dialysate Ca 2.5 mEq/L.", []),  # fluid compositions
        ("CRRT: post-filter iCa 0.32, systemic iCa 1.18.", [("ionized_calcium", 1.18)]),
        ("Donor terminal Cr 1.1. Cr 1.3 today.", [("creatinine", 1.3)]),  # donor's value
        ("His sister's calcium was 10.8 last spring and her PTH 52.", []),  # a relative's values
        ("Maternal labs sent: mom's Ca 11.6, PTH 94.", []),
        ("Son at bedside. Ca 12.1 on arrival.", [("calcium", 12.1)]),
        ("Hx of breast Ca 2009 (lumpectomy + XRT).", []),  # a year, not a value
        ("CA 19-9 1,284 (prior 2,310). CA125-22 CEA-3.1", []),
        ("Calcium score on prior CT was 0. CAC score 112 (Agatston).", []),
        ("Vit D 50,000 units weekly continues; magnesium oxide 400 mg BID.", []),
        ("Calcium:creatinine clearance ratio 0.021. Urine calcium 412 mg/24h; urine Ca <5 mg/dL.", []),
        ("bone-specific alk phos 96 mcg/L (H), total alk phos 488 (H)", [("alkaline_phosphatase", 488)]),
        ("Clinical TLS: met (Cr >1.5x ULN).", []),
        ("BP 132/80, P 88, RR 16. p 0.03 by t-test. QTc corrected 452 ms.", []),  # P, corrected as weak names
        ("Ca 10.2 (8.6-10.3), PTH 98 pg/mL [15-65]", [("calcium", 10.2), ("pth", 98)]),  # reference ranges
        ("Mg 2 g IV x1. Calcium carbonate 1250 mg TID and calcitriol 0.25 mcg BID.", []),
        # "2 weeks ago 70" is an earlier PTH with its time label (decision 5); "3, 4 days" is not a series
        ("PTH 88, 2 weeks ago 70; Cr 1.1, 3, 4 days", [("pth", 88), ("pth", 70), ("creatinine", 1.1)]),
    ],
)
def test_new_traps(x, text, expected):
    assert analytes_values(x, text) == expected


def test_trend_values_keep_units_and_flags(x):
    values = x.extract("Ca 11.2 (H) on 3/4 and 11.6 (H) on 3/11. Calcium has been 2.7-2.9 mmol/L on repeated checks since 2021.")
    assert [(v.value, v.flag_written) for v in values[:2]] == [(11.2, "high"), (11.6, "high")]
    assert [(v.value, v.unit) for v in values[2:]] == [(2.7, "mmol/L"), (2.9, "mmol/L")]
    (_, iptH) = x.extract("Ca 9.9; PTH appropriately suppressed at 8")
    assert iptH.flag_written == "low"


def test_text_whose_lower_case_changes_length_reads_the_same(x):
    # 'İ' lower-cases to two characters: the scan falls back to the case-insensitive patterns on the text itself
    plain = "Pt seen. CALCIUM 11.2 H, Ca/Phos 9.8/6.2, CA 19-9 40, calcium carbonate 500 mg."
    dotted = plain.replace("Pt", "İt")
    assert len(dotted.lower()) != len(dotted)
    assert [(v.start, v.end, v.analyte, v.value, v.text) for v in x.extract(dotted)] == [
        (v.start, v.end, v.analyte, v.value, v.text) for v in x.extract(plain)
    ]
    assert analytes_values(x, dotted) == [("calcium", 11.2), ("calcium", 9.8), ("phosphate", 6.2)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Routine labs showed Ca 10.9 (ref 8.5-10.2). Repeat 10.7 with albumin 4.6.",
         [("calcium", 10.9), ("calcium", 10.7), ("albumin", 4.6)]),
        ("Ca 10.9 mg/dL (repeat 10.8), albumin 3.9", [("calcium", 10.9), ("calcium", 10.8), ("albumin", 3.9)]),
        ("Ca 11.2 in [**Month (only) 116**], repeated 11.0.", [("calcium", 11.2), ("calcium", 11.0)]),
        ("# AKI - likely cast nephropathy, Cr improving from 298.", [("creatinine", 298)]),
        # not values: durations, percentages, sizes, doses per day, echo gradients, A/P and s/p
        ("- check calcium and PTH at 6 months", []),
        ("Stone analysis: calcium oxalate monohydrate 80%, calcium phosphate 20%.", []),
        ("plus calcium 1000 mg/day; calcium carbonate/vit D 600 mg/400 IU BID", []),
        ("TTE showed severe calcific AS, AVA 0.8, MG 46, nl EF.", []),
        ("A/P: 9 mm noncalcified solid nodule. 63M s/p 8 wks ergocalciferol.", []),
        ("PTH 88. Repeat 1,25-D pending. Cr 1.2. Repeat in 2 weeks.", [("pth", 88), ("creatinine", 1.2)]),
    ],
)
def test_sample_style_sentences(x, text, expected):
    assert analytes_values(x, text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Trended labs:\nDate      Ca      Alb     Phos    PTH\n4/2       12.9 H  2.8 L   2.0 L   9\n"
         "4/3       11.7 H  2.9 L   2.4\nPlan: continue fluids.",
         [("calcium", 12.9), ("albumin", 2.8), ("phosphate", 2.0), ("pth", 9),
          ("calcium", 11.7), ("albumin", 2.9), ("phosphate", 2.4)]),
        ("| Date | Ca | Phos | PTH |\n| 4/2 | 12.9 | 2.0 | 9 |\n| 4/3 | 11.7 | | |",
         [("calcium", 12.9), ("phosphate", 2.0), ("pth", 9), ("calcium", 11.7)]),
        ("DATE        CA     PHOS   MG\n03/01 0600  8.1 L  6.2 H  2.0",
         [("calcium", 8.1), ("phosphate", 6.2), ("magnesium", 2.0)]),
        ("Ca Phos PTH Cr were all checked on 3/1.\n4 10 12", []),  # prose naming analytes is no header
    ],
)
def test_tables_with_analytes_in_the_header_row(x, text, expected):
    assert analytes_values(x, text) == expected


def test_header_table_cells_are_spanned_by_value_and_flag(x):
    first, second = x.extract("Date      Ca      Alb\n4/2       12.9 H  2.8 L")
    assert (first.text, first.flag_written, second.text, second.flag_written) == ("12.9 H", "high", "2.8 L", "low")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Calcium, serum 10.4 mg/dL; Phosphorus, inorganic 5.9; Magnesium, serum 1.9",
         [("calcium", 10.4), ("phosphate", 5.9), ("magnesium", 1.9)]),
        ("Vitamin D, 25-hydroxy, total: 18 ng/mL; Alkaline phosphatase, total 310 U/L",
         [("vitamin_d_25oh", 18), ("alkaline_phosphatase", 310)]),
        ("eGFR (MDRD) 52; GFR, estimated 44; Phosphate (PO4) 1.8 mmol/L", [("egfr", 52), ("egfr", 44), ("phosphate", 1.8)]),
        ("Ca (corrected) 10.6; Ca corrected for albumin 10.8", [("calcium_corrected", 10.6), ("calcium_corrected", 10.8)]),
        ("Mg++ 1.4, ALK PHOSPHATASE 188, ionized Ca++ 1.05, Ca 2+ 2.65 mmol/L",
         [("magnesium", 1.4), ("alkaline_phosphatase", 188), ("ionized_calcium", 1.05), ("calcium", 2.65)]),
        ("Ca, Phos, Mg pending; recheck in 3 days.", []),
    ],
)
def test_qualified_names(x, text, expected):
    assert analytes_values(x, text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Calcium (03/12/2024): 10.4; Calcium on 3/12 was 10.9", [("calcium", 10.4), ("calcium", 10.9)]),
        ("Ca at 0600: 9.8; Cr at 06:00 1.2", [("calcium", 9.8), ("creatinine", 1.2)]),
        ("PTH peaked at 1200. Ca at 0600.", [("pth", 1200)]),  # a value after 'at' unless a value follows it
        ("Ca 10/12: 10.2; PTH 3/4: 88; Ca 10.2 10/12/23", [("calcium", 10.2), ("pth", 88), ("calcium", 10.2)]),
        ("Labs: 1. Ca 11.2 2. Phos 3.1", [("calcium", 11.2), ("phosphate", 3.1)]),
    ],
)
def test_dates_and_times_between_name_and_value(x, text, expected):
    assert analytes_values(x, text) == expected


def test_bracketed_flag(x):
    (v,) = x.extract("Calcium: 11.2 [H]")
    assert (v.value, v.flag_written) == (11.2, "high")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("BUN and creatinine of 45 and 3.2.", [("bun", 45), ("creatinine", 3.2)]),
        ("Calcium and PTH were 11.2 and 88, respectively.", [("calcium", 11.2), ("pth", 88)]),
        ("Ca and phos 9.8/6.2.", [("calcium", 9.8), ("phosphate", 6.2)]),
        ("Calcium and phosphorus were checked; calcium 10.2 and phosphorus 3.1.", [("calcium", 10.2), ("phosphate", 3.1)]),
        ("Calcium and magnesium 500 and 250 mg BID.", []),  # doses
    ],
)
def test_dictated_pairs(x, text, expected):
    assert analytes_values(x, text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Creatinine 3.4, which is up from 2.6 in May.", [("creatinine", 3.4), ("creatinine", 2.6)]),
        ("Ca trending down, 11.9 -> 11.2 -> 10.6 over 48 h.", [("calcium", 11.9), ("calcium", 11.2), ("calcium", 10.6)]),
        ("Ca 9.0, Alb 2.5 (corrected 10.2), Phos 5.5.", [("calcium", 9.0), ("albumin", 2.5), ("calcium_corrected", 10.2), ("phosphate", 5.5)]),
        ("Na 128 (corrected 134), Ca 9.1", [("calcium", 9.1)]),
        ("Calcium 10.6 mg/dL (8.5-10.1) H on 05/02/2024, 10.9 mg/dL on 06/01/2024.", [("calcium", 10.6), ("calcium", 10.9)]),
    ],
)
def test_more_narrative(x, text, expected):
    assert analytes_values(x, text) == expected


def test_flag_after_reference_range_belongs_to_the_value(x):
    (v,) = x.extract("Ca 10.6 (ref 8.5-10.2) H")
    assert (v.value, v.flag_written) == (10.6, "high")


@pytest.mark.parametrize(
    "text, expected",
    [
        # an aside between two values of a series
        ("K 3.1 and Ca 13.1 on arrival, 3 L LR and calcitonin given, now 11.4.", [("calcium", 13.1), ("calcium", 11.4)]),
        ("Calcium 12.4 at presentation, fluids and pamidronate started, 10.9 the next morning and 9.8 at discharge.",
         [("calcium", 12.4), ("calcium", 10.9), ("calcium", 9.8)]),
        ("Phos 1.6 at midnight, after IV repletion it is 2.9.", [("phosphate", 1.6), ("phosphate", 2.9)]),
        ("Ca 10.4 today, compared with 11.1 at last visit.", [("calcium", 10.4), ("calcium", 11.1)]),
        ("Calcium is 11.6, which is higher than the 10.9 she had in March.", [("calcium", 11.6), ("calcium", 10.9)]),
        ("Calcium 10.9 (PTH 150), similar to 10.7 last year.", [("calcium", 10.9), ("calcium", 10.7), ("pth", 150)]),
        ("Creatinine 1.9 at admission, back to her baseline of 1.1 by discharge.", [("creatinine", 1.9), ("creatinine", 1.1)]),
        ("Post-op day 1 calcium 8.6, today 9.1.", [("calcium", 8.6), ("calcium", 9.1)]),
        ("PTH 61 and 66 on two occasions.", [("pth", 61), ("pth", 66)]),
        ("Ca 11.0 yesterday afternoon, 10.2 this morning.", [("calcium", 11.0), ("calcium", 10.2)]),
        ("iCa 0.91 on i-STAT, prior 1.08 at 1900.", [("ionized_calcium", 0.91), ("ionized_calcium", 1.08)]),
        ("Cr 5.2 (last week 4.4), K 5.6.", [("creatinine", 5.2), ("creatinine", 4.4)]),
        ("Cr 1.88 (1.52), BUN 61 (47), Mg 2.1", [("creatinine", 1.88), ("creatinine", 1.52), ("bun", 61), ("bun", 47), ("magnesium", 2.1)]),
        ("eGFR 27 (1/2023) -> 22 (7/2023) -> 18 today.", [("egfr", 27), ("egfr", 22), ("egfr", 18)]),
        # intra-operative PTH by time point
        ("IOPTH: baseline 212; pre-excision 260; 5 min post-excision 88; 10 min post-excision 41.",
         [("pth", 212), ("pth", 260), ("pth", 88), ("pth", 41)]),
        ("Intraoperative PTH monitoring: pre-incision 143; 10 min post-excision 35.", [("pth", 143), ("pth", 35)]),
        # race-specific eGFR pair (decision 20)
        ("eGFR 44 (non-African American) / 53 (African American)", [("egfr", 44), ("egfr", 53)]),
        ("Since 2021 several BMPs with calcium 10.4-10.9, never symptomatic.", [("calcium", 10.4), ("calcium", 10.9)]),
        # SI names
        ("Adjusted Ca 2.66 (was 2.59 in June), PTH 9.2 pmol/L", [("calcium_corrected", 2.66), ("calcium_corrected", 2.59), ("pth", 9.2)]),
        ("25-OH-vitamin D3 41 nmol/l; 1,25-(OH)2 vitamin D 150 pg/mL", [("vitamin_d_25oh", 41), ("vitamin_d_1_25", 150)]),
    ],
)
def test_series_across_asides_labels_and_comparisons(x, text, expected):
    assert sorted(analytes_values(x, text)) == sorted(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mother with PHPT, Ca 11.4 at the time of her surgery.", []),  # a relative after a plain comma
        ("Sister, calcium 10.8, also asymptomatic. Ca 10.6 today.", [("calcium", 10.6)]),
        ("Daughter called, Ca 11.9 from Monday's draw.", [("calcium", 11.9)]),  # the caller is not the subject
        ("Mg 1.2 -> 2 g IV magnesium sulfate given.", [("magnesium", 1.2)]),  # the arrow leads to a dose
        ("Metformin held given eGFR <30.", []),  # a threshold
        ("Ca 9.4 (2.35), albumin 3.9", [("calcium", 9.4), ("albumin", 3.9)]),  # a unit conversion in parentheses
        ("Ca 9.1, phos normal, now on sevelamer 800 mg", [("calcium", 9.1)]),  # an aside then a dose
        ("Ca 12.2 on arrival, 2 L NS given, now 2 L positive.", [("calcium", 12.2)]),  # not of the same order
        ("Ca 10.1, which is 0.3 above the upper limit.", [("calcium", 10.1)]),
        ("she takes calcium and vitamin D 1000 and 400 IU daily", []),  # a dose pair
    ],
)
def test_series_traps(x, text, expected):
    assert sorted(analytes_values(x, text)) == sorted(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("her calcium level is 10.3 milligrams per deciliter", [("calcium", 10.3, "milligrams per deciliter")]),
        ("Cr bumped to 1.9 after contrast", [("creatinine", 1.9, None)]),
        ("Cr: 1.5 <- 1.8 <- 2.3", [("creatinine", 1.5, None), ("creatinine", 1.8, None), ("creatinine", 2.3, None)]),
        ("Ca has been 10.9, 11.2 and 11.0 on the last three checks",
         [("calcium", 10.9, None), ("calcium", 11.2, None), ("calcium", 11.0, None)]),
        ("calcium peaked at 14.1 on 3/4 before falling to 10.2 on 3/7", [("calcium", 14.1, None), ("calcium", 10.2, None)]),
        ("phos was 7.9 last month and is now 6.1", [("phosphate", 7.9, None), ("phosphate", 6.1, None)]),
        ("calcium 11.9 which has since come down to 10.6", [("calcium", 11.9, None), ("calcium", 10.6, None)]),
        ("PTH-related protein 4.1 pmol/L", [("pthrp", 4.1, "pmol/L")]),
        ("Calcium 9.9 (10.1 last month), phos 4.2 (5.0)",
         [("calcium", 9.9, None), ("calcium", 10.1, None), ("phosphate", 4.2, None), ("phosphate", 5.0, None)]),
        ("eGFR Non-Afr Amer 28, eGFR Afr Amer 33", [("egfr", 28, None), ("egfr", 33, None)]),
        ("Ca 9.8, 10.1 and 2 tabs", [("calcium", 9.8, None)]),  # a count, not a third value
    ],
)
def test_dictated_trends_and_spoken_units(x, text, expected):
    assert values(x, text) == expected


def test_spoken_unit_converts():
    n = UnitTable().normalise("creatinine", 1.9, "milligrams per deciliter")
    assert (n.value_std, n.unit_std) == (1.9, "mg/dL")


@pytest.mark.parametrize(
    "text, expected",
    [
        # a series read through a time label or an aside, typed with two spaces or a tab between words
        ("Ca 12.8 on  arrival, 2 L NS given, now  11.9.", [("calcium", 12.8), ("calcium", 11.9)]),
        ("Calcium 13.9 on\tarrival, received 3 L NS and calcitonin, 11.6 the next  morning.",
         [("calcium", 13.9), ("calcium", 11.6)]),
        ("Calcium 12.2 yesterday  afternoon, 11.0 this  morning.", [("calcium", 12.2), ("calcium", 11.0)]),
        ("Ca 7.2 this AM (pre-op  10.8), iCa 0.88.", [("calcium", 7.2), ("calcium", 10.8), ("ionized_calcium", 0.88)]),
    ],
)
def test_runs_of_blanks_between_words_read_as_one_space(x, text, expected):
    assert [(v.analyte, v.value) for v in x.extract(text)] == expected
    assert [(v.analyte, v.value) for v in x.extract(" ".join(text.split()))] == expected


def test_windows_line_endings_read_as_line_breaks(x):
    fishbone = "Chem 7:\n134 | 100 | 31 /\n---------------- < 142\n3.4 | 22  | 1.6 \\\nCa 7.6  Mg 1.5  Phos 2.0\n"
    windows = fishbone.replace("\n", "\r\n")
    expected = [("bun", 31), ("creatinine", 1.6), ("calcium", 7.6), ("magnesium", 1.5), ("phosphate", 2.0)]
    assert [(v.analyte, v.value) for v in x.extract(fishbone)] == expected
    found = x.extract(windows)
    assert [(v.analyte, v.value) for v in found] == expected
    assert all(windows[v.start : v.end] == v.text for v in found)  # the note's own offsets and text


def test_written_spaces_widen_only_outside_classes_and_look_behinds():
    from pipeline.textutil import blanks

    assert blanks(r"on admit|pod ?#?\d+") == r"on[ \t]+admit|pod[ \t]?#?\d+"
    assert blanks(r"(?<!a b)[a-z ]x y") == r"(?<!a b)[a-z ]x[ \t]+y"  # look-behinds must keep a fixed width
