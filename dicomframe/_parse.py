"""A fast, header-only walker over DICOM Part 10 bytes.

This module turns the bytes of one file into flat element rows, without
building pydicom objects. It covers the encodings found in nearly every
archive (explicit and implicit VR little endian, explicit VR big endian,
deflated explicit VR little endian, files with and without preamble or file
meta) and stops at the top-level Pixel Data, so pixel bytes are never read.

pydicom stays the reference: :func:`pydicom_rows` produces the same rows from
a pydicom dataset and is used when the fast walker meets an encoding it does
not handle, and tests compare the two paths file by file.

Row layout (a tuple per element, transposed into columns by the caller)::

    (tag_path, tag, vr, vm, value, private_creator, depth, length, offset)

``value`` is the element's value as a string: text decoded with the
SpecificCharacterSet in force, trailing padding removed; binary numbers as
decimal strings joined by backslash; ``None`` for sequences and for binary
values that are not text-like or longer than :data:`MAX_INLINE` bytes
(deferred: their ``length`` and ``offset`` are kept).

Nothing in this module puts a value read from a file into an exception
message: only tags, offsets and lengths.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from ._quiet import no_warnings
from .errors import ParseError
from .tags import KEYWORDS, VRS, keyword_for, message_tag, vr_for

__all__ = [
    "DEFLATED_LE",
    "DICOMDIR_SOP_CLASS",
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "MAX_INLINE",
    "FileInfo",
    "RangeReader",
    "Row",
    "parse_file",
    "pydicom_rows",
]

Row = tuple[str, int, str, int, "str | None", "str | None", int, int, "int | None"]

#: binary values up to this many bytes are decoded inline when they look like text
MAX_INLINE = 1024
#: first read from each file; most headers fit
FIRST_READ = 16 * 1024
#: a skipped region longer than this is not downloaded when the source supports ranges
SPARSE_GAP = 64 * 1024

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

UNDEFINED = 0xFFFFFFFF
#: sequences nested deeper than this are refused as damaged (the C walker's MAX_DEPTH):
#: real files stay far below, and each row's path grows with its depth
MAX_DEPTH = 64
_INF = 1 << 62
_PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD

# VR kinds
_K_TEXT_CS = 1  # text whose bytes follow SpecificCharacterSet
_K_TEXT = 2  # ASCII text (default repertoire)
_K_NUM = 3  # binary numbers
_K_AT = 4  # attribute tags
_K_BULK = 5  # OB, OW, ... , UN
_K_SQ = 6

_VR_KIND: dict[str, int] = {
    **{vr: _K_TEXT_CS for vr in ("SH", "LO", "ST", "LT", "UT", "PN", "UC")},
    **{vr: _K_TEXT for vr in ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR")},
    **{vr: _K_NUM for vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV")},
    "AT": _K_AT,
    **{vr: _K_BULK for vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN")},
    "SQ": _K_SQ,
}
_NUM_FMT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_NUM_SIZE = {vr: struct.calcsize(fmt) for vr, fmt in _NUM_FMT.items()}
#: text VRs whose value is one string even with backslashes (VM is always 1)
_VM1_TEXT = frozenset(("ST", "LT", "UT", "UR"))
#: text VRs where leading spaces are significant (only trailing padding is removed)
_KEEP_LEADING = frozenset(("ST", "LT", "UT", "UC", "UR"))
#: explicit VRs with a 2-byte reserved field and a 4-byte length
_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))
_VR_BYTES: dict[bytes, str] = {vr.encode(): vr for vr in _VR_KIND}
#: VR -> (VR, kind, has 4-byte length); keyed below by the VR's two bytes read as an int
_VR_INFO: dict[str, tuple[str, int, bool]] = {
    vr: (vr, kind, vr in _LONG_VRS) for vr, kind in _VR_KIND.items()
}
_VRC_LE = {int.from_bytes(vr.encode(), "little"): info for vr, info in _VR_INFO.items()}
_VRC_BE = {int.from_bytes(vr.encode(), "big"): info for vr, info in _VR_INFO.items()}
#: tag -> 8 hex digits, for the tags of the data dictionary (the common case)
_HEX8: dict[int, str] = {tag: f"{tag:08X}" for tag in KEYWORDS}
_PRINTABLE = re.compile(rb"[\x20-\x7e\t\r\n\f]*")
_PN_DELIMS = {0x5C, 0x3D, 0x5E}
_TEXT_DELIMS = {0x5C, 0x0D, 0x0A, 0x09, 0x0C}


class RangeReader(Protocol):
    """What the walker needs from a source: its size and byte ranges."""

    size: int

    def read(self, start: int, stop: int) -> bytes:
        """Return bytes ``[start, stop)`` (shorter only at end of file)."""
        ...


class BytesReader:
    """A :class:`RangeReader` over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, start: int, stop: int) -> bytes:
        return self.data[start:stop]


class FileReader:
    """A :class:`RangeReader` over an open binary file object."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.size = size
        self._pos = 0

    def read(self, start: int, stop: int) -> bytes:
        if start != self._pos:
            self.fh.seek(start)
        data = self.fh.read(stop - start)
        self._pos = start + len(data)
        return data


@dataclass(slots=True)
class FileInfo:
    """What the walker learnt about a file besides its elements."""

    transfer_syntax: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    has_preamble: bool = True
    has_file_meta: bool = True
    pixel_data_offset: int | None = None
    pixel_data_length: int | None = None
    parser: str = "fast"
    #: top-level public attributes by keyword (string values), when the C walker made them
    attributes: dict[str, str | None] | None = None


def _truncated(what: str, offset: int) -> ParseError:
    return ParseError(
        "truncated",
        f"file ends inside {what} at byte offset {offset}: the file is truncated or "
        "incompletely copied; copy it again from the source",
    )


def _corrupt(what: str, offset: int) -> ParseError:
    return ParseError(
        "corrupt",
        f"invalid DICOM encoding ({what}) at byte offset {offset}; the file is damaged "
        "or not a standard Part 10 file",
    )


def _make_decoder(charsets: list[str]) -> Callable[[bytes, str], str] | None:
    """A decoder for charset-sensitive text VRs, or None for the default repertoire."""
    from pydicom.charset import convert_encodings, decode_bytes

    names = [c.strip() for c in charsets]
    if not any(names) or names == ["ISO_IR 6"]:
        return None
    with no_warnings():
        encodings = convert_encodings(names)
    if len(encodings) == 1 and "iso2022" not in encodings[0] and names[0][:8] != "ISO 2022":
        codec = encodings[0]

        def simple(raw: bytes, vr: str) -> str:
            return raw.decode(codec, "replace")

        return simple

    def escaped(raw: bytes, vr: str) -> str:
        with no_warnings():
            if vr == "PN":
                return "=".join(
                    decode_bytes(part, encodings, _PN_DELIMS) for part in raw.split(b"=")
                )
            return decode_bytes(raw, encodings, _TEXT_DELIMS)

    return escaped


def _bulk_text(raw: bytes) -> str | None:
    """Decode a short binary value when it is plainly text (e.g. private strings as UN)."""
    stripped = raw.rstrip(b"\x00 ")
    if not stripped:
        return None
    if _PRINTABLE.fullmatch(stripped):
        return stripped.decode("ascii")
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


class _Walker:
    """State of one file's walk. Methods are hot: keep them lean."""

    __slots__ = (
        "blen",
        "buf",
        "endian",
        "h",
        "hdr",
        "hh",
        "i",
        "little",
        "offsets_valid",
        "pixel",
        "pixel_rep",
        "reader",
        "rows",
        "size",
        "stopped",
        "vr_info",
    )

    def __init__(self, reader: RangeReader, first: bytes) -> None:
        self.reader = reader
        self.buf = first
        self.blen = len(first)
        self.size = reader.size
        self.rows: list[Row] = []
        self.set_endian(True)
        self.offsets_valid = True
        self.pixel: tuple[int, int] | None = None
        self.stopped = False
        self.pixel_rep = 0

    def set_endian(self, little: bool) -> None:
        self.little = little
        self.endian = "<" if little else ">"
        self.hh = struct.Struct(self.endian + "HH").unpack_from
        self.h = struct.Struct(self.endian + "H").unpack_from
        self.i = struct.Struct(self.endian + "I").unpack_from
        self.hdr = struct.Struct(self.endian + "HHHH").unpack_from
        self.vr_info = _VRC_LE if little else _VRC_BE

    # -- buffer --------------------------------------------------------------
    def need(self, start: int, stop: int, what: str) -> None:
        """Make ``buf[start:stop]`` available (the buffer is a file prefix)."""
        if stop > self.size:
            raise _truncated(what, start)
        blen = self.blen
        if stop <= blen:
            return
        want = max(stop, min(self.size, blen * 2, stop + FIRST_READ * 4))
        if start - blen > SPARSE_GAP:
            # skip a large region we do not need (e.g. a big private blob) without reading it
            data = self.reader.read(start, want)
            self.buf = self.buf + bytes(start - blen) + data
        else:
            self.buf = self.buf + self.reader.read(blen, want)
        self.blen = len(self.buf)
        if self.blen < stop:
            raise _truncated(what, start)

    # -- walking -------------------------------------------------------------
    def walk(
        self,
        pos: int,
        end: int,
        depth: int,
        prefix: str,
        explicit: bool,
        decoder: Callable[[bytes, str], str] | None,
    ) -> int:
        """Walk a dataset from ``pos`` up to ``end`` (or an item delimiter). Return the end."""
        rows = self.rows
        append = rows.append
        creators: dict[int, str] = {}
        hdr = self.hdr
        u32 = self.i
        vr_info = self.vr_info
        size = self.size
        track = self.offsets_valid
        hex8 = _HEX8
        while pos < end:
            if pos + 12 > self.blen:
                if pos + 8 > size:
                    if depth == 0 and end >= _INF and pos >= size:
                        return pos
                    if depth == 0 and end >= _INF and size - pos < 8:
                        self.need(pos, size, "an element header")
                        if not any(self.buf[pos:size]):
                            return size  # trailing zero padding
                    raise _truncated("an element header", pos)
                self.need(pos, min(pos + 12, size), "an element header")
            buf = self.buf
            group, elem, vrc, len16 = hdr(buf, pos)
            tag = (group << 16) | elem
            if group == 0xFFFE:
                if tag == _ITEM_DELIM:
                    if end >= _INF:
                        return pos + 8
                    pos += 8  # stray delimiter inside a defined-length item: tolerate
                    continue
                if tag == _SEQ_DELIM and depth == 0:
                    pos += 8
                    continue
                raise _corrupt(f"unexpected delimiter {message_tag(tag)}", pos)
            if explicit:
                info = vr_info.get(vrc)
                if info is None:
                    if vrc == 0x2020 or vrc == 0:
                        # seen in the wild: a blank VR; read as UN with a 4-byte length
                        info = _VR_INFO["UN"]
                    else:
                        raise _corrupt(f"unknown VR in element {message_tag(tag)}", pos)
                vr, kind, long_form = info
                if long_form:
                    if pos + 12 > self.blen:
                        raise _truncated("an element header", pos)
                    length = u32(buf, pos + 8)[0]
                    vpos = pos + 12
                else:
                    length = len16
                    vpos = pos + 8
            else:
                length = u32(buf, pos + 4)[0]
                vpos = pos + 8
                vr = self.implicit_vr(tag, group, elem, creators, length)
                kind = _VR_KIND.get(vr, _K_BULK)
            was_un = vr == "UN"
            if was_un:
                if not group & 1 and elem:
                    known = vr_for(tag)
                    if known is not None and " " not in known:
                        vr = known  # UN with a known public VR: read as that VR (as pydicom)
                        kind = _VR_KIND.get(vr, _K_BULK)
                elif group & 1 and elem > 0xFF and length != UNDEFINED:
                    owner = creators.get((group << 8) | (elem >> 8))
                    if owner is not None:
                        vr = _private_vr(group, elem, owner)
                        kind = _VR_KIND.get(vr, _K_BULK)

            creator = None
            if group & 1 and elem > 0xFF:
                creator = creators.get((group << 8) | (elem >> 8))
            hx = hex8.get(tag)
            path = prefix + (hx if hx is not None else f"{tag:08X}")

            if tag in _PIXEL_TAGS and depth == 0:
                append((path, tag, vr, 1, None, creator, depth, length, vpos if track else None))
                self.pixel = (vpos, length)
                self.stopped = True
                return pos
            if kind == _K_SQ or (length == UNDEFINED and was_un):
                idx = len(rows)
                append((path, tag, "SQ", 0, None, creator, depth, length, None))
                seq_explicit = explicit and not was_un  # UN content is implicit VR LE
                pos, n_items = self.sequence(
                    vpos, length, depth + 1, path, seq_explicit, decoder, tag
                )
                if n_items:
                    rows[idx] = (path, tag, "SQ", n_items, None, creator, depth, length, None)
                continue
            if length == UNDEFINED:
                # encapsulated data outside the top-level Pixel Data (e.g. an icon image)
                append((path, tag, vr, 1, None, creator, depth, length, None))
                pos = self.skip_fragments(vpos, tag)
                continue

            vend = vpos + length
            value: str | None
            if kind == _K_TEXT:
                if vend > self.blen:
                    self.need(vpos, vend, f"the value of element {message_tag(tag)}")
                    buf = self.buf
                if vr in _KEEP_LEADING:
                    value = buf[vpos:vend].decode("latin-1").rstrip(" \x00")
                    vm = 1 if value else 0
                else:
                    value = buf[vpos:vend].decode("latin-1").strip(" \x00")
                    vm = value.count("\\") + 1 if value else 0
                    if tag == 0x00080005 and value:
                        decoder = _make_decoder(value.split("\\"))
            elif kind == _K_TEXT_CS:
                if vend > self.blen:
                    self.need(vpos, vend, f"the value of element {message_tag(tag)}")
                    buf = self.buf
                raw = buf[vpos:vend]
                text = raw.decode("latin-1") if decoder is None else decoder(raw, vr)
                if vr in _KEEP_LEADING:
                    value = text.rstrip(" \x00")
                else:
                    value = text.strip(" \x00")
                vm = (
                    (1 if value else 0)
                    if vr in _VM1_TEXT
                    else (value.count("\\") + 1 if value else 0)
                )
            elif kind == _K_BULK and length > MAX_INLINE:
                if vend > size:  # bulk data is not read here, but must be there
                    raise _truncated(f"the value of element {message_tag(tag)}", vpos)
                value = None
                vm = 1
            else:
                if vend > self.blen:
                    self.need(vpos, vend, f"the value of element {message_tag(tag)}")
                    buf = self.buf
                raw = buf[vpos:vend]
                if kind == _K_NUM:
                    isz = _NUM_SIZE[vr]
                    vm = length // isz
                    if length > MAX_INLINE or length % isz:
                        value = None
                    else:
                        vals = struct.unpack(f"{self.endian}{vm}{_NUM_FMT[vr]}", raw)
                        value = "\\".join(map(str, vals))
                        if tag == 0x00280103 and vals:
                            self.pixel_rep = vals[0]
                elif kind == _K_AT:
                    vm = length // 4
                    vals = struct.unpack(f"{self.endian}{vm * 2}H", raw[: vm * 4])
                    value = "\\".join(
                        f"{vals[k]:04X}{vals[k + 1]:04X}" for k in range(0, len(vals), 2)
                    )
                else:
                    value = _bulk_text(raw) if length else ""
                    vm = 1 if length else 0
            if group & 1 and 0x10 <= elem <= 0xFF:
                creator = value or None
                if creator:
                    creators[(group << 8) | elem] = creator
            append((path, tag, vr, vm, value, creator, depth, length, vpos if track else None))
            pos = vend
        if pos > end and end < _INF:
            raise _corrupt("element runs past the end of its item", pos)
        return pos

    def implicit_vr(
        self, tag: int, group: int, elem: int, creators: dict[int, str], length: int
    ) -> str:
        if length == UNDEFINED and tag not in _PIXEL_TAGS:
            return "SQ"
        if group & 1:
            if elem == 0:
                return "UL"
            if elem <= 0xFF:
                return "LO" if elem >= 0x10 else "UN"
            creator = creators.get((group << 8) | (elem >> 8))
            if creator is not None:
                return _private_vr(group, elem, creator)
            return "UN"
        vr = vr_for(tag)
        if vr is None:
            return "UN"
        if " or " in vr:
            if vr == "US or SS":
                return "SS" if self.pixel_rep == 1 else "US"
            return _resolve_ambiguous(tag, vr)
        return vr

    def sequence(
        self,
        pos: int,
        length: int,
        depth: int,
        path: str,
        explicit: bool,
        decoder: Callable[[bytes, str], str] | None,
        tag: int,
    ) -> tuple[int, int]:
        end = _INF if length == UNDEFINED else pos + length
        if depth > MAX_DEPTH:
            raise _corrupt(_corrupt_what(6, tag), pos)
        if end < _INF and end > self.size:
            raise _truncated(f"sequence {message_tag(tag)}", pos)
        n = 0
        while pos < end:
            if pos + 8 > self.blen:
                self.need(pos, pos + 8, f"an item of sequence {message_tag(tag)}")
            group, elem = self.hh(self.buf, pos)
            item_len = self.i(self.buf, pos + 4)[0]
            item_tag = (group << 16) | elem
            if item_tag == _SEQ_DELIM:
                pos += 8
                break
            if item_tag != _ITEM:
                raise _corrupt(f"expected an item in sequence {message_tag(tag)}", pos)
            pos += 8
            prefix = f"{path}[{n}]."
            if item_len == UNDEFINED:
                pos = self.walk(pos, _INF, depth, prefix, explicit, decoder)
            else:
                self.walk(pos, pos + item_len, depth, prefix, explicit, decoder)
                pos += item_len
            n += 1
        if end < _INF and pos != end:
            # a reader that skips the sequence by its length would read the rest of an
            # item as elements of the data set
            raise _corrupt(_corrupt_what(7, tag), end)
        return pos, n

    def skip_fragments(self, pos: int, tag: int) -> int:
        while True:
            self.need(pos, pos + 8, f"a fragment of element {message_tag(tag)}")
            group, elem = self.hh(self.buf, pos)
            flen = self.i(self.buf, pos + 4)[0]
            if (group << 16) | elem == _SEQ_DELIM:
                return pos + 8
            if (group << 16) | elem != _ITEM or flen == UNDEFINED:
                raise _corrupt(f"invalid fragment in element {message_tag(tag)}", pos)
            pos += 8 + flen


_PRIVATE_VR_CACHE: dict[tuple[int, int, str], str] = {}


def _private_vr(group: int, elem: int, creator: str) -> str:
    key = (group, elem & 0xFF, creator)
    vr = _PRIVATE_VR_CACHE.get(key)
    if vr is None:
        from pydicom.datadict import private_dictionary_VR

        try:
            vr = private_dictionary_VR((group << 16) | elem, creator)
        except KeyError:
            vr = "UN"
        if " or " in vr or vr not in _VR_KIND:
            vr = "UN"
        _PRIVATE_VR_CACHE[key] = vr
    return vr


def _resolve_ambiguous(tag: int, vr: str) -> str:
    # Implicit VR: pydicom resolves "US or SS" using PixelRepresentation, "OB or OW"
    # using BitsAllocated. For a header scan, the unsigned/word reading is used;
    # string forms of small lookup descriptors may differ in sign only.
    first, _, second = vr.partition(" or ")
    if "OW" in (first, second):
        return "OW"
    return first


def _check_meta_start(buf: bytes) -> tuple[int, bool, bool]:
    """Find where the data starts: (offset, has_preamble, has_file_meta)."""
    if len(buf) >= 132 and buf[128:132] == b"DICM":
        return 132, True, True
    if len(buf) >= 8:
        group = buf[0] | (buf[1] << 8)
        if group == 0x0002 and buf[4:6] in _VR_BYTES:
            return 0, False, True
        if group in (0x0008, 0x0004, 0x0010, 0x0018, 0x0020, 0x0028):
            return 0, False, False
        if buf[0] == 0 and buf[1] == 0x08:  # big endian group 0008, no meta
            return 0, False, False
    raise ParseError(
        "not_dicom",
        "not a DICOM file: no 'DICM' marker at byte 128 and no recognisable dataset "
        "at the start; if it is DICOM, it was saved in a non-standard way",
    )


def _looks_explicit(buf: bytes, pos: int) -> bool:
    return len(buf) >= pos + 6 and buf[pos + 4 : pos + 6] in _VR_BYTES


try:
    from . import _cwalk  # the C accelerator (optional: built when a compiler is present)
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _cwalk = None

#: implicit VR of each public tag, ambiguities resolved as _resolve_ambiguous does
#: ("US or SS" is kept: it depends on PixelRepresentation, which the walker tracks)
_IMPLICIT_VRS: dict[int, str] = {
    tag: (vr if " or " not in vr or vr == "US or SS" else _resolve_ambiguous(tag, vr))
    for tag, vr in VRS.items()
}
#: the VR to read an explicit UN element as, when the dictionary knows it unambiguously
_UN_VRS: dict[int, str] = {tag: vr for tag, vr in VRS.items() if " " not in vr}


class _Unsupported(Exception):
    """The C walker met an encoding it leaves to the Python walker."""


def _truncated_what(code: int, tag: int) -> str:
    return {
        1: "an element header",
        2: f"the value of element {message_tag(tag)}",
        3: f"sequence {message_tag(tag)}",
        4: f"an item of sequence {message_tag(tag)}",
        5: f"a fragment of element {message_tag(tag)}",
    }[code]


def _corrupt_what(code: int, tag: int) -> str:
    return {
        1: f"unexpected delimiter {message_tag(tag)}",
        2: f"unknown VR in element {message_tag(tag)}",
        3: f"expected an item in sequence {message_tag(tag)}",
        4: f"invalid fragment in element {message_tag(tag)}",
        5: "element runs past the end of its item",
        6: f"sequences nested more than {MAX_DEPTH} levels deep",
        7: f"the items of sequence {message_tag(tag)} run past its length",
    }[code]


def _walk_c(
    w: _Walker, pos: int, explicit: bool, meta_only: bool, record: dict[str, str | None] | None = None
) -> int:
    """Walk with the C accelerator, growing the buffer and retrying as it asks.

    With ``record``, the top-level public attributes (no bulk data, no sequences,
    no group 0002 or group lengths) are also collected there by keyword.
    """
    assert _cwalk is not None
    start = len(w.rows)
    while True:
        if record is not None:
            record.clear()
        try:
            end, poff, plen, stopped, pixel_rep = _cwalk.walk(
                w.buf,
                pos,
                w.size,
                w.rows,
                explicit,
                meta_only,
                w.offsets_valid,
                _IMPLICIT_VRS,
                _UN_VRS,
                vr_for,
                _private_vr,
                _bulk_text,
                w.pixel_rep,
                record,
                KEYWORDS,
                keyword_for,
            )
        except _cwalk.WalkError as exc:
            code, what, tag, at, upto = exc.args
            del w.rows[start:]
            if code == _cwalk.CODE_NEED:
                w.need(at, upto, "an element")
                continue
            if code == _cwalk.CODE_TRUNCATED:
                raise _truncated(_truncated_what(what, tag), at) from None
            if code == _cwalk.CODE_CORRUPT:
                raise _corrupt(_corrupt_what(what, tag), at) from None
            raise _Unsupported from None
        w.pixel_rep = pixel_rep
        if stopped:
            w.pixel = (poff, UNDEFINED if plen < 0 else plen)
            w.stopped = True
        return int(end)


def parse_file(
    reader: RangeReader, first_read: int = FIRST_READ, *, accelerate: bool = True, attributes: bool = True
) -> tuple[list[Row], FileInfo]:
    """Walk one file's header. Raise :class:`ParseError` for a damaged or non-DICOM file.

    With ``attributes=False`` the C walker does not collect ``info.attributes`` (left None:
    for callers that read the rows only).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> path = get_testdata_file("CT_small.dcm")
    >>> rows, info = parse_file(BytesReader(open(path, "rb").read()))
    >>> info.transfer_syntax
    '1.2.840.10008.1.2.1'
    """
    size = reader.size
    if size == 0:
        raise ParseError("empty", "the file is empty (0 bytes); copy it again from the source")
    first = reader.read(0, min(size, first_read))
    start, has_preamble, has_meta = _check_meta_start(first)
    w = _Walker(reader, first)
    info = FileInfo(has_preamble=has_preamble, has_file_meta=has_meta)
    pos = start
    use_c = accelerate and _cwalk is not None
    if has_meta:
        pos = _walk_c(w, pos, True, True) if use_c else _walk_meta(w, pos)
        meta = {row[1]: row[4] for row in w.rows}
        info.transfer_syntax = meta.get(0x00020010) or None
        info.sop_class_uid = meta.get(0x00020002) or None
        info.sop_instance_uid = meta.get(0x00020003) or None
        if info.sop_class_uid == DICOMDIR_SOP_CLASS:
            raise ParseError(
                "dicomdir",
                "DICOMDIR (media directory index), not an image: skipped; the files it "
                "indexes are scanned on their own",
            )
    ts = info.transfer_syntax
    explicit = True
    if ts is None:
        if pos + 8 > size:
            raise _truncated("the first data element", pos)
        w.need(pos, pos + 8, "the first data element")
        if w.buf[pos] == 0 and w.buf[pos + 1] == 0x08:
            w.set_endian(False)
        explicit = _looks_explicit(w.buf, pos)
        info.transfer_syntax = (
            (EXPLICIT_LE if w.little else EXPLICIT_BE) if explicit else IMPLICIT_LE
        )
    elif ts == IMPLICIT_LE:
        explicit = False
    elif ts == EXPLICIT_BE:
        w.set_endian(False)
    elif ts == DEFLATED_LE:
        rest = w.buf[pos:] + (reader.read(w.blen, size) if w.blen < size else b"")
        try:
            inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(rest)
        except zlib.error:
            raise _corrupt("deflated dataset cannot be inflated", pos) from None
        w.buf = w.buf[:pos] + inflated
        w.blen = w.size = len(w.buf)
        w.offsets_valid = False
        # keep the meta rows' offsets (they are real); dataset offsets are not file offsets
    if pos < size and ts is not None and ts != DEFLATED_LE:
        if w.blen < pos + 8 and pos + 8 <= w.size:
            w.need(pos, pos + 8, "the first element")
        if w.blen >= pos + 8:
            # some writers declare one VR encoding and use the other (pydicom tolerates it)
            looks = _looks_explicit(w.buf, pos)
            if looks != explicit and w.hh(w.buf, pos)[0] != 0xFFFE:
                explicit = looks
    if use_c and w.little:
        n_meta = len(w.rows)
        try:
            record: dict[str, str | None] | None = {} if attributes else None
            _walk_c(w, pos, explicit, False, record)
            info.attributes = record
        except _Unsupported:
            del w.rows[n_meta:]
            w.pixel, w.stopped, w.pixel_rep = None, False, 0
            w.walk(pos, _INF, 0, "", explicit, None)
    else:
        w.walk(pos, _INF, 0, "", explicit, None)
    if w.pixel is not None:
        vpos, length = w.pixel
        info.pixel_data_length = None if length == UNDEFINED else length
        if w.offsets_valid:
            info.pixel_data_offset = vpos
            if length != UNDEFINED and vpos + length > size:
                raise ParseError(
                    "truncated",
                    f"Pixel Data declares {length} bytes at offset {vpos} but the file has "
                    f"only {size - vpos}: the file is truncated; copy it again from the source",
                )
    sop_class = info.sop_class_uid
    for row in w.rows:
        if row[6] == 0:
            if row[1] == 0x00080016 and row[4]:
                sop_class = row[4]
            elif row[1] == 0x00080018 and row[4]:
                info.sop_instance_uid = row[4]
        if row[1] > 0x00080018 and row[6] == 0:
            break
    info.sop_class_uid = sop_class
    if not has_meta and not w.rows:
        raise ParseError("not_dicom", "not a DICOM file: no data elements found")
    return w.rows, info


def _walk_meta(w: _Walker, pos: int) -> int:
    """Walk group 0002 (always explicit VR little endian)."""
    while True:
        if pos + 8 > w.blen:
            if pos + 8 > w.size:
                return pos
            w.need(pos, pos + 8, "the file meta information")
        group = w.buf[pos] | (w.buf[pos + 1] << 8)
        if group != 0x0002:
            return pos
        # walk exactly one element by giving an end just past it
        vrb = w.buf[pos + 4 : pos + 6]
        vr = _VR_BYTES.get(vrb)
        if vr is None:
            raise _corrupt("file meta element without a VR", pos)
        if vr in _LONG_VRS:
            w.need(pos, pos + 12, "the file meta information")
            end = pos + 12 + w.i(w.buf, pos + 8)[0]
        else:
            end = pos + 8 + w.h(w.buf, pos + 6)[0]
        pos = w.walk(pos, end, 0, "", True, None)


# -- pydicom reference path ----------------------------------------------------


def pydicom_rows(fileobj: BinaryIO) -> tuple[list[Row], FileInfo]:
    """Rows of a file read by pydicom (the reference, and the fallback path).

    Raises :class:`ParseError` when pydicom cannot read the file either.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with no_warnings():
            ds = pydicom.dcmread(fileobj, stop_before_pixels=True, force=True)
            rows: list[Row] = []
            meta = getattr(ds, "file_meta", None)
            if meta is not None and len(meta):
                _pydicom_walk(meta, rows, "", 0)
            _pydicom_walk(ds, rows, "", 0)
    except InvalidDicomError:
        raise ParseError(
            "not_dicom", "not a DICOM file: pydicom could not find a DICOM dataset in it"
        ) from None
    except (EOFError, struct.error):
        raise ParseError(
            "truncated",
            "file ends inside an element: the file is truncated; copy it again from the source",
        ) from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types; the message may hold values
        raise ParseError(
            "corrupt",
            f"pydicom could not parse the file ({type(exc).__name__}); "
            "the file is damaged or uses an unsupported encoding",
        ) from None
    if not rows:
        raise ParseError("not_dicom", "not a DICOM file: no data elements found")
    ts = None
    if meta is not None:
        ts = getattr(meta, "TransferSyntaxUID", None)
    info = FileInfo(
        transfer_syntax=str(ts) if ts else None,
        sop_class_uid=str(ds.get("SOPClassUID", "")) or None,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")) or None,
        has_preamble=bool(getattr(ds, "preamble", None)),
        has_file_meta=meta is not None and len(meta) > 0,
        parser="pydicom",
    )
    if info.sop_class_uid is None and meta is not None:
        msc = meta.get("MediaStorageSOPClassUID")
        info.sop_class_uid = str(msc) if msc else None
    if info.sop_class_uid == DICOMDIR_SOP_CLASS:
        raise ParseError(
            "dicomdir",
            "DICOMDIR (media directory index), not an image: skipped; the files it "
            "indexes are scanned on their own",
        )
    return rows, info


def _pydicom_walk(ds: Any, rows: list[Row], prefix: str, depth: int) -> None:
    for elem in ds:
        tag = int(elem.tag)
        path = f"{prefix}{tag:08X}"
        creator = None
        if elem.tag.is_private and (tag & 0xFFFF) > 0xFF:
            owner = ds.get((tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8))
            if owner is not None and owner.value:
                creator = _pydicom_value(owner, str(owner.VR))[0] or None
        vr = str(elem.VR)
        if " or " in vr:
            vr = _resolve_ambiguous(tag, vr)
        length = getattr(elem, "length", 0) or 0
        if vr == "SQ":
            if depth >= MAX_DEPTH:
                raise _corrupt(_corrupt_what(6, tag), 0)
            n = len(elem.value or [])
            rows.append((path, tag, "SQ", n, None, creator, depth, length, None))
            for k, item in enumerate(elem.value or []):
                _pydicom_walk(item, rows, f"{path}[{k}].", depth + 1)
            continue
        value, vm = _pydicom_value(elem, vr)
        if elem.tag.is_private_creator:
            creator = value or None
        rows.append((path, tag, vr, vm, value, creator, depth, length, None))


def _pydicom_value(elem: Any, vr: str) -> tuple[str | None, int]:
    val = elem.value
    if val is None or val == "" or val == b"":
        return ("" if _VR_KIND.get(vr) != _K_BULK else None), 0
    kind = _VR_KIND.get(vr, _K_BULK)
    if kind == _K_BULK or isinstance(val, bytes):
        if isinstance(val, bytes) and len(val) <= MAX_INLINE:
            return _bulk_text(val), 1
        return None, 1
    if kind == _K_AT:
        vals = list(val) if isinstance(val, list | tuple) or hasattr(val, "__iter__") else [val]
        if not isinstance(val, list | tuple) and type(val).__name__ != "MultiValue":
            vals = [val]
        return "\\".join(f"{int(v):08X}" for v in vals), len(vals)
    if type(val).__name__ == "MultiValue" or isinstance(val, list | tuple):
        parts = [_pydicom_scalar(v) for v in val]
        return "\\".join(parts), len(parts)
    text = _pydicom_scalar(val)
    if kind in (_K_TEXT, _K_TEXT_CS):
        text = text.rstrip(" \x00") if vr in _KEEP_LEADING else text.strip(" \x00")
        if vr in _VM1_TEXT:
            return text, 1 if text else 0
        return text, (text.count("\\") + 1 if text else 0)
    return text, 1


def _pydicom_scalar(v: Any) -> str:
    original = getattr(v, "original_string", None)
    if isinstance(original, str):
        return original.strip()
    return str(v)


__all__ += ["KEYWORDS", "BytesReader", "FileReader"]
