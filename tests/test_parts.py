"""A batch larger than ``PART_FILES`` runs in parts (flat memory) and gives exactly the same batch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

import dicomframe.pipeline
from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify
from dicomframe.vault import read_mapping

from .conftest import SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))


def _run(root: Path, part_files: int | None, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as m:
        if part_files is not None:
            m.setattr(dicomframe.pipeline, "PART_FILES", part_files)
        # the cohort and the odd inputs: damaged files, and copies of cohort instances (the
        # same UIDs: written once, from the first input), spread over the parts
        result = deidentify(
            [SAMPLES / "cohort", SAMPLES / "odd"], root / "out", key=KEY, vault=root / "vault",
            batch_id="b", progress=False, jobs=2,
        )  # fmt: skip
    out = root / "out" / "b"
    digests = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"
    }  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("submitted_at")
    mapping = read_mapping(root / "vault", "b", KEY).drop("submitted_at")
    return result, digests, manifest, mapping


def test_a_batch_in_parts_equals_the_batch_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, whole_files, whole_manifest, whole_mapping = _run(tmp_path / "whole", None, monkeypatch)
    parts, part_files, part_manifest, part_mapping = _run(tmp_path / "parts", 7, monkeypatch)
    assert whole.written == parts.written == 70 and whole.failed
    assert whole.duplicates == parts.duplicates == 3  # the odd copies of cohort instances
    assert whole_manifest["total_images"] == 70 == len({f for s in whole_manifest["studies"] for f in s["files"]})
    assert whole_files == part_files  # every output byte, and manifest.parquet (its sha256 column too)
    assert whole_manifest == part_manifest
    assert whole_mapping.equals(part_mapping)
    assert sorted(whole.failed, key=lambda f: f["input"]) == sorted(parts.failed, key=lambda f: f["input"])
    assert whole.plan.files.equals(parts.plan.files)
    # the plan of a run in parts keeps its files and summary, not its element rows
    assert parts.plan.table.height == 0 and parts.plan.table.columns == whole.plan.table.columns
    key = ["action", "source"]
    assert whole.plan.summary().sort(key).equals(parts.plan.summary().sort(key))
    assert sum(parts.plan.summary()["elements"]) == whole.plan.table.height
    assert "elements=" in repr(parts.plan)
    assert whole.findings is not None and parts.findings is not None
    assert whole.findings.height == parts.findings.height == 0
    assert whole.studies == parts.studies
    assert sorted(o.split("/out/b/")[1] for o in whole.outputs) == sorted(o.split("/out/b/")[1] for o in parts.outputs)


def test_a_resumed_batch_in_parts_skips_what_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, files, _, _ = _run(tmp_path, 9, monkeypatch)
    # an interrupted run: a few outputs and the commit marker are gone
    out = tmp_path / "out" / "b"
    (out / "manifest.json").unlink()
    gone = sorted(out.rglob("*.dcm"))[::10]
    for path in gone:
        path.unlink()
    again, files_again, _, _ = _run(tmp_path, 9, monkeypatch)
    assert again.skipped == first.written - len(gone)
    assert files_again == files
    assert pl.Series(again.outputs).sort().equals(pl.Series(first.outputs).sort())


def test_the_leak_gate_of_a_batch_in_parts_sees_every_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomframe.profiles import Profile, Rule

    leaky = Profile.preset("default").with_rules(Rule(keyword="PatientName", action="K"))
    monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", 16)
    result = deidentify(
        SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "v", profile=leaky, batch_id="leak",
        progress=False,
    )  # fmt: skip
    assert not result.ok and not result.committed
    assert not (tmp_path / "out" / "leak" / "manifest.json").exists()
    assert result.findings is not None
    names = result.findings.filter(pl.col("keyword") == "PatientName")
    assert names.height == 70 and names["output"].n_unique() == 70


def test_a_dry_run_in_parts_seals_the_same_plan_into_the_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomframe.vault import read_plan

    def dry(root: Path, part_files: int | None):
        with monkeypatch.context() as m:
            if part_files is not None:
                m.setattr(dicomframe.pipeline, "PART_FILES", part_files)
            result = deidentify(
                [SAMPLES / "cohort", SAMPLES / "odd"], root / "out", key=KEY, vault=root / "vault", batch_id="d",
                progress=False, dry_run=True,
            )  # fmt: skip
        return result, read_plan(root / "vault", "d", KEY)

    whole, whole_rows = dry(tmp_path / "whole", None)
    parts, part_rows = dry(tmp_path / "parts", 8)
    assert whole.dry_run and parts.dry_run and not (tmp_path / "parts" / "out").exists()
    assert whole_rows.height > 0 and whole_rows.equals(part_rows)  # every element row, in order
    assert whole_rows.equals(whole.plan.table) and parts.plan.table.height == 0
    assert whole.written == parts.written and whole.failed == parts.failed
    assert whole.plan.files.equals(parts.plan.files)
    key = ["action", "source"]
    assert whole.plan.summary().sort(key).equals(parts.plan.summary().sort(key))


def test_parts_are_as_even_as_can_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomframe.scanner

    sizes: list[int] = []
    real_scan = dicomframe.scanner.scan

    def counting_scan(src, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hasattr(src, "files"):  # a part of the batch (the gate's read-back passes paths)
            sizes.append(len(src.files))
        return real_scan(src, *args, **kwargs)

    monkeypatch.setattr(dicomframe.scanner, "scan", counting_scan)
    monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", 69)
    result = deidentify(SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b", progress=False)
    assert result.ok and result.written == 70
    assert sizes == [35, 35]  # not 69 and 1
