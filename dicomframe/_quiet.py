"""Warnings silenced around reads of file values, safely across threads.

pydicom warns with values of the file in the message (an invalid date, a name in an
unknown character set): none may reach a terminal or a log. ``warnings.catch_warnings``
is not safe across threads: it saves and restores the process-wide filters, so a
thread leaving its block turns warnings back on while another thread is still inside
its own, whose warning is then shown. :func:`no_warnings` counts the threads inside:
the filters are set when the first enters and restored when the last leaves.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["no_warnings"]

_lock = threading.Lock()
_inside = 0
_saved: list[Any] = []


@contextmanager
def no_warnings() -> Iterator[None]:
    """No warning is shown while any thread is inside a ``with no_warnings():`` block."""
    global _inside
    with _lock:
        if _inside == 0:
            _saved[:] = warnings.filters
            warnings.simplefilter("ignore")
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
