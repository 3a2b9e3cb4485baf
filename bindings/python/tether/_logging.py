"""Routes the library's diagnostics (``tether_set_log_callback``) into the ``logging``
module, logger ``tether``."""

from __future__ import annotations

import ctypes
import logging

from . import _native as n

logger = logging.getLogger("tether")

_LEVELS = {
    n.LOG_ERROR: logging.ERROR,
    n.LOG_WARN: logging.WARNING,
    n.LOG_INFO: logging.INFO,
    n.LOG_DEBUG: logging.DEBUG,
}


def _on_line(_user: int, level: int, message: int, length: int) -> None:
    # Runs inside library calls: never let an exception unwind into the native frames.
    try:
        py_level = _LEVELS.get(level, logging.DEBUG)
        if logger.isEnabledFor(py_level):
            logger.log(py_level, "%s", ctypes.string_at(message, length).decode("utf-8", "replace"))
    except Exception:  # pragma: no cover - a broken handler must not crash the device
        pass


# Kept alive for the life of the process: the library holds this function pointer.
_CALLBACK = n.LogCallback(_on_line)


def set_log_level(max_level: int = n.LOG_DEBUG) -> None:
    """Chooses the most detailed library level forwarded to the ``tether`` logger
    (``LOG_ERROR`` .. ``LOG_DEBUG``); lines are then filtered by the logger's own level."""
    n.check(n.lib.tether_set_log_callback(max_level, _CALLBACK, None))


set_log_level(n.LOG_INFO)
