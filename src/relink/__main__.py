"""``python -m relink``: the command line."""

from __future__ import annotations

import sys

from relink.cli import main

sys.exit(main())
