"""Pixel clean: per-device rectangles, detected text, re-encoding, failing closed.

Text-region coverage against presidio's ground truth is measured here for the
cleaning (area of each truth box that ends up black), beside the detection
figures of test_ocr.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from dicomframe.errors import ProfileError
from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify
from dicomframe.pixelclean import PixelRule, pixel_jobs
from dicomframe.profiles import Profile
from dicomframe.scanner import scan

from .conftest import CORPUS, SAMPLES

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
KEY = ProjectKey.from_bytes(bytes(range(3, 35)))
#: measured on 2026-11-25 (tesseract 5.3.0): 0.78 of the truth boxes' area blacked out
COVERAGE_FLOOR = 0.7


def _ocr_installed() -> bool:
    try:
        import PIL  # noqa: F401
        import pytesseract  # noqa: F401
    except ImportError:
        return False
    return shutil.which("tesseract") is not None


needs_ocr = pytest.mark.skipif(not _ocr_installed(), reason="needs `pip install 'dicomframe[ocr]'` and tesseract-ocr")


def _us_image(
    path: Path, *, manufacturer: str = "ACME", rows: int = 96, cols: int = 128, syntax: str = ExplicitVRLittleEndian
) -> np.ndarray:
    """A greyscale ultrasound-like image with a bright 'banner' block in its top rows."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(20, 120, size=(rows, cols), dtype=np.uint8)
    pixels[2:12, 4:60] = 250  # where a device draws the patient banner
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Roe^Ulla", "PX001", "US"
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, "Sono 5"
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return pixels


def _profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text('[profile]\nbase = "default"\n' + body)
    return path


RULE = """
[[pixel]]
name = "acme banner"
match = { Manufacturer = "ACME", ManufacturerModelName = "Sono 5", Rows = 96, Columns = 128 }
regions = [[0, 0, 128, 16]]
"""


def test_a_device_rule_blacks_out_its_rectangle_and_nothing_else(tmp_path: Path) -> None:
    original = _us_image(tmp_path / "in" / "a.dcm")
    profile = _profile(tmp_path, RULE)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", profile=str(profile), progress=False)
    assert result.ok and result.written == 1
    assert result.plan.files["pixel_clean"].to_list() == ["rule:acme banner"]
    out = pydicom.dcmread(next((tmp_path / "out" / "b").rglob("*.dcm")))
    cleaned = out.pixel_array
    assert (cleaned[:18, :] == 0).all()  # the rectangle and its 2-pixel margin
    assert (cleaned[18:] == original[18:]).all()
    assert out.BurnedInAnnotation == "NO"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence][-1] == "113101"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    manifest = pl.read_parquet(tmp_path / "out" / "b" / "manifest.parquet")
    assert manifest["pixel_clean"].to_list() == ["rule:acme banner"]


def test_with_ocr_missing_an_image_at_risk_without_a_rule_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomframe.pixelclean as pc

    _us_image(tmp_path / "in" / "covered.dcm")
    _us_image(tmp_path / "in" / "other.dcm", manufacturer="OTHER")
    monkeypatch.setattr(pc, "ocr_available", lambda: False)
    profile = _profile(tmp_path, RULE)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", profile=str(profile), progress=False)
    assert result.written == 1 and len(result.failed) == 1
    failure = result.failed[0]
    assert failure["kind"] == "pixel_clean_failed" and "tesseract" in failure["reason"] and "--pixel-clean" in failure["reason"]
    assert len(list((tmp_path / "out" / "b").rglob("*.dcm"))) == 1
    # pixel_clean="rules": the user chose to write unchecked pixels; "off" leaves every pixel alone
    for mode, touched in (("rules", 1), ("off", 0)):
        again = deidentify(tmp_path / "in", tmp_path / mode, key=KEY, vault=tmp_path / f"v{mode}", batch_id="b", profile=str(profile), pixel_clean=mode, progress=False)
        assert again.ok and again.written == 2
        assert again.plan.files["pixel_clean"].drop_nulls().len() == touched
        # the run says how many images at risk it wrote unchecked, and what to do: both with
        # "off", and with "rules" the one no device rule covers
        said = dict(again.rows()).get("pixels NOT cleaned", "")
        unchecked = {"off": "2 images", "rules": "1 image"}[mode]
        assert f"{unchecked} at risk of burned-in text" in said and "audit --ocr" in said


def test_pixel_rules_in_a_profile_file_are_checked(tmp_path: Path) -> None:
    bad = {
        'name = "x"\nmatch = { Colour = "red" }\nregions = [[0, 0, 1, 1]]': "cannot match on 'Colour'",
        'name = "x"\nmatch = { Modality = "US" }\nregions = [[0, 0, 0, 1]]': "width and height > 0",
        'name = "x"\nmatch = { Rows = "480" }\nregions = [[0, 0, 1, 1]]': "Rows must be a number",
        'name = "x"\nmatch = { Modality = "US" }\nregion = [[0, 0, 1, 1]]': "unknown key 'region'",
    }
    for body, message in bad.items():
        with pytest.raises(ProfileError, match=message):
            Profile.from_toml(_profile(tmp_path, "[[pixel]]\n" + body))
    with pytest.raises(ProfileError, match="one of auto, rules, off"):
        pixel_jobs(pl.DataFrame({"file_id": [1]}), (), "always")


def test_the_first_matching_rule_wins_and_images_without_pixels_are_left_alone() -> None:
    instances = pl.DataFrame(
        {
            "file_id": [1, 2, 3, 4],
            "Modality": ["US", "US", "CT", "SR"],
            "Rows": [480, 600, 512, None],
            "sop_class_uid": ["1.2.840.10008.5.1.4.1.1.6.1"] * 2 + ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.11"],
            "pixel_data_length": [10, 10, 10, None],
        }
    )
    rules = (
        PixelRule("us 480", (("Modality", "US"), ("Rows", 480)), ((0, 0, 10, 10),)),
        PixelRule("any us", (("Modality", "US"),), ((0, 0, 5, 5),)),
    )
    jobs = pixel_jobs(instances, rules, "auto")
    assert dict(jobs.select("file_id", "pixel_clean").iter_rows()) == {1: "rule:us 480", 2: "rule:any us"}
    assert pixel_jobs(instances, (), "auto")["file_id"].to_list() == [1, 2]  # ultrasound: text detection
    assert pixel_jobs(instances, (), "rules").height == 0


def _corpus_at_risk() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    result = scan(CORPUS, progress=False)
    jobs = pixel_jobs(result.instances, (), "auto")
    return [Path(p) for p in result.instances.join(jobs, on="file_id")["path"].sort().to_list()]


@needs_ocr
def test_every_corpus_image_at_risk_is_cleaned_into_readable_dicom(tmp_path: Path) -> None:
    from dicomframe.vault import read_mapping

    files = _corpus_at_risk()
    assert len(files) >= 10
    src = tmp_path / "in"
    src.mkdir()
    for n, path in enumerate(files):
        (src / f"{n}.dcm").symlink_to(path)
    # the corpus's fake values may stop the leak gate: keep what it flags, to read it here
    result = deidentify(
        src, tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False, keep_flagged=True
    )
    for failure in result.failed:  # test files without UIDs are refused as always; nothing else fails
        assert failure["kind"] == "invalid" and "no StudyInstanceUID" in failure["reason"]
    mapping = read_mapping(tmp_path / "v", "b", KEY).filter(pl.col("status") == "written")
    assert mapping.height == result.written >= 10
    # the corpus holds one instance in two encodings (same SOP Instance UID, so one output): skip those
    unique = mapping.filter(pl.len().over("output_path") == 1)
    assert unique.height >= 10
    for original, output, sop in unique.select("original_path", "output_path", "sop_instance_uid").iter_rows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = pydicom.dcmread(original, force=True)
            if "TransferSyntaxUID" not in old.file_meta:  # no file meta: the scan read it as implicit VR
                old.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
            new = pydicom.dcmread(tmp_path / "out" / "b" / output)
            before, after = old.pixel_array, new.pixel_array
        # decoding and encoding again must not make a new instance: the UID is the keyed one
        assert new.SOPInstanceUID == sop == new.file_meta.MediaStorageSOPInstanceUID
        assert new.BurnedInAnnotation == "NO"
        assert "113101" in {i.CodeValue for i in new.DeidentificationMethodCodeSequence}
        assert before.shape == after.shape
        syntax = old.file_meta.TransferSyntaxUID
        if not syntax.is_compressed:
            assert new.file_meta.TransferSyntaxUID == syntax
            if "YBR" not in old.PhotometricInterpretation:
                # only blacked-out boxes change: most pixels are untouched (byte order, layout kept)
                assert (before != after).mean() < 0.5


@needs_ocr
def test_a_lossless_compressed_image_is_compressed_again_in_its_syntax(corpus: Path, tmp_path: Path) -> None:
    from dicomframe.pixelclean import clean_part10

    path = corpus / "presidio/test_data/0_ORIGINAL_compressed.dcm"
    old = pydicom.dcmread(path)
    assert old.file_meta.TransferSyntaxUID == RLELossless
    new = pydicom.dcmread(io.BytesIO(clean_part10(path.read_bytes(), ocr=True)))
    assert new.file_meta.TransferSyntaxUID == RLELossless
    assert new.pixel_array.shape == old.pixel_array.shape
    assert (new.pixel_array != old.pixel_array).any()


@needs_ocr
def test_cleaning_covers_presidio_ground_truth_boxes(corpus: Path) -> None:
    from dicomframe.pixelclean import clean_part10

    covered = total = 0.0
    seen: set[str] = set()
    with open(corpus / "BURNED_IN_TRUTH.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["truth_file"]]
    for row in rows:
        if row["path"] in seen:
            continue
        seen.add(row["path"])
        offset = int(row["bbox_offset_px"] or 0)
        boxes = json.loads((corpus / row["truth_file"]).read_text())[row["truth_key"]]
        path = corpus / row["path"]
        old = pydicom.dcmread(path)
        new = pydicom.dcmread(io.BytesIO(clean_part10(path.read_bytes(), ocr=True)))
        black = np.asarray(new.pixel_array)
        grey = black if black.ndim == 2 else black.max(axis=-1)
        is_black = grey == (0 if "MONOCHROME1" not in old.PhotometricInterpretation else grey.max())
        for b in boxes:
            left, top = b["left"] - offset, b["top"] - offset
            area = is_black[max(0, top) : top + b["height"], max(0, left) : left + b["width"]]
            covered += float(area.sum())
            total += float(area.size)
    coverage = covered / total
    print(f"\npixel clean: {coverage:.2f} of the presidio truth boxes' area blacked out ({len(seen)} images)")
    assert coverage >= COVERAGE_FLOOR


@needs_ocr
def test_ocr_finds_text_in_every_sample_image_with_a_planted_burned_in_name() -> None:
    """The inputs (as a naive de-identification leaves them) all hold findings; the
    default output of the same images holds none (tests/test_audit.py)."""
    from dicomframe.phiaudit import audit_scan

    planted = json.loads((SAMPLES / "PLANTED_PHI.json").read_text())
    burned = {
        (SAMPLES / f["path"]).resolve()
        for p in planted["patients"].values()
        for st in p.get("studies", [])
        for se in st.get("series", [])
        if se.get("burned_in_text")
        for f in se["files"]
    }
    assert len(burned) == 7
    before = audit_scan(scan(sorted(burned), progress=False), rules=["burned_in_text"])
    hit = {Path(p).resolve() for p in before.filter(pl.col("severity") == "high")["path"].to_list()}
    assert hit == burned


def _compressed(tmp_path: Path, syntax: str) -> Path:
    """The test image, compressed: JPEG 2000 lossless by pydicom's encoder, JPEG baseline by Pillow."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    path = tmp_path / "in" / f"{syntax}.dcm"
    pixels = _us_image(path)
    ds = pydicom.dcmread(path)
    if syntax == "j2k":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    else:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", ["j2k", "jpeg"])
def test_a_compressed_image_is_decoded_cleaned_and_encoded_without_a_second_loss(syntax: str, tmp_path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    pytest.importorskip("openjpeg", reason="JPEG 2000 needs pylibjpeg-openjpeg (extra `ocr`)")
    pytest.importorskip("libjpeg", reason="JPEG needs pylibjpeg-libjpeg (extra `ocr`)")
    path = _compressed(tmp_path, syntax)
    old = pydicom.dcmread(path)
    profile = _profile(tmp_path, RULE)
    result = deidentify(path, tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", profile=str(profile), progress=False)
    assert result.ok and result.written == 1
    new = pydicom.dcmread(next((tmp_path / "out" / "b").rglob("*.dcm")))
    after, before = new.pixel_array, old.pixel_array
    assert (after[:18] == 0).all() and (after[18:] == before[18:]).all()
    if syntax == "j2k":  # lossless: compressed again in its own syntax
        assert new.file_meta.TransferSyntaxUID == JPEG2000Lossless
    else:  # lossy: not compressed a second time; the earlier loss is recorded
        assert new.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert new.LossyImageCompression == "01"


def test_an_image_that_cannot_be_decoded_fails_closed_and_the_rest_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openjpeg", reason="JPEG 2000 needs pylibjpeg-openjpeg (extra `ocr`)")
    _compressed(tmp_path, "j2k")
    (tmp_path / "in" / "plain.dcm").write_bytes((SAMPLES / "cohort").joinpath(next(
        p for p in sorted((SAMPLES / "cohort").rglob("*")) if p.is_file() and "CT" in str(p)
    )).read_bytes())

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("decoder crashed on Roe^Ulla")  # a message holding PHI must not surface

    monkeypatch.setattr(pydicom.Dataset, "decompress", broken)
    profile = _profile(tmp_path, RULE)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", profile=str(profile), progress=False)
    assert result.written == 1 and len(result.failed) == 1 and not result.ok
    failure = result.failed[0]
    assert failure["kind"] == "pixel_clean_failed" and "cannot be decoded" in failure["reason"]
    assert "Roe" not in failure["reason"] and "Ulla" not in failure["reason"]
    manifest = json.loads((tmp_path / "out" / "b" / "manifest.json").read_text())
    assert manifest["total_images"] == 1 and manifest["failed"][0]["kind"] == "pixel_clean_failed"


@needs_ocr
def test_an_image_at_risk_without_text_keeps_its_pixel_bytes(tmp_path: Path) -> None:
    """Text detection ran and found nothing: marked as looked at, pixels not decoded or re-encoded."""
    _us_image(tmp_path / "in" / "a.dcm", manufacturer="OTHER")
    old = pydicom.dcmread(tmp_path / "in" / "a.dcm")
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False)
    assert result.ok and result.plan.files["pixel_clean"].to_list() == ["ocr"]
    new = pydicom.dcmread(next((tmp_path / "out" / "b").rglob("*.dcm")))
    assert new.PixelData == old.PixelData
    assert new.BurnedInAnnotation == "NO" and "113101" in {i.CodeValue for i in new.DeidentificationMethodCodeSequence}


@needs_ocr
def test_text_that_appears_in_a_later_frame_of_a_cine_loop_is_blacked_out(tmp_path: Path) -> None:
    """Detection reads the first, middle and last frame; their boxes go on every frame."""
    from PIL import Image, ImageDraw, ImageFont

    frames = []
    for index in range(5):
        image = Image.new("L", (480, 160), 30)
        if index == 4:  # the name shows up at the end of the loop only
            ImageDraw.Draw(image).text((20, 50), "ROE ULLA", fill=255, font=ImageFont.load_default(size=40))
        frames.append(np.asarray(image, dtype=np.uint8))
    src = tmp_path / "in" / "cine.dcm"
    _us_image(src, manufacturer="OTHER")
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 160, 480, 5
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(src, enforce_file_format=True)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False)
    assert result.ok and result.plan.files["pixel_clean"].to_list() == ["ocr"]
    cleaned = pydicom.dcmread(next((tmp_path / "out" / "b").rglob("*.dcm"))).pixel_array
    assert cleaned.shape == (5, 160, 480)
    text = frames[4] == 255
    assert (cleaned[4][text] == 0).all()  # every pixel of the drawn name is black
    assert (cleaned[0][text] == 0).all()  # and the same box on the other frames
    assert (cleaned[:, 130:, :] == 30).all()  # the rest of the image is untouched
    from dicomframe.ocr import find_text

    # the audit reads the same frames: it sees the name in the input, and nothing in the output
    assert 4 in find_text(src, frames="sample")["frame"].to_list()
    assert find_text(next((tmp_path / "out" / "b").rglob("*.dcm")), frames="sample")["text"].drop_nulls().len() == 0


def test_a_palette_image_is_blacked_out_with_its_darkest_entry(tmp_path: Path) -> None:
    """Index 0 of this palette is white: the rectangle gets the index whose colour is black."""
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    for colour in ("Red", "Green", "Blue"):
        name = f"{colour}PaletteColorLookupTableData"
        lut = np.frombuffer(ds[name].value, dtype="<u2")[::-1].copy()  # the darkest entry is now the last
        ds[name].value = lut.tobytes()
    ds.Manufacturer, ds.ManufacturerModelName = "ACME", "Palette 1"
    src = tmp_path / "in" / "palette.dcm"
    src.parent.mkdir(parents=True)
    ds.save_as(src, enforce_file_format=True)
    rule = f"""
[[pixel]]
name = "palette banner"
match = {{ Manufacturer = "ACME", ManufacturerModelName = "Palette 1" }}
regions = [[0, 0, {int(ds.Columns)}, 20]]
"""
    result = deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b",
        profile=str(_profile(tmp_path, rule)), progress=False,
    )  # fmt: skip
    assert result.ok and result.plan.files["pixel_clean"].to_list() == ["rule:palette banner"]
    out = pydicom.dcmread(next((tmp_path / "out" / "b").rglob("*.dcm")))
    banner = apply_color_lut(out.pixel_array, out)[:20]
    assert (banner == 0).all()  # black, as shown through the palette
    assert (out.pixel_array[:20] == 255).all()


def test_an_image_written_in_implicit_vr_under_a_jpeg_syntax_is_cleaned(tmp_path: Path) -> None:
    """The data set of this file is implicit VR although its syntax (JPEG baseline) says
    explicit: pydicom reads it with no VRs and could not write it back. Both ways of
    cleaning (boxes, and text detection with nothing found) write it, explicit."""
    from pydicom.data import get_testdata_file

    src = tmp_path / "in" / "sc.dcm"
    src.parent.mkdir(parents=True)
    shutil.copy(get_testdata_file("SC_rgb_jpeg.dcm"), src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
    assert ds.original_encoding == (False, True)  # read implicit, little endian
    rule = f"""
[[pixel]]
name = "banner"
match = {{ Modality = "{ds.Modality}" }}
regions = [[0, 0, {int(ds.Columns)}, 16]]
"""
    for name, profile in (("rule", str(_profile(tmp_path, rule))), ("ocr", "default")):
        result = deidentify(
            tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / f"v-{name}", batch_id=name,
            profile=profile, pixel_clean="auto", progress=False,
        )  # fmt: skip
        assert result.ok, result.failed
        out = pydicom.dcmread(next((tmp_path / "out" / name).rglob("*.dcm")))
        assert out.ImageType == ["DERIVED", "SECONDARY", "OTHER"] and out.BurnedInAnnotation == "NO"
        pixels = out.pixel_array
        if name == "rule":
            assert not pixels[:16].any() and pixels[16:].any()


def test_an_undecodable_image_is_told_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a decoder only when none is there; else the data itself is the trouble."""
    from types import SimpleNamespace

    from pydicom.pixels.decoders import base

    from dicomframe.ocr import decoder_hint

    assert "is installed and could not read the data" in decoder_hint("1.2.840.10008.1.2.4.50")
    assert "no decoder reads this transfer syntax" in decoder_hint("1.2.840.10008.1.2.4.100")  # MPEG-2 video
    monkeypatch.setattr(base, "get_decoder", lambda uid: SimpleNamespace(is_available=False))
    assert "pip install 'dicomframe[ocr]'" in decoder_hint("1.2.840.10008.1.2.4.50")


@needs_ocr
def test_a_deflated_image_is_cleaned_by_its_rule_and_checked_for_text(tmp_path: Path) -> None:
    """A deflated file's Pixel Data has a length but no offset in the file (it lies in the
    inflated stream): it is an image all the same, for the rules and for text detection."""
    original = _us_image(tmp_path / "in" / "a.dcm", syntax=DeflatedExplicitVRLittleEndian)
    _us_image(tmp_path / "in" / "b.dcm", manufacturer="OTHER", syntax=DeflatedExplicitVRLittleEndian)
    scanned = scan(tmp_path / "in", progress=False).instances
    assert scanned["pixel_data_offset"].null_count() == 2 and scanned["pixel_data_length"].null_count() == 0
    result = deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b",
        profile=str(_profile(tmp_path, RULE)), pixel_clean="auto", progress=False,
    )  # fmt: skip
    assert result.ok and result.written == 2
    assert sorted(result.plan.files["pixel_clean"].to_list()) == ["ocr", "rule:acme banner"]
    for path in (tmp_path / "out" / "b").rglob("*.dcm"):
        out = pydicom.dcmread(path)
        assert out.BurnedInAnnotation == "NO" and out.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        if out.Manufacturer == "ACME":
            assert (out.pixel_array[:18] == 0).all() and (out.pixel_array[18:] == original[18:]).all()


def test_each_frame_of_a_bit_packed_multi_frame_image_is_read_for_text_detection() -> None:
    """Three 5 x 7 one-bit frames: the last starts inside a byte, which pydicom cannot read alone."""
    from dicomframe.ocr import render_frame

    frames = np.random.default_rng(3).integers(0, 2, size=(3, 5, 7), dtype=np.uint8)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = 5, 7, 3, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pydicom.pixels.pack_bits(frames)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    ds = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    for frame in range(3):
        image = render_frame(ds, frame)
        assert image.shape == (5, 7) and ((image > 127) == frames[frame].astype(bool)).all()


def test_float_pixel_data_a_rule_matches_fails_closed_and_says_what_to_do(tmp_path: Path) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.30", generate_uid()  # parametric map
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName, ds.Rows, ds.Columns = "OT", "ACME", "Sono 5", 96, 128
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = np.linspace(0, 1, 96 * 128, dtype="<f4").tobytes()
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "map.dcm", enforce_file_format=True)
    profile = str(_profile(tmp_path, RULE))
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", profile=profile, progress=False)
    assert [f["kind"] for f in result.failed] == ["pixel_clean_failed"]
    assert "narrow the rule's match" in result.failed[0]["reason"] and result.written == 0
    off = deidentify(tmp_path / "in", tmp_path / "off", key=KEY, vault=tmp_path / "v-off", batch_id="b", profile=profile, pixel_clean="off", progress=False)
    assert off.ok and pydicom.dcmread(off.outputs[0].removeprefix("file://")).FloatPixelData == ds.FloatPixelData


def _overlaid_ct(path: Path, group: int = 0x6000) -> np.ndarray:
    """A 12-bit CT slice whose bit 12 holds an overlay (retired, found in legacy images):
    the overlay group describes it and has no Overlay Data of its own."""
    pixels = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3) & 0x0FFF
    stored = pixels.copy()
    stored[2:6, 2:20] |= 1 << 12  # a label drawn in the overlay plane
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Roe^Olga", "PX-7", "CT"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for elem, vr, value in ((0x0010, "US", 32), (0x0011, "US", 32), (0x0040, "CS", "G"), (0x0050, "SS", [1, 1]),
                            (0x0100, "US", 16), (0x0102, "US", 12)):  # fmt: skip
        ds.add_new(group << 16 | elem, vr, value)
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return pixels


@pytest.mark.parametrize("on_disk", [False, True], ids=["whole", "on-disk"])
def test_an_overlay_in_the_pixel_data_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: bool) -> None:
    """Overlay Data is X in Table E.1-1; an overlay kept in Pixel Data's unused bits goes too:
    its bits, and the overlay group that has a viewer draw them. The image's own bits stay."""
    from .test_large_inputs import leave_all_pixel_data_on_disk

    pixels = _overlaid_ct(tmp_path / "in" / "a.dcm", group=0x6002)
    _overlaid_ct(tmp_path / "in" / "b.dcm")
    if on_disk:
        leave_all_pixel_data_on_disk(monkeypatch)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False)
    assert result.ok and result.plan.files["pixel_clean"].to_list() == ["overlay", "overlay"]
    assert dict(result.rows())["pixels cleaned"] == "2 by removing the overlay in their pixels"
    for uri in result.outputs:
        out = pydicom.dcmread(uri.removeprefix("file://"))
        assert not [elem for elem in out if 0x6000 <= elem.tag.group <= 0x601E]
        stored = np.frombuffer(out.PixelData, dtype="<u2").reshape(32, 32)
        assert (stored == pixels).all() and out.BurnedInAnnotation == "NO"
    # off: left as it is, and said
    off = deidentify(tmp_path / "in", tmp_path / "off", key=KEY, vault=tmp_path / "v-off", batch_id="b", pixel_clean="off", progress=False)
    assert off.ok and "2 images at risk of burned-in text" in dict(off.rows())["pixels NOT cleaned"]
    assert all((np.frombuffer(pydicom.dcmread(u.removeprefix("file://")).PixelData, "<u2") >> 12).any() for u in off.outputs)


def test_overlays_with_their_own_data_or_none_are_not_embedded() -> None:
    from dicomframe.pixelclean import embedded_overlays

    elements = pl.DataFrame(
        {
            "file_id": [1, 1, 2, 2, 2, 3, 4],
            "tag_path": ["60000010", "60000102", "60000100", "60003000", "60000102", "60200102", "00400275[0].60000102"],
            "tag": [0x60000010, 0x60000102, 0x60000100, 0x60003000, 0x60000102, 0x60200102, 0x60000102],
        }
    )
    # 1: embedded; 2: Overlay Data of its own; 3: 6020 is not an overlay group; 4: inside a sequence
    assert embedded_overlays(elements).to_list() == [1]


def test_an_overlay_whose_data_is_removed_goes_whole(tmp_path: Path) -> None:
    """Overlay Data (60xx,3000) is X: the rest of its group goes with it, or it would describe
    an overlay a viewer takes from Pixel Data's low bit (and the audit would flag it)."""
    from dicomframe.phiaudit import audit_scan

    (tmp_path / "in").mkdir()
    shutil.copy(CORPUS / "pydicom" / "examples_overlay.dcm", tmp_path / "in")
    assert 0x60000102 in pydicom.dcmread(tmp_path / "in" / "examples_overlay.dcm")
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False)
    assert result.ok and result.plan.files["pixel_clean"].to_list() == [None]
    out = pydicom.dcmread(result.outputs[0].removeprefix("file://"))
    assert not [elem for elem in out if 0x6000 <= elem.tag.group <= 0x601E]
    assert audit_scan(scan(tmp_path / "out", progress=False), rules=["overlay_in_pixel_data"]).height == 0


@pytest.mark.parametrize("mode", ["auto", "rules", "off"])
def test_bytes_after_the_last_frame_go_and_the_frames_stay_byte_for_byte(tmp_path: Path, mode: str) -> None:
    """A native Pixel Data value longer than its frames: the bytes after the last frame are no
    image and may hide data (here a name). They go, in modes auto and rules, with no image at
    risk of burned-in text and no device rule; the frames stay byte for byte, and the output
    claims no pixel clean (BurnedInAnnotation and code 113101 left alone). Mode off writes the
    pixel data as it is (the audit's pixel_data_excess points it out)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()  # CT: no burned-in text risk
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Roe^Ulla", "PX001", "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 6, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    frames = np.arange(24, dtype="<u2").tobytes()
    ds.PixelData = frames + b"Roe^Ulla" * 4
    ds["PixelData"].VR = "OW"
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "ct.dcm", enforce_file_format=True)
    result = deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False, pixel_clean=mode
    )
    assert result.ok and result.written == 1
    out = pydicom.dcmread(result.outputs[0])
    if mode == "off":
        assert out.PixelData == ds.PixelData
        return
    assert out.PixelData == frames and b"Roe^Ulla" not in Path(result.outputs[0]).read_bytes()
    assert "BurnedInAnnotation" not in out
    assert "113101" not in [str(item.CodeValue) for item in out.DeidentificationMethodCodeSequence]
    assert ("pixels cleaned", "1 by removing bytes after the last frame") in result.rows()
