"""``python -m tempmail``: the same entry point as the ``tempmail`` console script."""

from __future__ import annotations

import sys

from tempmail.cli import main

sys.exit(main())
