"""Burned-in text: find text boxes in rendered frames with tesseract (extra ``ocr``).

>>> from dicomframe.ocr import find_text
>>> boxes = find_text("us/IMG0001.dcm")          # doctest: +SKIP
>>> boxes.select("frame", "left", "top", "width", "height", "confidence")  # doctest: +SKIP

Needs ``pip install 'dicomframe[ocr]'`` (pytesseract, pillow, pylibjpeg for
compressed syntaxes) and the tesseract program (Debian: ``apt-get install
tesseract-ocr``). The ``text`` column holds the text found in the pixels: it
may be PHI. Mask it before showing it (the audit does) and never log it.

Frames that cannot be decoded are skipped; :func:`find_text` reports them in
``skipped`` rows (``text`` null, ``reason`` set) rather than raising.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from ._quiet import no_warnings
from .errors import DicomframeError, MissingExtraError

if TYPE_CHECKING:
    import numpy as np
    from pydicom import Dataset

__all__ = ["TEXT_SCHEMA", "TesseractMissing", "find_text", "is_text_like", "render_frame"]

TEXT_SCHEMA = {
    "file": pl.String,
    "frame": pl.Int32,
    "left": pl.Int32,
    "top": pl.Int32,
    "width": pl.Int32,
    "height": pl.Int32,
    "text": pl.String,
    "confidence": pl.Float64,
    "reason": pl.String,
}

#: words with a lower confidence (0-100) are dropped: mostly noise from image structure
MIN_CONFIDENCE = 30.0
#: words less high than this (frame pixels) are dropped: too small to read, mostly speckle
MIN_HEIGHT = 7
#: drawn text is ink on a background: the spread (standard deviation) of a word's box,
#: as a share of the frame's range, is at least this; words "read" in speckle or
#: tissue texture stay below it (measured: text >= 0.36, speckle <= 0.26)
MIN_CONTRAST = 0.3


class TesseractMissing(DicomframeError):
    """pytesseract is installed but the tesseract program is not on PATH."""


def _pytesseract() -> Any:
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        import pytesseract
    except ImportError:
        raise MissingExtraError("OCR of burned-in text", "ocr", "pytesseract") from None
    try:
        pytesseract.get_tesseract_version()
    except (pytesseract.TesseractNotFoundError, OSError):
        raise TesseractMissing(
            "OCR of burned-in text needs the tesseract program: "
            "install it with `apt-get install tesseract-ocr` (Debian/Ubuntu)"
        ) from None
    return pytesseract


def _to_uint8(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    import numpy as np

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour (pixel_array converts YBR to RGB)
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return np.ascontiguousarray(arr[..., :3].astype(np.uint8))
    # Greyscale: min-max over the stored values (after the modality LUT). A VOI window
    # would clip burned-in text, which is usually drawn at the extreme values.
    data = arr.astype(np.float64)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    data = data * slope + intercept
    lo, hi = float(data.min()), float(data.max())
    out = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.uint8)


def decoder_hint(ts: object) -> str:
    """What to do about pixel data of syntax ``ts`` that could not be decoded: install a
    decoder when none is there, else the data is damaged or of a kind no decoder reads."""
    try:
        from pydicom.pixels.decoders.base import get_decoder

        available = get_decoder(str(ts)).is_available
    except Exception:  # noqa: BLE001 - no decoder exists for this syntax (video, an unknown UID)
        return (
            "no decoder reads this transfer syntax (video, or one unknown to pydicom): its frames cannot "
            "be checked for burned-in text; look at it in a viewer, and only then write it with "
            "--pixel-clean rules (or off)"
        )
    if not available:
        return "compressed syntaxes need `pip install 'dicomframe[ocr]'` (pylibjpeg)"
    return (
        "a decoder for this syntax is installed and could not read the data: it is damaged or "
        "of a kind the decoders do not support; open it in a viewer to check"
    )


def render_frame(ds: Dataset, frame: int = 0) -> np.ndarray:
    """One frame as an 8-bit greyscale (H, W) or RGB (H, W, 3) array.

    Raises :class:`DicomframeError` when the pixel data cannot be decoded.
    """
    from pydicom.pixels.utils import pixel_array

    try:
        with no_warnings():
            if ds.get("BitsAllocated") == 1 and int(ds.get("NumberOfFrames") or 1) > 1:
                # bit-packed frames need not start on a byte, and pydicom cannot read one of them
                # alone (e.g. the last of three 5 x 7 frames): all of them, which are small
                arr = pixel_array(ds)[frame]
            else:
                arr = pixel_array(ds, index=frame)
    except Exception as exc:  # noqa: BLE001 - decoder missing or damaged data: a reason, no value
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raise DicomframeError(
            f"frame {frame} cannot be decoded ({type(exc).__name__}; transfer syntax {ts}); {decoder_hint(ts)}"
        ) from None
    return _to_uint8(arr, ds)


def _grey(image: np.ndarray) -> np.ndarray:
    """An 8-bit frame as one channel: colour frames by their brightest channel."""
    return image if image.ndim == 2 else image[..., :3].max(axis=2)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / smaller if smaller else 0.0


def _renderings(image: np.ndarray, grey: np.ndarray) -> list[tuple[Any, int, int]]:
    """The frame as tesseract reads it best: (PIL image, scale, border) per pass.

    Pass 1: the frame itself, enlarged (nearest) when small. Pass 2: the
    brightest marks only (>= 90% of the frame's maximum, where overlays are
    drawn), black on white, enlarged, softened and framed with a white border:
    blocky overlay fonts that pass 1 reads as noise come out clean.
    """
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps

    pil = Image.fromarray(image)
    # small frames: tesseract reads text best at 20-40 px high; enlarge, then scale boxes back
    scale = max(1, min(4, 1000 // max(pil.size)))
    first = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST) if scale > 1 else pil
    top = int(grey.max())
    marks = Image.fromarray(np.where(grey >= 0.9 * top, 0, 255).astype(np.uint8)) if top else None
    passes: list[tuple[Any, int, int]] = [(first, scale, 0)]
    if marks is not None:
        if scale > 1:
            marks = marks.resize((marks.width * scale, marks.height * scale), Image.Resampling.NEAREST)
        border = 20
        marks = ImageOps.expand(marks.filter(ImageFilter.GaussianBlur(max(1, scale // 2))), border, fill=255)
        passes.append((marks, scale, border))
    return passes


def _ocr_image(pytesseract: Any, image: np.ndarray) -> list[tuple[int, int, int, int, str, float]]:
    """Words tesseract reads in a frame that look like drawn text (see :func:`is_text_like`)."""
    grey = _grey(image)
    boxes: list[tuple[int, int, int, int, str, float]] = []
    for pil, scale, border in _renderings(image, grey):
        data = pytesseract.image_to_data(pil, config="--psm 11", output_type=pytesseract.Output.DICT)
        for i, word in enumerate(data["text"]):
            word = (word or "").strip()
            conf = float(data["conf"][i])
            if not word or conf < MIN_CONFIDENCE or not any(c.isalnum() for c in word):
                continue
            left, top = (int(data["left"][i]) - border) // scale, (int(data["top"][i]) - border) // scale
            width, height = int(data["width"][i]) // scale, int(data["height"][i]) // scale
            if height < MIN_HEIGHT:  # speckle read as letters
                continue
            box = (max(0, left), max(0, top), width, height)
            same = [n for n, b in enumerate(boxes) if _overlap(b[:4], box) >= 0.5]
            if same:  # both passes read this word: keep the surer reading
                if boxes[same[0]][5] < conf:
                    boxes[same[0]] = (*box, word, conf)
                continue
            boxes.append((*box, word, conf))
    spread = float(grey.max()) - float(grey.min())
    return [b for b in boxes if _contrasted(grey, spread, b[:4])]


def _contrasted(grey: np.ndarray, spread: float, box: tuple[int, int, int, int]) -> bool:
    left, top, width, height = box
    patch = grey[max(0, top) : top + height, max(0, left) : left + width]
    return bool(patch.size) and spread > 0 and float(patch.std()) >= MIN_CONTRAST * spread


def is_text_like(image: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """True when the box holds high-contrast marks, as drawn text does (see :data:`MIN_CONTRAST`)."""
    grey = _grey(image)
    return _contrasted(grey, float(grey.max()) - float(grey.min()), box)


def find_text(
    path_or_dataset: str | os.PathLike[str] | Dataset,
    *,
    frames: int | Sequence[int] | Literal["sample"] | None = 1,
) -> pl.DataFrame:
    """Text boxes tesseract finds in the first ``frames`` frames (``None``: all frames;
    a list: those frames, 0-based, the ones past the last frame left out; ``"sample"``:
    the first, middle and last, which pixel clean reads, see
    :func:`dicomframe.pixelclean.ocr_frames`).

    Returns one row per word: ``file``, ``frame`` (0-based), ``left``, ``top``,
    ``width``, ``height`` (pixels of the frame), ``text`` (the found text: may be
    PHI, mask it before display), ``confidence`` (0-100), and ``reason`` (null for
    words; set on a row with null ``text`` for a frame or file that was skipped).
    """
    import pydicom

    tess = _pytesseract()
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise MissingExtraError("OCR of burned-in text", "ocr", "pillow") from None
    rows: list[dict[str, Any]] = []
    if isinstance(path_or_dataset, pydicom.Dataset):
        ds = path_or_dataset
        name = str(getattr(ds, "filename", None) or "")
    else:
        name = os.fspath(path_or_dataset)
        try:
            with no_warnings():
                ds = pydicom.dcmread(name)
        except Exception as exc:  # noqa: BLE001 - a file we cannot read is a reason, not a crash
            return _frame(name, [{"frame": None, "reason": f"not readable as DICOM ({type(exc).__name__})"}])
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return _frame(name, [{"frame": None, "reason": "no pixel data"}])
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == "sample":
        from .pixelclean import ocr_frames

        frames = ocr_frames(n_frames)
    if frames is None or isinstance(frames, int):
        wanted: Sequence[int] = range(n_frames if frames is None else min(frames, n_frames))
    else:
        wanted = [f for f in frames if 0 <= f < n_frames]
    for frame in wanted:
        try:
            image = render_frame(ds, frame)
        except DicomframeError as exc:
            rows.append({"frame": frame, "reason": str(exc)})
            continue
        for left, top, width, height, text, conf in _ocr_image(tess, image):
            rows.append(
                {"frame": frame, "left": left, "top": top, "width": width, "height": height, "text": text, "confidence": conf}
            )
    return _frame(name, rows)


def _frame(name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    full = [{k: r.get(k) for k in TEXT_SCHEMA} | {"file": name} for r in rows]
    return pl.DataFrame(full, schema=TEXT_SCHEMA)
