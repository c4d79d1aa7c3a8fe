"""``python -m validation.report``: the same as ``python -m validation report``."""
import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
