"""Rule and vocabulary files shipped inside the package, loaded and validated.

Every file under ``pipeline/data`` is a tab-separated table with a header row. Lines starting with
``#`` are comments. A blank line, a wrong number of columns, an unknown code or an example sentence
that does not contain its phrase is an error naming the file and line: rule files fail loudly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Iterable

from pipeline import vocab
from pipeline.errors import RuleFileError

DATA_PACKAGE = "pipeline.data"


@dataclass(frozen=True)
class Row:
    """One validated row of a rule file, with where it came from."""

    fields: dict[str, str]
    source: str
    line: int

    def __getitem__(self, key: str) -> str:
        return self.fields[key]


Check = Callable[[dict[str, str]], str | None]


def _data_file(relpath: str):
    node = resources.files(DATA_PACKAGE)
    for part in relpath.split("/"):
        node = node.joinpath(part)
    return node


def list_data_files(folder: str) -> list[str]:
    """Names of the ``.tsv`` files in a data folder, sorted (e.g. one per concept)."""
    node = _data_file(folder)
    return sorted(p.name for p in node.iterdir() if p.name.endswith(".tsv"))


def parse_table(text: str, source: str, columns: tuple[str, ...], checks: Iterable[Check] = ()) -> list[Row]:
    """Parse and validate one rule table; raise RuleFileError on the first problem."""
    checks = tuple(checks)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise RuleFileError(f"{source}: file is empty; expected a header row {'<TAB>'.join(columns)}")
    header = tuple(lines[0].split("\t"))
    if header != columns:
        raise RuleFileError(f"{source}:1: header is {list(header)}, expected {list(columns)}")
    rows: list[Row] = []
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith("#"):
            continue
        if not line.strip():
            raise RuleFileError(f"{source}:{number}: blank line; remove it or start it with '#'")
        parts = line.split("\t")
        if len(parts) != len(columns):
            raise RuleFileError(
                f"{source}:{number}: {len(parts)} tab-separated fields, expected {len(columns)} ({', '.join(columns)})"
            )
        fields = dict(zip(columns, (p.strip() for p in parts)))
        for key, value in fields.items():
            if not value:
                raise RuleFileError(f"{source}:{number}: empty '{key}'")
        for check in checks:
            problem = check(fields)
            if problem:
                raise RuleFileError(f"{source}:{number}: {problem}")
        rows.append(Row(fields, source, number))
    return rows


@functools.lru_cache(maxsize=None)
def load_table(relpath: str, columns: tuple[str, ...], checks: tuple[Check, ...] = ()) -> tuple[Row, ...]:
    """Load ``pipeline/data/<relpath>``, validated; cached per process."""
    node = _data_file(relpath)
    try:
        text = node.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RuleFileError(f"{relpath}: rule file missing from the package") from exc
    return tuple(parse_table(text, relpath, columns, checks))


# ---- reusable checks -------------------------------------------------------------------------

def code_in(column: str, allowed: Iterable[str], extra: Iterable[str] = ()) -> Check:
    allowed_set = frozenset(allowed) | frozenset(extra)

    def check(fields: dict[str, str]) -> str | None:
        if fields[column] not in allowed_set:
            return f"unknown {column} {fields[column]!r}; expected one of {sorted(allowed_set)}"
        return None

    return check


def example_contains(phrase_column: str, example_column: str = "example") -> Check:
    def check(fields: dict[str, str]) -> str | None:
        phrase = fields[phrase_column].lower()
        if phrase not in fields[example_column].lower():
            return f"example {fields[example_column]!r} does not contain {fields[phrase_column]!r}"
        return None

    return check


def lowercase(column: str) -> Check:
    def check(fields: dict[str, str]) -> str | None:
        if fields[column] != fields[column].lower():
            return f"{column} {fields[column]!r} must be lower case (matching ignores case)"
        return None

    return check


def number(*columns: str) -> Check:
    def check(fields: dict[str, str]) -> str | None:
        for column in columns:
            try:
                float(fields[column])
            except ValueError:
                return f"{column} {fields[column]!r} is not a number"
        return None

    return check


# ---- the shipped tables ----------------------------------------------------------------------

MENTION_COLUMNS = ("phrase", "site", "example")
SITE_COLUMNS = ("phrase", "site", "example")
LATERALITY_COLUMNS = ("phrase", "laterality", "example")
SITE_CONCEPT_COLUMNS = ("site", "concept", "example")
VETO_COLUMNS = ("phrase", "example")
CONTEXT_COLUMNS = ("phrase", "category", "direction", "example")
SECTION_COLUMNS = ("title", "kind", "example")
CONDITION_COLUMNS = ("phrase", "condition", "example")
ANALYTE_COLUMNS = ("synonym", "analyte", "example")
UNIT_COLUMNS = ("analyte", "unit", "factor", "plausible_low", "plausible_high", "infer", "example")
RANGE_COLUMNS = ("analyte", "low", "high", "example")
LAB_VETO_COLUMNS = ("pattern", "example")

CONTEXT_CATEGORIES = ("negated", "hypothetical", "possible", "family", "historical", "pseudo", "terminate")
CONTEXT_DIRECTIONS = ("forward", "backward", "both", "adjacent", "-")


def _context_example(fields: dict[str, str]) -> str | None:
    example = fields["example"]
    if fields["phrase"].lower() not in example.lower():
        return f"example {example!r} does not contain {fields['phrase']!r}"
    if not ("[" in example and "]" in example):
        return "example must mark its target with [brackets]"
    if fields["category"] in ("pseudo", "terminate") and fields["direction"] != "-":
        return "pseudo and terminate triggers take direction '-'"
    if fields["category"] not in ("pseudo", "terminate") and fields["direction"] == "-":
        return "assertion triggers need a direction: forward, backward, both or adjacent"
    return None


def _mention_site(fields: dict[str, str]) -> str | None:
    # a site code fixes the site; "code?" is a default used only when no site is linked; "-" none
    site = fields["site"].removesuffix("?")
    if site != "-" and site not in vocab.SITES:
        return f"unknown site {fields['site']!r}; expected a site code, 'code?' or '-'"
    return None


def mention_rules() -> dict[str, tuple[Row, ...]]:
    """One rule file per concept: ``mentions/<concept>.tsv``."""
    out: dict[str, tuple[Row, ...]] = {}
    for name in list_data_files("mentions"):
        concept = name.removesuffix(".tsv")
        if concept not in vocab.CONCEPTS:
            raise RuleFileError(f"mentions/{name}: {concept!r} is not a concept code of ANNOTATION.md")
        out[concept] = load_table(
            f"mentions/{name}",
            MENTION_COLUMNS,
            (lowercase("phrase"), _mention_site, example_contains("phrase")),
        )
    return out


def mention_vetoes() -> tuple[Row, ...]:
    return load_table("mention_vetoes.tsv", VETO_COLUMNS, (lowercase("phrase"), example_contains("phrase")))


def site_rules() -> tuple[Row, ...]:
    return load_table("sites.tsv", SITE_COLUMNS, (lowercase("phrase"), _mention_site, example_contains("phrase")))


def laterality_rules() -> tuple[Row, ...]:
    return load_table(
        "laterality.tsv",
        LATERALITY_COLUMNS,
        (lowercase("phrase"), code_in("laterality", vocab.LATERALITIES), example_contains("phrase")),
    )


def site_concept_rules() -> tuple[Row, ...]:
    return load_table(
        "site_concepts.tsv",
        SITE_CONCEPT_COLUMNS,
        (code_in("site", vocab.SITES), code_in("concept", vocab.CONCEPTS)),
    )


def context_rules() -> tuple[Row, ...]:
    return load_table(
        "context.tsv",
        CONTEXT_COLUMNS,
        (
            lowercase("phrase"),
            code_in("category", CONTEXT_CATEGORIES),
            code_in("direction", CONTEXT_DIRECTIONS),
            _context_example,
        ),
    )


def section_rules() -> tuple[Row, ...]:
    return load_table(
        "sections.tsv",
        SECTION_COLUMNS,
        (lowercase("title"), code_in("kind", vocab.SECTION_KINDS), example_contains("title")),
    )


CONDITION_FILES = {"systemic": "conditions/systemic.tsv", "local": "conditions/local.tsv"}


def condition_rules() -> dict[str, tuple[Row, ...]]:
    return {
        group: load_table(path, CONDITION_COLUMNS, (lowercase("phrase"), example_contains("phrase")))
        for group, path in CONDITION_FILES.items()
    }


def analyte_rules() -> tuple[Row, ...]:
    return load_table(
        "labs/analytes.tsv",
        ANALYTE_COLUMNS,
        (lowercase("synonym"), code_in("analyte", vocab.ANALYTES), example_contains("synonym")),
    )


def unit_rules() -> tuple[Row, ...]:
    return load_table(
        "labs/units.tsv",
        UNIT_COLUMNS,
        (
            code_in("analyte", vocab.ANALYTES),
            number("factor", "plausible_low", "plausible_high"),
            code_in("infer", ("0", "1")),
            example_contains("unit"),
        ),
    )


def range_rules() -> tuple[Row, ...]:
    return load_table(
        "labs/ranges.tsv", RANGE_COLUMNS, (code_in("analyte", vocab.ANALYTES), number("low", "high"))
    )


def _regex_matches_example(fields: dict[str, str]) -> str | None:
    import re

    try:
        pattern = re.compile(fields["pattern"], re.IGNORECASE)
    except re.error as exc:
        return f"pattern does not compile: {exc}"
    if not pattern.search(fields["example"]):
        return f"pattern does not match its example {fields['example']!r}"
    return None


def lab_veto_rules() -> tuple[Row, ...]:
    return load_table("labs/vetoes.tsv", LAB_VETO_COLUMNS, (_regex_matches_example,))


def all_rule_tables() -> dict[str, object]:
    """Load every shipped rule file (used by the CLI's start-up check and the tests)."""
    return {
        "mentions": mention_rules(),
        "mention_vetoes": mention_vetoes(),
        "sites": site_rules(),
        "laterality": laterality_rules(),
        "site_concepts": site_concept_rules(),
        "context": context_rules(),
        "sections": section_rules(),
        "conditions": condition_rules(),
        "analytes": analyte_rules(),
        "units": unit_rules(),
        "ranges": range_rules(),
        "lab_vetoes": lab_veto_rules(),
    }
