"""Plain records the NLP components produce (character offsets, codes of ANNOTATION.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Section:
    start: int  # offset of the title
    body_start: int  # offset just after the title (and its colon)
    kind: str
    title: str


class Match(NamedTuple):
    """A phrase-matcher hit: token span, and the parts of its label (a tuple: cheap to make)."""

    start: int
    end: int
    kind: str  # M mention, V veto, S site, L laterality, C context trigger, K condition
    a: str = ""
    b: str = ""


@dataclass(frozen=True)
class Assertion:
    """Assertion of one target span (ANNOTATION.md section 3)."""

    negated: bool = False
    possible: bool = False
    historical: bool = False
    hypothetical: bool = False
    family: bool = False
    triggers: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        if self.negated:
            return "negated"
        if self.hypothetical:
            return "hypothetical"
        if self.possible:
            return "possible"
        if self.family:
            return "family"
        if self.historical:
            return "historical"
        return "present"


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    text: str
    concept: str
    site: str
    sites: tuple[str, ...]
    laterality: str | None
    assertion: str
    section: str | None
    sentence_start: int
    sentence_end: int
    triggers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Condition:
    start: int
    end: int
    text: str
    condition: str
    group: str
    detail: str | None
    assertion: str
    section: str | None


@dataclass(frozen=True)
class LabValue:
    start: int
    end: int
    analyte: str
    value: float
    unit: str | None
    comparator: str | None = None
    flag_written: str | None = None
    text: str = ""
    extra: dict = field(default_factory=dict, compare=False)
