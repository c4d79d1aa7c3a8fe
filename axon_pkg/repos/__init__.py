"""One adapter per model repository (``hf/``, ``pytorch/``, ``tfhub/``, ``modelscope/``), behind
the interface described in :mod:`axon_pkg.repos.base`."""
from .base import RemoteFile, Resolved, Selection, adapter_for

__all__ = ["RemoteFile", "Resolved", "Selection", "adapter_for"]
