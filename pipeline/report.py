"""The chart-review report: a static, self-contained HTML rendering of a result folder.

``calcmine report DIR`` (and ``calcmine run``) writes ``DIR/report/``::

    index.html            summary: counts per label, confidence, sites, labs by label (inline SVG),
                          and every case with its label, confidence, top reasons and key labs
    cases/<id>.html       one page per case: ranked reasons linked to the evidence, key labs, and
                          every note with its mentions, labs, conditions and section titles highlighted

Everything here is a pure function from tables to HTML strings, so a notebook can show the same
pieces (``case_html``, ``label_chart``, ``lab_strip`` ...) with ``IPython.display.HTML``. Pages load
nothing: no scripts, fonts, images or style sheets from anywhere; a Content-Security-Policy of
``default-src 'none'`` makes the browser refuse any that might slip in. All text is escaped with
:func:`html.escape`. Everything a reviewer sees names its source: note id, date and section.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import schema
from pipeline.errors import CalcmineError
from pipeline.io import write_private
from pipeline.review import KEY_ANALYTES

LABELS = ("metastatic", "dystrophic", "indeterminate", "no_calcification")
LABEL_COLOURS = {
    "metastatic": "#c0392b",
    "dystrophic": "#2874a6",
    "indeterminate": "#b9770e",
    "no_calcification": "#7b8a8b",
}
ASSERTIONS = ("present", "possible", "negated", "historical", "hypothetical", "family")
CHART_ANALYTES = ("calcium", "calcium_corrected", "phosphate", "calcium_phosphate_product", "pth", "egfr",
                  "creatinine", "vitamin_d_25oh")
_KIND_RANK = {"mention": 0, "condition": 1, "lab": 2, "section": 3}
TABLE_FILES = {"mentions": "mentions.parquet", "labs": "labs.parquet", "conditions": "conditions.parquet",
               "cases": "cases.parquet"}

_e = html.escape


# ----------------------------------------------------------------------------------------------
# loading a result folder


@dataclass
class Run:
    """A result folder's tables. ``notes`` is None for runs written before notes.parquet existed."""

    cases: pd.DataFrame
    mentions: pd.DataFrame
    labs: pd.DataFrame
    conditions: pd.DataFrame
    notes: pd.DataFrame | None = None
    info: dict = field(default_factory=dict)
    path: Path | None = None
    _sections: dict = field(default_factory=dict, repr=False)
    _groups: dict = field(default_factory=dict, repr=False)

    def rows(self, table: str, patient_id: str) -> list:
        """One patient's rows of ``table`` (mentions, labs, conditions, notes) as named tuples."""
        if table not in self._groups:
            frame = getattr(self, table)
            groups: dict = {}
            if frame is not None:
                for row in frame.itertuples(index=False):
                    groups.setdefault(row.patient_id, []).append(row)
            self._groups[table] = groups
        return self._groups[table].get(patient_id, [])

    def target(self, kind: str, note_id, start, end) -> str:
        """Where a pointer to a span goes: the highlighted span, or its table row when there is no text."""
        anchor = anchor_id(kind, note_id, start, end)
        return anchor if self.notes is not None else "r-" + anchor

    def note(self, note_id: str) -> dict | None:
        if self.notes is None:
            return None
        if "_notes_by_id" not in self._groups:
            self._groups["_notes_by_id"] = {n["note_id"]: n for n in self.notes.to_dict("records")}
        return self._groups["_notes_by_id"].get(note_id)

    def sections(self, note_id: str) -> list:
        """Section titles of a note (the pipeline's own detector), cached."""
        if note_id not in self._sections:
            note = self.note(note_id)
            self._sections[note_id] = note_sections(note["text"]) if note else []
        return self._sections[note_id]


def load_run(folder: str | Path) -> Run:
    """Read a result folder written by ``calcmine run``; one-line errors for anything missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalcmineError(f"{folder}: no such result folder; write one with `calcmine run --out {folder}`")
    missing = [f for f in TABLE_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise CalcmineError(f"{folder}: not a calcmine result folder (missing {', '.join(missing)}); "
                            f"write one with `calcmine run --out {folder}`")
    frames = {}
    for name, filename in TABLE_FILES.items():
        frames[name] = _read(folder / filename, schema.TABLES[name])
    notes = _read(folder / "notes.parquet", schema.NOTES) if (folder / "notes.parquet").is_file() else None
    info = {}
    if (folder / "run.json").is_file():
        try:
            info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            raise CalcmineError(f"{folder / 'run.json'}: cannot be read as JSON; re-run calcmine run") from None
    return Run(notes=notes, info=info, path=folder, **frames)


def _read(path: Path, arrow_schema) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
        if "source" in arrow_schema.names and "source" not in frame.columns:
            frame["source"] = None
        return schema.conform(frame, arrow_schema)
    except (ValueError, OSError) as exc:
        raise CalcmineError(f"{path}: cannot be read ({type(exc).__name__}); re-run calcmine run to rewrite it") from None


def note_sections(text: str) -> list:
    """Section titles found in ``text`` by the pipeline's own ``calc_sections`` detector."""
    from spacy.tokens import Doc

    if not text:
        return []
    detector, vocab = _section_detector()
    doc = Doc(vocab, words=[text], spaces=[False])  # one token: the detector reads only the text
    if Doc.has_extension("calc_text"):
        doc._.calc_text = text
    return list(detector(doc)._.calc_sections or ())


_DETECTOR: list = []


def _section_detector():
    if not _DETECTOR:
        from spacy.vocab import Vocab

        from pipeline.nlp import SectionDetector

        _DETECTOR.append((SectionDetector(), Vocab()))
    return _DETECTOR[0]


def section_of(sections: list, char) -> str | None:
    from pipeline.context import section_at

    if char is None or pd.isna(char):
        return None
    hit = section_at(sections, int(char))
    return hit.kind if hit else None


# ----------------------------------------------------------------------------------------------
# names: files, anchors, sources


def case_filenames(patient_ids) -> dict[str, str]:
    """patient id -> a safe, unique file name (ASCII letters, digits, _ and -; hashed when changed)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for pid in patient_ids:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", str(pid)).strip("_-")[:60] or "case"
        name = base
        if base != pid or base.lower() in taken:  # changed, or clashes on a case-insensitive disk
            name = f"{base}-{hashlib.sha1(str(pid).encode('utf-8')).hexdigest()[:10]}"
        taken.add(name.lower())
        out[pid] = name + ".html"
    return out


def _slug(note_id) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(note_id))
    if slug != str(note_id):
        slug += "-" + hashlib.sha1(str(note_id).encode("utf-8")).hexdigest()[:6]
    return slug


def anchor_id(kind: str, note_id, start, end) -> str:
    """The element id of a highlighted span; the same for the span and every pointer to it."""
    return f"{kind[:1]}-{_slug(note_id)}-{int(start)}-{int(end)}"


def note_anchor(note_id) -> str:
    return "note-" + _slug(note_id)


def _str(value, default: str = "") -> str:
    if schema.is_missing(value):
        return default
    return str(value)


def source_label(note_id, date, section) -> str:
    """'note P001-C1 · 2023-01-10 · findings' - the source every item names."""
    return f"note {_str(note_id, '?')} · {_str(date, 'undated')} · {_str(section, 'no section')}"


# ----------------------------------------------------------------------------------------------
# highlighting


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str  # mention | condition | lab | section
    css: str = ""  # extra classes, e.g. "as-negated"
    chip: str = ""  # short label shown after the span
    title: str = ""  # tooltip
    anchor: str = ""  # element id of the span's start


def highlight(text: str, spans: list[Span]) -> str:
    """``text`` as escaped HTML with each span marked ``<mark class="hl hl-KIND ...">``.

    Overlapping spans are cut into segments; a segment is coloured by its highest-ranked span
    (mention > condition > lab > section) and carries ``with-KIND`` classes for the others. Each
    span's anchor is an empty ``<a id>`` at its start and its chip a label after its end.
    """
    n = len(text)
    spans = [s for s in spans if 0 <= s.start < s.end <= n]
    cuts = sorted({0, n, *(s.start for s in spans), *(s.end for s in spans)})
    starts: dict[int, list[Span]] = {}
    ends: dict[int, list[Span]] = {}
    for s in spans:
        starts.setdefault(s.start, []).append(s)
        ends.setdefault(s.end, []).append(s)
    out: list[str] = []
    active: list[Span] = []
    placed: set[str] = set()
    for a, b in zip(cuts, cuts[1:]):
        for s in sorted(ends.get(a, []), key=lambda s: (_KIND_RANK[s.kind], s.start)):
            if s.chip:
                out.append(f'<span class="chip chip-{s.kind} {_e(s.css)}" aria-hidden="true">{_e(s.chip)}</span>')
        active = [s for s in active if s.end > a] + starts.get(a, [])
        for s in starts.get(a, []):
            if s.anchor and s.anchor not in placed:
                placed.add(s.anchor)
                out.append(f'<a class="anchor" id="{_e(s.anchor)}"></a>')
        piece = _e(text[a:b])
        if not active:
            out.append(piece)
            continue
        ranked = sorted(active, key=lambda s: (_KIND_RANK[s.kind], s.end - s.start))
        top = ranked[0]
        classes = ["hl", f"hl-{top.kind}", *top.css.split()]
        classes += sorted({f"with-{s.kind}" for s in ranked[1:] if s.kind != top.kind})
        title = " | ".join(dict.fromkeys(s.title for s in ranked if s.title))
        out.append(f'<mark class="{_e(" ".join(classes))}" title="{_e(title)}">{piece}</mark>')
    for s in sorted(ends.get(n, []), key=lambda s: (_KIND_RANK[s.kind], s.start)):
        if s.chip:
            out.append(f'<span class="chip chip-{s.kind} {_e(s.css)}" aria-hidden="true">{_e(s.chip)}</span>')
    return "".join(out)


def legend_html() -> str:
    items = [f'<mark class="hl hl-mention as-{a}">{a}</mark>' for a in ASSERTIONS]
    items.append('<span class="chip chip-mention as-present">site</span>')
    items.append('<mark class="hl hl-condition">condition</mark>')
    items.append('<mark class="hl hl-lab">lab value</mark>')
    items.append('<mark class="hl hl-lab flag-high">high</mark>')
    items.append('<mark class="hl hl-lab flag-low">low</mark>')
    items.append('<mark class="hl hl-section">SECTION</mark>')
    return ('<div class="legend"><b>Legend</b> calcification mentions by assertion: ' + " ".join(items[:6])
            + " · sites: " + items[6] + " · " + " ".join(items[7:]) + "</div>")


def _tuples(rows) -> list:
    return list(rows.itertuples(index=False)) if isinstance(rows, pd.DataFrame) else list(rows)


def note_spans(note: dict, mentions, labs, conditions, sections: list) -> list[Span]:
    """The spans of one note's mentions, conditions, labs (DataFrames or row tuples) and section titles."""
    nid, date = note["note_id"], note.get("note_date")
    mentions, labs, conditions = _tuples(mentions), _tuples(labs), _tuples(conditions)
    spans: list[Span] = []
    for sec in sections:
        spans.append(Span(sec.start, sec.body_start, "section", f"sec-{sec.kind}", "",
                          f"section {sec.kind} · {source_label(nid, date, sec.kind)}",
                          anchor_id("section", nid, sec.start, sec.body_start)))
    for m in mentions:
        assertion = _str(m.assertion, "present")
        where = _str(m.sites) or _str(m.site)
        chip = assertion + (f" · {where.replace(';', ', ')}" if where else "")
        lat = f" · {m.laterality}" if _str(m.laterality) else ""
        spans.append(Span(int(m.start), int(m.end), "mention", f"as-{assertion}", chip,
                          f"{m.concept} · {assertion} · site {where or 'none'}{lat} · {source_label(nid, date, m.section)}",
                          anchor_id("mention", nid, m.start, m.end)))
    for c in conditions:
        assertion = _str(c.assertion, "present")
        detail = f" {c.detail}" if _str(c.detail) else ""
        chip = f"{c.condition}{detail}" + ("" if assertion == "present" else f" · {assertion}")
        spans.append(Span(int(c.start), int(c.end), "condition", f"as-{assertion}", chip,
                          f"condition {c.condition}{detail} ({c.group}) · {assertion} · {source_label(nid, date, c.section)}",
                          anchor_id("condition", nid, c.start, c.end)))
    for lab in labs:
        if pd.isna(lab.start) or pd.isna(lab.end):
            continue
        flag = _str(lab.flag)
        value = _lab_value(lab)
        chip = f"{lab.analyte} {value}" + (f" {flag}" if flag and flag != "normal" else "")
        derived = " (derived: " + _str(lab.text) + ")" if lab.source == "derived" else ""
        spans.append(Span(int(lab.start), int(lab.end), "lab", f"flag-{flag or 'none'} src-{lab.source}", chip,
                          f"lab {lab.analyte} {value}{' ' + flag if flag else ''}{derived} · "
                          f"{source_label(nid, date, section_of(sections, lab.start))}",
                          anchor_id("lab", nid, lab.start, lab.end)))
    return spans


def _lab_value(lab) -> str:
    if pd.isna(lab.value_std):
        return f"{_str(lab.value)} {_str(lab.unit)}".strip()
    return f"{lab.value_std:.4g} {_str(lab.unit_std)}".strip()


# ----------------------------------------------------------------------------------------------
# charts (inline SVG)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="chart" role="img" aria-label="{_e(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{_e(label)}</title>{body}</svg>')


def label_chart(cases: pd.DataFrame, href=None) -> str:
    """Cases per label, horizontal bars. ``href(label)`` may link each bar."""
    counts = cases["label"].value_counts()
    labels = [lb for lb in LABELS if lb in counts.index] + sorted(set(counts.index) - set(LABELS))
    if not labels:
        return '<p class="empty">no cases</p>'
    top = max(int(counts.max()), 1)
    width, left, bar, gap = 460, 130, 24, 8
    height = len(labels) * (bar + gap) + 30
    body = []
    for i, lb in enumerate(labels):
        n = int(counts[lb])
        y = 10 + i * (bar + gap)
        w = (width - left - 50) * n / top
        rect = (f'<text x="{left - 8}" y="{y + bar * 0.7}" text-anchor="end">{_e(lb)}</text>'
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{LABEL_COLOURS.get(lb, "#555")}">'
                f'<title>{_e(lb)}: {n} cases</title></rect>'
                f'<text x="{left + w + 6:.1f}" y="{y + bar * 0.7}">{n}</text>')
        body.append(f'<a href="{_e(href(lb))}">{rect}</a>' if href else rect)
    return _svg(width, height, "".join(body), "cases per label")


def confidence_histogram(cases: pd.DataFrame) -> str:
    """Confidence in bins of 0.05, bars stacked by label."""
    if cases.empty:
        return '<p class="empty">no cases</p>'
    lo = min(0.5, math.floor(float(cases["confidence"].min()) * 20) / 20)
    edges = [round(lo + 0.05 * i, 2) for i in range(int(round((1.0 - lo) / 0.05)) + 1)]
    nb = len(edges) - 1
    counts = {lb: [0] * nb for lb in LABELS}
    for lb, conf in zip(cases["label"], cases["confidence"]):
        i = min(int((float(conf) - lo) / 0.05 + 1e-9), nb - 1)
        counts.setdefault(lb, [0] * nb)[max(i, 0)] += 1
    tallest = max(max(sum(c[i] for c in counts.values()) for i in range(nb)), 1)
    width, height, left, bottom, top = 460, 220, 36, 34, 12
    bw = (width - left - 24) / nb
    ph = height - bottom - top
    body = []
    for t in _nice_ticks(0, tallest, 4):
        y = top + ph - ph * t / tallest
        body.append(f'<line class="grid" x1="{left}" x2="{width - 24}" y1="{y:.1f}" y2="{y:.1f}"/>'
                    f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    for i in range(nb):
        y = top + ph
        for lb, c in counts.items():
            if not c[i]:
                continue
            h = ph * c[i] / tallest
            y -= h
            body.append(f'<rect x="{left + i * bw + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                        f'fill="{LABEL_COLOURS.get(lb, "#555")}"><title>{_e(lb)}: {c[i]} cases with confidence '
                        f'{edges[i]:.2f}-{edges[i + 1]:.2f}</title></rect>')
    for i, edge in enumerate(edges):
        if i % 2 == 0:
            body.append(f'<text x="{left + i * bw:.1f}" y="{height - bottom + 16}" text-anchor="middle">{edge:.2f}</text>')
    body.append(f'<text x="{(left + width) / 2}" y="{height - 4}" text-anchor="middle" class="axis">confidence</text>')
    return _svg(width, height, "".join(body), "confidence of the case labels")


def site_chart(cases: pd.DataFrame, mentions: pd.DataFrame, top: int = 14) -> str:
    """Patients with a present mention at each site (top sites), stacked by case label."""
    present = mentions[mentions["assertion"] == "present"]
    label_of = dict(zip(cases["patient_id"], cases["label"]))
    pairs = set()
    for pid, sites, site in zip(present["patient_id"], present["sites"], present["site"]):
        for s in (_str(sites) or _str(site) or "unspecified").split(";"):
            pairs.add((s, pid))
    table: dict[str, dict[str, int]] = {}
    for s, pid in pairs:
        row = table.setdefault(s, {})
        lb = label_of.get(pid, "unknown")
        row[lb] = row.get(lb, 0) + 1
    rows = sorted(table.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:top]
    if not rows:
        return '<p class="empty">no present mentions</p>'
    most = max(sum(r.values()) for _, r in rows)
    width, left, bar, gap = 460, 150, 16, 5
    height = len(rows) * (bar + gap) + 16
    body = []
    for i, (site, row) in enumerate(rows):
        y = 6 + i * (bar + gap)
        x = left
        body.append(f'<text x="{left - 8}" y="{y + bar * 0.8}" text-anchor="end">{_e(site)}</text>')
        for lb in [*LABELS, *sorted(set(row) - set(LABELS))]:
            if lb not in row:
                continue
            w = (width - left - 40) * row[lb] / most
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{LABEL_COLOURS.get(lb, "#555")}">'
                        f'<title>{_e(site)}: {row[lb]} {_e(lb)} patients</title></rect>')
            x += w
        body.append(f'<text x="{x + 5:.1f}" y="{y + bar * 0.8}">{sum(row.values())}</text>')
    return _svg(width, height, "".join(body), "patients with a present calcification mention, by site")


def lab_strip(labs: pd.DataFrame, cases: pd.DataFrame, analyte: str, reference: tuple | None = None,
              href=None, section=None) -> str:
    """Every plausible value of ``analyte``, one row of dots per case label; reference range shaded.

    ``href(patient_id, lab_row)`` may link each dot; ``section(lab_row)`` names its section.
    A log axis is used when values span more than two orders of magnitude.
    """
    sub = labs[(labs["analyte"] == analyte) & labs["value_std"].notna()]
    if "plausible" in sub.columns:
        sub = sub[sub["plausible"].fillna(True).astype(bool)]
    if sub.empty:
        return f'<p class="empty">no {_e(analyte)} values</p>'
    label_of = dict(zip(cases["patient_id"], cases["label"]))
    values = sub["value_std"].astype(float)
    lo, hi = float(values.min()), float(values.max())
    if reference:
        lo, hi = min(lo, reference[0]), max(hi, reference[1] if reference[1] < hi * 4 else hi)
    use_log = lo > 0 and hi / lo > 100
    if use_log:
        f = math.log10
        lo_t, hi_t = math.floor(f(lo)), math.ceil(f(hi))
        ticks = [10 ** k for k in range(lo_t, hi_t + 1)]
        lo_s, hi_s = lo_t, hi_t
    else:
        f = float
        pad = (hi - lo) * 0.05 or 1
        ticks = _nice_ticks(lo - pad, hi + pad, 5)
        lo_s, hi_s = min(ticks[0], lo - pad), max(ticks[-1], hi + pad)
    rows = [lb for lb in LABELS if lb in set(label_of.get(p) for p in sub["patient_id"])]
    width, left, right, row_h, top = 460, 130, 24, 26, 20
    height = top + len(rows) * row_h + 26
    pw = width - left - right

    def x_of(v: float) -> float:
        return left + pw * (f(max(v, 10 ** lo_s) if use_log else v) - lo_s) / (hi_s - lo_s)

    unit = _str(sub["unit_std"].dropna().iloc[0]) if sub["unit_std"].notna().any() else ""
    body = [f'<text x="{left}" y="13" class="axis">{_e(analyte)}{" (" + _e(unit) + ")" if unit else ""}'
            f'{" · log scale" if use_log else ""}</text>']
    if reference:
        x0, x1 = x_of(max(reference[0], 10 ** lo_s if use_log else reference[0])), x_of(min(reference[1], 10 ** hi_s if use_log else hi_s))
        if x1 > x0:
            body.append(f'<rect class="ref" x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{len(rows) * row_h}">'
                        f'<title>reference range {reference[0]:g}-{reference[1]:g} {_e(unit)}</title></rect>')
    for t in ticks:
        x = x_of(t)
        if left - 0.5 <= x <= width - right + 0.5:
            body.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + len(rows) * row_h}"/>'
                        f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{t:g}</text>')
    for i, lb in enumerate(rows):
        y = top + i * row_h + row_h / 2
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_e(lb)}</text>')
        part = sub[sub["patient_id"].map(label_of) == lb]
        for lab in part.itertuples(index=False):
            jitter = (int(hashlib.md5(f"{lab.note_id}{lab.start}{lab.analyte}".encode()).hexdigest()[:4], 16) / 65535 - 0.5) * row_h * 0.6
            sec = section(lab) if section else None
            tip = (f"{lab.patient_id} · {analyte} {lab.value_std:.4g} {_str(lab.unit_std)} {_str(lab.flag)} · "
                   f"{source_label(lab.note_id, lab.note_date, sec)}")
            dot = (f'<circle cx="{x_of(float(lab.value_std)):.1f}" cy="{y + jitter:.1f}" r="4" '
                   f'fill="{LABEL_COLOURS.get(lb, "#555")}"><title>{_e(tip)}</title></circle>')
            body.append(f'<a href="{_e(href(lab.patient_id, lab))}">{dot}</a>' if href else dot)
    return _svg(width, height, "".join(body), f"{analyte} values by case label")


# ----------------------------------------------------------------------------------------------
# pages

CSS = """
.cm{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2329;margin:0;background:#f6f7f9}
.cm .wrap{max-width:1180px;margin:0 auto;padding:14px 22px 40px}
.cm header.top{background:#1f2d3a;color:#fff;padding:10px 22px}
.cm header.top a{color:#cfe3ff}
.cm h1{font-size:22px;margin:10px 0 4px}.cm h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #d5dae0;padding-bottom:3px}
.cm h3{font-size:15px;margin:0}
.cm .muted{color:#5d6975}.cm .small{font-size:12px}
.cm .badge{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}
.cm .lbl-metastatic{background:#c0392b}.cm .lbl-dystrophic{background:#2874a6}.cm .lbl-indeterminate{background:#b9770e}
.cm .lbl-no_calcification{background:#7b8a8b}
.cm .grid3{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.cm .card{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:10px 12px}
.cm .card h3{margin-bottom:6px}
.cm svg.chart{font-size:11px;fill:#1d2329;display:block;width:100%;max-width:560px;height:auto}
.cm svg.chart .grid{stroke:#e3e7eb}.cm svg.chart .ref{fill:#d8f0dc}.cm svg.chart .axis{font-weight:600}
.cm svg.chart a:hover circle,.cm svg.chart a:hover rect{stroke:#000;stroke-width:1.5}
.cm table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
.cm th,.cm td{border:1px solid #dde2e7;padding:4px 6px;text-align:left;vertical-align:top}
.cm th{background:#eef1f4;font-weight:600}
.cm tr.case-row:hover td{background:#f3f8ff}
.cm .num{text-align:right;font-variant-numeric:tabular-nums}
.cm .src{font-size:11.5px;color:#5d6975;white-space:nowrap}
.cm a.src{color:#2f5f9e}
.cm .legend{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:6px 10px;margin:8px 0;line-height:2}
.cm .note{background:#fff;border:1px solid #cfd6dd;border-radius:6px;margin:14px 0;scroll-margin-top:10px}
.cm .note>header{background:#eef1f4;padding:6px 12px;border-bottom:1px solid #cfd6dd;border-radius:6px 6px 0 0}
.cm .note .text{white-space:pre-wrap;font:13px/1.75 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;padding:10px 12px;overflow-wrap:anywhere}
.cm .note details{padding:4px 12px 10px}.cm summary{cursor:pointer;color:#2f5f9e}
.cm details#other-evidence{margin:10px 0}
.cm mark.hl{padding:1px 0;border-radius:2px;color:inherit}
.cm mark.hl-mention{background:#ffd8a8;box-shadow:inset 0 -2px 0 #e8590c}
.cm mark.hl-mention.as-possible{background:#fff3bf;box-shadow:inset 0 -2px 0 #e0a800}
.cm mark.hl-mention.as-negated{background:#e9ecef;box-shadow:inset 0 -2px 0 #868e96;text-decoration:line-through}
.cm mark.hl-mention.as-historical{background:#d0ebff;box-shadow:inset 0 -2px 0 #1c7ed6}
.cm mark.hl-mention.as-hypothetical{background:#eebefa;box-shadow:inset 0 -2px 0 #ae3ec9}
.cm mark.hl-mention.as-family{background:#c3fae8;box-shadow:inset 0 -2px 0 #0ca678}
.cm mark.hl-condition{background:#e6f4ea;box-shadow:inset 0 -3px 0 #2b8a3e}
.cm mark.hl-condition.as-negated{text-decoration:line-through}
.cm mark.hl-lab{background:#edf2ff;outline:1px solid #748ffc}
.cm mark.hl-lab.flag-high{background:#ffe3e3;outline-color:#e03131;font-weight:700}
.cm mark.hl-lab.flag-low{background:#e7f5ff;outline-color:#1971c2;font-weight:700}
.cm mark.hl-section{background:none;font-weight:700;color:#364fc7}
.cm mark.with-lab{outline:1px dotted #748ffc}
.cm .chip{display:inline-block;font:600 10px/1.3 system-ui,sans-serif;padding:0 4px;margin:0 2px;border-radius:3px;vertical-align:1px;user-select:none;color:#fff;background:#e8590c}
.cm .chip-mention.as-possible{background:#c79100}.cm .chip-mention.as-negated{background:#868e96}
.cm .chip-mention.as-historical{background:#1c7ed6}.cm .chip-mention.as-hypothetical{background:#ae3ec9}
.cm .chip-mention.as-family{background:#0ca678}
.cm .chip-condition{background:#2b8a3e}.cm .chip-lab{background:#5c7cfa}
.cm .chip-lab.flag-high{background:#e03131}.cm .chip-lab.flag-low{background:#1971c2}
.cm a.anchor{scroll-margin-top:60px}
.cm a.anchor:target::before{content:"\\25B6";color:#e03131;font-size:12px}
.cm tr:target td{background:#fff9db}
.cm ol.reasons li{margin:4px 0}.cm ol.reasons .w{font-variant-numeric:tabular-nums;color:#5d6975;font-size:12px}
.cm .ev a{margin-right:8px}
.cm .tag{display:inline-block;padding:0 5px;border-radius:3px;font-size:11.5px;background:#eef1f4;border:1px solid #d5dae0}
.cm .as-tag-present{background:#ffd8a8}.cm .as-tag-negated{background:#e9ecef}.cm .as-tag-possible{background:#fff3bf}
.cm .as-tag-historical{background:#d0ebff}.cm .as-tag-hypothetical{background:#eebefa}.cm .as-tag-family{background:#c3fae8}
.cm nav.pager a{margin-right:14px}
.cm .warn{background:#fff4e6;border:1px solid #ffc078;padding:6px 10px;border-radius:6px}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _page(title: str, body: str, top: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n"
        f'<body class="cm"><header class="top">{top}</header><div class="wrap">{body}</div></body></html>\n'
    )


def _label_badge(label) -> str:
    label = _str(label, "unknown")
    return f'<span class="badge lbl-{_e(label)}">{_e(label)}</span>'


def _assertion_tag(a) -> str:
    a = _str(a, "present")
    return f'<span class="tag as-tag-{_e(a)}">{_e(a)}</span>'


def _evidence_items(case) -> list[dict]:
    try:
        items = json.loads(case["evidence"] or "[]")
    except (TypeError, ValueError):
        return []
    return [i for i in items if isinstance(i, dict)]


def _norm_reason(text) -> str:
    return " ".join(str(text).replace("'", "").split())


def _grouped_reasons(case) -> list[tuple[int | None, str, list[dict]]]:
    """(rank or None, reason, evidence items): ranked reasons first, then other evidence by weight."""
    reasons = [r for r in _str(case["reasons"]).split(" | ") if r]
    groups: dict[str, tuple[int | None, str, list[dict]]] = {}
    for rank, r in enumerate(reasons, start=1):
        groups.setdefault(_norm_reason(r), (rank, r, []))
    for item in _evidence_items(case):
        key = _norm_reason(item.get("reason", ""))
        groups.setdefault(key, (None, _str(item.get("reason"), "evidence"), []))[2].append(item)
    ranked = [g for g in groups.values() if g[0] is not None]
    rest = sorted((g for g in groups.values() if g[0] is None),
                  key=lambda g: -max((abs(float(i.get("weight") or 0)) for i in g[2]), default=0))
    return ranked + rest


class _CaseData:
    """One patient's rows, as named tuples, split once."""

    def __init__(self, run: Run, pid: str):
        hit = run.cases[run.cases["patient_id"] == pid]
        if hit.empty:
            raise CalcmineError(f"no case for patient {pid} in this run")
        self.case = hit.iloc[0].to_dict()
        self.mentions = run.rows("mentions", pid)
        self.labs = run.rows("labs", pid)
        self.conditions = run.rows("conditions", pid)
        if run.notes is not None:
            notes = [r._asdict() for r in run.rows("notes", pid)]
        else:
            seen: dict = {}
            for r in [*self.mentions, *self.labs, *self.conditions]:
                if not isinstance(r.note_id, str):
                    continue  # structured lab rows belong to no note
                seen.setdefault(r.note_id, {"note_id": r.note_id, "patient_id": pid, "note_date": r.note_date,
                                            "note_type": None, "text": None, "source": None})
            notes = list(seen.values())
        self.notes = sorted(notes, key=lambda n: (_str(n["note_date"], "9999"), n["note_id"]))
        self.dates = {n["note_id"]: n["note_date"] for n in self.notes}

    def of_note(self, table: str, note_id: str) -> list:
        return [r for r in getattr(self, table) if isinstance(r.note_id, str) and r.note_id == note_id]


def _pointer(run: Run, item: dict, data: _CaseData, text: str | None = None) -> str:
    """A link to one evidence item's highlighted span, naming its note, date and section."""
    nid, kind = item.get("note_id"), _str(item.get("kind"), "mention")
    start, end = item.get("start"), item.get("end")
    if nid is None and kind == "lab":
        return '<a class="src" href="#key-labs">[structured labs, see Key labs]</a>'
    if nid is None or start is None or end is None:
        return '<span class="src">patient-level</span>'
    section = None
    if kind in ("mention", "condition"):
        rows = data.mentions if kind == "mention" else data.conditions
        hit = next((r for r in rows if isinstance(r.note_id, str) and r.note_id == nid and r.start == int(start)), None)
        section = hit.section if hit is not None else None
        text = text or (hit.text if hit is not None else None)
    else:
        section = section_of(run.sections(nid), start)
    quoted = f"“{_e(_str(text))}” " if _str(text) else ""
    return (f'<a class="src" href="#{_e(run.target(kind, nid, start, end))}">{quoted}'
            f'[{_e(source_label(nid, data.dates.get(nid), section))}]</a>')


def _key_labs_table(run: Run, data: _CaseData) -> str:
    rows = []
    for analyte in KEY_ANALYTES:
        for lab in (r for r in data.labs if r.analyte == analyte and not pd.isna(r.value_std)):
            flag = _str(lab.flag)
            anchor = run.target("lab", lab.note_id, lab.start, lab.end) if not pd.isna(lab.start) else "key-labs"
            section = section_of(run.sections(lab.note_id), lab.start)
            rows.append(
                f"<tr><td>{_e(analyte)}</td><td class=\"num\">{lab.value_std:.4g}</td><td>{_e(_str(lab.unit_std))}</td>"
                f"<td>{_e(flag)}</td><td>{_e(_str(lab.source))}</td>"
                f'<td><a class="src" href="#{_e(anchor)}">{_e(source_label(lab.note_id, lab.note_date, section))}</a></td></tr>'
            )
    if not rows:
        return '<p class="muted">No calcium, phosphate, PTH, kidney function or vitamin D values found.</p>'
    return ("<table class=\"key-labs\"><tr><th>analyte</th><th>value</th><th>unit</th><th>flag</th><th>from</th>"
            "<th>source</th></tr>" + "".join(rows) + "</table>")


def _note_tables(run: Run, note: dict, m: list, lab: list, c: list) -> str:
    """The note's mentions, labs and conditions as tables; each row links to its highlighted span."""
    nid, date = note["note_id"], note.get("note_date")
    ids: set[str] = set()

    def first_cell(kind: str, r, label: str) -> str:
        if pd.isna(r.start) or pd.isna(r.end):
            return f"<tr><td>{_e(label)}"
        anchor = anchor_id(kind, nid, r.start, r.end)
        row_id = f' id="r-{_e(anchor)}"' if anchor not in ids else ""
        ids.add(anchor)
        return f'<tr{row_id}><td><a href="#{_e(run.target(kind, nid, r.start, r.end))}">{_e(label)}</a>'

    parts = []
    if m:
        rows = "".join(
            first_cell("mention", r, r.text) + f"</td><td>{_e(r.concept)}</td>"
            f"<td>{_e(_str(r.sites).replace(';', ', ') or _str(r.site))}</td><td>{_e(_str(r.laterality))}</td>"
            f"<td>{_assertion_tag(r.assertion)}</td><td>{_e(_str(r.mechanism))}</td>"
            f'<td class="src">{_e(source_label(nid, date, r.section))}</td></tr>'
            for r in m)
        parts.append("<table class=\"mentions\"><tr><th>mention</th><th>concept</th><th>sites</th><th>laterality</th>"
                     f"<th>assertion</th><th>mechanism</th><th>source</th></tr>{rows}</table>")
    if lab:
        rows = "".join(
            first_cell("lab", r, r.analyte)
            + f'</td><td class="num">{_e(_lab_value(r))}</td><td>{_e(_str(r.flag))}</td><td>{_e(_str(r.source))}</td>'
            f"<td>{_e(_str(r.text))}</td>"
            f'<td class="src">{_e(source_label(nid, date, section_of(run.sections(nid), r.start)))}</td></tr>'
            for r in lab)
        parts.append("<table class=\"labs\"><tr><th>lab</th><th>value</th><th>flag</th><th>from</th><th>text</th>"
                     f"<th>source</th></tr>{rows}</table>")
    if c:
        rows = "".join(
            first_cell("condition", r, r.condition)
            + f"</td><td>{_e(_str(r.group))}</td><td>{_e(_str(r.detail))}</td><td>{_assertion_tag(r.assertion)}</td>"
            f'<td>{_e(_str(r.text))}</td><td class="src">{_e(source_label(nid, date, r.section))}</td></tr>'
            for r in c)
        parts.append("<table class=\"conditions\"><tr><th>condition</th><th>group</th><th>detail</th><th>assertion</th>"
                     f"<th>text</th><th>source</th></tr>{rows}</table>")
    if not parts:
        return ""
    summary = f"{len(m)} mentions, {len(lab)} lab values, {len(c)} conditions"
    is_open = "" if run.notes is not None else " open"
    return f"<details{is_open}><summary>{summary}</summary>{''.join(parts)}</details>"


def case_html(run: Run, patient_id: str, nav: str = "") -> str:
    """The body of one case's page (no <html> wrapper): header, reasons, key labs, notes."""
    data = _CaseData(run, patient_id)
    case = data.case
    out = [nav]
    out.append(
        f'<h1 id="case">Patient {_e(str(patient_id))} {_label_badge(case["label"])}</h1>'
        f'<p class="muted">confidence <b>{float(case["confidence"]):.2f}</b> · score {float(case["score"]):.2f} · '
        f'{int(case["n_notes"])} notes · {int(case["n_mentions"])} calcification mentions '
        f'({int(case["n_present"])} present) · model {_e(_str(case["model"]))}</p>'
    )
    out.append('<h2 id="reasons">Reasons, ranked, with their evidence</h2><ol class="reasons">')
    others = []
    for rank, reason, items in _grouped_reasons(case):
        weights = sorted({float(i.get("weight") or 0) for i in items}, key=abs, reverse=True)
        w = f' <span class="w">weight {weights[0]:+g}</span>' if weights else ""
        links = "".join(_pointer(run, i, data) for i in items) or '<span class="src">no pointer</span>'
        li = f'<li><b>{_e(reason)}</b>{w}<div class="ev">{links}</div></li>'
        (out if rank is not None else others).append(li)
    out.append("</ol>")
    if others:
        out.append(f'<details id="other-evidence"><summary>Other evidence considered ({len(others)})</summary>'
                   f'<ul class="reasons">{"".join(others)}</ul></details>')
    out.append('<h2 id="key-labs">Key labs</h2>' + _key_labs_table(run, data))
    out.append('<h2 id="notes">Notes</h2>' + legend_html())
    if run.notes is None:
        out.append('<p class="warn">Note text is not in this result folder (no notes.parquet); '
                   "re-run <code>calcmine run</code> to see the notes highlighted.</p>")
    toc = " ".join(f'<a class="src" href="#{_e(note_anchor(n))}">{_e(n)} · {_e(_str(d, "undated"))}</a>'
                   for n, d in ((n["note_id"], n["note_date"]) for n in data.notes))
    out.append(f'<p class="small">Jump to: {toc}</p>')
    for note in data.notes:
        nid = note["note_id"]
        m, lab, c = data.of_note("mentions", nid), data.of_note("labs", nid), data.of_note("conditions", nid)
        sections = run.sections(nid)
        sec_list = ", ".join(dict.fromkeys(s.kind for s in sections)) or "none found"
        out.append(
            f'<article class="note" id="{_e(note_anchor(nid))}"><header><h3>note {_e(nid)} · '
            f'{_e(_str(note.get("note_date"), "undated"))} · {_e(_str(note.get("note_type"), "type not given"))}</h3>'
            f'<span class="small muted">sections: {_e(sec_list)}'
            + (f' · from {_e(os.path.basename(_str(note.get("source"))))}' if _str(note.get("source")) else "")
            + "</span></header>"
        )
        if isinstance(note.get("text"), str):
            spans = note_spans(note, m, lab, c, sections)
            out.append(f'<div class="text">{highlight(note["text"], spans)}</div>')
        out.append(_note_tables(run, note, m, lab, c) + "</article>")
    return "".join(out)


def case_fragment(run: Run, patient_id: str) -> str:
    """A case with its own styles, for a notebook: ``display(HTML(case_fragment(run, "P001")))``."""
    return f'<div class="cm"><style>{CSS}</style><div class="wrap">{case_html(run, patient_id)}</div></div>'


def chart_fragment(svg: str) -> str:
    """An SVG chart with the report's styles, for a notebook."""
    return f'<div class="cm" style="background:#fff"><style>{CSS}</style>{svg}</div>'


def _ordered_cases(cases: pd.DataFrame) -> pd.DataFrame:
    order = {lb: i for i, lb in enumerate(LABELS)}
    return (cases.assign(_o=cases["label"].map(order).fillna(len(LABELS)))
            .sort_values(["_o", "confidence", "patient_id"], ascending=[True, False, True]).drop(columns="_o"))


def index_html(run: Run, files: dict[str, str]) -> str:
    """The summary page body: run facts, charts, and the table of cases."""
    from pipeline.labs import UnitTable

    cases = _ordered_cases(run.cases)
    info = run.info or {}
    counts = info.get("counts", {})
    facts = [f"{len(cases)} patients"]
    if counts:
        facts += [f"{counts.get('notes_processed', '?')} notes read", f"{counts.get('notes_failed', 0)} failed",
                  f"{counts.get('mentions', len(run.mentions))} mentions", f"{counts.get('labs', len(run.labs))} lab values",
                  f"{counts.get('conditions', len(run.conditions))} conditions"]
    if info.get("finished_at"):
        facts.append(f"finished {info['finished_at']}")
    if info.get("model"):
        facts.append(f"model {info['model']}")
    out = ['<h1>calcmine chart review</h1>', f'<p class="muted">{_e(" · ".join(facts))}</p>']
    per_label = cases["label"].value_counts()
    out.append('<p>' + " ".join(f'<a href="#label-{_e(lb)}">{_label_badge(lb)} {int(per_label[lb])}</a>'
                                for lb in LABELS if lb in per_label.index) + "</p>")
    units = UnitTable()
    lab_section = lab_sections(run)
    charts = [
        ("Cases per label", label_chart(cases, href=lambda lb: f"#label-{lb}")),
        ("Confidence by label", confidence_histogram(cases)),
        ("Sites with present calcification (patients)", site_chart(cases, run.mentions)),
    ]
    out.append('<h2 id="summary">Summary</h2><div class="grid3">'
               + "".join(f'<div class="card"><h3>{_e(t)}</h3>{svg}</div>' for t, svg in charts) + "</div>")
    lab_charts = []
    for analyte in CHART_ANALYTES:
        lab_charts.append((f"{analyte} by label", lab_strip(
            run.labs, cases, analyte, units.reference(analyte),
            href=lambda pid, lab: f"cases/{files[pid]}#{run.target('lab', lab.note_id, lab.start, lab.end)}"
            if pid in files and not pd.isna(lab.start) else f"cases/{files.get(pid, '')}",
            section=lab_section)))
    out.append('<h2 id="cases">Cases</h2><p class="small muted">Sorted by label, then confidence. '
               "Each reason names the note, date and section of its first piece of evidence; "
               "the case page has all of it, highlighted.</p>")
    out.append("<table class=\"cases\"><tr><th>patient</th><th>label</th><th>confidence</th><th>notes</th>"
               "<th>mentions (present)</th><th>top reasons [source]</th><th>key labs</th></tr>")
    seen_labels = set()
    mention_sections = {(r.note_id, int(r.start)): r.section for r in run.mentions.itertuples(index=False)}
    cond_sections = {(r.note_id, int(r.start)): r.section for r in run.conditions.itertuples(index=False)}
    dates = {}
    for frame in (run.mentions, run.labs, run.conditions):
        dates.update(zip(frame["note_id"], frame["note_date"]))
    for case in cases.to_dict("records"):
        pid, label = case["patient_id"], case["label"]
        row_id = f' id="label-{_e(label)}"' if label not in seen_labels else ""
        seen_labels.add(label)
        reasons = []
        for rank, reason, items in _grouped_reasons(case)[:3]:
            if rank is None:
                break
            src = ""
            if items and items[0].get("note_id") is not None and items[0].get("start") is not None:
                it = items[0]
                key = (it["note_id"], int(it["start"]))
                sec = {"mention": mention_sections, "condition": cond_sections}.get(it.get("kind"), {}).get(key)
                if it.get("kind") == "lab":
                    sec = section_of(run.sections(it["note_id"]), it["start"])
                src = (f' <a class="src" href="cases/{_e(files[pid])}#{_e(run.target(_str(it.get("kind"), "mention"), it["note_id"], it["start"], it["end"]))}">'
                       f'[{_e(source_label(it["note_id"], dates.get(it["note_id"]), sec))}]</a>')
            reasons.append(f"<li>{_e(reason)}{src}</li>")
        data_labs = run.rows("labs", pid)
        out.append(
            f'<tr class="case-row" data-patient="{_e(str(pid))}" data-label="{_e(str(label))}"{row_id}>'
            f'<td><a href="cases/{_e(files[pid])}">{_e(str(pid))}</a></td><td>{_label_badge(label)}</td>'
            f'<td class="num">{float(case["confidence"]):.2f}</td><td class="num">{int(case["n_notes"])}</td>'
            f'<td class="num">{int(case["n_mentions"])} ({int(case["n_present"])})</td>'
            f'<td><ol class="reasons small">{"".join(reasons)}</ol></td>'
            f'<td class="small">{_e(_key_labs_text(data_labs))}</td></tr>'
        )
    out.append("</table>")
    out.append('<h2 id="labs">Lab values by label</h2><p class="small muted">Every plausible value; shaded: '
               "the reference range; hover a dot for its patient, note, date and section, click it for the case.</p>"
               '<div class="grid3">'
               + "".join(f'<div class="card"><h3>{_e(t)}</h3>{svg}</div>' for t, svg in lab_charts) + "</div>")
    failures = info.get("failures") or []
    if failures:
        out.append(f'<h2 id="failures">Notes that failed ({len(failures)})</h2><table><tr><th>note</th><th>patient</th>'
                   "<th>stage</th><th>error</th></tr>" + "".join(
                       f"<tr><td>{_e(_str(f.get('note_id')))}</td><td>{_e(_str(f.get('patient_id')))}</td>"
                       f"<td>{_e(_str(f.get('stage')))}</td><td>{_e(_str(f.get('error')))}</td></tr>" for f in failures)
                   + "</table>")
    return "".join(out)


def _key_labs_text(labs: list) -> str:
    """The extreme value of each key analyte (lowest eGFR, else highest), naming its date and note."""
    parts = []
    for analyte in KEY_ANALYTES:
        values = [r for r in labs if r.analyte == analyte and not pd.isna(r.value_std)]
        if not values:
            continue
        pick = (min if analyte == "egfr" else max)(values, key=lambda r: r.value_std)
        flag = f" {pick.flag}" if _str(pick.flag) not in ("", "normal") else ""
        parts.append(f"{analyte} {_lab_value(pick)}{flag} ({_str(pick.note_date, 'undated')}, {pick.note_id})")
    return "; ".join(parts)


def lab_sections(run: Run):
    """A function naming the section of a lab row (for ``lab_strip(..., section=...)``)."""
    def section(lab) -> str | None:
        return section_of(run.sections(lab.note_id), lab.start) if run.notes is not None else None

    return section


def render_report(run: Run) -> dict[str, str]:
    """Every page of the report: {relative path: HTML}."""
    cases = _ordered_cases(run.cases)
    pids = list(cases["patient_id"])
    files = case_filenames(pids)
    top = '<a href="index.html">calcmine chart review</a>'
    pages = {"index.html": _page("calcmine chart review", index_html(run, files), top)}
    for i, pid in enumerate(pids):
        prev_ = f'<a href="{_e(files[pids[i - 1]])}">← {_e(pids[i - 1])}</a>' if i > 0 else ""
        next_ = f'<a href="{_e(files[pids[i + 1]])}">{_e(pids[i + 1])} →</a>' if i + 1 < len(pids) else ""
        nav = (f'<nav class="pager small"><a href="../index.html#cases">all cases</a>{prev_}{next_}'
               '<a href="#reasons">reasons</a><a href="#key-labs">key labs</a><a href="#notes">notes</a></nav>')
        top = f'<a href="../index.html">calcmine chart review</a> · case {_e(str(pid))}'
        pages[f"cases/{files[pid]}"] = _page(f"case {pid} - calcmine", case_html(run, pid, nav), top)
    return pages


def write_report(folder: str | Path, run: Run | None = None) -> Path:
    """Render ``folder``'s tables into ``folder/report/`` (files readable by their owner only)."""
    folder = Path(folder)
    run = run or load_run(folder)
    out = folder / "report"
    pages = render_report(run)
    for rel, text in pages.items():
        write_private(out / rel, text.encode("utf-8"))
    cases_dir = out / "cases"
    keep = {Path(rel).name for rel in pages if rel.startswith("cases/")}
    if cases_dir.is_dir():
        for stale in cases_dir.glob("*.html"):
            if stale.name not in keep:
                stale.unlink()
    return out / "index.html"


# ----------------------------------------------------------------------------------------------
# headless Chromium: screenshots and rendered DOM (tests and `calcmine report --screenshot`)

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--disable-default-apps", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(page: Path, *, screenshot: Path | None = None, dump_dom: bool = False, net_log: Path | None = None,
             size: tuple[int, int] = (1280, 1600), timeout: int = 120) -> str:
    """Render ``page`` in headless Chromium; returns the rendered DOM when ``dump_dom``."""
    exe = find_chromium()
    if exe is None:
        raise CalcmineError("chromium not found; install it (Debian: apt-get install chromium) to render the report")
    with tempfile.TemporaryDirectory(prefix="calcmine-chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            cmd.append(f"--screenshot={screenshot}")
        if dump_dom:
            cmd.append("--dump-dom")
        if net_log is not None:
            cmd.append(f"--log-net-log={net_log}")
        cmd.append(Path(page).resolve().as_uri())
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CalcmineError(f"chromium did not finish rendering {page} within {timeout} s") from None
    if done.returncode != 0 or (screenshot is not None and not screenshot.is_file()):
        raise CalcmineError(f"chromium failed on {page} (exit {done.returncode}); run it by hand to see why")
    if screenshot is not None:
        os.chmod(screenshot, 0o600)
    return done.stdout


def page_requests(net_log: Path) -> list[str]:
    """URLs a page (not the browser itself) asked for, from a Chromium ``--log-net-log`` file."""
    data = json.loads(Path(net_log).read_text(encoding="utf-8", errors="replace") or "{}")
    types = {v: k for k, v in data.get("constants", {}).get("logEventTypes", {}).items()}
    urls = []
    for event in data.get("events", []):
        params = event.get("params") or {}
        if types.get(event.get("type")) == "URL_REQUEST_START_JOB" and "url" in params:
            if "file://" in str(params.get("network_isolation_key", "")):  # started by a file:// page
                urls.append(params["url"])
    return urls


def screenshots(folder: str | Path, patient_id: str | None = None) -> list[Path]:
    """Screenshots of the summary page and one case page (the first, or ``patient_id``)."""
    report = Path(folder) / "report"
    if not (report / "index.html").is_file():
        raise CalcmineError(f"{folder}: no report/index.html; write it with `calcmine report {folder}`")
    shots = [report / "screenshot.png"]
    chromium(report / "index.html", screenshot=shots[0])
    cases = _ordered_cases(load_run(folder).cases)
    if len(cases):
        files = case_filenames(list(cases["patient_id"]))
        pid = cases["patient_id"].iloc[0] if patient_id is None else patient_id
        if pid not in files or not (report / "cases" / files[pid]).is_file():
            raise CalcmineError(f"{folder}: no case page for patient {pid}; write it with `calcmine report {folder}`")
        shots.append(report / "screenshot-case.png")
        chromium(report / "cases" / files[pid], screenshot=shots[1])
    return shots
