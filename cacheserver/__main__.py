"""``python -m asymcache.cacheserver [flags]``: the same as ``asymcache serve``."""

from __future__ import annotations

import sys

from asymcache.cacheserver.cli import main

sys.exit(main())
