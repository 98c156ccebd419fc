"""De-identify a cohort: scan → plan → apply → write, with a manifest and a mapping.

Layout of a batch (``DST`` is a local folder or an fsspec URL)::

    DST/<batch_id>/<study uid>/<series uid>/<sop uid>.dcm   de-identified files
    DST/<batch_id>/manifest.parquet                        one row per file (key, bytes, sha256, UIDs, …)
    DST/<batch_id>/manifest.json                           written last: the commit marker
    VAULT/<batch_id>/mapping.parquet.enc                   original ↔ pseudonymous ids (encrypted)
    VAULT/<batch_id>/plan.parquet.enc                      with --dry-run: the plan, encrypted, for review

Output names come from the new UIDs only, never from input names or folders.
Files that cannot be read or written are listed in the run result and the
manifest (by input number and reason; their paths, which often hold patient
names, are kept in the vault mapping only) and the run exits non-zero; all
other files are still written. Two inputs of one instance (same UIDs) are written
once, from the first in listing order; the other is a ``duplicate`` in the mapping.

On object stores, DICOM objects carry the content type ``application/dicom``
and the metadata ``batch_id``, ``priority`` and ``uploaded_at``; transient faults
(throttling, 5xx, dropped connections) are retried with backoff, and refused
access or a missing bucket stops the run with a :class:`~dicomframe.errors.StorageError`.

Resumable: re-running the same command (same batch id, same key) after an
interruption — even ``kill -9`` — skips the outputs already there that hold
the very bytes this run computed (sha256; outputs are deterministic under one
key and one set of options, so nothing is uploaded twice) and finishes the
batch; the result equals an uninterrupted run. An output that differs (the
re-run changed the profile, ``--org`` or the date-shift range) is written again,
and a batch folder holding outputs this run does not produce (an earlier run of
the batch id with another key, profile or input) is refused, not committed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from . import __version__
from .apply import with_retries, write_atomic
from .errors import StorageError, UserInputError
from .keys import ProjectKey, load_key
from .planner import Plan, make_plan
from .profiles import Profile
from .pseudonyms import DateShift
from .tags import UID_MAX, UID_SYNTAX

__all__ = ["PART_FILES", "PRIORITIES", "DeidentifyResult", "deidentify"]

#: inputs scanned, planned, written and gated at a time: a batch larger than this runs in
#: parts, so memory stays flat (a part holds about 0.2 MB per input, whatever the image
#: size: peak RSS ~400-440 MB for 3,000 to 10,000 inputs, against 1.6 GB at once for 10,000)
PART_FILES = 1000

#: writer threads when the source or the destination is an object store (S3, Azure Blob,
#: GCS): they wait on the network, so more of them than cores keep it busy (each holds
#: one file in memory)
REMOTE_WRITERS = 8

PRIORITIES = ("STAT", "URGENT", "ROUTINE")
MANIFEST_VERSION = "1.0"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


@dataclass
class DeidentifyResult:
    """What a de-identification run did (no identifying values)."""

    batch_id: str
    batch_uri: str
    written: int
    failed: list[dict[str, Any]]
    studies: int
    elapsed_s: float
    manifest_uri: str | None
    mapping_uri: str | None
    plan: Plan
    dry_run: bool = False
    plan_uri: str | None = None
    outputs: list[str] = field(default_factory=list)
    #: findings of the leak gate (empty when clean); a batch with findings is not committed
    findings: pl.DataFrame | None = None
    #: outputs found complete from an earlier, interrupted run of the same batch (not written again)
    skipped: int = 0
    manifest_parquet_uri: str | None = None
    #: inputs holding an instance already written from an earlier input (same UIDs): not
    #: written again, marked ``duplicate`` in the mapping
    duplicates: int = 0
    #: seconds per stage, over all parts: ``scan``, ``plan``, ``write`` (rewrite, hash and
    #: write), ``gate`` (the leak gate), ``commit`` (mapping, audit log and manifests; a dry
    #: run: ``vault``, the plan sealed into the vault)
    timings: dict[str, float] = field(default_factory=dict)
    #: outputs the leak gate found something in, withheld (see ``keep_flagged``)
    removed: int = 0

    @property
    def committed(self) -> bool:
        """True when manifest.json was written (the batch is complete and passed the gate)."""
        return self.manifest_uri is not None

    @property
    def files_per_second(self) -> float:
        total = self.written + len(self.failed) + self.duplicates
        return total / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    @property
    def ok(self) -> bool:
        return not self.failed and (self.findings is None or self.findings.height == 0)

    def _stage_times(self) -> str:
        """``"scan 0.19 s, plan 0.20 s, write 0.72 s, gate 0.08 s, commit 0.03 s"``."""
        return ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in self.timings.items())

    def _pixel_counts(self) -> str:
        files = self.plan.files
        if "pixel_clean" not in files.columns:
            return ""
        counts = files.group_by(pl.col("pixel_clean").str.replace(r"^rule:.*", "rule")).len().drop_nulls()
        how = {
            "ocr": "text detection",
            "rule": "device rule",
            "overlay": "removing the overlay in their pixels",
            "trailing": "removing bytes after the last frame",
        }
        return ", ".join(f"{n:,} by {how.get(k, k)}" for k, n in sorted(counts.iter_rows()))

    def _finding_counts(self) -> str:
        """``"2 findings, NOT committed: original_identifier in PatientComments (2)"`` (no values)."""
        assert self.findings is not None
        counts = (
            self.findings.group_by("rule", pl.col("keyword").fill_null(pl.col("tag_path")))
            .len()
            .sort("len", "rule", "keyword", descending=[True, False, False])
        )
        shown = [f"{rule} in {keyword} ({n:,})" for rule, keyword, n in counts.head(5).iter_rows()]
        more = f", … {counts.height - 5:,} more" if counts.height > 5 else ""
        n = self.findings.height
        removed = (
            f"; the {self.removed:,} output{'s' if self.removed != 1 else ''} holding them withheld"
            if self.removed
            else ""
        )
        return f"{n:,} finding{'s' if n != 1 else ''}, NOT committed: " + ", ".join(shown) + more + removed

    def _uncleaned(self) -> int:
        files = self.plan.files
        if "pixel_uncleaned_at_risk" not in files.columns:
            return 0
        return int(files["pixel_uncleaned_at_risk"].sum())

    @staticmethod
    def _uncleaned_text(n: int) -> str:
        return (
            f"{n:,} image{'s' if n != 1 else ''} at risk of burned-in text (ultrasound, secondary capture, "
            "BurnedInAnnotation YES, an overlay in the pixel data) written without looking for text in them (--pixel-clean off, or rules "
            "with no device rule for them): look for text in them with dicomframe audit --ocr"
        )

    def rows(self) -> list[tuple[str, str]]:
        pixels = self._pixel_counts()
        uncleaned = self._uncleaned()
        out = [
            ("batch id", self.batch_id),
            ("batch", self.batch_uri),
            ("studies", f"{self.studies:,}"),
            (
                "files written" if not self.dry_run else "files planned",
                f"{self.written:,}" + (f" ({self.removed:,} withheld by the leak gate)" if self.removed else ""),
            ),
            ("failed", f"{len(self.failed):,}"),
            *([("already there (resumed)", f"{self.skipped:,}")] if self.skipped else []),
            *([("duplicate instances (written once)", f"{self.duplicates:,}")] if self.duplicates else []),
            *([("pixels cleaned" if not self.dry_run else "pixels to clean", pixels)] if pixels else []),
            *([("pixels NOT cleaned", self._uncleaned_text(uncleaned))] if uncleaned else []),
            *([("leak gate", self._finding_counts())] if self.findings is not None and self.findings.height else []),
            ("elapsed", f"{self.elapsed_s:.2f} s"),
            ("throughput", f"{self.files_per_second:,.0f} files/s"),
            *([("time per stage", self._stage_times())] if self.timings else []),
        ]
        if self.manifest_uri:
            out.append(("manifest", self.manifest_uri))
        if self.mapping_uri:
            out.append(("mapping (vault)", self.mapping_uri))
        if self.plan_uri:
            out.append(("plan (vault)", self.plan_uri))
        return out


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    from .sources import get_filesystem

    if "://" not in url:
        from .apply import LocalFS

        return LocalFS(), os.path.abspath(url)
    return get_filesystem(url, storage_options)


def deidentify(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str],
    *,
    key: ProjectKey | str | os.PathLike[str],
    vault: str | os.PathLike[str],
    profile: str = "default",
    org: str = "DICOMFRAME",
    batch_id: str | None = None,
    priority: str = "ROUTINE",
    jobs: int | None = None,
    dry_run: bool = False,
    date_shift: DateShift | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    manifest_parquet: bool = True,
    pixel_clean: str = "auto",
    keep_flagged: bool = False,
    dask: Any = None,
) -> DeidentifyResult:
    """De-identify DICOM files into ``DST/<batch_id>/`` with a manifest and a vault mapping.

    Parameters
    ----------
    src
        Folder (recursive, any file names), file, glob or fsspec URL.
    dst
        Output root (local folder or fsspec URL); the batch goes under ``DST/<batch_id>/``.
    key
        The project key, or the path of its key file (``dicomframe keygen``).
    vault
        Where the mapping goes (local folder or URL), kept apart from ``dst``.
    profile
        Preset name (``basic``, ``default``, ``research``, ``cloud-upload``) or TOML file.
    org
        Organisation prefix used by templates (``{org}``).
    batch_id
        Batch identifier (default: a new random one).
    priority
        ``STAT``, ``URGENT`` or ``ROUTINE`` (recorded in the manifest).
    dry_run
        Plan only: write the plan to the vault and nothing under ``dst``.
    audit_log
        A local JSON Lines file: one hash-chained record of this run is appended
        (batch id, counts, outcome, key id; no PHI).
    manifest_parquet
        Also write ``manifest.parquet`` (one row per file: object key, bytes, sha256,
        pseudonymous UIDs, modality, cleaned series description, cloud study id,
        pixel clean), just before ``manifest.json``.
    pixel_clean
        Burned-in text (see :mod:`dicomframe.pixelclean`): ``auto`` (default)
        blacks out the profile's per-device ``[[pixel]]`` rectangles and the
        text detected (OCR) on the other images at risk (ultrasound, secondary
        capture, BurnedInAnnotation YES); without OCR installed those images
        fail rather than leave unchecked. ``rules``: rectangles only. ``off``:
        pixel data untouched.
    keep_flagged
        When the leak gate finds something, the batch is not committed and the outputs
        it found something in are withheld: a local output never gets its name (outputs
        wait under temporary names until the gate has passed them), an object already
        PUT is deleted right after the gate. ``True`` leaves them there to be looked at,
        still uncommitted.
    dask
        Run the scan and the writing on a Dask cluster (extra ``dask``): a
        ``distributed.Client``, or the scheduler's address such as
        ``"tcp://scheduler:8786"`` (a client is connected for this run, then closed).
        Planning, the leak gate and the commit stay in this process. The workers read
        the inputs and write the outputs themselves: local paths must name the same
        files and folders on every worker and here (a shared file system: outputs wait
        under temporary names in the batch folder until the gate has passed them, and
        are renamed from here), URLs must be reachable from them, with credentials from
        their own environment (``storage_options`` are sent with the work; the
        environment is not). Each worker needs dicomframe (and, for pixel clean, the
        ``ocr`` extra and tesseract) installed, of this version. The outputs are the local
        engine's, byte for byte. Default: this machine's worker processes.

    Examples
    --------
    >>> result = deidentify("data-samples/cohort", "out", key="project.key", vault="vault")  # doctest: +SKIP
    >>> result.ok, result.written                                                           # doctest: +SKIP
    (True, 70)
    """
    # the plan rows, work items and element rows are many small acyclic objects: the
    # cyclic garbage collector would only walk them again and again as they pile up
    was_enabled = gc.isenabled()
    gc.disable()
    cleanup: list[Any] = []
    try:
        client = None
        if dask is not None:
            from .distributed import dask_client

            stack = contextlib.ExitStack()
            client = stack.enter_context(dask_client(dask))
            cleanup.append(stack.close)  # a client connected here is closed (one given is left open)
        return _deidentify(
            src, dst, key=key, vault=vault, profile=profile, org=org, batch_id=batch_id,
            priority=priority, jobs=jobs, dry_run=dry_run, date_shift=date_shift,
            storage_options=storage_options, progress=progress, audit_log=audit_log,
            manifest_parquet=manifest_parquet, pixel_clean=pixel_clean, cleanup=cleanup,
            keep_flagged=keep_flagged, client=client,
        )  # fmt: skip
    finally:
        for fn in reversed(cleanup):
            fn()
        if was_enabled:
            gc.enable()


def _deidentify(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str],
    *,
    key: ProjectKey | str | os.PathLike[str],
    vault: str | os.PathLike[str],
    profile: str,
    org: str,
    batch_id: str | None,
    priority: str,
    jobs: int | None,
    dry_run: bool,
    date_shift: DateShift | None,
    storage_options: dict[str, Any] | None,
    progress: bool | None,
    audit_log: str | os.PathLike[str] | None,
    manifest_parquet: bool,
    pixel_clean: str,
    cleanup: list[Any],
    keep_flagged: bool = False,
    client: Any = None,
) -> DeidentifyResult:
    from .scanner import Progress, auto_progress, scan
    from .sources import Source, resolve_source

    started = time.perf_counter()
    if priority.upper() not in PRIORITIES:
        raise UserInputError(f"--priority must be one of {', '.join(PRIORITIES)} (got {priority!r})")
    project_key = key if isinstance(key, ProjectKey) else load_key(key)
    dst_text, vault_text = os.fspath(dst), os.fspath(vault)
    if _same_place(dst_text, vault_text):
        raise UserInputError(
            "the vault must not be inside the output (DST): the mapping holds original identifiers; "
            "give --vault a location apart from DST"
        )
    for source_text in [src] if isinstance(src, str | os.PathLike) else list(src):
        if _same_place(os.fspath(source_text), dst_text):
            raise UserInputError(
                "the output (DST) must not be inside the source (SRC): a later run would take the "
                "de-identified files for inputs; give DST a folder outside SRC"
            )
    if audit_log is not None:
        from .auditlog import AuditLog

        AuditLog(audit_log).check_writable()  # now, not after the whole batch is written
    from .vault import _valid_batch_id, check_key

    check_key(vault_text, project_key, storage_options=storage_options)
    batch = batch_id or _new_batch_id()
    if not _valid_batch_id(batch):
        raise UserInputError("--batch-id may hold ASCII letters, digits, '-' and '_' only (at most 64)")
    out_fs, out_root = _fs(dst_text, storage_options)
    batch_root = _join(out_root, batch)
    batch_uri = _join(dst_text, batch) + "/"
    prof = profile if isinstance(profile, Profile) else Profile.load(profile)  # once: every part plans with it
    settings = _settings_digest(project_key, prof, org, date_shift, pixel_clean)
    if not dry_run:
        _check_destination(out_fs, out_root, dst_text)
        _check_not_a_batch(out_fs, out_root, dst_text)
        _check_committed(out_fs, batch_root, batch_uri, settings)
    # files made ahead serve the writers of this process only: none on a Dask cluster
    ahead = None if dry_run or client is not None else _make_tmp_files_ahead(out_fs, batch_root, jobs, cleanup)
    source = resolve_source(src, storage_options)
    if not source.files:
        raise UserInputError("no file in SRC (an empty folder?): check the path; nothing was written")
    if client is not None and (source.shares_memory_only or "memory" in str(getattr(out_fs, "protocol", ""))):
        raise UserInputError(_DASK_MEMORY)  # before any work
    # a batch is de-identified in parts of PART_FILES inputs, each scanned, planned, written
    # and gated (or, in a dry run, added to the vault's plan) before the next: memory stays
    # flat whatever the batch size
    # of at most PART_FILES inputs, as even as can be (1,001 inputs: 501 and 500, not 1,000 and 1)
    count = -(-len(source.files) // PART_FILES) or 1
    bounds = [len(source.files) * i // count for i in range(count + 1)]
    parts = [source.files[start:stop] for start, stop in itertools.pairwise(bounds)]
    run = _Run(
        batch=batch, batch_root=batch_root, batch_uri=batch_uri, out_fs=out_fs, jobs=jobs,
        storage_options=storage_options, source_fs=_source_fs(src, storage_options),
        metadata={
            "batch_id": batch,
            "priority": priority.upper(),
            "uploaded_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        keep_flagged=keep_flagged,
        client=client,
    )  # fmt: skip
    show = auto_progress() if progress is None else progress
    whole = Progress(len(source.files), show and len(parts) > 1, "de-identifying")
    existing: dict[str, int] | None = None
    plan: Plan | None = None
    try:
        for number, files_of_part in enumerate(parts):
            part_source = Source(files=files_of_part, fs=source.fs, protocol=source.protocol, root=source.root)
            with run.timed("scan"):
                if client is None:
                    scanned = scan(part_source, jobs=jobs, storage_options=storage_options, progress=show and len(parts) == 1)
                else:
                    scanned = _dask_scan(part_source, client, storage_options, show and len(parts) == 1)
            if ahead is not None and number == 0:
                from .scanner import IN_PROCESS_FILES

                ahead.limit(scanned.instances.height)
                if not 1 < scanned.instances.height < IN_PROCESS_FILES:
                    ahead.stop()  # one file, or worker processes: they make their own
            with run.timed("plan"):
                plan = make_plan(scanned, prof, project_key, org=org, date_shift=date_shift, pixel_clean=pixel_clean)
            if dry_run:
                run.plan_part(scanned, plan, vault_text, project_key)
                whole.update(run.done, len(run.failed))
            else:
                if existing is None:
                    existing = _existing_outputs(out_fs, batch_root, dst_text)
                run.add_part(scanned, plan, existing, show and len(parts) == 1, whole, only=len(parts) == 1)
                if ahead is not None and number == 0:
                    ahead.close()  # what the first part did not use is removed with its folder
            del scanned
            if len(parts) > 1:  # the element rows of a part are not kept (memory stays flat)
                plan = replace(plan, table=plan.table.clear())
                gc.collect()  # the collector is off during a run (see deidentify): what a part left in cycles goes
    finally:
        whole.close()
    assert plan is not None
    if existing and len(parts) > 1:
        run.check_stale(existing, written=True)  # a batch in parts: known once every part is written
    result_plan = plan if len(parts) == 1 else run.result_plan(plan)
    if dry_run:
        return _dry_run(run, result_plan, project_key, audit_log, started)
    committing = time.perf_counter()
    files, failed = run.files(), run.failed
    ok_files = files.filter(pl.col("status") == "written")
    submitted = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mapping_uri = _write_mapping(
        vault_text, batch, files, run.errors(), org, submitted, project_key, storage_options, source.base
    )
    findings = run.findings()
    flagged: set[str] = set()
    if findings.height and not keep_flagged:
        # what the gate found is not left where a reader of the bucket or folder sees it
        flagged = set(findings["output"].drop_nulls().to_list())
        _remove_outputs(out_fs, batch_root, sorted(flagged))
    manifest_uri = parquet_uri = None
    outcome = "ok" if not failed and findings.height == 0 else ("gate_failed" if findings.height else "partial")
    _audit(audit_log, "deidentify", batch, project_key, result_plan, files.height, run.written, len(failed), outcome)
    if findings.height == 0:
        # manifest.parquet first, manifest.json last: a reader that sees manifest.json sees it all
        if manifest_parquet:
            write_atomic(
                out_fs,
                _join(batch_root, "manifest.parquet"),
                _manifest_parquet(ok_files),
                content_type=PARQUET_CONTENT_TYPE,
                metadata=run.metadata,
            )
            parquet_uri = _join(dst_text, batch, "manifest.parquet")
        manifest = _manifest(batch, priority.upper(), submitted, ok_files, failed, settings)
        manifest_path = _join(batch_root, "manifest.json")
        write_atomic(
            out_fs,
            manifest_path,
            json.dumps(manifest, indent=2).encode(),
            content_type="application/json",
            metadata=run.metadata,
        )
        manifest_uri = _join(dst_text, batch, "manifest.json")
    run.spent("commit", committing)
    return DeidentifyResult(
        batch_id=batch,
        batch_uri=batch_uri,
        written=run.written,
        failed=failed,
        studies=int(ok_files["study_uid"].n_unique()) if ok_files.height else 0,
        elapsed_s=time.perf_counter() - started,
        manifest_uri=manifest_uri,
        mapping_uri=mapping_uri,
        plan=result_plan,
        outputs=[_join(dst_text, batch, k) for k in ok_files["out_key"].to_list() if k not in flagged],
        findings=findings,
        skipped=run.skipped,
        manifest_parquet_uri=parquet_uri,
        duplicates=run.duplicates,
        timings=run.timings,
        removed=len(flagged),
    )


#: what a UID naming an output may be: digits and dots, at most 64 characters (PS3.5 9.1)
_NAMING_UID = rf"^{UID_SYNTAX}$"


def _named_files(scanned: Any, plan: Plan) -> pl.DataFrame:
    """``plan.files`` with each input's path and output key (null when a UID naming it is
    missing, or is not a UID: an output is named only from digits and dots, never from
    text a file put in a UID, which may identify or lead out of the output folder)."""
    return plan.files.join(
        scanned.instances.select("file_id", "path"), on="file_id", how="left"
    ).with_columns(
        # an empty UID names nothing: such an input is refused like one without the UID
        out_key=pl.when(
            pl.all_horizontal(
                [
                    pl.col(c).fill_null("").str.contains(_NAMING_UID) & (pl.col(c).str.len_bytes() <= UID_MAX)
                    for c in ("study_uid", "series_uid", "sop_uid")
                ]
            )
        ).then(
            pl.concat_str([pl.col("study_uid"), pl.col("series_uid"), pl.col("sop_uid") + ".dcm"], separator="/")
        )
    )


def _unnamed_failures(files: pl.DataFrame) -> list[dict[str, Any]]:
    """Inputs no output can be named for (see :func:`_named_files`), as failures."""
    unnamed = files.filter(pl.col("out_key").is_null()).select(
        "file_id",
        present=pl.all_horizontal(
            [pl.col(c).fill_null("").str.strip_chars() != "" for c in ("study_uid", "series_uid", "sop_uid")]
        ),
    )
    return [
        {
            "input": int(fid),
            "kind": "invalid",
            "reason": "a StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID that is not a UID "
            "(digits and dots, at most 64), and they name the output: fix it at the source, or "
            "de-identify without Retain UIDs so that new UIDs name it"
            if present
            else "no StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID, which name the "
            "output: not a storable DICOM instance; fix it at the source",
        }
        for fid, present in unnamed.iter_rows()
    ]


def _scan_failures(scanned: Any) -> list[dict[str, Any]]:
    """Inputs the scan could not read, as failures: damaged, empty, unreadable and not DICOM
    (a file handed to de-identification that is not DICOM may be a damaged image: it is
    never skipped in silence). A DICOMDIR is an index, not an image: it is left out."""
    return [
        {"input": int(fid), "reason": msg, "kind": kind}
        for fid, kind, msg in scanned.errors.select("file_id", "kind", "message").iter_rows()
        if kind != "dicomdir"
    ]


def _dry_run(run: _Run, plan: Plan, key: ProjectKey, audit_log: Any, started: float) -> DeidentifyResult:
    files = run.files()
    assert run.plan_writer is not None
    with run.timed("vault"):
        plan_uri = run.plan_writer.close()
    _audit(audit_log, "dry_run", run.batch, key, plan, files.height, 0, len(run.failed), "ok")
    return DeidentifyResult(
        batch_id=run.batch,
        batch_uri=run.batch_uri,
        written=files.height,
        failed=run.failed,
        studies=int(files["study_uid"].n_unique()),
        elapsed_s=time.perf_counter() - started,
        manifest_uri=None,
        mapping_uri=None,
        plan=plan,
        dry_run=True,
        plan_uri=plan_uri,
        timings=run.timings,
    )


_OCR_MISSING = (
    "may hold burned-in text (ultrasound, secondary capture or BurnedInAnnotation "
    "YES) and no [[pixel]] rule of the profile covers it, so it needs text detection: "
    "install it (`pip install 'dicomframe[ocr]'` and `apt-get install tesseract-ocr`), "
    "or add a [[pixel]] rule for this device, or pass --pixel-clean rules/off to write "
    "the pixels unchecked (then audit them)"
)


@dataclass
class _Run:
    """What the parts of one batch leave behind: per-file rows, failures and gate findings only."""

    batch: str
    batch_root: str
    batch_uri: str
    out_fs: Any
    jobs: int | None
    storage_options: dict[str, Any] | None
    source_fs: Any
    metadata: dict[str, str]
    failed: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0
    skipped: int = 0
    duplicates: int = 0
    done: int = 0
    #: output keys taken by an input (of this or an earlier part)
    outputs: set[str] = field(default_factory=set)
    _files: list[pl.DataFrame] = field(default_factory=list)
    _plan_files: list[pl.DataFrame] = field(default_factory=list)
    _errors: list[pl.DataFrame] = field(default_factory=list)
    _findings: list[pl.DataFrame] = field(default_factory=list)
    _summaries: list[pl.DataFrame] = field(default_factory=list)
    #: a dry run's plan, sealed into the vault at the end
    plan_writer: Any = None
    #: seconds per stage (see :attr:`DeidentifyResult.timings`)
    timings: dict[str, float] = field(default_factory=dict)
    #: what the leak gate flags is published too (see ``keep_flagged`` of :func:`deidentify`)
    keep_flagged: bool = False
    #: a connected ``distributed.Client``: the writing runs on its workers (see ``dask`` of :func:`deidentify`)
    client: Any = None

    def spent(self, stage: str, since: float) -> None:
        """Add the time from ``since`` (``time.perf_counter()``) to now to ``stage``."""
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - since

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time spent in the block to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spent(stage, started)

    def plan_part(self, scanned: Any, plan: Plan, vault_text: str, key: ProjectKey) -> None:
        """A dry run's part: its rows go to the vault's plan, its files and summary are kept."""
        from .vault import PlanWriter

        if self.plan_writer is None:
            self.plan_writer = PlanWriter(vault_text, self.batch, key, storage_options=self.storage_options)
        self.plan_writer.add(plan.table)
        files = _named_files(scanned, plan)
        # what the real run would refuse before writing, the dry run reports too
        self.failed.extend(_scan_failures(scanned) + _unnamed_failures(files))
        self._keep(scanned, plan, files)

    def _keep(self, scanned: Any, plan: Plan, files: pl.DataFrame) -> None:
        """What a part leaves behind: its per-file rows, scan errors and plan summary."""
        self._files.append(files)
        self._plan_files.append(plan.files)
        self._errors.append(scanned.errors)
        self._summaries.append(plan.summary())
        self.done += len(scanned.instances) + scanned.errors.height

    def add_part(
        self, scanned: Any, plan: Plan, existing: dict[str, int], progress: bool, whole: Any, only: bool = False
    ) -> None:
        """Write one part (scanned and planned) and gate what was written.

        ``only``: the batch's only part; outputs of an earlier run that this one does
        not produce are then refused before anything is written (see :meth:`check_stale`)."""
        started = time.perf_counter()
        failed = _scan_failures(scanned)
        files = _named_files(scanned, plan)
        failed.extend(_unnamed_failures(files))
        needs_ocr = files.filter((pl.col("pixel_clean") == "ocr") & pl.col("out_key").is_not_null())
        if needs_ocr.height:
            from .pixelclean import ocr_available

            if not ocr_available():
                for fid in needs_ocr["file_id"].to_list():
                    failed.append({"input": int(fid), "kind": "pixel_clean_failed", "reason": _OCR_MISSING})
        unchecked = {f["input"] for f in failed if f["kind"] == "pixel_clean_failed"}
        items = []
        rows_of = _rows_by_file(plan.table)
        named = files.filter(pl.col("out_key").is_not_null() & ~pl.col("file_id").is_in(list(unchecked)))
        if not named["file_id"].is_sorted():
            named = named.sort("file_id")  # listing order
        # two inputs of one instance (the same UIDs: a copy, or one instance in two encodings)
        # name one output: the first in listing order is written, in this and every run; the
        # others are duplicates (listed in the mapping, not failures)
        first = named["out_key"].is_first_distinct() & ~named["out_key"].is_in(list(self.outputs))
        duplicates = named.filter(~first)["file_id"].to_list()
        named = named.filter(first)
        self.outputs.update(named["out_key"].to_list())
        if only:
            self.check_stale(existing)
        sizes = dict(scanned.instances.select("file_id", "size").iter_rows())
        for file_id, out_key, path, job, regions in named.select(
            "file_id", "out_key", "path", "pixel_clean", "regions"
        ).iter_rows():
            pixels = None if job is None else ([tuple(r) for r in regions or []], job == "ocr", job != "trailing")
            items.append(
                (file_id, path, _join(self.batch_root, out_key), rows_of(file_id), existing.get(out_key), pixels,
                 sizes.get(file_id) or 0)
            )  # fmt: skip
        del rows_of
        checked: list[Any] = []
        from .apply import _is_local, remove_tmp_dirs

        # local outputs wait under temporary names until the gate has passed them: nothing
        # unchecked is visible under an output's name, not for a moment, not after a crash
        # (an object-store PUT is visible at once: a flagged object is removed after the gate)
        stage = self.out_fs is None or _is_local(self.out_fs)
        try:
            results = _run_apply(
                items, self.source_fs, self.out_fs, self.jobs, plan.additions, self.metadata, progress, checked,
                self.batch_root, whole=whole, done_before=self.done, errors_before=len(self.failed) + len(failed),
                stage=stage, client=self.client,
            )  # fmt: skip
            out_paths = {item[0]: item[2] for item in items}
            del items
            staged = {r[0]: r[6] for r in results if r[1] == "written" and r[6] is not None}
            self._gate_and_publish(
                scanned, plan, files, failed, results, duplicates, unchecked, checked, staged, out_paths, started
            )
        finally:
            if stage:
                remove_tmp_dirs(self.batch_root)  # what was not published (flagged, or a crash) goes

    def _gate_and_publish(
        self, scanned: Any, plan: Plan, files: pl.DataFrame, failed: list[dict[str, Any]], results: list[Any],
        duplicates: list[int], unchecked: set[int], checked: list[Any], staged: dict[int, str],
        out_paths: dict[int, str], started: float,
    ) -> None:
        """The rest of :meth:`add_part`: gate what was written, then publish what passed."""
        from .apply import publish_staged

        status = {r[0]: r[1:] for r in results}
        self.written += sum(1 for r in status.values() if r[0] == "written")
        self.skipped += sum(1 for r in status.values() if r[0] == "written" and r[4])
        for fid, (st, reason, *_) in status.items():
            if st != "written":
                failed.append({"input": int(fid), "reason": reason, "kind": st})
        # inputs refused before writing (listed in ``failed`` already): their status for the mapping
        status.update({fid: ("pixel_clean_failed", None, 0, None, False, None) for fid in unchecked})
        status.update({fid: ("duplicate", None, 0, None, False, None) for fid in duplicates})
        self.duplicates += len(duplicates)
        files = files.with_columns(
            status=pl.col("file_id").replace_strict({k: v[0] for k, v in status.items()}, default="invalid"),
            bytes=pl.col("file_id").replace_strict({k: v[2] for k, v in status.items()}, default=0),
            sha256=pl.col("file_id").replace_strict(
                {k: v[3] for k, v in status.items()}, default=None, return_dtype=pl.String
            ),
        )
        ok_files = files.filter(pl.col("status") == "written")
        self.spent("write", started)  # all of this part but its gate
        with self.timed("gate"):
            found = _leak_gate(ok_files, self.batch_uri, plan, self.jobs, self.storage_options, checked, staged)
            self._findings.append(found)
        if staged:
            with self.timed("write"):
                flagged = set() if self.keep_flagged else set(found["output"].drop_nulls().to_list())
                keys = dict(ok_files.select("file_id", "out_key").iter_rows())
                try:
                    publish_staged(
                        [(tmp, out_paths[fid]) for fid, tmp in staged.items() if keys.get(fid) not in flagged]
                    )
                except OSError as exc:
                    raise StorageError(
                        f"could not move the checked outputs into place under {self.batch_uri} "
                        f"({type(exc).__name__}); nothing unchecked is visible and the batch is not "
                        "committed: check the disk (space, permissions), then re-run the same command"
                    ) from None
        self.failed.extend(failed)
        self._keep(scanned, plan, files)

    def check_stale(self, existing: dict[str, int], written: bool = False) -> None:
        """Refuse a batch folder holding outputs this run does not produce.

        They come from an earlier run of this batch id with another key, profile or
        input: committed beside this run's, they would mix two de-identifications
        (pseudonyms of two keys, say) under one batch.
        """
        stale = sum(1 for k in existing if k.endswith(".dcm") and k not in self.outputs)
        if stale:
            raise UserInputError(
                f"{self.batch_uri} holds {stale:,} DICOM output{'s' if stale != 1 else ''} that this run does "
                "not produce: an earlier run of this batch id with another key, profile or input. "
                + ("This run's outputs are not committed" if written else "This run wrote nothing")
                + ". Delete that folder and run again, or give a new --batch-id"
            )

    def files(self) -> pl.DataFrame:
        return self._files[0] if len(self._files) == 1 else pl.concat(self._files, how="vertical_relaxed")

    def errors(self) -> pl.DataFrame:
        return self._errors[0] if len(self._errors) == 1 else pl.concat(self._errors, how="vertical_relaxed")

    def findings(self) -> pl.DataFrame:
        found = [f for f in self._findings if f.height]
        if not found:
            return self._findings[0]
        return found[0] if len(found) == 1 else pl.concat(found, how="vertical_relaxed")

    def result_plan(self, last: Plan) -> Plan:
        """The plan of a run in several parts: its files and summary (the element rows of
        the parts are not kept: ``--dry-run`` or :func:`dicomframe.plan` give them)."""
        summary = (
            pl.concat(self._summaries, how="vertical_relaxed")
            .group_by("action", "source")
            .agg(pl.col("elements").sum(), pl.col("files").sum())
            .sort("elements", "action", "source", descending=[True, False, False])
        )
        return replace(
            last,
            table=last.table.clear(),
            files=pl.concat(self._plan_files, how="vertical_relaxed"),
            totals=summary,
        )


def _audit(
    path: str | os.PathLike[str] | None,
    action: str,
    batch: str,
    key: ProjectKey,
    plan: Plan,
    inputs: int,
    written: int,
    failed: int,
    outcome: str,
) -> None:
    if path is None:
        return
    from .auditlog import log_event

    log_event(
        os.fspath(path),
        action,
        batch_id=batch,
        counts={"inputs": inputs, "written": written, "failed": failed},
        outcome=outcome,
        details={"profile": plan.profile.name, "key_id": key.key_id, "org": plan.org},
    )


def _make_tmp_files_ahead(out_fs: Any, batch_root: str, jobs: int | None, cleanup: list[Any]) -> Any:
    """Local output: make the writers' temporary files while this process scans and plans.

    Creating a file is a large part of writing one on some file systems (ext4 looks
    for a free inode past the recently deleted ones); a background thread does it
    meanwhile, without the GIL, on the core that the scan leaves idle. Returns the
    :class:`dicomframe.apply.TmpFiles` (None when not worth it) and registers in
    ``cleanup`` the removal of what is left unused, and of the folders it made
    when nothing was written into them.
    """
    from .apply import TmpFiles, _is_local, remove_tmp_dirs
    from .parallel import default_jobs
    from .scanner import IN_PROCESS_FILES

    if (jobs or default_jobs()) <= 1 or not _is_local(out_fs):
        return None
    made: list[str] = []
    folder = batch_root
    while folder and not os.path.isdir(folder) and folder != os.path.dirname(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    ahead = TmpFiles(batch_root, IN_PROCESS_FILES).start()

    def finish() -> None:
        ahead.close()
        remove_tmp_dirs(batch_root)
        for path in made:  # deepest first; a folder holding outputs stays
            try:
                os.rmdir(path)
            except OSError:
                break

    cleanup.append(finish)
    return ahead


def _rows_by_file(table: pl.DataFrame) -> Any:
    """``file_id -> [(tag_path, tag, vr, action, new_value), …]`` in plan order, for the work items
    (a :class:`dicomframe.apply.PlanRows`: the rows as slices of the plan's columns).

    Only what :func:`dicomframe.apply.edits_for` reads: removed rows (X) are left out but
    inside sequences (they tell it what the scan read as a sequence), and kept rows carry
    no new value (except the meta SOP Instance UID and the Specific Character Sets, which
    it reads).
    """
    action = pl.col("action")
    cols = table.select(
        "file_id", "tag_path", "tag", "vr", "action",
        pl.when((action == "K") & ~pl.col("tag").is_in([0x00020003, 0x00080005])).then(None).otherwise(pl.col("new_value"))
        .alias("new_value"),
    ).filter((action != "X") | (table["depth"] > 0))  # fmt: skip
    ids = cols["file_id"]
    runs = int(ids.ne_missing(ids.shift(1)).sum()) if cols.height else 0
    if runs != ids.n_unique():  # rows of a file not together: group them (not the usual case)
        parts = cols.partition_by("file_id", as_dict=True, maintain_order=True, include_key=False)
        return lambda file_id: parts[(file_id,)].rows() if (file_id,) in parts else []
    from .apply import PlanRows

    paths, tags, vrs, actions, values = (cols[c].to_list() for c in ("tag_path", "tag", "vr", "action", "new_value"))
    bounds = cols.select(
        "file_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("_i")
    ).group_by("file_id").agg(pl.col("_i").min().alias("start"), pl.len().alias("n"))
    where = {fid: (start, start + n) for fid, start, n in bounds.iter_rows()}

    def rows_of(file_id: int) -> Any:
        found = where.get(file_id)
        if not found:
            return []
        a, b = found  # a file's rows as columns: no tuple per row
        return PlanRows(paths[a:b], tags[a:b], vrs[a:b], actions[a:b], values[a:b])

    return rows_of


def _leak_gate(
    ok_files: pl.DataFrame,
    batch_uri: str,
    plan: Plan,
    jobs: int | None,
    storage_options: dict[str, Any] | None,
    checked: list[Any] | None = None,
    staged: dict[int, str] | None = None,
) -> pl.DataFrame:
    """Run the cheap PHI checks (see :mod:`dicomframe.leaks`) on what was written.

    ``checked`` holds Arrow element tables of outputs that the workers read from the
    very bytes they wrote (files and object-store PUTs, see :func:`dicomframe.apply.apply_chunk`);
    every other output is read back here with a scan: from its temporary file when it is
    ``staged`` (``{file_id: temporary file}``, not published yet), else from its own name.
    """
    from .apply import RETRY_ATTEMPTS, RETRY_FIRST_S, RETRY_MAX_S
    from .leaks import FINDINGS_SCHEMA, gate
    from .scanner import scan

    if ok_files.height == 0:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    # outputs in the order a scan of them reads them (the first of repeated names)
    outputs = ok_files["out_key"].unique(maintain_order=True)
    position = pl.DataFrame({"output": outputs, "_pos": pl.int_range(outputs.len(), dtype=pl.Int64, eager=True)})
    inline: pl.DataFrame | None = None
    done: set[int] = set()
    if checked:
        import pyarrow as pa

        # an output that several inputs were written to holds the last write only: read it back
        shared = ok_files.filter(pl.col("out_key").is_duplicated())["file_id"]
        written = pl.from_arrow(pa.concat_tables(checked))
        assert isinstance(written, pl.DataFrame)
        if shared.len():
            written = written.filter(~pl.col("file_id").is_in(shared.implode()))
        done = set(written["file_id"].unique().to_list())
        inline = _by_position(written, ok_files.select("file_id", pl.col("out_key").alias("output")), position)
    staged = staged or {}
    reads = [
        (staged.get(fid) or batch_uri + key, key)
        for fid, key in ok_files.select("file_id", "out_key").iter_rows()
        if fid not in done
    ]
    pending = [path for path, _ in reads]
    # what each read-back path holds (as a scan names it: objects without their scheme)
    holds = {_strip_protocol(path): key for path, key in reads}
    parts: list[pl.DataFrame] = []
    names = position.select(pl.col("_pos").alias("file_id"), "output")
    # each output's inputs (more than one when inputs share an instance's UIDs): a name's
    # words are sought in the outputs of its patient
    sources = ok_files.select(pl.col("file_id").alias("source"), pl.col("out_key").alias("output")).join(
        position, on="output"
    ).select(pl.col("_pos").alias("file_id"), "source")
    if not pending:
        assert inline is not None
        if not inline["file_id"].is_sorted():
            inline = inline.sort("file_id", maintain_order=True)
        return gate(inline, plan, sources).join(names, on="file_id", how="left").drop("file_id")
    # an output that cannot be read back is read again (transient faults), never let through unchecked
    for attempt in range(RETRY_ATTEMPTS):
        out_scan = scan(pending, jobs=jobs, storage_options=storage_options, progress=False)
        elements: pl.DataFrame | None = None
        if out_scan.instances.height:
            # the scan names objects without their scheme (``bucket/…``), files by their path
            read = out_scan.instances.select(
                "file_id",
                pl.col("path").str.split("://").list.last().str.strip_chars_start("/")
                .replace_strict(holds, default=None, return_dtype=pl.String).alias("output"),
            )  # fmt: skip
            elements = _by_position(out_scan.elements, read, position)
        if inline is not None:  # checked in the workers: one gate, in the order of a scan of all
            elements = inline if elements is None else pl.concat([inline, elements]).sort("file_id", maintain_order=True)
            inline = None
        if elements is not None:
            parts.append(gate(elements, plan, sources).join(names, on="file_id", how="left").drop("file_id"))
        unread = {_strip_protocol(p) for p in out_scan.errors["path"].to_list()}
        pending = [p for p in pending if _strip_protocol(p) in unread]
        if not pending:
            break
        time.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt))
    else:
        raise StorageError(
            f"the leak gate could not read back {len(pending)} written object(s) under {batch_uri} after "
            f"{RETRY_ATTEMPTS} attempts; the batch is not committed: check the service, then re-run the "
            "same command (finished files are not written again)"
        )
    return pl.concat(parts) if parts else pl.DataFrame(schema=FINDINGS_SCHEMA)


def _remove_outputs(out_fs: Any, batch_root: str, keys: list[str]) -> None:
    """Remove the outputs the leak gate found something in (gone already: fine).

    The batch is not committed (no manifest.json) either way; a re-run after the profile
    is fixed writes them again."""
    from .apply import _is_local, _url, with_retries

    for key in keys:
        path = _join(batch_root, key)
        if out_fs is None or _is_local(out_fs):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue

        def remove(path: str = path) -> None:
            with contextlib.suppress(FileNotFoundError):
                out_fs.rm_file(path)

        with_retries(remove, _url(out_fs, path), "removing")


def _by_position(elements: pl.DataFrame, names: pl.DataFrame, position: pl.DataFrame) -> pl.DataFrame:
    """Element rows with ``file_id`` replaced by the output's position (see ``_leak_gate``)."""
    ids = names.join(position, on="output", how="left").select("file_id", "_pos")
    to_position = dict(zip(ids["file_id"].to_list(), ids["_pos"].to_list(), strict=True))
    return elements.with_columns(
        pl.col("file_id").replace_strict(to_position, default=None, return_dtype=pl.Int64)
    )


def _strip_protocol(path: str) -> str:
    return path.split("://", 1)[-1].lstrip("/")


def _check_destination(out_fs: Any, out_root: str, dst_text: str) -> None:
    """Fail fast, before any work, when the bucket or container is missing or access is refused."""
    from .apply import _is_local

    if _is_local(out_fs) or "memory" in str(getattr(out_fs, "protocol", "")):
        return
    bucket = out_root.split("/", 1)[0]
    scheme = dst_text.split("://", 1)[0]
    url = f"{scheme}://{bucket}"
    info = with_retries(lambda: out_fs.info(bucket), url, "checking the destination")
    if info.get("type") not in ("directory", None):
        raise StorageError(f"the destination {url} is not a bucket or container: check the URL")


def _existing_outputs(out_fs: Any, batch_root: str, dst_text: str) -> dict[str, int]:
    """Outputs of an earlier run of this batch: ``{key under the batch: size}``.

    Temporary files that a killed local run left behind are removed.
    """
    from .apply import _is_local

    url = dst_text.rstrip("/") + "/" + batch_root.rsplit("/", 1)[-1] + "/"
    if _is_local(out_fs):
        if not os.path.isdir(batch_root):
            return {}
        from .apply import TMP_DIR_PREFIX

        if all(name.startswith(TMP_DIR_PREFIX) for name in os.listdir(batch_root)):
            # only temporary folders (this run's files made ahead, or a killed run's): no
            # outputs yet; what a killed run left in them goes with them at the end
            return {}
    else:
        out_fs.invalidate_cache(batch_root)

    def listing() -> dict[str, Any]:
        try:
            found: dict[str, Any] = out_fs.find(batch_root, detail=True)
        except FileNotFoundError:
            return {}
        return found

    from .apply import RETRY_ATTEMPTS

    # a listing is several requests (list, then stat of an empty prefix): a few more attempts
    found = with_retries(listing, url, "listing", attempts=2 * RETRY_ATTEMPTS)
    existing: dict[str, int] = {}
    prefix = batch_root.rstrip("/") + "/"
    for name, info in found.items():
        key = name[len(prefix) :] if name.startswith(prefix) else None
        if key is None or info.get("type", "file") == "directory":
            continue
        base = key.rsplit("/", 1)[-1]
        if base.startswith(".") and base.endswith(".tmp") and _is_local(out_fs):
            os.remove(name)  # half-written by a killed run: never visible under its final name
            continue
        existing[key] = int(info.get("size") or 0)
    return existing


def _same_place(outer: str, inner: str) -> bool:
    """Whether ``inner`` is ``outer`` or inside it (local paths through their links, and
    ``file://`` URLs as the paths they are)."""

    def local(text: str) -> str | None:
        if text.lower().startswith("file://"):
            text = text[len("file://") :]
        return None if "://" in text else os.path.realpath(text)

    a, b = local(outer), local(inner)
    if a is None or b is None:
        if a is not None or b is not None:
            return False  # one local, one remote
        a, b = outer.rstrip("/"), inner.rstrip("/")
        return b == a or b.startswith(a + "/")
    return b == a or b.startswith(a.rstrip(os.sep) + os.sep)


def _new_batch_id() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def _source_fs(src: Any, storage_options: dict[str, Any] | None) -> Any:
    text = os.fspath(src) if not isinstance(src, list | tuple) else os.fspath(src[0])
    if "://" in text and not text.lower().startswith("file://"):
        from .sources import get_filesystem

        return get_filesystem(text, storage_options)[0]
    return None


#: read-back element rows converted to Arrow at once (see _run_apply)
_CHECKED_BATCH_ROWS = 1 << 16


def _run_apply(
    items: list[Any],
    src_fs: Any,
    out_fs: Any,
    jobs: int | None,
    additions: dict[str, Any],
    metadata: dict[str, str],
    progress: bool | None = None,
    checked: list[Any] | None = None,
    batch_root: str | None = None,
    whole: Any = None,
    done_before: int = 0,
    errors_before: int = 0,
    stage: bool = False,
    client: Any = None,
) -> list[Any]:
    """Apply the work items; with ``checked``, collect there the element tables of the outputs
    that the workers read from the bytes they wrote (for the leak gate). Local temporary
    files are made in per-thread folders under ``batch_root``, removed at the end; with
    ``stage``, local outputs stay there (see :func:`dicomframe.apply.apply_chunk`) and the
    caller publishes them and removes the folders.
    ``whole``: the progress bar of a run in parts (``done_before`` inputs done), else
    this call shows its own.
    ``client``: a connected ``distributed.Client``, whose workers write the chunks."""
    from ._worker import _rows_to_arrow
    from .apply import _AHEAD, _is_local, apply_chunk, remove_tmp_dirs
    from .parallel import default_jobs, ordered_map, thread_map
    from .scanner import IN_PROCESS_FILES, Progress, auto_progress

    n_jobs = jobs or default_jobs()
    memory = "memory" in str(getattr(out_fs, "protocol", "")) or "memory" in str(getattr(src_fs, "protocol", ""))
    if client is not None:
        from .distributed import total_threads

        n_jobs = total_threads(client)  # memory:// was refused with dask before any work
    # worker processes pay off once the work outweighs their start-up (about 0.3 s)
    small = len(items) < IN_PROCESS_FILES
    local_out = out_fs is None or _is_local(out_fs)
    # an object store is waited on, not computed for: more writers than cores keep its
    # downloads and uploads going
    remote = not memory and (not local_out or (src_fs is not None and not _is_local(src_fs)))
    writers = max(n_jobs, REMOTE_WRITERS) if remote else n_jobs
    # threads share the chunks at no cost: small ones keep every writer busy to the end
    most = 16 if (memory or small) and n_jobs > 1 else 64
    size = max(4, min(most, len(items) // (writers * 4) or 4))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    results: list[Any] = []
    tmp_root = batch_root if batch_root is not None and local_out else None
    ahead = _AHEAD.get(tmp_root.rstrip("/")) if tmp_root is not None else None
    if ahead is not None:
        ahead.stop()  # the writers make the rest: one more thread making files only slows them
    bar = Progress(len(items), auto_progress() if progress is None else progress, "writing")
    threaded = (memory or small) and n_jobs > 1 and client is None
    if client is not None:
        from .distributed import dask_map

        if src_fs is None:  # a worker has its own working folder: relative paths made absolute
            chunks = [[_absolute_item(item) for item in chunk] for chunk in chunks]
        parts: Any = dask_map(
            apply_chunk, chunks, client, src_fs, out_fs, additions, metadata, checked is not None, tmp_root, stage,
            what="de-identification",
        )  # fmt: skip
    elif threaded:
        # in this process, threads still use the other cores: reading, hashing (sha256)
        # and writing the pixel bytes release the GIL
        check = checked is not None
        parts = thread_map(
            lambda c: apply_chunk(c, src_fs, out_fs, additions, metadata, check, tmp_root, stage), chunks, writers
        )
    else:
        parts = ordered_map(
            apply_chunk,
            chunks,
            n_jobs,
            src_fs,
            out_fs,
            additions,
            metadata,
            checked is not None,
            tmp_root,
            stage,
            in_process=memory or small,
            what="de-identification",
        )
    # read-back rows become Arrow tables in a few large batches: each conversion lets go of
    # the GIL several times (Arrow kernels), and while writers run, each time costs a wait
    ids: list[int] = []
    rows: list[Any] = []
    try:
        for part in parts:
            for result in part:
                if len(result) > 7:
                    if result[7] is not None and checked is not None:
                        ids.extend([result[0]] * len(result[7]))
                        rows.extend(result[7])
                    result = result[:7]
                results.append(result)
            if len(rows) >= _CHECKED_BATCH_ROWS and checked is not None:
                checked.append(_rows_to_arrow(ids, rows))
                ids, rows = [], []
            errors = sum(1 for r in results if r[1] != "written")
            bar.update(len(results), errors)
            if whole is not None:
                whole.update(done_before + len(results), errors_before + errors)
        if rows and checked is not None:
            checked.append(_rows_to_arrow(ids, rows))
    finally:
        if threaded or client is not None:
            parts.close()  # writers not started are cancelled; the running ones finish first
        if tmp_root is not None and not stage:
            remove_tmp_dirs(tmp_root)
        bar.close()
    return results


#: why memory:// does not go with dask=
_DASK_MEMORY = (
    "memory:// files live in this process only: Dask workers cannot read or write them. Run without "
    "dask=, or use a folder the workers share or an object store"
)


def _absolute_item(item: Any) -> Any:
    """A work item whose local input path is absolute (the same file from any working folder)."""
    path = item[1]
    return item if os.path.isabs(path) else (item[0], os.path.abspath(path), *item[2:])


def _dask_scan(source: Any, client: Any, storage_options: dict[str, Any] | None, progress: bool) -> Any:
    """A part's scan on the Dask workers of ``client`` (see :func:`dicomframe.scanner.scan`)."""
    from .distributed import total_threads
    from .scanner import _scan

    return _scan(
        source, jobs=total_threads(client), output=None, storage_options=storage_options, progress=progress,
        chunk_size=None, on_progress=None, client=client,
    )  # fmt: skip


def _settings_digest(
    key: ProjectKey, prof: Profile, org: str, date_shift: DateShift | None, pixel_clean: str
) -> str:
    """What decides the bytes of a batch's outputs besides its inputs, as a digest: the
    project key (by its id), the profile (options, rules, pixel rules), ``--org``, the date
    shift range and the pixel clean mode. Written into ``manifest.json`` (``settings``), so
    that a committed batch is never changed by a run with other settings."""
    import hashlib

    shift = date_shift or DateShift()
    described = {
        "key_id": key.key_id,
        "options": sorted(option.value for option in prof.options),
        "rules": [repr(rule) for rule in prof.rules],
        "pixel_rules": [repr(rule) for rule in prof.pixel_rules],
        "org": org,
        "date_shift": [shift.min_days, shift.max_days],
        "pixel_clean": pixel_clean,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def _manifest_there(out_fs: Any, folder: str) -> bytes | None:
    """The bytes of ``folder/manifest.json`` (local or object store), or None when absent."""
    from .apply import _is_local, _url

    path = _join(folder, "manifest.json")
    if out_fs is None or _is_local(out_fs):
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read() -> bytes | None:
        try:
            return bytes(out_fs.cat_file(path))
        except (FileNotFoundError, IsADirectoryError):
            return None

    found: bytes | None = with_retries(read, _url(out_fs, path), "reading")
    return found


def _check_not_a_batch(out_fs: Any, out_root: str, dst_text: str) -> None:
    """Refuse a DST that is itself a batch's folder (it has a manifest.json): the new batch
    would be made inside a finished one. DST is the folder that holds the batches."""
    if _manifest_there(out_fs, out_root) is not None:
        raise UserInputError(
            f"{dst_text} is a batch's own folder (it has a manifest.json): give DST the folder that holds "
            "the batches (its parent), where each run adds DST/<batch_id>/"
        )


def _check_committed(out_fs: Any, batch_root: str, batch_uri: str, settings: str) -> None:
    """Refuse to change a committed batch (its ``manifest.json`` is there) with other settings.

    Readers may have taken it already; a re-run with the same settings finds every output
    there and changes nothing."""
    data = _manifest_there(out_fs, batch_root)
    if data is None:
        return
    try:
        found = json.loads(data).get("settings")
    except (ValueError, AttributeError):
        found = None
    if found != settings:
        made = (
            "by an earlier dicomframe that did not record its settings"
            if found is None
            else "with other settings: another project key, profile or options, --org, date shift or pixel cleaning"
        )
        raise UserInputError(
            f"{batch_uri} is a committed batch (it has its manifest.json) made {made}. A committed batch is "
            "never changed (readers may have taken it). Give a new --batch-id, or delete that batch folder to "
            "make it again"
        )


def _manifest(
    batch: str, priority: str, submitted: str, ok: pl.DataFrame, failed: list[dict[str, Any]], settings: str = ""
) -> dict[str, Any]:
    studies = []
    if ok.height:
        for (cloud_id,), group in ok.sort("out_key").group_by("cloud_study_id", maintain_order=True):
            studies.append(
                {
                    "cloud_study_id": cloud_id,
                    "study_instance_uid": group["study_uid"][0],
                    "image_count": group.height,
                    "files": group["out_key"].to_list(),
                }
            )
    return {
        "version": MANIFEST_VERSION,
        "generator": f"dicomframe {__version__}",
        "batch_id": batch,
        "priority": priority,
        "submitted_at": submitted,
        "total_studies": len(studies),
        "total_images": int(ok.height),
        "studies": studies,
        "failed": [{"input": f["input"], "kind": f["kind"], "reason": f["reason"]} for f in failed],
        # what decided the outputs' bytes besides the inputs (key id, profile, options, …), as a
        # digest: a run with other settings does not change a committed batch
        "settings": settings,
    }


def _manifest_parquet(ok: pl.DataFrame) -> bytes:
    """One row per written file, for dataframe queries (no original identifier)."""
    import io

    table = ok.sort("out_key").select(
        pl.col("out_key").alias("object_key"),
        pl.col("bytes").cast(pl.Int64),
        pl.col("sha256").cast(pl.String),
        "cloud_study_id",
        pl.col("study_uid").alias("study_instance_uid"),
        pl.col("series_uid").alias("series_instance_uid"),
        pl.col("sop_uid").alias("sop_instance_uid"),
        pl.col("modality").cast(pl.String),
        pl.col("series_description").cast(pl.String),
        pl.col("pixel_clean").cast(pl.String),
    )
    buffer = io.BytesIO()
    table.write_parquet(buffer, statistics=False)
    return buffer.getvalue()


def _write_mapping(
    vault_text: str,
    batch: str,
    files: pl.DataFrame,
    scan_errors: pl.DataFrame,
    org: str,
    submitted: str,
    key: ProjectKey,
    storage_options: dict[str, Any] | None,
    base: str = "",
) -> str:
    """The batch's mapping table (original ↔ pseudonymous), encrypted into the vault only.

    ``base``: what the source's paths start with (:attr:`dicomframe.sources.Source.base`);
    ``original_relative_path`` is the path without it, ``original_path`` the whole path."""
    from .vault import write_mapping

    mapping = files.select(
        pl.lit(batch).alias("batch_id"),
        pl.lit(submitted).alias("submitted_at"),
        pl.lit(org).alias("org"),
        "cloud_study_id",
        pl.col("original_patient_id"),
        pl.col("patient_id").alias("pseudonymous_patient_id"),
        pl.col("original_study_uid").alias("original_study_instance_uid"),
        pl.col("study_uid").alias("study_instance_uid"),
        pl.col("original_series_uid").alias("original_series_instance_uid"),
        pl.col("series_uid").alias("series_instance_uid"),
        pl.col("original_sop_uid").alias("original_sop_instance_uid"),
        pl.col("sop_uid").alias("sop_instance_uid"),
        pl.col("original_accession").alias("original_accession_number"),
        pl.col("accession").alias("accession_number"),
        "date_offset_days",
        pl.col("path").alias("original_path"),
        pl.col("path").str.strip_prefix(base).alias("original_relative_path"),
        pl.col("out_key").alias("output_path"),
        "status",
        pl.col("file_id").cast(pl.Int64).alias("input"),  # the input number of the summary and manifest
    )
    errors = scan_errors.select(
        pl.lit(batch).alias("batch_id"),
        pl.col("path").alias("original_path"),
        pl.col("path").str.strip_prefix(base).alias("original_relative_path"),
        pl.col("kind").alias("status"),
        pl.col("file_id").cast(pl.Int64).alias("input"),
    )
    mapping = pl.concat([mapping, errors], how="diagonal")
    return write_mapping(vault_text, batch, mapping, key, storage_options=storage_options)

