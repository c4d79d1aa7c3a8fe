"""The one error family of axon-py. The CLI turns each into one line of text and an exit
code in one place (``axon_pkg.cli.main``)."""
from __future__ import annotations


class AxonError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class RefError(AxonError):
    """A model reference that cannot be parsed or names an unsupported namespace."""

    exit_code = 2


class NotInstalled(AxonError):
    pass


class HubError(AxonError):
    """The hub said no: unknown repo, revision or file, no access, or unreachable."""


class SelectionError(AxonError):
    """The repo holds nothing installable, or several candidates and no way to choose."""


class IntegrityError(AxonError):
    """A package whose files, manifest or archive do not check out."""


class CoreError(AxonError):
    """The MLOS core refused or could not be reached."""


class ConversionFailed(AxonError):
    """A model that only runs after conversion (torchvision weights, a SavedModel) could not be converted."""
