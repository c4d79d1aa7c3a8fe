"""validation.metrics: the schema accepts what the runner writes and refuses the rest precisely,
writes are atomic, runs load and merge."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from validation import metrics
from validation.metrics import MetricsError, SchemaValidationError, SchemaVersionError
from validation.results import SCHEMA_VERSION

from . import run_data as rd

ORIGINAL_RESULT_FIELDS = {"model_name", "started_at", "completed_at", "versions", "status", "phases",
                          "total_time_ms"}
ORIGINAL_LATEST_FIELDS = {"generated_at", "total_models", "successful_models", "partial_models",
                          "failed_models", "total_inferences", "successful_inferences", "versions",
                          "hardware", "resources", "timings", "models"}


def write_run(d: Path, mode: str, comparison: bool = False, runs=None) -> Path:
    for m in rd.models(mode):
        metrics.write_model_result(d, m)
    metrics.write_latest(d, rd.summary(mode, runs))
    if comparison:
        metrics.write_comparison(d, rd.comparison())
    return d


def test_schema_is_valid_draft_2020_12_and_versioned():
    s = metrics.schema()
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$defs"]["schema_version"]["pattern"] == "^1\\.[0-9]+$"
    assert SCHEMA_VERSION.startswith("1.")


def test_model_result_written_with_the_original_fields(tmp_path):
    m = rd.models()[0]
    path = metrics.write_model_result(tmp_path, m)
    assert path == tmp_path / "bert-tiny-result.json"
    doc = json.loads(path.read_text())
    assert doc == json.loads(json.dumps(m.to_dict()))
    assert ORIGINAL_RESULT_FIELDS <= doc.keys()
    assert set(doc["phases"]) == {"install", "register", "inference_small", "inference_large"}
    assert doc["phases"]["install"].keys() >= {"status", "time_ms", "error"}
    assert doc["status"] == "success" and doc["total_time_ms"] == pytest.approx(1500 + 120 + 4.25 * 55 + 18.5 * 55)
    assert doc["phases"]["inference_small"]["latency_ms"] == {"value": 4.25, "ci_low": 4.0, "ci_high": 4.6, "n": 50}
    # readable back, and shared like any results file (mkstemp would leave 0600)
    assert metrics.read_document(path, "model_result") == doc
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_file_names_are_safe(tmp_path):
    assert metrics.safe_name("hf/org/model@main") == "hf_org_model_main"
    assert metrics.safe_name("../../etc/passwd") == "etc_passwd"
    m = rd.models()[3]                      # "evil<b>name</b>"
    path = metrics.write_model_result(tmp_path, m)
    assert path.parent == tmp_path and path.name == "evil_b_name_b-result.json"


def test_latest_and_comparison_validate_and_the_top_level_schema_dispatches(tmp_path):
    latest = json.loads(metrics.write_latest(tmp_path, rd.summary()).read_text())
    comp = json.loads(metrics.write_comparison(tmp_path, rd.comparison()).read_text())
    assert ORIGINAL_LATEST_FIELDS <= latest.keys()
    assert (latest["total_models"], latest["successful_models"], latest["partial_models"],
            latest["failed_models"], latest["total_inferences"], latest["successful_inferences"]) == (5, 3, 1, 1, 8, 7)
    assert comp["rows"][0]["speedup"] == {"value": 1.0625, "ci_low": 1.01, "ci_high": 1.11, "n": 200}
    assert (tmp_path / "metrics" / "latest.json").is_file() and (tmp_path / "kernel-comparison.json").is_file()
    # the file's top level (if/then/else on the distinguishing key) picks the right document
    top = Draft202012Validator(metrics.schema())
    assert top.is_valid(latest) and top.is_valid(comp) and top.is_valid(latest["models"][0])
    broken = copy.deepcopy(comp)
    broken["rows"][0]["kernel"] = 3.5
    assert not top.is_valid(broken)


def _bad_result(mutate) -> dict:
    doc = rd.models()[0].to_dict()
    mutate(doc)
    return doc


@pytest.mark.parametrize("mutate, path, message", [
    (lambda d: d["phases"]["install"].update(status="exploded"), "phases.install.status",
     "'exploded' is not one of ['success', 'failed', 'skipped', 'timeout']"),
    (lambda d: d["phases"].pop("register"), "phases", "'register' is a required property"),
    (lambda d: d["phases"]["install"].update(time_ms=-1.0), "phases.install.time_ms",
     "-1.0 is less than the minimum of 0"),
    (lambda d: d["phases"]["inference_small"].update(latency_ms={"value": 1.0}),
     "phases.inference_small.latency_ms", "'ci_low' is a required property"),
    (lambda d: d.update(status="ok"), "status", "'ok' is not one of ['success', 'partial', 'failed']"),
    (lambda d: d.pop("model_name"), "<document>", "'model_name' is a required property"),
    (lambda d: d.update(started_at="yesterday"), "started_at", "'yesterday' does not match"),
    (lambda d: d["phases"]["inference_large"].update(repetitions=2.5), "phases.inference_large.repetitions",
     "2.5 is not of type 'integer'"),
])
def test_bad_model_results_are_refused_with_their_path(tmp_path, mutate, path, message):
    with pytest.raises(SchemaValidationError) as e:
        metrics.write_model_result(tmp_path, _bad_result(mutate))
    assert any(p == path and m.startswith(message) for p, m in e.value.errors), e.value.errors
    assert f"{path}: {message}" in str(e.value) and str(tmp_path) in str(e.value)
    assert not list(tmp_path.iterdir())         # nothing written, not even a temp file


def test_errors_inside_lists_name_the_index(tmp_path):
    summary = rd.summary()
    summary["models"][1]["mode"] = "hybrid"
    with pytest.raises(SchemaValidationError) as e:
        metrics.write_latest(tmp_path, summary)
    assert e.value.errors == [("models[1].mode", "'hybrid' is not one of ['kernel', 'userspace']")]
    comp = metrics._plain(rd.comparison())
    comp["rows"][1]["verdict"] = "faster"
    with pytest.raises(SchemaValidationError) as e:
        metrics.write_comparison(tmp_path, comp)
    assert e.value.errors[0][0] == "rows[1].verdict"


@pytest.mark.parametrize("version, expected", [
    ("2.0", "schema_version 2.0 is major 2; this validator reads major 1 (1.x, written as 1.1)"),
    ("0.9", "schema_version 0.9 is major 0; this validator reads major 1"),
    ("one", "schema_version 'one' is not MAJOR.MINOR"),
    (None, "no schema_version field; this validator reads schema 1.x files only"),
])
def test_unknown_major_versions_are_refused_on_read(tmp_path, version, expected):
    doc = rd.models()[0].to_dict()
    if version is None:
        del doc["schema_version"]
    else:
        doc["schema_version"] = version
    path = tmp_path / "bert-tiny-result.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SchemaVersionError) as e:
        metrics.load_run(tmp_path)
    assert str(e.value) == f"{path}: {expected}" or str(e.value).startswith(f"{path}: {expected}")


def test_a_newer_minor_version_with_added_fields_is_read(tmp_path):
    doc = rd.models()[0].to_dict()
    doc["schema_version"] = "1.7"
    doc["energy_joules"] = 12.5                 # a field a later 1.x adds
    (tmp_path / "bert-tiny-result.json").write_text(json.dumps(doc))
    run = metrics.load_run(tmp_path)
    assert run["summary"]["models"][0]["energy_joules"] == 12.5


def test_failed_write_leaves_the_previous_file_intact(tmp_path):
    good = rd.models()[0]
    path = metrics.write_model_result(tmp_path, good)
    before = path.read_bytes()
    # valid by the schema, but NaN is not JSON: the encoder fails half-way through the temp file
    nan = rd.models()[0]
    nan.phases["inference_large"].latency_ms.value = float("nan")
    with pytest.raises(MetricsError, match="not written, the previous file is unchanged: Out of range float"):
        metrics.write_model_result(tmp_path, nan)
    # details is an open object: a stray non-JSON value also fails mid-stream
    odd = rd.models()[0]
    odd.phases["install"].details["files"] = {"model.onnx"}
    with pytest.raises(MetricsError, match="Object of type set is not JSON serializable"):
        metrics.write_model_result(tmp_path, odd)
    # and a schema failure never opens a file at all
    bad = rd.models()[0]
    bad.status = "fine"
    with pytest.raises(SchemaValidationError):
        metrics.write_model_result(tmp_path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert-tiny-result.json"]


def test_load_run_from_latest(tmp_path):
    write_run(tmp_path, "kernel", comparison=True)
    run = metrics.load_run(tmp_path)
    assert run["notes"] == [] and run["dirs"] == [str(tmp_path)]
    assert run["summary"]["total_models"] == 5 and run["summary"]["hardware"]["cpu_model"] == "AMD EPYC 7B13"
    assert [r["verdict"] for r in run["comparison"]["rows"]] == ["kernel faster", "no significant difference"]


def test_load_run_from_result_files_only(tmp_path):
    for m in rd.models():
        metrics.write_model_result(tmp_path, m)
    run = metrics.load_run(tmp_path)
    s = run["summary"]
    assert (s["total_models"], s["successful_models"], s["partial_models"], s["failed_models"]) == (5, 3, 1, 1)
    assert s["hardware"] == {} and s["versions"] == rd.VERSIONS and s["runs"] == [tmp_path.name]
    assert run["notes"][0].endswith("no metrics/latest.json, so versions come from the model results "
                                    "and hardware, resources and timings were not recorded")
    assert run["comparison"] is None and run["notes"][1] == f"{tmp_path}: no kernel-comparison.json"
    assert run["without_latest"] == [str(tmp_path)]


def test_load_run_adds_results_that_latest_does_not_list(tmp_path):
    write_run(tmp_path, "userspace")
    late = rd.model("late-model", "vision")
    metrics.write_model_result(tmp_path, late)
    run = metrics.load_run(tmp_path)
    assert run["summary"]["total_models"] == 6 and run["summary"]["successful_models"] == 4
    assert run["summary"]["hardware"] == rd.HARDWARE
    assert f"{tmp_path}: 1 model result(s) not listed in metrics/latest.json were added" in run["notes"]


def test_load_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(MetricsError, match="no such run directory"):
        metrics.load_run(tmp_path / "absent")
    with pytest.raises(MetricsError, match="not a validator run directory"):
        metrics.load_run(tmp_path)
    (tmp_path / "x-result.json").write_text("{not json")
    with pytest.raises(MetricsError, match=r"x-result.json: not JSON: Expecting property name"):
        metrics.load_run(tmp_path)


def test_merge_kernel_and_userspace_runs(tmp_path):
    user = write_run(tmp_path / "run-userspace", "userspace")
    kern = write_run(tmp_path / "run-kernel", "kernel", comparison=True)
    merged = metrics.merge_runs([user, kern])
    s = merged["summary"]
    assert s["runs"] == ["run-userspace", "run-kernel"]
    assert (s["total_models"], s["successful_models"], s["partial_models"], s["failed_models"]) == (10, 6, 2, 2)
    assert (s["total_inferences"], s["successful_inferences"]) == (16, 14)
    assert [(m["model_name"], m["mode"], m["run"]) for m in s["models"]][4:6] == [
        ("gpt2-tiny", "userspace", "run-userspace"), ("bert-tiny", "kernel", "run-kernel")]
    # same machine: one hardware object; the runs' totals add up, start-up is the first run's
    assert s["hardware"] == rd.HARDWARE and "per_run" not in s["hardware"]
    assert s["timings"] == {"core_startup_ms": 842.0, "install_total_ms": 30468.0, "run_total_ms": 122469.0}
    assert [r["run"] for r in merged["comparison"]["rows"]] == ["run-kernel", "run-kernel"]
    assert merged["comparison"]["emulated"] is True
    assert merged["notes"] == [f"{user}: no kernel-comparison.json"]
    # the merged summary is itself a valid latest.json, and reads back unchanged
    out = metrics.write_latest(tmp_path / "merged", s)
    assert metrics.load_run(out.parent.parent)["summary"]["models"] == s["models"]


def test_merge_keeps_every_repetition_of_a_rerun(tmp_path):
    a = write_run(tmp_path / "a" / "out", "userspace", runs=[])
    b = write_run(tmp_path / "b" / "out", "userspace", runs=[])
    hw = json.loads((b / "metrics" / "latest.json").read_text())
    hw["hardware"]["cpu_model"] = "Intel Xeon"
    (b / "metrics" / "latest.json").write_text(json.dumps(hw))
    merged = metrics.merge_runs([a, b])
    s = merged["summary"]
    assert s["runs"] == ["out", "out #2"] and s["total_models"] == 10
    assert [m["run"] for m in s["models"] if m["model_name"] == "bert-tiny"] == ["out", "out #2"]
    assert s["hardware"]["per_run"]["out #2"]["cpu_model"] == "Intel Xeon"
    assert s["hardware"]["cpu_model"] == "AMD EPYC 7B13"
    assert merged["comparison"] is None


def test_merge_of_one_run_is_that_run(tmp_path):
    d = write_run(tmp_path / "only", "kernel")
    assert metrics.merge_runs([d]) == metrics.load_run(d)
    with pytest.raises(MetricsError, match="no run directories given"):
        metrics.merge_runs([])


def test_a_comparison_document_from_validation_compare_validates(tmp_path):
    """The comparison helper's own output (real bootstrap over real numbers) fits the schema."""
    from validation.compare import compare, document
    kernel = [4.0 + 0.01 * i for i in range(20)]
    userspace = [4.4 + 0.01 * i for i in range(20)]
    row = compare(kernel, userspace, lower_is_better=True, model="bert-tiny", scenario="single_stream",
                  metric="latency_ms p50", emulated=False)
    doc = document([row], emulated=False, machine={"cpu": "test"})
    path = metrics.write_comparison(tmp_path, doc)
    back = metrics.read_document(path, "kernel_comparison")
    assert back["rows"][0]["verdict"] == "kernel faster" and back["rows"][0]["speedup"]["value"] > 1.0


def test_the_runners_out_dir_stands_for_its_mode_dirs(tmp_path):
    """The runner writes <out>/<mode>/; a comparison beside them belongs to both."""
    out = tmp_path / "validation-results"
    write_run(out / "userspace", "userspace", runs=["offline-userspace"])
    write_run(out / "kernel", "kernel", runs=["offline-kernel"])
    metrics.write_comparison(out, rd.comparison(emulated=False))
    (out / "kernel" / "core-kernel.log").write_text("not a metrics file")
    assert metrics.run_dirs([out]) == [out, out / "kernel", out / "userspace"]
    merged = metrics.merge_runs([out])
    s = merged["summary"]
    assert s["runs"] == ["offline-kernel", "offline-userspace"] and s["total_models"] == 10
    assert [r["run"] for r in merged["comparison"]["rows"]] == ["validation-results"] * 2
    assert merged["without_latest"] == [] and merged["notes"] == [
        f"{out / 'kernel'}: no kernel-comparison.json", f"{out / 'userspace'}: no kernel-comparison.json"]


def test_fields_a_runner_adds_survive_a_merge(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, mode, skipped in ((a, "kernel", {"kernel": "no /dev/mlos-ml"}), (b, "userspace", {})):
        s = rd.summary(mode)
        s.update(skipped_modes=skipped, skipped_models={"tinyllama": "enable_llm_tests: false"},
                 backend=mode)
        write_run(d, mode)
        metrics.write_latest(d, s)
    s = metrics.merge_runs([a, b])["summary"]
    assert s["skipped_modes"] == {"kernel": "no /dev/mlos-ml"}
    assert s["skipped_models"] == {"tinyllama": "enable_llm_tests: false"}
    assert s["backend"] == {"per_run": {"run-kernel": "kernel", "run-userspace": "userspace"}}
