"""Progress of a long run: a tqdm bar on a terminal, plain lines otherwise (CI logs, pipes)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.stream, unit="step", dynamic_ncols=True)

    def note(self, text: str) -> None:
        """What is happening now (the bar's description, or one line)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(text[:60])
        else:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def done(self, text: str) -> None:
        """A step finished (one model's phase group); the line stays in the log either way."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            self.bar.update(1)
        else:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
