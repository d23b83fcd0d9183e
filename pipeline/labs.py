"""Lab values from note text, unit normalisation, flags and derived values.

Extraction is a scan of the text (compiled regular expressions built from ``data/labs``), not of
tokens: lab dumps glue names, values and units ("CALCIUM:2.81mmol/L") in ways no tokenizer splits.

For each analyte name found, the text after it is read as::

    NAME [connector words] [< >] VALUE [UNIT] [FLAG] [RANGE] [UNIT] [-> VALUE ...] [(baseline VALUE)]

- connector words are few and known ("of", "was", "elevated at", ":", "-"); any other word between
  name and number ("calcium carbonate 1250") means it is not a lab value;
- a bare dose unit (mg, mcg, units, IU, tablets) or a dose frequency after the value means a dose;
- a value followed by "-number" is a reference range, not a value;
- "Ca/Phos 9.8/6.2" pairs names and values by position;
- text matching ``data/labs/vetoes.tsv`` (CA 19-9, calcium scores, ...) is skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline import resources, vocab
from pipeline.model import LabValue
from pipeline.textutil import trie_pattern

_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+,\d{1,2}(?![\d,])|\d+(?:\.\d+)?|\.\d+)"  # 1,250 / 3,12 (decimal comma) / 11.2
_UNITS = (
    r"mg/dl|mg/l|mmol/l|umol/l|µmol/l|μmol/l|micromol/l|pg/ml|pmol/l|ng/ml|ng/l|nmol/l|g/dl|g/l|"
    r"iu/l|u/l|units/l|ml/min/1\.73\s?m2|ml/min/1\.73\s?m\^2|ml/min/1\.73m²|ml/min/1\.73|ml/min|meq/l|mg2/dl2|mg\^2/dl\^2"
)
_UNIT_RE = re.compile(rf"[ \t]*\(?(?P<unit>{_UNITS})(?![a-z])\)?", re.IGNORECASE)
_DOSE_RE = re.compile(
    r"[ \t]*(?:mg|mcg|µg|ug|g|grams?|units?|iu|tabs?|tablets?|caps?|capsules?|meq|ml)\b(?!/)(?![ \t]*[-:=])(?![ \t]+\d)"
    r"|[ \t]*(?:daily|bid|tid|qid|qd|qhs|weekly|monthly|po|iv|with meals|q\d+h)\b",
    re.IGNORECASE,
)
_FLAG_RE = re.compile(
    r"[ \t]*(?:\((?P<pflag>hh|ll|h|l|high|low|critical|abn|a)\)|(?P<flag>hh|ll|h|l|high|low)\b|(?P<arrow>[↑↓])|(?P<star>\*))",
    re.IGNORECASE,
)
_RANGE_RE = re.compile(rf"[ \t]*[\[(]?[ \t]*(?:ref(?:erence)?[ \t:]*|nl[ \t:]*|normal[ \t:]*)?{_NUM}[ \t]*(?:-|–|to)[ \t]*{_NUM}[ \t]*[\])]?", re.IGNORECASE)
_ARROW_RE = re.compile(rf"[ \t]*(?:->|-->|→|=>|>|, then|then|and now|now)[ \t]*(?P<num>{_NUM})", re.IGNORECASE)
_PAREN_RE = re.compile(
    rf"[ \t]*\((?P<word>baseline|prior|previous|prev|was|from|admission|peak|nadir|corrected|corr|adjusted)"
    rf"[ \t:]*(?:of[ \t]*|was[ \t]*)?(?P<num>{_NUM})[^)\n]{{0,20}}\)",
    re.IGNORECASE,
)
_CONNECTOR_WORDS = frozenset(
    "of was is are were level levels at elevated high low up down to now today remains remained "
    "peaked peak increased decreased rose dropped came back value result measured checked the this "
    "morning am pm serum blood plasma total intact on admission initial initially repeat latest last "
    "recent most recently improved worsened trended trending from a new persistently still "
    "mildly markedly severely slightly significantly very normal lvl estimated".split()
)
_CONNECTOR_RE = re.compile(r"[ \t]*(?:[:=#]|-(?=[ \t]*\d)|[a-z]+|\r?\n|\((?:h|l)\))", re.IGNORECASE)
_UNIT_LIKE_NAMES = frozenset({"mg"})  # analyte names that are also units of a preceding number
_FLAG_WORDS = {"elevated": "high", "high": "high", "increased": "high", "low": "low", "decreased": "low", "normal": "normal"}
_REF_HEAD = re.compile(  # a reference range, or a one-sided one with its unit, or a unit, then the value columns
    rf"[ \t]*(?:{_NUM}[ \t]*[-–][ \t]*{_NUM}[ \t]*(?P<unit>{_UNITS})?"
    rf"|(?:<=|>=|<|>)[ \t]*{_NUM}[ \t]*(?P<unit2>{_UNITS})"
    rf"|(?P<unit3>{_UNITS}))"
    rf"(?=[ \t]{{2,}}(?:<=|>=|<|>)?{_NUM}(?![\d/:-]))",
    re.IGNORECASE,
)


def _column_flag(cell: str) -> str | None:
    found = re.search(r"\((hh|ll|h|l)\)|\b(hh|ll|h|l)\b|([↑↓])", cell, re.IGNORECASE)
    if not found:
        return None
    return (found.group(1) or found.group(2) or {"↑": "h", "↓": "l"}[found.group(3)]).lower()


_COLUMN_RE = re.compile(
    rf"[ \t]{{2,}}(?P<cmp><=|>=|<|>)?(?P<num>{_NUM})(?![\d/:-])"
    r"(?:[ \t]*(?:\((?:hh|ll|h|l)\)|(?:hh|ll|h|l)\b|[↑↓*]))?",
    re.IGNORECASE,
)


def _windows(matches, size: int, margin: int = 60) -> list[tuple[int, int]]:
    """Merged character windows around matches."""
    out: list[list[int]] = []
    for m in matches:
        lo, hi = max(0, m.start() - margin), min(size, m.end() + margin)
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def _number(text: str) -> float:
    """'1,250' -> 1250 (thousands); '3,12' -> 3.12 (a European decimal comma)."""
    if re.fullmatch(r"\d+,\d{1,2}", text):
        return float(text.replace(",", "."))
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class Normalised:
    value_std: float | None
    unit_std: str | None
    unit_inferred: bool
    plausible: bool


class LabExtractor:
    """Finds lab values in a text; see the module docstring."""

    def __init__(self) -> None:
        rows = resources.analyte_rules()
        self.analyte_of = {r["synonym"]: r["analyte"] for r in rows}
        alternation = trie_pattern(self.analyte_of)
        self.name_re = re.compile(rf"(?<![A-Za-z0-9])(?P<name>{alternation})(?![A-Za-z])", re.IGNORECASE)
        pair_names = trie_pattern(list(self.analyte_of) + ["p"])
        self.pair_re = re.compile(
            rf"(?<![A-Za-z0-9])(?P<names>(?:{pair_names})(?:[ \t]*/[ \t]*(?:{pair_names}))+)[ \t]*[:=]?[ \t]*"
            rf"(?P<values>{_NUM}(?:[ \t]*/[ \t]*{_NUM})+)",
            re.IGNORECASE,
        )
        self.pair_split = re.compile(r"[ \t]*/[ \t]*")
        self.vetoes = [re.compile(r["pattern"], re.IGNORECASE) for r in resources.lab_veto_rules()]

    def _analyte(self, name: str) -> str | None:
        key = " ".join(name.lower().split())
        if key == "p":
            return "phosphate"
        return self.analyte_of.get(key)

    def extract(self, text: str) -> list[LabValue]:
        names = list(self.name_re.finditer(text))
        if not names:
            return []
        taken: list[tuple[int, int]] = []
        for lo, hi in _windows(names, len(text)):  # vetoes only near analyte names
            taken.extend((m.start(), m.end()) for v in self.vetoes for m in v.finditer(text, lo, hi))
        out: list[LabValue] = []

        def free(a: int, b: int) -> bool:
            return not any(s < b and a < e for s, e in taken)

        for m in self.pair_re.finditer(text) if "/" in text else ():
            pair_names = self.pair_split.split(m.group("names"))
            values = self.pair_split.split(m.group("values"))
            if len(pair_names) != len(values) or not free(m.start(), m.end()):
                continue
            analytes = [self._analyte(n) for n in pair_names]
            if None in analytes:
                continue
            pos = m.start("values")
            for analyte, raw in zip(analytes, values):
                vstart = text.index(raw, pos)
                pos = vstart + len(raw)
                out.append(LabValue(vstart, pos, analyte, _number(raw), None, text=text[vstart:pos]))
            taken.append((m.start(), m.end()))

        for m in names:
            if not free(m.start(), m.end()):
                continue
            analyte = self._analyte(m.group("name"))
            if analyte is None:
                continue
            found = self._read_values(text, m, analyte)
            if found:
                out.extend(found)
                taken.append((m.start(), found[-1].end))
        out.sort(key=lambda v: v.start)
        return out

    def _read_values(self, text: str, m: re.Match, analyte: str) -> list[LabValue]:
        pos = m.end()
        connector_flag = None
        connector_len = 0
        separators = 0
        # connector words between name and number
        for _ in range(6):
            c = _CONNECTOR_RE.match(text, pos)
            if not c:
                break
            token = c.group(0).strip().lower()
            if token.isalpha():
                if token not in _CONNECTOR_WORDS:
                    return []
                connector_flag = _FLAG_WORDS.get(token, connector_flag)
            separators += 1
            connector_len += c.end() - pos
            pos = c.end()
            if connector_len > 40:
                return []
        if m.group("name").lower() in _UNIT_LIKE_NAMES and re.search(r"\d[ \t]?\Z", text[max(0, m.start() - 4) : m.start()]):
            # "mg" right after a number is that number's unit ("500 mg"), unless glued to its value ("Mg-2.0")
            if not re.match(r"[ \t]*[-:=]", text[m.end() : m.end() + 3]):
                return []
        unit_before = _UNIT_RE.match(text, pos)
        unit = None
        if unit_before:
            unit = unit_before.group("unit")
            pos = unit_before.end()
        ref = _REF_HEAD.match(text, pos)
        if ref and ref.group(0).strip():
            # "CALCIUM   8.7 - 10.4 mg/dL   9.1   9.3": a reference range (and unit) before the values
            ref_unit = ref.group("unit") or ref.group("unit2") or ref.group("unit3")
            if ref_unit and unit is None:
                unit = ref_unit
            pos = ref.end()
            first = _COLUMN_RE.match(text, pos)
            values = []
            while first:
                s0 = first.start("cmp") if first.group("cmp") else first.start("num")
                values.append(LabValue(s0 if values else m.start(), first.end(), analyte, _number(first.group("num")), unit,
                                       first.group("cmp"), _flag(_column_flag(first.group(0))),
                                       text[s0 if values else m.start() : first.end()]))
                pos = first.end()
                first = _COLUMN_RE.match(text, pos)
            return values
        gap = re.match(r"[ \t]*(?P<cmp><=|>=|≤|≥|<|>)?[ \t]*", text[pos:])
        comparator = gap.group("cmp") if gap else None
        pos += gap.end() if gap else 0
        num = re.match(_NUM, text[pos:])
        if not num or (pos == m.end()):
            return []  # no value, or a value glued to the name ("Vitamin D3")
        vstart, vend = pos, pos + num.end()
        after = text[vend : vend + 40]
        if re.match(r"[ \t]*(?:-|–)[ \t]*\d", after) or re.match(r"/\d", after) or re.match(r"[.:]\d", after):
            return []  # a range, a date or a time, not a value
        if _DOSE_RE.match(after) and not _UNIT_RE.match(after):
            return []
        value = _number(num.group(0))
        pos = vend
        flag = None
        u = _UNIT_RE.match(text, pos)
        if u and unit is None:
            unit, pos = u.group("unit"), u.end()
        f = _FLAG_RE.match(text, pos)
        if f:
            flag = (f.group("pflag") or f.group("flag") or {"↑": "h", "↓": "l"}.get(f.group("arrow") or "", "")).lower() or None
            pos = f.end() if f.group("star") is None else pos
        r = _RANGE_RE.match(text, pos)
        if r:
            pos = r.end()
            u = _UNIT_RE.match(text, pos)
            if u and unit is None:
                unit, pos = u.group("unit"), u.end()
        values = [
            LabValue(
                m.start(), pos, analyte, value, unit, comparator,
                _flag(flag) or connector_flag, text[m.start() : pos].rstrip(),
            )
        ]
        # table columns ("Creatinine   8.9   6.7"), trends and parenthesised earlier values
        while True:
            col = _COLUMN_RE.match(text, pos)
            if col:
                s, e = col.start("cmp") if col.group("cmp") else col.start("num"), col.end("num")
                values.append(LabValue(s, e, analyte, _number(col.group("num")), unit, col.group("cmp"),
                                       _flag(_column_flag(col.group(0)[e - col.start():])), text=text[s:e]))
                pos = col.end()
                continue
            a = _ARROW_RE.match(text, pos)
            p = _PAREN_RE.match(text, pos)
            if a and not re.match(r"[ \t]*(?:-|–)[ \t]*\d", text[a.end() : a.end() + 6]):
                s, e = a.start("num"), a.end("num")
                unit2 = _UNIT_RE.match(text, e)
                if unit2:
                    e = unit2.end()
                values.append(
                    LabValue(s, e, analyte, _number(a.group("num")), unit2.group("unit") if unit2 else unit, text=text[s:e])
                )
                pos = e
            elif p:
                word = p.group("word").lower()
                target = "calcium_corrected" if word in ("corrected", "corr", "adjusted") and analyte == "calcium" else analyte
                s, e = p.start("num"), p.end("num")
                values.append(LabValue(s, e, target, _number(p.group("num")), unit, text=text[s:e]))
                pos = p.end()
            else:
                break
        return values


def _flag(raw: str | None) -> str | None:
    if not raw:
        return None
    raw = raw.lower()
    if raw in ("h", "hh", "high", "critical"):
        return "high"
    if raw in ("l", "ll", "low"):
        return "low"
    return None


class UnitTable:
    """Conversion factors, plausible ranges and reference ranges from ``data/labs``."""

    def __init__(self) -> None:
        self.units: dict[str, list[tuple[str, float, float, float, bool]]] = {}
        for r in resources.unit_rules():
            self.units.setdefault(r["analyte"], []).append(
                (
                    _unit_key(r["unit"]),
                    float(r["factor"]),
                    float(r["plausible_low"]),
                    float(r["plausible_high"]),
                    r["infer"] == "1",
                )
            )
        self.ranges = {r["analyte"]: (float(r["low"]), float(r["high"])) for r in resources.range_rules()}

    def normalise(self, analyte: str, value: float, unit: str | None) -> Normalised:
        """Value in the ANNOTATION.md unit; infer a missing unit only when unambiguous."""
        unit_std = vocab.STANDARD_UNITS[analyte]
        options = self.units.get(analyte, [])
        if unit:
            key = _unit_key(unit)
            for u, factor, lo, hi, _ in options:
                if u == key:
                    std = round(value * factor, 4)
                    return Normalised(std, unit_std, False, lo <= value <= hi)
            return Normalised(None, None, False, True)  # a unit we cannot convert: keep as written
        fitting = [(u, f) for u, f, lo, hi, infer in options if infer and lo <= value <= hi]
        if len(fitting) == 1:
            return Normalised(round(value * fitting[0][1], 4), unit_std, True, True)
        if not fitting:
            plausible_any = any(lo <= value <= hi for _, _, lo, hi, _ in options)
            return Normalised(None, None, False, plausible_any or not options)
        return Normalised(None, None, False, True)

    def flag(self, analyte: str, value_std: float | None, written: str | None) -> str | None:
        if written:
            return written
        if value_std is None or analyte not in self.ranges:
            return None
        lo, hi = self.ranges[analyte]
        if value_std < lo:
            return "low"
        if value_std > hi:
            return "high"
        return "normal"

    def reference(self, analyte: str) -> tuple[float, float] | None:
        return self.ranges.get(analyte)


def _unit_key(unit: str) -> str:
    key = unit.lower().replace(" ", "").replace("µ", "u").replace("μ", "u").replace("micro", "u")
    key = key.replace("^2", "2").replace("²", "2")
    if key.startswith("ml/min/1.73"):
        return "ml/min/1.73m2"
    if key == "units/l":
        return "u/l"
    return key


def corrected_calcium(calcium_mg_dl: float, albumin_g_dl: float) -> float:
    """Payne's formula: Ca + 0.8 x (4.0 - albumin), mg/dL and g/dL."""
    return round(calcium_mg_dl + 0.8 * (4.0 - albumin_g_dl), 2)


def calcium_phosphate_product(calcium_mg_dl: float, phosphate_mg_dl: float) -> float:
    return round(calcium_mg_dl * phosphate_mg_dl, 1)


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))
