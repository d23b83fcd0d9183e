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
