"""Write a de-identified DICOM Part 10 file: copy what is kept, byte for byte.

This is the write-back half of de-identification. The plan decides, for every
element row of a file (see :mod:`dicomframe._parse`), whether it is kept or
set to a new value; :func:`rewrite` turns the original bytes and that
decision into a new file:

- an element whose ``tag_path`` maps to :class:`Keep` is copied byte for byte
  (header and value, in its original VR and length encoding); runs of
  consecutive kept elements are copied with one slice;
- an element whose ``tag_path`` maps to :class:`Set` gets the new value (an
  absent element is inserted in ascending tag order);
- **every other element is removed** (fail closed), at any depth;
- a kept sequence whose items changed is re-emitted with undefined length and
  delimiters (always valid, no lengths to recompute); an unchanged one is
  copied verbatim; an item whose elements were all removed stays as an empty
  item, so item indices stay stable;
- group length elements (gggg,0000) in the data set are always removed;
- the File Meta Information is always regenerated (see :func:`rewrite`);
- the top-level Pixel Data is never decoded: when kept its bytes, native or
  encapsulated, are copied through, after an integrity check that rejects a
  truncated copy.

All transfer syntaxes go through the same byte walker: explicit and implicit
VR little endian (every encapsulated syntax included) directly, Explicit VR Big
Endian with big endian headers, and Deflated Explicit VR Little Endian by
inflating the data set, rewriting it as explicit VR little endian and deflating
the result. The walker decides where sequences are exactly as
:func:`dicomframe._parse.parse_file` does, so the ``tag_path`` keys of the edits
are the ones the scan produced.

Nothing here puts a value read from a file into an exception message: only
tags, tag paths, offsets and byte counts.

Examples
--------
>>> from pydicom.data import get_testdata_file
>>> from dicomframe._parse import BytesReader, parse_file
>>> from pathlib import Path
>>> data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
>>> rows, _ = parse_file(BytesReader(data))
>>> edits = {row[0]: KEEP for row in rows}
>>> edits["00100010"] = Set("PN", "CloudStudy^X1")
>>> out = rewrite(data, edits)
>>> out[128:132]
b'DICM'
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from ._parse import (
    _HEX8,
    _LONG_VRS,
    _NUM_FMT,
    _PIXEL_TAGS,
    _VR_KIND,
    DEFLATED_LE,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    _check_meta_start,
    _corrupt,
    _corrupt_what,
    _looks_explicit,
    _private_vr,
    _truncated,
)
from .errors import ParseError, UserInputError
from .tags import UID_MAX, UID_SYNTAX, VRS, format_tag, message_tag, vr_for

try:
    from . import _cwalk  # the C accelerator (optional: built when a compiler is present)
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _cwalk = None

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "KEEP",
    "Edit",
    "Keep",
    "NewElement",
    "Set",
    "rewrite",
    "rewrite_pieces",
]

#: dicomframe's Implementation Class UID, written in every file's meta header.
#: Derived once as "2.25." + the decimal of the first 128 bits (big endian) of
#: SHA-256(b"dicomframe"):
#: ``"2.25.%d" % int.from_bytes(hashlib.sha256(b"dicomframe").digest()[:16], "big")``
IMPLEMENTATION_CLASS_UID = "2.25.75480284057101362301393494295545620791"
#: Implementation Version Name (SH, at most 16 characters)
IMPLEMENTATION_VERSION_NAME = "DICOMFRAME_01"


@dataclass(frozen=True, slots=True)
class Keep:
    """Keep the element as it is in the file (byte for byte).

    For a sequence, this keeps the container; the elements of its items have
    their own entries in the edits map.
    """


#: the one :class:`Keep` instance callers need
KEEP = Keep()
#: :class:`Keep` for an element the caller read as a sequence, whose items have entries of
#: their own: if this file's bytes do not read as a sequence there (e.g. a private creator
#: written so that the two readings differ), the file is refused rather than copied whole
#: with what its items hold
KEEP_SEQUENCE = Keep()


@dataclass(frozen=True, slots=True)
class NewElement:
    """An element of a new sequence item (see :class:`Set`)."""

    tag: int
    vr: str
    value: str | bytes | list[list[NewElement]]


@dataclass(frozen=True, slots=True)
class Set:
    """Replace the element's value, or insert the element when the file lacks it.

    ``vr`` is the VR to write (explicit VR files write it; implicit files do
    not). ``value`` is

    - ``str``: the DICOM string form (multiple values joined by ``"\\"``),
      encoded per VR: ASCII text padded to even length with a space (UI: with
      NUL); numbers (US, SS, UL, SL, FL, FD, SV, UV) from their decimal form;
      AT from 8 hex digits per tag;
    - ``bytes``: the raw value bytes, padded to even length with NUL;
    - a list: the items of a sequence (``vr`` ``"SQ"``), each a list of
      :class:`NewElement`.
    """

    vr: str
    value: str | bytes | list[list[NewElement]]


Edit = Keep | Set

# -- constants ----------------------------------------------------------------

UNDEFINED = 0xFFFFFFFF
_INF = 1 << 62
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
_NATIVE_SYNTAXES = frozenset((IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED_LE))
_PREAMBLE = bytes(128) + b"DICM"
_SET_PATH = re.compile(r"(?:[0-9A-F]{8}\[[0-9]+\]\.)*[0-9A-F]{8}")
#: text VRs (padded with a space, UI with NUL)
_TEXT_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR")
    + ("SH", "LO", "ST", "LT", "UT", "PN", "UC")
)
_INT_VRS = frozenset(("US", "SS", "UL", "SL", "SV", "UV"))
#: the meta elements a caller (or a Set on group 0002) may give
_META_OVERRIDES = (0x00020002, 0x00020003)
#: pieces of the output at least this long stay views of the input (see rewrite_pieces)
_VIEW_MIN = 64 * 1024

#: explicit VR code (the two VR bytes read as a 16-bit int) -> (is SQ, 4-byte length, is UN)
_VR_CODES: dict[str, tuple[bool, bool, bool]] = {
    vr: (vr == "SQ", vr in _LONG_VRS, vr == "UN") for vr in _VR_KIND
}
_VRC = {
    "<": {int.from_bytes(vr.encode(), "little"): info for vr, info in _VR_CODES.items()},
    ">": {int.from_bytes(vr.encode(), "big"): info for vr, info in _VR_CODES.items()},
}
_UN_INFO = _VR_CODES["UN"]

#: public tag -> is it a sequence (filled lazily for tags outside the dictionary)
_PUBLIC_SQ: dict[int, bool] = {tag: vr == "SQ" for tag, vr in VRS.items()}


def _public_is_sq(tag: int) -> bool:
    known = _PUBLIC_SQ.get(tag)
    if known is None:
        known = _PUBLIC_SQ[tag] = vr_for(tag) == "SQ"  # repeating groups, e.g. 50xx2600
    return known


def _hex(tag: int) -> str:
    hx = _HEX8.get(tag)
    return hx if hx is not None else f"{tag:08X}"


class _Encoding:
    """Byte order dependent pieces (headers, delimiters, struct functions)."""

    __slots__ = (
        "e",
        "hdr",
        "head_implicit",
        "head_long",
        "head_short",
        "hh",
        "item",
        "item_end",
        "seq_end",
        "u16",
        "u32",
        "undef_tag",
        "vrc",
    )

    def __init__(self, e: str) -> None:
        self.e = e
        self.head_short = struct.Struct(e + "HH2sH").pack
        self.head_long = struct.Struct(e + "HH2sHI").pack
        self.head_implicit = struct.Struct(e + "HHI").pack
        self.hdr = struct.Struct(e + "HHHH").unpack_from
        self.hh = struct.Struct(e + "HH").unpack_from
        self.u16 = struct.Struct(e + "H").unpack_from
        self.u32 = struct.Struct(e + "I").unpack_from
        self.vrc = _VRC[e]
        self.item = struct.pack(e + "HHI", 0xFFFE, 0xE000, UNDEFINED)
        self.item_end = struct.pack(e + "HHI", 0xFFFE, 0xE00D, 0)
        self.seq_end = struct.pack(e + "HHI", 0xFFFE, 0xE0DD, 0)
        self.undef_tag = struct.Struct(e + "HH").pack


_LE = _Encoding("<")
_BE = _Encoding(">")


# -- encoding new values ----------------------------------------------------------


def encode_text(value: str, charset: str | None) -> bytes | None:
    """``value`` (text) encoded in the Specific Character Set ``charset`` (its value: terms
    separated by backslashes; None: not declared, the default repertoire, ASCII), escape
    sequences included (ISO 2022), padded to even with a space; None when a character is
    outside the character set, or the set is unknown."""
    if value.isascii():
        raw = value.encode("ascii")
    elif not charset or not charset.strip(" \\"):
        return None
    else:
        import warnings

        from pydicom import config
        from pydicom.charset import convert_encodings, encode_string

        terms = [term.strip(" ") for term in charset.split("\\")]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pydicom warns, and replaces, where it cannot encode
            try:
                # an unknown term: pydicom falls back to ASCII, which the value is not
                encodings = convert_encodings(terms)
                with config.strict_reading():
                    raw = encode_string(value, encodings)
            except (UserWarning, LookupError, UnicodeError, ValueError):
                return None
    return raw + b" " if len(raw) & 1 else raw


def charset_at(path: str, charsets: Mapping[str, str]) -> str | None:
    """The Specific Character Set the element at ``path`` (a plan's ``tag_path``) is written
    in, from ``charsets`` (prefix of the data set or item → its value, as for a Specific
    Character Set at ``prefix + "00080005"``): its item's own, else the nearest enclosing
    one's, else the data set's (None: not declared, ASCII)."""
    prefix = path
    while True:
        prefix = prefix[: prefix.rfind(".") + 1]  # "A[0].B" → "A[0].", "A[0]" → ""
        found = charsets.get(prefix)
        if found is not None or not prefix:
            return found
        prefix = prefix[:-1]


def _bad_set(path: str, why: str) -> UserInputError:
    return UserInputError(f"cannot write the Set edit for {path}: {why}")


def _encode_value(path: str, vr: str, value: str | bytes, e: str) -> bytes:
    """The value bytes of a Set (even length)."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return raw + b"\x00" if len(raw) & 1 else raw
    if not isinstance(value, str):
        raise _bad_set(
            path, f"the value must be str, bytes or a list of items, not {type(value).__name__}"
        )
    if vr in _TEXT_VRS or vr in ("OB", "UN"):
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise _bad_set(
                path, f"the {vr} value is not ASCII (only ASCII values are written)"
            ) from None
        if len(raw) & 1:
            raw += b"\x00" if vr in ("UI", "OB", "UN") else b" "
        return raw
    if vr in _NUM_FMT:
        parts = value.split("\\") if value.strip() else []
        try:
            nums = [int(p) for p in parts] if vr in _INT_VRS else [float(p) for p in parts]
            return struct.pack(f"{e}{len(nums)}{_NUM_FMT[vr]}", *nums)
        except (ValueError, struct.error):
            raise _bad_set(
                path, f"the value is not a backslash-separated list of {vr} numbers in range"
            ) from None
    if vr == "AT":
        parts = value.split("\\") if value.strip() else []
        try:
            tags = [int(p, 16) for p in parts if len(p.strip()) == 8]
            if len(tags) != len(parts):
                raise ValueError
            return b"".join(struct.pack(e + "HH", t >> 16, t & 0xFFFF) for t in tags)
        except (ValueError, struct.error):
            raise _bad_set(
                path, "an AT value is a backslash-separated list of 8 hex digits"
            ) from None
    if vr == "SQ":
        raise _bad_set(path, "a sequence value is a list of items (lists of NewElement)")
    raise _bad_set(path, f"give the value of a {vr} element as bytes")


def _encode_element(
    path: str, tag: int, vr: str, value: object, explicit: bool, enc: _Encoding
) -> bytes:
    """A complete element (header + value) for a Set or a NewElement."""
    if type(value) is str and vr in _TEXT_VRS:  # the common case, kept short
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise _bad_set(
                path, f"the {vr} value is not ASCII (only ASCII values are written)"
            ) from None
        n = len(raw)
        if n & 1:
            raw += b"\x00" if vr == "UI" else b" "
            n += 1
        if not explicit:
            return enc.head_implicit(tag >> 16, tag & 0xFFFF, n) + raw
        if vr in _LONG_VRS:
            return enc.head_long(tag >> 16, tag & 0xFFFF, vr.encode(), 0, n) + raw
        if n > 0xFFFE:
            raise _bad_set(path, f"{n} bytes do not fit the 16-bit length of VR {vr}")
        return enc.head_short(tag >> 16, tag & 0xFFFF, vr.encode(), n) + raw
    if vr not in _VR_KIND:
        raise _bad_set(path, f"{vr!r} is not a DICOM VR")
    e = enc.e
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    if isinstance(value, list):
        if vr != "SQ":
            raise _bad_set(path, f"a list of items needs VR SQ, not {vr}")
        parts = [head + (b"SQ\x00\x00\xff\xff\xff\xff" if explicit else b"\xff\xff\xff\xff")]
        for k, item in enumerate(value):
            if not isinstance(item, list | tuple):
                raise _bad_set(path, f"item {k} must be a list of NewElement")
            parts.append(enc.item)
            seen: set[int] = set()
            for new in sorted(item, key=_new_tag):
                if not isinstance(new, NewElement):
                    raise _bad_set(path, f"item {k} must hold NewElement objects only")
                if new.tag in seen:
                    raise _bad_set(path, f"item {k} has {format_tag(new.tag)} twice")
                seen.add(new.tag)
                sub = f"{path}[{k}].{new.tag:08X}"
                parts.append(_encode_element(sub, new.tag, new.vr, new.value, explicit, enc))
            parts.append(enc.item_end)
        parts.append(enc.seq_end)
        return b"".join(parts)
    raw = _encode_value(path, vr, value, e)  # type: ignore[arg-type]
    n = len(raw)
    if not explicit:
        return head + struct.pack(e + "I", n) + raw
    if vr in _LONG_VRS:
        return head + vr.encode() + struct.pack(e + "HI", 0, n) + raw
    if n > 0xFFFE:
        raise _bad_set(path, f"{n} bytes do not fit the 16-bit length of VR {vr}")
    return head + vr.encode() + struct.pack(e + "H", n) + raw


def _new_tag(new: object) -> int:
    tag = getattr(new, "tag", None)
    return tag if isinstance(tag, int) else -1


# -- the walker -----------------------------------------------------------------------


class _Rewriter:
    """State of one file's rewrite. The dataset loop is hot: keep it lean."""

    __slots__ = (
        "data",
        "edits",
        "enc",
        "explicit",
        "image",
        "inserts",
        "kept_seqs",
        "mv",
        "native",
        "sets",
        "size",
        "sop",
    )

    def __init__(
        self,
        data: bytes,
        edits: Mapping[str, Edit],
        enc: _Encoding,
        explicit: bool,
        native: bool,
    ) -> None:
        self.data = data
        self.mv = memoryview(data)
        self.size = len(data)
        self.enc = enc
        self.edits = edits
        self.explicit = explicit
        self.native = native
        #: Set edits encoded for the file's VR encoding, by path
        self.sets: dict[str, bytes] = {}
        #: Set edits to insert, by dataset prefix: [(tag, path)] sorted by descending tag
        self.inserts: dict[str, list[tuple[int, str]]] = {}
        self.kept_seqs: set[str] = set()
        #: top-level group 0028 elements: element number -> (value offset, length)
        self.image: dict[int, tuple[int, int]] = {}
        #: top-level SOPClassUID / SOPInstanceUID: element number -> (value offset, length)
        self.sop: dict[int, tuple[int, int]] = {}

    def set_bytes(self, path: str, tag: int, explicit: bool) -> bytes:
        if explicit == self.explicit:
            return self.sets[path]
        edit = self.edits[path]
        assert isinstance(edit, Set)
        return _encode_element(path, tag, edit.vr, edit.value, explicit, self.enc)

    # -- one data set (the top level or an item) ------------------------------------
    def dataset(
        self, pos: int, end: int, prefix: str, depth: int, explicit: bool, skip: bool
    ) -> tuple[int, list[bytes | memoryview] | None]:
        """Rewrite the elements from ``pos`` up to ``end`` (or an item delimiter).

        Return the end position and the output pieces, or ``None`` for the pieces
        when nothing changed (the caller copies the original bytes). With ``skip``,
        only find the end (the container is being removed).
        """
        data = self.data
        mv = self.mv
        size = self.size
        enc = self.enc
        hdr = enc.hdr
        u32 = enc.u32
        vrc_table = enc.vrc
        edits = self.edits
        hex8 = _HEX8.get
        pixel_tags = _PIXEL_TAGS
        keep_type = Keep
        undefined = UNDEFINED
        top = depth == 0
        out: list[bytes | memoryview] = []
        append = out.append
        run = -1  # start of the current run of elements copied verbatim
        changed = False
        creators: dict[int, str] = {}
        pending = None if skip else self.inserts.pop(prefix, None)
        done: set[int] = set()
        if pending:
            changed = True
        trailing = False  # past the top-level Pixel Data
        while pos < end:
            start = pos
            try:
                if pos + 8 > size:
                    if top and end >= _INF:
                        if pos >= size:
                            break
                        if not any(data[pos:size]):
                            changed = True  # trailing zero padding: dropped
                            if run >= 0:
                                append(mv[run:pos])
                                run = -1
                            pos = size
                            break
                    raise _truncated("an element header", pos)
                group, elem, vrc, len16 = hdr(data, pos)
                tag = (group << 16) | elem
                if group == 0xFFFE:
                    if tag == _ITEM_DELIM:
                        if end >= _INF:
                            if run >= 0:
                                append(mv[run:pos])
                                run = -1
                            if top:
                                changed = True
                            end = pos + 8  # the item (or, as the walker does, the data set) ends
                            pos = end
                            break
                        changed = True  # stray delimiter inside a defined-length item: dropped
                    elif tag == _SEQ_DELIM and top:
                        changed = True
                    else:
                        raise _corrupt(f"unexpected delimiter {message_tag(tag)}", pos)
                    if run >= 0:
                        append(mv[run:pos])
                        run = -1
                    pos += 8
                    continue
                is_un = False
                if explicit:
                    info = vrc_table.get(vrc)
                    if info is None:
                        if vrc == 0x2020 or vrc == 0:
                            info = _UN_INFO  # a blank VR, read as UN (as the walker does)
                        else:
                            raise _corrupt(f"unknown VR in element {message_tag(tag)}", pos)
                    is_sq, long_form, is_un = info
                    if long_form:
                        if pos + 12 > size:
                            raise _truncated("an element header", pos)
                        length = u32(data, pos + 8)[0]
                        vpos = pos + 12
                    else:
                        length = len16
                        vpos = pos + 8
                    if is_un:
                        is_sq = length == UNDEFINED or self.un_is_sq(tag, creators, length)
                else:
                    length = u32(data, pos + 4)[0]
                    vpos = pos + 8
                    if length == UNDEFINED:
                        is_sq = tag not in _PIXEL_TAGS
                    elif group & 1:
                        is_sq = elem > 0xFF and self.private_is_sq(tag, creators)
                    else:
                        is_sq = _public_is_sq(tag)
                if group & 1 and 0x10 <= elem <= 0xFF and length <= 0xFFFF:
                    # a private creator: needed to tell private sequences in implicit VR
                    creators[(group << 8) | elem] = (
                        data[vpos : vpos + length].decode("latin-1").strip(" \x00")
                    )
                if top:
                    if group == 0x0028:
                        self.image[elem] = (vpos, length)
                    elif group == 0x0008 and (elem == 0x0016 or elem == 0x0018):
                        self.sop[elem] = (vpos, length)
                path = ""
                if elem == 0 or skip or trailing or (top and group == 0x0002):
                    # group lengths and stray meta elements are always removed, and so is all
                    # past the top-level Pixel Data: the scan stops there, so no plan row speaks
                    # for what follows (a copy of an earlier element would take its edit)
                    edit = None
                else:
                    hx = hex8(tag)
                    path = prefix + (hx if hx is not None else f"{tag:08X}")
                    edit = edits.get(path)
                if pending:
                    while pending and pending[-1][0] < tag:
                        if run >= 0:
                            append(mv[run:pos])
                            run = -1
                        ins_tag, ins_path = pending.pop()
                        append(self.set_bytes(ins_path, ins_tag, explicit))
                        done.add(ins_tag)
                    if pending and pending[-1][0] == tag:
                        pending.pop()
                items = None
                keep = type(edit) is keep_type
                if top and tag in pixel_tags:
                    epos = self.pixel_end(vpos, length, tag)
                    trailing = True
                elif is_sq:
                    if keep:
                        self.kept_seqs.add(path)
                        epos, items = self.sequence(
                            vpos, length, depth + 1, path, explicit and not is_un, tag, False
                        )
                    else:
                        # removed: walked all the same, so that its items must end where it
                        # says (skipped by its length, an item's rest would be read as elements)
                        epos = self.sequence(
                            vpos, length, depth + 1, path, explicit and not is_un, tag, True
                        )[0]
                elif length == undefined:
                    epos = self.fragments_end(vpos, tag)
                else:
                    epos = vpos + length
                    if epos > size:
                        raise _truncated(f"the value of element {message_tag(tag)}", vpos)
            except ParseError:
                if not trailing:
                    raise
                # unreadable bytes after the top-level Pixel Data: the scan never sees
                # them (it stops at Pixel Data), so nothing there can be kept; drop them
                pos = start
                changed = True
                break
            if keep:
                if items is None:
                    if run < 0:
                        run = pos
                else:
                    if run >= 0:
                        append(mv[run:pos])
                        run = -1
                    head = enc.undef_tag(group, elem)
                    if explicit:
                        head += (b"UN" if is_un else b"SQ") + b"\x00\x00\xff\xff\xff\xff"
                    else:
                        head += b"\xff\xff\xff\xff"
                    append(head)
                    out.extend(items)
                    append(enc.seq_end)
                    changed = True
            else:
                if run >= 0:
                    append(mv[run:pos])
                    run = -1
                changed = True
                if edit is not None and tag not in done:
                    append(self.set_bytes(path, tag, explicit))
            pos = epos
        if end < _INF and pos > end:
            raise _corrupt("element runs past the end of its item", pos)
        if run >= 0:
            append(mv[run:pos])
        if pending:
            while pending:
                ins_tag, ins_path = pending.pop()
                append(self.set_bytes(ins_path, ins_tag, explicit))
        return pos, (out if changed else None)

    def un_is_sq(self, tag: int, creators: dict[int, str], length: int) -> bool:
        """An explicit UN element with a defined length: a sequence by the dictionary?"""
        group, elem = tag >> 16, tag & 0xFFFF
        if not group & 1:
            if not elem:
                return False
            known = vr_for(tag)
            return known == "SQ"
        if elem > 0xFF:
            return self.private_is_sq(tag, creators)
        return False

    @staticmethod
    def private_is_sq(tag: int, creators: dict[int, str]) -> bool:
        group, elem = tag >> 16, tag & 0xFFFF
        creator = creators.get((group << 8) | (elem >> 8))
        return creator is not None and _private_vr(group, elem, creator) == "SQ"

    def sequence(
        self, pos: int, length: int, depth: int, path: str, explicit: bool, tag: int, skip: bool
    ) -> tuple[int, list[bytes | memoryview] | None]:
        """Rewrite the items of a sequence. Return its end and the item pieces (None: unchanged)."""
        data = self.data
        size = self.size
        enc = self.enc
        hh = enc.hh
        u32 = enc.u32
        end = _INF if length == UNDEFINED else pos + length
        if end < _INF and end > size:
            raise _truncated(f"sequence {message_tag(tag)}", pos)
        out: list[bytes | memoryview] = []
        changed = False
        n = 0
        while pos < end:
            if pos + 8 > size:
                raise _truncated(f"an item of sequence {message_tag(tag)}", pos)
            group, elem = hh(data, pos)
            item_len = u32(data, pos + 4)[0]
            item_tag = (group << 16) | elem
            if item_tag == _SEQ_DELIM:
                pos += 8
                break
            if item_tag != _ITEM:
                raise _corrupt(f"expected an item in sequence {message_tag(tag)}", pos)
            start = pos
            pos += 8
            prefix = f"{path}[{n}]."
            if item_len == UNDEFINED:
                pos, pieces = self.dataset(pos, _INF, prefix, depth, explicit, skip)
            else:
                pieces = self.dataset(pos, pos + item_len, prefix, depth, explicit, skip)[1]
                pos += item_len
            n += 1
            if skip:
                continue
            if pieces is None:
                out.append(self.mv[start:pos])
            else:
                changed = True
                out.append(enc.item)
                out.extend(pieces)
                out.append(enc.item_end)
        if end < _INF and pos != end:
            raise _corrupt(_corrupt_what(7, tag), end)  # as the scan says it
        return pos, (out if changed else None)

    def fragments_end(self, pos: int, tag: int) -> int:
        """The end of an undefined-length non-sequence value (encapsulated fragments)."""
        data = self.data
        size = self.size
        hh = self.enc.hh
        u32 = self.enc.u32
        while True:
            if pos + 8 > size:
                raise _truncated(f"a fragment of element {message_tag(tag)}", pos)
            group, elem = hh(data, pos)
            flen = u32(data, pos + 4)[0]
            ftag = (group << 16) | elem
            if ftag == _SEQ_DELIM:
                return pos + 8
            if ftag != _ITEM or flen == UNDEFINED:
                raise _corrupt(f"invalid fragment in element {message_tag(tag)}", pos)
            pos += 8 + flen

    # -- Pixel Data integrity -----------------------------------------------------
    def pixel_end(self, vpos: int, length: int, tag: int) -> int:
        """Check the top-level Pixel Data is complete; return its end."""
        size = self.size
        name = f"Pixel Data {message_tag(tag)}"
        if length != UNDEFINED:
            if vpos + length > size:
                raise ParseError(
                    "truncated",
                    f"{name} declares {length} bytes at byte offset {vpos} but the file "
                    f"holds only {size - vpos}: the file is truncated or incompletely "
                    "copied; copy it again from the source",
                )
            if self.native:
                expected = self.expected_pixel_bytes()
                if expected is not None and length < expected:
                    raise ParseError(
                        "truncated",
                        f"{name} holds {length} bytes but Rows x Columns x SamplesPerPixel "
                        f"x NumberOfFrames x BitsAllocated needs {expected}: the pixel data "
                        "is incomplete; copy the file again from the source",
                    )
            return vpos + length
        data = self.data
        hh = self.enc.hh
        u32 = self.enc.u32
        pos = vpos
        while True:
            if pos + 8 > size:
                raise ParseError(
                    "truncated",
                    f"{name} (encapsulated) has no sequence delimiter: the file ends at byte "
                    f"{size} inside its fragments ({size - vpos} bytes read); the file is "
                    "truncated or incompletely copied; copy it again from the source",
                )
            group, elem = hh(data, pos)
            flen = u32(data, pos + 4)[0]
            ftag = (group << 16) | elem
            if ftag == _SEQ_DELIM:
                return pos + 8
            if ftag != _ITEM or flen == UNDEFINED:
                raise _corrupt(f"invalid fragment in element {message_tag(tag)}", pos)
            if pos + 8 + flen > size:
                raise ParseError(
                    "truncated",
                    f"{name}: a fragment at byte offset {pos} declares {flen} bytes but the "
                    f"file holds only {size - pos - 8} after its header: the file is "
                    "truncated or incompletely copied; copy it again from the source",
                )
            pos += 8 + flen

    def expected_pixel_bytes(self) -> int | None:
        """Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated / 8, even
        (see :func:`native_pixel_bytes`)."""
        image = self.image
        u16 = self.enc.u16
        data = self.data

        def us(elem: int, default: int | None) -> int | None:
            found = image.get(elem)
            if found is None or found[1] < 2 or found[0] + 2 > self.size:
                return default
            return int(u16(data, found[0])[0])

        rows, cols, bits = us(0x0010, None), us(0x0011, None), us(0x0100, None)
        if not rows or not cols or not bits:
            return None
        samples = us(0x0002, 1) or 1
        frames = 1
        found = image.get(0x0008)
        if found is not None:
            text = data[found[0] : found[0] + found[1]].decode("latin-1").strip(" \x00")
            try:
                frames = max(int(text), 1)
            except ValueError:
                frames = 1  # unreadable NumberOfFrames: check one frame at least
        photometric = None
        found = image.get(0x0004)
        if found is not None and found[0] + found[1] <= self.size:
            photometric = data[found[0] : found[0] + found[1]].decode("latin-1")
        return native_pixel_bytes(rows, cols, samples, frames, bits, photometric)


def native_pixel_bytes(rows: int, cols: int, samples: int, frames: int, bits: int, photometric: str | None) -> int:
    """The length of a native (uncompressed) Pixel Data value: every frame, bits packed,
    padded to even. YBR_FULL_422 holds two samples a pixel, not three (Y Y Cb Cr for each
    pair of pixels, PS3.3 C.7.6.3.1.2), as pydicom reads it. The C rewriter mirrors this."""
    nbytes = (rows * cols * samples * frames * bits + 7) // 8
    if photometric is not None and photometric.strip(" \x00").upper() == "YBR_FULL_422":
        nbytes = nbytes // 3 * 2
    return nbytes + (nbytes & 1)


# -- file meta -------------------------------------------------------------------------


def _read_meta(data: bytes, pos: int) -> tuple[int, dict[int, bytes]]:
    """Walk group 0002 (explicit VR little endian); return the dataset start and values."""
    size = len(data)
    values: dict[int, bytes] = {}
    u16 = _LE.u16
    u32 = _LE.u32
    while pos + 8 <= size:
        if u16(data, pos)[0] != 0x0002:
            break
        elem = u16(data, pos + 2)[0]
        vr = data[pos + 4 : pos + 6]
        try:
            vr_name = vr.decode("ascii")
        except UnicodeDecodeError:
            vr_name = ""
        if vr_name not in _VR_KIND:
            raise _corrupt("file meta element without a VR", pos)
        if vr_name in _LONG_VRS:
            if pos + 12 > size:
                raise _truncated("the file meta information", pos)
            length = u32(data, pos + 8)[0]
            vpos = pos + 12
        else:
            length = u16(data, pos + 6)[0]
            vpos = pos + 8
        if length == UNDEFINED or vpos + length > size:
            raise _truncated("the file meta information", pos)
        values[elem] = data[vpos : vpos + length]
        pos = vpos + length
    return pos, values


def _meta_element(elem: int, vr: str, raw: bytes) -> bytes:
    if len(raw) & 1:
        raw += b"\x00" if vr in ("UI", "OB") else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", 2, elem, vr.encode(), 0, len(raw)) + raw
    return struct.pack("<HH2sH", 2, elem, vr.encode(), len(raw)) + raw


def _uid_bytes(raw: bytes) -> bytes:
    return raw.rstrip(b"\x00 ")


def _meta_group(sop_class: bytes | None, sop_instance: bytes | None, ts: str) -> bytes:
    parts = [_meta_element(0x0001, "OB", b"\x00\x01")]
    if sop_class is not None:
        parts.append(_meta_element(0x0002, "UI", sop_class))
    if sop_instance is not None:
        parts.append(_meta_element(0x0003, "UI", sop_instance))
    if not ts or not all(c in "0123456789." for c in ts):
        raise ParseError(
            "corrupt",
            "the Transfer Syntax UID in the file meta is not a UID: the file is damaged; copy it again "
            "from the source",
        )
    parts.append(_meta_element(0x0010, "UI", ts.encode("ascii")))
    parts.append(_meta_element(0x0012, "UI", IMPLEMENTATION_CLASS_UID.encode("ascii")))
    parts.append(_meta_element(0x0013, "SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")))
    body = b"".join(parts)
    return _meta_element(0x0000, "UL", struct.pack("<I", len(body))) + body


#: a UID, as bytes (see :data:`dicomframe.tags.UID_SYNTAX`)
_UID_BYTES = re.compile(UID_SYNTAX.encode("ascii"))


def _is_uid(raw: bytes) -> bool:
    return len(raw) <= UID_MAX and _UID_BYTES.fullmatch(raw) is not None


def _ascii_uid(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise UserInputError(f"{what} must be a str UID, not {type(value).__name__}")
    try:
        raw = value.strip(" \x00").encode("ascii")
    except UnicodeEncodeError:
        raise UserInputError(f"{what} is not ASCII: a UID holds digits and dots only") from None
    if not _is_uid(raw):
        raise UserInputError(f"{what} is not a UID: digits and dots, at most {UID_MAX} characters")
    return raw


# -- the public function -------------------------------------------------------------


def rewrite(
    data: bytes,
    edits: Mapping[str, Edit],
    *,
    meta: Mapping[int, str] | None = None,
    accelerate: bool = True,
) -> bytes:
    """Rewrite one DICOM file: keep, set or insert what ``edits`` says; remove the rest.

    Parameters
    ----------
    data
        The whole file (Part 10, with or without preamble / File Meta Information).
    edits
        ``tag_path`` (as in the scan's element rows, e.g. ``"0040A730[0].0040A123"``)
        to :class:`Keep` or :class:`Set`. Anything absent is removed, at any depth
        (fail closed). ``Set`` on an absent path inserts the element in tag order
        (at the top level, or in an existing item of a kept sequence). Edits on
        group lengths (gggg,0000) and on group 0002 are ignored (those elements
        are always removed or regenerated), except that a ``Set`` of
        ``00020002``/``00020003`` is taken as a File Meta override.
    meta
        Overrides for MediaStorageSOPClassUID (``0x00020002``) and
        MediaStorageSOPInstanceUID (``0x00020003``).
    accelerate
        Walk explicit VR little endian data sets with the C accelerator when it is
        built (same output; anything unusual goes to the Python walker, the reference).

    Returns
    -------
    bytes
        A Part 10 file: 128 zero bytes, ``DICM``, a regenerated File Meta group
        ((0002,0000), (0002,0001), (0002,0002), (0002,0003), (0002,0010),
        (0002,0012) :data:`IMPLEMENTATION_CLASS_UID`, (0002,0013)
        :data:`IMPLEMENTATION_VERSION_NAME`), then the data set in the input's
        transfer syntax. (0002,0003) is, in order of precedence: ``meta``, a
        ``Set`` of ``00020003``, a ``Set`` of SOPInstanceUID ``00080018`` (so a
        replaced SOP Instance UID never survives in the meta header), the input's
        (0002,0003), the input's SOPInstanceUID; (0002,0002) likewise.

    Raises
    ------
    ParseError
        ``truncated`` (including a Pixel Data shorter than declared or than the
        image attributes need), ``corrupt`` or ``not_dicom`` for damaged input.
    UserInputError
        A ``Set`` that cannot be encoded (non-ASCII text, bad number, bad path).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from pathlib import Path
    >>> data = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    >>> out = rewrite(data, {"00100020": KEEP, "00120062": Set("CS", "YES")})
    >>> import io, pydicom
    >>> ds = pydicom.dcmread(io.BytesIO(out))
    >>> [elem.keyword for elem in ds]
    ['PatientID', 'PatientIdentityRemoved']
    """
    return b"".join(rewrite_pieces(data, edits, meta=meta, accelerate=accelerate))


def rewrite_pieces(
    data: bytes,
    edits: Mapping[str, Edit],
    *,
    meta: Mapping[int, str] | None = None,
    accelerate: bool = True,
) -> list[bytes | memoryview]:
    """:func:`rewrite`, as pieces whose concatenation is the new file.

    Large pieces (the pixel data, mostly) are views of ``data``, not copies: hash
    and write them one after the other (e.g. ``os.writev``) to save copying the file.
    Same parameters and errors as :func:`rewrite`; with ``accelerate`` (the default)
    an explicit VR little endian data set is walked by the C accelerator when it is
    built, with the same result (anything unusual is left to the Python walker).
    """
    return _rewrite_pieces(data, edits, meta, accelerate, None)


def _rewrite_pieces(
    data: bytes | mmap.mmap,
    edits: Mapping[str, Edit],
    meta: Mapping[int, str] | None,
    accelerate: bool,
    memo: dict[int, Any] | None,
) -> list[bytes | memoryview]:
    """:func:`rewrite_pieces`; ``memo`` (a dict the caller keeps, or None) keeps the encoding of
    each Set whose value is not a str (e.g. a new sequence), by the Set's identity: for a
    caller that passes the very same Set objects, unchanged, for many files."""
    if isinstance(data, mmap.mmap):
        # a large input without its pixel data (see dicomframe._stream): read as bytes are
        # (indexing gives ints, slicing bytes)
        data = cast(bytes, data)
    elif not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size == 0:
        raise ParseError("empty", "the file is empty (0 bytes); copy it again from the source")
    start, _has_preamble, has_meta = _check_meta_start(data[:256])
    pos = start
    meta_values: dict[int, bytes] = {}
    if has_meta:
        pos, meta_values = _read_meta(data, pos)
    declared = meta_values.get(0x0010)
    ts = declared.decode("latin-1").strip(" \x00") if declared else None

    # the data set's encoding, decided as the scan's walker does
    enc = _LE
    explicit = True
    deflated = False
    if ts is None:
        if pos + 8 > size:
            raise _truncated("the first data element", pos)
        if data[pos] == 0 and data[pos + 1] == 0x08:
            enc = _BE
        explicit = _looks_explicit(data, pos)
        ts = (EXPLICIT_LE if enc is _LE else EXPLICIT_BE) if explicit else IMPLICIT_LE
    elif ts == IMPLICIT_LE:
        explicit = False
    elif ts == EXPLICIT_BE:
        enc = _BE
    elif ts == DEFLATED_LE:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[pos:])
        except zlib.error:
            raise _corrupt("deflated dataset cannot be inflated", pos) from None
        pos, size, deflated = 0, len(data), True
    if not deflated and pos + 8 <= size:
        looks = _looks_explicit(data, pos)
        if looks != explicit and enc.hh(data, pos)[0] != 0xFFFE:
            # declared one VR encoding, written the other: declare what is written
            explicit = looks
            if ts in (IMPLICIT_LE, EXPLICIT_LE):
                ts = EXPLICIT_LE if explicit else IMPLICIT_LE

    w = _Rewriter(data, edits, enc, explicit, ts in _NATIVE_SYNTAXES)
    overrides: dict[int, bytes] = {}
    _prepare_sets(w, edits, overrides, memo)
    if meta:
        for key, value in meta.items():
            if key not in _META_OVERRIDES:
                raise UserInputError(
                    f"meta may only override (0002,0002) and (0002,0003), not {format_tag(key)}: "
                    "the rest of the File Meta Information is regenerated"
                )
            overrides[key] = _ascii_uid(value, f"meta[{format_tag(key)}]")

    fast = None
    if accelerate and _cwalk is not None and enc is _LE and explicit and not deflated:
        fast = _cwalk.rewrite(
            data, pos, edits, Keep, w.sets, w.inserts, w.native, _VIEW_MIN, vr_for, _private_vr
        )
    if fast is not None:
        # the C walker's result: apply what it noted, as the Python walker would have
        spans, end, visited, kept, sop_class, sop_instance = fast
        for prefix in visited:
            del w.inserts[prefix]
        w.kept_seqs.update(kept)
        if sop_class is not None:
            w.sop[0x0016] = sop_class
        if sop_instance is not None:
            w.sop[0x0018] = sop_instance
        mv = w.mv
        pieces = [mv[p[0] : p[1]] if type(p) is tuple else p for p in spans]
    else:
        try:
            end, pieces = w.dataset(pos, _INF, "", 0, explicit, False)
        except RecursionError:
            raise ParseError(
                "corrupt",
                "sequences are nested too deeply to be a real DICOM file; the file is damaged",
            ) from None
        if pieces is None:  # nothing changed: the whole data set is copied as it is
            pieces = [w.mv[pos:end]]
    _check_unplaced_inserts(w)
    _check_kept_sequences(w, edits)

    def uid(elem: int, dataset_elem: int) -> bytes | None:
        """The meta header's SOP Class (0002) or Instance (0003) UID: the one the edits
        give, else the input's meta one, else the data set's own when it is kept. A
        value of the input that is not a UID is never copied (it may be any text)."""
        found = overrides.get(0x00020000 | elem)
        if found is not None:
            return found  # checked where it was given (_ascii_uid)
        if elem in meta_values:
            raw = _uid_bytes(meta_values[elem])
            if _is_uid(raw):
                return raw
        at = w.sop.get(dataset_elem)
        if at is not None and isinstance(edits.get(f"0008{dataset_elem:04X}"), Keep):
            raw = _uid_bytes(data[at[0] : at[0] + at[1]])
            if _is_uid(raw):
                return raw
        return None

    head = _PREAMBLE + _meta_group(uid(0x0002, 0x0016), uid(0x0003, 0x0018), ts)
    if deflated:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = b"".join([packer.compress(piece) for piece in pieces] + [packer.flush()])
        return [head + body]
    return _coalesce(head, pieces)


def _coalesce(head: bytes, pieces: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """``head`` and ``pieces`` as few pieces: small ones joined, large views of the input kept.

    Large pieces (pixel data, mostly) stay views of the input, so nothing copies them
    before they are hashed and written.
    """
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = [head]
    for piece in pieces:
        if len(piece) >= _VIEW_MIN:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(piece)
        else:
            small.append(piece)
    if small:
        out.append(b"".join(small))
    return out


_prepare_c = getattr(_cwalk, "prepare_sets", None)
#: validated Set paths -> (data set prefix, tag, what, (tag, path)); ``what``: 0 an element to
#: set or insert, 1 an item delimiter (refused), 2 a group length or a top-level group 0002
#: element (never written), 3 the top-level SOP Class / Instance UID. Cleared when full.
_PATHS: dict[str, tuple[str, int, int, tuple[int, str]]] = {}
#: encoded str Sets: (tag, vr, value, explicit, byte order) -> element bytes; cleared when full
_ENCODED: dict[tuple[int, str, str, bool, str], bytes] = {}
_CACHE_MAX = 1 << 16


def _known_path(path: object) -> tuple[str, int, int, tuple[int, str]]:
    """Validate a Set path once: see :data:`_PATHS`."""
    if not isinstance(path, str) or not _SET_PATH.fullmatch(path):
        raise UserInputError(
            f"cannot Set {path!r}: a tag path is 8 upper-case hex digits per level, "
            "items as [n], levels joined by '.', e.g. 0040A730[0].0040A123"
        )
    cut = path.rfind(".") + 1
    prefix, tag = path[:cut], int(path[cut:], 16)
    group, elem = tag >> 16, tag & 0xFFFF
    if group == 0xFFFE:
        what = 1
    elif elem == 0 or (group == 0x0002 and not prefix):
        what = 2
    elif not prefix and tag in (0x00080016, 0x00080018):
        what = 3
    else:
        what = 0
    known = (prefix, tag, what, (tag, path))
    if type(path) is str:  # not a str subclass: those are validated every time
        if len(_PATHS) >= _CACHE_MAX:
            _PATHS.clear()
        _PATHS[path] = known
    return known


def _prepare_sets(
    w: _Rewriter, edits: Mapping[str, Edit], overrides: dict[int, bytes], memo: dict[int, Any] | None = None
) -> None:
    """Validate and encode every Set once; note the ones to insert by data set prefix.

    ``memo``: encodings of Sets whose value is not a str, by the identity of the Set
    (see :func:`_rewrite_pieces`).
    """
    sets = w.sets
    inserts = w.inserts
    explicit = w.explicit
    enc = w.enc
    e = enc.e
    paths_get = _PATHS.get
    encoded_get = _ENCODED.get
    from_dataset: dict[int, bytes] = {}  # meta UIDs implied by a Set of 00080016 / 00080018
    todo: Any = edits.items()
    if _prepare_c is not None and type(edits) is dict:
        # the C accelerator does the top-level Sets whose path and bytes are known (none of
        # those can fail) and leaves the rest, in order, to the loop below
        todo = _prepare_c(edits, Keep, Set, _PATHS, _ENCODED, explicit, e, sets, inserts)
    for path, edit in todo:
        kind = type(edit)
        if kind is Keep:
            continue
        if kind is not Set:
            raise UserInputError(
                f"the edit for {path!r} is a {type(edit).__name__}: use Keep() or Set(vr, value)"
            )
        assert isinstance(edit, Set)
        known = paths_get(path) if type(path) is str else None
        if known is None:
            known = _known_path(path)
        prefix, tag, what, item = known
        if what:
            if what == 1:
                raise UserInputError(
                    f"cannot Set {path}: (FFFE,xxxx) are item delimiters, not elements"
                )
            if what == 2:
                if tag in _META_OVERRIDES:
                    overrides[tag] = _ascii_uid(edit.value, f"the Set of {path}")
                continue  # file meta is regenerated, group lengths are always removed
        value = edit.value
        if type(value) is str:
            # files of a batch share many new values (dummies, method text): encode each once
            cache_key = (tag, edit.vr, value, explicit, e)
            encoded = encoded_get(cache_key)
            if encoded is None:
                encoded = _encode_element(path, tag, edit.vr, value, explicit, enc)
                if len(_ENCODED) >= _CACHE_MAX:
                    _ENCODED.clear()
                _ENCODED[cache_key] = encoded
            sets[path] = encoded
        elif memo is not None:
            found = memo.get(id(edit))
            if found is None or found[0] is not edit or found[1] != (path, explicit, e):
                found = (edit, (path, explicit, e), _encode_element(path, tag, edit.vr, value, explicit, enc))
                memo[id(edit)] = found
            sets[path] = found[2]
        else:
            sets[path] = _encode_element(path, tag, edit.vr, value, explicit, enc)
        pending = inserts.get(prefix)
        if pending is None:
            inserts[prefix] = [item]
        else:
            pending.append(item)
        if what == 3 and isinstance(value, str):
            # a replaced SOP Class / Instance UID must not survive in the meta header
            meta_key = 0x00020002 if tag == 0x00080016 else 0x00020003
            from_dataset[meta_key] = _ascii_uid(value, f"the Set of {path}")
    for key, value in from_dataset.items():
        overrides.setdefault(key, value)
    for pending in inserts.values():
        pending.sort(reverse=True)


def _check_kept_sequences(w: _Rewriter, edits: Mapping[str, Edit]) -> None:
    """Every element kept as a sequence (:data:`KEEP_SEQUENCE`) was walked as one (fail closed)."""
    kept = w.kept_seqs
    for path, edit in edits.items():
        if edit is KEEP_SEQUENCE and path not in kept and _was_reached(path, kept):
            raise ParseError(
                "corrupt",
                f"element {path} was planned as a sequence but its bytes here do not read as one "
                "(a private block whose creator is written unusually, or a damaged file): not "
                "written, so that nothing inside it is copied unchecked",
            )


def _was_reached(path: str, kept: set[str]) -> bool:
    """Whether the rewrite walked the item ``path`` is in (a top-level path: always)."""
    cut = path.rfind("[")
    return cut < 0 or path[:cut] in kept


def _check_unplaced_inserts(w: _Rewriter) -> None:
    """A Set inside a kept sequence whose item does not exist cannot be placed."""
    for prefix, pending in w.inserts.items():
        container = prefix[: prefix.rfind("[")]
        if container in w.kept_seqs and pending:
            raise UserInputError(
                f"cannot insert {pending[-1][1]}: sequence {container} has no such item "
                "(insertion adds elements to existing items only)"
            )
