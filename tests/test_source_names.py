"""Folders as hospitals name them: patient names in folder names, other encodings, links.

Whatever the names and links under SRC, the batch goes on, each odd entry becomes an
error row with a reason, and no folder name is printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import dicomframe as dcf
from dicomframe.errors import StorageError
from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify

from .conftest import SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))


def _one_good_file(folder: Path) -> Path:
    first = min((SAMPLES / "cohort").rglob("*.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(first, folder / "good.dcm"))


@pytest.mark.skipif(os.name != "posix", reason="byte file names are POSIX")
def test_a_name_in_another_encoding_is_an_error_row_and_the_rest_is_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    good = _one_good_file(src)
    odd = os.path.join(os.fsencode(src), "M\xfcller^Hans".encode("latin-1"))  # not UTF-8
    os.mkdir(odd)
    shutil.copy(good, os.path.join(odd, b"a.dcm"))
    seen: list[tuple[int, int]] = []
    scan = dcf.scan(src, progress=False, on_progress=lambda done, total: seen.append((done, total)))
    assert scan.instances.height == 1
    (row,) = scan.errors.iter_rows(named=True)
    assert row["kind"] == "unreadable" and "not valid UTF-8" in row["message"]
    assert seen[-1] == (2, 2)  # the file refused for its name is counted done too
    result = deidentify(src, tmp_path / "out", key=KEY, vault=tmp_path / "vault", batch_id="b", progress=False)
    assert result.written == 1 and [f["kind"] for f in result.failed] == ["unreadable"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_a_link_back_up_is_walked_once_and_a_link_to_nothing_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _one_good_file(src / "Smith^John")
    os.symlink("..", src / "Smith^John" / "latest")  # a loop
    os.symlink(src / "gone.dcm", src / "dangling.dcm")
    scan = dcf.scan(src, progress=False)
    assert scan.instances.height == 1
    (row,) = scan.errors.iter_rows(named=True)
    assert row["kind"] == "unreadable" and "symbolic link to nothing" in row["message"]


def test_an_unreadable_folder_is_named_by_its_depth_not_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _one_good_file(src / "Smith^John_MRN123")
    real = os.scandir

    def scandir(path: str) -> object:
        if "Smith" in str(path):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(StorageError) as info:
        dcf.scan(src, progress=False)
    assert "Smith" not in str(info.value) and "1 level(s) below the source folder" in str(info.value)


@pytest.mark.parametrize(
    ("root", "paths", "fs", "base"),
    [
        # a folder: paths relative to it, even when every file sits in one subfolder
        ("in", ["in/a/1.dcm", "in/a/2.dcm"], None, "in/"),
        ("in/", ["in/a/1.dcm"], None, "in/"),
        # one file: its folder
        ("in/a/1.dcm", ["in/a/1.dcm"], None, "in/a/"),
        # a glob or a list: the folder the files share
        ("", ["in/a/1.dcm", "in/b/2.dcm"], None, "in/"),
        ("", ["x/1.dcm", "/y/2.dcm"], None, ""),
        # an object store: the listing has no protocol
        ("s3://bucket/cohort", ["bucket/cohort/p1/1.dcm"], object(), "bucket/cohort/"),
        ("s3://bucket/cohort/*.dcm", ["bucket/cohort/1.dcm", "bucket/cohort/2.dcm"], object(), "bucket/cohort/"),
    ],
)
def test_the_base_of_a_source_makes_each_path_relative_to_src(root: str, paths: list[str], fs: object, base: str) -> None:
    from dicomframe.sources import FileRef, Source

    source = Source([FileRef(i, p, 1) for i, p in enumerate(paths)], fs=fs, root=root)
    assert source.base == base
    assert all(p.startswith(base) for p in paths)
