"""The ``dicomframe`` command line.

Exit codes (other systems depend on them):

* ``0`` — everything given was processed;
* ``1`` — the run completed but some files were damaged or failed
  (they are listed in the summary and in the errors table);
* ``2`` — a usage error: missing folder, unreadable bucket, bad option.
  A one-line message says what to fix; no traceback.
* ``3`` to ``6`` — ``reidentify`` refused: 3 no such batch in the vault, 4 the vault
  file was written with another project key, 5 the vault file is damaged, altered or
  was moved from another batch, 6 no such study in the batch. ``deidentify`` exits 4
  too when the vault's batches were sealed with another project key.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from .errors import DicomframeError, UserInputError

if TYPE_CHECKING:
    import polars as pl

    from .pipeline import DeidentifyResult

__all__ = ["app", "main"]

app = typer.Typer(
    name="dicomframe",
    help=(
        "De-identify and audit DICOM research cohorts as dataframes.\n\n"
        "Start with `dicomframe scan FOLDER -o cohort.parquet` to see what a cohort holds."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
_out = Console()
_err = Console(stderr=True)


#: the TLS options of `receive` and `serve` (see dicomframe.gateway.tls)
TlsCertOption = Annotated[
    str | None,
    typer.Option(
        "--tls-cert",
        help="Serve over TLS with this certificate (PEM, the chain after it). Needs --tls-key.",
        show_default=False,
    ),
]
TlsKeyOption = Annotated[
    str | None,
    typer.Option("--tls-key", help="The private key of --tls-cert (PEM, no passphrase).", show_default=False),
]
TlsCaOption = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        help="Mutual TLS: clients must present a certificate signed by this CA (PEM); others are refused "
        "in the handshake.",
        show_default=False,
    ),
]


#: --storage-option of the commands that read a vault only (reidentify, plan)
VaultStorageOption = Annotated[
    list[str] | None,
    typer.Option("--storage-option", help="fsspec option KEY=VALUE for a vault URL (repeatable)."),
]


def _fail(message: str, code: int) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(code)


#: --dask of scan and deidentify
_DASK_HELP = (
    "Run on a Dask cluster: the scheduler's address, e.g. tcp://scheduler:8786. The workers need "
    "dicomframe installed (pip install 'dicomframe\\[dask]', same version) and must reach the storage "
    "themselves: a folder they share under the same path, or a URL (credentials from their own "
    "environment). Across a network, use TLS (tls://...): the scan's results carry the inputs' header values."
)


def _parse_options(pairs: list[str] | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserInputError(f"--storage-option takes KEY=VALUE (got {pair!r})")
        options[key] = value
    return options


@app.command()
def scan(
    src: Annotated[
        list[str],
        typer.Argument(
            help="Folder(s), file(s), glob(s) or URL(s): s3://bucket/prefix, az://container/prefix, "
            "gs://bucket/prefix, memory://…, file://…. Folders are searched recursively; "
            "file names need not end in .dcm.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write Parquet: OUT.parquet (instances) + OUT.elements.parquet + OUT.errors.parquet; "
            "or a folder name for instances/elements/errors.parquet inside it. Local path or URL.",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="Worker processes \\[default: all cores].", show_default=False),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    show_paths: Annotated[
        bool,
        typer.Option(
            "--show-paths",
            help="Print file paths of failed files. Off by default: folder names often hold patient names.",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit 1 also when non-DICOM files or DICOMDIRs were found."),
    ] = False,
    storage_option: Annotated[
        list[str] | None,
        typer.Option("--storage-option", help="fsspec option KEY=VALUE for URL sources (repeatable)."),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            help=_DASK_HELP,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Read DICOM headers into typed tables: one row per file, one row per element.

    Pixel data is never read. Damaged files become rows of the errors table and the
    scan goes on; the exit code is 1 when any file was damaged.

    Examples:

      dicomframe scan studies/ -o cohort.parquet

      dicomframe scan 's3://bucket/incoming/**' -o s3://bucket/scans/2026-11 --jobs 8
    """
    from .scanner import scan as run_scan

    result = run_scan(
        src if len(src) > 1 else src[0],
        jobs=jobs,
        output=output,
        storage_options=_parse_options(storage_option),
        progress=progress and sys.stderr.isatty(),
        dask=dask,
    )
    summary = result.summary
    table = Table(title="dicomframe scan", show_header=False, title_justify="left")
    for label, value in summary.rows():
        table.add_row(label, value)
    _out.print(table)
    if result.outputs:
        for name, path in result.outputs.items():
            _out.print(f"  {name:<9} → {path}", highlight=False, soft_wrap=True)
    if result.errors.height:
        shown = result.errors.head(20)
        errors = Table(title=f"files not read ({result.errors.height})", title_justify="left")
        errors.add_column("file_id", justify="right")
        errors.add_column("kind")
        errors.add_column("reason", overflow="fold")
        for row in shown.iter_rows(named=True):
            errors.add_row(str(row["file_id"]), row["kind"], row["message"])
        _out.print(errors)
        if result.errors.height > shown.height:
            _out.print(f"  … {result.errors.height - shown.height} more in the errors table", soft_wrap=True)
        if show_paths:
            _print_paths("file_id", [(row["file_id"], row["path"]) for row in shown.iter_rows(named=True)])
        else:
            _out.print("  (paths are in the errors table; --show-paths prints them)", soft_wrap=True)
    failed = summary.failed if not strict else summary.errors
    if failed:
        raise typer.Exit(1)


@app.command()
def keygen(
    keyfile: Annotated[str, typer.Argument(help="Where to write the new key file (must not exist).", show_default=False)],
) -> None:
    """Create the project's secret key (32 random bytes, file mode 0600).

    Every pseudonym (UIDs, IDs, date offsets) is derived from this key: the same key
    gives the same pseudonyms on every run and machine; another key gives unlinkable
    ones. Back it up somewhere safe and never put it next to the data.
    """
    from .keys import generate_key_file

    key = generate_key_file(keyfile)
    _out.print(f"key written to {keyfile} (key id {key.key_id}); back it up and keep it private", highlight=False, soft_wrap=True)


def _print_paths(label: str, rows: list[tuple[int, str]]) -> None:
    """Print ``number  path`` lines, whole and unstyled, whatever the terminal's width.

    Paths go on lines of their own rather than in a table cell, which would fold
    them and leave them impossible to copy.
    """
    _out.print(f"  {label:>7}  path", highlight=False, style="bold")
    for number, path in rows:
        _out.print(f"  {number:>7}  {path}", soft_wrap=True, markup=False, highlight=False)


def _print_gate(findings: pl.DataFrame, findings_out: str | None) -> None:
    """The leak gate's findings, one row per attribute, rule and advice (never a value)."""
    import polars as pl

    attribute = (
        pl.when(pl.col("rule") == "private_tag")
        .then(pl.concat_str([pl.lit("private: "), pl.col("evidence").fill_null("?")]))
        .otherwise(pl.col("keyword").fill_null(pl.col("tag_path")))
    )
    groups = (
        findings.group_by(attribute.alias("attribute"), "rule", "suggested_action")
        .agg(pl.len().alias("findings"), pl.col("output").n_unique().alias("outputs"))
        .sort("findings", "attribute", descending=[True, False])
    )
    gate = Table(
        title=f"leak gate: {findings.height:,} findings — the batch was NOT committed (no manifest.json)",
        title_justify="left",
        expand=True,
    )
    gate.add_column("attribute", overflow="fold", ratio=2)
    gate.add_column("findings", justify="right")
    gate.add_column("outputs", justify="right")
    gate.add_column("rule: what to do", overflow="fold", ratio=5)
    for name, rule, action, n, outputs in groups.head(30).iter_rows():
        gate.add_row(_escape(name or ""), f"{n:,}", f"{outputs:,}", _escape(f"{rule}: {action or ''}"))
    _out.print(gate)
    if groups.height > 30:
        _out.print(f"  … {groups.height - 30:,} more rows", soft_wrap=True)
    if findings_out:
        findings.write_parquet(findings_out)
        _out.print(f"  every finding (output, tag path, masked evidence) → {findings_out}", soft_wrap=True, highlight=False)
    else:
        _out.print("  --findings FILE writes every finding (output, tag path, masked evidence)", soft_wrap=True)
    _out.print("  fix the profile (see `--dry-run` and the plan) and run the same command again", soft_wrap=True)


def _failed_paths(result: DeidentifyResult, vault: str, key_file: str) -> dict[int, str] | None:
    """Input number → original path of the failed inputs, from the batch's vault mapping."""
    import polars as pl

    from .keys import load_key
    from .vault import read_mapping

    if result.mapping_uri is None:  # a dry run writes no mapping
        return None
    mapping = read_mapping(vault, result.batch_id, load_key(key_file))
    wanted = {item["input"] for item in result.failed}
    rows = mapping.filter(pl.col("input").is_in(list(wanted))).select("input", "original_path")
    return dict(rows.iter_rows())


@app.command()
def deidentify(
    src: Annotated[str, typer.Argument(help="Folder (recursive, any file names), file, glob or URL.", show_default=False)],
    dst: Annotated[str, typer.Argument(help="Output root (folder or URL); the batch goes to DST/<batch_id>/.", show_default=False)],
    key_file: Annotated[str, typer.Option("--key-file", help="Project key file (dicomframe keygen).", show_default=False)],
    vault: Annotated[str, typer.Option("--vault", help="Where the mapping goes (folder or URL), apart from DST.", show_default=False)],
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="Preset (basic, default, research, cloud-upload) or a TOML file. "
            "default = Basic Profile + Retain Longitudinal Temporal Information with Modified Dates.",
        ),
    ] = "default",
    org: Annotated[str, typer.Option("--org", help="Organisation prefix for templates ({org}).")] = "DICOMFRAME",
    batch_id: Annotated[str | None, typer.Option("--batch-id", help="Batch id \\[default: generated]. Give an interrupted run's id to resume it (same key, options and input); a folder holding another run's outputs is refused.", show_default=False)] = None,
    priority: Annotated[str, typer.Option("--priority", help="STAT, URGENT or ROUTINE (in the manifest).")] = "ROUTINE",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Worker processes \\[default: all cores].", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only: print the summary, write the plan to the vault, write nothing under DST.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    audit_log: Annotated[
        str | None,
        typer.Option(
            "--audit-log",
            envvar="DICOMFRAME_AUDIT_LOG",
            help="Append a record of this run to this tamper-evident log (JSON Lines; no PHI).",
            show_default=False,
        ),
    ] = None,
    show_paths: Annotated[
        bool,
        typer.Option(
            "--show-paths",
            help="Print the paths of failed inputs (read back from the vault mapping). Off by default: "
            "folder names often hold patient names.",
        ),
    ] = False,
    findings_out: Annotated[
        str | None,
        typer.Option(
            "--findings",
            help="When the leak gate stops the batch, write every finding (output, tag path, masked "
            "evidence, what to do) to this Parquet file.",
            show_default=False,
        ),
    ] = None,
    pixel_clean: Annotated[
        str,
        typer.Option(
            "--pixel-clean",
            help="Burned-in text. auto: black out the profile's \\[\\[pixel]] device rectangles, and the text "
            "found by OCR on other images at risk (ultrasound, secondary capture, BurnedInAnnotation YES); "
            "without OCR installed those images fail instead of leaking. rules: rectangles only. "
            "Both also remove an overlay kept in the pixels' unused bits and bytes after the last frame. "
            "off: pixel data untouched. Cleaned images get code 113101 (Clean Pixel Data).",
        ),
    ] = "auto",
    keep_flagged: Annotated[
        bool,
        typer.Option(
            "--keep-flagged",
            help="When the leak gate stops the batch, leave the outputs it found something in (to look "
            "at them; still uncommitted) instead of removing them. Not for a shared bucket.",
        ),
    ] = False,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            help="fsspec option KEY=VALUE for the URLs of SRC, DST and VAULT, e.g. endpoint_url=http://... "
            "or anon=true (repeatable; credentials are better left to the environment).",
            show_default=False,
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            help=_DASK_HELP,
            show_default=False,
        ),
    ] = None,
) -> None:
    """De-identify DICOM files with the PS3.15 profile, keyed pseudonyms and a per-patient date shift.

    Writes DST/<batch_id>/<study>/<series>/<sop>.dcm (names from the new UIDs only) and
    DST/<batch_id>/manifest.json (last); the mapping to originals goes to VAULT only.
    A DICOMDIR in SRC is left out (its images are read).

    Exit code 0 when every input was written, 1 when any failed (listed below): damaged,
    empty, unreadable or not DICOM. Exit 2, before any work, for a --batch-id already
    committed with other settings (key, profile, --org, ...) or DST inside SRC; exit 4
    for a vault of another project key.

    Examples:

      dicomframe keygen project.key

      dicomframe deidentify studies/ out/ --key-file project.key --vault vault/ --dry-run

      dicomframe deidentify studies/ s3://bucket/batches --key-file project.key --vault vault/ --profile cloud-upload --org ACME
    """
    from .pipeline import _new_batch_id
    from .pipeline import deidentify as run

    if batch_id is None and not dry_run:
        # named now, so that an interrupted run can be resumed under the same id
        batch_id = _new_batch_id()
        _err.print(
            f"batch id {batch_id} (to resume an interrupted run: the same command with --batch-id {batch_id})",
            highlight=False,
            soft_wrap=True,
        )
    result = run(
        src,
        dst,
        key=key_file,
        vault=vault,
        profile=profile,
        org=org,
        batch_id=batch_id,
        priority=priority,
        jobs=jobs,
        dry_run=dry_run,
        progress=progress and sys.stderr.isatty(),
        audit_log=audit_log,
        pixel_clean=pixel_clean,
        keep_flagged=keep_flagged,
        storage_options=_parse_options(storage_option) or None,
        dask=dask,
    )
    table = Table(title="dicomframe deidentify" + (" (dry run)" if dry_run else ""), show_header=False, title_justify="left")
    for label, value in result.rows():
        table.add_row(label, value)
    _out.print(table)
    summary = result.plan.summary()
    plan_table = Table(title="plan: elements per action", title_justify="left")
    for column in ("action", "source", "elements", "files"):
        plan_table.add_column(column)
    for row in summary.iter_rows():
        plan_table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    _out.print(plan_table)
    if dry_run:
        _out.print(
            f"review it attribute by attribute: dicomframe plan {_escape(vault)} --key-file {_escape(key_file)} "
            f"--batch-id {result.batch_id}",
            highlight=False,
            soft_wrap=True,
        )
    code = 0
    if result.findings is not None and result.findings.height:
        _print_gate(result.findings, findings_out)
        code = 1
    if result.failed:
        paths = _failed_paths(result, vault, key_file) if show_paths else None
        failures = Table(title=f"inputs not written ({len(result.failed)})", title_justify="left")
        failures.add_column("input")
        failures.add_column("kind")
        failures.add_column("reason", overflow="fold")
        for item in result.failed[:20]:
            failures.add_row(str(item["input"]), item["kind"], item["reason"] or "")
        _out.print(failures)
        if paths is not None:
            _print_paths("input", [(item["input"], paths.get(item["input"], "?")) for item in result.failed[:20]])
        else:
            _out.print(
                "  (input numbers index the scan; the vault mapping has their paths, column input: "
                + ("run without --dry-run to have one)" if show_paths else "--show-paths prints them)"),
                soft_wrap=True,
            )
        code = 1
    if code:
        raise typer.Exit(code)


@app.command()
def receive(
    dst: Annotated[str, typer.Argument(help="Output root (folder or URL); each association's batch goes to DST/<batch_id>/.", show_default=False)],
    key_file: Annotated[str, typer.Option("--key-file", help="Project key file (dicomframe keygen).", show_default=False)],
    vault: Annotated[str, typer.Option("--vault", help="Where the mappings go (folder or URL), apart from DST.", show_default=False)],
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on (0: a free one, printed at start).")] = 11112,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. The default answers this machine only; --host 0.0.0.0 listens on "
            "every interface, so that the sites' senders can reach it (mind the firewall).",
        ),
    ] = "127.0.0.1",
    ae_title: Annotated[str, typer.Option("--ae-title", help="Called AE title senders must address; associations to another are rejected.")] = "DICOMFRAME",
    allow_calling: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-calling",
            help="Accept associations from this calling AE title only (repeatable) \\[default: any].",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="Preset (basic, default, research, cloud-upload) or a TOML file, as deidentify takes it.",
        ),
    ] = "default",
    org: Annotated[str, typer.Option("--org", help="Organisation prefix for templates ({org}).")] = "DICOMFRAME",
    spool: Annotated[
        str | None,
        typer.Option(
            "--spool",
            help="Folder for instances received and not yet de-identified, and quarantine/ for those that "
            "failed (mode 0700; it holds patient data). The system temp folder may be emptied at boot: in "
            "production give a folder on a lasting disk \\[default: dicomframe-spool-<uid> in the system "
            "temp folder].",
            show_default=False,
        ),
    ] = None,
    audit_log: Annotated[
        str | None,
        typer.Option(
            "--audit-log",
            envvar="DICOMFRAME_AUDIT_LOG",
            help="Append a record of each batch to this tamper-evident log (JSON Lines; no PHI).",
            show_default=False,
        ),
    ] = None,
    pixel_clean: Annotated[
        str,
        typer.Option("--pixel-clean", help="Burned-in text: auto, rules or off, as deidentify takes it."),
    ] = "auto",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Worker processes per batch \\[default: all cores].", show_default=False)] = None,
    priority: Annotated[str, typer.Option("--priority", help="STAT, URGENT or ROUTINE (in each batch's manifest).")] = "ROUTINE",
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            help="fsspec option KEY=VALUE for the URLs of DST and VAULT (repeatable).",
            show_default=False,
        ),
    ] = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_ca: TlsCaOption = None,
    max_associations: Annotated[
        int, typer.Option("--max-associations", help="Associations open at once; one more is rejected (the sender may retry).")
    ] = 32,  # dicomframe.gateway.scp.DEFAULT_MAX_ASSOCIATIONS (not imported: start-up)
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            help="Seconds a connection may take to send its association request: a silent one is closed then.",
        ),
    ] = 10.0,  # dicomframe.gateway.scp.DEFAULT_REQUEST_TIMEOUT
) -> None:
    """Receive studies over DICOM (C-STORE) and de-identify each association as one batch.

    Sites push with C-STORE to the called AE title (--ae-title) on --port; C-ECHO answers
    a link check. Each instance is written to the spool and flushed to disk before the
    sender is told it is stored. When the association ends, what it sent is de-identified
    like `dicomframe deidentify` does into DST/<batch_id>/ (mapping in VAULT), and the
    spool folder is removed. Inputs that fail stay in SPOOL/quarantine/<batch_id>/.

    One line per finished batch: batch id, files written, failed, where its manifest is.
    Runs until Ctrl-C, then finishes the batches received and exits 0. Needs the extra
    net: pip install 'dicomframe\\[net]'.

    Examples:

      dicomframe receive out/ --key-file project.key --vault vault/ --port 11112

      echoscu -aec DICOMFRAME 127.0.0.1 11112

      storescu -aec DICOMFRAME -aet SITE_A +sd +r 127.0.0.1 11112 studies/

    Over a network you do not own, add TLS (DICOM's port for it is 2762); with --tls-ca,
    only senders holding a certificate that CA signed get in:

      dicomframe receive out/ --key-file project.key --vault vault/ --host 0.0.0.0 --port 2762 --tls-cert receiver.pem --tls-key receiver.key --tls-ca sites-ca.pem

      storescu +tls site.key site.pem +cf receiver.pem -aec DICOMFRAME +sd +r HOST 2762 studies/
    """
    import signal
    import threading

    from .gateway.scp import FinishedBatch, Receiver

    def report(batch: FinishedBatch) -> None:
        if batch.committed:
            where = f"manifest {batch.manifest_uri}"
        elif batch.error:
            where = f"NOT committed ({batch.error}); inputs kept in {receiver.quarantine / batch.batch_id}"
        else:
            where = f"NOT committed (leak gate); inputs kept in {receiver.quarantine / batch.batch_id}"
        kept = f", {batch.quarantined:,} kept in quarantine" if batch.committed and batch.quarantined else ""
        twice = f", {batch.duplicates:,} received twice" if batch.duplicates else ""
        _out.print(
            f"batch {batch.batch_id}: {batch.written:,} written, {batch.failed:,} failed{twice}{kept}, {where}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )

    receiver = Receiver(
        dst, key=key_file, vault=vault, port=port, host=host, ae_title=ae_title, allow_calling=allow_calling,
        profile=profile, org=org, spool=spool, audit_log=audit_log, pixel_clean=pixel_clean, jobs=jobs,
        priority=priority, storage_options=_parse_options(storage_option) or None, on_batch=report,
        tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca, max_associations=max_associations,
        request_timeout=request_timeout,
    )  # fmt: skip
    receiver.start()
    _out.print(
        f"listening on {receiver.host}:{receiver.port} as {receiver.ae_title}{receiver.security}; spool {receiver.spool}; "
        "Ctrl-C stops (the batches received are finished first)",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    stopped = threading.Event()
    # Ctrl-C (SIGINT) and SIGTERM (a service manager) stop it the same way; set here, since
    # a program started in the background of a script inherits SIGINT ignored
    previous = {sig: signal.signal(sig, lambda *_: stopped.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():  # a second Ctrl-C while the batches finish interrupts
            signal.signal(sig, handler)
        _err.print("stopping: finishing the batches received…", highlight=False)
        receiver.stop()
    failed = [b for b in receiver.batches if not b.committed or b.failed]
    _out.print(
        f"stopped: {len(receiver.batches):,} batch{'es' if len(receiver.batches) != 1 else ''}"
        + (f", {len(failed):,} with inputs kept in {receiver.quarantine}" if failed else ""),
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


@app.command()
def audit(
    src: Annotated[
        str | None,
        typer.Argument(help="De-identified files: folder, file, glob or URL.", show_default=False),
    ] = None,
    vault: Annotated[str | None, typer.Option("--vault", help="Vault of the batches: search for every original identifier it holds.", show_default=False)] = None,
    key_file: Annotated[str | None, typer.Option("--key-file", help="Project key file (needed with --vault).", show_default=False)] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the findings table to this Parquet file.", show_default=False)] = None,
    profile: Annotated[str, typer.Option("--profile", help="Profile the files were de-identified with (a preset or a TOML file). auto: the preset their DeidentificationMethod names, else default.")] = "auto",
    fail_on: Annotated[str, typer.Option("--fail-on", help="Exit 1 when a finding of this severity or higher exists: low, medium, high.")] = "medium",
    rule: Annotated[list[str] | None, typer.Option("--rule", help="Run only this rule (repeatable).", show_default=False)] = None,
    list_rules: Annotated[bool, typer.Option("--list-rules", help="List the rules and what each catches, then exit.")] = False,
    ocr: Annotated[
        bool,
        typer.Option("--ocr", help="Also OCR the images that may hold burned-in text (extra ocr; Debian tesseract-ocr)."),
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    storage_option: Annotated[
        list[str] | None,
        typer.Option("--storage-option", help="fsspec option KEY=VALUE for the URLs of SRC and VAULT (repeatable).", show_default=False),
    ] = None,
) -> None:
    """Audit de-identified files for PHI that survived: a findings table, evidence masked.

    Examples:

      dicomframe audit out/batch-1 --vault vault/ --key-file project.key -o findings.parquet

      dicomframe audit --list-rules
    """
    from .phiaudit import RULES, SEVERITIES
    from .phiaudit import _audit as run_audit

    if list_rules:
        table = Table(title="audit rules", title_justify="left")
        table.add_column("rule", no_wrap=True)  # names are looked up and grepped: never folded
        table.add_column("severity", no_wrap=True)
        table.add_column("catches", overflow="fold")
        for r in RULES:
            table.add_row(r.name, r.severity, r.catches)
        _out.print(table)
        return
    if src is None:
        raise UserInputError("give the folder or URL of the de-identified files (or --list-rules)")
    if fail_on not in SEVERITIES:
        raise UserInputError(f"--fail-on must be one of {', '.join(SEVERITIES)} (got {fail_on!r})")
    run = run_audit(
        src,
        vault=vault,
        key=key_file,
        profile=profile,
        rules=rule,
        ocr=ocr,
        progress=progress and sys.stderr.isatty(),
        storage_options=_parse_options(storage_option) or None,
    )
    findings = run.findings
    unreadable = f" ({run.unreadable:,} more unreadable or not DICOM)" if run.unreadable else ""
    searched = f"; {run.originals:,} original identifiers of the vault searched for" if vault else ""
    _out.print(
        f"audited {run.files:,} DICOM file{'s' if run.files != 1 else ''}{unreadable} with {len(run.rules)} "
        f"rule{'s' if len(run.rules) != 1 else ''} ({', '.join(run.rules)}), profile {run.profile}{searched}",
        highlight=False,
    )
    if output:
        findings.write_parquet(output)
        _out.print(f"findings table written to {output}", highlight=False)
    if findings.height == 0:
        _out.print("no findings", highlight=False)
        return
    import polars as pl

    counts = findings.group_by("rule", "severity").len().sort("len", descending=True)
    table = Table(title=f"findings ({findings.height})", title_justify="left")
    table.add_column("rule", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("findings", justify="right")
    for name, severity, n in counts.iter_rows():
        table.add_row(name, severity, f"{n:,}")
    _out.print(table)
    detail = Table(title="first findings (evidence masked)", title_justify="left")
    for column in ("file_id", "tag_path", "keyword", "rule", "evidence"):
        detail.add_column(column, overflow="fold")
    for row in findings.head(15).iter_rows(named=True):
        detail.add_row(*[_escape("" if row.get(c) is None else str(row.get(c))) for c in ("file_id", "tag_path", "keyword", "rule", "evidence")])
    _out.print(detail)
    if findings.height > 15:
        _out.print(f"… {findings.height - 15:,} more: -o FILE writes them all (Parquet)", highlight=False)
    level = SEVERITIES.index(fail_on)
    worst = findings.filter(pl.col("severity").is_in(list(SEVERITIES[level:])))
    if worst.height:
        raise typer.Exit(1)


auditlog_app = typer.Typer(
    name="auditlog",
    help="Check the tamper-evident audit log (who de-identified, re-identified, exported, used the key).",
    no_args_is_help=True,
)
app.add_typer(auditlog_app, name="auditlog")


@auditlog_app.command("verify")
def auditlog_verify(
    log: Annotated[str, typer.Argument(help="The audit log file (JSON Lines, local path).", show_default=False)],
) -> None:
    """Check every record and link of an audit log: edits, removals, reordering, cut-off writes.

    Exit code 0 when the chain is intact, 1 when problems were found (listed by line
    and seq; record contents are never printed), 2 when the file is missing.

    Example:

      dicomframe auditlog verify /var/lib/dicomframe/audit.jsonl
    """
    from .auditlog import verify as run_verify

    try:
        report = run_verify(log)
    except UserInputError as exc:  # missing file, a folder, no permission
        _fail(_escape(str(exc)), 2)
    if report.ok:
        _out.print(f"ok: {report.records:,} records, chain intact", highlight=False)
        return
    shown = report.problems[:50]
    table = Table(title=f"audit log problems ({len(report.problems)})", title_justify="left")
    table.add_column("line", justify="right")
    table.add_column("seq", justify="right")
    table.add_column("kind")
    table.add_column("message", overflow="fold")
    for problem in shown:
        seq = "" if problem.seq is None else str(problem.seq)
        table.add_row(str(problem.line), seq, problem.kind.value, _escape(problem.message))
    _out.print(table)
    if len(report.problems) > len(shown):
        _out.print(f"  … {len(report.problems) - len(shown)} more", highlight=False)
    _out.print(
        f"  {report.records:,} records read; keep this file unchanged as evidence and have it reviewed "
        "(appends are refused while the last line is partial or damaged).",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


@app.command()
def reidentify(
    vault: Annotated[str, typer.Argument(help="Vault root (folder or URL) given to deidentify --vault.", show_default=False)],
    key_file: Annotated[str, typer.Option("--key-file", help="Project key file the batch was de-identified with.", show_default=False)],
    batch_id: Annotated[str, typer.Option("--batch-id", help="Batch id (batch_id in the batch's manifest.json).", show_default=False)],
    study: Annotated[str, typer.Option("--study", help="Cloud study id (cloud_study_id in the manifest).", show_default=False)],
    storage_option: VaultStorageOption = None,
    audit_log: Annotated[
        str | None,
        typer.Option(
            "--audit-log",
            envvar="DICOMFRAME_AUDIT_LOG",
            help="Append a record of this re-identification to this tamper-evident log (no PHI).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the original identifiers of one de-identified study as JSON.

    Prints batch_id, cloud_study_id and the original patient_id, study_instance_uid and
    accession_number. The output is PHI: keep it out of logs and shared terminals.
    Exit codes: 3 unknown batch, 4 wrong key, 5 vault file damaged or altered,
    6 unknown study, 2 usage error (bad key file, bad batch id, unreachable vault).

    Example:

      dicomframe reidentify vault/ --key-file project.key --batch-id 20250101-120000-1a2b3c4d --study DXHSWVJ91JEQ
    """
    import json

    from .auditlog import Action, log_event
    from .errors import VaultError
    from .keys import FileKeyProvider
    from .vault import reidentify_study

    provider = FileKeyProvider(key_file)
    try:
        found = reidentify_study(vault, provider, batch_id, study, storage_options=_parse_options(storage_option))
    except VaultError as exc:
        log_event(audit_log, Action.REIDENTIFY, batch_id=batch_id, ids=[study], outcome=type(exc).__name__.lower())
        raise
    log_event(audit_log, Action.REIDENTIFY, batch_id=batch_id, ids=[study], details={"key_id": provider.get_key().key_id})
    typer.echo(json.dumps(found, indent=2))


@app.command()
def plan(
    vault: Annotated[str, typer.Argument(help="Vault root (folder or URL) the dry run wrote to (--vault).", show_default=False)],
    key_file: Annotated[str, typer.Option("--key-file", help="Project key file of the dry run.", show_default=False)],
    batch_id: Annotated[str, typer.Option("--batch-id", help="Batch id the dry run printed.", show_default=False)],
    keyword: Annotated[
        list[str] | None,
        typer.Option("--keyword", "-k", help="Only the elements of this keyword (repeatable).", show_default=False),
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option("--action", "-a", help="Only the elements of this action letter, e.g. K or C (repeatable).", show_default=False),
    ] = None,
    values: Annotated[
        bool,
        typer.Option("--values", help="Show each element's value and new value (original values: PHI).", show_default=False),
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="Rows shown: attributes, or elements with --values.")] = 50,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o",
            help="Write the elements chosen, values included (PHI), to a local OUT.parquet or OUT.csv.",
            show_default=False,
        ),
    ] = None,
    storage_option: VaultStorageOption = None,
    audit_log: Annotated[
        str | None,
        typer.Option(
            "--audit-log",
            envvar="DICOMFRAME_AUDIT_LOG",
            help="Append a record of each look at values (--values, --output) to this tamper-evident log (no PHI).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Review the plan a dry run sealed into the vault, before anything is written.

    `deidentify --dry-run` plans every element of every input and seals the plan into
    VAULT/<batch_id>/plan.parquet.enc (it holds original values). Without --values this
    prints, per attribute, what will happen to it (action, the rule that decided it,
    elements and files): no value. --values shows values and new values; --output writes
    them to a file for a spreadsheet or DuckDB: both are original data (PHI), logged in
    --audit-log, and the file belongs beside the vault, never beside the outputs.

    Examples:

      dicomframe deidentify studies/ out/ --key-file project.key --vault vault/ --dry-run --batch-id trial

      dicomframe plan vault/ --key-file project.key --batch-id trial

      dicomframe plan vault/ --key-file project.key --batch-id trial --action K

      dicomframe plan vault/ --key-file project.key --batch-id trial -k StudyDate --values
    """
    import polars as pl

    from .auditlog import Action, log_event
    from .keys import FileKeyProvider
    from .vault import read_plan

    key = FileKeyProvider(key_file).get_key()
    table = read_plan(vault, batch_id, key, storage_options=_parse_options(storage_option))
    table = _chosen_rows(table, keyword, action)
    _out.print(
        f"plan of batch {batch_id}: {table.height:,} element(s) of {table['file_id'].n_unique():,} file(s) chosen",
        highlight=False,
        markup=False,
    )
    if output or values:
        log_event(
            audit_log, Action.EXPORT, batch_id=batch_id, counts={"elements": table.height},
            details={"what": "plan values", "key_id": key.key_id},
        )  # fmt: skip
    if output:
        chosen = table.with_columns(pl.col("action").cast(pl.String))
        _write_table(chosen, output)
        _err.print(
            f"{chosen.height:,} elements written to {output}: it holds original values (PHI); keep it with the vault",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        return
    if values:
        grid = Table("file", "tag path", "keyword", "action", "value", "new value")
        for row in table.head(limit).iter_rows(named=True):
            grid.add_row(
                str(row["file_id"]), row["tag_path"], row["keyword"] or "", str(row["action"]),
                _escape(str(row["value"] if row["value"] is not None else "")),
                _escape(str(row["new_value"] if row["new_value"] is not None else "")),
            )  # fmt: skip
        _out.print(grid)
        if table.height > limit:
            _out.print(f"… {table.height - limit:,} more (--limit N, or -o FILE.parquet)", highlight=False, markup=False)
        return
    summary = (
        table.group_by(pl.coalesce("keyword", "tag_path").alias("attribute"), pl.col("action").cast(pl.String), "source")
        .agg(pl.len().alias("elements"), pl.col("file_id").n_unique().alias("files"))
        .sort(["elements", "attribute"], descending=[True, False])
    )
    grid = Table("attribute", "action", "source", "elements", "files")
    for attribute, letter, source, elements, files in summary.head(limit).iter_rows():
        grid.add_row(_escape(str(attribute)), letter, _escape(str(source)), f"{elements:,}", f"{files:,}")
    _out.print(grid)
    if summary.height > limit:
        _out.print(f"… {summary.height - limit:,} more attributes (--limit N, --keyword, --action)", highlight=False, markup=False)


def _write_table(frame: pl.DataFrame, output: str) -> None:
    """``frame`` to ``output``: Parquet (``.parquet``) or CSV (``.csv``, nested columns left out)."""
    if output.endswith(".parquet"):
        frame.write_parquet(output)
    elif output.endswith(".csv"):
        frame.drop([c for c, t in frame.schema.items() if t.is_nested()]).write_csv(output)
    else:
        raise UserInputError("--output must end in .parquet or .csv")


def _parse_size(text: str) -> int:
    """``"2G"``, ``"2GiB"``, ``"500M"``, ``"64k"`` or a number of bytes → bytes (units of 1,024)."""
    import re

    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise UserInputError(f"--max-body takes a size such as 2G, 500M, 64K or a number of bytes (got {text!r})")
    power: int = " kmgt".index(match.group(2) or " ")
    return int(match.group(1)) << (10 * power)


@app.command()
def serve(
    dst: Annotated[str, typer.Argument(help="Output root of batches (folder or URL); each goes to DST/<batch_id>/.", show_default=False)],
    key_file: Annotated[str, typer.Option("--key-file", help="Project key file (dicomframe keygen).", show_default=False)],
    vault: Annotated[str, typer.Option("--vault", help="Where every mapping goes (folder or URL), apart from DST.", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Keep loopback unless a --token-file is set and TLS is in front.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    profile: Annotated[
        str,
        typer.Option("--profile", help="Preset (basic, default, research, cloud-upload) or a TOML file, as for deidentify."),
    ] = "default",
    org: Annotated[str, typer.Option("--org", help="Organisation prefix for templates ({org}).")] = "DICOMFRAME",
    allow_source: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-source",
            help="A folder or URL prefix POST /v1/batches may read (repeatable). A src must resolve inside "
            "one (links followed); anything else is refused (403). None: no batch is taken.",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            help="File holding the bearer token every /v1 request must send (Authorization: Bearer TOKEN); "
            "mode 0600. Without it, no token is asked (loopback only: another --host needs one).",
            show_default=False,
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="A name clients reach the gateway by (its Host header), besides 127.0.0.1, localhost and ::1, "
            "e.g. gateway.hospital.example (repeatable). Requests naming any other host are refused (400).",
            show_default=False,
        ),
    ] = None,
    audit_log: Annotated[
        str | None,
        typer.Option(
            "--audit-log",
            envvar="DICOMFRAME_AUDIT_LOG",
            help="Append a record of every batch (single files included) to this tamper-evident log (no PHI).",
            show_default=False,
        ),
    ] = None,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest file POST /v1/anonymize takes (2G, 500M, ...); larger: 413.")] = "2G",
    pixel_clean: Annotated[
        str,
        typer.Option("--pixel-clean", help="Burned-in text: auto, rules or off, as for deidentify."),
    ] = "auto",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Worker processes of a batch \\[default: all cores].", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Files POST /v1/anonymize de-identifies at once.")] = 2,
    max_waiting: Annotated[
        int,
        typer.Option(
            "--max-waiting",
            help="Further uploads that may wait for their turn (each on disk meanwhile); one more is "
            "answered 503 with Retry-After at once, before its body is read.",
        ),
    ] = 16,
    storage_option: Annotated[
        list[str] | None,
        typer.Option("--storage-option", help="fsspec option KEY=VALUE for the URLs of DST, VAULT and sources (repeatable).", show_default=False),
    ] = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_ca: TlsCaOption = None,
) -> None:
    """Run the HTTP gateway: de-identify files sent to it, and batches of folders it may read.

    POST /v1/anonymize takes one DICOM file as the body and answers the de-identified
    file, with headers X-Dicomframe-Batch-Id and X-Dicomframe-Study-Id (the pseudonymous
    study id); its mapping goes to VAULT, so it can be re-identified. The same key gives
    the same pseudonymous UIDs on every call. POST /v1/batches with {"src": ...} de-identifies
    a folder under an --allow-source root into DST, one batch at a time; GET
    /v1/batches/<batch_id> tells its status. GET /healthz needs no token.

    Answers and log lines never hold a value from a file, a path sent by a client or an
    exception's text. Uploads pass through a private temporary folder (under TMPDIR: keep
    it on an encrypted disk), removed when the request ends. Stop with Ctrl-C; the
    batches not finished are kept in the vault (encrypted) and resume at the next start.

    Examples:

      dicomframe serve out/ --key-file project.key --vault vault/ --allow-source /srv/incoming

      curl --data-binary @file.dcm -H 'Content-Type: application/dicom' -o deid.dcm http://127.0.0.1:8080/v1/anonymize

      curl -H 'Content-Type: application/json' -d '{"src": "/srv/incoming/study1"}' http://127.0.0.1:8080/v1/batches

      curl http://127.0.0.1:8080/v1/batches/BATCH_ID

    With a token (--token-file gateway.token), every /v1 request sends it:

      curl -H "Authorization: Bearer $(cat gateway.token)" --data-binary @file.dcm -H 'Content-Type: application/dicom' -o deid.dcm http://127.0.0.1:8080/v1/anonymize

    Beyond this machine, serve HTTPS (--tls-cert, --tls-key) so the token and the files are
    encrypted on the wire; --tls-ca also asks each client for a certificate that CA signed:

      dicomframe serve out/ --key-file project.key --vault vault/ --host 0.0.0.0 --token-file gateway.token --tls-cert gateway.pem --tls-key gateway.key

      curl --cacert gateway.pem -H "Authorization: Bearer $(cat gateway.token)" https://gateway.hospital.example:8080/v1/batches/BATCH_ID
    """
    import logging

    try:
        import uvicorn
    except ImportError:
        from .errors import MissingExtraError

        raise MissingExtraError("the HTTP gateway (dicomframe serve)", "serve", "uvicorn") from None
    from .gateway.http import GatewaySettings, create_app, quiet_warnings, read_token_file

    settings = GatewaySettings(
        dst=dst,
        key=key_file,
        vault=vault,
        profile=profile,
        org=org,
        allow_sources=tuple(allow_source or ()),
        token=read_token_file(token_file) if token_file else None,
        audit_log=audit_log,
        max_body=_parse_size(max_body),
        pixel_clean=pixel_clean,
        jobs=jobs,
        storage_options=_parse_options(storage_option) or None,
        concurrency=concurrency,
        max_waiting=max_waiting,
        # the address it listens on, when it names one, is a name clients may use
        allowed_hosts=(*(allow_host or ()), *(() if host in ("0.0.0.0", "::") else (host,))),
    )
    from .gateway.tls import TlsFiles, server_context

    tls = TlsFiles.of(tls_cert, tls_key, tls_ca)
    if tls is not None:
        server_context(tls)  # a file that does not fit is told now, in our words, not by uvicorn
    loopback = host in ("127.0.0.1", "::1", "localhost")
    if not loopback and settings.token is None:
        raise UserInputError(
            f"--host {host} without --token-file: anyone who reaches this port could send files and start "
            "batches; give --token-file (with --tls-cert/--tls-key, or TLS in front), or keep the default "
            "--host 127.0.0.1"
        )
    application = create_app(settings)
    if not loopback and tls is None:
        _err.print(
            "warning: plain HTTP beyond this machine: the token and the files cross the network unencrypted; "
            "give --tls-cert and --tls-key, or put a TLS proxy in front",
            highlight=False,
            soft_wrap=True,
        )
    scheme = "https" if tls is not None else "http"
    clients = "; clients need a certificate the --tls-ca signed" if tls is not None and tls.mutual else ""
    _err.print(
        f"dicomframe gateway on {scheme}://{_escape(host)}:{port}{clients} — batches to {_escape(dst)}, mappings to "
        f"{_escape(vault)}, profile {_escape(profile)}, "
        f"{len(settings.allow_sources)} allowed source(s), token {'required' if settings.token else 'not required'}",
        highlight=False,
        soft_wrap=True,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_warnings()
    # uvicorn's access log would print each request's path, which a client chooses: the
    # gateway logs its own line per request, with the route instead
    secure: dict[str, object] = {}
    if tls is not None:
        import ssl

        secure = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
        if tls.ca is not None:
            secure |= {"ssl_ca_certs": tls.ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    uvicorn.run(
        application, host=host, port=port, access_log=False, server_header=False, log_level="info", **secure  # type: ignore[arg-type]
    )


#: what becomes of an attribute a profile's table does not list (see dicomframe.planner)
_UNLISTED = (
    "an attribute the table does not list is removed when unknown to the dictionary or private (fail "
    "closed), and a standard one kept unless it holds a name, free text, a date, an address, personal details "
    "or an instance UID (replaced)"
)


def _chosen_rows(frame: pl.DataFrame, keyword: list[str] | None, action: list[str] | None) -> pl.DataFrame:
    """The rows of ``frame`` of these keywords and action letters (any case; None: all)."""
    import polars as pl

    from .profiles import Action

    if keyword:
        frame = frame.filter(pl.col("keyword").is_in(keyword))
    if action:
        frame = frame.filter(pl.col("action").cast(pl.String).is_in([Action.parse(a).value for a in action]))
    return frame


#: what each action letter of a profile does (PS3.15 E.1-1 codes, and T for a template)
_ACTION_MEANING = {
    "X": "remove",
    "Z": "empty (or dummy)",
    "D": "dummy value",
    "K": "keep",
    "C": "clean",
    "U": "keyed new UID",
    "T": "template",
}


@app.command()
def profile(
    name: Annotated[
        str,
        typer.Argument(help="A preset (basic, default, research, cloud-upload) or a TOML profile file."),
    ] = "default",
    keyword: Annotated[
        list[str] | None,
        typer.Option("--keyword", "-k", help="Show the rows of this attribute keyword (repeat for more).", show_default=False),
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option(
            "--action", "-a", help="Show the rows of this action letter, e.g. K for what is kept (repeat for more).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o",
            help="Write the whole resolved table (or the rows chosen) to OUT.csv or OUT.parquet, for review.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show what a profile does to each attribute: PS3.15 Table E.1-1 with its options, resolved.

    Without --keyword or --action, a summary: the options, and how many rows each action
    has, by where it comes from (the basic profile, an option, a custom rule). An attribute
    the table does not list is removed when the data dictionary does not know it or it is
    private (fail closed; the Retain Safe Private option keeps the safe ones); a standard
    one is kept unless it holds a name, free text, a date, a system address, a person's
    details or the UID of an instance (replaced; the plan's source then starts "not in E.1-1").

    Examples:

      dicomframe profile research

      dicomframe profile default --keyword PatientName --keyword StudyDate

      dicomframe profile my-study.toml --action K

      dicomframe profile cloud-upload -o cloud-upload.csv
    """
    import polars as pl

    from .frames import format_tag_expr
    from .profiles import Profile

    prof = Profile.load(name)
    shown = prof.table().select(
        pl.coalesce(pl.col("pattern"), format_tag_expr(pl.col("tag"))).alias("tag"), "keyword", "name",
        pl.col("action").cast(pl.String), "source", "template", "private_creator",
    )  # fmt: skip
    if keyword:
        unknown = sorted(set(keyword) - set(shown["keyword"].drop_nulls().to_list()))
        if unknown:
            raise UserInputError(
                f"no row of the profile for keyword(s) {', '.join(unknown)} (keywords are case-sensitive, "
                f"e.g. PatientName); {_UNLISTED}"
            )
    chosen = _chosen_rows(shown, keyword, action)
    options = ", ".join(prof._option_list()) or "none"
    _out.print(f"profile {prof.name}: options {options}; {len(prof.rules)} custom rule(s)", highlight=False)
    if output:
        _write_table(chosen, output)
        _out.print(f"{chosen.height} rows written to {output}", highlight=False, soft_wrap=True)
        return
    if not keyword and not action:
        counts = (
            shown.group_by("action", "source").len().sort(["action", "len"], descending=[False, True])
        )
        grid = Table("action", "meaning", "source", "rows")
        for letter, source, rows in counts.iter_rows():
            grid.add_row(letter, _ACTION_MEANING.get(letter, ""), source, str(rows))
        _out.print(grid)
        _out.print(
            f"{_UNLISTED[0].upper()}{_UNLISTED[1:]}. --keyword NAME or --action LETTER shows the rows; "
            "-o FILE.csv writes them all.",
            highlight=False,
        )
        return
    grid = Table("tag", "keyword", "action", "source", "template")
    for row in chosen.iter_rows(named=True):
        grid.add_row(
            row["tag"] or "", row["keyword"] or row["name"] or "", row["action"], row["source"], row["template"] or "",
        )
    _out.print(grid)
    _out.print(f"{chosen.height} row(s)", highlight=False)


@app.command()
def version() -> None:
    """Print the dicomframe version."""
    from . import __version__

    _out.print(__version__)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and maps errors to exit codes."""
    from ._quiet import silence_pydicom_log

    silence_pydicom_log()  # pydicom's log lines quote values of files: none reach the terminal
    try:
        app(args=argv, prog_name="dicomframe")
    except UserInputError as exc:
        _fail(_escape(str(exc)), 2)
    except DicomframeError as exc:
        _fail(_escape(str(exc)), getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        _fail(
            "interrupted; nothing half-written was left behind: re-run the same command (deidentify: with "
            "the --batch-id it printed first, to resume that batch)",
            130,
        )
    except Exception as exc:  # a bug: its message or traceback may quote a value from a file
        if os.environ.get(DEBUG_ENV):
            raise
        _fail(_internal_error(exc), 70)


#: set (to anything) to see an internal error's whole traceback, which may quote patient data
DEBUG_ENV = "DICOMFRAME_DEBUG"


def _internal_error(exc: BaseException) -> str:
    """An unexpected error, told without its message (it may hold a value from a file)."""
    from .errors import innermost_frame

    last = innermost_frame(exc)
    where = "" if last is None else f" at dicomframe/{os.path.basename(last.filename)}:{last.lineno} in {last.name}"
    return (
        f"internal error ({type(exc).__name__}{where}). This is a bug in dicomframe: please report it "
        "with that line. Its message is not shown, as it may quote a value from a file; "
        f"{DEBUG_ENV}=1 shows the whole traceback (it may hold patient data: keep it private)"
    )


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _reflowed(doc: str) -> str:
    """A command's docstring as ``--help`` shows it: the lines of a paragraph joined, for the
    terminal to wrap at its own width; indented lines (examples) kept as they are."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        text if any(line.startswith(" ") for line in text.splitlines()) else " ".join(text.split("\n"))
        for text in paragraphs
    )


# rich help keeps a docstring's line breaks: without this, each sentence broke where the
# source line did, mid-width
for _info in [*app.registered_commands, *auditlog_app.registered_commands]:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflowed(_info.callback.__doc__)


if __name__ == "__main__":  # pragma: no cover
    main()


