"""The benchmarks' load generator is mlos-tune's (``mlos_tune.http_load``): one implementation for
both. ``python -m benchmarks.loadgen ...`` keeps working with the same flags and output."""
from __future__ import annotations

import sys

from mlos_tune.http_load import _percentile, build_request, main  # noqa: F401  (re-exported; grpc_loadgen uses _percentile)

if __name__ == "__main__":
    sys.exit(main())
