"""Statistics for A/B comparisons on a noisy machine: medians, percentiles and ratios with
bootstrap confidence intervals (percentile method, fixed seed so a report is reproducible).

A ratio "differs" only when its interval excludes 1.0; otherwise the verdict is "no significant
difference", whatever the point estimate says.

The one implementation: benchmarks/ (stats.py re-exports it), validation/compare.py,
validation/baseline.py and validation/quant_measure.py use it.
"""
from __future__ import annotations

import numpy as np

BOOTSTRAP = 2000
SEED = 20261126


def _boot(samples: np.ndarray, stat, n: int, rng) -> np.ndarray:
    idx = rng.integers(0, len(samples), size=(n, len(samples)))
    return stat(samples[idx], axis=1)


def percentile_ci(samples, q: float = 50.0, level: float = 0.95, n: int = BOOTSTRAP) -> dict:
    """The ``q``-th percentile of ``samples`` with its bootstrap interval."""
    a = np.asarray(samples, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    boot = _boot(a, lambda x, axis: np.percentile(x, q, axis=axis), n, rng)
    lo, hi = np.percentile(boot, [50 * (1 - level), 100 - 50 * (1 - level)])
    return {"value": float(np.percentile(a, q)), "ci_low": float(lo), "ci_high": float(hi), "n": int(a.size)}


def mean_ci(samples, level: float = 0.95, n: int = BOOTSTRAP) -> dict:
    """The mean of ``samples`` with its bootstrap interval (e.g. a rate from equal time slices)."""
    a = np.asarray(samples, dtype=np.float64)
    boot = _boot(a, np.mean, n, np.random.default_rng(SEED))
    lo, hi = np.percentile(boot, [50 * (1 - level), 100 - 50 * (1 - level)])
    return {"value": float(a.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(a.size)}


def ratio_ci(a, b, q: float = 50.0, level: float = 0.95, n: int = BOOTSTRAP, mean: bool = False) -> dict:
    """percentile_q(a) / percentile_q(b) (or mean(a) / mean(b)), each side resampled
    independently; with a verdict."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    stat = np.mean if mean else (lambda x, axis: np.percentile(x, q, axis=axis))
    pa = _boot(a, stat, n, rng)
    pb = _boot(b, stat, n, rng)
    lo, hi = np.percentile(pa / pb, [50 * (1 - level), 100 - 50 * (1 - level)])
    ratio = float(stat(a, axis=0) / stat(b, axis=0))
    verdict = "no significant difference" if lo <= 1.0 <= hi else ("lower" if hi < 1.0 else "higher")
    return {"ratio": ratio, "ci_low": float(lo), "ci_high": float(hi), "verdict": verdict}


def replicate_ratio_ci(a_runs, b_runs, level: float = 0.95) -> dict:
    """The ratio of two sets of replicated runs' figures (one value per run, e.g. each run's median
    latency), a / b, from a pooled two-sample t-interval of their logarithms: the interval covers
    how much whole runs vary, which a bootstrap over one run's requests cannot see. With one run
    on one side it is the prediction interval of that run against the other side's runs. Needs at
    least three runs in all (one degree of freedom); fewer raise ValueError."""
    from scipy.stats import t as student_t

    la, lb = np.log(np.asarray(a_runs, dtype=np.float64)), np.log(np.asarray(b_runs, dtype=np.float64))
    ka, kb = la.size, lb.size
    df = ka + kb - 2
    if ka < 1 or kb < 1 or df < 1:
        raise ValueError(f"need at least three runs in all, one per side; have {ka} and {kb}")
    ss = ((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum()
    se = np.sqrt(ss / df) * np.sqrt(1 / ka + 1 / kb)
    diff = float(la.mean() - lb.mean())
    half = float(student_t.ppf(0.5 + level / 2, df) * se)
    lo, hi = np.exp(diff - half), np.exp(diff + half)
    verdict = "no significant difference" if lo <= 1.0 <= hi else ("lower" if hi < 1.0 else "higher")
    return {"ratio": float(np.exp(diff)), "ci_low": float(lo), "ci_high": float(hi), "verdict": verdict,
            "df": df, "sd_log": float(np.sqrt(ss / df))}
