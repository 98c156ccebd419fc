"""PHI leak audit: what survived de-identification, as dataframe queries.

Every rule is a function from the scan tables (and, when given, the vault's
originals and the profile) to a findings table with the columns of
:data:`dicomframe.leaks.FINDINGS_SCHEMA` plus ``path``. Rules are listed in
:data:`RULES` (``dicomframe audit --list-rules``); evidence is always masked.

>>> import dicomframe as dcf
>>> findings = dcf.audit("out/batch-1")                      # doctest: +SKIP
>>> findings.group_by("rule", "severity").len()              # doctest: +SKIP

Severities: ``high`` (an identifier is there), ``medium`` (something that
usually identifies), ``low`` (a risk to look at, e.g. images that often carry
burned-in text).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from .errors import UserInputError
from .leaks import (
    FINDINGS_SCHEMA,
    NUMBER_VRS,
    equals_an_original,
    findings_from,
    holds_an_original,
    mask,
)
from .planner import AGE_CATEGORY, CJK_DATE, WRITTEN_DATE
from .profiles import Option, Profile, safe_private_table

if TYPE_CHECKING:
    from .keys import ProjectKey
    from .scanner import ScanResult

__all__ = ["RULES", "SEVERITIES", "Rule", "audit", "audit_scan"]

SEVERITIES = ("low", "medium", "high")
_TEXT_VRS = ("LO", "SH", "ST", "LT", "UT", "UC")


@dataclass(frozen=True)
class Rule:
    """One audit rule: a name, what it catches, and its table function."""

    name: str
    severity: str
    catches: str
    run: Callable[[ScanResult, dict[str, Any]], pl.DataFrame]


_findings = findings_from  # the leak gate and the audit build findings rows the same way


def _text(scan: ScanResult) -> pl.DataFrame:
    return scan.elements.filter(
        pl.col("vr").is_in(_TEXT_VRS) & pl.col("value").is_not_null() & (pl.col("value") != "")
    )


#: a UUID-derived UID (PS3.5 B.2), the form dicomframe's new UIDs take: 2.25. and random digits
_RANDOM_UID = r"^2\.25\.\d+$"


def _holding_originals(
    rows: pl.DataFrame, column: str, originals: list[str], separator: str, suffix: str = "", number: pl.Expr | None = None
) -> pl.DataFrame:
    """The rows whose column holds an original, except that a part (split at ``separator``)
    which is a random UID (``2.25.<digits>``, ``suffix`` aside), and any part of a row where
    ``number`` holds, counts only when it equals an original whole: their digits hold a
    numeric patient ID or a date by chance (in a batch of 1,000 patients with 7-digit MRNs,
    about one new UID in 300 holds one of them). The rest is searched as one text, so an
    original that spans a separator is still found, as a token of its own (not inside a
    longer number or word: see :func:`dicomframe.leaks.holds_an_original`)."""
    rows = rows.filter(pl.col(column).str.contains_any(originals, ascii_case_insensitive=True))  # most hold none
    if rows.height == 0:
        return rows
    part = pl.element().str.strip_suffix(suffix) if suffix else pl.element()
    whole = part.str.strip_chars().is_in(originals)
    random_uid = part.str.contains(_RANDOM_UID)
    parts = pl.col(column).str.split(separator)
    rest = parts.list.eval(pl.when(random_uid).then(pl.lit("")).otherwise(pl.element())).list.join(separator)
    rows = rows.with_columns(rest.alias("_rest"))
    # an original inside a longer number or word (a 4-digit ID in a UID or a date) is chance
    rows = rows.with_columns(holds_an_original(rows, "_rest", originals).alias("_in_rest"))
    text_hit = pl.col("_in_rest") | parts.list.eval(random_uid & whole).list.any()
    if number is not None:
        text_hit = pl.when(number).then(equals_an_original(column, originals, separator)).otherwise(text_hit)
    return rows.filter(text_hit).drop("_rest", "_in_rest")


def _vault_originals(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    originals: list[str] = ctx.get("originals") or []
    if not originals:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    rows = _holding_originals(
        scan.elements.filter(pl.col("value").is_not_null()), "value", originals, "\\", number=pl.col("vr").is_in(NUMBER_VRS)
    )
    return _findings(rows, "vault_original", "high", mask(pl.col("value")), "remove or replace this value")


def _vault_originals_in_paths(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    originals: list[str] = ctx.get("originals") or []
    if not originals:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    rows = scan.instances.select("file_id", "path").vstack(scan.errors.select("file_id", "path"))
    rows = _holding_originals(rows, "path", originals, "/", suffix=".dcm")
    return _findings(
        rows.with_columns(tag_path=pl.lit(None, pl.String), keyword=pl.lit(None, pl.String), vr=pl.lit(None, pl.String)),
        "vault_original_in_name",
        "high",
        mask(pl.col("path").str.split("/").list.last()),
        "rename the file or object from its new UIDs",
    )


def _strings(value: Any, place: str) -> Iterator[tuple[str, str, bool]]:
    """Every scalar of a decoded JSON document or Parquet row: (its place, as text, a number?)."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, f"{place}.{name}" if place else str(name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{place}[{i}]")
    elif isinstance(value, str):
        yield place, value, False
    elif value is not None and not isinstance(value, bool):
        yield place, str(value), True


def _local_path(path: str) -> str | None:
    """The file-system path of a scanned file's ``path`` (None: a URL, read through fsspec)."""
    return path.removeprefix("file://") if "://" not in path or path.startswith("file://") else None


def _read_bytes(path: str, ctx: dict[str, Any]) -> bytes:
    local = _local_path(path)
    if local is not None:
        with open(local, "rb") as fh:
            return fh.read()
    import fsspec

    with fsspec.open(path, "rb", **(ctx.get("storage_options") or {})) as fh:
        return bytes(fh.read())


def _manifest_values(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    """Every value of the batch manifests among the scanned files (``manifest.json``,
    ``manifest.parquet``), one row each: file_id, tag_path (the value's place in the
    manifest, e.g. ``studies[0].cloud_study_id``, ``[12].series_description``), value and
    whether it is a number. A manifest that does not decode is read as one text."""
    import io
    import json

    import pyarrow.parquet as pq

    rows: list[tuple[int, str, str, bool]] = []
    for file_id, path in scan.errors.filter(_own_manifest()).select("file_id", "path").iter_rows():
        data = _read_bytes(path, ctx)
        try:
            if path.endswith(".json"):
                document = json.loads(data)
            else:
                document = pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception:  # noqa: BLE001 - damaged or not ours: every byte is still searched
            rows.append((int(file_id), "", data.decode("utf-8", "replace"), False))
            continue
        rows.extend((int(file_id), place, text, number) for place, text, number in _strings(document, ""))
    return pl.DataFrame(
        rows, schema={"file_id": pl.Int64, "tag_path": pl.String, "value": pl.String, "_number": pl.Boolean}, orient="row"
    )


def _vault_originals_in_manifests(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    originals: list[str] = ctx.get("originals") or []
    if not originals:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    values = _manifest_values(scan, ctx)
    if values.height == 0:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    # object keys are '/'-separated new UIDs ending .dcm, as file names are
    rows = _holding_originals(values, "value", originals, "/", suffix=".dcm", number=pl.col("_number"))
    return _findings(
        rows.with_columns(keyword=pl.lit(None, pl.String), vr=pl.lit(None, pl.String)),
        "vault_original_in_manifest",
        "high",
        mask(pl.col("value")),
        "make the manifest again from the de-identified files (de-identify the batch again)",
    )


def _profile_violations(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    profile: Profile = ctx["profile"]
    actions = (
        profile.actions()
        .filter(pl.col("tag").is_not_null() & (pl.col("mask") == 0xFFFFFFFF))
        .select("tag", pl.col("action").cast(pl.String))
        .unique("tag", keep="last")
    )
    present = scan.elements.filter((pl.col("tag") // 65536) != 2).join(actions, on="tag")
    removed = present.filter(pl.col("action") == "X")
    emptied = present.filter((pl.col("action") == "Z") & (pl.col("value").fill_null("") != "") & (pl.col("vr") != "SQ"))
    return pl.concat(
        [
            _findings(removed, "should_be_removed", "high", pl.lit("present"), "remove this attribute"),
            _findings(emptied, "should_be_empty", "high", mask(pl.col("value")), "empty this attribute"),
        ]
    )


def _private_tags(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    profile: Profile = ctx["profile"]
    group = pl.col("tag") // 65536
    elem = pl.col("tag") % 65536
    private = scan.elements.filter((group % 2 == 1) & (elem > 0xFF))
    unknown = private.filter(pl.col("private_creator").is_null())
    known = private.filter(pl.col("private_creator").is_not_null())
    if Option.RETAIN_SAFE_PRIVATE in profile.options:
        safe = safe_private_table().select(
            "private_creator", pl.col("group").cast(pl.UInt32).alias("_g"), pl.col("element").cast(pl.UInt32).alias("_e")
        )
        known = known.with_columns(_g=group.cast(pl.UInt32), _e=(elem % 256).cast(pl.UInt32)).join(
            safe, on=["private_creator", "_g", "_e"], how="anti"
        )
    return pl.concat(
        [
            _findings(known, "private_not_safe", "medium", pl.col("private_creator"), "remove private tags not on the safe list"),
            _findings(unknown, "private_unknown_creator", "medium", pl.lit("(no creator)"), "remove private tags without a creator"),
        ]
    )


# word boundaries of ASCII ((?-u:\b)): a number written on to ideographs ("患者番号1234567") is one
_B = r"(?-u:\b)"
_DATE = (
    rf"{_B}(?:19|20)\d{{2}}[-./]\d{{1,2}}[-./]\d{{1,2}}{_B}|{_B}\d{{1,2}}[-./]\d{{1,2}}[-./](?:19|20)?\d{{2}}{_B}"
    rf"|{_B}(?:19|20)\d{{6}}{_B}|{CJK_DATE}|{WRITTEN_DATE.replace(chr(92) + 'b', _B)}"
)
_ID = rf"{_B}[A-Za-z]{{2,5}}-?\d{{5,}}{_B}|{_B}\d{{7,}}{_B}"


def _names_in_text(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    from .planner import PERSON_NAME  # what Clean Descriptors removes is what the audit looks for

    rows = _text(scan).filter(pl.col("value").str.contains(PERSON_NAME))
    return _findings(rows, "name_in_text", "high", mask(pl.col("value")), "clean this text (Clean Descriptors)")


#: keywords of attributes that name a version (SoftwareVersions, ImplementationVersionName):
#: a build's date or number there ("VE11C 2019-11-05", "20191105") dates or numbers software,
#: not a patient's care, and is not reported as a date or an ID in text
_VERSION = pl.col("keyword").str.contains("Version").fill_null(False)


def _dates_in_text(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    # a value a Retain option keeps on purpose (a station named "CT 2019-11" under Retain
    # Device Identity) is not reported, as for IDs and contacts
    rows = _text(scan).filter(
        pl.col("value").str.contains(_DATE) & ~pl.col("tag").is_in(_kept_by_options(ctx["profile"])) & ~_VERSION
    )
    return _findings(rows, "date_in_text", "medium", mask(pl.col("value")), "clean this text (Clean Descriptors)")


def _contacts_in_text(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    from .planner import CONTACT

    rows = _text(scan).filter(
        pl.col("value").str.contains(CONTACT) & ~pl.col("tag").is_in(_kept_by_options(ctx["profile"]))
    )
    return _findings(rows, "contact_in_text", "high", mask(pl.col("value")), "clean this text (Clean Descriptors)")


def _ids_in_text(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    rows = _text(scan).filter(
        pl.col("value").str.contains(_ID)
        & ~pl.col("keyword").is_in(["PatientID", "AccessionNumber"])
        & ~pl.col("tag").is_in(_kept_by_options(ctx["profile"]))
        & ~_VERSION
    )
    return _findings(rows, "id_in_text", "medium", mask(pl.col("value")), "clean this text (Clean Descriptors)")


def _kept_by_options(profile: Profile) -> list[int]:
    """Tags the profile keeps because one of its Retain options says so (a device's serial
    number under Retain Device Identity): their values are kept on purpose, not leaks."""
    table = profile.table()
    kept = table.filter((pl.col("action") == "K") & pl.col("source").str.starts_with("retain_") & pl.col("tag").is_not_null())
    return [int(t) for t in kept["tag"].to_list()]


def _uid_roots(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    instance_uids = pl.col("keyword").str.ends_with("InstanceUID") | pl.col("keyword").is_in(
        ["FrameOfReferenceUID", "SynchronizationFrameOfReferenceUID", "ConcatenationUID"]
    )
    rows = scan.elements.filter(
        (pl.col("vr") == "UI")
        & instance_uids
        & pl.col("value").is_not_null()
        & ~pl.col("value").str.starts_with("2.25.")
        & ~pl.col("keyword").str.contains("Class")
    )
    return _findings(rows, "uid_with_org_root", "high", mask(pl.col("value")), "replace this UID (action U)")


def _ages_over_89(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    """Ages of 91 years or more, kept as they are (Retain Patient Characteristics): among the
    identifiers the HIPAA Safe Harbor method aggregates into one category, "90 or older"
    (``090Y``, which action C writes, is that category and is not reported)."""
    age = pl.col("value").str.strip_chars(" \x00")
    rows = scan.elements.filter(
        (pl.col("vr") == "AS")
        & age.str.contains(r"^\d{3}Y$").fill_null(False)
        & (age.str.slice(0, 3).cast(pl.Int32, strict=False) > int(AGE_CATEGORY[:3]))
    )
    return _findings(
        rows, "age_over_89", "medium", mask(pl.col("value")),
        f'aggregate the ages over 89: a profile [[rule]] keyword = "PatientAge", action = "C" writes {AGE_CATEGORY} (90 or older)',
    )  # fmt: skip


def _own_manifest() -> pl.Expr:
    """A batch's own manifests among the scan's errors (not DICOM, and not a leak)."""
    name = pl.col("path").str.replace(r"^.*[/\\]", "")
    return (pl.col("kind") == "not_dicom") & name.is_in(["manifest.json", "manifest.parquet"])


def _unreadable(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    """Files the scan could not read: nothing in them was checked, so none is clean.

    A batch's own manifests are not DICOM and are not reported; any other file that is
    not DICOM is, as medium (a stray export, a report), damaged ones and DICOMDIRs
    (which list patient names) as high."""
    return scan.errors.filter(~_own_manifest()).select(
        pl.col("file_id").cast(pl.Int64),
        tag_path=pl.lit(None, pl.String),
        keyword=pl.lit(None, pl.String),
        vr=pl.lit(None, pl.String),
        rule=pl.lit("unreadable"),
        severity=pl.when(pl.col("kind") == "not_dicom").then(pl.lit("medium")).otherwise(pl.lit("high")),
        evidence=pl.col("kind"),  # damaged, truncated, not_dicom, dicomdir…: never a value
        suggested_action=pl.lit("not checked: remove the file, or de-identify its source again"),
    )


def _burned_in_risk(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    from .pixelclean import burned_in_flag, risk_expr

    inst = scan.instances
    cols = set(inst.columns)
    burned = burned_in_flag(cols) == "YES"  # the same reading of the flag as the risk rule's
    modality = pl.col("Modality").fill_null("") if "Modality" in cols else pl.lit("")
    rows = inst.filter(risk_expr(cols)).with_columns(
        tag_path=pl.lit("7FE00010"), keyword=pl.lit("PixelData"), vr=pl.lit(None, pl.String)
    )
    return _findings(
        rows,
        "burned_in_text_risk",
        "low",
        pl.when(burned).then(pl.lit("BurnedInAnnotation=YES")).otherwise(pl.concat_str([pl.lit("modality "), modality])),
        "look at the pixels (OCR) or black out text regions (pixel clean)",
    )


def native_pixel_bytes(columns: Sequence[str]) -> pl.Expr:
    """:func:`dicomframe.rewrite.native_pixel_bytes` of each row of an instances table with
    these ``columns``: a native value's length (every frame, bits packed, YBR_FULL_422 two
    samples a pixel, padded to even); null without Rows, Columns or BitsAllocated."""

    def number(name: str, default: int | None = None) -> pl.Expr:
        # a batch without images (structured reports only) has no Rows column: no finding
        value = pl.col(name).cast(pl.Int64, strict=False) if name in columns else pl.lit(None, pl.Int64)
        return value if default is None else value.fill_null(default)

    frames = number("Rows") * number("Columns") * number("SamplesPerPixel", 1) * number("NumberOfFrames", 1)
    expected = (frames * number("BitsAllocated") + 7) // 8
    if "PhotometricInterpretation" in columns:
        ybr_422 = pl.col("PhotometricInterpretation").str.strip_chars(" \x00").str.to_uppercase() == "YBR_FULL_422"
        expected = pl.when(ybr_422.fill_null(False)).then(expected // 3 * 2).otherwise(expected)
    return expected + expected % 2


def bytes_after_last_frame(columns: Sequence[str]) -> pl.Expr:
    """Of each row of an instances table with these ``columns``: how many bytes its Pixel Data
    value holds after the last frame (and its pad to even), read as native
    (:func:`native_pixel_bytes`); positive only where there are such bytes."""
    return pl.col("pixel_data_length") - native_pixel_bytes(columns)


def _pixel_data_excess(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    inst = scan.instances
    excess = bytes_after_last_frame(inst.columns)
    rows = inst.filter(excess > 0).with_columns(
        tag_path=pl.lit("7FE00010"), keyword=pl.lit("PixelData"), vr=pl.lit(None, pl.String)
    )
    return _findings(
        rows,
        "pixel_data_excess",
        "medium",
        pl.format("{} bytes after the last frame", excess),
        "de-identify it with pixel clean auto or rules (those bytes go, the frames stay), or look at what follows the last frame",
    )


def _overlay_in_pixel_data(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    from .pixelclean import embedded_overlays

    rows = scan.instances.filter(pl.col("file_id").is_in(embedded_overlays(scan.elements).implode())).with_columns(
        tag_path=pl.lit("7FE00010"), keyword=pl.lit("PixelData"), vr=pl.lit(None, pl.String)
    )
    return _findings(
        rows,
        "overlay_in_pixel_data",
        "high",
        pl.lit("an overlay group without Overlay Data: its bits are in Pixel Data"),
        "de-identify with --pixel-clean auto or rules (the overlay and its bits are removed)",
    )


def _pixel_cleaned(scan: ScanResult) -> pl.DataFrame:
    """file_id of the images marked Clean Pixel Data (113101): OCR checks them too."""
    from .pixelclean import CLEAN_PIXEL_CODE

    return (
        scan.elements.filter(
            (pl.col("tag") == 0x00080100)
            & pl.col("tag_path").str.starts_with("00120064")
            & (pl.col("value") == CLEAN_PIXEL_CODE)
        )
        .select("file_id")
        .unique()
    )


def _normalise(text: str) -> str:
    return "".join(c for c in text.upper() if c.isalnum())


def _originals_for_pixels(ctx: dict[str, Any]) -> list[str]:
    """Originals and their name parts (``Family^Given`` → ``FAMILY``, ``GIVEN``), normalised."""
    parts: set[str] = set()
    for value in [*(ctx.get("originals") or []), *(ctx.get("names") or [])]:
        whole = _normalise(value)
        if len(whole) >= 4:
            parts.add(whole)
        for piece in value.replace("^", " ").replace(",", " ").split():
            piece = _normalise(piece)
            if len(piece) >= 3:
                parts.add(piece)
    return sorted(parts)


def _read_for_ocr(path: str, ctx: dict[str, Any]) -> Any:
    """A local path as is; a URL read through fsspec into a pydicom dataset."""
    local = _local_path(path)
    if local is not None:
        return local
    import fsspec
    import pydicom

    with fsspec.open(path, "rb", **(ctx.get("storage_options") or {})) as fh:
        return pydicom.dcmread(fh)


def _burned_in_text(scan: ScanResult, ctx: dict[str, Any]) -> pl.DataFrame:
    from .ocr import find_text

    flagged = pl.concat([_burned_in_risk(scan, ctx).select("file_id"), _pixel_cleaned(scan)]).unique()
    targets = scan.instances.join(flagged, on="file_id").select("file_id", "path").sort("file_id")
    wanted = _originals_for_pixels(ctx)
    rows: list[dict[str, Any]] = []
    for file_id, path in targets.iter_rows():
        try:
            # the frames pixel clean reads (first, middle, last), unless the caller asked for others
            boxes = find_text(_read_for_ocr(path, ctx), frames=ctx.get("ocr_frames", "sample"))
        except OSError as exc:
            boxes = pl.DataFrame(
                {"frame": [None], "text": [None], "reason": [f"not readable ({type(exc).__name__})"]}
            )
        for box in boxes.iter_rows(named=True):
            text = box["text"]
            if text is None:  # the frame or file could not be looked at: say so
                rows.append({"file_id": file_id, "severity": "low", "evidence": f"OCR skipped: {box['reason']}"})
                continue
            norm = _normalise(text)
            if len(norm) < 2:  # single characters: mostly noise from image structure
                continue
            hidden = text[:2] + "*" * min(max(len(text) - 2, 0), 64)
            where = f"frame {box['frame']} box ({box['left']},{box['top']},{box['width']}x{box['height']})"
            match = any(w in norm or (len(norm) >= 4 and norm in w) for w in wanted)
            note = "; matches an original" if match else ""
            rows.append({"file_id": file_id, "severity": "high", "evidence": f"{hidden} at {where}{note}"})
    found = pl.DataFrame(rows, schema={"file_id": pl.Int64, "severity": pl.String, "evidence": pl.String})
    return found.select(
        "file_id",
        tag_path=pl.lit("7FE00010"),
        keyword=pl.lit("PixelData"),
        vr=pl.lit(None, pl.String),
        rule=pl.lit("burned_in_text"),
        severity="severity",
        evidence="evidence",
        suggested_action=pl.lit("black out this region of the pixel data (pixel clean)"),
    )


RULES: tuple[Rule, ...] = (
    Rule("vault_original", "high", "an original identifier known to the vault (patient id, accession number, original UIDs) in any element, at any depth, private tags included", _vault_originals),
    Rule("vault_original_in_name", "high", "an original identifier known to the vault in a file or object name", _vault_originals_in_paths),
    Rule("vault_original_in_manifest", "high", "an original identifier known to the vault in a batch manifest (manifest.json, manifest.parquet) among the files; tag_path tells the field", _vault_originals_in_manifests),
    Rule("should_be_removed", "high", "an attribute the profile removes (X) is present; also reports should_be_empty: one it empties (Z) holds a value", _profile_violations),
    Rule("private_not_safe", "medium", "private tags not on the safe-private list for their creator; also reports private_unknown_creator: private tags with no creator", _private_tags),
    Rule("name_in_text", "high", "person-name-like text (Family^Given, Dr./Mr./Mrs. Name) in descriptions, comments, SR text", _names_in_text),
    Rule("date_in_text", "medium", "date-like strings in free text", _dates_in_text),
    Rule("id_in_text", "medium", "MRN- or accession-like tokens in free text", _ids_in_text),
    Rule("contact_in_text", "high", "telephone numbers and e-mail addresses in free text", _contacts_in_text),
    Rule("uid_with_org_root", "high", "instance UIDs that still carry an organisation's root (not 2.25.)", _uid_roots),
    Rule("age_over_89", "medium", f"an age of 91 years or more (an Age String kept, as Retain Patient Characteristics does): the HIPAA Safe Harbor method writes ages over 89 as one category, 90 or older ({AGE_CATEGORY}, what action C on PatientAge writes)", _ages_over_89),
    Rule("unreadable", "high", "a file the audit could not read (damaged, truncated, not DICOM, a DICOMDIR): nothing in it was checked", _unreadable),
    Rule("pixel_data_excess", "medium", "a native Pixel Data value longer than its frames (rows × columns × samples × bits × frames): the bytes after the last frame are no image and may hide data (de-identification drops them, except with pixel clean off)", _pixel_data_excess),
    Rule("overlay_in_pixel_data", "high", "an overlay kept in the unused bits of Pixel Data (retired; legacy images): annotations a viewer draws over the image, which Table E.1-1 removes (Overlay Data, X)", _overlay_in_pixel_data),
    Rule("burned_in_text_risk", "low", "images likely to hold burned-in text: BurnedInAnnotation=YES, ultrasound, secondary capture", _burned_in_risk),
    Rule("burned_in_text", "high", "text in the pixels (OCR with tesseract, extra `ocr`) of the images burned_in_text_risk flags and of those marked pixel-cleaned (113101), matched against vault originals and names; runs only when asked for (ocr=True or by name)", _burned_in_text),
)

#: rules that run only when asked for by name (or ``ocr=True``): they are slow or need extras
_ON_REQUEST = frozenset({"burned_in_text"})
#: names that findings carry besides their rule's: asking for one runs that rule
ALSO_REPORTED = {"should_be_empty": "should_be_removed", "private_unknown_creator": "private_not_safe"}


def _originals_from_vault(vault: str, key: ProjectKey, storage_options: dict[str, Any] | None) -> list[str]:
    from .vault import list_batches, read_mapping

    values: set[str] = set()
    for batch in list_batches(vault, storage_options=storage_options):
        mapping = read_mapping(vault, batch, key, storage_options=storage_options)
        for column in (
            "original_patient_id",
            "original_accession_number",
            "original_study_instance_uid",
            "original_series_instance_uid",
            "original_sop_instance_uid",
        ):
            if column in mapping.columns:
                values.update(v for v in mapping[column].drop_nulls().to_list() if len(v) >= 4)
    return sorted(values)


def audit_scan(
    scan: ScanResult,
    *,
    profile: Profile | str = "default",
    originals: Sequence[str] = (),
    rules: Sequence[str] | None = None,
    ocr: bool = False,
    names: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Run the audit rules over an existing scan. See :func:`audit`."""
    prof = profile if isinstance(profile, Profile) else Profile.load(profile)
    chosen = _chosen_rules(rules, ocr)
    ctx = {
        "profile": prof,
        "originals": [o for o in originals if len(o) >= 4],
        "names": list(names),
        "storage_options": storage_options,
    }
    parts = [rule.run(scan, ctx).cast(FINDINGS_SCHEMA) for rule in chosen]  # type: ignore[arg-type]
    findings = pl.concat(parts) if parts else pl.DataFrame(schema=FINDINGS_SCHEMA)
    paths = scan.instances.select("file_id", "path").vstack(scan.errors.select("file_id", "path"))
    return findings.join(paths, on="file_id", how="left").sort("file_id", "rule", "tag_path", nulls_last=True)


def _chosen_rules(rules: Sequence[str] | None, ocr: bool) -> list[Rule]:
    """The rules to run: those named (a finding's own name runs its rule), else all but those
    run on request; with ``ocr``, burned_in_text too."""
    asked = None if rules is None else [ALSO_REPORTED.get(name, name) for name in rules]
    chosen = [r for r in RULES if (r.name in asked if asked is not None else r.name not in _ON_REQUEST)]
    if asked is not None and len(chosen) != len(set(asked)):
        unknown = sorted(set(asked) - {r.name for r in RULES})
        raise UserInputError(f"unknown audit rule(s) {unknown}; `dicomframe audit --list-rules` lists them")
    if ocr and all(r.name != "burned_in_text" for r in chosen):
        chosen += [r for r in RULES if r.name == "burned_in_text"]
    return chosen


def audit(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    vault: str | os.PathLike[str] | None = None,
    key: ProjectKey | str | os.PathLike[str] | None = None,
    profile: Profile | str | None = None,
    rules: Sequence[str] | None = None,
    ocr: bool = False,
    names: Sequence[str] = (),
    jobs: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> pl.DataFrame:
    """Find what survived de-identification: a findings table (masked evidence).

    Parameters
    ----------
    src
        The de-identified files (folder, glob, URL).
    vault, key
        When given, every original identifier in the vault (patient ids, accession
        numbers, original UIDs) is searched for in every element, file name and batch manifest.
    profile
        The profile the files were de-identified with (for the "should be removed" rule,
        and what its Retain options keep on purpose). ``None`` (or ``"auto"``): the preset
        the files name in their DeidentificationMethod, else ``default``.
    rules
        Names of the rules to run (default: all but ``burned_in_text``; see :data:`RULES`).
    ocr
        Also run ``burned_in_text``: OCR (tesseract, extra ``ocr``) of the images
        ``burned_in_text_risk`` flags. Found text is masked in the evidence.
    names
        Person names (``Family^Given``) to look for in the pixel text, besides the
        vault's originals; a box that holds one notes "matches an original".

    Examples
    --------
    >>> findings = audit("out/batch-1", vault="vault", key="project.key")  # doctest: +SKIP
    >>> findings.filter(pl.col("severity") == "high")                       # doctest: +SKIP
    """
    return _audit(
        src, vault=vault, key=key, profile=profile, rules=rules, ocr=ocr, names=names, jobs=jobs,
        storage_options=storage_options, progress=progress,
    ).findings  # fmt: skip


@dataclass(frozen=True)
class AuditRun:
    """What :func:`audit` looked at, besides what it found (the command line prints it)."""

    findings: pl.DataFrame
    files: int
    unreadable: int
    rules: tuple[str, ...]
    originals: int
    #: the name of the profile the files were checked against
    profile: str


def _audit(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    vault: str | os.PathLike[str] | None = None,
    key: ProjectKey | str | os.PathLike[str] | None = None,
    profile: Profile | str | None = None,
    rules: Sequence[str] | None = None,
    ocr: bool = False,
    names: Sequence[str] = (),
    jobs: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> AuditRun:
    """:func:`audit`, telling also how many files and which rules it checked. An audit
    that would check nothing (no file, a vault with no batch) is an error, never a
    clean result."""
    from .keys import ProjectKey, load_key
    from .scanner import scan
    from .vault import list_batches

    originals: list[str] = []
    if vault is not None:
        if key is None:
            raise UserInputError("--vault needs --key-file: the vault is encrypted with the project key")
        if not list_batches(vault, storage_options=storage_options):
            raise UserInputError(
                f"the vault {os.fspath(vault)} holds no batch (one folder VAULT/<batch_id>/ per batch): "
                "check the path; without the vault's originals the audit would miss them"
            )
        project_key = key if isinstance(key, ProjectKey) else load_key(key)
        originals = _originals_from_vault(os.fspath(vault), project_key, storage_options)
    elif key is not None:
        raise UserInputError(
            "--key-file only opens the vault: give --vault too (to search for every original identifier), "
            "or leave the key out"
        )
    result = scan(src, jobs=jobs, storage_options=storage_options, progress=progress)
    if result.instances.height == 0 and result.errors.height == 0:
        raise UserInputError("no file to audit in SRC (an empty folder?): check the path")
    if profile is None or profile == "auto":
        prof = _profile_of(result)
    else:
        prof = profile if isinstance(profile, Profile) else Profile.load(profile)
    findings = audit_scan(
        result, profile=prof, originals=originals, rules=rules, ocr=ocr, names=names, storage_options=storage_options
    )
    chosen = tuple(r.name for r in _chosen_rules(rules, ocr))
    unreadable = result.errors.filter(~_own_manifest()).height
    return AuditRun(findings, result.instances.height, unreadable, chosen, len(originals), prof.name)


def _profile_of(scanned: ScanResult) -> Profile:
    """The preset the files say they were de-identified with (their DeidentificationMethod,
    as dicomframe writes it), else ``default``: one preset named by every file that names
    one; a profile file's rules are not in the files (give it with ``profile=``)."""
    from .profiles import PRESETS

    methods = scanned.elements.filter((pl.col("tag") == 0x00120063) & (pl.col("depth") == 0))["value"]
    names = set(methods.drop_nulls().str.extract(r"^dicomframe [^;]*; profile (\S+): PS3\.15").drop_nulls().to_list())
    if len(names) == 1 and (name := names.pop()) in PRESETS:
        return Profile.preset(name)
    return Profile.preset("default")
