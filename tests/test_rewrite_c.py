"""The C fast path of the rewrite gives the Python walker's bytes and errors, always.

``rewrite(..., accelerate=False)`` is the reference. For every corpus and sample
file, with the edits a real plan makes, with everything kept, with random
subsets kept, values set and elements inserted, and with damaged copies, both
paths must produce the same bytes or raise the same error.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomframe._parse import BytesReader, Row, parse_file
from dicomframe.apply import edits_for
from dicomframe.errors import DicomframeError, ParseError
from dicomframe.keys import ProjectKey
from dicomframe.rewrite import KEEP, Edit, NewElement, Set, _cwalk, rewrite, rewrite_pieces

from .conftest import CORPUS, SAMPLES, corpus_dicom_files

pytestmark = pytest.mark.skipif(_cwalk is None, reason="the C accelerator is not built")

ADDITIONS = {
    "method_text": "dicomframe test; profile default",
    "method_codes": [("113100", "DCM", "Basic Application Confidentiality Profile")],
    "temporal": "MODIFIED",
}


def _sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix not in (".json", ".md"))


ALL_FILES = corpus_dicom_files() + _sample_files()


def _id(path: Path) -> str:
    for root in (CORPUS, SAMPLES.parent):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


def _outcome(data: bytes, edits: dict[str, Edit], meta: dict[int, str] | None, accelerate: bool) -> Any:
    try:
        return ("ok", rewrite(data, edits, meta=meta, accelerate=accelerate))
    except DicomframeError as exc:
        return (type(exc).__name__, getattr(exc, "kind", None), str(exc))


def _same(data: bytes, edits: dict[str, Edit], meta: dict[int, str] | None = None) -> Any:
    fast = _outcome(data, dict(edits), meta, True)
    slow = _outcome(data, dict(edits), meta, False)
    assert fast == slow
    return fast


def _rows(data: bytes) -> list[Row] | None:
    try:
        return parse_file(BytesReader(data))[0]
    except ParseError:
        return None


@pytest.fixture(scope="module")
def planned() -> dict[str, tuple[list[Any], dict[str, Any]]]:
    """Plan rows of every file, from a real scan and the default profile."""
    from dicomframe.planner import make_plan
    from dicomframe.scanner import scan

    result = scan([str(p) for p in ALL_FILES], progress=False)
    plan = make_plan(result, "default", ProjectKey.from_bytes(bytes(range(32))))
    paths = dict(result.instances.select("file_id", "path").iter_rows())
    table = plan.table.select("file_id", "tag_path", "tag", "vr", "action", "new_value")
    out: dict[str, tuple[list[Any], dict[str, Any]]] = {}
    for (file_id,), part in table.partition_by("file_id", as_dict=True, include_key=False).items():
        out[str(Path(paths[file_id]).resolve())] = (part.rows(), plan.additions)
    return out


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_the_c_path_matches_python_with_the_plan_of_the_default_profile(
    path: Path, planned: dict[str, tuple[list[Any], dict[str, Any]]]
) -> None:
    data = path.read_bytes()
    found = planned.get(str(path.resolve()))
    if found is None:
        pytest.skip("the scan refuses this file")
    rows, additions = found
    edits, meta = edits_for(rows, additions)
    _same(data, edits, meta)


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_the_c_path_matches_python_keeping_everything_or_a_random_half(path: Path) -> None:
    data = path.read_bytes()
    rows = _rows(data)
    if rows is None:
        pytest.skip("the scan refuses this file")
    _same(data, {r[0]: KEEP for r in rows})
    rng = random.Random(str(_id(path)))
    for _ in range(3):
        edits: dict[str, Edit] = {}
        for r in rows:
            roll = rng.random()
            if roll < 0.5:
                edits[r[0]] = KEEP
            elif roll < 0.6 and r[2] in ("LO", "SH", "PN", "CS", "DA", "UI") and r[1] >> 16 != 0x0002:
                edits[r[0]] = Set(r[2], "X1" if r[2] != "UI" else "1.2.3")
            elif roll < 0.65 and r[2] == "SQ":
                edits[r[0]] = Set("SQ", [])
        edits["00120062"] = Set("CS", "YES")
        edits["00080018"] = Set("UI", "1.2.3.4")
        _same(data, edits)


def test_the_c_path_is_taken_for_explicit_little_endian(monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomframe.rewrite

    results: list[Any] = []

    def counting(*args: Any) -> Any:
        results.append(_cwalk.rewrite(*args))
        return results[-1]

    monkeypatch.setattr(dicomframe.rewrite, "_cwalk", SimpleNamespace(rewrite=counting))
    data = (CORPUS / "pydicom" / "CT_small.dcm").read_bytes()
    rows = _rows(data)
    assert rows is not None
    edits: dict[str, Edit] = {r[0]: KEEP for r in rows}
    edits["00100010"] = Set("PN", "Anon")
    pieces = rewrite_pieces(data, edits)
    assert len(results) == 1 and results[0] is not None
    assert b"".join(pieces) == rewrite(data, edits, accelerate=False)


def test_a_large_pixel_data_stays_a_view_of_the_input() -> None:
    data = (CORPUS / "pydicom" / "CT_small.dcm").read_bytes()
    rows = _rows(data)
    assert rows is not None
    edits: dict[str, Edit] = {r[0]: KEEP for r in rows if r[1] != 0x7FE00010}
    edits["00100010"] = Set("PN", "Anon")
    edits["7FE00010"] = KEEP
    # a file whose pixel data is larger than the view threshold: 128 x 128 x 16 bits x 5 frames
    import pydicom

    ds = pydicom.dcmread(CORPUS / "pydicom" / "CT_small.dcm")
    ds.PixelData = bytes(128 * 128 * 2 * 5)
    ds.NumberOfFrames = 5
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    big = buffer.getvalue()
    big_rows = _rows(big)
    assert big_rows is not None
    edits = {r[0]: KEEP for r in big_rows}
    edits["00100010"] = Set("PN", "Anon")
    pieces = rewrite_pieces(big, edits)
    assert any(isinstance(p, memoryview) and len(p) >= 128 * 128 * 2 * 5 for p in pieces)
    assert b"".join(pieces) == rewrite(big, edits, accelerate=False)


def _top_level(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r[6] == 0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(
        [
            "pydicom/CT_small.dcm",
            "pydicom/JPGExtended.dcm",
            "pydicom-data/OBXXXX1A_rle_2frame.dcm",
            "pydicom/MR_small.dcm",
            "pydicom/rtplan.dcm",
            "pydicom/UN_sequence.dcm",
        ]
    ),
    seed=st.integers(0, 2**32 - 1),
    cut=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    insert=st.booleans(),
)
def test_random_edits_and_damaged_copies_give_the_same_result(
    name: str, seed: int, cut: float | None, insert: bool
) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip("corpus file missing")
    data = path.read_bytes()
    rows = _rows(data)
    assert rows is not None
    rng = random.Random(seed)
    edits: dict[str, Edit] = {r[0]: KEEP for r in rows if rng.random() < 0.7}
    for r in rows:
        if r[2] in ("LO", "SH", "CS") and rng.random() < 0.2:
            edits[r[0]] = Set(r[2], "ANON")
    if insert:
        seqs = [r[0] for r in rows if r[2] == "SQ"]
        edits["00181030"] = Set("LO", "inserted")
        edits["00120064"] = Set("SQ", [[NewElement(0x00080100, "SH", "113100")]])
        if seqs:
            edits[f"{rng.choice(seqs)}[0].00080104"] = Set("LO", "in an item")
            edits[f"{rng.choice(seqs)}[7].00080104"] = Set("LO", "no such item")
    if cut is not None:
        data = data[: max(1, int(len(data) * cut))]
    # a trailing pad or junk after the pixel data
    if rng.random() < 0.2:
        data += bytes(rng.choice([0, 1, 3, 8])) if rng.random() < 0.5 else b"\x01\x02\x03"
    _same(data, edits)


def _prepared(data: bytes, edits: dict[str, Edit], use_c: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    import dicomframe.rewrite as rw

    if not use_c:
        monkeypatch.setattr(rw, "_prepare_c", None)
    w = rw._Rewriter(data, edits, rw._LE, True, True)
    overrides: dict[int, bytes] = {}
    try:
        rw._prepare_sets(w, edits, overrides)
    except DicomframeError as exc:
        return (type(exc).__name__, str(exc))
    finally:
        monkeypatch.undo()
    return w.sets, {k: sorted(v) for k, v in w.inserts.items()}, overrides


@pytest.mark.parametrize("path", ALL_FILES[::7], ids=_id)
def test_the_c_preparation_of_sets_matches_python(
    path: Path, planned: dict[str, tuple[list[Any], dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set values encoded, insert lists and meta overrides: the same with and without C
    (the second time the encodings come from the cache, which the C part reads)."""
    found = planned.get(str(path.resolve()))
    if found is None:
        pytest.skip("the scan refuses this file")
    rows, additions = found
    edits, _ = edits_for(rows, additions)
    edits["00080018"] = Set("UI", "1.2.3.4")
    edits["0040A730[0].0040A123"] = Set("PN", "Inserted")
    for _ in range(2):
        assert _prepared(b"", edits, True, monkeypatch) == _prepared(b"", edits, False, monkeypatch)
    edits["FFFEE000"] = Set("UI", "1.2")  # refused the same way
    assert _prepared(b"", edits, True, monkeypatch) == _prepared(b"", edits, False, monkeypatch)


def test_a_chunk_of_files_sharing_the_additions_gets_the_bytes_of_one_file_at_a_time(
    planned: dict[str, tuple[list[Any], dict[str, Any]]],
) -> None:
    """apply_chunk makes the additions' edits once per chunk and keeps their encoding: same bytes."""
    from dicomframe.apply import _addition_edits, _edits
    from dicomframe.rewrite import _rewrite_pieces

    added = _addition_edits(ADDITIONS)
    made: dict[Any, Any] = {}
    memo: dict[int, Any] = {}
    checked = 0
    for path in ALL_FILES:
        found = planned.get(str(path.resolve()))
        if found is None:
            continue
        rows, _ = found
        data = path.read_bytes()
        edits, meta = edits_for(rows, ADDITIONS)
        shared, shared_meta = _edits(rows, added, made)
        assert shared == edits and list(shared) == list(edits) and shared_meta == meta
        try:
            expected: Any = rewrite(data, edits, meta=meta)
        except DicomframeError as exc:
            expected = str(exc)
        try:
            got: Any = b"".join(_rewrite_pieces(data, shared, shared_meta, True, memo))
        except DicomframeError as exc:
            got = str(exc)
        assert got == expected
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("pixel_bytes", [512, 256], ids=["whole", "cut"])
def test_the_c_path_reads_native_ybr_full_422_as_two_samples_a_pixel(monkeypatch: pytest.MonkeyPatch, pixel_bytes: int) -> None:
    import dicomframe.rewrite

    from .test_rewrite import _ybr_422

    results: list[Any] = []

    def counting(*args: Any) -> Any:
        results.append(_cwalk.rewrite(*args))
        return results[-1]

    monkeypatch.setattr(dicomframe.rewrite, "_cwalk", SimpleNamespace(rewrite=counting))
    data = _ybr_422(pixel_bytes)
    rows = _rows(data)
    assert rows is not None
    edits: dict[str, Edit] = {r[0]: KEEP for r in rows}
    if pixel_bytes == 512:  # the C path writes it, as Python does
        assert b"".join(rewrite_pieces(data, edits)) == rewrite(data, edits, accelerate=False)
        assert results[0] is not None
    else:  # the C path leaves the cut value to Python, which reports it
        with pytest.raises(ParseError, match="needs 512"):
            rewrite_pieces(data, edits)
        assert results == [None]
