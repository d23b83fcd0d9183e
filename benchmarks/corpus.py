"""Synthetic clinical / radiology notes for benchmarks.

Every note is assembled from many sentence templates filled with randomly drawn vocabulary and
numbers (sizes, lab values, dates, ages, doses), so almost no two notes -- and few sentences --
repeat; spaCy's tokenizer cache therefore cannot make the corpus artificially cheap.

About 30 % of notes mention calcification (asserted, negated or historical) and, independently,
about 30 % carry lab values. Deterministic for a given seed. No network, no data files.

    from benchmarks.corpus import make_notes
    texts = make_notes(20_000, seed=13)
"""

from __future__ import annotations

import random

# ----------------------------------------------------------------------------------------------
# vocabulary

SIDES = ["right", "left", "bilateral", "Right", "Left"]
LOBES = ["upper lobe", "middle lobe", "lower lobe", "lung base", "lung apex", "lingula", "hilum", "apex"]
LOBE_ABBR = ["RUL", "RML", "RLL", "LUL", "LLL"]
ORGANS = [
    "liver", "spleen", "pancreas", "right kidney", "left kidney", "gallbladder", "thyroid", "prostate",
    "adrenal gland", "uterus", "ovary", "bladder", "stomach", "colon", "appendix", "aorta",
    "pericardium", "mediastinum", "pleura", "breast", "thigh", "forearm", "shoulder", "hip", "knee",
]
VESSELS = ["aorta", "abdominal aorta", "aortic arch", "carotid bifurcation", "iliac arteries",
           "superficial femoral artery", "splenic artery", "renal arteries", "LAD", "circumflex", "RCA"]
ADJ_SIZE = ["small", "tiny", "subcentimeter", "punctate", "coarse", "dense", "scattered", "faint", "mild", "large"]
STATUS = ["stable", "unchanged", "new", "increased", "decreased", "not significantly changed", "slightly larger"]
FINDING_NOUNS = ["nodule", "opacity", "cyst", "lesion", "density", "mass", "focus", "consolidation",
                 "ground-glass opacity", "hypodensity", "effusion", "scarring", "atelectasis"]
NORMAL_STATEMENTS = [
    "The heart is normal in size.", "The mediastinal contours are within normal limits.",
    "No pneumothorax.", "No pleural effusion.", "The lungs are clear.", "No focal consolidation.",
    "Osseous structures are intact.", "No acute fracture is identified.", "The liver is normal in size and echotexture.",
    "No hydronephrosis.", "The bowel gas pattern is unremarkable.", "No free fluid.",
    "No pericardial effusion.", "Visualized upper abdomen is unremarkable.", "Degenerative changes of the spine.",
    "Cardiomediastinal silhouette is stable.", "Pulmonary vasculature is normal.", "No lymphadenopathy.",
    "The gallbladder is surgically absent.", "Trace bibasilar atelectasis.", "Mild cardiomegaly.",
]
SYMPTOMS = ["chest pain", "shortness of breath", "cough", "fever", "abdominal pain", "flank pain", "nausea",
            "fatigue", "leg swelling", "dizziness", "painful skin lesions", "weight loss", "pruritus",
            "bone pain", "muscle cramps", "confusion", "constipation", "hematuria", "dysuria"]
HISTORY = ["hypertension", "diabetes mellitus type 2", "ESRD on hemodialysis", "CKD stage 4", "CAD s/p CABG",
           "atrial fibrillation", "COPD", "hyperlipidemia", "prior tuberculosis", "sarcoidosis",
           "primary hyperparathyroidism", "secondary hyperparathyroidism", "breast cancer s/p lumpectomy",
           "multiple myeloma", "scleroderma", "dermatomyositis", "kidney transplant", "hypothyroidism",
           "peritoneal dialysis", "gout", "heart failure with reduced ejection fraction", "obesity"]
MEDS = [("calcitriol", "mcg", [0.25, 0.5, 1.0]), ("sevelamer", "mg", [800, 1600, 2400]),
        ("calcium acetate", "mg", [667, 1334]), ("cinacalcet", "mg", [30, 60, 90]),
        ("lisinopril", "mg", [5, 10, 20, 40]), ("metoprolol", "mg", [12.5, 25, 50, 100]),
        ("atorvastatin", "mg", [10, 20, 40, 80]), ("furosemide", "mg", [20, 40, 80]),
        ("sodium thiosulfate", "g", [12.5, 25]), ("ergocalciferol", "units", [50000]),
        ("cholecalciferol", "units", [1000, 2000, 5000]), ("alendronate", "mg", [70]),
        ("apixaban", "mg", [2.5, 5]), ("insulin glargine", "units", [10, 18, 24, 32]),
        ("levothyroxine", "mcg", [50, 75, 100, 125]), ("lanthanum carbonate", "mg", [500, 1000])]
FREQ = ["daily", "BID", "TID", "with meals", "qHS", "weekly", "three times weekly after HD", "PRN"]
STUDIES = ["CT chest without contrast", "CT abdomen and pelvis with contrast", "PA and lateral views of the chest",
           "Renal ultrasound", "Transthoracic echocardiogram", "Bilateral screening mammogram",
           "MRI of the left thigh", "Radiographs of both hands", "Portable AP chest", "CT of the sinuses"]
CLINICIANS = ["Dr. [**Name**]", "Dr. XXXX", "[**Last Name (un) 1234**]", "Dr. [**First Name4 (NamePattern1) **]",
              "the nephrology team", "the attending radiologist", "XXXX, MD"]
PLACES = ["[**Hospital 1**]", "[**Location (un) 2**]", "XXXX clinic", "an outside hospital", "the dialysis unit"]

CALC_MENTIONS = [
    "calcified granuloma in the {side} {lobe}",
    "calcified granuloma in the {lobe_abbr}",
    "multiple calcified granulomas in both lungs",
    "{adj} calcified nodule in the {side} {lobe}, consistent with old granulomatous disease",
    "mitral annular calcification (MAC)",
    "mitral annular calcification",
    "aortic valve calcification with {sev} stenosis",
    "calcific aortic stenosis",
    "{adj} vascular calcifications of the {vessel}",
    "atherosclerotic calcification of the {vessel}",
    "{adj} coronary artery calcifications",
    "coronary artery calcium score {cac}",
    "Agatston score of {cac}",
    "medullary nephrocalcinosis",
    "{adj} calcifications in the {organ}",
    "{adj} calcification in the {side} {organ}",
    "dystrophic calcification in the old hematoma",
    "{adj} microcalcifications in the {side} breast",
    "benign-appearing breast calcifications",
    "calcified {side} hilar lymph nodes",
    "pleural calcification along the {side} hemithorax",
    "calcified pleural plaques",
    "calcinosis cutis of the fingertips",
    "subcutaneous calcifications in the {limb}",
    "biopsy-proven calciphylaxis of the {limb}",
    "calcific uremic arteriolopathy",
    "tumoral calcinosis about the {side} {joint}",
    "metastatic calcification of the lungs",
    "calcific tendinitis of the {side} shoulder",
    "a calcific focus in the {side} thyroid lobe",
    "splenic calcified granulomas",
    "pancreatic calcifications",
]
CALC_NEGATED = [
    "No nephrocalcinosis.", "no nephrocalcinosis", "No calcification is seen.", "Without nephrocalcinosis or stones.",
    "No suspicious calcifications.", "No evidence of calciphylaxis.", "No coronary artery calcification.",
    "Negative for vascular calcification.", "No calcified nodules.", "There is no mitral annular calcification.",
]
LIMBS = ["thighs", "abdomen", "calves", "forearms", "buttocks", "left thigh", "right calf", "lower extremities"]
JOINTS = ["hip", "shoulder", "elbow", "knee"]
SEVERITY = ["mild", "moderate", "severe", "no significant"]

LAB_ITEMS = [
    ("Ca", lambda r: f"{r.uniform(7.5, 13.5):.1f}", ["", " mg/dL"]),
    ("Calcium", lambda r: f"{r.uniform(7.5, 13.5):.1f}", ["", " mg/dL"]),
    ("calcium", lambda r: f"{r.uniform(1.9, 3.3):.2f}", [" mmol/L"]),
    ("Corrected calcium", lambda r: f"{r.uniform(8.0, 13.0):.1f}", ["", " mg/dL"]),
    ("iCa", lambda r: f"{r.uniform(1.0, 1.6):.2f}", ["", " mmol/L"]),
    ("Phos", lambda r: f"{r.uniform(2.0, 9.5):.1f}", ["", " mg/dL"]),
    ("Phosphorus", lambda r: f"{r.uniform(2.0, 9.5):.1f}", ["", " mg/dL"]),
    ("PO4", lambda r: f"{r.uniform(2.0, 9.5):.1f}", [""]),
    ("iPTH", lambda r: f"{r.randint(20, 2400):,}", [" pg/mL", ""]),
    ("PTH", lambda r: f"{r.randint(10, 1800)}", [" pg/mL", " ng/L", ""]),
    ("intact PTH", lambda r: f"{r.uniform(2, 150):.1f}", [" pmol/L"]),
    ("PTHrP", lambda r: f"{r.uniform(0.5, 9.0):.1f}", [" pmol/L"]),
    ("Albumin", lambda r: f"{r.uniform(2.0, 4.8):.1f}", ["", " g/dL"]),
    ("Alb", lambda r: f"{r.uniform(2.0, 4.8):.1f}", [""]),
    ("Cr", lambda r: f"{r.uniform(0.6, 11.0):.1f}", ["", " mg/dL"]),
    ("Creatinine", lambda r: f"{r.uniform(0.6, 11.0):.2f}", [" mg/dL"]),
    ("BUN", lambda r: f"{r.randint(8, 110)}", ["", " mg/dL"]),
    ("eGFR", lambda r: f"{r.randint(5, 95)}", ["", " mL/min/1.73m2"]),
    ("25(OH)D", lambda r: f"{r.randint(6, 80)}", [" ng/mL", ""]),
    ("1,25(OH)2D", lambda r: f"{r.randint(10, 140)}", [" pg/mL"]),
    ("Alk phos", lambda r: f"{r.randint(40, 600)}", ["", " U/L"]),
    ("Mg", lambda r: f"{r.uniform(1.2, 3.0):.1f}", ["", " mg/dL"]),
    ("Na", lambda r: f"{r.randint(128, 148)}", [""]),
    ("K", lambda r: f"{r.uniform(3.0, 6.5):.1f}", [""]),
    ("Hgb", lambda r: f"{r.uniform(7.0, 15.5):.1f}", [""]),
    ("WBC", lambda r: f"{r.uniform(3.0, 18.0):.1f}", [""]),
]
FLAGS = ["", "", "", " (H)", " (L)", " H", " *", " (high)"]

SECTIONS_RAD = ["INDICATION:", "CLINICAL HISTORY:", "COMPARISON:", "TECHNIQUE:", "FINDINGS:", "IMPRESSION:"]
SECTIONS_CLIN = ["CHIEF COMPLAINT:", "HPI:", "PAST MEDICAL HISTORY:", "MEDICATIONS:", "LABS:", "PHYSICAL EXAM:",
                 "ASSESSMENT AND PLAN:", "FAMILY HISTORY:", "SOCIAL HISTORY:"]


# ----------------------------------------------------------------------------------------------
# pieces


def _date(r: random.Random) -> str:
    y, m, d = r.randint(1998, 2024), r.randint(1, 12), r.randint(1, 28)
    return r.choice([f"{m}/{d}/{y}", f"{y}-{m:02d}-{d:02d}", f"[**{y}-{m}-{d}**]", "XXXX", f"{m}/{y}"])


def _fill(tpl: str, r: random.Random) -> str:
    return tpl.format(
        side=r.choice(SIDES).lower(), lobe=r.choice(LOBES), lobe_abbr=r.choice(LOBE_ABBR),
        adj=r.choice(ADJ_SIZE), organ=r.choice(ORGANS), vessel=r.choice(VESSELS), sev=r.choice(SEVERITY),
        cac=r.randint(0, 2500), limb=r.choice(LIMBS), joint=r.choice(JOINTS),
    )


def _mm(r: random.Random) -> str:
    v = r.choice([f"{r.randint(2, 45)}", f"{r.uniform(1.5, 30):.1f}"])
    return r.choice([f"{v} mm", f"{v}mm", f"{v} x {r.randint(2, 40)} mm", f"{r.uniform(0.3, 6.0):.1f} cm"])


def _calc_sentence(r: random.Random) -> str:
    k = r.random()
    if k < 0.2:
        return r.choice(CALC_NEGATED)
    m = _fill(r.choice(CALC_MENTIONS), r)
    forms = [
        "{M}.", "There is {m}.", "{Status} {m}.", "{M}, {status} since {date}.", "Again seen is {m}.",
        "{M} measuring {mm}.", "Redemonstrated {m}.", "History of {m}.", "Possible {m}.",
        "{M} is noted, likely sequela of prior infection.", "Findings suggest {m}.",
        "{M} again noted, {status} compared with {date}.", "Known {m}; no new findings.",
        "{M} (series {s}, image {i}).", "Cannot exclude {m}.", "Mother had {m}.",
    ]
    f = r.choice(forms)
    st = r.choice(STATUS)
    return f.format(
        m=m, M=m[:1].upper() + m[1:], status=st, Status=st.capitalize(), date=_date(r), mm=_mm(r),
        s=r.randint(2, 9), i=r.randint(1, 240),
    )


def _lab_sentence(r: random.Random) -> str:
    items = r.sample(LAB_ITEMS, r.randint(2, 6))
    parts = []
    for name, val, units in items:
        sep = r.choice([" ", " ", ": ", " of ", " = "])
        parts.append(f"{name}{sep}{val(r)}{r.choice(units)}{r.choice(FLAGS)}")
    joiner = r.choice([", ", ", ", "; ", " ", "\n"])
    body = joiner.join(parts)
    return r.choice([f"{body}.", f"Labs on {_date(r)}: {body}.", f"Recent labs notable for {body}.",
                     f"{body}", f"Today: {body}.", f"Labs ({_date(r)}) {body}"])


def _general_sentence(r: random.Random) -> str:
    k = r.randrange(14)
    if k == 0:
        return r.choice(NORMAL_STATEMENTS)
    if k == 1:
        return (f"{r.choice(ADJ_SIZE).capitalize()} {_mm(r)} {r.choice(FINDING_NOUNS)} in the "
                f"{r.choice(SIDES).lower()} {r.choice(LOBES + ORGANS)}, {r.choice(STATUS)}.")
    if k == 2:
        return f"{r.randint(18, 95)} year old {r.choice(['man', 'woman', 'male', 'female', 'M', 'F'])} with {r.choice(HISTORY)} presenting with {r.choice(SYMPTOMS)}."
    if k == 3:
        return f"Patient denies {r.choice(SYMPTOMS)} or {r.choice(SYMPTOMS)}."
    if k == 4:
        return f"Compared with {r.choice(STUDIES).lower()} from {_date(r)}."
    if k == 5:
        return f"Seen by {r.choice(CLINICIANS)} at {r.choice(PLACES)} on {_date(r)}."
    if k == 6:
        name, unit, doses = r.choice(MEDS)
        return f"{name} {r.choice(doses)} {unit} {r.choice(FREQ)}"
    if k == 7:
        return f"BP {r.randint(95, 190)}/{r.randint(50, 110)}, HR {r.randint(48, 130)}, T {r.uniform(36.0, 39.4):.1f}, SpO2 {r.randint(86, 100)}% on {r.choice(['RA', '2L NC', '4L'])}."
    if k == 8:
        return f"No {r.choice(FINDING_NOUNS)} in the {r.choice(ORGANS)}."
    if k == 9:
        return f"Recommend follow-up {r.choice(STUDIES).lower()} in {r.randint(3, 24)} months."
    if k == 10:
        return f"History of {r.choice(HISTORY)} diagnosed in {r.randint(1975, 2023)}."
    if k == 11:
        return f"{r.choice(['Father', 'Mother', 'Sister', 'Brother'])} with {r.choice(HISTORY)}."
    if k == 12:
        return f"The {r.choice(ORGANS)} measures {_mm(r)}, {r.choice(STATUS)} from {_date(r)}."
    return f"Discussed with {r.choice(CLINICIANS)} by phone at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}."


def make_note(r: random.Random, calc: bool, labs: bool) -> str:
    n = r.randint(3, 25)
    sentences = [_general_sentence(r) for _ in range(n)]
    if calc:
        for _ in range(r.choice([1, 1, 1, 2, 3])):
            sentences[r.randrange(n)] = _calc_sentence(r)
    if labs:
        for _ in range(r.choice([1, 1, 2])):
            sentences[r.randrange(n)] = _lab_sentence(r)
    # sections: split the sentence list into chunks, each headed by a title
    headers = list(SECTIONS_RAD if r.random() < 0.5 else SECTIONS_CLIN)
    n_sec = min(len(headers), max(1, r.randint(1, max(1, n // 3))))
    titles = sorted(r.sample(range(len(headers)), n_sec))
    cuts = sorted(r.sample(range(1, n), min(n_sec - 1, n - 1))) if n_sec > 1 else []
    chunks, prev = [], 0
    for c in cuts + [n]:
        chunks.append(sentences[prev:c])
        prev = c
    out = []
    numbered = r.random() < 0.3
    for t, chunk in zip(titles, chunks):
        title = headers[t]
        if r.random() < 0.2:
            title = title.title()
        if numbered and title.upper().startswith(("IMPRESSION", "ASSESSMENT")):
            body = "\n".join(f"{j}. {s}" for j, s in enumerate(chunk, 1))
            out.append(f"{title}\n{body}")
        else:
            sep = "\n" if r.random() < 0.35 else " "
            out.append(f"{title} {sep.join(chunk)}")
    text = ("\n\n" if r.random() < 0.7 else "\n").join(out)
    if r.random() < 0.1:
        text = text.upper()
    return text


def make_notes(n: int, seed: int = 13, calc_share: float = 0.3, lab_share: float = 0.3) -> list[str]:
    """``n`` varied synthetic notes (deterministic for ``seed``)."""
    r = random.Random(seed)
    return [make_note(r, r.random() < calc_share, r.random() < lab_share) for _ in range(n)]


if __name__ == "__main__":  # pragma: no cover - show a few
    for t in make_notes(4, seed=1, calc_share=1, lab_share=1):
        print(t, "\n" + "-" * 60)
