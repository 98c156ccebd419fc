"""Profiles: PS3.15 Annex E shipped as data, resolved into one action per row.

The oracle of these tests is the CSV copy of the standard in ../shared/standards,
read here independently of dicomframe.profiles.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomframe.errors import ProfileError, UserInputError
from dicomframe.profiles import (
    PRESETS,
    Action,
    Option,
    Profile,
    Rule,
    method_codes,
    resolve_code,
    safe_private_table,
    structured_content_table,
)
from dicomframe.tags import KEYWORDS

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "standards"
SHIPPED = ROOT / "dicomframe" / "standards"
CSV_FILES = (
    "ps315_table_E.1-1.csv",
    "ps315_table_E.1-1a_action_codes.csv",
    "ps315_table_E.3.10-1_safe_private.csv",
    "ps315_table_E.3.4-1_clean_structured_content.csv",
    "ps315_deidentification_method_codes.csv",
)
SINGLE = {"X", "Z", "D", "K", "C", "U"}
COMBINED = {"X/Z": "Z", "Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}


def standard_rows(name: str) -> list[dict[str, str]]:
    with open(SHARED / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


E11 = standard_rows("ps315_table_E.1-1.csv")
E34 = standard_rows("ps315_table_E.3.4-1_clean_structured_content.csv")


def expected_action(row: dict[str, str], chosen: list[Option]) -> tuple[str, str]:
    """The resolution rules in plain Python: (action, source) for one standard row."""
    cells = [(row[o.value], o.value) for o in Option if o in chosen and row.get(o.value)]
    if not cells:
        code = row["basic_profile"]
        return COMBINED.get(code, code), "basic"
    if cells[0][0] == "K":
        cleaning = [c for c in cells if c[0] == "C"]
        if cleaning:
            return "C", cleaning[0][1]
    code, source = cells[0]
    return COMBINED.get(code, code), source


def engine_action(profile: Profile, tag: int, creator: str | None = None) -> tuple[str, str] | None:
    """What the engine does to one element, following Profile.actions()'s contract."""
    actions = profile.actions()
    same_creator = pl.col("private_creator").is_null()
    if creator is not None:
        same_creator |= pl.col("private_creator") == creator
    hits = actions.filter(((pl.col("mask") & tag) == pl.col("match")) & same_creator)
    if hits.is_empty():
        return None
    best = hits.sort("priority", descending=True).row(0, named=True)
    return str(best["action"]), str(best["source"])


def row_for(table: pl.DataFrame, keyword: str) -> dict[str, object]:
    return table.filter(pl.col("keyword") == keyword).row(0, named=True)


# --------------------------------------------------------------------------- shipped data


@pytest.mark.parametrize("name", CSV_FILES)
def test_shipped_table_is_a_byte_for_byte_copy_of_the_generated_standard(name: str) -> None:
    assert (SHIPPED / name).read_bytes() == (SHARED / name).read_bytes()


def test_standards_readme_names_edition_source_and_the_hash_of_every_shipped_file() -> None:
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    for fact in (
        "2026c",
        "cosyte/dicom",
        "372bacd889180f8516868278cd8f0e7d2670b84a",
        "77d60b856faf4223ab40a398c53130fc0ee9490d0d811ee3536e6d25c02ac717",
        "Nothing was hand-edited",
        "CID 7050",
        "transcribed, not\nparsed",
    ):
        assert fact in readme
    for name in CSV_FILES:
        digest = hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest()
        assert f"| `{name}` |" in readme and digest in readme


@pytest.fixture()
def updater() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(
        "update_standards", ROOT / "scripts" / "update_standards.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["update_standards"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["update_standards"]


def test_rerunning_the_update_script_reproduces_the_shipped_folder(
    updater: ModuleType, tmp_path: Path
) -> None:
    updater.update(SHARED, tmp_path)
    for name in (*CSV_FILES, "README.md"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_update_script_refuses_a_table_with_a_wrong_row_count_and_writes_nothing(
    updater: ModuleType, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    shutil.copytree(SHARED, src)
    (src / "ps315_table_E.1-1.csv").chmod(0o644)
    lines = (src / "ps315_table_E.1-1.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (src / "ps315_table_E.1-1.csv").write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(updater.UpdateError, match=r"655 data rows, expected 656"):
        updater.update(src, dest)
    assert not dest.exists()


# --------------------------------------------------------------------------- action codes


@pytest.mark.parametrize(("code", "action"), [*((c, c) for c in sorted(SINGLE)), *COMBINED.items()])
def test_every_standard_code_resolves_to_one_action(code: str, action: str) -> None:
    assert resolve_code(code) == action
    assert resolve_code(f" {code.lower()} ") == action


def test_combined_codes_never_remove_what_an_iod_may_require() -> None:
    assert [resolve_code(c) for c in ("X/Z", "Z/D", "X/D", "X/Z/D", "X/Z/U*")] == [
        Action.ZERO,
        Action.DUMMY,
        Action.DUMMY,
        Action.DUMMY,
        Action.UID,
    ]


def test_an_unknown_code_is_an_error_listing_the_codes() -> None:
    with pytest.raises(
        ProfileError, match=r"'X/K' is not a PS3.15 action code; expected one of X, Z"
    ):
        resolve_code("X/K")


def test_every_code_written_in_the_standard_is_known_to_the_resolver() -> None:
    cells = {
        r[c]
        for r in E11
        for c in r
        if c not in ("attribute_name", "tag", "retired", "in_std_comp_iod", "note")
    }
    assert {resolve_code(c) for c in cells - {""}} <= {Action(a) for a in SINGLE}


# --------------------------------------------------------------------------- basic profile


def test_the_basic_table_has_one_single_action_per_standard_row() -> None:
    table = Profile.basic().table()
    assert table.height == 656
    assert set(table["action"].unique().to_list()) <= SINGLE
    assert table["source"].unique().to_list() == ["basic"]
    assert table["code"].to_list() == [r["basic_profile"] for r in E11]
    assert table["name"].to_list() == [r["attribute_name"] for r in E11]


def test_652_rows_name_one_tag_each_and_four_rows_are_patterns() -> None:
    table = Profile.basic().table()
    single = table.filter(pl.col("tag").is_not_null())
    assert single.height == 652 and single["tag"].n_unique() == 652
    assert (single["mask"] == 0xFFFFFFFF).all() and (single["match"] == single["tag"]).all()
    patterns = table.filter(pl.col("tag").is_null())
    assert sorted(patterns["pattern"]) == [
        "(50xx,xxxx)",
        "(60xx,3000)",
        "(60xx,4000)",
        "(gggg,eeee)",
    ]
    assert patterns.filter(pl.col("private"))["pattern"].to_list() == ["(gggg,eeee)"]


def test_a_patient_name_is_zeroed_and_a_referenced_image_sequence_keeps_its_uids_replaced() -> None:
    table = Profile.basic().table()
    assert row_for(table, "PatientName")["action"] == "Z"
    assert row_for(table, "ReferencedImageSequence")["code"] == "X/Z/U*"
    assert row_for(table, "ReferencedImageSequence")["action"] == "U"
    assert row_for(table, "InstitutionName")["action"] == "D"  # X/Z/D


def test_every_single_tag_row_has_a_keyword_even_when_pydicom_does_not_know_it_yet() -> None:
    table = Profile.basic().table().filter(pl.col("tag").is_not_null())
    assert table["keyword"].null_count() == 0
    known = table.filter(pl.col("tag").is_in(list(KEYWORDS)))
    assert known["keyword"].to_list() == [KEYWORDS[t] for t in known["tag"]]
    assert row_for(table, "NameToUse")["tag"] == 0x00100012
    assert (
        Rule(keyword="SexParametersForClinicalUseCategoryComment", action="K").resolved_tag
        == 0x00100042
    )


def test_the_standards_retired_flag_wins_over_the_dictionary() -> None:
    assert row_for(Profile.basic().table(), "EthnicGroup")["retired"] is True


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("option", list(Option), ids=lambda o: o.value)
def test_each_option_alone_sets_exactly_the_standards_cell_on_every_row(option: Option) -> None:
    table = Profile(name="one", options=frozenset({option})).table()
    want = [expected_action(row, [option]) for row in E11]
    assert table["action"].cast(pl.String).to_list() == [a for a, _ in want]
    assert table["source"].to_list() == [s for _, s in want]
    cells = [row[option.value] for row in E11]
    assert [s == option.value for _, s in want] == [bool(c) for c in cells]


@settings(max_examples=40, deadline=None)
@given(
    st.sets(st.sampled_from(list(Option))).filter(
        lambda s: len(s & {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES}) < 2
    )
)
def test_any_option_combination_resolves_as_documented(chosen: set[Option]) -> None:
    table = Profile(name="combo", options=frozenset(chosen)).table()
    want = [expected_action(row, list(chosen)) for row in E11]
    assert list(zip(table["action"].cast(pl.String), table["source"], strict=True)) == want


def test_cleaning_beats_keeping_when_two_options_disagree() -> None:
    research = Profile.preset("research").table()  # device identity K, modified dates C
    row = row_for(research, "DateOfManufacture")
    assert (row["action"], row["source"]) == ("C", "retain_long_modified_dates")
    assert row_for(research, "DeviceSerialNumber")["action"] == "K"
    device_only = Profile(options=frozenset({Option.RETAIN_DEVICE_IDENTITY})).table()
    assert row_for(device_only, "DateOfManufacture")["action"] == "K"
    content = Profile.preset("research").structured_content()  # device K, descriptors C
    equipment = content.filter(pl.col("code_meaning") == "Equipment Identification").row(
        0, named=True
    )
    assert (equipment["action"], equipment["source"]) == ("C", "clean_descriptors")


def test_full_and_modified_dates_together_are_refused() -> None:
    message = "retain_long_full_dates and retain_long_modified_dates exclude each other"
    with pytest.raises(ProfileError, match=message):
        Profile(
            options=frozenset({Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES})
        )
    with pytest.raises(ProfileError, match=message):
        Profile.preset("default").with_options("retain_long_full_dates")


@pytest.mark.parametrize(
    "spelling",
    [
        "retain_uids",
        "retain-uids",
        "Retain UIDs",
        "RETAIN UIDS OPTION",
        "Retain UIDs Option",
        "113110",
    ],
)
def test_options_accept_loose_spellings(spelling: str) -> None:
    assert Option.parse(spelling) is Option.RETAIN_UIDS


def test_dates_options_accept_the_titles_of_ps315_and_of_cid_7050() -> None:
    assert (
        Option.parse("Retain Longitudinal Temporal Information With Modified Dates Option")
        is Option.parse("Retain Longitudinal Temporal Information Modified Dates Option")
        is Option.RETAIN_LONG_MODIFIED_DATES
    )


def test_an_unknown_option_lists_the_valid_names() -> None:
    with pytest.raises(
        ProfileError,
        match=r"unknown de-identification option 'retain uid'; valid options: retain_safe_private, retain_uids,",
    ) as err:
        Option.parse("retain uid")
    assert all(o.value in str(err.value) for o in Option)
    assert isinstance(err.value, UserInputError)


def test_option_values_are_the_table_columns_with_their_cid_7050_codes() -> None:
    header = list(E11[0])
    assert [o.value for o in Option] == header[5:15]
    assert [o.code for o in Option] == [
        "113111",
        "113110",
        "113109",
        "113112",
        "113108",
        "113106",
        "113107",
        "113105",
        "113104",
        "113103",
    ]
    assert Option.CLEAN_GRAPHICS.meaning == "Clean Graphics Option"


def test_retain_safe_private_turns_the_private_row_into_clean() -> None:
    table = Profile(options=frozenset({Option.RETAIN_SAFE_PRIVATE})).table()
    private = table.filter(pl.col("private")).row(0, named=True)
    assert (private["pattern"], private["code"], private["action"], private["source"]) == (
        "(gggg,eeee)",
        "X",
        "C",
        "retain_safe_private",
    )


# --------------------------------------------------------------------------- patterns


def test_overlay_data_matches_even_overlay_groups_only() -> None:
    basic = Profile.basic().with_options("clean_graphics")
    assert engine_action(basic, 0x60003000) == ("C", "clean_graphics")
    assert engine_action(basic, 0x60023000) == ("C", "clean_graphics")
    assert engine_action(basic, 0x601E3000) == ("C", "clean_graphics")
    assert engine_action(basic, 0x60024000) == ("C", "clean_graphics")  # overlay comments
    assert engine_action(basic, 0x60033000) == ("X", "basic")  # odd group: private attributes row
    assert engine_action(basic, 0x60020010) is None  # overlay rows: not in E.1-1


def test_curve_data_covers_whole_even_50xx_groups() -> None:
    table = Profile.basic().table()
    curve = table.filter(pl.col("pattern") == "(50xx,xxxx)").row(0, named=True)
    assert (curve["mask"], curve["match"]) == (0xFF010000, 0x50000000)
    assert engine_action(Profile.basic(), 0x50002000) == ("X", "basic")
    assert engine_action(Profile.basic(), 0x501E3000) == ("X", "basic")


def test_a_private_element_falls_to_the_private_attributes_row() -> None:
    assert engine_action(Profile.basic(), 0x00091001, "GEMS_IDEN_01") == ("X", "basic")
    assert engine_action(Profile.basic(), 0x00100010) == ("Z", "basic")


# --------------------------------------------------------------------------- rules


def test_a_keyword_rule_overrides_its_row_and_later_rules_win() -> None:
    profile = Profile.basic().with_rules(
        Rule(keyword="StudyDescription", action="K"),
        Rule(tag=0x00081030, action="C"),
    )
    table = profile.table()
    assert table.height == 656
    row = row_for(table, "StudyDescription")
    assert (row["action"], row["source"], row["code"], row["priority"]) == ("C", "custom", "X", 3)


def test_a_rule_for_a_tag_outside_the_standard_table_is_appended() -> None:
    table = Profile.basic().with_rules(Rule(keyword="Modality", action="K")).table()
    assert table.height == 657
    row = table.row(-1, named=True)
    assert (row["tag"], row["keyword"], row["name"], row["code"], row["action"]) == (
        0x00080060,
        "Modality",
        "Modality",
        None,
        "K",
    )


def test_a_private_creator_rule_keeps_its_elements_and_only_under_that_creator() -> None:
    profile = Profile.basic().with_rules(
        Rule(private_creator="ACME 1.0", group=0x0019, element=0x10, action="K")
    )
    row = profile.table().row(-1, named=True)
    assert (row["pattern"], row["private_creator"], row["private"], row["mask"], row["match"]) == (
        "(0019,xx10)",
        "ACME 1.0",
        True,
        0xFFFF00FF,
        0x00190010,
    )
    assert engine_action(profile, 0x00191010, "ACME 1.0") == ("K", "custom")
    assert engine_action(profile, 0x00191110, "ACME 1.0") == ("K", "custom")
    assert engine_action(profile, 0x00191010, "OTHER") == ("X", "basic")
    assert engine_action(profile, 0x00191011, "ACME 1.0") == ("X", "basic")


def test_a_pattern_rule_overrides_the_rows_it_covers_and_reaches_beyond_the_table() -> None:
    profile = Profile.basic().with_rules(Rule(tag_pattern="(60XX,xxxx)", action="K"))
    table = profile.table()
    assert (
        table.filter(pl.col("pattern").str.starts_with("(60xx"))["source"].to_list()
        == ["custom"] * 3
    )
    assert engine_action(profile, 0x60020010) == ("K", "custom")
    assert engine_action(profile, 0x60010010) == ("X", "basic")  # odd 60xx group stays private


def test_a_rule_with_the_exact_pattern_of_a_standard_row_replaces_it_without_a_new_row() -> None:
    table = Profile.basic().with_rules(Rule(tag_pattern="(gggg,eeee)", action="X")).table()
    assert table.height == 656
    assert table.filter(pl.col("private"))["source"].to_list() == ["custom"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"action": "X"},
            r"exactly one selector among keyword, tag, tag_pattern and private_creator \(got none\)",
        ),
        ({"keyword": "PatientName", "tag": 0x00100010, "action": "X"}, r"\(got keyword, tag\)"),
        (
            {"keyword": "PatientName", "action": "Q"},
            r"unknown action 'Q': use one of X \(remove\), Z \(zero\)",
        ),
        ({"keyword": "PatientName", "action": "T"}, "action T needs a template"),
        ({"keyword": "PatientName", "action": "K", "template": "x"}, "only used with action T"),
        (
            {"keyword": "PatientName", "action": "T", "template": "{site}"},
            r"unknown placeholder \{site\}; available: \{org\}",
        ),
        (
            {"keyword": "PatientName", "action": "T", "template": "{org:>8}"},
            "without a format spec",
        ),
        (
            {"keyword": "PatientsName", "action": "X"},
            "unknown keyword 'PatientsName': did you mean PatientName",
        ),
        (
            {"keyword": "OverlayData", "action": "X"},
            r'repeating group: select it with tag_pattern = "\(60xx,3000\)"',
        ),
        ({"tag": "(0010,001G)", "action": "X"}, "not a DICOM tag or keyword"),
        (
            {"tag_pattern": "(60x,3000)", "action": "X"},
            r"tag pattern '\(60x,3000\)' is not \(gggg,eeee\)",
        ),
        ({"private_creator": "", "action": "X"}, "must be 1 to 64 characters"),
        (
            {"private_creator": "ACME", "group": 0x0018, "action": "X"},
            "not a private group: give an odd group",
        ),
        (
            {"private_creator": "ACME", "element": 0x110, "action": "X"},
            r"low byte ee of \(gggg,xxee\)",
        ),
        (
            {"keyword": "PatientName", "element": 0x10, "action": "X"},
            "group and element narrow a private_creator rule",
        ),
    ],
)
def test_an_invalid_rule_is_refused_with_a_precise_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        Rule(**kwargs)  # type: ignore[arg-type]


def test_rules_accept_loose_tags_and_patterns_and_store_one_canonical_form() -> None:
    assert Rule(tag="(0008,1030)", action="k") == Rule(tag=0x00081030, action=Action.KEEP)
    assert Rule(tag_pattern="0019XX10", action="X").tag_pattern == "(0019,xx10)"
    assert repr(Rule(tag=0x00081030, action="K")) == "Rule(tag='(0008,1030)', action='K')"


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("preset", "options"),
    [
        ("basic", set()),
        ("default", {"retain_long_modified_dates"}),
        (
            "research",
            {
                "retain_long_modified_dates",
                "retain_patient_characteristics",
                "retain_device_identity",
                "clean_descriptors",
            },
        ),
        (
            "cloud-upload",
            {"retain_long_modified_dates", "retain_device_identity", "clean_descriptors"},
        ),
    ],
)
def test_presets_choose_their_documented_options(preset: str, options: set[str]) -> None:
    profile = Profile.preset(preset)
    assert profile.name == preset and {o.value for o in profile.options} == options
    assert Profile.load(preset) == profile


def test_the_cloud_upload_preset_fills_ids_and_names_from_templates() -> None:
    table = Profile.preset("cloud_upload").table()
    got = {
        kw: (row_for(table, kw)["action"], row_for(table, kw)["template"])
        for kw in ("PatientID", "PatientName", "AccessionNumber", "InstitutionName")
    }
    assert got == {
        "PatientID": ("T", "{org}-{cloud_study_id}"),
        "PatientName": ("T", "CloudStudy^{cloud_study_id}"),
        "AccessionNumber": ("T", "{cloud_study_id}"),
        "InstitutionName": ("T", "{org}"),
    }
    assert table.filter(pl.col("action") != "T")["template"].null_count() == table.height - 4


def test_an_unknown_profile_name_lists_the_presets() -> None:
    with pytest.raises(
        ProfileError,
        match=r"unknown profile 'reserch': give a preset \(basic, default, research, cloud-upload\) or the path of a .toml",
    ):
        Profile.load("reserch")
    assert PRESETS == ("basic", "default", "research", "cloud-upload")


def test_a_profile_summarises_itself_compactly() -> None:
    text = repr(Profile.preset("default"))
    assert text.startswith(
        "Profile('default', options=[retain_long_modified_dates], rules=0, actions: "
    )
    assert "X=" in text and "C=169" in text
    page = Profile.preset("cloud-upload")._repr_html_()
    assert "Profile cloud-upload" in page and "keyword PatientID &rarr; <code>T</code>" in page


def test_profiles_are_values() -> None:
    a = Profile.preset("research")
    assert a == Profile.preset("research") and hash(a) == hash(Profile.preset("research"))
    assert a.with_options("retain_uids") != a and Option.RETAIN_UIDS not in a.options
    a.table().insert_column(0, pl.Series("scratch", range(656)))
    assert "scratch" not in a.table().columns


# --------------------------------------------------------------------------- profile files

EXAMPLE_TOML = """\
[profile]
name = "my-study"
base = "research"            # a preset (optional, default "basic")
options = ["retain_safe_private"]   # added to the base's options
description = "Shifted dates, device kept, safe private tags kept"

[[rule]]
keyword = "StudyDescription"
action = "K"

[[rule]]
keyword = "PatientName"
action = "T"
template = "Study^{cloud_study_id}"

[[rule]]
tag = "(0008,103E)"
action = "C"

[[rule]]
tag_pattern = "(0019,xx10)"
action = "X"

[[rule]]
private_creator = "ACME 1.0"
group = "0029"
element = "10"
action = "K"
"""


@pytest.fixture()
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "my-study.toml"
    path.write_text(EXAMPLE_TOML, encoding="utf-8")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_profile_file_builds_on_a_preset_with_options_and_rules(profile_file: Path) -> None:
    profile = Profile.load(profile_file)
    assert profile.name == "my-study" and profile.description.startswith("Shifted dates")
    assert profile.options == Profile.preset("research").options | {Option.RETAIN_SAFE_PRIVATE}
    assert [r.selector for r in profile.rules] == [
        "keyword StudyDescription",
        "keyword PatientName",
        "tag (0008,103E)",
        "tag_pattern (0019,xx10)",
        "private_creator 'ACME 1.0' (0029,xx10)",
    ]
    table = profile.table()
    assert row_for(table, "PatientName")["template"] == "Study^{cloud_study_id}"
    assert row_for(table, "SeriesDescription")["action"] == "C"
    assert table.filter(pl.col("private_creator") == "ACME 1.0")["match"].item() == 0x00290010
    assert Profile.load(str(profile_file)) == Profile.from_toml(profile_file) == profile


def test_a_minimal_profile_file_is_the_basic_profile_named_after_the_file(tmp_path: Path) -> None:
    profile = Profile.from_toml(write(tmp_path, "[profile]\n"))
    assert (profile.name, profile.options, profile.rules) == ("p", frozenset(), ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rule]]\nkeyword = "PatientAge"\naction = "K"\n[[rule]]\nkeyword = "PatientSex"\nacton = "K"\n',
            r"p.toml: rule 2: unknown key 'acton' \(did you mean 'action'\?\)",
        ),
        (
            '[profile]\nbase = "research"\nopitons = []\n',
            r"p.toml: \[profile\]: unknown key 'opitons'; allowed: name, base, options, description",
        ),
        ('[profiles]\nname = "x"\n', r"p.toml: unknown section or key 'profiles'"),
        (
            '[[rule]]\nkeyword = "PatientAge"\naction = "KEEP IT"\n',
            r"p.toml: rule 1: unknown action 'KEEP IT'",
        ),
        ('[[rule]]\nkeyword = "PatientAge"\n', r"p.toml: rule 1: action is missing"),
        (
            '[[rule]]\nkeyword = "PatientName"\naction = "T"\n',
            r"p.toml: rule 1: action T needs a template",
        ),
        (
            '[[rule]]\nkeyword = "PatientNmae"\naction = "K"\n',
            r"p.toml: rule 1: unknown keyword 'PatientNmae': did you mean PatientName",
        ),
        ('[[rule]]\ntag = 12.5\naction = "K"\n', r"p.toml: rule 1: tag must be a string"),
        (
            '[[rule]]\nprivate_creator = "A"\ngroup = "19"\naction = "K"\n',
            r"p.toml: rule 1: group must be an integer or 4 hex digits",
        ),
        (
            '[rule]\nkeyword = "PatientAge"\naction = "K"\n',
            r"write each rule as \[\[rule\]\] \(double brackets\)",
        ),
        (
            '[profile]\nbase = "reserch"\n',
            r"p.toml: \[profile\]: unknown profile preset 'reserch'; presets: basic, default",
        ),
        (
            '[profile]\noptions = ["retain_long_full_dates"]\nbase = "default"\n',
            r"p.toml: \[profile\]: options retain_long_full_dates and retain_long_modified_dates exclude",
        ),
        (
            '[profile]\noptions = ["keep everything"]\n',
            r"p.toml: \[profile\]: unknown de-identification option 'keep everything'",
        ),
        ("[profile\n", r"p.toml: not valid TOML"),
    ],
)
def test_a_bad_profile_file_names_the_file_the_rule_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        Profile.from_toml(write(tmp_path, text))


def test_a_missing_profile_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"profile file not found: .*nope.toml"):
        Profile.load(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- other tables


def test_the_safe_private_table_keys_479_elements_under_20_creators() -> None:
    table = safe_private_table()
    assert table.columns == ["private_creator", "group", "element", "vr", "vm", "meaning"]
    assert table.schema["group"] == pl.UInt16 and table.schema["element"] == pl.UInt8
    assert (table.height, table["private_creator"].n_unique()) == (479, 20)
    assert not table.select(
        pl.struct("private_creator", "group", "element").is_duplicated().any()
    ).item()
    assert (table["group"] % 2 == 1).all()
    assert table.row(2) == ("ELSCINT1", 0x00E1, 0x21, "DS", "1", "DLP")
    assert (
        table.filter(
            (pl.col("private_creator") == "Philips Imaging DD 001") & (pl.col("element") == 0x7D)
        )["vr"].item()
        == "OW/OB"
    )


def test_structured_content_resolves_like_table_e11() -> None:
    for options in (
        [],
        [Option.RETAIN_UIDS],
        [Option.RETAIN_LONG_FULL_DATES, Option.CLEAN_DESCRIPTORS],
        [
            Option.RETAIN_DEVICE_IDENTITY,
            Option.CLEAN_DESCRIPTORS,
            Option.RETAIN_LONG_MODIFIED_DATES,
        ],
    ):
        table = structured_content_table(options)
        want = [expected_action(row, options) for row in E34]
        assert list(zip(table["action"].cast(pl.String), table["source"], strict=True)) == want
    table = Profile.preset("research").structured_content()
    assert table.height == 214
    assert not table.select(
        pl.struct("code_value", "coding_scheme_designator", "value_type").is_duplicated().any()
    ).item()
    assert set(table["action"].unique()) <= SINGLE


def test_method_codes_list_the_basic_profile_then_the_options_in_table_order() -> None:
    assert method_codes(Profile.basic()) == [
        ("113100", "DCM", "Basic Application Confidentiality Profile")
    ]
    assert [c for c, _, _ in method_codes(Profile.preset("research"))] == [
        "113100",
        "113109",
        "113108",
        "113107",
        "113105",
    ]
    assert all(s == "DCM" for _, s, _ in method_codes(Profile.preset("cloud-upload")))
