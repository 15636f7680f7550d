"""`python -m bench`: run every benchmark (see bench/run.py)."""

import sys

from bench.run import main

raise SystemExit(main(sys.argv[1:]))
