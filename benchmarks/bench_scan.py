"""Header scan throughput: ``dicomframe.scan`` against the loop a notebook user writes.

What is measured
----------------
Two synthetic CT corpora (see :mod:`_corpus`: ~140 top-level elements per header,
sequences, private blocks, Explicit VR Little Endian, 16-bit pixels), by default

* **small**: 10,000 files of 64×64 (≈11 kB each: the header dominates), and
* **large**: 2,000 files of 512×512 (≈530 kB each: the pixel data dominates),

are each turned into a Parquet table in three ways, in the same run:

``baseline``
    What a notebook user writes, single process: list the files, ``pydicom.dcmread``
    each one, keep ``{keyword or tag: str(value)}`` for every top-level element except
    Pixel Data (``str()`` so pandas/Arrow can store the values), then
    ``pandas.DataFrame(records).to_parquet(out)``.
``dicomframe``
    ``dicomframe.scan(folder, jobs=J, output=<dir>/df_scan.parquet, progress=False)``:
    the elements table (every element at every depth) is streamed to Parquet and the
    instances and errors tables are written next to it. This is the headline number.
``dicomframe-mem``
    The same scan without ``output=`` (all three tables kept in memory), as a
    secondary line.

dicomframe produces more than the baseline (nested sequence items, VR, lengths,
offsets, typed instance columns, an errors table), so the comparison is, if anything,
in the baseline's favour.

How
---
* The OS page cache is warmed by reading every file once before measuring, so both
  sides read from memory and the numbers do not depend on run order.
* Every measurement runs in a fresh interpreter (``python -c``), so imports,
  allocator state and peak memory are comparable. The subprocess imports what it
  needs (pydicom, pandas, pyarrow / dicomframe) *before* starting the clock; the
  clock (``time.perf_counter`` inside the subprocess) covers listing the files,
  reading them and writing Parquet, and for dicomframe also starting and stopping
  its worker processes. Interpreter start-up is excluded.
* Peak memory is the peak of the **sum of PSS (proportional set size) of the
  subprocess and all its descendants** (dicomframe's workers), sampled every 10 ms
  by a psutil thread in this parent process, in one extra **memory run** per kind
  after the timed runs, whose time is not used: reading PSS (``/proc/PID/smaps``)
  holds the process's memory-map lock and slows a large process (see
  ``bench_deidentify.py``). Timed runs sample RSS only (``statm``, no lock). PSS charges each shared page (the
  Python, Arrow and pydicom libraries that forked workers share) to the processes
  sharing it in proportion, so the sum is the memory the process tree really
  uses; for a single process (the baseline) PSS ≈ RSS. The summed RSS is printed
  and recorded too. ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` is not used
  for the table because it reports the largest single descendant, not the sum of
  processes alive at the same time; the subprocess still records its own
  ``ru_maxrss`` values in the JSON as a cross-check. Summing RSS counts shared pages
  (Python, polars and Arrow libraries) once per worker, so it overstates
  dicomframe's footprint: the comparison is conservative.
* With ``--repeat R`` each measurement runs R times: files/s comes from the fastest
  run and peak memory is the highest seen.

Goal (from the issue): dicomframe ≥ 8× the baseline's files/s with peak memory no
higher than the baseline's. The script always exits 0 (wall time is never asserted);
``--check`` exits 1 when the ratio is below 8, for manual use only.

Usage::

    python benchmarks/bench_scan.py [--small N] [--large N] [--workdir DIR]
                                    [--jobs J] [--repeat R] [--check]

Corpora are cached under ``--workdir`` (default ``<system temp>/dicomframe-bench``)
and reused by later runs; results are also written to ``<workdir>/bench_scan.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
GOAL_RATIO = 8.0
SAMPLE_INTERVAL_S = 0.010
KINDS = ("baseline", "dicomframe", "dicomframe-mem")
PIXEL_DATA_TAG = 0x7FE00010


# -- subprocess side ------------------------------------------------------------------
# Kept free of heavy imports at module level: the subprocess imports only what the
# measured code needs, and dicomframe's spawned workers never import this module.


def _rusage() -> dict[str, int]:
    import resource

    # ru_maxrss is in KiB on Linux
    return {
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def _run_baseline(folder: str, out_dir: str) -> dict[str, Any]:
    import pandas
    import pyarrow.parquet  # noqa: F401  (imported before the clock, like pydicom)
    import pydicom

    out = os.path.join(out_dir, "baseline.parquet")
    started = time.perf_counter()
    paths = sorted(Path(folder).rglob("*.dcm"))
    records = []
    for path in paths:
        ds = pydicom.dcmread(path)
        records.append(
            {elem.keyword or str(elem.tag): str(elem.value) for elem in ds if elem.tag != PIXEL_DATA_TAG}
        )
    df = pandas.DataFrame(records)
    df.to_parquet(out)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "files": len(paths), "rows": len(df), "columns": df.shape[1], "errors": 0}


def _run_dicomframe(folder: str, out_dir: str, jobs: int, to_parquet: bool) -> dict[str, Any]:
    import dicomframe

    # dicomframe loads its modules lazily: resolve ``scan`` (polars, pyarrow…) before the
    # clock, as the baseline imports pandas and pydicom before it
    scan = dicomframe.scan
    output = os.path.join(out_dir, "df_scan.parquet") if to_parquet else None
    started = time.perf_counter()
    result = scan(folder, jobs=jobs, output=output, progress=False)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "files": result.summary.files,
        "rows": result.instances.height,
        "columns": result.instances.width,
        "errors": result.errors.height,
        "elements_rows": None if to_parquet else result.elements.height,
    }


def _child(kind: str, folder: str, out_dir: str, jobs: int) -> None:
    """Entry point of the measuring subprocess: print one JSON line."""
    if kind == "baseline":
        res = _run_baseline(folder, out_dir)
    elif kind == "dicomframe":
        res = _run_dicomframe(folder, out_dir, jobs, to_parquet=True)
    elif kind == "dicomframe-mem":
        res = _run_dicomframe(folder, out_dir, jobs, to_parquet=False)
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    res.update(_rusage())
    print("RESULT " + json.dumps(res), flush=True)


# -- parent side ----------------------------------------------------------------------


class PeakRss(threading.Thread):
    """Sample the summed RSS of a process tree every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S, pss: bool = True) -> None:
        super().__init__(daemon=True)
        #: PSS needs /proc/PID/smaps, which holds the process's memory-map lock while it is
        #: read: every 10 ms that slows a large, busy process down. RSS alone (statm) does not.
        self._pss = pss
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = 0
        self.peak_pss = 0
        self.max_processes = 0
        self.samples = 0

    def run(self) -> None:
        psutil = self._psutil
        while not self._stop_event.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            total_pss = 0
            for proc in procs:
                try:
                    if self._pss:
                        info = proc.memory_full_info()
                        total += info.rss
                        total_pss += info.pss
                    else:
                        total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, total_pss)
            self.max_processes = max(self.max_processes, len(procs))
            self.samples += 1
            self._stop_event.wait(self._interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Run:
    kind: str
    seconds: float
    files: int
    rows: int
    columns: int
    errors: int
    peak_rss: int
    peak_pss: int
    max_processes: int
    samples: int
    child: dict[str, Any]

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else float("nan")


def fold_memory_run(timed: list[Any], memory: Any) -> None:
    """Give the timed runs (RSS sampled only) the peaks of the memory run (PSS sampled too;
    its time is not used)."""
    for run in timed:
        run.peak_pss = max(run.peak_pss, memory.peak_pss)
        run.peak_rss = max(run.peak_rss, memory.peak_rss)


def measure(kind: str, folder: Path, out_dir: Path, jobs: int, pss: bool = False) -> Run:
    """Run one measurement in a fresh interpreter and sample its memory (RSS; PSS too
    with ``pss``, which slows the measured process: see :class:`PeakRss`)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    code = (
        f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import bench_scan; "
        f"bench_scan._child({kind!r}, {str(folder)!r}, {str(out_dir)!r}, {jobs!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = PeakRss(proc.pid, pss=pss)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} measurement failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    res = json.loads(lines[-1][len("RESULT ") :])
    return Run(
        kind=kind,
        seconds=res["seconds"],
        files=res["files"],
        rows=res["rows"],
        columns=res["columns"],
        errors=res["errors"],
        peak_rss=sampler.peak,
        peak_pss=sampler.peak_pss,
        max_processes=sampler.max_processes,
        samples=sampler.samples,
        child=res,
    )


def warm_page_cache(paths: list[Path]) -> int:
    """Read every file once so all measurements start from a warm page cache."""
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return total


@dataclass
class CorpusResult:
    name: str
    n_files: int
    rows: int
    cols: int
    bytes: int
    folder: str
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def best(self, kind: str) -> Run:
        return min(self.runs[kind], key=lambda r: r.seconds)

    def peak(self, kind: str) -> int:
        return max(r.peak_pss for r in self.runs[kind])

    def peak_rss(self, kind: str) -> int:
        return max(r.peak_rss for r in self.runs[kind])

    def ratio(self, kind: str = "dicomframe") -> float:
        return self.best(kind).files_per_s / self.best("baseline").files_per_s

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in self.runs:
            best = self.best(kind)
            out[kind] = {
                "seconds": best.seconds,
                "files_per_s": best.files_per_s,
                "peak_pss_bytes": self.peak(kind),
                "peak_rss_bytes": self.peak_rss(kind),
                "ratio_vs_baseline": self.ratio(kind) if kind != "baseline" else 1.0,
            }
        return out


def memory_costs(workdir: Path, megabytes: int = 256) -> dict[str, float]:
    """What new memory costs on this machine, measured now (one thread, no assertion).

    ``touch_ms_per_100mb``: filling memory this process has not used before (a fresh
    ``bytearray``). ``new_file_mb_per_s``: writing a new file of that size into the page
    cache (1 MB writes, no sync; the file is deleted). On a virtual machine whose host
    takes freed memory back, both are many times slower than on bare metal, and vary from
    minute to minute: every contender pays this for the memory it touches and the output
    it writes, so the figures of one run are comparable, those of two days less so.
    """
    size = megabytes << 20
    started = time.perf_counter()
    block = bytearray(size)
    touch = time.perf_counter() - started
    del block
    chunk = b"\1" * (1 << 20)
    path = workdir / f".memory-costs-{os.getpid()}.tmp"
    started = time.perf_counter()
    try:
        with open(path, "wb", buffering=0) as fh:
            fh.writelines([chunk] * megabytes)  # 1 MB writes
        write = time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)
    return {
        "touch_ms_per_100mb": round(touch * 1000 * 100 / megabytes, 1),
        "new_file_mb_per_s": round(megabytes * 1.048576 / write, 0),
    }


def describe_costs(costs: dict[str, float]) -> str:
    return (
        f"new memory {costs['touch_ms_per_100mb']:.0f} ms per 100 MB first touched, "
        f"new files written at {costs['new_file_mb_per_s']:,.0f} MB/s (page cache, 1 thread)"
    )


def machine_info(jobs: int, workdir: Path | None = None) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    cpu = platform.processor() or "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "jobs": jobs,
        "cpu": cpu,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "dicomframe": version("dicomframe"),
        "pydicom": version("pydicom"),
        "polars": version("polars"),
        "pyarrow": version("pyarrow"),
        "pandas": version("pandas"),
        "memory_costs": memory_costs(workdir) if workdir is not None else {},
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def print_table(c: CorpusResult, jobs: int) -> None:
    base = c.best("baseline")
    print(f"\n== {c.name}: {c.n_files:,} files of {c.rows}×{c.cols}, {_mb(c.bytes)} on disk ==")
    header = (
        f"{'':<22}{'files/s':>10}{'seconds':>10}{'ratio':>9}{'peak PSS':>12}{'(RSS sum)':>12}"
        f"{'procs':>7}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    labels = {
        "baseline": "baseline (pydicom+pd)",
        "dicomframe": f"dicomframe -j{jobs} →pq",
        "dicomframe-mem": f"dicomframe -j{jobs} mem",
    }
    for kind in KINDS:
        if kind not in c.runs:
            continue
        r = c.best(kind)
        ratio = r.files_per_s / base.files_per_s
        print(
            f"{labels[kind]:<22}{r.files_per_s:>10,.0f}{r.seconds:>10.2f}{ratio:>8.1f}×"
            f"{_mb(c.peak(kind)):>12}{_mb(c.peak_rss(kind)):>12}{r.max_processes:>7}{r.errors:>8}"
        )
    ratio = c.ratio("dicomframe")
    mem_ok = c.peak("dicomframe") <= c.peak("baseline")
    print(
        f"goal: ratio ≥ {GOAL_RATIO:.0f}× → {ratio:.1f}× {'MET' if ratio >= GOAL_RATIO else 'NOT MET'}; "
        f"peak memory ≤ baseline → {_mb(c.peak('dicomframe'))} vs {_mb(c.peak('baseline'))} "
        f"{'MET' if mem_ok else 'NOT MET'}"
    )
    for kind in KINDS:
        if kind in c.runs and (r := c.best(kind)).files != c.n_files:
            print(f"warning: {kind} saw {r.files:,} files, expected {c.n_files:,}")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_corpus(name: str, n_files: int, size: int, workdir: Path, jobs: int, repeat: int) -> CorpusResult:
    from _corpus import corpus_bytes, corpus_root, make_ct_corpus

    folder = workdir / f"ct-{name}-{n_files}x{size}"
    _log(f"[{name}] corpus: {n_files:,} files of {size}×{size} in {folder} …")
    t0 = time.perf_counter()
    paths = make_ct_corpus(folder, n_files, size, size)
    _log(f"[{name}] corpus ready in {time.perf_counter() - t0:.1f} s; warming the page cache …")
    nbytes = warm_page_cache(paths)
    result = CorpusResult(name, n_files, size, size, corpus_bytes(paths), str(corpus_root(folder)))
    assert nbytes == result.bytes
    out_root = workdir / "out" / folder.name
    for i in range(repeat):
        for kind in KINDS:
            run = measure(kind, corpus_root(folder), out_root / kind, jobs)
            result.runs.setdefault(kind, []).append(run)
            _log(
                f"[{name}] {kind:<15} run {i + 1}/{repeat}: {run.seconds:7.2f} s, "
                f"{run.files_per_s:8,.0f} files/s, peak RSS sum {_mb(run.peak_rss)}"
            )
    for kind in KINDS:
        run = measure(kind, corpus_root(folder), out_root / kind, jobs, pss=True)
        fold_memory_run(result.runs[kind], run)
        _log(f"[{name}] {kind:<15} memory run: peak PSS {_mb(run.peak_pss)} (RSS sum {_mb(run.peak_rss)}), time not used")
    return result


def main(argv: list[str] | None = None) -> int:
    default_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, metavar="N", help="files of 64×64 (0 to skip)")
    parser.add_argument("--large", type=int, default=2_000, metavar="N", help="files of 512×512 (0 to skip)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dicomframe-bench",
        help="corpora cache and outputs (default: %(default)s)",
    )
    parser.add_argument("--jobs", type=int, default=default_jobs, help="dicomframe workers (default: all cores)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (fastest is reported)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio is below 8× (manual use)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.jobs < 1:
        parser.error("--repeat and --jobs must be at least 1")

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # keep order with stderr logs
    sys.path.insert(0, str(BENCH_DIR))
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.jobs, args.workdir)
    print(
        f"machine: {machine['usable_cores']} cores ({machine['cpu']}), {machine['memory_bytes'] / 2**30:.0f} GiB, "
        f"python {machine['python']}, dicomframe {machine['dicomframe']}, pydicom {machine['pydicom']}, "
        f"polars {machine['polars']}, pyarrow {machine['pyarrow']}, pandas {machine['pandas']}; "
        f"dicomframe jobs={args.jobs}, repeat={args.repeat}"
    )
    print(f"memory costs now: {describe_costs(machine['memory_costs'])}")

    corpora = [(name, n, size) for name, n, size in (("small", args.small, 64), ("large", args.large, 512)) if n > 0]
    results = [bench_corpus(name, n, size, args.workdir, args.jobs, args.repeat) for name, n, size in corpora]
    for c in results:
        print_table(c, args.jobs)

    report = {
        "benchmark": "bench_scan",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "goal": {"ratio": GOAL_RATIO, "memory": "dicomframe peak PSS (summed over its processes) <= baseline peak PSS"},
        "corpora": [
            {
                "name": c.name,
                "files": c.n_files,
                "rows": c.rows,
                "cols": c.cols,
                "bytes": c.bytes,
                "folder": c.folder,
                "summary": c.summary(),
                "runs": {k: [asdict(r) for r in runs] for k, runs in c.runs.items()},
            }
            for c in results
        ],
    }
    json_path = args.workdir / "bench_scan.json"
    json_path.write_text(json.dumps(report, indent=2))
    print(f"\nresults written to {json_path}")

    if args.check and any(c.ratio("dicomframe") < GOAL_RATIO for c in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
