"""An append-only, tamper-evident audit log of what was done with the data.

Every de-identification batch, re-identification, export and use of the
project key adds one record to a JSON Lines file. Each record carries the
SHA-256 of the record before it, so a record that is edited, removed or moved
afterwards breaks the chain and :func:`verify` says where::

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
    >>> log = AuditLog(path)
    >>> first = log.append("deidentify", actor="alice", batch_id="b-2026-11", counts={"files": 12})
    >>> first["seq"], first["prev"] == "0" * 64
    (1, True)
    >>> second = log.append("export", actor="alice", batch_id="b-2026-11")
    >>> second["prev"] == first["hash"]
    True
    >>> verify(path)
    VerifyReport(ok=True, records=2, problems=[])

Record format
-------------
One JSON object per line, UTF-8, newline-terminated, keys sorted, no spaces::

    {"action":"deidentify","actor":"alice","batch_id":"b-2026-11","counts":{"files":12},
     "details":null,"hash":"<64 hex>","ids":null,"outcome":"ok","prev":"<64 hex>",
     "seq":1,"time":"2026-11-03T09:14:07.123456Z"}

(shown on two lines here; one line in the file.)

``seq``
    1, 2, 3, … with no gaps.
``time``
    ISO 8601 UTC with microseconds, ``Z`` suffix.
``actor``
    who acted: the OS user name by default, or a token id the caller passes.
``action``
    ``deidentify``, ``reidentify``, ``export``, ``key_use``, ``dry_run`` (see
    :class:`Action`) or another name matching ``[a-z_]+``.
``batch_id``, ``ids``, ``counts``, ``outcome``, ``details``
    what the caller passed (``null`` when not given).
``prev``
    ``hash`` of the record before; 64 zeros for the first record.
``hash``
    SHA-256 hex of the record's canonical bytes without ``hash``:
    ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
    encoded as UTF-8. The line in the file is the same serialisation with
    ``hash`` included, so the file has exactly one valid spelling of each record.

What goes into a record
-----------------------
The log is read by auditors and must not become a second copy of the PHI.
It stores exactly what the caller passes plus the fields above: no paths, host
names or environment. **Callers pass pseudonymous ids only** (new study UIDs,
tokens, batch ids) in ``ids``, ``batch_id`` and ``details`` — never a patient
name, original ID or original UID. The log cannot tell the difference; the
caller is responsible. For a large batch, log ``counts`` and study-level
pseudonyms rather than every instance UID.

Concurrency and crashes
-----------------------
Several processes may append to one log at once: each append takes an
exclusive ``fcntl.flock`` on the file, reads the last line (seeking from the
end), writes one line, ``fsync``\\ s and releases. A crash in the middle of a
write can leave a last line without its newline; :func:`verify` reports it as
``partial`` and :meth:`AuditLog.append` refuses to chain onto it until an
operator has looked (``dicomframe auditlog verify LOG``). Nothing is repaired
automatically.

Where the log lives
-------------------
A local file (POSIX: ``flock`` is needed). Object stores (S3, Azure, GCS) have
no append and no locks, so the log cannot live in a bucket; a site that wants
it there ships the local file (e.g. after each batch, or daily) and verifies
the copy.

What the chain does and does not prove
--------------------------------------
It detects edits, removals, reordering and damage *inside* the file. It cannot
see whole records removed from the *end* (the shorter file is a valid chain),
and someone with write access can rewrite the whole file with fresh hashes.
Keep the ``seq`` and ``hash`` returned by :meth:`AuditLog.append` somewhere
else (e.g. the batch manifest) and ship copies off the machine to anchor the
chain.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple, TypedDict

from .errors import AuditLogError, SourceNotFoundError, StorageError, UserInputError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "Action",
    "AuditLog",
    "AuditRecord",
    "Problem",
    "ProblemKind",
    "VerifyReport",
    "log_event",
    "verify",
]

GENESIS = "0" * 64
"""The ``prev`` of the first record."""

VERIFY_COMMAND = "dicomframe auditlog verify"

_NAME = re.compile(r"[a-z_]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TAIL_BLOCK = 8192

DetailValue = str | int | float | bool


class Action(StrEnum):
    """The actions dicomframe itself logs. Other ``[a-z_]+`` names are accepted too."""

    DEIDENTIFY = "deidentify"
    REIDENTIFY = "reidentify"
    EXPORT = "export"
    KEY_USE = "key_use"
    DRY_RUN = "dry_run"


class AuditRecord(TypedDict):
    """One line of the log, as returned by :meth:`AuditLog.append`."""

    seq: int
    time: str
    actor: str
    action: str
    batch_id: str | None
    ids: list[str] | None
    counts: dict[str, int] | None
    outcome: str
    details: dict[str, DetailValue] | None
    prev: str
    hash: str


_FIELDS = frozenset(AuditRecord.__required_keys__)


class ProblemKind(StrEnum):
    """What :func:`verify` found wrong with a line."""

    PARTIAL = "partial"
    """The last line has no newline: a write was cut off (crash, full disk, truncation)."""
    INVALID_JSON = "invalid_json"
    """The line is not UTF-8 JSON (blank, damaged, or two lines run together)."""
    MALFORMED = "malformed"
    """Valid JSON but not an audit record (fields missing, extra or of the wrong type)."""
    HASH_MISMATCH = "hash_mismatch"
    """The record's content does not match its ``hash``: it was edited."""
    NOT_CANONICAL = "not_canonical"
    """Same content, different bytes (reformatted): the file was rewritten."""
    SEQ_GAP = "seq_gap"
    """``seq`` jumps forward: records before this one were removed (or moved)."""
    SEQ_ORDER = "seq_order"
    """``seq`` goes backwards or repeats: records were reordered or duplicated."""
    PREV_MISMATCH = "prev_mismatch"
    """``prev`` is not the previous record's ``hash``: a record was replaced or inserted."""


class Problem(NamedTuple):
    """One finding of :func:`verify`; the message names line, seq and kind only."""

    line: int
    seq: int | None
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found.

    Attributes
    ----------
    ok
        True when every line is a valid record and the chain is unbroken.
    records
        Number of complete (newline-terminated) lines read.
    problems
        One :class:`Problem` per finding, in file order.
    """

    ok: bool
    records: int
    problems: list[Problem] = field(default_factory=list)


def canonical_bytes(record: Mapping[str, object]) -> bytes:
    """The one serialisation used for hashing and for the line in the file."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: Mapping[str, object]) -> str:
    """SHA-256 hex of ``record`` without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


# --------------------------------------------------------------------------- writing


class AuditLog:
    """An append-only JSON Lines audit log in a local file.

    Parameters
    ----------
    path
        Local file path (``file://`` URLs are accepted). The file is created on
        the first append; its folder must exist. Object-store URLs are refused:
        they have no append (ship the local file to a bucket instead).

    Raises
    ------
    UserInputError
        ``path`` is an object-store URL.

    Examples
    --------
    >>> import tempfile, os
    >>> log = AuditLog(os.path.join(tempfile.mkdtemp(), "audit.jsonl"))
    >>> log.append(Action.KEY_USE, actor="token:7f55db55", details={"purpose": "vault"})["seq"]
    1
    >>> log.verify().ok
    True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = _local_path(path)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r})"

    def check_writable(self) -> None:
        """Raise :class:`AuditLogError` now when records could not be appended later (its
        folder missing, no write permission): a long run learns it before doing any work."""
        folder = self._path.parent
        if not folder.is_dir():
            raise AuditLogError(
                f"cannot create the audit log {self._path}: its folder does not exist; create it first"
            )
        target = self._path if self._path.exists() else folder
        if not os.access(target, os.W_OK):
            raise AuditLogError(f"cannot write the audit log {self._path}: check the path and permissions")

    def append(
        self,
        action: str,
        *,
        actor: str | None = None,
        batch_id: str | None = None,
        ids: Sequence[str] | None = None,
        counts: Mapping[str, int] | None = None,
        outcome: str = "ok",
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditRecord:
        """Add one record, safely against other processes appending at the same time.

        Parameters
        ----------
        action
            What was done: an :class:`Action` or another ``[a-z_]+`` name.
        actor
            Who did it: a token id or user name. Default: the OS user name.
        batch_id
            The batch concerned (a pseudonymous id).
        ids
            Pseudonymous ids concerned (new study UIDs, tokens). Never original
            identifiers: the log does not check, the caller must.
        counts
            Non-negative integers by name, e.g. ``{"files": 120, "failed": 2}``.
        outcome
            ``ok`` or another ``[a-z_]+`` word (``failed``, ``partial``, ``refused``).
        details
            Extra scalars (str, int, finite float, bool) by name. No PHI.

        Returns
        -------
        AuditRecord
            The record as written, with its ``seq`` and ``hash``: store them
            elsewhere (e.g. in the batch manifest) to anchor the chain.

        Raises
        ------
        AuditLogError
            A field is invalid; the last line of the log is partial or damaged
            (run ``dicomframe auditlog verify LOG``); or the file cannot be
            written.
        """
        fields = _validated_fields(action, actor, batch_id, ids, counts, outcome, details)
        if sys.platform == "win32":  # pragma: no cover
            raise AuditLogError(
                "the audit log needs POSIX file locks (fcntl.flock); Windows is not supported"
            )
        try:
            fh = open(self._path, "a+b", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise AuditLogError(
                f"cannot create the audit log {self._path}: its folder does not exist; create it first"
            ) from None
        except OSError as exc:
            raise AuditLogError(
                f"cannot open the audit log {self._path}: {exc.strerror}; check the path and permissions"
            ) from None
        with fh:
            fd = fh.fileno()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise AuditLogError(
                    f"cannot lock the audit log {self._path}: {exc.strerror}; keep the log on a "
                    "local file system that supports flock (not a network share without locks)"
                ) from None
            try:
                size = os.fstat(fd).st_size
                seq, prev = self._tail(fd, size)
                record: AuditRecord = {
                    "seq": seq + 1,
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "actor": fields.actor,
                    "action": fields.action,
                    "batch_id": fields.batch_id,
                    "ids": fields.ids,
                    "counts": fields.counts,
                    "outcome": fields.outcome,
                    "details": fields.details,
                    "prev": prev,
                    "hash": "",
                }
                record["hash"] = record_hash(record)
                line = canonical_bytes(record) + b"\n"
                self._write(fh, line, size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        if size == 0:
            _fsync_dir(self._path.parent)
        return record

    def verify(self) -> VerifyReport:
        """Check the whole chain; see :func:`verify`."""
        return verify(self._path)

    def _tail(self, fd: int, size: int) -> tuple[int, str]:
        """``(seq, hash)`` of the last record; ``(0, GENESIS)`` for an empty file."""
        if size == 0:
            return 0, GENESIS
        if _pread(fd, 1, size - 1) != b"\n":
            raise AuditLogError(
                f"the audit log {self._path} ends with a partial line (a write was cut off); "
                f"nothing was appended: run `{VERIFY_COMMAND} {self._path}` and have the log "
                "reviewed before appending again"
            )
        line = _last_line(fd, size)
        parsed = _parse(line)
        if isinstance(parsed, _Bad) or parsed[1] != record_hash(parsed[0]):
            raise AuditLogError(
                f"the last record of the audit log {self._path} is damaged or was edited; "
                f"nothing was appended: run `{VERIFY_COMMAND} {self._path}` and have the log "
                "reviewed before appending again"
            )
        record, stored = parsed
        seq = record["seq"]
        assert isinstance(seq, int)
        return seq, stored

    def _write(self, fh: io.FileIO, line: bytes, size: int) -> None:
        try:
            view = memoryview(line)
            while view:
                written = fh.write(view)
                if not written:
                    raise OSError(0, "no progress writing")
                view = view[written:]
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException as exc:  # OSError, or Ctrl-C between two writes
            try:  # take back our own half-written line while we still hold the lock
                os.ftruncate(fh.fileno(), size)
            except OSError:
                pass  # the partial line stays; verify and the next append report it
            if not isinstance(exc, OSError):
                raise
            raise AuditLogError(
                f"could not write to the audit log {self._path}: {exc.strerror}; "
                f"the record was not logged; run `{VERIFY_COMMAND} {self._path}`"
            ) from None


def log_event(
    path: str | os.PathLike[str] | None,
    action: str,
    *,
    actor: str | None = None,
    batch_id: str | None = None,
    ids: Sequence[str] | None = None,
    counts: Mapping[str, int] | None = None,
    outcome: str = "ok",
    details: Mapping[str, DetailValue] | None = None,
) -> AuditRecord | None:
    """Append one record to the log at ``path``; do nothing when ``path`` is None.

    Lets callers make the log optional (``--audit-log`` not given) without an
    ``if`` at every call site. Parameters are those of :meth:`AuditLog.append`.

    Examples
    --------
    >>> log_event(None, "export", batch_id="b1") is None
    True
    """
    if path is None:
        return None
    return AuditLog(path).append(
        action,
        actor=actor,
        batch_id=batch_id,
        ids=ids,
        counts=counts,
        outcome=outcome,
        details=details,
    )


# --------------------------------------------------------------------------- verifying


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Read the log once, start to end, and check every record and link.

    Finds edited records (``hash_mismatch``, ``not_canonical``), removed records
    (``seq_gap``), reordered or duplicated records (``seq_order``), replaced or
    inserted ones (``prev_mismatch``), damaged lines (``invalid_json``,
    ``malformed``) and a cut-off last line (``partial``). Messages name the
    line, seq and kind only, never record contents.

    A damaged line is assumed to stand for one record, and a link is checked
    against the previous record's stored hash, so a single edit is reported
    once, at the line that was edited.

    Parameters
    ----------
    path
        The log file (local path or ``file://`` URL).

    Returns
    -------
    VerifyReport
        ``ok`` is False when anything was found. An empty file is ok (0 records).

    Raises
    ------
    SourceNotFoundError
        The file does not exist.
    StorageError
        The file cannot be read (permissions, a folder).

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.jsonl")
    >>> _ = log_event(path, "dry_run", actor="alice")
    >>> with open(path, "ab") as fh:
    ...     _ = fh.write(b'{"seq":2')
    >>> report = verify(path)
    >>> report.ok, report.problems[0].kind
    (False, <ProblemKind.PARTIAL: 'partial'>)
    """
    local = _local_path(path)
    try:
        fh = open(local, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise SourceNotFoundError(f"audit log {local} not found: check the path") from None
    except OSError as exc:
        raise StorageError(
            f"cannot read the audit log {local}: {exc.strerror}; check the path and permissions"
        ) from None
    checker = _Checker()
    with fh:
        problems = list(checker.run(_lines(fh)))
    return VerifyReport(ok=not problems, records=checker.records, problems=problems)


class _Lines(NamedTuple):
    number: int
    data: bytes
    complete: bool


def _lines(fh: Iterable[bytes]) -> Iterator[_Lines]:
    for number, raw in enumerate(fh, start=1):
        if raw.endswith(b"\n"):
            yield _Lines(number, raw[:-1], True)
        else:
            yield _Lines(number, raw, False)


class _Checker:
    """Walks the lines once; keeps the previous record's seq and hash(es)."""

    def __init__(self) -> None:
        self.records = 0

    def run(self, lines: Iterable[_Lines]) -> Iterator[Problem]:
        last_seq = 0
        last_hashes: frozenset[str] | None = frozenset({GENESIS})  # None: unknown
        for number, data, complete in lines:
            if not complete:
                yield Problem(
                    number,
                    None,
                    ProblemKind.PARTIAL,
                    f"line {number}: partial last line (no newline): a write was cut off or the "
                    "file was truncated",
                )
                return
            self.records += 1
            here = f"line {number}"
            parsed = _parse(data)
            if isinstance(parsed, _Bad):
                yield Problem(
                    number, parsed.seq, parsed.kind, f"{here}{_seq_text(parsed)}: {parsed.what}"
                )
                last_seq, last_hashes = last_seq + 1, None
                continue
            record, stored = parsed
            seq = record["seq"]
            assert isinstance(seq, int)
            here = f"line {number} (seq {seq})"
            actual = record_hash(record)
            if actual != stored:
                yield Problem(
                    number,
                    seq,
                    ProblemKind.HASH_MISMATCH,
                    f"{here}: content does not match its hash: the record was edited",
                )
                last_seq, last_hashes = last_seq + 1, frozenset({stored, actual})
                continue
            if canonical_bytes(record) != data:
                yield Problem(
                    number,
                    seq,
                    ProblemKind.NOT_CANONICAL,
                    f"{here}: same content but not the bytes dicomframe writes: the line was rewritten",
                )
            if seq > last_seq + 1:
                missing = seq - last_seq - 1
                yield Problem(
                    number,
                    seq,
                    ProblemKind.SEQ_GAP,
                    f"{here}: follows seq {last_seq}: {missing} record(s) missing before it",
                )
            elif seq <= last_seq:
                yield Problem(
                    number,
                    seq,
                    ProblemKind.SEQ_ORDER,
                    f"{here}: follows seq {last_seq}: records reordered or duplicated",
                )
            elif last_hashes is not None and record["prev"] not in last_hashes:
                yield Problem(
                    number,
                    seq,
                    ProblemKind.PREV_MISMATCH,
                    f"{here}: prev is not the hash of the record before: a record was replaced "
                    "or inserted",
                )
            last_seq, last_hashes = seq, frozenset({stored})


# --------------------------------------------------------------------------- helpers


class _Fields(NamedTuple):
    actor: str
    action: str
    batch_id: str | None
    ids: list[str] | None
    counts: dict[str, int] | None
    outcome: str
    details: dict[str, DetailValue] | None


def _validated_fields(
    action: str,
    actor: str | None,
    batch_id: str | None,
    ids: Sequence[str] | None,
    counts: Mapping[str, int] | None,
    outcome: str,
    details: Mapping[str, DetailValue] | None,
) -> _Fields:
    action = str(action) if isinstance(action, StrEnum) else action
    if not isinstance(action, str) or not _NAME.fullmatch(action):
        raise AuditLogError(
            f"audit action must be lower-case letters and underscores, e.g. "
            f"{', '.join(a.value for a in Action)} (got {action!r})"
        )
    if not isinstance(outcome, str) or not _NAME.fullmatch(outcome):
        raise AuditLogError(
            f"audit outcome must be lower-case letters and underscores, e.g. ok, failed (got {outcome!r})"
        )
    if actor is None:
        actor = _os_user()
    if not isinstance(actor, str) or not actor:
        raise AuditLogError("audit actor must be a non-empty string (a user name or token id)")
    if batch_id is not None and not isinstance(batch_id, str):
        raise AuditLogError(f"audit batch_id must be a string (got {type(batch_id).__name__})")
    id_list: list[str] | None = None
    if ids is not None:
        if isinstance(ids, (str, bytes)) or not all(isinstance(i, str) for i in ids):
            raise AuditLogError("audit ids must be a list of strings (pseudonymous ids)")
        id_list = list(ids)
    count_map: dict[str, int] | None = None
    if counts is not None:
        count_map = dict(counts)
        for name, count in count_map.items():
            if not isinstance(name, str) or type(count) is not int or count < 0:
                raise AuditLogError(
                    f"audit counts must map names to non-negative integers (bad entry {name!r})"
                )
    detail_map: dict[str, DetailValue] | None = None
    if details is not None:
        detail_map = dict(details)
        for name, value in detail_map.items():
            if not isinstance(name, str) or not isinstance(value, (str, int, float, bool)):
                raise AuditLogError(
                    f"audit details must map names to str, int, float or bool (bad entry {name!r})"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise AuditLogError(f"audit details must hold finite numbers (bad entry {name!r})")
    fields = _Fields(actor, action, batch_id, id_list, count_map, outcome, detail_map)
    try:
        canonical_bytes(fields._asdict())
    except UnicodeEncodeError:
        raise AuditLogError(
            "audit fields must be valid Unicode text (lone surrogate found)"
        ) from None
    return fields


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


class _Bad(NamedTuple):
    """Why a line is not a record, and its seq when one can be read."""

    kind: ProblemKind
    seq: int | None
    what: str


def _parse(data: bytes) -> tuple[dict[str, object], str] | _Bad:
    """``(record, stored hash)`` of a well-formed line, or what is wrong with it."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _Bad(ProblemKind.INVALID_JSON, _loose_seq(data), "not valid UTF-8 JSON")
    if not isinstance(record, dict):
        return _Bad(ProblemKind.INVALID_JSON, None, "not a JSON object")
    seq = record.get("seq")
    if type(seq) is not int or seq < 1:
        return _Bad(ProblemKind.MALFORMED, None, "not an audit record (seq)")
    prev, stored = record.get("prev"), record.get("hash")
    if set(record) != _FIELDS:
        return _Bad(ProblemKind.MALFORMED, seq, "not an audit record (fields missing or extra)")
    if not (isinstance(prev, str) and _HEX64.fullmatch(prev)):
        return _Bad(ProblemKind.MALFORMED, seq, "not an audit record (prev)")
    if not (isinstance(stored, str) and _HEX64.fullmatch(stored)):
        return _Bad(ProblemKind.MALFORMED, seq, "not an audit record (hash)")
    try:
        canonical_bytes(record)
    except ValueError:  # NaN or Infinity were read back
        return _Bad(ProblemKind.MALFORMED, seq, "not an audit record (non-finite number)")
    return record, stored


_LOOSE_SEQ = re.compile(rb',"seq":(\d{1,18}),"time":"')


def _loose_seq(data: bytes) -> int | None:
    """The seq of a damaged line when it can still be read (a guess, shown with ``?``)."""
    matches = _LOOSE_SEQ.findall(data)
    return int(matches[-1]) if matches else None


def _seq_text(bad: _Bad) -> str:
    if bad.seq is None:
        return ""
    return f" (seq {bad.seq})" if bad.kind is ProblemKind.MALFORMED else f" (seq {bad.seq}?)"


def _pread(fd: int, length: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            break
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _last_line(fd: int, size: int) -> bytes:
    """The last complete line without its newline; reads backwards from the end only."""
    end = size - 1  # the final newline
    pos = end
    block = _TAIL_BLOCK
    chunks: list[bytes] = []
    while pos > 0:
        start = max(0, pos - block)
        data = _pread(fd, pos - start, start)
        cut = data.rfind(b"\n")
        if cut >= 0:
            chunks.append(data[cut + 1 :])
            break
        chunks.append(data)
        pos = start
        block = min(block * 2, 1 << 24)
    return b"".join(reversed(chunks))


def _fsync_dir(folder: Path) -> None:
    """Make a newly created log file's name durable too (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _local_path(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise UserInputError(
            f"the audit log must be a local file, not {text.split('://', 1)[0]}:// (object stores "
            "have no append): keep the log on local disk and ship copies to the bucket"
        )
    if not text:
        raise UserInputError("the audit log path is empty")
    return Path(text)
