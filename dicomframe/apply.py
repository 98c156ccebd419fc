"""Apply a plan to files: the part of de-identification that runs in worker processes.

Kept free of polars so workers start fast. A work item is one file: where to
read it, where to write it, and its plan rows ``(tag_path, tag, vr, action,
new_value)``; the rows become the edits of :func:`dicomframe.rewrite.rewrite`,
which keeps pixel data byte for byte and drops anything the plan does not keep.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from .errors import ParseError, UserInputError
from .rewrite import Keep, NewElement, Set, rewrite

__all__ = ["WorkItem", "edits_for", "apply_chunk", "write_atomic"]

#: (file_id, source path, output path, plan rows)
WorkItem = tuple[int, str, str, list[tuple[str, int, str, str, "str | None"]]]
_KEEP = Keep()


def edits_for(
    rows: Sequence[tuple[str, int, str, str, str | None]], additions: dict[str, Any]
) -> tuple[dict[str, Any], dict[int, str]]:
    """Rewrite edits and file-meta overrides from one file's plan rows."""
    edits: dict[str, Any] = {}
    meta: dict[int, str] = {}
    for path, tag, vr, action, new_value in rows:
        if action == "X":
            continue
        if tag >> 16 == 0x0002:
            if tag == 0x00020003 and new_value:
                meta[0x00020003] = new_value
            continue
        if vr == "SQ":
            edits[path] = Set("SQ", []) if action == "Z" else _KEEP
        elif action == "K":
            edits[path] = _KEEP
        else:
            edits[path] = Set(vr, new_value if new_value is not None else "")
    edits["00120062"] = Set("CS", "YES")
    edits["00120063"] = Set("LO", additions["method_text"][:64])
    edits["00120064"] = Set(
        "SQ",
        [
            [
                NewElement(0x00080100, "SH", code),
                NewElement(0x00080102, "SH", scheme),
                NewElement(0x00080104, "LO", meaning[:64]),
            ]
            for code, scheme, meaning in additions["method_codes"]
        ],
    )
    edits["00280303"] = Set("CS", additions["temporal"])
    return edits, meta


def _is_local(fs: Any) -> bool:
    protocol = getattr(fs, "protocol", "file")
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols


def write_atomic(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` so that ``path`` appears complete or not at all."""
    if fs is None or _is_local(fs):
        parent = path.rsplit("/", 1)[0]
        tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            fh = open(tmp, "wb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            os.makedirs(parent, exist_ok=True)
            fh = open(tmp, "wb")  # noqa: SIM115
        with fh:
            fh.write(data)
        os.replace(tmp, path)
        return
    fs.pipe_file(path, data)  # an object-store PUT is atomic: readers see all or nothing


def apply_chunk(
    items: Sequence[WorkItem], src_fs: Any, out_fs: Any, additions: dict[str, Any]
) -> list[tuple[int, str, str | None, int]]:
    """De-identify a chunk of files. Returns ``(file_id, status, reason, bytes)`` per file."""
    results = []
    for file_id, src_path, out_path, rows in items:
        try:
            edits, meta = edits_for(rows, additions)
            if src_fs is None:
                with open(src_path, "rb") as fh:
                    data = fh.read()
            else:
                data = src_fs.cat_file(src_path)
            out = rewrite(data, edits, meta=meta)
            write_atomic(out_fs, out_path, out)
            results.append((file_id, "written", None, len(out)))
        except ParseError as exc:
            results.append((file_id, exc.kind, str(exc), 0))
        except UserInputError as exc:
            results.append((file_id, "unwritable", str(exc), 0))
        except OSError as exc:
            results.append((file_id, "io_error", f"reading or writing failed ({type(exc).__name__})", 0))
    return results
