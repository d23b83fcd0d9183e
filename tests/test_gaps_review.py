"""Notes typed with gaps (whitespace other than one space: no-break spaces, form feeds, tabs, runs of
blanks, \\r\\n, line breaks with blanks) must read as the same notes typed with single spaces. Each case
comes from a review of the gap handling; the comment above it names where the gap used to be lost."""

from __future__ import annotations

import pytest

import pipeline
from pipeline.labs import LabExtractor


def read(nlp, text):
    doc = nlp(text)
    for m in doc._.calc_mentions:
        assert text[m.start : m.end] == m.text
    for c in doc._.calc_conditions:
        assert text[c.start : c.end] == c.text
    return ([(" ".join(m.text.split()), m.concept, m.sites, m.laterality, m.assertion) for m in doc._.calc_mentions],
            [(c.condition, c.detail, c.assertion) for c in doc._.calc_conditions])


@pytest.mark.parametrize("plain, gapped", [
    # two blanks after a period as HTML exports write them (". &nbsp;"): _SENT_BREAK's stop group is [ \t]+
    pytest.param("No pleural effusion. Calcified granuloma in the left lower lobe.",
                 "No pleural effusion. \u00a0Calcified granuloma in the left lower lobe.",
                 ),
    # a page break (form feed) inside a phrase: _may_have_gaps' ASCII shortcut never runs find_gaps
    pytest.param("No evidence of metastatic pulmonary calcification.",
                 "No evidence of metastatic pulmonary\x0ccalcification.",
                 ),
    # the long form wrapped with a Windows line ending: Abbreviations.long_before only allows [ \t]+
    pytest.param("History of calcific uremic arteriolopathy (CUA). CUA improving on sodium thiosulfate.",
                 "History of calcific\r\nuremic arteriolopathy (CUA). CUA improving on sodium thiosulfate.",
                 ),
    pytest.param("History of tumoral calcinosis (TC). TC improving.",
                 "History of tumoral \ncalcinosis (TC). TC improving.",
                 ),
    # a tab inside an organ heading: _ORGAN_HEADING's class has no \t
    pytest.param("THYROID US\nLYMPH NODES: Right level IV node with microcalcifications.",
                 "THYROID US\nLYMPH\tNODES: Right level IV node with microcalcifications.",
                 ),
    # the quadrant exception of _SIDE_LABEL is written with single spaces (the class around it takes tabs)
    pytest.param("ABDOMINAL ULTRASOUND\nRight upper quadrant:\nGallbladder wall calcification.",
                 "ABDOMINAL ULTRASOUND\nRight upper\tquadrant:\nGallbladder wall calcification.",
                 ),
    # skin cues written with single spaces
    pytest.param("Calciphylaxis involving the abdominal wall.", "Calciphylaxis involving the abdominal  wall.",
                 ),
    pytest.param("History of CKD stage 4 and secondary hyperparathyroidism.",
                 "History of CKD\u00a0stage 4 and secondary hyperparathyroidism.",
                 ),
    # and what already reads the same
    ("Moderate mitral annular calcification (MAC). MAC is stable.",
     "Moderate mitral  annular calcification\t(MAC).  MAC is stable."),
    ("1. Coronary artery calcification.\n2. No aortic valve calcification.",
     "1.\tCoronary artery calcification.\r\n2.\tNo aortic valve calcification."),
    ("Negative for calcified granuloma in the left lung.", "Negative\tfor\tcalcified\tgranuloma\tin\tthe\tleft\tlung."),
])
def test_gapped_note_reads_as_the_plain_note(nlp, plain, gapped):
    assert read(nlp, gapped) == read(nlp, plain)


def test_assertion_of_a_blank_span_is_the_same_with_a_gap():
    plain, gapped = "No pleural effusion.", "No\tpleural effusion."
    a = pipeline.assess_assertions(plain, [(2, 3)])[0]
    b = pipeline.assess_assertions(gapped, [(2, 3)])[0]
    assert (b.status, b.triggers) == (a.status, a.triggers) == ("present", ())


@pytest.fixture(scope="module")
def labs():
    return LabExtractor()


@pytest.mark.parametrize("plain, gapped", [
    pytest.param("Calcium remains high at 10.9 (PTH 230), similar to 10.8 in May.",
                 "Calcium remains high at 10.9  (PTH 230), similar to 10.8 in May."),
    pytest.param("Ca on 3/12 was 10.9.", "Ca on  3/12 was 10.9."),
    pytest.param("Ca at 0600: 9.8.", "Ca at\t0600: 9.8."),
])
def test_gapped_lab_line_reads_as_the_plain_line(labs, plain, gapped):
    def values(text):
        return [(v.analyte, v.value) for v in labs.extract(text)]

    assert values(plain) and values(gapped) == values(plain)


# -- every dev gold text, retyped ------------------------------------------------------------------

def _dev_texts() -> list[str]:
    import json
    from pathlib import Path

    texts = []
    for path in sorted(Path(__file__).parent.joinpath("gold").glob("*/dev*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            texts.extend([record["text"]] if "text" in record else [n["text"] for n in record.get("notes", [])])
    return list(dict.fromkeys(texts))


def _retype(text: str, how: str, seed: int = 1) -> str:
    import random
    import re

    rng = random.Random(seed)
    # spaces between two words outside de-identification placeholders ("[**Month (only) 116**]" is machine-made)
    between = re.compile(r"(?<=\S) (?=\S)(?![^\[\]]*\*\*\])")
    if how == "crlf":
        return text.replace("\n", "\r\n")
    if how == "indent":
        return re.sub(r"\n(?=\S)", "\n   ", text)
    gap = {"double": "  ", "tab": "\t", "nbsp": "\u00a0"}[how]
    return between.sub(lambda m: gap if rng.random() < 0.3 else " ", text)


@pytest.mark.parametrize("how", ["double", "tab", "crlf", "indent", "nbsp"])
def test_every_dev_gold_text_retyped_reads_the_same(nlp, how):
    texts = _dev_texts()
    assert len(texts) > 700

    def rows(docs):
        return [([(m.concept, m.sites, m.laterality, m.assertion) for m in d._.calc_mentions],
                 [(c.condition, c.detail, c.assertion) for c in d._.calc_conditions],
                 [(v.analyte, v.value) for v in d._.calc_labs]) for d in docs]

    retyped = [_retype(t, how) for t in texts]
    assert sum(a != b for a, b in zip(texts, retyped)) > len(texts) // 2
    differ = [i for i, (a, b) in enumerate(zip(rows(nlp.pipe(texts)), rows(nlp.pipe(retyped)))) if a != b]
    assert not differ, [retyped[i][:120] for i in differ[:3]]
