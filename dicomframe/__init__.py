"""dicomframe: de-identify and audit DICOM research cohorts as dataframes.

>>> import dicomframe as dcf
>>> result = dcf.scan("data-samples/cohort")          # doctest: +SKIP
>>> result.instances.group_by("Modality").len()        # doctest: +SKIP
"""

from __future__ import annotations

from .errors import (
    DicomframeError,
    MissingExtraError,
    ParseError,
    ScanError,
    SourceNotFoundError,
    StorageError,
    UserInputError,
)
from .scan import ScanResult, ScanSummary, scan
from .tags import format_tag, keyword_for, parse_tag

__version__ = "0.1.0"

__all__ = [
    "scan",
    "ScanResult",
    "ScanSummary",
    "parse_tag",
    "format_tag",
    "keyword_for",
    "DicomframeError",
    "UserInputError",
    "SourceNotFoundError",
    "StorageError",
    "ScanError",
    "ParseError",
    "MissingExtraError",
    "__version__",
]
