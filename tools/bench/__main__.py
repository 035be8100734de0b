"""`python -m tools.bench`: see tools.bench.cli."""

from __future__ import annotations

import sys

from tools.bench.cli import main

sys.exit(main())
