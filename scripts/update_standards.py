"""Copy the PS3.15 de-identification tables into the package and record their provenance.

Usage::

    python scripts/update_standards.py [SRC_DIR]

``SRC_DIR`` holds the five CSVs generated from DICOM PS3.15 (``part15.xml``) and
their README; it defaults to ``../shared/standards`` relative to the repository
root. The CSVs are copied byte for byte into ``dicomframe/standards/``; each
one's header and row count is checked first, and nothing is written unless all
five pass. ``dicomframe/standards/README.md`` is then rewritten with the
provenance and the SHA-256 of every shipped file.

The package reads these copies at runtime (``importlib.resources``); code never
re-types a table. To move to a new edition: regenerate the CSVs from the new
``part15.xml``, update the ``PROVENANCE`` constants and expected row counts
below, run this script, and run ``pytest tests/test_profiles.py``.

Only the standard library is used, so the script runs before the package is
installed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "dicomframe" / "standards"
DEFAULT_SRC = ROOT.parent / "shared" / "standards"

#: Where the tables come from. Each value must also appear in the source README,
#: so that a new drop of tables cannot silently ship with stale provenance.
PROVENANCE: dict[str, str] = {
    "edition": "2026c",
    "title": "DICOM PS3.15 2026c - Security and System Management Profiles",
    "document": "NEMA DICOM PS3.15, DocBook 5 XML source (`part15.xml`)",
    "repository": "cosyte/dicom",
    "commit": "372bacd889180f8516868278cd8f0e7d2670b84a",
    "path": (
        "vendor/nema/part15/77d60b856faf4223ab40a398c53130fc0ee9490d0d811ee3536e6d25c02ac717/"
        "part15.xml"
    ),
    "part15_sha256": "77d60b856faf4223ab40a398c53130fc0ee9490d0d811ee3536e6d25c02ac717",
    "part15_bytes": "3,553,659",
    "nema_url": "https://dicom.nema.org/medical/dicom/current/source/docbook/part15/part15.xml",
}

_E11_OPTIONS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)


@dataclass(frozen=True)
class Table:
    """One shipped CSV: its file name, expected header, row count and content."""

    file: str
    header: tuple[str, ...]
    rows: int
    content: str


TABLES: tuple[Table, ...] = (
    Table(
        "ps315_table_E.1-1.csv",
        ("attribute_name", "tag", "retired", "in_std_comp_iod", "basic_profile")
        + _E11_OPTIONS
        + ("note",),
        656,
        "Table E.1-1 Application Level Confidentiality Profile Attributes",
    ),
    Table(
        "ps315_table_E.1-1a_action_codes.csv",
        ("action_code", "description"),
        11,
        "Table E.1-1a De-identification Action Codes (the legend, verbatim)",
    ),
    Table(
        "ps315_table_E.3.10-1_safe_private.csv",
        ("data_element", "private_creator", "vr", "vm", "meaning"),
        479,
        "Table E.3.10-1 Safe Private Attributes (20 private creators)",
    ),
    Table(
        "ps315_table_E.3.4-1_clean_structured_content.csv",
        (
            "code_meaning",
            "code_value",
            "coding_scheme_designator",
            "value_type",
            "retired",
            "in_std_template",
            "basic_profile",
            "retain_uids",
            "retain_device_identity",
            "retain_institution_identity",
            "retain_patient_characteristics",
            "retain_long_full_dates",
            "retain_long_modified_dates",
            "clean_descriptors",
        ),
        214,
        "Table E.3.4-1 Clean Structured Content Option: SR concept names and their actions",
    ),
    Table(
        "ps315_deidentification_method_codes.csv",
        ("code_value", "coding_scheme_designator", "code_meaning", "option_column"),
        13,
        "PS3.16 CID 7050 De-identification Method codes (transcribed; see the caveat)",
    ),
)


class UpdateError(Exception):
    """A source table failed a check; nothing was written."""


def check_table(src: Path, table: Table) -> bytes:
    """Read one source CSV, check its header and row count, and return its bytes."""
    path = src / table.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UpdateError(f"{path}: missing; SRC_DIR must hold all five PS3.15 CSVs") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpdateError(f"{path}: not UTF-8 ({exc})") from None
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        raise UpdateError(f"{path}: empty file")
    header, body = tuple(records[0]), records[1:]
    if header != table.header:
        raise UpdateError(
            f"{path}: header is {','.join(header)!r}, expected {','.join(table.header)!r}; "
            "if the standard changed, update TABLES in scripts/update_standards.py and "
            "dicomframe/profiles.py together"
        )
    if len(body) != table.rows:
        raise UpdateError(
            f"{path}: {len(body)} data rows, expected {table.rows}; "
            "if the edition changed, update TABLES and PROVENANCE first"
        )
    ragged = [n for n, row in enumerate(body, start=2) if len(row) != len(header)]
    if ragged:
        raise UpdateError(f"{path}: line(s) {ragged[:5]} do not have {len(header)} fields")
    return data


def check_provenance(src: Path) -> None:
    """The source README must state the provenance recorded in ``PROVENANCE``."""
    readme = src / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UpdateError(
            f"{readme}: missing; the tables must come with their provenance"
        ) from None
    for key in ("edition", "title", "repository", "commit", "path", "part15_sha256"):
        if PROVENANCE[key] not in text:
            raise UpdateError(
                f"{readme} does not state {key} = {PROVENANCE[key]!r}; these tables come from a "
                "different source: update PROVENANCE in scripts/update_standards.py"
            )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render_readme(shipped: dict[str, bytes]) -> str:
    """The README of ``dicomframe/standards/``: provenance, caveats and shipped files."""
    p = PROVENANCE
    files = "\n".join(
        f"| `{t.file}` | {t.rows} | {t.content} | `{sha256(shipped[t.file])}` |" for t in TABLES
    )
    return f"""\
# PS3.15 de-identification tables shipped with dicomframe

Generated by `scripts/update_standards.py`; do not edit by hand. dicomframe reads
these files at runtime (`importlib.resources`) and never re-types them in code.

## Provenance

| Item | Value |
| --- | --- |
| Standard | DICOM PS3.15, edition **{p["edition"]}** (`{p["title"]}`) |
| Source document | {p["document"]} |
| Obtained from | GitHub repository `{p["repository"]}`, commit `{p["commit"]}` |
| Path in that repository | `{p["path"]}` |
| SHA-256 of `part15.xml` | `{p["part15_sha256"]}` ({p["part15_bytes"]} bytes) |
| Upstream of that copy | `{p["nema_url"]}` (stated by that repository as vendored unmodified) |

All tables except `ps315_deidentification_method_codes.csv` were generated from
that `part15.xml` by reading the DocBook tables (`table_E.1-1`, `table_E.1-1a`,
`table_E.3.4-1`, `table_E.3.10-1`) cell by cell. **Nothing was hand-edited**:
the files here are byte-for-byte copies of the generated CSVs; this script
checks each header and row count before copying. An empty field means the
cell is blank in the standard. Where a file and the published standard
disagree, the standard wins.

The text is NEMA's DICOM Standard (© NEMA; "DICOM" is a registered trademark
of NEMA), reproduced as reference facts.

### Caveat: CID 7050 method codes

`ps315_deidentification_method_codes.csv` holds the 13 codes of **PS3.16
CID 7050 "De-identification Method"** (113100–113112), which PS3.15 only refers
to. PS3.16 was not part of the extraction: these codes were **transcribed, not
parsed**, and have not been checked against a PS3.16 XML file. PS3.15 titles
the date options "Retain Longitudinal Temporal Information **With**
Full/Modified Dates Option", while the code meanings here omit "With". Check
PS3.16 before relying on exact code-meaning strings (they are written into
De-identification Method Code Sequence (0012,0064)).

### Rows that look odd but are as written in the standard

- E.1-1 has four pattern rows: `(50xx,xxxx)` Curve Data, `(60xx,3000)` Overlay
  Data, `(60xx,4000)` Overlay Comments and `(gggg,eeee)` Private Attributes
  (its `note`: "where gggg is odd"). The other 652 rows each name one tag.
- E.1-1 rows `(0000,1000)`, `(0000,1001)` are command-group elements and
  `(0002,0003)` is in the File Meta Information.
- E.3.10-1 keys are (`data_element` with `xx` resolved, `private_creator`);
  hex digits keep the standard's case (e.g. `(2001,xx7d)`); `vr` is blank for
  5 SIEMENS Ultrasound SC2000 rows and `OW/OB` for 2 Philips rows.
- E.3.4-1 concept names are not unique by (code value, scheme): the key is
  (code value, coding scheme designator, value type). It has no column for
  the Retain Safe Private, Clean Structured Content and Clean Graphics options.

## Files

| File | Rows | Content | SHA-256 |
| --- | ---: | --- | --- |
{files}

To update: `python scripts/update_standards.py [SRC_DIR]` (default
`../shared/standards`), then `pytest tests/test_profiles.py`.
"""


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # package data: readable by all, like a normal checkout
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update(src: Path, dest: Path = DEST) -> dict[str, str]:
    """Check every table in ``src``, then copy them and the README into ``dest``.

    Returns the SHA-256 of each shipped file, by file name.
    """
    if not src.is_dir():
        raise UpdateError(f"{src}: not a directory; give the folder holding the PS3.15 CSVs")
    check_provenance(src)
    shipped = {t.file: check_table(src, t) for t in TABLES}
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in shipped.items():
        write_atomic(dest / name, data)
    write_atomic(dest / "README.md", render_readme(shipped).encode("utf-8"))
    return {name: sha256(data) for name, data in shipped.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "src",
        nargs="?",
        type=Path,
        default=DEFAULT_SRC,
        metavar="SRC_DIR",
        help=f"folder with the generated CSVs (default: {DEFAULT_SRC})",
    )
    args = parser.parse_args(argv)
    try:
        digests = update(args.src)
    except UpdateError as exc:
        print(f"update_standards: {exc}", file=sys.stderr)
        return 1
    for name, digest in digests.items():
        print(f"{digest}  {DEST.relative_to(ROOT) / name}")
    print(f"wrote {DEST.relative_to(ROOT) / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
