"""The local Hugging Face Hub lives in the validator (``validation/hub_server.py``), which serves its
offline suite from it; the tests import it from here, so there is one copy."""
from validation.hub_server import LFS_EXTENSIONS, LFS_THRESHOLD, Blob, LocalHub, is_lfs_path  # noqa: F401

__all__ = ["LocalHub", "Blob", "is_lfs_path", "LFS_THRESHOLD", "LFS_EXTENSIONS"]
