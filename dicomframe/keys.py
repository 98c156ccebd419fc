"""The project secret key: one file, sub-keys derived per purpose.

Every keyed pseudonym (UIDs, tokens, date offsets) and the vault encryption
come from one 32-byte project secret. Each use gets its own sub-key derived
with HKDF-SHA256, so a sub-key leaking for one purpose reveals nothing about
the others::

    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> key
    ProjectKey(key_id='7f55db5575132432')
    >>> len(key.subkey("uid"))
    32

The key file is plain text, created with mode ``0600`` and never overwritten::

    dicomframe-key v1
    key_id: 7f55db5575132432
    secret: <32 bytes, URL-safe base64>
    # Back this file up somewhere safe and never share it: ...

Losing the file means pseudonyms can never be reproduced (a re-upload gets new
UIDs) and the vault cannot be opened; sharing it lets anyone re-identify by
re-computing pseudonyms. A site with a key management service implements
:class:`KeyProvider` instead of using a file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyFileError, UserInputError

__all__ = [
    "FileKeyProvider",
    "KeyProvider",
    "ProjectKey",
    "generate_key_file",
    "load_key",
]

#: length of the project secret in bytes
SECRET_LENGTH = 32
#: first line of every key file
KEY_FILE_HEADER = "dicomframe-key v1"
_KEY_FILE_MAGIC = "dicomframe-key"
_KEY_ID_MESSAGE = b"dicomframe key id"
_KEY_ID_HEX_CHARS = 16
_HKDF_INFO_PREFIX = b"dicomframe/"
_HKDF_MAX_LENGTH = 255 * 32
_BACKUP_COMMENT = (
    "# Back this file up somewhere safe and never share it: without it pseudonyms "
    "cannot be reproduced and the vault cannot be opened; with it anyone can re-identify."
)

_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]+={0,2}")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, repr=False, eq=False)
class ProjectKey:
    """The 32-byte project secret and the sub-keys derived from it.

    Build one with :func:`load_key`, :func:`generate_key_file` or
    :meth:`from_bytes`. The secret never appears in ``repr`` (only the
    ``key_id``, a public fingerprint safe to log and to store in manifests).

    Examples
    --------
    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> key.key_id
    '7f55db5575132432'
    >>> key.subkey("uid") == key.subkey("uid") != key.subkey("token")
    True
    """

    secret: bytes
    _subkeys: dict[tuple[str, int], bytes] = field(
        default_factory=dict, init=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes):
            raise KeyFileError(f"a project key must be bytes, not {type(self.secret).__name__}")
        if len(self.secret) != SECRET_LENGTH:
            raise KeyFileError(
                f"a project key must be exactly {SECRET_LENGTH} bytes, got {len(self.secret)}: "
                "generate one with `dicomframe keygen`"
            )

    @classmethod
    def from_bytes(cls, secret: bytes) -> ProjectKey:
        """Wrap a raw 32-byte secret (from a test, a KMS or an HSM).

        Raises
        ------
        KeyFileError
            If ``secret`` is not exactly 32 bytes.
        """
        return cls(bytes(secret))

    @property
    def key_id(self) -> str:
        """Public fingerprint: 16 hex characters of HMAC-SHA256(secret, "dicomframe key id")."""
        return _key_id(self.secret)

    def subkey(self, purpose: str, length: int = 32) -> bytes:
        """Derive the sub-key for one purpose with HKDF-SHA256.

        ``info`` is ``b"dicomframe/" + purpose`` and the salt is empty; the
        result is cached per ``(purpose, length)``. Purposes in use are
        ``"uid"``, ``"token"``, ``"date-shift"`` and ``"vault"``.

        Parameters
        ----------
        purpose
            Non-empty label naming what the sub-key is for.
        length
            Number of bytes, 1 to 8160.

        Examples
        --------
        >>> ProjectKey.from_bytes(b"\\0" * 32).subkey("uid", 4).hex()
        'e6d8e10b'
        """
        if not isinstance(purpose, str) or not purpose:
            raise UserInputError("a sub-key purpose must be a non-empty string")
        if isinstance(length, bool) or not isinstance(length, int):
            raise UserInputError("a sub-key length must be an integer")
        if not 1 <= length <= _HKDF_MAX_LENGTH:
            raise UserInputError(
                f"a sub-key length must be between 1 and {_HKDF_MAX_LENGTH} bytes, got {length}"
            )
        cache_key = (purpose, length)
        cached = self._subkeys.get(cache_key)
        if cached is None:
            cached = HKDF(
                algorithm=hashes.SHA256(),
                length=length,
                salt=None,
                info=_HKDF_INFO_PREFIX + purpose.encode("utf-8"),
            ).derive(self.secret)
            self._subkeys[cache_key] = cached
        return cached

    def get_key(self) -> ProjectKey:
        """Return ``self``, so a key is also a :class:`KeyProvider`."""
        return self

    def __repr__(self) -> str:
        return f"ProjectKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProjectKey):
            return NotImplemented
        return hmac.compare_digest(self.secret, other.secret)

    def __hash__(self) -> int:
        return hash(self.key_id)


@runtime_checkable
class KeyProvider(Protocol):
    """Anything that can hand over the project key.

    The default is :class:`FileKeyProvider`; a site with a key management
    service implements ``get_key`` to fetch the secret and wrap it with
    :meth:`ProjectKey.from_bytes`.
    """

    def get_key(self) -> ProjectKey:
        """Return the project key (may be called more than once)."""
        ...


class FileKeyProvider:
    """Read the project key from a key file (loaded once, then cached).

    Examples
    --------
    >>> provider = FileKeyProvider("project.key")
    >>> provider.get_key()  # doctest: +SKIP
    ProjectKey(key_id='...')
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._key: ProjectKey | None = None

    def get_key(self) -> ProjectKey:
        if self._key is None:
            self._key = load_key(self.path)
        return self._key

    def __repr__(self) -> str:
        return f"FileKeyProvider({str(self.path)!r})"


def _key_id(secret: bytes) -> str:
    return hmac.new(secret, _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:_KEY_ID_HEX_CHARS]


def _render_key_file(secret: bytes) -> str:
    encoded = base64.urlsafe_b64encode(secret).decode("ascii")
    return f"{KEY_FILE_HEADER}\nkey_id: {_key_id(secret)}\nsecret: {encoded}\n{_BACKUP_COMMENT}\n"


def generate_key_file(path: PathLike) -> ProjectKey:
    """Create a new project key file with 32 random bytes, mode ``0600``.

    The file is written to a temporary name in the same folder, flushed to
    disk and then moved into place, so a crash never leaves a half-written
    key. An existing file is never overwritten: losing a key loses every
    pseudonym mapping made with it.

    Parameters
    ----------
    path
        Where to write the key file; its folder must exist.

    Returns
    -------
    ProjectKey
        The new key.

    Raises
    ------
    KeyFileError
        If ``path`` already exists, or its folder is missing or not writable.

    Examples
    --------
    >>> key = generate_key_file("project.key")  # doctest: +SKIP
    """
    target = Path(path)
    if os.path.lexists(target):
        raise _exists_error(target)
    folder = target.parent
    if not folder.is_dir():
        raise KeyFileError(
            f"cannot create key file {target}: folder {folder} does not exist; create it first"
        )
    secret = secrets.token_bytes(SECRET_LENGTH)
    content = _render_key_file(secret).encode("ascii")
    tmp = folder / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create key file in {folder} ({exc.strerror}): "
            "check that the folder is writable"
        ) from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # the umask may have removed owner bits
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        _move_into_place(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    return ProjectKey(secret)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` without ever replacing an existing file.

    A hard link fails if the target appeared since we checked (another
    ``keygen`` racing us); where hard links are unsupported we fall back to
    ``os.replace`` after a last existence check.
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists_error(target) from None
    except OSError:
        if os.path.lexists(target):
            raise _exists_error(target) from None
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise KeyFileError(
                f"cannot write key file {target} ({exc.strerror}): "
                "check that the folder is writable"
            ) from None
    else:
        tmp.unlink()


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the file itself is synced
    finally:
        os.close(fd)


def _exists_error(target: Path) -> KeyFileError:
    return KeyFileError(
        f"key file {target} already exists and will not be overwritten (that would lose every "
        "pseudonym made with it): choose another path, or delete the old file deliberately first"
    )


def load_key(path: PathLike) -> ProjectKey:
    """Read a key file written by :func:`generate_key_file`.

    On POSIX systems a file that group or others may read or write is
    refused, with the ``chmod`` command that fixes it.

    Parameters
    ----------
    path
        The key file.

    Returns
    -------
    ProjectKey

    Raises
    ------
    KeyFileError
        If the file is missing, too widely accessible, malformed, holds a
        secret of the wrong length, or its ``key_id`` does not match its secret.

    Examples
    --------
    >>> load_key("project.key").key_id  # doctest: +SKIP
    '3f0c9a1e5b7d2c84'
    """
    source = Path(path)
    try:
        info = source.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {source} does not exist: create one with `dicomframe keygen {source}` "
            "or pass the path of the project's existing key"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {source} ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {source} is not a regular file")
    if os.name == "posix" and info.st_mode & 0o077:
        raise KeyFileError(
            f"key file {source} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); restrict it with "
            f"`chmod 600 {shlex.quote(str(source))}` and try again"
        )
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {source} ({exc.strerror})") from None
    return _parse_key_file(raw, source)


def _parse_key_file(raw: bytes, source: Path) -> ProjectKey:
    def bad(what: str) -> KeyFileError:
        return KeyFileError(
            f"key file {source} is malformed: {what}; it must be a file written by "
            "`dicomframe keygen`, unedited"
        )

    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise bad("it is not ASCII text") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines or not lines[0].startswith(_KEY_FILE_MAGIC):
        raise bad(f"the first line must be {KEY_FILE_HEADER!r}")
    if lines[0] != KEY_FILE_HEADER:
        raise KeyFileError(
            f"key file {source} has an unsupported format version; this dicomframe reads "
            f"{KEY_FILE_HEADER!r}: upgrade dicomframe"
        )
    fields: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or name not in ("key_id", "secret"):
            raise bad(f"unexpected line {number} (only 'key_id:' and 'secret:' lines are allowed)")
        if name in fields:
            raise bad(f"{name!r} appears twice")
        fields[name] = value.strip()
    for name in ("key_id", "secret"):
        if name not in fields:
            raise bad(f"the {name!r} line is missing")
    if not _URLSAFE_B64.fullmatch(fields["secret"]):
        raise bad("the secret is not URL-safe base64")
    try:
        secret = base64.b64decode(fields["secret"], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise bad("the secret is not URL-safe base64") from None
    if len(secret) != SECRET_LENGTH:
        raise KeyFileError(
            f"key file {source} holds a secret of {len(secret)} bytes; "
            f"a project key must be exactly {SECRET_LENGTH} bytes"
        )
    if not hmac.compare_digest(fields["key_id"].lower(), _key_id(secret)):
        raise KeyFileError(
            f"key file {source} is corrupt: its key_id does not match its secret; "
            "restore the file from your backup"
        )
    return ProjectKey(secret)
