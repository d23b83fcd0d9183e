"""Every shipped rule file loads and validates; malformed rule files fail loudly; every trigger's
example sentence behaves as its rule says."""

from __future__ import annotations

import re

import pytest

from pipeline import resources, vocab
from pipeline.errors import RuleFileError


def test_all_shipped_rule_files_are_valid():
    tables = resources.all_rule_tables()
    assert set(resources.mention_rules()) == set(vocab.CONCEPTS), "one mention file per concept code"
    assert len(tables["context"]) > 100


@pytest.mark.parametrize(
    "text, problem",
    [
        ("phrase\tsite\texample\ncalcified\tlung\tCalcified.\n\n", "blank line"),
        ("phrase\tsite\texample\ncalcified\tlungs\tCalcified lungs.\n", "unknown site"),
        ("phrase\tsite\texample\ncalcified\tlung\n", "tab-separated fields"),
        ("phrase\texample\ncalcified\tlung\tCalcified.\n", "header"),
        ("phrase\tsite\texample\ncalcified\tlung\tA granuloma.\n", "does not contain"),
        ("phrase\tsite\texample\nCalcified\tlung\tCalcified.\n", "lower case"),
    ],
)
def test_malformed_rule_files_fail_with_file_and_line(text, problem):
    checks = (resources.lowercase("phrase"), resources.code_in("site", vocab.SITES), resources.example_contains("phrase"))
    with pytest.raises(RuleFileError, match=problem) as info:
        resources.parse_table(text, "mentions/x.tsv", resources.MENTION_COLUMNS, checks)
    assert str(info.value).startswith("mentions/x.tsv")


def _target(example: str) -> tuple[str, tuple[int, int]]:
    m = re.search(r"\[(.+?)\]", example)
    text = example[: m.start()] + m.group(1) + example[m.end() :]
    return text, (m.start(), m.start() + len(m.group(1)))


CONTEXT = [r for r in resources.context_rules()]


@pytest.mark.parametrize("rule", CONTEXT, ids=[f"{r['category']}:{r['phrase']}" for r in CONTEXT])
def test_every_context_trigger_example(rule):
    from pipeline import assess_assertions

    text, span = _target(rule["example"])
    status = assess_assertions(text, [span])[0].status
    category = rule["category"]
    if category == "terminate":  # the scope of the trigger before it ends there
        assert status == "present", (rule["example"], status)
    elif category == "pseudo":
        # the target is not negated by a trigger the pseudo-trigger covers
        assert status != "negated", (rule["example"], status)
    else:
        assert status == category, (rule["example"], status)


MENTION_ROWS = [(concept, r) for concept, rows in resources.mention_rules().items() for r in rows]


@pytest.mark.parametrize("concept, rule", MENTION_ROWS, ids=[f"{c}:{r['phrase']}" for c, r in MENTION_ROWS])
def test_every_mention_phrase_example_is_found(nlp, concept, rule):
    doc = nlp(rule["example"])
    found = [m for m in doc._.calc_mentions if rule["phrase"] in m.text.lower() or m.text.lower() in rule["phrase"]]
    assert found, f"{rule['example']!r}: no mention for {rule['phrase']!r}"


VETOES = list(resources.mention_vetoes())


@pytest.mark.parametrize("rule", VETOES, ids=[r["phrase"] for r in VETOES])
def test_every_veto_example_has_no_mention(nlp, rule):
    doc = nlp(rule["example"])
    assert not doc._.calc_mentions, [m.text for m in doc._.calc_mentions]


SITE_ROWS = list(resources.site_rules())


@pytest.mark.parametrize("rule", SITE_ROWS, ids=[r["phrase"] for r in SITE_ROWS])
def test_every_site_example_links_its_site(nlp, rule):
    doc = nlp(rule["example"])
    sites = {s for m in doc._.calc_mentions for s in m.sites}
    assert rule["site"].rstrip("?") in sites, (rule["example"], sites)


SECTION_ROWS = list(resources.section_rules())


@pytest.mark.parametrize("rule", SECTION_ROWS, ids=[r["title"] for r in SECTION_ROWS])
def test_every_section_title_example(nlp, rule):
    doc = nlp(rule["example"])
    kinds = [s.kind for s in doc._.calc_sections]
    assert kinds and kinds[0] == rule["kind"], (rule["example"], kinds)


CONDITION_ROWS = [(g, r) for g, rows in resources.condition_rules().items() for r in rows]


@pytest.mark.parametrize("group, rule", CONDITION_ROWS, ids=[f"{g}:{r['phrase']}" for g, r in CONDITION_ROWS])
def test_every_condition_example(nlp, group, rule):
    doc = nlp(rule["example"])
    found = {(c.condition, c.group) for c in doc._.calc_conditions}
    assert (rule["condition"], group) in found, (rule["example"], found)


ANALYTE_ROWS = list(resources.analyte_rules())


@pytest.mark.parametrize("rule", ANALYTE_ROWS, ids=[r["synonym"] for r in ANALYTE_ROWS])
def test_every_analyte_synonym_example(rule):
    from pipeline.labs import LabExtractor

    values = LabExtractor().extract(rule["example"])
    assert any(v.analyte == rule["analyte"] for v in values), (rule["example"], values)


SITE_CONCEPT_ROWS = list(resources.site_concept_rules())


@pytest.mark.parametrize("rule", SITE_CONCEPT_ROWS, ids=[r["site"] for r in SITE_CONCEPT_ROWS])
def test_every_site_concept_example(nlp, rule):
    doc = nlp(rule["example"])
    found = {(m.concept, m.site) for m in doc._.calc_mentions}
    assert (rule["concept"], rule["site"]) in found, (rule["example"], found)


LATERALITY_ROWS = list(resources.laterality_rules())


@pytest.mark.parametrize("rule", LATERALITY_ROWS, ids=[r["phrase"] for r in LATERALITY_ROWS])
def test_every_laterality_example(nlp, rule):
    doc = nlp(rule["example"])
    assert [m.laterality for m in doc._.calc_mentions] == [rule["laterality"]], rule["example"]
