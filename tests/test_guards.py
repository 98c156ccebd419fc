"""Mistakes a user makes on the command line are refused before any work, with what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dicomframe.errors import AuditLogError, UserInputError, WrongKey
from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify

from .conftest import SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))
OTHER = ProjectKey.from_bytes(bytes(range(1, 33)))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(SAMPLES / "cohort", src)
    return src


def _nothing_written(root: Path) -> bool:
    return not list(root.rglob("*.dcm")) if root.exists() else True


@pytest.mark.parametrize("where", ["inside", "same", "file URL"])
def test_an_output_inside_the_source_is_refused(source: Path, tmp_path: Path, where: str) -> None:
    dst = {"inside": str(source / "deid"), "same": str(source), "file URL": f"file://{source}/deid"}[where]
    before = sorted(source.rglob("*"))
    with pytest.raises(UserInputError, match="must not be inside the source"):
        deidentify(source, dst, key=KEY, vault=tmp_path / "vault", progress=False)
    assert sorted(source.rglob("*")) == before


@pytest.mark.parametrize("how", ["a link", "a file URL"])
def test_a_vault_inside_the_output_is_refused_however_it_is_named(source: Path, tmp_path: Path, how: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if how == "a link":
        (tmp_path / "link").symlink_to(out)
        dst, vault = str(out), str(tmp_path / "link" / "vault")
    else:
        dst, vault = f"file://{out}", str(out / "vault")
    with pytest.raises(UserInputError, match="vault must not be inside the output"):
        deidentify(source, dst, key=KEY, vault=vault, progress=False)
    assert not list(out.rglob("*"))


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_vault_of_another_key_is_refused(source: Path, tmp_path: Path, dry_run: bool) -> None:
    deidentify(source, tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b1", progress=False)
    with pytest.raises(WrongKey, match=r"sealed with key .* a vault serves one project key.*another --vault"):
        deidentify(
            source, tmp_path / "out2", key=OTHER, vault=tmp_path / "vault", batch_id="b2", progress=False,
            dry_run=dry_run,
        )  # fmt: skip
    assert _nothing_written(tmp_path / "out2") and not (tmp_path / "vault" / "b2").exists()
    # the same key: fine
    assert deidentify(source, tmp_path / "out3", key=KEY, vault=tmp_path / "vault", batch_id="b3", progress=False).ok


def test_an_audit_log_that_cannot_be_written_stops_the_run_before_any_work(source: Path, tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="its folder does not exist"):
        deidentify(
            source, tmp_path / "out", key=KEY, vault=tmp_path / "vault", progress=False,
            audit_log=tmp_path / "missing" / "audit.jsonl",
        )  # fmt: skip
    assert _nothing_written(tmp_path / "out") and not (tmp_path / "vault").exists()


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_vault_that_is_a_file_is_refused_before_any_work(source: Path, tmp_path: Path, dry_run: bool) -> None:
    vault = tmp_path / "vault"
    vault.write_bytes(b"not a folder")
    with pytest.raises(UserInputError, match="is a file, not a folder: give --vault a folder"):
        deidentify(source, tmp_path / "out", key=KEY, vault=vault, progress=False, dry_run=dry_run)
    assert not (tmp_path / "out").exists()
    assert vault.read_bytes() == b"not a folder"


@pytest.mark.parametrize("batch_id", ["Müller", "b²", "a/b", "x" * 65])
def test_a_batch_id_is_ascii_letters_digits_dash_and_underscore(source: Path, tmp_path: Path, batch_id: str) -> None:
    # a batch id becomes a folder name and is printed: a name typed as an id must not get through
    with pytest.raises(UserInputError, match="ASCII letters, digits"):
        deidentify(source, tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id=batch_id, progress=False)
    assert not (tmp_path / "out").exists()


def test_an_empty_source_is_refused_rather_than_made_an_empty_batch(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for dry_run in (False, True):
        with pytest.raises(UserInputError, match="no file in SRC"):
            deidentify(tmp_path / "empty", tmp_path / "out", key=KEY, vault=tmp_path / "vault", progress=False, dry_run=dry_run)
    assert not (tmp_path / "out").exists() and not (tmp_path / "vault").exists()


def test_a_batch_folder_given_as_the_output_is_refused(source: Path, tmp_path: Path) -> None:
    deidentify(source, tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b1", progress=False)
    with pytest.raises(UserInputError, match="is a batch's own folder .* the folder that holds the batches"):
        deidentify(source, tmp_path / "out" / "b1", key=KEY, vault=tmp_path / "vault", batch_id="b2", progress=False)
    assert not (tmp_path / "out" / "b1" / "b2").exists()


@pytest.mark.parametrize("command", ["deidentify", "audit"])
def test_storage_options_reach_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    import dicomframe.phiaudit
    import dicomframe.pipeline
    from dicomframe.cli import main

    seen: dict[str, object] = {}

    def capture(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        raise UserInputError("stop here")

    if command == "deidentify":
        monkeypatch.setattr(dicomframe.pipeline, "deidentify", capture)
        args = ["deidentify", "s3://in/x", "s3://out", "--key-file", "k", "--vault", "v"]
    else:
        monkeypatch.setattr(dicomframe.phiaudit, "_audit", capture)
        args = ["audit", "s3://out/b1"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--storage-option", "endpoint_url=http://127.0.0.1:9", "--storage-option", "anon=true"])
    assert exc.value.code == 2
    assert seen["storage_options"] == {"endpoint_url": "http://127.0.0.1:9", "anon": "true"}
