"""DICOM tags: one canonical form (a 32-bit int) and the data dictionary.

Loose input is accepted at the edge and converted once::

    >>> parse_tag("PatientName") == parse_tag("(0010,0010)") == parse_tag(0x00100010)
    True
    >>> format_tag(0x00100010)
    '(0010,0010)'

The dictionary is pydicom's generated data dictionary (itself generated from
PS3.6); dicomframe never re-types it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary  # the data dictionary's tables

from .errors import UserInputError

#: what a UID is: digits and dots (PS3.5 9.1), for kept UI values, output names and the
#: file meta alike
UID_SYNTAX = r"[0-9]+(\.[0-9]+)*"
#: at most this many characters (PS3.5 9.1)
UID_MAX = 64

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "dictionary_frame",
    "format_tag",
    "is_private",
    "keyword_for",
    "parse_tag",
    "tag_hex",
    "vm_for",
    "vr_for",
]

TagLike = int | str

#: tag -> keyword for every public tag in the dictionary (repeaters excluded)
KEYWORDS: dict[int, str] = {tag: entry[4] for tag, entry in DicomDictionary.items() if entry[4]}
#: keyword -> tag
TAGS_BY_KEYWORD: dict[str, int] = {kw: tag for tag, kw in KEYWORDS.items()}
#: tag -> VR as written in PS3.6 (may be ambiguous, e.g. "US or SS")
VRS: dict[int, str] = {tag: entry[0] for tag, entry in DicomDictionary.items()}
#: tag -> VM as written in PS3.6 ("1", "1-n", "2", ...)
VMS: dict[int, str] = {tag: entry[1] for tag, entry in DicomDictionary.items()}


def _compile_repeaters() -> list[tuple[int, int, tuple[str, str, str, str, str]]]:
    """Turn masks like ``60xx3000`` into (and-mask, value) pairs."""
    out = []
    for mask, entry in RepeatersDictionary.items():
        and_mask = int("".join("0" if c == "x" else "F" for c in mask), 16)
        value = int(mask.replace("x", "0"), 16)
        out.append((and_mask, value, entry))
    return out


_REPEATERS = _compile_repeaters()

_HEX8 = re.compile(r"^[0-9A-Fa-f]{8}$")
_PAIR = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?$")


@lru_cache(maxsize=4096)
def _repeater_entry(tag: int) -> tuple[str, str, str, str, str] | None:
    for and_mask, value, entry in _REPEATERS:
        if tag & and_mask == value:
            return entry
    return None


def parse_tag(tag: TagLike) -> int:
    """Convert a tag given in any usual spelling to its 32-bit integer.

    Parameters
    ----------
    tag
        ``0x00100010``, ``"(0010,0010)"``, ``"0010,0010"``, ``"00100010"``
        or a keyword such as ``"PatientName"``.

    Examples
    --------
    >>> hex(parse_tag("StudyInstanceUID"))
    '0x20000d'
    """
    if isinstance(tag, bool):
        raise UserInputError(f"not a DICOM tag: {tag!r}")
    if isinstance(tag, int):
        if 0 <= tag <= 0xFFFFFFFF:
            return tag
        raise UserInputError(f"tag {tag:#x} is out of range: a tag is 32 bits (gggg,eeee)")
    text = tag.strip()
    if text in TAGS_BY_KEYWORD:
        return TAGS_BY_KEYWORD[text]
    match = _PAIR.match(text)
    if match:
        return int(match.group(1) + match.group(2), 16)
    if _HEX8.match(text):
        return int(text, 16)
    if text.lower().startswith("0x"):
        try:
            return parse_tag(int(text, 16))
        except ValueError:
            pass
    raise UserInputError(
        f"not a DICOM tag or keyword: {text!r}; write it as a keyword (PatientName), "
        "as (gggg,eeee) or as 8 hex digits"
    )


def format_tag(tag: int) -> str:
    """``0x00100010`` → ``'(0010,0010)'``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def tag_hex(tag: int) -> str:
    """``0x00100010`` → ``'00100010'`` (the form used in ``tag_path``)."""
    return f"{tag:08X}"


def is_private(tag: int) -> bool:
    """True for tags in an odd group (private data elements and creators)."""
    return bool((tag >> 16) & 1)


def _entry(tag: int) -> tuple[str, str, str, str, str] | None:
    entry = DicomDictionary.get(tag)
    if entry is None and not is_private(tag):
        entry = _repeater_entry(tag)
    return entry


def message_tag(tag: int) -> str:
    """A tag for a message about a damaged file: ``(0010,0010)`` for one the data dictionary
    knows, else ``(a private tag)`` or ``(an unknown tag)``. Where a file is damaged, the
    four bytes read as a tag may be text of a value (``(4D53,5449)`` is ``SMIT``): they
    are never printed."""
    if keyword_for(tag) is not None:
        return format_tag(tag)
    return "(a private tag)" if is_private(tag) else "(an unknown tag)"


def keyword_for(tag: int) -> str | None:
    """Keyword of a public tag (repeating groups such as 60xx included), else ``None``."""
    kw = KEYWORDS.get(tag)
    if kw is not None:
        return kw
    entry = _entry(tag)
    return entry[4] if entry and entry[4] else None


def vr_for(tag: int) -> str | None:
    """Dictionary VR of a public tag (``"US or SS"`` style ambiguity kept), else ``None``."""
    if (tag & 0xFFFF) == 0 and not is_private(tag):
        return "UL"  # group length
    entry = _entry(tag)
    return entry[0] if entry else None


def vm_for(tag: int) -> str | None:
    """Dictionary VM of a public tag, else ``None``."""
    entry = _entry(tag)
    return entry[1] if entry else None


@lru_cache(maxsize=1)
def dictionary_frame() -> pl.DataFrame:
    """The public data dictionary as a DataFrame (tag, keyword, name, vr, vm, retired).

    Examples
    --------
    >>> d = dictionary_frame()
    >>> d.filter(d["keyword"] == "PatientName")["vr"].item()
    'PN'
    """
    import polars as pl

    rows = [
        (tag, entry[4], entry[2], entry[0], entry[1], entry[3] == "Retired")
        for tag, entry in sorted(DicomDictionary.items())
        if entry[4]
    ]
    return pl.DataFrame(
        rows,
        schema={
            "tag": pl.UInt32,
            "keyword": pl.String,
            "name": pl.String,
            "vr": pl.String,
            "vm": pl.String,
            "retired": pl.Boolean,
        },
        orient="row",
    )
