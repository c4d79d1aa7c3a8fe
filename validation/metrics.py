"""The validator's metrics files: written atomically and validated, read back, merged.

Layout of one run directory (the original system-test's, plus kernel-comparison.json)::

    <out_dir>/<safe model name>-result.json     one per model (ModelResult.to_dict())
    <out_dir>/metrics/latest.json               latest_summary(): counters + every model
    <out_dir>/kernel-comparison.json            kernel vs userspace rows (ComparisonRow)

Every document carries ``schema_version`` "MAJOR.MINOR" and is checked against
``schema/metrics.schema.json`` both before it is written and when it is read: a writer never
leaves a file that its own reader would refuse, and a reader refuses a file of another major
version with an error that names the file and both versions instead of misreading it.
A run in kernel mode and one in userspace go to two directories; ``merge_runs`` combines them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from . import metrics_merge
from .results import SCHEMA_VERSION, ModelResult, latest_summary

SCHEMA_PATH = Path(__file__).parent / "schema" / "metrics.schema.json"
READS_MAJOR = int(SCHEMA_VERSION.split(".")[0])
KINDS = ("model_result", "latest", "kernel_comparison", "baseline_comparison", "quantisation")
LATEST = Path("metrics") / "latest.json"
COMPARISON = "kernel-comparison.json"
_MAX_ERRORS = 10


class MetricsError(ValueError):
    """A metrics file that cannot be written or read; the message names the file."""


class SchemaVersionError(MetricsError):
    """A file without schema_version, or of a major version this validator does not read."""


class SchemaValidationError(MetricsError):
    """A document that breaks the schema; ``errors`` holds (json path, message) pairs."""

    def __init__(self, source: str, kind: str, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = "\n".join(f"  {path}: {msg}" for path, msg in errors)
        super().__init__(f"{source}: not a valid {kind} (schema {SCHEMA_VERSION}):\n{lines}")


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=len(KINDS))
def _validator(kind: str) -> Draft202012Validator:
    # Validating against one $defs entry (not the top-level if/then) keeps error paths short
    # and says which document was expected.
    root = schema()
    registry = Registry().with_resource(root["$id"], Resource.from_contents(root))
    return Draft202012Validator({"$ref": f"{root['$id']}#/$defs/{kind}"}, registry=registry)


def _json_path(error: ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<document>"


def _describe(error: ValidationError) -> tuple[str, str]:
    # oneOf/anyOf say only "not valid under any of the given schemas"; the closest branch's
    # own error (e.g. "'ci_low' is a required property") is what a person can act on.
    while error.context:
        error = best_match(error.context)
    msg = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return _json_path(error), msg


def check_version(doc: Any, source: str = "<document>") -> None:
    """Refuse a document of another major version before looking at anything else in it."""
    if not isinstance(doc, dict):
        raise MetricsError(f"{source}: expected a JSON object, found {type(doc).__name__}")
    version = doc.get("schema_version")
    if version is None:
        raise SchemaVersionError(f"{source}: no schema_version field; this validator reads "
                                 f"schema {READS_MAJOR}.x files only")
    m = re.fullmatch(r"(\d+)\.(\d+)", str(version))
    if not m:
        raise SchemaVersionError(f"{source}: schema_version {version!r} is not MAJOR.MINOR")
    if int(m.group(1)) != READS_MAJOR:
        raise SchemaVersionError(
            f"{source}: schema_version {version} is major {m.group(1)}; this validator reads "
            f"major {READS_MAJOR} ({READS_MAJOR}.x, written as {SCHEMA_VERSION}); "
            f"use an mlos-py that reads major {m.group(1)}")


def validate(doc: Any, kind: str, source: str = "<document>") -> dict:
    """``doc`` if it is a valid ``kind`` (one of KINDS); SchemaVersionError/SchemaValidationError if not."""
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}; one of {KINDS}")
    check_version(doc, source)
    errors = sorted(_validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise SchemaValidationError(source, kind, [_describe(e) for e in errors[:_MAX_ERRORS]])
    return doc


def _plain(obj: Any) -> Any:
    """Dataclasses (ModelResult, ComparisonRow, Interval) to dicts, anywhere in ``obj``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is; not every filesystem allows it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write: Callable[[TextIO], object]) -> Path:
    """Temp file in the same directory, fsync, os.replace: a reader sees the old file or the new
    one, never half of one. ``write`` streams into the temp file, so a value that fails to
    encode half-way (NaN, a stray object) leaves only the temp file, which is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())    # mkstemp makes 0600; a results file is for sharing
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (TypeError, ValueError) as e:
        os.unlink(tmp)
        raise MetricsError(f"{path}: not written, the previous file is unchanged: {e}") from e
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path, doc: dict) -> Path:
    def dump(f: TextIO) -> None:
        json.dump(doc, f, indent=2, allow_nan=False)    # NaN is not JSON: a data bug, refused
        f.write("\n")
    return _write_atomic(path, dump)


def write_text_atomic(path, text: str) -> Path:
    return _write_atomic(path, lambda f: f.write(text))


def safe_name(model_name: str) -> str:
    """A file-name-safe form of a model name ("hf/org/m@main" -> "hf_org_m_main")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._") or "model"


def write_model_result(out_dir, result: ModelResult | dict) -> Path:
    doc = _plain(result)
    path = Path(out_dir) / f"{safe_name(str(doc.get('model_name', '')))}-result.json"
    return write_json_atomic(path, validate(doc, "model_result", str(path)))


def write_latest(out_dir, summary: dict) -> Path:
    path = Path(out_dir) / LATEST
    return write_json_atomic(path, validate(_plain(summary), "latest", str(path)))


def write_comparison(out_dir, doc: dict) -> Path:
    path = Path(out_dir) / COMPARISON
    return write_json_atomic(path, validate(_plain(doc), "kernel_comparison", str(path)))


def write_document(path, doc: dict, kind: str) -> Path:
    """Any of KINDS, validated first: a writer never leaves a file its reader would refuse."""
    return write_json_atomic(path, validate(_plain(doc), kind, str(path)))


def read_document(path, kind: str) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise MetricsError(f"{path}: not JSON: {e}") from e
    return validate(doc, kind, str(path))


def _key(model: dict) -> tuple:
    return model["model_name"], model["mode"], model["started_at"], model.get("run")


def load_run(run_dir) -> dict:
    """One run directory as ``{"dirs", "summary", "comparison", "notes", "without_latest"}``.

    ``summary`` is metrics/latest.json, plus any ``*-result.json`` it does not list (a run that
    stopped before writing latest.json still counts what it finished); ``notes`` say what the
    directory lacks, and ``without_latest`` lists the directories that had no latest.json (so no
    hardware, resources or timings), so a report can say why a section is empty."""
    d = Path(run_dir)
    if not d.is_dir():
        raise MetricsError(f"{d}: no such run directory")
    results = sorted(d.glob("*-result.json"))
    has_latest, has_comparison = (d / LATEST).is_file(), (d / COMPARISON).is_file()
    if not (has_latest or results or has_comparison):
        raise MetricsError(f"{d}: no {LATEST}, no *-result.json, no {COMPARISON}: "
                           "not a validator run directory")
    notes: list[str] = []
    latest = read_document(d / LATEST, "latest") if has_latest else None
    models = list(latest["models"]) if latest else []
    seen = {_key(m) for m in models}
    extra = [m for m in (read_document(p, "model_result") for p in results) if _key(m) not in seen]
    if latest is None:
        notes.append(f"{d}: no {LATEST}, so versions come from the model results and hardware, "
                     "resources and timings were not recorded")
        first = (extra[0]["versions"] if extra else {})
        summary = latest_summary(extra, versions=first, hardware={}, resources={}, timings={},
                                 runs=[d.name])
    elif extra:
        notes.append(f"{d}: {len(extra)} model result(s) not listed in {LATEST} were added")
        summary = metrics_merge.carry_extras({d.name: latest}, latest_summary(
            models + extra, versions=latest["versions"], hardware=latest["hardware"],
            resources=latest["resources"], timings=latest["timings"], runs=latest.get("runs") or [d.name]))
    else:
        summary = latest
    if not has_comparison:
        notes.append(f"{d}: no {COMPARISON}")
    comparison = read_document(d / COMPARISON, "kernel_comparison") if has_comparison else None
    return {"dirs": [str(d)], "summary": summary, "comparison": comparison, "notes": notes,
            "without_latest": [] if has_latest else [str(d)]}


def is_run_dir(d: Path) -> bool:
    return (d / LATEST).is_file() or (d / COMPARISON).is_file() or any(d.glob("*-result.json"))


def run_dirs(dirs) -> list[Path]:
    """Each of ``dirs`` that is a run directory, and the run directories directly inside it:
    the runner writes ``<out>/<mode>/`` per mode, so ``<out>`` stands for all its modes."""
    found: list[Path] = []
    for d in map(Path, dirs):
        inside = sorted(s for s in d.iterdir() if s.is_dir() and is_run_dir(s)) if d.is_dir() else []
        found += ([d] if is_run_dir(d) or not inside else []) + inside
    return found


def merge_runs(dirs) -> dict:
    """Several run directories as one (same shape as load_run).

    Every model record is kept, reruns included, each marked with ``run`` (its run's label);
    counters are recomputed over all of them. versions/hardware/resources/timings are the
    first run's when the runs agree, else the first run's with ``per_run`` {label: object};
    the timings' ``*_total_ms`` are summed. Comparison rows are concatenated, marked likewise.
    A directory that holds run directories (the runner's ``<out>``) stands for them."""
    runs = [load_run(d) for d in run_dirs(dirs)]
    if not runs:
        raise MetricsError("merge_runs: no run directories given")
    if len(runs) == 1:
        return runs[0]
    merged = metrics_merge.merge(runs)
    validate(merged["summary"], "latest", "merged runs")
    if merged["comparison"] is not None:
        validate(merged["comparison"], "kernel_comparison", "merged runs")
    return merged
