"""validation: the bundled model-matrix validator (not written yet)."""
