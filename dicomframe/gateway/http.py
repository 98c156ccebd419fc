"""The HTTP gateway: de-identify one DICOM file per request, or a whole folder as a batch.

For sites that push studies to a cloud PACS or a teleradiology service: the gateway
runs next to the archive, holds the project key and the vault, and hands out only
de-identified data. ``dicomframe serve`` runs it (extra ``serve``); from Python,
:func:`create_app` builds the FastAPI app for any ASGI server.

Endpoints (all answers are JSON, except the de-identified file):

``GET /healthz``
    ``{"status": "ok", "version": ...}``; needs no token (for load balancers).
``POST /v1/anonymize``
    The body is one DICOM Part 10 file (``Content-Type: application/dicom``). It is
    de-identified as a batch of one file (its mapping goes to the vault, so it can be
    re-identified) and the de-identified file is the answer (200,
    ``application/dicom``), with the headers ``X-Dicomframe-Batch-Id`` and
    ``X-Dicomframe-Study-Id`` (the pseudonymous cloud study id). The same key gives the
    same pseudonymous UIDs on every call. A damaged or non-DICOM body: 422; a finding
    of the leak gate: 422 naming its rules, and no file.
``POST /v1/batches``
    ``{"src": ..., "batch_id"?: ..., "priority"?: ...}``: de-identify ``src`` (a folder,
    file or URL inside one of the allowed sources) into the gateway's destination, in
    a background worker (one batch at a time, in order). Answers 202 with the
    ``status_url``. Each accepted batch is kept in the vault, encrypted
    (``VAULT/<batch_id>/gateway-job.json.enc``), until it ends: a batch queued or
    running when the gateway stops (or is killed) is queued again when it starts,
    and resumes where it stopped.
``GET /v1/batches/{batch_id}``
    The batch's status: ``queued``, ``running``, ``ok``, ``partial`` (some inputs
    failed), ``gate_failed`` (the leak gate stopped it: not committed) or ``error``,
    with counts and the ``manifest_uri`` once committed.

Errors answer ``{"error": kind, "detail": what to do}``. Nothing read from a file, no
path a client sent and no exception text (which may quote a value) is ever in an
answer or a log line: the log says method, route, status and time, batch ids and
counts.

Every upload is written to a private temporary folder (mode 0700, under ``TMPDIR``)
that is removed when the request ends, whatever happened: it holds PHI for the time
of the request.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hmac
import json
import logging
import os
import queue
import shutil
import stat
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any

from .. import __version__
from ..errors import (
    DicomframeError,
    KeyFileError,
    MissingExtraError,
    ProfileError,
    SourceNotFoundError,
    StorageError,
    UserInputError,
    VaultError,
    WrongKey,
    innermost_frame,
)
from ..keys import ProjectKey, load_key

try:
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ImportError:  # pragma: no cover - the test extra installs them
    raise MissingExtraError("the HTTP gateway (dicomframe serve)", "serve", "fastapi") from None

__all__ = ["DEFAULT_MAX_BODY", "GatewaySettings", "create_app", "quiet_warnings", "read_token_file"]

log = logging.getLogger("dicomframe.gateway")

#: largest body ``POST /v1/anonymize`` takes by default (2 GiB): a large multi-frame image
DEFAULT_MAX_BODY = 2 * 1024**3
#: largest JSON body ``POST /v1/batches`` takes
_MAX_JSON = 64 * 1024
#: set (to anything) to log an internal error's whole traceback, which may quote patient data
_DEBUG_ENV = "DICOMFRAME_DEBUG"
_GLOB_CHARS = frozenset("*?[")
_BATCH_FIELDS = frozenset(("src", "batch_id", "priority"))
_ACTIVE = ("queued", "running")
#: batches whose status the gateway keeps in memory (beyond: the oldest finished are forgotten)
_KEEP_JOBS = 10_000
#: seconds a client refused as busy (503) is told to wait before sending again
RETRY_AFTER = 5
#: the vault file of a batch accepted and not yet ended (its src, priority and time, sealed)
JOB_FILE = "gateway-job.json.enc"

@dataclass(frozen=True)
class GatewaySettings:
    """What a gateway serves with: destination, key, vault, profile and its limits.

    Parameters
    ----------
    dst
        Output root of ``POST /v1/batches`` (local folder or URL); each batch goes to
        ``DST/<batch_id>/`` as ``dicomframe deidentify`` writes it.
    key
        The project key, or the path of its key file (``dicomframe keygen``).
    vault
        Where every mapping goes (local folder or URL), apart from ``dst``.
    profile
        Preset name (``basic``, ``default``, ``research``, ``cloud-upload``) or TOML file.
    org
        Organisation prefix for templates (``{org}``).
    allow_sources
        Roots ``POST /v1/batches`` may read: local folders (a ``src`` must resolve,
        links followed, inside one) or URL prefixes (``s3://bucket/incoming``: a ``src``
        must be the prefix or start with it and ``/``). None: the endpoint refuses
        every ``src`` (403).
    token
        The bearer token every ``/v1`` request must send (``Authorization: Bearer
        TOKEN``); None: no token asked (loopback use). See :func:`read_token_file`.
    audit_log
        Local JSON Lines audit log: one record per batch, single files included.
    max_body
        Largest body ``POST /v1/anonymize`` takes, in bytes (larger: 413).
    pixel_clean
        ``auto``, ``rules`` or ``off``, as ``dicomframe deidentify --pixel-clean``.
    jobs
        Worker processes of a batch (None: all cores).
    storage_options
        fsspec options for the URLs of ``dst``, ``vault`` and URL sources.
    concurrency
        Single files de-identified at once; further requests wait their turn.
    max_waiting
        Single-file requests that may wait for a turn (each holds its upload on disk
        meanwhile); one more is refused at once with 503 and ``Retry-After``, before its
        body is read, so that a burst of uploads cannot fill the disk or hold every
        thread of the server.
    temp_dir
        Where the private temporary folders of uploads go (None: ``TMPDIR``).
    allowed_hosts
        Host names (or addresses) a request's ``Host`` header may name, besides this
        machine's loopback names (``127.0.0.1``, ``localhost``, ``::1``): a request naming
        another host is refused (400), so that a web page the operator visits cannot
        reach the gateway by renaming itself (DNS rebinding).

    Examples
    --------
    >>> settings = GatewaySettings("out", key="project.key", vault="vault",
    ...                            allow_sources=("/srv/incoming",))  # doctest: +SKIP
    >>> app = create_app(settings)                                     # doctest: +SKIP
    """

    dst: str | os.PathLike[str]
    key: ProjectKey | str | os.PathLike[str]
    vault: str | os.PathLike[str]
    profile: str = "default"
    org: str = "DICOMFRAME"
    allow_sources: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    audit_log: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    pixel_clean: str = "auto"
    jobs: int | None = None
    storage_options: dict[str, Any] | None = field(default=None, hash=False)
    concurrency: int = 2
    max_waiting: int = 16
    temp_dir: str | None = None
    allowed_hosts: tuple[str, ...] = ()


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Read a gateway token: the file's text, stripped; at least 16 characters.

    The file must be private, as a key file is: one that group or others may read
    is refused, with the ``chmod`` that fixes it.

    Raises
    ------
    UserInputError
        The file is missing, readable by others, empty or too short.

    Examples
    --------
    >>> read_token_file("gateway.token")  # doctest: +SKIP
    """
    import shlex

    text = os.fspath(path)
    try:
        info = os.stat(text)
        if os.name == "posix" and info.st_mode & 0o077:
            raise UserInputError(
                f"token file {text} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"restrict it with `chmod 600 {shlex.quote(text)}` and try again"
            )
        with open(text, encoding="utf-8") as fh:
            token = fh.read().strip()
    except FileNotFoundError:
        raise UserInputError(
            f"token file {text} does not exist: write a long random token into it, e.g. "
            f"`(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > {shlex.quote(text)})`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read token file {text} ({type(exc).__name__})") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UserInputError(
            f"token file {text} must hold one token of at least 16 characters, without spaces "
            "(`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'` makes one)"
        )
    return token


def quiet_warnings() -> None:
    """Log Python warnings by category and place only, never their text, for this whole process.

    A library's warning may quote a value from a file (pydicom's on an invalid value
    does), and the gateway's threads make ``warnings.catch_warnings`` blocks unreliable
    (they swap process-wide state: a thread leaving its block shows another's warnings).
    ``dicomframe serve`` calls this before serving; call it in any process that serves
    the app.

    Examples
    --------
    >>> quiet_warnings()  # doctest: +SKIP
    """
    import warnings

    def show(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        log.warning(
            "a %s at %s:%d (its text is not logged: it may quote a value from a file)",
            category.__name__, os.path.basename(filename), lineno,
        )  # fmt: skip

    warnings.showwarning = show


class _Problem(Exception):
    """An answer other than success: status, machine-readable kind, what to do next."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "detail": self.detail, **self.extra},
            status_code=self.status,
            headers=self.headers,
        )


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _where(exc: BaseException) -> str:
    """``"KeyError at pipeline.py:412 in _deidentify"``: an error's type and place, not its message.

    The place is the innermost frame of dicomframe; where the error was raised deeper (in a
    library), that frame is named too.
    """
    place = innermost_frame(exc)
    if place is None:
        return type(exc).__name__
    text = f"{type(exc).__name__} at {os.path.basename(place.filename)}:{place.lineno} in {place.name}"
    last = traceback.extract_tb(exc.__traceback__)[-1]
    if (last.filename, last.lineno, last.name) != (place.filename, place.lineno, place.name):
        text += f", raised in {os.path.basename(last.filename)}:{last.lineno} in {last.name}"
    return text


def _log_failure(what: str, exc: BaseException) -> None:
    """Log an exception by its type and place only: its message may quote a value or a path."""
    if os.environ.get(_DEBUG_ENV):
        log.error("%s: %s (%s set: traceback follows; it may hold patient data)", what, _where(exc), _DEBUG_ENV, exc_info=exc)
    else:
        log.error("%s: %s (its message is not logged; %s=1 logs it)", what, _where(exc), _DEBUG_ENV)


#: a refused run, told without the exception's message (it may name the source, whose
#: folder names often hold patient names): kind and what to do next, by exception type
_REFUSALS: tuple[tuple[type[DicomframeError], str, str], ...] = (
    (SourceNotFoundError, "source_not_found", "nothing to de-identify at src: no file there, or an empty folder"),
    (
        StorageError,
        "storage",
        (
            "a storage back-end (source, destination or vault) refused access or could not be reached; "
            "the gateway's operator finds the error's type in its log"
        ),
    ),
    (
        WrongKey,
        "wrong_key",
        (
            "the vault holds batches sealed with another project key than the gateway's: the gateway's "
            "operator must give it the project's key file or another vault"
        ),
    ),
    (
        VaultError,
        "vault",
        "the vault could not be read or written; the gateway's operator finds the error's type in its log",
    ),
    (MissingExtraError, "missing_extra", ""),
    (KeyFileError, "key_file", "the gateway's key file cannot be read: its operator must fix it"),
    (ProfileError, "profile", "the gateway's profile is invalid: its operator must fix it"),
    (
        UserInputError,
        "refused",
        (
            "the batch was refused before any work (for instance: a batch_id already committed with other "
            "settings; give a new batch_id). `dicomframe deidentify` with the same arguments, on the "
            "gateway's machine, says why"
        ),
    ),
)


def _refusal(exc: DicomframeError) -> tuple[str, str]:
    for kind, error, detail in _REFUSALS:
        if isinstance(exc, kind):
            # a missing package's message names the package and the pip command: no value, no path
            return error, detail or str(exc)
    return "failed", "the run failed; the gateway's operator finds the error's type in its log"


def _check_batch_id(batch_id: Any) -> str:
    """A batch id as the CLI takes it (letters, digits, '-' and '_', at most 64), in ASCII."""
    from ..vault import _valid_batch_id  # the rule of every batch id

    if not isinstance(batch_id, str) or not _valid_batch_id(batch_id):
        raise _Problem(
            422,
            "bad_batch_id",
            "a batch id holds ASCII letters, digits, '-' and '_' only, at most 64 of them",
        )
    return batch_id


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass
class _Roots:
    """The sources a batch may read: local folders (real paths) and URL prefixes."""

    local: list[str]
    urls: list[str]

    @classmethod
    def parse(cls, roots: tuple[str, ...]) -> _Roots:
        local, urls = [], []
        for root in roots:
            if "://" in root and not root.lower().startswith("file://"):
                scheme, _, rest = root.partition("://")
                if not rest.strip("/") or _bad_url(rest):
                    raise UserInputError(
                        f"--allow-source {root}: a URL prefix names a bucket or container and, if you "
                        "like, a prefix in it (s3://bucket/incoming), without '..', '?' or '#'"
                    )
                urls.append(f"{scheme.lower()}://{rest.rstrip('/')}")
            else:
                path = root[len("file://") :] if root.lower().startswith("file://") else root
                real = os.path.realpath(path)
                if not os.path.isdir(real):
                    raise UserInputError(f"--allow-source {root} is not a folder: give the folders batches may read")
                local.append(real)
        return cls(local, urls)

    def check(self, src: str) -> str:
        """The source to read for ``src``, or 403 when it is outside every root (422: malformed)."""
        if not self.local and not self.urls:
            raise _Problem(
                403,
                "forbidden_source",
                "this gateway reads no source: its operator starts it with --allow-source ROOT for the "
                "folders or URL prefixes batches may come from",
            )
        if any(ord(c) < 32 for c in src):
            raise _Problem(422, "bad_source", "a src may not hold control characters (a NUL, a line break, ...)")
        if "://" in src and not src.lower().startswith("file://"):
            scheme, _, rest = src.partition("://")
            if _bad_url(rest):
                raise _Problem(422, "bad_source", "a src URL may not hold '..' or '.' segments, '?', '#', '\\' or '::'")
            url = f"{scheme.lower()}://{rest}"
            if any(url == prefix or url.startswith(prefix + "/") for prefix in self.urls):
                return url
            raise _forbidden()
        path = src
        if src.lower().startswith("file://"):
            path = src[len("file://") :]
            if not path.startswith("/"):
                raise _Problem(422, "bad_source", "a file:// src is file:///absolute/path (no host)")
        if not os.path.isabs(path):
            raise _Problem(422, "bad_source", "src is an absolute path on the gateway's machine, or a URL")
        if _GLOB_CHARS & set(path):
            raise _Problem(422, "bad_source", "src is a folder or a file, not a pattern ('*', '?', '[')")
        real = os.path.realpath(path)
        if not any(_inside(real, root) for root in self.local):
            raise _forbidden()
        if not os.path.exists(real):
            raise _Problem(422, "source_not_found", "nothing at src: check the path (a folder or a file)")
        return real

    def holds(self, path: str) -> bool:
        """True when ``path`` is inside one of the roots, or holds one."""
        if "://" in path and not path.lower().startswith("file://"):
            scheme, _, rest = path.partition("://")
            url = f"{scheme.lower()}://{rest.rstrip('/')}"
            return any(url == p or url.startswith(p + "/") or p.startswith(url + "/") for p in self.urls)
        real = os.path.realpath(path[len("file://") :] if path.lower().startswith("file://") else path)
        return any(_inside(real, root) or _inside(root, real) for root in self.local)


def _absolute(place: str) -> str:
    """A local path made absolute; a URL as it is."""
    return place if "://" in place else os.path.abspath(place)


def _bad_url(rest: str) -> bool:
    """A URL path that could lead out of a prefix: ``..`` or ``.`` segments, a query or fragment,
    a backslash, or fsspec's ``::`` (a chain of file systems)."""
    return (
        bool({"?", "#", "\\"} & set(rest))
        or "::" in rest
        or any(part in (".", "..") for part in rest.split("/"))
    )


def _forbidden() -> _Problem:
    return _Problem(
        403,
        "forbidden_source",
        "src is outside the sources this gateway may read (its --allow-source roots); ask its operator "
        "for the roots, or copy the study under one",
    )


@dataclass
class _Job:
    """A batch of ``POST /v1/batches``: what the status endpoint tells (its src is never told)."""

    batch_id: str
    src: str = field(repr=False)
    priority: str
    submitted_at: str = field(default_factory=_now)
    status: str = "queued"
    started_at: str | None = None
    finished_at: str | None = None
    written: int = 0
    failed: int = 0
    duplicates: int = 0
    studies: int = 0
    manifest_uri: str | None = None
    gate_rules: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "batch_id": self.batch_id,
            "status": self.status,
            "priority": self.priority,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "written": self.written,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "studies": self.studies,
            "manifest_uri": self.manifest_uri,
        }
        if self.gate_rules:
            out["gate_rules"] = self.gate_rules
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class _Anonymized:
    """A de-identified upload, open, its folder already removed."""

    file: IO[bytes]
    size: int
    batch_id: str
    study_id: str


class _Gateway:
    """The state of one app: settings checked once, the batch queue and its worker."""

    def __init__(self, settings: GatewaySettings) -> None:
        from ..pixelclean import MODES
        from ..profiles import Profile
        from ..vault import check_key

        self.settings = settings
        # local places made absolute now: the manifest_uri of a status means the same wherever asked
        self.dst, self.vault = (_absolute(os.fspath(settings.dst)), _absolute(os.fspath(settings.vault)))
        if settings.max_body < 1:
            raise UserInputError("--max-body must be at least 1 byte")
        if settings.concurrency < 1:
            raise UserInputError("--concurrency must be at least 1")
        if settings.max_waiting < 0:
            raise UserInputError("--max-waiting must be 0 or more")
        if settings.pixel_clean not in MODES:
            raise UserInputError(f"--pixel-clean must be one of {', '.join(MODES)} (got {settings.pixel_clean!r})")
        self.key = settings.key if isinstance(settings.key, ProjectKey) else load_key(settings.key)
        Profile.load(settings.profile)  # a bad profile is told now, not at the first request
        check_key(self.vault, self.key, storage_options=settings.storage_options)
        if settings.audit_log is not None:
            from ..auditlog import AuditLog

            AuditLog(settings.audit_log).check_writable()
        self.roots = _Roots.parse(settings.allow_sources)
        for name, place in (("DST", self.dst), ("the vault", self.vault)):
            if self.roots.holds(place):
                raise UserInputError(
                    f"{name} must not be inside (or hold) an --allow-source root: a batch could read "
                    "de-identified outputs or the vault as inputs. Give them places apart"
                )
        self.token = None if settings.token is None else settings.token.encode("utf-8")
        self.slots = threading.BoundedSemaphore(settings.concurrency)
        #: single-file requests taken in (receiving, waiting or de-identifying): see :meth:`admit`
        self.admitted = 0
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.worker: threading.Thread | None = None
        self.spool: str | None = None
        _sweep(settings.temp_dir)

    # -- single files ------------------------------------------------------------------

    def admit(self) -> bool:
        """Take one more single-file request in, or False when ``concurrency + max_waiting`` are in."""
        with self.lock:
            if self.admitted >= self.settings.concurrency + self.settings.max_waiting:
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        """A request :meth:`admit` took in has ended."""
        with self.lock:
            self.admitted -= 1

    def workdir(self) -> str:
        """A new private folder (mode 0700) for one upload, with ``in/`` for it.

        Uploads go into this process's spool, ``dicomframe-gateway-<pid>-*`` in the temporary
        folder, made on first use and removed at shutdown; a gateway that was killed leaves
        its spool behind, and the next one to start removes it (see :func:`_sweep`).
        """
        with self.lock:
            if self.spool is None:
                self.spool = tempfile.mkdtemp(prefix=f"{_SPOOL}{os.getpid()}-", dir=self.settings.temp_dir)
        work = tempfile.mkdtemp(dir=self.spool)
        os.mkdir(os.path.join(work, "in"), 0o700)
        return work

    def anonymize(self, work: str) -> _Anonymized:
        """De-identify ``work/in/`` (one file) into ``work/out/`` as a batch of one file."""
        from ..pipeline import _new_batch_id, deidentify

        s = self.settings
        batch = _new_batch_id()
        started = time.perf_counter()
        with self.slots:
            result = deidentify(
                os.path.join(work, "in"),
                os.path.join(work, "out"),
                key=self.key,
                vault=self.vault,
                profile=s.profile,
                org=s.org,
                batch_id=batch,
                jobs=1,
                progress=False,
                audit_log=s.audit_log,
                pixel_clean=s.pixel_clean,
                storage_options=s.storage_options,
            )
        if result.findings is not None and result.findings.height:
            rules = sorted(set(result.findings["rule"].to_list()))
            log.warning("anonymize: batch %s stopped by the leak gate (rules: %s)", batch, ", ".join(rules))
            raise _Problem(
                422,
                "leak_gate",
                "the leak gate found identifying values left in the de-identified file, which is not "
                "returned: the gateway's profile must be fixed (`dicomframe deidentify --dry-run` with "
                "its --profile shows the plan)",
                headers={"X-Dicomframe-Batch-Id": batch},
                rules=rules,
                batch_id=batch,
            )
        if result.failed:
            item = result.failed[0]
            log.info("anonymize: batch %s, the upload was not de-identified (%s)", batch, item["kind"])
            raise _Problem(
                422,
                str(item["kind"]),
                str(item["reason"] or "the upload could not be de-identified"),
                headers={"X-Dicomframe-Batch-Id": batch},
                batch_id=batch,
            )
        if not result.outputs and not result.failed and result.manifest_uri is not None:
            log.info("anonymize: batch %s, the upload held no image (a DICOMDIR)", batch)
            raise _Problem(
                422, "not_an_image",
                "the body is a DICOMDIR (an index of a medium), not an image: send the image files it lists",
                headers={"X-Dicomframe-Batch-Id": batch},
                batch_id=batch,
            )  # fmt: skip
        if result.manifest_uri is None or len(result.outputs) != 1:
            raise RuntimeError(f"a batch of one file gave {len(result.outputs)} outputs, uncommitted")
        with open(result.manifest_uri, encoding="utf-8") as fh:
            study = str(json.load(fh)["studies"][0]["cloud_study_id"])
        output = open(result.outputs[0], "rb")  # noqa: SIM115 - streamed, then closed by _chunks
        size = os.fstat(output.fileno()).st_size
        log.info("anonymize: batch %s, 1 file, %d bytes, %.2f s", batch, size, time.perf_counter() - started)
        return _Anonymized(output, size, batch, study)

    # -- batches -----------------------------------------------------------------------

    # -- jobs kept in the vault until they end ---------------------------------------------

    def _store(self) -> Any:
        from ..vault import _Store

        return _Store.open(self.vault, self.settings.storage_options)

    def _keep(self, job: _Job) -> None:
        """Seal the job into the vault (its src may name a patient): resumed after a restart."""
        from ..vault import _seal

        plain = json.dumps({"src": job.src, "priority": job.priority, "submitted_at": job.submitted_at}).encode()
        try:
            self._store().write(job.batch_id, _seal(plain, _job_binding(job.batch_id), self.key), JOB_FILE)
        except (DicomframeError, OSError) as exc:
            log.error("batch %s: cannot be kept in the vault (%s)", job.batch_id, type(exc).__name__)
            raise _Problem(
                503, "vault_unavailable",
                "the gateway cannot write to its vault, so it takes no batch now; try again later "
                "(its operator finds why in the log)",
            ) from None  # fmt: skip

    def _forget(self, batch_id: str) -> None:
        """The job ended: its vault file goes (a failure to remove it only means a resume later)."""
        store = self._store()
        try:
            store.fs.rm_file(store.path(batch_id, JOB_FILE))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - the batch is done; at worst it is queued again later
            log.warning("batch %s: its job file could not be removed from the vault (%s)", batch_id, type(exc).__name__)

    def resume(self) -> int:
        """Queue again the batches the vault keeps (accepted before a stop, never ended); how many."""
        from ..vault import _open_sealed, _valid_batch_id

        store = self._store()
        try:
            found = store.fs.glob(f"{store.root.rstrip('/')}/*/{JOB_FILE}")
        except FileNotFoundError:
            return 0
        kept: list[tuple[str, str, str, str]] = []
        for path in found:
            batch_id = str(path).rstrip("/").rsplit("/", 2)[-2]
            if not _valid_batch_id(batch_id):
                continue
            try:
                plain = _open_sealed(store.fs.cat_file(path), _job_binding(batch_id), self.key, store.uri(batch_id, JOB_FILE))
                job = json.loads(plain)
                kept.append((job["submitted_at"], batch_id, job["src"], job["priority"]))
            except (DicomframeError, OSError, ValueError, KeyError, TypeError) as exc:
                log.error(
                    "batch %s: its job file in the vault cannot be read (%s); left there, not resumed",
                    batch_id, type(exc).__name__,
                )  # fmt: skip
        for submitted_at, batch_id, src, priority in sorted(kept):
            try:
                checked = self.roots.check(src)
            except _Problem as exc:
                log.error("batch %s: not resumed, its source is refused now (%s)", batch_id, exc.error)
                self._forget(batch_id)
                continue
            log.warning("batch %s: accepted before the gateway stopped and not ended; queued again", batch_id)
            self.submit(checked, batch_id, priority, submitted_at=submitted_at, keep=False)
        return len(kept)

    def submit(
        self, src: str, batch_id: str | None, priority: str, *, submitted_at: str | None = None, keep: bool = True
    ) -> dict[str, Any]:
        """Queue a batch; its view as it was accepted (``queued``), before the worker takes it.

        ``keep``: seal it into the vault first (:meth:`resume` finds it after a restart);
        ``submitted_at``: the time it was first accepted (a resumed batch)."""
        from ..pipeline import _new_batch_id

        if batch_id is None:
            batch_id = _new_batch_id()
        with self.lock:
            known = self.jobs.get(batch_id)
            if known is not None and known.status in _ACTIVE:
                raise _Problem(
                    409,
                    "batch_exists",
                    f"batch {batch_id} is {known.status}: poll its status_url, or give another batch_id",
                    status_url=_status_url(batch_id),
                )
            self.jobs.pop(batch_id, None)  # a batch sent again goes to the end (the newest)
            # held as queued from now: a second request for this id gets 409 while it is kept
            job = self.jobs[batch_id] = _Job(batch_id=batch_id, src=src, priority=priority)
            if submitted_at is not None:
                job.submitted_at = submitted_at
            accepted = job.view()
            finished = [b for b, j in self.jobs.items() if j.status not in _ACTIVE]
            for old in finished[: max(0, len(self.jobs) - _KEEP_JOBS)]:
                del self.jobs[old]  # the oldest finished; a committed one is still told from its manifest
        if keep:
            try:
                self._keep(job)
            except BaseException:
                with self.lock:
                    if self.jobs.get(batch_id) is job:
                        del self.jobs[batch_id]  # never accepted
                raise
        with self.lock:
            if self.worker is None or not self.worker.is_alive():
                self.worker = threading.Thread(target=self._work, name="dicomframe-batches", daemon=True)
                self.worker.start()
        log.info("batch %s queued (priority %s)", job.batch_id, priority)
        self.queue.put(job)
        return accepted

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            try:
                self._run(job)
            except BaseException as exc:  # noqa: BLE001 - the worker must outlive any batch
                _log_failure(f"batch {job.batch_id}", exc)
                with self.lock:
                    job.status = "error"
                    job.error = {"kind": "internal", "detail": _INTERNAL}
                    job.finished_at = _now()
            self._forget(job.batch_id)  # ended, whatever the outcome: not resumed

    def _run(self, job: _Job) -> None:
        from ..pipeline import deidentify

        s = self.settings
        with self.lock:
            job.status, job.started_at = "running", _now()
        log.info("batch %s running", job.batch_id)
        try:
            result = deidentify(
                job.src,
                self.dst,
                key=self.key,
                vault=self.vault,
                profile=s.profile,
                org=s.org,
                batch_id=job.batch_id,
                priority=job.priority,
                jobs=s.jobs,
                progress=False,
                audit_log=s.audit_log,
                pixel_clean=s.pixel_clean,
                storage_options=s.storage_options,
            )
        except DicomframeError as exc:
            kind, detail = _refusal(exc)
            log.warning("batch %s refused: %s (%s)", job.batch_id, kind, _where(exc))
            with self.lock:
                job.status, job.finished_at = "error", _now()
                job.error = {"kind": kind, "detail": detail}
            return
        with self.lock:
            job.written, job.failed, job.duplicates = result.written, len(result.failed), result.duplicates
            job.studies, job.manifest_uri = result.studies, result.manifest_uri
            if result.findings is not None and result.findings.height:
                job.status = "gate_failed"
                job.gate_rules = sorted(set(result.findings["rule"].to_list()))
            else:
                job.status = "ok" if not result.failed else "partial"
            job.finished_at = _now()
        log.info(
            "batch %s %s: %d written, %d failed, %d duplicates, %.1f s",
            job.batch_id, job.status, job.written, job.failed, job.duplicates, result.elapsed_s,
        )  # fmt: skip

    def status(self, batch_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(batch_id)
            if job is not None:
                return job.view()
        return self._committed(batch_id)

    def _committed(self, batch_id: str) -> dict[str, Any] | None:
        """A batch committed under DST before this gateway started (or by the CLI)."""
        from ..pipeline import _fs, _join

        fs, root = _fs(self.dst, self.settings.storage_options)
        try:
            manifest = json.loads(fs.cat_file(_join(root, batch_id, "manifest.json")))
        except FileNotFoundError:
            return None
        return {
            "batch_id": batch_id,
            "status": "ok" if not manifest.get("failed") else "partial",
            "priority": manifest.get("priority"),
            "submitted_at": manifest.get("submitted_at"),
            "written": manifest.get("total_images", 0),
            "failed": len(manifest.get("failed") or []),
            "studies": manifest.get("total_studies", 0),
            "manifest_uri": _join(self.dst, batch_id, "manifest.json"),
        }

    def stop(self) -> None:
        with self.lock:
            unfinished = [job.batch_id for job in self.jobs.values() if job.status in _ACTIVE]
            spool, self.spool = self.spool, None
        self.queue.put(None)
        if spool is not None:
            _remove(spool)
        if unfinished:
            log.warning(
                "stopping with %d batch(es) queued or running (%s): the vault keeps them, and the gateway "
                "queues them again when it starts (a batch resumes where it stopped)",
                len(unfinished), ", ".join(unfinished),
            )  # fmt: skip


def _job_binding(batch_id: str) -> str:
    """What a job file is sealed to: its batch, and being a job (not a mapping or a plan)."""
    return f"{batch_id}/gateway-job"


_INTERNAL = (
    "internal error in the gateway; its operator finds the error's type and place in the log "
    "(never its message, which may quote patient data). Report it as a bug with that log line"
)


#: the name of a gateway's spool of uploads starts with this, then its process id and '-'
_SPOOL = "dicomframe-gateway-"


def _sweep(temp_dir: str | None) -> None:
    """Remove the spools gateways that are no longer running left behind (killed mid-request):
    they may hold uploads, which are PHI. A spool of a running process is left alone."""
    base = temp_dir or tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    removed = 0
    for name in names:
        pid_text = name[len(_SPOOL) :].partition("-")[0]
        if not name.startswith(_SPOOL) or not pid_text.isdigit():
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != os.getuid() or not stat.S_ISDIR(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        pid = int(pid_text)
        if pid != os.getpid():  # this process's own name: left by an earlier life of its process id
            try:
                os.kill(pid, 0)
                continue  # running (or another user's process): not ours to remove
            except ProcessLookupError:
                pass
            except OSError:
                continue
        _remove(path)
        removed += 1
    if removed:
        log.warning("removed %d upload folder(s) a gateway that stopped uncleanly left in %s", removed, base)


def _status_url(batch_id: str) -> str:
    return f"/v1/batches/{batch_id}"


def _remove(work: str) -> None:
    """Remove an upload's folder (it holds PHI); a failure is logged, never silent."""

    def failed(_function: Any, _path: str, info: Any) -> None:
        kind = type(info).__name__ if isinstance(info, BaseException) else info[0].__name__
        log.error("could not remove the private temporary folder of an upload (%s): remove %s", kind, work)

    if sys.version_info >= (3, 12):
        shutil.rmtree(work, onexc=failed)
    else:  # pragma: no cover - 3.11
        shutil.rmtree(work, onerror=failed)


def _chunks(file: IO[bytes]) -> Iterator[bytes]:
    try:
        while data := file.read(1 << 20):
            yield data
    finally:
        file.close()


async def _receive(request: Request, path: str | None, limit: int) -> bytes | int:
    """Read the body (at most ``limit`` bytes, else 413) into ``path``, or into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit) if declared.isdigit() else _Problem(400, "bad_request", "invalid Content-Length")
    size = 0
    try:
        if path is None:
            body = bytearray()
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                body += chunk
            return bytes(body)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                fh.write(chunk)
        return size
    except ClientDisconnect:
        raise _Problem(400, "client_disconnected", "the body was cut off: send it again") from None


def _too_large(limit: int) -> _Problem:
    return _Problem(
        413,
        "too_large",
        f"the body is larger than this gateway takes ({limit:,} bytes"
        + (", its --max-body): send a smaller file, or ask its operator" if limit != _MAX_JSON else " of JSON)"),
    )


#: the Host names of this machine's loopback, which every gateway answers to
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_of(scope: MutableMapping[str, Any]) -> str:
    """The host a request names (its Host header, without the port), lower case."""
    for name, value in scope.get("headers") or ():
        if name == b"host":
            text: str = bytes(value).decode("latin-1").strip().lower()
            if text.startswith("["):  # [::1]:8080
                return text[1 : text.find("]")] if "]" in text else text
            return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return ""


class _Guard:
    """Outermost app layer: one log line per request (route, not path), and a generic 500
    for any unexpected error, logged by type and place (its message may quote a value)."""

    def __init__(self, app: Callable[..., Awaitable[None]], hosts: frozenset[str] = _LOOPBACK_HOSTS) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            if scope.get("path") != "/healthz" and _host_of(scope) not in self.hosts:
                # a name this gateway was not told it has: a page renamed to reach it (DNS rebinding)
                await _Problem(
                    400, "bad_host",
                    "this gateway answers to its loopback names and to the names given with --allow-host only",
                ).response()(scope, receive, sending)  # fmt: skip
                return
            await self.app(scope, receive, sending)
        except Exception as exc:  # noqa: BLE001 - any error answers 500 without its text
            _log_failure("internal error", exc)
            if not status:
                await JSONResponse({"error": "internal", "detail": _INTERNAL}, status_code=500)(scope, receive, sending)
        finally:
            # the route's template, never the path: a client may put anything in a path
            route = getattr(scope.get("route"), "path", None) or "(no such route)"
            log.info(
                "%s %s %s %.3f s", scope.get("method"), route, status[0] if status else "-",
                time.perf_counter() - started,
            )  # fmt: skip


def create_app(settings: GatewaySettings) -> FastAPI:
    """Build the gateway's FastAPI app; the settings are checked now.

    Parameters
    ----------
    settings
        Destination, key, vault, profile, allowed sources, token and limits.

    Returns
    -------
    FastAPI
        Serve it with any ASGI server (``dicomframe serve`` runs uvicorn), on
        loopback unless a token is set and TLS is in front.

    Raises
    ------
    UserInputError
        A setting cannot work (a missing key file, a bad profile, an allowed source
        that is not a folder, DST inside an allowed source, ...).
    WrongKey
        The vault's batches were sealed with another project key.

    Examples
    --------
    >>> import uvicorn                                                    # doctest: +SKIP
    >>> app = create_app(GatewaySettings("out", key="project.key", vault="vault"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)                     # doctest: +SKIP
    """
    from .._quiet import silence_pydicom_log

    silence_pydicom_log()  # its warnings quote values of the files uploaded
    gw = _Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(gw.resume)  # the batches a stop left unfinished
        yield
        gw.stop()

    app = FastAPI(
        title="dicomframe gateway",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # a redirect would answer before the token is checked
    )
    hosts = _LOOPBACK_HOSTS | {h.strip().strip("[]").lower() for h in settings.allowed_hosts if h.strip()}
    app.add_middleware(_Guard, hosts=frozenset(hosts))

    @app.exception_handler(_Problem)
    async def problem(_request: Request, exc: _Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        kind = phrase.lower().replace(" ", "_").replace("-", "_")
        detail = {
            404: "no such endpoint: GET /healthz, POST /v1/anonymize, POST /v1/batches, GET /v1/batches/{batch_id}",
            405: "this endpoint does not take this method (see the gateway's endpoints in the README)",
        }.get(exc.status_code, phrase)
        return _Problem(exc.status_code, kind, detail).response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, _exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer quotes the input: not here
        return _Problem(422, "bad_request", "the request is malformed (see the endpoint in the README)").response()

    def authorize(request: Request) -> None:
        if gw.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"), gw.token):
            raise _Problem(
                401,
                "unauthorized",
                "send the gateway's token: Authorization: Bearer TOKEN (the text of its --token-file)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @v1.post("/anonymize")
    async def anonymize(request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/dicom":
            raise _Problem(
                415,
                "unsupported_media_type",
                "send one DICOM Part 10 file as the body, with Content-Type: application/dicom "
                "(curl: --data-binary @file.dcm -H 'Content-Type: application/dicom')",
            )
        if not gw.admit():  # before the body is read: a burst neither fills the disk nor holds every thread
            log.warning("anonymize: busy (%d running or waiting), refused with 503", gw.admitted)
            raise _Problem(
                503, "busy",
                f"the gateway is de-identifying {settings.concurrency} file(s) and as many as it lets wait "
                f"({settings.max_waiting}) are waiting: send this file again after Retry-After seconds",
                headers={"Retry-After": str(RETRY_AFTER)},
            )  # fmt: skip
        try:
            work = await run_in_threadpool(gw.workdir)
            try:
                size = await _receive(request, os.path.join(work, "in", "upload.dcm"), settings.max_body)
                if not size:
                    raise _Problem(422, "empty", "the body is empty: send one DICOM Part 10 file")
                try:
                    done = await run_in_threadpool(gw.anonymize, work)
                except DicomframeError as exc:  # the gateway's setup or storage, not the upload
                    kind, detail = _refusal(exc)
                    log.error("anonymize failed: %s (%s)", kind, _where(exc))
                    raise _Problem(500, kind, detail) from None
            finally:
                await run_in_threadpool(_remove, work)
        finally:
            gw.leave()
        return StreamingResponse(
            _chunks(done.file),
            media_type="application/dicom",
            headers={
                "Content-Length": str(done.size),
                "X-Dicomframe-Batch-Id": done.batch_id,
                "X-Dicomframe-Study-Id": done.study_id,
                "Cache-Control": "no-store",
            },
        )

    @v1.post("/batches", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        from ..pipeline import PRIORITIES

        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            # a form or text/plain body is what a web page may send anywhere without asking
            raise _Problem(
                415, "unsupported_media_type",
                "send the batch as JSON, with Content-Type: application/json",
            )  # fmt: skip
        raw = await _receive(request, None, _MAX_JSON)
        assert isinstance(raw, bytes)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("src"), str) or not body["src"]:
            raise _Problem(422, "bad_request", 'send a JSON object: {"src": "...", "batch_id"?: "...", "priority"?: "..."}')
        if set(body) - _BATCH_FIELDS:
            raise _Problem(422, "bad_request", "unknown fields: a batch takes src, batch_id and priority only")
        batch_id = None if body.get("batch_id") is None else _check_batch_id(body["batch_id"])
        priority = body.get("priority") or "ROUTINE"
        if not isinstance(priority, str) or priority.upper() not in PRIORITIES:
            raise _Problem(422, "bad_priority", f"priority is one of {', '.join(PRIORITIES)}")
        src = await run_in_threadpool(gw.roots.check, body["src"])
        known = None if batch_id is None else await run_in_threadpool(gw.status, batch_id)
        if known is not None and known.get("manifest_uri"):
            # committed: a batch once handed out is never rewritten (another src would change it)
            raise _Problem(
                409, "batch_committed",
                f"batch {batch_id} is committed: give another batch_id (its status_url tells what it holds)",
                status_url=_status_url(str(batch_id)),
            )  # fmt: skip
        job = await run_in_threadpool(gw.submit, src, batch_id, priority.upper())
        url = _status_url(job["batch_id"])
        return JSONResponse(
            {"batch_id": job["batch_id"], "status": job["status"], "status_url": url},
            status_code=202,
            headers={"Location": url},
        )

    @v1.get("/batches/{batch_id}")
    async def batch_status(batch_id: str) -> dict[str, Any]:
        found = await run_in_threadpool(gw.status, _check_batch_id(batch_id))
        if found is None:
            raise _Problem(404, "unknown_batch", "no batch of this id here: check the batch_id POST /v1/batches gave")
        return found

    app.include_router(v1)
    app.state.gateway = gw
    return app
