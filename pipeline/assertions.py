"""``assess_assertions``: ConText assertion of arbitrary character spans in a text."""

from __future__ import annotations

import functools

from spacy.language import Language

from pipeline.model import Assertion

_CONTEXT_COMPONENTS = ("calc_sentences", "calc_sections", "calc_matcher")


@functools.lru_cache(maxsize=1)
def _context_nlp() -> Language:
    from pipeline.nlp import build_nlp

    nlp = build_nlp()
    for name in nlp.pipe_names:
        if name not in _CONTEXT_COMPONENTS:
            nlp.disable_pipe(name)
    return nlp


def assess_assertions(text: str, spans: list[tuple[int, int]], nlp: Language | None = None) -> list[Assertion]:
    """Assertion (negated / possible / historical / hypothetical / family, and ``status``) of each
    character span ``(start, end)`` of ``text``; works for any target, not only calcification."""
    from pipeline.nlp import view_of

    doc = (nlp or _context_nlp())(text)
    view = view_of(doc)
    out = []
    for start, end in spans:
        if not (0 <= start < end <= len(text)):
            raise ValueError(f"span ({start}, {end}) is outside the text of length {len(text)}")
        span = view.tokens(start, end)
        if span is None:
            out.append(Assertion())
            continue
        out.append(view.assertion(*span))
    return out
