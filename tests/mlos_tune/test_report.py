"""The tuning report: self-contained HTML in the validator's style, checked in a real headless
Chromium (skipped, saying why, where none is installed): it renders, runs no script, fetches
nothing, every section holds data, the scatter and effect charts are drawn, hostile text is shown
as text."""
from __future__ import annotations

import json
import re
import struct

import pytest

from mlos_tune.cli import main
from mlos_tune.report import render_html, write_report
from mlos_tune.report.charts import pareto_front
from validation.report.browser import find_browser, inspect_page_sync

SECTIONS = ["summary", "warnings", "tradeoff", "effects", "top", "final", "experiments", "versions", "hardware"]
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
needs_chromium = pytest.mark.skipif(
    find_browser() is None, reason="no Chromium binary (chromium, chromium-browser, google-chrome or $MLOS_CHROMIUM): "
                                   "apt-get install -y $(cat validation/report/browser-packages.txt)")

SECTIONS_JS = """Array.from(document.querySelectorAll('section[data-section]')).map(s => ({
  id: s.dataset.section, chars: s.innerText.length,
  missing: Array.from(s.querySelectorAll('.missing')).map(m => m.innerText),
  svgs: Array.from(s.querySelectorAll('svg')).map(v => Math.round(v.getBoundingClientRect().width)),
}))"""


def test_pareto_front():
    pts = [{"x": 10, "y": 5}, {"x": 20, "y": 9}, {"x": 15, "y": 9}, {"x": 5, "y": 2}, {"x": 20, "y": 12}]
    assert [(p["x"], p["y"]) for p in pareto_front(pts)] == [(5, 2), (10, 5), (20, 9)]


@pytest.fixture(scope="module")
def hostile_results(batching_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    doc = json.loads((batching_run["out"] / "results.json").read_text())
    doc["experiments"].append({"id": "exp-999", "label": None, "config": {"concurrency": 1}, "options": {},
                               "concurrency": 1, "status": "failed", "failure": "crash", "reason": HOSTILE})
    (d / "results.json").write_text(json.dumps(doc))
    return d


def test_html_sections(batching_run):
    html = render_html(json.loads((batching_run["out"] / "results.json").read_text()))
    assert html.count('data-section="') == len(SECTIONS)
    assert "Content-Security-Policy" in html and "<script" not in html
    assert not re.search(r'(src|href)="(?!data:)', html)         # nothing to fetch


@needs_chromium
def test_report_in_chromium(hostile_results, tmp_path):
    html = write_report(hostile_results)
    page = inspect_page_sync(html, screenshot=tmp_path / "report.png", evaluate={
        "sections": SECTIONS_JS, "pwned": "typeof window.__pwned", "scripts": "document.scripts.length",
        "points": "document.querySelectorAll('#tradeoff svg circle.pt').length",
        "effects": "document.querySelectorAll('#effects svg').length",
        "top_rows": "document.querySelectorAll('#top tr').length",
        "hostile_shown": f"document.querySelector('#experiments').innerText.includes({HOSTILE!r})",
    })
    assert page.title == "MLOS tuning report"
    assert page.console_errors == [] and page.exceptions == []
    assert page.requests == [html.resolve().as_uri()]
    v = page.values
    sections = {s["id"]: s for s in v["sections"]}
    assert list(sections) == SECTIONS
    for name, s in sections.items():
        assert s["chars"] > 60 and s["missing"] == [], (name, s)
    assert v["points"] == 2 and v["effects"] == 1 and v["top_rows"] == 3
    assert min(sections["tradeoff"]["svgs"]) >= 600
    assert v["pwned"] == "undefined" and v["scripts"] == 0 and v["hostile_shown"] is True
    data = page.screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height > 1500 and len(data) > 80_000


@needs_chromium
def test_report_command_with_screenshot(batching_run, tmp_path, capsys):
    png = tmp_path / "shot.png"
    assert main(["report", str(batching_run["out"]), "--out", str(tmp_path / "r.html"), "--screenshot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"mlos-tune: screenshot {png} (" in out and out.rstrip().endswith("console errors: none")
