"""validation.history: one archived run per release, named by version and commit, ordered by when
they ran, small; the series the report draws, each point with its verdict against the release before."""
from __future__ import annotations

import json

import pytest

from validation import history, metrics

from . import run_data as rd


def _release_dir(d, **kw):
    metrics.write_latest(d / "userspace", rd.release(**kw))
    return d


@pytest.fixture
def releases(tmp_path):
    h = tmp_path / "history"
    # archived out of order: the history is ordered by when the runs ran, not by name or by archiving
    specs = [("c", dict(commit="c" * 40, core="0.3.0", slow=1.5, started="2026-11-28T10:00:00.000+00:00")),
             ("a", dict(commit="a" * 40, core="0.1.0", started="2026-11-26T10:00:00.000+00:00")),
             ("b", dict(commit="b" * 40 + "-dirty", core="0.2.0", started="2026-11-27T10:00:00.000+00:00"))]
    paths = {name: history.archive(_release_dir(tmp_path / name, **kw), h) for name, kw in specs}
    return h, paths


def test_entries_are_named_by_version_and_commit_and_kept_small(releases):
    h, paths = releases
    assert paths["a"] == h / f"0.1.0-{'a' * 12}.json"
    assert paths["b"] == h / f"0.2.0-{'b' * 12}-dirty.json"
    doc = metrics.read_document(paths["a"], "latest")
    assert "samples" not in doc["resources"] and doc["resources"]["idle"]["cpu_percent"] == 1.5
    assert doc["models"][0]["phases"]["inference_small"]["samples_ms"]    # what a comparison needs is kept
    assert paths["a"].stat().st_size < 40_000


def test_load_orders_by_when_the_runs_ran(releases):
    h, _ = releases
    (h / "README").write_text("not a run")
    (h / "notes").mkdir()
    entries = history.load(h)
    assert [e["name"] for e in entries] == [f"0.1.0-{'a' * 12}", f"0.2.0-{'b' * 12}-dirty", f"0.3.0-{'c' * 12}"]
    with pytest.raises(metrics.MetricsError, match="no such history directory"):
        history.load(h / "nope")


def test_series_marks_each_release_against_the_one_before(releases, tmp_path):
    h, _ = releases
    current = metrics.merge_runs([_release_dir(tmp_path / "now", commit="d" * 40, slow=1.5,
                                               started="2026-11-29T10:00:00.000+00:00")])
    s = history.series(history.load(h), current=current)
    assert s["releases"][-1] == "this run" and len(s["releases"]) == 4
    bert = next(m for m in s["models"] if m["model"] == "bert-tiny")
    assert [p["verdict"] for p in bert["points"]] == [None, "unchanged", "regression", "unchanged"]
    assert bert["points"][2]["latency"]["inference_large"]["value"] == pytest.approx(18.5 * 1.5)
    assert bert["points"][0]["parity"] == pytest.approx(1.2e-6)
    # a model failing in every release is marked so, not plotted
    evil = next(m for m in s["models"] if m["model"].startswith("evil"))
    assert {p["status"] for p in evil["points"]} == {"failed"} and all(not p["latency"] for p in evil["points"])
    # the current run is not appended twice when it is the last archived release
    again = history.series(history.load(h), current=metrics.merge_runs([tmp_path / "c"]))
    assert again["releases"][-1] == f"0.3.0-{'c' * 12}"


def test_cli_add_and_list(tmp_path, capsys):
    run = _release_dir(tmp_path / "run", commit="e" * 40)
    assert history.main(["add", str(run), "--to", str(tmp_path / "h")]) == 0
    assert capsys.readouterr().out == f"history: {tmp_path / 'h' / ('0.1.0-' + 'e' * 12 + '.json')}\n"
    _release_dir(tmp_path / "run2", commit="f" * 40, slow=2.0, started="2026-11-27T10:00:00.000+00:00")
    assert history.main(["add", str(tmp_path / "run2"), "--to", str(tmp_path / "h"), "--name", "v2"]) == 0
    capsys.readouterr()
    assert history.main(["list", str(tmp_path / "h")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("0.1.0-eeeeeeeeeeee") and lines[2].startswith("v2 ")
    assert lines[2].endswith("1 regression, 2 still failing")
    assert history.main(["list", str(tmp_path / "missing")]) == 2
    assert "no such history directory" in capsys.readouterr().err
    assert json.loads((tmp_path / "h" / "v2.json").read_text())["versions"]["git_commit"] == "f" * 40
