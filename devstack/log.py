"""The stack's progress lines, on stderr."""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(f"[devstack] {msg}", file=sys.stderr, flush=True)
