"""The ``dicomframe`` command line.

Exit codes (other systems depend on them):

* ``0`` — everything given was processed;
* ``1`` — the run completed but some files were damaged or failed
  (they are listed in the summary and in the errors table);
* ``2`` — a usage error: missing folder, unreadable bucket, bad option.
  A one-line message says what to fix; no traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from .errors import DicomframeError, UserInputError

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


def _fail(message: str, code: int) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(code)


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
        typer.Option("--jobs", "-j", help="Worker processes [default: all cores].", show_default=False),
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
) -> None:
    """Read DICOM headers into typed tables: one row per file, one row per element.

    Pixel data is never read. Damaged files become rows of the errors table and the
    scan goes on; the exit code is 1 when any file was damaged.

    Examples:

      dicomframe scan studies/ -o cohort.parquet

      dicomframe scan 's3://bucket/incoming/**' -o s3://bucket/scans/2026-11 --jobs 8
    """
    from .scanner import FAILURE_KINDS
    from .scanner import scan as run_scan

    result = run_scan(
        src if len(src) > 1 else src[0],
        jobs=jobs,
        output=output,
        storage_options=_parse_options(storage_option),
        progress=progress and sys.stderr.isatty(),
    )
    summary = result.summary
    table = Table(title="dicomframe scan", show_header=False, title_justify="left")
    for label, value in summary.rows():
        table.add_row(label, value)
    _out.print(table)
    if result.outputs:
        for name, path in result.outputs.items():
            _out.print(f"  {name:<9} → {path}", highlight=False)
    if result.errors.height:
        shown = result.errors.head(20)
        errors = Table(title=f"files not read ({result.errors.height})", title_justify="left")
        errors.add_column("file_id", justify="right")
        errors.add_column("path" if show_paths else "kind")
        if show_paths:
            errors.add_column("kind")
        errors.add_column("reason", overflow="fold")
        for row in shown.iter_rows(named=True):
            cells = [str(row["file_id"])]
            if show_paths:
                cells.append(row["path"])
            cells += [row["kind"], row["message"]]
            errors.add_row(*cells)
        _out.print(errors)
        if result.errors.height > shown.height:
            _out.print(f"  … {result.errors.height - shown.height} more in the errors table")
        if not show_paths:
            _out.print("  (paths are in the errors table; --show-paths prints them)")
    failed = summary.failed if not strict else summary.errors
    if failed:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the dicomframe version."""
    from . import __version__

    _out.print(__version__)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and maps errors to exit codes."""
    try:
        app(args=argv, prog_name="dicomframe")
    except UserInputError as exc:
        _fail(_escape(str(exc)), 2)
    except DicomframeError as exc:
        _fail(_escape(str(exc)), 1)
    except KeyboardInterrupt:
        _fail("interrupted; nothing half-written was left behind: re-run the same command", 130)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":  # pragma: no cover
    main()


