"""Scanning folders and buckets into instances, elements and errors tables."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
import pytest

import dicomframe as dcf
from dicomframe._parse import BytesReader, parse_file
from dicomframe.errors import DicomframeError
from dicomframe.scanner import FAILURE_KINDS, output_paths

from .conftest import CORPUS, corpus_dicom_files, corpus_manifest


def _reference(path: str) -> pydicom.Dataset:
    """pydicom's reading of a file (the reference), without its validation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


@pytest.fixture(scope="module")
def corpus_scan() -> dcf.ScanResult:
    return dcf.scan(CORPUS, jobs=2, progress=False)


def test_every_corpus_file_is_an_instance_or_an_error(corpus_scan: dcf.ScanResult) -> None:
    listed = {str(CORPUS / r["path"]) for r in corpus_manifest()}
    read = set(corpus_scan.instances["path"].to_list())
    failed = set(corpus_scan.errors["path"].to_list())
    assert not read & failed
    assert listed <= read | failed
    # every error has a reason a person can act on
    assert corpus_scan.errors["message"].str.len_chars().min() > 20
    # every file pydicom reads without force is an instance
    for row in corpus_manifest():
        if row["loads_without_force"] == "true" and not row["path"].endswith("DICOMDIR"):
            assert str(CORPUS / row["path"]) in read, row["path"]


def test_non_dicom_and_dicomdir_are_reported_not_failed(corpus_scan: dcf.ScanResult) -> None:
    kinds = dict(zip(corpus_scan.errors["path"], corpus_scan.errors["kind"], strict=True))
    assert kinds[str(CORPUS / "pydicom" / "dicomdirtests" / "DICOMDIR")] == "dicomdir"
    assert kinds[str(CORPUS / "presidio" / "sample_data" / "ground_truth.json")] == "not_dicom"
    assert not set(kinds.values()) & FAILURE_KINDS
    assert corpus_scan.summary.failed == 0


@pytest.mark.parametrize(
    "keyword",
    ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "StudyDescription"],
)
def test_string_columns_match_pydicom(corpus_scan: dcf.ScanResult, keyword: str) -> None:
    inst = corpus_scan.instances
    for path, value in zip(inst["path"], inst[keyword], strict=True):
        ds = _reference(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ds.get(keyword)
            expected = None if expected is None else str(expected)
        got = value
        if expected in (None, ""):
            assert got in (None, ""), path
        else:
            assert got == expected.strip(), path


def test_typed_columns(corpus_scan: dcf.ScanResult) -> None:
    inst = corpus_scan.instances
    schema = inst.schema
    assert schema["StudyDate"] == pl.Date
    assert schema["StudyTime"] == pl.Time
    assert schema["Rows"] == pl.Int64
    assert schema["SliceThickness"] == pl.Float64
    assert schema["ImageType"] == pl.List(pl.String)
    assert schema["PixelSpacing"] == pl.List(pl.Float64)
    assert schema["AcquisitionDateTime"] == pl.Datetime("us")
    ct = inst.filter(pl.col("path").str.ends_with("pydicom/CT_small.dcm")).row(0, named=True)
    assert ct["StudyDate"] == dt.date(2004, 1, 19)
    assert ct["StudyTime"] == dt.time(7, 27, 30)
    assert ct["Rows"] == 128 and ct["Columns"] == 128
    assert ct["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ct["PixelSpacing"] == pytest.approx([0.661468, 0.661468])
    assert ct["transfer_syntax"] == "1.2.840.10008.1.2.1"
    assert ct["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"


def test_numeric_columns_match_pydicom(corpus_scan: dcf.ScanResult) -> None:
    inst = corpus_scan.instances.filter(pl.col("Rows").is_not_null())
    for path, rows, cols in zip(inst["path"], inst["Rows"], inst["Columns"], strict=True):
        ds = _reference(path)
        assert (rows, cols) == (ds.Rows, ds.Columns), path


def test_elements_flatten_sequences(corpus_scan: dcf.ScanResult) -> None:
    el = corpus_scan.elements
    assert el.schema["tag"] == pl.UInt32
    nested = el.filter(pl.col("depth") > 0)
    assert nested.height > 0
    assert nested["tag_path"].str.contains(r"\[\d+\]\.").all()
    sr = el.join(
        corpus_scan.instances.select("file_id", "path").filter(pl.col("path").str.ends_with("test-SR.dcm")),
        on="file_id",
    )
    assert sr.filter(pl.col("keyword") == "TextValue").height > 0
    assert sr["depth"].max() >= 2


def test_private_creators_are_resolved(corpus_scan: dcf.ScanResult) -> None:
    private = corpus_scan.elements.filter(
        ((pl.col("tag") // 65536) % 2 == 1) & ((pl.col("tag") & 0xFFFF) > 0xFF)
    )
    assert private.height > 100
    creators = set(private["private_creator"].drop_nulls())
    assert "GEMS_IDEN_01" in creators or "SIEMENS CSA HEADER" in creators


def test_charsets_in_instances(corpus_scan: dcf.ScanResult) -> None:
    names = dict(zip(corpus_scan.instances["path"], corpus_scan.instances["PatientName"], strict=True))
    assert names[str(CORPUS / "pydicom" / "charset_files" / "chrRuss.dcm")] == "Люкceмбypг"
    assert names[str(CORPUS / "pydicom" / "charset_files" / "chrH31.dcm")].startswith("Yamada^Tarou=山田^太郎")


def test_pandas_and_arrow_round_trip(corpus_scan: dcf.ScanResult) -> None:
    pdf = corpus_scan.instances.to_pandas()
    assert len(pdf) == corpus_scan.instances.height
    back = pl.from_pandas(pdf)
    assert back["Rows"].to_list() == corpus_scan.instances["Rows"].to_list()
    assert corpus_scan.elements.head(1000).to_pandas().shape[0] == 1000
    table = corpus_scan.instances.to_arrow()
    assert pl.from_arrow(table).schema == corpus_scan.instances.schema


def test_one_process_and_two_give_the_same_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomframe.scanner

    monkeypatch.setattr(dicomframe.scanner, "IN_PROCESS_FILES", 0)  # use the pool even for a few files
    src = CORPUS / "pydicom"
    a = dcf.scan(src, jobs=1, progress=False)
    b = dcf.scan(src, jobs=2, chunk_size=8, progress=False)
    assert a.instances.equals(b.instances)
    assert a.elements.equals(b.elements)
    assert a.errors.equals(b.errors)


def test_streaming_output_layout(tmp_path: Path) -> None:
    out = tmp_path / "cohort.parquet"
    result = dcf.scan(CORPUS / "pydicom", output=str(out), jobs=2, progress=False)
    paths = output_paths(str(out))
    assert set(paths) == {"instances", "elements", "errors"}
    for path in paths.values():
        assert Path(path).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert pl.read_parquet(paths["instances"]).equals(result.instances)
    assert pl.read_parquet(paths["elements"]).height == result.elements.height
    folder = tmp_path / "scan-folder"
    dcf.scan(CORPUS / "pydicom" / "MR_small.dcm", output=str(folder), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["elements.parquet", "errors.parquet", "instances.parquet"]


def test_glob_list_and_file_url(tmp_path: Path) -> None:
    by_glob = dcf.scan(str(CORPUS / "pydicom" / "charset_files" / "chr*.dcm"), progress=False)
    assert by_glob.instances.height >= 5 and by_glob.errors.height == 0
    files = [CORPUS / "pydicom" / "CT_small.dcm", CORPUS / "pydicom" / "MR_small.dcm"]
    by_list = dcf.scan(files, progress=False)
    assert by_list.instances["Modality"].to_list() == ["CT", "MR"]
    by_url = dcf.scan(f"file://{CORPUS / 'pydicom' / 'CT_small.dcm'}", progress=False)
    assert by_url.instances.height == 1


def test_memory_filesystem() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("CT_small.dcm", "MR_small.dcm", "README.txt"):
        fs.pipe(f"/cohort-mem/a/{name}", (CORPUS / "pydicom" / name).read_bytes())
    result = dcf.scan("memory://cohort-mem", progress=False)
    assert sorted(result.instances["Modality"].to_list()) == ["CT", "MR"]
    assert result.errors["kind"].to_list() == ["not_dicom"]


def test_damaged_files_become_rows(tmp_path: Path) -> None:
    good = (CORPUS / "pydicom" / "CT_small.dcm").read_bytes()
    (tmp_path / "ok").write_bytes(good)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "cut_header").write_bytes(good[:700])
    (tmp_path / "cut_pixels").write_bytes(good[:-1000])
    (tmp_path / "notes.txt").write_text("not an image")
    result = dcf.scan(tmp_path, progress=False)
    kinds = {Path(p).name: k for p, k in zip(result.errors["path"], result.errors["kind"], strict=True)}
    assert kinds == {
        "empty.dcm": "empty",
        "cut_header": "truncated",
        "cut_pixels": "truncated",
        "notes.txt": "not_dicom",
    }
    assert result.instances.height == 1
    assert result.summary.failed == 3


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(dcf.SourceNotFoundError, match="no such file or folder"):
        dcf.scan(tmp_path / "nope", progress=False)
    with pytest.raises(dcf.UserInputError, match="unknown storage protocol"):
        dcf.scan("nosuchproto://bucket/x", progress=False)


@pytest.mark.s3
def test_s3_scan_through_a_real_server(s3_bucket: str, tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    names = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "README.txt"]
    for name in names:
        fs.pipe(f"{s3_bucket}/incoming/study 1/{name}", (CORPUS / "pydicom" / name).read_bytes())
    local = dcf.scan([CORPUS / "pydicom" / n for n in names], progress=False)
    remote = dcf.scan(f"s3://{s3_bucket}/incoming", jobs=2, chunk_size=1, progress=False)  # threads here
    assert remote.instances.height == 3 and remote.errors["kind"].to_list() == ["not_dicom"]
    cols = [c for c in local.instances.columns if c not in ("path", "file_id")]
    assert remote.instances.select(cols).sort("SOPInstanceUID").equals(
        local.instances.select(cols).sort("SOPInstanceUID")
    )
    import dicomframe.scanner

    with pytest.MonkeyPatch.context() as patch:  # worker processes, as for a large bucket
        patch.setattr(dicomframe.scanner, "IN_PROCESS_FILES", 0)
        pooled = dcf.scan(f"s3://{s3_bucket}/incoming", jobs=2, chunk_size=1, progress=False)
    assert pooled.instances.equals(remote.instances) and pooled.elements.equals(remote.elements)
    # the tables can be written back to the bucket
    out = f"s3://{s3_bucket}/scans/cohort.parquet"
    dcf.scan(f"s3://{s3_bucket}/incoming", output=out, jobs=1, progress=False)
    fs.invalidate_cache()
    assert fs.exists(f"{s3_bucket}/scans/cohort.elements.parquet")
    assert pl.read_parquet(fs.open(f"{s3_bucket}/scans/cohort.parquet").read()).height == 3


@pytest.mark.s3
def test_missing_bucket_is_a_clear_error(s3_server: str) -> None:
    with pytest.raises(dcf.DicomframeError, match="nothing found at|cannot list"):
        dcf.scan("s3://no-such-bucket-here/prefix", progress=False)


def test_summary_has_counts_not_values(corpus_scan: dcf.ScanResult) -> None:
    text = str(corpus_scan.summary)
    for label in ("files", "patients", "studies", "series", "modalities", "errors", "elapsed", "files/s"):
        assert label in text
    assert "CT" in text
    names = corpus_scan.instances["PatientName"].drop_nulls().to_list()
    assert not any(name and len(name) > 3 and name in text for name in names)
    assert "<table>" in corpus_scan._repr_html_()


def test_cli_scan_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomframe.cli import main

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return int(exc.value.code or 0)

    assert run("scan", str(CORPUS / "pydicom" / "charset_files"), "-o", str(tmp_path / "c.parquet")) == 0
    out = capsys.readouterr().out
    assert "instances read" in out and (tmp_path / "c.elements.parquet").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cut").write_bytes((CORPUS / "pydicom" / "CT_small.dcm").read_bytes()[:800])
    (bad / "DOE_JOHN.dcm").write_bytes((CORPUS / "pydicom" / "CT_small.dcm").read_bytes())
    assert run("scan", str(bad)) == 1
    out = capsys.readouterr().out
    assert "truncated" in out and "DOE_JOHN" not in out
    assert run("scan", str(bad), "--show-paths") == 1  # paths only when asked, each whole on one line
    assert any(line.strip().endswith(str(bad / "cut")) for line in capsys.readouterr().out.splitlines())
    assert run("scan", str(tmp_path / "missing")) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "Traceback" not in err
    assert run("scan", "--jobs", "0", str(bad)) == 2
    assert run("scan", "--help") == 0
    assert "Examples" in capsys.readouterr().out


def test_parquet_outputs_query_with_polars_lazily(tmp_path: Path) -> None:
    out = tmp_path / "c.parquet"
    dcf.scan(CORPUS / "pydicom" / "charset_files", output=str(out), progress=False)
    names = (
        pl.scan_parquet(tmp_path / "c.elements.parquet")
        .filter(pl.col("vr") == "PN")
        .select("file_id", "value")
        .collect()
    )
    assert names.height > 0
    assert os.path.getsize(out) > 0


def test_element_tables_read_from_the_row_tuples_equal_those_from_the_transposed_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The C helper reading each field from the rows gives the table the pure Python way gives
    (undefined lengths as -1, nulls kept), for every file of the corpus at once."""
    import dicomframe._worker as worker

    if worker._cwalk is None:
        pytest.skip("the C accelerator is not built")
    ids: list[int] = []
    rows: list[Any] = []
    for i, path in enumerate(corpus_dicom_files()):
        try:
            found = parse_file(BytesReader(path.read_bytes()))[0]
        except DicomframeError:
            continue
        ids.extend([i] * len(found))
        rows.extend(found)
    assert any(r[7] == 0xFFFFFFFF for r in rows) and any(r[5] is None for r in rows)
    fast = worker._rows_to_arrow(ids, rows)
    monkeypatch.setattr(worker, "_row_fields_to_arrow", lambda *a: (_ for _ in ()).throw(TypeError()))
    slow = worker._rows_to_arrow(ids, rows)
    assert fast.equals(slow)
    assert worker._rows_to_arrow(ids[:1], [list(rows[0])]).equals(slow.slice(0, 1))  # lists: the Python way
