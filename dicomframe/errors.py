"""One exception tree for dicomframe.

Every error raised on purpose by dicomframe derives from :class:`DicomframeError`.
Messages say what failed, where, and what to do next. They never contain a
value read from a DICOM file (no PHI in exception messages): at most a tag,
a keyword, an offset, a count or a path that the user gave us.

The command line turns a :class:`UserInputError` into a one-line message and
exit code 2; any other :class:`DicomframeError` is reported the same way with
exit code 1.
"""

from __future__ import annotations

import os
import traceback

__all__ = [
    "AuditLogError",
    "DeidentifyError",
    "DicomframeError",
    "KeyFileError",
    "MissingExtraError",
    "ParseError",
    "PixelCleanError",
    "ProfileError",
    "ScanError",
    "SourceNotFoundError",
    "StorageError",
    "Tampered",
    "UnknownBatch",
    "UnknownStudy",
    "UserInputError",
    "VaultError",
    "WrongKey",
    "innermost_frame",
]


class DicomframeError(Exception):
    """Base class of every error dicomframe raises on purpose."""


class UserInputError(DicomframeError):
    """The caller asked for something that cannot work (bad path, URL, option)."""


class SourceNotFoundError(UserInputError):
    """A source path or URL does not exist or holds no files."""


class StorageError(UserInputError):
    """A storage back-end (local disk, S3, Azure, GCS) refused access or is unreachable."""


class ScanError(DicomframeError):
    """A scan could not complete (not raised for single bad files: those become rows)."""


class ParseError(DicomframeError):
    """A file could not be parsed as DICOM.

    ``kind`` is a short machine-readable reason (``not_dicom``, ``truncated``,
    ``corrupt``, ``empty``, ``unreadable``) that ends up in the errors table.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ProfileError(UserInputError):
    """A de-identification profile, option or custom rule is invalid."""


class KeyFileError(UserInputError):
    """The project key file is missing, malformed or too widely readable."""


class DeidentifyError(DicomframeError):
    """A de-identification run could not complete (single bad files become rows instead)."""


class PixelCleanError(DeidentifyError):
    """An image could not be pixel-cleaned; it is not written (the reason holds no pixel value)."""


class VaultError(DicomframeError):
    """The vault (encrypted mapping) cannot be read or written."""


class UnknownBatch(VaultError):
    """The vault holds no mapping for the batch asked for. CLI exit code 3."""

    exit_code = 3


class WrongKey(VaultError):
    """A vault file was written with another project key than the one given. CLI exit code 4."""

    exit_code = 4


class Tampered(VaultError):
    """A vault file is truncated, corrupted, altered or moved from another batch. CLI exit code 5."""

    exit_code = 5


class UnknownStudy(VaultError):
    """Re-identification found no study with the given cloud study id. CLI exit code 6."""

    exit_code = 6


class AuditLogError(DicomframeError):
    """The audit log cannot be appended to safely (damaged last line, I/O failure, bad field)."""


class MissingExtraError(DicomframeError):
    """An optional dependency is needed; the message names the extra to install.

    A setup error, as a usage error is (exit code 2): nothing was processed."""

    exit_code = 2

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the optional package {package!r}: "
            f"install it with `pip install 'dicomframe[{extra}]'`"
        )
        self.extra = extra
        self.package = package


#: the package's folder: frames under it are dicomframe's own
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def innermost_frame(exc: BaseException, skip: int = 0) -> traceback.FrameSummary | None:
    """Where an unexpected error happened, to tell it without its message (which may quote a
    value from a file): the innermost frame of dicomframe's own code in its traceback (past
    the first ``skip``), else the innermost frame; None without a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)[skip:]
    ours = [f for f in frames if os.path.abspath(f.filename).startswith(_PACKAGE_DIR)]
    return (ours or frames)[-1] if frames else None
