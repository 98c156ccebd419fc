"""Scan: study folders or object storage → instances, elements and errors tables.

Files are read header-only by the fast walker in :mod:`dicomframe._parse`
(pydicom is the fallback for rare encodings), in parallel across processes,
in chunks whose results stream to Parquet, so memory stays flat however many
files there are. A file that cannot be read becomes a row of the errors table;
the scan itself only fails for a bad source (missing folder, unreadable bucket).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

import pyarrow as pa
import pyarrow.compute as pc

from ._worker import (
    ELEMENTS_ARROW,
    FILE_COLUMNS,
    Chunk,
    column,
    empty_table,
    scan_chunk,
    shown_name,
    storage_environment,
)
from .errors import DicomframeError, ScanError, StorageError, UserInputError
from .parallel import default_jobs, ordered_map, thread_map
from .schema import ERRORS_ARROW, cast_instances, empty_instances
from .sources import FileRef, Source, resolve_source
from .tags import TAGS_BY_KEYWORD

__all__ = ["FAILURE_KINDS", "ScanResult", "ScanSummary", "scan"]

#: local scans of fewer files than this run in this process: starting worker
#: processes costs more (about 0.3 s) than parsing them (about 0.1 ms per file)
IN_PROCESS_FILES = 3000
#: threads that read headers from an object store at once (see :func:`_remote_threads`)
REMOTE_THREADS = 8
#: Arrow memory for the scan's own buffers: the system allocator returns freed
#: memory at once (the default pool keeps tens of MB cached); the process-wide
#: default pool is left alone
POOL = pa.system_memory_pool()
#: rows per Parquet row group of the elements table
ROW_GROUP_ROWS = 32 * 1024
#: instance rows merged into one block while scanning
INSTANCE_BLOCK_ROWS = 2048
#: error kinds that mean a file was damaged (non-zero exit); others are reported only
FAILURE_KINDS = frozenset(("truncated", "corrupt", "unreadable", "empty"))

_FIXED = {name for name, _ in FILE_COLUMNS}


# -- main side --------------------------------------------------------------------


@dataclass
class ScanSummary:
    """Counts for the one-screen summary (no identifying values)."""

    files: int
    instances: int
    errors: int
    failed: int
    errors_by_kind: dict[str, int]
    patients: int
    studies: int
    series: int
    modalities: dict[str, int]
    elapsed_s: float
    bytes: int
    jobs: int

    @property
    def files_per_second(self) -> float:
        return self.files / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs, in display order."""
        mods = ", ".join(f"{m} {n}" for m, n in self.modalities.items()) or "-"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.errors_by_kind.items())) or "-"
        return [
            ("files", f"{self.files:,}"),
            ("instances read", f"{self.instances:,}"),
            ("patients", f"{self.patients:,}"),
            ("studies", f"{self.studies:,}"),
            ("series", f"{self.series:,}"),
            ("modalities", mods),
            ("errors", f"{self.errors:,} ({kinds})"),
            ("bytes", _human_bytes(self.bytes)),
            ("elapsed", f"{self.elapsed_s:.2f} s"),
            ("throughput", f"{self.files_per_second:,.0f} files/s on {self.jobs} worker(s)"),
        ]

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows())

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in self.rows())
        return f"<table>{cells}</table>"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _to_polars(table: pa.Table) -> pl.DataFrame:
    import polars as pl

    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass
class ScanResult:
    """The three tables of a scan, as polars DataFrames (Arrow underneath).

    Attributes
    ----------
    instances
        One row per file read: ``file_id``, ``path``, ``size``, ``transfer_syntax``,
        ``sop_class_uid``… then one typed column per top-level attribute keyword.
    elements
        One row per element at any depth (``tag_path`` like ``0040A730[0].0040A123``).
        Loaded from Parquet on first use when the scan was written to disk.
    errors
        One row per file that could not be read: ``path``, ``kind``, ``message``.

    ``.to_arrow()`` of any of them, or ``.to_pandas()``, gives the other forms.
    """

    instances_table: pa.Table
    errors_table: pa.Table
    summary: ScanSummary
    outputs: dict[str, str] = field(default_factory=dict)
    elements_table: pa.Table | None = None
    _frames: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)

    def _frame(self, name: str, table: pa.Table | None) -> pl.DataFrame:
        if name not in self._frames:
            if table is None:
                import polars as pl

                self._frames[name] = pl.read_parquet(self.outputs[name])
            else:
                self._frames[name] = _to_polars(table)
        return self._frames[name]

    @property
    def instances(self) -> pl.DataFrame:
        return self._frame("instances", self.instances_table)

    @property
    def errors(self) -> pl.DataFrame:
        return self._frame("errors", self.errors_table)

    @property
    def elements(self) -> pl.DataFrame:
        return self._frame("elements", self.elements_table)

    @property
    def failed(self) -> pl.DataFrame:
        """Error rows for damaged files (the ones that make the CLI exit non-zero)."""
        import polars as pl

        return self.errors.filter(pl.col("kind").is_in(sorted(FAILURE_KINDS)))

    def write_parquet(self, output: str) -> dict[str, str]:
        """Write the three tables (see :func:`scan` for the layout); return their paths."""
        paths = output_paths(output)
        _write_table(self.instances.to_arrow(), paths["instances"])
        _write_table(self.elements.to_arrow(), paths["elements"])
        _write_table(self.errors.to_arrow(), paths["errors"])
        return paths

    def __repr__(self) -> str:
        return (
            f"ScanResult(instances={self.instances_table.num_rows:,} rows × "
            f"{self.instances_table.num_columns} columns, errors={self.errors_table.num_rows:,}, "
            f"{self.summary.files_per_second:,.0f} files/s)"
        )

    def _repr_html_(self) -> str:
        mods = self.summary.modalities
        return (
            "<div><b>dicomframe scan</b>"
            + self.summary._repr_html_()
            + "<p>Tables: <code>.instances</code>, <code>.elements</code>, <code>.errors</code>"
            + (f" — top modality {next(iter(mods))}" if mods else "")
            + "</p></div>"
        )


def output_paths(output: str) -> dict[str, str]:
    """Where the three tables go for ``-o OUTPUT``.

    ``cohort.parquet`` → ``cohort.parquet`` (instances), ``cohort.elements.parquet``,
    ``cohort.errors.parquet``; any other name is a folder holding
    ``instances.parquet``, ``elements.parquet`` and ``errors.parquet``.
    """
    out = os.fspath(output)
    if out.endswith(".parquet"):
        stem = out[: -len(".parquet")]
        return {
            "instances": out,
            "elements": f"{stem}.elements.parquet",
            "errors": f"{stem}.errors.parquet",
        }
    sep = "" if out.endswith("/") else "/"
    return {name: f"{out}{sep}{name}.parquet" for name in ("instances", "elements", "errors")}


class _AtomicParquet:
    """A Parquet file written under a temporary name and renamed when complete."""

    def __init__(self, target: str, schema: pa.Schema) -> None:
        import fsspec
        import pyarrow.parquet as pq

        self.fs, self.path = fsspec.core.url_to_fs(target)
        parent = self.path.rsplit("/", 1)[0] if "/" in self.path else "."
        try:
            self.fs.makedirs(parent, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - any back-end's error: a message without values
            raise StorageError(f"cannot create the output folder for {target!r} ({type(exc).__name__})") from None
        self.tmp = f"{parent}/.{self.path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp"
        self.fh = self.fs.open(self.tmp, "wb")
        self.writer = pq.ParquetWriter(self.fh, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table, row_group_size=256 * 1024)
            # the Parquet encoder allocates from the default pool, which keeps freed
            # pages cached; hand them back so a long scan's memory stays flat
            pa.default_memory_pool().release_unused()

    def commit(self) -> None:
        self.writer.close()
        self.fh.close()
        self.fs.mv(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
            self.fh.close()
        finally:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)


def _write_table(table: pa.Table, target: str) -> None:
    w = _AtomicParquet(target, table.schema)
    try:
        w.write(table)
        w.commit()
    except BaseException:
        w.abort()
        raise


def _chunks(files: list[FileRef], size: int) -> Iterator[list[FileRef]]:
    for i in range(0, len(files), size):
        yield files[i : i + size]


class _Blocks:
    """Collects small Arrow tables into blocks of about ``rows`` rows.

    Elements leave as Parquet row groups of a useful size; instance tables
    (whose columns differ from chunk to chunk) are merged as they come, so the
    final concatenation sees a few blocks, not thousands of slivers.
    """

    def __init__(self, rows: int, promote: bool = False) -> None:
        self.rows = rows
        self.promote = promote
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.done: list[pa.Table] = []

    def add(self, table: pa.Table) -> pa.Table | None:
        """Add a table; return a full block when one is complete (it is also kept)."""
        if not table.num_rows:
            return None
        self.pending.append(table)
        self.pending_rows += table.num_rows
        return self.flush() if self.pending_rows >= self.rows else None

    def flush(self) -> pa.Table | None:
        if not self.pending:
            return None
        options = {"promote_options": "default"} if self.promote else {}
        block = pa.concat_tables(self.pending, memory_pool=POOL, **options).combine_chunks(POOL)
        self.pending, self.pending_rows = [], 0
        self.done.append(block)
        return block

    def take(self) -> None:
        """Forget the completed blocks (they were written out)."""
        self.done.clear()

    def all(self) -> list[pa.Table]:
        self.flush()
        return self.done


def _build_instances(tables: list[pa.Table]) -> pa.Table:
    """One typed instances table from the workers' all-string tables."""
    if not tables:
        return empty_instances()
    table = pa.concat_tables(tables, promote_options="default", memory_pool=POOL).combine_chunks(POOL)
    return _order_columns(cast_instances(table, _FIXED))


def _order_columns(table: pa.Table) -> pa.Table:
    names = table.column_names
    fixed = [name for name, _ in FILE_COLUMNS if name in names]
    rest = sorted((c for c in names if c not in _FIXED), key=lambda c: TAGS_BY_KEYWORD.get(c, 1 << 32))
    return table.select(fixed + rest)


def _errors_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    rows = sorted(rows, key=lambda r: r[0])
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in ERRORS_ARROW]
    return pa.Table.from_arrays(
        [column(list(values), f.type) for values, f in zip(columns, ERRORS_ARROW, strict=True)],
        schema=ERRORS_ARROW,
    )


def _counts(array: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counts = pc.value_counts(array).to_pylist()
    ordered = sorted(counts, key=lambda c: (-c["counts"], str(c["values"])))
    return {("?" if c["values"] is None else str(c["values"]) or "(empty)"): int(c["counts"]) for c in ordered}


def _summarise(instances: pa.Table, errors: pa.Table, n_files: int, elapsed: float, nbytes: int, jobs: int) -> ScanSummary:
    def n_unique(col: str) -> int:
        if col not in instances.column_names:
            return 0
        return int(pc.count_distinct(instances.column(col), mode="only_valid").as_py())

    modalities = _counts(instances.column("Modality")) if "Modality" in instances.column_names else {}
    kinds = _counts(errors.column("kind")) if errors.num_rows else {}
    failed = sum(n for k, n in kinds.items() if k in FAILURE_KINDS)
    return ScanSummary(
        files=n_files,
        instances=instances.num_rows,
        errors=errors.num_rows,
        failed=failed,
        errors_by_kind=kinds,
        patients=n_unique("PatientID"),
        studies=n_unique("StudyInstanceUID"),
        series=n_unique("SeriesInstanceUID"),
        modalities=modalities,
        elapsed_s=elapsed,
        bytes=nbytes,
        jobs=jobs,
    )


def auto_progress() -> bool:
    import sys

    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            return True
    except ImportError:
        pass
    return sys.stderr.isatty()


def _remote_threads(source: Source, jobs: int) -> int:
    """Threads for a scan of an object store in this process (0: not such a scan).

    Reading a header from an object store is mostly waiting for the service: fewer
    files than :data:`IN_PROCESS_FILES` are read by threads here, several requests at
    once, rather than by worker processes that each wait in turn."""
    if source.is_local or source.shares_memory_only or jobs <= 1 or len(source.files) >= IN_PROCESS_FILES:
        return 0
    return max(jobs, REMOTE_THREADS)


def _iter_chunks(source: Source, jobs: int, chunk_size: int, client: Any = None) -> Iterator[Chunk]:
    chunks = list(_chunks(source.files, chunk_size))
    if client is not None:
        yield from _dask_chunks(source, chunks, jobs, client)
        return
    small = len(source.files) < IN_PROCESS_FILES and source.is_local
    threads = _remote_threads(source, jobs)
    remote = not (source.is_local or source.shares_memory_only)
    try:
        if threads and len(chunks) > 1:
            env = storage_environment()
            yield from thread_map(lambda chunk: scan_chunk(chunk, source.fs, env), chunks, threads)
            return
        # worker processes reading an object store: each reads its chunk with a few threads
        readers = REMOTE_THREADS // max(1, jobs) if remote else 1
        yield from ordered_map(
            scan_chunk,
            chunks,
            jobs,
            source.fs,
            storage_environment(),
            max(1, readers),
            in_process=small or source.shares_memory_only,
            what="scan",
        )
    except DicomframeError as exc:
        raise ScanError(str(exc)) from None


def _dask_chunks(source: Source, chunks: list[list[FileRef]], threads: int, client: Any) -> Iterator[Chunk]:
    """The chunks scanned on the Dask workers of ``client`` (see :mod:`dicomframe.distributed`).

    A worker has its own working folder: relative local paths are sent made absolute,
    and the tables keep them as given. No environment is sent (it holds credentials):
    the workers use their own."""
    from .distributed import dask_map

    if source.shares_memory_only:
        raise UserInputError(
            "memory:// files live in this process only: Dask workers cannot read them. Scan them "
            "without dask=, or put them where the workers reach them (a shared folder, an object store)"
        )
    remote = not source.is_local
    readers = max(1, REMOTE_THREADS // max(1, threads)) if remote else 1
    relative = source.is_local and any(not os.path.isabs(ref.path) for ref in source.files)
    sent: Sequence[list[FileRef]] = chunks
    if relative:
        sent = [[_absolute(ref) for ref in chunk] for chunk in chunks]
    try:
        for chunk, done in zip(chunks, dask_map(scan_chunk, sent, client, source.fs, None, readers, what="scan"), strict=True):
            yield _with_paths(done, chunk) if relative else done
    except DicomframeError as exc:
        if isinstance(exc, UserInputError):
            raise
        raise ScanError(str(exc)) from None


def _absolute(ref: FileRef) -> FileRef:
    return ref if os.path.isabs(ref.path) else FileRef(ref.file_id, os.path.abspath(ref.path), ref.size)


def _with_paths(chunk: Chunk, refs: list[FileRef]) -> Chunk:
    """``chunk`` (scanned from absolute paths) with the paths as ``refs`` give them."""
    given = {ref.file_id: ref.path for ref in refs}
    instances = chunk.instances
    if instances.num_rows and "path" in instances.column_names:
        paths = pa.array([given[fid] for fid in instances.column("file_id").to_pylist()], pa.string())
        instances = instances.set_column(instances.column_names.index("path"), "path", paths)
    errors = [
        (row[0], shown_name(given[row[0]]), *row[2:]) if row[0] in given else row for row in chunk.errors
    ]
    return Chunk(elements=chunk.elements, instances=instances, errors=errors, n_files=chunk.n_files)


def scan(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Source,
    *,
    jobs: int | None = None,
    output: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    dask: Any = None,
) -> ScanResult:
    """Scan DICOM files into instances, elements and errors tables.

    Parameters
    ----------
    src
        A folder (recursive; any file names), a file, a glob such as
        ``"cohort/**/*.dcm"``, an fsspec URL (``s3://bucket/prefix``,
        ``az://container/prefix``, ``gs://…``, ``memory://…``) or a list of these.
    jobs
        Worker processes (default: all cores). ``1`` scans in this process.
    output
        Write Parquet as the scan goes, so memory stays flat:
        ``cohort.parquet`` writes ``cohort.parquet`` (instances),
        ``cohort.elements.parquet`` and ``cohort.errors.parquet``; any other name
        is a folder receiving ``instances.parquet``, ``elements.parquet`` and
        ``errors.parquet``. Local paths or fsspec URLs. Files appear only when
        complete.
    storage_options
        fsspec options for URL sources (credentials, endpoints).
    progress
        Show a progress bar (default: when attached to a terminal or notebook).
    chunk_size
        Files per task sent to a worker (default: chosen from the file count).
    on_progress
        Called with ``(files_done, files_total)`` after each chunk.
    dask
        Scan on a Dask cluster (extra ``dask``): a ``distributed.Client``, or the
        scheduler's address such as ``"tcp://scheduler:8786"`` (a client is connected
        for this scan, then closed). The workers read the files themselves: local
        paths must name the same files on every worker (a shared file system), URLs
        must be reachable from them, with credentials from their own environment
        (``storage_options`` are sent with the work; the environment is not). Each
        worker needs dicomframe installed, of this version. ``jobs`` is then unused;
        the tables are the local scan's. Default: this machine's worker processes.

    Returns
    -------
    ScanResult
        ``.instances``, ``.elements``, ``.errors`` (polars DataFrames; call
        ``.to_pandas()`` on any of them for pandas) and ``.summary``.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> result = scan(get_testdata_file("CT_small.dcm"), progress=False)
    >>> result.instances.select("Modality", "Rows", "StudyDate").row(0)
    ('CT', 128, datetime.date(2004, 1, 19))
    >>> result.elements.filter(pl.col("keyword") == "PatientName")["vr"].item()
    'PN'
    """
    if dask is not None:
        from .distributed import dask_client, total_threads

        with dask_client(dask) as client:
            return _scan(
                src, jobs=total_threads(client), output=output, storage_options=storage_options,
                progress=progress, chunk_size=chunk_size, on_progress=on_progress, client=client,
            )  # fmt: skip
    return _scan(
        src, jobs=jobs, output=output, storage_options=storage_options, progress=progress,
        chunk_size=chunk_size, on_progress=on_progress,
    )  # fmt: skip


def _scan(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Source,
    *,
    jobs: int | None,
    output: str | os.PathLike[str] | None,
    storage_options: dict[str, Any] | None,
    progress: bool | None,
    chunk_size: int | None,
    on_progress: Callable[[int, int], None] | None,
    client: Any = None,
) -> ScanResult:
    """:func:`scan`; with ``client`` (a connected ``distributed.Client``), on its workers."""
    started = time.perf_counter()
    # a Source already resolved (a part of a listing: de-identification in parts) keeps its file ids
    source = src if isinstance(src, Source) else resolve_source(src, storage_options)
    n_jobs = jobs if jobs is not None else default_jobs()
    if n_jobs < 1:
        raise UserInputError(f"--jobs must be at least 1 (got {n_jobs})")
    total = len(source.files)
    # small chunks keep memory flat (a chunk in flight is ~80 kB per file of Python objects)
    readers = (_remote_threads(source, n_jobs) if client is None else 0) or n_jobs
    size = chunk_size or max(8, min(64, total // (readers * 8) or 8))
    show = auto_progress() if progress is None else progress

    paths = output_paths(os.fspath(output)) if output is not None else {}
    elements_writer = _AtomicParquet(paths["elements"], ELEMENTS_ARROW) if paths else None
    element_tables = _Blocks(ROW_GROUP_ROWS)
    instance_tables = _Blocks(INSTANCE_BLOCK_ROWS, promote=True)
    error_rows: list[tuple[Any, ...]] = []
    done = 0
    bar = Progress(total, show)
    try:
        for chunk in _iter_chunks(source, n_jobs, size, client):
            instance_tables.add(chunk.instances)
            error_rows.extend(chunk.errors)
            full = element_tables.add(chunk.elements)
            if elements_writer is not None and full is not None:
                elements_writer.write(full)
                element_tables.take()
            done += chunk.n_files
            bar.update(done, len(error_rows))
            if on_progress is not None:
                on_progress(done, total)
        if elements_writer is not None:
            rest = element_tables.flush()
            if rest is not None:
                elements_writer.write(rest)
                element_tables.take()
        instances = _build_instances(instance_tables.all())
        errors = _errors_table(error_rows)
        if elements_writer is not None:
            elements_writer.commit()
            elements_writer = None
            _write_table(errors, paths["errors"])
            _write_table(instances, paths["instances"])  # last: its presence marks a complete scan
    except BaseException:
        if elements_writer is not None:
            elements_writer.abort()
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    summary = _summarise(instances, errors, total, elapsed, sum(f.size for f in source.files), n_jobs)
    result = ScanResult(instances_table=instances, errors_table=errors, summary=summary, outputs=paths)
    if not paths:
        blocks = element_tables.all()
        result.elements_table = pa.concat_tables(blocks) if blocks else empty_table(ELEMENTS_ARROW)
    return result


class Progress:
    """A rich progress bar that is a no-op when disabled."""

    def __init__(self, total: int, enabled: bool, label: str = "scanning") -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[errors]} errors"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task("scan", total=total, errors=0)
        self._bar.start()

    def update(self, done: int, errors: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, errors=errors)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
