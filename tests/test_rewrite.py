"""Writing de-identified files back: what is kept is copied, what is not is gone.

Every scenario checks the output with pydicom (read without ``force`` and with
warnings turned into errors) and, where rows matter, with dicomframe's own walker.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomframe._parse import BytesReader, Row, parse_file
from dicomframe.errors import ParseError, UserInputError
from dicomframe.rewrite import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    KEEP,
    Edit,
    Keep,
    NewElement,
    Set,
    native_pixel_bytes,
    rewrite,
)

from .conftest import CORPUS, corpus_dicom_files

CT_SMALL = CORPUS / "pydicom" / "CT_small.dcm"  # explicit VR LE, private blocks, FFFC padding
RTPLAN = CORPUS / "pydicom" / "rtplan.dcm"  # implicit VR LE, sequences three levels deep
MR_BIG = CORPUS / "pydicom" / "MR_small_bigendian.dcm"  # explicit VR big endian
IMAGE_DFL = CORPUS / "pydicom" / "image_dfl.dcm"  # deflated explicit VR LE
REPORT_DFL = CORPUS / "dcm4che" / "report_dfl"  # deflated SR content tree
NO_PREAMBLE = CORPUS / "pydicom-data" / "JLSL_RGB_ILV1.dcm"  # file meta, no preamble
NO_META = CORPUS / "pydicom-data" / "OT-PAL-8-face.dcm"  # neither preamble nor file meta
RTSTRUCT_NO_META = CORPUS / "pydicom" / "rtstruct.dcm"
UN_SEQUENCE = CORPUS / "pydicom" / "UN_sequence.dcm"  # a sequence encoded as UN
NESTED_PRIV_SQ = CORPUS / "pydicom" / "nested_priv_SQ.dcm"  # implicit private sequences
JPEG = CORPUS / "pydicom" / "JPGExtended.dcm"  # encapsulated Pixel Data
COLOR_PL = CORPUS / "pydicom-data" / "color-pl.dcm"  # group length elements in the data set

META_TAGS = {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}


# -- helpers ----------------------------------------------------------------------------


def _rows(data: bytes) -> list[Row]:
    return parse_file(BytesReader(data))[0]


def _keep_all(rows: Iterable[Row]) -> dict[str, Edit]:
    return {row[0]: KEEP for row in rows}


def _read(out: bytes) -> Dataset:
    """pydicom reads the output without force and without any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = pydicom.dcmread(io.BytesIO(out))
        for elem in ds.file_meta:
            _ = elem.value
    return ds


def _read_all(out: bytes) -> Dataset:
    """As :func:`_read`, and every value converts without a warning too."""
    ds = _read(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = [elem.value for elem in ds.iterall()]
    return ds


def _read_input(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _elements(
    ds: Dataset, paths: set[str] | None = None, prefix: str = ""
) -> list[tuple[Any, ...]]:
    """(tag_path, VR, value) of every element, sequences flattened, as pydicom sees them.

    Group lengths and File Meta are left out (they are regenerated); with ``paths``,
    only elements whose path is in it (the rows the scan saw).
    """
    out: list[tuple[Any, ...]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for elem in ds:
            tag = int(elem.tag)
            if tag & 0xFFFF == 0 or tag >> 16 == 0x0002:
                continue
            path = f"{prefix}{tag:08X}"
            if paths is not None and path not in paths:
                continue
            if elem.VR == "SQ":
                out.append((path, "SQ", len(elem.value)))
                for k, item in enumerate(elem.value):
                    out.extend(_elements(item, paths, f"{path}[{k}]."))
            else:
                out.append((path, elem.VR, elem.value))
    return out


def _dataset_rows(data: bytes) -> list[tuple[str, str, str | None]]:
    """(tag_path, vr, value) of the data set rows dicomframe's walker makes."""
    return [
        (r[0], r[2], r[4])
        for r in _rows(data)
        if not (r[6] == 0 and r[1] >> 16 == 0x0002) and r[1] & 0xFFFF != 0
    ]


def _meta_tags(ds: Dataset) -> set[int]:
    return {int(elem.tag) for elem in ds.file_meta}


def _path_of(rows: list[Row], keyword_tag: int, depth: int = 0) -> str:
    return next(r[0] for r in rows if r[1] == keyword_tag and r[6] == depth)


# -- every corpus file, everything kept ----------------------------------------------------


def _corpus_rows(path: Path) -> tuple[bytes, list[Row], Any] | None:
    data = path.read_bytes()
    try:
        rows, info = parse_file(BytesReader(data))
    except ParseError:
        return None
    return data, rows, info


@pytest.mark.parametrize("path", corpus_dicom_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_keeping_every_row_reproduces_the_file(path: Path) -> None:
    found = _corpus_rows(path)
    if found is None:
        pytest.skip("the scan refuses this file (DICOMDIR or not DICOM)")
    data, rows, info = found

    out = rewrite(data, _keep_all(rows))

    assert out[:132] == bytes(128) + b"DICM"
    ds = _read(out)
    original = _read_input(data)
    paths = {r[0] for r in rows}
    assert _elements(ds) == _elements(original, paths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds.get("PixelData") == original.get("PixelData")
    assert ds.file_meta.TransferSyntaxUID == info.transfer_syntax
    assert _meta_tags(ds) <= META_TAGS
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    # dicomframe's own walker sees the same rows again
    assert _dataset_rows(out) == _dataset_rows(data)


#: elements whose removal changes how pydicom decodes the others (not what this test is about)
_DECODING_CONTEXT = {"00080005", "00280100", "00280103"}


def _apply_with_pydicom(ds: Dataset, edits: Mapping[str, Edit], prefix: str = "") -> None:
    """The reference: the same edits applied to a pydicom dataset (text Sets only)."""
    for elem in list(ds):
        tag = int(elem.tag)
        path = f"{prefix}{tag:08X}"
        edit = edits.get(path)
        if tag & 0xFFFF == 0 or edit is None:
            del ds[tag]
        elif isinstance(edit, Set):
            assert isinstance(edit.value, str)
            ds.add_new(tag, edit.vr, edit.value)
        elif elem.VR == "SQ":
            for k, item in enumerate(elem.value):
                _apply_with_pydicom(item, edits, f"{path}[{k}].")
    for path, edit in edits.items():
        if isinstance(edit, Set) and path.startswith(prefix) and "." not in path[len(prefix) :]:
            tag = int(path[len(prefix) :], 16)
            if tag not in ds:
                assert isinstance(edit.value, str)
                ds.add_new(tag, edit.vr, edit.value)


@pytest.mark.parametrize("path", corpus_dicom_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_a_deidentification_matches_the_same_edits_done_with_pydicom(path: Path) -> None:
    found = _corpus_rows(path)
    if found is None:
        pytest.skip("the scan refuses this file (DICOMDIR or not DICOM)")
    data, rows, _ = found
    kept = {r[0] for k, r in enumerate(rows) if k % 3 or r[0] in _DECODING_CONTEXT}
    edits: dict[str, Edit] = {p: KEEP for p in _with_creators(rows, kept)}
    edits["00100010"] = Set("PN", "CloudStudy^AB12")
    edits["00120062"] = Set("CS", "YES")
    if any(r[0] == "00080020" for r in rows):
        edits["00080020"] = Set("DA", "20000101")

    out = rewrite(data, edits)

    reference = _read_input(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _apply_with_pydicom(reference, edits)
    ds = _read(out)
    assert _elements(ds) == _elements(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds.get("PixelData") == reference.get("PixelData")


def test_kept_elements_are_copied_byte_for_byte() -> None:
    data = RTPLAN.read_bytes()  # no group lengths, no trailing padding
    rows = _rows(data)
    out = rewrite(data, _keep_all(rows))
    first = next(r[8] for r in rows if r[6] == 0 and r[1] >> 16 != 2)
    assert first is not None
    assert out[_meta_end(out) :] == data[first - 8 :]  # implicit VR: 8-byte headers


# -- removing ----------------------------------------------------------------------------


def test_a_removed_patient_name_is_gone_and_the_rest_stays() -> None:
    data = CT_SMALL.read_bytes()
    rows = _rows(data)
    edits = _keep_all(rows)
    del edits["00100010"]

    ds = _read(rewrite(data, edits))

    assert "PatientName" not in ds
    assert ds.PatientID == _read_input(data).PatientID
    assert ds.PixelData == _read_input(data).PixelData


def test_a_removed_nested_element_leaves_its_item_and_siblings() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    nested = next(r for r in rows if r[6] == 2 and r[2] != "SQ")
    edits = _keep_all(rows)
    del edits[nested[0]]

    ds = _read_all(rewrite(data, edits))

    before = _elements(_read_input(data))
    after = _elements(ds)
    assert [e for e in before if e[0] != nested[0]] == after


def test_a_removed_sequence_takes_all_its_items_with_it() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    beams = _path_of(rows, 0x300A00B0)  # BeamSequence
    edits = _keep_all(rows)  # every nested row is still in the edits
    del edits[beams]

    ds = _read_all(rewrite(data, edits))

    assert "BeamSequence" not in ds
    assert not [e for e in _elements(ds) if e[0].startswith(beams)]
    assert "FractionGroupSequence" in ds


def test_a_removed_private_block_leaves_no_element_of_that_group() -> None:
    data = CT_SMALL.read_bytes()
    rows = _rows(data)
    edits = {path: e for path, e in _keep_all(rows).items() if not path.startswith("0019")}

    ds = _read(rewrite(data, edits))

    assert not [elem for elem in ds if elem.tag.group == 0x0019]
    assert [elem for elem in ds if elem.tag.group == 0x0021]


def test_an_item_whose_elements_are_all_removed_stays_as_an_empty_item() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    doses = _path_of(rows, 0x300A0010)  # DoseReferenceSequence, two items
    edits = {p: e for p, e in _keep_all(rows).items() if not p.startswith(doses + "[")}

    ds = _read_all(rewrite(data, edits))

    original = _read_input(data)
    assert len(ds.DoseReferenceSequence) == len(original.DoseReferenceSequence) == 2
    assert all(len(item) == 0 for item in ds.DoseReferenceSequence)


def test_group_lengths_are_dropped_even_when_kept() -> None:
    data = COLOR_PL.read_bytes()
    rows = _rows(data)
    assert [r for r in rows if r[1] == 0x00080000]

    ds = _read(rewrite(data, _keep_all(rows)))

    assert not [elem for elem in ds if elem.tag.element == 0]
    assert ds.PixelData == _read_input(data).PixelData


def test_trailing_padding_after_pixel_data_is_dropped() -> None:
    data = CT_SMALL.read_bytes()
    assert (0xFFFC, 0xFFFC) in _read_input(data)

    ds = _read(rewrite(data, _keep_all(_rows(data))))

    assert (0xFFFC, 0xFFFC) not in ds
    assert "PixelData" in ds


@pytest.mark.parametrize("accelerate", [True, False])
def test_nothing_past_the_top_level_pixel_data_is_kept_even_when_the_edits_say_so(accelerate: bool) -> None:
    """The scan stops at Pixel Data, so no plan row can speak for what follows: an edit
    for its path is another element's (fail closed)."""
    data = CT_SMALL.read_bytes()
    edits = _keep_all(_rows(data))
    edits["FFFCFFFC"] = KEEP

    ds = _read(rewrite(data, edits, accelerate=accelerate))

    assert (0xFFFC, 0xFFFC) not in ds and ds.PixelData == _read_input(data).PixelData


# -- fail closed -----------------------------------------------------------------------


def test_empty_edits_leave_only_the_file_meta() -> None:
    data = CT_SMALL.read_bytes()
    original = _read_input(data)

    out = rewrite(data, {})

    ds = _read(out)
    assert len(ds) == 0
    assert _meta_tags(ds) == META_TAGS
    assert ds.file_meta.MediaStorageSOPClassUID == original.file_meta.MediaStorageSOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert ds.file_meta.FileMetaInformationVersion == b"\x00\x01"
    assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_paths_missing_from_the_edits_are_removed_at_every_depth() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    kept = {r[0] for r in rows[::2]}  # every other row
    out = rewrite(data, {p: KEEP for p in kept})

    assert {p for p, _, _ in _dataset_rows(out)} <= kept
    assert {p for p, _, _ in _dataset_rows(out)} == {
        r[0]
        for r in rows
        if r[0] in kept and r[1] >> 16 != 2 and all(a in kept for a in _ancestors(r[0]))
    }


# -- setting and inserting ---------------------------------------------------------------


def test_set_values_are_encoded_per_vr() -> None:
    data = CT_SMALL.read_bytes()
    rows = _rows(data)
    edits = _keep_all(rows)
    edits["00100020"] = Set("LO", "ORG-X1")  # a string
    edits["0020000D"] = Set("UI", "1.2.3.456")  # odd length: NUL padded
    edits["00280101"] = Set("US", "12")  # BitsStored
    edits["00080020"] = Set("DA", "20000101")  # StudyDate
    edits["00200032"] = Set("DS", "1.5\\-2\\3")  # multi-valued DS
    edits["00100010"] = Set("PN", "CloudStudy^X1")

    out = rewrite(data, edits)

    ds = _read_all(out)
    assert ds.PatientID == "ORG-X1"
    assert ds.StudyInstanceUID == "1.2.3.456"
    assert ds.BitsStored == 12
    assert ds.StudyDate == "20000101"
    assert [float(v) for v in ds.ImagePositionPatient] == [1.5, -2.0, 3.0]
    assert ds.PatientName == "CloudStudy^X1"
    # UI padding is a NUL, text padding a space
    assert b"1.2.3.456\x00" in out
    assert b"CloudStudy^X1 " in out
    assert ds.PixelData == _read_input(data).PixelData


def test_numbers_tags_and_bytes_are_encoded_from_their_string_form() -> None:
    data = RTPLAN.read_bytes()  # implicit VR: the VR is not written but values are
    edits: dict[str, Edit] = {
        "00100020": KEEP,
        "00181151": Set("IS", "200"),
        "00280010": Set("US", "2\\3"),
        "00281052": Set("DS", "-1024"),
        "00189345": Set("FD", "1.25"),
        "00180013": Set("FL", "0.5"),  # ContrastBolusT1Relaxivity
        "00209165": Set("AT", "00100020\\0020000D"),  # DimensionIndexPointer
        "00431028": Set("OB", b"\x01\x02\x03"),
        "0018115E": Set("DS", ""),  # present, empty
    }

    ds = _read_all(rewrite(data, edits))

    assert ds.XRayTubeCurrent == 200
    assert list(ds.Rows) == [2, 3]
    assert ds.RescaleIntercept == -1024
    assert ds[0x00189345].value == 1.25
    assert ds[0x00180013].value == 0.5
    assert list(ds[0x00209165].value) == [0x00100020, 0x0020000D]
    assert ds[0x00431028].value == b"\x01\x02\x03\x00"
    assert ds[0x0018115E].value is None or ds[0x0018115E].value == ""


def test_deidentification_markers_are_inserted_in_tag_order() -> None:
    for source in (CT_SMALL, RTPLAN):
        data = source.read_bytes()
        edits = _keep_all(_rows(data))
        edits["00120062"] = Set("CS", "YES")
        edits["00120064"] = Set(
            "SQ",
            [
                [
                    NewElement(0x00080104, "LO", "Basic Application Confidentiality Profile"),
                    NewElement(0x00080100, "SH", "113100"),
                    NewElement(0x00080102, "SH", "DCM"),
                ]
            ],
        )

        ds = _read_all(rewrite(data, edits))

        assert ds.PatientIdentityRemoved == "YES"
        (item,) = ds.DeidentificationMethodCodeSequence
        assert (item.CodeValue, item.CodingSchemeDesignator) == ("113100", "DCM")
        assert item.CodeMeaning == "Basic Application Confidentiality Profile"
        tags = [int(elem.tag) for elem in ds]
        assert tags == sorted(tags)
        assert _elements(ds)[:3] == _elements(_read_input(data), {r[0] for r in _rows(data)})[:3]


def test_a_set_replaces_a_nested_value_and_a_whole_sequence() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    uid_row = next(r for r in rows if r[6] >= 1 and r[2] == "UI")
    seq = _path_of(rows, 0x300A0070)  # FractionGroupSequence
    edits = _keep_all(rows)
    edits[uid_row[0]] = Set("UI", "2.25.42")
    edits[seq] = Set("SQ", [[NewElement(0x300A0071, "IS", "7")], []])

    out = rewrite(data, edits)

    ds = _read_all(out)
    after = {p: v for p, _, v in _elements(ds)}
    assert after[uid_row[0]] == "2.25.42"
    assert [item.get("FractionGroupNumber") for item in ds.FractionGroupSequence] == [7, None]
    assert _dataset_rows(out).count((uid_row[0], "UI", "2.25.42")) == 1


def test_an_element_can_be_inserted_into_an_existing_item() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    doses = _path_of(rows, 0x300A0010)  # DoseReferenceSequence, two items
    edits = _keep_all(rows)
    edits[f"{doses}[1].00081030"] = Set("LO", "INSERTED")

    ds = _read_all(rewrite(data, edits))

    assert ds.DoseReferenceSequence[1].StudyDescription == "INSERTED"
    assert "StudyDescription" not in ds.DoseReferenceSequence[0]
    tags = [int(elem.tag) for elem in ds.DoseReferenceSequence[1]]
    assert tags == sorted(tags)


def test_an_insert_into_a_missing_item_is_refused() -> None:
    data = RTPLAN.read_bytes()
    rows = _rows(data)
    beams = _path_of(rows, 0x300A00B0)
    edits = _keep_all(rows)
    edits[f"{beams}[99].00081030"] = Set("LO", "NOWHERE")

    with pytest.raises(UserInputError) as exc:
        rewrite(data, edits)
    assert f"{beams}[99].00081030" in str(exc.value) and "no such item" in str(exc.value)


def test_a_non_ascii_set_value_is_refused_without_echoing_it() -> None:
    data = CT_SMALL.read_bytes()
    with pytest.raises(UserInputError) as exc:
        rewrite(data, {"00100010": Set("PN", "Müller^Jürgen")})
    assert "00100010" in str(exc.value) and "ASCII" in str(exc.value)
    assert "Müller" not in str(exc.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Set("US", "twelve"), "US numbers"),
        (Set("US", "70000"), "US numbers"),
        (Set("AT", "0010"), "8 hex digits"),
        (Set("XX", "1"), "not a DICOM VR"),
        (Set("OW", "abc"), "as bytes"),
        (Set("LO", [[NewElement(0x00100010, "PN", "A")]]), "needs VR SQ"),
        (Set("LT", "x" * 70000), "16-bit length"),
    ],
)
def test_a_set_that_cannot_be_encoded_is_refused(edit: Set, message: str) -> None:
    with pytest.raises(UserInputError) as exc:
        rewrite(CT_SMALL.read_bytes(), {"00181020": edit})
    assert message in str(exc.value) and "00181020" in str(exc.value)


def test_malformed_edits_are_refused() -> None:
    data = CT_SMALL.read_bytes()
    with pytest.raises(UserInputError, match="tag path"):
        rewrite(data, {"0010,0010": Set("PN", "X")})
    with pytest.raises(UserInputError, match="Keep"):
        rewrite(data, {"00100010": "keep"})  # type: ignore[dict-item]
    with pytest.raises(UserInputError, match=r"\(0002,0010\)"):
        rewrite(data, {}, meta={0x00020010: "1.2.840.10008.1.2"})


# -- file meta ----------------------------------------------------------------------------


def test_the_meta_header_takes_the_new_sop_instance_uid() -> None:
    data = CT_SMALL.read_bytes()
    edits = _keep_all(_rows(data))

    given_meta = _read(rewrite(data, edits, meta={0x00020003: "2.25.1"}))
    from_set = _read(rewrite(data, {**edits, "00080018": Set("UI", "2.25.2")}))
    both = _read(
        rewrite(data, {**edits, "00080018": Set("UI", "2.25.3")}, meta={0x00020003: "2.25.4"})
    )

    assert given_meta.file_meta.MediaStorageSOPInstanceUID == "2.25.1"
    assert from_set.file_meta.MediaStorageSOPInstanceUID == "2.25.2" == from_set.SOPInstanceUID
    assert both.file_meta.MediaStorageSOPInstanceUID == "2.25.4"


def test_the_meta_header_is_made_for_a_file_without_one() -> None:
    for source in (NO_META, RTSTRUCT_NO_META):
        data = source.read_bytes()
        original = _read_input(data)

        ds = _read(rewrite(data, _keep_all(_rows(data))))

        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert _elements(ds) == _elements(original)


def test_a_file_without_preamble_gets_one() -> None:
    data = NO_PREAMBLE.read_bytes()
    assert data[128:132] != b"DICM"

    out = rewrite(data, _keep_all(_rows(data)))

    assert out[:132] == bytes(128) + b"DICM"
    ds = _read(out)
    assert ds.PixelData == _read_input(data).PixelData


# -- other encodings -----------------------------------------------------------------------


def test_implicit_and_explicit_little_endian_files_keep_their_encoding() -> None:
    for source, syntax in ((RTPLAN, ImplicitVRLittleEndian), (CT_SMALL, ExplicitVRLittleEndian)):
        data = source.read_bytes()
        edits = _keep_all(_rows(data))
        edits["00100010"] = Set("PN", "CloudStudy^X2")

        ds = _read_all(rewrite(data, edits))

        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.PatientName == "CloudStudy^X2"


def test_a_big_endian_file_is_rewritten_in_big_endian() -> None:
    data = MR_BIG.read_bytes()
    rows = _rows(data)
    edits = _keep_all(rows)
    edits["00100010"] = Set("PN", "CloudStudy^BE")
    edits["00280101"] = Set("US", "12")
    del edits["00100020"]

    out = rewrite(data, edits)

    ds = _read_all(out)
    original = _read_input(data)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert ds.PatientName == "CloudStudy^BE"
    assert ds.BitsStored == 12
    assert "PatientID" not in ds
    assert ds.PixelData == original.PixelData
    assert ds.Rows == original.Rows


def test_a_deflated_file_is_rewritten_deflated() -> None:
    for source in (IMAGE_DFL, REPORT_DFL):
        data = source.read_bytes()
        rows = _rows(data)
        edits = _keep_all(rows)
        edits["00100010"] = Set("PN", "CloudStudy^DFL")
        nested = next((r[0] for r in rows if r[6] >= 1 and r[2] != "SQ"), None)
        if nested is not None:
            del edits[nested]

        out = rewrite(data, edits)

        ds = _read_all(out)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
        assert ds.PatientName == "CloudStudy^DFL"
        expected = [e for e in _elements(_read_input(data)) if e[0] not in (nested, "00100010")]
        assert [e for e in _elements(ds) if e[0] != "00100010"] == expected
        # the data set after the meta group really is raw deflate
        assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(out[_meta_end(out) :])


def _meta_end(out: bytes) -> int:
    (group_length,) = struct.unpack_from("<I", out, 132 + 8)
    return 132 + 12 + int(group_length)


def test_a_sequence_encoded_as_un_keeps_its_paths() -> None:
    data = UN_SEQUENCE.read_bytes()
    rows = _rows(data)
    nested = [r for r in rows if r[6] >= 1]
    assert nested
    edits = _keep_all(rows)
    del edits[nested[-1][0]]
    uid = next(r for r in nested if r[2] == "UI")
    edits[uid[0]] = Set("UI", "2.25.7")  # written in implicit VR, as the UN content is

    out = rewrite(data, edits)

    _read_all(out)
    assert _dataset_rows(out) == [
        (p, vr, "2.25.7" if p == uid[0] else value)
        for p, vr, value in _dataset_rows(data)
        if p != nested[-1][0]
    ]


def test_private_sequences_in_implicit_vr_keep_their_paths() -> None:
    data = NESTED_PRIV_SQ.read_bytes()
    rows = _rows(data)
    deepest = max(rows, key=lambda r: r[6])
    assert deepest[6] >= 2
    edits = _keep_all(rows)
    del edits[deepest[0]]

    out = rewrite(data, edits)

    _read(out)
    assert _dataset_rows(out) == [r for r in _dataset_rows(data) if r[0] != deepest[0]]


# -- damaged input -----------------------------------------------------------------------


def test_pixel_data_cut_in_the_middle_is_reported_as_truncated() -> None:
    data = CT_SMALL.read_bytes()
    _, info = parse_file(BytesReader(data))
    assert info.pixel_data_offset is not None and info.pixel_data_length is not None
    cut = data[: info.pixel_data_offset + info.pixel_data_length // 2]

    with pytest.raises(ParseError) as exc:
        rewrite(cut, _keep_all(_rows(data)))

    assert exc.value.kind == "truncated"
    message = str(exc.value)
    assert "(7FE0,0010)" in message and "copy it again from the source" in message
    assert str(info.pixel_data_length) in message


def test_pixel_data_shorter_than_the_image_needs_is_reported_even_when_removed() -> None:
    data = CT_SMALL.read_bytes()
    ds = _read_input(data)
    ds.PixelData = ds.PixelData[:-512]  # a consistent length field, too few bytes
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)

    for edits in (_keep_all(_rows(data)), {}):
        with pytest.raises(ParseError) as exc:
            rewrite(buffer.getvalue(), edits)
        assert exc.value.kind == "truncated"
        assert "32256" in str(exc.value) and "32768" in str(exc.value)


def _ybr_422(pixel_bytes: int, syntax: Any = ExplicitVRLittleEndian) -> bytes:
    """A native YBR_FULL_422 image of 16 x 16: two samples a pixel (Y Y Cb Cr a pair), so
    512 bytes, not the 768 that Rows x Columns x SamplesPerPixel would say."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.SOPInstanceUID = "2.25.4221"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = (bytes(range(256)) * 2)[:pixel_bytes]
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
@pytest.mark.parametrize("accelerate", [True, False], ids=["c", "python"])
def test_native_ybr_full_422_holds_two_samples_a_pixel_and_is_not_truncated(syntax: Any, accelerate: bool) -> None:
    data = _ybr_422(512, syntax)
    assert _read_input(data).pixel_array.shape == (16, 16, 3)  # pydicom reads it whole

    out = rewrite(data, _keep_all(_rows(data)), accelerate=accelerate)

    assert _read(out).PixelData == _read_input(data).PixelData

    cut = _ybr_422(256, syntax)  # half the frame, with a consistent length field
    with pytest.raises(ParseError) as exc:
        rewrite(cut, _keep_all(_rows(cut)), accelerate=accelerate)
    assert exc.value.kind == "truncated" and "needs 512" in str(exc.value)


def test_native_pixel_bytes() -> None:
    assert native_pixel_bytes(512, 512, 1, 1, 16, "MONOCHROME2") == 524288
    assert native_pixel_bytes(3, 3, 1, 1, 8, None) == 10  # padded to even
    assert native_pixel_bytes(5, 5, 1, 2, 1, "MONOCHROME2") == 8  # bits packed across frames
    assert native_pixel_bytes(16, 16, 3, 2, 8, "ybr_full_422 ") == 1024
    assert native_pixel_bytes(16, 16, 3, 1, 8, "YBR_FULL") == 768


def test_encapsulated_pixel_data_cut_inside_a_fragment_is_truncated() -> None:
    data = JPEG.read_bytes()
    for cut in (len(data) - 100, len(data) - 4):
        with pytest.raises(ParseError) as exc:
            rewrite(data[:cut], _keep_all(_rows(data)))
        assert exc.value.kind == "truncated"
        assert "(7FE0,0010)" in str(exc.value)


def test_a_header_cut_inside_an_element_is_truncated_without_its_value() -> None:
    data = CT_SMALL.read_bytes()
    rows = _rows(data)
    name = next(r for r in rows if r[1] == 0x00100010)
    assert name[8] is not None
    for cut in (name[8] + 2, 140):  # inside PatientName; inside the file meta
        with pytest.raises(ParseError) as exc:
            rewrite(data[:cut], _keep_all(rows))
        assert exc.value.kind == "truncated"
        assert str(name[4]) not in str(exc.value)


def test_absurdly_deep_nesting_is_corrupt_not_a_crash() -> None:
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    level = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + item
    data = bytes(128) + b"DICM" + level * 5000

    with pytest.raises(ParseError) as exc:
        rewrite(data, {})
    assert exc.value.kind in {"corrupt", "truncated"}


def test_bytes_that_are_not_dicom_are_refused() -> None:
    with pytest.raises(ParseError) as exc:
        rewrite(b"%PDF-1.4 not an image at all" * 10, {})
    assert exc.value.kind == "not_dicom"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=CT_SMALL.stat().st_size),
    flips=st.lists(
        st.tuples(st.integers(0, CT_SMALL.stat().st_size - 1), st.integers(0, 255)), max_size=3
    ),
)
def test_damaged_bytes_give_a_parse_error_or_a_readable_file(
    cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(CT_SMALL.read_bytes())
    edits = _keep_all(_rows(bytes(data)))
    for at, value in flips:
        data[at] = value
    try:
        out = rewrite(bytes(data[:cut]), edits)
    except ParseError as exc:
        assert exc.kind in {"truncated", "corrupt", "not_dicom", "empty"}
        return
    assert out[128:132] == b"DICM"


# -- property: the output holds exactly the kept rows -----------------------------------------

_ITEM = re.compile(r"\[\d+\]\.")


def _ancestors(path: str) -> list[str]:
    return [path[: m.start()] for m in _ITEM.finditer(path)]


def _expected_rows(rows: list[Row], kept: set[str]) -> list[tuple[str, str, str | None]]:
    return [
        (r[0], r[2], r[4])
        for r in rows
        if not (r[6] == 0 and r[1] >> 16 == 0x0002)
        and r[1] & 0xFFFF != 0
        and r[0] in kept
        and all(a in kept for a in _ancestors(r[0]))
    ]


def _with_creators(rows: list[Row], kept: set[str]) -> set[str]:
    """The engine's contract: a kept private element keeps its private creator."""
    out = set(kept)
    for path in kept:
        tag = int(path[-8:], 16)
        if (tag >> 16) & 1 and (tag & 0xFFFF) > 0xFF:
            out.add(path[:-8] + f"{(tag & 0xFFFF0000) | ((tag >> 8) & 0xFF):08X}")
    return out


_PROPERTY_FILES = {
    p.name: (p.read_bytes(), _rows(p.read_bytes())) for p in (CT_SMALL, RTPLAN, NESTED_PRIV_SQ)
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(_PROPERTY_FILES)), data=st.data())
def test_the_output_holds_exactly_the_kept_rows(name: str, data: st.DataObject) -> None:
    original, rows = _PROPERTY_FILES[name]
    mask = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    kept = _with_creators(rows, {r[0] for r, keep in zip(rows, mask, strict=True) if keep})

    out = rewrite(original, {path: KEEP for path in kept})

    assert _dataset_rows(out) == _expected_rows(rows, kept)
    _read(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sets=st.dictionaries(
        st.sampled_from([0x00100010, 0x00100020, 0x00080050, 0x00081030, 0x00120062, 0x00181000]),
        st.text(st.characters(min_codepoint=0x41, max_codepoint=0x5A), max_size=9),
        max_size=4,
    )
)
def test_set_values_read_back_as_written(sets: Mapping[int, str]) -> None:
    vrs = {
        0x00100010: "PN",
        0x00100020: "LO",
        0x00080050: "SH",
        0x00081030: "LO",
        0x00120062: "CS",
        0x00181000: "LO",
    }
    data = CT_SMALL.read_bytes()
    edits = _keep_all(_rows(data))
    edits.update({f"{tag:08X}": Set(vrs[tag], value) for tag, value in sets.items()})

    out = rewrite(data, edits)

    written = {p: v for p, _, v in _dataset_rows(out)}
    for tag, value in sets.items():
        assert written[f"{tag:08X}"] == value


def test_keep_is_a_value_object() -> None:
    assert Keep() == KEEP
    assert Set("PN", "A") == Set("PN", "A")
    assert hash(NewElement(0x00100010, "PN", "A")) == hash(NewElement(0x00100010, "PN", "A"))
    with pytest.raises(AttributeError):
        Set("PN", "A").vr = "LO"  # type: ignore[misc]
