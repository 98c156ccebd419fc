"""Large inputs: the writer hashes and writes a big Pixel Data value from the file, a chunk at a
time, instead of holding the input whole (see dicomframe._stream).

Every test compares against the input read whole: the outputs must be the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

import dicomframe._stream as stream
import dicomframe.apply
from dicomframe.keys import ProjectKey, generate_key_file
from dicomframe.pipeline import deidentify

from .conftest import corpus_dicom_files

KEY = ProjectKey.from_bytes(bytes(range(32)))


def _outputs(batch: Path) -> dict[str, bytes]:
    return {str(p.relative_to(batch)): p.read_bytes() for p in sorted(batch.rglob("*.dcm"))}


def _big(path: Path, frames: int, encapsulated: bool = False, rows: int = 512, cols: int = 512) -> bytes:
    """A multi-frame image with fake PHI, at ``path``; returns its Pixel Data value."""
    ds = Dataset()
    ds.PatientName = "LARGE^PATIENT"
    ds.PatientID = "MRN-LARGE-1"
    ds.PatientBirthDate = "19600101"
    ds.StudyDate = "20240102"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR: no burned-in text expected
    ds.Modality = "MR"
    ds.BurnedInAnnotation = "NO"
    ds.InstitutionName = "Large General Hospital"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelRepresentation = 0
    rng = __import__("random").Random(frames)
    if encapsulated:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        # fragments of uneven sizes (the rewriter never decodes them)
        fragments = [rng.randbytes(2 * rng.randrange(5_000, 40_000)) for _ in range(frames)]
        ds.PixelData = encapsulate(fragments)
        ts = JPEGBaseline8Bit
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelData = rng.randbytes(rows * cols * 2 * frames)
        ts = ExplicitVRLittleEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return bytes(ds.PixelData)


def leave_all_pixel_data_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every input with pixel data leaves it on disk, however small (and no piece is joined)."""
    import dicomframe.rewrite

    monkeypatch.setattr(stream, "STREAM_BYTES", 1)
    monkeypatch.setattr(stream, "_HOLE_MIN", 16)
    monkeypatch.setattr(dicomframe.rewrite, "_VIEW_MIN", 0)


@pytest.fixture()
def stream_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    leave_all_pixel_data_on_disk(monkeypatch)


def _count_sparse(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    seen = {"native": 0, "encapsulated": 0}
    real = stream._stand_in
    load = stream._load_sparse

    def stand_in(mm: Any, start: int, stop: int) -> None:
        seen["encapsulated"] += 1
        real(mm, start, stop)

    def counting(src: stream.Input) -> Any:
        mm = load(src)
        seen["native"] += mm is not None
        return mm

    monkeypatch.setattr(stream, "_stand_in", stand_in)
    monkeypatch.setattr(stream, "_load_sparse", counting)
    return seen


def test_every_corpus_file_gives_the_same_output_with_its_pixel_data_left_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [str(p) for p in corpus_dicom_files()]
    whole = deidentify(files, tmp_path / "whole", key=KEY, vault=tmp_path / "v1", batch_id="b", progress=False, pixel_clean="off")
    leave_all_pixel_data_on_disk(monkeypatch)
    seen = _count_sparse(monkeypatch)
    streamed = deidentify(files, tmp_path / "streamed", key=KEY, vault=tmp_path / "v2", batch_id="b", progress=False, pixel_clean="off")
    assert seen["native"] > 40 and seen["encapsulated"] > 5  # both kinds were streamed
    assert streamed.written == whole.written > 70
    assert [(f["input"], f["kind"]) for f in streamed.failed] == [(f["input"], f["kind"]) for f in whole.failed]
    assert _outputs(tmp_path / "streamed" / "b") == _outputs(tmp_path / "whole" / "b")
    assert streamed.findings.equals(whole.findings)


@pytest.mark.parametrize("encapsulated", [False, True], ids=["native", "encapsulated"])
def test_a_large_multiframe_image_keeps_its_pixel_bytes_and_loses_its_phi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encapsulated: bool
) -> None:
    monkeypatch.setattr(stream, "STREAM_BYTES", 4 << 20)
    monkeypatch.setattr(stream, "CHUNK", 1 << 20)  # several chunks per value
    pixels = _big(tmp_path / "in" / "big.dcm", frames=400 if encapsulated else 24, encapsulated=encapsulated)
    seen = _count_sparse(monkeypatch)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b",
                        progress=False, manifest_parquet=True)  # fmt: skip
    assert result.ok and result.written == 1
    assert seen == {"native": 1, "encapsulated": int(encapsulated)}
    out = Path(result.outputs[0])
    ds = pydicom.dcmread(out)
    assert bytes(ds.PixelData) == pixels
    assert ds.PatientName != "LARGE^PATIENT" and ds.get("InstitutionName") != "Large General Hospital"
    data = out.read_bytes()
    assert b"LARGE^PATIENT" not in data and b"MRN-LARGE-1" not in data and b"Large General" not in data
    # the manifest's sha256 is that of the bytes written
    assert pl.read_parquet(tmp_path / "out/b/manifest.parquet")["sha256"].to_list() == [hashlib.sha256(data).hexdigest()]
    assert not list((tmp_path / "out").rglob("*.tmp"))


_CHILD = """
import os, sys, threading
import dicomframe._stream as stream
import dicomframe.apply as apply
from dicomframe.pipeline import deidentify
if sys.argv[5] == "whole":
    stream.STREAM_BYTES = 1 << 62
elif sys.argv[5] == "stream-any-size":
    stream.STREAM_BYTES = 1
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
grown = []
real = apply.apply_chunk
def apply_chunk(*args, **kwargs):
    # what writing adds to the memory of the process: sampled every millisecond while it runs
    # (the key's KDF and the vault's, before and after, are not the writer's)
    start, peak, done = rss(), [0], threading.Event()
    def sample():
        while not done.wait(0.001):
            peak[0] = max(peak[0], rss() - start)
    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        return real(*args, **kwargs)
    finally:
        done.set()
        watcher.join()
        grown.append(max(peak[0], rss() - start))
apply.apply_chunk = apply_chunk
result = deidentify(sys.argv[1], sys.argv[2], key=sys.argv[3], vault=sys.argv[4], batch_id="b", progress=False, jobs=1,
                    profile=sys.argv[6])
assert result.ok and result.written == 1, result.failed
print(max(grown))
"""


def peak(tmp_path: Path, src: Path, key: Path, name: str, mode: str, profile: str = "default") -> int:
    """What writing ``src`` adds to a process's memory at its peak (``mode``: ``whole`` reads
    every input whole, ``stream-any-size`` leaves the pixel data of every input on disk,
    else of those of :data:`STREAM_BYTES` or more), measured in a child; the outputs go to
    ``tmp_path/out-<name>``."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(tmp_path / f"out-{name}"), str(key), str(tmp_path / f"v-{name}"), mode,
         profile],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1])


def test_memory_stays_flat_when_writing_a_large_input(tmp_path: Path) -> None:
    key = tmp_path / "project.key"
    generate_key_file(key)
    _big(tmp_path / "large" / "one.dcm", frames=200)  # 100 MiB of pixel data
    size = (tmp_path / "large" / "one.dcm").stat().st_size
    read_whole = peak(tmp_path, tmp_path / "large", key, "whole", "whole")
    streamed = peak(tmp_path, tmp_path / "large", key, "streamed", "stream")
    # read whole, the input shows in what writing adds to memory; left on disk, a chunk does
    assert read_whole > 0.9 * size
    assert streamed < 0.1 * size, (streamed, size)
    assert _outputs(tmp_path / "out-streamed/b") == _outputs(tmp_path / "out-whole/b") != {}


def _change_after_hashing(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Change the input between the hash of its output and its write."""
    real = dicomframe.apply._digest

    def digest(pieces: Any) -> tuple[str, int]:
        found = real(pieces)
        for piece in pieces:
            if isinstance(piece, stream.FileRange):
                change(piece.src.fd, piece.start, piece.stop)
        return found

    monkeypatch.setattr(dicomframe.apply, "_digest", digest)


def _overwrite(path: Path) -> Any:
    def change(_fd: int, start: int, stop: int) -> None:
        with open(path, "r+b") as fh:
            fh.seek((start + stop) // 2)
            fh.write(b"\x5a" * 64)

    return change


def _shorten(path: Path) -> Any:
    def change(_fd: int, start: int, stop: int) -> None:
        os.truncate(path, (start + stop) // 2)

    return change


@pytest.mark.parametrize(("how", "kind"), [(_overwrite, "unreadable"), (_shorten, "truncated")])
def test_an_input_changed_while_written_is_a_failed_input_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream_everything: None, how: Any, kind: str
) -> None:
    big = tmp_path / "in" / "a" / "big.dcm"
    _big(big, frames=4)
    _big(tmp_path / "in" / "b" / "other.dcm", frames=2)
    _change_after_hashing(monkeypatch, lambda fd, a, b: how(big)(fd, a, b) if os.fstat(fd).st_ino == big.stat().st_ino else None)
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b",
                        progress=False)  # fmt: skip
    assert not result.ok and result.written == 1
    assert [f["kind"] for f in result.failed] == [kind]
    reason = result.failed[0]["reason"]
    assert "re-run" in reason and "LARGE" not in reason
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1  # the other input only
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_a_large_input_truncated_inside_its_pixel_data_is_reported_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _big(tmp_path / "in" / "big.dcm", frames=8)
    with open(tmp_path / "in" / "big.dcm", "r+b") as fh:
        fh.truncate(os.fstat(fh.fileno()).st_size - 1000)
    whole = deidentify(tmp_path / "in", tmp_path / "o1", key=KEY, vault=tmp_path / "v1", batch_id="b", progress=False, pixel_clean="off")
    monkeypatch.setattr(stream, "STREAM_BYTES", 1)
    streamed = deidentify(tmp_path / "in", tmp_path / "o2", key=KEY, vault=tmp_path / "v2", batch_id="b",
                          progress=False)  # fmt: skip
    assert [f["kind"] for f in streamed.failed] == [f["kind"] for f in whole.failed] == ["truncated"]
    assert streamed.failed[0]["reason"] == whole.failed[0]["reason"]


@pytest.mark.parametrize("total", [16, 1 << 20, 0xFFFFFFF8, 0xFFFFFFF8 + 4, 0xFFFFFFF8 + 8, 0xFFFFFFF8 + 12, 3 << 32])
def test_stand_in_items_fill_a_hole_of_any_length_exactly(total: int) -> None:
    """Stand-in fragment items (32-bit lengths) end exactly where the hole ends, also past 4 GiB."""
    import struct

    written: dict[int, bytes] = {}

    class Recorder:
        def __setitem__(self, where: slice, data: bytes) -> None:
            written[where.start] = data

    start = 1000
    stream._stand_in(Recorder(), start, start + total)  # type: ignore[arg-type]
    pos = start
    while pos < start + total:
        group, element, length = struct.unpack("<HHI", written.pop(pos))
        assert (group, element) == (0xFFFE, 0xE000) and length != 0xFFFFFFFF
        pos += 8 + length
    assert pos == start + total and not written
