"""`dicomframe reidentify`: JSON on stdout, exit codes 3-6 from the vault errors, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomframe.cli import main
from dicomframe.keys import generate_key_file
from dicomframe.pipeline import deidentify

from .conftest import SAMPLES


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_reidentify_prints_the_originals_and_exits_with_the_vault_error_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "project.key"
    key = generate_key_file(key_file)
    result = deidentify(
        SAMPLES / "cohort",
        tmp_path / "out",
        key=key,
        vault=tmp_path / "vault",
        batch_id="b1",
        progress=False,
    )
    assert result.mapping_uri == f"{tmp_path / 'vault'}/b1/mapping.parquet.enc"
    assert sorted(p.name for p in (tmp_path / "vault" / "b1").iterdir()) == [
        "mapping.parquet.enc"
    ]
    manifest = json.loads((tmp_path / "out" / "b1" / "manifest.json").read_text())
    study = manifest["studies"][0]["cloud_study_id"]
    log = tmp_path / "audit.jsonl"
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(key_file),
        "--batch-id",
        "b1",
        "--study",
        study,
        "--audit-log",
        str(log),
    )
    assert code == 0, err
    found = json.loads(out)
    assert set(found) == {
        "batch_id",
        "cloud_study_id",
        "patient_id",
        "study_instance_uid",
        "accession_number",
    }
    assert found["patient_id"].startswith("MRN")
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(key_file),
        "--batch-id",
        "b9",
        "--study",
        study,
    )
    assert code == 3 and "no batch 'b9'" in err, err
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(key_file),
        "--batch-id",
        "b1",
        "--study",
        "NOPE",
        "--audit-log",
        str(log),
    )
    assert code == 6, err
    other = tmp_path / "other.key"
    generate_key_file(other)
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(other),
        "--batch-id",
        "b1",
        "--study",
        study,
    )
    assert code == 4 and "this vault file was written with key" in err, err
    enc = tmp_path / "vault" / "b1" / "mapping.parquet.enc"
    data = bytearray(enc.read_bytes())
    data[-1] ^= 1
    enc.write_bytes(bytes(data))
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(key_file),
        "--batch-id",
        "b1",
        "--study",
        study,
    )
    assert code == 5, err
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(key_file),
        "--batch-id",
        "../x",
        "--study",
        study,
    )
    assert code == 2, err
    code, out, err = run(
        capsys,
        "reidentify",
        str(tmp_path / "vault"),
        "--key-file",
        str(tmp_path / "missing.key"),
        "--batch-id",
        "b1",
        "--study",
        study,
    )
    assert code == 2, err
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert [l["outcome"] for l in lines] == ["ok", "unknownstudy"]
    assert "MRN" not in log.read_text()
    from dicomframe.auditlog import verify

    assert verify(log).ok


def test_a_vault_folder_that_does_not_exist_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "project.key"
    generate_key_file(key_file)
    args = ("--key-file", str(key_file), "--batch-id", "b1", "--study", "X")
    code, out, err = run(capsys, "reidentify", str(tmp_path / "no-such-vault"), *args)
    assert code == 2 and out == "" and "does not exist" in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "reidentify", str(tmp_path / "empty"), *args)
    assert code == 3 and "holds no batch" in err, err
