"""The HTML chart-review report: content, escaping, links, no network, and a headless Chromium render.

The Chromium tests run when a chromium binary is installed (.ci/run installs Debian's package);
their screenshots stay in the sample run's folder (report/screenshot*.png) and are copied to
$CALCMINE_ARTIFACTS when that is set.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipeline import cli, report
from pipeline.report import Span, highlight

CHROMIUM = report.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


class Page(HTMLParser):
    """ids, links, resource references and tag/class counts of one page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.resources: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.classes: list[set[str]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.classes.append(set((attrs.get("class") or "").split()))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        for name in ("src", "srcset", "action", "data", "poster", "xlink:href", "background", "formaction"):
            if name in attrs:
                self.resources.append((tag, name, attrs[name]))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, cls: str) -> int:
        return sum(cls in c for c in self.classes)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, root) -> Path:
    out = tmp_path_factory.mktemp("sample") / "run"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli.main(["run", "--no-prefect", "--out", str(out)]) == 0  # examples/archive, report included
    finally:
        os.chdir(cwd)
    return out


def pages_of(run: Path) -> dict[str, str]:
    base = run / "report"
    return {str(p.relative_to(base)): p.read_text(encoding="utf-8") for p in base.rglob("*.html")}


# ----------------------------------------------------------------------------------------------
# the renderer, unit by unit


def test_highlight_keeps_the_text_escapes_it_and_marks_overlaps():
    text = 'Ca 10.9 <b>"x" & calcified aorta.'
    spans = [
        Span(3, 7, "lab", "flag-high", "calcium 10.9 high", "lab", "l-a"),
        Span(18, 33, "mention", "as-present", "present · aorta", "m", "m-a"),
        Span(27, 33, "condition", "as-present", "", "c", "c-a"),
        Span(40, 50, "mention"),  # outside the text: dropped
    ]
    out = highlight(text, spans)
    assert "<b>" not in out and "&lt;b&gt;&quot;x&quot; &amp;" in out
    assert '<mark class="hl hl-lab flag-high"' in out and '<mark class="hl hl-mention as-present with-condition"' in out
    assert out.count('<a class="anchor" id="') == 3
    # dropping chips and tags gives back exactly the (escaped) text
    plain = re.sub(r'<span class="chip[^>]*>.*?</span>', "", out)
    assert re.sub(r"<[^>]+>", "", plain) == text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def test_case_file_names_are_safe_and_unique():
    names = report.case_filenames(["P001", "../../etc/passwd", "a b", "a_b", "<script>", "p1", "P1", ""])
    assert names["P001"] == "P001.html"
    for name in names.values():
        assert re.fullmatch(r"[A-Za-z0-9_-]+\.html", name), name
    assert len({n.lower() for n in names.values()}) == len(names)


def test_report_of_missing_or_partial_folder_is_a_one_line_error(tmp_path):
    for path in (tmp_path / "nope", tmp_path):
        result = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and "calcmine run --out" in result.stderr
        assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------
# the sample run's report


def test_report_has_every_case_and_their_highlights(sample_run):
    cases = pd.read_parquet(sample_run / "cases.parquet")
    notes = pd.read_parquet(sample_run / "notes.parquet")
    assert set(notes.columns) >= {"note_id", "patient_id", "note_date", "note_type", "text"}
    assert oct((sample_run / "notes.parquet").stat().st_mode & 0o777) == "0o600"
    run_json = json.loads((sample_run / "run.json").read_text())
    assert run_json["outputs"]["report"].endswith("report/index.html")
    pages = pages_of(sample_run)
    index = Page(pages["index.html"])
    assert index.count("case-row") == len(cases)
    files = report.case_filenames(list(cases["patient_id"]))
    for pid, label in zip(cases["patient_id"], cases["label"]):
        assert f'data-patient="{pid}" data-label="{label}"' in pages["index.html"]
        assert f"cases/{files[pid]}" in pages
    assert index.count("chart") >= 3 + 1 and "<svg" in pages["index.html"]
    for label in cases["label"].unique():
        assert f'id="label-{label}"' in pages["index.html"]
    mentions = pd.read_parquet(sample_run / "mentions.parquet")
    all_cases = "".join(v for k, v in pages.items() if k.startswith("cases/"))
    for cls in ("hl-mention", "as-present", "as-negated", "as-possible", "as-historical", "hl-condition",
                "hl-lab", "flag-high", "hl-section", "chip-mention", "chip-lab", "legend"):
        assert f"{cls}" in all_cases, cls
    # every mention is highlighted and anchored on its case page, and names its source
    for m in mentions.itertuples(index=False):
        page = pages[f"cases/{files[m.patient_id]}"]
        assert f'id="{report.anchor_id("mention", m.note_id, m.start, m.end)}"' in page
        assert f"note {m.note_id} · {m.note_date} · {m.section if isinstance(m.section, str) else 'no section'}" in page


def check_pages(run: Path) -> None:
    """No fetches, no absolute links, unique ids, and every link lands on a page and an element."""
    pages = pages_of(run)
    base = run / "report"
    for rel, text in pages.items():
        page = Page(text)
        assert not page.resources, (rel, page.resources[:3])
        for tag in ("script", "link", "img", "iframe", "object", "embed", "audio", "video", "source", "base"):
            assert tag not in page.tags, (rel, tag)
        assert "@import" not in text and "url(" not in text
        assert "http://" not in text and "https://" not in text, rel
        assert "default-src 'none'" in text  # the browser refuses any fetch that slipped in
        assert len(page.ids) == len(set(page.ids)), rel
        for href in page.hrefs:
            assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", href, re.I), (rel, href)  # relative only
            target, _, frag = href.partition("#")
            dest = (base / rel).parent / target if target else base / rel
            assert dest.resolve().is_file(), (rel, href)
            if frag:
                assert f'id="{frag}"' in pages[str(dest.resolve().relative_to(base.resolve()))], (rel, href)


def test_every_link_resolves_and_nothing_is_fetched(sample_run):
    check_pages(sample_run)


def test_evidence_pointers_link_to_highlighted_spans(sample_run):
    cases = pd.read_parquet(sample_run / "cases.parquet")
    files = report.case_filenames(list(cases["patient_id"]))
    pages = pages_of(sample_run)
    for case in cases.itertuples(index=False):
        page = pages[f"cases/{files[case.patient_id]}"]
        for reason in case.reasons.split(" | "):
            assert f"<b>{html.escape(reason)}</b>" in page, (case.patient_id, reason)
        for item in json.loads(case.evidence):
            anchor = report.anchor_id(item["kind"], item["note_id"], item["start"], item["end"])
            assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page, (case.patient_id, item)


def test_note_text_is_escaped_and_odd_patient_ids_are_safe(tmp_path):
    notes = pd.DataFrame([
        {"note_id": "x<1>", "patient_id": "../<img src=x onerror=alert(1)>", "note_date": "2024-01-02",
         "note_type": "radiology",
         "text": "FINDINGS: <script>alert('x')</script> Calcified granuloma & \"more\" at https://evil.example/x."},
        {"note_id": "n2", "patient_id": "p2", "note_date": "2024-01-03", "note_type": "progress",
         "text": "HPI: ESRD on HD. Ca 10.9, Phos 7.8.\nA/P: Calciphylaxis of both thighs."},
    ])
    src = tmp_path / "notes.csv"
    notes.to_csv(src, index=False)
    out = tmp_path / "out"
    assert cli.main(["run", str(src), "--out", str(out), "--no-prefect"]) == 0
    pages = pages_of(out)
    assert len(pages) == 3 and all(re.fullmatch(r"(index|cases/[A-Za-z0-9_-]+)\.html", k) for k in pages)
    everything = "".join(pages.values())
    assert "<script" not in everything and "<img" not in everything
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in everything
    assert "&lt;img src=x onerror=alert(1)&gt;" in everything
    for rel, text in pages.items():
        assert not Page(text).resources and not any(":" in h.split("#")[0] for h in Page(text).hrefs), rel
    assert 'hl hl-mention as-present' in everything


def test_report_command_and_run_without_notes(sample_run, tmp_path, capsys):
    copy = tmp_path / "old_run"
    shutil.copytree(sample_run, copy, ignore=shutil.ignore_patterns("report", "notes.parquet"))
    assert cli.main(["report", str(copy)]) == 0
    assert "report written" in capsys.readouterr().out
    pages = pages_of(copy)
    assert Page(pages["index.html"]).count("case-row") == len(pd.read_parquet(copy / "cases.parquet"))
    case_page = next(v for k, v in pages.items() if k.startswith("cases/"))
    assert "no notes.parquet" in case_page and '<div class="text">' not in case_page
    check_pages(copy)  # pointers land on the table rows instead of the (missing) highlighted text
    assert "note " in case_page and "class=\"mentions\"" in case_page  # tables still name their sources
    assert oct((copy / "report" / "index.html").stat().st_mode & 0o777) == "0o600"


# ----------------------------------------------------------------------------------------------
# headless Chromium


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_chromium_renders_the_report_with_cases_and_highlights(sample_run, tmp_path):
    cases = pd.read_parquet(sample_run / "cases.parquet")
    index = sample_run / "report" / "index.html"
    net_log = tmp_path / "net-index.json"
    dom = report.chromium(index, dump_dom=True, net_log=net_log)
    rows = re.findall(r'<tr class="case-row" data-patient="([^"]+)"', dom)
    assert sorted(rows) == sorted(cases["patient_id"])
    assert dom.count("<svg") >= 4
    assert report.page_requests(net_log) == []

    first = report._ordered_cases(cases)["patient_id"].iloc[0]
    page = sample_run / "report" / "cases" / report.case_filenames(list(cases["patient_id"]))[first]
    net_log = tmp_path / "net-case.json"
    dom = report.chromium(page, dump_dom=True, net_log=net_log)
    assert f"Patient {first}" in dom
    assert re.search(r'<mark class="hl hl-mention as-present[^"]*" title="[^"]+">', dom)
    assert '<mark class="hl hl-lab' in dom and '<mark class="hl hl-condition' in dom
    assert report.page_requests(net_log) == []


@needs_chromium
def test_chromium_screenshots_are_kept(sample_run, capsys):
    assert cli.main(["report", str(sample_run), "--screenshot"]) == 0
    shots = [sample_run / "report" / "screenshot.png", sample_run / "report" / "screenshot-case.png"]
    for shot in shots:
        assert png_size(shot) == (1280, 1600)
        assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    if os.environ.get("CALCMINE_ARTIFACTS"):
        dest = Path(os.environ["CALCMINE_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, dest / shot.name)


@needs_chromium
def test_the_network_check_would_catch_a_fetch(tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><p>x</p><img src="https://calcmine.invalid/pixel.png">', encoding="utf-8")
    net_log = tmp_path / "net.json"
    report.chromium(page, dump_dom=True, net_log=net_log)
    assert report.page_requests(net_log) == ["https://calcmine.invalid/pixel.png"]
