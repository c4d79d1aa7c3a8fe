"""The tuning report's charts, inline SVG in the manner of the validator's (``validation.report.svg``,
whose axes, legends and escaping they reuse): no script, nothing fetched, every outside text escaped.

- ``tradeoff``: throughput against p99 latency, one point per configuration, the Pareto front
  (no other point has more throughput *and* less latency) drawn through its points, an SLO bound
  as a dashed line, the best and the default marked.
- ``effect``: one parameter's values along x, the objective of every configuration with that value
  (with its 95% interval), and the best per value joined by a line.
"""
from __future__ import annotations

from markupsafe import Markup, escape

from validation.report.svg import Scale, _f, _legend, _svg, _text, tick

BLUE, AMBER, GREEN, RED, GREY, VIOLET = "#2563eb", "#d97706", "#059669", "#dc2626", "#6b7280", "#7c3aed"


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point dominates (x higher is better, y lower is better), by x."""
    front = [p for p in points
             if not any(q is not p and q["x"] >= p["x"] and q["y"] <= p["y"] and (q["x"] > p["x"] or q["y"] < p["y"])
                        for q in points)]
    return sorted(front, key=lambda p: p["x"])


def _axes(body: list, sx: Scale, sy: Scale, ml: float, mt: float, width: float, height: float, mb: float,
          mr: float, x_label: str, y_label: str) -> None:
    for t in sy.ticks:
        body.append(f'<line class="grid" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(sy(t))}" y2="{_f(sy(t))}"/>')
        body.append(_text(ml - 6, sy(t) + 4, tick(t), anchor="end", cls="tick"))
    for t in sx.ticks:
        body.append(f'<line class="grid" x1="{_f(sx(t))}" x2="{_f(sx(t))}" y1="{_f(mt)}" y2="{_f(height - mb)}"/>')
        body.append(_text(sx(t), height - mb + 16, tick(t), anchor="middle", cls="tick"))
    body.append(f'<line class="axis" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(height - mb)}" y2="{_f(height - mb)}"/>')
    body.append(f'<line class="axis" x1="{ml}" x2="{ml}" y1="{_f(mt)}" y2="{_f(height - mb)}"/>')
    body.append(_text((ml + width - mr) / 2, height - 6, x_label, anchor="middle", cls="axis-label", limit=200))
    body.append(f'<text class="axis-label" transform="translate(14 {_f((mt + height - mb) / 2)}) rotate(-90)" '
                f'text-anchor="middle">{escape(y_label)}</text>')


def _dot(x: float, y: float, colour: str, tip: str, r: float = 5) -> str:
    return (f'<circle class="pt" cx="{_f(x)}" cy="{_f(y)}" r="{r}" fill="{colour}" fill-opacity="0.85" '
            f'stroke="#fff" stroke-width="1"><title>{escape(tip)}</title></circle>')


def tradeoff(points: list[dict], *, x_label: str, y_label: str, slo: float | None = None,
             width: float = 720, height: float = 380) -> Markup:
    """``points``: [{"x", "y", "label", "tip", "feasible", "best", "default"}]."""
    items = [("feasible", BLUE, False), ("misses an SLO", AMBER, False), ("Pareto front", GREEN, False),
             ("best (ring)", RED, False), ("default (square)", GREY, False)]
    if slo is not None:
        items.append((f"SLO {slo:g}", RED, True))
    legend, lh = _legend(items, 64, 16, width)
    ml, mr, mt, mb = 64, 24, 18 + lh, 44
    xs = [p["x"] for p in points] or [1.0]
    ys = [p["y"] for p in points] + ([slo] if slo else []) or [1.0]
    sx = Scale(0.0, max(xs) * 1.05 or 1.0, ml, width - mr)
    sy = Scale(0.0, max(ys) * 1.05 or 1.0, height - mb, mt)
    body = [legend]
    _axes(body, sx, sy, ml, mt, width, height, mb, mr, x_label, y_label)
    if slo is not None:
        body.append(f'<line x1="{ml}" x2="{_f(width - mr)}" y1="{_f(sy(slo))}" y2="{_f(sy(slo))}" stroke="{RED}" '
                    f'stroke-width="1.5" stroke-dasharray="6 4"><title>SLO: {escape(y_label)} at most {slo:g}'
                    f'</title></line>')
    front = pareto_front(points)
    if len(front) > 1:
        pts = " ".join(f"{_f(sx(p['x']))},{_f(sy(p['y']))}" for p in front)
        body.append(f'<polyline class="front" fill="none" stroke="{GREEN}" stroke-width="2.5" points="{pts}"/>')
    for p in points:
        x, y = sx(p["x"]), sy(p["y"])
        colour = BLUE if p.get("feasible", True) else AMBER
        on_front = any(p is q for q in front)
        body.append(_dot(x, y, colour, p["tip"] + (" · on the Pareto front" if on_front else ""), 6 if on_front else 5))
        if p.get("default"):
            body.append(f'<rect x="{_f(x - 8)}" y="{_f(y - 8)}" width="16" height="16" fill="none" stroke="{GREY}" '
                        f'stroke-width="2"/>')
        if p.get("best"):
            body.append(f'<circle cx="{_f(x)}" cy="{_f(y)}" r="10" fill="none" stroke="{RED}" stroke-width="2.5"/>')
        if p.get("label"):
            body.append(_text(x + 8, y - 8, p["label"], cls="val", limit=12))
    return _svg(width, height, "Throughput against p99 latency", body)


def effect(name: str, groups: list[dict], *, y_label: str, higher_is_better: bool,
           width: float = 360, height: float = 230) -> Markup:
    """``groups``: per value of the parameter, in order: {"value", "points": [{"y", "lo", "hi", "tip"}]}."""
    ml, mr, mt, mb = 60, 16, 14, 44
    ys = [v for g in groups for p in g["points"] for v in (p["y"], p.get("hi")) if v is not None] or [1.0]
    sy = Scale(0.0, max(ys) * 1.05 or 1.0, height - mb, mt)
    n = max(len(groups), 1)
    step = (width - ml - mr) / n
    body = []
    for t in sy.ticks:
        body.append(f'<line class="grid" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(sy(t))}" y2="{_f(sy(t))}"/>')
        body.append(_text(ml - 6, sy(t) + 4, tick(t), anchor="end", cls="tick"))
    body.append(f'<line class="axis" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(height - mb)}" y2="{_f(height - mb)}"/>')
    body.append(_text((ml + width - mr) / 2, height - 6, name, anchor="middle", cls="axis-label", limit=60))
    body.append(f'<text class="axis-label" transform="translate(14 {_f((mt + height - mb) / 2)}) rotate(-90)" '
                f'text-anchor="middle">{escape(y_label)}</text>')
    best_pts = []
    for i, g in enumerate(groups):
        cx = ml + step * (i + 0.5)
        body.append(_text(cx, height - mb + 16, str(g["value"]), anchor="middle", cls="tick", limit=14))
        k = len(g["points"])
        for j, p in enumerate(g["points"]):
            x = cx + (j - (k - 1) / 2) * min(8.0, step * 0.6 / max(k, 1))
            if p.get("lo") is not None and p.get("hi") is not None:
                body.append(f'<path class="whisker" d="M{_f(x)} {_f(sy(p["lo"]))}V{_f(sy(p["hi"]))}"/>')
            body.append(_dot(x, sy(p["y"]), BLUE, p["tip"], 4))
        if g["points"]:
            best = (max if higher_is_better else min)(p["y"] for p in g["points"])
            best_pts.append((cx, sy(best)))
    if len(best_pts) > 1:
        pts = " ".join(f"{_f(x)},{_f(y)}" for x, y in best_pts)
        body.append(f'<polyline fill="none" stroke="{VIOLET}" stroke-width="2" points="{pts}"/>')
    return _svg(width, height, f"Effect of {name}", body)
