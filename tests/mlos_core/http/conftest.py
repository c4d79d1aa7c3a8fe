"""Fixtures of the HTTP tests: client-made POSIX shared memory."""
from __future__ import annotations

from multiprocessing import shared_memory

import pytest


@pytest.fixture
def shm():
    """``shm(size)``: a POSIX shared-memory object as a client makes it (unlinked after)."""
    made = []

    def make(size: int) -> shared_memory.SharedMemory:
        s = shared_memory.SharedMemory(create=True, size=size)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
        s.unlink()
