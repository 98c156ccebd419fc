"""PHI leak checks over scanned output: the cheap gate run before a batch is committed.

The gate scans what was written (headers only) and looks for:

* ``original_identifier`` — an identifying value of the input (names, IDs,
  accession numbers, addresses, …: every changed value of an identifying
  attribute) inside any element value of the output, at any depth; a single word
  of a person's name inside the files of the patient it came from (its file, and
  files with the same original patient ID or study UID), where the cleaning of
  descriptors removes it: in other patients' files "Long" or "Head" is everyday
  text, such as "LONG AXIS". An original counts as a token of its own, not inside
  a longer word or number. A value the plan made itself — a new UID, a token, a
  dummy — is not searched: it is random, and holds an original only by chance; a
  number is a finding when it equals an original, not when its digits hold one.
  Each finding names the attributes of the input whose values it holds;
* ``original_uid`` — a UID of the input that the plan replaced, still present;
* ``private_tag`` — a private element that the profile does not keep.

Findings are a table; the evidence is masked (never printed in full).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import polars as pl

from .planner import (
    _IDENTIFYING,
    _TOKEN_END,
    _TOKEN_START,
    CJK,
    Plan,
    glued_names,
    joined_names,
    name_forms,
)
from .profiles import Option, safe_private_table

__all__ = ["FINDINGS_SCHEMA", "NUMBER_VRS", "equals_an_original", "findings_from", "gate", "holds_an_original", "mask"]

FINDINGS_SCHEMA = {
    "file_id": pl.Int64,
    "tag_path": pl.String,
    "keyword": pl.String,
    "vr": pl.String,
    "rule": pl.String,
    "severity": pl.String,
    "evidence": pl.String,
    "suggested_action": pl.String,
}

#: value representations of numbers (as the scan writes them: decimal text)
NUMBER_VRS = ("DS", "IS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV", "AT")
_MIN_LENGTH = 4  # shorter values (sex, short codes) match by chance
#: the patient's own identifiers: checked whatever the profile says about them
_PATIENT = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientBirthDate",
    "AccessionNumber",
    "MedicalRecordLocator",
)


def mask(value: pl.Expr) -> pl.Expr:
    """``"Doe^Jane"`` → ``"Do******"``: enough to recognise, not enough to read."""
    hidden = (value.str.len_chars().cast(pl.Int64) - 2).clip(0, 64)
    return pl.concat_str([value.str.slice(0, 2), pl.lit("*" * 64).str.slice(0, hidden)])


def findings_from(
    rows: pl.DataFrame, rule: str, severity: str, evidence: pl.Expr, action: str | pl.Expr
) -> pl.DataFrame:
    """Element rows → findings rows of one rule (the evidence expression should mask)."""
    return rows.select(
        "file_id",
        "tag_path",
        "keyword",
        "vr",
        pl.lit(rule).alias("rule"),
        pl.lit(severity).alias("severity"),
        evidence.alias("evidence"),
        (action if isinstance(action, pl.Expr) else pl.lit(action)).alias("suggested_action"),
    )


_WORD = r"[^\W\d_]+"  # a run of letters
#: a name part in the scripts written without spaces between words (:data:`CJK`) is two
#: characters or more ("太郎", "小東", "길동"), and is found inside a longer run of letters,
#: as such text is written ("山田太郎様")
_CJK = CJK
_CJK_MIN_LENGTH = 2


def _originals(plan: Plan, patients: pl.DataFrame) -> tuple[list[str], dict[str, set[str]], pl.DataFrame, list[str]]:
    """Whole identifying values and the attributes each came from (by its lower case), the
    words of person names (``patient``, ``word``, ``keyword``: the patient whose files they
    came from, and the attribute), and replaced instance UIDs of the input."""
    present = plan.table.select("file_id", "value", "action", "keyword", "vr").filter(  # the columns read below
        pl.col("value").is_not_null() & (pl.col("value") != "")
    )
    changed = present.filter(pl.col("action") != "K")
    # what the profile changes must not survive; the patient's own identifiers never may
    ident = pl.concat(
        [
            changed.filter(pl.col("keyword").is_in(_IDENTIFYING) | (pl.col("vr") == "PN")),
            present.filter(pl.col("keyword").is_in(_PATIENT)),
        ]
    )
    # a name of one word ("Long") is sought as a word, in its patient's files (below)
    one_word = (pl.col("vr") == "PN") & pl.col("value").str.strip_chars().str.contains(rf"^{_WORD}$")
    keyword = pl.col("keyword").fill_null("a private element")
    whole_rows = ident.filter(~one_word).select(pl.col("value").str.strip_chars(), keyword)
    whole_rows = whole_rows.filter(pl.col("value").str.len_chars() >= _MIN_LENGTH)
    whole = whole_rows["value"].unique().sort()
    # where each original came from (attribute names, never values): said in the findings
    came_from: dict[str, set[str]] = {}
    for value, name in whole_rows.unique().iter_rows():
        came_from.setdefault(value.lower(), set()).add(name)
    names = ident.filter(pl.col("vr") == "PN").select("file_id", keyword, "value")
    word = pl.col("word")
    # the words of each distinct name once (a patient's name stands in every file of the patient)
    lower = pl.col("value").str.to_lowercase()
    words = names.select("value").unique().select(
        "value",
        pl.concat_list(
            lower.str.extract_all(_WORD),
            # an ideographic or phonetic name written whole, family name then given name
            # without a space ("王^伟" written "王伟"): each part alone may be one character
            joined_names(lower),
            # a name part of several words typed as one ("O'Brien" as "obrien", "van der
            # Berg" as "vanderberg")
            glued_names(lower),
            # a name typed as one word ("bobdoe", "doejohn"); not with an initial ("jdoe"),
            # which Clean Descriptors scrubs: a short family name and an initial make everyday
            # words too ("long" of ONG^LI, "limb" of LIM^BOON), which a kept code meaning holds
            name_forms(lower, initials=False),
        ).alias("word"),
    )
    parts = (
        names.join(words, on="value")
        .explode("word")
        .filter(
            (word.str.len_chars() >= _MIN_LENGTH)
            | (word.str.contains(_CJK) & (word.str.len_chars() >= _CJK_MIN_LENGTH))
        )
        .join(patients, on="file_id", how="left")
        .select("patient", "word", "keyword")
        .unique()
    )
    uids = (
        changed.filter(pl.col("action").is_in(["U", "D"]) & (pl.col("vr") == "UI"))["value"]
        .unique()
        .drop_nulls()
    )
    uids = uids.filter(~uids.str.starts_with("1.2.840.10008.")).sort()  # DICOM's own UIDs
    return whole.to_list(), came_from, parts, uids.to_list()


def _patients(plan: Plan) -> pl.DataFrame:
    """``file_id`` → ``patient``, the keys that tie an input to its patient's other files: its
    original patient ID and study UID (when not empty), and the file itself. A file has up
    to three rows; files sharing a key are one patient's."""
    files = plan.files

    def key(column: str, label: str) -> pl.DataFrame:
        if column not in files.columns:
            return pl.DataFrame(schema={"file_id": files.schema["file_id"], "patient": pl.String})
        value = pl.col(column).cast(pl.String).fill_null("").str.strip_chars()
        return files.filter(value != "").select("file_id", pl.concat_str([pl.lit(label), value]).alias("patient"))

    own = files.select("file_id", pl.concat_str([pl.lit("file:"), pl.col("file_id").cast(pl.String)]).alias("patient"))
    return pl.concat([key("original_patient_id", "id:"), key("original_study_uid", "study:"), own])


def equals_an_original(column: str, originals: list[str], separator: str = "\\") -> pl.Expr:
    """Whether a part of the column (split at ``separator``, spaces aside) equals an original
    whole: how a number is compared (its digits hold a numeric ID by chance)."""
    return pl.col(column).str.split(separator).list.eval(pl.element().str.strip_chars().is_in(originals)).list.any()


@functools.lru_cache(maxsize=4096)
def _as_token(found: str) -> re.Pattern[str]:
    """``found`` as a token of its own: the rule Clean Descriptors scrubs by (see
    :data:`dicomframe.planner._TOKEN_START`). ``MRN1234567`` holds ``1234567``; ``71234567``
    and ``SUMMARY`` hold neither ``1234567`` nor ``MARY``: a longer number, a longer word."""
    return re.compile(f"{_TOKEN_START}{re.escape(found)}{_TOKEN_END}")


def holds_an_original(frame: pl.DataFrame, column: str, originals: list[str]) -> pl.Series:
    """Per row of ``frame``: whether ``column`` holds an original (ASCII case aside) as a token
    of its own (see :func:`_as_token`), not inside a longer word or number: a 4-digit
    patient ID is in ``1.2.276.0.7230010.3`` and ``20010925`` by chance, and that is no leak."""
    return _originals_held(frame.get_column(column), originals)[0]


def _originals_held(values: pl.Series, originals: list[str]) -> tuple[pl.Series, list[list[str]]]:
    """:func:`holds_an_original`, and for each row that does, the originals it holds (in lower case)."""
    candidate = values.str.contains_any(originals, ascii_case_insensitive=True).fill_null(False)
    at = candidate.arg_true()
    if at.len() == 0:
        return candidate, []
    held = values.gather(at)
    # the text that matched, as it is in the value (overlapping: "GE MEDICAL" and "MEDICAL")
    found = held.str.extract_many(originals, ascii_case_insensitive=True, overlapping=True)
    standing = [
        sorted({piece.lower() for piece in pieces if _as_token(piece).search(text)})
        for text, pieces in zip(held.to_list(), found.to_list(), strict=True)
    ]
    verdicts = pl.Series([bool(pieces) for pieces in standing], dtype=pl.Boolean)
    return candidate.scatter(at, verdicts), [pieces for pieces in standing if pieces]


def _holds_a_uid(uids: list[str]) -> Callable[[str], bool]:
    """A test of a value: whether it holds one of ``uids`` whole (not inside a longer UID)."""
    pattern = re.compile("|".join(rf"(?<![0-9.]){re.escape(uid)}(?!\.?[0-9])" for uid in uids))
    return lambda value: pattern.search(value) is not None


def _minted(plan: Plan) -> pl.Series:
    """The values the plan made without reading an original: new UIDs, tokens, dummies, templates."""
    made = pl.col("action").is_in(["U", "D", "T"]) & pl.col("new_value").is_not_null()
    return plan.table.select("action", "new_value").filter(made)["new_value"].unique()


def gate(output_elements: pl.DataFrame, plan: Plan, sources: pl.DataFrame | None = None) -> pl.DataFrame:
    """Findings of the cheap PHI checks on the written files' elements (empty when clean).

    Parameters
    ----------
    output_elements
        The elements table of a scan of the written batch.
    plan
        The plan the batch was written with (holds the original values).
    sources
        ``file_id`` (of ``output_elements``) → ``source`` (the ``file_id`` of the plan's
        input written there), to seek a name's words in the files of its patient only.
        Without it the two are taken to be the same numbers.
    """
    patients = _patients(plan)
    values, came_from, parts, uids = _originals(plan, patients)
    text = output_elements.filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
    findings = []
    if values or parts.height:
        # a value the plan made from the key (a new UID, a token) is a random string: it
        # holds an original only by chance (in a batch of 1,000 patients with 7-digit MRNs,
        # about one new 2.25 UID in 300 holds one of them), and such a match is no leak; an
        # original UID left in place is caught below
        minted = _minted(plan)
        searched = text.filter(~pl.col("value").is_in(minted.implode())) if minted.len() else text
        # date and time elements are compared by the audit (shifted or not), not as text:
        # a study date may equal a newborn's birth date
        searched = searched.filter(~pl.col("vr").is_in(["DA", "DT", "TM"]))
        hit = pl.repeat(False, searched.height, dtype=pl.Boolean, eager=True)
        # per row searched that holds originals: the attributes of the input they came from
        came: dict[int, set[str]] = {}
        if values:
            held, pieces = _originals_held(searched["value"], values)
            for at, found in zip(held.arg_true().to_list(), pieces, strict=True):
                came.setdefault(at, set()).update(*(came_from.get(piece, ()) for piece in found))
            hit = hit | held
        if parts.height:
            if sources is None:
                sources = searched.select("file_id", pl.col("file_id").alias("source")).unique()
            owners = sources.join(patients, left_on="source", right_on="file_id").select("file_id", "patient")
            searched = searched.with_row_index("_row")
            named = (
                searched.select("_row", "file_id", pl.col("value").str.to_lowercase().str.extract_all(_WORD).alias("word"))
                .explode("word")
                .join(owners, on="file_id")
                .join(parts, on=["patient", "word"])
                .select("_row", "keyword")
            )
            cjk = parts.filter(pl.col("word").str.contains(_CJK))
            if cjk.height:  # no spaces between words: a name part is sought inside the text
                inside = (
                    searched.filter(pl.col("value").str.contains(_CJK))
                    .select("_row", "file_id", pl.col("value").str.to_lowercase())
                    .join(owners, on="file_id")
                    .join(cjk, on="patient")
                    .filter(pl.col("value").str.contains(pl.col("word"), literal=True))
                    .select("_row", "keyword")
                )
                named = pl.concat([named, inside])
            named = named.unique()
            for at, name in named.iter_rows():
                came.setdefault(at, set()).add(f"{name} (a word)")
            hit = hit | searched["_row"].is_in(named["_row"].implode())
            searched = searched.drop("_row")
        at = hit.arg_true()
        said = pl.Series("_sources", [", ".join(sorted(came[i])) or "identifying values" for i in at.to_list()], dtype=pl.String)
        hits = searched[at].with_columns(said)
        # a number (DS 0.48828125, a slice position) holds a numeric ID's digits by chance:
        # a number is a leak when it is an original whole
        if hits.height and values:
            hits = hits.filter(~pl.col("vr").is_in(NUMBER_VRS) | equals_an_original("value", values))
        # the attributes of the input whose values are here: a patient's own are never kept; an
        # institution's or a device's, where its value is no identifier (a site named after
        # its scanner's maker), may be kept by a rule
        a_patients_own = pl.col("_sources").str.split(", ").list.eval(
            pl.element().str.strip_suffix(" (a word)").is_in(_PATIENT)
        ).list.any()
        action = (
            pl.when(a_patients_own)
            .then(pl.format("holds the input's {}: remove or clean this attribute (add a profile rule)", "_sources"))
            .otherwise(
                pl.format(
                    "holds the input's {}: remove or clean this attribute, or keep those attributes "
                    "where they identify no one (add a profile rule)",
                    "_sources",
                )
            )
        )
        findings.append(findings_from(hits, "original_identifier", "high", mask(pl.col("value")), action))
    if uids:
        # left in place, or quoted in any text (a protocol name, a code meaning that holds the
        # input's SOP Instance UID): a UID of its own, not part of a longer one
        hits = text.filter(
            pl.col("value").is_in(uids)
            | (~pl.col("vr").is_in(["UI", *NUMBER_VRS]) & pl.col("value").str.contains_any(uids))
        )
        if hits.height:
            hits = hits.filter(pl.col("value").map_elements(_holds_a_uid(uids), return_dtype=pl.Boolean))
        findings.append(
            findings_from(hits, "original_uid", "high", mask(pl.col("value")), "replace this UID (action U)")
        )
    private = output_elements.filter((pl.col("tag") // 65536) % 2 == 1)
    if private.height:
        if Option.RETAIN_SAFE_PRIVATE in plan.profile.options:
            safe = safe_private_table().select(
                "private_creator",
                pl.col("group").cast(pl.UInt32).alias("_g"),
                pl.col("element").cast(pl.UInt32).alias("_e"),
            )
            is_creator = (pl.col("tag") % 65536).is_between(0x10, 0xFF)
            private = private.with_columns(
                _g=(pl.col("tag") // 65536).cast(pl.UInt32), _e=(pl.col("tag") % 256).cast(pl.UInt32)
            ).join(safe, on=["private_creator", "_g", "_e"], how="anti")
            private = private.filter(~is_creator)
        findings.append(
            findings_from(
                private, "private_tag", "medium", pl.col("private_creator").fill_null("(no creator)"),
                "remove private tags not on the safe list",
            )
        )
    if not findings:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    return pl.concat(findings, how="vertical_relaxed").cast(FINDINGS_SCHEMA)  # type: ignore[arg-type]
