"""All Doc extensions calcmine sets, declared once, at import (never inside a component).

Values are plain tuples of dataclasses with character offsets (no Span objects), so Docs stay
picklable for multi-process ``nlp.pipe`` and cheap to turn into table rows.
"""

from __future__ import annotations

from spacy.tokens import Doc

_EXTENSIONS = {
    "calc_text": None,  # doc.text, computed once (spaCy joins every token on each doc.text call)
    "calc_sentence_tokens": None,  # list[int]: token index of each sentence start (calc_sentences)
    "calc_sections": None,  # tuple[Section, ...] in text order
    "calc_matches": None,  # dict[str, list[Match]] from the shared phrase matcher (token indices of
                           # the doc without its gaps inside running text when it has some: nlp.Gaps)
    "calc_abbreviations": None,  # tuple[(short_start, short_end, long_text), ...]
    "calc_mentions": None,  # tuple[Mention, ...]
    "calc_conditions": None,  # tuple[Condition, ...]
    "calc_labs": None,  # tuple[LabValue, ...]
}

for _name, _default in _EXTENSIONS.items():
    if not Doc.has_extension(_name):
        Doc.set_extension(_name, default=_default)


def _key(name: str) -> tuple:
    return ("._.", name, None, None)  # where spaCy's Underscore keeps a Doc extension's value


_KEYS = {name: _key(name) for name in _EXTENSIONS}


def get(doc: Doc, name: str):
    """``doc._.<name>`` without building an Underscore object (components call this per doc)."""
    return doc.user_data.get(_KEYS[name])


def put(doc: Doc, name: str, value) -> None:
    """``doc._.<name> = value``, the same storage, without the Underscore object."""
    doc.user_data[_KEYS[name]] = value


def text_of(doc: Doc) -> str:
    """The doc's text, cached by the tokenizer (``doc.text`` rebuilds it from every token)."""
    text = get(doc, "calc_text")
    if text is None:
        text = doc.text
        put(doc, "calc_text", text)
    return text


# Docs cross process boundaries (nlp.pipe(n_process=...)) through msgpack: teach srsly our records.
import dataclasses as _dc  # noqa: E402

import srsly  # noqa: E402

from pipeline import model as _model  # noqa: E402

_RECORDS = {cls.__name__: cls for cls in (_model.Section, _model.Mention, _model.Condition, _model.LabValue)}
_TAG = "__calcmine__"


def _encode(obj, chain=None):
    name = type(obj).__name__
    if name in _RECORDS and _dc.is_dataclass(obj):
        return {_TAG: name, "f": [getattr(obj, f.name) for f in _dc.fields(obj)]}
    return obj if chain is None else chain(obj)


def _decode(obj, chain=None):
    if isinstance(obj, dict) and _TAG in obj:
        cls = _RECORDS[obj[_TAG]]
        values = [tuple(v) if isinstance(v, list) else v for v in obj["f"]]
        return cls(*values)
    return obj if chain is None else chain(obj)


srsly.msgpack_encoders.register("calcmine_records", func=_encode)
srsly.msgpack_decoders.register("calcmine_records", func=_decode)
