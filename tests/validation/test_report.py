"""validation.report: what the HTML says, section by section, for real-shaped runs; escaping of
text from outside; no network; the CLI."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from validation import metrics
from validation.report import render_html, svg
from validation.report.cli import main as report_main
from validation.report.format import ms
from validation.results import SCHEMA_VERSION, latest_summary

from . import run_data as rd
from .test_metrics import write_run

SECTIONS = {"summary": "Summary", "warnings": "Warning signs", "versions": "Versions", "hardware": "Hardware",
            "resources": "Resource usage", "setup": "Install & set-up times",
            "latency": "Inference latency per model", "categories": "Status by category",
            "comparison": "Kernel vs userspace", "baseline": "Against the baseline", "history": "History over releases",
            "quantisation": "Quantised variants", "models": "Models"}


class Sections(HTMLParser):
    """The visible text of each <section data-section=...>, its <h2>, and its element tags."""

    def __init__(self, html: str):
        super().__init__()
        self.text: dict[str, str] = {}
        self.heading: dict[str, str] = {}
        self.tags: dict[str, list[str]] = {}
        self._cur, self._in_h2, self._skip = None, False, 0
        self.feed(html)

    def _gap(self):
        # element boundaries separate words on screen (cells, cards); squash() collapses the runs
        if self._cur:
            self.text[self._cur] += " "
            if self._in_h2:
                self.heading[self._cur] += " "

    def handle_starttag(self, tag, attrs):
        self._gap()
        a = dict(attrs)
        if tag == "section":
            self._cur = a["data-section"]
            self.text[self._cur], self.heading[self._cur], self.tags[self._cur] = "", "", []
        elif self._cur:
            self.tags[self._cur].append(tag)
        self._in_h2 |= tag == "h2"
        self._skip += tag == "title"            # SVG tooltips are not on screen

    def handle_endtag(self, tag):
        self._gap()
        if tag == "section":
            self._cur = None
        self._in_h2 &= tag != "h2"
        self._skip -= tag == "title"

    def handle_data(self, data):
        if self._cur and not self._skip:
            self.text[self._cur] += data
            if self._in_h2:
                self.heading[self._cur] += data


def squash(s: str) -> str:
    return re.sub(r"\s+", " ", s)


@pytest.fixture
def merged(tmp_path):
    user = write_run(tmp_path / "run-userspace", "userspace")
    kern = write_run(tmp_path / "run-kernel", "kernel", comparison=True)
    return metrics.merge_runs([user, kern])


@pytest.fixture
def page(merged):
    html = render_html(merged)
    return html, Sections(html)


def test_every_section_is_there_with_its_heading(page):
    html, s = page
    assert list(s.heading) == list(SECTIONS)
    assert {k: squash(v).strip() for k, v in s.heading.items()} == {**SECTIONS, "comparison": "Kernel vs userspace emulated"}
    assert "<title>MLOS validation report</title>" in html


def test_summary_cards(page):
    text = squash(page[1].text["summary"])
    assert "Success rate 60.0 % 6 success · 2 partial · 2 failed" in text
    assert "Total duration 2 min 2 s wall time of the run" in text        # 2 x 61234.5 ms
    assert "Inferences 14 / 16 87.5 % successful" in text
    assert "Models 10 5 kernel · 5 userspace" in text


def test_versions_hardware_and_resources(page):
    s = page[1]
    assert "git_commit 7e48640" in squash(s.text["versions"])
    hw = squash(s.text["hardware"])
    assert "cpu_model AMD EPYC 7B13" in hw and "ram_bytes 24.0 GiB" in hw and "gpus none" in hw
    res = squash(s.text["resources"])
    assert "CPU 1.5 % 187.5 %" in res and "RSS 150.0 MiB 900.0 MiB" in res
    assert s.tags["resources"].count("svg") == 2 and s.tags["resources"].count("polyline") == 4   # CPU, RSS + idle lines
    assert "idle baseline" in res and "time (s)" in res


def test_setup_latency_categories_and_comparison(page):
    s = page[1]
    setup = squash(s.text["setup"])
    assert "Core start-up 842 ms" in setup and "Install, all models 30.47 s" in setup
    assert "bert-tiny (userspace, run-userspace) success 900 ms 400 ms 150 ms 1.50 s success 120 ms" in setup
    lat = squash(s.text["latency"])
    assert "4.25 [4, 4.6] ms (n=50) 5.06 ms 6.44 ms 50 (+5 warm-up)" in lat
    assert "large: not measured" in lat                     # whisper's large input timed out
    # a bar per measured latency: 7 per mode (whisper 1, the failed install 0, three models 2)
    assert s.tags["latency"].count("rect") == 14 and s.tags["latency"].count("path") == 14
    cats = squash(s.text["categories"])
    for cat, counts in (("nlp", "2 success 0 partial 0 failed"), ("audio", "0 success 2 partial 0 failed"),
                        ("multimodal", "0 success 0 partial 2 failed")):
        assert f"{cat} {counts}" in cats
    comp = squash(s.text["comparison"])
    assert ("bert-tiny run-kernel single_stream latency_ms p50 4 [3.9, 4.1] ms (n=200) 4.25 [4.1, 4.4] ms (n=200) "
            "-0.25 ms 1.06× [1.01, 1.11] kernel faster emulated") in comp
    assert "1.01× [0.98, 1.04] no significant difference" in comp
    assert "compare the ratios, not the milliseconds" in comp


def test_warning_signs_are_flagged(page):
    w = squash(page[1].text["warnings"])
    assert "bug 0 ms timings (a data bug: a phase that ran took time)" in w
    assert "resnet-tiny (userspace, run-userspace): register is success in 0 ms" in w
    assert "error 2 timeout(s)" in w
    assert "whisper-tiny (kernel, run-kernel): inference_large timed out after 30.00 s: no answer within 30 s" in w
    assert "error 2 failure(s) in phase install" in w and "error 2 parity failure(s)" in w
    assert "gpt2-tiny (userspace, run-userspace): inference_small differs from pytorch: max |diff| 0.031 > tolerance 0.0001" in w
    assert "info Kernel comparison is emulated" in w
    # most severe first
    assert w.index("0 ms timings") < w.index("timeout(s)") < w.index("Kernel comparison is emulated")
    # and the 0 ms cell itself is marked in the models table
    assert page[0].count('class="t bug"') == 2 + 2                  # models table + set-up table, both modes


def test_a_missing_comparison_and_a_clean_run_are_said_so(tmp_path):
    d = tmp_path / "clean"
    metrics.write_model_result(d, rd.model("bert-tiny", "nlp"))
    metrics.write_latest(d, latest_summary([rd.model("bert-tiny", "nlp").to_dict()], versions=rd.VERSIONS,
                                                    hardware=rd.HARDWARE, resources=rd.RESOURCES,
                                                    timings=rd.TIMINGS, runs=["clean"]))
    s = Sections(render_html(metrics.load_run(d)))
    w = squash(s.text["warnings"])
    assert w.strip() == (f"Warning signs warn Kernel vs userspace comparison missing no kernel-comparison.json in {d}: "
                         "the kernel path was not measured against userspace")
    assert f"not measured in this run: no kernel-comparison.json in {d}" in squash(s.text["comparison"])
    assert "vision not measured in this run: no vision model in this run's matrix" in squash(s.text["categories"])


def test_a_run_without_latest_json_says_why_each_section_is_empty(tmp_path):
    d = tmp_path / "partial-run"
    for m in rd.models():
        metrics.write_model_result(d, m)
    html = render_html(metrics.load_run(d))
    s = Sections(html)
    why = f"(no metrics/latest.json: {d})"
    assert f"not measured in this run: hardware {why}" in squash(s.text["hardware"])
    assert f"not measured in this run: resource usage {why}" in squash(s.text["resources"])
    assert f"not measured in this run: core start-up or total timings {why}" in squash(s.text["setup"])
    assert "Total duration 42.35 s sum of the models' phases (no run_total_ms recorded)" in squash(s.text["summary"])
    # never a blank section: each says something beyond its heading
    for name in SECTIONS:
        assert len(squash(s.text[name]).strip()) > len(SECTIONS[name]) + 20, name


def test_no_latency_says_which_phases_ran(tmp_path):
    m = rd.model("x", "nlp", inference_small=rd.phase("failed", 5.0, "boom"), inference_large=rd.phase("skipped", 0.0))
    metrics.write_model_result(tmp_path, m)
    s = Sections(render_html(metrics.load_run(tmp_path)))
    assert ("not measured in this run: no inference phase recorded a latency (1 failed, 1 skipped)"
            in squash(s.text["latency"]))


def test_skipped_modes_and_extra_hardware_fields_are_shown(tmp_path):
    d = tmp_path / "run"
    s = rd.summary()
    s["hardware"].update(disk_total_bytes=250 * (1 << 30), gpu_note="no NVIDIA driver",
                         kernel_module={"backend": "userspace", "device": {"present": False}, "error": None})
    s.update(skipped_modes={"kernel": "kernel mode skipped: /dev/mlos-ml does not exist"},
             skipped_models={"tinyllama": "enable_llm_tests: false in models.yaml settings"})
    metrics.write_latest(d, s)
    sec = Sections(render_html(metrics.load_run(d)))
    w = squash(sec.text["warnings"])
    assert "warn 1 mode(s) not run kernel: kernel mode skipped: /dev/mlos-ml does not exist" in w
    assert "info 1 model(s) of the suite not run tinyllama: enable_llm_tests: false in models.yaml settings" in w
    hw = squash(sec.text["hardware"])
    assert "disk_total_bytes 250.0 GiB" in hw and "gpu_note no NVIDIA driver" in hw
    assert "kernel_module backend: userspace, device: present: False" in hw


def test_hostile_names_and_error_texts_are_escaped(page):
    html, s = page
    assert "<script" not in html and "onerror=" not in html.replace("onerror=&#34;", "")
    assert "<b>name</b>" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.__pwned=2&#34;&gt;" in html
    assert "evil&lt;b&gt;name&lt;/b&gt; (kernel, run-kernel)" in html        # tables, and the SVG labels
    assert rd.HOSTILE in s.text["models"]                   # shown to the reader as the text it is


def test_nothing_is_loaded_from_the_network(page):
    html = page[0]
    assert not re.findall(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"https?://", html)
    assert re.findall(r"<link[^>]*>", html) == ['<link rel="icon" href="data:,">']
    assert "default-src 'none'" in html                      # and the CSP forbids it anyway


def test_nice_ticks_and_log_scale():
    assert svg.nice_ticks(0, 187.5) == [0, 50, 100, 150, 200]
    assert svg.nice_ticks(0, 0.9) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    sc = svg.Scale(3.0, 2000.0, 0, 300, log=True)
    assert sc.ticks == [1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert sc(100.0) == pytest.approx(150.0) and sc(0.5) == 0.0


def test_cli_merges_run_dirs(tmp_path, capsys):
    user = write_run(tmp_path / "run-userspace", "userspace")
    kern = write_run(tmp_path / "run-kernel", "kernel", comparison=True)
    out = tmp_path / "r" / "report.html"
    assert report_main(["--in", str(user), "--in", str(kern), "--out", str(out)]) == 0
    assert capsys.readouterr().out == (f"report: {out} (10 model results from 2 run(s): 6 success, "
                                       "2 partial, 2 failed)\n")
    assert "run-userspace, run-kernel" in out.read_text()


def test_cli_refuses_a_file_of_another_major_version(tmp_path, capsys):
    d = write_run(tmp_path / "run", "userspace")
    latest = d / "metrics" / "latest.json"
    latest.write_text(latest.read_text().replace(f'"schema_version": "{SCHEMA_VERSION}"', '"schema_version": "2.1"', 1))
    assert report_main(["--in", str(d), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err == (f"report: {latest}: schema_version 2.1 is major 2; this validator reads "
                                       "major 1 (1.x, written as 1.1); use an mlos-py that reads major 2\n")
    assert not (tmp_path / "r.html").exists()


def test_report_of_a_real_small_run(tmp_path):
    """validation.runner on one real model (silero-vad: ONNX files from its wheel) through a real
    core, then the report from what it wrote: every figure on the page is the run's own."""
    runner = pytest.importorskip("validation.runner")
    out = tmp_path / "validation-results"
    runner.run(runner.RunOptions(suite="offline", models=["silero-vad"], mode="userspace", out_dir=out,
                                 repetitions=2, progress=False))
    run = metrics.merge_runs([out])
    s = run["summary"]
    (m,) = s["models"]
    assert (m["model_name"], m["mode"], m["category"]) == ("silero-vad", "userspace", "audio")
    sec = Sections(render_html(run))
    assert "Models 1 1 userspace" in squash(sec.text["summary"])
    # a real core started and was sampled: its start-up time and CPU/RSS samples are on the page
    assert s["timings"]["core_startup_ms"] > 0 and s["resources"]["samples"]
    assert f"Core start-up {ms(s['timings']['core_startup_ms'])}" in squash(sec.text["setup"])
    assert sec.tags["resources"].count("svg") == 2
    assert f"cpu_model {s['hardware']['cpu_model']}" in squash(sec.text["hardware"])
    # the models row shows each phase's status as recorded, and any failure is a warning sign
    cells = " ".join(f"{ph['status']} {'—' if ph['status'] == 'skipped' else ms(ph['time_ms'])}"
                     for ph in (m["phases"][p] for p in ("install", "register", "inference_small", "inference_large")))
    assert (f"silero-vad (userspace) audio {m['format']} offline {m['status']} {cells} {ms(m['total_time_ms'])}"
            in squash(sec.text["models"]))
    for p, ph in m["phases"].items():
        if ph["status"] == "failed":
            assert f"failure(s) in phase {p}" in squash(sec.text["warnings"])
    assert "not measured in this run: no kernel-comparison.json" in squash(sec.text["comparison"])


def test_load_figures_missing_say_why(tmp_path):
    s = rd.summary()
    s["resources"] = {**rd.RESOURCES, "load": {"cpu_percent_peak": None, "rss_peak_bytes": None}}
    metrics.write_latest(tmp_path, s)
    res = squash(Sections(render_html(metrics.load_run(tmp_path))).text["resources"])
    assert "CPU 1.5 % —" in res and "RSS 150.0 MiB —" in res
    assert ("not measured in this run: no resource sample was taken under load "
            "(the inference phases were shorter than the sampling interval)") in res


def test_cli_writes_into_the_first_run_dir_by_default(tmp_path, capsys):
    out = tmp_path / "validation-results"
    write_run(out / "userspace", "userspace")
    write_run(out / "kernel", "kernel")
    assert report_main(["--in", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"report: {out / 'report.html'} (10 model results from 2 run(s)")
    assert "Models 10 5 kernel · 5 userspace" in squash(Sections((out / "report.html").read_text()).text["summary"])
