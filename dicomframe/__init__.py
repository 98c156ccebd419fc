"""dicomframe: de-identify and audit DICOM research cohorts as dataframes.

>>> import dicomframe as dcf
>>> result = dcf.scan("data-samples/cohort")          # doctest: +SKIP
>>> result.instances.group_by("Modality").len()        # doctest: +SKIP

Heavy modules load on first use, so ``import dicomframe`` stays quick and
worker processes import only what they need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    DicomframeError,
    MissingExtraError,
    ParseError,
    ScanError,
    SourceNotFoundError,
    StorageError,
    UserInputError,
)

if TYPE_CHECKING:
    from .phiaudit import audit
    from .pipeline import deidentify
    from .scanner import ScanResult, ScanSummary, scan
    from .tags import format_tag, keyword_for, parse_tag

__version__ = "0.1.0"

_LAZY = {
    "audit": "phiaudit",
    "deidentify": "pipeline",
    "scan": "scanner",
    "ScanResult": "scanner",
    "ScanSummary": "scanner",
    "parse_tag": "tags",
    "format_tag": "tags",
    "keyword_for": "tags",
}

__all__ = [
    "DicomframeError",
    "MissingExtraError",
    "ParseError",
    "ScanError",
    "ScanResult",
    "ScanSummary",
    "SourceNotFoundError",
    "StorageError",
    "UserInputError",
    "__version__",
    "audit",
    "deidentify",
    "format_tag",
    "keyword_for",
    "parse_tag",
    "scan",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dicomframe' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
