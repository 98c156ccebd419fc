"""Local writes of pieces: one writev, short writes continued, temporary files cleaned up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dicomframe.apply
from dicomframe.apply import remove_tmp_dirs, write_atomic

PIECES = [b"head" * 100, memoryview(bytes(range(256)) * 600)[10:], b"", b"tail"]
CONTENT = b"".join(PIECES)


def test_pieces_are_written_in_order(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.dcm"
    write_atomic(None, str(target), PIECES)
    assert target.read_bytes() == CONTENT
    assert [p.name for p in target.parent.iterdir()] == ["out.dcm"]


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev

    def short(fd: int, buffers: list[memoryview]) -> int:
        first = memoryview(buffers[0])[:777]
        return real(fd, [first])

    monkeypatch.setattr(os, "writev", short)
    target = tmp_path / "out.dcm"
    write_atomic(None, str(target), PIECES)
    assert target.read_bytes() == CONTENT


def test_per_thread_temporary_folders_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "batch"
    target = root / "study" / "series" / "x.dcm"
    write_atomic(None, str(target), PIECES, tmp_root=str(root))
    assert target.read_bytes() == CONTENT
    assert any(p.name.startswith(dicomframe.apply.TMP_DIR_PREFIX) for p in root.iterdir())
    # a leftover of a killed run goes too
    folder = next(p for p in root.iterdir() if p.name.startswith(dicomframe.apply.TMP_DIR_PREFIX))
    (folder / ".y.dcm.1234abcd.tmp").write_bytes(b"half")
    remove_tmp_dirs(str(root))
    assert sorted(p.name for p in root.iterdir()) == ["study"]
    # and the next write in this thread makes its folder again
    write_atomic(None, str(root / "study" / "series" / "y.dcm"), [b"x"], tmp_root=str(root))
    assert (root / "study" / "series" / "y.dcm").read_bytes() == b"x"


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int, buffers: list[memoryview]) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", failing)
    target = tmp_path / "out.dcm"
    with pytest.raises(OSError):
        write_atomic(None, str(target), PIECES)
    assert list(tmp_path.iterdir()) == []


def test_threads_writing_into_new_folders_all_succeed(tmp_path: Path) -> None:
    """Outputs of one new folder written at once from several threads (the folder made by one of them)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "batch"

    def write(i: int) -> None:
        write_atomic(None, str(root / f"study{i % 3}" / f"series{i % 7}" / f"{i}.dcm"), [b"x" * i], tmp_root=str(root))

    for _ in range(5):
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(write, range(200)))
        assert len(list(root.rglob("*.dcm"))) == 200
        remove_tmp_dirs(str(root))
        import shutil

        shutil.rmtree(root)


def test_plan_rows_held_as_columns_are_the_rows_and_travel_to_worker_processes() -> None:
    """The writers' rows of one file, as slices of the plan's columns: same rows, same edits."""
    import pickle

    from dicomframe.apply import PlanRows, edits_for

    rows = [
        ("00100010", 0x00100010, "PN", "Z", ""),
        ("00080018", 0x00080018, "UI", "U", "2.25.1"),
        ("00081140", 0x00081140, "SQ", "K", None),
        ("00020003", 0x00020003, "UI", "K", "2.25.1"),
    ]
    held = PlanRows(*(list(c) for c in zip(*rows, strict=True)))
    assert list(held) == rows and held == rows and len(held) == 4 and held[1] == rows[1] and held[1:3] == rows[1:3]
    assert pickle.loads(pickle.dumps(held)) == held
    additions = {"method_text": "t", "method_codes": [("113100", "DCM", "Basic")], "temporal": "MODIFIED"}
    assert edits_for(held, additions) == edits_for(rows, additions)


def test_the_local_file_system_is_fsspecs_loaded_when_first_asked(tmp_path: Path) -> None:
    """A local batch uses os for its writes; fsspec answers the rest, the same way."""
    import pickle

    import fsspec

    from dicomframe.apply import LocalFS, _is_local

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"1234")
    fs = LocalFS()
    assert _is_local(fs) and fs.protocol == fsspec.filesystem("file").protocol
    assert fs.find(str(tmp_path), detail=True) == fsspec.filesystem("file").find(str(tmp_path), detail=True)
    assert fs.exists(str(tmp_path / "a" / "x.dcm")) and isinstance(pickle.loads(pickle.dumps(fs)), LocalFS)


def test_a_killed_runs_temporary_folder_alone_is_no_earlier_output(tmp_path: Path) -> None:
    """A batch folder holding only temporary folders has no outputs; what they hold goes at the end."""
    from dicomframe.keys import ProjectKey
    from dicomframe.pipeline import deidentify

    from .conftest import SAMPLES

    leftover = tmp_path / "out" / "b1" / f"{dicomframe.apply.TMP_DIR_PREFIX}1-2"
    leftover.mkdir(parents=True)
    (leftover / ".x.dcm.0000abcd.tmp").write_bytes(b"half")
    result = deidentify(
        SAMPLES / "cohort" / "DOE_JANE_MRN1234567", tmp_path / "out", key=ProjectKey.from_bytes(bytes(32)),
        vault=tmp_path / "v", batch_id="b1", progress=False,
    )  # fmt: skip
    assert result.ok and result.skipped == 0 and result.written > 0
    assert not list((tmp_path / "out" / "b1").rglob("*.tmp")) and not leftover.exists()
