"""Plots of findings and of burned-in text boxes: drawn headless (Agg), never the found text."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

matplotlib = pytest.importorskip("matplotlib", reason="plots need `pip install 'dicomframe[notebooks]'`")
matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pydicom
from matplotlib.patches import Rectangle
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomframe.errors import MissingExtraError, UserInputError
from dicomframe.leaks import FINDINGS_SCHEMA
from dicomframe.plots import SEVERITY_COLORS, plot_findings, show_text_boxes

SECRET = "DOEJANE"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _findings() -> pl.DataFrame:
    rows = [
        ("vault_original", "AccessionNumber", "high"),
        ("vault_original", "OtherPatientIDs", "high"),
        ("vault_original", "StudyID", "high"),
        ("date_in_text", "StudyDescription", "medium"),
        ("date_in_text", "ImageComments", "medium"),
        ("burned_in_text_risk", "PixelData", "low"),
    ]
    return pl.DataFrame(
        {
            "file_id": list(range(len(rows))),
            "tag_path": ["00080050"] * len(rows),
            "keyword": [r[1] for r in rows],
            "vr": ["SH"] * len(rows),
            "rule": [r[0] for r in rows],
            "severity": [r[2] for r in rows],
            "evidence": ["Do*****"] * len(rows),
            "suggested_action": ["remove"] * len(rows),
        }
    ).cast(FINDINGS_SCHEMA)  # type: ignore[arg-type]


def _bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_plot_findings_draws_one_bar_per_rule_coloured_by_severity() -> None:
    ax = plot_findings(_findings(), by="rule")
    bars = _bars(ax)
    assert len(bars) == 3
    widths = sorted(b.get_width() for b in bars)
    assert widths == [1, 2, 3]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "vault_original"  # most findings on top
    colours = {matplotlib.colors.to_hex(b.get_facecolor()) for b in bars}
    assert colours == {c.lower() for c in SEVERITY_COLORS.values()}
    assert ax.get_legend() is not None
    assert ax.figure is not None


def test_plot_findings_by_keyword_severity_pandas_and_a_joined_column() -> None:
    findings = _findings()
    assert len(_bars(plot_findings(findings, by="keyword"))) == 6
    assert len(_bars(plot_findings(findings.to_pandas(), by="severity"))) == 3
    joined = findings.with_columns(Modality=pl.Series(["CT", "CT", "MR", "US", "US", "US"]))
    _, ax = plt.subplots()
    assert plot_findings(joined, by="Modality", ax=ax) is ax
    assert len(_bars(ax)) == 3
    with pytest.raises(UserInputError, match="Modality"):
        plot_findings(findings, by="Modality")


def test_plot_findings_of_nothing_says_so() -> None:
    ax = plot_findings(pl.DataFrame(schema=FINDINGS_SCHEMA))
    assert not _bars(ax)
    assert [t.get_text() for t in ax.texts] == ["no findings"]


def _image_file(path: Path, frames: int = 1) -> Path:
    pixels = np.zeros((frames, 64, 96), dtype=np.uint16)
    pixels[:, 10:20, 10:60] = 4000  # a bright "text" band
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = 64, 96
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (pixels if frames > 1 else pixels[0]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _boxes(name: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "file": [name] * 4,
            "frame": [0, 0, 1, 0],
            "left": [10, 40, 5, None],
            "top": [10, 10, 5, None],
            "width": [25, 20, 10, None],
            "height": [10, 10, 8, None],
            "text": [SECRET, "MRN1234567", "other", None],
            "confidence": [90.0, 85.0, 80.0, None],
            "reason": [None, None, None, "frame 2 cannot be decoded"],
        }
    )


def _all_text(ax) -> str:
    fig = ax.figure
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return " ".join(texts)


def test_show_text_boxes_draws_the_frame_and_one_rectangle_per_word_of_that_frame(tmp_path: Path) -> None:
    path = _image_file(tmp_path / "sc.dcm", frames=2)
    boxes = _boxes(str(path))
    ax = show_text_boxes(path, boxes)
    assert len(ax.images) == 1
    image = ax.images[0].get_array()
    assert image.shape == (64, 96) and image.max() == 255
    rects = _bars(ax)
    assert len(rects) == 2  # frame 0 words only; the skipped row is not drawn
    assert {(r.get_x() + 0.5, r.get_y() + 0.5, r.get_width(), r.get_height()) for r in rects} == {
        (10, 10, 25, 10),
        (40, 10, 20, 10),
    }
    assert all(not r.get_fill() for r in rects)
    drawn = _all_text(ax)
    assert SECRET not in drawn and "MRN" not in drawn and "1234567" not in drawn and "other" not in drawn
    assert "2 text boxes" in drawn
    # frame 1, pandas boxes, a given axes
    _, ax1 = plt.subplots()
    assert show_text_boxes(pydicom.dcmread(path), boxes.to_pandas(), frame=1, ax=ax1) is ax1
    assert len(_bars(ax1)) == 1


def test_show_text_boxes_with_no_boxes_shows_the_frame(tmp_path: Path) -> None:
    path = _image_file(tmp_path / "sc.dcm")
    ax = show_text_boxes(path, _boxes(str(path)).clear())
    assert len(ax.images) == 1 and not _bars(ax)
    assert "0 text boxes" in _all_text(ax)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs the tesseract program")
def test_show_text_boxes_runs_ocr_when_no_boxes_are_given(tmp_path: Path) -> None:
    pytest.importorskip("pytesseract")
    from dicomframe.ocr import find_text

    path = _image_file(tmp_path / "sc.dcm")
    expected = find_text(path).filter(pl.col("text").is_not_null()).height
    ax = show_text_boxes(path)
    assert len(_bars(ax)) == expected


def test_a_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(MissingExtraError, match=r"dicomframe\[notebooks\]") as info:
        plot_findings(_findings())
    assert info.value.package == "matplotlib"
    with pytest.raises(MissingExtraError, match="matplotlib"):
        show_text_boxes("whatever.dcm", _boxes("x"))
