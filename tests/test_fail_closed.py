"""Fail closed on what a file can hide: a value nobody planned for never reaches an output.

Each test writes a small file holding a marker where a careless de-identifier would keep
it (a UID written with another VR, text inside an SR code, an attribute Table E.1-1 does
not list, a retired or mis-typed one), de-identifies it and greps every byte written
(outputs, their names, the manifests) for the marker.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify
from dicomframe.profiles import Option, Profile

KEY = ProjectKey.from_bytes(bytes(range(32)))
MARK = "ZQXMARK"
#: the files are invalid on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _base(n: int = 1) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.9998.{n}"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.9998.100"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.9998.200"
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "PID0001", "OT"
    ds.Manufacturer = "ACME Imaging"
    ds.ManufacturerModelName = "Scanner 3000"
    return ds


def _save(ds: Dataset, path: Path) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    sop = ds.get((0x0008, 0x0018))
    ds.file_meta.MediaStorageSOPInstanceUID = (
        "1.2.826.0.1.3680043.10.9998.999" if sop is None else str(sop.value)
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mis-typed values on purpose
        ds.save_as(path, enforce_file_format=True)


def _plan_table(tmp_path: Path, ds: Dataset, profile: str | Profile, **kwargs: Any) -> pl.DataFrame:
    """The plan table of ``ds``, saved as one file and scanned."""
    import dicomframe as dcf
    from dicomframe.planner import make_plan

    _save(ds, tmp_path / "a.dcm")
    return make_plan(dcf.scan(tmp_path / "a.dcm", progress=False), profile, KEY, **kwargs).table


def _new_values(table: pl.DataFrame) -> dict[str, str | None]:
    """Keyword -> new value of a plan table."""
    return dict(table.select("keyword", "new_value").iter_rows())


def _cleaned(tmp_path: Path, **values: str) -> dict[str, str | None]:
    """Keyword -> new value of the research plan (Clean Descriptors) of a file holding ``values``
    (set in their order: a Specific Character Set first)."""
    ds = _base()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return _new_values(_plan_table(tmp_path, ds, "research"))


def _run(tmp_path: Path, ds: Dataset, profile: str | Profile = "default") -> tuple[object, Path]:
    _save(ds, tmp_path / "in" / "a.dcm")
    return _deidentify_in(tmp_path, profile), tmp_path / "out"


def _deidentify_in(tmp_path: Path, profile: str | Profile = "default") -> Any:
    """De-identify ``tmp_path/in`` into ``tmp_path/out`` (batch ``b``)."""
    return deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b",
        profile=profile, progress=False,
    )  # fmt: skip


def _run_bytes(tmp_path: Path, data: bytes, profile: str | Profile = "default") -> Any:
    """Write ``data`` as ``tmp_path/in/a.dcm`` and de-identify it."""
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "a.dcm").write_bytes(data)
    return _deidentify_in(tmp_path, profile)


#: default + Retain Safe Private
SAFE_PRIVATE = Profile.preset("default").with_options(Option.RETAIN_SAFE_PRIVATE)


def _leaks(out: Path) -> list[str]:
    """Where the marker is: in a name or in the bytes of anything written under ``out``."""
    found = []
    for path in out.rglob("*"):
        if MARK.lower() in str(path.relative_to(out)).lower():
            found.append(f"name {path.relative_to(out)}")
        if path.is_file() and MARK.encode() in path.read_bytes():
            found.append(f"bytes of {path.relative_to(out)}")
    return found


def _only_output(out: Path) -> Dataset:
    (path,) = (out / "b").rglob("*.dcm")
    return pydicom.dcmread(path)


def test_a_uid_written_with_a_text_vr_gets_a_new_uid(tmp_path: Path) -> None:
    ds = _base()
    ds[0x00080018] = DataElement(0x00080018, "LO", f"1.2.3.{MARK}.4")  # SOPInstanceUID as LO
    ds[0x00200052] = DataElement(0x00200052, "LT", f"{MARK} frame")  # FrameOfReferenceUID as LT
    ds.ReferencedSOPSequence = Sequence([Dataset()])
    ds.ReferencedSOPSequence[0][0x00081155] = DataElement(0x00081155, "UT", f"{MARK}.ref")
    result, out = _run(tmp_path, ds)
    assert result.written == 1 and not _leaks(out)
    got = _only_output(out)
    assert str(got[0x00080018].value).startswith("2.25.")
    assert str(got[0x00200052].value).startswith("2.25.")


def test_a_uid_in_a_vr_too_short_for_a_new_one_refuses_the_file(tmp_path: Path) -> None:
    ds = _base()
    ds[0x0020000D] = DataElement(0x0020000D, "SH", MARK)  # StudyInstanceUID as SH
    result, out = _run(tmp_path, ds)
    assert result.written == 0 and [f["kind"] for f in result.failed] == ["invalid"]
    assert not _leaks(out)


def test_retained_uids_that_are_not_uids_never_name_an_output(tmp_path: Path) -> None:
    ds = _base()
    ds.StudyInstanceUID = f"../../{MARK}"
    ds.SeriesInstanceUID = f"{MARK}/x"
    profile = Profile.preset("default").with_options(Option.RETAIN_UIDS)
    result, _out = _run(tmp_path, ds, profile)
    assert result.written == 0 and [f["kind"] for f in result.failed] == ["invalid"]
    # a UI value that is not a UID is not kept (fail closed), so nothing names the output
    assert "StudyInstanceUID" in result.failed[0]["reason"]
    # nothing written anywhere (outside DST either) holds it: only the input does
    assert [leak for leak in _leaks(tmp_path) if not leak.endswith(f"in{os.sep}a.dcm")] == []


def test_inside_sr_codes_only_codes_are_kept(tmp_path: Path) -> None:
    ds = _base()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121071", "DCM", "Finding"
    code.PatientName = f"{MARK}^Name"
    code.OperatorsName = f"{MARK}^Operator"
    code.PatientComments = f"{MARK} comment"
    code.add_new(0x00080099, "LO", f"{MARK} unknown")  # not in the dictionary
    code.add_new(0x00190010, "LO", "ACME 1.0")
    code.add_new(0x00191001, "LO", f"{MARK} private")
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", "no finding"
    item.ConceptNameCodeSequence = Sequence([code])
    ds.ContentSequence = Sequence([item])
    profile = Profile.preset("research").with_options(Option.CLEAN_STRUCTURED_CONTENT)
    result, out = _run(tmp_path, ds, profile)
    assert result.written == 1 and not _leaks(out)
    kept = _only_output(out).ContentSequence[0].ConceptNameCodeSequence[0]
    assert (kept.CodeValue, kept.CodingSchemeDesignator, kept.CodeMeaning) == (
        "121071",
        "DCM",
        "Finding",
    )


@pytest.mark.parametrize(
    ("tag", "vr", "what"),
    [
        (0x00140104, "PN", "SecondaryReviewerName"),
        (0x00142006, "PN", "EvaluatorName"),
        (0x0074100C, "LO", "ContactDisplayName"),
        (0x00100033, "LO", "PatientBirthDateInAlternativeCalendar"),
        (0x00400400, "LT", "CommentsOnTheScheduledProcedureStep"),
        (0x0040A160, "UT", "TextValue at the top level"),
        (0x0074100A, "UR", "ContactURI"),
        (0x60000022, "LO", "OverlayDescription"),
        (0x60001500, "LO", "OverlayLabel"),
        (0x00080010, "SH", "RecognitionCode (retired)"),
        (0x1010ABCD, "LT", "a retired repeating group (ZonalMap) holding text"),
        (0x00189346, "LT", "a sequence attribute written as text"),
        (0x00180050, "LO", "SliceThickness written as text"),
    ],
)
def test_attributes_table_e11_does_not_list_do_not_keep_text(
    tmp_path: Path, tag: int, vr: str, what: str
) -> None:
    ds = _base()
    value = (
        f"{MARK}^Someone" if vr == "PN" else f"http://x/{MARK}" if vr == "UR" else f"{MARK} {what}"
    )
    ds[tag] = DataElement(tag, vr, value)
    result, out = _run(tmp_path, ds)
    assert result.written == 1, result.failed
    assert not _leaks(out), what
    got = _only_output(out)
    assert (got.Manufacturer, got.ManufacturerModelName) == ("ACME Imaging", "Scanner 3000")


def test_with_clean_descriptors_unlisted_free_text_is_cleaned_like_the_listed(
    tmp_path: Path,
) -> None:

    ds = _base()
    ds.CommentsOnTheScheduledProcedureStep = "Jane Doe asked for a copy"
    ds.StudyDescription = "Jane Doe chest"
    table = _plan_table(tmp_path, ds, "research")
    new = _new_values(table)
    assert "Jane" not in new["CommentsOnTheScheduledProcedureStep"]
    assert new["CommentsOnTheScheduledProcedureStep"].endswith("asked for a copy")


def test_the_plan_says_why_an_unlisted_attribute_went(tmp_path: Path) -> None:

    ds = _base()
    ds[0x00140104] = DataElement(0x00140104, "PN", "Roe^Rita")
    ds[0x00189346] = DataElement(0x00189346, "LT", "text")
    table = _plan_table(tmp_path, ds, "default")
    why = dict(
        table.select(
            "keyword", pl.concat_str([pl.col("action"), pl.col("source")], separator=": ")
        ).iter_rows()
    )
    assert why["SecondaryReviewerName"] == "Z: not in E.1-1: a person name"
    assert why["CTDIPhantomTypeCodeSequence"] == "X: not in E.1-1: VR differs from the dictionary"
    assert why["Manufacturer"] == "K: not in E.1-1"


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return head + vr.encode() + b"\0\0" + len(value).to_bytes(4, "little") + value
    return head + vr.encode() + len(value).to_bytes(2, "little") + value


def _implicit(tag: int, value: bytes) -> bytes:
    return (
        (tag >> 16).to_bytes(2, "little")
        + (tag & 0xFFFF).to_bytes(2, "little")
        + len(value).to_bytes(4, "little")
        + value
    )


def test_a_private_sequence_the_rewriter_reads_otherwise_is_refused_not_copied(
    tmp_path: Path,
) -> None:
    """Retain Safe Private keeps a listed private sequence and decides what is inside it; a
    creator written so that the scan and the rewriter read it differently (here longer than
    64 KiB) must not let the rewriter copy the sequence whole, with what is inside."""
    import io

    ds = _base()
    _save(ds, tmp_path / "base.dcm")
    inside = _implicit(0x00104000, f"{MARK} comment ".encode()) + _implicit(
        0x00080099, f"{MARK}xx".encode()
    )
    item = b"\xfe\xff\x00\xe0" + len(inside).to_bytes(4, "little") + inside
    creator = b"Philips Imaging DD 001" + b" " * 70_000
    data = (tmp_path / "base.dcm").read_bytes()
    data += _explicit(0x20010010, "UT", creator) + _explicit(0x2001105F, "UN", item)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(data)
    pydicom.dcmread(io.BytesIO(data))  # a readable file
    profile = Profile.preset("default").with_options(Option.RETAIN_SAFE_PRIVATE)
    result = deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b",
        profile=profile, progress=False,
    )  # fmt: skip
    assert result.written == 0 and [f["kind"] for f in result.failed] == ["corrupt"]
    assert "planned as a sequence" in result.failed[0]["reason"]
    assert not _leaks(tmp_path / "out")


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("Li^Xi", "Li Xi head"),  # two-letter name parts
        ("García^José", "Jose Garcia knee"),  # typed without the accents
        ("Doeson^Janet", "JanetDoeson_brain"),  # glued, in camel case
        ("Müller^Jürgen", "CT MUELLER Mueller Juergen MULLER"),  # spelt out as without umlauts
        ("Groß^Björn", "GROSS follow-up Bjoern"),
        ("Doeson^Janet", "JANETDOESON_brain DOESONJ"),  # glued, in capitals
    ],
)
def test_clean_descriptors_finds_the_patients_name_however_it_is_written(
    tmp_path: Path, name: str, description: str
) -> None:

    ds = _base()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.StudyDescription = name, description
    table = _plan_table(tmp_path, ds, "research")
    cleaned = _new_values(table)["StudyDescription"]
    words = {w.lower() for w in re.split(r"[^A-Za-z]+|(?<=[a-z])(?=[A-Z])", cleaned) if w}
    assert not words & {"li", "xi", "jose", "garcia", "janet", "doeson", "mueller", "muller", "juergen", "gross", "bjoern"}, cleaned
    assert "***" in cleaned


def test_clean_descriptors_finds_ids_written_otherwise_and_dates_in_words(tmp_path: Path) -> None:

    ds = _base()
    ds.AccessionNumber, ds.PatientID = "A-5566", "PID0001"
    ds.StudyDescription = "acc A5566, A 55 66 and PID-0001 (not A556)"
    ds.SeriesDescription = "DOB March 3, 1933; 03MAR1933; born 3 Mar. 1933; 2nd Sept 2021"
    table = _plan_table(tmp_path, ds, "research")
    cleaned = _new_values(table)
    assert cleaned["StudyDescription"] == "acc ***, *** and *** (not A556)"
    assert not re.search(r"\d", cleaned["SeriesDescription"]), cleaned["SeriesDescription"]


def test_clean_descriptors_scrubs_names_in_dicom_form_or_after_a_title_and_contacts(tmp_path: Path) -> None:
    """Another person's name written as DICOM writes names, or after a title, a telephone
    number, an e-mail address or a social security number goes; modality words stay."""

    ds = _base()
    ds.StudyDescription = "MR BRAIN per Dr Hall, ref SMITH^ANNA^B; DR CHEST 512 512 1024"
    ds.SeriesDescription = "call (555) 123-4567, +44 20 7946 0958 or 555.123.4567"
    ds.ImageComments = "mail j.hall@example.org; SSN 078-05-1120; seen by MR. JONES and Miss Daisy"
    table = _plan_table(tmp_path, ds, "research")
    cleaned = _new_values(table)
    assert cleaned["StudyDescription"] == "MR BRAIN per ***, ref ***; DR CHEST 512 512 1024"
    assert cleaned["SeriesDescription"] == "call ***, *** or ***"
    assert cleaned["ImageComments"] == "mail ***; SSN ***; seen by *** and ***"


@pytest.mark.parametrize(
    ("charset", "name", "description", "cleaned"),
    [
        ("ISO_IR 100", "Müller^Jürgen", "Schädel nativ Jürgen Müller", "Schädel nativ *** ***"),
        ("ISO_IR 144", "Иванов^Пётр", "Череп Иванов", "Череп ***"),
        ("ISO_IR 192", "Wang^Wei=王^伟", "王伟 头部 ＣＴ", "*** 头部 CT"),
        ("GB18030", "Wang^XiaoDong=王^小东", "王小东胸部", "***胸部"),
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "山田太郎 胸部", "*** 胸部"),
        ("\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "홍길동 흉부", "*** 흉부"),
        ("ISO_IR 100", "Doe^Jane", "Череп Doe", "????? ***"),  # outside the set declared
        # letters of a script the patient's name is not written in: not sought, not kept
        ("ISO_IR 192", "Yamada^Tarou", "山田太郎 胸部 Schädel", "???? ?? Schädel"),
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "ヤマダ 胸部", "??? 胸部"),
    ],
)
def test_cleaned_text_is_written_in_the_files_character_set(
    tmp_path: Path, charset: str, name: str, description: str, cleaned: str
) -> None:
    """What Clean Descriptors leaves of a description stays in the file's Specific Character
    Set (escape sequences of ISO 2022 included), as the plan shows it, the patient's name
    taken out (a name in ideographs or hangul also written whole). A letter of a script
    that none of the file's person names is written in (the name was not sought in it),
    and a character the set cannot hold, become ``?``. An item with a character set of
    its own is written in it."""
    ds = _base()
    ds.SpecificCharacterSet, ds.PatientName, ds.StudyDescription = charset, name, description
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "99LOCAL", "Ünïcødé"
    item.DerivationDescription = "Ünïcødé ☺ 1970年5月3日"
    ds.ProcedureCodeSequence = Sequence([item])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the last case: pydicom replaces, as it says
        _save(ds, tmp_path / "in" / "a.dcm")
    table = _plan_table(tmp_path / "plan", pydicom.dcmread(tmp_path / "in" / "a.dcm"), "research")
    assert _new_values(table)["StudyDescription"] == cleaned
    result = _deidentify_in(tmp_path, "research")
    assert result.ok and result.committed, result.rows()
    out = _only_output(tmp_path / "out")
    assert out.StudyDescription == cleaned
    assert out.ProcedureCodeSequence[0].DerivationDescription == "Ünïcødé ☺ ***"


def test_clean_descriptors_scrubs_dates_ids_and_telephones_as_written_outside_the_us(tmp_path: Path) -> None:
    """A birth date as Chinese, Japanese or Korean write it, a number written on to
    ideographs (no space: no Unicode word boundary), full-width digits, and national
    telephone numbers after their trunk 0 go; sizes, matrices and versions stay."""

    cleaned = _cleaned(
        tmp_path,
        SpecificCharacterSet="ISO_IR 192",
        StudyDescription="生年月日 1970年5月3日 / 1970년 5월 3일 / 昭和45年5月3日",
        SeriesDescription="患者番号1234567 番号１２３４５６７ CT 19700503号",
        ImageComments="Tel 03-1234-5678, 020 7946 0958, 0171 1234567, 030/12345678, 06 12 34 56 78; 電話０３－１２３４－５６７８",
        ProtocolName="MR BRAIN 512 512 1024 slice 0.5 1.25 mm V05.020.1234",
    )
    for keyword in ("StudyDescription", "SeriesDescription", "ImageComments"):
        assert not re.search(r"[0-9]{2}", cleaned[keyword]), (keyword, cleaned[keyword])
    assert cleaned["ProtocolName"] == "MR BRAIN 512 512 1024 slice 0.5 1.25 mm V05.020.1234"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("O'BRIEN^MARY-KATE", "seen mary kate o brien today"),
        ("O'BRIEN^MARY-KATE", "OBrien Mary"),
        ("O'BRIEN^MARY-KATE", "obrien_marykate_t1"),
        ("O’Brien^Mary Kate", "MARYKATE OBRIEN"),
        ("van der Berg^Jan", "vanderberg"),
        ("Smith-Jones^Ann", "SmithJones"),
    ],
)
def test_clean_descriptors_finds_a_name_part_of_several_words_in_pieces_and_typed_as_one(
    tmp_path: Path, name: str, text: str
) -> None:
    """A name part with an apostrophe, a hyphen or spaces goes in its pieces ("mary kate",
    "brien") and typed as one word ("OBrien", "MARYKATE", "vanderberg")."""

    cleaned = _cleaned(tmp_path, SpecificCharacterSet="ISO_IR 192", PatientName=name, StudyDescription=text)
    assert not re.search(r"(?i)mary|kate|brien|berg|smith|jones", cleaned["StudyDescription"] or ""), cleaned


@pytest.mark.parametrize(
    ("name", "text", "gone"),
    [
        ("DOE^JOHN", "jdoe_t1 axial", "jdoe"),
        ("DOE^JOHN", "protocol of JDOE", "jdoe"),
        ("DOE^JOHN", "doej localizer", "doej"),
        ("DOE^BOB", "bobdoe head", "bobdoe"),
        ("DOE^BOB", "DOEBOB", "doebob"),
        ("LI^XI", "xli 3d", "xli"),
        ("van der Berg^Jan", "jvanderberg", "jvanderberg"),
    ],
)
def test_clean_descriptors_finds_a_name_written_with_the_given_name_or_its_initial_glued_on(
    tmp_path: Path, name: str, text: str, gone: str
) -> None:
    """A user name or a file name is often a name typed as one word: the given name's initial
    and the family name ("jdoe", "doej"), or both names whole ("bobdoe"). Where both are short,
    neither part is found inside the word, so the forms are sought as tokens of their own."""
    cleaned = _cleaned(tmp_path, PatientName=name, StudyDescription=text)["StudyDescription"]
    assert gone not in (cleaned or "").lower(), cleaned


def test_a_name_with_an_initial_glued_on_is_sought_as_a_token_only(tmp_path: Path) -> None:
    """The forms are tokens of their own: a longer word holding one stays ("hardcore" and
    "score" hold "core", the initial of ORE^C before the family name), the token goes."""
    cleaned = _cleaned(tmp_path, PatientName="ORE^C", StudyDescription="hardcore score CORE")["StudyDescription"]
    assert cleaned is not None and cleaned.startswith("hardcore score") and "CORE" not in cleaned, cleaned


def test_clean_descriptors_scrubs_a_month_with_its_year(tmp_path: Path) -> None:
    """A real month and year in text ("follow-up March 2024") beside the shifted dates would
    tell the patient's shift: it goes, in words or in digits; a decimal, a version, a
    fraction of a count and Mayo stay."""

    cleaned = _cleaned(
        tmp_path,
        StudyDescription="Follow-up March 2024, prior MAR.2023, Mar-2022, may 2021, 3rd of March, 1970",
        SeriesDescription="seen 03/2024, 11-2023, 03.2022, 2019/11 and 2018-12",
        ProtocolName="Mayo protocol 2019 slice 1.2000 mm V2019.11 2 of 12",
    )
    for keyword in ("StudyDescription", "SeriesDescription"):
        assert not re.search(r"[0-9]{2}", cleaned[keyword]), (keyword, cleaned[keyword])
    assert cleaned["ProtocolName"] == "Mayo protocol 2019 slice 1.2000 mm V2019.11 2 of 12"


@pytest.mark.parametrize("profile", ["default", "research"])
def test_a_kept_short_text_holding_a_name_or_a_contact_is_not_kept(tmp_path: Path, profile: str) -> None:
    """Code meanings and kernels are kept for what their keyword says, not whatever they
    hold: one holding a name in DICOM's form or a telephone number is removed (default) or
    cleaned (Clean Descriptors); a plain one stays."""

    ds = _base()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D1100", "SRT", "Head of HALL^ANNA"
    plain = Dataset()
    plain.CodeValue, plain.CodingSchemeDesignator, plain.CodeMeaning = "T-D3000", "SRT", "Chest"
    ds.AnatomicRegionSequence = Sequence([code, plain])
    ds.ConvolutionKernel = "call 555-123-4567"
    table = _plan_table(tmp_path, ds, profile)
    rows = {r["tag_path"]: r for r in table.iter_rows(named=True)}
    meaning, other, kernel = rows["00082218[0].00080104"], rows["00082218[1].00080104"], rows["00181210"]
    assert other["action"] == "K"
    if profile == "default":
        assert meaning["action"] == kernel["action"] == "X"
    else:
        assert (meaning["action"], meaning["new_value"]) == ("C", "Head of ***")
        assert (kernel["action"], kernel["new_value"]) == ("C", "call ***")
    assert meaning["source"] == kernel["source"] == "not in E.1-1: holds a name or a contact"


def test_clean_descriptors_on_text_made_to_make_a_regex_backtrack_still_scrubs() -> None:
    """Runs of "a-a-a-", "a.a.a." or "1-1-1-" (a crafted UT could hold megabytes of them)
    cost the scrub a bounded amount per character, not the square of their length; a
    name and an address after them are still found."""
    from dicomframe.planner import _GENERIC_SCRUB

    for run in ("a-", "a.", "A^", "1-", "+1 ", "Dr "):
        text = run * 20_000 + " DOE^JANE j.doe@example.org"
        assert _GENERIC_SCRUB.sub("***", text).endswith(" *** ***"), run


def test_the_audit_finds_telephone_numbers_and_e_mail_addresses_in_text(tmp_path: Path) -> None:
    import dicomframe as dcf

    ds = _base()
    ds.StudyDescription = "call (555) 123-4567"
    ds.ImageComments = "results to j.hall@example.org"
    ds.SeriesDescription = "AX T2 512 512 1024"
    _save(ds, tmp_path / "a.dcm")
    found = dcf.audit(tmp_path / "a.dcm", rules=["contact_in_text"], progress=False)
    assert sorted(found["keyword"]) == ["ImageComments", "StudyDescription"]
    assert set(found["severity"]) == {"high"}
    assert not any("4567" in e or "hall" in e for e in found["evidence"].to_list())  # masked


def test_retired_variable_pixel_data_holding_anything_is_removed(tmp_path: Path) -> None:
    ds = _base()
    ds[0x7F100010] = DataElement(0x7F100010, "OB", f"{MARK} in retired pixel data!".encode())
    result, out = _run(tmp_path, ds)
    assert result.written == 1 and not _leaks(out)


def test_an_element_written_twice_with_two_readings_goes_both_times(tmp_path: Path) -> None:
    """(0018,9346) as a sequence, then again as text: one decision per path, so both go."""
    ds = _base()
    _save(ds, tmp_path / "base.dcm")
    code = _explicit(0x00080100, "SH", b"12")
    item = b"\xfe\xff\x00\xe0" + len(code).to_bytes(4, "little") + code
    data = (tmp_path / "base.dcm").read_bytes()
    data += _explicit(0x00189346, "SQ", item) + _explicit(0x00189346, "LT", f"{MARK} text".encode())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(data)
    result = deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b", progress=False
    )
    assert result.written == 1 and not _leaks(tmp_path / "out")
    assert 0x00189346 not in _only_output(tmp_path / "out")


def test_a_safe_private_attribute_holding_text_where_the_table_says_a_number_goes(tmp_path: Path) -> None:
    ds = _base()
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "LO", f"{MARK} SUV")  # listed as DS (SUV Factor)
    ds.add_new(0x70531009, "DS", "1.5")  # listed as DS: kept
    profile = Profile.preset("default").with_options(Option.RETAIN_SAFE_PRIVATE)
    result, out = _run(tmp_path, ds, profile)
    assert result.written == 1 and not _leaks(out)
    got = _only_output(out)
    assert got[0x70531009].value == 1.5 and 0x70531000 not in got


@pytest.mark.parametrize(
    ("keyword", "vr", "value"),
    [
        ("StudyTime", "TM", f"{MARK}^SECRET"),
        ("SeriesTime", "TM", f"{MARK}999"),
        ("SliceThickness", "DS", f"{MARK}"),
        ("InstanceNumber", "IS", f"{MARK}7"),
        ("PatientAge", "AS", f"{MARK}"),
    ],
)
def test_a_value_kept_as_it_is_must_be_what_its_vr_says(tmp_path: Path, keyword: str, vr: str, value: str) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = _base()
    tag = pydicom.datadict.tag_for_keyword(keyword)
    raw = value.encode() + b" " * (len(value) % 2)
    ds[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)  # as written, unchecked
    profile = Profile.preset("default").with_options(Option.RETAIN_PATIENT_CHARACTERISTICS)
    result, out = _run(tmp_path, ds, profile)
    assert result.written == 1 and not _leaks(out)
    assert keyword not in _only_output(out)


def test_sequences_nested_absurdly_deep_are_refused_quickly(tmp_path: Path) -> None:
    inner = Dataset()
    inner.CodeValue = "1"
    for _ in range(200):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds = _base()
    ds.ContentSequence = inner.ContentSequence
    result, _out = _run(tmp_path, ds)
    assert result.written == 0 and [f["kind"] for f in result.failed] == ["corrupt"]
    assert "nested more than 64 levels" in result.failed[0]["reason"]


@pytest.mark.parametrize("keyword", ["StudyDate", "Rows", "StudyInstanceUID"])
def test_a_template_on_an_attribute_that_is_not_text_is_refused_at_once(keyword: str) -> None:
    from dicomframe.profiles import ProfileError, Rule

    with pytest.raises(ProfileError, match="a template can fill a text attribute"):
        Rule(keyword=keyword, action="T", template="{org}")


def test_a_template_by_pattern_writes_nothing_into_a_date(tmp_path: Path) -> None:
    from dicomframe.profiles import Rule

    ds = _base()
    ds.StudyDate, ds.StudyDescription = "20200101", "Chest"
    profile = Profile.preset("default").with_rules(Rule(tag_pattern="(0008,xxxx)", action="T", template="{org}"))
    table = _plan_table(tmp_path, ds, profile, org="ACME")
    rows = dict(table.select("keyword", pl.struct("action", "new_value")).iter_rows())
    assert rows["StudyDescription"] == {"action": "T", "new_value": "ACME"}
    assert rows["StudyDate"] == {"action": "X", "new_value": None}


def test_a_dry_run_reports_the_inputs_the_real_run_would_refuse(tmp_path: Path) -> None:
    ds = _base()
    del ds.SeriesInstanceUID  # nothing to name the output with
    _save(ds, tmp_path / "in" / "a.dcm")
    kw = {"key": KEY, "batch_id": "b", "progress": False}
    dry = deidentify(tmp_path / "in", tmp_path / "out", vault=tmp_path / "v1", dry_run=True, **kw)
    real = deidentify(tmp_path / "in", tmp_path / "out", vault=tmp_path / "v2", **kw)
    assert [f["kind"] for f in dry.failed] == [f["kind"] for f in real.failed] == ["invalid"]


@pytest.mark.parametrize("damage", ["2 GB declared at the end", "text after DICM"])
def test_a_dry_run_refuses_a_file_that_lacks_its_bulk_data_as_the_real_run_does(tmp_path: Path, damage: str) -> None:
    ds = _base()
    _save(ds, tmp_path / "whole.dcm")
    if damage == "2 GB declared at the end":
        data = (tmp_path / "whole.dcm").read_bytes() + _explicit(0x00091001, "OB", b"")[:-4] + b"\xf0\xff\xff\x7f"
        data += f"{MARK} ".encode() * 300
    else:
        data = b"\0" * 128 + b"DICM" + f"{MARK} is not a header ".encode() * 20
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(data)
    kw = {"key": KEY, "batch_id": "b", "progress": False}
    dry = deidentify(tmp_path / "in", tmp_path / "out", vault=tmp_path / "v1", dry_run=True, **kw)
    real = deidentify(tmp_path / "in", tmp_path / "out", vault=tmp_path / "v2", **kw)
    assert [f["kind"] for f in dry.failed] == [f["kind"] for f in real.failed] == ["truncated"]
    assert real.written == 0 and not _leaks(tmp_path / "out")


def test_what_the_leak_gate_flags_is_removed_not_left_for_a_reader(tmp_path: Path) -> None:
    from dicomframe.profiles import Rule

    ds = _base()
    ds.PatientComments = "Jane Doe PID0001"
    leaky = Profile.preset("default").with_rules(Rule(keyword="PatientComments", action="K"))
    result, out = _run(tmp_path, ds, leaky)
    assert not result.committed and result.findings.height and result.removed == 1
    assert not list((out / "b").rglob("*.dcm")) and not _leaks(out)
    assert "1 output holding them withheld" in dict(result.rows())["leak gate"]
    assert dict(result.rows())["files written"] == "1 (1 withheld by the leak gate)"
    kept = deidentify(
        tmp_path / "in", tmp_path / "out2", key=KEY, vault=tmp_path / "v2", batch_id="b", profile=leaky,
        progress=False, keep_flagged=True,
    )  # fmt: skip
    assert not kept.committed and kept.removed == 0 and len(list((tmp_path / "out2" / "b").rglob("*.dcm"))) == 1


@pytest.mark.parametrize("order", ["safe creator first", "forged creator first"])
def test_a_private_creator_written_twice_with_two_values_takes_its_block_with_it(tmp_path: Path, order: str) -> None:
    """A creator kept for its safe block must not carry another text through, and an
    element whose creator went must not stay without one."""
    ds = _base()
    _save(ds, tmp_path / "base.dcm")
    safe = _explicit(0x70530010, "LO", b"Philips PET Private Group ")
    forged = _explicit(0x70530010, "LO", f"{MARK} CREATOR".encode())
    data = (tmp_path / "base.dcm").read_bytes()
    if order == "safe creator first":
        data += safe + _explicit(0x70531009, "DS", b"1.5 ") + forged + _explicit(0x70531009, "DS", b"2.5 ")
    else:
        data += forged + safe + _explicit(0x70531009, "DS", b"1.5 ")
    result = _run_bytes(tmp_path, data, SAFE_PRIVATE)
    assert result.written == 1 and not _leaks(tmp_path / "out")
    got = _only_output(tmp_path / "out")
    assert not [e for e in got if e.tag.group == 0x7053]
    private = result.plan.table.filter(pl.col("tag") // 65536 == 0x7053)
    assert set(private["action"]) == {"X"} and any("fail closed" in s for s in private["source"])


def test_a_creator_whose_only_kept_element_is_malformed_goes_with_it(tmp_path: Path) -> None:
    ds = _base()
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531009, "DS", "1.5")
    _save(ds, tmp_path / "in" / "a.dcm")
    data = (tmp_path / "in" / "a.dcm").read_bytes().replace(b"1.5 ", b"ABC ")  # listed as DS: not a number
    result = _run_bytes(tmp_path, data, SAFE_PRIVATE)
    assert result.written == 1
    got = _only_output(tmp_path / "out")
    assert 0x70531009 not in got and 0x70530010 not in got


def _save_with_meta(ds: Dataset, path: Path, **meta: str | None) -> None:
    """Save with a file meta whose SOP Class / Instance UIDs are given (None: left out)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword, value in meta.items():
        if value is not None:
            setattr(ds.file_meta, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=False)


@pytest.mark.parametrize(
    ("case", "profile"),
    [
        ("meta class not a UID", "default"),
        ("meta class missing, data set class not a UID", "basic"),
        ("meta class missing, data set class not a UID", "research"),
        ("meta instance not a UID", "retain UIDs"),
    ],
)
def test_file_meta_uids_of_the_input_that_are_not_uids_are_never_copied(tmp_path: Path, case: str, profile: str) -> None:
    ds = _base()
    sop_class = ds.SOPClassUID
    meta: dict[str, str | None] = {"MediaStorageSOPClassUID": sop_class, "MediaStorageSOPInstanceUID": ds.SOPInstanceUID}
    if case == "meta class not a UID":
        meta["MediaStorageSOPClassUID"] = f"1.2.3.{MARK}"
    elif case == "meta instance not a UID":
        meta["MediaStorageSOPInstanceUID"] = f"1.2.3.{MARK}"
    else:
        meta["MediaStorageSOPClassUID"] = None
        ds[0x00080016] = DataElement(0x00080016, "UI", f"1.2.{MARK}")
    _save_with_meta(ds, tmp_path / "in" / "a.dcm", **meta)
    chosen: str | Profile = (
        Profile.preset("default").with_options(Option.RETAIN_UIDS) if profile == "retain UIDs" else profile
    )
    result = deidentify(
        tmp_path / "in", tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b", profile=chosen,
        progress=False,
    )  # fmt: skip
    assert result.written == 1 and not _leaks(tmp_path / "out")
    got = _only_output(tmp_path / "out")
    if case == "meta class not a UID":  # the data set's own, a UID, stands in
        assert got.file_meta.MediaStorageSOPClassUID == sop_class
    if case == "meta instance not a UID":  # the kept SOP Instance UID stands in
        assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID == ds.SOPInstanceUID


def _with_pixels() -> Dataset:
    ds = _base()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 2, 8, 8, 7
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.PixelData = b"\0\1\2\3"
    return ds


@pytest.mark.parametrize("copy", ["a UID", "text", "a sequence"])
def test_nothing_after_the_top_level_pixel_data_is_kept(tmp_path: Path, copy: str) -> None:
    """The scan stops at Pixel Data: an element after it (a second copy of one seen before,
    whose Keep it would take) is dropped, by both rewriters."""
    import dicomframe as dcf
    from dicomframe.apply import edits_for
    from dicomframe.planner import make_plan
    from dicomframe.rewrite import rewrite

    _save(_with_pixels(), tmp_path / "whole.dcm")
    data = (tmp_path / "whole.dcm").read_bytes()
    if copy == "a UID":
        data += _explicit(0x00080016, "UI", f"1.2.3.{MARK}\0".encode())
    elif copy == "text":
        data += _explicit(0x00080070, "LO", f"{MARK}^Doe^Jane".encode())
    else:
        code = _explicit(0x00081150, "UI", f"1.2.{MARK}\0".encode())
        data += _explicit(0x00081140, "SQ", b"\xfe\xff\x00\xe0" + len(code).to_bytes(4, "little") + code)
    result = _run_bytes(tmp_path, data)
    assert result.written == 1 and not _leaks(tmp_path / "out")
    assert _only_output(tmp_path / "out").PixelData == b"\0\1\2\3"
    plan = make_plan(dcf.scan(tmp_path / "in", progress=False), "default", KEY)
    edits, meta = edits_for(plan.table.select("tag_path", "tag", "vr", "action", "new_value").rows(), plan.additions)
    for accelerate in (True, False):
        out = rewrite(data, edits, meta=meta, accelerate=accelerate)
        assert MARK.encode() not in out and out.endswith(b"\0\1\2\3")


@pytest.mark.parametrize("item", ["undefined length", "defined, longer than the sequence"])
@pytest.mark.parametrize("sequence", [0x00400275, 0x00081120], ids=["RequestAttributes", "ReferencedPatient"])
def test_a_removed_sequence_whose_item_runs_past_its_length_refuses_the_file(
    tmp_path: Path, item: str, sequence: int
) -> None:
    """Skipped by its length, the rest of the item would be read as top-level elements
    (taking their Keep); the scan and both rewriters refuse the file instead."""
    from dicomframe._parse import BytesReader, parse_file
    from dicomframe.errors import ParseError
    from dicomframe.rewrite import Keep, rewrite

    ds = _base()
    _save(ds, tmp_path / "whole.dcm")
    hidden = _explicit(0x00080016, "UI", f"1.2.3.{MARK}\0".encode()) + _explicit(
        0x00080070, "LO", f"{MARK} hidden text".encode()
    )
    if item == "undefined length":
        head = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
        tail = b"\xfe\xff\x0d\xe0\0\0\0\0"
    else:
        head = b"\xfe\xff\x00\xe0" + len(hidden).to_bytes(4, "little")
        tail = b""
    data = (tmp_path / "whole.dcm").read_bytes()
    data += (sequence >> 16).to_bytes(2, "little") + (sequence & 0xFFFF).to_bytes(2, "little") + b"SQ\0\0"
    data += len(head).to_bytes(4, "little") + head + hidden + tail
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(data)
    for accelerate in (True, False):
        with pytest.raises(ParseError, match="run past its length") as scanned:
            parse_file(BytesReader(data), accelerate=accelerate)
        assert scanned.value.kind == "corrupt"
        with pytest.raises(ParseError, match="run past its length"):
            rewrite(data, {"00080016": Keep(), "00080070": Keep()}, accelerate=accelerate)
    for profile in ("basic", "default", "research", "cloud-upload"):
        result = deidentify(
            tmp_path / "in", tmp_path / profile, key=KEY, vault=tmp_path / f"v-{profile}", batch_id="b",
            profile=profile, progress=False,
        )  # fmt: skip
        assert result.written == 0 and [f["kind"] for f in result.failed] == ["corrupt"]
        assert not _leaks(tmp_path / profile)


@pytest.mark.parametrize("encoding", ["explicit UN", "implicit VR"])
def test_a_safe_private_attribute_read_as_un_is_kept_only_when_it_reads_as_its_listed_vr(
    tmp_path: Path, encoding: str
) -> None:
    """(2001,xx43) is listed IS and (2001,xx4F) FD: as UN (or in implicit VR, where the scan
    knows no VR for them) a word in either goes, a number stays."""
    import struct

    from pydicom.uid import ImplicitVRLittleEndian

    ds = _base()
    ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
    ds.add_new(0x20011043, "UN", f"{MARK} Doe".encode())  # listed IS: a word
    ds.add_new(0x20011044, "UN", b"12")  # listed IS: a number
    ds.add_new(0x2001104F, "UN", struct.pack("<d", 1.5))  # listed FD: a number
    ds.add_new(0x200110C2, "UN", f"{MARK}!".encode())  # listed FD: eight bytes of text
    ds.add_new(0x20010011, "LO", "Philips Imaging DD 001")  # a second block of the same creator
    ds.add_new(0x20011143, "UN", b"3\\4 ")  # listed IS, VM 2: numbers
    if encoding == "implicit VR":
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        (tmp_path / "in").mkdir()
        ds.save_as(tmp_path / "in" / "a.dcm", enforce_file_format=True)
    else:
        _save(ds, tmp_path / "in" / "a.dcm")
    result = _deidentify_in(tmp_path, SAFE_PRIVATE)
    assert result.written == 1 and not _leaks(tmp_path / "out")
    got = _only_output(tmp_path / "out")
    kept = {int(e.tag) for e in got if e.tag.group == 0x2001}
    assert kept == {0x20010010, 0x20011044, 0x2001104F, 0x20010011, 0x20011143}
    assert got[0x2001104F].value in (struct.pack("<d", 1.5), 1.5)


def test_a_character_set_that_is_no_defined_term_is_removed(tmp_path: Path) -> None:
    # valid code-string syntax, but no encoding: free text written where a code goes
    for charset, kept in (("ISO_IR 1OO DOE", False), ("ISO_IR 100", True), ("\\ISO 2022 IR 87", True)):
        ds = _base()
        ds.SpecificCharacterSet = charset
        result, out = _run(tmp_path / str(kept) / charset[-3:], ds)
        assert result.written == 1, charset
        (written,) = out.rglob("*.dcm")
        found = pydicom.dcmread(written, stop_before_pixels=True).get((0x0008, 0x0005))
        assert (found is not None) is kept, charset


def test_unlisted_uids_of_instances_are_replaced_and_keep_their_links(tmp_path: Path) -> None:
    """UI attributes Table E.1-1 does not list: one naming an instance, a frame of reference or
    a place gets its keyed new UID (the same as wherever that UID stands); a class UID stays."""
    first, second = _base(1), _base(2)
    second.MultiFrameSourceSOPInstanceUID = first.SOPInstanceUID  # a link to the other file
    second.TableFrameOfReferenceUID = "1.2.826.0.1.3680043.10.9998.777"
    second[0x0040E011] = DataElement(0x0040E011, "UI", "1.2.826.0.1.3680043.10.9998.778")  # RetrieveLocationUID
    second.CreatorVersionUID = "1.2.826.0.1.3680043.10.9998.779"
    second.RelatedGeneralSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    _save(first, tmp_path / "in" / "1.dcm")
    _save(second, tmp_path / "in" / "2.dcm")
    result = _deidentify_in(tmp_path)
    assert result.written == 2 and result.committed
    written = [pydicom.dcmread(p) for p in (tmp_path / "out" / "b").rglob("*.dcm")]
    new_first = next(d for d in written if "MultiFrameSourceSOPInstanceUID" not in d)
    new_second = next(d for d in written if "MultiFrameSourceSOPInstanceUID" in d)
    assert new_second.MultiFrameSourceSOPInstanceUID == new_first.SOPInstanceUID
    for keyword in ("TableFrameOfReferenceUID", "RetrieveLocationUID", "CreatorVersionUID"):
        assert str(new_second[keyword].value).startswith("2.25."), keyword
    assert new_second.RelatedGeneralSOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"
    planned = result.plan.table.filter(pl.col("keyword") == "TableFrameOfReferenceUID").select("action", "source")
    assert planned.rows() == [("U", "not in E.1-1: an instance UID")]
    kept = Profile.preset("default").with_options(Option.RETAIN_UIDS)
    retained = deidentify(
        tmp_path / "in", tmp_path / "out2", key=KEY, vault=tmp_path / "v2", batch_id="b", profile=kept, progress=False
    )
    table = retained.plan.table.filter(pl.col("keyword") == "TableFrameOfReferenceUID")
    assert table["action"].to_list() == ["K"]


def test_an_original_uid_quoted_in_text_is_caught_by_the_gate(tmp_path: Path) -> None:
    """A model name (not in Table E.1-1, kept) holding the input's SOP Instance UID: withheld."""
    ds = _base()
    ds.ManufacturerModelName = f"from {ds.SOPInstanceUID}"
    ds.SeriesDescription = f"{ds.SOPInstanceUID}1 and 9{ds.SOPInstanceUID}"  # longer UIDs: no match
    result, out = _run(tmp_path, ds)
    assert not result.committed and not list((out / "b").rglob("*.dcm"))
    found = result.findings.filter(pl.col("rule") == "original_uid")
    assert found["keyword"].to_list() == ["ManufacturerModelName"]
    assert "1.2.826.0.1.3680043.10.9998" not in " ".join(found["evidence"].to_list())


@pytest.mark.parametrize(("profile", "action"), [("default", "X"), ("basic", "X"), ("research", "K"), ("cloud-upload", "K")])
def test_an_unlisted_device_identifier_goes_unless_device_identity_is_retained(
    tmp_path: Path, profile: str, action: str
) -> None:
    """A catheter's Device ID in a Device Sequence, an RT image's Radiation Machine Name, a
    Printer Name: not in Table E.1-1, they name one device or machine as the listed Device
    Serial Number and Treatment Machine Name do, and go the same way."""
    ds = _base()
    device = Dataset()
    device.DeviceID, device.Manufacturer = "CATH-0042-SN77", "ACME"
    ds.DeviceSequence = [device]
    ds.RadiationMachineName, ds.PrinterName = "LINAC ROOM 3", "PRINTER WARD 5"
    table = _plan_table(tmp_path, ds, profile)
    planned = {k: (a, src) for k, a, src in table.select("keyword", "action", "source").iter_rows()}
    for keyword in ("DeviceID", "RadiationMachineName", "PrinterName"):
        assert planned[keyword] == (action, "not in E.1-1: a device's identity"), (keyword, planned[keyword])
    assert planned["Manufacturer"][0] == "K"


@pytest.mark.parametrize(
    ("age", "written"),
    [("095Y", "090Y"), ("120Y", "090Y"), ("090Y", "090Y"), ("089Y", "089Y"), ("011M", "011M"), ("003W", "003W"),
     ("95 years", None), ("75Y", None)],
)
def test_clean_on_an_age_writes_ages_over_89_as_90_or_older(tmp_path: Path, age: str, written: str | None) -> None:
    """Action C on an Age String (a profile rule): an age of 90 years or more becomes 090Y,
    the HIPAA Safe Harbor method's one category "90 or older"; a younger age stays; what is
    no Age String is removed (fail closed)."""
    from dicomframe.profiles import Profile, Rule

    ds = _base()
    ds.PatientAge = age
    profile = Profile.preset("research").with_rules(Rule(keyword="PatientAge", action="C"))
    table = _plan_table(tmp_path, ds, profile).filter(pl.col("keyword") == "PatientAge")
    assert table.select("action", "new_value").row(0) == (("C", written) if written else ("X", None))


@pytest.mark.parametrize(
    ("offset", "written"), [("+0100", "+0100"), ("-0530", "-0530"), ("+01:00", None), ("DOE^JOHN", None), ("Tokyo", None)]
)
@pytest.mark.parametrize("profile", ["default", "research"])
def test_a_timezone_offset_is_kept_when_it_is_one_and_removed_otherwise(
    tmp_path: Path, offset: str, written: str | None, profile: str
) -> None:
    """Timezone Offset From UTC (C under modified dates) is an offset, "+HHMM" or "-HHMM":
    kept as one (the shift is whole days); any other text there is removed, not cleaned as
    a description (fail closed)."""
    ds = _base()
    ds.TimezoneOffsetFromUTC = offset
    table = _plan_table(tmp_path, ds, profile).filter(pl.col("keyword") == "TimezoneOffsetFromUTC")
    assert table.select("action", "new_value").row(0) == (("C", written) if written else ("X", None))


def test_unlisted_protocol_names_are_free_text_and_owner_ids_are_removed(tmp_path: Path) -> None:
    ds = _base()
    ds.AcquisitionProtocolName = f"{MARK} protocol"
    ds.OwnerID, ds.BreedRegistrationNumber, ds.ImageID = MARK, MARK, MARK
    result, out = _run(tmp_path, ds)
    assert result.written == 1 and not _leaks(out)
    planned = dict(result.plan.table.select("keyword", "source").iter_rows())
    assert planned["AcquisitionProtocolName"] == "not in E.1-1: free text"
    assert {planned[k] for k in ("OwnerID", "BreedRegistrationNumber", "ImageID")} == {"not in E.1-1: personal"}
