"""axon-py: verified `.axon` model packages (manifest + files + sha256)."""

__version__ = "0.1.0"
