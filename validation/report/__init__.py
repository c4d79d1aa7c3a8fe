"""The validator's HTML report: one self-contained file rendered from a run's metrics JSON.

    from validation.metrics import merge_runs
    from validation.report import write_report
    write_report(merge_runs(["out/kernel", "out/userspace"]), "report.html")

It reads the JSON only (STYLE.md: benchmarks write JSON first; reports only read it). Charts are
inline SVG drawn in Python, the CSS is inlined, and a Content-Security-Policy forbids every fetch
and every script, so the file opens the same anywhere, offline, and text from a model repo can
never run in it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from ..metrics import write_text_atomic
from .view import build

TEMPLATES = Path(__file__).parent / "templates"


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # autoescape everywhere: model names and error texts come from outside (hub repos, tracebacks)
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(run: dict) -> str:
    """The report for ``run`` (validation.metrics.load_run / merge_runs output)."""
    return _env().get_template("report.html.j2").render(**build(run))


def write_report(run: dict, out) -> Path:
    return write_text_atomic(Path(out), render_html(run))
