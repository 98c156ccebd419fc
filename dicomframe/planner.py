"""The de-identification plan: scan elements ⋈ profile actions → one action per element.

A plan is data: one row per element of every readable file, with the action the
profile assigns, the rule that decided it, the old value and the new one. Review
it, filter it, write it to Parquet (``--dry-run``), then apply it.

How an element's action is decided (all as joins and column expressions):

1. Rows of the profile (Table E.1-1 by tag, its patterns such as ``(60xx,3000)``,
   custom rules by tag, pattern or private creator): where several match, the
   highest priority wins (custom rules over patterns over the table).
2. Private data elements: removed, unless the Retain Safe Private option is chosen
   and (creator, group, element) is listed in Table E.3.10-1, or a custom rule
   keeps them. A private creator element is kept exactly when something in its
   block is kept.
3. Public attributes the standard's table does not list are kept (the table lists
   every attribute that may identify); attributes unknown to the data dictionary
   are **removed** (fail closed), as are group lengths.
4. Anything inside a removed or emptied sequence is removed.

New values: ``U`` → keyed UID (``2.25.…``); ``D`` → a dummy for the VR (the
Patient ID gets the keyed patient token); ``C`` → dates shifted by the keyed
per-patient offset, times kept, descriptors scrubbed of the file's own
identifiers and of date- and ID-like strings, names and AE titles replaced;
``T`` → the rule's template with ``{org}``, ``{cloud_study_id}``,
``{patient_token}``, ``{study_token}``. Every new value is ASCII.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
from pydicom.charset import python_encoding

from . import __version__
from .errors import UserInputError
from .keys import ProjectKey
from .pixelclean import embedded_overlays, overlay_element, pixel_jobs
from .profiles import TEMPLATE_VRS, Option, Profile, method_codes, safe_private_table
from .pseudonyms import (
    DateShift,
    map_cloud_study_ids,
    map_patient_tokens,
    map_tokens,
    map_uids,
    offsets_for,
    render_templates,
    shift_da,
    shift_dt,
)
from .tags import UID_SYNTAX

if TYPE_CHECKING:
    from .scanner import ScanResult

__all__ = ["DUMMIES", "PLAN_COLUMNS", "Plan", "make_plan"]

#: dummy values for action D, by VR (all valid for their VR, all ASCII)
DUMMIES: dict[str, str] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "FD": "0",
    "FL": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "SL": "0",
    "SS": "0",
    "ST": "ANONYMIZED",
    "SV": "0",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UL": "0",
    "UR": "ANONYMIZED",
    "US": "0",
    "UT": "ANONYMIZED",
    "UV": "0",
}
_TEXT_VRS = ("LO", "SH", "ST", "LT", "UT", "UC")
#: Timezone Offset From UTC (0008,0201): SH, cleaned (C under Retain Longitudinal Temporal
#: Information with Modified Dates) as a time of day is, not as text: kept when it is an offset
#: (PS3.3 C.12.1.1.8: "+HHMM" or "-HHMM"), removed otherwise (fail closed)
_TIMEZONE = 0x00080201
_OFFSET_SYNTAX = r"^[+-]\d{4}$"
#: VRs a new UID (64 characters at most) can be written in
_UID_VRS = ("UI", "LO", "ST", "LT", "UT", "UC")
#: VRs of numbers, codes and UIDs (and sequences, whose items are decided element by element)
_NUMERIC_VRS = ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "DS", "IS", "CS", "UI", "AS", "SQ")
_MAX_LENGTH = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "CS": 16, "AE": 16, "PN": 64}

#: columns of a plan table
PLAN_COLUMNS = [
    "file_id",
    "tag_path",
    "tag",
    "keyword",
    "vr",
    "depth",
    "private_creator",
    "action",
    "source",
    "value",
    "new_value",
]

#: PN and ID attributes whose values are scrubbed out of cleaned descriptors
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "PatientAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "PatientBirthDate",
    "StudyID",
    "StationName",
    "DeviceSerialNumber",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "RequestedProcedureID",
    "IssuerOfPatientID",
)
#: a month by its name or abbreviation, English, any case (dates written out in words)
_MONTH = r"(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
#: telephone numbers, international (+44 20 7946 0958), with an area code in brackets
#: ((555) 123-4567) or dashed or dotted (555-123-4567) ("512 512 1024" is not one), national
#: ones after their trunk 0 (03-1234-5678, 020 7946 0958, 0171 1234567, 06 12 34 56 78; not
#: dotted, as software versions are), and e-mail addresses; also what the audit's
#: ``contact_in_text`` rule finds (no look-around: polars' regex engine reads it too; ASCII
#: classes: Unicode ones, repeated, pass its size limit)
CONTACT = (
    r"\+[0-9]{1,3}[ \t.-]?\(?[0-9]{1,4}\)?(?:[ \t.-]?[0-9]{2,4}){2,4}\b"
    r"|\([0-9]{2,5}\)[ \t]?[0-9]{3,4}[ \t.-]?[0-9]{3,4}\b"
    r"|\b[0-9]{3}[-.][0-9]{3,4}[-.][0-9]{4}\b"
    r"|\b0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3,4}\b"
    r"|\b0[0-9]{2,4}[ /-][0-9]{6,8}\b"
    r"|\b0[1-9](?: [0-9]{2}){4}\b"
    r"|[A-Za-z0-9_.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
#: what is personal whoever it is about, in any text: a contact (:data:`CONTACT`), a social
#: security number (078-05-1120), a person's name (:data:`PERSON_NAME`): in DICOM's own form (DOE^JANE, Doe^Jane^Q)
#: or after a title (Dr Smith, MR. JONES: titles in capitals only with their dot, "MR BRAIN"
#: and "DR CHEST" are modalities). No look-around: polars' regex engine reads it too. Every
#: repeat is bounded (a PN component group holds 64 characters at most): Python's engine
#: backtracks, and "a-a-a-…" of a whole UT must not cost the square of its length
PERSON_NAME = (
    r"\b[A-Za-z][A-Za-z'-]{0,63}(?:\^[A-Za-z'-]{0,64}){1,4}"
    r"|\b(?:(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?|(?:DR|MR|MRS|MS|MISS|PROF)\.)[ \t]{0,3}[A-Z][A-Za-z'-]{1,63}"
)
PERSONAL = rf"{CONTACT}|\b[0-9]{{3}}-[0-9]{{2}}-[0-9]{{4}}\b|{PERSON_NAME}"
#: a date as Chinese, Japanese and Korean write it: 1970年5月3日, 1970년 5월 3일, 昭和45年5月3日
CJK_DATE = r"[0-9]{2,4}[ \t]*[年년][ \t]*[0-9]{1,2}[ \t]*[月월](?:[ \t]*[0-9]{1,2}[ \t]*[日일])?"
#: a date with its month in words (3 March 1933, 3rd of March 1933, 03MAR1933, March 3, 1933)
#: or a month and its year (March 2024, Mar-2024, 03/2024, 03.2024, 2024-03): a real month
#: beside the shifted dates tells the shift. No look-around (polars' regex engine reads it
#: too: the audit's ``date_in_text`` looks for what Clean Descriptors removes)
WRITTEN_DATE = (
    rf"\b\d{{1,2}}(?:st|nd|rd|th)?(?:[\s./-]+of)?[\s./-]*{_MONTH}[\s,./-]*\d{{2,4}}\b"
    rf"|\b{_MONTH}[\s./-]*\d{{1,2}}(?:st|nd|rd|th)?,?[\s./-]*\d{{4}}\b"
    rf"|\b{_MONTH}[\s,./-]*(?:19|20)\d{{2}}\b"
    r"|\b(?:0?[1-9]|1[0-2])[/-](?:19|20)\d{2}\b|\b(?:0[1-9]|1[0-2])\.(?:19|20)\d{2}\b"
    r"|\b(?:19|20)\d{2}[/-](?:0[1-9]|1[0-2])\b"
)
#: ASCII word boundaries and digits: after NFKC (full-width digits made ASCII), a number
#: written on to ideographs ("患者番号1234567") is a number of its own
_GENERIC_SCRUB = re.compile(
    rf"{CJK_DATE}"
    r"|\b\d{4}[-./]\d{1,2}[-./]\d{1,2}\b"  # 2023-03-14
    r"|\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b"  # 03/14/2023
    r"|\b(?:19|20)\d{6}\b"  # 20230314
    rf"|{WRITTEN_DATE}"
    r"|\b[A-Za-z]{0,5}-?\d{5,}\b"  # MRN1234567, ACC00123, long numbers
    rf"|{PERSONAL}",
    re.ASCII,
)


@dataclass
class Plan:
    """What a de-identification will do, element by element, before anything is written.

    Attributes
    ----------
    table
        One row per element (:data:`PLAN_COLUMNS`): the action (``K`` keep,
        ``X`` remove, ``Z`` empty, ``D`` dummy, ``C`` clean, ``U`` new UID,
        ``T`` template, ``A`` added by dicomframe), the rule that decided it and
        the new value.
    files
        One row per file with the identifiers before and after (the mapping the
        vault keeps): original and new patient id, study/series/SOP UIDs,
        accession number, cloud study id, date offset; and ``pixel_clean``
        (``rule:<name>``, ``ocr`` or null) with the rule's ``regions``.
    profile
        The profile the plan was made with.
    totals
        :meth:`summary` of a plan whose element rows were not kept: a de-identification
        run in parts (batches over :data:`dicomframe.pipeline.PART_FILES` inputs) keeps
        the files and this summary only, so its memory stays flat; ``table`` is then
        empty (``--dry-run`` or :func:`make_plan` give the rows).
    """

    table: pl.DataFrame
    files: pl.DataFrame
    profile: Profile
    org: str
    key_id: str
    additions: dict[str, Any] = field(default_factory=dict)
    totals: pl.DataFrame | None = field(default=None, repr=False)

    def summary(self) -> pl.DataFrame:
        """Elements per action and source (what the plan does, in a few rows)."""
        if self.totals is not None:
            return self.totals
        return (
            self.table.group_by("action", "source")
            .agg(pl.len().alias("elements"), pl.col("file_id").n_unique().alias("files"))
            .sort("elements", descending=True)
        )

    def for_file(self, file_id: int) -> pl.DataFrame:
        """The plan rows of one file."""
        return self.table.filter(pl.col("file_id") == file_id)

    def write_parquet(self, path: str) -> None:
        """Write the plan table (for review; it holds original values: keep it private)."""
        self.table.write_parquet(path)

    def __repr__(self) -> str:
        summary = self.summary()
        counts = dict(summary.group_by("action").agg(pl.col("elements").sum()).iter_rows())
        text = ", ".join(f"{a}={counts[a]}" for a in sorted(counts))
        return (
            f"Plan(profile={self.profile.name!r}, files={self.files.height}, "
            f"elements={self._elements()}, actions: {text})"
        )

    def _elements(self) -> int:
        return int(self.totals["elements"].sum()) if self.totals is not None else self.table.height

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{a}</td><td>{s}</td><td>{n:,}</td><td>{f:,}</td></tr>"
            for a, s, n, f in self.summary().iter_rows()
        )
        return (
            f"<div><b>dicomframe plan</b> — profile <code>{self.profile.name}</code>, "
            f"{self.files.height:,} files, {self._elements():,} elements"
            "<table><tr><th>action</th><th>source</th><th>elements</th><th>files</th></tr>"
            f"{rows}</table></div>"
        )


def _file_context(instances: pl.DataFrame, key: ProjectKey, shift: DateShift, org: str) -> pl.DataFrame:
    """Per-file pseudonymous identifiers and date offset (hash distinct values once)."""

    def col(name: str) -> pl.Series:
        if name in instances.columns:
            return instances[name].cast(pl.String)
        return pl.Series(name, [None] * instances.height, pl.String)

    patient_id = col("PatientID").fill_null("")
    study_uid = col("StudyInstanceUID").fill_null("")
    frame = pl.DataFrame(
        {
            "file_id": instances["file_id"],
            "original_patient_id": patient_id,
            "original_study_uid": study_uid,
            "original_series_uid": col("SeriesInstanceUID"),
            "original_sop_uid": col("SOPInstanceUID"),
            "original_accession": col("AccessionNumber"),
        }
    )
    return frame.with_columns(
        cloud_study_id=map_cloud_study_ids(study_uid, key),
        patient_token=map_patient_tokens(patient_id, key),
        study_token=map_tokens(study_uid, key, "study", 12),
        date_offset_days=offsets_for(patient_id, key, shift),
        org=pl.lit(org),
    )


def _match_actions(elements: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Add action, template, source and priority from the profile (highest priority wins)."""
    actions = profile.actions().with_columns(pl.col("action").cast(pl.String))
    exact = (
        actions.filter(
            pl.col("tag").is_not_null()
            & (pl.col("mask") == 0xFFFFFFFF)
            & pl.col("private_creator").is_null()
        )
        .sort("priority")
        .unique("tag", keep="last")
        .select("tag", "action", "template", "source", "priority")
    )
    out = elements.join(exact, on="tag", how="left")
    others = actions.filter(
        ~(
            pl.col("tag").is_not_null()
            & (pl.col("mask") == 0xFFFFFFFF)
            & pl.col("private_creator").is_null()
        )
    ).sort("priority")
    action = pl.col("action")
    template = pl.col("template")
    source = pl.col("source")
    priority = pl.col("priority").cast(pl.Int64).fill_null(-1)
    for rule in others.iter_rows(named=True):
        cond = (pl.col("tag") & rule["mask"]) == rule["match"]
        if rule["private_creator"] is not None:
            cond = cond & (pl.col("private_creator") == rule["private_creator"])
        if rule["private"]:
            cond = cond & ((pl.col("tag") // 65536) % 2 == 1)
        cond = cond & (pl.lit(rule["priority"], pl.Int64) > priority)
        action = pl.when(cond).then(pl.lit(rule["action"])).otherwise(action)
        template = pl.when(cond).then(pl.lit(rule["template"], pl.String)).otherwise(template)
        source = pl.when(cond).then(pl.lit(rule["source"])).otherwise(source)
        priority = pl.when(cond).then(pl.lit(rule["priority"], pl.Int64)).otherwise(priority)
    return out.with_columns(
        action=action, template=template, source=source, priority=priority
    )


#: VRs of an attribute Table E.1-1 does not list that are not kept as they are (fail closed):
#: free text, addresses of systems, dates and times (person names: emptied)
_UNLISTED_TEXT_VRS = ("ST", "LT", "UT", "UC")
_UNLISTED_REMOVED_VRS = ("UR", "AE")
_UNLISTED_DATE_VRS = ("DA", "DT", "TM")
#: keywords of LO/SH attributes Table E.1-1 does not list that name or reach a person, or
#: hold a birth or death: removed (e.g. ContactDisplayName, PatientBirthDateInAlternativeCalendar)
_UNLISTED_PERSONAL = re.compile(
    r"Person|Patient|Physician|Operator|Reviewer|Evaluator|Author|Contact|Responsible|Requesting"
    r"|Referring|Performing|Verifying|Observer|Participant|Issuer|Institution|Address|Telephone"
    r"|Phone|Email|Birth|Death|Calendar"
)
#: keywords of LO/SH attributes Table E.1-1 does not list that are free descriptions
_UNLISTED_DESCRIPTIVE = re.compile(r"(Description|Label|Comments?|Text|Notes?|^AcquisitionProtocolName|^ProtocolElementName)$")
#: keywords of LO/SH attributes Table E.1-1 does not list that identify an owner, a traveller
#: or a medium (an animal's owner or registration, a boarding pass, a file-set's label): removed
_UNLISTED_OWNER = re.compile(
    r"^(?:OwnerID|BreedRegistrationNumber|ImageID|StorageMediaFileSetID|BoardingPassID|ItineraryID|RouteID"
    r"|RouteSegmentID|CarrierID)$"
)
#: keywords of LO/SH attributes Table E.1-1 does not list that name one device or machine, as
#: the listed Device Serial Number, Detector ID, Station Name and Treatment Machine Name do (a
#: catheter's ID in a Device Sequence, an RT image's machine, a printer): removed unless Retain
#: Device Identity keeps them, as those are
_UNLISTED_DEVICE = re.compile(
    r"^(?:DeviceID|GridID|RadiationMachineName|PrinterName|SubstanceAdministrationDeviceID"
    r"|BrachyAccessoryDeviceID|RespiratorySignalSourceID)$"
)
#: keywords of UI attributes Table E.1-1 does not list whose UIDs name a definition (a SOP
#: class, a transfer syntax, a coding scheme, a context group or template), the same at every
#: site: kept. Any other (MultiFrameSourceSOPInstanceUID, TableFrameOfReferenceUID,
#: RetrieveLocationUID, …) names an instance, a frame of reference or a place: replaced (U)
_UNLISTED_DEFINITION_UIDS = re.compile(
    r"SOPClass|TransferSyntax|CodingScheme|ContextUID|ContextGroupExtensionCreator|MappingResource"
    r"|TemplateUID"
)


def _unlisted(tag: int, vr: str, profile: Profile) -> tuple[str, str]:
    """What becomes of a standard attribute that Table E.1-1 does not list: (action, source).

    The table lists the attributes the standard knows may identify; newer ones (a reviewer's
    name, a contact, a birth date in another calendar), retired ones and values written
    with another VR than the dictionary's are not all in it. Fail closed: one whose VR
    differs from the dictionary's is removed; names are emptied; free text, system
    addresses and retired text or data are removed (free text cleaned with Clean
    Descriptors); dates and times follow the temporal options; a short text whose keyword
    names or reaches a person is removed, and one that names a device or machine (DeviceID,
    RadiationMachineName) unless Retain Device Identity keeps it; a UID that names an instance, a frame of
    reference or a place is replaced (U) as listed UIDs are. The rest (codes, numbers, UIDs
    of classes and transfer syntaxes, technical text such as Manufacturer or
    ConvolutionKernel) is kept.
    """
    from .tags import _entry

    entry = _entry(tag)
    if entry is None:
        return "X", "unknown: fail closed"
    listed = entry[0].split(" or ")
    if vr != "UN" and vr not in listed:
        return "X", "not in E.1-1: VR differs from the dictionary"
    value_vr = listed[0] if vr == "UN" else vr  # a UN value is what the dictionary says
    encoded = vr != "UN"  # a value of unknown VR cannot be cleaned, emptied or shifted in place
    keyword = entry[4] or ""
    options = profile.options
    if entry[3] == "Retired" and value_vr not in _NUMERIC_VRS:
        return "X", "not in E.1-1: retired text or data"
    if value_vr == "PN":
        return ("Z" if encoded else "X"), "not in E.1-1: a person name"
    if value_vr == "UI" and not _UNLISTED_DEFINITION_UIDS.search(keyword):
        if Option.RETAIN_UIDS in options:
            return "K", "not in E.1-1: an instance UID"
        return ("U" if encoded else "X"), "not in E.1-1: an instance UID"
    if value_vr in _UNLISTED_REMOVED_VRS:
        return "X", "not in E.1-1: a system address"
    short = value_vr in ("LO", "SH")
    if short and (_UNLISTED_PERSONAL.search(keyword) or _UNLISTED_OWNER.search(keyword)):
        return "X", "not in E.1-1: personal"
    if short and _UNLISTED_DEVICE.search(keyword):
        return ("K" if Option.RETAIN_DEVICE_IDENTITY in options else "X"), "not in E.1-1: a device's identity"
    if value_vr in _UNLISTED_TEXT_VRS or (short and _UNLISTED_DESCRIPTIVE.search(keyword)):
        clean = encoded and Option.CLEAN_DESCRIPTORS in options
        return ("C" if clean else "X"), "not in E.1-1: free text"
    if value_vr in _UNLISTED_DATE_VRS:
        if Option.RETAIN_LONG_FULL_DATES in options:
            return "K", "not in E.1-1: a date"
        if Option.RETAIN_LONG_MODIFIED_DATES in options and encoded:
            return "C", "not in E.1-1: a date"  # shifted (times of day kept), as listed dates are
        return "X", "not in E.1-1: a date"
    return "K", "not in E.1-1"


def _unlisted_table(pairs: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """:func:`_unlisted` for each (tag, vr) of ``pairs``."""
    decided = [_unlisted(int(tag), vr or "", profile) for tag, vr in pairs.iter_rows()]
    return pairs.with_columns(
        _u_action=pl.Series([a for a, _ in decided], dtype=pl.String),
        _u_source=pl.Series([s for _, s in decided], dtype=pl.String),
    )


#: bytes per value of the binary VRs Table E.3.10-1 lists
_BINARY_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4}
#: a code string (PS3.5 6.2): capitals, digits, space and underscore, at most 16
_CS_SYNTAX = r"[A-Z0-9 _]{0,16}"


def _whole_value(syntax: str) -> str:
    """A regex for a whole value whose every value (between backslashes) is ``syntax``."""
    one = rf" *(?:{syntax}) *"
    return rf"^(?:{one})?(?:\\(?:{one})?)*$"


def _reads_as_listed(listed_vr: pl.Expr) -> pl.Expr:
    """Whether a safe private element read as UN holds what the table's VR says.

    Numbers, dates, UIDs and codes: text of that syntax. Binary numbers: whole values,
    and not plainly text (a word hidden in a float array is not a float). Text VRs (LO,
    SH, ST, LT), opaque bytes (OB, OW) and sequences: as the table says, whatever they hold.
    """
    value, length = pl.col("value"), pl.col("length")
    checks = {name: _VALUE_SYNTAX[name] for name in ("DS", "IS", "UI", "DA", "TM")} | {"CS": _CS_SYNTAX}
    decided: pl.Expr = pl.lit(True)
    for name, syntax in checks.items():
        decided = pl.when(listed_vr == name).then(value.str.contains(_whole_value(syntax)).fill_null(False)).otherwise(decided)
    for name, size in _BINARY_SIZE.items():
        whole = value.is_null() & length.is_not_null() & (length % size == 0)
        decided = pl.when(listed_vr == name).then(whole).otherwise(decided)
    return decided


#: where a private element belongs: its data set (its path without its own tag) and its
#: block (group and block byte, which a creator (gggg,00xx) shares with its (gggg,xxyy))
_BLOCK_KEYS = ["file_id", "_parent", "_block"]
_PARENT = pl.col("tag_path").str.replace(r"[0-9A-F]{8}$", "").alias("_parent")
_BLOCK_OF_ELEMENT = ((pl.col("tag") // 65536) * 256 + (pl.col("tag") % 65536) // 256).alias("_block")
_BLOCK_OF_CREATOR = ((pl.col("tag") // 65536) * 256 + pl.col("tag") % 256).alias("_block")


def _private_and_unknown(matched: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Private elements, creators, unknown and group-length elements (fail closed)."""
    group = pl.col("tag") // 65536
    elem = pl.col("tag") % 65536
    odd = group % 2 == 1
    is_creator = odd & (elem >= 0x10) & (elem <= 0xFF)
    safe = (
        safe_private_table()
        .select(
            pl.col("private_creator"),
            pl.col("group").cast(pl.UInt32).alias("_g"),
            pl.col("element").cast(pl.UInt32).alias("_e"),
            pl.col("vr").fill_null("").alias("_safe_vr"),
        )
        .unique(["private_creator", "_g", "_e"], keep="first", maintain_order=True)
        .with_columns(_safe=pl.lit(True))
    )
    keep_safe = Option.RETAIN_SAFE_PRIVATE in profile.options
    if keep_safe:
        out = matched.with_columns(_g=group.cast(pl.UInt32), _e=(elem % 256).cast(pl.UInt32)).join(
            safe, on=["private_creator", "_g", "_e"], how="left"
        )
        # kept when written with the VR the table gives it (``OW/OB``: either; blank: any),
        # or as UN (implicit VR, mostly) when it reads as that VR: text where the table says a
        # number is not that attribute (fail closed)
        listed_vr = pl.col("_safe_vr").fill_null("")
        vr_ok = (
            (listed_vr == "")
            | ((pl.col("vr") == "UN") & _reads_as_listed(listed_vr))
            | listed_vr.str.split("/").list.contains(pl.col("vr"))
        )
        safe_hit = pl.col("_safe").fill_null(False) & vr_ok
    else:  # nothing is kept for being safe: no need to look
        out = matched.with_columns(
            _safe=pl.lit(None, pl.Boolean), _g=pl.lit(0, pl.UInt32), _e=pl.lit(0, pl.UInt32),
            _safe_vr=pl.lit(None, pl.String),
        )  # fmt: skip
        safe_hit = pl.lit(False)
    private_data = odd & ~is_creator & (elem > 0xFF)
    from_private_row = pl.col("source").is_in(["basic", "retain_safe_private"])
    unlisted = pl.col("action").is_null()
    known = unlisted & pl.col("keyword").is_not_null()
    pairs = out.select(pl.col("tag").filter(known), pl.col("vr").filter(known)).unique()
    out = out.join(_unlisted_table(pairs, profile), on=["tag", "vr"], how="left", maintain_order="left")
    # a short text kept for what its keyword says (a code meaning, a model name) that holds
    # what is personal whoever it is about (a name in DICOM's form, a telephone number) is
    # not kept: removed, or cleaned with Clean Descriptors
    clean = Option.CLEAN_DESCRIPTORS in profile.options
    personal_value = (
        unlisted
        & (pl.col("_u_action") == "K")
        & pl.col("vr").is_in(["LO", "SH", "UC"])
        & pl.col("value").str.contains(PERSONAL).fill_null(False)
    )
    # (condition, action, source), first match wins
    decisions: list[tuple[pl.Expr, pl.Expr, pl.Expr]] = [
        (private_data & from_private_row & safe_hit, pl.lit("K"), pl.lit("retain_safe_private")),
        (private_data & from_private_row, pl.lit("X"), pl.lit("private")),
        (odd & (elem < 0x10), pl.lit("X"), pl.lit("private")),  # (gggg,0000-000F): private lengths, reserved
        (~odd & (elem == 0) & (group != 0x0002), pl.lit("X"), pl.lit("group length")),
        (unlisted & pl.col("keyword").is_null(), pl.lit("X"), pl.lit("unknown: fail closed")),
        (personal_value, pl.lit("C" if clean else "X"), pl.lit("not in E.1-1: holds a name or a contact")),
        (unlisted, pl.col("_u_action"), pl.col("_u_source")),  # see _unlisted
    ]
    decided, decided_source = pl.col("action"), pl.col("source")
    for condition, action, source in reversed(decisions):
        decided = pl.when(condition).then(action).otherwise(decided)
        decided_source = pl.when(condition).then(source).otherwise(decided_source)
    out = out.with_columns(action=decided, source=decided_source).drop("_safe", "_g", "_e", "_safe_vr", "_u_action", "_u_source")
    # a private creator is kept exactly when a data element of its block is kept
    # (looked up for the creator rows only, and put back by position)
    kept_blocks = (
        out.filter(private_data & (pl.col("action") != "X"))
        .select("file_id", _PARENT, _BLOCK_OF_ELEMENT)
        .unique()
        .with_columns(_kept=pl.lit(True))
    )
    kept = pl.repeat(None, out.height, dtype=pl.Boolean, eager=True).alias("_kept")
    creators = out.select(is_creator).to_series()
    if kept_blocks.height and creators.any():
        found = (
            out.filter(creators)
            .select("file_id", _PARENT, _BLOCK_OF_CREATOR)
            .join(kept_blocks, on=_BLOCK_KEYS, how="left", maintain_order="left")
        )
        kept = kept.scatter(creators.arg_true(), found["_kept"])
    out = out.with_columns(kept)
    creator_rule = pl.col("source").str.starts_with("custom")
    out = out.with_columns(
        action=pl.when(is_creator & ~creator_rule)
        .then(pl.when(pl.col("_kept").fill_null(False)).then(pl.lit("K")).otherwise(pl.lit("X")))
        .otherwise(pl.col("action")),
        source=pl.when(is_creator & ~creator_rule)
        .then(pl.lit("private creator"))
        .otherwise(pl.col("source")),
    )
    return out.drop("_kept")


#: sequences whose items are content items (concept name + value): the Clean Structured
#: Content option cleans them item by item (Table E.3.4-1)
_CONTENT_ITEM_SEQUENCES = ("0040A730", "00400612", "00400610", "00400555", "0040B020")
#: the path of the innermost content item an element is in (greedy: the last such item)
_ITEM_ROOT = r"^(.*(?:" + "|".join(_CONTENT_ITEM_SEQUENCES) + r")\[\d+\])\."
#: attributes of a content item that carry its value (the rest is structure)
_ITEM_VALUES = ("0040A160", "00700006", "0040A123", "0040A121", "0040A122", "0040A120", "0040A124", "0040A13A")
#: attributes of a content item kept as structure (the first tag of their path inside the item);
#: UIDs inside them get new UIDs; anything else in an item is removed (fail closed)
_ITEM_STRUCTURE = (
    "0040A010",  # Relationship Type
    "0040A040",  # Value Type
    "0040A050",  # Continuity Of Content
    "0040A043",  # Concept Name Code Sequence
    "0040A168",  # Concept Code Sequence (CODE value)
    "0040A300",  # Measured Value Sequence (NUM value)
    "0040A301",  # Numeric Value Qualifier Code Sequence
    "0040A504",  # Content Template Sequence
    "00081199",  # Referenced SOP Sequence (IMAGE, COMPOSITE, WAVEFORM)
    "00700022",  # Graphic Data (SCOORD)
    "00700023",  # Graphic Type
    "0040A130",  # Temporal Range Type (TCOORD)
    "0040A132",  # Referenced Sample Positions
    "0040A138",  # Referenced Time Offsets
    "0040A0B0",  # Referenced Waveform Channels
    "0040A180",  # Annotation Group Number
    "0040DB73",  # Referenced Content Item Identifier
    *_CONTENT_ITEM_SEQUENCES,  # nested content items: cleaned as items of their own
)
#: what may be inside a structure sequence of a content item (codes, measured values,
#: references): anything else there is removed, whatever its tag elsewhere (fail closed)
_STRUCTURE_INSIDE = tuple(
    int(tag, 16)
    for tag in (
        "00080100",  # Code Value
        "00080102",  # Coding Scheme Designator
        "00080103",  # Coding Scheme Version
        "00080104",  # Code Meaning
        "00080105",  # Mapping Resource
        "00080106",  # Context Group Version
        "00080107",  # Context Group Local Version
        "0008010B",  # Context Group Extension Flag
        "0008010D",  # Context Group Extension Creator UID
        "0008010F",  # Context Identifier
        "00080117",  # Context UID
        "00080118",  # Mapping Resource UID
        "00080119",  # Long Code Value
        "00080120",  # URN Code Value
        "00080121",  # Equivalent Code Sequence
        "00080122",  # Mapping Resource Name
        "00081150",  # Referenced SOP Class UID
        "00081155",  # Referenced SOP Instance UID
        "00081160",  # Referenced Frame Number
        "00081199",  # Referenced SOP Sequence
        "0062000B",  # Referenced Segment Number
        "004008EA",  # Measurement Units Code Sequence
        "0040A0B0",  # Referenced Waveform Channels
        "0040A161",  # Floating Point Value
        "0040A162",  # Rational Numerator Value
        "0040A163",  # Rational Denominator Value
        "0040A170",  # Purpose of Reference Code Sequence
        "0040A301",  # Numeric Value Qualifier Code Sequence
        "0040A30A",  # Numeric Value
        "0040DB00",  # Template Identifier
    )
)


def _clean_structured_content(plan: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Clean Structured Content item by item (PS3.15 E.3.4, Table E.3.4-1).

    Inside the sequences the option marks C (Content Sequence, Acquisition Context,
    Specimen Preparation, Waveform Annotation), each content item keeps its
    structure (relationship, value type, concept name, codes, measurements,
    references with new UIDs) and its value gets the action Table E.3.4-1 gives
    its concept name, resolved for the profile's options. Concepts the table does
    not list: text is cleaned (the file's own identifiers, dates and IDs
    scrubbed), person names get a dummy, dates follow the temporal options, UIDs
    get new UIDs. An item whose concept the table removes (X) is removed with
    everything under it. Anything else inside an item is removed (fail closed).
    """
    starts = plan.filter(
        (pl.col("vr") == "SQ") & (pl.col("action") == "C") & (pl.col("source") == Option.CLEAN_STRUCTURED_CONTENT.value)
    )
    if starts.height == 0:
        return plan
    inside = pl.lit(False)
    for prefix in starts["tag_path"].unique().to_list():
        inside = inside | pl.col("tag_path").str.starts_with(prefix + "[")
    plan = plan.with_columns(_inside=inside, _root=pl.col("tag_path").str.extract(_ITEM_ROOT, 1))
    rows = plan.filter(pl.col("_inside") & pl.col("_root").is_not_null())
    rel = pl.col("tag_path").str.slice(pl.col("_root").str.len_chars() + 1)
    rows = rows.with_columns(_rel=rel, _first=rel.str.slice(0, 8))
    concepts = (
        rows.filter(pl.col("_rel") == "0040A043[0].00080100")
        .select("file_id", "_root", pl.col("value").alias("code_value"))
        .join(
            rows.filter(pl.col("_rel") == "0040A043[0].00080102").select(
                "file_id", "_root", pl.col("value").alias("coding_scheme_designator")
            ),
            on=["file_id", "_root"],
            how="left",
        )
    )
    table = profile.structured_content().select(
        "code_value", "coding_scheme_designator", pl.col("action").cast(pl.String).alias("_item_action")
    ).unique(["code_value", "coding_scheme_designator"], keep="first")
    concepts = concepts.join(table, on=["code_value", "coding_scheme_designator"], how="left")
    rows = rows.join(concepts.select("file_id", "_root", "_item_action"), on=["file_id", "_root"], how="left")
    if Option.RETAIN_LONG_FULL_DATES in profile.options:
        dates = "K"
    elif Option.RETAIN_LONG_MODIFIED_DATES in profile.options:
        dates = "C"
    else:
        dates = "X"
    vr = pl.col("vr")
    unlisted = (
        pl.when(vr.is_in(_TEXT_VRS))
        .then(pl.lit("C"))
        .when(vr == "PN")
        .then(pl.lit("D"))
        .when(vr.is_in(["DA", "DT", "TM"]))
        .then(pl.lit(dates))
        .when(vr == "UI")
        .then(pl.lit("U"))
        .otherwise(pl.lit("K"))
    )
    item_action = pl.col("_item_action")
    value_action = pl.coalesce(item_action, unlisted)
    value_action = (
        pl.when((vr == "UI") & value_action.is_in(["D", "C", "K"])).then(pl.lit("U")).otherwise(value_action)
    )
    # UIDs in the structure (referenced instances) keep the profile's decision for their
    # tag: instance UIDs get new UIDs, class UIDs stay
    structure_action = (
        pl.when((vr == "UI") & pl.col("action").is_in(["U", "D", "C"]))
        .then(pl.lit("U"))
        .when(vr == "UI")
        .then(pl.col("action"))
        .otherwise(pl.lit("K"))
    )
    # the structure attribute itself, or a code, measurement or reference inside it
    in_structure = (pl.col("_rel").str.len_chars() == 8) | pl.col("tag").is_in(_STRUCTURE_INSIDE)
    decided = (
        pl.when(item_action == "X")
        .then(pl.lit("X"))
        .when(pl.col("_first").is_in(_ITEM_VALUES) & (pl.col("_rel").str.len_chars() == 8))
        .then(value_action)
        .when(pl.col("_first").is_in(_ITEM_STRUCTURE) & in_structure)
        .then(structure_action)
        .otherwise(pl.lit("X"))
    )
    source = (
        pl.when(item_action.is_not_null())
        .then(pl.lit("clean_structured_content: E.3.4-1"))
        .when(
            (pl.col("_first").is_in(_ITEM_VALUES) & (pl.col("_rel").str.len_chars() == 8))
            | (pl.col("_first").is_in(_ITEM_STRUCTURE) & in_structure)
        )
        .then(pl.lit("clean_structured_content"))
        .otherwise(pl.lit("clean_structured_content: not a content item attribute"))
    )
    rows = rows.select("file_id", "tag_path", decided.alias("_new_action"), source.alias("_new_source"))
    plan = plan.join(rows, on=["file_id", "tag_path"], how="left")
    is_start = pl.col("tag_path").is_in(starts["tag_path"].unique().to_list()) & (pl.col("vr") == "SQ") & (
        pl.col("action") == "C"
    )
    return plan.with_columns(
        action=pl.when(is_start)
        .then(pl.lit("K"))  # the container stays; its items are decided one by one
        .when(pl.col("_new_action").is_not_null())
        .then(pl.col("_new_action"))
        .when(pl.col("_inside"))
        .then(pl.lit("X"))
        .otherwise(pl.col("action")),
        source=pl.when(is_start)
        .then(pl.lit("clean_structured_content"))
        .when(pl.col("_new_source").is_not_null())
        .then(pl.col("_new_source"))
        .when(pl.col("_inside"))
        .then(pl.lit("clean_structured_content: not a content item attribute"))
        .otherwise(pl.col("source")),
    ).drop("_inside", "_root", "_new_action", "_new_source")


def _repeated_elements(plan: pl.DataFrame) -> pl.DataFrame:
    """An element written twice in one data set (a damaged or forged file) whose two copies
    would be treated differently, or hold two values, is removed, both copies (fail closed):
    the rewriter applies one decision per element path, and a value kept for what the other
    copy is (a private creator kept for its block, say) must not come through."""
    # equal (file, path) pairs hash equal: as many distinct hashes as rows, none is repeated
    hashed = pl.col("tag_path").hash(1) ^ pl.col("file_id").hash(2)
    if plan.select(hashed.n_unique()).item() == plan.height:
        return plan
    conflict = (pl.col("action").fill_null("").n_unique().over("file_id", "tag_path") > 1) | (
        pl.col("value").n_unique().over("file_id", "tag_path") > 1
    )
    return plan.with_columns(
        action=pl.when(conflict).then(pl.lit("X")).otherwise(pl.col("action")),
        source=pl.when(conflict).then(pl.lit("repeated element: fail closed")).otherwise(pl.col("source")),
    )


def _removed_overlays(plan: pl.DataFrame) -> pl.DataFrame:
    """An overlay whose Overlay Data (60xx,3000) is removed (X) goes whole: the rest of its
    group (rows, columns, bit position…) would describe an overlay whose bits a viewer then
    takes from Pixel Data (the retired embedded form), drawing the image's own low bit."""
    group = pl.col("tag") // 65536
    overlay = overlay_element(pl.col("depth") == 0)
    removed = plan.filter(overlay & (pl.col("tag") % 65536 == 0x3000) & (pl.col("action") == "X"))
    if removed.height == 0:  # the usual case
        return plan
    gone = removed.select("file_id", group.alias("_group")).unique()
    hit = plan.select("file_id", group.alias("_group"), overlay.alias("_overlay")).join(
        gone.with_columns(_gone=pl.lit(True)), on=["file_id", "_group"], how="left", maintain_order="left"
    )
    hit_rows = (hit["_overlay"] & hit["_gone"].fill_null(False)) & (plan["action"] != "X")
    return plan.with_columns(
        action=pl.when(hit_rows).then(pl.lit("X")).otherwise(pl.col("action")),
        source=pl.when(hit_rows).then(pl.lit("overlay removed: its description too")).otherwise(pl.col("source")),
    )


def _private_blocks(plan: pl.DataFrame) -> pl.DataFrame:
    """A private element stays only beside its creator, and a creator only beside a kept
    element of its block (fail closed). A block whose creator was removed (written twice
    with two values, in a forged file) goes whole: its elements would otherwise stay
    without a creator, and a creator kept for nothing would carry its text alone."""
    group = pl.col("tag") // 65536
    elem = pl.col("tag") % 65536
    odd = group % 2 == 1
    kept = pl.col("action").fill_null("X") != "X"
    flags = plan.select(
        (odd & (elem > 0xFF) & kept).alias("data"),
        (odd & (elem >= 0x10) & (elem <= 0xFF) & kept).alias("creator"),
    )
    data, creators = flags["data"], flags["creator"]
    if not data.any() and not creators.any():  # the usual case: no private element is kept
        return plan
    of_data = plan.filter(data).select("file_id", _PARENT, _BLOCK_OF_ELEMENT)
    of_creators = plan.filter(creators).select("file_id", _PARENT, _BLOCK_OF_CREATOR)
    mark = pl.lit(True).alias("_with")
    with_creator = of_data.join(of_creators.unique().with_columns(mark), on=_BLOCK_KEYS, how="left", maintain_order="left")
    with_data = of_creators.join(of_data.unique().with_columns(mark), on=_BLOCK_KEYS, how="left", maintain_order="left")
    alone = pl.repeat(False, plan.height, dtype=pl.Boolean, eager=True)
    alone = alone.scatter(data.arg_true(), with_creator["_with"].is_null())
    alone = alone.scatter(creators.arg_true(), with_data["_with"].is_null())
    if not alone.any():
        return plan
    return plan.with_columns(
        action=pl.when(alone).then(pl.lit("X")).otherwise(pl.col("action")),
        source=pl.when(alone).then(pl.lit("private block without its creator: fail closed"))
        .otherwise(pl.col("source")),
    )  # fmt: skip


def _remove_inside_removed(plan: pl.DataFrame) -> pl.DataFrame:
    """Anything inside a removed (X) or emptied (Z) sequence goes too."""
    deepest = plan["depth"].max()
    max_depth = int(deepest) if isinstance(deepest, int | float) else 0
    if max_depth == 0:
        return plan
    # only the rows inside sequences can change, and only sequences decide: the rest is left out
    involved = plan.select(((pl.col("depth") > 0) | (pl.col("vr") == "SQ")).fill_null(True)).to_series()
    done = _inside_removed(plan.filter(involved), max_depth, True)
    if done is None:  # a sequence repeated in its file: the joins give its rows as they always have
        done = _inside_removed(plan, max_depth, False)
        assert done is not None
        return done
    at = involved.arg_true()
    return plan.with_columns(plan["action"].scatter(at, done["action"]), plan["source"].scatter(at, done["source"]))


def _inside_removed(plan: pl.DataFrame, max_depth: int, part: bool) -> pl.DataFrame | None:
    """:func:`_remove_inside_removed` on ``plan``; with ``part`` (a part of the plan, rows kept
    in order), None when a removed sequence's path is there twice in a file."""
    parent = pl.col("tag_path").str.replace(r"\[\d+\]\.[0-9A-F]{8}$", "")
    # X and Z drop the items; D and C keep the items but not what is in them: the
    # standard's row covers the whole sequence (the C sequences of Clean Structured
    # Content were decided item by item before, and are K here)
    plan = plan.with_columns(
        _parent=parent, _gone=pl.col("action").is_in(["X", "Z", "D", "C"]) & (pl.col("vr") == "SQ")
    )
    plan = plan.with_columns(
        _gone=pl.when(pl.col("vr") == "SQ").then(pl.col("_gone")).otherwise(pl.lit(False))
    )
    for depth in range(1, max_depth + 1):
        gone = (
            plan.filter((pl.col("depth") == depth - 1) & (pl.col("vr") == "SQ") & pl.col("_gone"))
            .select("file_id", pl.col("tag_path").alias("_parent"))
            .with_columns(_parent_gone=pl.lit(True))
        )
        if gone.height == 0:
            continue
        if part and gone.select(pl.struct("file_id", "_parent").is_duplicated().any()).item():
            return None
        plan = (
            plan.join(gone, on=["file_id", "_parent"], how="left", maintain_order="left" if part else None)
            .with_columns(
                _hit=(pl.col("depth") == depth) & pl.col("_parent_gone").fill_null(False)
            )
            .with_columns(
                action=pl.when(pl.col("_hit")).then(pl.lit("X")).otherwise(pl.col("action")),
                source=pl.when(pl.col("_hit"))
                .then(pl.lit("inside removed sequence"))
                .otherwise(pl.col("source")),
                _gone=pl.col("_gone") | (pl.col("_hit") & (pl.col("vr") == "SQ")),
            )
            .drop("_parent_gone", "_hit")
        )
    return plan.drop("_parent", "_gone")


def _scrub(
    values: Iterable[tuple[int, str, str | None]],
    terms: dict[int, re.Pattern[str] | None],
    charsets: dict[int, dict[str, str]],
    scripts: dict[int, frozenset[str]],
) -> list[str]:
    """Cleaned text of each (file_id, tag_path, value), in the character set the element is
    written in (see :func:`dicomframe.rewrite.charset_at`); a letter outside ASCII only in a
    script of the file's person names (``scripts``, :func:`_name_scripts`), else ``?``."""
    from .rewrite import charset_at

    out = []
    done: dict[tuple[int, str | None, str | None, frozenset[str]], str] = {}  # files share patterns and sets
    for file_id, tag_path, value in values:
        pattern = terms.get(file_id)
        charset = None
        known = _LATIN
        if value and not value.isascii():
            charset = charset_at(tag_path, charsets.get(file_id, {}))
            known = scripts.get(file_id, _LATIN)
        key = (id(pattern), value, charset, known)
        text = done.get(key)
        if text is None:
            text = value or ""
            if pattern is not None:
                text = pattern.sub("***", text)
            # full-width letters and digits, and any decimal digit, as ASCII: what the
            # patterns below read
            text = _GENERIC_SCRUB.sub("***", text.translate(_ASCII_FORMS))
            if not text.isascii():
                # a letter of a script the patient's name is not written in: the name was
                # not sought in it ("山田太郎" where the name is only "Yamada^Tarou")
                text = "".join("?" if c.isalpha() and not c.isascii() and _script(c) not in known else c for c in text)
            text = done[key] = _writable(text, charset)
        out.append(text)
    return out


_LATIN = frozenset({"LATIN"})


@functools.lru_cache(maxsize=4096)
def _script(char: str) -> str:
    """The script of a letter, as the first word of its Unicode name ("LATIN", "CYRILLIC",
    "GREEK", "CJK", "HIRAGANA", "KATAKANA", "HANGUL"…)."""
    return unicodedata.name(char, "?").split(" ", 1)[0]


def _name_scripts(elements: pl.DataFrame) -> dict[int, frozenset[str]]:
    """Per file, the scripts its person names are written in (Latin at least): where cleaned
    text keeps letters outside ASCII (see :func:`_scrub`)."""
    names = elements.filter((pl.col("vr") == "PN") & pl.col("value").is_not_null() & ~pl.col("value").str.contains(r"^[\x00-\x7F]*$"))
    scripts: dict[int, frozenset[str]] = {}
    for file_id, value in names.select("file_id", "value").iter_rows():
        found = {_script(c) for c in value if c.isalpha() and not c.isascii()}
        scripts[file_id] = scripts.get(file_id, _LATIN) | found
    return scripts


class _AsciiForms(dict[int, int | None]):
    """A :meth:`str.translate` table: full-width ASCII (``１２３``, ``ＣＴ``) and the ideographic
    space as ASCII, every decimal digit (``١٢٣``) as its ASCII digit; the rest unchanged."""

    def __missing__(self, code: int) -> int | None:
        if 0xFF01 <= code <= 0xFF5E:
            found: int | None = code - 0xFEE0
        elif code == 0x3000:
            found = 0x20
        else:
            digit = unicodedata.decimal(chr(code), None) if code > 0x7F else None
            found = None if digit is None else 0x30 + digit
        if found is None:
            raise LookupError(code)  # left as it is
        self[code] = found
        return found


_ASCII_FORMS = _AsciiForms()


def _charsets(elements: pl.DataFrame) -> dict[int, dict[str, str]]:
    """Per file, the prefix of each data set or item → its Specific Character Set value (see
    :func:`dicomframe.rewrite.charset_at`)."""
    declared = elements.filter(pl.col("tag") == 0x00080005).select("file_id", "tag_path", "value")
    charsets: dict[int, dict[str, str]] = {}
    for file_id, path, value in declared.iter_rows():
        charsets.setdefault(file_id, {})[path[:-8]] = value or ""
    return charsets


def _writable(text: str, charset: str | None) -> str:
    """``text`` as it can be written in ``charset`` (:func:`dicomframe.rewrite.encode_text`):
    a character outside it becomes ``?``."""
    from .rewrite import encode_text

    if text.isascii() or encode_text(text, charset) is not None:
        return text
    kept = "".join(c if c.isascii() or encode_text(c, charset) is not None else "?" for c in text)
    return kept if encode_text(kept, charset) is not None else text.encode("ascii", "replace").decode("ascii")


# a term is scrubbed as a token of its own, as the leak gate finds it (leaks._as_token):
# it does not continue a run of letters, or of digits, on either side ("MRN1234567" holds
# the ID 1234567; "71234567" holds no 1234567); a name part of 4 letters or more is also
# scrubbed inside a longer word (see _identifier_patterns)
# A capital after a small letter starts a token too ("JanetDoeson_brain" holds JANET and DOESON).
_CAMEL = r"(?-i:(?<=[a-z])(?=[A-Z]))"
_TOKEN_START = rf"(?:(?<![A-Za-z])(?=[A-Za-z])|(?<![0-9])(?=[0-9])|(?=[^A-Za-z0-9])|{_CAMEL})"
_TOKEN_END = rf"(?:(?<=[A-Za-z])(?![A-Za-z])|(?<=[0-9])(?![0-9])|(?<=[^A-Za-z0-9])|{_CAMEL})"


def _fold_accents(text: str) -> str:
    """``text`` without its combining marks (``"José"`` → ``"Jose"``, ``"Groß"`` → ``"Gross"``)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).replace("ß", "ss")


#: letters German (and Scandinavian) keyboards without them spell out
_SPELT_OUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss", "ø": "oe",
                            "Ø": "Oe", "å": "aa", "Å": "Aa", "æ": "ae", "Æ": "Ae"})  # fmt: skip


def _term_regex(term: str) -> str:
    """A regex for ``term``: an identifier (4 letters and digits or more, with a digit) matches
    written with or without its separators (``A-5566``, ``A5566``, ``A 5566``, ``A.55.66``)."""
    chars = [c for c in term if c.isalnum()]
    if len(chars) >= 4 and any(c.isdigit() for c in chars):
        return r"[-_./ ]?".join(re.escape(c) for c in chars)
    return re.escape(term)


#: the scripts written without spaces between words (Chinese, Japanese, Korean)
CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"


def joined_names(value: pl.Expr) -> pl.Expr:
    """Of each person name (PN) ``value``: every component group's family and given names
    written together, as a name in ideographs or hangul is written ("王^伟" → "王伟")."""
    group = pl.element().str.split("^").list.head(2).list.join("").str.replace_all(r"\s", "")
    return value.str.split("=").list.eval(group)


#: what joins the words of one name part: spaces, apostrophes and hyphens of any kind, dots
#: ("O'BRIEN", "O’Brien", "MARY-KATE", "van der Berg", "St.John")
NAME_GLUE = r"[\s'’‘`´ʼ.\-‐‑–]+"


def glued_names(value: pl.Expr) -> pl.Expr:
    """Of each person name (PN) ``value``: every component (family name, given names…) written
    without what joins its words (:data:`NAME_GLUE`), as names are typed where a space or an
    apostrophe cannot go ("O'BRIEN" → "OBRIEN", "MARY-KATE" → "MARYKATE", "van der Berg" →
    "vanderBerg")."""
    return value.str.replace_all(r"[=\\]", "^").str.split("^").list.eval(pl.element().str.replace_all(NAME_GLUE, ""))


def name_forms(value: pl.Expr, initials: bool = True) -> pl.Expr:
    """Of each person name (PN) ``value``: its family and given names typed as one word, as
    user names and file names are ("DOE^JOHN" → "DOEJOHN", "JOHNDOE", "JDOE", "DOEJ"): both
    names either way round, and (with ``initials``) the given name's initial before or after
    the family name. Each component group (alphabetic, ideographic, phonetic) and each value
    of several, with what joins the words of a part left out (:data:`NAME_GLUE`); none of a
    group without a given name, or written in ideographs or hangul (see :func:`joined_names`
    for those)."""

    def part(index: int) -> pl.Expr:
        return pl.element().str.split("^").list.get(index, null_on_oob=True).str.replace_all(NAME_GLUE, "")

    family, given = part(0), part(1)
    initial = given.str.slice(0, 1)
    letters = r"^[^\W\d_]+$"
    usable = family.str.contains(letters) & given.str.contains(letters) & ~(family + given).str.contains(CJK)
    groups = value.str.replace_all(r"\\", "=").str.split("=")
    pairs = [(family, given), (given, family)] + ([(initial, family), (family, initial)] if initials else [])
    return pl.concat_list([groups.list.eval(pl.when(usable).then(a + b)) for a, b in pairs]).list.drop_nulls()


def _identifier_patterns(elements: pl.DataFrame) -> dict[int, re.Pattern[str] | None]:
    """Per file, a regex matching its own identifying values (names split in parts)."""
    ids = elements.filter(
        pl.col("keyword").is_in(_IDENTIFYING) | (pl.col("vr") == "PN")
    ).select("file_id", "value", "vr")
    ids = ids.filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
    # files holding the same identifying values (a study's, a patient's) share one pattern:
    # made once, from the first of them. Each set is keyed by its distinct values, sorted,
    # each written after its length (no two sets give one key)
    sets = ids.group_by("file_id").agg(
        _set=pl.concat_str(pl.col("value").str.len_bytes().cast(pl.String), pl.lit(":"), pl.col("value"))
        .unique()
        .sort()
        .str.join("")
    )
    first = sets.group_by("_set").agg(_first=pl.col("file_id").min())
    sets = sets.join(first, on="_set")
    ids = ids.join(first.select(pl.col("_first").alias("file_id")), on="file_id", how="semi")
    # name parts of two letters too ("Li^Xi"): a term is only ever scrubbed as a token; a
    # name's parts are its words, apostrophes and hyphens apart too ("O'BRIEN^MARY-KATE":
    # BRIEN, MARY, KATE), and each part written together (OBRIEN, MARYKATE)
    person = pl.col("vr") == "PN"
    words = pl.col("value").str.replace_all(r"[\^=\\,\s]+", " ")
    terms = (
        ids.select("file_id", words.str.split(" ").alias("part"))
        .vstack(ids.filter(person).select("file_id", words.str.replace_all(NAME_GLUE, " ").str.split(" ").alias("part")))
        .explode("part")
        .filter(pl.col("part").str.len_chars() >= 2)
        .select("file_id", "part")
        .vstack(ids.select("file_id", pl.col("value").alias("part")).filter(pl.col("part").str.len_chars() >= 3))
        .vstack(
            ids.filter(person)
            .select("file_id", glued_names(pl.col("value")).alias("part"))
            .explode("part")
            .filter(pl.col("part").str.len_chars() >= 2)
        )
        # and a name in ideographs or hangul written whole ("王^伟" written "王伟")
        .vstack(
            ids.select("file_id", joined_names(pl.col("value")).alias("part"))
            .explode("part")
            .filter(pl.col("part").str.contains(CJK) & (pl.col("part").str.len_chars() >= 2))
        )
        .with_columns(token=pl.lit(False))
        # and a name typed as a user name ("jdoe", "bobdoe"): sought as a token of its own only
        # (an initial glued to a short name is inside everyday words: "mrose" in "primrose")
        .vstack(
            ids.filter(person)
            .select("file_id", name_forms(pl.col("value")).alias("part"), token=pl.lit(True))
            .explode("part")
            .filter(pl.col("part").str.len_chars() >= 3)
        )
        .unique()
    )
    # and each written without its accents ("José" typed "Jose"), or spelt out as German
    # keyboards do ("Müller" typed "Mueller", "Groß" typed "Gross")
    accented = terms.filter(~pl.col("part").str.contains(r"^[\x00-\x7F]*$"))
    if accented.height:
        # each distinct part once (a patient's parts stand in every file of the patient)
        variants = {
            part: [_fold_accents(part), _fold_accents(part.translate(_SPELT_OUT))]
            for part in accented["part"].unique().to_list()
        }
        spelt = accented.with_columns(
            pl.col("part").replace_strict(variants, return_dtype=pl.List(pl.String))
        ).explode("part")
        terms = terms.vstack(spelt).unique()
    patterns: dict[int, re.Pattern[str] | None] = {}
    # each file's terms longest first, then in code point order (UTF-8 byte order)
    grouped = (
        terms.with_columns(_len=pl.col("part").str.len_chars())
        .sort(["file_id", "_len", "part", "token"], descending=[False, True, False, False])
        .group_by("file_id", maintain_order=True)
        .agg("part", "token")
    )
    compiled: dict[tuple[tuple[str, bool], ...], re.Pattern[str]] = {}  # files of one patient share terms
    for file_id, parts, tokens in grouped.iter_rows():
        key = tuple(zip(parts, tokens, strict=True))
        if key not in compiled:
            distinct = list(dict.fromkeys(parts))
            alternation = "|".join(_term_regex(p) for p in distinct)
            # a name part of 4 letters or more is found inside a longer run of letters too
            # ("JANEDOE" holds JANE and DOE): over-cleaning a description is the safe side
            inside = {p for p, token in key if not token}
            glued = "|".join(re.escape(p) for p in distinct if p in inside and len(p) >= 4 and p.isalpha())
            compiled[key] = re.compile(
                rf"(?i){_TOKEN_START}(?:{alternation}){_TOKEN_END}" + (f"|(?:{glued})" if glued else "")
            )
        patterns[int(file_id)] = compiled[key]
    return {int(f): patterns[int(r)] for f, r in sets.select("file_id", "_first").iter_rows()}


def _new_values(
    plan: pl.DataFrame, context: pl.DataFrame, elements: pl.DataFrame, key: ProjectKey
) -> pl.DataFrame:
    """Add ``new_value`` (and turn to X what cannot be given one): see the module docstring.

    A kept row (K) keeps its value and a removed one (X) gets none; every other row
    (a small part of the plan) gets its new value computed in :func:`_changed_values`,
    with its file's context, and put back in its place.
    """
    action = pl.col("action")
    changed = ~action.is_in(["K", "X"]).fill_null(False)  # null: decided below, fail closed
    where = plan.select(changed.alias("_changed")).to_series()
    rows = plan.filter(where).join(context, on="file_id", how="left", maintain_order="left")
    rows, cleaned_frame = _changed_values(rows, elements, key)
    at = where.arg_true()
    new_value = (
        plan.select(pl.when(action == "K").then(pl.col("value")).otherwise(pl.lit(None, pl.String)))
        .to_series()
        .scatter(at, rows["new_value"])
    )
    plan = plan.with_columns(
        plan["action"].scatter(at, rows["action"]).alias("action"), new_value.alias("new_value")
    )
    if cleaned_frame is not None:
        # two cleaned rows with one (file, path): an element repeated in its file; the join
        # gives each its rows, as it always has
        clean = _cleaned_text(pl.col("action"), pl.col("vr"))
        plan = plan.join(cleaned_frame, on=["file_id", "tag_path"], how="left").with_columns(
            new_value=pl.when(clean).then(pl.col("_clean")).otherwise(pl.col("new_value"))
        )
        plan = _fit_lengths(plan.drop("_clean"))
    return plan


#: what a value of these VRs is (each of its values, between backslashes); a value kept as
#: it is must be one: text written where a time, number or UID belongs may be a name
_VALUE_SYNTAX = {
    "DA": r"\d{8}|\d{4}\.\d{2}\.\d{2}",
    "TM": r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?|\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?",
    "DT": r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?",
    "IS": r"[+-]?\d+",
    "DS": r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?",
    "AS": r"\d{3}[DWMY]",
    "UI": UID_SYNTAX,
}


#: the defined terms of Specific Character Set (0008,0005) (pydicom's table of them)
_CHARSETS = frozenset(python_encoding)


def _malformed_removed(plan: pl.DataFrame) -> pl.DataFrame:
    """A value kept as it is (K, or a time of day under C) that is not what its VR says
    (``StudyTime`` = ``SMITH^JOHN``, an ``IS`` holding a word) is removed (fail closed):
    dates that do not parse are replaced already, never kept."""
    vr, value = pl.col("vr"), pl.col("value")
    kept = (pl.col("action") == "K") | ((pl.col("action") == "C") & (vr == "TM"))
    where = kept & vr.is_in(list(_VALUE_SYNTAX)) & value.is_not_null()
    checked = plan.select(vr.filter(where), value.filter(where)).unique()
    bad = []
    for name, syntax in _VALUE_SYNTAX.items():  # each distinct value once
        found = checked.filter((vr == name) & ~value.str.contains(_whole_value(syntax)))
        bad.append(found)
    wrong = pl.concat(bad)
    # a character set that is none of the defined terms (PS3.3 C.12.1.1.2, as pydicom knows
    # them) is free text written as codes (``ISO_IR 1OO DOE``): it names no encoding either
    charset = kept & (pl.col("tag") == 0x00080005) & value.is_not_null()
    unknown = [  # each distinct value once
        text
        for text in plan.filter(charset)["value"].unique().to_list()
        if any(part.strip(" ") not in _CHARSETS for part in text.split("\\"))
    ]
    if wrong.height == 0 and not unknown:
        return plan
    malformed = (charset & value.is_in(unknown)) | (
        kept & pl.struct(vr, value).is_in(wrong.select(pl.struct("vr", "value")).to_series().implode())
    )
    return plan.with_columns(
        action=pl.when(malformed).then(pl.lit("X")).otherwise(pl.col("action")),
        source=pl.when(malformed).then(pl.lit("not a valid value of its VR: fail closed")).otherwise(pl.col("source")),
        new_value=pl.when(malformed).then(pl.lit(None, pl.String)).otherwise(pl.col("new_value")),
    )


#: the age from which an age is written as one category, "90 or older" (the HIPAA Safe Harbor
#: method's: ages over 89 aggregated), as an Age String (PS3.5 6.2)
AGE_CATEGORY = "090Y"


def aggregated_age(value: pl.Expr) -> pl.Expr:
    """An Age String cleaned (action C): an age of 90 years or more becomes ``090Y`` ("90 or
    older"), a younger one stays as it is; what is not an Age String becomes null (removed:
    fail closed). Ages in days, weeks and months (``999M`` is 83 years) are all younger."""
    age = value.str.strip_chars(" \x00")
    years = age.str.slice(0, 3).cast(pl.Int32, strict=False)
    return (
        pl.when(~age.str.contains(rf"^(?:{_VALUE_SYNTAX['AS']})$").fill_null(False))
        .then(pl.lit(None, pl.String))
        .when(age.str.ends_with("Y") & (years >= int(AGE_CATEGORY[:3])))
        .then(pl.lit(AGE_CATEGORY))
        .otherwise(age)
    )


def _cleaned_text(action: pl.Expr, vr: pl.Expr) -> pl.Expr:
    """The rows Clean Descriptors cleans as text: C on a text VR (not the timezone offset)."""
    return (action == "C") & vr.is_in(_TEXT_VRS) & (pl.col("tag") != _TIMEZONE)


def _fit_lengths(plan: pl.DataFrame) -> pl.DataFrame:
    """Every value written must fit its VR's length: new values cut to it (kept rows untouched)."""
    limit = pl.col("vr").replace_strict(_MAX_LENGTH, default=None, return_dtype=pl.Int64)
    return plan.with_columns(
        new_value=pl.when(limit.is_not_null() & (pl.col("action") != "K"))
        .then(pl.col("new_value").str.slice(0, limit))
        .otherwise(pl.col("new_value"))
    )


def _changed_values(
    plan: pl.DataFrame, elements: pl.DataFrame, key: ProjectKey
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """New values (and actions) of the rows that are neither kept nor removed, with their context.

    Returns the rows with ``new_value``, and, in the rare case of two cleaned rows with one
    (file, path), the cleaned values as a frame to join on those (else None).
    """
    action = pl.col("action")
    vr = pl.col("vr")
    value = pl.col("value")
    dummy = vr.replace_strict(DUMMIES, default=None, return_dtype=pl.String)
    zone = value.str.strip_chars(" ")  # a timezone offset, as written

    # U gives a new UID to whatever holds the UID, even a text VR a writer chose instead of
    # UI (its value may be anything); a VR that cannot hold 64 characters (SH, numbers,
    # bulk) cannot take one: removed below (fail closed)
    uid_rows = ((action == "U") & vr.is_in(_UID_VRS)) | ((action == "D") & (vr == "UI"))
    uid_where = plan.select(uid_rows.fill_null(False)).to_series()
    new_uid = pl.Series("_new_uid", [None] * plan.height, pl.String)
    if uid_where.any():
        # each UID row's new UID (map_uids hashes each distinct value once)
        new_uid = new_uid.scatter(uid_where.arg_true(), map_uids(plan.filter(uid_where)["value"], key))
    plan = plan.with_columns(new_uid)

    fields = plan.select("org", "cloud_study_id", "patient_token", "study_token")
    templates = pl.Series("_template_value", [None] * plan.height, pl.String)
    for template in plan.filter(action == "T")["template"].unique().drop_nulls().to_list():
        rendered = render_templates(template, fields)
        templates = pl.select(
            pl.when(pl.Series((plan["template"] == template).fill_null(False)))
            .then(rendered)
            .otherwise(templates)
        ).to_series()
    plan = plan.with_columns(templates.alias("_template_value"))

    new_value = (
        pl.when(action == "K")
        .then(value)
        .when(action == "X")
        .then(pl.lit(None, pl.String))
        .when(action == "Z")
        .then(pl.lit(""))
        .when((action == "T") & vr.is_in(TEMPLATE_VRS))
        .then(pl.col("_template_value"))  # elsewhere (a date, a number): removed below
        .when(uid_rows)
        .then(pl.col("_new_uid"))
        .when(vr == "SQ")
        .then(value)  # U on a sequence: keep the container; the UIDs inside have their rows
        .when(action == "D")
        .then(
            pl.when(pl.col("keyword") == "PatientID")
            .then(pl.col("patient_token"))
            .otherwise(dummy)
        )
        .when((action == "C") & (vr == "DA"))
        .then(pl.col("_shifted"))
        .when((action == "C") & (vr == "DT"))
        .then(pl.col("_shifted"))
        .when((action == "C") & (vr == "TM"))
        .then(value)  # Retain Longitudinal Temporal Information: times of day are kept
        .when((action == "C") & (pl.col("tag") == _TIMEZONE))
        .then(pl.when(zone.str.contains(_OFFSET_SYNTAX)).then(zone))
        .when((action == "C") & vr.is_in(["PN", "AE"]))
        .then(dummy)
        .when((action == "C") & (vr == "AS"))
        .then(aggregated_age(value))
        .when((action == "C") & (pl.col("tag") // 65536 % 2 == 1))
        .then(value)
        .otherwise(pl.lit(None, pl.String))
    )
    # dates are shifted on the rows that need it only (when/then evaluates every branch
    # on every row); the shift is elementwise, so the values are the same
    offset = pl.col("date_offset_days")
    plan = plan.with_row_index("_plan_row")
    shifted = pl.concat(
        [
            plan.filter((action == "C") & (vr == "DA")).select("_plan_row", shift_da(value, offset).alias("_shifted")),
            plan.filter((action == "C") & (vr == "DT")).select("_plan_row", shift_dt(value, offset).alias("_shifted")),
        ]
    )
    plan = plan.join(shifted, on="_plan_row", how="left", maintain_order="left")
    plan = plan.with_columns(new_value=new_value).drop("_plan_row", "_shifted")
    # D on a bulk or unknown VR, C on something that cannot be cleaned: fail closed
    plan = plan.with_columns(
        action=pl.when(
            pl.col("new_value").is_null()
            & ~action.is_in(["X"])
            & ~_cleaned_text(action, vr)
            & (vr != "SQ")
            & ~(action == "K")
        )
        .then(pl.lit("X"))
        .otherwise(action)
    )
    # clean descriptors and free text: scrub the file's own identifiers, dates and IDs
    clean = _cleaned_text(pl.col("action"), vr)
    clean_where = plan.select(clean.fill_null(False)).to_series()
    rows = plan.filter(clean_where)
    cleaned_frame = None
    if rows.height:
        files = rows.select("file_id").unique()
        if files.height < elements.select(pl.col("file_id").n_unique()).item():
            elements = elements.join(files, on="file_id", how="semi")
        patterns = _identifier_patterns(elements)
        scrubbed = _scrub(
            rows.select("file_id", "tag_path", "value").iter_rows(), patterns, _charsets(elements), _name_scripts(elements)
        )
        cleaned = pl.Series("_clean", scrubbed, pl.String)
        if rows.select(pl.struct("file_id", "tag_path").is_duplicated().any()).item():
            cleaned_frame = rows.select("file_id", "tag_path").with_columns(cleaned)
        else:
            plan = plan.with_columns(plan["new_value"].scatter(clean_where.arg_true(), cleaned))
    return _fit_lengths(plan).drop("_new_uid", "_template_value"), cleaned_frame


def make_plan(
    scan: ScanResult,
    profile: Profile | str = "default",
    key: ProjectKey | None = None,
    *,
    org: str = "DICOMFRAME",
    date_shift: DateShift | None = None,
    pixel_clean: str = "auto",
) -> Plan:
    """Plan the de-identification of a scanned cohort, one row per element.

    Parameters
    ----------
    scan
        The result of :func:`dicomframe.scan`.
    profile
        A :class:`~dicomframe.profiles.Profile` or a preset name (``basic``,
        ``default``, ``research``, ``cloud-upload``) or a TOML file path.
    key
        The project key (``dicomframe keygen``); pseudonyms depend on it.
    org
        Organisation prefix for templates (``{org}``).
    date_shift
        Range of the keyed per-patient date offset (default −3650 … −30 days).
    pixel_clean
        ``auto``, ``rules`` or ``off`` (see :mod:`dicomframe.pixelclean`): what
        ``files.pixel_clean`` says will happen to each image's pixels
        (``rule:<name>``, ``ocr`` or null for untouched).

    Examples
    --------
    >>> import dicomframe as dcf
    >>> from dicomframe.keys import ProjectKey
    >>> from pydicom.data import get_testdata_file
    >>> scan = dcf.scan(get_testdata_file("CT_small.dcm"), progress=False)
    >>> plan = dcf.plan(scan, "default", ProjectKey.from_bytes(bytes(32)))
    >>> plan.table.filter(pl.col("keyword") == "PatientName")["action"].item()
    'Z'
    """
    if key is None:
        raise UserInputError("a project key is needed: create one with `dicomframe keygen KEYFILE`")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,32}", org):
        raise UserInputError(
            f"--org must be 1 to 32 letters, digits, '.', '_' or '-' (got {len(org)} characters)"
        )
    prof = profile if isinstance(profile, Profile) else Profile.load(profile)
    shift = date_shift or DateShift()
    instances = scan.instances
    context = _file_context(instances, key, shift, org)
    elements = scan.elements
    if not elements["file_id"].is_in(instances["file_id"].implode()).all():
        elements = elements.join(instances.select("file_id"), on="file_id", how="semi")
    elements = elements.with_row_index("_row")
    matched = _match_actions(elements, prof)
    decided = _private_and_unknown(matched, prof)
    if Option.CLEAN_STRUCTURED_CONTENT in prof.options:
        decided = _clean_structured_content(decided, prof)
    decided = _remove_inside_removed(_private_blocks(_removed_overlays(_repeated_elements(decided))))
    # a kept private value removed as malformed may leave its creator alone: that goes too
    table = _private_blocks(_malformed_removed(_new_values(decided, context, elements, key)))
    table = table.sort("_row").select(PLAN_COLUMNS)  # joins do not keep row order: restore it
    files = _files_table(table, context)
    overlays = embedded_overlays(elements)
    jobs = pixel_jobs(instances, prof.pixel_rules, pixel_clean, overlays, _trailing_bytes(instances))
    files = files.join(jobs, on="file_id", how="left")
    # images that pixel clean would have cleaned, left as they are (pixel_clean="off", or
    # "rules" with no device rule for them): said in the run's summary, so that burned-in
    # text is checked for (audit --ocr)
    at_risk = pl.Series([], dtype=pl.Int64)
    if pixel_clean != "auto":
        at_risk = pixel_jobs(instances, prof.pixel_rules, "auto", overlays)["file_id"]
        at_risk = at_risk.filter(~at_risk.is_in(jobs["file_id"].implode()))
    files = files.with_columns(pixel_uncleaned_at_risk=pl.col("file_id").is_in(at_risk.implode()))
    additions = {
        "method_codes": method_codes(prof),
        "method_text": _method_text(prof),
        "temporal": _temporal_flag(prof),
    }
    return Plan(table=table, files=files, profile=prof, org=org, key_id=key.key_id, additions=additions)


def _trailing_bytes(instances: pl.DataFrame) -> pl.Series:
    """``file_id`` of the native images whose Pixel Data value is longer than its frames (and
    their pad to even): the bytes after the last frame are no image, and may hide data."""
    from .phiaudit import bytes_after_last_frame
    from .rewrite import _NATIVE_SYNTAXES

    if "pixel_data_length" not in instances.columns or "transfer_syntax" not in instances.columns:
        return pl.Series("file_id", [], dtype=pl.Int64)
    native = pl.col("transfer_syntax").str.strip_chars(" \x00").is_in(list(_NATIVE_SYNTAXES))
    excess = bytes_after_last_frame(instances.columns)
    return instances.filter(native & (excess > 0).fill_null(False))["file_id"].cast(pl.Int64)


def _files_table(table: pl.DataFrame, context: pl.DataFrame) -> pl.DataFrame:
    def new(keyword: str, alias: str) -> pl.DataFrame:
        return (
            table.filter((pl.col("depth") == 0) & (pl.col("keyword") == keyword))
            .select("file_id", pl.col("new_value").alias(alias))
            .unique("file_id")
        )

    files = context
    for keyword, alias in [
        ("PatientID", "patient_id"),
        ("StudyInstanceUID", "study_uid"),
        ("SeriesInstanceUID", "series_uid"),
        ("SOPInstanceUID", "sop_uid"),
        ("AccessionNumber", "accession"),
        ("Modality", "modality"),
        ("SeriesDescription", "series_description"),
    ]:
        files = files.join(new(keyword, alias), on="file_id", how="left")
    return files


def _method_text(profile: Profile) -> str:
    options = ", ".join(o.meaning for o in sorted(profile.options, key=list(Option).index))
    text = f"dicomframe {__version__}; profile {profile.name}: PS3.15 Basic Profile"
    return (text + (f" + {options}" if options else ""))[:1024]


def _temporal_flag(profile: Profile) -> str:
    if Option.RETAIN_LONG_FULL_DATES in profile.options:
        return "UNMODIFIED"
    if Option.RETAIN_LONG_MODIFIED_DATES in profile.options:
        return "MODIFIED"
    return "REMOVED"
