"""Where files come from: local paths, globs, lists and any fsspec URL.

Every byte dicomframe reads goes through here. Local paths use the operating
system directly (fastest); everything else (``s3://``, ``az://``, ``gs://``,
``memory://``, ``file://`` …) goes through fsspec.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .errors import MissingExtraError, SourceNotFoundError, StorageError, UserInputError

__all__ = ["FileRef", "Source", "open_reader", "resolve_source"]

_GLOB_CHARS = set("*?[")
_EXTRAS = {
    "s3": ("s3", "s3fs"),
    "s3a": ("s3", "s3fs"),
    "az": ("azure", "adlfs"),
    "abfs": ("azure", "adlfs"),
    "abfss": ("azure", "adlfs"),
    "gs": ("gcs", "gcsfs"),
    "gcs": ("gcs", "gcsfs"),
}


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file to read: a stable id, where it is, and its size in bytes."""

    file_id: int
    path: str
    size: int


@dataclass
class Source:
    """A resolved source: the filesystem (``None`` for local) and its files."""

    files: list[FileRef]
    fs: Any | None = None
    protocol: str = "file"
    root: str = ""

    @property
    def is_local(self) -> bool:
        return self.fs is None

    @property
    def base(self) -> str:
        """What every file's path starts with: the folder given (a folder source), else the
        folder all the files share; ``""`` when they share none.

        A path with this prefix taken off is the file's path relative to the source, as the
        vault records it (``original_relative_path``): ``"ct/1.dcm"`` for ``SRC/ct/1.dcm``.

        >>> Source([FileRef(0, "in/a/1.dcm", 1), FileRef(1, "in/b/2.dcm", 1)], root="in").base
        'in/'
        >>> Source([FileRef(0, "in/a/1.dcm", 1)], root="in/a/1.dcm").base
        'in/a/'
        """
        paths = [ref.path for ref in self.files]
        if not paths:
            return ""
        sep = os.sep if self.fs is None else "/"
        root = _without_file_scheme(self.root)
        if self.fs is not None and "://" in root:
            root = root.split("://", 1)[1]
        root = root.rstrip("/" + sep)
        if root and all(path.startswith(root + sep) for path in paths):
            return root + sep
        parents = {path.rsplit(sep, 1)[0] if sep in path else "" for path in paths}
        try:
            common = os.path.commonpath(sorted(parents)) if self.fs is None else _common_posix(parents)
        except ValueError:  # absolute and relative paths mixed
            return ""
        common = common.rstrip("/" + sep)
        return common + sep if common and all(path.startswith(common + sep) for path in paths) else ""

    @property
    def shares_memory_only(self) -> bool:
        """True when the files live in this process only (``memory://``)."""
        return self.protocol == "memory"


def _without_file_scheme(text: str) -> str:
    """A local path given as ``file://PATH`` (any case) as ``PATH``; anything else as is."""
    return text[7:] if text.lower().startswith("file://") else text


def _common_posix(folders: Iterable[str]) -> str:
    """The longest folder path every one of ``folders`` (``/``-separated) is in."""
    import posixpath

    return posixpath.commonpath(sorted(folders))


def _is_url(text: str) -> bool:
    return "://" in text


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _walk_local(root: str) -> Iterator[tuple[str, int]]:
    """Yield (path, size) of every file under ``root``, in a stable order."""
    stack = [root]
    seen: set[tuple[int, int]] = set()  # folders walked (a link back up is walked once)
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            # folder names may be patient names: the path is not printed
            depth = folder[len(root) :].count(os.sep)
            where = "the source folder" if folder == root else f"a folder {depth} level(s) below the source folder"
            raise StorageError(
                f"permission denied reading {where}: check that your user can read every folder under it "
                "(`find SRC -type d ! -readable` lists those it cannot)"
            ) from None
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    yield entry.path, entry.stat().st_size
                elif entry.is_symlink():
                    yield entry.path, 0  # a link to nothing: the scan reports it, never skipped in silence
            except OSError:
                yield entry.path, 0  # a link loop or an entry gone: the scan reports it
        stack.extend(reversed(subdirs))


def _local_files(src: str) -> list[tuple[str, int]]:
    if os.path.isdir(src):
        return list(_walk_local(src))
    if os.path.isfile(src):
        return [(src, os.path.getsize(src))]
    if _GLOB_CHARS & set(src):
        out: list[tuple[str, int]] = []
        for path in sorted(_glob.glob(src, recursive=True)):
            if os.path.isdir(path):
                out.extend(_walk_local(path))
            elif os.path.isfile(path):
                out.append((path, os.path.getsize(path)))
        if not out:
            raise SourceNotFoundError(f"no files match the pattern {src!r}")
        return out
    raise SourceNotFoundError(
        f"no such file or folder: {src!r}; check the path (scan takes a folder, a file, "
        "a glob such as 'studies/**/*.dcm' or a URL such as s3://bucket/prefix)"
    )


def get_filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(fs, path)`` for a URL, with a clear error for a missing back-end."""
    import fsspec

    protocol = _protocol(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError:
        extra, package = _EXTRAS.get(protocol, ("cloud", f"the fsspec back-end for {protocol}"))
        raise MissingExtraError(f"reading {protocol}:// URLs", extra, package) from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise UserInputError(
                f"unknown storage protocol {protocol!r} in {url!r}; use a local path or "
                "s3://, az://, gs://, memory://, file:// URLs"
            ) from None
        raise UserInputError(f"cannot use {url!r}: {exc}") from None
    return fs, path


def _remote_files(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, list[tuple[str, int]]]:
    from .apply import RETRY_ATTEMPTS, with_retries

    fs, path = get_filesystem(url, storage_options)
    protocol = _protocol(url)

    def listing() -> list[tuple[str, int]] | None:
        """The files at ``path`` (None: nothing there); transient faults propagate (retried)."""
        if _GLOB_CHARS & set(path):
            found = fs.glob(path, detail=True)
            items: list[tuple[str, int]] = []
            for name, info in sorted(found.items()):
                if info.get("type") == "directory":
                    items.extend(_find(fs, name))
                else:
                    items.append((name, int(info.get("size") or 0)))
            if not items:
                raise SourceNotFoundError(f"no objects match the pattern {url!r}")
            return items
        try:
            if fs.isdir(path):
                items = _find(fs, path)
                if not items:
                    raise SourceNotFoundError(f"{url!r} is an empty folder or prefix: nothing to scan")
                return items
            # fs.info, not fs.isfile: isfile answers False for any error, a dropped connection too
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type", "file") == "directory":
            return None
        return [(path, int(info.get("size") or 0))]

    try:
        # a listing is several requests (list, then stat): a few more attempts, as for the outputs
        found = with_retries(listing, url, "listing", attempts=2 * RETRY_ATTEMPTS)
    except (SourceNotFoundError, StorageError):
        raise
    except FileNotFoundError:
        found = None
    except PermissionError:
        raise StorageError(
            f"access denied to {url!r}: check the credentials and the permissions "
            "on the bucket or container"
        ) from None
    except Exception as exc:  # noqa: BLE001 - back-ends raise their own types (botocore, azure, aiohttp)
        raise StorageError(_storage_message(url, protocol, exc)) from None
    if found is not None:
        return fs, found
    raise SourceNotFoundError(
        f"nothing found at {url!r}: check the bucket or container name and the prefix"
    )


def _storage_message(url: str, protocol: str, exc: BaseException) -> str:
    name = type(exc).__name__
    hint = "check the URL, the credentials and that the service is reachable"
    if protocol.startswith("s3"):
        hint = (
            "check the bucket name, AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and, "
            "for an S3-compatible server, FSSPEC_S3_ENDPOINT_URL or AWS_ENDPOINT_URL"
        )
    elif protocol in ("az", "abfs", "abfss"):
        hint = "check the container name and AZURE_STORAGE_CONNECTION_STRING or account settings"
    elif protocol in ("gs", "gcs"):
        hint = "check the bucket name and GOOGLE_APPLICATION_CREDENTIALS"
    return f"cannot list {url!r} ({name}): {hint}"


def _find(fs: Any, path: str) -> list[tuple[str, int]]:
    found = fs.find(path, detail=True)
    return [
        (name, int(info.get("size") or 0))
        for name, info in sorted(found.items())
        if info.get("type", "file") != "directory"
    ]


def resolve_source(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
) -> Source:
    """Expand ``src`` into a sorted list of files with sizes.

    Parameters
    ----------
    src
        A folder (searched recursively), a file, a glob pattern, an fsspec URL,
        or a list of any of these (all local, or all on one filesystem).
    storage_options
        Passed to fsspec for URLs (credentials, endpoint, …).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> src = resolve_source(get_testdata_file("CT_small.dcm"))
    >>> len(src.files), src.files[0].file_id
    (1, 0)
    """
    items: list[str] = (
        [os.fspath(s) for s in cast("Sequence[str | os.PathLike[str]]", src)]
        if _is_list(src)
        else [os.fspath(cast("str | os.PathLike[str]", src))]
    )
    if not items:
        raise UserInputError("no source given: pass a folder, a file, a glob or a URL")
    urls = [s for s in items if _is_url(s) and not s.lower().startswith("file://")]
    if urls and len(urls) != len(items):
        raise UserInputError("mix of local paths and URLs: scan them separately")
    found: list[tuple[str, int]] = []
    fs = None
    protocol = "file"
    if urls:
        protocols = {_protocol(u) for u in urls}
        if len(protocols) > 1:
            raise UserInputError(f"sources on several storage systems ({sorted(protocols)}): scan them separately")
        protocol = protocols.pop()
        for url in urls:
            fs, files = _remote_files(url, storage_options)
            found.extend(files)
    else:
        for item in items:
            local = _without_file_scheme(item)
            found.extend(_local_files(local))
    seen: set[str] = set()
    unique: list[tuple[str, int]] = []
    for path, size in found:
        if path not in seen:
            seen.add(path)
            unique.append((path, size))
    refs = [FileRef(i, path, size) for i, (path, size) in enumerate(unique)]
    root = items[0] if len(items) == 1 else ""
    return Source(files=refs, fs=fs, protocol=protocol, root=root)


def _is_list(src: object) -> bool:
    return isinstance(src, Iterable) and not isinstance(src, str | bytes | os.PathLike)


def open_reader(fs: Any | None, ref: FileRef) -> Any:
    """Open a file for range reads (a context manager yielding a binary file)."""
    if fs is None:
        return open(ref.path, "rb")
    return fs.open(ref.path, "rb", block_size=256 * 1024, cache_type="readahead")

