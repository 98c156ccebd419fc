"""`dicomframe plan`: the dry run's sealed plan reviewed from the shell; values only when asked, and logged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from dicomframe.keys import generate_key_file

from .conftest import SAMPLES, run_cli
from .test_deidentify import _planted


def _found(text: str) -> list[str]:
    """The planted values in ``text``, as words ('Anna' is not found in 'PhysicianName')."""
    return [v for v in _planted() if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text, re.IGNORECASE)]


@pytest.fixture()
def dry(tmp_path: Path, capsys, monkeypatch) -> tuple[Path, Path, str]:
    key_file = tmp_path / "project.key"
    generate_key_file(key_file)
    vault = tmp_path / "vault"
    code, out, _ = run_cli(
        capsys, monkeypatch, "deidentify", str(SAMPLES / "cohort"), str(tmp_path / "out"),
        "--key-file", str(key_file), "--vault", str(vault), "--dry-run", "--batch-id", "trial", "--no-progress",
    )  # fmt: skip
    assert code == 0
    # the dry run says how to look at what it planned
    assert f"dicomframe plan {vault} --key-file {key_file} --batch-id trial" in out
    return vault, key_file, out


def test_the_summary_says_what_happens_to_each_attribute_without_a_value(dry, capsys, monkeypatch) -> None:
    vault, key_file, _ = dry
    code, out, _ = run_cli(capsys, monkeypatch, "plan", str(vault), "--key-file", str(key_file), "--batch-id", "trial", "--limit", "500")
    assert code == 0 and "of 70 file(s)" in out
    assert "PatientName" in out and "StudyInstanceUID" in out and "retain_long_modified_dates" in out
    assert not _found(out)


def test_values_are_shown_written_and_logged_only_when_asked(dry, tmp_path: Path, capsys, monkeypatch) -> None:
    vault, key_file, _ = dry
    log = tmp_path / "audit.jsonl"
    common = ("plan", str(vault), "--key-file", str(key_file), "--batch-id", "trial", "--audit-log", str(log))
    code, out, _ = run_cli(capsys, monkeypatch, *common, "-k", "PatientName", "--values", "--limit", "3")
    assert code == 0 and "70 element(s)" in out and "… 67 more" in out
    assert _found(out)  # the reviewer asked to see them
    target = tmp_path / "kept.parquet"
    code, _, err = run_cli(capsys, monkeypatch, *common, "--action", "k", "-o", str(target))
    assert code == 0 and "holds original values (PHI)" in err
    kept = pl.read_parquet(target)
    assert kept.height > 0 and set(kept["action"].unique()) == {"K"} and {"value", "new_value"} <= set(kept.columns)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["action"] for r in records] == ["export", "export"]
    assert records[1]["counts"] == {"elements": kept.height}
    assert not _found(log.read_text())


def test_a_batch_without_a_plan_says_how_to_make_one(dry, capsys, monkeypatch) -> None:
    vault, key_file, _ = dry
    code, _, err = run_cli(capsys, monkeypatch, "plan", str(vault), "--key-file", str(key_file), "--batch-id", "other")
    assert code == 3 and "a dry run writes one" in err and "--batch-id other" in err
