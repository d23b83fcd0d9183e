"""Lab values from note text, unit normalisation, flags and derived values.

Extraction is a scan of the text (compiled regular expressions built from ``data/labs``), not of
tokens: lab dumps glue names, values and units ("CALCIUM:2.81mmol/L") in ways no tokenizer splits.

For each analyte name found, the text after it is read as::

    NAME [connector words] [< >] VALUE [UNIT] [FLAG] [RANGE] [UNIT] [-> VALUE ...] [(baseline VALUE)]

- connector words are few and known ("of", "was", "elevated at", "has run", ":", "-", ", serum",
  "(MDRD)", a date or clock time); any other word between name and number ("calcium carbonate 1250")
  means it is not a lab value;
- a bare dose unit (mg, mcg, units, IU, tablets) or a dose frequency after the value means a dose; a
  duration, size or percentage after it ("6 months", "9 mm", "20%") means it is not a value;
- a value followed by "-number" is a reference range, unless the patient's course makes it their own
  range ("Ca 10.8-11.1 over the past year", "has ranged 6.8-7.9", "baseline Cr 1.6-1.8");
- after the value, narrative trends continue the series ("peaked at 13.2 on HD2 and improved to 9.8",
  "was 11.8 yesterday and 10.9 today", "up to 3.1 from baseline 1.2, now 2.4", "(was 6.6 in June)");
  a series also runs through a time label (", today 9.3", "; 5 min post-excision 62"), a comparison
  (", which is higher than the 11.8", ", compared with 1.30"), an earlier value in bare parentheses of the
  same precision ("Cr 2.04 (1.61)"), a race-specific eGFR pair, and one short aside (", 2 L NS given, now
  11.9", "(PTH 230), similar to 10.8") when a strong trend word or a timed value of the same order follows;
- "Ca/Phos 9.8/6.2" and "BUN and creatinine of 45 and 3.2" pair names and values by position; BMP
  shorthand and fishbones give BUN and creatinine by position; a table whose header row names the
  analytes gives one value per cell;
- text matching ``data/labs/vetoes.tsv`` (CA 19-9, calcium scores, ...) is skipped, and so are values
  of relatives and donors (also a relative as the subject of the sentence: "Mother with HPT, Ca 11.2"),
  fluid compositions, goals and thresholds ("if Ca > 12 call", "given eGFR <45").

Speed: the whole-text scans (names, slash groups, vetoes) run case-sensitively over the lower-cased
text; slash groups are tried only where a name starts, vetoes only near names.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

from pipeline import resources, vocab
from pipeline.model import LabValue
from pipeline.textutil import blanks, plain_blanks, trie_pattern


def _compile(pattern: str, flags: int = 0) -> re.Pattern:
    """Every pattern here reads a written space as any run of blanks or tabs ("on  admit", "up\tfrom")."""
    return re.compile(blanks(pattern), flags)

_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+,\d{1,2}(?![\d,])|\d+(?:\.\d+)?|\.\d+)"  # 1,250 / 3,12 (decimal comma) / 11.2
_NUM_RE = _compile(_NUM)
_UNITS = (
    r"mg/dl|mg/l|mmol/l|umol/l|µmol/l|μmol/l|micromol/l|pg/ml|pmol/l|ng/ml|ng/l|nmol/l|g/dl|g/l|"
    r"iu/l|u/l|units/l|ml/min/1\.73\s?m2|ml/min/1\.73\s?m\^2|ml/min/1\.73m²|ml/min/1\.73|ml/min|meq/l|mg2/dl2|mg\^2/dl\^2"
    r"|(?=[a-z]+[ \t]+per[ \t])(?:milligrams?|mg|picograms?|pg|nanograms?|ng|grams?|millimoles?|mmol)[ \t]+per[ \t]+(?:deciliter|decilitre|dl|milliliter|millilitre|ml|liter|litre|l)"
)
_UNIT_RE = _compile(rf"[ \t]*\(?(?P<unit>{_UNITS})(?![a-z])\)?", re.IGNORECASE)
_DOSE_RE = _compile(
    r"[ \t]*(?:mg|mcg|µg|ug|g|grams?|units?|iu|tabs?|tablets?|caps?|capsules?|meq|mmol|ml)\b(?!/)(?![ \t]*[-:=])(?![ \t]+\d)"
    r"|[ \t]*(?:mg|mcg|µg|ug|g|units?|iu)/(?:\d|(?:day|d|dose|kg|wk|week|h|hr)\b)"
    r"|[ \t]*(?:and|&|,)[ \t]*\d[\d,.]*[ \t]*(?:mg|mcg|µg|ug|g|units?|iu|meq|mmol)\b(?!/)"  # "500 and 250 mg"
    r"|[ \t]*(?:daily|bid|tid|qid|qd|qhs|weekly|monthly|po|iv|with meals|q\d+h)\b",
    re.IGNORECASE,
)
_FLAG_RE = _compile(
    r"[ \t]*(?:[(\[](?P<pflag>hh|ll|h|l|high|low|critical|abn|a)[)\]]|(?P<flag>hh|ll|h|l|high|low)\b|(?P<arrow>[↑↓])|(?P<star>\*))",
    re.IGNORECASE,
)
_RANGE_RE = _compile(rf"[ \t]*[\[(]?[ \t]*(?:ref(?:erence)?[ \t:]*|nl[ \t:]*|normal[ \t:]*)?{_NUM}[ \t]*(?:-|–|to)[ \t]*{_NUM}[ \t]*[\])]?", re.IGNORECASE)
_ARROW_RE = _compile(rf"[ \t]*(?:->|-->|→|=>|<--|<-|←|>|, then|then|and now|now)[ \t]*(?P<num>{_NUM})", re.IGNORECASE)
_PAREN_RE = _compile(
    rf"[ \t]*\((?P<word>baseline|prior|previous|prev|was|from|admission|peak|nadir|corrected|corr|adjusted"
    rf"|pre-?op|post-?op|osh|outside|previously|last[ \t]+(?:week|month|year|visit|time|check|draw)|last|up from|down from"
    rf"|repeat|repeated|recheck|yesterday|(?:\d+|two|three|a few)[ \t]+(?:days|weeks|months)[ \t]+ago)"
    rf"[ \t:]*(?:of[ \t]*|was[ \t]*)?~?(?P<num>{_NUM})(?:[ \t]*(?:-|–|to)[ \t]*(?P<num2>{_NUM}))?[^)\n]{{0,20}}\)",
    re.IGNORECASE,
)
# "(0.8 at admission)", "(8.8 before last Xgeva)": an earlier value with its time after it
_PAREN_WHEN_RE = _compile(
    rf"[ \t]*\((?P<num>{_NUM})[ \t]+(?:at|on|before|after|in|prior|pre|post|last|yesterday|earlier|previously)\b(?:[^)\n\d]|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?){{0,30}}\)",
    re.IGNORECASE
)
_CONNECTOR_WORDS = frozenset(
    "of was is are were level levels at elevated high low up down to now today remains remained "
    "peaked peak increased decreased rose dropped came back value result measured checked the this "
    "morning am pm serum blood plasma total intact on admission initial initially repeat latest last "
    "recent most recently improved worsened trended trending from a new persistently still "
    "mildly markedly severely slightly significantly very normal lvl estimated "
    "has have had been run ran ranged ranging between stable fluctuated fluctuating hovered hovering varied "
    "nadir nadired suppressed appropriately inappropriately fell climbed went trend baseline around about approximately "
    "approx improving worsening rising falling downtrending uptrending inorganic calculated fasting venous arterial "
    "random whole monitoring bumped jumped spiked dipped drifted crept risen fallen declined dropping rising falling".split()
)
# a date or a clock time between the name and the value: "Calcium (03/12/2024): 10.4", "Ca on 3/12 was 10.9",
# "Ca at 0600: 9.8" -- only when a value follows it
_WHEN_CONNECTOR = _compile(
    r"[ \t]*(?:\(\d{1,2}/\d{1,2}(?:/\d{2,4})?\)|(?:(?<=\bon[ \t])|(?<=\bon[ \t]{2})|(?<=\bon[ \t]{3}))\d{1,2}/\d{1,2}(?:/\d{2,4})?(?![\d./])"
    r"|\d{1,2}/\d{1,2}(?:/\d{2,4})?(?=[ \t]*[:=][ \t]*\d)"
    r"|(?:(?<=\bat[ \t])|(?<=\bat[ \t]{2})|(?<=\bat[ \t]{3}))(?:(?:[01]\d|2[0-3]):?[0-5]\d(?:[ \t]?h(?:rs)?)?|\d{1,2}:\d{2}(?:[ \t]?[ap]m)?)(?![\d.,]))"
    r"(?=[ \t]*[:=,-]?[ \t]*(?:was|is|of|[<>])?[ \t]*\d)",
    re.IGNORECASE,
)
_COMMA_BEFORE_VALUE = _compile(r"[ \t]*,(?=[ \t]*\d)")
_RANGE_VERBS = frozenset("run ran ranged ranging between stable fluctuated fluctuating hovered hovering varied been baseline".split())
_CONNECTOR_RE = _compile(
    r"[ \t]*(?:[:=#]|-(?=[ \t]*\d)|[a-z]+|\r?\n|\((?:h|l)\)"
    r"|,(?=[ \t]*(?:serum|plasma|blood|whole blood|total|inorganic|intact|estimated|calculated|fasting|venous|arterial|random)\b)"
    r"|\((?:(?:hh|ll|h|l|a|abn|critical|high|low)\)|[a-z][a-z .,/-]{1,24}\d?\)))",  # "(MDRD)", "(PO4)", "(intact)"
    re.IGNORECASE,
)
_UNIT_LIKE_NAMES = frozenset({"mg"})  # analyte names that are also units of a preceding number
# names that only count with a value the analyte can have ("P 5.1" is phosphate, "P 88" a pulse)
_WEAK_NAMES = frozenset({"p", "corrected", "ionized", "ionised", "mg"})
_ION_NAMES = frozenset({"ca++", "ca2+"})  # ICU shorthand: ionized calcium when the value is ionized-sized
_FLAG_WORDS = {
    "elevated": "high", "high": "high", "increased": "high", "low": "low", "decreased": "low", "normal": "normal",
    "suppressed": "low",
}
_REF_HEAD = _compile(  # a reference range, or a one-sided one with its unit, or a unit, then the value columns
    rf"[ \t]*(?:{_NUM}[ \t]*[-–][ \t]*{_NUM}[ \t]*(?P<unit>{_UNITS})?"
    rf"|(?:<=|>=|<|>)[ \t]*{_NUM}[ \t]*(?P<unit2>{_UNITS})"
    rf"|(?P<unit3>{_UNITS}))"
    rf"(?=[ \t]{{2,}}(?:<=|>=|<|>)?{_NUM}(?![\d/:-]))",
    re.IGNORECASE,
)
_GAP_RE = _compile(r"[ \t]*(?P<cmp><=|>=|≤|≥|<|>)?[ \t]*~?[ \t]*")  # "~1.0" is a plain value
_NOT_VALUE_AFTER = _compile(  # a range, a date, a time, a multiple, a duration, a percentage or a size
    r"[ \t]*(?:-|–)[ \t]*\d|/\d|[.:]\d|[ \t]?x[ \t]*(?:uln|normal|upper|the)\b|[ \t]*%"
    r"|[ \t]*(?:days?|wks?|weeks?|months?|mos?|years?|yrs?|hours?|hrs?|min(?:utes)?|mm|cm|mmhg|bpm|kg|lbs?)\b",
    re.IGNORECASE,
)
_RANGE_AFTER = _compile(rf"[ \t]*(?:-|–|to)[ \t]*(?P<num>{_NUM})(?![\d/])", re.IGNORECASE)
_BETWEEN_AFTER = _compile(rf"[ \t]+and[ \t]+(?P<num>{_NUM})(?![\d/])", re.IGNORECASE)
_TO_AFTER = _compile(rf"[ \t]+to[ \t]+(?P<num>{_NUM})(?![\d/])", re.IGNORECASE)
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# a time phrase after a range that makes it the patient's own range over time, not a reference range
_OWN_RANGE_TIME = _compile(
    r"[ \t]*,?[ \t]*(?:\(\d{4}\)|since\b|\(?(?:over|during|throughout|for|in|on|across)[ \t]+(?:the[ \t]+)?"
    r"(?:past|last|prior|previous|recent|repeated|serial|several|multiple|his|her|years|months|\d{4})\b)",
    re.IGNORECASE,
)
# the patient's course named earlier in the sentence makes a bare range after the name their own range
_COURSE_BEFORE = _compile(
    r"\b(?:since[ \t]+(?:\d{4}|last|her|his|then)|over[ \t]+the[ \t]+(?:past|last)|for[ \t]+the[ \t]+(?:past|last)"
    r"|(?:several|serial|multiple|repeated|many)[ \t]+(?:bmps?|cmps?|labs?|checks?|measurements?|values?|draws?|panels?|tests?|occasions)"
    r"|ha(?:s|ve)[ \t]+(?:run|ranged))\b",
    re.IGNORECASE,
)
_BASELINE_BEFORE = _compile(r"\bbaseline[ \t:]*(?:of[ \t]*)?\Z", re.IGNORECASE)
# time phrases between the values of a narrative trend ("11.8 yesterday and 10.9 today")
_WHEN = (
    r"(?:yesterday|last) (?:morning|afternoon|evening)|the (?:next|following) (?:morning|day|evening)|next (?:morning|day)"
    r"|at (?:midnight|noon)|on (?:two|three|several|multiple|separate|repeated|\d+) occasions"
    r"|on admission|at admission|on admit|on arrival|at arrival|on transfer|at diagnosis|at presentation|on presentation"
    r"|at discharge|on discharge|yesterday|today|tonight|this (?:morning|am|afternoon|evening)|overnight"
    r"|last (?:night|week|month|year|visit)|(?:at |on )?(?:the )?(?:last|previous|prior) (?:hd|dialysis|visit|check|draw|clinic visit)|(?:two|three|four|a few|\d+) (?:days|weeks|months|years) ago"
    r"|pre-?op(?:eratively)?|post-?op(?:eratively)?|(?:pre|post)-?(?:hd|dialysis)|(?:in|on|at|by) (?:hd|pod|day|hospital day|d) ?#?\d+"
    r"|(?:in |on )?\[\*\*[^*\n]{1,40}\*\*\]"
    r"|on \d{1,2}/\d{1,2}(?:/\d{2,4})?"
    rf"|in {_MONTHS}(?: \d{{4}})?|in \d{{4}}|at \d{{3,4}}h?\b|at \d{{1,2}}:\d{{2}}(?: ?[ap]m)?"
    rf"|\({_MONTHS}(?: \d{{2,4}})?\)|\(\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?\)|\((?:\d{{1,2}}/)?\d{{4}}\)"
)
# time points of a labelled series (intra-operative PTH): "pre-incision 188; 5 min post-excision 62"
_TIMEPOINT = (
    r"(?:(?:\d{1,3}|five|ten|fifteen|twenty)[ \t]*-?[ \t]*min(?:ute)?s?[ \t]+)?"
    r"(?:pre|post|intra)[ \t-]?(?:incision|excision|resection|removal|induction|op(?:erative(?:ly)?)?|hd|dialysis)\b"
    r"|(?:at[ \t]+)?(?:\d{1,3}|five|ten|fifteen|twenty)[ \t]*-?[ \t]*min(?:ute)?s?\b"
    r"(?:[ \t]+(?:post|after)(?:[ \t-]?(?:excision|resection|removal)\b)?)?"
)
_TIME_SKIP = _compile(
    rf"[ \t]*(?P<sep>[,;](?:[ \t]*and\b)?|and\b)?[ \t]*(?:(?P<point>{_TIMEPOINT})|{_WHEN}"
    r"|(?:over|during|in|for) (?:the )?(?:past|last) (?:\d+ )?(?:years?|months?|weeks?|days?|yrs?|mos?)"
    r"|improving|stable|rising|worsening|in (?:the )?(?:ed|er|clinic)|after [^,;.\n]{1,40}?(?=,)"
    r"|(?:on|by|per) (?:the )?(?:i-?stat|poc|point[ -]of[ -]care|abg|vbg|blood gas|gas|bmp|cmp|chem(?:istry)?|repeat|venous|arterial)(?: (?:sample|draw|panel))?)(?![a-z0-9])",
    re.IGNORECASE,
)
# "and improved to 9.8", ", now 2.4", ", repeat 11.4", "from baseline 1.7"
_TREND_NEXT = _compile(
    r"(?:[.;][ \t]+(?=(?:repeat|recheck)(?:ed)?\b)|[ \t]*[,;]?[ \t]*)(?:(?:and|but)[ \t]+)?"
    r"(?P<after>(?:after|following|with)[ \t]+[a-z][a-z \t-]{0,30}?[ \t]+(?=it[ \t]))?"  # "after repletion it is 3.2"
    r"(?:(?P<cop>which|that|it)[ \t]+(?:is|was|has[ \t]+been|had[ \t]+been|has|had|came[ \t]+back(?:[ \t]+at)?)[ \t]+)?"
    r"(?:(?:subsequently|then|later|further|since|before|eventually)[ \t]+)?"
    r"(?:(?P<verb>improved|improving|decreased|increased|fell|dropped|declined|rose|climbed|trended|trending|came down|"
    r"come down|gone down|gone up|fallen|risen|falling|rising|dropping|declining|decreasing|increasing|climbing|coming down|"
    r"went|down|up|peaked|nadired|normalized|recovered|rebounded|back"
    r"|(?P<cmpv>higher|lower|greater|less|similar|compared|unchanged|slightly higher|slightly lower))[ \t]+(?P<prep>to|at|from|than|with|vs\.?)"
    r"(?:[ \t]+(?:the|her|his|their|a|prior|previous|baseline|usual|last|value|level)){0,3}(?:[ \t]+of)?"
    r"|(?P<bare>(?:is|was)[ \t]+now|now|was|is|repeat|repeated|recheck|rechecked|then|baseline|prior|previously"
    r"|from(?:[ \t]+(?:a[ \t]+)?(?:baseline|prior|previous|peak|admission))?)(?:[ \t]+of)?)?"
    rf"[ \t]*(?P<num>{_NUM})(?![\d/]|[.,]\d|[-(]?[a-z(])",
    re.IGNORECASE,
)
# ", 1.01 at 0400", "and 10.9 today", ", 11.4 (Mar)": another value of a series, confirmed by its time
_SERIES_NEXT = _compile(
    rf"[ \t]*(?:,|;|,?[ \t]*and)[ \t]*(?P<num>{_NUM})(?![\d/.:])"
    rf"(?=(?:[ \t]*(?:{_UNITS}))?(?:[ \t]*\((?:hh|ll|h|l)\)|[ \t]+(?:hh|ll|h|l)\b)?[ \t]+(?:{_WHEN})(?![a-z0-9]))",
    re.IGNORECASE,
)
# "Calcium 9.9, 10.2, 10.5": bare values in a comma list (two or more, of the same size as the first)
_COMMA_LIST = _compile(
    rf"(?:[ \t]*,[ \t]+{_NUM}(?![\d/:(]|[.,]\d|[ \t]*(?:%|x\b|(?:days?|weeks?|wks?|months?|mos?|years?|yrs?|hours?|hrs?|h|min"
    r"|mg|mcg|g|units?|iu|tabs?|cm|mm)\b)))" + "{2,}"
    # "10.9, 11.2 and 11.0"
    + rf"|[ \t]*,[ \t]+{_NUM}(?![\d/:(]|[.,]\d)(?:[ \t]*,[ \t]+{_NUM}(?![\d/:(]|[.,]\d))*,?[ \t]+and[ \t]+{_NUM}(?![\d/:(]|[.,]\d|[ \t]*(?:%|x\b|(?:days?|weeks?|wks?|months?|mos?|years?|yrs?|hours?|hrs?|h|min"
    r"|mg|mcg|g|units?|iu|tabs?|cm|mm)\b))",
    re.IGNORECASE,
)
# "with better binder adherence (was 6.6 in June)": a little prose, then a parenthesised earlier value
_PROSE_PAREN = _compile(r"[ \t]+[a-z][a-z \t'-]{0,38}?(?=[ \t]*\((?:was|prior|previous|baseline|up from|down from|peak|nadir)\b)", re.IGNORECASE)
_PIPE_START = _compile(r"[ \t]*\|")
_TIMEPOINT_WORDS = ("pre", "post", "intra", "five", "ten", "fifteen", "twenty", "non", "afr", "african", "black", "aa", "if")
_RACE_LABEL = r"(?:if[ \t]+)?(?:non[ \t-]?)?(?:african[ \t-]*american|afr(?:ican)?\.?[ \t-]*am(?:er(?:ican)?)?\.?|black|aa)\b"
# a time point or an eGFR race label between the name and the value ("eGFR Non-Afr Amer 28")
_TIMEPOINT_CONNECTOR = _compile(rf"[ \t]*(?:{_TIMEPOINT}|{_RACE_LABEL})[ \t]*[:=]?(?=[ \t]*(?:<=|>=|<|>)?[ \t]*\d)", re.IGNORECASE)
# ", today 9.3", "; pre-excision 241": the value right after a time label (see _continue)
# a volume, a count or a dose after a number: "today 1 L fluid given", "2 amps"
_QUANTITY_AFTER = _compile(
    r"[ \t]*(?:(?:l|ml|liters?)[ \t]+(?:ns|lr|ivf|fluids?|bolus|of|nacl|saline|d5\w*|positive|negative|net|uf|removed|given|out|in)\b"
    r"|(?:amps?|doses?|bags?|units?|tabs?|liters?|times|x)\b)",
    re.IGNORECASE,
)
_LABEL_VALUE = _compile(rf"[ \t]*[:=]?[ \t]*(?:(?:was|is|of)[ \t]+)?(?P<num>{_NUM})(?![\d/]|[.,]\d)", re.IGNORECASE)
# "eGFR 31 (non-African American) / 36 (African American)": the second value of a race-specific pair
_RACE = (r"\((?:if[ \t]+|for[ \t]+)?(?:non[ \t-]?)?(?:african[ \t-]*american|afr(?:ican)?\.?[ \t-]*am(?:er(?:ican)?)?\.?|black|aa)\b"
         r"[^)\n]{0,20}\)")
# "Cr 2.04 (1.61)": the earlier value in parentheses (same precision, same order of size)
_PAREN_MORE = _compile(
    rf"[ \t]*(?:{_RACE}[ \t]*(?:/|or|,|;)?[ \t]*(?:egfr[ \t]*)?(?P<race>{_NUM})(?:[ \t]*(?:{_UNITS}))?[ \t]*{_RACE}"
    r"|\((?P<bare>\d+(?:\.\d+)?)\))",
    re.IGNORECASE,
)
# an aside between two values of a series: ", 2 L NS given," or "(PTH 230)" before ", now 11.9" / ", similar to 10.8"
_ASIDE = _compile(
    r"[ \t]*(?:,[ \t]*(?P<clause>[^,;.\n()]{1,45}?)|\((?P<paren>[^()\n]{1,40})\)[ \t]*)"
    r"(?=,[ \t]*(?:and[ \t]+)?(?:\d|\.\d|now\b|then\b|repeat|recheck|subsequently|later|similar|compared|higher|lower|"
    r"slightly|unchanged|improved|decreased|increased|fell|dropped|declined|rose|climbed|down|up|back|peaked))",
    re.IGNORECASE,
)
_STRONG_BARE = frozenset("now then repeat repeated recheck rechecked".split())
_DASH_DIGIT = _compile(r"[ \t]*(?:-|–)[ \t]*\d")
_DECIMAL_COMMA = _compile(r"\d+,\d{1,2}")
_CELL_FLAG = _compile(r"\((hh|ll|h|l)\)|\b(hh|ll|h|l)\b|([↑↓])", re.IGNORECASE)
_LIST_NUMBER = _compile(r"\d{1,2}[.)](?:[ \t]|\Z)")
_SENTENCE_START = _compile(r"[\s\S]*(?:[;\n]|\.(?!\d))")
_KIN = r"\b(?:mother|father|sister|brother|mom|dad|sibling|aunt|uncle|grandmother|grandfather|cousin|daughter|son|twin)"
_FAMILY = _compile(rf"{_KIN}'s\b", re.IGNORECASE)  # "her father's PTH was 70": the rest of the sentence is the relative's
_FAMILY_CLAUSE = _compile(rf"{_KIN}\b[^,;\n]{{0,25}}?\b(?:had|has|was|with)\b[^,]*\Z", re.IGNORECASE)  # "Mother (XLH) had phos 1.9"
_FAMILY_SUBJECT = _compile(
    rf"[ \t]*(?:[-*•][ \t]*)?(?:(?:her|his|their|pt'?s|patient'?s)[ \t]+)?(?:(?:maternal|paternal|older|younger|identical)[ \t]+)?"
    rf"{_KIN}s?\b(?:[ \t]*[,:(]|[^,;\n]{{0,40}}?\b(?:with(?![ \t]+(?:her|him|them|pt|patient|the[ \t]+patient)\b)|had|has|was|diagnosed|underwent|s/p|also)\b)",
    re.IGNORECASE,
)
_NOT_PATIENT_JUST_BEFORE = _compile(r"\b(?:donor|post-?filter|circuit|dialysate|bath)\b[^,;.\n]{0,12}\Z", re.IGNORECASE)
_THRESHOLD_CUE = _compile(r"\b(?:given|because|if|goal|target|keep|hold|until|once|unless|when|aim|maintain|titrate|replete|call|notify|prn|criteria|eligible|threshold)\b", re.IGNORECASE)
_SCREEN_CUES = _compile(  # any word the screens below look for (also inside words): a cheap first test
    "(?:" + trie_pattern(
        "mother father sister brother mom dad sibling aunt uncle grand cousin daughter son twin donor post-filter "
        "postfilter circuit dialysate bath goal target aim keep if hold until once unless when titrate replete call "
        "notify prn criteria eligible threshold given because".split()
    ) + ")"
)
_GOAL_JUST_BEFORE = _compile(r"\b(?:goal|target|aim|keep)\b[^,;.\n]{0,12}\Z", re.IGNORECASE)
_PIPE_CELL = _compile(
    rf"[ \t]*\|[ \t]*(?:(?P<cmp><=|>=|<|>)?(?P<num>{_NUM})(?![\d/:-]|[.,]\d)(?P<flag>[ \t]*(?:\((?:hh|ll|h|l)\)|(?:hh|ll|h|l)\b|[↑↓*]))?[ \t]*)?(?=\|)",
    re.IGNORECASE,
)
# basic metabolic panel shorthand: "138/4.9/104/20/62/4.4<118" (Na/K/Cl/CO2/BUN/Cr<Glu) and the fishbone
# "139 | 103 | 24 / 4.1 | 26 | 1.9" (Na | Cl | BUN over K | CO2 | Cr), on one line or drawn over three
_BMP_SLASH = _compile(
    r"(?P<na>1[1-7]\d)(?<![\d./]\d{3})[ \t]*/[ \t]*(?P<k>\d(?:\.\d{1,2})?)[ \t]*/[ \t]*(?P<cl>[6-9]\d|1[0-3]\d)[ \t]*/[ \t]*"
    r"(?P<co2>\d{1,2})[ \t]*/[ \t]*(?P<bun>\d{1,3})[ \t]*/[ \t]*(?P<cr>\d{1,2}(?:\.\d{1,2})?)(?![\d/.]|\.\d)(?:[ \t]*[/<][ \t]*\d{2,4})?"
)
_BMP_GATE = _compile(r"1[1-7]\d[ \t]*[/|]")
_BMP_BONE = _compile(
    r"(?P<na>1[1-7]\d)(?<![\d.]\d{3})[ \t]*\|[ \t]*(?P<cl>[6-9]\d|1[0-3]\d)[ \t]*\|[ \t]*(?P<bun>\d{1,3})[ \t]*/?[ \t]*"
    r"(?:\n[ \t]*-{3,}[ \t]*(?:<[ \t]*\d{2,4})?[ \t]*\n[ \t]*|[ \t]*)"
    r"(?P<k>\d(?:\.\d{1,2})?)[ \t]*\|[ \t]*(?P<co2>\d{1,2})[ \t]*\|[ \t]*(?P<cr>\d{1,2}(?:\.\d{1,2})?)(?![\d.])"
)


_DIGIT = _compile(r"\d")
_CELL_SPLIT = _compile(r"[^\t|]+?(?=[ \t]{2,}|\t|[ \t]*\||[ \t]*$)", re.MULTILINE)
_DATA_CELL = _compile(rf"(?P<cmp><=|>=|<|>)?(?P<num>{_NUM})(?:[ \t]*(?P<flag>\((?:hh|ll|h|l)\)|(?:hh|ll|h|l)\b|[↑↓*]))?\Z", re.IGNORECASE)
_ROW_HEAD_WORDS = frozenset("date time day labs lab collected drawn result results hd pod visit".split())


def _cells(line: str, offset: int) -> list[tuple[int, int, str]]:
    """Cells of a table row separated by two or more blanks, a tab or '|': (start, end, text) in the note."""
    out = []
    for c in _CELL_SPLIT.finditer(line):
        cell = c.group(0).strip()
        if cell:
            start = offset + c.start() + len(c.group(0)) - len(c.group(0).lstrip())
            out.append((start, start + len(cell), cell))
    return out


def _column_flag(cell: str) -> str | None:
    found = _CELL_FLAG.search(cell)
    if not found:
        return None
    return (found.group(1) or found.group(2) or {"↑": "h", "↓": "l"}[found.group(3)]).lower()


_COLUMN_RE = _compile(
    rf"[ \t]{{2,}}(?P<cmp><=|>=|<|>)?(?P<num>{_NUM})(?![\d/:-]|[.,]\d)"
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
    if "," in text and _DECIMAL_COMMA.fullmatch(text):
        return float(text.replace(",", "."))
    return float(text.replace(",", ""))


def _sentence_before(text: str, start: int, size: int = 80) -> str:
    """The text of the sentence (or clause after ';') before ``start``, at most ``size`` characters."""
    head = text[max(0, start - size) : start]
    cut = _SENTENCE_START.match(head)
    return head[cut.end() :] if cut else head


@dataclass(frozen=True)
class Normalised:
    value_std: float | None
    unit_std: str | None
    unit_inferred: bool
    plausible: bool


_CLOCK_TIME = _compile(r"0\d{3}(?![\d.])")  # "0600"


_ANY_VALUE = ((-math.inf, math.inf),)
_BLANKS = re.compile(r"[ \t]*")


class LabExtractor:
    """Finds lab values in a text; see the module docstring."""

    def __init__(self) -> None:
        rows = resources.analyte_rules()
        self.analyte_of = {r["synonym"]: r["analyte"] for r in rows}
        self.plausible: dict[str, list[tuple[float, float]]] = {}
        for r in resources.unit_rules():
            self.plausible.setdefault(r["analyte"], []).append((float(r["plausible_low"]), float(r["plausible_high"])))
        alternation = trie_pattern(self.analyte_of)
        name = rf"(?<![A-Za-z0-9])(?P<name>{alternation})(?![A-Za-z])"
        pair_names = trie_pattern(list(self.analyte_of) + ["p"])
        pair = (
            rf"(?<![A-Za-z0-9])(?P<names>(?:{pair_names})(?:[ \t]*/[ \t]*(?:{pair_names}))+)[ \t]*[:=]?[ \t]*"
            rf"(?P<values>{_NUM}(?:[ \t]*/[ \t]*{_NUM})+)"
        )
        # The whole-text scans run case-sensitively over the lower-cased text (synonyms are lower case),
        # which is several times cheaper than IGNORECASE; the IGNORECASE forms serve texts whose
        # lower-casing changes their length (offsets would no longer line up).
        self.name_re = _compile(name, re.IGNORECASE)
        self.pair_re = _compile(pair, re.IGNORECASE)
        self.name_lc = _compile(name.replace("A-Za-z", "a-z"))
        self.pair_lc = _compile(pair.replace("A-Za-z", "a-z"))
        self.pair_split = _compile(r"[ \t]*/[ \t]*")
        # dictation: "BUN and creatinine of 45 and 3.2", "calcium and PTH were 11.2 and 88"
        both = (
            rf"(?<![A-Za-z0-9])(?P<names>(?:{alternation})[ \t]+(?:and|&)[ \t]+(?:{alternation}))(?![A-Za-z])"
            rf"[ \t]*(?:(?:of|were|was|are|is|levels?|values?|at|respectively)[ \t]+){{0,2}}[:=]?[ \t]*"
            rf"(?P<values>{_NUM}(?:[ \t]+(?:and|&)[ \t]+|[ \t]*/[ \t]*){_NUM})(?![\d/]|[.,]\d)"
        )
        self.both_re = _compile(both, re.IGNORECASE)
        self.both_lc = _compile(both.replace("A-Za-z", "a-z"))
        self.both_split = _compile(r"[ \t]+(?:and|&)[ \t]+|[ \t]*/[ \t]*", re.IGNORECASE)
        patterns = [r["pattern"] for r in resources.lab_veto_rules()]
        self.vetoes = [_compile(p, re.IGNORECASE) for p in patterns]
        # One alternation instead of one scan per pattern; lower-cased (to scan the lower-cased text
        # case-sensitively) only when no pattern has an upper-case escape (\\D, \\S, \\W, \\B, \\A, \\Z).
        combined = "|".join(f"(?:{p})" for p in patterns)
        self.veto_lc = None if re.search(r"\\[A-Z]", combined) else _compile(combined.lower())
        self.veto_any = _compile(combined, re.IGNORECASE)

    def _analyte(self, name: str) -> str | None:
        key = " ".join(name.lower().split())
        if key == "p":
            return "phosphate"
        return self.analyte_of.get(key)

    def _plausible(self, analyte: str, value: float) -> bool:
        for lo, hi in self.plausible.get(analyte, _ANY_VALUE):
            if lo <= value <= hi:
                return True
        return False

    @staticmethod
    def _pairs(scan: str, pair_re: re.Pattern, names: list[re.Match]):
        """Slash groups ("Ca/Phos 9.8/6.2"): tried only where an analyte name starts, not over the whole text."""
        end = -1
        for m in names:
            if m.start() < end:
                continue
            found = pair_re.match(scan, m.start())
            if found:
                end = found.end()
                yield found

    def extract(self, text: str) -> list[LabValue]:
        # Windows line endings read as the line breaks they are, no-break spaces as blanks (same length:
        # offsets hold); each value's text is the note's own
        scan = plain_blanks(text)
        if scan is text:
            return self._extract(text)
        out = []
        for v in self._extract(scan):
            a, b = v.start, v.start + len(v.text)
            out.append(replace(v, text=text[a:b]) if text[a:b] != v.text and scan[a:b] == v.text else v)
        return out

    def _extract(self, text: str) -> list[LabValue]:
        low = text.lower()
        if len(low) == len(text):
            scan, name_re, pair_re, both_re = low, self.name_lc, self.pair_lc, self.both_lc
        else:
            scan, name_re, pair_re, both_re = text, self.name_re, self.pair_re, self.both_re
        names = list(name_re.finditer(scan))
        out: list[LabValue] = []
        taken: list[tuple[int, int]] = []

        def free(a: int, b: int) -> bool:
            return not any(s < b and a < e for s, e in taken)

        if ("/" in text or "|" in text) and _BMP_GATE.search(text):
            # BMP shorthand and fishbones need no analyte name: BUN and creatinine by position
            for bmp in (_BMP_SLASH, _BMP_BONE):
                for m in bmp.finditer(text):
                    k = float(m.group("k"))
                    if not (1.5 <= k <= 9.9) or not free(m.start(), m.end()):
                        continue
                    out.append(LabValue(m.start("bun"), m.end("bun"), "bun", _number(m.group("bun")), None, text=m.group("bun")))
                    out.append(LabValue(m.start("cr"), m.end("cr"), "creatinine", _number(m.group("cr")), None, text=m.group("cr")))
                    taken.append((m.start(), m.end()))
        if not names:
            return out
        if len(names) >= 2:
            for v, span in self._header_tables(text, names):
                if free(*span):
                    out.append(v)
                    taken.append(span)
        veto, vtext = (self.veto_lc, low) if scan is low and self.veto_lc is not None else (self.veto_any, text)
        for lo, hi in _windows(names, len(text)):  # vetoes only near analyte names
            taken.extend((m.start(), m.end()) for m in veto.finditer(vtext, lo, hi))

        groups = list(self._pairs(scan, pair_re, names)) if "/" in text else []
        if " and " in scan or "&" in text:
            groups += [(g, self.both_split) for g in self._pairs(scan, both_re, names)]
        for m in groups:
            m, split = m if isinstance(m, tuple) else (m, self.pair_split)
            pair_names = split.split(m.group("names"))
            values = split.split(m.group("values"))
            if len(pair_names) != len(values) or not free(m.start(), m.end()) or _DOSE_RE.match(text, m.end()):
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
            holes: list[tuple[int, int]] = []
            found = self._read_values(text, m, analyte, holes, scan if scan is low else None)
            if found:
                found = self._screen(text, m, found)
            if found:
                out.extend(found)
                start = m.start()
                for a, b in holes:  # an aside naming another analyte stays free for its own reading
                    taken.append((start, a))
                    start = b
                taken.append((start, found[-1].end))
        out.sort(key=lambda v: v.start)
        return out

    def _header_tables(self, text: str, names: list[re.Match]):
        """A table whose header row names the analytes and whose rows are dates or times:
        "Date     Ca     Phos   PTH" then "3/01     10.9   4.1    88". Yields (value, span of the cell)."""
        by_line: dict[int, list[re.Match]] = {}
        for m in names:
            by_line.setdefault(text.rfind("\n", 0, m.start()) + 1, []).append(m)
        for start, found in by_line.items():
            if len(found) < 2:
                continue
            end = text.find("\n", start)
            end = len(text) if end == -1 else end
            gaps = zip([start] + [m.end() for m in found], [m.start() for m in found] + [end])
            if any(_DIGIT.search(text, a, b) for a, b in gaps):
                continue  # a header row holds names, no values
            cells = _cells(text[start:end], start)
            heads = []
            for cs, ce, cell in cells:
                analyte = self._analyte(cell)
                if analyte is not None and not cell.lower() == "p":
                    heads.append((cs - start, ce - start, analyte))
                elif cell.lower().rstrip(":") not in _ROW_HEAD_WORDS or cs != cells[0][0]:
                    heads = []
                    break
            if len(heads) < 2:
                continue
            pos = end + 1
            while pos < len(text):
                row_end = text.find("\n", pos)
                row_end = len(text) if row_end == -1 else row_end
                row = _cells(text[pos:row_end], pos)
                got = []
                for cs, ce, cell in row:
                    d = _DATA_CELL.match(cell)
                    if not d:
                        continue
                    a, b = cs - pos, ce - pos  # columns within the row, as the header's
                    col = min(heads, key=lambda h: abs(h[0] - a) if h[0] <= b and a <= h[1] + 2 else 10**6)
                    if not (col[0] <= b and a <= col[1] + 2):
                        continue
                    s0 = cs + (d.start("cmp") if d.group("cmp") else d.start("num"))
                    e0 = cs + (d.end("flag") if d.group("flag") else d.end("num"))
                    got.append((LabValue(s0, e0, col[2], _number(d.group("num")), None, d.group("cmp"),
                                         _flag(_column_flag(d.group("flag") or "")), text[s0:e0]), (s0, e0)))
                if not got:
                    break
                yield from got
                pos = row_end + 1

    def _screen(self, text: str, m: re.Match, found: list[LabValue]) -> list[LabValue]:
        """Drop what is not the patient's value: weak names without a plausible value, relatives' and donors'
        values, fluid compositions, thresholds and goals; relabel ICU "Ca++" values that are ionized."""
        name = " ".join(m.group("name").lower().split())
        analyte = found[0].analyte
        if name in _WEAK_NAMES and not self._plausible(analyte, found[0].value):
            return []
        if name == "p" and m.start() and text[m.start() - 1] == "/":
            return []  # "A/P: 9 mm", "s/p 8 wks"
        if not self._plausible(analyte, found[0].value) and found[0].value.is_integer() and 1900 <= found[0].value <= 2100:
            return []  # a year ("breast Ca 2009")
        head = text[max(0, m.start() - 80) : m.start()]
        if _SCREEN_CUES.search(head.lower()):
            before = _sentence_before(text, m.start())
            whole = m.start() <= 80 or len(before) < 80  # the sentence start is in view
            if (_FAMILY.search(before) or _FAMILY_CLAUSE.search(before) or _NOT_PATIENT_JUST_BEFORE.search(before)
                    or (whole and _FAMILY_SUBJECT.match(before))
                    or _GOAL_JUST_BEFORE.search(before)):
                return []
            if found[0].comparator and _THRESHOLD_CUE.search(before[-40:]):
                return []
        if name in _ION_NAMES and analyte == "calcium":
            found = [
                LabValue(v.start, v.end, "ionized_calcium", v.value, v.unit, v.comparator, v.flag_written, v.text)
                if v.analyte == "calcium" and v.value < 2.0 and (v.unit or "").lower() != "mg/dl" else v
                for v in found
            ]
        return found

    def _pipe_cells(self, text: str, m: re.Match, analyte: str) -> list[LabValue]:
        """"Calcium     | 13.1 H | 12.0 H |        | 10.6": one value per filled cell of a pipe table row."""
        pos, values = m.end(), []
        while True:
            cell = _PIPE_CELL.match(text, pos)
            if not cell:
                break
            pos = cell.end()
            if cell.group("num"):
                s = m.start() if not values else (cell.start("cmp") if cell.group("cmp") else cell.start("num"))
                e = cell.end("flag") if cell.group("flag") else cell.end("num")
                values.append(LabValue(s, e, analyte, _number(cell.group("num")), None, cell.group("cmp"),
                                       _flag(_column_flag(cell.group("flag") or "")), text[s:e]))
        last = re.match(rf"[ \t]*\|[ \t]*(?P<cmp><=|>=|<|>)?(?P<num>{_NUM})(?![\d/:-]|[.,]\d)"
                        r"(?P<flag>[ \t]*(?:\((?:hh|ll|h|l)\)|(?:hh|ll|h|l)\b|[↑↓*]))?[ \t]*(?=\r?\n|\Z)", text[pos:], re.IGNORECASE)
        if last and values is not None:
            s = pos + (last.start("cmp") if last.group("cmp") else last.start("num"))
            e = pos + (last.end("flag") if last.group("flag") else last.end("num"))
            if not values:
                s = m.start()
            values.append(LabValue(s, e, analyte, _number(last.group("num")), None, last.group("cmp"),
                                   _flag(_column_flag(last.group("flag") or "")), text[s:e]))
        return values

    def _read_values(self, text: str, m: re.Match, analyte: str, holes: list | None = None,
                     low: str | None = None) -> list[LabValue]:
        pos = m.end()
        if _PIPE_START.match(text, pos):
            return self._pipe_cells(text, m, analyte)
        connector_flag = None
        connector_len = 0
        separators = 0
        words: set[str] = set()
        # connector words between name and number
        for _ in range(6):
            c = _CONNECTOR_RE.match(text, pos)
            w = _WHEN_CONNECTOR.match(text, pos) if c is None or not c.group(0).strip().isalpha() else None
            if w is None and c is None and words:
                w = _COMMA_BEFORE_VALUE.match(text, pos)  # "Ca trending down, 11.9 -> 11.2"
            if w:
                pos = w.end()
                continue
            if not c:
                break
            token = c.group(0).strip().lower()
            if token.isalpha():
                if token not in _CONNECTOR_WORDS:
                    tp = _TIMEPOINT_CONNECTOR.match(text, pos) if token.startswith(_TIMEPOINT_WORDS) else None
                    if tp is None:
                        return []
                    pos = tp.end()  # "PTH monitoring: pre-incision 188"
                    continue
                words.add(token)
                connector_flag = _FLAG_WORDS.get(token, connector_flag)
            separators += 1
            connector_len += c.end() - pos
            pos = c.end()
            if connector_len > 40:
                return []
        if m.group("name").lower() in _UNIT_LIKE_NAMES and re.search(r"\d[ \t]?\Z", text[max(0, m.start() - 4) : m.start()]):
            # "mg" right after a number is that number's unit ("500 mg"), unless glued to its value ("Mg-2.0")
            # "Phos 9.1 Mg 2.8": a capitalised "Mg" with its own value is the analyte, not the unit
            if not re.match(r"[ \t]*[-:=]", text[m.end() : m.end() + 3]) and not (
                text[m.start()] == "M" and re.match(r"[ \t]+\d", text[m.end() : m.end() + 3])
            ):
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
        gap = _GAP_RE.match(text, pos)
        comparator = gap.group("cmp")
        pos = gap.end()
        num = _NUM_RE.match(text, pos)
        if num and text.find("min", num.end(), num.end() + 6) != -1 and pos != m.end():
            tp = _TIMEPOINT_CONNECTOR.match(text, pos)  # "PTH 10 min post-excision 29": a time point, then the value
            if tp:
                gap = _GAP_RE.match(text, tp.end())
                comparator, pos = gap.group("cmp"), gap.end()
                num = _NUM_RE.match(text, pos)
        if not num or (pos == m.end()):
            return []  # no value, or a value glued to the name ("Vitamin D3")
        if num.group(0)[:1] == "0" and _CLOCK_TIME.match(num.group(0)):
            return []  # "0600": a clock time
        vstart, vend = pos, num.end()
        if "\n" in text[m.end() : vstart] and _LIST_NUMBER.match(text, vstart):
            return []  # "Trend Cr\n2. HTN": list numbering on the next line
        value = _number(num.group(0))
        # a patient's own range over time: "Ca 10.8-11.1 over past year", "has run 10.6 to 11.2", "between X and Y"
        own = None
        lead = text[max(0, m.start() - 15) : m.start()]
        if words & _RANGE_VERBS or ("aseline" in lead.lower() and _BASELINE_BEFORE.search(lead)):
            own = (_BETWEEN_AFTER if "between" in words else _RANGE_AFTER).match(text, vend)
        else:
            rng = _RANGE_AFTER.match(text, vend)
            if rng and re.match(r"[ \t]*(?:-|–)", text[vend : rng.start("num")]):
                u = _UNIT_RE.match(text, rng.end())
                if _OWN_RANGE_TIME.match(text, u.end() if u else rng.end()) or _COURSE_BEFORE.search(_sentence_before(text, m.start())):
                    own = rng  # "10.8-11.1 over the past year", "Since 2022 several BMPs with calcium 10.3-10.7"
        if own:
            u = _UNIT_RE.match(text, own.end())
            unit = unit or (u.group("unit") if u else None)
            e2 = u.end() if u else own.end()
            return self._continue(text, analyte, [
                LabValue(m.start(), vend, analyte, value, unit, comparator, connector_flag, text[m.start() : vend]),
                LabValue(own.start("num"), e2, analyte, _number(own.group("num")), unit, text=text[own.start("num") : e2]),
            ], e2, unit, holes=holes, low=low)
        after = text[vend : vend + 40]
        if _NOT_VALUE_AFTER.match(after):
            return []  # a range, a date, a time or a multiple ("1.5x ULN"), not a value
        if _DOSE_RE.match(after) and not _UNIT_RE.match(after):
            return []
        pos = vend
        flag = None
        u = _UNIT_RE.match(text, pos)
        if u and unit is None:
            unit, pos = u.group("unit"), u.end()
        f = _FLAG_RE.match(text, pos)
        if f:
            flag = (f.group("pflag") or f.group("flag") or {"↑": "h", "↓": "l"}.get(f.group("arrow") or "", "")).lower() or None
            pos = f.end() if f.group("star") is None else pos
        values = []
        to = _TO_AFTER.match(text, pos) if "from" in words else None
        if to:  # "fell from 11.4 to 8.1"
            values.append(LabValue(m.start(), pos, analyte, value, unit, comparator, _flag(flag) or connector_flag,
                                   text[m.start() : pos].rstrip()))
            s, e = to.start("num"), to.end()
            u = _UNIT_RE.match(text, e)
            if u:
                e = u.end()
            values.append(LabValue(s, e, analyte, _number(to.group("num")), u.group("unit") if u else unit, text=text[s:e]))
            return self._continue(text, analyte, values, e, unit, holes=holes, low=low)
        r = _RANGE_RE.match(text, pos)
        if r:
            pos = r.end()
            u = _UNIT_RE.match(text, pos)
            if u and unit is None:
                unit, pos = u.group("unit"), u.end()
            f = _FLAG_RE.match(text, pos) if flag is None else None
            if f and f.group("star") is None:  # "Ca 10.6 (ref 8.5-10.2) H": the flag still belongs to the value
                flag = (f.group("pflag") or f.group("flag") or {"↑": "h", "↓": "l"}.get(f.group("arrow") or "", "")).lower() or None
                pos = f.end()
        values.append(
            LabValue(
                m.start(), pos, analyte, value, unit, comparator,
                _flag(flag) or connector_flag, text[m.start() : pos].rstrip(),
            )
        )
        return self._continue(text, analyte, values, pos, unit, flagged=flag is not None, holes=holes, low=low)

    def _continue(self, text: str, analyte: str, values: list[LabValue], pos: int, unit: str | None,
                  flagged: bool = False, holes: list | None = None, low: str | None = None) -> list[LabValue]:
        """Table columns ("Creatinine   8.9   6.7"), trends, narrative trends and parenthesised earlier values.
        ``low`` is the lower-cased text when it keeps the offsets (the scans then run case-sensitively over it)."""
        scan, rx = (low, _SERIES_LC) if low is not None else (text, _SERIES_CI)
        while True:
            col = rx.col.match(scan, pos)
            if col:
                if col.group("cmp") and _UNIT_RE.match(text, col.end()):
                    break  # "<2.0 pmol/L": a one-sided reference range in the last column
                s, e = col.start("cmp") if col.group("cmp") else col.start("num"), col.end("num")
                values.append(LabValue(s, e, analyte, _number(col.group("num")), unit, col.group("cmp"),
                                       _flag(_column_flag(col.group(0)[e - col.start():])), text=text[s:e]))
                pos = col.end()
                continue
            skip = rx.skip.match(scan, pos)
            if skip and skip.end() > pos:
                lab = rx.label_value.match(scan, skip.end()) if skip.group("sep") else None
                if lab and (skip.group("point") or _near(values[-1].value, _number(lab.group("num")))) \
                        and not _NOT_VALUE_AFTER.match(text, lab.end()) and not _DOSE_RE.match(text, lab.end()) \
                        and not _QUANTITY_AFTER.match(text, lab.end()):
                    # ", today 9.3", "; 5 min post-excision 62": the next value after its time label
                    s = skip.start("sep") + 1
                    s += len(text[s : skip.end()]) - len(text[s : skip.end()].lstrip())
                    pos = self._add(text, analyte, values, s, lab.end("num"), unit, lab.start("num"))
                    continue
                pos = skip.end()
                continue
            a = rx.arrow.match(scan, pos)
            if a and flagged and a.group(0).strip()[0] == ">":
                a = None  # "eGFR 41 L >60 mL/min": a one-sided reference range after a flag
            if a and not _DASH_DIGIT.match(text, a.end()):
                if _DOSE_RE.match(text, a.end()) and not _UNIT_RE.match(text, a.end()):
                    break  # "Mg 1.3 -> 2 g MgSO4": the arrow leads to a dose
                pos = self._add(text, analyte, values, a.start("num"), a.end("num"), unit)
                continue
            p = rx.paren.match(scan, pos)
            if p:
                word = p.group("word").lower()
                target = analyte
                if word in ("corrected", "corr", "adjusted"):  # "Ca 8.0 (corrected 9.6)", "Alb 2.5 (corrected 10.2)"
                    if analyte not in ("calcium", "albumin"):
                        break  # a corrected sodium or the like
                    target = "calcium_corrected"
                s, e = p.start("num"), p.end("num")
                values.append(LabValue(s, e, target, _number(p.group("num")), unit, text=text[s:e]))
                if p.group("num2"):
                    s2, e2 = p.start("num2"), p.end("num2")
                    values.append(LabValue(s2, e2, target, _number(p.group("num2")), unit, text=text[s2:e2]))
                pos = p.end()
                continue
            p = rx.paren_when.match(scan, pos)
            if p:
                s, e = p.start("num"), p.end("num")
                values.append(LabValue(s, e, analyte, _number(p.group("num")), unit, text=text[s:e]))
                pos = p.end()
                continue
            p = rx.paren_more.match(scan, pos)
            if p and p.group("race"):  # "eGFR 31 (non-African American) / 36 (African American)"
                pos = max(self._add(text, analyte, values, p.start("race"), p.end("race"), unit), p.end())
                continue
            if p and _same_kind(values[-1], p.group("bare")):  # "Cr 2.04 (1.61)"
                s, e = p.start("bare"), p.end("bare")
                values.append(LabValue(s, e, analyte, _number(p.group("bare")), unit, text=text[s:e]))
                pos = p.end()
                continue
            t = self._trend(scan, rx, pos, values[-1].value) or rx.series.match(scan, pos)
            if t is None and holes is not None and (text.find(",", pos, pos + 2) != -1 or text.find("(", pos, pos + 2) != -1
                                                     or text[_BLANKS.match(text, pos).end():][:1] in (",", "(")):
                aside = rx.aside.match(scan, pos)
                if aside:
                    t = self._after_aside(scan, rx, aside, values[-1].value)
                    if t is not None and aside.group("paren") and self.name_re.search(aside.group("paren")):
                        holes.append((aside.start("paren"), aside.end("paren")))  # "(PTH 230)": read on its own
            if t and not _NOT_VALUE_AFTER.match(text, t.end()) and not _DOSE_RE.match(text, t.end()) \
                    and not _QUANTITY_AFTER.match(text, t.end()):
                s = t.start("verb") if "verb" in t.re.groupindex and t.group("verb") else t.start("num")
                if "bare" in t.re.groupindex and t.group("bare"):
                    s = t.start("bare")
                pos = self._add(text, analyte, values, s, t.end("num"), unit)
                if t.re is rx.trend and ((t.group("prep") or "").lower() == "from" or (t.group("bare") or "").lower().startswith("from")):
                    to = _TO_AFTER.match(text, pos)
                    if to:
                        pos = self._add(text, analyte, values, to.start("num"), to.end("num"), unit)
                continue
            lst = rx.comma_list.match(scan, pos)
            if lst:
                nums = list(_NUM_RE.finditer(text, pos, lst.end()))
                if all(0.5 <= _number(n.group(0)) / values[-1].value <= 2 for n in nums) if values[-1].value else False:
                    for n in nums:
                        values.append(LabValue(n.start(), n.end(), analyte, _number(n.group(0)), unit, text=n.group(0)))
                    pos = lst.end()
                    continue
            prose = rx.prose.match(scan, pos) if text.find("(", pos, pos + 45) != -1 else None
            if prose and (rx.paren.match(scan, prose.end())):
                pos = prose.end()
                continue
            break
        return values

    @staticmethod
    def _trend(text: str, rx: _Series, pos: int, last: float) -> re.Match | None:
        """The next value of a narrative trend; comparisons ("higher than the 11.8") and "it is 3.2" only with a
        value of the same order as the last one."""
        t = rx.trend.match(text, pos)
        if t is None:
            return None
        if not (t.group("verb") or t.group("bare") or (t.group("cop") or "").lower() == "it"):
            return None  # "which is 0.3 above": a difference, not a value
        if (t.group("cmpv") or t.group("after") or (t.group("cop") or "").lower() == "it") and not _near(last, _number(t.group("num"))):
            return None
        return t

    def _after_aside(self, text: str, rx: _Series, aside: re.Match, last: float) -> re.Match | None:
        """The value after an aside (", 2 L NS given, now 11.9"): only a strong trend word, a comparison or a timed
        series value, of the same order as the last value; a clause that names an analyte ends the series."""
        clause = aside.group("clause")
        if clause is not None and self.name_re.search(clause) and self.name_re.search(self.veto_any.sub(" ", clause)):
            return None  # names another analyte (a drug name such as "calcium gluconate" is no analyte)
        t = self._trend(text, rx, aside.end(), last)
        if t is not None and not (t.group("cmpv") or (t.group("bare") or "").lower() in _STRONG_BARE
                                  or (t.group("verb") and t.group("prep").lower() in ("to", "at"))):
            t = None
        t = t or rx.series.match(text, aside.end())
        if t is None or not _near(last, _number(t.group("num"))):
            return None
        return t

    @staticmethod
    def _add(text: str, analyte: str, values: list[LabValue], s: int, e: int, unit: str | None, ns: int | None = None) -> int:
        """Append a later value of a series (with its own unit and flag when written); return the new position.
        The number is the first in text[s:e], or the one at ``ns`` when the span opens with a label ("5 min post-excision 62")."""
        num = _NUM_RE.search(text, s if ns is None else ns, e)
        v = _number(num.group(0))
        u = _UNIT_RE.match(text, e)
        if u:
            e = u.end()
        flag = None
        f = _FLAG_RE.match(text, e)
        if f and f.group("star") is None:
            flag = _flag((f.group("pflag") or f.group("flag") or {"↑": "h", "↓": "l"}.get(f.group("arrow") or "", "")))
            e = f.end()
        values.append(LabValue(s, e, analyte, v, u.group("unit") if u else unit, None, flag, text[s:e]))
        return e


class _Series:
    """The regexes _continue reads a series with: IGNORECASE over the text, or plain over the lower-cased text
    (about twice as fast; used whenever lower-casing keeps the offsets)."""

    def __init__(self, lower: bool) -> None:
        def rx(r: re.Pattern) -> re.Pattern:
            return _compile(r.pattern) if lower else r

        self.col, self.skip, self.arrow = rx(_COLUMN_RE), rx(_TIME_SKIP), rx(_ARROW_RE)
        self.paren, self.paren_when, self.paren_more = rx(_PAREN_RE), rx(_PAREN_WHEN_RE), rx(_PAREN_MORE)
        self.trend, self.series, self.aside = rx(_TREND_NEXT), rx(_SERIES_NEXT), rx(_ASIDE)
        self.comma_list, self.prose, self.label_value = rx(_COMMA_LIST), rx(_PROSE_PAREN), rx(_LABEL_VALUE)


def _near(last: float, value: float, factor: float = 3.0) -> bool:
    """Two values of one series are of the same order (a dose or a count after a value is not)."""
    return last > 0 and value > 0 and 1 / factor <= value / last <= factor


def _same_kind(last: LabValue, raw: str) -> bool:
    """"Cr 2.04 (1.61)": a bare number in parentheses is an earlier value when written to the same precision
    and within a factor of two (a unit conversion or a count is not)."""
    decimals = len(raw.partition(".")[2])
    written = last.text.rstrip()
    m = re.search(r"(\d+(?:\.\d+)?)\D*\Z", written)
    return bool(m) and len(m.group(1).partition(".")[2]) == decimals and _near(last.value, _number(raw), 2.0)


_SERIES_CI, _SERIES_LC = _Series(False), _Series(True)


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


@functools.lru_cache(maxsize=4096)
def _unit_key(unit: str) -> str:
    key = unit.lower().replace(" ", "").replace("µ", "u").replace("μ", "u").replace("micro", "u")
    key = key.replace("^2", "2").replace("²", "2")
    if "per" in key:  # dictated: "milligrams per deciliter"
        for spoken, short in (("milligrams", "mg"), ("milligram", "mg"), ("picograms", "pg"), ("picogram", "pg"),
                              ("nanograms", "ng"), ("nanogram", "ng"), ("millimoles", "mmol"), ("millimole", "mmol"),
                              ("grams", "g"), ("gram", "g"), ("per", "/"), ("decilitre", "dl"), ("deciliter", "dl"),
                              ("millilitre", "ml"), ("milliliter", "ml"), ("litre", "l"), ("liter", "l")):
            key = key.replace(spoken, short)
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
