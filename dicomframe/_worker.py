"""The part of a scan that runs in worker processes.

Kept free of polars so that a worker starts fast; it needs only the header
walker and pyarrow. A chunk of files comes back as two Arrow tables (elements,
and the top-level attributes one row per file, all as strings) plus the rows
of files that could not be read.
"""

from __future__ import annotations

import errno
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ._parse import FileInfo, FileReader, Row, parse_file, pydicom_rows
from .errors import ParseError
from .sources import FileRef, open_reader
from .tags import KEYWORDS, keyword_for

__all__ = ["ELEMENTS_ARROW", "FILE_COLUMNS", "INSTANCE_SKIP_VRS", "Chunk", "column", "empty_table", "read_file_rows", "scan_chunk"]

ELEMENTS_ARROW = pa.schema(
    [
        ("file_id", pa.int64()),
        ("tag_path", pa.string()),
        ("tag", pa.uint32()),
        ("keyword", pa.string()),
        ("vr", pa.string()),
        ("vm", pa.int32()),
        ("value", pa.string()),
        ("private_creator", pa.string()),
        ("depth", pa.int16()),
        ("length", pa.int64()),
        ("offset", pa.int64()),
    ]
)

#: per-file columns that precede the attribute columns of the instances table
FILE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("file_id", pa.int64()),
    ("path", pa.string()),
    ("size", pa.int64()),
    ("transfer_syntax", pa.string()),
    ("sop_class_uid", pa.string()),
    ("has_preamble", pa.bool_()),
    ("has_file_meta", pa.bool_()),
    ("pixel_data_offset", pa.int64()),
    ("pixel_data_length", pa.int64()),
    ("n_elements", pa.int64()),
    ("parser", pa.string()),
]

#: VRs never turned into instance columns (sequences and bulk binary)
INSTANCE_SKIP_VRS = frozenset(("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"))
_UNDEFINED = 0xFFFFFFFF


@dataclass
class Chunk:
    """What a worker returns for a chunk of files."""

    elements: pa.Table
    instances: pa.Table
    errors: list[tuple[Any, ...]]
    n_files: int


def read_file_rows(ref: FileRef, fs: Any) -> tuple[list[Row], FileInfo]:
    """Rows of one file: the fast walker, or pydicom for encodings it refuses.

    Raises :class:`ParseError` (never anything else for a bad file).
    """
    try:
        fh = open_reader(fs, ref)
    except FileNotFoundError:
        if fs is None and os.path.islink(ref.path):
            raise ParseError("unreadable", "a symbolic link to nothing: fix the link or remove it") from None
        raise ParseError("unreadable", "the file disappeared while scanning; re-run the scan") from None
    except PermissionError:
        raise ParseError("unreadable", "permission denied: check that your user can read the file") from None
    except OSError as exc:
        if fs is None and exc.errno == errno.ELOOP:
            raise ParseError("unreadable", "a symbolic link that leads back to itself: remove it") from None
        raise ParseError("unreadable", f"the file could not be opened ({type(exc).__name__})") from None
    with fh:
        first_error: ParseError | None
        try:
            return parse_file(FileReader(fh, ref.size))
        except ParseError as exc:
            if exc.kind != "corrupt":
                raise
            first_error = exc
        except (OSError, TimeoutError) as exc:
            raise ParseError("unreadable", f"reading failed ({type(exc).__name__}); re-run the scan") from None
        except Exception:  # noqa: BLE001 - an encoding the fast walker does not handle: use pydicom
            first_error = None
        fh.seek(0)
        try:
            return pydicom_rows(fh)
        except ParseError:
            if first_error is not None:
                raise first_error from None
            raise


#: environment variables that configure storage back-ends, passed on to workers
_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCS_", "GCSFS_", "STORAGE_EMULATOR_HOST", "FSSPEC_", "S3_")


def storage_environment() -> dict[str, str]:
    """The storage-related environment of this process (credentials, endpoints).

    Workers are forked from a server process started earlier, so they do not see
    variables set since; the scan sends this snapshot with every chunk.
    """
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


def scan_chunk(refs: Sequence[FileRef], fs: Any, env: dict[str, str] | None = None, readers: int = 1) -> Chunk:
    """Parse a chunk of files into Arrow tables (runs in a worker process).

    ``readers`` > 1: that many threads read the files at once (an object store's
    files: reading them is mostly waiting for the service)."""
    if env:
        os.environ.update(env)
    # The rows are acyclic tuples of strings and ints: the cyclic garbage collector
    # would only re-scan them again and again as they pile up (a third of the time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _scan_chunk(refs, fs, readers)
    finally:
        if was_enabled:
            gc.enable()


def _try_read(ref: FileRef, fs: Any) -> tuple[list[Row], FileInfo] | ParseError:
    try:
        return read_file_rows(ref, fs)
    except ParseError as exc:
        return exc.with_traceback(None)  # no frame kept alive with it (the collector may be off)


def _read_all(refs: Sequence[FileRef], fs: Any, readers: int) -> Iterator[tuple[list[Row], FileInfo] | ParseError]:
    """:func:`read_file_rows` of every file, in order; ``readers`` threads at a time."""
    if readers <= 1 or len(refs) < 2:
        yield from (_try_read(ref, fs) for ref in refs)
        return
    from .parallel import thread_map

    yield from thread_map(lambda ref: _try_read(ref, fs), refs, readers)


def _named_in_utf8(path: str) -> bool:
    """Whether ``path`` is text (not a name in another encoding, kept as surrogate escapes)."""
    if path.isascii():
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: why a file whose name is not UTF-8 is not read (its path in the errors table shows "?"s)
BAD_NAME = (
    "its name (or a folder's) is not valid UTF-8: written in another encoding, such as Latin-1. "
    "Rename it (e.g. `convmv -f latin1 -t utf8 -r --notest SRC`) and run again"
)


def shown_name(path: str) -> str:
    """A path as the errors table shows it: a name not in UTF-8 has its undecodable bytes as "?"s
    (U+FFFD), so the table can be written as Arrow strings and printed."""
    return path if _named_in_utf8(path) else path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _scan_chunk(refs: Sequence[FileRef], fs: Any, readers: int = 1) -> Chunk:
    file_ids: list[int] = []
    all_rows: list[Row] = []
    records: list[dict[str, Any]] = []
    errors: list[tuple[Any, ...]] = []
    named = []
    n_files = len(refs)  # every file of the chunk, those refused for their names included
    for ref in refs:
        if _named_in_utf8(ref.path):
            named.append(ref)
        else:
            errors.append((ref.file_id, shown_name(ref.path), ref.size, "unreadable", BAD_NAME))
    refs = named
    for ref, read in zip(refs, _read_all(refs, fs, readers), strict=True):
        if isinstance(read, ParseError):
            errors.append((ref.file_id, ref.path, ref.size, read.kind, str(read)))
            continue
        rows, info = read
        file_ids.extend([ref.file_id] * len(rows))
        all_rows.extend(rows)
        record: dict[str, Any] = {
            "file_id": ref.file_id,
            "path": ref.path,
            "size": ref.size,
            "transfer_syntax": info.transfer_syntax,
            "sop_class_uid": info.sop_class_uid,
            "has_preamble": info.has_preamble,
            "has_file_meta": info.has_file_meta,
            "pixel_data_offset": info.pixel_data_offset,
            "pixel_data_length": info.pixel_data_length,
            "n_elements": len(rows),
            "parser": info.parser,
        }
        record.update(info.attributes if info.attributes is not None else attributes_from_rows(rows))
        records.append(record)
    return Chunk(
        elements=_rows_to_arrow(file_ids, all_rows),
        instances=_records_to_arrow(records),
        errors=errors,
        n_files=n_files,
    )


def attributes_from_rows(rows: list[Row]) -> dict[str, str | None]:
    """Top-level public attributes by keyword (what the C walker collects as it goes)."""
    kw_get = KEYWORDS.get
    skip = INSTANCE_SKIP_VRS
    out: dict[str, str | None] = {}
    for row in rows:
        tag = row[1]
        if row[6] or tag < 0x00030000 or not tag & 0xFFFF or row[2] in skip or (tag >> 16) & 1:
            continue
        keyword = kw_get(tag) or keyword_for(tag)
        if keyword is not None:
            out[keyword] = row[4]
    return out


def _records_to_arrow(records: list[dict[str, Any]]) -> pa.Table:
    if not records:
        return empty_table(pa.schema(FILE_COLUMNS))
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    fixed = dict(FILE_COLUMNS)
    return pa.table({key: column(records, fixed.get(key, pa.string()), key) for key in keys})


try:
    from . import _cwalk
except ImportError:  # pragma: no cover - no compiler on this machine
    _cwalk = None

_WIDTH = {pa.int64(): 8, pa.uint32(): 4, pa.int32(): 4, pa.int16(): 2, pa.bool_(): 1}


def column(values: Sequence[Any], type_: pa.DataType, key: str | int | None = None) -> pa.Array:
    """An Arrow array from Python values (or from ``item.get(key)`` of dicts; with the C helper
    only, from ``item[key]`` of tuples when ``key`` is an int).

    The C helper writes the Arrow buffers directly: faster than pyarrow's
    conversion of Python objects, which also imports pandas (40 MB) when it is
    installed, in every worker.
    """
    if _cwalk is None:
        items = values if key is None else [v.get(key) for v in values]
        return pa.array(items, type_)
    if pa.types.is_string(type_):
        validity, offsets, data, nulls = _cwalk.string_column(values, key)
        buffers = [None if validity is None else pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)]
        return pa.Array.from_buffers(pa.string(), len(values), buffers, null_count=nulls)
    if pa.types.is_boolean(type_):
        validity, data, nulls = _cwalk.int_column(values, 1, key)
        as_int8 = pa.Array.from_buffers(
            pa.int8(), len(values), [None if validity is None else pa.py_buffer(validity), pa.py_buffer(data)],
            null_count=nulls,
        )
        return as_int8.cast(pa.bool_())
    validity, data, nulls = _cwalk.int_column(values, _WIDTH[type_], key)
    return pa.Array.from_buffers(
        type_, len(values), [None if validity is None else pa.py_buffer(validity), pa.py_buffer(data)],
        null_count=nulls,
    )


def empty_table(schema: pa.Schema) -> pa.Table:
    """An empty table (``Schema.empty_table()`` converts Python objects: pandas import)."""
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def _scalar(value: int, type_: pa.DataType) -> pa.Scalar:
    """An Arrow scalar built from buffers (pa.scalar() would import pandas)."""
    return column([value], type_)[0]


_PRIVATE_BIT = _scalar(0x00010000, pa.uint32())
_UNDEFINED_INT64 = _scalar(_UNDEFINED, pa.int64())
_MINUS_ONE = _scalar(-1, pa.int64())
_ZERO = _scalar(0, pa.uint32())
_KEYWORD_TAGS = column(sorted(KEYWORDS), pa.uint32())
_KEYWORD_NAMES = column([KEYWORDS[t] for t in sorted(KEYWORDS)], pa.string())


def _keywords(tags: pa.Array) -> pa.Array:
    """Keyword of each tag, looked up in C++ (repeating groups patched in Python)."""
    pool = pa.system_memory_pool()
    found = pc.take(
        _KEYWORD_NAMES, pc.index_in(tags, value_set=_KEYWORD_TAGS, memory_pool=pool), memory_pool=pool
    )
    missing = pc.and_(
        pc.is_null(found, memory_pool=pool),
        pc.equal(pc.bit_wise_and(tags, _PRIVATE_BIT, memory_pool=pool), _ZERO, memory_pool=pool),
        memory_pool=pool,
    )
    if not pc.any(missing).as_py():
        return found
    names = found.to_pylist()
    for i in pc.indices_nonzero(missing).to_pylist():
        names[i] = keyword_for(tags[i].as_py())
    return column(names, pa.string())


def _rows_to_arrow(file_ids: list[int], rows: list[Row]) -> pa.Table:
    if not rows:
        return empty_table(ELEMENTS_ARROW)
    if _cwalk is not None:
        try:
            return _row_fields_to_arrow(file_ids, rows)
        except TypeError:  # not rows of tuples: as below (which says what is wrong)
            pass
    paths, tags, vrs, vms, values, creators, depths, lengths, offsets = zip(*rows, strict=True)
    tag_array = column(tags, pa.uint32())
    length = column([-1 if n == _UNDEFINED else n for n in lengths], pa.int64())
    return pa.table(
        [
            column(file_ids, pa.int64()),
            column(paths, pa.string()),
            tag_array,
            _keywords(tag_array),
            column(vrs, pa.string()),
            column(vms, pa.int32()),
            column(values, pa.string()),
            column(creators, pa.string()),
            column(depths, pa.int16()),
            length,
            column(offsets, pa.int64()),
        ],
        schema=ELEMENTS_ARROW,
    )


def _row_fields_to_arrow(file_ids: list[int], rows: list[Row]) -> pa.Table:
    """:func:`_rows_to_arrow` with the C helper reading each field straight from the row
    tuples (no transposed copy of them); TypeError when the rows are not tuples."""
    lengths = column(rows, pa.int64(), 7)
    tag_array = column(rows, pa.uint32(), 1)
    return pa.table(
        [
            column(file_ids, pa.int64()),
            column(rows, pa.string(), 0),
            tag_array,
            _keywords(tag_array),
            column(rows, pa.string(), 2),
            column(rows, pa.int32(), 3),
            column(rows, pa.string(), 4),
            column(rows, pa.string(), 5),
            column(rows, pa.int16(), 6),
            pc.if_else(pc.equal(lengths, _UNDEFINED_INT64), _MINUS_ONE, lengths),  # undefined: -1
            column(rows, pa.int64(), 8),
        ],
        schema=ELEMENTS_ARROW,
    )
