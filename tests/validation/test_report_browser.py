"""The report in a real headless Chromium (Debian's package), driven over the DevTools protocol:
it renders, logs no console error, runs no script, fetches nothing, and every section shows data.

Skipped where no Chromium is installed; `make test` installs the packages listed in
validation/report/browser-packages.txt first. Chromium runs with --no-sandbox only as root
(it refuses its sandbox there); see validation/report/browser.py.
"""
from __future__ import annotations

import struct

import pytest

from validation import metrics
from validation.report import write_report
from validation.report.browser import find_browser, inspect_page_sync
from validation.report.cli import main as report_main
from validation.report.releases import attach

from . import run_data as rd
from .test_metrics import write_run
from .test_report import SECTIONS
from .test_report_releases import releases_run

pytestmark = pytest.mark.skipif(
    find_browser() is None,
    reason="no Chromium binary (chromium, chromium-browser, google-chrome or $MLOS_CHROMIUM): "
           "apt-get install -y $(cat validation/report/browser-packages.txt)")

SECTIONS_JS = """Array.from(document.querySelectorAll('section[data-section]')).map(s => ({
  id: s.dataset.section,
  heading: s.querySelector('h2') ? s.querySelector('h2').textContent.trim() : null,
  chars: s.innerText.length,
  missing: Array.from(s.querySelectorAll('.missing')).map(m => m.innerText),
  svgs: Array.from(s.querySelectorAll('svg')).map(v => Math.round(v.getBoundingClientRect().width)),
}))"""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    user = write_run(d / "run-userspace", "userspace")
    kern = write_run(d / "run-kernel", "kernel", comparison=True)
    # with a baseline comparison, a history of two releases and quantised variants (test_report_releases)
    out, hist = releases_run(d / "releases")
    html = write_report(attach(metrics.merge_runs([user, kern]), [out], hist), d / "report.html")
    page = inspect_page_sync(html, screenshot=d / "report.png", evaluate={
        "sections": SECTIONS_JS,
        "pwned": "typeof window.__pwned",
        "hostile_shown": f"document.querySelector('#models').innerText.includes({rd.HOSTILE!r})",
        "bars": "document.querySelectorAll('#latency svg rect').length",
        "scripts": "document.scripts.length",
    })
    return html, page


def test_renders_with_the_right_title_and_a_real_screenshot(report):
    html, page = report
    assert page.title == "MLOS validation report"
    data = page.screenshot.read_bytes()
    width, height = png_size(data)
    assert width == 1280 and height > 3000          # the full page, not one window of it
    assert len(data) > 100_000                      # a blank page of that size compresses to a few KB


def test_no_console_error_no_exception_no_fetch(report):
    html, page = report
    assert page.console_errors == []
    assert page.exceptions == []
    assert page.requests == [html.resolve().as_uri()]


def test_every_section_is_in_the_dom_with_data(report):
    sections = {s["id"]: s for s in report[1].values["sections"]}
    assert list(sections) == list(SECTIONS)
    for name, heading in SECTIONS.items():
        assert sections[name]["heading"].startswith(heading)
        assert sections[name]["chars"] > len(heading) + 40, name
    assert sections["comparison"]["heading"] == "Kernel vs userspace emulated"
    # charts laid out at a readable width: CPU and RSS, set-up, latency
    assert len(sections["resources"]["svgs"]) == 2 and min(sections["resources"]["svgs"]) >= 400
    assert sections["setup"]["svgs"][0] >= 800 and sections["latency"]["svgs"][0] >= 800
    assert report[1].values["bars"] == 14
    # every category has a model in this run and latest.json was written: nothing says "not measured"
    assert sections["categories"]["missing"] == []
    assert sections["hardware"]["missing"] == [] and sections["resources"]["missing"] == []
    # across releases and variants: filled, one chart per model and mode over releases, the scatter
    assert [sections[k]["missing"] for k in ("baseline", "history", "quantisation")] == [[], [], []]
    assert len(sections["history"]["svgs"]) == 10 and min(sections["history"]["svgs"]) >= 300
    assert len(sections["quantisation"]["svgs"]) == 1 and sections["quantisation"]["svgs"][0] >= 700


def test_hostile_text_is_shown_not_run(report):
    values = report[1].values
    assert values["pwned"] == "undefined"
    assert values["hostile_shown"] is True
    assert values["scripts"] == 0


def test_make_report_screenshot_path(tmp_path, capsys):
    """What `make report-screenshot` runs: the CLI with --screenshot."""
    d = tmp_path / "run"
    for m in rd.models():
        metrics.write_model_result(d, m)            # a run cut short: no latest.json, no comparison
    png = tmp_path / "shot.png"
    assert report_main(["--in", str(d), "--out", str(tmp_path / "r.html"), "--screenshot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"report: screenshot {png} (" in out and out.rstrip().endswith("console errors: none")
    width, height = png_size(png.read_bytes())
    assert width == 1280 and height > 2000


def test_the_checker_sees_errors_exceptions_and_fetches(tmp_path):
    """The assertions above mean something: the same checker on a page that misbehaves."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><title>bad</title><img src="https://example.invalid/x.png">'
                   '<script>console.error("boom", 42); throw new Error("kaboom")</script>')
    page = inspect_page_sync(bad)
    assert page.title == "bad"
    assert "boom 42" in page.console_errors
    assert any("ERR_NAME_NOT_RESOLVED https://example.invalid/x.png" in e for e in page.console_errors)
    assert page.exceptions[0].startswith("Error: kaboom")
    assert page.requests == [bad.resolve().as_uri(), "https://example.invalid/x.png"]


def test_no_chromium_process_outlives_the_page(tmp_path, monkeypatch):
    """The profile is removed only after every process of Chromium's group has exited: removing
    it while a helper process still wrote there failed fresh-clone runs (ENOTEMPTY on 'Default')."""
    from validation.report import browser

    launched = []
    real_launch = browser._launch

    def spy(*args, **kw):
        proc = real_launch(*args, **kw)
        launched.append((proc, args[1]))
        return proc

    monkeypatch.setattr(browser, "_launch", spy)
    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><title>p</title><p>hello</p>")
    for _ in range(3):
        assert inspect_page_sync(page).title == "p"
    assert len(launched) == 3
    for proc, profile in launched:
        assert not browser._group_alive(proc.pid), "a Chromium process outlived inspect_page"
        assert not (tmp_path / profile).exists()
