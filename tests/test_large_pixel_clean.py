"""Pixel clean of a large image: boxes blacked out in each chunk of a native value, or each
frame of a lossy compressed one as it is decoded, while the output is hashed and written
from the file (dicomframe.pixelclean.clean_streamed): the frames are never held together.

Every test compares against the image cleaned whole (decoded by pydicom, blacked out,
written again): the same pixel values, the same header.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import dicomframe._stream as stream
from dicomframe import pixelclean
from dicomframe.keys import ProjectKey, generate_key_file
from dicomframe.pipeline import deidentify

from .test_large_inputs import leave_all_pixel_data_on_disk, peak
from .test_pixelclean import needs_ocr

KEY = ProjectKey.from_bytes(bytes(range(9, 41)))

RULE = """[profile]
base = "default"

[[pixel]]
name = "acme banner"
match = { Manufacturer = "ACME" }
regions = [[0, 0, 4000, 4], [5, 7, 21, 9], [30, 12, 3, 30]]
"""

#: (photometric, bits allocated, bits stored, signed, samples, planar, transfer syntax)
LAYOUTS = {
    "mono8": ("MONOCHROME2", 8, 8, 0, 1, 0, ExplicitVRLittleEndian),
    "mono12": ("MONOCHROME2", 16, 12, 0, 1, 0, ExplicitVRLittleEndian),
    "signed16": ("MONOCHROME2", 16, 16, 1, 1, 0, ExplicitVRLittleEndian),
    "signed12-implicit": ("MONOCHROME2", 16, 12, 1, 1, 0, ImplicitVRLittleEndian),
    "monochrome1": ("MONOCHROME1", 16, 10, 0, 1, 0, ExplicitVRLittleEndian),
    "mono32": ("MONOCHROME2", 32, 32, 0, 1, 0, ExplicitVRLittleEndian),
    "rgb": ("RGB", 8, 8, 0, 3, 0, ExplicitVRLittleEndian),
    "rgb-planar": ("RGB", 8, 8, 0, 3, 1, ExplicitVRLittleEndian),
}


def _image(path: Path, layout: str, frames: int = 5, rows: int = 48, cols: int = 61) -> None:
    """A multi-frame ultrasound-like image of ``layout`` with fake PHI (odd width: rows do not
    end on a word)."""
    photometric, bits, stored, signed, samples, planar, ts = LAYOUTS[layout]
    rng = np.random.default_rng(len(layout))
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    shape = (frames, samples, rows, cols) if planar else (frames, rows, cols, samples)
    pixels = rng.integers(low, high, size=shape, endpoint=True, dtype=np.int64).astype(dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # multi-frame ultrasound
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Roe^Ulla", "PX-LARGE-7", "US"
    ds.Manufacturer, ds.BurnedInAnnotation = "ACME", "YES"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = rows, cols, frames, samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, signed
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True)


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _same_image(streamed: Path, whole: Path) -> None:
    """The same pixel values and the same header (the value's layout aside: cleaned whole, a
    planar image is written interleaved; left on disk, it keeps its layout)."""
    a, b = _read(streamed), _read(whole)
    assert np.array_equal(a.pixel_array, b.pixel_array)
    skip = {0x7FE00010, 0x00280006}
    assert [e for e in a if e.tag not in skip] == [e for e in b if e.tag not in skip]
    assert a.file_meta == b.file_meta


def count_streamed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each pixel clean was done on disk (True) or left to the whole-image path."""
    used: list[bool] = []
    real = pixelclean.clean_streamed

    def counted(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        used.append(found is not None)
        return found

    monkeypatch.setattr(pixelclean, "clean_streamed", counted)
    return used


def _run(src: Path, root: Path, name: str, **options: Any) -> Any:
    profile = root / "rule.toml"
    profile.write_text(RULE)
    return deidentify(src, root / name, key=KEY, vault=root / f"v-{name}", batch_id="b", profile=str(profile),
                      progress=False, **options)  # fmt: skip


def test_every_native_layout_is_cleaned_on_disk_as_it_is_cleaned_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for layout in LAYOUTS:
        _image(tmp_path / "in" / f"{layout}.dcm", layout)
    whole = _run(tmp_path / "in", tmp_path, "whole")
    assert whole.ok and whole.written == len(LAYOUTS)
    leave_all_pixel_data_on_disk(monkeypatch)
    monkeypatch.setattr(stream, "CHUNK", 1001)  # chunks end inside pixels, rows and boxes
    used = count_streamed(monkeypatch)
    streamed = _run(tmp_path / "in", tmp_path, "streamed")
    assert streamed.ok and streamed.written == len(LAYOUTS)
    assert used == [True] * len(LAYOUTS)
    pairs = sorted(zip(sorted(streamed.outputs), sorted(whole.outputs), strict=True))
    for out_streamed, out_whole in pairs:
        assert Path(out_streamed).name == Path(out_whole).name  # keyed names: the same instance
        _same_image(Path(out_streamed), Path(out_whole))
    planar = [_read(Path(p)) for p in streamed.outputs]
    assert sorted(int(ds.get("PlanarConfiguration", -1)) for ds in planar).count(1) == 1  # its layout kept
    for out in streamed.outputs:
        data = Path(out).read_bytes()
        assert b"Roe^Ulla" not in data and b"PX-LARGE-7" not in data
        ds = _read(Path(out))
        assert ds.BurnedInAnnotation == "NO" and "113101" in {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
        assert (ds.pixel_array[..., :4, :] if ds.SamplesPerPixel == 1 else ds.pixel_array[:, :4]).std() == 0  # banner


def test_the_manifest_sha256_is_that_of_the_cleaned_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    _image(tmp_path / "in" / "a.dcm", "mono12")
    leave_all_pixel_data_on_disk(monkeypatch)
    result = _run(tmp_path / "in", tmp_path, "out", manifest_parquet=True)
    assert result.ok
    data = Path(result.outputs[0]).read_bytes()
    assert pl.read_parquet(tmp_path / "out/b/manifest.parquet")["sha256"].to_list() == [hashlib.sha256(data).hexdigest()]


def test_what_cannot_be_cleaned_on_disk_is_cleaned_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lossless compressed with boxes, a colour model the mask does not know, or bytes after
    the last frame: cleaned whole, as before."""
    from pydicom.uid import RLELossless

    _image(tmp_path / "in" / "rgb.dcm", "rgb")
    ds = _read(tmp_path / "in" / "rgb.dcm")
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(tmp_path / "in" / "rle.dcm", enforce_file_format=True)
    (tmp_path / "in" / "rgb.dcm").unlink()
    _image(tmp_path / "in" / "ybr.dcm", "rgb")
    ds = _read(tmp_path / "in" / "ybr.dcm")
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(tmp_path / "in" / "ybr.dcm", enforce_file_format=True)
    _image(tmp_path / "in" / "trailing.dcm", "mono8")
    ds = _read(tmp_path / "in" / "trailing.dcm")
    ds.PixelData = ds.PixelData + b"Roe^Ulla" * 4  # bytes after the last frame: never written unmasked
    ds.save_as(tmp_path / "in" / "trailing.dcm", enforce_file_format=True)
    whole = _run(tmp_path / "in", tmp_path, "whole")
    leave_all_pixel_data_on_disk(monkeypatch)
    used = count_streamed(monkeypatch)
    streamed = _run(tmp_path / "in", tmp_path, "streamed")
    assert streamed.ok and whole.ok and streamed.written == whole.written == 3
    assert used == [False, False, False]
    for a, b in zip(sorted(streamed.outputs), sorted(whole.outputs), strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
        assert b"Roe^Ulla" not in Path(a).read_bytes()


def test_bytes_after_the_last_frame_go_from_an_input_read_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image with no rule and no risk of burned-in text, bytes after its last frame: they
    go whether its pixel data is read whole or left on disk, to the same output."""
    _image(tmp_path / "in" / "ct.dcm", "mono12")
    ds = _read(tmp_path / "in" / "ct.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT
    ds.Modality, ds.Manufacturer = "CT", "OTHER"
    del ds.BurnedInAnnotation
    frames = ds.PixelData
    ds.PixelData = frames + b"Roe^Ulla" * 4
    ds.save_as(tmp_path / "in" / "ct.dcm", enforce_file_format=True)
    whole = _run(tmp_path / "in", tmp_path, "whole")
    leave_all_pixel_data_on_disk(monkeypatch)
    streamed = _run(tmp_path / "in", tmp_path, "streamed")
    assert whole.ok and streamed.ok and whole.written == streamed.written == 1
    data = Path(streamed.outputs[0]).read_bytes()
    assert data == Path(whole.outputs[0]).read_bytes() and b"Roe^Ulla" not in data
    assert _read(Path(streamed.outputs[0])).PixelData == frames


@needs_ocr
def test_text_detection_reads_frames_from_disk_and_cleans_as_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cine loop of test_pixelclean, its name in the last frame only: found and blacked out on every frame."""
    from PIL import Image, ImageDraw, ImageFont

    frames = []
    for index in range(5):
        image = Image.new("L", (480, 160), 30)
        if index == 4:
            ImageDraw.Draw(image).text((20, 50), "ROE ULLA", fill=255, font=ImageFont.load_default(size=40))
        frames.append(np.asarray(image, dtype=np.uint8))
    _image(tmp_path / "in" / "cine.dcm", "mono8", rows=160, cols=480)
    ds = _read(tmp_path / "in" / "cine.dcm")
    ds.Manufacturer = "OTHER"  # no rule: text detection
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(tmp_path / "in" / "cine.dcm", enforce_file_format=True)
    whole = _run(tmp_path / "in", tmp_path, "whole")
    leave_all_pixel_data_on_disk(monkeypatch)
    used = count_streamed(monkeypatch)
    streamed = _run(tmp_path / "in", tmp_path, "streamed")
    assert used == [True] and streamed.plan.files["pixel_clean"].to_list() == ["ocr"]
    _same_image(Path(streamed.outputs[0]), Path(whole.outputs[0]))
    cleaned = _read(Path(streamed.outputs[0])).pixel_array
    text = frames[4] == 255
    assert (cleaned[4][text] == 0).all() and (cleaned[0][text] == 0).all()


def test_frames_changed_after_text_detection_read_them_fail_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What detection looked at is what is written: a frame changed since is a failed input."""
    changing = tmp_path / "in" / "a" / "changing.dcm"
    _image(changing, "mono8")  # 48 rows
    _image(tmp_path / "in" / "b" / "steady.dcm", "mono8", rows=40)
    first_frame = changing.stat().st_size - 5 * 48 * 61
    leave_all_pixel_data_on_disk(monkeypatch)
    changed: list[bool] = []

    def look(ds: Dataset, frame: int) -> Any:  # detection (finding nothing) without tesseract
        if int(ds.Rows) == 48 and not changed:  # frame 0 changes once it has been read
            with open(changing, "r+b") as fh:
                fh.seek(first_frame + 10)
                fh.write(b"\x5a" * 50)
            changed.append(True)
        return [], np.zeros((int(ds.Rows), int(ds.Columns)), dtype=np.uint8)

    monkeypatch.setattr(pixelclean, "_ocr_words", look)
    monkeypatch.setattr(pixelclean, "ocr_available", lambda: True)
    profile = tmp_path / "ocr.toml"
    profile.write_text('[profile]\nbase = "default"\n')
    used = count_streamed(monkeypatch)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b",
                        profile=str(profile), progress=False)  # fmt: skip
    assert used == [True, True] and changed
    assert [f["kind"] for f in result.failed] == ["unreadable"]
    assert "re-run" in result.failed[0]["reason"] and "Roe" not in result.failed[0]["reason"]
    assert result.written == 1 and len(list((tmp_path / "out").rglob("*.dcm"))) == 1
    assert not list((tmp_path / "out").rglob("*.tmp"))


@pytest.mark.parametrize("kind", ["native", "jpeg"])
def test_memory_stays_flat_when_cleaning_a_large_image(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "project.key"
    generate_key_file(key)
    profile = tmp_path / "rule.toml"
    profile.write_text(RULE)
    src = tmp_path / "large" / "one.dcm"
    if kind == "native":
        _image(src, "mono12", frames=200, rows=512, cols=512)  # 100 MiB of pixel data
        mode = "stream"
    else:  # 14 MiB of JPEG, 68 MiB decoded: left on disk whatever its size
        pytest.importorskip("libjpeg", reason="JPEG needs pylibjpeg-libjpeg (extra `ocr`)")
        _jpeg(src, colour=True, frames=90, rows=512, cols=512)
        mode = "stream-any-size"
    whole = peak(tmp_path, src.parent, key, "whole", "whole", str(profile))
    streamed = peak(tmp_path, src.parent, key, "stream", mode, str(profile))
    decoded = 200 * 512 * 512 * 2 if kind == "native" else 90 * 512 * 512 * 3
    # cleaned whole: the input, its frames decoded, and written again; on disk: a chunk or a
    # frame at a time (measured: native 4 MiB against 592 MiB; JPEG 13 MiB against 311 MiB,
    # about 12 MiB of it the decoder's own, the same for 10 frames as for 180)
    assert whole > 2 * decoded
    assert streamed < (0.1 if kind == "native" else 0.3) * decoded, (streamed, decoded)
    a = _read(next((tmp_path / "out-stream/b").rglob("*.dcm")))
    b = _read(next((tmp_path / "out-whole/b").rglob("*.dcm")))
    assert np.array_equal(a.pixel_array, b.pixel_array)


@needs_ocr
def test_every_corpus_image_at_risk_is_cleaned_on_disk_as_it_is_cleaned_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real images written by others: rules aside, text detection decides the boxes."""
    from .test_pixelclean import _corpus_at_risk

    files = [str(p) for p in _corpus_at_risk()]
    assert len(files) >= 10
    options: dict[str, Any] = {"key": KEY, "batch_id": "b", "progress": False, "keep_flagged": True}
    whole = deidentify(files, tmp_path / "whole", vault=tmp_path / "v1", **options)
    leave_all_pixel_data_on_disk(monkeypatch)
    used = count_streamed(monkeypatch)
    streamed = deidentify(files, tmp_path / "streamed", vault=tmp_path / "v2", **options)
    assert sum(used) >= 5  # the native ones; the compressed ones are cleaned whole
    assert [(f["input"], f["kind"]) for f in streamed.failed] == [(f["input"], f["kind"]) for f in whole.failed]
    assert streamed.written == whole.written >= 10
    names = {Path(p).relative_to(tmp_path / "whole") for p in whole.outputs}
    assert names == {Path(p).relative_to(tmp_path / "streamed") for p in streamed.outputs}
    for name in sorted(names):
        _same_image(tmp_path / "streamed" / name, tmp_path / "whole" / name)
    assert streamed.findings.equals(whole.findings)


def _jpeg(path: Path, colour: bool, frames: int = 6, fragments_per_frame: int = 1, rows: int = 96, cols: int = 128) -> None:
    """A lossy JPEG baseline cine loop (Pillow's encoder), ``fragments_per_frame`` fragments each."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    _image(path, "rgb" if colour else "mono8", frames=frames, rows=rows, cols=cols)
    ds = _read(path)
    rng = np.random.default_rng(3)
    encoded = []
    for _ in range(frames):
        shape = (rows, cols, 3) if colour else (rows, cols)
        image = np.clip(rng.normal(100, 30, size=shape), 0, 255).astype(np.uint8)
        image[2:14, 4:80] = 250
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        step = -(-len(data) // fragments_per_frame)
        step += step % 2
        encoded.append([data[i : i + step] for i in range(0, len(data), step)])
    if fragments_per_frame == 1:
        ds.PixelData = encapsulate([parts[0] for parts in encoded])
    else:  # no offset table: pydicom finds each frame's end by its JPEG end-of-image marker
        items = b"".join(
            b"\xfe\xff\x00\xe0" + (len(p) + len(p) % 2).to_bytes(4, "little") + p + b"\0" * (len(p) % 2)
            for parts in encoded
            for p in parts
        )
        ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + items + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    if colour:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.save_as(path, enforce_file_format=True)


def test_a_lossy_cine_loop_is_decoded_a_frame_at_a_time_as_it_is_cleaned_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("libjpeg", reason="JPEG needs pylibjpeg-libjpeg (extra `ocr`)")
    from pydicom.uid import RLELossless

    _jpeg(tmp_path / "in" / "colour.dcm", colour=True)
    _jpeg(tmp_path / "in" / "grey.dcm", colour=False)
    _jpeg(tmp_path / "in" / "split.dcm", colour=False, fragments_per_frame=3)
    _image(tmp_path / "in" / "rle.dcm", "mono12")
    ds = _read(tmp_path / "in" / "rle.dcm")
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(tmp_path / "in" / "rle.dcm", enforce_file_format=True)
    whole = _run(tmp_path / "in", tmp_path, "whole")
    assert whole.ok and whole.written == 4
    leave_all_pixel_data_on_disk(monkeypatch)
    monkeypatch.setattr(stream, "CHUNK", 1001)
    used = count_streamed(monkeypatch)
    streamed = _run(tmp_path / "in", tmp_path, "streamed")
    assert streamed.ok and streamed.written == 4
    assert sorted(used) == [False, True, True, True]  # RLE, lossless: compressed again, whole
    for a, b in zip(sorted(streamed.outputs), sorted(whole.outputs), strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()  # byte for byte
        out = _read(Path(a))
        assert out.BurnedInAnnotation == "NO"
        if out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian:  # the JPEG ones: native now
            assert out.LossyImageCompression == "01" and int(out.NumberOfFrames) == 6
            assert (out.pixel_array[:, :4] == 0).all()  # the rule's banner, black on every frame
