"""What the training command lines share: one clear error line and the error's exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..core.errors import ViserError


def run_cli(prog: str, action: Callable[[], object]) -> int:
    """Run ``action()``; a ``ViserError`` becomes ``<prog>: error: ...`` on stderr and its exit code."""
    try:
        action()
    except ViserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0
