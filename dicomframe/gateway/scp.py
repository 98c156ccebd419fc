"""A DICOM Storage SCP that de-identifies what sites push to it, one batch per association.

Sites send studies with C-STORE (any storage SOP class, uncompressed or compressed
transfer syntaxes; the pixel data is never decoded) and check the link with C-ECHO.
Each instance received is written as a Part 10 file — preamble and file meta from
the association's presentation context, then the data set exactly as it came, never
re-encoded — into the association's own spool folder::

    SPOOL/receiving/<random>.dcm               an instance still coming (mode 0700)
    SPOOL/incoming/<batch_id>/<random>.dcm     while the association lasts (mode 0700)
    SPOOL/quarantine/<batch_id>/<random>.dcm   inputs that could not be de-identified

pynetdicom writes each instance to ``SPOOL/receiving`` as its fragments come (its chunked
mode, pointed at the spool: an instance is never held in memory, nor written to the
system temp folder); it is flushed to disk (``fsync``) and renamed into the
association's folder before the SCP answers Success (0x0000): what the sender was told
is stored is on disk. An instance cut off is removed when its association ends. When
the spool write fails the answer is 0xA700 (out of resources) and the sender keeps the
instance. Spool file names are random, never taken from UIDs or
patient data.

When the association is released — or aborted: what was received completely is
kept — its folder is de-identified as one batch by
:func:`dicomframe.pipeline.deidentify` on a worker thread (associations go on being
accepted meanwhile), under a batch id made when the association began. Once the
batch is committed the spool folder is removed (it holds PHI); inputs that failed
stay in ``SPOOL/quarantine/<batch_id>/`` (all of them when the batch was not
committed, e.g. stopped by the leak gate), and the log says how many and the batch
id, nothing else. A receiver that was killed finds its unfinished spool folders
when it starts again and de-identifies them under their batch ids.

Log lines never hold a value read from a file: batch ids, counts and the AE titles
of the peers. pynetdicom's own logger is set to WARNING when nothing set it (at
INFO and DEBUG it logs the UIDs of every request).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from ..errors import MissingExtraError, UserInputError

if TYPE_CHECKING:
    import polars as pl

    from ..keys import ProjectKey
    from ..pipeline import DeidentifyResult

__all__ = [
    "DEFAULT_AE_TITLE",
    "DEFAULT_MAX_ASSOCIATIONS",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "FinishedBatch",
    "Receiver",
    "default_spool",
]

#: the called AE title a sender must address (``--ae-title``)
DEFAULT_AE_TITLE = "DICOMFRAME"
#: the registered DICOM port for unsecured associations is 104; 11112 needs no privilege
DEFAULT_PORT = 11112

#: associations open at once (``--max-associations``; pynetdicom's own default is 10)
DEFAULT_MAX_ASSOCIATIONS = 32
#: seconds a connection may take to send its association request, and an association
#: its other ACSE messages (``--request-timeout``; pynetdicom's own default is 30)
DEFAULT_REQUEST_TIMEOUT = 10.0

#: C-STORE status: refused, out of resources (the spool could not be written)
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SUCCESS = 0x0000

_log = logging.getLogger(__name__)

#: the names _new_batch_id gives: a spool folder left by an earlier run keeps its batch id
_BATCH_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
_TMP_PREFIX = ".tmp-"


class FinishedBatch(NamedTuple):
    """What became of one association's instances (counts and places only, no PHI)."""

    #: the batch id (``DST/<batch_id>/``), made when the association began
    batch_id: str
    #: de-identified files written
    written: int
    #: inputs that could not be de-identified (kept in quarantine)
    failed: int
    #: ``DST/<batch_id>/manifest.json`` when the batch was committed, else None
    manifest_uri: str | None
    #: inputs kept in ``SPOOL/quarantine/<batch_id>/``
    quarantined: int = 0
    #: the type of the error that stopped the batch (its message may quote a value), or None
    error: str | None = None
    #: instances received more than once (the same SOP Instance UID): written once; a later
    #: copy of other content is kept in quarantine (counted in ``quarantined``)
    duplicates: int = 0

    @property
    def committed(self) -> bool:
        """True when the batch's manifest.json was written."""
        return self.manifest_uri is not None


def default_spool() -> Path:
    """The spool folder used when none is given: ``dicomframe-spool-<uid>`` in the system temp dir."""
    return Path(tempfile.gettempdir()) / f"dicomframe-spool-{os.getuid()}"


def _pynetdicom() -> Any:
    try:
        import pynetdicom
    except ImportError:
        raise MissingExtraError("receiving studies over DICOM", "net", "pynetdicom") from None
    return pynetdicom


def _private_dir(path: Path, what: str) -> None:
    """Make ``path`` a folder only its owner may enter, or refuse one that others may."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise UserInputError(
            f"cannot create the {what} {path} ({exc.strerror or type(exc).__name__}): give a folder you may write"
        ) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UserInputError(f"the {what} {path} is not a folder (a link or a file): give another --spool")
    if info.st_uid != os.getuid():
        raise UserInputError(f"the {what} {path} belongs to another user: give a folder of your own with --spool")
    if info.st_mode & 0o077:
        raise UserInputError(
            f"the {what} {path} may be read by others and will hold patient data: run `chmod 700 {path}` "
            "or give another --spool"
        )


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)  # whatever the umask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _part10_pieces(event: Any) -> list[bytes | memoryview]:
    """A C-STORE's instance as a Part 10 file, in pieces: preamble and file meta, then the data
    set as it came, a view of pynetdicom's buffer (``event.encoded_dataset`` joins a copy: a
    large multi-frame image would be held twice)."""
    try:
        from pynetdicom.dsutils import encode_file_meta

        body = event.request.DataSet.getbuffer()
        head = b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta)
    except (AttributeError, ImportError):  # another pynetdicom: its own join
        return [event.encoded_dataset(include_meta=True)]
    return [head, body]


def _write_durably(folder: Path, pieces: Sequence[bytes | memoryview], order: int = 0) -> Path:
    """Write ``pieces``, one after the other, to a new name in ``folder``: temporary name,
    fsync, rename, fsync of the folder.

    The name is the arrival number ``order`` (names sort as the instances came: of two
    copies of one instance, the first to arrive is the one written) and a random part."""
    name = f"{order:09d}-{secrets.token_hex(8)}"
    tmp = folder / f"{_TMP_PREFIX}{name}"
    final = folder / f"{name}.dcm"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, final)
    _fsync_dir(folder)
    return final


def _move_durably(path: Path, folder: Path, order: int = 0) -> Path:
    """:func:`_write_durably` for an instance pynetdicom has written to ``path`` (in the
    spool) as it came: flushed to disk and renamed into ``folder``, not copied."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    final = folder / f"{order:09d}-{secrets.token_hex(8)}.dcm"
    os.rename(path, final)  # pynetdicom then finds nothing to remove
    _fsync_dir(folder)
    return final


def _remove_received_in_part(folder: Path) -> None:
    """Remove what ``folder`` (``SPOOL/receiving``) holds: instances received in part."""
    with contextlib.suppress(OSError):
        for leftover in folder.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()


#: running receivers, by the id of their pynetdicom application entity
_RECEIVERS: dict[int, Receiver] = {}
_RECEIVE_LOCK = threading.Lock()


def _receive_into_spools() -> None:
    """Have pynetdicom write each instance to disk as it comes (its chunked mode: a large
    multi-frame image is never held in memory), in the spool of the receiver that accepted
    the association (``SPOOL/receiving``, mode 0700), never the system temp folder.

    pynetdicom decodes an association's messages on its DUL thread, which knows its
    association and so its application entity; an association of a pynetdicom server
    that is not a :class:`Receiver` gets pynetdicom's own temporary file."""
    from pynetdicom import _config, dimse_messages

    with _RECEIVE_LOCK:
        original = getattr(dimse_messages, "NamedTemporaryFile")  # noqa: B009 - not in its __all__
        if getattr(original, "dicomframe", False):
            return

        def spooled(*args: Any, **kwargs: Any) -> Any:
            assoc = getattr(threading.current_thread(), "assoc", None)
            receiver = _RECEIVERS.get(id(getattr(assoc, "ae", None)))
            if receiver is None:
                return original(*args, **kwargs)
            made = original(*args, **{**kwargs, "dir": receiver.receiving})
            with receiver._lock:
                receiver._receiving.setdefault(assoc, {})[made.name] = made
            return made

        spooled.dicomframe = True  # type: ignore[attr-defined]
        setattr(dimse_messages, "NamedTemporaryFile", spooled)  # noqa: B010
        _config.STORE_RECV_CHUNKED_DATASET = True


class _TlsRefusals(logging.Filter):
    """On pynetdicom's network logger: a TLS handshake that failed becomes one warning of ours.

    pynetdicom logs it as an error with a traceback, once the association's thread first
    reads (see :mod:`dicomframe.gateway.tls`); what the operator needs is why, and what to do.
    """

    def __init__(self, mutual: bool) -> None:
        super().__init__()
        self.hint = (
            ": the sender needs a certificate signed by --tls-ca, and must trust the receiver's certificate"
            if mutual
            else ": the sender must speak TLS and trust the receiver's certificate"
        )

    def filter(self, record: logging.LogRecord) -> bool:
        import ssl

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or type(exc).__name__
            hint = (
                ": the sender did not speak TLS (plain DICOM to a TLS port?)"
                if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL")
                else self.hint
            )
            _log.warning("a connection was refused in the TLS handshake (%s)%s", reason, hint)
            return False
        return True


#: the pynetdicom logger that reports a failed read, TLS handshakes included
_NETWORK_LOGGER = "pynetdicom.dul"


class _Association:
    """The spool folder of one association (made at its first C-STORE)."""

    def __init__(self, batch_id: str, folder: Path) -> None:
        self.batch_id = batch_id
        self.folder = folder
        self.stored = 0


class Receiver:
    """A Storage SCP that de-identifies each association's instances as one batch.

    Parameters
    ----------
    dst
        Output root, as :func:`~dicomframe.pipeline.deidentify` takes it: each association's
        batch goes to ``DST/<batch_id>/``.
    key
        The project key, or the path of its key file (``dicomframe keygen``).
    vault
        Where the mappings go, apart from ``dst``.
    port
        TCP port to listen on; 0 picks a free one (see :attr:`port` once started).
    host
        Address to listen on: ``127.0.0.1`` (default, this machine only) or ``0.0.0.0``
        (every interface: the sites' senders must be able to reach it).
    ae_title
        The called AE title senders must address; associations to another are rejected.
    allow_calling
        When given, only these calling AE titles may associate.
    profile, org, priority, pixel_clean, audit_log, jobs, storage_options
        As :func:`~dicomframe.pipeline.deidentify` takes them, for every batch (the storage
        options serve ``dst`` and ``vault`` URLs).
    spool
        Folder for the instances received and not yet de-identified (mode 0700; created when
        missing; refused when others may read it). Default: :func:`default_spool`.
    on_batch
        Called on the worker thread with each :class:`FinishedBatch`.
    max_associations
        Associations open at once; one more is rejected (the sender may retry).
    request_timeout
        Seconds a connection may take to send its association request (and an
        association its release): a connection that stays silent is closed then, so
        that silent connections cannot hold every association slot for long.
    tls_cert, tls_key, tls_ca
        DICOM over TLS (see :mod:`dicomframe.gateway.tls`): the receiver's certificate and
        private key (PEM); with ``tls_ca``, senders must present a certificate that CA
        signed. Without them, plain TCP (keep it on a network you trust).

    Examples
    --------
    >>> receiver = Receiver("out", key="project.key", vault="vault", port=0)   # doctest: +SKIP
    >>> receiver.start()                                                      # doctest: +SKIP
    >>> receiver.port                      # storescu -aec DICOMFRAME 127.0.0.1 PORT study/  # doctest: +SKIP
    40213
    >>> receiver.stop()                    # finishes the batches received        # doctest: +SKIP
    >>> receiver.batches                                                          # doctest: +SKIP
    [FinishedBatch(batch_id='20260101-120000-1a2b3c4d', written=9, failed=0, manifest_uri='out/…/manifest.json', …)]
    """

    def __init__(
        self,
        dst: str | os.PathLike[str],
        *,
        key: ProjectKey | str | os.PathLike[str],
        vault: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        ae_title: str = DEFAULT_AE_TITLE,
        allow_calling: Sequence[str] | None = None,
        profile: str = "default",
        org: str = "DICOMFRAME",
        spool: str | os.PathLike[str] | None = None,
        audit_log: str | os.PathLike[str] | None = None,
        pixel_clean: str = "auto",
        jobs: int | None = None,
        priority: str = "ROUTINE",
        storage_options: dict[str, Any] | None = None,
        on_batch: Callable[[FinishedBatch], None] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        from .tls import TlsFiles

        if max_associations < 1:
            raise UserInputError("--max-associations must be at least 1")
        if not request_timeout > 0:
            raise UserInputError("--request-timeout must be more than 0 seconds")
        self.max_associations = max_associations
        self.request_timeout = float(request_timeout)

        self.tls = TlsFiles.of(tls_cert, tls_key, tls_ca)
        self.dst = os.fspath(dst)
        self.vault = os.fspath(vault)
        self._key_arg = key
        self.port = port
        self.host = host
        self.ae_title = _ae_title(ae_title, "--ae-title")
        self.allow_calling = [_ae_title(t, "--allow-calling") for t in allow_calling or []]
        self.profile = profile
        self.org = org
        self.spool = Path(spool) if spool is not None else default_spool()
        self.audit_log = audit_log
        self.pixel_clean = pixel_clean
        self.jobs = jobs
        self.priority = priority
        self.storage_options = storage_options
        self.on_batch = on_batch
        #: every batch finished since :meth:`start`, in the order finished
        self.batches: list[FinishedBatch] = []
        self._key: ProjectKey | None = None
        self._tls_context: Any = None
        self._tls_filter: _TlsRefusals | None = None
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self._queue: queue.Queue[tuple[str, Path] | None] = queue.Queue()
        self._lock = threading.Condition()
        self._open: dict[Any, _Association] = {}
        self._pending = 0  # associations with a spool folder, and batches queued or running
        self._lockfile: int | None = None
        self._ae: Any = None
        self._receiving: dict[Any, dict[str, Any]] = {}  # files pynetdicom writes, by association and name

    @property
    def incoming(self) -> Path:
        """``SPOOL/incoming``: one folder per association not yet de-identified."""
        return self.spool / "incoming"

    @property
    def quarantine(self) -> Path:
        """``SPOOL/quarantine``: one folder per batch whose inputs could not all be de-identified."""
        return self.spool / "quarantine"

    @property
    def receiving(self) -> Path:
        """``SPOOL/receiving``: instances being received, written as they come (not yet answered)."""
        return self.spool / "receiving"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check the settings, then listen; returns once the port is open.

        Raises :class:`~dicomframe.errors.UserInputError` (a bad key, vault, profile,
        spool or audit log, a port in use) before anything is accepted, and
        :class:`~dicomframe.errors.MissingExtraError` without pynetdicom.
        """
        if self._server is not None:
            raise UserInputError("this receiver is already started")
        from .._quiet import silence_pydicom_log

        silence_pydicom_log()  # its warnings quote values of the files received
        pynetdicom = _pynetdicom()
        self._check_settings()
        self._take_spool()
        try:
            leftovers = self._leftovers()  # listed before the first association makes its folder
            ae = self._application_entity(pynetdicom)
            self._ae = ae
            _RECEIVERS[id(ae)] = self
            _receive_into_spools()
            handlers = [
                (pynetdicom.evt.EVT_C_STORE, self._on_store),
                (pynetdicom.evt.EVT_RELEASED, self._on_end),
                (pynetdicom.evt.EVT_ABORTED, self._on_end),
                (pynetdicom.evt.EVT_CONN_CLOSE, self._on_end),
                (pynetdicom.evt.EVT_REJECTED, self._on_rejected),
            ]
            try:
                self._server = ae.start_server(
                    (self.host, self.port), block=False, evt_handlers=handlers, ssl_context=self._tls_context
                )
            except OSError as exc:
                raise UserInputError(
                    f"cannot listen on {self.host}:{self.port} ({exc.strerror or type(exc).__name__}): "
                    "another program may use the port; give another --port"
                ) from None
            self.port = int(self._server.server_address[1])
            if self.tls is not None:
                self._tls_filter = _TlsRefusals(self.tls.mutual)
                logging.getLogger(_NETWORK_LOGGER).addFilter(self._tls_filter)
            for batch_id, folder in leftovers:
                _log.warning("batch %s: left in the spool by an earlier run, de-identifying it now", batch_id)
                with self._lock:
                    self._pending += 1
                self._queue.put((batch_id, folder))
            self._worker = threading.Thread(target=self._work, name="dicomframe-receiver-batches", daemon=True)
            self._worker.start()
        except BaseException:
            self._release_spool()
            raise
        _log.info("listening on %s:%d as %s%s", self.host, self.port, self.ae_title, self.security)

    def stop(self) -> None:
        """Stop listening, end the associations in progress, and finish every pending batch.

        An association still open is aborted: the instances it had stored are
        de-identified as its batch (the sender was not told the others are stored).
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        for assoc in list(getattr(server, "active_associations", [])):
            with contextlib.suppress(Exception):  # it may be ending by itself
                assoc.abort()
        for assoc in list(getattr(server, "active_associations", [])):
            # one still negotiating has stored nothing (a connection that never sent a request,
            # or failed its TLS handshake, waits out pynetdicom's ACSE timeout): not waited for
            assoc.join(timeout=30 if assoc.is_established else 0.5)
        with self._lock:
            leftover = list(self._open)
        for assoc in leftover:  # an association whose end event did not come
            self._close(assoc)
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._release_spool()
        if self._tls_filter is not None:
            logging.getLogger(_NETWORK_LOGGER).removeFilter(self._tls_filter)
            self._tls_filter = None
        _log.info("stopped")

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no association holds stored instances and no batch is pending.

        Returns False when ``timeout`` seconds passed first.
        """
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def security(self) -> str:
        """How senders connect, for the start-up line: TLS, and whether they need a certificate."""
        if self.tls is None:
            return " (plain TCP, no TLS)"
        return " (TLS, senders need a certificate the --tls-ca signed)" if self.tls.mutual else " (TLS)"

    # -- checks before listening -------------------------------------------------------------

    def _check_settings(self) -> None:
        from ..keys import ProjectKey, load_key
        from ..pipeline import PRIORITIES, _same_place
        from ..profiles import Profile
        from ..vault import check_key

        self._key = self._key_arg if isinstance(self._key_arg, ProjectKey) else load_key(self._key_arg)
        if self.tls is not None:
            from .tls import server_context

            # a bad file is told now, before listening; handshakes in the associations' threads
            self._tls_context = server_context(self.tls, handshake_on_accept=False)
        if self.pixel_clean not in ("auto", "rules", "off"):
            raise UserInputError(f"--pixel-clean must be auto, rules or off (got {self.pixel_clean!r})")
        Profile.load(self.profile)  # a bad profile is told now, not at the first batch
        if _same_place(self.dst, self.vault):
            raise UserInputError(
                "the vault must not be inside the output (DST): the mapping holds original identifiers; "
                "give --vault a location apart from DST"
            )
        spool = os.fspath(self.spool)
        if _same_place(self.dst, spool) or _same_place(spool, self.dst):
            raise UserInputError(
                "the spool must not be inside the output (DST), nor DST inside the spool: the spool holds "
                "the instances as received; give --spool a folder apart from DST"
            )
        if self.priority.upper() not in PRIORITIES:
            raise UserInputError(f"--priority must be one of {', '.join(PRIORITIES)} (got {self.priority!r})")
        check_key(self.vault, self._key, storage_options=self.storage_options)
        if self.audit_log is not None:
            from ..auditlog import AuditLog

            AuditLog(self.audit_log).check_writable()

    def _take_spool(self) -> None:
        """Create the spool's folders and lock it: one receiver per spool."""
        import fcntl

        _private_dir(self.spool, "spool folder")
        _private_dir(self.incoming, "spool folder")
        _private_dir(self.quarantine, "quarantine folder")
        _private_dir(self.receiving, "spool folder")
        fd = os.open(self.spool / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserInputError(
                f"another receiver uses the spool {self.spool}: stop it, or give this one another --spool"
            ) from None
        self._lockfile = fd
        _remove_received_in_part(self.receiving)  # a killed run's: never answered Success, the sender has them

    def _release_spool(self) -> None:
        _RECEIVERS.pop(id(self._ae), None)
        if self._lockfile is not None:
            _remove_received_in_part(self.receiving)  # an association aborted while sending left these
            os.close(self._lockfile)  # closing releases the lock
            self._lockfile = None

    def _leftovers(self) -> list[tuple[str, Path]]:
        """The spool folders an earlier run left (killed before it de-identified them), with their batch ids."""
        from ..pipeline import _new_batch_id

        found = []
        for folder in sorted(p for p in self.incoming.iterdir() if p.is_dir() and not p.is_symlink()):
            for tmp in folder.glob(f"{_TMP_PREFIX}*"):  # never answered Success: the sender has it
                tmp.unlink()
            found.append((folder.name if _BATCH_ID.match(folder.name) else _new_batch_id(), folder))
        return found

    def _application_entity(self, pynetdicom: Any) -> Any:
        from pynetdicom import (
            ALL_TRANSFER_SYNTAXES,
            AllStoragePresentationContexts,
            VerificationPresentationContexts,
        )

        pnd_log = logging.getLogger("pynetdicom")
        if pnd_log.level == logging.NOTSET:
            pnd_log.setLevel(logging.WARNING)  # at INFO and DEBUG it logs every request's UIDs
        ae = pynetdicom.AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.acse_timeout = self.request_timeout  # also the ARTIM timer: a silent connection is closed
        ae.require_called_aet = True
        if self.allow_calling:
            ae.require_calling_aet = list(self.allow_calling)
        for context in VerificationPresentationContexts:  # C-ECHO
            ae.add_supported_context(context.abstract_syntax)
        syntaxes = _accepted_syntaxes(ALL_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        return ae

    # -- association thread ------------------------------------------------------------------

    def _on_store(self, event: Any) -> int:
        """C-STORE: the encoded data set with its file meta, durably in the association's spool folder."""
        try:
            spooled = self._association(event.assoc)
            received = getattr(event.request, "_dataset_path", None)
            if isinstance(received, Path) and str(received.parent) == os.path.abspath(self.receiving):
                _move_durably(received, spooled.folder, spooled.stored)  # written as it came
                with self._lock:
                    self._receiving.get(event.assoc, {}).pop(str(received), None)
            else:
                pieces = _part10_pieces(event)
                try:
                    _write_durably(spooled.folder, pieces, spooled.stored)
                finally:
                    for piece in pieces:
                        if isinstance(piece, memoryview):
                            piece.release()  # pynetdicom's buffer is its own again
        except Exception as exc:  # noqa: BLE001 - a full disk, a removed spool: the sender keeps the instance
            _log.error(
                "an instance could not be written to the spool (%s): answered 0xA700 (out of resources); "
                "check the free space and permissions of %s",
                type(exc).__name__,
                self.spool,
            )
            return STATUS_OUT_OF_RESOURCES
        spooled.stored += 1
        return STATUS_SUCCESS

    def _association(self, assoc: Any) -> _Association:
        from ..pipeline import _new_batch_id

        with self._lock:
            spooled = self._open.get(assoc)
            if spooled is not None:
                return spooled
        batch_id = _new_batch_id()
        folder = self.incoming / batch_id
        _mkdir_private(folder)
        spooled = _Association(batch_id, folder)
        with self._lock:
            self._open[assoc] = spooled
            self._pending += 1
        return spooled

    def _on_rejected(self, event: Any) -> None:
        """An association refused: said in the log, with what the sender should change.

        AE titles and the address name devices, not patients."""
        requestor = event.assoc.requestor
        calling = str(getattr(requestor, "ae_title", "") or "").strip()
        primitive = getattr(requestor, "primitive", None)
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        if self.allow_calling and calling not in {t.strip() for t in self.allow_calling}:
            why = f"calling AE title {calling!r} is not one of --allow-calling"
        elif called and called != self.ae_title.strip():
            why = f"it addressed the called AE title {called!r}; senders must address {self.ae_title!r}"
        else:
            why = "too many associations at once, or a user identity refused"
        _log.warning(
            "association from %s (calling AE %r) rejected: %s", getattr(requestor, "address", "?"), calling, why
        )

    def _on_end(self, event: Any) -> None:
        self._close(event.assoc)

    def _close(self, assoc: Any) -> None:
        """The association is over: queue its folder as a batch (once, whichever event came first).
        An instance it was sending when it ended (never answered) is removed."""
        with self._lock:
            spooled = self._open.pop(assoc, None)
            receiving = self._receiving.pop(assoc, {})
        for made in receiving.values():  # those it stored were moved into its folder
            with contextlib.suppress(OSError, ValueError):
                made.close()  # pynetdicom leaves the file of a message cut off open
                os.unlink(made.name)
        if spooled is None:
            return
        self._queue.put((spooled.batch_id, spooled.folder))

    # -- worker thread -----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch_id, folder = item
            try:
                finished = self._deidentify(batch_id, folder)
            except Exception as exc:  # noqa: BLE001 - the worker must go on for the next associations
                finished = None
                _log.error(
                    "batch %s: internal error (%s); what its spool folder still holds is de-identified when "
                    "the receiver starts again",
                    batch_id, type(exc).__name__,
                )  # fmt: skip
            try:
                if finished is not None:
                    self.batches.append(finished)
                    if self.on_batch is not None:
                        self.on_batch(finished)
            except Exception as exc:  # noqa: BLE001 - a caller's callback must not stop the worker
                _log.error("batch %s: the on_batch callback failed (%s)", batch_id, type(exc).__name__)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()

    def _deidentify(self, batch_id: str, folder: Path) -> FinishedBatch | None:
        from ..pipeline import deidentify

        inputs = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not inputs:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            result = deidentify(
                os.fspath(folder),
                self.dst,
                key=self._key if self._key is not None else self._key_arg,
                vault=self.vault,
                profile=self.profile,
                org=self.org,
                batch_id=batch_id,
                progress=False,
                audit_log=self.audit_log,
                pixel_clean=self.pixel_clean,
                jobs=self.jobs,
                priority=self.priority,
                storage_options=self.storage_options,
            )
        except Exception as exc:  # noqa: BLE001 - its message may quote a value from a file: only its type is told
            kept = self._quarantine(batch_id, folder, inputs)
            _log.error(
                "batch %s: de-identification stopped (%s); its %d inputs are kept in %s: fix the cause "
                "and run `dicomframe deidentify %s DST --key-file ... --vault ...` on them (a new batch)",
                batch_id, type(exc).__name__, kept, self.quarantine / batch_id,
                self.quarantine / batch_id,
            )  # fmt: skip
            return FinishedBatch(batch_id, 0, len(inputs), None, kept, type(exc).__name__)
        kept_inputs = inputs if not result.committed else self._failed_inputs(result, inputs)
        differing = self._differing_copies(result, inputs) if result.committed and result.duplicates else []
        if differing:
            _log.warning(
                "batch %s: %d instances came again with other content under the same SOP Instance UID; "
                "the first to arrive was de-identified, the later copies are kept in %s",
                batch_id, len(differing), self.quarantine / batch_id,
            )  # fmt: skip
        kept_inputs = [*kept_inputs, *(p for p in differing if p not in kept_inputs)]
        kept = self._quarantine(batch_id, folder, kept_inputs) if kept_inputs else 0
        shutil.rmtree(folder, ignore_errors=True)
        if not result.committed:
            findings = result.findings.height if result.findings is not None else 0
            _log.error(
                "batch %s: NOT committed (%d leak gate findings); its %d inputs are kept in %s. "
                "`dicomframe deidentify %s DST --key-file ... --vault ... --profile ... --findings FILE` "
                "writes what the gate finds (rules and attributes, values masked): fix the profile until "
                "it finds nothing; that run is the new batch",
                batch_id, findings, kept, self.quarantine / batch_id, self.quarantine / batch_id,
            )  # fmt: skip
        elif kept:
            _log.warning(
                "batch %s: %d inputs could not be de-identified and are kept in %s: `dicomframe scan %s` "
                "says why (its errors table); what can be mended goes in a new batch with `dicomframe "
                "deidentify %s DST --key-file ... --vault ...` (this batch is committed)",
                batch_id, kept, self.quarantine / batch_id, self.quarantine / batch_id, self.quarantine / batch_id,
            )  # fmt: skip
        else:
            _log.info("batch %s: %d files written, manifest %s", batch_id, result.written, result.manifest_uri)
        return FinishedBatch(
            batch_id, result.written, len(result.failed), result.manifest_uri, kept, None, result.duplicates
        )

    def _differing_copies(self, result: DeidentifyResult, inputs: list[Path]) -> list[Path]:
        """The later copies of an instance (same UIDs: one output) whose bytes differ from the
        copy written: a corrected instance sent again must not vanish. Copies of the same
        bytes are dropped (a sender's retry). Every duplicate when they cannot all be told."""
        import polars as pl

        mapping = self._mapping(result)
        if mapping is None:
            return inputs  # fail closed: every one is kept
        known = {os.path.realpath(p): p for p in inputs}
        rows = mapping.filter(pl.col("status").is_in(["written", "duplicate"]) & pl.col("output_path").is_not_null())
        written = {
            out: known.get(os.path.realpath(path))
            for out, path in rows.filter(pl.col("status") == "written").select("output_path", "original_path").iter_rows()
        }
        differing: list[Path] = []
        for out, path in rows.filter(pl.col("status") == "duplicate").select("output_path", "original_path").iter_rows():
            copy, first = known.get(os.path.realpath(path)), written.get(out)
            if copy is None or first is None:
                return inputs
            if copy.read_bytes() != first.read_bytes():
                differing.append(copy)
        return differing

    def _mapping(self, result: DeidentifyResult) -> pl.DataFrame | None:
        """The batch's mapping read back from the vault (inputs' paths, statuses); None when it cannot be."""
        from ..vault import read_mapping

        assert self._key is not None
        try:
            return read_mapping(self.vault, result.batch_id, self._key, storage_options=self.storage_options)
        except Exception as exc:  # noqa: BLE001 - its message may quote a value: only its type is told
            _log.warning("batch %s: its mapping could not be read back (%s)", result.batch_id, type(exc).__name__)
            return None

    def _failed_inputs(self, result: DeidentifyResult, inputs: list[Path]) -> list[Path]:
        """The spool files of the failed inputs (their paths are in the vault mapping only);
        every input when they cannot all be told (fail closed: nothing stored is lost)."""
        if not result.failed:
            return []
        import polars as pl

        mapping = self._mapping(result)
        if mapping is None:
            return inputs  # fail closed: every one is kept
        wanted = [item["input"] for item in result.failed]
        paths = mapping.filter(pl.col("input").is_in(wanted))["original_path"].to_list()
        known = {os.path.realpath(p): p for p in map(os.fspath, inputs)}
        found = [Path(known[os.path.realpath(p)]) for p in paths if p and os.path.realpath(p) in known]
        return found if len(found) == len(wanted) else inputs

    def _quarantine(self, batch_id: str, folder: Path, inputs: list[Path]) -> int:
        """Move ``inputs`` to ``SPOOL/quarantine/<batch_id>/`` (mode 0700); returns how many."""
        target = self.quarantine / batch_id
        try:
            target.mkdir(mode=0o700, exist_ok=True)
            os.chmod(target, 0o700)
            for path in inputs:
                os.replace(path, target / path.name)
            _fsync_dir(target)
        except OSError as exc:
            # the inputs stay where they are: the spool folder is then kept, not removed
            _log.error(
                "batch %s: inputs could not be moved to quarantine (%s); they stay in %s",
                batch_id, type(exc).__name__, folder,
            )  # fmt: skip
            raise
        return len(inputs)


#: uncompressed transfer syntaxes, in the order the SCP prefers them when a presentation
#: context offers several: Explicit VR Little Endian keeps the VRs (private tags included)
_UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"]
#: compressed transfer syntaxes that lose nothing: JPEG Lossless (14, 14 SV1), JPEG-LS Lossless,
#: JPEG 2000 Lossless (Part 1 and 2), JPEG XL Lossless, HTJ2K Lossless (and RPCL), RLE Lossless,
#: Deflated Image Frame Compression
_LOSSLESS = {
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.8.1",
}  # fmt: skip
#: JPIP: the pixel data is not in the instance but at a URL of the sender's (it could not be
#: de-identified with the rest, and the URL itself is removed)
_REFUSED = {"1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.204", "1.2.840.10008.1.2.4.205"}


def _accepted_syntaxes(known: Sequence[str]) -> list[str]:
    """The transfer syntaxes accepted, in the order chosen from when a context offers several.

    pynetdicom accepts the first of this list that a context proposes. A sender (dcmtk's
    storescu) proposes a compressed image's syntax in a context of its own, so each image comes
    as stored; where a context offers several: lossless compressed first (a sender that holds
    the image so need not decode it), then uncompressed, and lossy compression last (a sender
    is never asked to compress lossily an image it offers in another syntax).
    """
    known = [uid for uid in known if uid not in _REFUSED]
    lossless = [uid for uid in known if uid in _LOSSLESS]
    uncompressed = [uid for uid in _UNCOMPRESSED if uid in known]
    rest = [uid for uid in known if uid not in _LOSSLESS and uid not in _UNCOMPRESSED]
    return lossless + uncompressed + rest


def _ae_title(title: str, option: str) -> str:
    text = title.strip()
    if not 1 <= len(text) <= 16 or "\\" in text or not text.isprintable():
        raise UserInputError(f"{option} takes an AE title of 1 to 16 characters without '\\' (got {title!r})")
    return text
