"""The tuning report: one self-contained HTML file rendered from results.json, in the validator's
style (its stylesheet and chart helpers): inline SVG, inlined CSS, and a Content-Security-Policy
that forbids every fetch and every script, so it opens the same anywhere, offline.

    mlos-tune report OUT_DIR [--screenshot report.png]
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jinja2

from validation.metrics import write_text_atomic

from ..errors import TuneError
from .view import build

TEMPLATES = Path(__file__).parent / "templates"


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    from validation import report as validator_report

    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES),
                                  jinja2.FileSystemLoader(validator_report.TEMPLATES)])   # style.css
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def render_html(doc: dict) -> str:
    return _env().get_template("tune.html.j2").render(**build(doc))


def write_report(out_dir, html: Path | None = None) -> Path:
    out_dir = Path(out_dir)
    try:
        doc = json.loads((out_dir / "results.json").read_text())
    except OSError as e:
        raise TuneError(f"{out_dir}: no readable results.json ({e.strerror})") from None
    except ValueError as e:
        raise TuneError(f"{out_dir}/results.json: not JSON ({e})") from None
    return write_text_atomic(html or out_dir / "report.html", render_html(doc))
