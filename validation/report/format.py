"""How the report writes numbers: one place, so every table and card reads alike."""
from __future__ import annotations

NOT_MEASURED = "not measured in this run"


def is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def ms(x, dash: str = "—") -> str:
    """Milliseconds at a precision that suits their size; seconds and minutes past 1 s."""
    if not is_num(x):
        return dash
    if x >= 60_000:
        return f"{int(x // 60_000)} min {x % 60_000 / 1000:.0f} s"
    if x >= 1000:
        return f"{x / 1000:.2f} s"
    if x >= 100:
        return f"{x:.0f} ms"
    if x >= 10:
        return f"{x:.1f} ms"
    return f"{x:.2f} ms"


def size(x, dash: str = "—") -> str:
    if not is_num(x):
        return dash
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f} B"


def pct(x, dash: str = "—") -> str:
    return f"{x:.1f} %" if is_num(x) else dash


def num(x, dash: str = "—") -> str:
    if not is_num(x):
        return dash
    if isinstance(x, int) or (float(x).is_integer() and abs(x) >= 100):
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.1f}"


def interval(iv, unit: str = "") -> str:
    """'12.3 [11.9, 12.8] ms (n=200)' from an Interval dict; '—' when absent."""
    if not isinstance(iv, dict) or not is_num(iv.get("value")):
        return "—"
    sep = " " if unit else ""
    return (f"{num(iv['value'])} [{num(iv.get('ci_low'))}, {num(iv.get('ci_high'))}]{sep}{unit}"
            f" (n={iv.get('n', '?')})")


def speedup(iv) -> str:
    if not isinstance(iv, dict) or not is_num(iv.get("value")):
        return "—"
    return f"{iv['value']:.3g}× [{iv.get('ci_low', 0):.3g}, {iv.get('ci_high', 0):.3g}]"


def label(model: dict, many_runs: bool) -> str:
    """How a model record is named everywhere: name (mode[, run])."""
    extra = model.get("mode", "?") + (f", {model['run']}" if many_runs and model.get("run") else "")
    return f"{model.get('model_name', '?')} ({extra})"
