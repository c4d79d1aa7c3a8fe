"""The benchmarks' load generator is mlos-tune's (``mlos_tune.http_load``): one implementation for
both. ``python -m benchmarks.loadgen ...`` keeps working with the same flags and output."""
from __future__ import annotations

import sys

from mlos_tune.http_load import build_request, main  # noqa: F401  (re-exported)

if __name__ == "__main__":
    sys.exit(main())
