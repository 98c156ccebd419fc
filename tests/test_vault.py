"""The vault: encrypted mappings that only the project key opens, and re-identification."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomframe import vault as vault_module
from dicomframe.errors import (
    DicomframeError,
    SourceNotFoundError,
    StorageError,
    Tampered,
    UnknownBatch,
    UnknownStudy,
    UserInputError,
    VaultError,
    WrongKey,
)
from dicomframe.keys import FileKeyProvider, ProjectKey, generate_key_file
from dicomframe.vault import (
    HEADER_LENGTH,
    MAPPING_COLUMNS,
    list_batches,
    read_mapping,
    reidentify,
    reidentify_study,
    write_mapping,
)

from .conftest import SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))
OTHER_KEY = ProjectKey.from_bytes(bytes(range(100, 132)))
ORIGINAL_COLUMNS = [c for c in MAPPING_COLUMNS if c.startswith("original_")]


# -- a small synthetic cohort: two patients, three studies ----------------------------

STUDIES: dict[str, dict[str, Any]] = {
    "jane-ct": {
        "patient": "MRN1234567",
        "folder": "DOE_JANE_MRN1234567",
        "study": "1.2.826.0.1.3680043.10.543.1001",
        "accession": "ACC20190304A",
        "series": ["1.2.826.0.1.3680043.10.543.1001.1", "1.2.826.0.1.3680043.10.543.1001.2"],
    },
    "jane-mr": {
        "patient": "MRN1234567",
        "folder": "DOE_JANE_MRN1234567",
        "study": "1.2.826.0.1.3680043.10.543.1002",
        "accession": "ACC20200611B",
        "series": ["1.2.826.0.1.3680043.10.543.1002.1"],
    },
    "john-cr": {
        "patient": "MRN2345678",
        "folder": "SMITH_JOHN_MRN2345678",
        "study": "1.2.826.0.1.3680043.10.543.2001",
        "accession": None,  # a study without an accession number
        "series": ["1.2.826.0.1.3680043.10.543.2001.1"],
    },
}


def _pseudo_uid(value: str) -> str:
    return "2.25." + str(int(hashlib.sha256(b"test-key" + value.encode()).hexdigest()[:30], 16))


def _token(value: str) -> str:
    return hashlib.sha256(b"test-token" + value.encode()).hexdigest()[:12].upper()


def _mapping(batch_id: str, *studies: str, error_rows: int = 1) -> pl.DataFrame:
    """A mapping shaped like the pipeline's: one row per SOP instance, then unreadable files."""
    rows: list[dict[str, Any]] = []
    for name in studies:
        s = STUDIES[name]
        for series_no, series in enumerate(s["series"], start=1):
            for instance in (1, 2):
                sop = f"{series}.{instance}"
                study_pseudo, series_pseudo, sop_pseudo = (
                    _pseudo_uid(s["study"]),
                    _pseudo_uid(series),
                    _pseudo_uid(sop),
                )
                rows.append(
                    {
                        "batch_id": batch_id,
                        "submitted_at": "2025-01-02T03:04:05Z",
                        "org": "ACME",
                        "cloud_study_id": _token(s["study"]),
                        "original_patient_id": s["patient"],
                        "pseudonymous_patient_id": f"ACME-{_token(s['patient'])}",
                        "original_study_instance_uid": s["study"],
                        "study_instance_uid": study_pseudo,
                        "original_series_instance_uid": series,
                        "series_instance_uid": series_pseudo,
                        "original_sop_instance_uid": sop,
                        "sop_instance_uid": sop_pseudo,
                        "original_accession_number": s["accession"],
                        "accession_number": _token(s["study"]),
                        "date_offset_days": -117 if s["patient"] == "MRN1234567" else 42,
                        "original_path": f"export/{s['folder']}/{s['accession'] or 'x'}/{series_no}/IM{instance:04d}",
                        "output_path": f"{study_pseudo}/{series_pseudo}/{sop_pseudo}.dcm",
                        "status": "written",
                    }
                )
    for n in range(error_rows):
        rows.append(
            {
                "batch_id": batch_id,
                "original_path": f"export/DOE_JANE_MRN1234567/broken{n}",
                "status": "truncated",
            }
        )
    schema = {c: pl.String for c in MAPPING_COLUMNS} | {"date_offset_days": pl.Int32}
    return pl.DataFrame(rows, schema=schema)


def _originals(mapping: pl.DataFrame) -> list[str]:
    """Every original value of a mapping, and every folder name in its original paths."""
    values: set[str] = set()
    for column in ORIGINAL_COLUMNS:
        for value in mapping[column].drop_nulls().to_list():
            values.add(value)
            if column == "original_path":
                values.update(part for part in value.split("/") if len(part) >= 4)
    return sorted(v for v in values if len(v) >= 4)


def _vault_bytes(fs: Any, root: str) -> dict[str, bytes]:
    """Every file under a vault root (hidden and temporary files included)."""
    return {path: fs.cat_file(path) for path in fs.find(root, withdirs=False)}


def _assert_no_plain_originals(files: dict[str, bytes], root: str, originals: list[str]) -> None:
    """No original value in any file's bytes (as UTF-8 or Latin-1) nor in a name under ``root``."""
    assert files, "the vault is empty"
    needles = {v.encode("utf-8") for v in originals} | {
        v.encode("latin-1", "ignore") for v in originals
    }
    for path, data in files.items():
        found = [n for n in needles if len(n) >= 4 and n in data]
        assert not found, f"{path}: {len(found)} original values in plain bytes"
        name = path.rstrip("/").removeprefix(root.rstrip("/")).lower()
        assert not any(v.lower() in name for v in originals), f"{path}: original value in a name"


@pytest.fixture()
def fixed_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic ciphertext, so a short value can never match random bytes by chance."""
    monkeypatch.setattr(vault_module, "_new_nonce", lambda: bytes(range(12)))


def _memory_vault() -> str:
    return f"memory://vault-{uuid.uuid4().hex[:12]}"


E = TypeVar("E", bound=VaultError)


def _raises(error: type[E], call: Callable[[], object], *originals: str) -> E:
    """Run ``call``, expect ``error``; its message holds no original value."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for value in originals:
        assert value not in message, "an original value leaked into an error message"
    return info.value


@pytest.fixture()
def vault(tmp_path: Path) -> Path:
    return tmp_path / "vault"


@pytest.fixture()
def two_batches(vault: Path) -> Path:
    """b1 holds Jane's CT and MR, b2 re-uploads Jane's CT with John's CR."""
    write_mapping(str(vault), "b1", _mapping("b1", "jane-ct", "jane-mr"), KEY)
    write_mapping(str(vault), "b2", _mapping("b2", "jane-ct", "john-cr"), KEY)
    return vault


# -- round trips -------------------------------------------------------------------


def test_a_mapping_round_trips_through_a_local_vault(vault: Path) -> None:
    mapping = _mapping("b1", "jane-ct", "jane-mr", "john-cr")
    uri = write_mapping(str(vault), "b1", mapping, KEY)
    assert uri == f"{vault}/b1/mapping.parquet.enc"
    assert sorted(p.name for p in (vault / "b1").iterdir()) == ["mapping.parquet.enc"]
    back = read_mapping(str(vault), "b1", KEY)
    assert back.schema == mapping.schema
    assert back.equals(mapping)
    assert list_batches(str(vault)) == ["b1"]


def test_a_path_object_and_a_file_url_reach_the_same_vault(vault: Path) -> None:
    mapping = _mapping("b1", "jane-ct")
    write_mapping(vault, "b1", mapping, KEY)
    assert read_mapping(f"file://{vault}", "b1", KEY).equals(mapping)
    assert list_batches(f"file://{vault}") == ["b1"]


def test_a_mapping_round_trips_through_a_memory_url(fixed_nonce: None) -> None:
    root = _memory_vault()
    mapping = _mapping("b1", "jane-ct", "john-cr")
    assert write_mapping(root, "b1", mapping, KEY) == f"{root}/b1/mapping.parquet.enc"
    assert read_mapping(root, "b1", KEY).equals(mapping)
    assert list_batches(root) == ["b1"]
    fs, path = fsspec.core.url_to_fs(root)
    _assert_no_plain_originals(_vault_bytes(fs, path), path, _originals(mapping))


@pytest.mark.s3
def test_a_mapping_round_trips_through_s3_over_http(s3_bucket: str, fixed_nonce: None) -> None:
    import s3fs

    root = f"s3://{s3_bucket}/vault"
    first, second = _mapping("b1", "jane-ct", "jane-mr"), _mapping("b2", "john-cr")
    assert write_mapping(root, "b1", first, KEY) == f"{root}/b1/mapping.parquet.enc"
    write_mapping(root + "/", "b2", second, KEY, storage_options={"skip_instance_cache": True})
    assert list_batches(root) == ["b1", "b2"]
    assert read_mapping(root, "b1", KEY).equals(first)
    assert read_mapping(root, "b2", KEY).equals(second)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    files = _vault_bytes(fs, f"{s3_bucket}/vault")
    assert sorted(files) == [
        f"{s3_bucket}/vault/b1/mapping.parquet.enc",
        f"{s3_bucket}/vault/b2/mapping.parquet.enc",
    ]
    _assert_no_plain_originals(files, f"{s3_bucket}/vault", _originals(pl.concat([first, second])))
    _raises(UnknownBatch, lambda: read_mapping(root, "b3", KEY))
    assert (
        reidentify_study(root, KEY, "b2", _token(STUDIES["john-cr"]["study"]))["patient_id"]
        == "MRN2345678"
    )


def test_the_file_starts_with_magic_version_key_id_and_a_fresh_nonce(vault: Path) -> None:
    mapping = _mapping("b1", "jane-ct")
    write_mapping(str(vault), "b1", mapping, KEY)
    first = (vault / "b1" / "mapping.parquet.enc").read_bytes()
    write_mapping(str(vault), "b1", mapping, KEY)  # a re-run rewrites the batch
    second = (vault / "b1" / "mapping.parquet.enc").read_bytes()
    for data in (first, second):
        assert data[:8] == b"DCFVAULT"
        assert data[8] == 1
        assert data[9:25] == KEY.key_id.encode("ascii")
    assert HEADER_LENGTH == 37
    assert first[25:37] != second[25:37], "every write draws a new nonce"
    assert first[37:] != second[37:]
    assert read_mapping(str(vault), "b1", KEY).equals(mapping)


def test_a_failed_write_keeps_the_previous_mapping_and_leaves_no_temporary_file(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _mapping("b1", "jane-ct")
    write_mapping(str(vault), "b1", old, KEY)

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    error = _raises(
        VaultError, lambda: write_mapping(str(vault), "b1", _mapping("b1", "john-cr"), KEY)
    )
    assert "cannot write" in str(error) and "No space left on device" in str(error)
    monkeypatch.undo()
    assert sorted(p.name for p in (vault / "b1").iterdir()) == ["mapping.parquet.enc"]
    assert read_mapping(str(vault), "b1", KEY).equals(old)


def test_a_key_provider_is_accepted_wherever_a_key_is(vault: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "project.key"
    key = generate_key_file(key_file)

    class Kms:
        def get_key(self) -> ProjectKey:
            return key

    mapping = _mapping("b1", "jane-ct")
    write_mapping(str(vault), "b1", mapping, FileKeyProvider(key_file))
    assert read_mapping(str(vault), "b1", Kms()).equals(mapping)
    assert read_mapping(str(vault), "b1", key).equals(mapping)
    cloud_id = _token(STUDIES["jane-ct"]["study"])
    assert reidentify_study(str(vault), Kms(), "b1", cloud_id)["patient_id"] == "MRN1234567"
    frame = reidentify(
        pl.DataFrame({"cloud_study_id": [cloud_id]}), str(vault), FileKeyProvider(key_file)
    )
    assert frame["original_patient_id"].to_list() == ["MRN1234567"]
    # a key file, as deidentify and audit take it
    assert read_mapping(str(vault), "b1", key_file).equals(mapping)
    assert reidentify_study(str(vault), str(key_file), "b1", cloud_id)["patient_id"] == "MRN1234567"


def test_something_that_is_not_a_key_is_refused(vault: Path) -> None:
    class Broken:
        def get_key(self) -> bytes:
            return b"\0" * 32

    with pytest.raises(UserInputError, match="a ProjectKey, a KeyProvider .* or a key file"):
        write_mapping(str(vault), "b1", _mapping("b1", "jane-ct"), b"\0" * 32)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="ProjectKey.from_bytes"):
        read_mapping(str(vault), "b1", Broken())  # type: ignore[arg-type]


# -- what write_mapping refuses -------------------------------------------------------


@pytest.mark.parametrize("batch_id", ["", "../b1", "b1/x", "b.1", "a b", "x" * 65])
def test_a_batch_id_that_is_not_one_plain_folder_name_is_refused(
    vault: Path, batch_id: str
) -> None:
    with pytest.raises(UserInputError, match="letters, digits, '-' and '_'"):
        write_mapping(str(vault), batch_id, _mapping(batch_id, "jane-ct"), KEY)
    with pytest.raises(UserInputError, match="letters, digits, '-' and '_'"):
        read_mapping(str(vault), batch_id, KEY)
    assert not vault.exists()


def test_a_table_without_the_mapping_columns_is_refused(vault: Path) -> None:
    mapping = _mapping("b1", "jane-ct").drop("cloud_study_id", "status")
    error = _raises(
        VaultError, lambda: write_mapping(str(vault), "b1", mapping, KEY), *_originals(mapping)
    )
    assert "cloud_study_id, status" in str(error) and "MAPPING_COLUMNS" in str(error)
    with pytest.raises(UserInputError, match="polars DataFrame"):
        write_mapping(str(vault), "b1", mapping.to_dicts(), KEY)  # type: ignore[arg-type]
    assert not vault.exists()


def test_rows_of_another_batch_are_refused(vault: Path) -> None:
    mixed = pl.concat([_mapping("b1", "jane-ct"), _mapping("b2", "john-cr")])
    error = _raises(
        VaultError, lambda: write_mapping(str(vault), "b1", mixed, KEY), *_originals(mixed)
    )
    assert "exactly one batch" in str(error)
    assert not vault.exists()


# -- wrong key, tampering, unknown batch -------------------------------------------------


def test_the_wrong_key_is_refused_naming_both_key_ids(vault: Path) -> None:
    mapping = _mapping("b1", "jane-ct")
    write_mapping(str(vault), "b1", mapping, KEY)
    error = _raises(
        WrongKey, lambda: read_mapping(str(vault), "b1", OTHER_KEY), *_originals(mapping)
    )
    assert (
        f"this vault file was written with key {KEY.key_id}, you gave key {OTHER_KEY.key_id}"
        in str(error)
    )
    assert f"key_id line reads {KEY.key_id}" in str(error)
    assert error.exit_code == 4
    _raises(WrongKey, lambda: reidentify_study(str(vault), OTHER_KEY, "b1", "ANY"))


def _sealed(vault: Path, batch: str = "b1") -> tuple[Path, bytes, pl.DataFrame]:
    mapping = _mapping(batch, "jane-ct", "john-cr")
    write_mapping(str(vault), batch, mapping, KEY)
    path = vault / batch / "mapping.parquet.enc"
    return path, path.read_bytes(), mapping


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (lambda n: 0, "not a dicomframe vault file"),
        (lambda n: 5, "not a dicomframe vault file"),
        (lambda n: HEADER_LENGTH, "truncated"),
        (lambda n: HEADER_LENGTH + 15, "truncated"),
        (lambda n: n // 2, "failed authentication"),
        (lambda n: n - 1, "failed authentication"),
    ],
    ids=["empty", "inside-magic", "header-only", "no-full-tag", "half", "last-byte-cut"],
)
def test_a_truncated_file_is_reported_as_tampered(
    vault: Path, keep: Callable[[int], int], expected: str
) -> None:
    path, data, mapping = _sealed(vault)
    path.write_bytes(data[: keep(len(data))])
    error = _raises(Tampered, lambda: read_mapping(str(vault), "b1", KEY), *_originals(mapping))
    assert expected in str(error) and "restore it from a backup" in str(error)
    assert str(path) in str(error)
    assert error.exit_code == 5


@pytest.mark.parametrize("where", ["first", "middle", "tag"])
def test_a_flipped_byte_in_the_body_is_reported_as_tampered(vault: Path, where: str) -> None:
    path, data, mapping = _sealed(vault)
    offset = {
        "first": HEADER_LENGTH,
        "middle": (HEADER_LENGTH + len(data)) // 2,
        "tag": len(data) - 1,
    }[where]
    damaged = bytearray(data)
    damaged[offset] ^= 0x01
    path.write_bytes(bytes(damaged))
    error = _raises(Tampered, lambda: read_mapping(str(vault), "b1", KEY), *_originals(mapping))
    assert "failed authentication" in str(error)


def _other_hex(char: int) -> int:
    return ord("0") if char != ord("0") else ord("1")


@pytest.mark.parametrize(
    ("offset", "change", "expected"),
    [
        (0, lambda b: b ^ 0x20, "not a dicomframe vault file"),  # magic
        (7, lambda b: b ^ 0x01, "not a dicomframe vault file"),
        (8, lambda b: 2, "format version 2"),  # version
        (8, lambda b: 0, "format version 0"),
        (9, _other_hex, "key id in its header was changed"),  # key id, still hex
        (24, _other_hex, "key id in its header was changed"),
        (12, lambda b: ord("z"), "key id is not hex"),  # key id, not hex
        (25, lambda b: b ^ 0x80, "failed authentication"),  # nonce
        (36, lambda b: b ^ 0x01, "failed authentication"),
    ],
    ids=[
        "magic-0",
        "magic-7",
        "version-2",
        "version-0",
        "key-id-hex-0",
        "key-id-hex-15",
        "key-id-not-hex",
        "nonce-0",
        "nonce-11",
    ],
)
def test_a_flipped_byte_in_the_header_is_reported_as_tampered(
    vault: Path, offset: int, change: Callable[[int], int], expected: str
) -> None:
    path, data, mapping = _sealed(vault)
    damaged = bytearray(data)
    damaged[offset] = change(damaged[offset])
    assert damaged != bytearray(data)
    path.write_bytes(bytes(damaged))
    error = _raises(Tampered, lambda: read_mapping(str(vault), "b1", KEY), *_originals(mapping))
    assert expected in str(error)


def test_a_file_moved_into_another_batchs_folder_is_reported_as_tampered(vault: Path) -> None:
    path, _, mapping = _sealed(vault, "b1")
    _sealed(vault, "b2")
    shutil.copyfile(path, vault / "b2" / "mapping.parquet.enc")
    error = _raises(Tampered, lambda: read_mapping(str(vault), "b2", KEY), *_originals(mapping))
    assert "moved here from another batch's folder" in str(error)
    (vault / "b1").rename(vault / "b3")  # a renamed batch folder
    _raises(Tampered, lambda: read_mapping(str(vault), "b3", KEY))


def test_an_unknown_batch_names_the_batches_the_vault_holds(two_batches: Path) -> None:
    error = _raises(UnknownBatch, lambda: read_mapping(str(two_batches), "b9", KEY))
    message = str(error)
    assert f"no batch 'b9' in vault {two_batches}" in message
    assert "it holds b1, b2" in message and "dicomframe.vault.list_batches(" in message
    assert error.exit_code == 3
    _raises(UnknownBatch, lambda: reidentify_study(str(two_batches), KEY, "b9", "X"))
    _raises(
        UnknownBatch,
        lambda: reidentify(
            pl.DataFrame({"cloud_study_id": ["X"]}), str(two_batches), KEY, batch_id="b9"
        ),
    )


def test_an_empty_vault_holds_no_batch_and_a_missing_one_is_a_wrong_path(tmp_path: Path) -> None:
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    assert list_batches(str(missing)) == []
    assert list_batches(_memory_vault()) == []
    error = _raises(UnknownBatch, lambda: read_mapping(str(empty), "b1", KEY))
    assert "it holds no batch" in str(error) and "check the vault location" in str(error)
    with pytest.raises(UnknownBatch, match="holds no batch"):
        reidentify(pl.DataFrame({"cloud_study_id": ["X"]}), str(empty), KEY)
    with pytest.raises(UnknownBatch, match="holds no batch"):
        reidentify(pl.DataFrame({"cloud_study_id": ["X"]}), _memory_vault(), KEY)
    # a folder that does not exist is a usage error (exit 2), as a missing SRC is
    error = _raises(SourceNotFoundError, lambda: read_mapping(str(missing), "b1", KEY))
    assert "does not exist" in str(error)
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        reidentify(pl.DataFrame({"cloud_study_id": ["X"]}), str(missing), KEY)


def test_an_unencrypted_mapping_from_an_older_dicomframe_is_pointed_out(vault: Path) -> None:
    (vault / "old").mkdir(parents=True)
    _mapping("old", "jane-ct").write_parquet(vault / "old" / "mapping.parquet")
    assert list_batches(str(vault)) == []
    error = _raises(UnknownBatch, lambda: read_mapping(str(vault), "old", KEY))
    assert "unencrypted mapping.parquet" in str(error) and "write_mapping" in str(error)


def test_list_batches_lists_only_folders_with_a_mapping(two_batches: Path) -> None:
    (two_batches / "empty").mkdir()
    (two_batches / "b0" / "plan").mkdir(parents=True)
    (two_batches / "b3").mkdir()
    (two_batches / "b3" / ".mapping.parquet.enc.0123abcd.tmp").write_bytes(b"partial")
    (two_batches / "not a batch").mkdir()
    (two_batches / "not a batch" / "mapping.parquet.enc").write_bytes(b"x")
    assert list_batches(str(two_batches)) == ["b1", "b2"]


def test_vault_errors_have_distinct_exit_codes() -> None:
    codes = {cls: cls.exit_code for cls in (UnknownBatch, WrongKey, Tampered, UnknownStudy)}
    assert codes == {UnknownBatch: 3, WrongKey: 4, Tampered: 5, UnknownStudy: 6}
    for cls in codes:
        assert issubclass(cls, VaultError) and issubclass(cls, DicomframeError)
        assert not issubclass(cls, UserInputError)  # exit code 2 stays for usage errors
    assert not issubclass(StorageError, VaultError)


# -- re-identification -------------------------------------------------------------------


def test_one_study_is_reidentified_from_its_cloud_study_id(two_batches: Path) -> None:
    cloud_id = _token(STUDIES["jane-mr"]["study"])
    found = reidentify_study(str(two_batches), KEY, "b1", cloud_id)
    assert found == {
        "batch_id": "b1",
        "cloud_study_id": cloud_id,
        "patient_id": "MRN1234567",
        "study_instance_uid": STUDIES["jane-mr"]["study"],
        "accession_number": "ACC20200611B",
    }
    john = reidentify_study(str(two_batches), KEY, "b2", _token(STUDIES["john-cr"]["study"]))
    assert john["accession_number"] is None and john["patient_id"] == "MRN2345678"


def test_a_study_that_is_not_in_the_batch_is_unknown(two_batches: Path) -> None:
    elsewhere = _token(STUDIES["john-cr"]["study"])  # in b2, not in b1
    mapping = read_mapping(str(two_batches), "b1", KEY)
    error = _raises(
        UnknownStudy,
        lambda: reidentify_study(str(two_batches), KEY, "b1", elsewhere),
        *_originals(mapping),
    )
    assert "batch 'b1'" in str(error) and "manifest.json" in str(error)
    assert elsewhere not in str(error)
    assert error.exit_code == 6
    _raises(UnknownStudy, lambda: reidentify_study(str(two_batches), KEY, "b1", "NOSUCHSTUDY0"))
    with pytest.raises(UserInputError, match="non-empty string"):
        reidentify_study(str(two_batches), KEY, "b1", "")


def _jane_ct() -> tuple[str, str, str]:
    s = STUDIES["jane-ct"]
    return _token(s["study"]), _pseudo_uid(s["study"]), _pseudo_uid(s["series"][1] + ".2")


def test_bulk_reidentify_searches_every_batch_and_matches_a_reuploaded_study_once(
    two_batches: Path,
) -> None:
    ct, _, _ = _jane_ct()
    mr, cr = _token(STUDIES["jane-mr"]["study"]), _token(STUDIES["john-cr"]["study"])
    frame = pl.DataFrame(
        {"cloud_study_id": [cr, ct, "UNKNOWN00000", mr, ct, None], "n": [1, 2, 3, 4, 5, 6]}
    )
    out = reidentify(frame, str(two_batches), KEY)
    assert out.columns == [
        "cloud_study_id",
        "n",
        "original_patient_id",
        "original_study_instance_uid",
        "original_accession_number",
    ]
    assert out.height == 6 and out["n"].to_list() == [1, 2, 3, 4, 5, 6]  # every row once, in order
    assert out["original_patient_id"].to_list() == [
        "MRN2345678",
        "MRN1234567",
        None,
        "MRN1234567",
        "MRN1234567",
        None,
    ]
    assert out["original_study_instance_uid"].to_list() == [
        STUDIES["john-cr"]["study"],
        STUDIES["jane-ct"]["study"],
        None,
        STUDIES["jane-mr"]["study"],
        STUDIES["jane-ct"]["study"],
        None,
    ]
    assert out["original_accession_number"].to_list() == [
        None,
        "ACC20190304A",
        None,
        "ACC20200611B",
        "ACC20190304A",
        None,
    ]
    only_b2 = reidentify(frame, str(two_batches), KEY, batch_id="b2")
    assert only_b2["original_patient_id"].to_list() == [
        "MRN2345678",
        "MRN1234567",
        None,
        None,
        "MRN1234567",
        None,
    ]


def test_bulk_reidentify_joins_on_study_or_sop_uid_pseudonyms(two_batches: Path) -> None:
    _, study_uid, sop_uid = _jane_ct()
    by_study = reidentify(
        pl.DataFrame({"study_instance_uid": [study_uid]}),
        str(two_batches),
        KEY,
        on="study_instance_uid",
    )
    assert by_study.row(0, named=True) == {
        "study_instance_uid": study_uid,
        "original_patient_id": "MRN1234567",
        "original_study_instance_uid": STUDIES["jane-ct"]["study"],
        "original_accession_number": "ACC20190304A",
    }
    by_sop = reidentify(
        pl.DataFrame({"sop_instance_uid": [sop_uid, "2.25.1"]}),
        str(two_batches),
        KEY,
        on="sop_instance_uid",
    )
    assert by_sop["original_sop_instance_uid"].to_list() == [
        STUDIES["jane-ct"]["series"][1] + ".2",
        None,
    ]
    assert by_sop["original_patient_id"].to_list() == ["MRN1234567", None]


def test_bulk_reidentify_takes_and_returns_pandas(two_batches: Path) -> None:
    import pandas as pd

    ct, _, sop_uid = _jane_ct()
    cr = _token(STUDIES["john-cr"]["study"])
    frame = pd.DataFrame(
        {"cloud_study_id": [ct, "UNKNOWN00000", cr, ct], "score": [0.5, 0.1, 0.9, 0.7]},
        index=[10, 10, 7, 3],
    )
    out = reidentify(frame, str(two_batches), KEY)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == [10, 10, 7, 3]  # the caller's index is kept, duplicates included
    assert list(out.columns) == [
        "cloud_study_id",
        "score",
        "original_patient_id",
        "original_study_instance_uid",
        "original_accession_number",
    ]
    assert out["score"].tolist() == [0.5, 0.1, 0.9, 0.7]
    patients = out["original_patient_id"].tolist()
    assert (
        patients[0] == patients[3] == "MRN1234567"
        and patients[2] == "MRN2345678"
        and pd.isna(patients[1])
    )
    assert pd.isna(out["original_accession_number"].iloc[2])
    assert "original_patient_id" not in frame.columns  # the input is not modified
    by_sop = reidentify(
        pd.DataFrame({"sop_instance_uid": [sop_uid]}), str(two_batches), KEY, on="sop_instance_uid"
    )
    assert by_sop["original_sop_instance_uid"].tolist() == [STUDIES["jane-ct"]["series"][1] + ".2"]


def test_bulk_reidentify_refuses_what_it_cannot_join(two_batches: Path) -> None:
    frame = pl.DataFrame({"cloud_study_id": ["X"], "original_patient_id": ["kept"]})
    with pytest.raises(
        UserInputError,
        match="on= must be one of cloud_study_id, study_instance_uid, sop_instance_uid",
    ):
        reidentify(frame, str(two_batches), KEY, on="patient_id")
    with pytest.raises(UserInputError, match="no column 'sop_instance_uid'"):
        reidentify(frame, str(two_batches), KEY, on="sop_instance_uid")
    with pytest.raises(UserInputError, match="already has column.*original_patient_id"):
        reidentify(frame, str(two_batches), KEY)
    with pytest.raises(UserInputError, match="polars or pandas DataFrame"):
        reidentify({"cloud_study_id": ["X"]}, str(two_batches), KEY)  # type: ignore[call-overload, unused-ignore]
    with pytest.raises(UserInputError, match="as text"):
        reidentify(pl.DataFrame({"cloud_study_id": [[1, 2]]}), str(two_batches), KEY)


# -- nothing in plain bytes ----------------------------------------------------------------


def test_no_original_value_is_in_plain_bytes_anywhere_in_the_vault(
    fixed_nonce: None, vault: Path
) -> None:
    write_mapping(str(vault), "b1", _mapping("b1", "jane-ct", "jane-mr"), KEY)
    write_mapping(str(vault), "b2", _mapping("b2", "jane-ct", "john-cr"), KEY)
    originals = _originals(
        pl.concat([_mapping("b1", "jane-ct", "jane-mr"), _mapping("b2", "jane-ct", "john-cr")])
    )
    assert "MRN1234567" in originals and "DOE_JANE_MRN1234567" in originals
    fs = fsspec.filesystem("file")
    _assert_no_plain_originals(_vault_bytes(fs, str(vault)), str(vault), originals)


@pytest.fixture(scope="module")
def cohort_mapping(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The mapping the pipeline builds for the synthetic cohort with planted PHI."""
    from dicomframe.pipeline import deidentify

    root = tmp_path_factory.mktemp("cohort")
    deidentify(
        SAMPLES / "cohort",
        root / "out",
        key=KEY,
        vault=root / "vault",
        batch_id="c1",
        progress=False,
    )
    if (root / "vault" / "c1" / "mapping.parquet.enc").exists():
        return read_mapping(str(root / "vault"), "c1", KEY)
    return pl.read_parquet(
        root / "vault" / "c1" / "mapping.parquet"
    )  # before the pipeline encrypts


def test_the_cohort_mapping_leaks_no_planted_or_original_value(
    tmp_path: Path, cohort_mapping: pl.DataFrame, fixed_nonce: None
) -> None:
    planted = json.loads((SAMPLES / "PLANTED_PHI.json").read_text())
    values = set(_originals(cohort_mapping))
    for patient in planted["patients"].values():
        values.update(v for v in patient["identifiers"] if isinstance(v, str) and len(v) >= 4)
        values.update(
            patient["study_instance_uids"]
            + patient["series_instance_uids"]
            + patient["sop_instance_uids"]
        )
    assert len(values) > 100
    vault = tmp_path / "vault"
    write_mapping(str(vault), "c1", cohort_mapping, KEY)
    _assert_no_plain_originals(
        _vault_bytes(fsspec.filesystem("file"), str(vault)), str(vault), sorted(values)
    )
    assert read_mapping(str(vault), "c1", KEY).equals(cohort_mapping)
    study = cohort_mapping.filter(pl.col("status") == "written").row(0, named=True)
    found = reidentify_study(str(vault), KEY, "c1", study["cloud_study_id"])
    assert found["patient_id"] == study["original_patient_id"]
    assert found["study_instance_uid"] == study["original_study_instance_uid"]


# -- any mapping round-trips -------------------------------------------------------------

_TEXT = st.none() | st.text(max_size=30)


@st.composite
def mapping_frames(draw: st.DrawFn) -> pl.DataFrame:
    rows = draw(st.integers(min_value=0, max_value=12))
    offset_type = draw(st.sampled_from([pl.Int32, pl.Int64]))
    bound = 2**31 if offset_type == pl.Int32 else 2**63
    data: dict[str, pl.Series] = {}
    for column in MAPPING_COLUMNS:
        if column == "batch_id":
            values: list[Any] = ["hb"] * rows
            dtype: Any = pl.String
        elif column == "date_offset_days":
            values = draw(
                st.lists(st.none() | st.integers(-bound, bound - 1), min_size=rows, max_size=rows)
            )
            dtype = offset_type
        else:
            values = draw(st.lists(_TEXT, min_size=rows, max_size=rows))
            dtype = pl.String
        data[column] = pl.Series(column, values, dtype=dtype)
    if draw(st.booleans()):  # an extra column of another kind is kept too
        data["note"] = pl.Series(
            "note",
            draw(st.lists(st.none() | st.floats(allow_nan=False), min_size=rows, max_size=rows)),
            dtype=pl.Float64,
        )
    return pl.DataFrame(list(data.values()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=mapping_frames())
def test_any_mapping_frame_round_trips_exactly(mapping: pl.DataFrame) -> None:
    root = _memory_vault()
    write_mapping(root, "hb", mapping, KEY)
    back = read_mapping(root, "hb", KEY)
    assert back.schema == mapping.schema
    assert back.equals(mapping, null_equal=True)


def test_the_grep_finds_originals_in_a_plain_mapping(vault: Path) -> None:
    """The negative control: the same check fails on the unencrypted Parquet the vault replaces."""
    mapping = _mapping("b1", "jane-ct", "john-cr")
    (vault / "b1").mkdir(parents=True)
    mapping.write_parquet(vault / "b1" / "mapping.parquet")
    with pytest.raises(AssertionError, match="original values in plain bytes"):
        _assert_no_plain_originals(
            _vault_bytes(fsspec.filesystem("file"), str(vault)), str(vault), _originals(mapping)
        )


def test_an_unreachable_object_store_is_a_storage_error_naming_what_to_check() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        "skip_instance_cache": True,
    }
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: read_mapping("s3://vault-bucket/v", "b1", KEY, storage_options=options), "read"),
        (lambda: list_batches("s3://vault-bucket/v", storage_options=options), "list"),
        (
            lambda: write_mapping(
                "s3://vault-bucket/v", "b1", _mapping("b1", "jane-ct"), KEY, storage_options=options
            ),
            "write",
        ),
    ]
    for call, action in calls:
        with pytest.raises(StorageError, match=f"cannot {action} s3://vault-bucket/v.*credentials"):
            call()
