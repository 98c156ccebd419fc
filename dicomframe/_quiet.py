"""Warnings and library log lines silenced around reads of file values, safely across threads.

pydicom warns with values of the file in the message (an invalid date, a name in an
unknown character set), and logs the same message on its ``pydicom`` logger: none may
reach a terminal or a log. ``warnings.catch_warnings`` is not safe across threads: it
saves and restores the process-wide filters, so a thread leaving its block turns
warnings back on while another thread is still inside its own, whose warning is then
shown. :func:`no_warnings` counts the threads inside: the filters (and the ``pydicom``
logger) are switched off when the first enters and restored when the last leaves.
:func:`silence_pydicom_log` switches that logger off for good (the command line and the
network services, which run on patients' files only).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["no_warnings", "silence_pydicom_log"]

_lock = threading.Lock()
_inside = 0
_saved: list[Any] = []
_saved_log_disabled = False
_log_off_for_good = False


def _pydicom_logger() -> logging.Logger:
    return logging.getLogger("pydicom")


@contextmanager
def no_warnings() -> Iterator[None]:
    """No warning is shown, and pydicom logs nothing, while any thread is inside a
    ``with no_warnings():`` block."""
    global _inside, _saved_log_disabled
    with _lock:
        if _inside == 0:
            _saved[:] = warnings.filters
            warnings.simplefilter("ignore")
            logger = _pydicom_logger()
            _saved_log_disabled = logger.disabled
            logger.disabled = True
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                warnings.filters[:] = _saved  # type: ignore[index]  # a list at run time
                warnings._filters_mutated()  # type: ignore[attr-defined]  # what catch_warnings calls
                _saved.clear()
                _pydicom_logger().disabled = _saved_log_disabled or _log_off_for_good


def silence_pydicom_log() -> None:
    """Switch pydicom's logger off in this process for good: its warnings quote values of files."""
    global _log_off_for_good
    with _lock:
        _log_off_for_good = True
        _pydicom_logger().disabled = True
