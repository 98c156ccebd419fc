"""Table schemas and the typing of attribute values (VR → Arrow/polars type).

The elements table keeps every value as a string (its DICOM string form). The
instances table gives top-level attributes a column each, typed from the
data dictionary:

=========================  ======================
VR                         column type
=========================  ======================
DA                         ``Date``
TM                         ``Time``
DT                         ``Datetime("us")`` (UTC offset dropped; the local time as written)
IS, US, UL, SS, SL, SV     ``Int64``
UV                         ``UInt64``
DS, FL, FD                 ``Float64``
everything else            ``String``
=========================  ======================

Attributes whose dictionary VM is not ``1`` are ``List`` of that type. A
value that does not parse (e.g. a malformed date) becomes null in the
instances table; the elements table always keeps the original string.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from ._worker import ELEMENTS_ARROW, FILE_COLUMNS, INSTANCE_SKIP_VRS, empty_table
from .tags import TAGS_BY_KEYWORD, VMS, VRS

__all__ = [
    "BULK_VRS",
    "ELEMENTS_SCHEMA",
    "ERRORS_SCHEMA",
    "FILES_SCHEMA",
    "cast_instances",
    "dtype_for",
    "parse_da",
    "parse_dt",
    "parse_tm",
]

def _polars_schema(schema: pa.Schema) -> dict[str, pl.DataType]:
    # an empty table built without converting Python objects (that would import pandas)
    frame = pl.from_arrow(empty_table(schema))
    assert isinstance(frame, pl.DataFrame)
    return dict(frame.schema)


#: the elements table (one row per element, any depth)
ELEMENTS_SCHEMA = _polars_schema(ELEMENTS_ARROW)
#: the per-file columns that start the instances table
FILES_SCHEMA = _polars_schema(pa.schema(FILE_COLUMNS))
#: the errors table
ERRORS_SCHEMA: dict[str, pl.DataType] = {
    "file_id": pl.Int64(),
    "path": pl.String(),
    "size": pl.Int64(),
    "kind": pl.String(),
    "message": pl.String(),
}
#: VRs never turned into instance columns (bulk binary and sequences)
BULK_VRS = tuple(sorted(INSTANCE_SKIP_VRS))

_INT_VRS = frozenset(("IS", "US", "UL", "SS", "SL", "SV", "US or SS"))
_FLOAT_VRS = frozenset(("DS", "FL", "FD"))


def _scalar_dtype(vr: str) -> pl.DataType:
    if vr == "DA":
        return pl.Date()
    if vr == "TM":
        return pl.Time()
    if vr == "DT":
        return pl.Datetime("us")
    if vr in _INT_VRS:
        return pl.Int64()
    if vr == "UV":
        return pl.UInt64()
    if vr in _FLOAT_VRS:
        return pl.Float64()
    return pl.String()


def dtype_for(keyword: str) -> pl.DataType:
    """The instances column type of a keyword, from its dictionary VR and VM.

    Examples
    --------
    >>> dtype_for("StudyDate")
    Date
    >>> dtype_for("ImageType")
    List(String)
    """
    tag = TAGS_BY_KEYWORD.get(keyword)
    if tag is None:
        return pl.String()
    scalar = _scalar_dtype(VRS.get(tag, ""))
    if VMS.get(tag, "1") != "1":
        return pl.List(scalar)
    return scalar


def parse_da(s: pl.Expr) -> pl.Expr:
    """DA strings (``YYYYMMDD``; legacy ``YYYY.MM.DD`` too) to ``Date``; invalid → null."""
    digits = s.str.strip_chars().str.replace_all(".", "", literal=True)
    return (
        pl.when(digits.str.len_chars() == 8)
        .then(digits)
        .otherwise(None)
        .str.strptime(pl.Date, "%Y%m%d", strict=False)
    )


def _time_ns(s: pl.Expr) -> pl.Expr:
    text = s.str.strip_chars().str.replace_all(":", "", literal=True)
    whole = text.str.extract(r"^(\d{2,6})(?:\.\d*)?$", 1)
    ok_len = whole.str.len_chars().is_in([2, 4, 6])
    padded = whole.str.pad_end(6, "0")
    hour = padded.str.slice(0, 2).cast(pl.Int64, strict=False)
    minute = padded.str.slice(2, 2).cast(pl.Int64, strict=False)
    second = padded.str.slice(4, 2).cast(pl.Int64, strict=False)
    frac = (
        text.str.extract(r"^\d{6}\.(\d{1,6})", 1)
        .str.pad_end(6, "0")
        .cast(pl.Int64, strict=False)
        .fill_null(0)
    )
    micros = (hour * 3600 + minute * 60 + second) * 1_000_000 + frac
    valid = ok_len & (hour < 24) & (minute < 60) & (second < 60)
    return pl.when(valid).then(micros * 1000).otherwise(None)


def parse_tm(s: pl.Expr) -> pl.Expr:
    """TM strings (``HHMMSS.FFFFFF`` and shorter forms, legacy ``HH:MM:SS``) to ``Time``."""
    return _time_ns(s).cast(pl.Time)


def parse_dt(s: pl.Expr) -> pl.Expr:
    """DT strings (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``, partial forms allowed) to ``Datetime``.

    The UTC offset suffix is dropped: the result is the local time as written.
    """
    text = s.str.strip_chars().str.replace(r"[+-]\d{4}$", "")
    date_part = text.str.slice(0, 8)
    n = date_part.str.len_chars()
    date_full = (
        pl.when(n == 4)
        .then(date_part + "0101")
        .when(n == 6)
        .then(date_part + "01")
        .when(n == 8)
        .then(date_part)
        .otherwise(None)
    )
    date = date_full.str.strptime(pl.Date, "%Y%m%d", strict=False)
    rest = text.str.slice(8)
    time_ns = pl.when(rest.str.len_chars() == 0).then(pl.lit(0, pl.Int64)).otherwise(_time_ns(rest))
    return (
        pl.when(date.is_not_null() & time_ns.is_not_null())
        .then(date.cast(pl.Datetime("us")) + pl.duration(microseconds=time_ns // 1000))
        .otherwise(None)
    )


def _cast_scalar(s: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Date:
        return parse_da(s)
    if dtype == pl.Time:
        return parse_tm(s)
    if isinstance(dtype, pl.Datetime):
        return parse_dt(s)
    if dtype == pl.String:
        return s
    return s.str.strip_chars().cast(dtype, strict=False)


def cast_column(name: str, dtype: pl.DataType) -> pl.Expr:
    """Expression turning a string column of DICOM values into ``dtype``."""
    col = pl.col(name)
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        assert inner is not None
        split = pl.when(col.is_null() | (col == "")).then(None).otherwise(col.str.split("\\"))
        return split.list.eval(_cast_scalar(pl.element(), inner)).alias(name)
    if dtype == pl.String:
        return col.alias(name)
    return _cast_scalar(col, dtype).alias(name)


def cast_instances(wide: pl.DataFrame, fixed: set[str], group: int = 16) -> pl.DataFrame:
    """Cast every keyword column of an all-string instances frame.

    Columns are cast ``group`` at a time: all at once runs every cast in parallel
    and doubles the peak memory for a small gain in time.
    """
    columns = [c for c in wide.columns if c not in fixed]
    for i in range(0, len(columns), group):
        wide = wide.with_columns([cast_column(c, dtype_for(c)) for c in columns[i : i + group]])
    return wide
