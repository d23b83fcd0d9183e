"""The output vocabulary of calcmine: the codes of ``shared/ANNOTATION.md``, declared once.

Every table, rule file and gold file uses exactly these codes; rule files are validated
against them when loaded (see :mod:`pipeline.resources`).
"""

from __future__ import annotations

CONCEPTS: tuple[str, ...] = (
    "calcification",
    "calcified_granuloma",
    "vascular_calcification",
    "coronary_artery_calcification",
    "valvular_calcification",
    "nephrocalcinosis",
    "calcinosis_cutis",
    "tumoral_calcinosis",
    "calciphylaxis",
    "metastatic_calcification",
    "dystrophic_calcification",
    "pleural_calcification",
    "breast_calcification",
    "lymph_node_calcification",
)

SITES: tuple[str, ...] = (
    "lung", "pleura", "airway", "lymph_node", "mediastinum", "heart_valve", "coronary_artery",
    "myocardium", "pericardium", "aorta", "artery", "vein", "kidney", "urinary_tract", "liver",
    "spleen", "pancreas", "gallbladder", "stomach", "bowel", "adrenal", "thyroid", "parathyroid",
    "breast", "brain", "eye", "skin", "soft_tissue", "tendon_joint", "costal_cartilage", "bone",
    "prostate", "uterus", "ovary", "testis", "placenta", "unspecified",
)

LATERALITIES: tuple[str, ...] = ("left", "right", "bilateral")

# Assertion precedence: the first that applies wins (ANNOTATION.md section 3).
ASSERTIONS: tuple[str, ...] = ("negated", "hypothetical", "possible", "family", "historical", "present")

ANALYTES: tuple[str, ...] = (
    "calcium", "ionized_calcium", "calcium_corrected", "phosphate", "pth", "pthrp", "creatinine",
    "egfr", "bun", "albumin", "vitamin_d_25oh", "vitamin_d_1_25", "alkaline_phosphatase",
    "magnesium", "calcium_phosphate_product",
)

# The unit every analyte is normalised to (ANNOTATION.md section 4).
STANDARD_UNITS: dict[str, str] = {
    "calcium": "mg/dL",
    "ionized_calcium": "mg/dL",
    "calcium_corrected": "mg/dL",
    "phosphate": "mg/dL",
    "pth": "pg/mL",
    "pthrp": "pg/mL",
    "creatinine": "mg/dL",
    "egfr": "mL/min/1.73m2",
    "bun": "mg/dL",
    "albumin": "g/dL",
    "vitamin_d_25oh": "ng/mL",
    "vitamin_d_1_25": "pg/mL",
    "alkaline_phosphatase": "U/L",
    "magnesium": "mg/dL",
    "calcium_phosphate_product": "mg2/dL2",
}

LAB_FLAGS: tuple[str, ...] = ("low", "normal", "high")
LAB_SOURCES: tuple[str, ...] = ("text", "structured", "derived")

CONDITION_GROUPS: tuple[str, ...] = ("systemic", "local")

LABELS: tuple[str, ...] = ("dystrophic", "metastatic", "indeterminate", "no_calcification")

MECHANISMS: tuple[str, ...] = ("dystrophic", "metastatic", "unclear")

SECTION_KINDS: tuple[str, ...] = (
    "indication", "history", "comparison", "technique", "findings", "impression", "hpi",
    "past_history", "family_history", "social_history", "medications", "allergies", "labs",
    "exam", "assessment", "plan", "other",
)
