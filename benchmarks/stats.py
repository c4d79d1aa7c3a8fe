"""Moved to validation/stats.py (one implementation for the benchmarks and the validator);
this name stays so older imports keep working."""
from validation.stats import BOOTSTRAP, SEED, percentile_ci, ratio_ci

__all__ = ["BOOTSTRAP", "SEED", "percentile_ci", "ratio_ci"]
