"""MLOS core: the inference runtime (see DESIGN.md at the project root's shared notes)."""

__version__ = "0.1.0"
