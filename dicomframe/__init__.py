"""dicomframe: de-identify and audit DICOM research cohorts as dataframes.

>>> import polars as pl
>>> import dicomframe as dcf
>>> from dicomframe.keys import load_key
>>> result = dcf.scan("data-samples/cohort")          # doctest: +SKIP
>>> result.instances.group_by("Modality").len()        # doctest: +SKIP
>>> plan = dcf.plan(result, "research", load_key("project.key"))  # doctest: +SKIP
>>> plan.table.filter(pl.col("action") == "C")         # doctest: +SKIP

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
    from .planner import Plan
    from .planner import make_plan as plan
    from .scanner import ScanResult, ScanSummary, scan
    from .tags import format_tag, keyword_for, parse_tag
    from .vault import reidentify

__version__ = "0.1.0"

#: public name -> the module that defines it, or (that module, its name there)
_LAZY: dict[str, str | tuple[str, str]] = {
    "audit": "phiaudit",
    "deidentify": "pipeline",
    "plan": ("planner", "make_plan"),
    "Plan": "planner",
    "reidentify": "vault",
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
    "Plan",
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
    "plan",
    "reidentify",
    "scan",
]


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'dicomframe' has no attribute {name!r}")
    module, attr = (where, name) if isinstance(where, str) else where
    value = getattr(import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
