"""Charts of points, in the manner of svg.py (inline SVG drawn in Python, every outside text escaped):
a series over releases with its verdict marks, and a trade-off scatter."""
from __future__ import annotations

from markupsafe import Markup, escape

from .svg import CHAR_W, Scale, _f, _legend, _svg, _text, nice_ticks, tick

MARKS = {  # verdict -> (shape, colour, what it says)
    "regression": ("ring", "#dc2626", "regression"), "newly failing": ("cross", "#dc2626", "newly failing"),
    "improvement": ("ring", "#059669", "improvement"), "fixed": ("ring", "#059669", "fixed"),
    "not comparable": ("diamond", "#6b7280", "not comparable"),
}


def _mark(x: float, y: float, verdict: str | None, tip: str) -> str:
    if verdict not in MARKS:
        return ""
    shape, colour, _ = MARKS[verdict]
    title = f"<title>{escape(tip)}</title>"
    if shape == "ring":
        return (f'<circle class="mark" cx="{_f(x)}" cy="{_f(y)}" r="7" fill="none" stroke="{colour}" '
                f'stroke-width="2.5">{title}</circle>')
    if shape == "cross":
        return (f'<path class="mark" d="M{_f(x - 6)} {_f(y - 6)}L{_f(x + 6)} {_f(y + 6)}M{_f(x - 6)} {_f(y + 6)}'
                f'L{_f(x + 6)} {_f(y - 6)}" stroke="{colour}" stroke-width="2.5">{title}</path>')
    return (f'<path class="mark" d="M{_f(x)} {_f(y - 7)}L{_f(x + 7)} {_f(y)}L{_f(x)} {_f(y + 7)}L{_f(x - 7)} {_f(y)}Z" '
            f'fill="none" stroke="{colour}" stroke-width="2">{title}</path>')


def release_chart(releases: list[str], series: list[dict], *, title: str, y_label: str,
                  marks: list[tuple[str | None, str]], width: float = 380, height: float = 210) -> Markup:
    """``series``: [{"name", "colour", "points": [{"value", "lo", "hi"} or None per release]}];
    ``marks``: per release (verdict against the release before, tooltip), drawn on the top series
    point there. A release without a point (the model failed, or did not run) leaves a gap."""
    legend, lh = _legend([(s["name"], s["colour"], False) for s in series], 56, 14, width)
    ml, mr, mt, mb = 56, 28, 12 + lh, 46     # room for the last release's name under its point
    values = [v for s in series for p in s["points"] if p for v in (p["value"], p.get("hi")) if v is not None]
    sy = Scale(0.0, max(values, default=1.0) or 1.0, height - mb, mt)
    n = max(len(releases), 1)
    step = (width - ml - mr) / max(n - 1, 1)

    def sx(i: int) -> float:
        return ml + (i * step if n > 1 else (width - ml - mr) / 2)

    body = [legend]
    for t in sy.ticks:
        body.append(f'<line class="grid" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(sy(t))}" y2="{_f(sy(t))}"/>')
        body.append(_text(ml - 5, sy(t) + 4, tick(t), anchor="end", cls="tick"))
    for i, r in enumerate(releases):
        body.append(_text(sx(i), height - mb + 15, r, anchor="middle", cls="tick", limit=max(6, int(step / 6.6))))
    body.append(f'<line class="axis" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(height - mb)}" y2="{_f(height - mb)}"/>')
    body.append(f'<text class="axis-label" transform="translate(12 {_f((mt + height - mb) / 2)}) rotate(-90)" '
                f'text-anchor="middle">{escape(y_label)}</text>')
    body.append(_text((ml + width - mr) / 2, height - 8, "release (oldest first)", anchor="middle",
                      cls="axis-label", limit=200))
    for s in series:
        run: list[str] = []
        for i, p in enumerate(s["points"] + [None]):
            if p is not None:
                run.append(f"{_f(sx(i))},{_f(sy(p['value']))}")
            elif run:
                body.append(f'<polyline class="series" fill="none" stroke="{s["colour"]}" stroke-width="2" '
                            f'points="{" ".join(run)}"/>')
                run = []
        for i, p in enumerate(s["points"]):
            if p is None:
                continue
            x, y = sx(i), sy(p["value"])
            if p.get("lo") is not None and p.get("hi") is not None:
                body.append(f'<path class="whisker" d="M{_f(x)} {_f(sy(p["lo"]))}V{_f(sy(p["hi"]))}"/>')
            tip = f"{s['name']} {releases[i]}: {p['value']:.3g}"
            body.append(f'<circle cx="{_f(x)}" cy="{_f(y)}" r="3" fill="{s["colour"]}"><title>{escape(tip)}'
                        '</title></circle>')
    for i, (verdict, tip) in enumerate(marks):
        tops = [s["points"][i]["value"] for s in series if i < len(s["points"]) and s["points"][i]]
        body.append(_mark(sx(i), sy(max(tops)) if tops else height - mb - 8, verdict, tip))
    return _svg(width, height, title, body)


def scatter(points: list[dict], *, title: str, x_label: str, y_label: str, groups: list[tuple[str, str]],
            width: float = 760, height: float = 380) -> Markup:
    """``points``: [{"label", "group", "x", "x_lo", "x_hi", "y"}], x a speedup (log scale, a dashed
    line at 1: the parent's speed), y a score whose best is 1 (agreement with the parent)."""
    legend, lh = _legend([(g, c, False) for g, c in groups], 70, 16, width)
    colour = dict(groups)
    ml, mr, mt, mb = 70, 24, 16 + lh, 46
    xs = [v for p in points for v in (p["x"], p.get("x_lo"), p.get("x_hi")) if v] or [1.0]
    sx = Scale(min(min(xs), 0.9), max(max(xs), 1.1), ml, width - mr, log=True)
    ys = [p["y"] for p in points] or [1.0]
    # the points crowd near 1 (good variants): the axis starts just below the lowest one
    y_lo = max(0.0, min(ys) - max((1.0 - min(ys)) * 0.15, 1e-4))
    y_ticks = [t for t in nice_ticks(y_lo, 1.0) if y_lo - 1e-12 <= t <= 1.0 + 1e-12] or [1.0]
    sy = _Linear(y_lo, 1.0, height - mb, mt, y_ticks)
    body = [legend]
    for t in sy.ticks:
        body.append(f'<line class="grid" x1="{ml}" x2="{_f(width - mr)}" y1="{_f(sy(t))}" y2="{_f(sy(t))}"/>')
        body.append(_text(ml - 6, sy(t) + 4, tick(t), anchor="end", cls="tick"))
    for t in sx.ticks:
        body.append(f'<line class="grid" x1="{_f(sx(t))}" x2="{_f(sx(t))}" y1="{mt}" y2="{_f(height - mb)}"/>')
        body.append(_text(sx(t), height - mb + 16, tick(t), anchor="middle", cls="tick"))
    body.append(f'<line class="axis" x1="{_f(sx(1.0))}" x2="{_f(sx(1.0))}" y1="{mt}" y2="{_f(height - mb)}" '
                'stroke-dasharray="5 4"/>')
    body.append(_text(sx(1.0) + 4, height - mb - 5, "parent's speed", cls="tick"))
    body.append(_text((ml + width - mr) / 2, height - 8, x_label + " (log scale)", anchor="middle",
                      cls="axis-label", limit=200))
    body.append(f'<text class="axis-label" transform="translate(14 {_f((mt + height - mb) / 2)}) rotate(-90)" '
                f'text-anchor="middle">{escape(y_label)}</text>')
    placed: list[tuple[float, float, float]] = []          # label boxes: x0, x1, baseline y
    for p in sorted(points, key=lambda p: (-p["y"], p["x"])):
        x, y, c = sx(p["x"]), sy(p["y"]), colour.get(p["group"], "#374151")
        if p.get("x_lo") and p.get("x_hi"):
            body.append(f'<path class="whisker" d="M{_f(sx(p["x_lo"]))} {_f(y)}H{_f(sx(p["x_hi"]))}"/>')
        tip = f"{p['label']}: {p['x']:.2f}x, {p['y']:.4g}"
        body.append(f'<circle class="point" cx="{_f(x)}" cy="{_f(y)}" r="5" fill="{c}"><title>{escape(tip)}'
                    '</title></circle>')
        # labels of points that coincide (several variants in full agreement) step down, not over each other
        w, ly = min(len(p["label"]), 28) * CHAR_W, y - 6
        while any(a < x + 7 + w and x + 7 < b and abs(ly - yy) < 13 for a, b, yy in placed):
            ly += 13
        placed.append((x + 7, x + 7 + w, ly))
        body.append(_text(x + 7, ly, p["label"], cls="val", limit=28))
    return _svg(width, height, title, body)


class _Linear:
    """A linear value -> pixel map with given ticks (svg.Scale always starts at 0)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, ticks: list[float]):
        self.lo, self.hi, self.p0, self.p1, self.ticks = lo, hi, p0, p1, ticks

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.lo) / ((self.hi - self.lo) or 1.0) * (self.p1 - self.p0)
