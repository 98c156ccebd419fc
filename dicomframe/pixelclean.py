"""Pixel clean: black out burned-in text, by per-device rules and by detected text.

Two sources of regions, used together:

* **Per-device rules** (the approach RSNA's CTP takes): a :class:`PixelRule`
  matches instances on header attributes (Manufacturer, ManufacturerModelName,
  Rows, Columns, Modality, …) and lists rectangles to black out on every frame.
  Rules live in a profile file::

      [[pixel]]
      name = "Acme Sono 5, 640x480: patient banner"
      match = { Manufacturer = "ACME", ManufacturerModelName = "Sono 5", Rows = 480, Columns = 640 }
      regions = [[0, 0, 640, 48]]        # [left, top, width, height] in pixels

* **Detected text** (``ocr``): tesseract reads each image at risk of burned-in
  text (see :func:`risk_expr`), on its first, middle and last frame
  (:func:`ocr_frames`; the boxes of all three go on every frame); every word that looks like
  drawn text (high contrast, see :func:`dicomframe.ocr.is_text_like`) is blacked
  out, and so is every other text-line-shaped region drawn in the same colour
  as those words (digits and small fonts that tesseract cannot read, but that an
  overlay draws in the same colour as the name above them).

Modes (``deidentify(pixel_clean=...)``, ``--pixel-clean``):

``auto`` (default)
    Rules where one matches; detected text on the other images at risk. When
    OCR is not installed, an image at risk that no rule covers fails (is not
    written), with the reason: fail closed.
``rules``
    Rules only; images at risk that no rule covers are written with their pixels
    unchanged (the audit's ``burned_in_text_risk`` lists them).
``off``
    Pixel data is never touched.

A cleaned image gets BurnedInAnnotation = NO and code 113101 (Clean Pixel Data
Option) in the De-identification Method Code Sequence. Only images with boxes to
black out are decoded (an image where detection finds no text keeps its pixel
bytes, and is marked all the same); they are re-encoded in their own transfer syntax when it is lossless
and an encoder is installed (RLE Lossless always is), else written as Explicit
VR Little Endian (a lossy JPEG is not compressed a second time). Pixel values
and found text never reach logs or messages.

A large image (its Pixel Data value left on disk, see :mod:`dicomframe._stream`) is
never decoded whole: :func:`clean_streamed` blacks the same boxes out in each chunk of a
native value, or in each frame of a lossy compressed one as it is decoded, while the
output is hashed and written, and gives what the whole-image path gives.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from ._quiet import no_warnings
from .errors import DicomframeError, PixelCleanError, ProfileError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import polars as pl
    from pydicom import Dataset

__all__ = [
    "MODES",
    "PixelRule",
    "burned_in_flag",
    "clean_dataset",
    "clean_part10",
    "clean_streamed",
    "ocr_available",
    "ocr_frames",
    "pixel_jobs",
    "risk_expr",
    "text_regions",
]

MODES = ("auto", "rules", "off")
#: modalities whose images often carry burned-in text
RISKY_MODALITIES = ("US", "OT", "XC", "ES")
#: Secondary Capture SOP classes (screenshots, scanned documents, key images)
SECONDARY_CAPTURE = (
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
)
#: pixels added around each blacked-out box
PAD = 2
#: keys a rule may match on: instance columns of the scan
MATCH_KEYS = (
    "Manufacturer",
    "ManufacturerModelName",
    "Modality",
    "Rows",
    "Columns",
    "SoftwareVersions",
    "sop_class_uid",
    "PhotometricInterpretation",
)
CLEAN_PIXEL_CODE = "113101"
#: lossless compressed transfer syntaxes: a cleaned image is compressed again in one of them
LOSSLESS_SYNTAXES = frozenset(
    (
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    )
)


@dataclass(frozen=True)
class PixelRule:
    """Black out ``regions`` on every frame of the instances that ``match``.

    Parameters
    ----------
    name
        Shown in the plan (``pixel_clean`` = ``rule:<name>``) and the manifest.
    match
        ``(attribute, value)`` pairs, all of which must hold (exact match;
        Rows and Columns as numbers). Attributes: :data:`MATCH_KEYS`.
    regions
        ``(left, top, width, height)`` rectangles in pixels; parts outside the
        image are ignored.

    Examples
    --------
    >>> PixelRule("banner", (("Modality", "US"), ("Rows", 480)), ((0, 0, 640, 40),)).regions
    ((0, 0, 640, 40),)
    """

    name: str
    match: tuple[tuple[str, str | int], ...]
    regions: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ProfileError("a pixel rule needs a name")
        if not self.match:
            raise ProfileError(f"pixel rule {self.name!r}: match must name at least one attribute")
        for key, value in self.match:
            if key not in MATCH_KEYS:
                raise ProfileError(
                    f"pixel rule {self.name!r}: cannot match on {key!r}; use {', '.join(MATCH_KEYS)}"
                )
            if key in ("Rows", "Columns") and not isinstance(value, int):
                raise ProfileError(f"pixel rule {self.name!r}: {key} must be a number")
        if not self.regions:
            raise ProfileError(f"pixel rule {self.name!r}: regions must list at least one [left, top, width, height]")
        for region in self.regions:
            if len(region) != 4 or not all(isinstance(v, int) and v >= 0 for v in region) or not region[2] or not region[3]:
                raise ProfileError(
                    f"pixel rule {self.name!r}: each region is [left, top, width, height], "
                    "whole numbers >= 0 with width and height > 0"
                )

    @classmethod
    def from_mapping(cls, entry: Any) -> PixelRule:
        """A rule from a ``[[pixel]]`` table of a profile file."""
        if not isinstance(entry, dict):
            raise ProfileError("write each pixel rule as a [[pixel]] table")
        unknown = sorted(set(entry) - {"name", "match", "regions"})
        if unknown:
            raise ProfileError(f"unknown key {unknown[0]!r}; a [[pixel]] rule has name, match and regions")
        match = entry.get("match", {})
        if not isinstance(match, dict):
            raise ProfileError('match must be a table, e.g. match = { Manufacturer = "ACME", Rows = 480 }')
        regions = entry.get("regions", [])
        if not isinstance(regions, list) or not all(isinstance(r, list) for r in regions):
            raise ProfileError("regions must be a list of [left, top, width, height]")
        return cls(
            name=str(entry.get("name", "")),
            match=tuple(sorted(match.items())),
            regions=tuple(tuple(r) for r in regions),
        )


# --------------------------------------------------------------------------- which images


def risk_expr(columns: set[str] | list[str]) -> pl.Expr:
    """Instances likely to hold burned-in text, as a polars expression over the instances table.

    BurnedInAnnotation = YES; or, unless it says NO, modality US/OT/XC/ES or a
    Secondary Capture SOP class. Images only (PixelData present).
    """
    import polars as pl

    cols = set(columns)
    flag = burned_in_flag(cols)
    modality = pl.col("Modality").fill_null("") if "Modality" in cols else pl.lit("")
    sop = pl.col("sop_class_uid").fill_null("") if "sop_class_uid" in cols else pl.lit("")
    has_pixels = _has_pixels(cols)
    risky = (flag == "YES") | ((flag != "NO") & (modality.is_in(RISKY_MODALITIES) | sop.is_in(SECONDARY_CAPTURE)))
    return risky & has_pixels


def burned_in_flag(columns: set[str] | list[str]) -> pl.Expr:
    """BurnedInAnnotation as written, trimmed and upper-cased ("" when absent)."""
    import polars as pl

    if "BurnedInAnnotation" not in set(columns):
        return pl.lit("")
    return pl.col("BurnedInAnnotation").fill_null("").str.strip_chars().str.to_uppercase()


def embedded_overlays(elements: pl.DataFrame) -> pl.Series:
    """``file_id`` of the images holding an overlay in their Pixel Data (retired, found in
    legacy images): a top-level overlay group 60xx that describes its bits (Overlay Bits
    Allocated or Overlay Bit Position) but has no Overlay Data (60xx,3000) of its own.
    Its bits, above BitsStored, are what a viewer draws over the image: annotations,
    which Table E.1-1 removes (Overlay Data, X) wherever they are kept."""
    import polars as pl

    element = pl.col("tag") % 65536
    return (
        elements.filter(overlay_element(pl.col("tag_path").str.len_bytes() == 8))
        .group_by("file_id", (pl.col("tag") // 65536).alias("group"))
        .agg(
            described=element.is_in([0x0100, 0x0102]).any(),
            data=(element == 0x3000).any(),
        )
        .filter(pl.col("described") & ~pl.col("data"))
        .get_column("file_id")
        .unique()
        .sort()
    )


def is_overlay_group(group: int) -> bool:
    """An overlay group: even, 6000 to 601E (PS3.5 7.6, repeating groups)."""
    return 0x6000 <= group <= 0x601E and group % 2 == 0


def overlay_element(top_level: pl.Expr) -> pl.Expr:
    """Rows (with a ``tag`` column) of an element of an overlay group (:func:`is_overlay_group`)
    that ``top_level`` says is in the data set itself, not inside a sequence."""
    import polars as pl

    group = pl.col("tag") // 65536
    return (group >= 0x6000) & (group <= 0x601E) & (group % 2 == 0) & top_level


def _overlay_groups(ds: Dataset) -> list[int]:
    """The overlay groups of ``ds`` whose bits lie in its Pixel Data (see :func:`embedded_overlays`)."""
    tags = list(ds.keys())  # (iterating ds itself would decode every element)
    groups = {tag.group for tag in tags if is_overlay_group(tag.group)}
    return sorted(
        g
        for g in groups
        if (g << 16 | 0x3000) not in ds and ((g << 16 | 0x0100) in ds or (g << 16 | 0x0102) in ds)
    )


def _has_pixels(cols: set[str]) -> pl.Expr:
    """Pixel Data present: its offset or its length is known. An encapsulated value has no
    length; a deflated file's value has no offset in the file (it lies in the inflated
    stream), and must not pass for an image without pixels: its burned-in text would be
    left as it is."""
    import polars as pl

    known = [pl.col(c).is_not_null() for c in ("pixel_data_offset", "pixel_data_length") if c in cols]
    if not known:
        return pl.lit(True)
    return known[0] | known[1] if len(known) == 2 else known[0]


def pixel_jobs(
    instances: pl.DataFrame,
    rules: tuple[PixelRule, ...],
    mode: str = "auto",
    overlays: pl.Series | None = None,
    trailing: pl.Series | None = None,
) -> pl.DataFrame:
    """What pixel clean does to each instance: ``file_id``, ``pixel_clean``, ``regions``.

    ``pixel_clean`` is ``rule:<name>`` (the first matching rule), ``ocr``
    (detected text, images at risk without a rule, mode ``auto``), ``overlay`` (the
    ``file_id`` in ``overlays``, images with an overlay in their Pixel Data, modes
    ``auto`` and ``rules``: see :func:`embedded_overlays`), ``trailing`` (the ``file_id`` in
    ``trailing``, native images whose Pixel Data holds bytes after the last frame, modes
    ``auto`` and ``rules``: those bytes are no image and may hide data; they go, the frames
    stay byte for byte) or null (untouched).
    ``regions`` lists the rule's rectangles. A rule or text detection removes an
    embedded overlay too.
    """
    import polars as pl

    schema: dict[str, Any] = {"file_id": pl.Int64, "pixel_clean": pl.String, "regions": pl.List(pl.List(pl.Int32))}
    if mode not in MODES:
        raise ProfileError(f"pixel clean mode must be one of {', '.join(MODES)} (got {mode!r})")
    if mode == "off" or instances.height == 0:
        return pl.DataFrame(schema=schema)
    cols = set(instances.columns)
    has_pixels = _has_pixels(cols)
    job = pl.lit(None, pl.String)
    regions = pl.lit(None, pl.List(pl.List(pl.Int32)))
    for rule in reversed(rules):  # the first matching rule wins: build the chain from the last
        cond = has_pixels
        for key, value in rule.match:
            if key not in cols:
                cond = pl.lit(False)
                break
            column = pl.col(key)
            if key in ("Rows", "Columns"):
                cond = cond & (column.cast(pl.Int64, strict=False) == value)
            else:
                cond = cond & (column.cast(pl.String).str.strip_chars() == str(value).strip())
        job = pl.when(cond).then(pl.lit(f"rule:{rule.name}")).otherwise(job)
        regions = pl.when(cond).then(pl.lit([list(r) for r in rule.regions], pl.List(pl.List(pl.Int32)))).otherwise(regions)
    if mode == "auto":
        job = pl.when(job.is_null() & risk_expr(cols)).then(pl.lit("ocr")).otherwise(job)
    if overlays is not None and overlays.len():
        embedded = pl.col("file_id").cast(pl.Int64).is_in(overlays.cast(pl.Int64).implode())
        job = pl.when(job.is_null() & embedded).then(pl.lit("overlay")).otherwise(job)
    if trailing is not None and trailing.len():
        after = pl.col("file_id").cast(pl.Int64).is_in(trailing.cast(pl.Int64).implode())
        job = pl.when(job.is_null() & after).then(pl.lit("trailing")).otherwise(job)
    out = instances.select(pl.col("file_id").cast(pl.Int64), job.alias("pixel_clean"), regions.alias("regions"))
    return out.filter(pl.col("pixel_clean").is_not_null())


# --------------------------------------------------------------------------- finding text


def _runs(flags: Any) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in a 1-D boolean array."""
    import numpy as np

    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _same_colour_lines(image: np.ndarray, words: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Text-line-shaped regions drawn in the colour of the confirmed words, in the lines next to them.

    An overlay block (name, then ID, then date, one line under the other) is
    drawn in one colour; tesseract may read only some of its lines. Lines of
    the same colour within two line heights of a confirmed word are taken too.
    """
    import numpy as np

    if not words:
        return []
    height = int(np.median([h for _, _, _, h in words]))
    colours = []
    for left, top, width, h in words:
        box = image[top : top + h, left : left + width].reshape(-1, image.shape[2]) if image.ndim == 3 else image[top : top + h, left : left + width].reshape(-1, 1)
        if box.size == 0:
            continue
        median = np.median(box, axis=0)
        dist = np.abs(box.astype(np.int16) - median).max(axis=1)
        ink = box[dist >= 0.8 * dist.max()] if dist.max() > 0 else box[:0]
        if len(ink):
            colours.append(np.median(ink, axis=0))
    if not colours:
        return []
    pixels = image.reshape(image.shape[0], image.shape[1], -1).astype(np.int16)
    mask = np.zeros(image.shape[:2], dtype=bool)
    for colour in colours:
        mask |= np.abs(pixels - np.asarray(colour, dtype=np.int16)).max(axis=2) <= 8
    # strokes, not speckle: a pixel of the colour with at least two neighbours of it
    m = np.pad(mask, 1).astype(np.int8)
    neighbours = sum(
        m[1 + dy : m.shape[0] - 1 + dy, 1 + dx : m.shape[1] - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
    )
    mask &= neighbours >= 2
    gap = max(2, height // 2)
    joined = mask.copy()
    for shift in range(1, gap + 1):  # letters of one line join across the gaps between them
        joined[:, shift:] |= mask[:, :-shift]
    found = []
    for top, bottom in _runs(joined.any(axis=1)):
        for left, right in _runs(joined[top:bottom].any(axis=0)):
            rows = _runs(mask[top:bottom, left:right].any(axis=1))
            if not rows:
                continue
            y0, y1 = top + rows[0][0], top + rows[-1][1]
            h, w = y1 - y0, right - left
            density = float(mask[y0:y1, left:right].mean()) if h and w else 0.0
            near = any(y0 <= t + wh + 2 * height and y1 >= t - 2 * height for _, t, _, wh in words)
            if near and 0.5 * height <= h <= 2.5 * height and w >= 0.8 * height and density >= 0.12:
                found.append((left, y0, w, h))
    return found


def text_regions(image: np.ndarray, words: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Boxes to black out on a frame: the confirmed ``words`` and same-colour text lines."""
    return list(dict.fromkeys([*words, *_same_colour_lines(image, words)]))


def ocr_frames(n_frames: int) -> list[int]:
    """The frames text detection reads (0-based): the first, middle and last of a
    multi-frame image. Their boxes, together, are blacked out on every frame: a cine
    loop's banner that changes or appears after the first frame is covered too."""
    return sorted({0, n_frames // 2, max(0, n_frames - 1)})


def _ocr_words(ds: Dataset, frame: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    from .ocr import _ocr_image, _pytesseract, render_frame

    image = render_frame(ds, frame)
    return [(l, t, w, h) for l, t, w, h, _text, _conf in _ocr_image(_pytesseract(), image)], image


# --------------------------------------------------------------------------- cleaning


def _encoders_for(ts: Any) -> bool:
    try:
        from pydicom.pixels.encoders.base import get_encoder

        return bool(get_encoder(ts).is_available)
    except Exception:  # noqa: BLE001 - no encoder for this syntax
        return False


def clean_dataset(
    ds: Dataset,
    regions: list[tuple[int, int, int, int]] | None = None,
    *,
    ocr: bool = False,
    mark: bool = True,
) -> int:
    """Black out ``regions`` (and, with ``ocr``, detected text) on every frame of ``ds``, in place.

    Bytes of a native Pixel Data value after its last frame go (they are no image and may
    hide data). Marks BurnedInAnnotation = NO and code 113101 in the method code sequence
    (not with ``mark=False``: only those bytes were to go, and no one looked for text),
    re-encodes as the module docstring says, and returns the number of boxes
    blacked out per frame. Raises :class:`PixelCleanError` when the pixels
    cannot be decoded or re-encoded.
    """
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    ts = ds.file_meta.TransferSyntaxUID
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise PixelCleanError(
                "float pixel data (a parametric map) is not cleaned: if a device rule matched it, "
                "narrow the rule's match (e.g. by Modality); else write it with --pixel-clean rules"
            )
        raise PixelCleanError("no Pixel Data to clean")
    boxes = list(regions or [])
    if ocr:
        for frame in ocr_frames(int(ds.get("NumberOfFrames", 1) or 1)):
            try:
                words, image = _ocr_words(ds, frame)
            except DicomframeError as exc:
                raise PixelCleanError(f"text detection failed: {exc}") from None
            boxes += [b for b in text_regions(image, words) if b not in boxes]
    overlays = _overlay_groups(ds)
    _drop_after_last_frame(ds)
    if not boxes and not overlays:  # looked at, nothing to black out: the frames stay as they are, byte for byte
        if mark:
            _mark_cleaned(ds)
        return 0
    try:
        with no_warnings():
            if ts.is_compressed:
                ds.decompress(as_rgb=True, generate_instance_uid=False)
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - a decoder is missing or the data is damaged
        from .ocr import decoder_hint

        raise PixelCleanError(
            f"pixel data cannot be decoded for cleaning ({type(exc).__name__}; transfer syntax {ts}); "
            f"{decoder_hint(ts)}"
        ) from None
    # an overlay in the pixel data: pixel_array gives the BitsStored bits only, so the image
    # written from it holds no overlay bits; and the overlay group that described them goes
    tags = list(ds.keys())
    for tag in [tag for tag in tags if tag.group in overlays]:
        del ds[tag]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    arr = np.array(arr, copy=True)
    if frames == 1:
        arr = arr[np.newaxis]
    if samples == 1 and arr.ndim == 4:
        arr = arr[..., 0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    rows, cols = arr.shape[1], arr.shape[2]
    black = _black(ds, arr)
    for x0, y0, x1, y1 in _padded(boxes, rows, cols):
        arr[:, y0:y1, x0:x1, ...] = black
    out = arr if frames > 1 else arr[0]
    if samples > 1 and photometric.startswith("YBR"):
        ds.PhotometricInterpretation = "RGB"  # pixel_array gave RGB
    if samples > 1:
        ds.PlanarConfiguration = 0
    lossless_source = ts in LOSSLESS_SYNTAXES
    try:
        if lossless_source and _encoders_for(ts):
            ds.compress(ts, out, generate_instance_uid=False)
        elif lossless_source and _encoders_for(RLELossless) and int(ds.BitsAllocated) <= 16:
            ds.compress(RLELossless, out, generate_instance_uid=False)
        else:
            ds.PixelData = _native_bytes(out, ds, ts)
            ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
            if ts.is_compressed:  # decompress() has set Explicit VR Little Endian already
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    except Exception as exc:  # noqa: BLE001
        raise PixelCleanError(f"cleaned pixel data cannot be re-encoded ({type(exc).__name__})") from None
    if ts.is_compressed and not lossless_source:
        ds.LossyImageCompression = "01"  # it was lossy once; writing it uncompressed does not undo that
    _mark_cleaned(ds)
    return len(boxes)


def _drop_after_last_frame(ds: Dataset) -> None:
    """Cut a native Pixel Data value of ``ds`` after its last frame (and its pad to even)."""
    from .rewrite import native_pixel_bytes

    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        expected = native_pixel_bytes(
            int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1),
            int(ds.get("NumberOfFrames", 1) or 1), int(ds.BitsAllocated), str(ds.get("PhotometricInterpretation", "")),
        )  # fmt: skip
    except (AttributeError, TypeError, ValueError):
        return
    data = ds.PixelData
    if len(data) > expected:
        ds.PixelData = data[:expected]


def _black(ds: Dataset, arr: np.ndarray | None) -> int:
    """The value a box is filled with: the darkest the image can store (the brightest for
    MONOCHROME1); for a palette, its darkest entry."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    if photometric == "MONOCHROME1":
        return high
    return _darkest_index(ds, arr) if photometric == "PALETTE COLOR" and arr is not None else low


def _padded(boxes: list[tuple[int, int, int, int]], rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` of each box, :data:`PAD` pixels wider on every side, inside the image."""
    out = []
    for left, top, width, height in boxes:
        x0, y0 = max(0, left - PAD), max(0, top - PAD)
        x1, y1 = min(cols, left + width + PAD), min(rows, top + height + PAD)
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
    return out


def _darkest_index(ds: Dataset, arr: np.ndarray) -> int:
    """The palette index whose colour is darkest (its lowest R+G+B); the image's lowest
    index when the palette cannot be read."""
    import numpy as np

    try:
        from pydicom.pixels.processing import apply_color_lut

        entries, first, _bits = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
        entries = entries or 65536  # 0 means 2**16 entries
        index = np.arange(first, first + entries, dtype=np.int64)
        index = index[(index >= 0) & (index <= np.iinfo(arr.dtype).max)].astype(arr.dtype)
        with no_warnings():
            colours = np.asarray(apply_color_lut(index, ds), dtype=np.int64)
        return int(index[int(colours.reshape(len(index), -1).sum(axis=1).argmin())])
    except Exception:  # noqa: BLE001 - a missing or damaged palette: the lowest index used
        return int(arr.min())


def _mark_cleaned(ds: Dataset) -> None:
    """BurnedInAnnotation NO, and 113101 (Clean Pixel Data) in the method code sequence."""
    from pydicom.dataset import Dataset as _Dataset

    ds.BurnedInAnnotation = "NO"
    codes = ds.get("DeidentificationMethodCodeSequence")
    if codes is not None and not any(str(item.get("CodeValue", "")) == CLEAN_PIXEL_CODE for item in codes):
        item = _Dataset()
        item.CodeValue = CLEAN_PIXEL_CODE
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = _clean_pixel_meaning()
        codes.append(item)
    method = str(ds.get("DeidentificationMethod", "") or "")
    note = "; pixels cleaned"
    if method and note not in method and len(method) + len(note) <= 64:  # LO: the code sequence says it anyway
        ds.DeidentificationMethod = method + note


def _native_bytes(arr: np.ndarray, ds: Dataset, ts: Any) -> bytes:
    """Pixel values as the native (uncompressed) PixelData of ``ds``'s layout."""
    import numpy as np
    from pydicom.pixels.utils import pack_bits
    from pydicom.uid import ExplicitVRBigEndian

    bits = int(ds.BitsAllocated)
    if bits == 1:
        return pack_bits(arr)
    dtype = np.dtype(f"{'i' if int(ds.get('PixelRepresentation', 0)) else 'u'}{bits // 8}")
    order: Literal[">", "<"] = ">" if ts == ExplicitVRBigEndian else "<"
    data = np.ascontiguousarray(arr).astype(dtype.newbyteorder(order)).tobytes()
    return data + b"\0" if len(data) % 2 else data


@cache
def _clean_pixel_meaning() -> str:
    import polars as pl

    from .profiles import _CID7050, _read_standard

    row = _read_standard(_CID7050).filter(pl.col("code_value").cast(pl.String) == CLEAN_PIXEL_CODE)
    return str(row["code_meaning"].item())


def clean_part10(
    data: bytes, regions: list[tuple[int, int, int, int]] | None = None, *, ocr: bool = False, mark: bool = True
) -> bytes:
    """Clean the pixels of a Part 10 file held in memory (see :func:`clean_dataset`)."""
    import pydicom

    try:
        with no_warnings():
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise PixelCleanError(f"not readable for cleaning ({type(exc).__name__})") from None
    clean_dataset(ds, regions, ocr=ocr, mark=mark)
    return _part10(ds)


def _part10(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file, in its transfer syntax. Elements still raw are decoded
    first: a data set written in implicit VR under a syntax that says explicit (a JPEG
    one, say) is read with its VRs unknown, and pydicom cannot write those explicit."""
    with no_warnings():
        for _ in ds.iterall():  # each raw element becomes a data element, its VR from the dictionary
            pass
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


#: transfer syntaxes whose Pixel Data value is the frames as stored, little endian
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
_PIXEL_TAG = b"\xe0\x7f\x10\x00"


def clean_streamed(pieces: list[Any], regions: list[tuple[int, int, int, int]] | None = None, *, ocr: bool = False) -> list[Any] | None:
    """:func:`clean_part10` for an output whose Pixel Data value is left on disk (a
    :class:`~dicomframe._stream.FileRange` among ``pieces``): the frames are never held
    together, and the output is what :func:`clean_part10` gives.

    Text detection reads its frames one at a time (what it read must be what is
    written). A native image has its boxes blacked out in each chunk as it is hashed and
    written (its layout, planar or not, kept). A lossy compressed one is decoded a frame
    at a time as it is hashed, and again as it is written, each frame blacked out and
    written native (it is not compressed a second time); one where nothing is to be
    blacked out keeps its fragments. Returns the new pieces, or None when this input is
    to be cleaned whole (big endian, 1-bit or float pixels, a colour model other than
    monochrome, RGB or palette, lossless compression with boxes to black out, a frame
    that does not decode, or anything unexpected).
    """
    from ._stream import FileRange

    ranges = [i for i, piece in enumerate(pieces) if isinstance(piece, FileRange)]
    if len(ranges) != 1:
        return None
    at = ranges[0]
    head = b"".join(bytes(piece) for piece in pieces[:at])
    try:
        ds = _header(head)
    except Exception:  # noqa: BLE001 - the whole-file path reads it, and says why not
        return None
    if _overlay_groups(ds):
        return None  # its bits are taken out of every pixel: whole
    if str(ds.file_meta.get("TransferSyntaxUID", "")) in _NATIVE:
        return _clean_native(pieces, at, head, ds, list(regions or []), ocr)
    return _clean_encapsulated(pieces, at, head, ds, list(regions or []), ocr)


def _clean_native(pieces: list[Any], at: int, head: bytes, ds: Dataset, boxes: list[Any], ocr: bool) -> list[Any] | None:
    value = pieces[at]
    geometry = _native_geometry(ds, head, len(value))
    if geometry is None:
        return None
    element, frames, frame_bytes = geometry
    seen: list[tuple[int, int, bytes]] = []

    def frame_of(frame: int) -> Dataset:
        start, stop = frame * frame_bytes, (frame + 1) * frame_bytes
        raw = value.read(start, stop)
        seen.append((start, stop, hashlib.sha256(raw).digest()))
        return _one_frame(head, raw)

    boxes += _detected(frames, frame_of, boxes) if ocr else []
    if boxes:
        first = None
        if str(ds.PhotometricInterpretation).upper() == "PALETTE COLOR":
            with no_warnings():  # the palette's darkest entry is sought among the indices' type
                first = frame_of(0).pixel_array
        value.mask = _BoxMask(ds, boxes, frames, frame_bytes, _black(ds, first))
    value.expect = seen  # the frames looked at are the frames written
    return [_marked_header(ds), element, value, *pieces[at + 1 :]]


def _detected(frames: int, frame_of: Callable[[int], Dataset], boxes: list[Any]) -> list[Any]:
    """The boxes text detection finds on the frames it reads (:func:`ocr_frames`), each
    given as a one-frame data set by ``frame_of``, that ``boxes`` does not hold yet."""
    found: list[Any] = []
    for frame in ocr_frames(frames):
        try:
            words, image = _ocr_words(frame_of(frame), 0)
        except DicomframeError as exc:
            raise PixelCleanError(f"text detection failed: {exc}") from None
        found += [b for b in text_regions(image, words) if b not in boxes and b not in found]
    return found


def _marked_header(ds: Dataset) -> bytes:
    """``ds`` (no Pixel Data) marked as cleaned, as a Part 10 file."""
    _mark_cleaned(ds)
    return _part10(ds)


_DELIMITER_ITEM = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
#: fragments are read at least this many bytes at a time (a frame's item header and its data, mostly)
_FRAGMENT_BLOCK = 256 << 10


def _clean_encapsulated(pieces: list[Any], at: int, head: bytes, ds: Dataset, boxes: list[Any], ocr: bool) -> list[Any] | None:
    from pydicom.encaps import encapsulate, get_frame

    value = pieces[at]  # the fragments after the offset table, up to the delimiter
    split = _encapsulated_start(head)
    rest = b"".join(bytes(piece) for piece in pieces[at + 1 :])
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if (
        split is None
        or not rest.startswith(_DELIMITER_ITEM)
        or photometric == "PALETTE COLOR"
        or "ExtendedOffsetTable" in ds  # its frames are found by the table: whole
    ):
        return None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return None
    table = head[split + 12 :]  # the first item: the basic offset table
    reads: list[tuple[int, int, bytes]] = []
    seen: dict[int, bytes] = {}

    def frame_of(frame: int) -> Dataset:
        data = get_frame(_Encapsulated(table, value, reads), frame, number_of_frames=frames)
        seen[frame] = hashlib.sha256(data).digest()
        return _one_frame(head, encapsulate([data]))

    try:
        boxes += _detected(frames, frame_of, boxes) if ocr else []
    except PixelCleanError:
        return None  # the whole-file path decodes it, and says why not
    value.expect = reads  # the fragments looked at are the fragments written
    if not boxes:  # nothing to black out: the fragments stay as they are
        return [_marked_header(ds), head[split:], value, *pieces[at + 1 :]]
    if ds.file_meta.TransferSyntaxUID in LOSSLESS_SYNTAXES:
        return None  # compressed again in its syntax: whole
    try:
        frames_out = _decoded_frames(head, table, value, frames, boxes, seen, "NumberOfFrames" in ds)
    except Exception:  # noqa: BLE001 - the whole-file path decodes it, and says why not
        return None
    out = frames_out.header
    out.LossyImageCompression = "01"  # it was lossy once; writing it uncompressed does not undo that
    vr = b"OW" if int(out.BitsAllocated) > 8 else b"OB"
    element = _PIXEL_TAG + vr + b"\0\0" + len(frames_out).to_bytes(4, "little")
    return [_marked_header(out), element, frames_out, *_tail(rest)]


def _tail(rest: bytes) -> list[bytes]:
    """What follows the Pixel Data value's delimiter."""
    return [rest[len(_DELIMITER_ITEM) :]] if len(rest) > len(_DELIMITER_ITEM) else []


def _encapsulated_start(head: bytes) -> int | None:
    """Where in ``head`` the encapsulated Pixel Data element starts: ``head`` ends with its
    header and its first item (the basic offset table). None: not so."""
    pos = len(head)
    while (pos := head.rfind(_PIXEL_TAG, 0, pos)) >= 0:
        element, item = head[pos : pos + 12], head[pos + 12 : pos + 20]
        if (
            element[4:] in (b"OB\0\0\xff\xff\xff\xff", b"OW\0\0\xff\xff\xff\xff")
            and item[:4] == b"\xfe\xff\x00\xe0"
            and pos + 20 + int.from_bytes(item[4:8], "little") == len(head)
        ):
            return pos
    return None


def _one_frame(head: bytes, value: bytes) -> Dataset:
    """The header of ``head`` with one frame as its pixel data: ``value`` is that frame
    (native), or that frame's item in an encapsulated value (compressed)."""
    one = _header(head)
    one.PixelData = value
    if one.file_meta.TransferSyntaxUID not in _NATIVE:
        one["PixelData"].VR = "OB"
        one["PixelData"].is_undefined_length = True
    if "NumberOfFrames" in one:
        del one.NumberOfFrames
    return one


class _NotedReads:
    """Reads of a :class:`~dicomframe._stream.FileRange`'s bytes from its input (offsets
    within it, no mask), each noted in ``reads`` as ``(start, stop, sha256)``."""

    def __init__(self, value: Any, reads: list[tuple[int, int, bytes]]) -> None:
        self.value, self.reads, self.size = value, reads, len(value)

    def read(self, start: int, stop: int) -> bytes:
        data = self.value.src.read(self.value.start + start, self.value.start + stop)
        self.reads.append((start, start + len(data), hashlib.sha256(data).digest()))
        return bytes(data)


class _Encapsulated:
    """A readable buffer (pydicom's ``read``/``seek``/``tell``) over an encapsulated value:
    its offset table item, the fragments of ``value`` read from the input as asked, the
    delimiter. Each read of the fragments is noted in ``reads`` (offsets within ``value``,
    sha256) for the writer to check."""

    def __init__(self, table: bytes, value: Any, reads: list[tuple[int, int, bytes]]) -> None:
        from ._stream import _Window

        self.table, self.value = table, value
        self.size = len(table) + len(value) + len(_DELIMITER_ITEM)
        self.pos = 0
        # item headers are 8 bytes: read a block at a time (one ranged GET each would be slow)
        self.fragments = _Window(_NotedReads(value, reads), _FRAGMENT_BLOCK)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, offset + (0, self.pos, self.size)[whence])
        return self.pos

    def read(self, size: int = -1) -> bytes:
        stop = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        out = []
        start, end = len(self.table), len(self.table) + len(self.value)
        if self.pos < start:
            out.append(self.table[self.pos : min(stop, start)])
        a, b = max(self.pos, start) - start, min(stop, end) - start
        if a < b:
            out.append(self.fragments.read(a, b - a))
        if stop > end:
            out.append(_DELIMITER_ITEM[max(self.pos, end) - end : stop - end])
        data = b"".join(out)
        self.pos += len(data)
        return data


def _decoded_frames(
    head: bytes, table: bytes, value: Any, frames: int, boxes: list[Any], seen: dict[int, bytes], numbered: bool
) -> Any:
    """A :class:`~dicomframe._stream.FileRange` kind: a lossy compressed Pixel Data value,
    decoded a frame at a time from the input as the writer asks, each frame blacked out and
    given native, as :func:`clean_dataset` gives them all at once; ``chunks()`` gives the
    same bytes on every call, or raises. Its ``header`` is the data set of the output (no
    Pixel Data), as decompressing gives it (``numbered``: the input has NumberOfFrames)."""
    import numpy as np
    from pydicom.encaps import encapsulate

    from ._stream import FileRange, _changed

    class DecodedFrames(FileRange):
        def __init__(self) -> None:
            data = next(iter(self._frames()))
            first, header = self._decoded(0, data)
            del header.PixelData
            if frames > 1 or numbered:
                header.NumberOfFrames = frames
            if int(header.get("SamplesPerPixel", 1) or 1) > 1:
                header.PlanarConfiguration = 0
                if str(header.PhotometricInterpretation).upper().startswith("YBR"):
                    header.PhotometricInterpretation = "RGB"  # pixel_array gave RGB
            if int(header.BitsAllocated) not in (8, 16, 32):
                raise ValueError("only whole bytes per sample are written a frame at a time")
            self.header = header
            self.boxes = _padded(boxes, first.shape[0], first.shape[1])
            self.black = _black(header, first)
            signed = int(header.get("PixelRepresentation", 0) or 0)
            self.dtype = np.dtype(f"<{'i' if signed else 'u'}{int(header.BitsAllocated) // 8}")
            self.frame_bytes = first.size * self.dtype.itemsize
            total = frames * self.frame_bytes
            super().__init__(value.src, 0, total + total % 2)

        def _frames(self) -> Iterator[bytes]:
            from pydicom.encaps import generate_frames

            return generate_frames(_Encapsulated(table, value, []), number_of_frames=frames)

        def _decoded(self, index: int, data: bytes) -> tuple[np.ndarray, Dataset]:
            if index in seen and hashlib.sha256(data).digest() != seen[index]:
                raise _changed()  # not the frame text detection looked at
            one = _one_frame(head, encapsulate([data]))
            with no_warnings():
                one.decompress(as_rgb=True, generate_instance_uid=False)
                return np.array(one.pixel_array, copy=True), one

        def _native(self) -> Iterator[bytes]:
            count = 0
            for index, data in enumerate(self._frames()):
                if index >= frames:
                    break
                try:
                    arr = self._decoded(index, data)[0]
                except DicomframeError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a damaged frame: a reason, no value
                    raise PixelCleanError(f"pixel data cannot be decoded for cleaning ({type(exc).__name__})") from None
                for x0, y0, x1, y1 in self.boxes:
                    arr[y0:y1, x0:x1, ...] = self.black
                out = np.ascontiguousarray(arr).astype(self.dtype).tobytes()
                if len(out) != self.frame_bytes:
                    raise PixelCleanError("pixel data cannot be decoded for cleaning (frames of different sizes)")
                count += 1
                yield out
            if count != frames:
                raise PixelCleanError("pixel data cannot be decoded for cleaning (fewer frames than NumberOfFrames)")
            if len(self) % 2:
                yield b"\0"

        def chunks(self) -> Iterator[memoryview]:
            hasher = hashlib.sha256()
            for out in self._native():
                hasher.update(out)
                yield memoryview(out)
            digest = hasher.digest()
            if self.digest is None:
                self.digest = digest
            elif digest != self.digest:
                raise _changed()

        def read(self, start: int, stop: int) -> bytes:
            out, at = [], 0
            for data in self._native():
                if at + len(data) > start and at < stop:
                    out.append(data[max(start - at, 0) : stop - at])
                at += len(data)
                if at >= stop:
                    break
            return b"".join(out)

    return DecodedFrames()


def _header(head: bytes) -> Dataset:
    """The data set of ``head`` (a Part 10 file up to its Pixel Data value)."""
    import pydicom

    with no_warnings():
        return pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True)


def _native_geometry(ds: Dataset, head: bytes, length: int) -> tuple[bytes, int, int] | None:
    """``(pixel data element header, frames, bytes per frame)`` when the value is native
    pixels this module can black out in place; else None."""
    try:
        ts = str(ds.file_meta.TransferSyntaxUID)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.PhotometricInterpretation).upper()
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if ts not in _NATIVE or bits not in (8, 16, 32) or min(rows, cols, frames) < 1:
        return None
    if (samples, photometric) not in ((1, "MONOCHROME1"), (1, "MONOCHROME2"), (1, "PALETTE COLOR"), (3, "RGB")):
        return None
    if samples > 1 and ds.get("PlanarConfiguration", 0) not in (0, 1):
        return None
    explicit = ts == "1.2.840.10008.1.2.1"
    element = head[-12:] if explicit else head[-8:]
    if element[:4] != _PIXEL_TAG or (explicit and element[4:8] not in (b"OW\0\0", b"OB\0\0")):
        return None
    from .rewrite import native_pixel_bytes

    frame_bytes = rows * cols * samples * bits // 8
    # bytes after the last frame (but an even length's pad) would be written unmasked: whole
    if int.from_bytes(element[-4:], "little") != length or length != native_pixel_bytes(
        rows, cols, samples, frames, bits, photometric
    ):
        return None
    return element, frames, frame_bytes


class _BoxMask:
    """Blacks out boxes in the chunks of a native Pixel Data value, wherever a chunk starts:
    each box row is a byte span of every frame (of every colour plane, when planar)."""

    def __init__(self, ds: Dataset, boxes: list[tuple[int, int, int, int]], frames: int, frame_bytes: int, black: int) -> None:
        rows, cols = int(ds.Rows), int(ds.Columns)
        width = int(ds.BitsAllocated) // 8
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        planar = samples > 1 and int(ds.get("PlanarConfiguration", 0) or 0) == 1
        sample = int(black).to_bytes(width, "little", signed=black < 0)
        pixel = width if planar else width * samples
        planes = [p * rows * cols * width for p in range(samples)] if planar else [0]
        spans: list[tuple[int, int]] = []
        for plane in planes:
            for x0, y0, x1, y1 in _padded(boxes, rows, cols):
                spans += [(plane + (y * cols + x0) * pixel, (x1 - x0) * pixel) for y in range(y0, y1)]
        merged: list[tuple[int, int]] = []
        for start, length in sorted(set(spans)):
            if merged and start <= merged[-1][0] + merged[-1][1]:
                last_start, last_length = merged[-1]
                merged[-1] = (last_start, max(last_length, start + length - last_start))
            else:
                merged.append((start, length))
        self.spans = merged
        self.frames = frames
        self.frame_bytes = frame_bytes
        self.pattern = sample * (pixel // width)  # every byte at the same offset in a pixel: its black

    def __call__(self, offset: int, view: memoryview) -> None:
        end = offset + len(view)
        size = len(self.pattern)
        first, last = offset // self.frame_bytes, min(self.frames - 1, (end - 1) // self.frame_bytes)
        for frame in range(first, last + 1):
            base = frame * self.frame_bytes
            for start, length in self.spans:
                a, b = max(base + start, offset), min(base + start + length, end)
                if a < b:
                    phase = (a - base - start) % size
                    fill = self.pattern * ((phase + b - a) // size + 1)
                    view[a - offset : b - offset] = fill[phase : phase + b - a]


def ocr_available() -> bool:
    """True when pytesseract, pillow and the tesseract program are all installed."""
    try:
        from .ocr import _pytesseract

        _pytesseract()
        import PIL  # noqa: F401
    except (DicomframeError, ImportError):
        return False
    return True

