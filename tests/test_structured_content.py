"""Clean Structured Content (PS3.15 E.3.4): SR content cleaned item by item with Table E.3.4-1."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify
from dicomframe.profiles import Option, Profile

KEY = ProjectKey.from_bytes(bytes(range(11, 43)))
REFERENCED = "1.2.826.0.1.3680043.10.9999.77"


def _code(value: str, meaning: str, scheme: str = "DCM") -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return Sequence([item])


def _item(relationship: str, value_type: str, code: str, meaning: str, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    item.ConceptNameCodeSequence = _code(code, meaning)
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _report(path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.9999.70"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.9999.71"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.9999.72"
    ds.PatientName, ds.PatientID, ds.Modality = "Quist^Ottilie", "QX778899", "SR"
    ds.AccessionNumber = "ACC7788990"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _code("18748-4", "Diagnostic Imaging Report", "LN")
    ds.ContinuityOfContent = "SEPARATE"
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = REFERENCED
    findings = _item("CONTAINS", "CONTAINER", "121070", "Findings", ContinuityOfContent="SEPARATE")
    findings.ContentSequence = Sequence(
        [
            _item("CONTAINS", "TEXT", "121071", "Finding", TextValue="Quist seen on 2023-02-01, no change"),
            _item("CONTAINS", "TEXT", "121106", "Comment", TextValue="Ottilie Quist QX778899 tolerated well"),
            _item("CONTAINS", "IMAGE", "113795", "Acquired Image", ReferencedSOPSequence=Sequence([image])),
        ]
    )
    odd = _item("HAS OBS CONTEXT", "TEXT", "999001", "Local note", TextValue="ring Ottilie at home")
    odd.PatientName = "Quist^Ottilie"  # not a content item attribute: removed
    ds.ContentSequence = Sequence(
        [
            _item("HAS OBS CONTEXT", "PNAME", "121008", "Person Observer Name", PersonName="Reader^Rita"),
            _item("HAS OBS CONTEXT", "TEXT", "121022", "Accession Number", TextValue="ACC7788990"),
            _item("CONTAINS", "DATE", "111060", "Study Date", Date="20230201"),
            findings,
            odd,
        ]
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)


def _run(tmp_path: Path, profile: Profile) -> tuple[Dataset, bytes]:
    _report(tmp_path / "in" / "sr.dcm")
    result = deidentify(tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", profile=profile, progress=False)
    assert result.ok, result.failed
    out = next((tmp_path / "out" / "b").rglob("*.dcm"))
    return pydicom.dcmread(out), out.read_bytes()


@pytest.fixture
def cleaned(tmp_path: Path) -> tuple[Dataset, bytes]:
    return _run(tmp_path, Profile.preset("default").with_options(Option.CLEAN_STRUCTURED_CONTENT))


def test_content_items_keep_their_structure_and_lose_their_identifiers(cleaned) -> None:
    ds, data = cleaned
    items = ds.ContentSequence
    assert len(items) == 5
    observer, accession, study_date, findings, odd = items
    # PNAME listed in Table E.3.4-1 (D): a dummy name; the concept name stays
    assert observer.ConceptNameCodeSequence[0].CodeValue == "121008"
    assert observer.PersonName != "Reader^Rita" and observer.PersonName
    # Accession Number (X): the whole item goes
    assert len(accession) == 0
    # a date under Retain Longitudinal ... Modified Dates: shifted
    assert study_date.Date != "20230201" and len(study_date.Date) == 8
    assert study_date.ConceptNameCodeSequence[0].CodeMeaning == "Study Date"
    # nested items are cleaned as items; the image reference gets the new UID
    finding, comment, illustration = findings.ContentSequence
    assert finding.TextValue and "Quist" not in finding.TextValue  # Finding: D in E.3.4-1
    assert len(comment) == 0  # Comment: X in the basic profile (C with Clean Descriptors, below)
    ref = illustration.ReferencedSOPSequence[0]
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ref.ReferencedSOPInstanceUID.startswith("2.25.") and ref.ReferencedSOPInstanceUID != REFERENCED
    # an unlisted concept's text is scrubbed; a non-content-item attribute is removed
    assert odd.ConceptNameCodeSequence[0].CodeValue == "999001"
    assert "Ottilie" not in odd.TextValue and "PatientName" not in odd
    for planted in (b"Quist", b"Ottilie", b"QX778899", b"ACC7788990", b"Reader", b"20230201", b"2023-02-01"):
        assert planted not in data, planted


def test_with_clean_descriptors_a_comment_is_scrubbed_not_removed(tmp_path: Path) -> None:
    ds, data = _run(tmp_path, Profile.preset("research").with_options(Option.CLEAN_STRUCTURED_CONTENT))
    comment = ds.ContentSequence[3].ContentSequence[1]
    assert comment.ValueType == "TEXT" and comment.TextValue.endswith("tolerated well")
    assert "Quist" not in comment.TextValue and "QX778899" not in comment.TextValue
    assert b"Quist" not in data and b"Ottilie" not in data


def test_without_the_option_the_content_items_are_emptied(tmp_path: Path) -> None:
    ds, data = _run(tmp_path, Profile.preset("default"))
    assert len(ds.ContentSequence) == 5 and all(len(item) == 0 for item in ds.ContentSequence)  # D: dummy items
    assert b"Quist" not in data and b"Reader" not in data


def test_the_plan_says_which_rule_decided_each_content_item(tmp_path: Path) -> None:
    import polars as pl

    from dicomframe.planner import make_plan
    from dicomframe.scanner import scan

    _report(tmp_path / "sr.dcm")
    plan = make_plan(scan(tmp_path / "sr.dcm", progress=False), Profile.preset("default").with_options(Option.CLEAN_STRUCTURED_CONTENT), KEY)
    inside = plan.table.filter(pl.col("tag_path").str.starts_with("0040A730["))
    assert set(inside["source"].unique()) <= {
        "clean_structured_content",
        "clean_structured_content: E.3.4-1",
        "clean_structured_content: not a content item attribute",
        "inside removed sequence",
    }
    odd_name = inside.filter(pl.col("keyword") == "PatientName")
    assert odd_name["action"].to_list() == ["X"]
