"""All Doc extensions calcmine sets, declared once, at import (never inside a component).

Values are plain tuples of dataclasses with character offsets (no Span objects), so Docs stay
picklable for multi-process ``nlp.pipe`` and cheap to turn into table rows.
"""

from __future__ import annotations

from spacy.tokens import Doc

_EXTENSIONS = {
    "calc_sections": None,  # tuple[Section, ...] in text order
    "calc_matches": None,  # dict[str, list[Match]] from the shared phrase matcher
    "calc_abbreviations": None,  # tuple[(short_start, short_end, long_text), ...]
    "calc_mentions": None,  # tuple[Mention, ...]
    "calc_conditions": None,  # tuple[Condition, ...]
    "calc_labs": None,  # tuple[LabValue, ...]
}

for _name, _default in _EXTENSIONS.items():
    if not Doc.has_extension(_name):
        Doc.set_extension(_name, default=_default)
