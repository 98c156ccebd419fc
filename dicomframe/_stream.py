"""Large local inputs without holding them whole: the writer's memory stays flat.

A multi-frame or whole-slide image can be gigabytes, nearly all of it the Pixel Data
value, which de-identification passes through byte for byte. :func:`load` reads an
input at least :data:`STREAM_BYTES` long into an anonymous private mapping *except*
that value (the "hole": untouched pages of such a mapping take no memory), so the
rewriter walks the header as usual; :func:`fill_hole` then replaces the part of the
rewritten pieces that covers the hole by a :class:`FileRange`, which the writer
hashes and writes from the input file, :data:`CHUNK` bytes at a time.

The rewriter never looks inside a native Pixel Data value. For encapsulated
(compressed) pixel data it walks the fragment items to find their end: the items of
the hole are checked here first (each an item tag with a length inside the file, up
to the sequence delimiter), and the hole holds stand-in items of the same total
length, so the rewriter finds the same end without reading the fragments. Anything
unusual (no Pixel Data, a damaged item, a deflated or big-endian data set) is read
whole, as any input, and reported by the rewriter as usual.

The bytes of a :class:`FileRange` are read twice (hashed before the output is
written, then written); both reads are hashed, and an input whose pixel data changed
between them is a failed input ("the input changed while it was being written"),
never an output that disagrees with its recorded sha256. Pixel clean
(:func:`dicomframe.pixelclean.clean_streamed`) gives a native value's range a ``mask``
that blacks out its boxes in each chunk, and the bytes text detection read as
``expect``: bytes that changed since detection looked at them fail the input the same
way.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._parse import FileInfo, parse_file
from .errors import ParseError

__all__ = ["CHUNK", "STREAM_BYTES", "FileRange", "Input", "RemoteInput", "Source", "fill_hole", "load", "load_remote"]

#: local inputs at least this long (bytes) are read without their Pixel Data value
STREAM_BYTES = 32 << 20
#: bytes read from a :class:`FileRange` at a time
CHUNK = 4 << 20
#: a Pixel Data value shorter than this is read with the rest
_HOLE_MIN = 1 << 20
_ITEM = 0xFFFEE000
_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
#: the longest stand-in item (an item's length is 32 bits, and even)
_ITEM_MAX = 0xFFFFFFF0
_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_ANONYMOUS = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")
_THREAD = threading.local()


def _buffer() -> bytearray:
    """This thread's read buffer (one per thread, reused for every range)."""
    buf: bytearray | None = getattr(_THREAD, "buf", None)
    if buf is None or len(buf) != CHUNK:
        buf = _THREAD.buf = bytearray(CHUNK)
    return buf


def _changed() -> ParseError:
    return ParseError(
        "unreadable",
        "the input changed while it was being written (its pixel data differs between two reads): "
        "nothing was written for it; re-run the same command once the file is complete",
    )


def _short(offset: int) -> ParseError:
    return ParseError(
        "truncated",
        f"file ends inside Pixel Data at byte offset {offset}: it was shortened while it was being "
        "written, or is incompletely copied; copy it again from the source, then re-run",
    )


class _Ranges:
    """What reads an input by ranges: its size, ``read`` (a range reader for the walker)
    and ``readinto``; the subclass gives ``_fetch``, a read of at most ``stop - start`` bytes."""

    size: int
    hole: tuple[int, int] | None = None

    def _fetch(self, start: int, stop: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` (shorter only at the end of the input)."""
        stop = min(stop, self.size)
        out = []
        while start < stop:
            got = self._fetch(start, min(stop, start + CHUNK))
            if not got:
                break
            out.append(got)
            start += len(got)
        return b"".join(out)

    def readinto(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the bytes at ``offset``; an input ending first is truncated."""
        while len(view):
            got = self._fetch(offset, offset + min(len(view), CHUNK))
            if not got:
                raise _short(offset)
            view[: len(got)] = got
            view = view[len(got) :]
            offset += len(got)


class Input(_Ranges):
    """A local input opened for position reads (``os.pread``), and its hole once loaded."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, _O_FLAGS)
        try:
            self.size = os.fstat(self.fd).st_size
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _fetch(self, start: int, stop: int) -> bytes:
        return os.pread(self.fd, stop - start, start)

    def readinto(self, view: memoryview, offset: int) -> None:
        while len(view):  # straight into the view: no copy
            got = os.preadv(self.fd, [view], offset)
            if got <= 0:
                raise _short(offset)
            view = view[got:]
            offset += got


class RemoteInput(_Ranges):
    """An input on object storage, read by ranges (``fetch(start, stop)``: a ranged GET, with
    retries): what :class:`Input` is for a local file."""

    def __init__(self, size: int, fetch: Callable[[int, int], bytes]) -> None:
        self.size = size
        self.fd = -1
        self._get = fetch

    def _fetch(self, start: int, stop: int) -> bytes:
        return self._get(start, stop)


Source = _Ranges


class _Window:
    """Small reads of ``src`` (anything with ``read(start, stop)`` and ``size``) served from
    a block of ``block`` bytes read at once."""

    def __init__(self, src: Any, block: int = CHUNK) -> None:
        self.src = src
        self.block = block
        self.start = 0
        self.data = b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.start <= pos and pos + n <= self.start + len(self.data)):
            self.start, self.data = pos, self.src.read(pos, min(pos + max(n, self.block), self.src.size))
        return self.data[pos - self.start : pos - self.start + n]


def _items_end(src: Source, start: int) -> int | None:
    """Where the fragment items from ``start`` end (the sequence delimiter's offset), None
    when an item is damaged or the file ends first (the rewriter then reports it)."""
    pos = start
    window = _Window(src)
    while pos + 8 <= src.size:
        header = window.read(pos, 8)
        if len(header) < 8:
            return None  # shortened meanwhile: read whole, and reported as such
        group, element, length = struct.unpack("<HHI", header)
        tag = (group << 16) | element
        if tag == _DELIMITER:
            return pos
        if tag != _ITEM or length == _UNDEFINED or pos + 8 + length > src.size:
            return None
        pos += 8 + length
    return None


def _hole(src: Source, info: FileInfo) -> tuple[int, int, bool] | None:
    """``(start, stop, encapsulated)`` of the bytes left on disk, or None: read it whole."""
    offset, length = info.pixel_data_offset, info.pixel_data_length
    if offset is None or info.transfer_syntax in (None, "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"):
        return None
    if length is not None:  # native: the value itself
        return (offset, offset + length, False) if length >= _HOLE_MIN else None
    # encapsulated: after the first item (the basic offset table), up to the delimiter
    if offset + 8 > src.size:
        return None
    group, element, first = struct.unpack("<HHI", src.read(offset, offset + 8))
    if (group << 16) | element != _ITEM or first == _UNDEFINED:
        return None
    start = offset + 8 + first
    stop = _items_end(src, start)
    if stop is None or stop - start < _HOLE_MIN:
        return None
    return start, stop, True


def _stand_in(mm: mmap.mmap, start: int, stop: int) -> None:
    """Items of the same total length as the hole's fragments, written into the hole."""
    pos = start
    while pos < stop:
        length = stop - pos - 8
        if length > _ITEM_MAX:
            length = _ITEM_MAX
            if stop - (pos + 8 + length) < 8:
                length -= 8  # what is left must hold an item's header
        mm[pos : pos + 8] = struct.pack("<HHI", 0xFFFE, 0xE000, length)
        pos += 8 + length


def load(path: str, size: int) -> tuple[bytes | mmap.mmap, Input | None]:
    """The input at ``path``, of ``size`` bytes as scanned (0: read it whole): its bytes, or
    (at least :data:`STREAM_BYTES` long, with a Pixel Data value to leave on disk) a mapping
    without that value and the open :class:`Input` to read it from later (the caller
    closes it)."""
    if _ANONYMOUS and size >= STREAM_BYTES:
        src = Input(path)
        try:
            mm = _load_sparse(src)
        except BaseException:
            src.close()
            raise
        if mm is not None:
            return mm, src
        src.close()
    with open(path, "rb", buffering=0) as fh:
        return fh.read(), None


def load_remote(size: int, fetch: Callable[[int, int], bytes]) -> tuple[mmap.mmap, RemoteInput] | None:
    """:func:`load` for an input on object storage of ``size`` bytes as scanned (0: read it
    whole), read by ``fetch``; None when it is to be read whole (too short, or no Pixel
    Data to leave there)."""
    if not _ANONYMOUS or size < STREAM_BYTES:
        return None
    src = RemoteInput(size, fetch)
    mm = _load_sparse(src)
    return None if mm is None else (mm, src)


def _load_sparse(src: Source) -> mmap.mmap | None:
    """``src`` but its hole, in an anonymous private mapping; None: read it whole."""
    try:
        _, info = parse_file(src, attributes=False)
    except ParseError:
        return None  # the rewriter reports it, on the whole file
    found = _hole(src, info)
    if found is None:
        return None
    start, stop, encapsulated = found
    mm = mmap.mmap(-1, src.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with memoryview(mm) as view:
        src.readinto(view[:start], 0)
        src.readinto(view[stop:], stop)
    if encapsulated:
        _stand_in(mm, start, stop)
    src.hole = (start, stop)
    return mm


class FileRange:
    """Bytes ``[start, stop)`` of an :class:`Input`, in an output's pieces: read when hashed
    or written, :data:`CHUNK` bytes at a time. The first full read records the range's
    sha256; every later one must give the same, or :func:`chunks` raises.

    ``mask`` (pixel clean): called as ``mask(offset, view)`` on every chunk read, after it
    is hashed, to change it in place before it is used (``offset`` within the range).
    ``expect``: ``(start, stop, sha256)`` of parts of the range already read for a
    decision (the frames text detection looked at): every full read checks that they
    still hold those bytes, or raises as for a change."""

    __slots__ = ("digest", "expect", "mask", "src", "start", "stop")

    def __init__(self, src: Source, start: int, stop: int) -> None:
        self.src = src
        self.start = start
        self.stop = stop
        self.digest: bytes | None = None
        self.mask: Callable[[int, memoryview], None] | None = None
        self.expect: list[tuple[int, int, bytes]] = []

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"FileRange({self.start}, {self.stop})"

    def chunks(self) -> Iterator[memoryview]:
        """The range, a chunk at a time (each view valid until the next is asked for)."""
        buf = memoryview(_buffer())
        hasher = hashlib.sha256()
        parts = [(start, stop, digest, hashlib.sha256()) for start, stop, digest in self.expect]
        pos = self.start
        while pos < self.stop:
            n = min(self.stop - pos, len(buf))
            view = buf[:n]
            self.src.readinto(view, pos)
            hasher.update(view)
            at = pos - self.start
            for start, stop, _, part in parts:
                if start < at + n and stop > at:
                    part.update(view[max(start - at, 0) : min(stop - at, n)])
            if self.mask is not None:
                self.mask(at, view)
            yield view
            pos += n
        digest = hasher.digest()
        if self.digest is None:
            self.digest = digest
        elif digest != self.digest:
            raise _changed()
        if any(part.digest() != expected for _, _, expected, part in parts):
            raise _changed()

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the range (offsets within it)."""
        data = self.src.read(self.start + start, self.start + min(stop, len(self)))
        if self.mask is None:
            return data
        out = bytearray(data)
        self.mask(start, memoryview(out))
        return bytes(out)


def _address(view: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def fill_hole(pieces: Sequence[Any], mm: object, src: Source) -> list[Any]:
    """``pieces`` (of the rewriter, over ``mm``) with the hole's bytes as a :class:`FileRange`.

    Raises ``RuntimeError`` when a piece holds part of the hole other than as a view of
    ``mm`` (copied: it would hold zeros), or the hole is neither written whole nor left out.
    """
    assert src.hole is not None
    start, stop = src.hole
    base = None
    out: list[Any] = []
    emitted = 0
    for piece in pieces:
        if isinstance(piece, memoryview) and piece.obj is mm and len(piece):
            if base is None:
                with memoryview(mm) as whole:
                    base = _address(whole)
            at = _address(piece) - base
            end = at + len(piece)
            if at < stop and end > start:
                if at > start or end < stop:
                    raise RuntimeError("a piece holds part of the pixel data left on disk")
                if at < start:
                    out.append(piece[: start - at])
                out.append(FileRange(src, start, stop))
                emitted += 1
                if end > stop:
                    out.append(piece[stop - at :])
                continue
        out.append(piece)
    if emitted > 1:
        raise RuntimeError("the pixel data left on disk was written twice")
    if not emitted and sum(len(p) for p in out if not isinstance(p, memoryview)) >= stop - start:
        # a copied piece as long as the hole may hold it (zeros): refuse rather than guess
        raise RuntimeError("the pixel data left on disk was copied")
    return out
