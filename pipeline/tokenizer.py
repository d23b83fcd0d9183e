"""scispaCy's tokenizer, keeping each note's text on its Doc.

spaCy's ``Doc.text`` rebuilds the text by joining every token on each call, which costs about as
much as tokenizing; the components read ``doc._.calc_text`` (set here, once) instead.

A single line break inside running text (a hard-wrapped report line: "small calcified\\ngranuloma")
is handed to the tokenizer as the space it stands for, so multi-word phrases match across it. The
replacement keeps the length, so every token offset is an offset into the note; ``doc.text`` shows
those breaks as spaces, ``doc._.calc_text`` is the exact note.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from pipeline.extensions import put  # (declares calc_text)


_WRAP = re.compile(r"\n(?<=[^\s]\n)(?=[^\s])")  # the newline first: a fast literal scan


class TextKeepingTokenizer:
    """Wraps a spaCy tokenizer; serialises as the wrapped tokenizer."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, text: str) -> Doc:
        # a single line break inside running text ("small calcified\ngranuloma", a wrapped report
        # line) is tokenized as the space it stands for, so phrases match across it; same length,
        # so every offset holds; the exact text stays in doc._.calc_text
        doc = self.inner(_WRAP.sub(" ", text) if "\n" in text else text)
        put(doc, "calc_text", text)
        return doc

    def pipe(self, texts: Iterable[str], batch_size: int = 1000) -> Iterator[Doc]:
        for text in texts:
            yield self(text)

    def to_disk(self, path, **kwargs) -> None:
        self.inner.to_disk(path, **kwargs)

    def from_disk(self, path, **kwargs) -> "TextKeepingTokenizer":
        self.inner.from_disk(path, **kwargs)
        return self

    def to_bytes(self, **kwargs) -> bytes:
        return self.inner.to_bytes(**kwargs)

    def from_bytes(self, data: bytes, **kwargs) -> "TextKeepingTokenizer":
        self.inner.from_bytes(data, **kwargs)
        return self

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


@spacy.registry.tokenizers("calcmine.scispacy_tokenizer.v1")
def create_scispacy_tokenizer() -> Callable[[Language], TextKeepingTokenizer]:
    """scispaCy's combined rule tokenizer, wrapped to keep the text."""

    def make(nlp: Language) -> TextKeepingTokenizer:
        from scispacy.custom_tokenizer import combined_rule_tokenizer

        if getattr(nlp, "tokenizer", None) is None:
            # scispaCy reads the default tokenizer's token_match; Language is still being built
            nlp.tokenizer = spacy.registry.tokenizers.get("spacy.Tokenizer.v1")()(nlp)
        return TextKeepingTokenizer(combined_rule_tokenizer(nlp))

    return make
