"""`python -m intentops.cli ...`: the same command line as the `intentops` script (no install needed)."""

import sys

from intentops.cli import main

sys.exit(main())
