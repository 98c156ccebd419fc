"""The plan: every element gets exactly one action, decided by the profile, failing closed."""

from __future__ import annotations

import polars as pl
import pytest
from pydicom.datadict import DicomDictionary

import dicomframe as dcf
from dicomframe.keys import ProjectKey
from dicomframe.planner import DUMMIES, make_plan
from dicomframe.profiles import Option, Profile, resolve_code

from .conftest import CORPUS, SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))
OTHER_KEY = ProjectKey.from_bytes(bytes(32))


@pytest.fixture(scope="module")
def cohort() -> dcf.ScanResult:
    return dcf.scan(SAMPLES / "cohort", progress=False)


@pytest.fixture(scope="module")
def default_plan(cohort: dcf.ScanResult) -> dcf.Plan:
    return make_plan(cohort, "default", KEY)


def test_the_package_plans_as_the_issue_writes_it(cohort: dcf.ScanResult, default_plan: dcf.Plan) -> None:
    # dicomframe.plan(scan_result, profile, key): the call shape other code depends on
    plan = dcf.plan(cohort, "default", KEY)
    assert isinstance(plan, dcf.Plan)
    assert plan.table.equals(default_plan.table)
    assert "plan" in dir(dcf) and dcf.plan is make_plan


def test_every_element_gets_one_action(cohort: dcf.ScanResult, default_plan) -> None:
    table = default_plan.table
    assert table.height == cohort.elements.height
    assert table.select(pl.struct("file_id", "tag_path").is_unique().all()).item()
    assert set(table["action"].unique()) <= set("KXZDCUT")
    assert table["source"].null_count() == 0


def test_unknown_public_elements_are_removed(cohort: dcf.ScanResult) -> None:
    unknown = cohort.elements.filter(
        pl.col("keyword").is_null() & ((pl.col("tag") // 65536) % 2 == 0) & (pl.col("tag") % 65536 != 0)
    )
    plan = make_plan(cohort, "default", KEY).table
    joined = plan.join(unknown.select("file_id", "tag_path"), on=["file_id", "tag_path"], how="semi")
    assert (joined["action"] == "X").all()


def test_private_tags_are_removed_unless_safe(cohort: dcf.ScanResult) -> None:
    private = (pl.col("tag") // 65536) % 2 == 1
    basic = make_plan(cohort, "default", KEY).table.filter(private)
    assert basic.height > 0 and (basic["action"] == "X").all()
    safe = make_plan(cohort, Profile.preset("default").with_options(Option.RETAIN_SAFE_PRIVATE), KEY).table
    kept = safe.filter(private & (pl.col("action") == "K"))
    assert set(kept["private_creator"].drop_nulls()) == {"GEMS_PARM_01"}
    assert safe.filter(private & (pl.col("private_creator") == "ACME_HOSPITAL_PRIVATE"))["action"].eq("X").all()


def test_planted_identifiers_never_survive_in_new_values(default_plan) -> None:
    import json

    planted = json.loads((SAMPLES / "PLANTED_PHI.json").read_text())
    values = set()
    for patient in planted["patients"].values():
        values.update(v for v in patient["identifiers"] if isinstance(v, str) and len(v) >= 4)
    kept_text = default_plan.table.filter(pl.col("action") != "X")["new_value"].drop_nulls().to_list()
    blob = "\n".join(kept_text).lower()
    leaks = sorted(v for v in values if v.lower() in blob)
    assert not leaks, f"{len(leaks)} planted values survive"


def test_uids_are_keyed_and_consistent_across_elements(cohort: dcf.ScanResult, default_plan) -> None:
    table = default_plan.table
    uids = table.filter((pl.col("vr") == "UI") & (pl.col("action") == "U"))
    assert uids["new_value"].str.starts_with("2.25.").all()
    pairs = uids.select("value", "new_value").unique()
    assert pairs["value"].is_unique().all()  # one new UID per original, wherever it appears
    # the referenced SOP instance UIDs point to the new UIDs of the referenced files
    sop = table.filter(pl.col("keyword") == "SOPInstanceUID").select("value", "new_value")
    refs = table.filter(pl.col("keyword") == "ReferencedSOPInstanceUID").select("value", "new_value")
    linked = refs.join(sop, on="value", suffix="_sop")
    assert linked.height > 0 and (linked["new_value"] == linked["new_value_sop"]).all()
    other = make_plan(cohort, "default", OTHER_KEY).table
    assert not set(other.filter(pl.col("keyword") == "SOPInstanceUID")["new_value"]) & set(sop["new_value"])


def test_same_key_same_plan(cohort: dcf.ScanResult, default_plan) -> None:
    again = make_plan(cohort, "default", KEY)
    assert again.table.equals(default_plan.table)


def test_dates_shift_per_patient_and_keep_intervals(default_plan) -> None:
    files = default_plan.files
    assert files["date_offset_days"].is_between(-3650, -30).all()
    per_patient = files.group_by("original_patient_id").agg(pl.col("date_offset_days").n_unique())
    assert (per_patient["date_offset_days"] == 1).all()
    study_dates = default_plan.table.filter(pl.col("keyword") == "StudyDate").join(
        files.select("file_id", "original_patient_id", "date_offset_days"), on="file_id"
    )
    shifted = study_dates.with_columns(
        old=pl.col("value").str.strptime(pl.Date, "%Y%m%d"),
        new=pl.col("new_value").str.strptime(pl.Date, "%Y%m%d"),
    )
    assert ((shifted["new"] - shifted["old"]).dt.total_days() == shifted["date_offset_days"]).all()


def test_patient_name_is_emptied_and_patient_id_pseudonymised(default_plan) -> None:
    table = default_plan.table.filter(pl.col("depth") == 0)
    names = table.filter(pl.col("keyword") == "PatientName")
    assert (names["action"] == "Z").all() and (names["new_value"] == "").all()
    ids = table.filter(pl.col("keyword") == "PatientID")
    assert (ids["action"] == "D").all()
    assert ids["new_value"].str.len_chars().eq(12).all()


def test_cloud_upload_templates(cohort: dcf.ScanResult) -> None:
    plan = make_plan(cohort, "cloud-upload", KEY, org="ACME")
    top = plan.table.filter(pl.col("depth") == 0)
    by_keyword = {
        kw: set(top.filter(pl.col("keyword") == kw)["new_value"])
        for kw in ("PatientID", "PatientName", "AccessionNumber", "InstitutionName")
    }
    cloud_ids = set(plan.files["cloud_study_id"])
    assert by_keyword["PatientID"] == {f"ACME-{c}" for c in cloud_ids}
    assert by_keyword["PatientName"] == {f"CloudStudy^{c}" for c in cloud_ids}
    assert by_keyword["AccessionNumber"] <= cloud_ids
    assert by_keyword["InstitutionName"] == {"ACME"}
    # device identity retained, descriptions cleaned of the planted names
    assert top.filter(pl.col("keyword") == "DeviceSerialNumber")["action"].eq("K").all()
    desc = top.filter(pl.col("keyword") == "StudyDescription")
    assert desc["action"].eq("C").all()
    assert not desc["new_value"].str.contains("(?i)doe|jane|smith").any()


@pytest.mark.parametrize("option", list(Option))
def test_every_table_row_resolves_like_the_standard(option: Option) -> None:
    """Table-driven: one synthetic element per Table E.1-1 tag, each option alone."""
    profile = Profile.basic().with_options(option)
    table = profile.table().filter(pl.col("tag").is_not_null() & ((pl.col("tag") // 65536) != 2))
    rows = []
    for i, tag in enumerate(table["tag"].to_list()):
        entry = DicomDictionary.get(tag)
        vr = entry[0].split(" or ")[0] if entry else "LO"
        value = {"DA": "20200101", "TM": "101010", "DT": "20200101101010", "UI": f"1.2.3.{i}", "SQ": None}.get(vr, "X1")
        rows.append((0, f"{tag:08X}", tag, entry[4] if entry else None, vr, 1, value, None, 0, 2, 0))
    elements = pl.DataFrame(
        rows,
        schema={
            "file_id": pl.Int64, "tag_path": pl.String, "tag": pl.UInt32, "keyword": pl.String,
            "vr": pl.String, "vm": pl.Int32, "value": pl.String, "private_creator": pl.String,
            "depth": pl.Int16, "length": pl.Int64, "offset": pl.Int64,
        },
        orient="row",
    )

    class _Scan:
        pass

    fake = _Scan()
    fake.elements = elements
    fake.instances = pl.DataFrame({"file_id": [0], "PatientID": ["P1"], "StudyInstanceUID": ["1.2.3.0"]})
    plan = make_plan(fake, profile, KEY).table  # type: ignore[arg-type]
    expected = table.select("tag", pl.col("action").cast(pl.String).alias("expected"))
    check = plan.join(expected, on="tag")
    assert check.height == elements.height
    # the plan keeps the profile's action, except where a value cannot take it (fail closed: X)
    # and for the sequences Clean Structured Content cleans item by item (kept as containers)
    mismatch = check.filter(
        (pl.col("action") != pl.col("expected")) & (pl.col("action") != "X") & (pl.col("source") != "clean_structured_content")
    )
    assert mismatch.height == 0, mismatch.head(5)
    for action, new_value, vr, value in check.select("action", "new_value", "vr", "value").iter_rows():
        if action == "X":
            assert new_value is None
        elif action == "Z":
            assert new_value == ""
        elif action == "K":
            assert new_value == value
        elif action == "U" and vr == "UI":
            assert new_value.startswith("2.25.")
        elif action == "D" and vr in DUMMIES:
            assert new_value and new_value != value
        elif action == "C" and vr == "DA":
            assert new_value != value and len(new_value) == 8
    assert resolve_code("X/Z/U*") == "U"


def test_plan_of_real_files_with_nested_private_sequences() -> None:
    scan = dcf.scan(CORPUS / "pydicom-data" / "OBXXXX1A_rle_2frame.dcm", progress=False)
    plan = make_plan(scan, "default", KEY).table
    inside = plan.filter(pl.col("tag_path").str.starts_with("200D110D["))
    assert inside.height > 0 and (inside["action"] == "X").all()


def test_files_with_the_same_identifying_values_share_a_pattern_and_others_do_not() -> None:
    """The cleaning patterns are made once per set of identifying values: files holding the
    same set share one; a set that only looks alike when joined (``AB:CD`` against ``AB``
    and ``CD``, or ``A`` and ``BC`` against ``AB`` and ``C``) gets its own."""
    from dicomframe.planner import _identifier_patterns

    rows = [(1, "AB:CD"), (2, "AB"), (2, "CD"), (3, "CD"), (3, "AB"), (4, "A1"), (4, "BC2"), (5, "A1B"), (5, "C2"),
            (6, "AB:CD")]  # fmt: skip
    elements = pl.DataFrame(
        {"file_id": [r[0] for r in rows], "keyword": "PatientID", "vr": "LO", "value": [r[1] for r in rows]}
    )
    patterns = _identifier_patterns(elements)
    assert patterns[1] is patterns[6] and patterns[2] is patterns[3]
    assert len({id(patterns[f]) for f in (1, 2, 4, 5)}) == 4
    assert patterns[2].search("seen AB today") and not patterns[1].search("seen AB today")
    assert patterns[4].search("BC2") and not patterns[5].search("BC2")
