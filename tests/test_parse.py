"""The fast header walker agrees with pydicom, file by file, and never crashes a batch."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from dicomframe._parse import BytesReader, _cwalk, parse_file, pydicom_rows
from dicomframe._worker import attributes_from_rows, read_file_rows
from dicomframe.errors import ParseError
from dicomframe.sources import FileRef

from .conftest import CORPUS, corpus_dicom_files


def _comparable(rows: list) -> dict[str, tuple]:
    out = {}
    for path, tag, vr, vm, value, creator, depth, length, offset in rows:
        if depth == 0 and tag >> 16 == 0x7FE0:
            continue  # the fast walker records Pixel Data's header; pydicom stops before it
        if vr == "PN" and value:
            value = value.rstrip("=")
        out[path] = (vr, vm, value, creator, depth)
    return out


@pytest.mark.parametrize("path", corpus_dicom_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_fast_walker_matches_pydicom(path: Path) -> None:
    data = path.read_bytes()
    try:
        reference, _ = pydicom_rows(io.BytesIO(data))
    except ParseError as exc:
        with pytest.raises(ParseError) as fast_exc:
            parse_file(BytesReader(data))
        assert fast_exc.value.kind in {"not_dicom", "dicomdir", "corrupt", "truncated"}, exc
        return
    try:
        fast, info = parse_file(BytesReader(data))
    except ParseError as exc:
        # only non-standard files may be refused by both paths; say which
        assert exc.kind in {"not_dicom", "dicomdir"}, f"{exc.kind}: {exc}"
        return
    assert _comparable(fast) == _comparable(reference)
    assert info.parser == "fast"


def _outcome(data: bytes, accelerate: bool) -> tuple:
    try:
        rows, info = parse_file(BytesReader(data), accelerate=accelerate)
    except ParseError as exc:
        return ("error", exc.kind, str(exc))
    if info.attributes is not None:
        # the C walker collects the top-level attributes on the way: the same as from the rows
        assert info.attributes == attributes_from_rows(rows)
        info.attributes = None
    return ("ok", rows, info)


@pytest.mark.skipif(_cwalk is None, reason="the C accelerator is not built")
@pytest.mark.parametrize("path", corpus_dicom_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_c_accelerator_matches_the_python_walker(path: Path) -> None:
    data = path.read_bytes()
    assert _outcome(data, True) == _outcome(data, False)


@pytest.mark.skipif(_cwalk is None, reason="the C accelerator is not built")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["pydicom/CT_small.dcm", "pydicom/rtplan.dcm", "pydicom/MR_small_implicit.dcm",
                          "pydicom-data/OBXXXX1A_rle_2frame.dcm", "pydicom/charset_files/chrX1.dcm"]),
    cut=st.floats(min_value=0.0, max_value=1.0),
    first_read=st.sampled_from([64, 300, 4096, 16384]),
)
def test_c_and_python_agree_on_every_cut(name: str, cut: float, first_read: int) -> None:
    data = (CORPUS / name).read_bytes()
    data = data[: int(len(data) * cut)]
    results = []
    for accelerate in (True, False):
        try:
            rows, info = parse_file(BytesReader(data), first_read, accelerate=accelerate)
            results.append(("ok", rows, info.pixel_data_offset, info.pixel_data_length))
        except ParseError as exc:
            results.append(("error", exc.kind))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrArab.dcm", "قباني^لنزار"),
    ],
)
def test_character_sets_are_decoded(name: str, expected: str) -> None:
    data = (CORPUS / "pydicom" / "charset_files" / name).read_bytes()
    rows, _ = parse_file(BytesReader(data))
    value = next(r[4] for r in rows if r[1] == 0x00100010 and r[6] == 0)
    assert value.rstrip("=") == expected
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.decode()
    assert value.rstrip("=") == str(ds.PatientName).rstrip("=")


def _nested_dataset(levels: int, ts: str) -> bytes:
    ds = Dataset()
    ds.PatientName = "Nested^Test"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    inner = ds
    for level in range(levels):
        item = Dataset()
        item.CodeValue = f"L{level}"
        item.CodeMeaning = "level"
        inner.ContentSequence = Sequence([item])
        inner = item
    inner.TextValue = "deepest"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_deep_nesting_is_flattened_with_paths(ts: str) -> None:
    rows, _ = parse_file(BytesReader(_nested_dataset(12, ts)))
    deepest = [r for r in rows if r[1] == 0x0040A160]
    assert len(deepest) == 1
    path, _, vr, _vm, value, _, depth, _, _ = deepest[0]
    assert value == "deepest" and vr == "UT" and depth == 12
    assert path == "0040A730[0]." * 12 + "0040A160"
    sequences = [r for r in rows if r[2] == "SQ"]
    assert len(sequences) == 12 and all(r[3] == 1 for r in sequences)


def test_private_creators_are_resolved_at_every_depth() -> None:
    data = (CORPUS / "pydicom-data" / "OBXXXX1A_rle_2frame.dcm").read_bytes()
    rows, _ = parse_file(BytesReader(data))
    private = [r for r in rows if (r[1] >> 16) & 1 and (r[1] & 0xFFFF) > 0xFF]
    assert private and all(r[5] for r in private)
    assert {r[6] for r in private} >= {0, 1}
    assert "Philips US Imaging DD 109" in {r[5] for r in private if r[6] == 1}


CT_SMALL = CORPUS / "pydicom" / "CT_small.dcm"


def test_empty_file_is_reported() -> None:
    with pytest.raises(ParseError) as exc:
        parse_file(BytesReader(b""))
    assert exc.value.kind == "empty"
    assert "empty" in str(exc.value)


def test_truncated_pixel_data_is_reported() -> None:
    data = CT_SMALL.read_bytes()
    _, info = parse_file(BytesReader(data))
    assert info.pixel_data_offset and info.pixel_data_length
    with pytest.raises(ParseError) as exc:
        parse_file(BytesReader(data[: info.pixel_data_offset + info.pixel_data_length // 2]))
    assert exc.value.kind == "truncated"
    assert "Pixel Data" in str(exc.value) and "copy it again" in str(exc.value)


def test_file_cut_inside_an_element_is_truncated() -> None:
    data = CT_SMALL.read_bytes()
    rows, _ = parse_file(BytesReader(data))
    name = next(r for r in rows if r[1] == 0x00100010)
    with pytest.raises(ParseError) as exc:
        parse_file(BytesReader(data[: name[8] + 2]))
    assert exc.value.kind == "truncated"
    assert "(0010,0010)" in str(exc.value)
    # the message names the tag and offset, never the value
    assert name[4] not in str(exc.value)


@pytest.mark.parametrize("accelerate", [True, False], ids=["c", "python"])
@pytest.mark.parametrize("vr", ["OB", "UN", "OW"])
def test_bulk_data_the_file_does_not_hold_is_truncated(accelerate: bool, vr: str) -> None:
    """The walker does not read bulk values, but a file must hold them: a last element
    declaring 2 GB in a small file is as truncated for the scan as for the rewrite."""
    data = CT_SMALL.read_bytes()
    _, info = parse_file(BytesReader(data))
    cut = data[: info.pixel_data_offset - 12]  # up to Pixel Data's header
    head = (0x7FE1).to_bytes(2, "little") + (0x1001).to_bytes(2, "little") + vr.encode() + b"\0\0"
    for declared in (0x7FFFFFF0, 4000):
        damaged = cut + head + declared.to_bytes(4, "little") + b"x" * 2000
        if accelerate and _cwalk is None:
            pytest.skip("the C accelerator is not built")
        with pytest.raises(ParseError) as exc:
            parse_file(BytesReader(damaged), accelerate=accelerate)
        assert exc.value.kind == "truncated" and "copy it again" in str(exc.value)
    whole = cut + head + (2000).to_bytes(4, "little") + b"x" * 2000  # the same, whole: fine
    got, _ = parse_file(BytesReader(whole), accelerate=accelerate)
    assert got[-1][1] == 0x7FE11001 and got[-1][7] == 2000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=CT_SMALL.stat().st_size - 1))
def test_any_cut_is_an_error_or_a_clean_prefix(cut: int) -> None:
    data = CT_SMALL.read_bytes()
    full, _ = parse_file(BytesReader(data))
    try:
        rows, _ = parse_file(BytesReader(data[:cut]))
    except ParseError as exc:
        assert exc.kind in {"truncated", "not_dicom", "empty", "corrupt"}
        return
    # a cut exactly between two elements is a shorter, valid dataset
    assert rows == full[: len(rows)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.binary(min_size=1, max_size=400).map(lambda b: bytes(128) + b"DICM" + b),
        st.binary(min_size=1, max_size=400).map(
            lambda b: CT_SMALL.read_bytes()[:1500] + b
        ),
    )
)
def test_garbage_never_crashes_a_batch(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(data)
    try:
        _rows, _info = read_file_rows(FileRef(0, str(path), len(data)), None)
    except ParseError as exc:
        assert exc.kind in {"truncated", "not_dicom", "empty", "corrupt", "unreadable"}
        assert str(exc)


def test_rows_read_without_the_attributes_are_the_same_rows() -> None:
    """The writers' read-back (attributes=False) gives the rows a scan gives, for every corpus file."""
    from dicomframe._parse import BytesReader, parse_file
    from dicomframe.errors import ParseError

    from .conftest import corpus_dicom_files

    compared = 0
    for path in corpus_dicom_files():
        data = path.read_bytes()
        try:
            rows, info = parse_file(BytesReader(data))
        except ParseError:
            continue
        bare, bare_info = parse_file(BytesReader(data), attributes=False)
        assert bare == rows and bare_info.attributes is None
        assert (bare_info.transfer_syntax, bare_info.pixel_data_offset) == (info.transfer_syntax, info.pixel_data_offset)
        compared += 1
    assert compared > 50
