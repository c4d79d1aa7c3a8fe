"""The report's sections across releases and variants: against the baseline (comparison.json in the
run directory), history (--history), quantised variants (quantisation.json); what each says, and
what it says when its input is missing."""
from __future__ import annotations

import pytest

from validation import baseline, history, metrics
from validation.report import render_html
from validation.report.cli import main as report_main
from validation.report.releases import attach

from . import run_data as rd
from .test_report import Sections, squash


def releases_run(d):
    """A run directory as the runner leaves it with --baseline and --quantize, and a history of two
    releases before it: bert-tiny is 1.5x slower from the second release on."""
    out = d / "out"
    metrics.write_latest(out / "userspace", rd.release(slow=1.5, commit="c" * 40,
                                                       started="2026-11-28T10:00:00.000+00:00"))
    base = metrics.merge_runs([_latest(d / "base", commit="a" * 40)])
    doc = baseline.compare_runs(base, metrics.merge_runs([out]))
    metrics.write_document(out / "comparison.json", doc, "baseline_comparison")
    metrics.write_document(out / "quantisation.json", rd.quantisation(), "quantisation")
    h = d / "history"
    history.archive(d / "base", h)
    history.archive(_latest(d / "b", commit="b" * 40, slow=1.5, started="2026-11-27T10:00:00.000+00:00"), h)
    return out, h


def _latest(d, **kw):
    metrics.write_latest(d / "userspace", rd.release(**kw))
    return d


@pytest.fixture
def sections(tmp_path):
    out, h = releases_run(tmp_path)
    html = render_html(attach(metrics.merge_runs([out]), [out], h))
    return Sections(html)


def test_against_the_baseline(sections):
    text = squash(sections.text["baseline"])
    assert f"Baseline: core 0.1.0 @ {'a' * 12}" in text and f"This run: core 0.1.0 @ {'c' * 12}" in text
    assert "newly failing 0 not comparable 0 regression 1 still failing 2 fixed 0 improvement 0 unchanged 2" in text
    assert "bert-tiny (userspace) regression 1.5× [1.4" in text
    assert "(4.25 -> 6.38 ms; slower by 50%; bootstrap of 30 and 30 requests of one run each)" in text
    assert "intervals over the whole comparison (7 tests)" in text
    assert "a baseline run records no machine: the machine class cannot be checked" in text
    w = squash(sections.text["warnings"])
    assert "error 1 regression against the baseline bert-tiny (userspace): inference_small latency: 1.50x" in w


def test_history_over_releases(sections):
    text = squash(sections.text["history"])
    assert f"3 releases, oldest first" in text
    assert f"0.1.0-{'a' * 12} 0.1.0-{'b' * 12} this run" in text              # the table's header
    assert "bert-tiny (userspace) 4.25 ms / 18.5 ms · parity 1.2e-06 6.38 ms / 27.8 ms · parity 1.2e-06 regression" \
        in text
    tags = sections.tags["history"]
    assert tags.count("figure") == 5 and tags.count("figcaption") == 5         # one chart per model
    assert tags.count("svg") == 5 and tags.count("polyline") >= 4


def test_quantised_variants(sections):
    text = squash(sections.text["quantisation"])
    assert "minilm int8-dynamic recommended measured 21.0 MiB (0.25×) 2.28× [1.63, 3.03] faster" in text
    assert "sentence cosine (worst): 0.9888" in text
    assert "resnet-tiny int8-static recommended measured 52.7 KiB (2.00×) 0.66× [0.61, 0.78] slower" in text
    assert "calibration: 16 inputs" in text
    assert "silero int8-dynamic measured" not in text and "onnxruntime quantised no node of this graph" in text
    assert "already quantised (llama_ftype 15)" in text
    # the scatter: one point per measured variant, with its interval
    assert sections.tags["quantisation"].count("circle") == 3
    assert "speedup over the parent (model execution), whiskers: 95% CI (log scale)" in text


def test_each_section_says_why_it_is_empty(tmp_path):
    d = _latest(tmp_path / "plain", commit="a" * 40)
    s = Sections(render_html(attach(metrics.merge_runs([d]), [d])))
    assert "not measured in this run: no comparison.json in" in squash(s.text["baseline"])
    assert "python -m validation run --baseline RUN" in squash(s.text["baseline"])
    assert "no history directory given (report --history DIR)" in squash(s.text["history"])
    assert "no quantisation.json in" in squash(s.text["quantisation"])
    (tmp_path / "empty").mkdir()
    s = Sections(render_html(attach(metrics.merge_runs([d]), [d], tmp_path / "empty")))
    assert f"{tmp_path / 'empty'} holds no archived run" in squash(s.text["history"])


def test_cli_reads_them_from_the_run_directory(tmp_path, capsys):
    out, h = releases_run(tmp_path)
    assert report_main(["--in", str(out), "--history", str(h), "--out", str(tmp_path / "r.html")]) == 0
    s = Sections((tmp_path / "r.html").read_text())
    assert "regression 1" in squash(s.text["baseline"]) and s.tags["history"].count("svg") == 5
    assert report_main(["--in", str(out), "--history", str(tmp_path / "nope")]) == 2
    assert "no such history directory" in capsys.readouterr().err
