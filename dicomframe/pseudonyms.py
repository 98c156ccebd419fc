"""Keyed, repeatable pseudonyms: UIDs, short tokens, templates and date shifts.

Every pseudonym is a keyed hash (HMAC-SHA256 with a sub-key of the project
key), so the same original gives the same pseudonym in every run, batch and
machine without any shared state; only the key holder can recompute them.
The derivations below are frozen: changing one would break the consistency of
every cohort already shared, and the tests pin them with hard-coded values.

Column functions hash each *distinct* value once in Python and then map the
whole column with polars (``replace_strict``), so the cost grows with the
number of distinct values, not with the number of elements. Date shifting is a
polars expression that parses and shifts all the components of a batch at
once; :func:`shift_date_str` is its scalar twin, and the tests hold the two equal.

Normalisation shared by every function: leading and trailing DICOM padding
(spaces and NUL characters) is removed before hashing, so ``"1.2.3\\0"`` and
``"1.2.3"`` give the same pseudonym. A value that is empty after that stays
empty, and a null stays null.

>>> from dicomframe.keys import ProjectKey
>>> key = ProjectKey.from_bytes(b"\\0" * 32)
>>> new_uid("1.2.840.113619.2.55.3", key)
'2.25.28294879114008847069637476551821534847'
>>> patient_token("PAT-0001", key)
'7RSW7KC2WMER'
>>> shift_date_str("20240229", -30, "DA")
'20240130'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl

from .errors import UserInputError
from .keys import ProjectKey

__all__ = [
    "DUMMY_DA",
    "DUMMY_DT",
    "TOKEN_ALPHABET",
    "DateShift",
    "cloud_study_id",
    "date_offset_days",
    "map_cloud_study_ids",
    "map_patient_tokens",
    "map_tokens",
    "map_uids",
    "new_uid",
    "offsets_for",
    "patient_token",
    "render_template",
    "render_templates",
    "shift_da",
    "shift_date_str",
    "shift_dt",
    "token",
]

#: DICOM padding removed from both ends of a value before hashing (PS3.5 §6.2)
_PADDING = " \x00"
#: separator of the values of a multi-valued element
_MULTI = "\\"

#: Crockford base32 digits: no I, L, O or U, so tokens read aloud and type safely
TOKEN_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TOKEN_BITS_PER_CHAR = 5
#: a token uses at most the 255 leading bits of the 256-bit HMAC
_MAX_TOKEN_LENGTH = 256 // _TOKEN_BITS_PER_CHAR

#: what a DA value that is not a valid date becomes (never the original)
DUMMY_DA = "19000101"
#: what a DT value that is not a valid date-time becomes (never the original)
DUMMY_DT = "19000101000000"

#: placeholders a name/ID template may use
TEMPLATE_FIELDS = frozenset({"org", "cloud_study_id", "patient_token", "study_token"})

_UID_ROOT = "2.25."
_UID_PURPOSE = "uid"
_TOKEN_PURPOSE = "token"
_DATE_SHIFT_PURPOSE = "date-shift"

_MIN_YEAR = 1
_MAX_YEAR = 9999
#: a date offset beyond a century is a mistake, and would push dates out of range
_MAX_SHIFT_DAYS = 36_525


# --------------------------------------------------------------------- UIDs


def new_uid(uid: str, key: ProjectKey) -> str:
    """Keyed pseudonym of one UID: ``2.25.`` and a 128-bit decimal.

    The number is the first 16 bytes, big-endian, of
    HMAC-SHA256(``key.subkey("uid")``, UTF-8 of the stripped UID). The result
    is a valid DICOM UID: at most 44 characters, digits and dots only, and
    ``int`` → ``str`` never writes a leading zero (a hash of exactly zero
    would give the valid component ``"0"``). Any text is accepted, valid UID
    or not, so malformed originals are replaced too.

    Parameters
    ----------
    uid
        One UID (use :func:`map_uids` for multi-valued strings). Surrounding
        spaces and NUL padding are ignored; an empty UID gives ``""``.
    key
        The project key.

    Examples
    --------
    >>> from dicomframe.keys import ProjectKey
    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> new_uid("1.2.3", key) == new_uid("1.2.3\\0", key)
    True
    >>> new_uid("", key)
    ''
    """
    if _MULTI in uid:
        raise UserInputError(
            "new_uid takes a single UID but got a multi-valued string: use map_uids"
        )
    normalised = uid.strip(_PADDING)
    if not normalised:
        return ""
    digest = hmac.new(key.subkey(_UID_PURPOSE), normalised.encode("utf-8"), hashlib.sha256)
    return _UID_ROOT + str(int.from_bytes(digest.digest()[:16], "big"))


def map_uids(values: pl.Series, key: ProjectKey) -> pl.Series:
    """Replace every UID of a string column by :func:`new_uid`.

    Multi-valued strings (UIDs joined by a backslash) are mapped component by
    component; empty components and empty strings stay empty, nulls stay
    null. Each distinct UID is hashed once.

    Examples
    --------
    >>> import polars as pl
    >>> from dicomframe.keys import ProjectKey
    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> out = map_uids(pl.Series(["1.2.3", "1.2.3\\\\4.5", None]), key)
    >>> out[0] == new_uid("1.2.3", key) == out[1].split("\\\\")[0]
    True
    >>> out[2] is None
    True
    """
    return _map_distinct(values, lambda uid: new_uid(uid, key), multi_valued=True)


# ------------------------------------------------------------------- tokens


def token(value: str, key: ProjectKey, purpose: str, length: int = 12) -> str:
    """Short keyed token of a value, in uppercase Crockford base32.

    The token is the leading ``5 * length`` bits of
    HMAC-SHA256(``key.subkey("token")``, UTF-8 of ``purpose + "\\0" + value``)
    written with :data:`TOKEN_ALPHABET` (``0-9`` and ``A-Z`` without I, L, O,
    U). ``purpose`` separates uses, so a patient ID and a study UID that
    happen to be equal get unrelated tokens.

    Parameters
    ----------
    value
        The original; surrounding spaces and NULs are ignored, and an empty
        value gives ``""``.
    key
        The project key.
    purpose
        Non-empty label without NUL characters, e.g. ``"patient"``.
    length
        Number of characters, 1 to 51 (12 characters = 60 bits).

    Examples
    --------
    >>> from dicomframe.keys import ProjectKey
    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> token("PAT-0001", key, "patient", 8)
    '7RSW7KC2'
    """
    _check_token_args(purpose, length)
    normalised = value.strip(_PADDING)
    if not normalised:
        return ""
    message = f"{purpose}\0{normalised}".encode()
    digest = hmac.new(key.subkey(_TOKEN_PURPOSE), message, hashlib.sha256).digest()
    number = int.from_bytes(digest, "big") >> (256 - _TOKEN_BITS_PER_CHAR * length)
    chars = []
    for _ in range(length):
        chars.append(TOKEN_ALPHABET[number & 0b11111])
        number >>= _TOKEN_BITS_PER_CHAR
    return "".join(reversed(chars))


def map_tokens(values: pl.Series, key: ProjectKey, purpose: str, length: int = 12) -> pl.Series:
    """:func:`token` of every value of a column (each distinct value hashed once).

    Values are single-valued: a backslash is hashed as part of the value.
    Empty strings stay empty and nulls stay null.

    Examples
    --------
    >>> import polars as pl
    >>> from dicomframe.keys import ProjectKey
    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> map_tokens(pl.Series(["PAT-0001", "", None]), key, "patient", 8).to_list()
    ['7RSW7KC2', '', None]
    """
    _check_token_args(purpose, length)
    return _map_distinct(values, lambda v: token(v, key, purpose, length), multi_valued=False)


def cloud_study_id(study_instance_uid: str, key: ProjectKey) -> str:
    """The 12-character study pseudonym used in names and IDs (purpose ``"cloud-study"``).

    Examples
    --------
    >>> from dicomframe.keys import ProjectKey
    >>> cloud_study_id("1.2.3", ProjectKey.from_bytes(b"\\0" * 32))
    'YH9SBKRTSCFV'
    """
    return token(study_instance_uid, key, "cloud-study", 12)


def map_cloud_study_ids(study_instance_uids: pl.Series, key: ProjectKey) -> pl.Series:
    """:func:`cloud_study_id` of every value of a column."""
    return map_tokens(study_instance_uids, key, "cloud-study", 12)


def patient_token(patient_id: str, key: ProjectKey) -> str:
    """The 12-character patient pseudonym (purpose ``"patient"``).

    Examples
    --------
    >>> from dicomframe.keys import ProjectKey
    >>> patient_token("PAT-0001", ProjectKey.from_bytes(b"\\0" * 32))
    '7RSW7KC2WMER'
    """
    return token(patient_id, key, "patient", 12)


def map_patient_tokens(patient_ids: pl.Series, key: ProjectKey) -> pl.Series:
    """:func:`patient_token` of every value of a column."""
    return map_tokens(patient_ids, key, "patient", 12)


def _check_token_args(purpose: str, length: int) -> None:
    if not isinstance(purpose, str) or not purpose or "\0" in purpose:
        raise UserInputError("a token purpose must be a non-empty string without NUL characters")
    if isinstance(length, bool) or not isinstance(length, int):
        raise UserInputError("a token length must be an integer")
    if not 1 <= length <= _MAX_TOKEN_LENGTH:
        raise UserInputError(
            f"a token length must be between 1 and {_MAX_TOKEN_LENGTH}, got {length}"
        )


def _map_distinct(
    values: pl.Series, pseudonym: Callable[[str], str], *, multi_valued: bool
) -> pl.Series:
    """Map a string column through ``pseudonym``, calling it once per distinct value.

    ``pseudonym`` receives values already stripped of padding, and must map
    ``""`` to ``""``.
    """
    strings = _as_strings(values)
    split = multi_valued and bool(strings.str.contains(_MULTI, literal=True).any())
    if split:
        originals = strings.str.split(_MULTI).list.explode()
    else:
        originals = strings
    distinct = originals.str.strip_chars(_PADDING).unique().drop_nulls().to_list()
    mapping = {value: pseudonym(value) for value in distinct}
    if not mapping:
        return strings

    def replace(expr: pl.Expr) -> pl.Expr:
        return expr.str.strip_chars(_PADDING).replace_strict(mapping, return_dtype=pl.String)

    frame = strings.to_frame("v")
    if split:
        out = frame.select(
            pl.col("v").str.split(_MULTI).list.eval(replace(pl.element())).list.join(_MULTI)
        )
    else:
        out = frame.select(replace(pl.col("v")))
    return out.to_series().alias(strings.name)


def _as_strings(values: pl.Series) -> pl.Series:
    if not isinstance(values, pl.Series):
        raise UserInputError(f"expected a polars Series, got {type(values).__name__}")
    if values.dtype == pl.String:
        return values
    if values.dtype in (pl.Null, pl.Categorical, pl.Enum):
        return values.cast(pl.String)
    raise UserInputError(f"expected a column of strings, got dtype {values.dtype}")


# ---------------------------------------------------------------- templates


def _parse_template(template: str) -> list[tuple[str, str | None]]:
    """Split a template into ``(literal, field or None)`` pieces, checking every field."""
    if not isinstance(template, str):
        raise UserInputError(f"a template must be a string, got {type(template).__name__}")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError:
        raise UserInputError(
            f"template {template!r} has an unmatched brace; write a literal brace as {{{{ or }}}}"
        ) from None
    allowed = ", ".join(f"{{{name}}}" for name in sorted(TEMPLATE_FIELDS))
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in pieces:
        if name is not None:
            if name not in TEMPLATE_FIELDS:
                shown = name or "{}"
                raise UserInputError(
                    f"template {template!r} uses unknown placeholder {shown!r}; "
                    f"allowed placeholders are {allowed}"
                )
            if spec or conversion:
                raise UserInputError(
                    f"template {template!r}: placeholder {name!r} must be plain "
                    "(no format spec or conversion)"
                )
        out.append((literal, name))
    return out


def render_template(template: str, **fields: str) -> str:
    """Fill a name/ID template such as ``"{org}-{cloud_study_id}"``.

    Placeholders are ``{org}``, ``{cloud_study_id}``, ``{patient_token}`` and
    ``{study_token}``; ``{{`` and ``}}`` are literal braces.

    Raises
    ------
    UserInputError
        If the template uses an unknown placeholder or a field it needs is
        not given (the message names it), or an unknown field is passed.

    Examples
    --------
    >>> render_template("{org}-{cloud_study_id}", org="ACME", cloud_study_id="YH9SBKRTSCFV")
    'ACME-YH9SBKRTSCFV'
    >>> render_template("CloudStudy^{cloud_study_id}", cloud_study_id="YH9SBKRTSCFV")
    'CloudStudy^YH9SBKRTSCFV'
    """
    unknown = sorted(set(fields) - TEMPLATE_FIELDS)
    if unknown:
        raise UserInputError(
            f"unknown template field {unknown[0]!r}; fields are {sorted(TEMPLATE_FIELDS)}"
        )
    parts: list[str] = []
    for literal, name in _parse_template(template):
        parts.append(literal)
        if name is not None:
            if name not in fields:
                raise UserInputError(
                    f"template {template!r} needs field {name!r}, which was not given"
                )
            parts.append(str(fields[name]))
    return "".join(parts)


def render_templates(template: str, frame: pl.DataFrame) -> pl.Series:
    """Fill a template for every row of ``frame`` (one column per field).

    Built as one ``concat_str`` expression from the parsed template; a null
    field gives a null result. Columns the template does not use are ignored.

    Examples
    --------
    >>> import polars as pl
    >>> fields = pl.DataFrame({"org": ["ACME", "ACME"], "cloud_study_id": ["A1", "B2"]})
    >>> render_templates("{org}-{cloud_study_id}", fields).to_list()
    ['ACME-A1', 'ACME-B2']
    """
    pieces = _parse_template(template)
    exprs: list[pl.Expr] = []
    for literal, name in pieces:
        if literal:
            exprs.append(pl.lit(literal, dtype=pl.String))
        if name is not None:
            if name not in frame.columns:
                raise UserInputError(
                    f"template {template!r} needs column {name!r}, which the frame does not have"
                )
            exprs.append(pl.col(name).cast(pl.String))
    if not any(name is not None for _, name in pieces):
        text = "".join(literal for literal, _ in pieces)
        return pl.Series("value", [text] * frame.height, dtype=pl.String)
    return frame.select(pl.concat_str(exprs).alias("value")).to_series()


# --------------------------------------------------------------- date shift


@dataclass(frozen=True)
class DateShift:
    """Range of the per-patient date offset, in days, both ends included.

    Each patient gets one offset in ``[min_days, max_days]`` (Retain
    Longitudinal Temporal Information with Modified Dates, PS3.15): every
    date of the patient moves by the same number of days, so intervals are
    kept. An offset of 0 can occur only if the range includes 0; the default
    (-3650 to -30 days) never does. Bounds are limited to ±36525 days.

    Examples
    --------
    >>> DateShift(min_days=-365, max_days=-1).size
    365
    """

    min_days: int = -3650
    max_days: int = -30

    def __post_init__(self) -> None:
        for name in ("min_days", "max_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserInputError(f"DateShift.{name} must be an integer number of days")
            if abs(value) > _MAX_SHIFT_DAYS:
                raise UserInputError(
                    f"DateShift.{name} must be within ±{_MAX_SHIFT_DAYS} days, got {value}"
                )
        if self.min_days > self.max_days:
            raise UserInputError(
                f"DateShift.min_days ({self.min_days}) must not exceed max_days ({self.max_days})"
            )

    @property
    def size(self) -> int:
        """Number of possible offsets."""
        return self.max_days - self.min_days + 1


_DEFAULT_SHIFT = DateShift()


def date_offset_days(patient_id: str, key: ProjectKey, shift: DateShift = _DEFAULT_SHIFT) -> int:
    """The patient's date offset in days, keyed and repeatable.

    ``min_days + n mod size`` where ``n`` is the first 8 bytes, big-endian, of
    HMAC-SHA256(``key.subkey("date-shift")``, UTF-8 of the stripped patient
    ID); the bias of the modulo is below 2**-40. Patients without an ID
    (``""``) share one offset.

    Examples
    --------
    >>> from dicomframe.keys import ProjectKey
    >>> date_offset_days("PAT-0001", ProjectKey.from_bytes(b"\\0" * 32))
    -2918
    """
    if not isinstance(shift, DateShift):
        raise UserInputError(f"shift must be a DateShift, got {type(shift).__name__}")
    message = patient_id.strip(_PADDING).encode("utf-8")
    digest = hmac.new(key.subkey(_DATE_SHIFT_PURPOSE), message, hashlib.sha256).digest()
    return shift.min_days + int.from_bytes(digest[:8], "big") % shift.size


def offsets_for(
    patient_ids: pl.Series, key: ProjectKey, shift: DateShift = _DEFAULT_SHIFT
) -> pl.Series:
    """:func:`date_offset_days` of every patient ID of a column, as Int32.

    A null ID gives a null offset (and :func:`shift_da` then writes the
    dummy date). Each distinct ID is hashed once.

    Examples
    --------
    >>> import polars as pl
    >>> from dicomframe.keys import ProjectKey
    >>> key = ProjectKey.from_bytes(b"\\0" * 32)
    >>> offsets_for(pl.Series(["PAT-0001", None]), key).to_list()
    [-2918, None]
    """
    if not isinstance(shift, DateShift):
        raise UserInputError(f"shift must be a DateShift, got {type(shift).__name__}")
    ids = _as_strings(patient_ids)
    distinct = ids.unique().drop_nulls().to_list()
    mapping = {pid: date_offset_days(pid, key, shift) for pid in distinct}
    if not mapping:
        return pl.Series(ids.name, [None] * ids.len(), dtype=pl.Int32)
    return ids.replace_strict(mapping, return_dtype=pl.Int32)


# Value grammar (PS3.5 Table 6.2-1). [0-9], not \d: both regex engines would
# otherwise accept non-ASCII digits. Named groups work in Python and in polars.
_DA_DATE = r"(?:[0-9]{8}|[0-9]{4}\.[0-9]{2}\.[0-9]{2})"
# one date, or a query range with at least one end: D, D-, -D, D-D
_DA_COMPONENT = rf"(?:(?P<single>{_DA_DATE})|(?P<low>{_DA_DATE})?-(?P<high>{_DA_DATE})?)"
# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]; each part needs the one before it
_DT_COMPONENT = (
    r"(?P<year>[0-9]{4})(?:(?P<month>[0-9]{2})(?:(?P<day>[0-9]{2})(?:(?P<hour>[0-9]{2})"
    r"(?:(?P<minute>[0-9]{2})(?:(?P<second>[0-9]{2})(?P<fraction>\.[0-9]{1,6})?)?)?)?)?)?"
    r"(?P<utc>[+-][0-9]{4})?"
)
_DA_COMPONENT_RE = re.compile(_DA_COMPONENT)
_DT_COMPONENT_RE = re.compile(_DT_COMPONENT)
_MAX_HOUR, _MAX_MINUTE, _MAX_SECOND = 23, 59, 60  # 60: leap second, allowed by PS3.5
_MAX_OFFSET_HOURS = 14
_ROW = "__row"


def shift_da(value: pl.Expr, days: pl.Expr) -> pl.Expr:
    """Shift DA values (``YYYYMMDD``) by a number of days, as a polars expression.

    Accepts the legacy ``YYYY.MM.DD`` form, multi-valued strings (joined by
    backslash) and query ranges (``D-D``, ``D-``, ``-D``); each component is
    shifted and written ``YYYYMMDD``, joined again by backslash.

    Fails closed: a component that is not a valid calendar date, a date that
    would leave years 0001-9999 once shifted, and every component of a row
    whose offset is null become :data:`DUMMY_DA` (``19000101``), never the
    original. Empty components stay empty; a null value stays null.

    Parameters
    ----------
    value
        String column of DA values.
    days
        Integer column of offsets in days (see :func:`offsets_for`).

    Examples
    --------
    >>> import polars as pl
    >>> frame = pl.DataFrame({"v": ["20240229", "2024.03.01\\\\bad", None], "d": [-30, 1, 1]})
    >>> frame.select(shift_da(pl.col("v"), pl.col("d"))).to_series().to_list()
    ['20240130', '20240302\\\\19000101', None]
    """
    return _shift_expression(value, days, _shift_da_batch)


def shift_dt(value: pl.Expr, days: pl.Expr) -> pl.Expr:
    """Shift the date part of DT values by a number of days, as a polars expression.

    ``YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]``: the date moves by ``days``;
    the time of day, fraction and UTC offset are kept exactly as written.
    The output keeps the input's precision: a ``YYYY`` or ``YYYYMM`` value is
    read as the first day of that year or month, shifted, and written back
    with the same number of digits (so ``"2020"`` shifted by -30 days gives
    ``"2019"``). Multi-valued strings are shifted component by component.

    Fails closed: a component that is not a valid date-time (including DT
    query ranges, which are ambiguous with negative UTC offsets), a date that
    would leave years 0001-9999, and every component of a row whose offset is
    null become :data:`DUMMY_DT` (``19000101000000``), never the original.

    Examples
    --------
    >>> import polars as pl
    >>> frame = pl.DataFrame({"v": ["20240301083000.5+0100", "2024", "x"], "d": [-1, -1, -1]})
    >>> frame.select(shift_dt(pl.col("v"), pl.col("d"))).to_series().to_list()
    ['20240229083000.5+0100', '2023', '19000101000000']
    """
    return _shift_expression(value, days, _shift_dt_batch)


def _shift_expression(
    value: pl.Expr, days: pl.Expr, shift_batch: Callable[[pl.Series], pl.Series]
) -> pl.Expr:
    """Wrap a batch function of ``struct{value, days}`` as an elementwise expression.

    ``list.eval`` cannot see the offset column, and tricks that carry it in
    make polars evaluate per row; so the batch function explodes the
    components into a frame and shifts them all at once with ordinary
    column expressions. Elementwise, so it also runs in the streaming engine.
    """
    rows = pl.struct(value.cast(pl.String).alias("value"), days.cast(pl.Int32).alias("days"))
    shifted = rows.map_batches(shift_batch, return_dtype=pl.String, is_elementwise=True)
    name = value.meta.output_name(raise_if_undetermined=False)
    return shifted.alias(name) if name else shifted


def _shift_batch(batch: pl.Series, shift_parts: Callable[[pl.DataFrame], pl.Series]) -> pl.Series:
    """Split multi-values, shift every component with ``shift_parts``, join them back."""
    rows = batch.struct.unnest().with_row_index(_ROW)
    parts = (
        rows.select(_ROW, "days", pl.col("value").str.split(_MULTI).alias("component"))
        .explode("component")
        .with_columns(pl.col("component").str.strip_chars(_PADDING))
    )
    out = shift_parts(parts)
    if parts.height != rows.height:  # some rows are multi-valued
        out = (
            parts.select(_ROW, out.alias("out"))
            .group_by(_ROW, maintain_order=True)
            .agg(pl.col("out").str.join(_MULTI))
            .get_column("out")
        )
    return rows.select(pl.when(pl.col("value").is_not_null()).then(out)).to_series()


def _shift_da_batch(batch: pl.Series) -> pl.Series:
    return _shift_batch(batch, _shift_da_parts)


def _shift_dt_batch(batch: pl.Series) -> pl.Series:
    return _shift_batch(batch, _shift_dt_parts)


def _shift_date_text(yyyymmdd: pl.Expr, days: pl.Expr) -> pl.Expr:
    """``YYYYMMDD`` text → shifted ``YYYYMMDD`` text, or null if anything is invalid."""
    parsed = yyyymmdd.str.strptime(pl.Date, "%Y%m%d", strict=False)
    shifted = (parsed.cast(pl.Int32) + days).cast(pl.Date)
    valid = parsed.dt.year().is_between(_MIN_YEAR, _MAX_YEAR) & shifted.dt.year().is_between(
        _MIN_YEAR, _MAX_YEAR
    )
    return pl.when(valid).then(shifted.dt.strftime("%Y%m%d"))


def _shift_da_parts(parts: pl.DataFrame) -> pl.Series:
    """DA components (column ``component``, offsets in ``days``) → shifted text."""
    days, single, low, high = pl.col("days"), pl.col("single"), pl.col("low"), pl.col("high")
    groups = (
        parts.select(
            "component",
            "days",
            pl.col("component").str.extract_groups(f"^{_DA_COMPONENT}$").alias("groups"),
        )
        .unnest("groups")
        .with_columns(
            pl.col("single", "low", "high")
            .str.replace_all(".", "", literal=True)
            .name.suffix("_in")
        )
        .with_columns(
            _shift_date_text(pl.col(f"{name}_in"), days).alias(name)
            for name in ("single", "low", "high")
        )
    )
    valid_range = (
        pl.col("single_in").is_null()
        & (pl.col("low_in").is_not_null() | pl.col("high_in").is_not_null())
        & (pl.col("low_in").is_null() | low.is_not_null())
        & (pl.col("high_in").is_null() | high.is_not_null())
    )
    return groups.select(
        pl.when(pl.col("component") == "")
        .then(pl.lit(""))
        .when(single.is_not_null())
        .then(single)
        .when(valid_range)
        .then(pl.concat_str([low.fill_null(""), pl.lit("-"), high.fill_null("")]))
        .otherwise(pl.lit(DUMMY_DA))
    ).to_series()


def _shift_dt_parts(parts: pl.DataFrame) -> pl.Series:
    """DT components (column ``component``, offsets in ``days``) → shifted text."""

    def at_most(part: pl.Expr, limit: int) -> pl.Expr:
        return part.is_null() | (part.cast(pl.Int32) <= limit)

    year, month, day = pl.col("year"), pl.col("month"), pl.col("day")
    utc = pl.col("utc")
    groups = (
        parts.select(
            "component",
            "days",
            pl.col("component").str.extract_groups(f"^{_DT_COMPONENT}$").alias("groups"),
        )
        .unnest("groups")
        .with_columns(
            shifted=_shift_date_text(
                pl.concat_str([year, month.fill_null("01"), day.fill_null("01")]), pl.col("days")
            ),
            date_digits=(
                4 + month.is_not_null().cast(pl.Int32) * 2 + day.is_not_null().cast(pl.Int32) * 2
            ),
        )
    )
    valid = (
        year.is_not_null()
        & pl.col("shifted").is_not_null()
        & at_most(pl.col("hour"), _MAX_HOUR)
        & at_most(pl.col("minute"), _MAX_MINUTE)
        & at_most(pl.col("second"), _MAX_SECOND)
        & at_most(utc.str.slice(1, 2), _MAX_OFFSET_HOURS)
        & at_most(utc.str.slice(3, 2), _MAX_MINUTE)
    )
    rewritten = pl.concat_str(
        [
            pl.col("shifted").str.slice(0, pl.col("date_digits")),
            pl.col("component").str.slice(pl.col("date_digits")),
        ]
    )
    return groups.select(
        pl.when(pl.col("component") == "")
        .then(pl.lit(""))
        .when(valid)
        .then(rewritten)
        .otherwise(pl.lit(DUMMY_DT))
    ).to_series()


def shift_date_str(value: str, days: int, vr: str) -> str:
    """Shift one DA or DT value by ``days``: the scalar twin of :func:`shift_da`/:func:`shift_dt`.

    Same grammar, same fail-closed dummies, same output; the vectorised
    expressions are tested against this function.

    Examples
    --------
    >>> shift_date_str("20240229\\\\2024.03.01", 1, "DA")
    '20240301\\\\20240302'
    >>> shift_date_str("19991231-", 1, "DA")
    '20000101-'
    >>> shift_date_str("202403010830-0500", -1, "DT")
    '202402290830-0500'
    >>> shift_date_str("2024-03-01", 1, "DA")
    '19000101'
    """
    if isinstance(days, bool) or not isinstance(days, int):
        raise UserInputError("days must be an integer")
    if vr == "DA":
        shift_component = _shift_da_component_str
    elif vr == "DT":
        shift_component = _shift_dt_component_str
    else:
        raise UserInputError(f"only DA and DT values can be date-shifted, not VR {vr!r}")
    return _MULTI.join(
        shift_component(component.strip(_PADDING), days) for component in value.split(_MULTI)
    )


def _shift_date_digits(yyyymmdd: str, days: int) -> str | None:
    try:
        original = _dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
        shifted = original + _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"


def _shift_da_component_str(component: str, days: int) -> str:
    if component == "":
        return ""
    match = _DA_COMPONENT_RE.fullmatch(component)
    if match is None:
        return DUMMY_DA
    single, low, high = (
        None if text is None else text.replace(".", "")
        for text in match.group("single", "low", "high")
    )
    if single is not None:
        return _shift_date_digits(single, days) or DUMMY_DA
    if low is None and high is None:
        return DUMMY_DA
    sides = [_shift_date_digits(side, days) if side else "" for side in (low, high)]
    if any(side is None for side in sides):
        return DUMMY_DA
    return f"{sides[0]}-{sides[1]}"


def _shift_dt_component_str(component: str, days: int) -> str:
    if component == "":
        return ""
    match = _DT_COMPONENT_RE.fullmatch(component)
    if match is None:
        return DUMMY_DT
    year, month, day, hour, minute, second, utc_offset = match.group(
        "year", "month", "day", "hour", "minute", "second", "utc"
    )
    limits: Iterable[tuple[str | None, int]] = (
        (hour, _MAX_HOUR),
        (minute, _MAX_MINUTE),
        (second, _MAX_SECOND),
        (utc_offset[1:3] if utc_offset else None, _MAX_OFFSET_HOURS),
        (utc_offset[3:5] if utc_offset else None, _MAX_MINUTE),
    )
    if any(part is not None and int(part) > limit for part, limit in limits):
        return DUMMY_DT
    shifted = _shift_date_digits(year + (month or "01") + (day or "01"), days)
    if shifted is None:
        return DUMMY_DT
    date_digits = 4 + (2 if month else 0) + (2 if day else 0)
    return shifted[:date_digits] + component[date_digits:]
