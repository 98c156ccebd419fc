"""The ``.dicom`` namespace on polars and pandas frames.

Importing this module registers a ``dicom`` namespace on polars ``Expr``,
``Series`` and ``DataFrame`` and, when pandas is installed, a ``dicom``
accessor on pandas ``Series`` and ``DataFrame``. ``import dicomframe`` does not
import it (scan workers stay light); import it once in a notebook::

    >>> import polars as pl
    >>> import dicomframe.frames  # noqa: F401  (registers .dicom)
    >>> pl.Series("tag", [0x00100010, 0x00080060], dtype=pl.UInt32).dicom.tag_keyword().to_list()
    ['PatientName', 'Modality']

Series methods work on columns of the tables a scan produces:

- ``tag_keyword()``: ``UInt32`` tags → keywords (``None`` for private or unknown tags);
- ``format_tag()``: ``UInt32`` tags → ``"(gggg,eeee)"``;
- ``parse_pn()``: Person Name strings → a struct of the alphabetic group's
  ``family``, ``given``, ``middle``, ``prefix`` and ``suffix``.

DataFrame methods know which table they are given by its columns:

- instances table: ``summary()``, ``studies()``, ``devices()``;
- elements table: ``person_names()``, ``names_in_text()``;
- the files of any rows with a ``path`` column (a filtered instances table):
  ``paths()``, ``deidentify(dst, key=..., vault=...)`` and ``audit()``, which run
  :func:`dicomframe.deidentify` and :func:`dicomframe.audit` on exactly those files.

Every method is one dataframe expression (a tag dictionary look-up is done once
per distinct tag). The pandas accessor converts to polars through Arrow and
back to Arrow-backed pandas columns, so dates, times, lists and unsigned tags
keep their types.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from .errors import UserInputError
from .tags import format_tag as _format_one
from .tags import keyword_for

if TYPE_CHECKING:
    import pandas as pd

    from .pipeline import DeidentifyResult

__all__ = [
    "PN_COMPONENTS",
    "PN_DTYPE",
    "TEXT_VRS",
    "format_tag_expr",
    "parse_pn_expr",
    "tag_keyword_expr",
]

#: the five components of a Person Name group (PS3.5 6.2), in order
PN_COMPONENTS: Final = ("family", "given", "middle", "prefix", "suffix")
#: the struct :meth:`parse_pn` returns
PN_DTYPE: Final = pl.Struct([pl.Field(name, pl.String) for name in PN_COMPONENTS])
#: VRs holding free text in which names may be written
TEXT_VRS: Final = ("LO", "LT", "SH", "ST", "UT", "UC")

_INSTANCE_KEYS: Final = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
_ELEMENT_KEYS: Final = ("file_id", "tag_path", "tag", "keyword", "vr", "value")
_DEVICE_COLUMNS: Final = ("Manufacturer", "ManufacturerModelName", "StationName", "DeviceSerialNumber")


# --------------------------------------------------------------------------- expressions


def _keywords(tags: pl.Series) -> pl.Series:
    distinct = tags.unique().drop_nulls().to_list()
    mapping = {tag: keyword_for(tag) for tag in distinct}
    return tags.replace_strict(mapping, default=None, return_dtype=pl.String)


def _formatted(tags: pl.Series) -> pl.Series:
    distinct = tags.unique().drop_nulls().to_list()
    mapping = {tag: _format_one(tag) for tag in distinct}
    return tags.replace_strict(mapping, default=None, return_dtype=pl.String)


def tag_keyword_expr(tags: pl.Expr) -> pl.Expr:
    """Keyword of each tag in ``tags`` (``None`` for private and unknown tags).

    Parameters
    ----------
    tags
        An expression of integer tags (``UInt32`` in the elements table).

    Examples
    --------
    >>> df = pl.DataFrame({"tag": [0x00100010, 0x00091010]}, schema={"tag": pl.UInt32})
    >>> df.select(tag_keyword_expr(pl.col("tag")))["tag"].to_list()
    ['PatientName', None]
    """
    return tags.map_batches(_keywords, return_dtype=pl.String)


def format_tag_expr(tags: pl.Expr) -> pl.Expr:
    """Each tag as ``"(gggg,eeee)"``.

    Examples
    --------
    >>> df = pl.DataFrame({"tag": [0x7FE00010]}, schema={"tag": pl.UInt32})
    >>> df.select(format_tag_expr(pl.col("tag"))).item()
    '(7FE0,0010)'
    """
    return tags.map_batches(_formatted, return_dtype=pl.String)


def parse_pn_expr(names: pl.Expr) -> pl.Expr:
    """Split Person Name strings into the components of their alphabetic group.

    ``Family^Given^Middle^Prefix^Suffix`` is the alphabetic group, before the
    first ``=`` (ideographic and phonetic groups follow it and are ignored).
    Components are stripped of spaces; an empty or missing component is null.
    A multi-valued string (``A^B\\C^D``) is one value here: split and explode
    it first (``.str.split("\\\\").explode()``).

    Examples
    --------
    >>> df = pl.DataFrame({"pn": ["Doe^Jane^Marie^Dr.^", "Yamada^Tarou=山田^太郎", None]})
    >>> df.select(parse_pn_expr(pl.col("pn"))).unnest("pn").rows()
    [('Doe', 'Jane', 'Marie', 'Dr.', None), ('Yamada', 'Tarou', None, None, None), (None, None, None, None, None)]
    """
    alphabetic = names.str.split("=").list.first()
    parts = alphabetic.str.split("^")
    fields = []
    for index, name in enumerate(PN_COMPONENTS):
        part = parts.list.get(index, null_on_oob=True).str.strip_chars()
        fields.append(pl.when(part.str.len_chars() > 0).then(part).alias(name))
    try:
        name = names.meta.output_name()
    except pl.exceptions.ComputeError:
        name = "pn"
    return pl.struct(fields).alias(name)


# --------------------------------------------------------------------------- polars


def _require(frame: pl.DataFrame, columns: Sequence[str], table: str, method: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserInputError(
            f".dicom.{method}() needs the {table} table of a scan; this frame lacks "
            f"{', '.join(missing)} (use dicomframe.scan(...).{table})"
        )


@pl.api.register_expr_namespace("dicom")
class DicomExprNamespace:
    """``pl.col(...).dicom``: the series methods as lazy expressions.

    Examples
    --------
    >>> import dicomframe.frames  # noqa: F401
    >>> df = pl.DataFrame({"tag": [0x00080060]}, schema={"tag": pl.UInt32})
    >>> df.select(pl.col("tag").dicom.tag_keyword()).item()
    'Modality'
    """

    def __init__(self, expr: pl.Expr) -> None:
        self._expr = expr

    def tag_keyword(self) -> pl.Expr:
        """See :func:`tag_keyword_expr`."""
        return tag_keyword_expr(self._expr)

    def format_tag(self) -> pl.Expr:
        """See :func:`format_tag_expr`."""
        return format_tag_expr(self._expr)

    def parse_pn(self) -> pl.Expr:
        """See :func:`parse_pn_expr`."""
        return parse_pn_expr(self._expr)


@pl.api.register_series_namespace("dicom")
class DicomSeriesNamespace:
    """``series.dicom``: tag and Person Name helpers on a polars Series."""

    def __init__(self, series: pl.Series) -> None:
        self._s = series

    def _check(self, method: str, *dtypes: type[pl.DataType]) -> None:
        if not any(isinstance(self._s.dtype, d) for d in dtypes):
            wanted = " or ".join(d.__name__ for d in dtypes)
            raise UserInputError(
                f".dicom.{method}() needs a {wanted} series; {self._s.name!r} is {self._s.dtype}"
            )

    def tag_keyword(self) -> pl.Series:
        """Keywords of integer tags (``None`` for private and unknown tags).

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> s = pl.Series("tag", [0x00100020, 0x00291010, 0x60000010], dtype=pl.UInt32)
        >>> s.dicom.tag_keyword().to_list()
        ['PatientID', None, 'OverlayRows']
        """
        self._check("tag_keyword", pl.UInt32, pl.Int64, pl.UInt64, pl.Int32)
        return _keywords(self._s).alias(self._s.name)

    def format_tag(self) -> pl.Series:
        """Integer tags as ``"(gggg,eeee)"``.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> pl.Series("tag", [0x00100010], dtype=pl.UInt32).dicom.format_tag().to_list()
        ['(0010,0010)']
        """
        self._check("format_tag", pl.UInt32, pl.Int64, pl.UInt64, pl.Int32)
        return _formatted(self._s).alias(self._s.name)

    def parse_pn(self) -> pl.Series:
        """Person Name strings → struct of ``family``, ``given``, ``middle``, ``prefix``, ``suffix``.

        See :func:`parse_pn_expr` for the rules.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> s = pl.Series("PatientName", ["Müller^Jürgen^Heinz"])
        >>> s.dicom.parse_pn().struct.field("given").to_list()
        ['Jürgen']
        """
        self._check("parse_pn", pl.String)
        return self._s.to_frame().select(parse_pn_expr(pl.col(self._s.name))).to_series()


@pl.api.register_dataframe_namespace("dicom")
class DicomFrameNamespace:
    """``df.dicom``: cohort views of a scan's instances and elements tables."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self._df = frame

    # ---------------------------------------------------------------- instances

    def summary(self) -> pl.DataFrame:
        """One row: files, patients, studies, series, devices, modalities and the study dates.

        ``modalities`` lists each modality with its file count, most frequent
        first; ``devices`` counts distinct (manufacturer, model, station, serial
        number) among the columns present.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> df = pl.DataFrame({"PatientID": ["P1", "P1", "P2"], "StudyInstanceUID": ["1", "1", "2"],
        ...                    "SeriesInstanceUID": ["1.1", "1.2", "2.1"], "Modality": ["CT", "CT", "MR"]})
        >>> df.dicom.summary().select("files", "patients", "studies", "series", "modalities").row(0)
        (3, 2, 2, 3, ['CT 2', 'MR 1'])
        """
        _require(self._df, _INSTANCE_KEYS, "instances", "summary")
        df = self._df
        device_cols = [c for c in _DEVICE_COLUMNS if c in df.columns]
        modalities = (
            df.group_by("Modality")
            .len()
            .sort(["len", "Modality"], descending=[True, False], nulls_last=True)
            .select(pl.format("{} {}", pl.col("Modality").fill_null("?"), pl.col("len")))
            .to_series()
            .to_list()
        )
        aggs: list[pl.Expr] = [
            pl.len().alias("files"),
            pl.col("PatientID").n_unique().alias("patients"),
            pl.col("StudyInstanceUID").n_unique().alias("studies"),
            pl.col("SeriesInstanceUID").n_unique().alias("series"),
            (pl.struct(device_cols).n_unique() if device_cols else pl.lit(None, pl.UInt32))
            .cast(pl.UInt32)
            .alias("devices"),
        ]
        if "StudyDate" in df.columns:
            aggs += [
                pl.col("StudyDate").min().alias("first_study"),
                pl.col("StudyDate").max().alias("last_study"),
            ]
        out = df.select(aggs).with_columns(
            pl.col("files", "patients", "studies", "series").cast(pl.UInt32),
            pl.Series("modalities", [modalities], dtype=pl.List(pl.String)),
        )
        return out

    def studies(self) -> pl.DataFrame:
        """One row per study: patient, date, modalities, series and file counts.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> df = pl.DataFrame({"PatientID": ["P1", "P1"], "StudyInstanceUID": ["1", "1"],
        ...                    "SeriesInstanceUID": ["1.1", "1.2"], "Modality": ["CT", "SR"]})
        >>> df.dicom.studies().select("modalities", "series", "files").row(0)
        (['CT', 'SR'], 2, 2)
        """
        _require(self._df, _INSTANCE_KEYS, "instances", "studies")
        extra = [c for c in ("StudyDate", "StudyDescription") if c in self._df.columns]
        return (
            self._df.group_by("StudyInstanceUID", maintain_order=True)
            .agg(
                pl.col("PatientID").first(),
                *[pl.col(c).first() for c in extra],
                pl.col("Modality").drop_nulls().unique().sort().alias("modalities"),
                pl.col("SeriesInstanceUID").n_unique().cast(pl.UInt32).alias("series"),
                pl.len().cast(pl.UInt32).alias("files"),
            )
            .select("PatientID", "StudyInstanceUID", *extra, "modalities", "series", "files")
            .sort("PatientID", *extra[:1], nulls_last=True, maintain_order=True)
        )

    def devices(self) -> pl.DataFrame:
        """One row per device (manufacturer, model, station, serial number present): studies, files.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> df = pl.DataFrame({"PatientID": ["P1"], "StudyInstanceUID": ["1"], "SeriesInstanceUID": ["1.1"],
        ...                    "Modality": ["CT"], "Manufacturer": ["ACME"]})
        >>> df.dicom.devices().rows()
        [('ACME', ['CT'], 1, 1)]
        """
        _require(self._df, _INSTANCE_KEYS, "instances", "devices")
        cols = [c for c in _DEVICE_COLUMNS if c in self._df.columns]
        if not cols:
            raise UserInputError(
                ".dicom.devices() needs at least one of " + ", ".join(_DEVICE_COLUMNS)
            )
        return (
            self._df.group_by(cols)
            .agg(
                pl.col("Modality").drop_nulls().unique().sort().alias("modalities"),
                pl.col("StudyInstanceUID").n_unique().cast(pl.UInt32).alias("studies"),
                pl.len().cast(pl.UInt32).alias("files"),
            )
            .sort("files", *cols, descending=[True] + [False] * len(cols), nulls_last=True)
        )

    # ---------------------------------------------------------------- files

    def paths(self, protocol: str | None = None) -> list[str]:
        """The distinct files of these rows (column ``path``), in order, as
        :func:`dicomframe.deidentify` and :func:`dicomframe.audit` take them.

        ``protocol``: for a scan of an object store (``s3``, ``az``, ``gs``, ``memory`` …),
        whose ``path`` column holds the keys without it: each path becomes a URL again.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> pl.DataFrame({"path": ["bucket/a.dcm", "bucket/a.dcm", "bucket/b.dcm"]}).dicom.paths("s3")
        ['s3://bucket/a.dcm', 's3://bucket/b.dcm']
        """
        if "path" not in self._df.columns:
            raise UserInputError(
                ".dicom.paths() needs a path column: use the instances table of a scan "
                "(dicomframe.scan(...).instances), filtered as you like"
            )
        found = self._df.get_column("path").drop_nulls().unique(maintain_order=True).to_list()
        if protocol:
            scheme = protocol.removesuffix("://")
            found = [p if "://" in p else f"{scheme}://{p}" for p in found]
        return [str(p) for p in found]

    def _chosen(self, method: str, protocol: str | None) -> list[str]:
        found = self.paths(protocol)
        if not found:
            raise UserInputError(
                f".dicom.{method}() was given no rows: the filter left no file; nothing was done"
            )
        return found

    def deidentify(
        self,
        dst: str | os.PathLike[str],
        *,
        key: Any,
        vault: str | os.PathLike[str],
        profile: Any = "default",
        protocol: str | None = None,
        **options: Any,
    ) -> DeidentifyResult:
        """De-identify the files of these rows: a cohort chosen with dataframe filters.

        Takes a scan's instances table (or any frame with its ``path`` column) and runs
        :func:`dicomframe.deidentify` on exactly those files: ``DST/<batch_id>/``, the
        manifest, the vault mapping, the leak gate, as the CLI does. ``options`` are
        that function's (``org``, ``batch_id``, ``jobs``, ``dry_run``, ``progress`` …);
        ``protocol`` as :meth:`paths` takes it (``storage_options`` then go in ``options``).

        Examples
        --------
        >>> import dicomframe as dcf, dicomframe.frames                              # doctest: +SKIP
        >>> scan = dcf.scan("studies/")                                              # doctest: +SKIP
        >>> ct = scan.instances.filter(pl.col("Modality") == "CT")                   # doctest: +SKIP
        >>> ct.dicom.deidentify("out/", key="project.key", vault="vault/").written   # doctest: +SKIP
        70
        """
        from .pipeline import deidentify

        return deidentify(self._chosen("deidentify", protocol), dst, key=key, vault=vault, profile=profile, **options)

    def audit(self, *, protocol: str | None = None, **options: Any) -> pl.DataFrame:
        """Audit the files of these rows for PHI that survived: :func:`dicomframe.audit`
        on exactly those files (``vault``, ``key``, ``rules``, ``ocr`` … as it takes them).

        Returns the findings table (masked evidence), one row per finding.

        Examples
        --------
        >>> out = dcf.scan("out/<batch_id>/").instances                              # doctest: +SKIP
        >>> out.filter(pl.col("Modality") == "US").dicom.audit(ocr=True)            # doctest: +SKIP
        """
        from .phiaudit import audit

        return audit(self._chosen("audit", protocol), **options)

    # ---------------------------------------------------------------- elements

    def person_names(self) -> pl.DataFrame:
        """The PN elements at any depth, one row per name, with its components.

        A multi-valued element gives one row per value.

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> el = pl.DataFrame({"file_id": [0], "tag_path": ["00080090"], "tag": [0x00080090],
        ...                    "keyword": ["ReferringPhysicianName"], "vr": ["PN"],
        ...                    "value": ["Carter^Emily\\\\Brooks^Taylor"]})
        >>> el.dicom.person_names().select("value", "family").rows()
        [('Carter^Emily', 'Carter'), ('Brooks^Taylor', 'Brooks')]
        """
        _require(self._df, _ELEMENT_KEYS, "elements", "person_names")
        return (
            self._df.filter((pl.col("vr") == "PN") & pl.col("value").is_not_null())
            .select("file_id", "tag_path", "tag", "keyword", pl.col("value").str.split("\\"))
            .explode("value")
            .filter(pl.col("value").str.strip_chars().str.len_chars() > 0)
            .with_columns(parse_pn_expr(pl.col("value")).alias("_pn"))
            .unnest("_pn")
        )

    def names_in_text(self, *, min_length: int = 3, vrs: Sequence[str] = TEXT_VRS) -> pl.DataFrame:
        """Text elements that contain a person's name from a PN element of the same file.

        Every family and given name (at least ``min_length`` characters) of
        every PN element of a file is looked for, case-insensitively and as a
        literal, in the file's elements of VR ``vrs`` — descriptions,
        comments, SR text at any depth. One join, one vectorised ``contains``.

        Returns
        -------
        polars.DataFrame
            ``file_id``, ``tag_path``, ``keyword``, ``vr``, ``value`` (the text),
            ``name`` (the component found), ``component`` (``family`` or
            ``given``) and ``name_keyword`` (the PN attribute it came from).

        Examples
        --------
        >>> import dicomframe.frames  # noqa: F401
        >>> el = pl.DataFrame({"file_id": [0, 0], "tag_path": ["00100010", "00081030"],
        ...                    "tag": [0x00100010, 0x00081030], "keyword": ["PatientName", "StudyDescription"],
        ...                    "vr": ["PN", "LO"], "value": ["Doe^Jane", "CT head for DOE"]})
        >>> el.dicom.names_in_text().select("keyword", "name", "name_keyword").rows()
        [('StudyDescription', 'Doe', 'PatientName')]
        """
        _require(self._df, _ELEMENT_KEYS, "elements", "names_in_text")
        names = (
            self.person_names()
            .unpivot(index=["file_id", "keyword"], on=["family", "given"], variable_name="component", value_name="name")
            .filter(pl.col("name").str.len_chars() >= min_length)
            .rename({"keyword": "name_keyword"})
            .unique(["file_id", "name", "component"], keep="first", maintain_order=True)
        )
        texts = self._df.filter(pl.col("vr").is_in(list(vrs)) & pl.col("value").is_not_null()).select(
            "file_id", "tag_path", "keyword", "vr", "value"
        )
        return (
            texts.join(names, on="file_id", how="inner")
            .filter(
                pl.col("value")
                .str.to_lowercase()
                .str.contains(pl.col("name").str.to_lowercase(), literal=True)
            )
            .unique(["file_id", "tag_path", "name"], keep="first", maintain_order=True)
            .select("file_id", "tag_path", "keyword", "vr", "value", "name", "component", "name_keyword")
        )


# --------------------------------------------------------------------------- pandas


def _to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    return frame.to_pandas(use_pyarrow_extension_array=True)


def _register_pandas() -> None:
    import pandas as pd

    @pd.api.extensions.register_series_accessor("dicom")
    class DicomPandasSeriesAccessor:
        """``series.dicom`` on pandas: the polars series methods, index kept."""

        def __init__(self, series: pd.Series) -> None:
            self._s = series

        def _polars(self) -> pl.Series:
            name = self._s.name if isinstance(self._s.name, str) else "values"
            series = pl.from_pandas(self._s.rename(name).reset_index(drop=True))
            assert isinstance(series, pl.Series)
            return series

        def _back(self, values: pl.Series) -> pd.Series:
            out = values.to_pandas(use_pyarrow_extension_array=True)
            out.index = self._s.index
            out.name = self._s.name
            return out

        def tag_keyword(self) -> pd.Series:
            """Keywords of integer tags; see the polars ``Series.dicom.tag_keyword``."""
            return self._back(DicomSeriesNamespace(self._polars()).tag_keyword())

        def format_tag(self) -> pd.Series:
            """Tags as ``"(gggg,eeee)"``; see the polars ``Series.dicom.format_tag``."""
            return self._back(DicomSeriesNamespace(self._polars()).format_tag())

        def parse_pn(self) -> pd.DataFrame:
            """Person Names → a DataFrame with columns family, given, middle, prefix, suffix."""
            out = _to_pandas(DicomSeriesNamespace(self._polars()).parse_pn().struct.unnest())
            out.index = self._s.index
            return out

    @pd.api.extensions.register_dataframe_accessor("dicom")
    class DicomPandasFrameAccessor:
        """``df.dicom`` on pandas: the polars frame methods, Arrow-backed results."""

        def __init__(self, frame: pd.DataFrame) -> None:
            self._df = frame

        def _polars(self) -> pl.DataFrame:
            return pl.from_pandas(self._df)

        def summary(self) -> pd.DataFrame:
            """See the polars ``DataFrame.dicom.summary``."""
            return _to_pandas(DicomFrameNamespace(self._polars()).summary())

        def studies(self) -> pd.DataFrame:
            """See the polars ``DataFrame.dicom.studies``."""
            return _to_pandas(DicomFrameNamespace(self._polars()).studies())

        def devices(self) -> pd.DataFrame:
            """See the polars ``DataFrame.dicom.devices``."""
            return _to_pandas(DicomFrameNamespace(self._polars()).devices())

        def person_names(self) -> pd.DataFrame:
            """See the polars ``DataFrame.dicom.person_names``."""
            return _to_pandas(DicomFrameNamespace(self._polars()).person_names())

        def names_in_text(self, **kwargs: Any) -> pd.DataFrame:
            """See the polars ``DataFrame.dicom.names_in_text``."""
            return _to_pandas(DicomFrameNamespace(self._polars()).names_in_text(**kwargs))

        def _files(self) -> DicomFrameNamespace:
            if "path" not in self._df.columns:
                return DicomFrameNamespace(pl.DataFrame())  # paths() says what is missing
            return DicomFrameNamespace(pl.from_pandas(self._df[["path"]]))

        def paths(self, protocol: str | None = None) -> list[str]:
            """See the polars ``DataFrame.dicom.paths``."""
            return self._files().paths(protocol)

        def deidentify(self, dst: str | os.PathLike[str], **kwargs: Any) -> DeidentifyResult:
            """See the polars ``DataFrame.dicom.deidentify``."""
            return self._files().deidentify(dst, **kwargs)

        def audit(self, **kwargs: Any) -> pd.DataFrame:
            """See the polars ``DataFrame.dicom.audit``; the findings as an Arrow-backed frame."""
            return _to_pandas(self._files().audit(**kwargs))


def _pandas_available() -> bool:
    return "pandas" in sys.modules or importlib.util.find_spec("pandas") is not None


if _pandas_available():
    _register_pandas()
