"""De-identification throughput: ``dicomframe deidentify`` against a pydicom loop and gdcmanon.

What is measured
----------------
A synthetic CT corpus (see :mod:`_corpus`; by default 1,000 files of 512×512, ≈530 kB
each, Explicit VR Little Endian, ~140 top-level elements, sequences and two private
blocks) is de-identified in up to three ways, in the same run, beside a fourth
contender that does no DICOM work at all:

``baseline``
    What a notebook user writes, single process: list the files, ``pydicom.dcmread``
    each one, apply a basic-profile subset by hand (blank PatientName, PatientID,
    PatientBirthDate, AccessionNumber, ReferringPhysicianName and InstitutionName;
    ``ds.remove_private_tags()``; replace StudyInstanceUID, SeriesInstanceUID,
    SOPInstanceUID and file_meta.MediaStorageSOPInstanceUID with
    ``generate_uid(entropy_srcs=[old])``) and ``ds.save_as(out/f"{i}.dcm",
    enforce_file_format=True)``.
``gdcmanon``
    GDCM's ``gdcmanon`` (Debian: ``apt-get install -y libgdcm-tools``), PS3.15 E.1
    Basic Application Level Confidentiality Profile: ``gdcmanon -e --certificate
    cert.pem -i <corpus> -o <out> --recursive``. It also encrypts the original values
    into an EncryptedAttributesSequence (CMS, AES-256, for the certificate's key).
    The certificate is a self-signed RSA-2048 one made once with ``openssl`` and
    cached in the workdir. Skipped (with the install command printed) when
    ``gdcmanon`` is not on PATH.
``dicomframe``
    ``dicomframe.pipeline.deidentify(corpus, out, key=<key file>, vault=<vault>,
    profile="default", jobs=J, progress=False)``: scan, plan (profile ⋈ elements),
    rewrite, sha256 and write (J threads in the measuring process for a batch of fewer
    than ``dicomframe.scanner.IN_PROCESS_FILES`` files, as here; J worker processes for
    larger ones), the leak gate (local outputs are checked on the bytes written, in the
    writers, rather than read back), vault mapping and manifests. The key file is made
    once with ``dicomframe.keys.generate_key_file`` (mode 0600) and cached in the
    workdir. The child checks that ``result.failed`` is empty.
``floor``
    No de-identification: what any tool that reads, hashes and writes every byte pays
    on this machine, in J threads as dicomframe uses. Each thread reads each of its
    files whole, takes its sha256 (dicomframe hashes every output for the manifest),
    writes the bytes unchanged to a temporary name and renames it. Against it, the
    other rows show what their DICOM work costs: a contender can go no faster than
    the floor plus that work. Not a goal; its output holds the original values.

The three do different amounts of work: the baseline handles a handful of attributes,
gdcmanon the whole (GDCM-era) basic-profile table plus encryption, dicomframe its
``default`` profile (every element of the scan planned, keyed pseudonyms, a
manifest and a mapping table). After each run one output file is read back and a few
facts are recorded (patient name blanked, UIDs replaced, private tags left), so the
table shows what each tool really did.

How
---
* Same method as ``bench_scan.py``: the OS page cache is warmed by reading every
  file once before measuring; each measurement runs in a fresh process. Peak memory
  is the peak of the sum of PSS over the process and its descendants, sampled every
  10 ms by :class:`bench_scan.PeakRss` (summed RSS is printed too) in one extra
  **memory run** per contender after the timed runs, whose time is not used:
  reading PSS (``/proc/PID/smaps``) holds the process's memory-map lock, and every
  10 ms that slowed dicomframe's 400 MB process by about 20% (the 45 MB baseline by
  about 3%). Timed runs sample RSS only (``statm``, no lock).
* Python measurements (baseline, dicomframe) run in a fresh interpreter
  (``python -c``) which imports what the measured code needs before starting the
  clock; the clock (``time.perf_counter`` in the child) covers listing the files,
  reading, de-identifying and writing them, and for dicomframe also starting and
  stopping its workers and writing the manifest and mapping. Interpreter start-up is
  excluded.
* ``gdcmanon`` is a native program: the clock covers the whole subprocess, from
  ``Popen`` to exit (its start-up is a few milliseconds).
* The output folder is emptied before each run (its earlier outputs deleted, then
  ``sync``) and is on the same file system as the corpus. Every contender's clock
  starts the same moment after that: gdcmanon is started right after it, and a
  Python child, once it has imported, prints ``READY`` and waits; the parent then
  empties the folder and answers ``GO``. This matters on a virtual machine that gives
  freed memory back to its host a few seconds after it is freed (free page
  reporting): the ~corpus-sized memory the deleted outputs held is cheap to write
  new files into at once and about twice as dear seconds later (measured: 1,000
  files of 527 kB written in 0.7–0.9 s right after deleting the last ones, 1.5–2.1 s
  three seconds after). Emptying the folder before a Python child's imports (about
  1 s) gave gdcmanon the cheap memory and the Python contenders the dear.
* With ``--repeat R`` each measurement runs R times: files/s comes from the fastest
  run and peak memory is the highest seen.
* Before measuring, one line gives what new memory costs on this machine right now
  (:func:`bench_scan.memory_costs`: filling memory never used, and writing a new file
  into the page cache). On a virtual machine whose host takes freed memory back, the
  two vary several-fold from minute to minute (seen on the 2-core CI kind: 56 to 120 ms
  per 100 MB; 350 to 3,600 MB/s), and every contender pays them for the memory it
  touches and the 527 MB it writes: compare the ratios of one run, not the seconds
  of two.
* ``cpu s`` is the CPU time (user + system, every thread, and every child process
  waited for) over the same clock, and ``cores`` that divided by the seconds: how
  busy the contender kept the machine. A contender with cores well under the jobs
  given waits on itself (a lock, one stage after another); one at the jobs given can
  only go faster by doing less work.

Goal (from the issue): dicomframe deidentify on 2 cores ≥ gdcmanon's files/s and
≥ 3.5× the pydicom loop's. The script always exits 0 (wall time is never asserted);
``--check`` exits 1 when a goal measured in this run is not met, for manual use only.

Usage::

    python benchmarks/bench_deidentify.py [--files N] [--size S] [--workdir DIR]
                                          [--jobs J] [--repeat R] [--only KINDS] [--check]

The corpus is cached under ``--workdir`` (default ``<system temp>/dicomframe-bench``,
shared with ``bench_scan.py``: ``--files 2000`` reuses its large corpus); results are
also written to ``<workdir>/bench_deidentify.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
GOAL_VS_BASELINE = 3.5
GOAL_VS_GDCMANON = 1.0
KINDS = ("baseline", "gdcmanon", "dicomframe", "floor")
INSTALL_GDCMANON = "apt-get install -y libgdcm-tools"
#: what a Python child prints once it has imported, and the parent's answer
READY, GO = "READY", "GO"

# attributes the baseline blanks (a basic-profile subset)
BLANKED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "ReferringPhysicianName",
    "InstitutionName",
)


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


def _cpu() -> float:
    """CPU seconds (user + system) of this process, its threads and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _ready() -> None:
    """Tell the parent this interpreter has imported what it measures; wait for its go.

    The parent then deletes the previous outputs, flushes and warms the corpus, and
    answers: the clock starts as soon after that as gdcmanon's does after its own
    preparation (see "How" above)."""
    print(READY, flush=True)
    if sys.stdin.readline().strip() != GO:
        raise SystemExit("the parent did not say go")


def _run_baseline(folder: str, out_dir: str) -> dict[str, Any]:
    import pydicom
    from pydicom.uid import generate_uid

    out = Path(out_dir)
    _ready()
    cpu = _cpu()
    started = time.perf_counter()
    paths = sorted(Path(folder).rglob("*.dcm"))
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        for keyword in BLANKED:
            if keyword in ds:
                setattr(ds, keyword, "")
        ds.remove_private_tags()
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            old = ds.get(keyword)
            if old:
                setattr(ds, keyword, generate_uid(entropy_srcs=[str(old)]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out / f"{i}.dcm", enforce_file_format=True)
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "files": len(paths), "written": len(paths), "errors": 0}


def _run_dicomframe(folder: str, out_dir: str, jobs: int, key_file: str) -> dict[str, Any]:
    # resolve every module deidentify loads lazily (scanner, planner, rewrite: polars,
    # pyarrow…) before the clock, as the baseline imports pydicom before it
    import dicomframe.planner
    import dicomframe.rewrite
    import dicomframe.scanner  # noqa: F401
    from dicomframe.pipeline import deidentify

    dst = os.path.join(out_dir, "dst")
    vault = os.path.join(out_dir, "vault")  # apart from dst, as deidentify requires
    _ready()
    cpu = _cpu()
    started = time.perf_counter()
    result = deidentify(folder, dst, key=key_file, vault=vault, profile="default", jobs=jobs, progress=False)
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu
    if result.failed:
        kinds: dict[str, int] = {}
        for f in result.failed:
            kinds[str(f.get("kind"))] = kinds.get(str(f.get("kind")), 0) + 1
        print(
            f"error: dicomframe deidentify failed on {len(result.failed):,} files ({kinds}); "
            f"first: {result.failed[0]}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "files": result.written + len(result.failed),
        "written": result.written,
        "errors": len(result.failed),
        "failed_sample": result.failed[:5],
        "studies": result.studies,
        "internal_elapsed_s": result.elapsed_s,
        "timings": result.timings,
    }


def _run_floor(folder: str, out_dir: str, jobs: int) -> dict[str, Any]:
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    out = Path(out_dir)

    def copy(share: int, paths: list[Path]) -> int:
        folder_out = out / str(share)
        folder_out.mkdir()
        for i, path in enumerate(paths):
            with open(path, "rb", buffering=0) as fh:
                data = fh.read()
            hashlib.sha256(data).hexdigest()
            tmp = folder_out / f".{i}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, folder_out / f"{i}.dcm")
        return len(paths)

    _ready()
    cpu = _cpu()
    started = time.perf_counter()
    paths = sorted(Path(folder).rglob("*.dcm"))
    with ThreadPoolExecutor(jobs) as pool:
        written = sum(pool.map(copy, range(jobs), [paths[k::jobs] for k in range(jobs)]))
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "files": len(paths), "written": written, "errors": 0}


def _child(kind: str, folder: str, out_dir: str, jobs: int, key_file: str) -> None:
    """Entry point of the measuring subprocess: print one JSON line."""
    if kind == "baseline":
        res = _run_baseline(folder, out_dir)
    elif kind == "dicomframe":
        res = _run_dicomframe(folder, out_dir, jobs, key_file)
    elif kind == "floor":
        res = _run_floor(folder, out_dir, jobs)
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    res.update(_rusage())
    print("RESULT " + json.dumps(res), flush=True)


# -- parent side ----------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    seconds: float
    files: int
    written: int
    errors: int
    peak_rss: int
    peak_pss: int
    max_processes: int
    samples: int
    outputs: int
    check: dict[str, Any]
    child: dict[str, Any]

    @property
    def files_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_seconds(self) -> float | None:
        """CPU seconds (user + system, every thread and waited-for child) over the clock."""
        cpu = self.child.get("cpu_seconds")
        return float(cpu) if cpu is not None else None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sampled(cmd: list[str], pss: bool = False) -> tuple[subprocess.CompletedProcess[str], Any, float, float]:
    """Run ``cmd`` while sampling its process tree's memory; also time it from outside, and
    give the CPU seconds it (and what it waited for) used.

    Timed runs sample RSS only; ``pss`` (the memory run) samples PSS too, which slows
    the measured process (see :class:`bench_scan.PeakRss`)."""
    from bench_scan import PeakRss

    before = os.times()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakRss(proc.pid, pss=pss)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    after = os.times()
    cpu = after.children_user - before.children_user + after.children_system - before.children_system
    sampler.stop()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), sampler, seconds, cpu


def _sampled_when_ready(
    cmd: list[str], prepare: Callable[[], None], pss: bool = False
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run a Python child (see :func:`_ready`): once it has imported, ``prepare``, then say go.

    Its memory is sampled from the start (imports included)."""
    from bench_scan import PeakRss

    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = PeakRss(proc.pid, pss=pss)
    sampler.start()
    assert proc.stdin is not None and proc.stdout is not None
    first = proc.stdout.readline()
    if first.strip() == READY:
        prepare()
        proc.stdin.write(GO + "\n")
        proc.stdin.flush()
    else:
        proc.kill()
    stdout, stderr = proc.communicate()
    sampler.stop()
    if first.strip() != READY:
        stdout = first + stdout
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), sampler


def _dicom_outputs(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.rglob("*.dcm") if p.is_file())


def spot_check(outputs: list[Path], original: dict[str, Any]) -> dict[str, Any]:
    """Read one output back (outside the clock) and record what was done to it."""
    if not outputs:
        return {"file": None}
    import pydicom

    ds = pydicom.dcmread(outputs[len(outputs) // 2])
    return {
        "file": str(outputs[len(outputs) // 2]),
        "patient_name_blank": not str(ds.get("PatientName", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "study_uid_replaced": str(ds.get("StudyInstanceUID", "")) not in original["study_uids"],
        "private_tags": sum(1 for e in ds if e.tag.is_private),
        "patient_address_kept": bool(str(ds.get("PatientAddress", ""))),
        "study_date": str(ds.get("StudyDate", "")),
        "identity_removed": str(ds.get("PatientIdentityRemoved", "")),
        "encrypted_attributes": "EncryptedAttributesSequence" in ds,
        "elements": len(ds),
        "bytes": outputs[len(outputs) // 2].stat().st_size,
    }


def _original_facts(paths: list[Path]) -> dict[str, Any]:
    import pydicom

    uids = set()
    for p in paths:
        uids.add(str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).StudyInstanceUID))
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return {
        "study_uids": uids,
        "elements": len(ds) + 1,
        "private_tags": sum(1 for e in ds if e.tag.is_private),
        "bytes": paths[0].stat().st_size,
    }


def measure_python(
    kind: str,
    folder: Path,
    out_dir: Path,
    jobs: int,
    key_file: Path,
    original: dict[str, Any],
    pss: bool = False,
    prepare: Callable[[], None] = lambda: None,
) -> Run:
    """Run one Python measurement in a fresh interpreter and sample its memory.

    ``prepare`` runs once the interpreter has imported what it measures, just before
    its clock starts; then ``out_dir`` is made (empty)."""

    def ready() -> None:
        prepare()
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)

    code = (
        f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import bench_deidentify; "
        f"bench_deidentify._child({kind!r}, {str(folder)!r}, {str(out_dir)!r}, {jobs!r}, {str(key_file)!r})"
    )
    proc, sampler = _sampled_when_ready([sys.executable, "-c", code], ready, pss)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} measurement failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    if proc.stderr.strip():
        _log(f"[{kind}] stderr:\n{proc.stderr.strip()[-2000:]}")
    res = json.loads(lines[-1][len("RESULT ") :])
    outputs = _dicom_outputs(out_dir / "dst" if kind == "dicomframe" else out_dir)
    return Run(
        kind=kind,
        seconds=res["seconds"],
        files=res["files"],
        written=res["written"],
        errors=res["errors"],
        peak_rss=sampler.peak,
        peak_pss=sampler.peak_pss,
        max_processes=sampler.max_processes,
        samples=sampler.samples,
        outputs=len(outputs),
        check=spot_check(outputs, original),
        child=res,
    )


def ensure_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed RSA-2048 certificate and key for ``gdcmanon -e`` (made once)."""
    cert, key = workdir / "gdcmanon-cert.pem", workdir / "gdcmanon-key.pem"
    if not (cert.is_file() and key.is_file()):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "2", "-subj", "/CN=bench"],
            check=True, capture_output=True,
        )  # fmt: skip
    return cert, key


def gdcmanon_version() -> str | None:
    exe = shutil.which("gdcmanon")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "--version"], check=False, capture_output=True, text=True, timeout=30)
        # gdcmanon --help exits 0 and lists -e, --certificate, -i, -o, --recursive
        helptext = subprocess.run([exe, "--help"], check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "--certificate" not in helptext or "--recursive" not in helptext:
        _log("warning: gdcmanon --help does not list --certificate/--recursive; skipping gdcmanon")
        return None
    # prints e.g. "gdcmanon: gdcm 3.0.21 $Date$"
    text = (proc.stdout or proc.stderr).strip()
    line = text.splitlines()[0] if text else "?"
    return line.removeprefix("gdcmanon:").replace("$Date$", "").strip()


def measure_gdcmanon(
    folder: Path, out_dir: Path, n_files: int, cert: Path, original: dict[str, Any], pss: bool = False
) -> Run:
    """``gdcmanon -e`` over the corpus, timed from Popen to exit, memory sampled."""
    shutil.rmtree(out_dir, ignore_errors=True)
    # gdcmanon -r -o DIR mirrors the input tree under DIR, creating DIR and the
    # sub-folders itself; an existing empty DIR works too
    out_dir.mkdir(parents=True)
    cmd = [shutil.which("gdcmanon") or "gdcmanon", "-e", "--certificate", str(cert),
           "-i", str(folder), "-o", str(out_dir), "--recursive"]  # fmt: skip
    proc, sampler, seconds, cpu = _sampled(cmd, pss)
    outputs = _dicom_outputs(out_dir)
    if proc.returncode != 0:
        _log(f"[gdcmanon] exit {proc.returncode}:\n{(proc.stderr or proc.stdout)[-2000:]}")
    elif proc.stderr.strip():
        _log(f"[gdcmanon] stderr:\n{proc.stderr.strip()[-2000:]}")
    return Run(
        kind="gdcmanon",
        seconds=seconds,
        files=n_files,
        written=len(outputs),
        errors=n_files - len(outputs) if proc.returncode == 0 else max(1, n_files - len(outputs)),
        peak_rss=sampler.peak,
        peak_pss=sampler.peak_pss,
        max_processes=sampler.max_processes,
        samples=sampler.samples,
        outputs=len(outputs),
        check=spot_check(outputs, original),
        child={"returncode": proc.returncode, "cmd": cmd, "cpu_seconds": cpu},
    )


def ensure_key_file(workdir: Path) -> Path:
    """The dicomframe project key for the benchmark (made once, mode 0600)."""
    from dicomframe.keys import generate_key_file

    path = workdir / "bench-project.key"
    if not path.exists():
        generate_key_file(path)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


@dataclass
class Result:
    n_files: int
    rows: int
    cols: int
    bytes: int
    folder: str
    jobs: int
    original: dict[str, Any]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def has(self, kind: str) -> bool:
        return bool(self.runs.get(kind))

    def best(self, kind: str) -> Run:
        return min(self.runs[kind], key=lambda r: r.seconds)

    def peak(self, kind: str) -> int:
        return max(r.peak_pss for r in self.runs[kind])

    def peak_rss(self, kind: str) -> int:
        return max(r.peak_rss for r in self.runs[kind])

    def ratio(self, kind: str, against: str) -> float | None:
        if not (self.has(kind) and self.has(against)):
            return None
        return self.best(kind).files_per_s / self.best(against).files_per_s

    def goals(self) -> dict[str, dict[str, Any]]:
        out = {}
        for against, goal in (("baseline", GOAL_VS_BASELINE), ("gdcmanon", GOAL_VS_GDCMANON)):
            ratio = self.ratio("dicomframe", against)
            ok = ratio is not None and ratio >= goal and not self.best("dicomframe").errors
            out[against] = {"goal": goal, "ratio": ratio, "met": None if ratio is None else ok}
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in self.runs:
            best = self.best(kind)
            out[kind] = {
                "seconds": best.seconds,
                "cpu_seconds": best.cpu_seconds,
                "files_per_s": best.files_per_s,
                "written": best.written,
                "errors": best.errors,
                "peak_pss_bytes": self.peak(kind),
                "peak_rss_bytes": self.peak_rss(kind),
                "ratio_vs_baseline": self.ratio(kind, "baseline"),
                "output_check": best.check,
            }
        return out


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def print_table(r: Result) -> None:
    print(f"\n== de-identify {r.n_files:,} files of {r.rows}×{r.cols}, {_mb(r.bytes)} on disk ==")
    header = (
        f"{'':<24}{'files/s':>9}{'seconds':>9}{'cpu s':>7}{'cores':>6}{'×base':>8}{'×gdcm':>8}{'peak PSS':>11}{'(RSS sum)':>11}"
        f"{'procs':>6}{'written':>9}{'errors':>7}"
    )
    print(header)
    print("-" * len(header))
    labels = {
        "baseline": "baseline (pydicom loop)",
        "gdcmanon": "gdcmanon -e (PS3.15 E.1)",
        "dicomframe": f"dicomframe -j{r.jobs} default",
        "floor": f"floor: copy+sha256 -j{r.jobs}",
    }
    for kind in KINDS:
        if kind in r.failures:
            print(f"{labels[kind]:<24}  FAILED: {r.failures[kind].splitlines()[0][:80]}")
            continue
        if not r.has(kind):
            continue
        b = r.best(kind)
        vs_base = r.ratio(kind, "baseline")
        vs_gdcm = r.ratio(kind, "gdcmanon")
        print(
            f"{labels[kind]:<24}{b.files_per_s:>9,.1f}{b.seconds:>9.2f}"
            f"{(f'{b.cpu_seconds:.2f}' if b.cpu_seconds is not None else '-'):>7}"
            f"{(f'{b.cpu_seconds / b.seconds:.2f}' if b.cpu_seconds is not None and b.seconds > 0 else '-'):>6}"
            f"{(f'{vs_base:.2f}×' if vs_base is not None else '-'):>8}"
            f"{(f'{vs_gdcm:.2f}×' if vs_gdcm is not None else '-'):>8}"
            f"{_mb(r.peak(kind)):>11}{_mb(r.peak_rss(kind)):>11}{b.max_processes:>6}{b.written:>9,}{b.errors:>7}"
        )
    if r.has("dicomframe") and (stages := r.best("dicomframe").child.get("timings")):
        # where the fastest run's time went (DeidentifyResult.timings)
        shown = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in stages.items())
        print(f"{'  dicomframe by stage':<24}  {shown}")
    if r.has("floor"):
        floor = r.best("floor").seconds
        over = [
            f"{kind} +{r.best(kind).seconds - floor:.2f} s"
            for kind in ("gdcmanon", "dicomframe")
            if r.has(kind)
        ]
        if over:
            # the time each spends on top of reading, hashing and writing the bytes
            print(f"{'  over the floor':<24}  {', '.join(over)}")
    print("\nwhat each output holds (one file read back):")
    o = r.original
    print(f"  {'input':<22} {o['elements']} elements, {o['private_tags']} private, {o['bytes']:,} bytes")
    for kind in KINDS:
        if kind == "floor" or not r.has(kind) or not r.best(kind).check.get("file"):
            continue
        c = r.best(kind).check
        print(
            f"  {kind:<22} {c['elements']} elements, {c['private_tags']} private, {c['bytes']:,} bytes; "
            f"name blank={c['patient_name_blank']}, study uid replaced={c['study_uid_replaced']}, "
            f"address kept={c['patient_address_kept']}, StudyDate={c['study_date'] or '-'}, "
            f"PatientIdentityRemoved={c['identity_removed'] or '-'}, encrypted originals={c['encrypted_attributes']}"
        )
    goals = r.goals()
    parts = []
    for against, label in (("baseline", "pydicom loop"), ("gdcmanon", "gdcmanon")):
        g = goals[against]
        if g["met"] is None:
            parts.append(f"dicomframe ≥ {g['goal']:g}× {label} → not measured")
        else:
            parts.append(
                f"dicomframe ≥ {g['goal']:g}× {label} → {g['ratio']:.2f}× {'MET' if g['met'] else 'NOT MET'}"
            )
    print(f"goal (jobs={r.jobs}): " + "; ".join(parts))
    for kind in KINDS:
        if r.has(kind) and (b := r.best(kind)).written != r.n_files:
            print(f"warning: {kind} wrote {b.written:,} files, expected {r.n_files:,}")


def machine_info(jobs: int, gdcm: str | None, workdir: Path | None = None) -> dict[str, Any]:
    from bench_scan import machine_info as scan_machine_info

    info = scan_machine_info(jobs, workdir)
    info["gdcmanon"] = gdcm or "-"
    try:
        info["openssl"] = subprocess.run(
            ["openssl", "version"], check=False, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        info["openssl"] = "-"
    return info


def corpus_folder(workdir: Path, n_files: int, size: int) -> Path:
    # bench_scan's naming, so the same corpus parameters share one cached corpus
    name = {64: "small", 512: "large"}.get(size, f"{size}px")
    return workdir / f"ct-{name}-{n_files}x{size}"


def main(argv: list[str] | None = None) -> int:
    default_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000, metavar="N", help="files in the corpus (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, metavar="S", help="image rows = columns (default: %(default)s)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dicomframe-bench",
        help="corpus cache and outputs (default: %(default)s)",
    )
    parser.add_argument("--jobs", type=int, default=default_jobs, help="dicomframe workers (default: all cores)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where every contender writes its output (default: <workdir>/out). The same place for "
        "all; on a slow disk the write speed decides, so e.g. /dev/shm measures the work itself",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (fastest is reported)")
    parser.add_argument(
        "--only", default=",".join(KINDS), metavar="KINDS", help="comma-separated subset of %(default)s"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a measured goal is not met (manual use)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.jobs < 1 or args.files < 1 or args.size < 1:
        parser.error("--files, --size, --repeat and --jobs must be at least 1")
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(KINDS)}")

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # keep order with stderr logs
    sys.path.insert(0, str(BENCH_DIR))
    from _corpus import corpus_bytes, corpus_root, make_ct_corpus
    from bench_scan import describe_costs, warm_page_cache

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    gdcm = gdcmanon_version() if "gdcmanon" in kinds else None
    machine = machine_info(args.jobs, gdcm, workdir)
    print(
        f"machine: {machine['usable_cores']} cores ({machine['cpu']}), {machine['memory_bytes'] / 2**30:.0f} GiB, "
        f"python {machine['python']}, dicomframe {machine['dicomframe']}, pydicom {machine['pydicom']}, "
        f"polars {machine['polars']}; gdcmanon {machine['gdcmanon']}; {machine['openssl']}; "
        f"dicomframe jobs={args.jobs}, repeat={args.repeat}"
    )
    print(f"memory costs now: {describe_costs(machine['memory_costs'])}")
    if args.jobs != 2:
        print(f"note: the goal is stated for 2 cores; this run uses jobs={args.jobs}")
    if "gdcmanon" in kinds and gdcm is None:
        print(f"gdcmanon not found: skipping it (install with `{INSTALL_GDCMANON}`, or `make services` as root)")
        kinds.remove("gdcmanon")

    folder = corpus_folder(workdir, args.files, args.size)
    _log(f"corpus: {args.files:,} files of {args.size}×{args.size} in {folder} …")
    t0 = time.perf_counter()
    paths = make_ct_corpus(folder, args.files, args.size, args.size)
    _log(f"corpus ready in {time.perf_counter() - t0:.1f} s; warming the page cache …")
    nbytes = warm_page_cache(paths)
    root = corpus_root(folder)
    original = _original_facts(paths)
    result = Result(args.files, args.size, args.size, corpus_bytes(paths), str(root), args.jobs, original)
    assert nbytes == result.bytes

    key_file = cert = None
    if "dicomframe" in kinds:
        try:
            key_file = ensure_key_file(workdir)
        except Exception as exc:  # noqa: BLE001 — report, keep the other measurements
            result.failures["dicomframe"] = f"cannot create the project key: {type(exc).__name__}: {exc}"
            kinds.remove("dicomframe")
    if "gdcmanon" in kinds:
        try:
            cert, _ = ensure_certificate(workdir)
        except (OSError, subprocess.CalledProcessError) as exc:
            result.failures["gdcmanon"] = f"cannot create a certificate with openssl: {exc}"
            kinds.remove("gdcmanon")

    out_root = (args.out.resolve() if args.out else workdir / "out") / f"deid-{folder.name}"
    print(f"outputs: {out_root}")
    # R timed runs per contender (RSS sampled), then one memory run each (PSS sampled:
    # reading PSS slows the measured process, so that run's time is not used)
    for i in range(args.repeat + 1):
        memory_run = i == args.repeat
        for kind in kinds:
            if kind in result.failures:
                continue
            # start every measurement from the same state: the previous outputs deleted
            # and their writes flushed (else the writeback and the deletion of earlier
            # runs' ~corpus-sized outputs land in this run's time), the corpus in cache —
            # for a Python contender once its interpreter has imported, so that its clock
            # starts as soon after this as gdcmanon's does (see "How")
            def prepare(kind: str = kind) -> None:
                shutil.rmtree(out_root / kind, ignore_errors=True)
                os.sync()
                warm_page_cache(paths)

            try:
                if kind == "gdcmanon":
                    assert cert is not None
                    prepare()
                    run = measure_gdcmanon(root, out_root / kind, args.files, cert, original, memory_run)
                else:
                    run = measure_python(
                        kind, root, out_root / kind, args.jobs, key_file or Path("-"), original, memory_run,
                        prepare=prepare,
                    )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 — report, keep the other measurements
                result.failures[kind] = f"{type(exc).__name__}: {exc}"
                _log(f"[{kind}] FAILED: {exc}")
                continue
            if memory_run:
                from bench_scan import fold_memory_run

                fold_memory_run(result.runs.get(kind, []), run)
                _log(f"[{kind}] memory run: peak PSS {_mb(run.peak_pss)} (RSS sum {_mb(run.peak_rss)}), time not used")
                continue
            result.runs.setdefault(kind, []).append(run)
            _log(
                f"[{kind}] run {i + 1}/{args.repeat}: {run.seconds:.2f} s, {run.files_per_s:,.1f} files/s, "
                f"peak RSS sum {_mb(run.peak_rss)}, {run.written:,} written, "
                f"{run.errors} errors"
            )
    print_table(result)

    report = {
        "benchmark": "bench_deidentify",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "goal": {
            "dicomframe_vs_baseline": GOAL_VS_BASELINE,
            "dicomframe_vs_gdcmanon": GOAL_VS_GDCMANON,
            "jobs": 2,
        },
        "corpus": {
            "files": result.n_files,
            "rows": result.rows,
            "cols": result.cols,
            "bytes": result.bytes,
            "folder": result.folder,
            "input_elements": original["elements"],
            "input_private_tags": original["private_tags"],
        },
        "goals": result.goals(),
        "summary": result.summary(),
        "failures": result.failures,
        "runs": {k: [asdict(r) for r in runs] for k, runs in result.runs.items()},
    }
    json_path = workdir / "bench_deidentify.json"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {json_path}")

    if args.check and any(g["met"] is False for g in result.goals().values()):
        return 1
    if args.check and "dicomframe" in result.failures:
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 — a benchmark never fails the build
        print(f"bench_deidentify: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(0)
