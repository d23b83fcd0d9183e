"""ConText-style assertion for any target span (Harkema et al. 2009, simplified and data-driven).

Triggers come from ``data/context.tsv``. For one target (a token span inside one sentence):

1. Triggers are matched once per doc, longest match first; a pseudo-trigger ("no change",
   "not only", "gram negative") removes every trigger it overlaps.
2. A trigger applies when the target lies in its scope: *forward* triggers reach right, *backward*
   triggers reach left, *both* either way, *adjacent* either way over at most ``MAX_ADJACENT`` words, no
   clause punctuation and no clause verb (``ADJACENT_STOPS``: "atelectasis vs. pneumonia"); scope stays
   inside the sentence, stops at a terminator
   ("but", "however", "which", "aside from", ";" ...) and after ``MAX_FORWARD`` / ``MAX_BACKWARD``
   tokens. A trigger of another category that follows a comma also closes the scope
   ("No effusion, possible calcified granuloma": only *possible* reaches the granuloma).
3. The section adds *family* (family-history sections) or *historical* (past-history sections).
4. The status is the first that applies of: negated, hypothetical, possible, family, historical,
   present (ANNOTATION.md section 3).

Worked example: "No change in the small calcified granuloma, but no effusion." -- "no change" is a
pseudo-trigger and removes "no" at its start; the second "no" lies after the target and is a
forward trigger, so the granuloma is *present* and "effusion" is *negated*.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from typing import Sequence

from pipeline.model import Assertion, Match, Section

MAX_FORWARD = 14
MAX_BACKWARD = 8
# an "adjacent" trigger ("atelectasis vs. pneumonia") reaches only the phrases on either side of it: a few
# words, not across clause punctuation nor a verb that starts or joins a clause ("Ddx for transaminitis
# includes DILI vs. viral hepatitis": transaminitis is no alternative)
MAX_ADJACENT = 6
ADJACENT_STOPS = frozenset({
    "is", "are", "was", "were", "includes", "include", "including", "shows", "show", "showing", "demonstrates",
    "demonstrate", "demonstrating", "reveals", "revealed", "has", "have", "had",
})
ASSERTING = ("negated", "hypothetical", "possible", "family", "historical")
SECTION_ASSERTIONS = {"family_history": "family", "past_history": "historical"}
CLAUSE_PUNCT = frozenset({",", ";", ":"})


def section_at(sections: Sequence[Section], char: int) -> Section | None:
    """The section whose body contains ``char`` (sections are in text order)."""
    if not sections:
        return None
    i = bisect_right([s.start for s in sections], char) - 1
    return sections[i] if i >= 0 else None


def _words(token_texts: Sequence[str], start: int, end: int) -> int:
    """Tokens between ``start`` and ``end`` that hold a letter or digit (placeholders such as
    "[**2119**]" and punctuation do not stretch a scope)."""
    if end - start <= 0:
        return 0
    return sum(map(_has_word, token_texts[start:end]))


@functools.lru_cache(maxsize=65536)
def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def clean_triggers(matches: Sequence[Match]) -> list[Match]:
    """Drop triggers overlapped by a pseudo-trigger; keep terminators and asserting triggers."""
    pseudo = [m for m in matches if m.a == "pseudo"]
    if not pseudo:
        return list(matches)
    out = []
    for m in matches:
        if m.a == "pseudo":
            continue
        if any(p.start < m.end and m.start < p.end for p in pseudo):
            continue
        out.append(m)
    return out


def assess(
    triggers: Sequence[Match],
    sent_start: int,
    sent_end: int,
    start: int,
    end: int,
    token_texts: Sequence[str],
    section: Section | None,
) -> Assertion:
    """Assertion of target tokens [start, end) in sentence [sent_start, sent_end).

    ``triggers`` are the doc's cleaned triggers (see :func:`clean_triggers`) in token order;
    ``token_texts`` gives the text of a token by index (for clause punctuation).
    """
    found: dict[str, str] = {}
    in_sentence = [t for t in triggers if t.start >= sent_start and t.end <= sent_end]
    terminators = [t for t in in_sentence if t.a == "terminate"]
    asserting = [t for t in in_sentence if t.a in ASSERTING]

    def blocked(left: int, right: int, trigger: Match) -> bool:
        # a terminator between, or a trigger of another category after clause punctuation
        for t in terminators:
            if t.start >= left and t.end <= right:
                return True
        for other in asserting:
            if other is trigger or other.a == trigger.a:
                continue
            if other.start >= left and other.end <= right:
                lo, hi = (trigger.end, other.start) if other.start >= trigger.end else (other.end, trigger.start)
                if any(t in CLAUSE_PUNCT for t in token_texts[lo:hi]):
                    return True
        return False

    for trig in asserting:
        if trig.start < end and start < trig.end:
            continue  # a trigger inside the target says nothing about it
        direction = trig.b
        applies = False
        if direction == "adjacent":
            lo, hi = (trig.end, start) if trig.end <= start else (end, trig.start)
            applies = (_words(token_texts, lo, hi) <= MAX_ADJACENT and not blocked(lo, hi, trig)
                       and not any(t in CLAUSE_PUNCT or t in ADJACENT_STOPS for t in token_texts[lo:hi]))
        elif direction in ("forward", "both") and trig.end <= start:
            if _words(token_texts, trig.end, start) <= MAX_FORWARD and not blocked(trig.end, start, trig):
                applies = True
        if not applies and direction in ("backward", "both") and trig.start >= end:
            if _words(token_texts, end, trig.start) <= MAX_BACKWARD and not blocked(end, trig.start, trig):
                applies = True
        if applies and trig.a not in found:
            found[trig.a] = " ".join(token_texts[trig.start : trig.end]).lower()

    if section is not None and section.kind in SECTION_ASSERTIONS:
        found.setdefault(SECTION_ASSERTIONS[section.kind], "section:" + " ".join(section.title.lower().split()))

    key = tuple(found.items())
    assertion = _ASSERTIONS.get(key)
    if assertion is None:
        if len(_ASSERTIONS) >= 4096:
            _ASSERTIONS.clear()
        assertion = _ASSERTIONS[key] = Assertion(
            negated="negated" in found,
            possible="possible" in found,
            historical="historical" in found,
            hypothetical="hypothetical" in found,
            family="family" in found,
            triggers=tuple(f"{cat}:{text}" for cat, text in found.items()),
        )
    return assertion


# Assertions are immutable and few distinct ones occur (most targets have no trigger): each is built once
_ASSERTIONS: dict[tuple, Assertion] = {}
