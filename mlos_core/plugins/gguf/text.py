"""Generated tokens to streamed text: UTF-8 sequences split across tokens are held until complete,
and text that could be the start of a stop string is held until it is known not to be one.

The text is what ``Llama.create_completion`` gives for the same tokens: the concatenated pieces
(special tokens render empty), decoded as UTF-8 with invalid bytes dropped.
"""
from __future__ import annotations

from typing import Callable, Sequence


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could begin a stop sequence."""
    best = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:i]):
                best = i
                break
    return best


def split_utf8(data: bytes) -> tuple[str, bytes]:
    """The text of ``data`` and the trailing bytes of a character not complete yet."""
    try:
        return data.decode("utf-8"), b""
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and len(data) - e.start < 4:
            return data[:e.start].decode("utf-8", "ignore"), data[e.start:]
        return data.decode("utf-8", "ignore"), b""


class TextStream:
    def __init__(self, piece: Callable[[int], bytes], stops: Sequence[str] = ()):
        self._piece = piece
        self._stops = tuple(stops)
        self._bytes = b""
        self._pending = ""
        self.stopped = False  # a stop string was completed: nothing more is emitted

    def push(self, token: int) -> str:
        """The text that can be emitted now that ``token`` came."""
        if self.stopped:
            return ""
        text, self._bytes = split_utf8(self._bytes + self._piece(token))
        self._pending += text
        if not self._stops:
            out, self._pending = self._pending, ""
            return out
        hits = [self._pending.index(s) for s in self._stops if s in self._pending]
        if hits:
            out = self._pending[:min(hits)]
            self._pending, self._bytes, self.stopped = "", b"", True
            return out
        keep = held_back(self._pending, self._stops)
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """Whatever is held back, at the end of the generation."""
        out = self._pending + self._bytes.decode("utf-8", "ignore")
        self._pending, self._bytes = "", b""
        return out
