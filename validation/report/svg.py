"""Inline SVG charts, drawn in Python: no script, no library, nothing fetched.

Every piece of text that reaches a chart (model names come from the metrics files, which come
from hub repo names) goes through ``escape``; the charts are returned as ``Markup`` so the
autoescaping template inserts them as they are, and only these functions decide what is markup.
"""
from __future__ import annotations

import math
from typing import Callable

from markupsafe import Markup, escape

CHAR_W = 6.6          # average glyph width at 12 px, to lay out labels and legends without a DOM
LABEL_MAX = 38


def _f(x: float) -> str:
    return f"{x:.1f}"


def _text(x, y, s, anchor="start", cls="lbl", full: str | None = None, limit: int = LABEL_MAX) -> str:
    s = str(s)
    shown = s if len(s) <= limit else s[:limit - 1] + "…"
    tip = f"<title>{escape(full or s)}</title>" if (full or shown != s) else ""
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" class="{cls}">{tip}{escape(shown)}</text>'


def tick(v: float) -> str:
    """A tick value: round by construction, so no fixed precision (0, 2.5, 500, 1e+04)."""
    return f"{v:g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t, ticks = math.floor(lo / step) * step, []
    while t < hi + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    return ticks


class Scale:
    """Value -> pixel along one axis, linear or log10 (latencies spanning decades)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.log = log
        if log:
            lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
            hi_e = max(hi_e, lo_e + 1)
            self.ticks = [10.0 ** e for e in range(lo_e, hi_e + 1)]
        else:
            self.ticks = nice_ticks(min(lo, 0.0), hi)
        self.lo, self.hi, self.p0, self.p1 = self.ticks[0], self.ticks[-1], p0, p1

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            frac = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            frac = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + frac * (self.p1 - self.p0)


def _legend(items: list[tuple[str, str, bool]], x0: float, y: float, width: float) -> tuple[str, float]:
    """Swatch + name per series, wrapping; returns the markup and the height used."""
    out, x, row = [], x0, 0
    for name, colour, dashed in items:
        w = 28 + len(name) * CHAR_W + 16
        if x + w > width and x > x0:
            x, row = x0, row + 1
        yy = y + row * 18
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        out.append(f'<line x1="{_f(x)}" y1="{_f(yy - 4)}" x2="{_f(x + 20)}" y2="{_f(yy - 4)}" '
                   f'stroke="{colour}" stroke-width="{3 if not dashed else 2}"{dash}/>')
        out.append(_text(x + 26, yy, name, cls="legend"))
        x += w
    return "".join(out), (row + 1) * 18


def _svg(width: float, height: float, title: str, body: list[str]) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" '
                  f'height="{_f(height)}" role="img" aria-label="{escape(title)}">'
                  f'<title>{escape(title)}</title>{"".join(body)}</svg>')


def line_chart(series: list[dict], *, title: str, x_label: str, y_label: str,
               y_fmt: Callable[[float], str] = lambda v: f"{v:g}",
               width: float = 560, height: float = 250) -> Markup:
    """``series``: [{"name", "points": [(x, y)], "colour", "dashed"}]; x and y from 0."""
    legend, lh = _legend([(s["name"], s["colour"], s.get("dashed", False)) for s in series], 70, 16, width)
    ml, mr, mt, mb = 70, 18, 16 + lh, 42
    xs = [p[0] for s in series for p in s["points"]] or [0.0]
    ys = [p[1] for s in series for p in s["points"]] or [0.0]
    sx = Scale(0.0, max(xs), ml, width - mr)
    sy = Scale(0.0, max(ys), height - mb, mt)
    body = [legend]
    for t in sy.ticks:
        body.append(f'<line class="grid" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(sy(t))}" y2="{_f(sy(t))}"/>')
        body.append(_text(ml - 6, sy(t) + 4, y_fmt(t), anchor="end", cls="tick"))
    for t in sx.ticks:
        body.append(_text(sx(t), height - mb + 16, f"{t:g}", anchor="middle", cls="tick"))
    body.append(f'<line class="axis" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(height - mb)}" y2="{_f(height - mb)}"/>')
    body.append(_text((ml + width - mr) / 2, height - 6, x_label, anchor="middle", cls="axis-label", limit=200))
    body.append(f'<text class="axis-label" transform="translate(14 {_f((mt + height - mb) / 2)}) rotate(-90)" '
                f'text-anchor="middle">{escape(y_label)}</text>')
    for s in series:
        pts = " ".join(f"{_f(sx(x))},{_f(sy(y))}" for x, y in s["points"])
        dash = ' stroke-dasharray="5 4"' if s.get("dashed") else ""
        body.append(f'<polyline class="series" fill="none" stroke="{s["colour"]}" '
                    f'stroke-width="{2 if dash else 2.5}"{dash} points="{pts}"/>')
    return _svg(width, height, title, body)


def bar_chart(groups: list[dict], series: list[tuple[str, str]], *, title: str, x_label: str,
              fmt: Callable[[float], str], log: bool = False, width: float = 1000) -> Markup:
    """Horizontal bars, one group per label, one bar per series, with CI whiskers.

    ``groups``: [{"label", "bars": {series name: {"value", "lo", "hi"} or None}}]; a missing bar
    is written as "not measured" instead of being left out silently."""
    bar_h, gap = 14, 12
    legend, lh = _legend([(n, c, False) for n, c in series], 10, 16, width)
    ml = 14 + min(LABEL_MAX, max((len(g["label"]) for g in groups), default=10)) * CHAR_W
    mt, mr, mb = 16 + lh, 120, 40
    group_h = len(series) * bar_h + gap
    height = mt + len(groups) * group_h + mb
    values = [b[k] for g in groups for b in g["bars"].values() if b for k in ("value", "lo", "hi")
              if b.get(k) is not None and b[k] > 0]
    sx = Scale(min(values, default=1.0), max(values, default=1.0), ml, width - mr, log=log)
    body = [legend]
    base_y = height - mb
    for t in sx.ticks:
        body.append(f'<line class="grid" x1="{_f(sx(t))}" x2="{_f(sx(t))}" y1="{mt}" y2="{_f(base_y)}"/>')
        body.append(_text(sx(t), base_y + 16, tick(t), anchor="middle", cls="tick"))
    for i, g in enumerate(groups):
        y0 = mt + i * group_h + gap / 2
        body.append(_text(ml - 8, y0 + len(series) * bar_h / 2 + 4, g["label"], anchor="end"))
        for j, (name, colour) in enumerate(series):
            y = y0 + j * bar_h
            b = g["bars"].get(name)
            if not b or b.get("value") is None:
                body.append(_text(sx.p0 + 4, y + bar_h - 3, f"{name}: not measured", cls="na"))
                continue
            x1 = sx(b["value"])
            body.append(f'<rect x="{_f(sx.p0)}" y="{_f(y + 1)}" width="{_f(max(x1 - sx.p0, 1))}" '
                        f'height="{bar_h - 2}" fill="{colour}"><title>{escape(g["label"])} {escape(name)}: '
                        f'{escape(fmt(b["value"]))}</title></rect>')
            end = x1
            if b.get("lo") is not None and b.get("hi") is not None:
                lo, hi, cy = sx(b["lo"]), sx(b["hi"]), y + bar_h / 2
                end = max(end, hi)
                body.append(f'<path class="whisker" d="M{_f(lo)} {_f(cy)}H{_f(hi)}M{_f(lo)} {_f(cy - 4)}'
                            f'V{_f(cy + 4)}M{_f(hi)} {_f(cy - 4)}V{_f(cy + 4)}"/>')
            body.append(_text(end + 5, y + bar_h - 3, fmt(b["value"]), cls="val"))
    body.append(f'<line class="axis" x1="{_f(sx.p0)}" x2="{_f(sx.p0)}" y1="{mt}" y2="{_f(base_y)}"/>')
    body.append(_text((sx.p0 + sx.p1) / 2, height - 6, x_label + (" (log scale)" if log else ""),
                      anchor="middle", cls="axis-label", limit=200))
    return _svg(width, height, title, body)


def stacked_bars(groups: list[dict], parts: list[tuple[str, str]], *, title: str, x_label: str,
                 fmt: Callable[[float], str], width: float = 1000) -> Markup:
    """One horizontal bar per group split into ``parts`` (name, colour); ``groups``:
    [{"label", "values": {part name: ms or None}}], total written at the bar's end."""
    bar_h, gap = 16, 8
    legend, lh = _legend([(n, c, False) for n, c in parts], 10, 16, width)
    ml = 14 + min(LABEL_MAX, max((len(g["label"]) for g in groups), default=10)) * CHAR_W
    mt, mr, mb = 16 + lh, 90, 40
    height = mt + len(groups) * (bar_h + gap) + mb
    totals = [sum(v for v in g["values"].values() if v) for g in groups]
    sx = Scale(0.0, max(totals, default=1.0) or 1.0, ml, width - mr)
    body = [legend]
    for t in sx.ticks:
        body.append(f'<line class="grid" x1="{_f(sx(t))}" x2="{_f(sx(t))}" y1="{mt}" y2="{_f(height - mb)}"/>')
        body.append(_text(sx(t), height - mb + 16, tick(t), anchor="middle", cls="tick"))
    for i, (g, total) in enumerate(zip(groups, totals)):
        y = mt + i * (bar_h + gap) + gap / 2
        body.append(_text(ml - 8, y + bar_h - 4, g["label"], anchor="end"))
        x = sx.p0
        for name, colour in parts:
            v = g["values"].get(name)
            if not v:
                continue
            w = sx(v) - sx(0)
            body.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(max(w, 1))}" height="{bar_h}" '
                        f'fill="{colour}"><title>{escape(g["label"])} {escape(name)}: '
                        f'{escape(fmt(v))}</title></rect>')
            x += w
        body.append(_text(x + 5, y + bar_h - 4, fmt(total) if total else "not measured",
                          cls="val" if total else "na"))
    body.append(_text((sx.p0 + sx.p1) / 2, height - 6, x_label, anchor="middle", cls="axis-label", limit=200))
    return _svg(width, height, title, body)
