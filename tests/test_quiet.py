"""Warnings that may quote a file's values stay silent while threads overlap."""

from __future__ import annotations

import threading
import warnings

import pytest

from dicomframe._quiet import no_warnings


def test_a_thread_leaving_its_block_does_not_unsilence_another(recwarn: pytest.WarningsRecorder) -> None:
    warnings.simplefilter("always")  # what a notebook or a server may have set
    before = list(warnings.filters)
    entered, left = threading.Event(), threading.Event()

    def first() -> None:
        with no_warnings():
            entered.set()
            assert left.wait(10)

    def second() -> None:
        assert entered.wait(10)
        with no_warnings():
            left.set()
            worker.join(10)  # the first thread has left its block: this one is still inside
            warnings.warn("Invalid value 'DOE^JANE' for VR DA")  # a value of a file

    worker = threading.Thread(target=first)
    worker.start()
    other = threading.Thread(target=second)
    other.start()
    other.join(10)
    assert not [str(w.message) for w in recwarn]
    assert warnings.filters == before  # restored once the last thread left
    warnings.warn("shown again after the blocks")
    assert len(recwarn) == 1
