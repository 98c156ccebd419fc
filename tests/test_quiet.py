"""Warnings that may quote a file's values stay silent while threads overlap."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import pytest

from dicomframe._quiet import no_warnings

from .conftest import SAMPLES


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


def test_pydicom_logs_no_value_of_a_file_read_by_a_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import pydicom

    import dicomframe as dcf
    from dicomframe import _quiet

    ds = pydicom.dcmread(min((SAMPLES / "cohort").rglob("*.dcm")))
    ds.SpecificCharacterSet = "MRN1234567 DOE"  # an unknown character set: pydicom warns and logs its name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(tmp_path / "a.dcm")
    caplog.clear()  # what pydicom logged while writing it
    logger, off_for_good = logging.getLogger("pydicom"), _quiet._log_off_for_good
    _quiet._log_off_for_good, logger.disabled = False, False  # as in a notebook (the CLI switches it off)
    try:
        with caplog.at_level(logging.DEBUG):
            dcf.scan(tmp_path, progress=False)
        assert "MRN1234567" not in caplog.text
        assert not logger.disabled  # only while inside the blocks
    finally:
        _quiet._log_off_for_good = logger.disabled = off_for_good


def test_silenced_for_good_stays_silent_after_the_blocks(caplog: pytest.LogCaptureFixture) -> None:
    from dicomframe import _quiet

    logger = logging.getLogger("pydicom")
    try:
        _quiet.silence_pydicom_log()
        with no_warnings():
            pass
        with caplog.at_level(logging.DEBUG):
            logger.warning("Unknown encoding 'DOE' - using default encoding instead")
        assert "DOE" not in caplog.text
    finally:
        _quiet._log_off_for_good = False
        logger.disabled = False
