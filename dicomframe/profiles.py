"""De-identification profiles: DICOM PS3.15 Annex E as tables you can read and join.

A :class:`Profile` is the Basic Application Level Confidentiality Profile
(PS3.15 Table E.1-1), a set of :class:`Option` columns of that table and an
ordered tuple of custom :class:`Rule` overrides. :meth:`Profile.table` resolves
it into **one action per row**; the de-identification engine joins that table
with the scan's ``elements`` table. The standard's tables are read at runtime
from the CSVs in ``dicomframe/standards/`` (edition and provenance in its
README); nothing here re-types them.

>>> p = Profile.preset("research")
>>> t = p.table()
>>> t.filter(t["keyword"] == "PatientAge").select("code", "action", "source").row(0)
('X', 'K', 'retain_patient_characteristics')

Actions
-------
One letter per element (:class:`Action`):

===  ==========================================================================
X    remove the attribute (a sequence with all its items)
Z    replace with a zero-length value
D    replace with a non-zero-length dummy value consistent with the VR; for IDs
     and names the engine puts a keyed pseudonym there
K    keep (a kept sequence still has its items de-identified)
C    clean: dates are shifted by the per-patient offset, descriptors and text
     are replaced with a cleaned value, an age of 90 years or more becomes
     ``090Y`` ("90 or older"); on the private attributes row it means
     "keep the safe private attributes" (see :func:`safe_private_table`)
U    replace the UID with its keyed, consistent pseudonym
T    dicomframe's own: fill a template with ``{org}``, ``{cloud_study_id}``,
     ``{patient_token}`` and ``{study_token}`` (custom rules and presets only)
===  ==========================================================================

Combined codes
--------------
The standard's combined codes let the attribute's Type in the instance's IOD
choose. We cannot know every IOD's Type, so :func:`resolve_code` picks the
alternative that never removes an attribute an IOD may require and never keeps
a value:

==========  =====  ============================================================
``X/Z``     ``Z``  a Type 2 attribute must stay present; empty is enough
``Z/D``     ``D``  a Type 1 attribute needs a value: a dummy
``X/D``     ``D``  idem
``X/Z/D``   ``D``  idem
``X/Z/U*``  ``U``  keep the reference sequence, replace the UIDs inside; the
                   other attributes inside get their own rows' actions
==========  =====  ============================================================

Options
-------
Resolution starts from the ``basic_profile`` column. For every chosen option
whose cell in a row is not blank, that cell replaces the action. When two
chosen options give different actions for one row, ``C`` beats ``K`` (cleaning
is safer than keeping); otherwise the first option in :class:`Option` order
wins. In 2026c option cells are only ``K`` or ``C``, and the conflicts are
Retain Device Identity (``K``) against Retain Longitudinal Temporal Information
with Modified Dates (``C``) on 11 calibration/manufacture dates of Table
E.1-1, and against Clean Descriptors (``C``) on the SR concept Equipment
Identification of Table E.3.4-1: ``C`` wins all of them. The two Retain
Longitudinal options exclude each other (:class:`ProfileError`).
The ``source`` column names the option that set each action (``basic`` when
none did, ``custom`` for a :class:`Rule`).

How the engine matches rows
---------------------------
Every row of :meth:`Profile.actions` carries ``mask`` and ``match``
(``UInt32``): it applies to an element whose ``tag & mask == match`` and, when
the row's ``private_creator`` is set, whose ``private_creator`` is equal.
Single-tag rows have ``mask = 0xFFFFFFFF`` (join them on ``tag``). Among the
rows that apply to an element the highest ``priority`` wins: pattern rows of
the standard 0, single-tag rows of the standard 1, custom rule *i* ``2 + i``
(so later rules win); rows of equal priority that apply to one element carry
the same action. The rows apply at every depth of a ``tag_path``. A custom rule
also overrides, in :meth:`Profile.table`, every standard row whose tags it
covers, so the table shows what will happen. Private-creator rows apply to
private data elements ``(gggg,xxee)`` (block ``xx`` 10–FF) only; a creator
element ``(gggg,00xx)`` is kept exactly when an element of its block is kept.
An element that no row applies to is one Table E.1-1 does not list; what
happens to it is the engine's policy, not the profile's.

Patterns: ``x`` stands for any hex digit, except that the parity of the group
is never a wildcard: an ``x`` in the group's last digit matches even groups
only. So ``(60xx,3000)`` matches overlay data in 6000–60FE (the standard's
overlay groups are 6000–601E) and never 6001–60FF, which are private groups;
write an odd group out (``(0019,xx10)``) or use a private-creator rule for
private elements. The private attributes row ``(gggg,eeee)`` has
``mask = match = 0x00010000`` (any odd group) and ``private = True``.
"""

from __future__ import annotations

import difflib
import html
import io
import os
import re
import string
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Final, TypeVar

import polars as pl
from pydicom.datadict import RepeatersDictionary  # type: ignore[attr-defined]

from .errors import DicomframeError, ProfileError, UserInputError
from .pixelclean import PixelRule
from .tags import KEYWORDS, TAGS_BY_KEYWORD, dictionary_frame, format_tag, parse_tag, vr_for

T = TypeVar("T")

__all__ = [
    "ACTION_DTYPE",
    "PRESETS",
    "TEMPLATE_FIELDS",
    "Action",
    "Option",
    "Profile",
    "Rule",
    "method_codes",
    "resolve_code",
    "safe_private_table",
    "structured_content_table",
]

# --------------------------------------------------------------------------- data files

_E11: Final = "ps315_table_E.1-1.csv"
_E34: Final = "ps315_table_E.3.4-1_clean_structured_content.csv"
_E310: Final = "ps315_table_E.3.10-1_safe_private.csv"
_CID7050: Final = "ps315_deidentification_method_codes.csv"


@cache
def _read_standard(name: str) -> pl.DataFrame:
    """One shipped CSV, every column a string, blank cells null."""
    resource = files(__package__ or "dicomframe") / "standards" / name
    try:
        data = resource.read_bytes()
    except FileNotFoundError:
        raise DicomframeError(
            f"dicomframe's standard table {name} is missing from the installation; "
            "reinstall dicomframe, or in a checkout run `python scripts/update_standards.py`"
        ) from None
    return pl.read_csv(io.BytesIO(data), infer_schema=False)


# --------------------------------------------------------------------------- actions


class Action(StrEnum):
    """One de-identification action (a letter of PS3.15 Table E.1-1a, or ``T``).

    Examples
    --------
    >>> Action.parse("k")
    <Action.KEEP: 'K'>
    >>> Action.CLEAN == "C"
    True
    """

    REMOVE = "X"
    ZERO = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    TEMPLATE = "T"

    @classmethod
    def parse(cls, value: str) -> Action:
        """An action from its letter (any case) or its member name (``"keep"``)."""
        if isinstance(value, Action):
            return value
        text = str(value).strip()
        for action in cls:
            if text.upper() == action.value or text.upper() == action.name:
                return action
        raise ProfileError(
            f"unknown action {value!r}: use one of "
            + ", ".join(f"{a.value} ({a.name.lower()})" for a in cls)
        )


#: polars dtype of every ``action`` column
ACTION_DTYPE: Final = pl.Enum([a.value for a in Action])

_RESOLUTION: Final[dict[str, Action]] = {
    "X": Action.REMOVE,
    "Z": Action.ZERO,
    "D": Action.DUMMY,
    "K": Action.KEEP,
    "C": Action.CLEAN,
    "U": Action.UID,
    "X/Z": Action.ZERO,
    "Z/D": Action.DUMMY,
    "X/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.UID,
}


def resolve_code(code: str) -> Action:
    """The single action dicomframe applies for a PS3.15 action code.

    Combined codes resolve to the alternative that keeps any attribute an IOD
    may require and never keeps a value (see the module docstring).

    Parameters
    ----------
    code
        A code as written in Table E.1-1 or E.3.4-1: ``X``, ``Z``, ``D``,
        ``K``, ``C``, ``U``, ``X/Z``, ``Z/D``, ``X/D``, ``X/Z/D`` or ``X/Z/U*``.

    Examples
    --------
    >>> resolve_code("X/Z"), resolve_code("X/Z/D"), resolve_code("X/Z/U*")
    (<Action.ZERO: 'Z'>, <Action.DUMMY: 'D'>, <Action.UID: 'U'>)
    """
    action = _RESOLUTION.get(code.strip().upper())
    if action is None:
        raise ProfileError(
            f"{code!r} is not a PS3.15 action code; expected one of {', '.join(_RESOLUTION)}"
        )
    return action


def _resolved(expr: pl.Expr) -> pl.Expr:
    """Vectorised :func:`resolve_code`; an unknown code fails loudly."""
    return expr.replace_strict(
        {k: v.value for k, v in _RESOLUTION.items()}, return_dtype=ACTION_DTYPE
    )


# --------------------------------------------------------------------------- options


@cache
def _method_code_rows() -> dict[str, tuple[str, str]]:
    """option column -> (code value, code meaning), from the CID 7050 CSV."""
    frame = _read_standard(_CID7050).filter(pl.col("option_column").is_not_null())
    return {
        col: (code, meaning)
        for col, code, meaning in frame.select(
            "option_column", "code_value", "code_meaning"
        ).iter_rows()
    }


def _normal_words(text: str) -> str:
    """Loose spelling -> canonical words: case, separators, 'option'/'with' ignored."""
    words = re.findall(r"[0-9a-z]+", text.lower())
    return "_".join(w for w in words if w not in {"option", "with"})


class Option(StrEnum):
    """The ten option columns of PS3.15 Table E.1-1, in the table's order.

    The value is the column name in ``ps315_table_E.1-1.csv``; ``code`` and
    ``meaning`` come from PS3.16 CID 7050 (transcribed, see the standards
    README).

    Examples
    --------
    >>> Option.parse("Retain UIDs") is Option.parse("retain-uids") is Option.RETAIN_UIDS
    True
    >>> Option.RETAIN_UIDS.code, Option.RETAIN_UIDS.meaning
    ('113110', 'Retain UIDs Option')
    """

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"

    @property
    def code(self) -> str:
        """CID 7050 code value (scheme ``DCM``) for De-identification Method Code Sequence."""
        return _method_code_rows()[self.value][0]

    @property
    def meaning(self) -> str:
        """CID 7050 code meaning, e.g. ``'Retain UIDs Option'``."""
        return _method_code_rows()[self.value][1]

    @classmethod
    def parse(cls, value: str | Option) -> Option:
        """An option from any usual spelling.

        Accepts the column name (``retain_uids``), dashes or spaces
        (``retain-uids``, ``Retain UIDs``), the code meaning (``Retain UIDs
        Option``) or the CID 7050 code value (``113110``).

        Raises
        ------
        ProfileError
            Naming the valid options.
        """
        if isinstance(value, Option):
            return value
        found = _option_aliases().get(_normal_words(str(value)))
        if found is None:
            raise ProfileError(
                f"unknown de-identification option {value!r}; valid options: "
                + ", ".join(o.value for o in cls)
            )
        return found


@cache
def _option_aliases() -> dict[str, Option]:
    aliases: dict[str, Option] = {}
    for option in Option:
        aliases[_normal_words(option.value)] = option
        aliases[_normal_words(option.meaning)] = option
        aliases[option.code] = option
    return aliases


def _parse_options(options: Iterable[Option | str]) -> frozenset[Option]:
    if isinstance(options, str):
        options = [options]
    chosen = frozenset(Option.parse(o) for o in options)
    dates = {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES}
    if dates <= chosen:
        raise ProfileError(
            "options retain_long_full_dates and retain_long_modified_dates exclude each other: "
            "keep full dates or shift them, not both"
        )
    return chosen


def _resolve_options(frame: pl.DataFrame, options: frozenset[Option]) -> pl.DataFrame:
    """Add ``source`` and ``action`` to a table with a ``code`` column and option columns.

    The first chosen option (in :class:`Option` order) with a cell sets the
    action, except that a ``K`` gives way to a ``C`` from another option.
    """
    chosen = [o.value for o in Option if o in options and o.value in frame.columns]
    first_cell = pl.coalesce(*(pl.col(c) for c in chosen), pl.lit(None, pl.String))
    first_source = pl.coalesce(
        *(pl.when(pl.col(c).is_not_null()).then(pl.lit(c)) for c in chosen), pl.lit("basic")
    )
    clean_source = pl.coalesce(
        *(pl.when(pl.col(c) == "C").then(pl.lit(c)) for c in chosen), pl.lit(None, pl.String)
    )
    source = (
        pl.when((first_cell == "K") & clean_source.is_not_null())
        .then(clean_source)
        .otherwise(first_source)
    )
    cell = pl.coalesce(
        *(pl.when(pl.col("source") == c).then(pl.col(c)) for c in chosen), pl.col("code")
    )
    return frame.with_columns(source=source).with_columns(action=_resolved(cell))


# --------------------------------------------------------------------------- tag patterns

_PRIVATE_BIT: Final = 0x00010000
_ALL: Final = 0xFFFFFFFF
_PRIVATE_PATTERN: Final = "(gggg,eeee)"
_PATTERN_RE: Final = re.compile(
    r"^\(?\s*([0-9A-FX]{4})\s*,?\s*([0-9A-FX]{4})\s*\)?$", re.IGNORECASE
)


def _parse_pattern(text: str) -> tuple[str, int, int]:
    """``'(60xx,3000)'`` -> (canonical text, mask, match).

    ``x`` is any hex digit, except in the group's last digit, where it means
    "even" (group parity, public versus private, is never a wildcard).
    ``(gggg,eeee)`` is the standard's "any private attribute" (odd group).
    """
    compact = re.sub(r"\s", "", text).lower()
    if compact == _PRIVATE_PATTERN:
        return _PRIVATE_PATTERN, _PRIVATE_BIT, _PRIVATE_BIT
    found = _PATTERN_RE.match(text.strip())
    if not found:
        raise ProfileError(
            f"tag pattern {text!r} is not (gggg,eeee) with hex digits or x wildcards; "
            "write it like (60xx,3000) or (0019,xx10)"
        )
    digits = (found[1] + found[2]).upper().replace("X", "x")
    mask = int("".join("0" if c == "x" else "F" for c in digits), 16)
    match = int(digits.replace("x", "0"), 16)
    if digits[3] == "x":
        mask |= _PRIVATE_BIT  # match bit is 0: even groups only
    return f"({digits[:4]},{digits[4:]})", mask, match


# --------------------------------------------------------------------------- E.1-1 base


def _keyword_from_name(name: pl.Expr) -> pl.Expr:
    """PS3.6's keyword convention: words capitalised and joined, ``'s`` and punctuation dropped.

    Used only for tags that pydicom's dictionary does not know yet; it
    reproduces 626 of the 627 keywords pydicom does know in E.1-1 (2026c).
    """
    words = (
        name.str.replace_all("'s ", " ", literal=True)
        .str.replace_all("(s)", "s", literal=True)
        .str.replace_all("'", "", literal=True)
        .str.extract_all(r"[0-9A-Za-z]+")
    )
    capitalised = pl.element().str.slice(0, 1).str.to_uppercase() + pl.element().str.slice(1)
    return words.list.eval(capitalised).list.join("")


_TABLE_SCHEMA: Final = pl.Schema(
    {
        "tag": pl.UInt32(),
        "pattern": pl.String(),
        "mask": pl.UInt32(),
        "match": pl.UInt32(),
        "private": pl.Boolean(),
        "private_creator": pl.String(),
        "keyword": pl.String(),
        "name": pl.String(),
        "retired": pl.Boolean(),
        "code": pl.String(),
        "action": ACTION_DTYPE,
        "source": pl.String(),
        "template": pl.String(),
        "priority": pl.UInt32(),
    }
)

_ACTIONS_COLUMNS: Final = (
    "tag",
    "pattern",
    "mask",
    "match",
    "private",
    "private_creator",
    "action",
    "template",
    "source",
    "priority",
)


def _is_private(mask: pl.Expr, match: pl.Expr) -> pl.Expr:
    return ((mask & _PRIVATE_BIT) != 0) & ((match & _PRIVATE_BIT) != 0)


@cache
def _e11_base() -> pl.DataFrame:
    """Table E.1-1 typed: tag/pattern/mask/match/keyword… plus the raw option columns."""
    raw = _read_standard(_E11)
    is_pattern = pl.col("tag").str.contains("(?i)[xg]")
    patterns = {p: _parse_pattern(p) for p in raw.filter(is_pattern)["tag"].unique()}
    tag = pl.when(~is_pattern).then(
        pl.col("tag").str.replace_all(r"[(),]", "").str.to_integer(base=16).cast(pl.UInt32)
    )
    pattern_mask = pl.col("tag").replace_strict(
        {p: m for p, (_, m, _) in patterns.items()}, default=None, return_dtype=pl.UInt32
    )
    pattern_match = pl.col("tag").replace_strict(
        {p: v for p, (_, _, v) in patterns.items()}, default=None, return_dtype=pl.UInt32
    )
    base = raw.select(
        tag=tag,
        pattern=pl.when(is_pattern).then(pl.col("tag")),
        mask=pl.when(is_pattern).then(pattern_mask).otherwise(pl.lit(_ALL, pl.UInt32)),
        match=pl.when(is_pattern).then(pattern_match).otherwise(tag),
        private_creator=pl.lit(None, pl.String),
        name=pl.col("attribute_name"),
        retired=pl.col("retired") == "Y",
        code=pl.col("basic_profile"),
        priority=pl.when(is_pattern).then(0).otherwise(1).cast(pl.UInt32),
        **{o.value: pl.col(o.value) for o in Option},
    )
    known = pl.col("tag").replace_strict(KEYWORDS, default=None, return_dtype=pl.String)
    return base.with_columns(
        private=_is_private(pl.col("mask"), pl.col("match")),
        keyword=pl.when(pl.col("tag").is_not_null()).then(
            pl.coalesce(known, _keyword_from_name(pl.col("name")))
        ),
    )


@cache
def _standard_keywords() -> dict[str, int]:
    """Keywords of E.1-1 tags that pydicom's dictionary does not know (newer than it)."""
    frame = _e11_base().filter(
        pl.col("keyword").is_not_null() & ~pl.col("keyword").is_in(list(TAGS_BY_KEYWORD))
    )
    return dict(frame.select("keyword", "tag").iter_rows())


@cache
def _repeater_patterns() -> dict[str, str]:
    """Keyword -> pattern of PS3.6's repeating-group attributes (``OverlayData`` -> ``(60xx,3000)``)."""
    return {
        entry[4]: f"({mask[:4]},{mask[4:]})"
        for mask, entry in RepeatersDictionary.items()
        if entry[4]
    }


def _tag_for_keyword(keyword: str) -> int:
    tag = TAGS_BY_KEYWORD.get(keyword)
    if tag is None:
        tag = _standard_keywords().get(keyword)
    if tag is None:
        repeating = _repeater_patterns().get(keyword)
        if repeating is not None:
            raise ProfileError(
                f"{keyword} is an attribute of a repeating group: select it with "
                f'tag_pattern = "{repeating}"'
            )
        known = list(TAGS_BY_KEYWORD) + list(_standard_keywords())
        close = difflib.get_close_matches(keyword, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ProfileError(
            f"unknown keyword {keyword!r}: {hint}keywords are PS3.6 keywords, case-sensitive "
            '(PatientName); or select the element by tag = "(gggg,eeee)"'
        )
    return tag


# --------------------------------------------------------------------------- rules

#: VRs a template's text (action ``T``) may be written in
TEMPLATE_VRS = ("LO", "SH", "PN", "ST", "LT", "UT", "UC")
#: placeholders a template (action ``T``) may use
TEMPLATE_FIELDS: Final = ("org", "cloud_study_id", "patient_token", "study_token")


def _check_template(template: str) -> None:
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ProfileError(
            f"template {template!r} is malformed ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    for _, field_name, spec, conversion in fields:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS:
            raise ProfileError(
                f"template {template!r} uses unknown placeholder {{{field_name}}}; "
                f"available: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            )
        if spec or conversion:
            raise ProfileError(
                f"template {template!r}: write the placeholder as {{{field_name}}}, "
                "without a format spec or conversion"
            )


@dataclass(frozen=True, init=False, repr=False)
class Rule:
    """A custom override: one selector, an action and, for ``T``, a template.

    Exactly one selector is given:

    - ``keyword``: a PS3.6 keyword (``"StudyDescription"``);
    - ``tag``: a 32-bit tag (``0x00081030``; strings such as ``"(0008,1030)"``
      are accepted and converted);
    - ``tag_pattern``: ``(gggg,eeee)`` with ``x`` wildcards, e.g.
      ``"(60xx,3000)"`` or ``"(0019,xx10)"`` (an ``x`` in the group's last
      digit matches even groups only);
    - ``private_creator``: elements in the blocks this creator reserves,
      optionally narrowed by ``group`` (odd) and ``element`` (the ``ee`` of
      ``(gggg,xxee)``, 0–255).

    Private-creator rules match private data elements (``(gggg,xxee)``, block
    ``xx`` 10–FF), not the creator elements ``(gggg,0010–00FF)`` themselves,
    which the engine keeps exactly when it keeps an element of their block.

    Examples
    --------
    >>> Rule(keyword="StudyDescription", action="K")
    Rule(keyword='StudyDescription', action='K')
    >>> Rule(private_creator="ACME 1.0", group=0x0019, element=0x10, action="K").mask == 0xFFFF00FF
    True
    >>> Rule(keyword="PatientName", action="T", template="Study^{cloud_study_id}").template
    'Study^{cloud_study_id}'
    """

    keyword: str | None
    tag: int | None
    tag_pattern: str | None
    private_creator: str | None
    group: int | None
    element: int | None
    action: Action
    template: str | None

    def __init__(
        self,
        *,
        keyword: str | None = None,
        tag: int | str | None = None,
        tag_pattern: str | None = None,
        private_creator: str | None = None,
        group: int | None = None,
        element: int | None = None,
        action: Action | str,
        template: str | None = None,
    ) -> None:
        selectors = [
            name
            for name, value in (
                ("keyword", keyword),
                ("tag", tag),
                ("tag_pattern", tag_pattern),
                ("private_creator", private_creator),
            )
            if value is not None
        ]
        if len(selectors) != 1:
            given = f"got {', '.join(selectors)}" if selectors else "got none"
            raise ProfileError(
                "a rule needs exactly one selector among keyword, tag, tag_pattern and "
                f"private_creator ({given})"
            )
        parsed_action = Action.parse(action)
        if keyword is not None:
            if not isinstance(keyword, str):
                raise ProfileError(f"keyword must be a string, not {type(keyword).__name__}")
            keyword = keyword.strip()
            _tag_for_keyword(keyword)
        parsed_tag = None
        if tag is not None:
            try:
                parsed_tag = parse_tag(tag)
            except UserInputError as exc:
                raise ProfileError(str(exc)) from None
        if tag_pattern is not None:
            tag_pattern = _parse_pattern(str(tag_pattern))[0]
        if private_creator is not None:
            creator = str(private_creator).strip()
            if not creator or len(creator) > 64:
                raise ProfileError(
                    f"private_creator {private_creator!r} must be 1 to 64 characters "
                    "(a private creator is an LO value)"
                )
            private_creator = creator
        elif group is not None or element is not None:
            raise ProfileError(
                "group and element narrow a private_creator rule; for a public element use "
                'tag = "(gggg,eeee)" or tag_pattern'
            )
        if group is not None and not (
            isinstance(group, int) and 0x0009 <= group <= 0xFFFD and group & 1
        ):
            raise ProfileError(
                f"group {group!r} is not a private group: give an odd group 0x0009–0xFFFD"
            )
        if element is not None and not (isinstance(element, int) and 0 <= element <= 0xFF):
            raise ProfileError(
                f"element {element!r} must be the low byte ee of (gggg,xxee): 0x00–0xFF"
            )
        if parsed_action is Action.TEMPLATE:
            if not template:
                raise ProfileError(
                    'action T needs a template, e.g. template = "{org}-{cloud_study_id}"'
                )
            _check_template(template)
            known = _tag_for_keyword(keyword) if keyword is not None else parsed_tag
            vr = vr_for(known) if known is not None else None
            if vr is not None and not set(vr.split(" or ")) & set(TEMPLATE_VRS):
                raise ProfileError(
                    f"action T writes text, and {keyword or format_tag(known or 0)} is {vr}: a template "
                    f"can fill a text attribute ({', '.join(TEMPLATE_VRS)}) only; for this one use K, X, Z or D"
                )
        elif template is not None:
            raise ProfileError(
                f"a template is only used with action T (this rule's action is {parsed_action.value})"
            )
        for name, value in (
            ("keyword", keyword),
            ("tag", parsed_tag),
            ("tag_pattern", tag_pattern),
            ("private_creator", private_creator),
            ("group", group),
            ("element", element),
            ("action", parsed_action),
            ("template", template),
        ):
            object.__setattr__(self, name, value)

    @property
    def selector(self) -> str:
        """The selector as text, e.g. ``"keyword PatientName"`` (for messages and tables)."""
        if self.keyword is not None:
            return f"keyword {self.keyword}"
        if self.tag is not None:
            return f"tag {format_tag(self.tag)}"
        if self.tag_pattern is not None:
            return f"tag_pattern {self.tag_pattern}"
        return f"private_creator {self.private_creator!r} {self.pattern}"

    @property
    def resolved_tag(self) -> int | None:
        """The single tag this rule selects (keyword and tag rules), else ``None``."""
        if self.keyword is not None:
            return _tag_for_keyword(self.keyword)
        return self.tag

    @property
    def pattern(self) -> str | None:
        """Pattern text (pattern and private-creator rules), e.g. ``"(0019,xx10)"``."""
        if self.tag_pattern is not None:
            return self.tag_pattern
        if self.private_creator is None:
            return None
        group = "gggg" if self.group is None else f"{self.group:04X}"
        element = "xxxx" if self.element is None else f"xx{self.element:02X}"
        return f"({group},{element})"

    @property
    def mask(self) -> int:
        """Bits of a tag this rule looks at (``tag & mask == match``)."""
        if self.tag_pattern is not None:
            return _parse_pattern(self.tag_pattern)[1]
        if self.private_creator is not None:
            return (
                _PRIVATE_BIT
                | (0xFFFF0000 if self.group is not None else 0)
                | (0xFF if self.element is not None else 0)
            )
        return _ALL

    @property
    def match(self) -> int:
        """Value of ``tag & mask`` for a tag this rule selects."""
        if self.tag_pattern is not None:
            return _parse_pattern(self.tag_pattern)[2]
        if self.private_creator is not None:
            return _PRIVATE_BIT | ((self.group or 0) << 16) | (self.element or 0)
        tag = self.resolved_tag
        assert tag is not None
        return tag

    def __repr__(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name, value in (
                ("keyword", self.keyword),
                ("tag", None if self.tag is None else format_tag(self.tag)),
                ("tag_pattern", self.tag_pattern),
                ("private_creator", self.private_creator),
                ("group", None if self.group is None else f"{self.group:04X}"),
                ("element", None if self.element is None else f"{self.element:02X}"),
                ("action", self.action.value),
                ("template", self.template),
            )
            if value is not None
        ]
        return f"Rule({', '.join(parts)})"


_RULE_KEYS: Final = (
    "keyword",
    "tag",
    "tag_pattern",
    "private_creator",
    "group",
    "element",
    "action",
    "template",
)


def _hex_field(key: str, value: Any, digits: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(rf"(0x)?[0-9A-Fa-f]{{{digits}}}", value.strip()):
        return int(value.strip(), 16)
    example = "0019" if digits == 4 else "10"
    raise ProfileError(
        f'{key} must be an integer or {digits} hex digits (e.g. {key} = "{example}"), not {value!r}'
    )


def _file_entries(
    file: Path, data: dict[str, Any], section: str, what: str, parse: Callable[[Any], T]
) -> tuple[T, ...]:
    """The ``[[section]]`` entries of a profile file, each parsed; errors name the entry."""
    entries = data.get(section, [])
    if not isinstance(entries, list):
        raise ProfileError(f"{file}: write each {what} as [[{section}]] (double brackets)")
    parsed = []
    for n, entry in enumerate(entries, start=1):
        try:
            parsed.append(parse(entry))
        except ProfileError as exc:
            raise ProfileError(f"{file}: {what} {n}: {exc}") from None
    return tuple(parsed)


def _rule_from_mapping(entry: Mapping[str, Any]) -> Rule:
    """A :class:`Rule` from one ``[[rule]]`` table of a profile file."""
    unknown = sorted(set(entry) - set(_RULE_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _RULE_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileError(
            f"unknown key {unknown[0]!r}{hint}; a rule takes {', '.join(_RULE_KEYS)}"
        )
    for key in ("keyword", "tag_pattern", "private_creator", "action", "template"):
        if key in entry and not isinstance(entry[key], str):
            raise ProfileError(f"{key} must be a string, not {entry[key]!r}")
    if "action" not in entry:
        raise ProfileError(f"action is missing; add action = one of {', '.join(Action)}")
    tag = entry.get("tag")
    if tag is not None and (isinstance(tag, bool) or not isinstance(tag, int | str)):
        raise ProfileError(f'tag must be a string like "(0008,1030)", not {tag!r}')
    return Rule(
        keyword=entry.get("keyword"),
        tag=tag,
        tag_pattern=entry.get("tag_pattern"),
        private_creator=entry.get("private_creator"),
        group=None if "group" not in entry else _hex_field("group", entry["group"], 4),
        element=None if "element" not in entry else _hex_field("element", entry["element"], 2),
        action=Action.parse(entry["action"]),
        template=entry.get("template"),
    )


def _apply_rules(table: pl.DataFrame, rules: tuple[Rule, ...]) -> pl.DataFrame:
    """Fold custom rules into the resolved table; later rules win.

    A rule overrides every row whose tag set it covers (the row's mask holds
    the rule's mask bits and agrees on them, and the creator matches). Unless
    a row has exactly the rule's selector, the rule is also appended as a row
    of its own, so that it reaches elements the standard's table does not list.
    """
    names = dictionary_frame().select("tag", "keyword", "name", "retired")
    for i, rule in enumerate(rules):
        mask, match = pl.lit(rule.mask, pl.UInt32), pl.lit(rule.match, pl.UInt32)
        covers = ((pl.col("mask") & mask) == mask) & ((pl.col("match") & mask) == match)
        same = (pl.col("mask") == mask) & (pl.col("match") == match)
        if rule.private_creator is not None:
            covers &= (pl.col("private_creator") == rule.private_creator).fill_null(False)
            same &= (pl.col("private_creator") == rule.private_creator).fill_null(False)
        else:
            same &= pl.col("private_creator").is_null()
        table = table.with_columns(
            action=pl.when(covers)
            .then(pl.lit(rule.action.value, ACTION_DTYPE))
            .otherwise(pl.col("action")),
            template=pl.when(covers)
            .then(pl.lit(rule.template, pl.String))
            .otherwise(pl.col("template")),
            source=pl.when(covers).then(pl.lit("custom")).otherwise(pl.col("source")),
            priority=pl.when(covers).then(pl.lit(2 + i, pl.UInt32)).otherwise(pl.col("priority")),
        )
        if table.select(same.any()).item():
            continue
        tag = rule.resolved_tag
        row = pl.DataFrame(
            {
                "tag": [tag],
                "pattern": [rule.pattern],
                "mask": [rule.mask],
                "match": [rule.match],
                "private": [bool(rule.mask & rule.match & _PRIVATE_BIT)],
                "private_creator": [rule.private_creator],
                "code": [None],
                "action": [rule.action.value],
                "source": ["custom"],
                "template": [rule.template],
                "priority": [2 + i],
            },
            schema={
                k: v for k, v in _TABLE_SCHEMA.items() if k not in ("keyword", "name", "retired")
            },
        )
        row = row.join(names, on="tag", how="left")
        if tag is not None and rule.keyword is not None:
            row = row.with_columns(keyword=pl.lit(rule.keyword))
        table = pl.concat([table, row.select(table.columns)])
    return table


@lru_cache(maxsize=64)
def _profile_table(options: frozenset[Option], rules: tuple[Rule, ...]) -> pl.DataFrame:
    resolved = _resolve_options(_e11_base(), options).with_columns(template=pl.lit(None, pl.String))
    table = resolved.select(*(pl.col(c).cast(t) for c, t in _TABLE_SCHEMA.items()))
    return _apply_rules(table, rules)


# --------------------------------------------------------------------------- profiles

#: preset names accepted by :meth:`Profile.preset`
PRESETS: Final = ("basic", "default", "research", "cloud-upload")

_PRESET_DEFS: Final[dict[str, tuple[str, tuple[Option, ...], tuple[tuple[str, str], ...]]]] = {
    "basic": (
        "PS3.15 Basic Application Level Confidentiality Profile, no options",
        (),
        (),
    ),
    "default": (
        "Basic profile with dates shifted per patient (the CLI default)",
        (Option.RETAIN_LONG_MODIFIED_DATES,),
        (),
    ),
    "research": (
        (
            "Basic profile keeping shifted dates, patient characteristics and device identity, "
            "with descriptors cleaned"
        ),
        (
            Option.RETAIN_LONG_MODIFIED_DATES,
            Option.RETAIN_PATIENT_CHARACTERISTICS,
            Option.RETAIN_DEVICE_IDENTITY,
            Option.CLEAN_DESCRIPTORS,
        ),
        (),
    ),
    "cloud-upload": (
        (
            "Research-style profile for cloud upload: IDs and names from the organisation "
            "and cloud study id"
        ),
        (
            Option.RETAIN_LONG_MODIFIED_DATES,
            Option.RETAIN_DEVICE_IDENTITY,
            Option.CLEAN_DESCRIPTORS,
        ),
        (
            ("PatientID", "{org}-{cloud_study_id}"),
            ("PatientName", "CloudStudy^{cloud_study_id}"),
            ("AccessionNumber", "{cloud_study_id}"),
            ("InstitutionName", "{org}"),
        ),
    ),
}

_PROFILE_KEYS: Final = ("name", "base", "options", "description")


def _preset_key(name: str) -> str:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in _PRESET_DEFS:
        raise ProfileError(f"unknown profile preset {name!r}; presets: {', '.join(PRESETS)}")
    return key


@dataclass(frozen=True, repr=False)
class Profile:
    """A de-identification profile: PS3.15 basic profile + options + custom rules.

    Parameters
    ----------
    name
        A short name, written into logs and manifests.
    options
        Options of Table E.1-1 (:class:`Option` or any spelling
        :meth:`Option.parse` accepts).
    rules
        Custom overrides, applied after the options; later rules win.
    description
        Free text for people.

    Notes
    -----
    Profile files are TOML; :meth:`from_toml` reads::

        [profile]
        name = "my-study"
        base = "research"                   # a preset (optional, default "basic")
        options = ["retain_safe_private"]   # added to the base's options
        description = "..."

        [[rule]]
        keyword = "StudyDescription"   # or tag = "(0008,1030)" / "00081030",
        action = "K"                   # or tag_pattern = "(0019,xx10)",
                                       # or private_creator = "ACME 1.0"
                                       #    (+ group = "0019", element = "10")
        [[rule]]
        keyword = "PatientName"
        action = "T"
        template = "Study^{cloud_study_id}"

        [[pixel]]                      # per-device pixel clean (see dicomframe.pixelclean)
        name = "Acme Sono 5 banner"
        match = { Manufacturer = "ACME", ManufacturerModelName = "Sono 5", Rows = 480, Columns = 640 }
        regions = [[0, 0, 640, 48]]    # [left, top, width, height]

    The base preset's own rules come first, then the file's rules in order.
    Unknown keys are errors: a typo must never silently weaken a profile.

    Examples
    --------
    >>> p = Profile.preset("default").with_rules(Rule(keyword="StudyDescription", action="K"))
    >>> sorted(p.options)
    [<Option.RETAIN_LONG_MODIFIED_DATES: 'retain_long_modified_dates'>]
    >>> t = p.table()
    >>> t.filter(t["keyword"] == "StudyDescription")["action"].item()
    'K'
    """

    name: str = "basic"
    options: frozenset[Option] = frozenset()
    rules: tuple[Rule, ...] = ()
    description: str = ""
    #: per-device pixel clean rules (``[[pixel]]`` in a profile file; see :mod:`dicomframe.pixelclean`)
    pixel_rules: tuple[PixelRule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ProfileError(f"a profile needs a non-empty name, not {self.name!r}")
        object.__setattr__(self, "options", _parse_options(self.options))
        rules = tuple(self.rules)
        for n, rule in enumerate(rules, start=1):
            if not isinstance(rule, Rule):
                raise ProfileError(f"rule {n} is a {type(rule).__name__}, not a Rule")
        object.__setattr__(self, "rules", rules)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def basic(cls) -> Profile:
        """The Basic Application Level Confidentiality Profile without options.

        Examples
        --------
        >>> Profile.basic().options
        frozenset()
        """
        return cls.preset("basic")

    @classmethod
    def preset(cls, name: str) -> Profile:
        """One of the presets in :data:`PRESETS`.

        ``basic``: no options. ``default`` (the CLI's): + Retain Longitudinal
        Temporal Information with Modified Dates. ``research``: + Modified
        Dates, Patient Characteristics, Device Identity, Clean Descriptors.
        ``cloud-upload``: + Modified Dates, Device Identity, Clean Descriptors,
        and template rules PatientID ``{org}-{cloud_study_id}``, PatientName
        ``CloudStudy^{cloud_study_id}``, AccessionNumber ``{cloud_study_id}``,
        InstitutionName ``{org}``.

        Examples
        --------
        >>> [r.keyword for r in Profile.preset("cloud-upload").rules]
        ['PatientID', 'PatientName', 'AccessionNumber', 'InstitutionName']
        """
        key = _preset_key(name)
        description, options, templates = _PRESET_DEFS[key]
        rules = tuple(Rule(keyword=k, action=Action.TEMPLATE, template=t) for k, t in templates)
        return cls(name=key, options=frozenset(options), rules=rules, description=description)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile file (format in the class docstring).

        Raises
        ------
        ProfileError
            Naming the file, the rule number (1 = the first ``[[rule]]``) and
            what to fix.
        """
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProfileError(f"profile file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{file}: cannot read the profile file ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{file}: not valid TOML: {exc}") from None
        extra = sorted(set(data) - {"profile", "rule", "pixel"})
        if extra:
            raise ProfileError(
                f"{file}: unknown section or key {extra[0]!r}; a profile file has [profile], "
                "[[rule]] and [[pixel]] entries only"
            )
        head = data.get("profile", {})
        if not isinstance(head, dict):
            raise ProfileError(f"{file}: profile must be a [profile] table")
        unknown = sorted(set(head) - set(_PROFILE_KEYS))
        if unknown:
            raise ProfileError(
                f"{file}: [profile]: unknown key {unknown[0]!r}; allowed: {', '.join(_PROFILE_KEYS)}"
            )
        for key in ("name", "base", "description"):
            if key in head and not isinstance(head[key], str):
                raise ProfileError(f"{file}: [profile] {key} must be a string, not {head[key]!r}")
        options = head.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise ProfileError(
                f'{file}: [profile] options must be a list of strings, e.g. ["retain_uids"]'
            )
        try:
            base = cls.preset(head.get("base", "basic"))
            chosen = _parse_options([*base.options, *options])
        except ProfileError as exc:
            raise ProfileError(f"{file}: [profile]: {exc}") from None
        rules = _file_entries(file, data, "rule", "rule", _rule_from_mapping)
        pixel_rules = _file_entries(file, data, "pixel", "pixel rule", PixelRule.from_mapping)
        return cls(
            name=head.get("name", file.stem),
            options=chosen,
            rules=base.rules + rules,
            description=head.get("description", base.description),
            pixel_rules=pixel_rules,
        )

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> Profile:
        """A preset by name, or a profile file by path (``.toml``).

        Examples
        --------
        >>> Profile.load("research").name
        'research'
        """
        text = os.fspath(name_or_path)
        looks_like_path = text.endswith(".toml") or "/" in text or os.sep in text
        if isinstance(name_or_path, os.PathLike) or looks_like_path:
            return cls.from_toml(text)
        try:
            return cls.preset(text)
        except ProfileError:
            if Path(text).is_file():
                return cls.from_toml(text)
            raise ProfileError(
                f"unknown profile {text!r}: give a preset ({', '.join(PRESETS)}) "
                "or the path of a .toml profile file"
            ) from None

    def with_options(self, *options: Option | str) -> Profile:
        """A copy with ``options`` added."""
        return replace(self, options=self.options | _parse_options(options))

    def with_rules(self, *rules: Rule) -> Profile:
        """A copy with ``rules`` appended (they win over the existing ones)."""
        return replace(self, rules=self.rules + rules)

    # ----------------------------------------------------------------- tables

    def table(self) -> pl.DataFrame:
        """Table E.1-1 resolved for this profile: one row per standard row, then custom rows.

        Columns: ``tag`` (UInt32, null for pattern rows), ``pattern`` (the
        tag text of pattern rows: ``(50xx,xxxx)``, ``(60xx,3000)``,
        ``(60xx,4000)``, ``(gggg,eeee)``, and of custom pattern and creator
        rows), ``mask``/``match`` (UInt32; an element applies when ``tag &
        mask == match``), ``private`` (the row is about private elements),
        ``private_creator`` (creator rules), ``keyword``, ``name`` (as
        written in the standard), ``retired``, ``code`` (the
        ``basic_profile`` code as written), ``action`` (one letter, polars
        Enum), ``source`` (``basic``, an option name or ``custom``),
        ``template`` (for ``T``) and ``priority`` (see the module docstring).

        Keywords come from pydicom's dictionary; for the 25 tags of 2026c it
        does not know yet they are derived from the standard's name (PS3.6
        convention), so a scan's ``elements.keyword`` is null for those: join
        on ``tag``.

        Examples
        --------
        >>> t = Profile.basic().table()
        >>> t.height, t["action"].is_in(["X", "Z", "D", "K", "C", "U"]).all()
        (656, True)
        """
        return _profile_table(self.options, self.rules).clone()

    def actions(self) -> pl.DataFrame:
        """The columns the engine needs, one row per table row.

        ``tag, pattern, mask, match, private, private_creator, action,
        template, source, priority``. For an element, take the rows with
        ``tag & mask == match`` (and equal ``private_creator`` where the row
        has one) and keep the one of highest ``priority``. A ``C`` on the
        ``(gggg,eeee)`` row (Retain Safe Private Option) means: keep exactly the
        (creator, group, element) listed in :func:`safe_private_table`, remove
        every other private element.

        Examples
        --------
        >>> Profile.basic().actions().columns[:4]
        ['tag', 'pattern', 'mask', 'match']
        """
        return self.table().select(_ACTIONS_COLUMNS)

    def structured_content(self) -> pl.DataFrame:
        """Table E.3.4-1 resolved for this profile's options (see :func:`structured_content_table`)."""
        return structured_content_table(self.options)

    def counts(self) -> dict[str, int]:
        """Number of table rows per action letter, e.g. ``{'X': 416, …}``."""
        counts = self.table()["action"].value_counts(sort=True)
        return {str(a): int(n) for a, n in counts.iter_rows()}

    # ----------------------------------------------------------------- display

    def _option_list(self) -> list[str]:
        return [o.value for o in Option if o in self.options]

    def __repr__(self) -> str:
        counts = " ".join(f"{a}={n}" for a, n in self.counts().items())
        options = ", ".join(self._option_list()) or "none"
        return (
            f"Profile({self.name!r}, options=[{options}], rules={len(self.rules)}, "
            f"actions: {counts})"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        options = "".join(f"<li><code>{esc(o)}</code></li>" for o in self._option_list())
        rules = "".join(
            f"<li>{esc(r.selector)} &rarr; <code>{esc(r.action.value)}</code>"
            + (f" <code>{esc(r.template)}</code>" if r.template else "")
            + "</li>"
            for r in self.rules
        )
        counts = "".join(
            f"<tr><td><code>{esc(a)}</code></td><td>{n}</td></tr>" for a, n in self.counts().items()
        )
        return (
            f"<div><b>Profile {esc(self.name)}</b>"
            + (f"<br><i>{esc(self.description)}</i>" if self.description else "")
            + f"<br>options: <ul>{options or '<li>none (basic profile)</li>'}</ul>"
            + f"custom rules ({len(self.rules)}): <ul>{rules}</ul>"
            + f"<table><tr><th>action</th><th>rows</th></tr>{counts}</table></div>"
        )


# --------------------------------------------------------------------------- other tables


def safe_private_table() -> pl.DataFrame:
    """PS3.15 Table E.3.10-1 Safe Private Attributes (479 rows, 20 creators).

    Columns ``private_creator``, ``group`` (UInt16), ``element`` (UInt8, the
    ``ee`` of ``(gggg,xxee)``), ``vr``, ``vm``, ``meaning``. The key is
    (``private_creator``, ``group``, ``element``): with the Retain Safe
    Private Option the engine keeps exactly these private elements, whatever
    block ``xx`` the creator reserved in a file, and removes every other
    private element. ``vr`` is blank in 5 rows and ``OW/OB`` in 2, as written.

    Examples
    --------
    >>> s = safe_private_table()
    >>> s.height, s["private_creator"].n_unique()
    (479, 20)
    """
    raw = _read_standard(_E310)
    element = pl.col("data_element")
    return raw.select(
        "private_creator",
        group=element.str.slice(1, 4).str.to_integer(base=16).cast(pl.UInt16),
        element=element.str.slice(8, 2).str.to_integer(base=16).cast(pl.UInt8),
        vr="vr",
        vm="vm",
        meaning="meaning",
    )


def structured_content_table(options: Iterable[Option | str] = ()) -> pl.DataFrame:
    """PS3.15 Table E.3.4-1 (Clean Structured Content) resolved for ``options``.

    One row per SR concept name and value type: ``code_value``,
    ``coding_scheme_designator``, ``code_meaning``, ``value_type``,
    ``retired``, ``in_std_template``, ``code`` (basic profile, as written),
    ``action`` and ``source``, resolved like Table E.1-1. Concept names are
    unique by (code value, scheme, value type), not by code alone. The table
    has no column for the Retain Safe Private, Clean Structured Content and
    Clean Graphics options; it applies to SR content items when Clean
    Structured Content is chosen (otherwise Content Sequence itself is
    replaced, per Table E.1-1).

    Examples
    --------
    >>> t = structured_content_table(["retain_long_modified_dates"])
    >>> t.filter(t["code_meaning"] == "Acquisition Date")["action"].item()
    'C'
    """
    chosen = _parse_options(options)
    raw = _read_standard(_E34).with_columns(code=pl.col("basic_profile"))
    resolved = _resolve_options(raw, chosen)
    return resolved.select(
        "code_value",
        "coding_scheme_designator",
        "code_meaning",
        "value_type",
        retired=pl.col("retired") == "Y",
        in_std_template=pl.col("in_std_template") == "Y",
        code="code",
        action="action",
        source="source",
    )


def method_codes(profile: Profile) -> list[tuple[str, str, str]]:
    """Items of De-identification Method Code Sequence (0012,0064) for ``profile``.

    ``(code value, "DCM", code meaning)``: 113100 (basic profile) first, then
    each chosen option in :class:`Option` order. The codes are PS3.16 CID 7050,
    transcribed (see the standards README for the caveat on meanings).

    Examples
    --------
    >>> method_codes(Profile.preset("default"))
    [('113100', 'DCM', 'Basic Application Confidentiality Profile'), \
('113107', 'DCM', 'Retain Longitudinal Temporal Information Modified Dates Option')]
    """
    basic_code, basic_meaning = _method_code_rows()["basic_profile"]
    items = [(basic_code, "DCM", basic_meaning)]
    items += [(o.code, "DCM", o.meaning) for o in Option if o in profile.options]
    return items
