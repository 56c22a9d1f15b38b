"""The engine's messages (what it detected, chose and did) go through the standard ``logging`` module,
under the logger ``viser_cr``; progress and cancel stay callbacks, since they are not messages.

Whoever runs the engine decides where the messages go: the command lines print them (``to_callback``
with a printer), QGIS hands a run's messages to its Processing feedback (``this_thread=True``: the
records of the run's own thread, so that two runs at once keep their messages apart).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

LOGGER = "viser_cr"


class CallbackHandler(logging.Handler):
    """Hands the text of each record (of one thread only, when ``thread`` is set) to ``write``."""

    def __init__(self, write: Callable[[str], None], thread: int | None = None):
        super().__init__(level=logging.INFO)
        self.write = write
        self.thread = thread

    def emit(self, record: logging.LogRecord) -> None:
        if self.thread is not None and record.thread != self.thread:
            return
        try:
            self.write(record.getMessage())
        except Exception:  # noqa: BLE001 - a message that cannot be shown must not stop the run
            self.handleError(record)


_lock = threading.Lock()
_users = 0
_saved_level = logging.NOTSET


@contextlib.contextmanager
def to_callback(write: Callable[[str], None], this_thread: bool = False) -> Iterator[CallbackHandler]:
    """Within the block, every engine message (INFO and up) goes to ``write(text)``; with ``this_thread``
    only those of the calling thread. The logger's level is raised to INFO meanwhile, then restored."""
    global _users, _saved_level
    logger = logging.getLogger(LOGGER)
    handler = CallbackHandler(write, threading.get_ident() if this_thread else None)
    with _lock:
        if _users == 0:
            _saved_level = logger.level
            if not logger.isEnabledFor(logging.INFO):
                logger.setLevel(logging.INFO)
        _users += 1
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        with _lock:
            _users -= 1
            if _users == 0:
                logger.setLevel(_saved_level)
