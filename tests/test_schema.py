"""Typing DICOM strings into Arrow columns: valid forms parse, anything else is null."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pytest

from dicomframe._worker import column
from dicomframe.schema import arrow_type_for, cast_column


def _cast(values: list[str | None], type_: pa.DataType) -> list[object]:
    return cast_column(column(values, pa.string()), type_).to_pylist()


def test_dates() -> None:
    got = _cast(["20200101", "2020.01.02", " 20200103 ", "2020", "20201301", "", None, "abc"], pa.date32())
    assert got == [dt.date(2020, 1, 1), dt.date(2020, 1, 2), dt.date(2020, 1, 3), None, None, None, None, None]


def test_times() -> None:
    got = _cast(["101010", "101010.5", "1010", "10", "10:10:10", "101010.123456", "250000", "1", None], pa.time64("us"))
    assert got == [
        dt.time(10, 10, 10),
        dt.time(10, 10, 10, 500000),
        dt.time(10, 10),
        dt.time(10),
        dt.time(10, 10, 10),
        dt.time(10, 10, 10, 123456),
        None,
        None,
        None,
    ]


def test_datetimes_keep_local_time_and_accept_partial_forms() -> None:
    got = _cast(["20200101101010.5+0100", "2020", "202003", "20200304", "2020030412", "bad"], pa.timestamp("us"))
    assert got == [
        dt.datetime(2020, 1, 1, 10, 10, 10, 500000),
        dt.datetime(2020, 1, 1),
        dt.datetime(2020, 3, 1),
        dt.datetime(2020, 3, 4),
        dt.datetime(2020, 3, 4, 12),
        None,
    ]


def test_numbers() -> None:
    assert _cast(["7", " +5", "-3", "1.5", "", "x", "99999999999999999999"], pa.int64()) == [7, 5, -3, None, None, None, None]
    assert _cast(["1.5", "-2e3", ".5", "7", "inf", "1,5", None], pa.float64())[:5] == [1.5, -2000.0, 0.5, 7.0, float("inf")]
    assert _cast(["1,5", None], pa.float64()) == [None, None]


def test_multi_valued_attributes_are_lists() -> None:
    assert arrow_type_for("PixelSpacing") == pa.list_(pa.float64())
    got = _cast(["0.5\\0.5", "", None, "1\\x"], pa.list_(pa.float64()))
    assert got == [[0.5, 0.5], None, None, [1.0, None]]
    assert arrow_type_for("StudyDate") == pa.date32() and arrow_type_for("NoSuchKeyword") == pa.string()


@pytest.mark.parametrize("module", ["pandas", "polars"])
def test_a_scan_to_parquet_needs_neither_pandas_nor_polars(module: str, tmp_path: object) -> None:
    code = (
        "import sys, dicomframe as dcf; from pydicom.data import get_testdata_file; "
        f"dcf.scan(get_testdata_file('CT_small.dcm'), output={str(tmp_path)!r} + '/o.parquet', progress=False); "
        f"sys.exit(1 if {module!r} in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
