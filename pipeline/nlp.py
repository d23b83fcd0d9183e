"""The spaCy pipeline: scispaCy's tokenizer on ``spacy.blank("en")`` plus calcmine's rule components.

Components (all named ``calc_*``, logic in classes, thin typed factories):

- ``calc_sentences``  rule-based sentence boundaries for report text (periods, blank lines, list
  items, new lines that start a new statement) -- cheap regex over the text, no per-doc objects.
- ``calc_sections``   section titles (``data/sections.tsv``) at line starts or inline in capitals.
- ``calc_abbreviations`` scispaCy's AbbreviationDetector, run only on docs with a "(SHORT)" form.
- ``calc_matcher``    one PhraseMatcher (lower case) for every vocabulary: mentions, vetoes, sites,
  laterality, ConText triggers, conditions. One pass over the tokens serves every component.
- ``calc_mentions``   calcification mentions with concept, sites, laterality, assertion, section.
- ``calc_conditions`` systemic drivers and local tissue damage with assertion.
- ``calc_labs``       lab values with units (see :mod:`pipeline.labs`).
"""

from __future__ import annotations

import re
import warnings
from bisect import bisect_left, bisect_right
from operator import itemgetter
from pathlib import Path
from typing import Iterable

import numpy
import spacy
from spacy.attrs import IDX, IS_SPACE, LOWER, ORTH, SENT_START
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc

from pipeline.extensions import get, put, text_of
from pipeline.textutil import blanks, plain_blanks, trie_pattern
from pipeline.tokenizer import TextKeepingTokenizer
from pipeline import resources, vocab
from pipeline.context import assess, clean_triggers, section_at
from pipeline.model import Condition, Match, Mention, Section

PIPELINE_VERSION = "0.1.0"

# ----------------------------------------------------------------------------------------------
# sentences

# A period after a list number ("1. Calcified ...") or an abbreviation ("vs. calcified") does not end
# a sentence: fixed-width look-behinds (one per width) decide that inside the scan, without Python.
_ABBREVIATIONS = ("vs", "dr", "mr", "mrs", "ms", "st", "e.g", "i.e", "approx", "no", "fig", "pt")


def _not_after(words: Iterable[str]) -> str:
    """Look-behinds (one per width) that fail when the period just matched ends one of ``words``."""
    by_width: dict[int, list[str]] = {}
    for w in words:
        by_width.setdefault(len(w), []).append(re.escape(w))
    parts = []
    for width, group in sorted(by_width.items()):
        alt = "|".join(group)
        parts.append(rf"(?<!(?i:[\s(](?:{alt})\.))(?<!(?i:^(?:{alt})\.))")
    return "".join(parts)


_SENT_BREAK = re.compile(
    rf"""
    [\n.!?]                                   # one cheap character test per position, then:
    (?:
      (?<=\n)(?:
          (?P<para>[ \t]*\n\s*)                # blank line
        | (?<=[.:;!?]\n)(?P<after>[ \t]*)(?=\S)  # new line after a statement's end
        | (?P<line>[ \t]*)(?=\S)                # other new line (judged below)
      )
    | (?<=[.!?])                              # end of sentence, unless a list number or an
      (?<!\s\d\.)(?<!\s\d\d\.)(?<!^\d\.)(?<!^\d\d\.){_not_after(_ABBREVIATIONS)}   # abbreviation
      (?P<stop>[^\S\n]+)(?=[^\sa-z,;)])        # ends with the period; the next starts a new one
    )
    """,
    re.VERBOSE,
)
_LIST_ITEM = re.compile(r"(?:\d{1,2}[.)]|[-*\u2022])\s")
_STATEMENT_END = frozenset(".:;!?")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences start (always includes 0)."""
    starts = [0]
    n = len(text)
    for m in _SENT_BREAK.finditer(text):
        nxt = m.end()
        if nxt >= n:
            continue
        if m.lastgroup == "line":
            line_start = text.rfind("\n", 0, m.start()) + 1
            prev_line = text[line_start : m.start()].rstrip()
            if not prev_line:
                pass
            elif prev_line[-1] in _STATEMENT_END or _LIST_ITEM.match(text, nxt):
                pass
            else:
                first = text[nxt]
                if first.isupper() or first.isdigit():
                    # a wrapped line of an all-capitals report continues the sentence
                    if len(prev_line.lstrip()) > 40 and prev_line.upper() == prev_line:
                        rest = text[nxt : nxt + 40]
                        if rest.upper() == rest:
                            continue
                else:
                    continue  # lower-case continuation of a wrapped line
        starts.append(nxt)
    return starts


_NOT_START = numpy.uint64(2**64 - 1)  # -1 as spaCy's uint64 arrays hold it
_FIRST = numpy.zeros(1, dtype=numpy.intp)


class SentenceSplitter:
    """Marks the first token of each :func:`sentence_starts` sentence (``doc.sents`` works); the
    token indices are kept in ``doc._.calc_sentence_tokens`` for the other components."""

    def __call__(self, doc: Doc) -> Doc:
        n = len(doc)
        if n == 0:
            return doc
        starts = sentence_starts(text_of(doc))
        if len(starts) > 1:
            # each start is a non-space character: a token starts there
            found = numpy.searchsorted(doc.to_array(IDX), numpy.array(starts, dtype=numpy.uint64))
            found = found[found < n]
        else:
            found = _FIRST
        # 1 at each start; the other tokens keep "unset" (0), except that spaCy only believes sentences
        # are set when a token after the first says so (Token.is_sent_start would check the parse each time)
        flags = numpy.zeros((n, 1), dtype=numpy.uint64)
        flags[found, 0] = 1
        tokens = found.tolist()
        if n > 1 and (len(tokens) < 2 or tokens[1] != 1):
            flags[1, 0] = _NOT_START
        doc.from_array([SENT_START], flags)
        put(doc, "calc_sentence_tokens", tokens)
        return doc


@Language.factory("calc_sentences")
def make_sentences(nlp: Language, name: str) -> SentenceSplitter:
    return SentenceSplitter()


# ----------------------------------------------------------------------------------------------
# sections


class SectionDetector:
    """Finds section titles; ``doc._.calc_sections`` holds them in text order."""

    def __init__(self) -> None:
        rows = resources.section_rules()
        self.kinds = {r["title"]: r["kind"] for r in rows}
        alternation = trie_pattern({t.lower() for t in self.kinds})
        upper = trie_pattern([t.upper() for t in self.kinds])
        # at a line start: "TITLE:" or a title alone on its line; scanned case-sensitively over the
        # lower-cased text (several times cheaper than IGNORECASE), or with IGNORECASE over a text
        # whose lower-casing changes its length (offsets would no longer line up)
        line = rf"^[ \t]*(?P<title>{alternation})[ \t]*(?::|(?=\r?\n|$))[ \t]*"
        self.line_re = re.compile(line, re.IGNORECASE | re.MULTILINE)
        self.line_lc = re.compile(line, re.MULTILINE)
        # inline in running text: an upper-case title with a colon ("... disease. IMPRESSION: ..."),
        # looked for just before each colon (colons are few; scanning every position is not cheap)
        self.inline_re = re.compile(rf"(?<=[.\s])(?P<title>{upper})[ \t]*\Z")
        self.reach = 2 * max(len(t) for t in self.kinds) + 8
        self.after_colon = re.compile(r"[ \t]*")
        self.title_ends = frozenset(t.upper()[-1] for t in self.kinds)  # "...IMPRESSION" ends in N

    def __call__(self, doc: Doc) -> Doc:
        text = plain_blanks(text_of(doc))  # "PAST MEDICAL\u00a0HISTORY:" is a title too
        found: dict[int, Section] = {}
        low = text.lower()
        scan, line_re = (low, self.line_lc) if len(low) == len(text) else (text, self.line_re)
        for m in line_re.finditer(scan):
            start, end = m.span("title")
            title = text[start:end]
            found[start] = Section(start, m.end(), self._kind(title), title)
        colon = text.find(":")
        ends = self.title_ends
        while colon >= 0:
            last = colon - 1
            while last >= 0 and text[last] in " \t":
                last -= 1
            # most colons follow a digit or a lower-case word ("Calcium: 9.8", "10:30"): no title ends there
            m = self.inline_re.search(text, max(0, colon - self.reach), colon) if last >= 0 and text[last] in ends else None
            if m and m.start("title") not in found:
                title = m.group("title")
                body = self.after_colon.match(text, colon + 1).end()
                found[m.start("title")] = Section(m.start("title"), body, self._kind(title), title)
            colon = text.find(":", colon + 1)
        put(doc, "calc_sections", tuple(found[k] for k in sorted(found)))
        return doc

    def _kind(self, title: str) -> str:
        kind = self.kinds.get(title)
        if kind is None:
            kind = self.kinds[" ".join(title.lower().split())]
            self.kinds[title] = kind
        return kind


@Language.factory("calc_sections")
def make_sections(nlp: Language, name: str) -> SectionDetector:
    return SectionDetector()


# ----------------------------------------------------------------------------------------------
# abbreviations



_PAREN_SHORT = re.compile(r"\(\s*[A-Za-z][A-Za-z0-9-]{1,9}\s*\)")


class Abbreviations:
    """scispaCy's AbbreviationDetector, run only where a calcification phrase is followed by
    a "(SHORT)" form ("mitral annular calcification (MAC)").

    The detector builds matchers per call and walks every token; a regex check first keeps the
    pipeline at tokenizer speed. Results are stored as character offsets.
    """

    def __init__(self, nlp: Language) -> None:
        from scispacy.abbreviation import AbbreviationDetector

        self.detector = AbbreviationDetector(nlp, make_serializable=True)
        # only long forms calcmine uses (multi-word mention phrases) followed by "(SHORT)": find the
        # "(SHORT)" first (a literal "(" is cheap to scan for), then look for a long form just before it
        long_forms = [r["phrase"] for rows in resources.mention_rules().values() for r in rows if " " in r["phrase"]]
        self.reach = max(len(p) for p in long_forms) * 2 + 8  # blanks between words may be runs
        long_pattern = trie_pattern(long_forms, space=r"\s+")  # a long form may be wrapped over a line
        self.long_before = re.compile(rf"(?<![a-z])(?:{long_pattern})\s*\Z", re.IGNORECASE)

    def candidate(self, text: str) -> bool:
        """Does ``text`` hold a calcification long form followed by "(SHORT)"?"""
        for m in _PAREN_SHORT.finditer(text):
            if self.long_before.search(text, max(0, m.start() - self.reach), m.start()):
                return True
        return False

    def __call__(self, doc: Doc) -> Doc:
        found: list[tuple[int, int, str]] = []
        text = text_of(doc)
        if "(" in text and self.candidate(text):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # W036: scispaCy's empty global matcher
                self.detector(doc)
            for item in doc._.abbreviations or ():
                short_start = doc[item["short_start"]].idx
                short_end = doc[item["short_end"] - 1].idx + len(doc[item["short_end"] - 1])
                found.append((short_start, short_end, item["long_text"]))
            doc._.abbreviations = []
        put(doc, "calc_abbreviations", tuple(sorted(found)))  # in text order (scispaCy's order varies run to run)
        return doc


@Language.factory("calc_abbreviations")
def make_abbreviations(nlp: Language, name: str) -> Abbreviations:
    return Abbreviations(nlp)


# ----------------------------------------------------------------------------------------------
# the shared phrase matcher


def _longest_first(m: Match) -> int:
    return (m[0] - m[1]) * 4_294_967_296 + m[0]  # (-length, start) as one int: no tuple per match


def filter_longest(matches: list[Match]) -> list[Match]:
    """Longest matches first, no overlaps; result in text order."""
    if len(matches) < 2:
        return list(matches)
    last_end = -1
    for m in matches:  # the phrase matcher reports in text order: most lists pass as they are
        if m[0] < last_end:
            break
        last_end = m[1]
    else:
        return list(matches)  # in order, no overlaps: nothing to choose
    chosen: list[Match] = []
    taken = bytearray(max(m[1] for m in matches))
    for m in sorted(matches, key=_longest_first):  # stable: equal spans keep the matcher's order
        start, end = m[0], m[1]
        if taken.find(1, start, end) >= 0:
            continue
        chosen.append(m)
        taken[start:end] = b"\x01" * (end - start)
    chosen.sort(key=_first)
    return chosen


_first = itemgetter(0)


class VocabularyMatcher:
    """One PhraseMatcher on lower-case text for every vocabulary file.

    ``doc._.calc_matches`` maps a kind (M, V, S, L, C, K) to its matches, longest first
    without overlaps within the kind.
    """

    def __init__(self, nlp: Language) -> None:
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        self.labels: dict[int, tuple[str, str, str]] = {}
        self.goes_on: set[int] = set()  # LOWER of words a phrase goes on after, and of words that continue one
        self.continues: set[int] = set()
        make = nlp.make_doc

        def add(kind: str, a: str, b: str, phrases: Iterable[str]) -> None:
            key = f"{kind}|{a}|{b}"
            key_id = nlp.vocab.strings.add(key)
            self.labels[key_id] = (kind, a, b)
            docs = [make(p) for p in phrases]
            for d in docs:
                self.goes_on.update(t.lower for t in d[:-1])
                self.continues.update(t.lower for t in d[1:])
            self.matcher.add(key, docs)

        for concept, rows in resources.mention_rules().items():
            by_site: dict[str, list[str]] = {}
            for r in rows:
                by_site.setdefault(r["site"], []).append(r["phrase"])
            for site, phrases in by_site.items():
                add("M", concept, site, phrases)
        add("V", "", "", [r["phrase"] for r in resources.mention_vetoes()])
        by: dict[tuple[str, str], list[str]] = {}
        for r in resources.site_rules():
            by.setdefault((r["site"], ""), []).append(r["phrase"])
        for (site, _), phrases in by.items():
            add("S", site, "", phrases)
        by = {}
        for r in resources.laterality_rules():
            by.setdefault((r["laterality"], ""), []).append(r["phrase"])
        for (lat, _), phrases in by.items():
            add("L", lat, "", phrases)
        by = {}
        for r in resources.context_rules():
            by.setdefault((r["category"], r["direction"]), []).append(r["phrase"])
        for (cat, direction), phrases in by.items():
            add("C", cat, direction, phrases)
        for group, rows in resources.condition_rules().items():
            by = {}
            for r in rows:
                by.setdefault((r["condition"], group), []).append(r["phrase"])
            for (cond, grp), phrases in by.items():
                add("K", cond, grp, phrases)

    def __call__(self, doc: Doc) -> Doc:
        groups: dict[str, list[Match]] = {"M": [], "V": [], "S": [], "L": [], "C": [], "K": []}
        labels = self.labels
        make = tuple.__new__  # Match(start, end, kind, a, b) without the keyword-handling __new__
        gaps = gaps_of(doc)
        if gaps is None:
            for key, start, end in self.matcher(doc):
                label = labels[key]
                groups[label[0]].append(make(Match, (start, end) + label))
        else:
            upto = gaps.upto  # matches in the doc without its gaps (see Gaps)
            for key, start, end in self.matcher(doc):
                label = labels[key]
                groups[label[0]].append(make(Match, (upto[start] - 1, upto[end - 1]) + label))
            for key, start, end in self._across(doc, gaps):
                label = labels[key]
                groups[label[0]].append(make(Match, (start, end) + label))
        put(doc, "calc_matches", {kind: filter_longest(ms) if ms else ms for kind, ms in groups.items()})
        return doc

    def _across(self, doc: Doc, gaps: "Gaps") -> list[tuple[int, int, int]]:
        """Matches that run across a gap, in the indices of the doc without its gaps. Only a gap between a
        word that can go on a phrase and a word that can continue one is looked at (after a period, at most
        line ends, there is none); then the words without the gaps are matched again."""
        lower = doc.to_array(LOWER)
        if not any(int(lower[g - 1]) in self.goes_on and int(lower[g + 1]) in self.continues for g in gaps.gaps):
            return []
        strings = doc.vocab.strings
        words = [strings[int(o)] for o in doc.to_array(ORTH)[gaps.keep].tolist()]
        keep = gaps.keep
        return [(key, s, e) for key, s, e in self.matcher(Doc(doc.vocab, words=words))
                if keep[e - 1] - keep[s] != e - s - 1]  # spans a gap (the others were found in the doc)


# whitespace that spaCy makes a token of: a run of blanks, a tab, a carriage return, a no-break space,
# a line break with blanks around it
_GAP_HINT = re.compile(r"[^\S \n]|  |\n | \n")


def _may_have_gaps(text: str) -> bool:
    """A cheap first test for :func:`find_gaps` (substring tests are several times faster than the regex)."""
    if "  " in text or "\t" in text or "\r" in text or "\n " in text or " \n" in text:
        return True
    return (not text.isascii() or _CONTROL_SPACE.search(text) is not None) and _GAP_HINT.search(text) is not None


_CONTROL_SPACE = re.compile("[\x0b\x0c\x1c-\x1f]")  # form feed (page breaks of printed exports), vertical tab, separators


class Gaps:
    """The gaps of a doc inside running text, and the doc seen without them.

    spaCy makes any whitespace other than one space a token of its own ("aortic  valve",
    "calcified\tgranuloma", "calcified\r\ngranuloma", "calcified \ngranuloma"), so a phrase or a
    neighbour across it would be one token further away than in the same note typed with single spaces.
    The rule components count tokens without them (matches, sentences, distances: see :class:`DocView`);
    offsets they report are the note's. A blank line is no gap.

    ``gaps``: doc tokens that are gaps; ``keep``: the doc token of each token of the doc without them;
    ``upto[i]``: how many tokens of ``doc[0 : i + 1]`` are kept (doc token i -> ``upto[i] - 1``).
    """

    __slots__ = ("gaps", "keep", "upto")

    def __init__(self, doc: Doc, gaps: list[int]) -> None:
        self.gaps = gaps
        kept = numpy.ones(len(doc), dtype=bool)
        kept[gaps] = False
        self.keep = numpy.flatnonzero(kept).tolist()
        self.upto = numpy.cumsum(kept).tolist()


def find_gaps(doc: Doc) -> Gaps | None:
    """The doc's :class:`Gaps`, or None when it has none."""
    spaces = numpy.flatnonzero(doc.to_array(IS_SPACE)).tolist()
    n = len(doc)
    space_set = set(spaces)
    gaps = [i for i in spaces if 0 < i < n - 1 and i - 1 not in space_set and i + 1 not in space_set
            and doc[i].text.count("\n") <= 1]
    return Gaps(doc, gaps) if gaps else None


_last_gaps: list = [None, None]  # [doc, its Gaps], shared by the components of one doc


def gaps_of(doc: Doc) -> Gaps | None:
    """:func:`find_gaps` of ``doc``, found once for the components that run one after another on it
    (kept off the Doc: Docs stay serialisable for multi-process ``nlp.pipe``)."""
    if _last_gaps[0] is not doc:
        _last_gaps[:] = [doc, find_gaps(doc) if _may_have_gaps(text_of(doc)) else None]
    return _last_gaps[1]


@Language.factory("calc_matcher")
def make_matcher(nlp: Language, name: str) -> VocabularyMatcher:
    return VocabularyMatcher(nlp)


# ----------------------------------------------------------------------------------------------
# shared per-doc geometry


class LowerTexts:
    """Lower-case token texts on demand, a sentence at a time: only sentences with a match are
    ever looked at, and the scope and linking checks around one match stay inside its sentence.
    Indices are those of the doc without its gaps (``keep``: the doc token of each), see :class:`Gaps`."""

    __slots__ = ("doc", "starts", "blocks", "keep", "n")

    def __init__(self, doc: Doc, sent_starts: list[int], keep: list[int] | None = None) -> None:
        self.doc = doc
        self.starts = sent_starts
        self.blocks: dict[int, tuple[int, list[str]]] = {}  # sentence start -> (end, lower texts)
        self.keep = keep
        self.n = len(doc) if keep is None else len(keep)

    def _texts(self, a: int, b: int) -> list[str]:
        if self.keep is None:
            return [t.lower_ for t in self.doc[a:b]]
        doc = self.doc
        return [doc[i].lower_ for i in self.keep[a:b]]

    def _block(self, i: int) -> tuple[int, int, list[str]]:
        k = bisect_right(self.starts, i) - 1
        s = self.starts[k] if k >= 0 else 0
        hit = self.blocks.get(s)
        if hit is None:
            e = self.starts[k + 1] if k + 1 < len(self.starts) else self.n
            hit = self.blocks[s] = (e, self._texts(s, e))
        return s, hit[0], hit[1]

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b, step = key.indices(self.n)
            if b <= a:
                return []
            s, e, block = self._block(a)
            if b <= e and key.step is None:
                return block[a - s : b - s]
            return self._texts(a, b)[::step]
        if key < 0:
            key += self.n
        s, _, block = self._block(key)
        return block[key - s]

    def __len__(self) -> int:
        return self.n


class DocView:
    """Sentences, tokens and triggers of one doc, computed once and shared by the components."""

    __slots__ = ("doc", "keep", "idx", "n_source", "n_tokens", "matches", "exact", "text", "sent_starts", "texts",
                 "triggers", "trigger_starts", "sections", "section_starts", "_by_sentence")

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.n_source = len(doc)
        gaps = gaps_of(doc)
        # token indices (matches, sentences, texts) count the doc's tokens without its gaps (see Gaps);
        # character offsets are always the note's
        self.keep = None if gaps is None else gaps.keep
        self.idx = None if gaps is None else doc.to_array(IDX)[self.keep].tolist()
        self.n_tokens = len(doc) if gaps is None else len(self.keep)
        self.matches = get(doc, "calc_matches")
        self.exact = text_of(doc)  # what outputs quote
        self.text = plain_blanks(self.exact)  # what the rules read
        tokens = get(doc, "calc_sentence_tokens")
        if tokens is None:  # sentences set by another component
            tokens = numpy.flatnonzero(doc.to_array(SENT_START) == 1).tolist()
        if self.keep is not None:
            tokens = [bisect_left(self.keep, t) for t in tokens]
        self.sent_starts = tokens or [0]
        self.texts = LowerTexts(doc, self.sent_starts, self.keep)
        self.triggers = clean_triggers(self.matches["C"])
        self.trigger_starts = [t.start for t in self.triggers]
        self.sections = get(doc, "calc_sections") or ()
        self.section_starts = [s.start for s in self.sections]
        self._by_sentence: dict[int, list[Match]] = {}

    def sentence(self, token: int) -> tuple[int, int]:
        i = bisect_right(self.sent_starts, token) - 1
        start = self.sent_starts[max(i, 0)]
        end = self.sent_starts[i + 1] if i + 1 < len(self.sent_starts) else self.n_tokens
        return start, end

    def char(self, token: int) -> int:
        """Character offset in the note of a token."""
        return self.doc[token].idx if self.idx is None else self.idx[token]

    def token(self, i: int):
        return self.doc[i] if self.keep is None else self.doc[self.keep[i]]

    def char_bounds(self, start: int, end: int) -> tuple[int, int]:
        while end > start + 1 and self.token(end - 1).is_space:
            end -= 1
        return self.char(start), self.char(end - 1) + len(self.token(end - 1))

    def tokens(self, start_char: int, end_char: int) -> tuple[int, int] | None:
        """The tokens covering characters [start_char, end_char) of the note (expanded to whole tokens)."""
        span = self.doc.char_span(start_char, end_char, alignment_mode="expand")
        if span is None or len(span) == 0:
            return None
        if self.keep is None:
            return span.start, span.end
        start, end = bisect_left(self.keep, span.start), bisect_left(self.keep, span.end)
        return (start, end) if start < end else None  # a span holding only a gap holds no token here

    def section_at(self, char: int) -> Section | None:
        i = bisect_right(self.section_starts, char) - 1
        return self.sections[i] if i >= 0 else None

    def sentence_triggers(self, s: int, e: int) -> list[Match]:
        found = self._by_sentence.get(s)
        if found is None:
            triggers = self.triggers  # in text order
            i = bisect_left(self.trigger_starts, s)
            found = []
            while i < len(triggers) and triggers[i].start < e:
                if triggers[i].end <= e:
                    found.append(triggers[i])
                i += 1
            self._by_sentence[s] = found
        return found

    def assertion(self, start: int, end: int):
        s, e = self.sentence(start)
        section = self.section_at(self.char(start))
        return assess(self.sentence_triggers(s, e), s, e, start, end, self.texts, section)


_last_view: DocView | None = None


def view_of(doc: Doc) -> DocView:
    """The doc's view, shared by the components that run one after another on the same doc."""
    global _last_view
    view = _last_view
    if view is None or view.doc is not doc or view.n_source != len(doc) or view.matches is not get(doc, "calc_matches"):
        view = _last_view = DocView(doc)
    return view


# ----------------------------------------------------------------------------------------------
# mentions

_STRONG_BREAK = frozenset({";", "but", "however", "while", "although", "whereas", "though"})
_SOFT_BREAK = frozenset({",", ":", ".", "\n"})  # each crossing adds 4 to the linking cost
# words that may stand between coordinated site words ("the common and external iliac arteries")
_MODIFIERS = frozenset({
    "the", "both", "common", "proximal", "distal", "great", "small", "large", "main", "internal", "external",
    "superficial", "deep", "upper", "lower", "mid", "left", "right", "bilateral", "anterior", "posterior", "medial",
    "lateral", "superior", "inferior", "ascending", "descending", "cavernous", "cervical", "visceral", "axillary",
    "its", "their", "several", "multiple", "major",
})
_PREPOSITIONS = frozenset({"of", "in", "within", "along", "involving", "at", "into", "from", "throughout"})
_AND_OR = frozenset({"and", "or", "&", "/"})
_LIST_END = frozenset({",", "and", "or", ".", ";", ")", "bilaterally", "\n"})
_CONJUNCTIONS = frozenset({"and", "or", ",", "/", "&", "through", "thru", "to", "into", "extending", "extends", "including"})
_COORDINATION = _MODIFIERS | _CONJUNCTIONS
# a site word ending like an adjective ("renal", "hilar", "aortic", "pulmonary") modifies the next site noun
_ADJECTIVE_ENDINGS = ("al", "ic", "ar", "ary", "ac", "ous", "ine")
_VESSEL_SITES = frozenset({"aorta", "artery", "coronary_artery", "vein"})
_ORGAN_SITES = frozenset(vocab.SITES) - _VESSEL_SITES - {"lymph_node", "heart_valve", "unspecified"}
# head noun site -> the adjective sites coordinated before it that only say where the head is:
# "hilar and mediastinal nodes" -> lymph_node, "aortic and mitral valves" -> heart_valve,
# "renal and iliac arteries" -> artery
_HEAD_NOUN_SITES = {
    "lymph_node": _ORGAN_SITES | {"aorta", "artery"},
    "artery": _ORGAN_SITES,
    "vein": _ORGAN_SITES,
    "heart_valve": frozenset({"aorta", "lung", "coronary_artery"}),  # "right coronary cusp"
}
# one word that names two sites ("aortoiliac" = the aorta and the iliac arteries)
_COMPOUND_SITES = {"aortoiliac": ("aorta", "artery"), "aorto-iliac": ("aorta", "artery"), "aortobiiliac": ("aorta", "artery")}


def _modifies(adjective: str, head: str) -> bool:
    """An adjective site before a head noun site names where the head is ("renal arteries", "hilar
    nodes", "right coronary cusp"), unless it is itself a vessel ("coronary artery" is coronary)."""
    head = head.rstrip("?")
    if head not in _HEAD_NOUN_SITES:
        return False
    adjective = adjective.rstrip("?")
    return adjective not in _VESSEL_SITES or adjective == head or adjective in _HEAD_NOUN_SITES[head]


# a granuloma is never in a vessel or the heart ("calcified granulomas ..., and coronary calcification")
_EXCLUDED_SITES = {"calcified_granuloma": frozenset(_VESSEL_SITES | {"heart_valve", "myocardium", "pericardium"})}
# concepts that only say where the deposit is: a phrase covering other sites as well is reconsidered
_SITE_DERIVED = frozenset({"calcification", "vascular_calcification", "coronary_artery_calcification",
                           "valvular_calcification"})
_VASCULAR_CONCEPTS = frozenset({"vascular_calcification", "coronary_artery_calcification"})
_GRANULOMA_HEADS = frozenset({"granuloma", "granulomas", "granulomata"})
_NODULE_HEADS = frozenset({"nodule", "nodules"})
# calciphylaxis is a skin site only when its sentence names skin, a skin lesion or a body surface
_SKIN_CUES = re.compile(blanks(
    r"\b(?:skin|cutaneous|subcutaneous|subcutis|dermal|derm|dermatology|wounds?|ulcers?|ulcerations?|eschars?|"
    r"purpura|livedo|necrotic|necrosis|plaques?|papules?|nodules?|lesions?|punch|bx|biopsy|thighs?|calf|calves|"
    r"legs?|lower extremit(?:y|ies)|abdomen|abdominal wall|pannus|buttocks?|breasts?|penis|penile|fingers?|"
    r"toes?|panniculitis|fat|arms?|flanks?|hips?|shins?|trunk)\b",
    ), re.IGNORECASE,
)
# "right coronary artery", "left ventricle", "left anterior descending": names, not laterality
_QUADRANTS = frozenset({"upper quadrant", "lower quadrant"})  # "RIGHT UPPER QUADRANT ULTRASOUND": a region
_NAMED_SIDES = frozenset({"coronary_artery", "myocardium"})
_NOT_LATERALITY_NEXT = frozenset({"coronary", "circumflex", "ventricle", "ventricular", "atrium", "atrial", "heart"})
_SCORE_PHRASES = frozenset(
    {"calcium score", "agatston score", "cac score", "coronary calcium score", "calcium scoring", "coronary calcium",
     "coronary artery calcium score", "coronary artery calcium scoring", "aortic valve calcium score"}
)
_SCORE_ABBREVIATIONS = frozenset({"cac"})  # "CAC 0" is a score of 0; "CAC" alone is still a mention
_SCORE_VALUE = re.compile(r"^[^.\n\d]{0,25}?(\d+(?:\.\d+)?)")
# "repeat CAC in 5 yrs", "calcium score in 3-5 years": the test to come, not a finding
_SCORE_WHEN = re.compile(
    r"^[ \t]*(?:in|within|after|every)[ \t]+\d+(?:[ \t]*(?:-|to)[ \t]*\d+)?[ \t]*(?:yrs?|years?|months?|mos?|weeks?|wks?)\b",
    re.IGNORECASE)
MAX_SITE_COST = 14
FIXED_SIDE_COST = 9  # a phrase that names its site takes laterality from a place this near
WEAK_SITE_COST = 6  # a weak site word ("nodule", "atherosclerosis") is passed over for a named place nearby
SUBJECT_TOKENS = 3  # a site among the first tokens of the sentence is its subject ("Native kidneys are ...")
_SIDE_LABEL = re.compile(blanks(
    r"(?i)\b(left|right|bilateral)\b(?![ \t]+(?:ventric|atri|coronary|heart|main\b|anterior descending|upper quadrant|"
    r"lower quadrant))[A-Za-z0-9 \t,]{0,30}:"
))
TITLE_LINES = 3  # the exam title is on one of the first lines (a date line may come first)
_EXAM_LINE = re.compile(r"(?i)(?:exam(?:ination)?|study|procedure)\s*:")
_ORGAN_HEADING = re.compile(r"[ \t]*[A-Za-z][A-Za-z ,/&()\t-]{1,40}:")


def _within(matches: list[Match], starts: list[int], start: int, end: int) -> list[Match]:
    """The matches (in text order, ``starts`` their start tokens) inside tokens [start, end)."""
    out = []
    for i in range(bisect_left(starts, start), len(matches)):
        x = matches[i]
        if x.start >= end:
            break
        if x.end <= end:
            out.append(x)
    return out



class MentionFinder:
    """Calcification mentions: concept, sites, laterality, assertion, section.

    Site linking (the most specific site the sentence supports):
    0. a phrase that names its site keeps it ("calcific aortic stenosis" -> heart_valve), plus sites
       coordinated before it ("coronary and aortic calcification");
    1. sites inside the mention phrase ("aortic calcification"); a generic vessel word inside the
       phrase ("vascular calcification") gives way to a vessel named outside it ("... of the aorta");
    2. else the cheapest site in the sentence, cost = token distance + 4 per comma/colon crossed,
       never across a strong break ("but", "however", ";"); at most ``MAX_SITE_COST``; an adjective
       site gives way to the site noun it modifies ("intracranial internal carotid arteries");
    3. sites coordinated with it, after and before ("of the aorta and coronary arteries",
       "aorta and iliac arteries are calcified") are added; adjectives coordinated before a head
       noun take the head's site ("renal and iliac arteries" -> artery);
    4. else a site that is the subject of the sentence ("Transplant kidney ..., with calcification");
    5. else the organ heading of the line, the one-organ exam title, the phrase's own site.
    Concept rules: a generic word whose head noun is a granuloma (or a nodule the sentence calls
    granulomatous) is ``calcified_granuloma``; calcinosis in the skin is ``calcinosis_cutis``;
    calciphylaxis is ``skin`` only when its sentence names skin or a body surface.
    """

    def __init__(self) -> None:
        self.site_concepts = {r["site"]: r["concept"] for r in resources.site_concept_rules()}
        self.long_forms: dict[str, tuple[str, str]] = {}
        for concept, rows in resources.mention_rules().items():
            for r in rows:
                if " " in r["phrase"]:
                    self.long_forms[r["phrase"]] = (concept, r["site"])

    def __call__(self, doc: Doc) -> Doc:
        matches = get(doc, "calc_matches")
        candidates = [m for m in matches["M"] if not any(v.start < m.end and m.start < v.end for v in matches["V"])]
        candidates.extend(self._abbreviation_mentions(doc, matches["M"]))
        if not candidates:
            put(doc, "calc_mentions", ())
            return doc
        view = view_of(doc)
        out = []
        previous = None
        ordered = sorted(candidates, key=lambda m: m.start)
        sites = (matches["S"], [x.start for x in matches["S"]])
        lats = (matches["L"], [x.start for x in matches["L"]])
        for k, m in enumerate(ordered):
            if previous is not None and m.start == previous.end + 1 and view.texts[previous.end] == "(":
                continue  # "mitral annular calcification (MAC)": the definition is part of its long form
            # sites chained to this mention stay between its neighbours: "calcification of the aorta and
            # iliac arteries, and coronary artery calcifications" are two mentions with their own sites
            floor = previous.end if previous is not None else 0
            ceiling = ordered[k + 1].start if k + 1 < len(ordered) else view.n_tokens
            previous = m
            mention = self._mention(view, m, sites, lats, floor, ceiling)
            if mention is not None:
                out.append(mention)
        put(doc, "calc_mentions", tuple(out))
        return doc

    def _abbreviation_mentions(self, doc: Doc, existing: list[Match]) -> list[Match]:
        out = []
        for short_start, short_end, long_text in get(doc, "calc_abbreviations") or ():
            key = " ".join(long_text.lower().split())
            if key not in self.long_forms:
                continue
            span = view_of(doc).tokens(short_start, short_end)
            if span is None or any(e.start <= span[1] and span[0] <= e.end + 1 for e in existing):
                continue  # overlaps a mention, or is the "(MAC)" right after its own long form
            concept, site = self.long_forms[key]
            out.append(Match(span[0], span[1], "M", concept, site))
        return out

    def _mention(
        self, view: DocView, m: Match, site_index: tuple[list[Match], list[int]],
        lat_index: tuple[list[Match], list[int]], floor: int, ceiling: int,
    ) -> Mention | None:
        sites, lats = site_index[0], lat_index[0]
        s_start, s_end = view.sentence(m.start)
        concept, phrase_site = m.a, m.b
        near_sites = _within(*site_index, s_start, s_end)  # vocabulary matches are in text order
        sent_sites = [x for x in near_sites if floor <= x.start and x.end <= ceiling]
        sent_start_char, sent_end_char = view.char_bounds(s_start, s_end)
        if concept == "calcification":
            concept = self._head_noun_concept(view, m, sent_sites, s_end, sent_start_char, sent_end_char)
        excluded = _EXCLUDED_SITES.get(concept)
        if excluded:
            sent_sites = [x for x in sent_sites if x.a.rstrip("?") not in excluded]
            near_sites = [x for x in near_sites if x.a.rstrip("?") not in excluded]
        fixed = phrase_site != "-" and not phrase_site.endswith("?")
        if fixed:
            inside = [x for x in sent_sites if x.start >= m.start and x.end <= m.end]
            linked = self._coordinated_before(view, m.start, sent_sites, [], floor)
            if inside:  # "calcified aorta and branch vessels"
                linked += self._coordinated(view, inside[-1], sent_sites, inside)
            # "hilar and mediastinal lymph node calcifications": the phrase's own head noun takes them in
            head = phrase_site if inside and not self._adjectival(view, inside[-1]) else None
            site_codes = self._absorb(view, linked, head)
            site_codes = tuple(dict.fromkeys((phrase_site,) + site_codes))  # "coronary and aortic calcification"
        else:
            linked = self._link_sites(view, m, near_sites, sent_sites, s_start, floor)
            weak = bool(linked) and all(x.a.endswith("?") for x in linked) and m.b != "artery?"
            site_codes = self._absorb(view, linked, None)
            if concept == "calcified_granuloma" and site_codes and site_codes[0] == "mediastinum":
                site_codes = ("lymph_node",) + site_codes[1:]
            if not site_codes or weak:
                context = self._heading_site(view, m, sites) or self._title_site(view, sites)
                if context:
                    site_codes = context
        if not site_codes:
            site_codes = (phrase_site.rstrip("?"),) if phrase_site != "-" else ("unspecified",)
        if "aorta" in site_codes:
            for x in [m] + linked:
                for text in view.texts[x.start : x.end]:
                    if text in _COMPOUND_SITES:
                        site_codes = tuple(dict.fromkeys(site_codes + _COMPOUND_SITES[text]))
        if concept == "calciphylaxis":
            cue = _SKIN_CUES.search(view.text, sent_start_char, sent_end_char)
            site_codes = ("skin",) if cue else ("unspecified",)
        elif concept == "calcification":
            if "skin" in site_codes and view.texts[m.end - 1] == "calcinosis":
                concept = "calcinosis_cutis"  # "calcinosis of the fingertips"
            else:
                concept = self._site_concept(site_codes, concept)
        elif concept in _SITE_DERIVED and len(site_codes) > 1:
            concept = self._site_concept(site_codes, concept)
        elif concept == "vascular_calcification" and site_codes == ("coronary_artery",):
            concept = "coronary_artery_calcification"  # "atherosclerotic calcification of the coronary arteries"
        if fixed:  # the places a fixed phrase sits in ("renal cortex bilaterally ... cortical nephrocalcinosis")
            same = [x for x in near_sites if x.a.rstrip("?") == phrase_site]  # the same organ named near it
            near = self._link_sites(view, m, same, same, s_start, floor)
            if near and (min(self._distance(view, m, x) for x in near) <= FIXED_SIDE_COST
                         or min(x.start for x in near) <= s_start + SUBJECT_TOKENS):
                linked = linked + near
        # a side word that is itself a place not linked here ("calcified nodes, RUL scarring") is not ours
        other = [x for x in near_sites if x.a in _NAMED_SIDES or (x not in linked and x.a.rstrip("?") == "lung")]
        laterality = self._laterality(view, m, linked, [
            x for x in _within(*lat_index, s_start, min(s_end, ceiling)) if not any(n.start <= x.start < n.end for n in other)
        ])
        if laterality is None:
            laterality = self._heading_laterality(view, m, lat_index)
        start_char, end_char = view.char_bounds(m.start, m.end)
        assertion = view.assertion(m.start, m.end)
        status = assertion.status
        triggers = assertion.triggers
        phrase = " ".join(view.texts[m.start : m.end])
        if phrase in _SCORE_PHRASES or phrase in _SCORE_ABBREVIATIONS:
            after = view.text[end_char : end_char + 40]
            if _SCORE_WHEN.match(after):
                return None
            score = _SCORE_VALUE.match(after)
            # an exam title or "calcium score was obtained": no score, no mention; but "no / zero coronary
            # calcium" denies the deposit, a negated mention
            if score is None and phrase in _SCORE_PHRASES and status != "negated":
                return None
            if score is not None and float(score.group(1)) == 0:
                status, triggers = "negated", triggers + ("negated:calcium score of 0",)
        section = section_at(view.sections, start_char)
        return Mention(
            start=start_char,
            end=end_char,
            text=view.exact[start_char:end_char],
            concept=concept,
            site=site_codes[0],
            sites=site_codes,
            laterality=laterality,
            assertion=status,
            section=section.kind if section else None,
            sentence_start=sent_start_char,
            sentence_end=sent_end_char,
            triggers=triggers,
        )

    def _site_concept(self, site_codes: tuple[str, ...], concept: str) -> str:
        """The concept the linked sites share: the aorta with the coronary arteries is vascular, the
        coronary arteries with a valve share none (generic)."""
        found = [self.site_concepts[c] for c in site_codes if c in self.site_concepts]
        kinds = set(found)
        if len(kinds) > 1:
            return "vascular_calcification" if kinds <= _VASCULAR_CONCEPTS else "calcification"
        if kinds and concept in _SITE_DERIVED:
            return found[0]
        return concept

    @staticmethod
    def _head_noun_concept(view: DocView, m: Match, sites: list[Match], s_end: int, s_char: int, e_char: int) -> str:
        """A generic word whose head noun is a granuloma ("calcified splenic and hepatic granulomas"), or a
        nodule its sentence calls granulomatous, is a calcified granuloma."""
        head = view.texts[m.end - 1]
        if head not in _NODULE_HEADS:
            covered = {i for x in sites if x.start >= m.end for i in range(x.start, x.end)}
            head = None
            for i in range(m.end, min(s_end, m.end + 6)):
                text = view.texts[i]
                if text in _GRANULOMA_HEADS or text in _NODULE_HEADS or not (i in covered or text in _COORDINATION):
                    head = text
                    break
        if head in _GRANULOMA_HEADS:
            return "calcified_granuloma"
        if head in _NODULE_HEADS and "granulom" in view.text[s_char:e_char].lower():
            return "calcified_granuloma"
        return "calcification"

    @staticmethod
    def _adjectival(view: DocView, x: Match) -> bool:
        return view.texts[x.end - 1].endswith(_ADJECTIVE_ENDINGS)

    def _absorb(self, view: DocView, linked: list[Match], head: str | None) -> tuple[str, ...]:
        """Site codes of ``linked`` (text order of linking kept), without the adjectives coordinated
        before a head noun that names their place ("hilar and mediastinal nodes" -> lymph_node)."""
        if not linked:
            return ()
        ordered = sorted(linked, key=lambda x: x.start)
        dropped = set()
        for i, x in enumerate(ordered):
            code = x.a.rstrip("?")
            if not self._adjectival(view, x):
                continue
            # a head is a site noun, or a node station ("mediastinal and left hilar lymph XXXX")
            heads = [y.a.rstrip("?") for y in ordered[i + 1 :]
                     if not self._adjectival(view, y) or y.a.rstrip("?") == "lymph_node"]
            if head is not None:
                heads.append(head)
            if any(code in _HEAD_NOUN_SITES.get(h, ()) for h in heads):
                dropped.add(x)
        return tuple(dict.fromkeys(x.a.rstrip("?") for x in linked if x not in dropped))

    @staticmethod
    def _heading_site(view: DocView, m: Match, sites: list[Match]) -> tuple[str, ...]:
        """The organ heading of the mention's line or paragraph ("KIDNEYS: punctate calcifications");
        a section title without an organ ("IMPRESSION:") ends the search."""
        text = view.text
        start_char = view.char(m.start)
        line_start = text.rfind("\n", 0, start_char) + 1
        for _ in range(4):  # this line, or a heading line a few lines up in the same paragraph
            head = _ORGAN_HEADING.match(text, line_start)
            if head and head.end() <= start_char:
                hits = [x for x in sites if line_start <= view.char(x.start) < head.end() and not x.a.endswith("?")]
                if hits:
                    return (hits[0].a,)
                if any(line_start <= s.start < head.end() for s in view.sections):
                    return ()
            if line_start == 0 or text[max(0, line_start - 2) : line_start] == "\n\n":
                return ()
            line_start = text.rfind("\n", 0, line_start - 1) + 1
        return ()

    @staticmethod
    def _heading_laterality(view: DocView, m: Match, lat_index: tuple[list[Match], list[int]]) -> str | None:
        """Laterality of the label the mention follows on its line or a line above in its paragraph
        ("RIGHT BREAST: ...", "LEFT: ... RIGHT: ..."), or of a one-sided exam title on the first line
        ("RIGHT SHOULDER 3 VIEWS", "LEFT DIAGNOSTIC MAMMOGRAM")."""
        lats, starts = lat_index
        last = bisect_left(starts, m.start) - 1
        if last < 0:
            return None  # no side word before the mention
        text = view.text
        start_char = view.char(m.start)
        window = start_char
        for _ in range(4):
            window = text.rfind("\n", 0, max(window - 1, 0))
        title_end = -1
        for _ in range(TITLE_LINES):
            title_end = text.find("\n", title_end + 1)
            if title_end < 0:
                title_end = len(text)
                break
        if view.char(lats[last].start) < window and view.char(lats[0].start) >= title_end:
            return None  # no side word on the lines above in reach, nor in the title
        end = start_char
        line_start = text.rfind("\n", 0, start_char) + 1
        for _ in range(4):
            labels = list(_SIDE_LABEL.finditer(text, line_start, end))
            if labels:
                return labels[-1].group(1).lower().replace("bilaterally", "bilateral")
            head = _ORGAN_HEADING.match(text, line_start)
            if head and any(line_start <= s.start < head.end() for s in view.sections):
                break  # "IMPRESSION:" ends the search
            if line_start == 0 or text[max(0, line_start - 2) : line_start] == "\n\n":
                break
            end = line_start - 1
            line_start = text.rfind("\n", 0, end) + 1
        spans = MentionFinder._title_spans(view, strict=True)  # not "HPI: 67M with a left leg ulcer"
        if spans and start_char > spans[-1][1]:
            sides = {x.a for x in lats if any(a <= view.char(x.start) < b for a, b in spans)
                     and " ".join(view.texts[x.end : x.end + 2]) not in _QUADRANTS}
            if len(sides) == 1:
                return sides.pop()
        return None

    @staticmethod
    def _title_spans(view: DocView, strict: bool = False) -> list[tuple[int, int]]:
        """Character spans of the exam title among the note's first lines: a short first line, an
        upper-case line without a colon ("RENAL ULTRASOUND", "CT ABD & PELVIS WITH CONTRAST" under a date line), a specimen line
        ending in a colon, or "EXAM: CT CHEST"."""
        text = view.text
        spans = []
        start = 0
        for _ in range(TITLE_LINES):
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            line = text[start:end].strip()
            if (start == 0 and end <= 60 and not strict) or (line and end - start <= 70 and line == line.upper() and (
                ":" not in line or line.endswith(":") or _EXAM_LINE.match(line)  # "A. LEFT BREAST, ... BIOPSY:"
            )):
                spans.append((start, end))
            if end >= len(text):
                break
            start = end + 1
        return spans

    def _title_site(self, view: DocView, sites: list[Match]) -> tuple[str, ...]:
        """The organ of a one-organ exam title ("RENAL ULTRASOUND", "THYROID US")."""
        spans = self._title_spans(view)
        if not spans:
            return ()
        hits = set()
        for x in sites:
            idx = view.char(x.start)
            if idx >= spans[-1][1]:
                break
            if not x.a.endswith("?") and any(a <= idx < b for a, b in spans):
                hits.add(x.a)
        return (hits.pop(),) if len(hits) == 1 else ()

    @staticmethod
    def _cost(view: DocView, a: int, b: int) -> int | None:
        """Cost of linking across tokens [a, b); None across a strong break."""
        cost = b - a
        for text in view.texts[a:b]:
            if text in _STRONG_BREAK:
                return None
            if text in _SOFT_BREAK:
                cost += 4
        return cost

    def _distance(self, view: DocView, m: Match, x: Match) -> int:
        if x.end <= m.start:
            cost = self._cost(view, x.end, m.start)
        elif x.start >= m.end:
            cost = self._cost(view, m.end, x.start)
        else:
            cost = 0
        return MAX_SITE_COST + 1 if cost is None else cost

    def _nearest(self, view: DocView, m: Match, sites: list[Match]) -> Match | None:
        best, best_cost = None, MAX_SITE_COST + 1
        for x in sites:
            if x.end <= m.start:
                cost = self._cost(view, x.end, m.start)
            elif x.start >= m.end:
                cost = self._cost(view, m.end, x.start)
            else:
                continue
            if cost is not None and x.a.endswith("?"):
                cost += WEAK_SITE_COST  # "calcific atherosclerosis" of the named "abdominal aorta" before it
            if cost is not None and (cost < best_cost or (cost == best_cost and x.start >= m.end)):
                best, best_cost = x, cost  # a tie goes to the noun after "calcified"
        return best

    def _link_sites(
        self, view: DocView, m: Match, sites: list[Match], chainable: list[Match], s_start: int, floor: int
    ) -> list[Match]:
        """``sites``: the sentence's sites; ``chainable``: those not past a neighbouring mention."""
        inside = [x for x in sites if x.start >= m.start and x.end <= m.end]
        generic = m.b == "artery?" and all(x.a.rstrip("?") == "artery" for x in inside)  # "vascular calcification"
        weak = all(x.a.endswith("?") for x in inside)  # "calcified nodules": where, if the sentence says
        if inside and not generic and not weak:
            linked = inside + self._coordinated(view, inside[-1], chainable, inside)
            return self._coordinated_before(view, inside[0].start, chainable, linked, floor) + linked
        outside = [x for x in sites if x.end <= m.start or x.start >= m.end]
        best = self._nearest(view, m, outside)
        if best is None:
            best = self._subject(view, m, outside, s_start)
        if best is None or (weak and inside and best.a.endswith("?")):
            return inside
        # an adjective site names the place of the site noun after it: "dermal arterioles" -> artery,
        # "intracranial internal carotid arteries" -> artery; the adjectives stay in the chain
        ordered = sites  # in text order
        i = ordered.index(best)
        if (i > 0 and ordered[i - 1].end == best.start and best.a.rstrip("?") not in _HEAD_NOUN_SITES
                and not ordered[i - 1].a.endswith("?") and self._adjectival(view, ordered[i - 1])):
            best = ordered[i - 1]  # "tracheobronchial cartilage": the organ, not the tissue
        walked = [best]
        if best.start >= m.end:
            ordered = outside
            i = ordered.index(best)
            while (i + 1 < len(ordered) and _modifies(ordered[i].a, ordered[i + 1].a)
                   and self._adjectival(view, ordered[i])
                   and all(t in _MODIFIERS for t in view.texts[ordered[i].end : ordered[i + 1].start])):
                i += 1
                walked.append(ordered[i])
        best = walked[-1]
        linked = walked + self._coordinated(view, best, chainable, walked)
        if inside and generic and not any(x.a in _VESSEL_SITES for x in linked):
            return inside  # "vascular calcifications in the right breast": the vessels, not the breast
        return self._coordinated_before(view, walked[0].start, chainable, linked, floor) + linked

    def _subject(self, view: DocView, m: Match, sites: list[Match], s_start: int) -> Match | None:
        """A site among the first words of the sentence, before the mention, is what the sentence is
        about ("Failed transplant kidney in the right iliac fossa, small and atrophic, with ... calcification")."""
        for x in sites:
            if x.start > s_start + SUBJECT_TOKENS or x.end > m.start:
                break
            if view.texts[s_start] in ("no", "without") or x.a.endswith("?"):
                return None
            if self._cost(view, x.end, m.start) is not None:
                return x
        return None

    @staticmethod
    def _coordinated(view: DocView, anchor: Match, sites: list[Match], taken: list[Match]) -> list[Match]:
        """Sites chained to ``anchor`` by "and", "or", commas, "the", modifiers, laterality words."""
        chained: list[Match] = []
        ordered = sites  # in text order
        starts = {x.start for x in ordered}
        last = anchor
        for x in ordered:
            if x.start < anchor.end or x in taken:
                continue
            gap = view.texts[last.end : x.start]
            and_or = any(t in _AND_OR for t in gap)
            if gap and all(t in _COORDINATION or (and_or and t in _PREPOSITIONS) for t in gap) and any(
                t in _CONJUNCTIONS for t in gap
            ):
                if not any(t in _AND_OR for t in gap) and x.end < view.n_tokens and not (
                    view.texts[x.end] in _LIST_END or x.end in starts
                ):
                    break  # "(calcified nodes, RUL scarring, ...)": a list of findings, not of places
                chained.append(x)
                last = x
            elif not gap and MentionFinder._adjectival(view, last):
                if x.a != "artery?" and _modifies(last.a, x.a) and not MentionFinder._adjectival(view, x):
                    chained.append(x)  # the noun an adjective site modifies ("hilar and mediastinal nodes")
                last = x  # "tracheal and bronchial cartilage": the adjective is the place
            else:
                break  # "aortic knob lungs are clear": a new phrase, not the same place
        return chained

    @staticmethod
    def _coordinated_before(
        view: DocView, start: int, sites: list[Match], taken: list[Match], floor: int
    ) -> list[Match]:
        """Sites chained before token ``start`` by "and", "or", commas ("coronary and aortic calcification")."""
        chained: list[Match] = []
        first = start
        for x in reversed(sites):
            if x.end > first or x in taken:
                continue
            gap = view.texts[x.end : first]
            if gap and all(t in _COORDINATION for t in gap) and any(t in _CONJUNCTIONS for t in gap):
                chained.append(x)
            elif gap or not MentionFinder._adjectival(view, x):
                break
            first = x.start  # an adjective before it ("aortic and mitral valve") extends the chain
        if chained:
            i = first - 1
            while i >= 0 and view.texts[i] in _MODIFIERS:
                i -= 1
            if i >= 0 and (view.texts[i] in _PREPOSITIONS or i < floor):
                return []  # "calcification of the aorta and iliac arteries, and coronary ...": not ours
                # "calcified coronaries, calcified mitral annulus": the coronaries are the previous mention's
        return chained

    def _laterality(self, view: DocView, m: Match, linked: list[Match], lats: list[Match]) -> str | None:
        anchors = [m] + linked
        best, best_cost = None, 7
        n = view.n_tokens
        for lat in lats:
            if lat.end < n and view.texts[lat.end] in _NOT_LATERALITY_NEXT:
                continue  # "right coronary artery", "left ventricle"
            for a in anchors:
                cost = self._distance(view, a, lat)  # a strong break costs more than any laterality reach
                if cost < best_cost:
                    best, best_cost = lat.a, cost
        return best


@Language.factory("calc_mentions")
def make_mentions(nlp: Language, name: str) -> MentionFinder:
    return MentionFinder()


# ----------------------------------------------------------------------------------------------
# conditions

_CKD_STAGE = re.compile(r"^[ \t,]*(?:stage[ \t]*)?(?P<stage>[1-5][ab]?d?|v|iv|iii|ii|i)\b", re.IGNORECASE)
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5"}


class ConditionFinder:
    """Conditions of ANNOTATION.md section 5, each with assertion; CKD keeps its stage."""

    def __call__(self, doc: Doc) -> Doc:
        found = get(doc, "calc_matches")["K"]
        if not found:
            put(doc, "calc_conditions", ())
            return doc
        view = view_of(doc)
        out = []
        for m in found:
            start_char, end_char = view.char_bounds(m.start, m.end)
            detail = None
            if m.a == "ckd":
                stage = _CKD_STAGE.match(view.text[end_char : end_char + 16])
                if stage:
                    value = stage.group("stage").lower()
                    detail = "stage " + _ROMAN.get(value, value).upper()
            section = view.section_at(start_char)
            out.append(
                Condition(
                    start=start_char,
                    end=end_char,
                    text=view.exact[start_char:end_char],
                    condition=m.a,
                    group=m.b,
                    detail=detail,
                    assertion=view.assertion(m.start, m.end).status,
                    section=section.kind if section else None,
                )
            )
        put(doc, "calc_conditions", tuple(out))
        return doc


@Language.factory("calc_conditions")
def make_conditions(nlp: Language, name: str) -> ConditionFinder:
    return ConditionFinder()


# ----------------------------------------------------------------------------------------------
# labs


class LabFinder:
    def __init__(self) -> None:
        from pipeline.labs import LabExtractor

        self.extractor = LabExtractor()

    def __call__(self, doc: Doc) -> Doc:
        put(doc, "calc_labs", tuple(self.extractor.extract(text_of(doc))))
        return doc


@Language.factory("calc_labs")
def make_labs(nlp: Language, name: str) -> LabFinder:
    return LabFinder()


# ----------------------------------------------------------------------------------------------
# building and loading

COMPONENTS = (
    "calc_sentences",
    "calc_sections",
    "calc_abbreviations",
    "calc_matcher",
    "calc_mentions",
    "calc_conditions",
    "calc_labs",
)


def build_nlp(base: str | Path | None = None) -> Language:
    """The calcmine pipeline.

    ``base`` may name an installed scispaCy model (``en_core_sci_sm``) or a saved pipeline folder;
    its tokenizer and vocabulary are kept and calcmine's components are added (its own
    parser/NER are disabled: calcmine's rules do not need them). Without ``base``, the pipeline is
    ``spacy.blank("en")`` with scispaCy's tokenizer. Nothing is downloaded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if base is None:
            nlp = spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": "calcmine.scispacy_tokenizer.v1"}}})
        else:
            nlp = spacy.load(base, exclude=list(COMPONENTS))
            for name in list(nlp.pipe_names):
                nlp.disable_pipe(name)
            if not isinstance(nlp.tokenizer, TextKeepingTokenizer):
                nlp.tokenizer = TextKeepingTokenizer(nlp.tokenizer)
    for name in COMPONENTS:
        nlp.add_pipe(name)
    nlp.meta["name"] = "calcmine"
    nlp.meta["version"] = PIPELINE_VERSION
    return nlp


def load_nlp(path: str | Path) -> Language:
    """Load a pipeline saved with ``nlp.to_disk`` (components are rebuilt from the package data)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return spacy.load(path)
