"""What the training command lines share: the engine's messages on stdout, one clear error line and the
error's exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..core.errors import ViserError
from ..core.messages import to_callback


def run_cli(prog: str, action: Callable[[], object]) -> int:
    """Run ``action()`` with its messages (``logging``, ``core.messages``) printed; a ``ViserError`` becomes
    ``<prog>: error: ...`` on stderr and its exit code."""
    try:
        with to_callback(print):
            action()
    except ViserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0
