"""`dicomframe profile`: what a profile does to each attribute, read from the packaged tables."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dicomframe.profiles import Profile

from .conftest import run_cli


def test_the_summary_counts_each_action_by_where_it_comes_from(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(capsys, monkeypatch, "profile", "research")
    assert code == 0
    assert "retain_patient_characteristics" in out and "fail closed" in out
    counts = Profile.preset("research").table().group_by("action", "source").len()
    kept = counts.filter((pl.col("action") == "K") & (pl.col("source") == "retain_device_identity"))["len"].item()
    assert "│ K      │ keep" in out and f"│ {kept} " in out


def test_keywords_and_actions_choose_rows(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(capsys, monkeypatch, "profile", "default", "-k", "PatientName", "--keyword", "StudyDate")
    assert code == 0 and "2 row(s)" in out
    assert "(0010,0010)" in out and "PatientName" in out and "retain_long_modified_dates" in out
    code, out, _ = run_cli(capsys, monkeypatch, "profile", "cloud-upload", "--action", "t")
    templates = Profile.preset("cloud-upload").table().filter(pl.col("action") == "T").height
    assert code == 0 and f"{templates} row(s)" in out and "{org}-{cloud_study_id}" in out


def test_a_keyword_the_table_does_not_list_is_a_usage_error(capsys, monkeypatch) -> None:
    code, _, err = run_cli(capsys, monkeypatch, "profile", "basic", "-k", "patientname")
    assert code == 2 and "case-sensitive" in err and "removed" in err
    code, _, err = run_cli(capsys, monkeypatch, "profile", "no-such-preset")
    assert code == 2 and "give a preset" in err


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_the_resolved_table_is_written_for_review(tmp_path: Path, suffix: str, capsys, monkeypatch) -> None:
    target = tmp_path / f"research.{suffix}"
    code, out, _ = run_cli(capsys, monkeypatch, "profile", "research", "-o", str(target))
    assert code == 0 and "656 rows written" in out
    table = pl.read_csv(target) if suffix == "csv" else pl.read_parquet(target)
    assert table.height == Profile.preset("research").table().height
    assert {"tag", "keyword", "action", "source"} <= set(table.columns)
    code, _, err = run_cli(capsys, monkeypatch, "profile", "research", "-o", str(tmp_path / "x.txt"))
    assert code == 2 and ".parquet or .csv" in err
