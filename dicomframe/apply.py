"""Apply a plan to files: the part of de-identification that runs in worker processes.

Kept free of polars so workers start fast. A work item is one file: where to
read it, where to write it, and its plan rows ``(tag_path, tag, vr, action,
new_value)``; the rows become the edits of :func:`dicomframe.rewrite.rewrite`,
which keeps pixel data byte for byte and drops anything the plan does not keep.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from . import _stream
from ._stream import FileRange
from .errors import ParseError, PixelCleanError, StorageError, UserInputError
from .rewrite import KEEP_SEQUENCE, Keep, NewElement, Set, _rewrite_pieces, charset_at, encode_text

__all__ = [
    "DICOM_CONTENT_TYPE",
    "RETRY_ATTEMPTS",
    "PlanRows",
    "WorkItem",
    "apply_chunk",
    "edits_for",
    "is_transient",
    "publish_staged",
    "with_retries",
    "write_atomic",
]

log = logging.getLogger(__name__)

#: a piece of an output: bytes, a view of the input, or a range of a large input's file
Piece = bytes | bytearray | memoryview | FileRange

DICOM_CONTENT_TYPE = "application/dicom"
#: object-store calls: attempts in all, first and largest pause between two (seconds)
RETRY_ATTEMPTS = 5
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0

#: (file_id, source path, output path, plan rows, size of the output already there or None,
#: pixel clean: None (untouched) or (regions, detect text, mark cleaned: False when only the
#: bytes after the last frame go), size of the input as scanned)
WorkItem = tuple[
    int, str, str, list[tuple[str, int, str, str, "str | None"]], "int | None",
    "tuple[list[tuple[int, int, int, int]], bool, bool] | None", int,
]


class PlanRows(Sequence[tuple[str, int, str, str, "str | None"]]):
    """One file's plan rows ``(tag_path, tag, vr, action, new_value)``, held as five columns.

    What :func:`dicomframe.pipeline.deidentify` gives the writers: made from slices of the
    plan's columns without a tuple per row; iterating it gives the rows.
    """

    __slots__ = ("columns",)

    def __init__(
        self, paths: list[str], tags: list[int], vrs: list[str], actions: list[str], values: list[str | None]
    ) -> None:
        self.columns = (paths, tags, vrs, actions, values)

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self) -> Iterator[tuple[str, int, str, str, str | None]]:
        return zip(*self.columns, strict=True)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(zip(*(c[index] for c in self.columns), strict=True))
        return tuple(c[index] for c in self.columns)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PlanRows):
            return self.columns == other.columns
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PlanRows({list(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PlanRows, self.columns)


#: (file_id, status, reason, bytes, sha256 of the output, already there: not uploaded again,
#: the temporary file it waits in when staged: see :func:`apply_chunk`)
ApplyResult = tuple[int, str, "str | None", int, "str | None", bool, "str | None"]
T = TypeVar("T")
_KEEP = Keep()
#: name prefix of the per-thread folders that local temporary files are made in
TMP_DIR_PREFIX = ".tmp-"
_THREAD = threading.local()


def edits_for(
    rows: Sequence[tuple[str, int, str, str, str | None]], additions: dict[str, Any]
) -> tuple[dict[str, Any], dict[int, str]]:
    """Rewrite edits and file-meta overrides from one file's plan rows."""
    return _edits(rows, _addition_edits(additions), {})


def _addition_edits(additions: dict[str, Any]) -> list[tuple[str, Any]]:
    """The edits dicomframe adds to every file (identity removed, method, temporal flag)."""
    return [
        ("00120062", Set("CS", "YES")),
        ("00120063", Set("LO", additions["method_text"][:64])),
        (
            "00120064",
            Set(
                "SQ",
                [
                    [
                        NewElement(0x00080100, "SH", code),
                        NewElement(0x00080102, "SH", scheme),
                        NewElement(0x00080104, "LO", meaning[:64]),
                    ]
                    for code, scheme, meaning in additions["method_codes"]
                ],
            ),
        ),
        ("00280303", Set("CS", additions["temporal"])),
    ]


def _edits(
    rows: Sequence[tuple[str, int, str, str, str | None]],
    added: list[tuple[str, Any]],
    made: dict[tuple[str, str], Set],
) -> tuple[dict[str, Any], dict[int, str]]:
    """:func:`edits_for` with the additions' edits given; ``made``: Sets of str values made
    before (equal values, immutable: shared)."""
    edits: dict[str, Any] = {}
    meta: dict[int, str] = {}
    keep = _KEEP
    charsets: dict[str, str] | None = None  # item prefix → its Specific Character Set, when asked
    # what the scan read as a sequence (it has rows inside): kept, it must be one for the
    # rewriter too (see KEEP_SEQUENCE), whatever its VR says (UN, or a private one)
    containers = {path[: path.rfind("[")] for path, *_ in rows if "[" in path}
    for path, tag, vr, action, new_value in rows:
        if action == "X":
            continue
        if tag >> 16 == 0x0002:  # file meta: only the new SOP Instance UID is carried over
            if tag == 0x00020003 and new_value:
                meta[0x00020003] = new_value
            continue
        if action == "K":
            edits[path] = KEEP_SEQUENCE if path in containers else keep
        elif vr == "SQ":
            edits[path] = Set("SQ", []) if action == "Z" else KEEP_SEQUENCE
        else:
            value = new_value if new_value is not None else ""
            edit = made.get((vr, value))
            if edit is None:
                if not value.isascii():  # cleaned text: in the element's character set
                    if charsets is None:
                        charsets = {p[:-8]: v or "" for p, t, _, a, v in rows if t == 0x00080005 and a == "K"}
                    charset = charset_at(path, charsets)
                    key = (vr, f"{value}\x00{charset}")
                    edit = made.get(key)
                    if edit is None:
                        raw = encode_text(value, charset)
                        if raw is None:  # the plan wrote what the set holds: not seen but by hand
                            raw = value.encode("ascii", "replace")
                            raw += b" " * (len(raw) & 1)
                        edit = made[key] = Set(vr, raw)
                else:
                    edit = made[(vr, value)] = Set(vr, value)
            edits[path] = edit
    for path, edit in added:
        edits[path] = edit
    return edits, meta


class LocalFS:
    """The local file system: fsspec's ``LocalFileSystem``, imported on first use.

    A local batch writes, renames and lists with :mod:`os`; fsspec (whose import reads
    the entry points of every installed package, ~40 ms) is loaded only when something
    asks it for more.
    """

    protocol = ("file", "local")

    def __getattr__(self, name: str) -> Any:
        import fsspec

        return getattr(fsspec.filesystem("file"), name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalFS, ())

    def __repr__(self) -> str:
        return "LocalFS()"


def _is_local(fs: Any) -> bool:
    protocol = getattr(fs, "protocol", "file")
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", "file")
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


_THROTTLE_CODES = frozenset(
    (
        "Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "RequestLimitExceeded",
        "ServiceUnavailable", "InternalError", "ServerBusy", "OperationTimedOut", "TooManyRequests",
    )
)
_TRANSIENT_NAMES = frozenset(
    (
        "HTTPClientError", "ConnectionClosedError", "EndpointConnectionError", "ReadTimeoutError",
        "ConnectTimeoutError", "ResponseStreamingError", "IncompleteReadError", "ClientConnectionError",
        "ClientPayloadError", "ServerDisconnectedError", "ClientOSError", "ServiceRequestError",
        "ServiceResponseError", "FSTimeoutError", "IncompleteRead",
    )
)
_AUTH_NAMES = frozenset(
    ("NoCredentialsError", "PartialCredentialsError", "ClientAuthenticationError", "CredentialRetrievalError")
)
_AUTH_CODES = frozenset(
    ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AuthenticationFailed",
     "AuthorizationFailure", "InvalidToken")
)
_MISSING_CODES = frozenset(("NoSuchBucket", "ContainerNotFound", "ResourceNotFound"))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _status(exc: BaseException) -> tuple[int | None, str]:
    """HTTP status and service error code of a botocore/azure error (None, "" otherwise)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(response.get("Error", {}).get("Code", ""))
        return (int(status) if status else None), code
    status = getattr(exc, "status_code", None)
    return (status if isinstance(status, int) else None), str(getattr(exc, "error_code", "") or "")


def classify(exc: BaseException) -> str:
    """``"transient"`` (retry), ``"auth"``, ``"missing"`` (fail fast) or ``"other"``."""
    for err in _chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        status, code = _status(err)
        if names & _AUTH_NAMES or code in _AUTH_CODES or status in (401, 403):
            return "auth"
        if code in _MISSING_CODES:
            return "missing"
        if code in _THROTTLE_CODES or (status is not None and (status >= 500 or status == 429)):
            return "transient"
        if names & _TRANSIENT_NAMES or isinstance(err, ConnectionError | TimeoutError):
            return "transient"
    for err in _chain(exc):
        if isinstance(err, PermissionError):
            return "auth"
        if isinstance(err, FileNotFoundError):
            return "missing"
    return "other"


def is_transient(exc: BaseException) -> bool:
    """True for throttling, 5xx answers, timeouts and dropped connections (worth a retry)."""
    return classify(exc) == "transient"


_ADVICE = {
    "auth": "access was refused: check the credentials (environment, profile, connection string or "
    "storage options) and that they may read and write this location",
    "missing": "not found: check that the bucket or container exists and that the URL is right",
    "transient": "the service kept failing (throttling, 5xx or dropped connections): check the endpoint "
    "and the network, then re-run the same command: finished files are not written again",
}


def with_retries(fn: Callable[[], T], url: str, what: str, attempts: int = RETRY_ATTEMPTS) -> T:
    """Call ``fn``; retry transient storage faults with exponential backoff, fail fast otherwise.

    Auth and missing-bucket errors, and transient faults that outlast ``attempts``,
    become a :class:`StorageError` naming ``url`` and what to check; anything
    else propagates unchanged.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            kind = classify(exc)
            if kind == "transient" and attempt + 1 < attempts:
                pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt) * (0.5 + random.random() / 2)
                log.info("%s %s: %s, retry %d in %.2f s", what, url, type(exc).__name__, attempt + 1, pause)
                time.sleep(pause)
                continue
            if kind == "other":
                raise
            tries = f" after {attempts} attempts" if kind == "transient" else ""
            raise StorageError(f"{what} {url} failed{tries} ({type(exc).__name__}): {_ADVICE[kind]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _url(fs: Any, path: str) -> str:
    protocol = _protocols(fs)[0]
    return path if "://" in path else f"{protocol}://{path}"


def _is_azure(protocols: tuple[str, ...]) -> bool:
    return "abfs" in protocols or "az" in protocols


def _object_options(protocols: tuple[str, ...], content_type: str | None, metadata: dict[str, str] | None) -> dict[str, Any]:
    """What gives an object its content type and metadata, for ``pipe_file`` or ``open``:
    S3, Azure Blob and GCS; nothing for the others (memory://: no object metadata)."""
    if "s3" in protocols:
        options: dict[str, Any] = {}
        if content_type:
            options["ContentType"] = content_type
        if metadata:
            options["Metadata"] = metadata
        return options
    if _is_azure(protocols):
        from azure.storage.blob import ContentSettings

        return {
            "metadata": {**(metadata or {}), "is_directory": "false"},
            "content_settings": ContentSettings(content_type=content_type) if content_type else None,
        }
    if "gs" in protocols or "gcs" in protocols:
        return {"content_type": content_type or "application/octet-stream", "metadata": metadata}
    return {}


def _put(fs: Any, path: str, data: bytes, content_type: str | None, metadata: dict[str, str] | None) -> None:
    protocols = _protocols(fs)
    options = _object_options(protocols, content_type, metadata)
    if _is_azure(protocols):
        # adlfs' pipe_file sets its own metadata; a file object carries ours (one upload on close)
        with fs.open(path, "wb", **options) as fh:
            fh.write(data)
        fs.invalidate_cache(path.rsplit("/", 1)[0])
    else:
        fs.pipe_file(path, data, **options)


#: what a streamed upload holds before sending it (S3 parts are at least 5 MiB; GCS chunks a
#: multiple of 256 KiB)
_UPLOAD_BLOCK = 8 << 20


def _put_stream(fs: Any, path: str, pieces: Sequence[Piece], content_type: str | None, metadata: dict[str, str] | None) -> None:
    """:func:`_put` for an output holding a :class:`FileRange`: uploaded a block at a time
    (S3 multipart, Azure blocks, GCS resumable), made visible only when complete. On
    failure the upload is discarded, never completed with what was sent so far."""
    protocols = _protocols(fs)
    options = _object_options(protocols, content_type, metadata)
    if {"s3", "abfs", "az", "gs", "gcs"} & set(protocols):  # an object store: its blocks
        options["block_size"] = _UPLOAD_BLOCK
    opened = fs.open(path, "wb", **options)
    try:
        for chunk in _chunks(pieces):
            opened.write(chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            opened.discard()  # an unfinished upload is thrown away ...
        with contextlib.suppress(Exception):
            opened.closed = True  # ... and never completed when the file object goes
        raise
    opened.close()
    if _is_azure(protocols):
        fs.invalidate_cache(path.rsplit("/", 1)[0])


def write_atomic(
    fs: Any,
    path: str,
    data: bytes | Sequence[Piece],
    *,
    content_type: str | None = None,
    metadata: dict[str, str] | None = None,
    tmp_root: str | None = None,
    publish: bool = True,
) -> str | None:
    """Write ``data`` so that ``path`` appears complete or not at all.

    ``data`` is the content, or a list of pieces to write one after the other
    (locally with one ``writev``, without joining them first).

    On object stores the content type and metadata are set where the store
    supports them (S3, Azure Blob, GCS), and transient faults are retried
    (:func:`with_retries`); a local file is written to a temporary name and renamed.
    The temporary file is made beside ``path``, or with ``tmp_root`` (a folder on
    the same file system) in this thread's own folder under it (see
    :func:`remove_tmp_dirs`): files made at once in one folder wait for each
    other in the kernel, whatever the number of threads.

    ``publish=False`` (a local file written with ``tmp_root``) leaves the file under its
    temporary name and returns that name: :func:`publish_staged` gives it its own
    later, or :func:`remove_tmp_dirs` removes it. Otherwise returns None.
    """
    pieces = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
    if fs is None or _is_local(fs):
        parent = path.rsplit("/", 1)[0]
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = -1
        ahead = _AHEAD.get(tmp_root.rstrip("/")) if tmp_root is not None and _AHEAD else None
        made = ahead.take() if ahead is not None else None
        tmp = made or ""
        if made is not None:
            try:
                fd = os.open(made, flags & ~os.O_CREAT)
            except OSError:
                fd = -1
        if fd < 0:
            name = f".{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp"
            tmp_dir = _thread_tmp_dir(tmp_root) if tmp_root is not None else parent
            tmp = f"{tmp_dir}/{name}"
            try:
                fd = os.open(tmp, flags, 0o666)
            except FileNotFoundError:
                os.makedirs(tmp_dir, exist_ok=True)
                fd = os.open(tmp, flags, 0o666)
        try:
            try:
                _write_all(fd, pieces)
            finally:
                os.close(fd)
            if not publish and tmp_root is not None:
                return tmp
            _move_into_place(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)  # never visible under the output's name
            raise
        return None
    if any(isinstance(piece, FileRange) for piece in pieces):
        with_retries(lambda: _put_stream(fs, path, pieces, content_type, metadata), _url(fs, path), "writing")
        return None
    body = pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)  # type: ignore[arg-type]
    # an object-store PUT is atomic (readers see all or nothing), and idempotent: safe to retry
    with_retries(lambda: _put(fs, path, body, content_type, metadata), _url(fs, path), "writing")
    return None


def publish_staged(staged: Sequence[tuple[str, str]]) -> None:
    """Give local files staged by :func:`write_atomic` (``publish=False``) their own names.

    ``staged``: ``(temporary name, output path)`` pairs. Each rename is atomic: a reader
    sees the whole output or none.
    """
    for tmp, path in staged:
        _move_into_place(tmp, path)


def _move_into_place(tmp: str, path: str) -> None:
    """Rename the finished temporary file ``tmp`` to ``path`` (atomic), making the output's
    folder when it does not exist yet (the temporary file was made elsewhere; another
    thread may be making the folder right now: exist_ok)."""
    try:
        os.replace(tmp, path)
    except FileNotFoundError:
        if not os.path.exists(tmp):
            raise
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        os.replace(tmp, path)


class TmpFiles:
    """Empty temporary files made ahead, in a background thread, for :func:`write_atomic`.

    Making a file is the slow part of writing a small one on some file systems (finding a
    free inode among recently deleted ones); made while this process plans, they cost the
    writers nothing later. A writer given ``tmp_root`` takes one, or makes its own when
    none is left. ``stop`` ends the making; :func:`remove_tmp_dirs` removes what was not used.
    """

    def __init__(self, tmp_root: str, count: int, first: int = 128) -> None:
        self.tmp_root = tmp_root.rstrip("/")
        self.folder = f"{self.tmp_root}/{TMP_DIR_PREFIX}{os.getpid()}-ahead"
        #: at most this many in all; until ``limit`` tells the real number, at most ``first``
        self.count = count
        self.allowed = min(first, count)
        self.ready: collections.deque[str] = collections.deque()
        self._stop = threading.Event()
        self._more = threading.Event()
        self._thread = threading.Thread(target=self._make, name="dicomframe-tmpfiles", daemon=True)

    def start(self) -> TmpFiles:
        _AHEAD[self.tmp_root] = self
        self._thread.start()
        return self

    def limit(self, count: int) -> None:
        """The number of files wanted, once the inputs are listed (at most the initial count)."""
        self.count = self.allowed = min(self.count, count)
        self._more.set()

    def _make(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        prefix = f"{self.folder}/."
        try:
            os.makedirs(self.folder, exist_ok=True)
            done = 0
            while done < self.count and not self._stop.is_set():
                if done >= self.allowed:  # wait for the real number
                    self._more.wait()
                    self._more.clear()
                    continue
                batch = min(_AHEAD_BATCH, self.allowed - done)
                if _cwalk is not None:  # without the GIL: this process goes on planning meanwhile
                    made = _cwalk.make_files(prefix, done, batch)
                else:
                    made = 0
                    for i in range(done, done + batch):
                        os.close(os.open(f"{prefix}{i}.ahead", flags, 0o666))
                        made += 1
                self.ready.extend(f"{prefix}{i}.ahead" for i in range(done, done + made))
                done += made
                if made < batch:
                    return
        except OSError:
            return  # the writers make their own files

    def take(self) -> str | None:
        try:
            return self.ready.popleft()
        except IndexError:
            return None

    def stop(self) -> None:
        """Make no more files (those made stay available)."""
        self._stop.set()
        self._more.set()
        if self._thread.is_alive():
            self._thread.join()

    def close(self) -> None:
        self.stop()
        if _AHEAD.get(self.tmp_root) is self:
            del _AHEAD[self.tmp_root]


#: files made ahead, by tmp_root (this process only)
_AHEAD: dict[str, TmpFiles] = {}
_AHEAD_BATCH = 32

try:
    from . import _cwalk
except ImportError:  # pragma: no cover - no compiler on this machine
    _cwalk = None


def _thread_tmp_dir(tmp_root: str) -> str:
    """This thread's folder for temporary files under ``tmp_root``."""
    made = getattr(_THREAD, "dirs", None)
    if made is None:
        made = _THREAD.dirs = {}
    found = made.get(tmp_root)
    if found is None:
        found = f"{tmp_root.rstrip('/')}/{TMP_DIR_PREFIX}{os.getpid()}-{threading.get_ident()}"
        os.makedirs(found, exist_ok=True)
        made[tmp_root] = found
    return found


def remove_tmp_dirs(tmp_root: str) -> None:
    """Remove the (empty) per-thread temporary folders under ``tmp_root``, and their leftovers.

    Temporary files are never visible under an output's name: what a killed run
    left there is incomplete and goes.
    """
    try:
        names = os.listdir(tmp_root)
    except OSError:
        return
    for name in names:
        if not name.startswith(TMP_DIR_PREFIX):
            continue
        folder = os.path.join(tmp_root, name)
        try:
            for leftover in os.listdir(folder):
                if leftover.startswith(".") and leftover.endswith((".tmp", ".ahead")):
                    os.remove(os.path.join(folder, leftover))
            os.rmdir(folder)
        except OSError:
            continue
    dirs = getattr(_THREAD, "dirs", None)
    if dirs:
        dirs.pop(tmp_root, None)


def _write_all(fd: int, pieces: Sequence[Piece]) -> None:
    """Write every piece, in order (short writes continued); a :class:`FileRange` is read
    and written a chunk at a time."""
    if any(isinstance(piece, FileRange) for piece in pieces):
        for chunk in _chunks(pieces):
            if len(chunk):
                _write_views(fd, [memoryview(chunk).cast("B")])
        return
    _write_views(fd, [memoryview(p).cast("B") for p in pieces if len(p)])  # type: ignore[arg-type]


def _write_views(fd: int, views: list[memoryview]) -> None:
    """Write every view, in order (short writes continued)."""
    if not hasattr(os, "writev"):  # pragma: no cover - not POSIX
        for view in views:
            while len(view):
                view = view[os.write(fd, view) :]
        return
    while views:
        done = os.writev(fd, views[:1024])
        if done <= 0:
            raise OSError("the write made no progress")
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if done:
            views[0] = views[0][done:]


def apply_chunk(
    items: Sequence[WorkItem],
    src_fs: Any,
    out_fs: Any,
    additions: dict[str, Any],
    metadata: dict[str, str] | None = None,
    check: bool = False,
    tmp_root: str | None = None,
    stage: bool = False,
) -> list[ApplyResult]:
    """De-identify a chunk of files.

    Returns ``(file_id, status, reason, bytes, sha256, reused, staged)`` per file. An
    output already there holding the very bytes just computed (a re-run after an
    interruption: outputs are deterministic under one key and one set of options)
    is not written again (``reused``); one of another content (the re-run changed
    an option) is. ``existing`` (of a work item) is the size of the output already
    there, or None: only an output of the new size is read to compare. A
    :class:`StorageError` (refused access, missing bucket, a service that keeps
    failing) stops the run.

    With ``stage`` (local outputs written with ``tmp_root``), each output is left under
    its temporary name, given as ``staged``, for the caller to publish once the leak
    gate has passed it (:func:`publish_staged`): nothing unchecked is ever visible
    under an output's name, not even after a crash. Otherwise ``staged`` is None.

    With ``check``, each output gets an eighth field: the element rows of its bytes
    (the header walker's, as a scan of the output would give), for the leak gate;
    ``None`` when they could not be had that way. A local file and an object-store PUT
    (atomic: the object is the body sent) hold exactly the bytes written, and an
    output found already there (``reused``) the same bytes (sha256), so the gate
    need not read either back.
    ``tmp_root``: see :func:`write_atomic`.
    """
    results: list[ApplyResult] = []
    local = out_fs is None or _is_local(out_fs)
    # what every file of the chunk shares: made once (the same objects, never changed, so
    # the rewriter encodes the new sequence once)
    added = _addition_edits(additions)
    made: dict[tuple[str, str], Set] = {}
    memo: dict[int, Any] = {}
    src: _stream.Source | None = None
    for file_id, src_path, out_path, rows, existing, pixels, scanned_size in items:
        try:
            edits, meta = _edits(rows, added, made)
            # a large input is read without its pixel data value (read from the file when
            # written, and cleaned there when pixel clean asks)
            if src_fs is None:
                data, src = _stream.load(src_path, scanned_size)
            else:
                loaded = _stream.load_remote(scanned_size, _ranges(src_fs, src_path))
                if loaded is not None:
                    data, src = loaded
                else:
                    data = with_retries(  # the lambda runs before the loop moves on
                        lambda: src_fs.cat_file(src_path),  # noqa: B023
                        _url(src_fs, src_path.split("/", 1)[0]),
                        "reading from",
                    )
            pieces = _rewrite_pieces(data, edits, meta, True, memo)
            if src is not None:
                pieces = _stream.fill_hole(pieces, data, src)
            if pixels is not None:  # decode, black out, re-encode: only the images that ask
                from .pixelclean import clean_part10, clean_streamed

                regions, detect, mark = pixels  # mark False: only bytes after the last frame go
                cleaned = clean_streamed(pieces, regions, ocr=detect) if src is not None and mark else None
                if cleaned is None:  # native pixels left on disk are cleaned there; others whole
                    whole = b"".join(pieces) if src is None else b"".join(bytes(c) for c in _chunks(pieces))
                    cleaned = [clean_part10(whole, regions, ocr=detect, mark=mark)]
                pieces = cleaned
            digest, size = _digest(pieces)
            reused = existing == size and _holds(out_fs, out_path, digest, size)
            checked = _output_rows(pieces, size) if check else None
            staged = None
            if not reused:
                staged = write_atomic(
                    out_fs, out_path, pieces, content_type=DICOM_CONTENT_TYPE, metadata=metadata,
                    tmp_root=tmp_root if local else None, publish=not (stage and local),
                )  # fmt: skip
            result: tuple[Any, ...] = (file_id, "written", None, size, digest, reused, staged)
            if check:
                result = (*result, checked)
            results.append(result)
        except ParseError as exc:
            results.append((file_id, exc.kind, str(exc), 0, None, False, None))
        except PixelCleanError as exc:
            results.append((file_id, "pixel_clean_failed", str(exc), 0, None, False, None))
        except StorageError:
            raise
        except UserInputError as exc:
            results.append((file_id, "unwritable", str(exc), 0, None, False, None))
        except OSError as exc:
            results.append((file_id, "io_error", f"reading or writing failed ({type(exc).__name__})", 0, None, False, None))
        except Exception as exc:  # noqa: BLE001 - one strange file must not stop the batch
            # the message may hold a value from the file: report the type only
            results.append(
                (file_id, "corrupt", f"could not be rewritten ({type(exc).__name__}); the file is damaged", 0, None, False, None)
            )
        finally:
            if src is not None:
                src.close()
                src = None
    return results


def _ranges(fs: Any, path: str) -> Callable[[int, int], bytes]:
    """Ranged reads of ``path`` on ``fs`` (transient faults retried)."""
    url = _url(fs, path.split("/", 1)[0])

    def fetch(start: int, stop: int) -> bytes:
        return bytes(with_retries(lambda: fs.cat_file(path, start=start, end=stop), url, "reading from"))

    return fetch


def _chunks(pieces: Sequence[Piece]) -> Iterator[bytes | bytearray | memoryview]:
    """The pieces' bytes in order: a :class:`FileRange` read a chunk at a time (each chunk
    valid until the next is asked for), the others as they are."""
    for piece in pieces:
        if isinstance(piece, FileRange):
            yield from piece.chunks()
        else:
            yield piece


def _digest(pieces: Sequence[Piece]) -> tuple[str, int]:
    """sha256 (hex) and length of the pieces, one after the other."""
    hasher = hashlib.sha256()
    for chunk in _chunks(pieces):
        hasher.update(chunk)
    return hasher.hexdigest(), sum(len(piece) for piece in pieces)


def _holds(fs: Any, path: str, digest: str, size: int) -> bool:
    """Whether the output at ``path`` holds the bytes of sha256 ``digest`` (False: absent).

    Equal sizes are not enough: a re-run with another ``--org`` of the same length, or
    another date-shift range, gives outputs of the same size and other values.
    """
    if fs is None or _is_local(fs):
        try:
            with open(path, "rb") as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest() == digest
        except OSError:
            return False  # gone, or unreadable: written again

    def read() -> str | None:
        try:
            if size >= _stream.STREAM_BYTES:  # a large output is hashed a block at a time
                with fs.open(path, "rb", block_size=_stream.CHUNK, cache_type="none") as fh:
                    return hashlib.file_digest(fh, "sha256").hexdigest()
            return hashlib.sha256(fs.cat_file(path)).hexdigest()
        except FileNotFoundError:
            return None  # gone since the listing: written again

    return with_retries(read, _url(fs, path), "reading back") == digest


class _PiecesReader:
    """A range reader (see :mod:`dicomframe._parse`) over the pieces of an output."""

    def __init__(self, pieces: Sequence[Piece], size: int) -> None:
        self.pieces = pieces
        self.size = size

    def read(self, start: int, stop: int) -> bytes:
        out: list[Any] = []
        at = 0
        for piece in self.pieces:
            end = at + len(piece)
            if end > start and at < stop:
                if isinstance(piece, FileRange):
                    out.append(piece.read(max(start - at, 0), min(stop, end) - at))
                else:
                    out.append(piece[max(start - at, 0) : min(stop, end) - at])
            if end >= stop:
                break
            at = end
        return b"".join(out)


def _output_rows(pieces: Sequence[Piece], size: int) -> list[Any] | None:
    """The element rows of an output as a scan of it would read them (None: leave it to a scan)."""
    from ._parse import parse_file

    try:
        return parse_file(_PiecesReader(pieces, size), attributes=False)[0]
    except Exception:  # noqa: BLE001 - the read-back scan decides (and reports) instead
        return None
