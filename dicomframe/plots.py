"""Looking, not reading: plots of audit findings and of burned-in text boxes.

Needs matplotlib (``pip install 'dicomframe[notebooks]'``); it is imported only
when a function here is called.

>>> import dicomframe as dcf
>>> from dicomframe.plots import plot_findings, show_text_boxes
>>> findings = dcf.audit("out/batch-1")             # doctest: +SKIP
>>> plot_findings(findings, by="rule")              # doctest: +SKIP
>>> show_text_boxes("out/batch-1/us/IM0001.dcm")    # doctest: +SKIP

Neither function ever draws a found value: bars are labelled with rule names,
keywords, severities or modalities, and text boxes are drawn as empty rectangles
(the words tesseract read in them may be PHI).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import polars as pl

from ._quiet import no_warnings
from .errors import MissingExtraError, UserInputError

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["SEVERITY_COLORS", "plot_findings", "show_text_boxes"]

#: bar colour per severity (colour-blind-safe: Okabe-Ito yellow, orange, vermillion)
SEVERITY_COLORS = {"low": "#E69F00", "medium": "#D55E00", "high": "#A6161A"}
_RANK = {"low": 0, "medium": 1, "high": 2}


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("plots", "notebooks", "matplotlib") from None
    return plt


def _polars(frame: Any) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame
    try:  # pandas (or anything with the dataframe interchange protocol)
        return pl.from_pandas(frame)
    except (TypeError, ValueError, ImportError):
        return pl.from_dataframe(frame)


def plot_findings(findings: Any, by: str = "rule", ax: Any = None) -> Any:
    """Horizontal bar chart of finding counts per ``by``, coloured by severity.

    Parameters
    ----------
    findings
        A findings table from :func:`dicomframe.audit` (polars or pandas).
    by
        The column to count per: ``"rule"``, ``"keyword"``, ``"severity"``, or any
        other column present (e.g. ``"Modality"`` after joining the scan's instances).
    ax
        A matplotlib ``Axes`` to draw in; a new figure when ``None``.

    Returns
    -------
    matplotlib.axes.Axes
        One bar per value of ``by`` (most findings on top), coloured by the highest
        severity among its findings; a legend names the severities.

    Examples
    --------
    >>> findings = dcf.audit("out/batch-1", vault="vault", key="project.key")  # doctest: +SKIP
    >>> plot_findings(findings, by="rule")                                       # doctest: +SKIP
    >>> with_modality = findings.join(scan.instances.select("file_id", "Modality"), on="file_id")  # doctest: +SKIP
    >>> plot_findings(with_modality, by="Modality")                               # doctest: +SKIP
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    table = _polars(findings)
    if by not in table.columns:
        raise UserInputError(f"findings have no column {by!r}; columns: {', '.join(table.columns)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * max(3, table[by].n_unique()) + 1))
    counts = (
        table.select(
            pl.col(by).cast(pl.String).fill_null("(none)").alias("group"),
            pl.col("severity").replace_strict(_RANK, default=0).alias("rank"),
        )
        .group_by("group")
        .agg(pl.len().alias("n"), pl.col("rank").max().alias("rank"))
        .sort(["n", "group"], descending=[False, True])  # barh draws bottom-up: most findings on top
    )
    if counts.is_empty():
        ax.text(0.5, 0.5, "no findings", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    names = {v: k for k, v in _RANK.items()}
    severities = [names[r] for r in counts["rank"]]
    ax.barh(counts["group"].to_list(), counts["n"].to_list(), color=[SEVERITY_COLORS[s] for s in severities])
    for y, n in enumerate(counts["n"]):
        ax.annotate(str(n), (n, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("findings")
    ax.set_ylabel(by)
    ax.margins(x=0.12)
    pad = max(0.0, (3 - counts.height) / 2)  # one or two bars: keep them bar-shaped, not the whole axes
    ax.set_ylim(-0.5 - pad, counts.height - 0.5 + pad)
    present = [s for s in SEVERITY_COLORS if s in severities]
    ax.legend(handles=[Patch(color=SEVERITY_COLORS[s], label=s) for s in present], title="severity", loc="best")
    return ax


def show_text_boxes(
    path: str | os.PathLike[str] | Dataset, boxes: Any = None, frame: int = 0, ax: Any = None
) -> Any:
    """Show one frame with the OCR word boxes drawn over it (never the words).

    Parameters
    ----------
    path
        A DICOM file (or a pydicom ``Dataset``) with pixel data.
    boxes
        Word boxes as returned by :func:`dicomframe.ocr.find_text` (``frame``,
        ``left``, ``top``, ``width``, ``height``; polars or pandas). ``None``: run
        ``find_text`` on the file (needs the ``ocr`` extra and tesseract). Rows of
        other frames, and skipped rows (null ``text``), are not drawn.
    frame
        The 0-based frame to show.
    ax
        A matplotlib ``Axes`` to draw in; a new figure when ``None``.

    Returns
    -------
    matplotlib.axes.Axes
        The frame (rendered as :func:`dicomframe.ocr.render_frame` does: min-max to
        8 bits, MONOCHROME1 inverted) with one unlabelled rectangle per word box;
        the title gives the number of boxes, not their text.

    Examples
    --------
    >>> from dicomframe.ocr import find_text
    >>> boxes = find_text("out/batch-1/us/IM0001.dcm")            # doctest: +SKIP
    >>> show_text_boxes("out/batch-1/us/IM0001.dcm", boxes)       # doctest: +SKIP
    """
    plt = _pyplot()
    import pydicom
    from matplotlib.patches import Rectangle

    from .ocr import find_text, render_frame

    if isinstance(path, pydicom.Dataset):
        ds = path
    else:
        with no_warnings():
            ds = pydicom.dcmread(os.fspath(path))
    image = render_frame(ds, frame)
    if boxes is None:
        boxes = find_text(ds, frames=frame + 1)
    table = _polars(boxes)
    if "frame" in table.columns:
        table = table.filter(pl.col("frame") == frame)
    if "text" in table.columns:
        table = table.filter(pl.col("text").is_not_null())
    table = table.drop_nulls(["left", "top", "width", "height"])
    if ax is None:
        height, width = image.shape[:2]
        _, ax = plt.subplots(figsize=(6, 6 * height / max(width, 1)))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    for left, top, width, height in table.select("left", "top", "width", "height").iter_rows():
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor="#00E5FF", linewidth=1.5))
    ax.set_title(f"frame {frame}: {table.height} text box{'es' if table.height != 1 else ''} (text not shown)")
    ax.set_axis_off()
    return ax
