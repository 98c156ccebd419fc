"""The .dicom namespace on polars and pandas frames, on the synthetic cohort."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import dicomframe as dcf
import dicomframe.frames
from dicomframe.errors import UserInputError
from dicomframe.frames import PN_COMPONENTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(samples: Path) -> dcf.ScanResult:
    return dcf.scan(samples / "cohort", progress=False, jobs=1)


@pytest.fixture(scope="module")
def planted(samples: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((samples / "PLANTED_PHI.json").read_text(encoding="utf-8"))
    return data


def test_tag_keywords_of_every_element_agree_with_the_scan(cohort: dcf.ScanResult) -> None:
    el = cohort.elements
    keywords = el["tag"].dicom.tag_keyword()
    assert keywords.dtype == pl.String and keywords.len() == el.height
    public = el.filter(pl.col("keyword").is_not_null())
    assert public["tag"].dicom.tag_keyword().to_list() == public["keyword"].to_list()
    private = el.filter((pl.col("tag") // 65536) % 2 == 1)
    assert private.height and private["tag"].dicom.tag_keyword().null_count() == private.height


def test_format_tag_and_the_lazy_expression() -> None:
    s = pl.Series("tag", [0x00100010, 0x7FE00010, None], dtype=pl.UInt32)
    assert s.dicom.format_tag().to_list() == ["(0010,0010)", "(7FE0,0010)", None]
    lazy = s.to_frame().lazy().select(pl.col("tag").dicom.tag_keyword()).collect()
    assert lazy["tag"].to_list() == ["PatientName", "PixelData", None]


def test_parse_pn_takes_the_alphabetic_group_and_nulls_empty_parts() -> None:
    s = pl.Series("pn", ["Doe^Jane^Marie^Dr.^PhD", "Yamada^Tarou=山田^太郎=やまだ^たろう", " Brooks ^ Taylor ", "", None])
    parsed = s.dicom.parse_pn()
    assert parsed.name == "pn"
    assert parsed.dtype == pl.Struct([pl.Field(n, pl.String) for n in PN_COMPONENTS])
    assert parsed.struct.unnest().rows() == [
        ("Doe", "Jane", "Marie", "Dr.", "PhD"),
        ("Yamada", "Tarou", None, None, None),
        ("Brooks", "Taylor", None, None, None),
        (None, None, None, None, None),
        (None, None, None, None, None),
    ]


def test_series_methods_say_what_type_they_need() -> None:
    with pytest.raises(UserInputError, match=r"parse_pn\(\) needs a String series; 'x' is Int64"):
        pl.Series("x", [1]).dicom.parse_pn()
    with pytest.raises(UserInputError, match=r"tag_keyword\(\) needs a UInt32 or Int64"):
        pl.Series("x", ["PatientName"]).dicom.tag_keyword()


def test_cohort_summary_counts_what_the_data_samples_readme_says(cohort: dcf.ScanResult) -> None:
    row = cohort.instances.dicom.summary().row(0, named=True)
    assert (row["files"], row["patients"], row["studies"], row["series"]) == (70, 5, 10, 20)
    assert [m.split()[0] for m in row["modalities"]] == ["MR", "CT", "US", "SR", "OT"]
    assert sum(int(m.split()[1]) for m in row["modalities"]) == 70
    assert row["devices"] == cohort.instances.dicom.devices().height
    studies = cohort.instances.dicom.studies()
    assert studies.height == 10 and studies["files"].sum() == 70 and studies["series"].sum() == 20


def test_frame_methods_on_the_wrong_table_name_what_is_missing(cohort: dcf.ScanResult) -> None:
    with pytest.raises(UserInputError, match=r"summary\(\) needs the instances table.*lacks PatientID"):
        cohort.elements.dicom.summary()
    with pytest.raises(UserInputError, match=r"names_in_text\(\) needs the elements table.*lacks tag_path"):
        cohort.instances.dicom.names_in_text()


def test_every_patient_name_is_found_where_free_text_repeats_it(
    cohort: dcf.ScanResult, planted: dict[str, object]
) -> None:
    names = cohort.elements.dicom.person_names()
    patients = names.filter(pl.col("keyword") == "PatientName")
    assert patients.select(pl.col("file_id").n_unique()).item() == 70
    found = cohort.elements.dicom.names_in_text()
    assert set(found.columns) >= {"file_id", "tag_path", "keyword", "value", "name", "name_keyword"}
    assert found.filter(pl.col("vr") == "PN").height == 0
    # every hit really contains the name, case-insensitively
    assert found.select(
        pl.col("value").str.to_lowercase().str.contains(pl.col("name").str.to_lowercase(), literal=True).all()
    ).item()
    # the descriptions planted with a family name are found, at any depth
    by_patient = found.filter(pl.col("name_keyword") == "PatientName")
    assert by_patient.select(pl.col("file_id").n_unique()).item() == 70
    assert by_patient.filter(pl.col("tag_path").str.contains(r"\[")).height > 0


def test_pandas_accessors_match_polars(cohort: dcf.ScanResult) -> None:
    inst = cohort.instances.to_pandas(use_pyarrow_extension_array=True)
    el = cohort.elements.to_pandas()
    assert inst.dicom.summary()["files"].iloc[0] == 70
    assert len(inst.dicom.studies()) == 10
    tags = el["tag"].iloc[:50]
    kw = tags.dicom.tag_keyword()
    assert list(kw.index) == list(tags.index) and kw.name == "tag"
    assert kw.tolist() == cohort.elements["tag"].head(50).dicom.tag_keyword().to_list()
    pn = pd.Series(["Doe^Jane", None], index=[10, 20], name="PatientName").dicom.parse_pn()
    assert list(pn.columns) == list(PN_COMPONENTS) and list(pn.index) == [10, 20]
    assert pn.loc[10, "given"] == "Jane" and pd.isna(pn.loc[20, "family"])
    hits = el.dicom.names_in_text()
    assert len(hits) == cohort.elements.dicom.names_in_text().height


def test_instances_round_trip_polars_pandas_arrow_keeps_every_type(cohort: dcf.ScanResult) -> None:
    df = cohort.instances
    dtypes = set(df.schema.values())
    assert {pl.Date, pl.Time, pl.String, pl.Int64, pl.Float64} <= dtypes
    assert any(isinstance(t, pl.List) for t in dtypes) and any(isinstance(t, pl.Datetime) for t in dtypes)
    as_pandas = df.to_pandas(use_pyarrow_extension_array=True)
    as_arrow = pa.Table.from_pandas(as_pandas, preserve_index=False)
    back = pl.from_arrow(as_arrow)
    assert isinstance(back, pl.DataFrame)
    assert back.schema == df.schema
    assert back.equals(df)
    el = cohort.elements
    assert pl.from_pandas(el.to_pandas(use_pyarrow_extension_array=True)).schema == el.schema
    assert pl.from_arrow(el.to_arrow()).equals(el)  # type: ignore[union-attr]


def test_import_dicomframe_and_a_scan_do_not_load_frames_or_pandas(samples: Path) -> None:
    code = (
        "import sys, dicomframe as dcf\n"
        "early = {m for m in ('dicomframe.frames', 'pandas', 'polars') if m in sys.modules}\n"
        f"dcf.scan({str(samples / 'cohort' / 'DOE_JANE_MRN1234567')!r}, progress=False, jobs=2)\n"
        "print(sorted(early), 'dicomframe.frames' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split("\n")[0] == "[] False False"


# --------------------------------------------------------------------------- files of rows

KEY = bytes(range(32))


def _key() -> dcf.ProjectKey:
    from dicomframe.keys import ProjectKey

    return ProjectKey.from_bytes(KEY)


def test_a_filtered_cohort_is_de_identified_file_for_file_and_audited(cohort: dcf.ScanResult, tmp_path: Path) -> None:
    from dicomframe.vault import read_mapping

    first = cohort.instances["PatientID"].sort()[0]
    chosen = cohort.instances.filter(pl.col("PatientID") == first)
    assert 0 < chosen.height < cohort.instances.height
    result = chosen.dicom.deidentify(
        tmp_path / "out", key=_key(), vault=tmp_path / "vault", batch_id="one", progress=False
    )
    assert result.ok and result.written == chosen.height
    # exactly the rows chosen went, and the vault knows them by their paths
    mapping = read_mapping(tmp_path / "vault", "one", _key())
    assert sorted(mapping["original_path"].to_list()) == sorted(chosen["path"].to_list())
    # the outputs, audited from their own scan, with the vault's originals searched for
    out = dcf.scan(tmp_path / "out" / "one", progress=False, jobs=1).instances
    findings = out.dicom.audit(vault=tmp_path / "vault", key=_key(), progress=False)
    assert findings.filter(pl.col("severity") == "high").height == 0
    # pandas gives the same, as an Arrow-backed frame
    same = out.to_pandas(use_pyarrow_extension_array=True).dicom.audit(vault=tmp_path / "vault", key=_key(), progress=False)
    assert isinstance(same, pd.DataFrame) and len(same) == findings.height


def test_files_of_rows_say_what_they_need(cohort: dcf.ScanResult, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"paths\(\) needs a path column"):
        cohort.elements.dicom.deidentify(tmp_path / "out", key=_key(), vault=tmp_path / "vault")
    with pytest.raises(UserInputError, match=r"no rows: the filter left no file; nothing was done"):
        cohort.instances.head(0).dicom.audit()
    with pytest.raises(UserInputError, match="path column"):
        cohort.elements.to_pandas().dicom.audit()
    assert not (tmp_path / "out").exists()
    # paths of an object store's scan become URLs again; repeated rows count once
    frame = pl.DataFrame({"path": ["bucket/a.dcm", "bucket/a.dcm", None, "s3://bucket/b.dcm"]})
    assert frame.dicom.paths("s3://") == ["s3://bucket/a.dcm", "s3://bucket/b.dcm"]
    assert frame.to_pandas().dicom.paths() == ["bucket/a.dcm", "s3://bucket/b.dcm"]


def test_a_memory_scan_filtered_is_de_identified_from_its_urls(tmp_path: Path, samples: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in sorted((samples / "cohort").rglob("*.dcm"))[:3]:
        fs.pipe(f"/frames-test/{path.name}", path.read_bytes())
    try:
        scan = dcf.scan("memory://frames-test", progress=False, jobs=1)
        two = scan.instances.head(2)
        result = two.dicom.deidentify(
            tmp_path / "out", key=_key(), vault=tmp_path / "vault", protocol="memory", progress=False
        )
        assert result.ok and result.written == 2
    finally:
        fs.rm("/frames-test", recursive=True)
