"""Burned-in text: OCR box detection against presidio's ground truth, and the audit rule.

Matching (stated once, used for both figures): a detected word box matches a
ground-truth box when their IoU is >= 0.3 OR the detected box's centre lies
inside the truth box (tesseract returns one box per word, the truth sometimes
one box per phrase). Recall = truth boxes matched by at least one detection;
precision = detections that match at least one truth box. The truth lists only
the PHI boxes, so correctly read non-PHI text ("DOB:", "Portable") counts
against precision.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

pytesseract = pytest.importorskip("pytesseract", reason="OCR tests need `pip install 'dicomframe[ocr]'` (pytesseract)")
pytest.importorskip("PIL", reason="OCR tests need pillow (`pip install 'dicomframe[ocr]'`)")
if shutil.which("tesseract") is None:
    pytest.skip("OCR tests need the tesseract program: `apt-get install tesseract-ocr`", allow_module_level=True)

import numpy as np
import polars as pl
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomframe.ocr import find_text
from dicomframe.phiaudit import RULES, audit_scan
from dicomframe.scanner import scan

from .conftest import CORPUS

#: measured on 2026-11-25 (tesseract 5.3.0, --psm 11): recall 0.80 (8/10), precision 0.53 (8/15)
RECALL_FLOOR = 0.7
PRECISION_FLOOR = 0.4


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def _matches(det: tuple[int, ...], truth: tuple[int, ...]) -> bool:
    if _iou(det, truth) >= 0.3:
        return True
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    return truth[0] <= cx <= truth[0] + truth[2] and truth[1] <= cy <= truth[1] + truth[3]


def _truth() -> list[tuple[Path, list[tuple[int, int, int, int]]]]:
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    with open(CORPUS / "BURNED_IN_TRUTH.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if not row["truth_file"] or row["path"] in out:  # one truth per image
                continue
            offset = int(row["bbox_offset_px"] or 0)
            boxes = json.loads((CORPUS / row["truth_file"]).read_text())[row["truth_key"]]
            out[row["path"]] = [(b["left"] - offset, b["top"] - offset, b["width"], b["height"]) for b in boxes]
    return [(CORPUS / path, boxes) for path, boxes in out.items()]


def test_text_region_recall_and_precision_against_presidio_ground_truth(corpus: Path) -> None:
    found_truth = total_truth = matched_dets = total_dets = 0
    for path, truth in _truth():
        words = find_text(path).drop_nulls("text")
        dets = list(zip(words["left"], words["top"], words["width"], words["height"]))
        found_truth += sum(any(_matches(d, t) for d in dets) for t in truth)
        total_truth += len(truth)
        matched_dets += sum(any(_matches(d, t) for t in truth) for d in dets)
        total_dets += len(dets)
    assert total_truth >= 10, "expected two images with five truth boxes each"
    recall = found_truth / total_truth
    precision = matched_dets / total_dets if total_dets else 0.0
    print(
        f"\nOCR text regions (IoU>=0.3 or centre inside): recall {recall:.2f} ({found_truth}/{total_truth}), "
        f"precision {precision:.2f} ({matched_dets}/{total_dets})"
    )
    assert recall >= RECALL_FLOOR
    assert precision >= PRECISION_FLOOR


def test_a_compressed_frame_is_decoded_and_a_file_without_pixels_is_a_reason(corpus: Path) -> None:
    rle = find_text(corpus / "presidio/test_data/0_ORIGINAL_compressed.dcm")
    assert rle["reason"].is_null().all() and rle.height > 0
    none = find_text(corpus / "presidio/test_data/0_ORIGINAL_no_pixels.dcm")
    assert none.height == 1 and none["text"].is_null().all() and none["reason"][0] == "no pixel data"


def _image(path: Path, text: str | None) -> Path:
    image = Image.new("L", (640, 200), 0)
    if text:
        ImageDraw.Draw(image).text((20, 60), text, fill=255, font=ImageFont.load_default(size=40))
    pixels = np.asarray(image, dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(prefix="2.25.")
    ds.SeriesInstanceUID = generate_uid(prefix="2.25.")
    ds.Modality = "OT"
    ds.PatientID = "ANON"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_burned_in_text_rule_finds_drawn_text_masks_it_and_matches_a_name(tmp_path: Path) -> None:
    _image(tmp_path / "text" / "a.dcm", "SMITH JOHN 4417")
    result = scan(tmp_path / "text", progress=False)
    findings = audit_scan(result, rules=["burned_in_text"], names=["Smith^John"])
    assert findings.height >= 1
    assert set(findings["rule"]) == {"burned_in_text"}
    assert set(findings["tag_path"]) == {"7FE00010"}
    assert set(findings["severity"]) == {"high"}
    evidence = " ".join(findings["evidence"].to_list())
    assert "SMITH" not in evidence and "JOHN" not in evidence  # masked
    assert "matches an original" in evidence
    assert "box (" in evidence


def test_burned_in_text_rule_blank_image_gives_no_finding_and_runs_only_on_request(tmp_path: Path) -> None:
    _image(tmp_path / "blank" / "b.dcm", None)
    result = scan(tmp_path / "blank", progress=False)
    assert audit_scan(result, ocr=True).filter(pl.col("rule") == "burned_in_text").height == 0
    _image(tmp_path / "text" / "c.dcm", "SMITH JOHN 4417")
    with_text = scan(tmp_path / "text", progress=False)
    assert "burned_in_text" not in set(audit_scan(with_text)["rule"])  # not by default
    assert "burned_in_text" in set(audit_scan(with_text, ocr=True)["rule"])
    assert any(r.name == "burned_in_text" and r.severity == "high" for r in RULES)


def test_missing_pytesseract_names_the_extra_and_missing_program_names_apt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from dicomframe.errors import MissingExtraError
    from dicomframe.ocr import TesseractMissing

    path = _image(tmp_path / "x.dcm", None)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pytesseract", None)
        with pytest.raises(MissingExtraError, match=r"dicomframe\[ocr\]"):
            find_text(path)
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract"))
    with pytest.raises(TesseractMissing, match="apt-get install tesseract-ocr"):
        find_text(path)
