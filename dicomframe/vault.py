"""The vault: each batch's mapping table (pseudonym ↔ original), encrypted at rest.

The mapping of a batch is the only place where pseudonyms meet the original
identifiers, so it never touches storage in plain bytes. It is stored as one
file per batch::

    VAULT/<batch_id>/mapping.parquet.enc

``VAULT`` is a local folder or any fsspec URL (``s3://``, ``az://``,
``gs://``, ``memory://``). The file is a 37-byte header followed by the
ciphertext:

=======  =====  ==========================================================
offset   bytes  field
=======  =====  ==========================================================
0        8      magic ``b"DCFVAULT"``
8        1      format version (``1``)
9        16     key id of the project key (:attr:`ProjectKey.key_id`, ASCII hex)
25       12     random nonce
37       n+16   AES-256-GCM ciphertext of the Parquet bytes, then the 16-byte tag
=======  =====  ==========================================================

The AES key is ``project_key.subkey("vault")``; the associated data is the
37 header bytes followed by the UTF-8 batch id, so a file altered anywhere,
truncated, or moved into another batch's folder fails authentication. Files
are written to a temporary name and renamed (local disk) or sent in one PUT
(object stores): a reader sees the whole file or none.

Reading a vault raises a subclass of :class:`~dicomframe.errors.VaultError`
whose ``exit_code`` the command line returns:

=====================================  ====  ===================================
error                                  exit  when
=====================================  ====  ===================================
:class:`~dicomframe.errors.UnknownBatch`  3   no mapping for that batch id
:class:`~dicomframe.errors.WrongKey`      4   written with another project key
:class:`~dicomframe.errors.Tampered`      5   bad signature, truncated, altered, moved
:class:`~dicomframe.errors.UnknownStudy`  6   no such cloud study id in the batch
=====================================  ====  ===================================

No message ever holds a value from the mapping.

Examples
--------
>>> import polars as pl
>>> from dicomframe.keys import ProjectKey
>>> key = ProjectKey.from_bytes(b"\\0" * 32)
>>> row = {name: "x" for name in MAPPING_COLUMNS} | {"batch_id": "b1", "cloud_study_id": "C1"}
>>> mapping = pl.DataFrame([row]).with_columns(date_offset_days=pl.lit(-12, pl.Int32))
>>> write_mapping("memory://doc-vault", "b1", mapping, key)
'memory://doc-vault/b1/mapping.parquet.enc'
>>> list_batches("memory://doc-vault")
['b1']
>>> read_mapping("memory://doc-vault", "b1", key).equals(mapping)
True
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, overload

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import (
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
from .keys import KeyProvider, ProjectKey

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAPPING_COLUMNS",
    "PlanWriter",
    "list_batches",
    "read_mapping",
    "read_plan",
    "reidentify",
    "reidentify_study",
    "write_mapping",
    "write_plan",
]

#: columns every mapping table has (more are allowed and kept)
MAPPING_COLUMNS: Final = (
    "batch_id",
    "submitted_at",
    "org",
    "cloud_study_id",
    "original_patient_id",
    "pseudonymous_patient_id",
    "original_study_instance_uid",
    "study_instance_uid",
    "original_series_instance_uid",
    "series_instance_uid",
    "original_sop_instance_uid",
    "sop_instance_uid",
    "original_accession_number",
    "accession_number",
    "date_offset_days",
    "original_path",
    "output_path",
    "status",
)

#: name of a batch's encrypted mapping inside ``VAULT/<batch_id>/``
MAPPING_FILE: Final = "mapping.parquet.enc"
#: format version written in byte 8 of every vault file
FORMAT_VERSION: Final = 1

MAGIC: Final = b"DCFVAULT"
_KEY_ID_LENGTH: Final = 16
_NONCE_LENGTH: Final = 12
_TAG_LENGTH: Final = 16
HEADER_LENGTH: Final = len(MAGIC) + 1 + _KEY_ID_LENGTH + _NONCE_LENGTH
#: where a vault file's header holds the key id
_KEY_ID_AT: Final = slice(len(MAGIC) + 1, len(MAGIC) + 1 + _KEY_ID_LENGTH)
_HEX_DIGITS: Final = frozenset(b"0123456789abcdef")
_SUBKEY_PURPOSE: Final = "vault"
_MAX_BATCH_ID: Final = 64
_LEGACY_MAPPING_FILE: Final = "mapping.parquet"

#: pseudonymous id columns ``reidentify`` can join on, and the originals each one adds
_STUDY_ORIGINALS: Final = (
    "original_patient_id",
    "original_study_instance_uid",
    "original_accession_number",
)
_JOINS: Final[Mapping[str, tuple[str, ...]]] = {
    "cloud_study_id": _STUDY_ORIGINALS,
    "study_instance_uid": _STUDY_ORIGINALS,
    "sop_instance_uid": (*_STUDY_ORIGINALS, "original_sop_instance_uid"),
}
_JOIN_KEY: Final = "__dicomframe_vault_key__"

KeyLike = ProjectKey | KeyProvider | str | os.PathLike[str]


# -- public API ----------------------------------------------------------------------


def write_mapping(
    vault: str | os.PathLike[str],
    batch_id: str,
    mapping: pl.DataFrame,
    key: KeyLike,
    *,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Encrypt a batch's mapping table and write it to ``VAULT/<batch_id>/mapping.parquet.enc``.

    The table is serialised to Parquet in memory, encrypted with AES-256-GCM
    and written atomically; an existing mapping of the same batch is replaced
    (a re-run of a batch rewrites its mapping).

    Parameters
    ----------
    vault
        Vault root: local folder or fsspec URL, kept apart from the de-identified output.
    batch_id
        Letters, digits, ``-`` and ``_`` (at most 64); names the folder and is
        bound into the ciphertext.
    mapping
        The mapping table: at least the columns of :data:`MAPPING_COLUMNS`,
        its ``batch_id`` column equal to ``batch_id`` on every row.
    key
        The project key, or a :class:`~dicomframe.keys.KeyProvider`.
    storage_options
        Passed to fsspec (credentials, endpoint, …).

    Returns
    -------
    str
        The URI of the written file (``vault`` as given + ``/<batch_id>/mapping.parquet.enc``).

    Raises
    ------
    UserInputError
        If the batch id, the key or the table is not usable.
    VaultError
        If the table lacks mapping columns or holds rows of another batch, or the write fails.

    Examples
    --------
    >>> write_mapping("vault", "b1", mapping, key)  # doctest: +SKIP
    'vault/b1/mapping.parquet.enc'
    """
    batch = _check_batch_id(batch_id)
    project_key = _resolve_key(key)
    _check_mapping(mapping, batch)
    buffer = io.BytesIO()
    mapping.write_parquet(buffer)
    sealed = _seal(buffer.getvalue(), batch, project_key)
    store = _Store.open(vault, storage_options)
    store.write(batch, sealed)
    return store.uri(batch)


def read_mapping(
    vault: str | os.PathLike[str],
    batch_id: str,
    key: KeyLike,
    *,
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Read and decrypt a batch's mapping table.

    Parameters
    ----------
    vault
        Vault root: local folder or fsspec URL.
    batch_id
        The batch (see :func:`list_batches`).
    key
        The project key the mapping was written with, or a :class:`~dicomframe.keys.KeyProvider`.
    storage_options
        Passed to fsspec.

    Returns
    -------
    polars.DataFrame
        The table exactly as written (schema and values).

    Raises
    ------
    UnknownBatch
        No mapping for ``batch_id`` in this vault (exit code 3).
    SourceNotFoundError
        ``vault`` is a local folder that does not exist (a usage error, exit code 2).
    WrongKey
        The file was written with another project key (exit code 4).
    Tampered
        The file is truncated, corrupted, altered or was moved from another batch (exit code 5).

    Examples
    --------
    >>> read_mapping("vault", "b1", key).columns[:3]  # doctest: +SKIP
    ['batch_id', 'submitted_at', 'org']
    """
    batch = _check_batch_id(batch_id)
    project_key = _resolve_key(key)
    store = _Store.open(vault, storage_options)
    sealed = store.read(batch)
    plain = _open_sealed(sealed, batch, project_key, store.uri(batch))
    try:
        return pl.read_parquet(io.BytesIO(plain))
    except pl.exceptions.PolarsError:
        # authenticated, so written by us: a writer bug, not tampering
        raise VaultError(
            f"vault file {store.uri(batch)} decrypted but does not hold a readable table: "
            "it was written by a faulty dicomframe; restore it from a backup"
        ) from None


PLAN_FILE = "plan.parquet.enc"


def write_plan(
    vault: str | os.PathLike[str],
    batch_id: str,
    plan: pl.DataFrame,
    key: KeyLike,
    *,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Encrypt a dry run's plan table (it holds original values) into ``VAULT/<batch_id>/plan.parquet.enc``."""
    writer = PlanWriter(vault, batch_id, key, storage_options=storage_options)
    writer.add(plan)
    return writer.close()


class PlanWriter:
    """A dry run's plan, added part by part (a batch in parts), sealed into the vault at
    :meth:`close` as one file (see :func:`write_plan`): only the compressed Parquet
    bytes are held meanwhile, not the parts' tables."""

    def __init__(
        self,
        vault: str | os.PathLike[str],
        batch_id: str,
        key: KeyLike,
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self._batch = _check_batch_id(batch_id)
        self._key = _resolve_key(key)
        self._vault = vault
        self._storage_options = storage_options
        self._buffer = io.BytesIO()
        self._writer: Any = None

    def add(self, table: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        arrow = table.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._buffer, arrow.schema, compression="zstd")
        self._writer.write_table(arrow)

    def close(self) -> str:
        """Seal what was added into the vault; return its URI."""
        if self._writer is None:
            raise ValueError("no plan was added")
        self._writer.close()
        sealed = _seal(self._buffer.getvalue(), f"{self._batch}/plan", self._key)
        self._buffer = io.BytesIO()
        store = _Store.open(self._vault, self._storage_options)
        store.write(self._batch, sealed, PLAN_FILE)
        return store.uri(self._batch, PLAN_FILE)


def read_plan(
    vault: str | os.PathLike[str],
    batch_id: str,
    key: KeyLike,
    *,
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Read and decrypt the plan a dry run stored (see :func:`write_plan`).

    Examples
    --------
    >>> read_plan("vault", "b1", key).filter(pl.col("action") == "C")  # doctest: +SKIP
    """
    batch = _check_batch_id(batch_id)
    project_key = _resolve_key(key)
    store = _Store.open(vault, storage_options)
    try:
        sealed = store.read(batch, PLAN_FILE)
    except UnknownBatch:
        raise UnknownBatch(
            f"no plan of batch {batch!r} in vault {store.text} (no {batch}/{PLAN_FILE}): a dry run writes "
            f"one (dicomframe deidentify SRC DST --dry-run --batch-id {batch} --vault {store.text} ...)"
        ) from None
    plain = _open_sealed(sealed, f"{batch}/plan", project_key, store.uri(batch, PLAN_FILE))
    return pl.read_parquet(io.BytesIO(plain))


def check_key(
    vault: str | os.PathLike[str], key: ProjectKey, *, storage_options: dict[str, Any] | None = None
) -> None:
    """Refuse ``key`` when the vault's batches are sealed with another project key.

    A vault serves one project: batches under two keys could not be audited or listed
    together, and a key mix-up shows here rather than years later. Reads the key id in
    the header of the newest batch's mapping (no decryption). A vault with no batch
    takes any key.

    Raises
    ------
    WrongKey
        The vault's batches were sealed with another key.
    """
    store = _Store.open(vault, storage_options)
    if store.local and os.path.exists(store.root) and not os.path.isdir(store.root):
        raise UserInputError(
            f"the vault {store.text} is a file, not a folder: give --vault a folder (it is made when "
            "missing) or a URL; nothing was written"
        )
    batches = store.batches()
    if not batches:
        return
    newest = batches[-1]
    with _storage_errors("read", store.uri(newest)):
        head = bytes(store.fs.cat_file(store.path(newest), start=0, end=HEADER_LENGTH))
    raw_id = head[_KEY_ID_AT]
    if head[: len(MAGIC)] != MAGIC or not set(raw_id) <= _HEX_DIGITS:
        return  # not ours to judge here: reading the batch reports the damage
    found = raw_id.decode("ascii")
    if found != key.key_id:
        raise WrongKey(
            f"vault {store.text} holds batches sealed with key {found} (batch {newest}), and you gave key "
            f"{key.key_id}: a vault serves one project key. Use the key file whose key_id line reads {found}, "
            "or give another --vault"
        )


def list_batches(
    vault: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Batch ids that have an encrypted mapping in the vault, sorted.

    Needs no key: batch ids are folder names, not identifying values. A vault
    that does not exist yet holds no batches.

    Examples
    --------
    >>> list_batches("vault")  # doctest: +SKIP
    ['20250101-120000-1a2b3c4d', '20250102-090000-5e6f7a8b']
    """
    return _Store.open(vault, storage_options).batches()


def reidentify_study(
    vault: str | os.PathLike[str],
    key: KeyLike,
    batch_id: str,
    cloud_study_id: str,
    *,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, str | None]:
    """The original identifiers of one study, looked up by its cloud study id.

    Parameters
    ----------
    vault
        Vault root: local folder or fsspec URL.
    key
        The project key or a :class:`~dicomframe.keys.KeyProvider`.
    batch_id
        The batch the study was de-identified in (its ``manifest.json`` names it).
    cloud_study_id
        The study's pseudonymous id (``cloud_study_id`` in the manifest).

    Returns
    -------
    dict
        Exactly ``batch_id``, ``cloud_study_id`` (as given) and the originals
        ``patient_id``, ``study_instance_uid``, ``accession_number`` (``None``
        where the original file had none).

    Raises
    ------
    UnknownStudy
        The batch holds no study with that id (exit code 6); and every error
        of :func:`read_mapping`.

    Examples
    --------
    >>> reidentify_study("vault", key, "b1", "DXHSWVJ91JEQ")  # doctest: +SKIP
    {'batch_id': 'b1', 'cloud_study_id': 'DXHSWVJ91JEQ', 'patient_id': ..., ...}
    """
    if not isinstance(cloud_study_id, str) or not cloud_study_id:
        raise UserInputError(
            "a cloud study id must be a non-empty string (see the batch's manifest.json)"
        )
    mapping = read_mapping(vault, batch_id, key, storage_options=storage_options)
    found = _lookup(mapping, "cloud_study_id", _STUDY_ORIGINALS).filter(
        pl.col("cloud_study_id") == cloud_study_id
    )
    if found.height == 0:
        raise UnknownStudy(
            f"batch {batch_id!r} of vault {os.fspath(vault)} holds no study with the cloud study id "
            "you gave: check it against the batch's manifest.json (cloud_study_id), or search every "
            "batch with dicomframe.vault.reidentify(frame, vault, key)"
        )
    row = found.row(0, named=True)
    return {
        "batch_id": batch_id,
        "cloud_study_id": cloud_study_id,
        "patient_id": row["original_patient_id"],
        "study_instance_uid": row["original_study_instance_uid"],
        "accession_number": row["original_accession_number"],
    }


@overload
def reidentify(
    frame: pl.DataFrame,
    vault: str | os.PathLike[str],
    key: KeyLike,
    *,
    batch_id: str | None = ...,
    on: str = ...,
    storage_options: dict[str, Any] | None = ...,
) -> pl.DataFrame: ...


@overload
def reidentify(
    frame: pd.DataFrame,
    vault: str | os.PathLike[str],
    key: KeyLike,
    *,
    batch_id: str | None = ...,
    on: str = ...,
    storage_options: dict[str, Any] | None = ...,
) -> pd.DataFrame: ...


def reidentify(
    frame: pl.DataFrame | pd.DataFrame,
    vault: str | os.PathLike[str],
    key: KeyLike,
    *,
    batch_id: str | None = None,
    on: str = "cloud_study_id",
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame | pd.DataFrame:
    """Add the original identifiers to a table of pseudonymous ids.

    A left join with the vault's mappings: every row of ``frame`` is kept, in
    order, once; rows whose id is in no mapping get nulls. Pseudonyms are keyed
    and consistent, so a study uploaded in several batches maps to the same
    originals and is matched once (should batches disagree, the first batch id
    in sort order wins, column by column, skipping nulls).

    Parameters
    ----------
    frame
        A polars or pandas DataFrame with the column named by ``on``.
    vault
        Vault root: local folder or fsspec URL.
    key
        The project key or a :class:`~dicomframe.keys.KeyProvider`.
    batch_id
        Look in this batch only; by default every batch in the vault.
    on
        The pseudonymous id column: ``"cloud_study_id"``, ``"study_instance_uid"``
        or ``"sop_instance_uid"`` (the de-identified UIDs).
    storage_options
        Passed to fsspec.

    Returns
    -------
    polars.DataFrame or pandas.DataFrame
        ``frame`` (same type, same rows and index) with the columns
        ``original_patient_id``, ``original_study_instance_uid``,
        ``original_accession_number`` and, for ``on="sop_instance_uid"``,
        ``original_sop_instance_uid``.

    Raises
    ------
    UserInputError
        If ``on`` is not supported, ``frame`` lacks it or already has an output column.
    UnknownBatch
        If ``batch_id`` is not in the vault, or the vault holds no batch; and
        every error of :func:`read_mapping`.

    Examples
    --------
    >>> studies = pl.DataFrame({"cloud_study_id": ["DXHSWVJ91JEQ", "K1HXHRWPV37Y"]})
    >>> reidentify(studies, "vault", key).columns  # doctest: +SKIP
    ['cloud_study_id', 'original_patient_id', 'original_study_instance_uid', 'original_accession_number']
    """
    if on not in _JOINS:
        raise UserInputError(f"on= must be one of {', '.join(_JOINS)} (got {on!r})")
    added = _JOINS[on]
    pandas_in = _is_pandas(frame)
    if not pandas_in and not isinstance(frame, pl.DataFrame):
        raise UserInputError(
            f"reidentify takes a polars or pandas DataFrame, not {type(frame).__name__}"
        )
    columns = [str(c) for c in frame.columns]
    if on not in columns:
        raise UserInputError(
            f"the frame has no column {on!r} to join on: pass on= the id column it has"
        )
    clash = [c for c in added if c in columns]
    if clash:
        raise UserInputError(
            f"the frame already has column(s) {', '.join(clash)}: drop or rename them first"
        )
    keys = _key_column(frame, on, pandas_in)
    project_key = _resolve_key(key)
    if batch_id is None:
        batches = list_batches(vault, storage_options=storage_options)
        if not batches:
            absent = _Store.open(vault, storage_options).absent()
            if absent is not None:
                raise absent
            raise UnknownBatch(
                f"vault {os.fspath(vault)} holds no batch (no <batch_id>/{MAPPING_FILE}): "
                "check the vault location"
            )
    else:
        batches = [_check_batch_id(batch_id)]
    mappings = [
        read_mapping(vault, b, project_key, storage_options=storage_options).select(on, *added)
        for b in batches
    ]
    lookup = _lookup(pl.concat(mappings, how="vertical_relaxed"), on, added).rename({on: _JOIN_KEY})
    originals = keys.join(
        lookup, on=_JOIN_KEY, how="left", validate="m:1", maintain_order="left"
    ).drop(_JOIN_KEY)
    if isinstance(frame, pl.DataFrame):
        return frame.hstack(originals.get_columns())
    out = frame.copy()
    converted = originals.to_pandas()
    for name in added:
        out[name] = converted[name].array  # by position: the index of ``frame`` is kept
    return out


# -- keys, batch ids, checks ---------------------------------------------------------


def _resolve_key(key: object) -> ProjectKey:
    if isinstance(key, ProjectKey):
        return key
    if isinstance(key, KeyProvider):
        provided = key.get_key()
        if not isinstance(provided, ProjectKey):
            raise UserInputError(
                f"{type(key).__name__}.get_key() returned {type(provided).__name__}, not a "
                "ProjectKey: wrap the secret with ProjectKey.from_bytes"
            )
        return provided
    if isinstance(key, str | os.PathLike):  # a key file, as deidentify and audit take it
        from .keys import load_key

        return load_key(key)
    raise UserInputError(
        f"a vault key must be a ProjectKey, a KeyProvider (with get_key()) or a key file, not "
        f"{type(key).__name__}: load one with dicomframe.keys.load_key(KEYFILE)"
    )


def _valid_batch_id(batch_id: object) -> bool:
    # the rule of dicomframe.pipeline: no '/', '.', or spaces, so it is always one folder name
    return (
        isinstance(batch_id, str)
        and 0 < len(batch_id) <= _MAX_BATCH_ID
        and batch_id.isascii()
        and batch_id.replace("-", "").replace("_", "").isalnum()
    )


def _check_batch_id(batch_id: object) -> str:
    if not _valid_batch_id(batch_id):
        raise UserInputError(
            f"a batch id may hold ASCII letters, digits, '-' and '_' only (1 to {_MAX_BATCH_ID} "
            "characters); list a vault's batches with dicomframe.vault.list_batches(VAULT)"
        )
    assert isinstance(batch_id, str)
    return batch_id


def _check_mapping(mapping: object, batch_id: str) -> None:
    if not isinstance(mapping, pl.DataFrame):
        raise UserInputError(f"a mapping must be a polars DataFrame, not {type(mapping).__name__}")
    missing = [c for c in MAPPING_COLUMNS if c not in mapping.columns]
    if missing:
        raise VaultError(
            f"the mapping table lacks the column(s) {', '.join(missing)}: a vault mapping has "
            "every column of dicomframe.vault.MAPPING_COLUMNS"
        )
    other_batch = pl.col("batch_id").cast(pl.String).ne_missing(pl.lit(batch_id)).any()
    if mapping.select(other_batch).item():
        raise VaultError(
            f"the mapping table holds rows whose batch_id is not {batch_id!r}: a vault file "
            "holds exactly one batch; write each batch under its own id"
        )


def _lookup(mapping: pl.DataFrame, on: str, added: Sequence[str]) -> pl.DataFrame:
    """One row per pseudonymous id: the first non-null original of each column."""
    return (
        mapping.select(pl.col(on).cast(pl.String), *(pl.col(c).cast(pl.String) for c in added))
        .filter(pl.col(on).is_not_null())
        .group_by(on, maintain_order=True)
        .agg(pl.col(c).drop_nulls().first() for c in added)
    )


def _is_pandas(frame: object) -> bool:
    if not type(frame).__module__.startswith("pandas"):
        return False
    import pandas as pd

    return isinstance(frame, pd.DataFrame)


def _key_column(frame: Any, on: str, pandas_in: bool) -> pl.DataFrame:
    try:
        column = pl.from_pandas(frame[[on]]) if pandas_in else frame.select(on)
        return column.select(pl.col(on).cast(pl.String).alias(_JOIN_KEY))
    except (pl.exceptions.PolarsError, TypeError, ValueError, ImportError):
        dtype = frame[on].dtype if pandas_in else frame.schema[on]
        raise UserInputError(
            f"column {on!r} must hold pseudonymous ids as text (it holds {dtype})"
        ) from None


# -- file format ---------------------------------------------------------------------


def _header(key_id: str, nonce: bytes) -> bytes:
    raw_id = key_id.encode("ascii")
    if len(raw_id) != _KEY_ID_LENGTH or not set(raw_id) <= _HEX_DIGITS:
        raise VaultError(f"a project key id must be {_KEY_ID_LENGTH} lowercase hex digits")
    return MAGIC + bytes([FORMAT_VERSION]) + raw_id + nonce


def _associated_data(header: bytes, batch_id: str) -> bytes:
    return header + batch_id.encode("utf-8")


def _new_nonce() -> bytes:
    """A fresh random 96-bit nonce (safe for 2**32 files per key)."""
    return secrets.token_bytes(_NONCE_LENGTH)


def _seal(plain: bytes, batch_id: str, key: ProjectKey) -> bytes:
    nonce = _new_nonce()
    header = _header(key.key_id, nonce)
    body = AESGCM(key.subkey(_SUBKEY_PURPOSE)).encrypt(
        nonce, plain, _associated_data(header, batch_id)
    )
    return header + body


def _open_sealed(data: bytes, batch_id: str, key: ProjectKey, uri: str) -> bytes:
    restore = "restore it from a backup (never edit, rename or move vault files)"
    if data[: len(MAGIC)] != MAGIC:
        raise Tampered(
            f"{uri} is not a dicomframe vault file (it does not start with the vault signature): "
            f"it is corrupted or was replaced; {restore}"
        )
    if len(data) < HEADER_LENGTH + _TAG_LENGTH:
        raise Tampered(
            f"vault file {uri} is truncated ({len(data)} bytes; a vault file has at least "
            f"{HEADER_LENGTH + _TAG_LENGTH}): {restore}"
        )
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise Tampered(
            f"vault file {uri} has format version {version}, and this dicomframe reads version "
            f"{FORMAT_VERSION}: upgrade dicomframe if a newer one wrote it; otherwise it is damaged: "
            f"{restore}"
        )
    raw_id = data[_KEY_ID_AT]
    nonce = data[_KEY_ID_AT.stop : HEADER_LENGTH]
    if not set(raw_id) <= _HEX_DIGITS:
        raise Tampered(f"vault file {uri} has a damaged header (its key id is not hex): {restore}")
    header, body = data[:HEADER_LENGTH], data[HEADER_LENGTH:]
    aead = AESGCM(key.subkey(_SUBKEY_PURPOSE))
    file_key_id = raw_id.decode("ascii")
    if file_key_id != key.key_id:
        # Another key, or this key and an altered key id? Only our own header authenticates.
        try:
            aead.decrypt(nonce, body, _associated_data(_header(key.key_id, nonce), batch_id))
        except InvalidTag:
            raise WrongKey(
                f"cannot open vault file {uri}: this vault file was written with key {file_key_id}, "
                f"you gave key {key.key_id}; use the project key file whose key_id line reads "
                f"{file_key_id}"
            ) from None
        raise Tampered(
            f"vault file {uri} was altered: the key id in its header was changed; {restore}"
        )
    try:
        return aead.decrypt(nonce, body, _associated_data(header, batch_id))
    except InvalidTag:
        raise Tampered(
            f"vault file {uri} failed authentication: it is corrupted, was altered, or was moved "
            f"here from another batch's folder; {restore}"
        ) from None


# -- storage -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Store:
    """A vault root on one fsspec file system."""

    fs: Any
    root: str
    text: str

    @classmethod
    def open(cls, vault: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> _Store:
        if not isinstance(vault, str | os.PathLike):
            raise UserInputError(f"a vault must be a folder or URL, not {type(vault).__name__}")
        text = os.fspath(vault)
        if not text:
            raise UserInputError("the vault location is empty: give a folder or a URL")
        if "://" not in text:
            from .apply import LocalFS  # fsspec's local file system, imported when first used

            return cls(LocalFS(), os.path.abspath(text), text)
        from .sources import get_filesystem

        fs, root = get_filesystem(text, storage_options)
        return cls(fs, root.rstrip("/") or root, text)

    @property
    def local(self) -> bool:
        protocol = getattr(self.fs, "protocol", "file")
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols

    def path(self, batch_id: str, name: str = MAPPING_FILE) -> str:
        return f"{self.root.rstrip('/')}/{batch_id}/{name}"

    def uri(self, batch_id: str, name: str = MAPPING_FILE) -> str:
        return f"{self.text.rstrip('/')}/{batch_id}/{name}"

    def write(self, batch_id: str, data: bytes, name: str = MAPPING_FILE) -> None:
        target = self.path(batch_id, name)
        with _storage_errors("write", self.uri(batch_id, name)):
            if self.local:
                _replace_local(target, data)
            else:
                self.fs.pipe_file(target, data)  # one PUT: readers see all or nothing

    def read(self, batch_id: str, name: str = MAPPING_FILE) -> bytes:
        with _storage_errors("read", self.uri(batch_id, name)):
            try:
                data = self.fs.cat_file(self.path(batch_id, name))
            except (FileNotFoundError, IsADirectoryError):
                raise self._unknown(batch_id) from None
        return bytes(data)

    def batches(self) -> list[str]:
        pattern = f"{self.root.rstrip('/')}/*/{MAPPING_FILE}"
        with _storage_errors("list", self.text):
            try:
                if self.local:  # without importing fsspec (~30 ms at the start of every run)
                    found = glob.glob(f"{glob.escape(self.root.rstrip('/'))}/*/{MAPPING_FILE}")
                else:
                    found = self.fs.glob(pattern)
            except FileNotFoundError:
                return []
        names = {str(p).rstrip("/").rsplit("/", 2)[-2] for p in found}
        return sorted(n for n in names if _valid_batch_id(n))

    def absent(self) -> SourceNotFoundError | None:
        """A local vault folder that does not exist: a wrong path (a usage error, exit 2, as
        for any missing folder), not a vault without the batch. An object store has no
        folders to tell this by."""
        if self.local and not os.path.isdir(self.root):
            return SourceNotFoundError(
                f"no vault at {self.text}: the folder does not exist; give the VAULT that deidentify "
                "was run with (--vault)"
            )
        return None

    def _unknown(self, batch_id: str) -> UnknownBatch | SourceNotFoundError:
        absent = self.absent()
        if absent is not None:
            return absent
        try:
            batches = self.batches()
        except DicomframeError:
            batches = []
        if batches:
            shown = ", ".join(batches[:10]) + (
                f", … ({len(batches)} in all)" if len(batches) > 10 else ""
            )
            held = f"it holds {shown}"
        else:
            held = f"it holds no batch (no <batch_id>/{MAPPING_FILE}); check the vault location"
        legacy = ""
        # only a hint: a back-end that cannot answer (any exception type) just gets no hint
        with contextlib.suppress(Exception):
            if self.fs.exists(self.path(batch_id, _LEGACY_MAPPING_FILE)):
                legacy = (
                    f"; the folder has an unencrypted {_LEGACY_MAPPING_FILE} from an older dicomframe: "
                    "encrypt it with dicomframe.vault.write_mapping and delete the plain file"
                )
        return UnknownBatch(
            f"no batch {batch_id!r} in vault {self.text}: {held}{legacy}. See the batches with "
            f"dicomframe.vault.list_batches({self.text!r}) (one folder VAULT/<batch_id>/ per batch)"
        )


@contextlib.contextmanager
def _storage_errors(action: str, where: str) -> Iterator[None]:
    """Turn a storage back-end's failure into a dicomframe error naming what to check."""
    try:
        yield
    except DicomframeError:
        raise
    except PermissionError:
        raise StorageError(
            f"access denied: cannot {action} {where}; check the credentials and the permissions "
            "on the vault"
        ) from None
    except OSError as exc:
        raise VaultError(
            f"cannot {action} {where} ({exc.strerror or type(exc).__name__}): check that the vault "
            "location exists, is writable and reachable, then re-run"
        ) from None
    except Exception as exc:  # noqa: BLE001 - back-ends raise their own types (botocore, azure, aiohttp)
        raise StorageError(
            f"cannot {action} {where} ({type(exc).__name__}): check the vault URL, the credentials "
            "and that the storage service is reachable (for an S3-compatible server: "
            "FSSPEC_S3_ENDPOINT_URL or AWS_ENDPOINT_URL)"
        ) from None


def _replace_local(target: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, sync it, then rename it into place."""
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if os.name == "posix":
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
