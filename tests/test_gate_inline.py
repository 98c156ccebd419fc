"""The leak gate on the bytes the workers wrote equals the gate on a read-back scan.

Local outputs are checked from the very bytes written (no second read of every
file); everything else is read back. Both must give the same findings, in the
same order, and the same batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import dicomframe.apply
from dicomframe.keys import ProjectKey
from dicomframe.pipeline import deidentify

from .conftest import CORPUS, SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))


def _run(src: Path, out: Path) -> Any:
    # the corpus's fake values stop the gate: its flagged outputs are kept, to compare them
    return deidentify(
        src, out / "dst", key=KEY, vault=out / "vault", batch_id="b1", jobs=2, progress=False, keep_flagged=True
    )


def _outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


@pytest.mark.parametrize("src", [CORPUS, SAMPLES / "cohort"], ids=["corpus", "cohort"])
def test_the_gate_on_written_bytes_equals_the_gate_on_a_read_back(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not src.exists():
        pytest.skip("corpus missing")
    inline = _run(src, tmp_path / "inline")
    with monkeypatch.context() as patch:
        patch.setattr(dicomframe.apply, "_output_rows", lambda pieces, size: None)  # read everything back
        read_back = _run(src, tmp_path / "read_back")
    assert inline.findings is not None and read_back.findings is not None
    assert_frame_equal(inline.findings, read_back.findings)
    assert inline.committed == read_back.committed
    # an instance present twice in the input (same SOP Instance UID, e.g. in two encodings)
    # is written once, from the first input in listing order: every output is the same
    assert _outputs(tmp_path / "inline" / "dst") == _outputs(tmp_path / "read_back" / "dst")
    # the writers' temporary folders are gone
    assert not [p for p in (tmp_path / "inline" / "dst").rglob(".tmp-*")]


def test_a_resumed_run_gates_the_outputs_already_there_without_reading_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output found already there holds the bytes just computed (sha256): the gate
    checks those, with the same findings as the first run, and reads nothing back."""
    import dicomframe.scanner

    if not CORPUS.exists():
        pytest.skip("corpus missing")
    first = _run(CORPUS, tmp_path)
    scanned: list[Any] = []
    scan = dicomframe.scanner.scan

    def spy(src: Any, **kwargs: Any) -> Any:
        scanned.append(src)
        return scan(src, **kwargs)

    monkeypatch.setattr(dicomframe.scanner, "scan", spy)
    again = _run(CORPUS, tmp_path)
    assert again.skipped == first.written > 0 and again.findings is not None and first.findings is not None
    assert first.findings.height  # the corpus's fake values stop the gate: something to compare
    assert_frame_equal(again.findings, first.findings)
    assert len(scanned) == 1  # the inputs; no output is read back


def test_an_output_written_from_several_inputs_is_read_back(tmp_path: Path) -> None:
    """Two copies of one instance write one output: the gate checks the file that is there, once."""
    src = tmp_path / "src"
    src.mkdir()
    data = (CORPUS / "pydicom" / "CT_small.dcm").read_bytes()
    (src / "a.dcm").write_bytes(data)
    (src / "b.dcm").write_bytes(data)
    result = _run(src, tmp_path / "out")
    assert result.written == 1 and result.duplicates == 1 and result.ok  # the first is written, once
    assert result.findings is not None
    outputs = result.findings["output"].unique().to_list() if result.findings.height else []
    assert len(outputs) <= 1
    assert len(list((tmp_path / "out" / "dst").rglob("*.dcm"))) == 1
    assert isinstance(result.findings, pl.DataFrame)


def test_files_made_ahead_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomframe.pipeline

    ahead = _run(SAMPLES / "cohort", tmp_path / "ahead")
    assert ahead.ok and ahead.written
    names = [p.name for p in (tmp_path / "ahead" / "dst").rglob("*")]
    assert not [n for n in names if n.startswith(".")]  # no temporary folder or file left
    with monkeypatch.context() as patch:
        patch.setattr(dicomframe.pipeline, "_make_tmp_files_ahead", lambda *args: None)
        without = _run(SAMPLES / "cohort", tmp_path / "without")
    assert without.ok
    assert _outputs(tmp_path / "ahead" / "dst") == _outputs(tmp_path / "without" / "dst")


def test_a_run_that_fails_after_the_scan_leaves_no_output_folder(tmp_path: Path) -> None:
    from dicomframe.errors import DicomframeError

    with pytest.raises(DicomframeError):
        deidentify(
            SAMPLES / "cohort", tmp_path / "dst", key=KEY, vault=tmp_path / "vault", batch_id="b1",
            profile="no-such-profile", jobs=2, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_local_outputs_appear_only_once_the_gate_has_passed_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """While the gate runs nothing is under an output's name; what it flags never is."""
    import dicomframe.pipeline

    if not CORPUS.exists():
        pytest.skip("corpus missing")
    dst = tmp_path / "dst"
    seen: list[list[str]] = []
    gate = dicomframe.pipeline._leak_gate

    def looking(*args: Any, **kwargs: Any) -> Any:
        seen.append([p.name for p in dst.rglob("*.dcm")])
        return gate(*args, **kwargs)

    monkeypatch.setattr(dicomframe.pipeline, "_leak_gate", looking)
    result = deidentify(CORPUS, dst, key=KEY, vault=tmp_path / "vault", batch_id="b1", jobs=jobs, progress=False)
    assert seen == [[]]
    assert result.findings is not None and result.findings.height and not result.committed  # the corpus's fake PHI
    flagged = set(result.findings["output"].drop_nulls().to_list())
    on_disk = {str(p.relative_to(dst / "b1")) for p in dst.rglob("*.dcm")}
    assert on_disk and on_disk.isdisjoint(flagged)
    assert on_disk == {uri.split("/b1/", 1)[1] for uri in result.outputs}
    assert result.removed == len(flagged)
    assert not [p for p in dst.rglob("*") if p.name.startswith(".")]  # no temporary file or folder left


def test_outputs_that_cannot_be_moved_into_place_stop_the_run_with_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomframe.errors import StorageError

    def refused(staged: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dicomframe.apply, "publish_staged", refused)
    with pytest.raises(StorageError, match="could not move the checked outputs into place.*re-run the same command"):
        _run(SAMPLES / "cohort", tmp_path)
    dst = tmp_path / "dst"
    assert not list(dst.rglob("*.dcm")) and not [p for p in dst.rglob("*") if p.name.startswith(".")]
