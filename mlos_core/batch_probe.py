"""Whether axis 0 of a model really is a batch axis, proved before requests are stacked on it.

A graph whose every input and output has a dynamic axis 0 looks batchable, but the dynamic axis
may mean something else: ``y = x - mean(x, axis=0)`` over rows gives each row an answer that
depends on the other rows, so stacking two clients' requests would silently change both answers.
So at load, a model that looks batchable runs a probe: two random rows of the declared dtypes,
once apart and once stacked; batching is enabled only if the stacked outputs equal the separate
ones (exactly for integers, booleans and strings; within a small tolerance for floats, since a
runtime may sum in another order for a batch). Anything else (a failed run, outputs whose axis 0
is not the rows given) serves the model unbatched, with the reason in its description. The
register option ``batching`` (``auto``, ``on``, ``off``) forces the choice either way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import BadRequest
from .smi import DYNAMIC, Model

RTOL, ATOL = 1e-3, 1e-5
_FREE_DIM = 3  # the size given to other dynamic axes in the probe's inputs


@dataclass(frozen=True)
class BatchDecision:
    enabled: bool
    reason: str
    probe_ms: float | None = None

    def describe(self) -> dict:
        out = {"enabled": self.enabled, "reason": self.reason}
        if self.probe_ms is not None:
            out["probe_ms"] = round(self.probe_ms, 3)
        return out


def _row(spec, rng: np.random.Generator) -> np.ndarray:
    shape = (1,) + tuple(_FREE_DIM if d == DYNAMIC else d for d in spec.shape[1:])
    kind = spec.dtype.kind
    if kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if kind in "iu":
        return rng.integers(0, 2, shape).astype(spec.dtype)  # 0/1: valid ids, masks and indices alike
    if kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if kind in "OSU":
        return np.array([str(v).encode() for v in rng.integers(0, 10, int(np.prod(shape)))],
                        dtype=object).reshape(shape)
    raise ValueError(f"input {spec.name!r} has dtype {spec.dtype}, which the probe cannot make")


def _same(together: np.ndarray, apart: np.ndarray) -> bool:
    if together.shape != apart.shape:
        return False
    if together.dtype.kind == "f":
        return bool(np.allclose(together, apart, rtol=RTOL, atol=ATOL, equal_nan=True))
    return bool(np.array_equal(together, apart))


def probe(model: Model) -> tuple[bool, str]:
    meta = model.metadata
    rng = np.random.default_rng(20261202)
    rows = [{t.name: _row(t, rng) for t in meta.inputs} for _ in range(2)]
    apart = [model.infer(r) for r in rows]
    together = model.infer({name: np.concatenate([r[name] for r in rows]) for name in rows[0]})
    for name, out in together.items():
        if out.ndim == 0 or out.shape[0] != 2:
            return False, f"output {name!r} does not keep axis 0 as the rows given (2 rows in, shape {list(out.shape)} out)"
        for i, single in enumerate(apart):
            if not _same(out[i:i + 1], single[name]):
                return False, (f"output {name!r} of a row changes when another row is beside it: axis 0 is not a "
                               "batch axis, so requests are never stacked")
    return True, "axis 0 proved a batch axis: two rows stacked answer as they do apart"


def decide(model: Model, setting: str, max_batch_size: int) -> BatchDecision:
    """The batching decision for a freshly loaded model (runs it: call off the event loop)."""
    meta = model.metadata
    if setting == "off":
        return BatchDecision(False, "batching is off (option batching=off)")
    if not meta.batchable:
        if setting == "on":
            raise BadRequest("option batching=on, but axis 0 is not dynamic on every input and output of this model")
        return BatchDecision(False, "axis 0 is not dynamic on every input and output")
    if max_batch_size <= 1:
        return BatchDecision(False, "max_batch_size is 1")
    if setting == "on":
        return BatchDecision(True, "forced on (option batching=on); not probed")
    t0 = time.perf_counter()
    try:
        ok, why = probe(model)
    except Exception as e:  # noqa: BLE001 - any failure of a random input means: do not batch
        ok, why = False, f"the probe could not run the model on random inputs ({str(e)[:200] or type(e).__name__})"
    return BatchDecision(ok, why, (time.perf_counter() - t0) * 1e3)
