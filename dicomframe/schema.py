"""Table schemas and the typing of attribute values (VR → Arrow type).

The elements table keeps every value as a string (its DICOM string form). The
instances table gives top-level attributes a column each, typed from the
data dictionary:

=========================  ==========================================
VR                         column type (Arrow → polars)
=========================  ==========================================
DA                         ``date32`` → ``Date``
TM                         ``time64[us]`` → ``Time``
DT                         ``timestamp[us]`` → ``Datetime("us")`` (UTC offset dropped:
                           the local time as written)
IS, US, UL, SS, SL, SV     ``int64`` → ``Int64``
UV                         ``uint64`` → ``UInt64``
DS, FL, FD                 ``float64`` → ``Float64``
everything else            ``string`` → ``String``
=========================  ==========================================

Attributes whose dictionary VM is not ``1`` are lists of that type. A value
that does not parse (a malformed date, a number with a typo) becomes null in
the instances table; the elements table always keeps the original string.

Typing runs in Arrow compute kernels, so a scan written to Parquet never needs
polars (nor its memory); polars frames are made when a table is looked at.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ._worker import ELEMENTS_ARROW, FILE_COLUMNS, column, empty_table
from .tags import TAGS_BY_KEYWORD, VMS, VRS

__all__ = [
    "ELEMENTS_ARROW",
    "ERRORS_ARROW",
    "FILES_ARROW",
    "arrow_type_for",
    "cast_instances",
]

#: the per-file columns that start the instances table
FILES_ARROW = pa.schema(FILE_COLUMNS)
#: the errors table
ERRORS_ARROW = pa.schema(
    [
        ("file_id", pa.int64()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("kind", pa.string()),
        ("message", pa.string()),
    ]
)

_INT_VRS = frozenset(("IS", "US", "UL", "SS", "SL", "SV", "US or SS"))
_FLOAT_VRS = frozenset(("DS", "FL", "FD"))
_POOL = pa.system_memory_pool()


def _scalar_type(vr: str) -> pa.DataType:
    if vr == "DA":
        return pa.date32()
    if vr == "TM":
        return pa.time64("us")
    if vr == "DT":
        return pa.timestamp("us")
    if vr in _INT_VRS:
        return pa.int64()
    if vr == "UV":
        return pa.uint64()
    if vr in _FLOAT_VRS:
        return pa.float64()
    return pa.string()


def arrow_type_for(keyword: str) -> pa.DataType:
    """The instances column type of a keyword, from its dictionary VR and VM.

    Examples
    --------
    >>> arrow_type_for("StudyDate")
    DataType(date32[day])
    >>> arrow_type_for("ImageType")
    ListType(list<item: string>)
    """
    tag = TAGS_BY_KEYWORD.get(keyword)
    if tag is None:
        return pa.string()
    scalar = _scalar_type(VRS.get(tag, ""))
    if VMS.get(tag, "1") != "1":
        return pa.list_(scalar)
    return scalar


def _int(value: int) -> pa.Scalar:
    return column([value], pa.int64())[0]


def _nulls_like(values: pa.Array, type_: pa.DataType) -> pa.Array:
    return pa.nulls(len(values), type_)


def _where(mask: pa.Array, values: pa.Array, type_: pa.DataType) -> pa.Array:
    """``values`` where ``mask`` is true, else null (no Python scalars: no pandas import)."""
    # if_else gives null where the mask is null, as wanted; no fill_null (it converts a
    # Python scalar, which imports pandas)
    return pc.if_else(mask, values, _nulls_like(values, type_), memory_pool=_POOL)


def _matching(text: pa.Array, pattern: str) -> pa.Array:
    return pc.match_substring_regex(text, pattern, memory_pool=_POOL)


def _to_int(text: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(text)
    ok = _matching(trimmed, r"^[+-]?\d{1,18}$")
    digits = pc.replace_substring_regex(trimmed, r"^\+", "")
    return pc.cast(_where(ok, digits, pa.string()), pa.int64())


def _to_uint(text: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(text)
    ok = _matching(trimmed, r"^\+?\d{1,19}$")
    digits = pc.replace_substring_regex(trimmed, r"^\+", "")
    return pc.cast(_where(ok, digits, pa.string()), pa.uint64())


def _to_float(text: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(text)
    ok = _matching(trimmed, r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|nan)$")
    return pc.cast(_where(ok, trimmed, pa.string()), pa.float64())


def _to_date(text: pa.Array) -> pa.Array:
    digits = pc.replace_substring(pc.utf8_trim_whitespace(text), ".", "")
    ok = _matching(digits, r"^\d{8}$")
    parsed = pc.strptime(_where(ok, digits, pa.string()), format="%Y%m%d", unit="s", error_is_null=True)
    return pc.cast(parsed, pa.date32())


def _time_micros(text: pa.Array) -> pa.Array:
    """Microseconds since midnight of TM strings (``HHMMSS.FFFFFF``, shorter forms, ``HH:MM:SS``)."""
    cleaned = pc.replace_substring(pc.utf8_trim_whitespace(text), ":", "")
    parts = pc.extract_regex(
        cleaned, r"^(?P<whole>\d{2}|\d{4}|\d{6})(?:\.(?P<frac>\d{0,6}))?$", memory_pool=_POOL
    )
    whole = pc.utf8_rpad(pc.struct_field(parts, "whole"), width=6, padding="0")
    frac = pc.utf8_rpad(
        pc.coalesce(pc.struct_field(parts, "frac"), _constant("", len(text))), width=6, padding="0"
    )

    def number(start: int, stop: int) -> pa.Array:
        return pc.cast(pc.utf8_slice_codeunits(whole, start, stop), pa.int64())

    hour, minute, second = number(0, 2), number(2, 4), number(4, 6)
    micros = pc.add(
        pc.multiply(
            pc.add(pc.add(pc.multiply(hour, _int(3600)), pc.multiply(minute, _int(60))), second),
            _int(1_000_000),
        ),
        pc.cast(frac, pa.int64()),
    )
    ok = pc.and_(
        pc.and_(pc.less(hour, _int(24)), pc.less(minute, _int(60))), pc.less(second, _int(60))
    )
    return _where(pc.and_(pc.is_valid(parts), ok), micros, pa.int64())


def _to_time(text: pa.Array) -> pa.Array:
    return pc.cast(_time_micros(text), pa.time64("us"))


def _to_datetime(text: pa.Array) -> pa.Array:
    cleaned = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"[+-]\d{4}$", "")
    date_text = pc.utf8_slice_codeunits(cleaned, 0, 8)
    n = pc.utf8_length(date_text)
    full = pc.if_else(
        pc.equal(n, _int(4).cast(pa.int32())),
        pc.binary_join_element_wise(date_text, _constant("0101", len(text)), _constant("", len(text))),
        pc.if_else(
            pc.equal(n, _int(6).cast(pa.int32())),
            pc.binary_join_element_wise(date_text, _constant("01", len(text)), _constant("", len(text))),
            date_text,
        ),
    )
    date = _to_date(full)
    rest = pc.utf8_slice_codeunits(cleaned, 8, 64)
    has_time = pc.greater(pc.utf8_length(rest), _int(0).cast(pa.int32()))
    micros = pc.if_else(has_time, _time_micros(rest), _constant(0, len(text), pa.int64()))
    stamp = pc.add(
        pc.multiply(pc.cast(pc.cast(date, pa.int32()), pa.int64()), _int(86_400_000_000)), micros
    )
    return pc.cast(_where(pc.and_(pc.is_valid(date), pc.is_valid(micros)), stamp, pa.int64()), pa.timestamp("us"))


def _constant(value: str | int, n: int, type_: pa.DataType | None = None) -> pa.Array:
    return column([value] * n, pa.string() if type_ is None else type_)


_CASTS = {
    pa.date32(): _to_date,
    pa.time64("us"): _to_time,
    pa.timestamp("us"): _to_datetime,
    pa.int64(): _to_int,
    pa.uint64(): _to_uint,
    pa.float64(): _to_float,
}


def _cast_scalar(text: pa.Array, type_: pa.DataType) -> pa.Array:
    if type_ == pa.string():
        return text
    return _CASTS[type_](text)


def cast_column(text: pa.Array, type_: pa.DataType) -> pa.Array:
    """DICOM string values → ``type_`` (lists split on backslash)."""
    if isinstance(type_, pa.ListType):
        empty = pc.or_(pc.is_null(text), pc.equal(text, _constant("", len(text))))
        kept = _where(pc.invert(empty), text, pa.string())
        lists = pc.split_pattern(kept, "\\")
        values = _cast_scalar(pc.list_flatten(lists), type_.value_type)
        offsets = lists.offsets
        rebuilt = pa.ListArray.from_arrays(offsets, values, mask=pc.is_null(lists))
        return rebuilt
    return _cast_scalar(text, type_)


def cast_instances(table: pa.Table, fixed: set[str]) -> pa.Table:
    """Type every keyword column of an all-string instances table."""
    table = table.combine_chunks(_POOL)
    columns, fields = [], []
    for field in table.schema:
        data = table.column(field.name)
        if field.name in fixed:
            columns.append(data)
            fields.append(field)
            continue
        type_ = arrow_type_for(field.name)
        array = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
        if array.type != pa.string():
            array = array.cast(pa.string())
        columns.append(cast_column(array, type_))
        fields.append(pa.field(field.name, type_))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def empty_instances() -> pa.Table:
    """An instances table with no rows (the per-file columns only)."""
    return empty_table(FILES_ARROW)
