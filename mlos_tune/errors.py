"""mlos-tune's one error family. ``TuneError`` is a bad input found before anything runs (a
space, a workload, an SLO, a model path): the CLI prints its message and exits 2."""
from __future__ import annotations


class TuneError(ValueError):
    """Something the user gave cannot work; the message says what and what to do instead."""


class NothingMeasured(TuneError):
    """Every configuration failed: there is no answer (exit 1, not a usage error)."""


class ExperimentFailed(RuntimeError):
    """One configuration could not be measured (crash, timeout, refused, errors over the threshold):
    recorded with its reason, and the tuning goes on."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind        # crash | timeout | refused | errors | wrong_answer
        self.reason = reason
