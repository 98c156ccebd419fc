"""The PHI audit: a naive de-identification is caught, dicomframe's output is clean."""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
import pytest

import dicomframe as dcf
from dicomframe.keys import ProjectKey
from dicomframe.phiaudit import RULES, audit_scan
from dicomframe.pipeline import deidentify

from .conftest import SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(7, 39)))


def _naive(src: Path, dst: Path) -> None:
    """What a hurried notebook does: blank the name and the id, keep everything else."""
    for i, path in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            ds.PatientName = ""
            ds.PatientID = "ANON"
            out = dst / path.relative_to(src)  # keeps folder names: a leak
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("audit")
    _naive(SAMPLES / "cohort", root / "naive")
    deidentify(SAMPLES / "cohort", root / "out", key=KEY, vault=root / "vault", batch_id="b", progress=False)
    return root / "naive", root / "out" / "b", root / "vault"


def _minimal(path: Path, sop_class: str = "1.2.840.10008.5.1.4.1.1.7", **values: Any) -> pydicom.Dataset:
    """Save at ``path`` a small Part 10 file (explicit VR little endian) of ``sop_class``
    holding ``values`` (set in their order); return its data set."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, pydicom.uid.generate_uid()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_a_naive_deidentification_is_caught_by_every_header_rule(outputs) -> None:
    naive, _, vault = outputs
    findings = dcf.audit(naive, vault=vault, key=KEY, progress=False)
    rules = set(findings["rule"])
    expected = {
        "vault_original",  # accession numbers, original UIDs, other ids
        "vault_original_in_name",  # the folders hold the MRN
        "should_be_removed",  # addresses, birth dates, other ids
        "private_not_safe",  # the hospital's private block
        "name_in_text",  # names in descriptions and comments
        "date_in_text",
        "id_in_text",
        "contact_in_text",  # the telephone numbers and e-mail address of the sample patient
        "burned_in_text_risk",
    }
    assert expected <= rules, expected - rules
    # evidence is masked: no planted value in full
    evidence = " ".join(findings["evidence"].drop_nulls().to_list())
    for planted in ("MRN1234567", "Doe^Jane", "ACC00482913"):
        assert planted not in evidence


def test_dicomframe_default_output_yields_no_finding(outputs) -> None:
    _, out, vault = outputs
    findings = dcf.audit(out, vault=vault, key=KEY, ocr=_ocr_installed(), progress=False)
    assert findings.height == 0, findings.group_by("rule").len()


def test_with_pixel_clean_off_the_images_at_risk_are_pointed_out(outputs, tmp_path: Path) -> None:
    deidentify(SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", pixel_clean="off", progress=False)
    findings = dcf.audit(tmp_path / "out" / "b", vault=tmp_path / "v", key=KEY, progress=False)
    assert set(findings["rule"]) == {"burned_in_text_risk"} and set(findings["severity"]) == {"low"}
    assert findings.height == 7  # 5 ultrasound frames with BurnedInAnnotation YES, 2 secondary captures


def _ocr_installed() -> bool:
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return False
    return shutil.which("tesseract") is not None


@pytest.mark.parametrize("rule", [r.name for r in RULES])
def test_each_rule_can_run_alone_on_clean_output(rule: str, outputs) -> None:
    _, out, _ = outputs
    scan = dcf.scan(out, progress=False)
    if rule == "burned_in_text" and not _ocr_installed():
        pytest.skip("the OCR rule needs `pip install 'dicomframe[ocr]'` and `apt-get install tesseract-ocr`")
    # pixel clean blacked out the names burned into the ultrasound and secondary
    # captures (they are marked 113101, and the OCR rule looks at them again)
    assert audit_scan(scan, rules=[rule]).height == 0


def test_unknown_rule_is_a_clear_error(outputs) -> None:
    _, out, _ = outputs
    with pytest.raises(dcf.UserInputError, match="--list-rules"):
        audit_scan(dcf.scan(out, progress=False), rules=["nope"])


def test_cli_audit_exit_codes(outputs, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from dicomframe.cli import main

    naive, out, _vault = outputs

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return int(exc.value.code or 0)

    assert run("audit", "--list-rules") == 0
    assert "burned_in_text_risk" in capsys.readouterr().out
    assert run("audit", str(out), "--no-progress") == 0
    assert run("audit", str(naive), "--no-progress", "-o", str(tmp_path / "f.parquet")) == 1
    text = capsys.readouterr().out
    assert "Doe^Jane" not in text and "MRN1234567" not in text
    assert pl.read_parquet(tmp_path / "f.parquet").height > 0


def test_uids_with_an_organisation_root_are_found() -> None:
    from .conftest import CORPUS

    scan = dcf.scan(CORPUS / "pydicom" / "CT_small.dcm", progress=False)  # 1.3.6.1.4.1.5962… UIDs
    findings = audit_scan(scan, rules=["uid_with_org_root"])
    assert set(findings["keyword"]) >= {"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"}


def test_vault_originals_in_random_uids_and_numbers_count_only_whole() -> None:
    from dicomframe.leaks import NUMBER_VRS
    from dicomframe.phiaudit import _holding_originals

    originals = ["12345678", "LMC-0093318\\EMPI90822107", "2.25.12345678"]
    values = pl.DataFrame(
        {
            "value": [
                "2.25.1112345678999",  # a new UID whose digits hold an ID by chance: no
                "LMC-0093318\\EMPI90822107",  # an original spanning the separator: yes
                "x 12345678 y",  # in text: yes
                "2.25.12345678",  # an original that is itself a 2.25 UID, whole: yes
                "112345678.5",  # a number whose digits hold it: no
                "12345678",  # a number equal to it: yes
                "a\\2.25.9912345678",  # no
            ],
            "vr": ["UI", "LO", "LT", "UI", "DS", "IS", "UI"],
        }
    )
    found = _holding_originals(values, "value", originals, "\\", number=pl.col("vr").is_in(NUMBER_VRS))
    assert found["value"].to_list() == ["LMC-0093318\\EMPI90822107", "x 12345678 y", "2.25.12345678", "12345678"]
    paths = pl.DataFrame({"path": ["/o/2.25.9912345678/2.25.1/2.25.5.dcm", "/o/12345678/x.dcm", "/o/2.25.12345678.dcm"]})
    found = _holding_originals(paths, "path", originals, "/", suffix=".dcm")
    assert found["path"].to_list() == ["/o/12345678/x.dcm", "/o/2.25.12345678.dcm"]


@pytest.mark.parametrize(
    ("value", "held"),
    [
        ("x 0010 y", True),  # a token of its own
        ("MRN0010", True),  # after letters: a number of its own
        ("0010A", True),
        ("1.2.276.0.7230010.3", False),  # inside a longer number: another number
        ("Ver02.00.00[20010925]", False),
        ("Smith^John", True),
        ("smith", True),  # ASCII case aside
        ("BLACKSMITH", False),  # inside a longer word: another word
        ("SMITH_CT", True),  # "_" is no letter
        ("SMITH2", True),
        ("O'Brien-Smith", True),
        ("山田SMITH", True),  # no word breaks are assumed outside ASCII
    ],
)
def test_an_original_counts_as_a_token_of_its_own(value: str, held: bool) -> None:
    from dicomframe.leaks import holds_an_original

    frame = pl.DataFrame({"value": [value, "nothing"]})
    assert holds_an_original(frame, "value", ["0010", "SMITH"]).to_list() == [held, False]


def test_a_file_the_audit_cannot_read_is_never_reported_clean(outputs, tmp_path: Path) -> None:
    _, out, _ = outputs
    folder = tmp_path / "out"
    shutil.copytree(out, folder)
    original = min((SAMPLES / "cohort").rglob("*.dcm")).read_bytes()
    (folder / "stray.dcm").write_bytes(original[: len(original) // 3])  # truncated, full of PHI
    (folder / "notes.txt").write_text("a report")
    findings = dcf.audit(folder, progress=False)
    unreadable = findings.filter(pl.col("rule") == "unreadable").sort("severity")
    assert unreadable.select("severity", "evidence").rows() == [("high", "truncated"), ("medium", "not_dicom")]
    assert unreadable["path"].str.ends_with("stray.dcm").any()  # the batch's own manifests are not listed


def test_an_audit_that_would_check_nothing_is_an_error_not_a_clean_result(tmp_path: Path) -> None:
    from dicomframe.errors import UserInputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no file to audit"):
        dcf.audit(tmp_path / "empty", progress=False)
    with pytest.raises(UserInputError, match="holds no batch"):
        dcf.audit(SAMPLES / "cohort", vault=tmp_path / "typo_vault", key=KEY, progress=False)
    with pytest.raises(UserInputError, match="--key-file only opens the vault"):
        dcf.audit(SAMPLES / "cohort", key=KEY, progress=False)


def test_the_names_findings_carry_can_be_asked_for_as_rules() -> None:
    scanned = dcf.scan(SAMPLES / "cohort", progress=False)
    emptied = audit_scan(scanned, rules=["should_be_empty"])
    assert set(emptied["rule"]) <= {"should_be_removed", "should_be_empty"} and emptied.height
    assert audit_scan(scanned, rules=["private_unknown_creator"]).equals(audit_scan(scanned, rules=["private_not_safe"]))


def test_the_command_line_says_what_it_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomframe.cli import main

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return int(exc.value.code or 0)

    run("audit", str(SAMPLES / "cohort"), "--no-progress", "--rule", "uid_with_org_root")
    said = " ".join(capsys.readouterr().out.split())
    assert "audited 70 DICOM files with 1 rule (uid_with_org_root), profile default" in said
    (tmp_path / "empty").mkdir()
    assert run("audit", str(tmp_path / "empty")) == 2
    assert "no findings" not in capsys.readouterr().out


def test_the_audit_checks_against_the_preset_the_files_name(tmp_path: Path) -> None:
    """A research batch passes its own audit: the files name their preset, and what its
    Retain options keep (a device serial number) is not reported as an ID in text."""
    from dicomframe.phiaudit import _audit

    deidentify(
        SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="r", profile="research",
        progress=False,
    )  # fmt: skip
    run = _audit(tmp_path / "out" / "r", vault=tmp_path / "vault", key=KEY, progress=False)
    assert run.profile == "research" and run.findings.height == 0 and run.files == 70 and run.unreadable == 0
    against_default = _audit(tmp_path / "out" / "r", profile="default", progress=False)
    assert against_default.profile == "default" and against_default.findings.height > 0


def test_originals_known_to_the_vault_are_found_in_manifests(outputs, tmp_path: Path) -> None:
    """A manifest edited by hand (or made by another tool) that quotes an original is a leak."""
    import json

    from dicomframe.vault import read_mapping

    _, out, vault = outputs
    folder = tmp_path / "b"
    shutil.copytree(out, folder)
    mapping = read_mapping(vault, "b", KEY)
    mrn = mapping["original_patient_id"].drop_nulls()[0]
    accession = mapping["original_accession_number"].drop_nulls()[0]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["studies"][1]["note"] = f"re-sent for {mrn}"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    table = pl.read_parquet(folder / "manifest.parquet")
    table = table.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit(accession)).otherwise("series_description").alias("series_description"))
    table.write_parquet(folder / "manifest.parquet")
    findings = dcf.audit(folder, vault=vault, key=KEY, progress=False).filter(pl.col("rule") == "vault_original_in_manifest")
    assert sorted(findings["tag_path"]) == ["[3].series_description", "studies[1].note"]
    assert set(findings["severity"]) == {"high"} and findings["path"].str.contains("manifest").all()
    assert mrn not in " ".join(findings["evidence"]) and accession not in " ".join(findings["evidence"])
    # not a manifest that decodes: its bytes are still searched
    (folder / "manifest.json").write_text(f"{{truncated {mrn}")
    broken = dcf.audit(folder, vault=vault, key=KEY, rules=["vault_original_in_manifest"], progress=False)
    assert sorted(broken["tag_path"]) == ["", "[3].series_description"]


def test_audit_takes_profile_none_as_the_issue_writes_it(outputs) -> None:
    _, out, vault = outputs
    assert dcf.audit(out, vault=vault, key=KEY, profile=None, progress=False).height == 0


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("Reviewed by DR. JONES", True),  # a title in capitals, with its dot
        ("Miss Marple requested", True),
        ("Dr Smith", True),
        ("Follow-up DOE^", True),  # a family name alone, in DICOM's own form
        ("Doe^Jane^Q", True),
        ("MR BRAIN W/O", False),  # a modality, not a title
        ("DR CHEST PA", False),
        ("Head CT routine", False),
    ],
)
def test_the_audit_looks_for_the_names_clean_descriptors_removes(text: str, flagged: bool, tmp_path: Path) -> None:
    """One pattern for both: a name the planner would clean is one the audit reports."""
    import re

    from dicomframe.planner import PERSON_NAME

    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "2.25.1"
    ds.StudyDescription = text
    ds.PatientName = ""
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path = tmp_path / "one.dcm"
    ds.save_as(path, enforce_file_format=True)
    findings = audit_scan(dcf.scan(path, progress=False), rules=["name_in_text"])
    assert (findings.height == 1) is flagged
    assert bool(re.search(PERSON_NAME, text)) is flagged


def test_a_date_like_value_a_retain_option_keeps_is_not_a_date_in_text(tmp_path: Path) -> None:
    """A station named with a month ("CT 2019-11") is kept on purpose by Retain Device
    Identity: not reported, as IDs and contacts in such values are not; the same in a
    description is."""
    _minimal(tmp_path / "a.dcm", StationName="CT 2019-11", StudyDescription="follow-up 2019-11")
    scan = dcf.scan(tmp_path, progress=False)
    kept = audit_scan(scan, profile="research", rules=["date_in_text"])
    assert kept["keyword"].to_list() == ["StudyDescription"]
    removed = audit_scan(scan, profile="default", rules=["date_in_text"])
    assert sorted(removed["keyword"].to_list()) == ["StationName", "StudyDescription"]


def test_a_build_date_or_number_in_a_version_is_not_a_date_or_an_id_in_text(tmp_path: Path) -> None:
    """Software versions often carry a build's date or number: they date software, not care.
    The same text in a description is still reported."""
    _minimal(
        tmp_path / "a.dcm",
        SoftwareVersions=["VE11C 2019-11-05", "build 20191105"],
        StudyDescription="VE11C 2019-11-05 build 20191105",
    )
    findings = audit_scan(dcf.scan(tmp_path, progress=False), rules=["date_in_text", "id_in_text"])
    assert findings.select("rule", "keyword").sort("rule").rows() == [
        ("date_in_text", "StudyDescription"),
        ("id_in_text", "StudyDescription"),
    ]


def test_ages_over_89_kept_are_pointed_out_and_the_category_is_not(tmp_path: Path) -> None:
    """Retain Patient Characteristics keeps PatientAge: an age of 91 years or more is one of
    the identifiers the HIPAA Safe Harbor method aggregates; 090Y is that category."""
    for name, age in (("old.dcm", "097Y"), ("category.dcm", "090Y"), ("young.dcm", "089Y"), ("baby.dcm", "011M")):
        _minimal(tmp_path / name, PatientAge=age)
    findings = audit_scan(dcf.scan(tmp_path, progress=False), rules=["age_over_89"])
    assert findings.select("keyword", "severity", "evidence").rows() == [("PatientAge", "medium", "09**")]
    assert findings["path"].str.ends_with("old.dcm").all()
    assert "PatientAge" in findings["suggested_action"].item()


def test_bytes_after_the_last_frame_of_the_pixel_data_are_pointed_out(tmp_path: Path) -> None:
    """Data hidden after the last frame: the audit points it out (de-identification with pixel clean off would write it)."""
    import numpy as np

    def image(name: str, rows: int, extra: bytes) -> None:
        _minimal(
            tmp_path / name, Rows=rows, Columns=5, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
            BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
            PixelData=np.zeros(rows * 5, dtype=np.uint8).tobytes() + extra,
        )  # fmt: skip

    image("plain.dcm", 4, b"")
    image("odd.dcm", 3, b"")  # 15 bytes and the pad byte: nothing hidden
    image("hidden.dcm", 4, b"Doe^Jane")
    findings = audit_scan(dcf.scan(tmp_path, progress=False), rules=["pixel_data_excess"])
    assert findings["evidence"].to_list() == ["8 bytes after the last frame"]
    assert findings["path"].str.ends_with("hidden.dcm").all() and findings["severity"].to_list() == ["medium"]


def test_pixel_data_excess_on_a_batch_without_images_finds_nothing(tmp_path: Path) -> None:
    """A scan of structured reports only has no Rows or BitsAllocated column at all."""
    _minimal(tmp_path / "report.dcm", "1.2.840.10008.5.1.4.1.1.88.11", Modality="SR")
    scan = dcf.scan(tmp_path, progress=False)
    assert "Rows" not in scan.instances.columns
    assert audit_scan(scan, rules=["pixel_data_excess"]).height == 0


def test_pixel_data_excess_counts_two_samples_a_pixel_for_native_ybr_full_422(tmp_path: Path) -> None:
    from .test_rewrite import _ybr_422

    (tmp_path / "whole.dcm").write_bytes(_ybr_422(512))  # 16 x 16 x 2: exact
    ds = pydicom.dcmread(io.BytesIO(_ybr_422(512)))
    ds.PixelData = ds.PixelData + b"Doe^Jane"
    ds.save_as(tmp_path / "hidden.dcm", enforce_file_format=True)
    findings = audit_scan(dcf.scan(tmp_path, progress=False), rules=["pixel_data_excess"])
    assert findings["evidence"].to_list() == ["8 bytes after the last frame"]
    assert findings["path"].str.ends_with("hidden.dcm").all()


def test_an_overlay_in_the_pixel_data_is_pointed_out_until_de_identification_removes_it(tmp_path: Path) -> None:
    from .test_pixelclean import _overlaid_ct

    _overlaid_ct(tmp_path / "in" / "a.dcm")
    findings = audit_scan(dcf.scan(tmp_path / "in", progress=False), rules=["overlay_in_pixel_data"])
    assert findings["severity"].to_list() == ["high"] and findings["keyword"].to_list() == ["PixelData"]
    result = deidentify(tmp_path / "in", tmp_path / "out", key=ProjectKey.from_bytes(bytes(32)), vault=tmp_path / "v", batch_id="b", progress=False)
    assert result.ok
    assert audit_scan(dcf.scan(tmp_path / "out", progress=False), rules=["overlay_in_pixel_data"]).height == 0


def test_the_audit_expects_the_native_length_the_rewriters_expect() -> None:
    """The audit's polars copy of the native Pixel Data length agrees with
    rewrite.native_pixel_bytes (which the C rewriter mirrors) on every layout."""
    from dicomframe.phiaudit import native_pixel_bytes as audit_expects
    from dicomframe.rewrite import native_pixel_bytes

    layouts = [
        (rows, cols, samples, frames, bits, photometric)
        for rows, cols in ((1, 1), (3, 5), (16, 16), (17, 9))
        for samples, photometric in ((1, "MONOCHROME2"), (1, None), (3, "RGB"), (3, "YBR_FULL_422 "), (3, "ybr_full_422"))
        for frames in (None, 1, 3)
        for bits in (1, 8, 12, 16, 32)
    ]
    table = pl.DataFrame(
        layouts,
        schema=["Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "BitsAllocated", "PhotometricInterpretation"],
        orient="row",
    )
    got = table.select(audit_expects(table.columns)).to_series().to_list()
    want = [native_pixel_bytes(r, c, s, f or 1, b, p) for r, c, s, f, b, p in layouts]
    assert got == want
    # no Rows column at all (structured reports only): nothing expected, nothing flagged
    assert pl.DataFrame({"x": [1]}).select(audit_expects(["x"])).item() is None


def test_dates_ids_and_telephones_as_written_outside_the_us_are_pointed_out(tmp_path: Path) -> None:
    """A date in the form of Chinese, Japanese and Korean, a number written on to ideographs
    (no space: no Unicode word boundary), a national telephone number after its trunk 0."""
    texts = {
        "date_in_text": [
            "生年月日 1970年5月3日", "1970년 5월 3일", "検査日20240312号",
            "born 3 March 1933", "follow-up March 2024", "seen 03/2024", "2019-11 prior",
        ],
        "id_in_text": ["患者番号1234567", "番号MRN1234567です"],
        "contact_in_text": ["電話 03-1234-5678", "Tel 020 7946 0958", "0171 1234567", "06 12 34 56 78"],
    }
    where = {}
    for n, value in enumerate(v for values in texts.values() for v in values):
        where[value] = f"{n}.dcm"
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", pydicom.uid.generate_uid()
        ds.ImageComments = value
        ds.save_as(tmp_path / f"{n}.dcm", enforce_file_format=True)
    ds.ImageComments = "MR BRAIN 512 512 1024, 0.5 mm, V05.020.1234, 2 of 12"  # none of them
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    findings = audit_scan(dcf.scan(tmp_path, progress=False), rules=list(texts))
    flagged = {(rule, path.rsplit("/", 1)[-1]) for rule, path in findings.select("rule", "path").rows()}
    for rule, values in texts.items():  # (a number is an ID-like token too)
        assert {(rule, where[v]) for v in values} <= flagged, (rule, flagged)
    assert not any(path == "plain.dcm" for _, path in flagged)
