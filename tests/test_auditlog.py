"""The audit log: every action chained to the one before, damage found and located."""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import socket
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomframe.auditlog import (
    Action,
    AuditLog,
    Problem,
    ProblemKind,
    VerifyReport,
    log_event,
    verify,
)
from dicomframe.errors import AuditLogError, SourceNotFoundError, UserInputError

ZEROS = "0" * 64
VERIFY_HINT = "dicomframe auditlog verify"


def _fill(path: Path, n: int, **fields: Any) -> list[dict[str, Any]]:
    log = AuditLog(path)
    return [
        dict(
            log.append(
                "deidentify", actor="tester", batch_id=f"b{i}", counts={"files": i}, **fields
            )
        )
        for i in range(1, n + 1)
    ]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _kinds(report: VerifyReport) -> list[tuple[int, int | None, ProblemKind]]:
    return [(p.line, p.seq, p.kind) for p in report.problems]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


# ------------------------------------------------------------------ a sound chain


def test_a_chain_of_100_records_verifies(log_path: Path) -> None:
    records = _fill(log_path, 100)

    report = verify(log_path)

    assert report == VerifyReport(ok=True, records=100, problems=[])
    assert [r["seq"] for r in records] == list(range(1, 101))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))


def test_the_first_record_links_to_64_zeros(log_path: Path) -> None:
    first = AuditLog(log_path).append(Action.KEY_USE, actor="token:7f55db55")

    assert first["prev"] == ZEROS
    assert json.loads(log_path.read_bytes())["prev"] == ZEROS


def test_each_line_is_the_canonical_json_and_its_hash_covers_every_other_field(
    log_path: Path,
) -> None:
    returned = AuditLog(log_path).append(
        "export",
        actor="alice",
        batch_id="b-1",
        ids=["2.25.1"],
        details={"dest": "bucket-a", "ratio": 0.5},
    )

    raw = log_path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    record = json.loads(raw)
    assert record == returned
    assert raw[:-1] == _canonical(record)
    body = {k: v for k, v in record.items() if k != "hash"}
    assert record["hash"] == hashlib.sha256(_canonical(body)).hexdigest()


def test_time_is_iso_8601_utc_with_microseconds(log_path: Path) -> None:
    before = datetime.now(UTC)
    record = AuditLog(log_path).append("dry_run", actor="alice")
    after = datetime.now(UTC)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["time"])
    stamp = datetime.fromisoformat(record["time"])
    assert stamp.utcoffset() == timedelta(0)
    assert before <= stamp <= after


def test_the_actor_defaults_to_the_os_user_and_a_token_id_replaces_it(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "operator7")
    log = AuditLog(log_path)

    assert log.append("deidentify")["actor"] == "operator7"
    assert log.append("reidentify", actor="token:ab12")["actor"] == "token:ab12"


def test_the_actor_falls_back_to_the_uid_when_the_os_has_no_user_name(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_user() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", no_user)

    assert AuditLog(log_path).append("deidentify")["actor"] == f"uid:{os.getuid()}"


def test_unicode_and_line_separators_stay_on_one_line(log_path: Path) -> None:
    AuditLog(log_path).append("export", actor="Zoë", details={"note": "a\u2028b\nc\u0085d\r"})

    assert log_path.read_bytes().count(b"\n") == 1
    assert "Zoë".encode() in log_path.read_bytes()  # UTF-8, not \u escapes
    assert verify(log_path).ok


def test_an_empty_log_verifies_with_zero_records(log_path: Path) -> None:
    log_path.write_bytes(b"")

    assert verify(log_path) == VerifyReport(ok=True, records=0, problems=[])


def test_log_event_does_nothing_without_a_path_and_appends_with_one(log_path: Path) -> None:
    assert log_event(None, "export", batch_id="b1") is None

    record = log_event(log_path, "export", actor="alice", batch_id="b1", counts={"studies": 3})

    assert record is not None and record["seq"] == 1 and record["counts"] == {"studies": 3}
    assert verify(str(log_path)).records == 1


def test_a_file_url_is_a_local_path(log_path: Path) -> None:
    AuditLog(f"file://{log_path}").append("export", actor="alice")

    assert verify(f"file://{log_path}").records == 1


# ------------------------------------------------------------------ tampering is found


def test_editing_one_field_of_record_50_is_reported_at_record_50(log_path: Path) -> None:
    _fill(log_path, 100)
    lines = _lines(log_path)
    record = json.loads(lines[49])
    record["counts"]["files"] = 49  # the hash field is kept: the edit is in the content
    lines[49] = _canonical(record) + b"\n"
    _rewrite(log_path, lines)

    report = verify(log_path)

    assert not report.ok and report.records == 100
    assert _kinds(report) == [(50, 50, ProblemKind.HASH_MISMATCH)]
    assert report.problems[0].message == (
        "line 50 (seq 50): content does not match its hash: the record was edited"
    )


def test_deleting_record_50_is_reported_at_record_51(log_path: Path) -> None:
    _fill(log_path, 100)
    lines = _lines(log_path)
    del lines[49]
    _rewrite(log_path, lines)

    report = verify(log_path)

    assert not report.ok and report.records == 99
    assert _kinds(report) == [(50, 51, ProblemKind.SEQ_GAP)]
    assert (
        report.problems[0].message
        == "line 50 (seq 51): follows seq 49: 1 record(s) missing before it"
    )


def test_deleting_the_first_record_is_reported(log_path: Path) -> None:
    _fill(log_path, 3)
    _rewrite(log_path, _lines(log_path)[1:])

    assert _kinds(verify(log_path)) == [(1, 2, ProblemKind.SEQ_GAP)]


def test_swapping_two_records_is_reported_at_both_places(log_path: Path) -> None:
    _fill(log_path, 100)
    lines = _lines(log_path)
    lines[29], lines[69] = lines[69], lines[29]
    _rewrite(log_path, lines)

    report = verify(log_path)

    assert not report.ok
    assert {p.line for p in report.problems} == {30, 31, 70, 71}
    assert (30, 70, ProblemKind.SEQ_GAP) in _kinds(report)
    assert (70, 30, ProblemKind.SEQ_ORDER) in _kinds(report)
    assert {p.kind for p in report.problems} <= {ProblemKind.SEQ_GAP, ProblemKind.SEQ_ORDER}


def test_swapping_neighbours_is_reported(log_path: Path) -> None:
    _fill(log_path, 10)
    lines = _lines(log_path)
    lines[4], lines[5] = lines[5], lines[4]
    _rewrite(log_path, lines)

    report = verify(log_path)

    assert _kinds(report)[:2] == [(5, 6, ProblemKind.SEQ_GAP), (6, 5, ProblemKind.SEQ_ORDER)]


def test_a_record_taken_from_another_log_breaks_the_link(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    _fill(ours, 3)
    _fill(theirs, 3)
    lines = _lines(ours)
    lines[1] = _lines(theirs)[1]  # valid record, right seq, wrong chain
    _rewrite(ours, lines)

    report = verify(ours)

    assert _kinds(report) == [(2, 2, ProblemKind.PREV_MISMATCH), (3, 3, ProblemKind.PREV_MISMATCH)]


def test_truncating_the_last_line_is_reported_as_partial(log_path: Path) -> None:
    _fill(log_path, 100)
    data = log_path.read_bytes()
    log_path.write_bytes(data[:-25])

    report = verify(log_path)

    assert not report.ok and report.records == 99
    assert _kinds(report) == [(100, None, ProblemKind.PARTIAL)]
    assert "partial last line" in report.problems[0].message


def test_a_missing_final_newline_alone_is_partial(log_path: Path) -> None:
    _fill(log_path, 2)
    log_path.write_bytes(log_path.read_bytes()[:-1])

    assert _kinds(verify(log_path)) == [(2, None, ProblemKind.PARTIAL)]


def test_a_damaged_line_is_reported_as_invalid_json_at_its_line_only(log_path: Path) -> None:
    _fill(log_path, 5)
    lines = _lines(log_path)
    lines[2] = lines[2][:40] + b"\xff" + lines[2][41:]
    _rewrite(log_path, lines)

    report = verify(log_path)

    assert _kinds(report) == [(3, 3, ProblemKind.INVALID_JSON)]
    assert report.problems[0].message == "line 3 (seq 3?): not valid UTF-8 JSON"


def test_a_json_object_that_is_not_a_record_is_malformed(log_path: Path) -> None:
    _fill(log_path, 3)
    lines = _lines(log_path)
    lines[1] = b'{"seq":2}\n'
    _rewrite(log_path, lines)

    assert _kinds(verify(log_path)) == [(2, 2, ProblemKind.MALFORMED)]


def test_a_reformatted_but_unchanged_record_is_reported_as_not_canonical(log_path: Path) -> None:
    _fill(log_path, 3)
    lines = _lines(log_path)
    lines[1] = json.dumps(json.loads(lines[1]), indent=None).encode() + b"\n"  # ", " and ": "
    _rewrite(log_path, lines)

    assert _kinds(verify(log_path)) == [(2, 2, ProblemKind.NOT_CANONICAL)]


def test_problem_messages_never_quote_record_contents(log_path: Path) -> None:
    secret = "DOE^JANE"  # a caller's mistake: PHI in details; verify must not echo it
    AuditLog(log_path).append("export", actor="alice", batch_id=secret, details={"name": secret})
    AuditLog(log_path).append("export", actor="alice", batch_id=secret, details={"name": secret})
    lines = _lines(log_path)
    lines[0] = lines[0].replace(b"DOE^JANE", b"DOE^JOHN")
    lines[1] = lines[1][:60] + b"}" + lines[1][61:]
    _rewrite(log_path, lines + [b'{"name":"DOE^JANE"'])

    report = verify(log_path)

    assert len(report.problems) == 3
    for problem in report.problems:
        assert "DOE" not in problem.message and "alice" not in problem.message
        assert set(problem._fields) == {"line", "seq", "kind", "message"}


def test_verifying_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"audit log .*nope\.jsonl not found"):
        verify(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------ appending safely


def test_appending_after_a_partial_line_is_refused_and_names_the_verify_command(
    log_path: Path,
) -> None:
    _fill(log_path, 3)
    damaged = log_path.read_bytes()[:-10]
    log_path.write_bytes(damaged)

    with pytest.raises(AuditLogError, match="partial line") as caught:
        AuditLog(log_path).append("export", actor="alice")

    assert f"`{VERIFY_HINT} {log_path}`" in str(caught.value)
    assert log_path.read_bytes() == damaged  # nothing chained on, nothing repaired


def test_appending_after_an_edited_last_record_is_refused(log_path: Path) -> None:
    _fill(log_path, 3)
    lines = _lines(log_path)
    lines[-1] = lines[-1].replace(b'"files":3', b'"files":4')
    _rewrite(log_path, lines)

    with pytest.raises(AuditLogError, match=f"last record .* damaged or was edited.*{VERIFY_HINT}"):
        AuditLog(log_path).append("export", actor="alice")


def test_a_failed_write_leaves_the_log_as_it_was(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(log_path, 2)
    before = log_path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(
        AuditLogError, match="could not write .*No space left on device; the record was not logged"
    ):
        AuditLog(log_path).append("export", actor="alice")
    monkeypatch.undo()

    assert log_path.read_bytes() == before
    assert AuditLog(log_path).append("export", actor="alice")["seq"] == 3


def test_an_interrupted_write_is_taken_back(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(log_path, 2)
    before = log_path.read_bytes()

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        AuditLog(log_path).append("export", actor="alice")
    monkeypatch.undo()

    assert log_path.read_bytes() == before


def test_a_file_system_without_locks_is_reported(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(
        AuditLogError, match="cannot lock the audit log .*No locks available; keep the log"
    ):
        AuditLog(log_path).append("export", actor="alice")


def test_append_reads_only_the_tail_of_a_long_log(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(log_path, 300)
    size = log_path.stat().st_size
    read: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting_pread)
    record = AuditLog(log_path).append("export", actor="alice")

    assert record["seq"] == 301
    assert sum(read) <= 8193 < size


def test_a_record_longer_than_the_read_block_is_chained_correctly(log_path: Path) -> None:
    log = AuditLog(log_path)
    big = log.append("deidentify", actor="alice", ids=[f"2.25.{i:039d}" for i in range(1000)])

    assert len(_lines(log_path)[0]) > 40_000
    assert log.append("export", actor="alice")["prev"] == big["hash"]
    assert log.verify().ok


def test_the_log_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="its folder does not exist; create it first"):
        AuditLog(tmp_path / "missing" / "audit.jsonl").append("export", actor="alice")


def test_object_store_urls_are_refused_because_they_have_no_append() -> None:
    with pytest.raises(
        UserInputError, match=r"not s3://.*object stores have no append.*ship copies"
    ):
        AuditLog("s3://bucket/audit.jsonl")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "Deidentify"}, "audit action must be lower-case letters and underscores"),
        ({"action": "key-use"}, "audit action must be lower-case letters and underscores"),
        ({"action": ""}, "audit action must be lower-case letters and underscores"),
        ({"outcome": "not ok"}, "audit outcome must be lower-case letters and underscores"),
        ({"actor": ""}, "audit actor must be a non-empty string"),
        ({"ids": "2.25.1"}, "audit ids must be a list of strings"),
        ({"counts": {"files": -1}}, "non-negative integers"),
        ({"counts": {"files": True}}, "non-negative integers"),
        ({"details": {"x": None}}, "str, int, float or bool"),
        ({"details": {"x": float("nan")}}, "finite numbers"),
        ({"details": {"x": "\ud800"}}, "valid Unicode text"),
    ],
)
def test_invalid_fields_are_refused_before_the_file_is_touched(
    log_path: Path, fields: dict[str, Any], message: str
) -> None:
    call: dict[str, Any] = {"action": "export", "actor": "alice", **fields}
    action = call.pop("action")

    with pytest.raises(AuditLogError, match=message):
        AuditLog(log_path).append(action, **call)

    assert not log_path.exists()


def test_any_lower_case_action_name_is_accepted(log_path: Path) -> None:
    assert AuditLog(log_path).append("vault_rotate", actor="alice")["action"] == "vault_rotate"


# ------------------------------------------------------------------ no PHI


def test_the_log_holds_only_what_the_caller_passed(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers pass pseudonymous ids only; the log adds seq, time, actor, prev and hash, nothing else."""
    monkeypatch.chdir(log_path.parent)
    passed = {
        "actor": "token:ab12",
        "batch_id": "b-2026-11",
        "ids": ["2.25.111", "2.25.222"],
        "counts": {"files": 2},
        "outcome": "ok",
        "details": {"profile": "default", "dry": False},
    }
    AuditLog(log_path).append("deidentify", **passed)  # type: ignore[arg-type]

    raw = log_path.read_text(encoding="utf-8")
    record = json.loads(raw)
    added = {"seq", "time", "prev", "hash"}
    assert set(record) == set(passed) | {"action"} | added
    assert {k: record[k] for k in passed} == passed
    assert record["action"] == "deidentify"
    for leak in (str(log_path.parent), socket.gethostname(), str(os.getpid())):
        assert leak not in raw


def test_fields_not_given_are_null(log_path: Path) -> None:
    record = AuditLog(log_path).append("key_use", actor="alice")

    assert [record[k] for k in ("batch_id", "ids", "counts", "details")] == [None] * 4
    assert record["outcome"] == "ok"


# ------------------------------------------------------------------ concurrency


def _append_from_worker(path: str, worker: int, barrier: Any) -> None:
    log = AuditLog(path)
    barrier.wait()
    for i in range(50):
        log.append("deidentify", actor=f"worker{worker}", counts={"i": i})


def test_four_processes_appending_50_records_each_lose_nothing(log_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    workers = [
        ctx.Process(target=_append_from_worker, args=(str(log_path), w, barrier)) for w in range(4)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]

    report = verify(log_path)
    records = [json.loads(line) for line in _lines(log_path)]

    assert report == VerifyReport(ok=True, records=200, problems=[])
    assert [r["seq"] for r in records] == list(range(1, 201))
    for w in range(4):
        mine = [r["counts"]["i"] for r in records if r["actor"] == f"worker{w}"]
        assert mine == list(range(50))  # each worker's records in its own order


# ------------------------------------------------------------------ properties

_names = st.text(min_size=1, max_size=12)
_appends = st.fixed_dictionaries(
    {
        "action": st.one_of(
            st.sampled_from(list(Action)), st.from_regex(r"[a-z_]{1,16}", fullmatch=True)
        ),
        "actor": st.text(min_size=1, max_size=20),
        "batch_id": st.none() | st.text(max_size=20),
        "ids": st.none() | st.lists(st.text(max_size=30), max_size=5),
        "counts": st.none() | st.dictionaries(_names, st.integers(0, 2**63), max_size=4),
        "outcome": st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
        "details": st.none()
        | st.dictionaries(
            _names,
            st.one_of(
                st.text(max_size=20),
                st.integers(-(2**63), 2**63),
                st.floats(allow_nan=False, allow_infinity=False),
                st.booleans(),
            ),
            max_size=4,
        ),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_appends, min_size=1, max_size=8))
def test_any_sequence_of_appends_verifies(calls: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        log = AuditLog(path)
        returned = [dict(log.append(c.pop("action"), **c)) for c in [dict(c) for c in calls]]

        report = verify(path)
        on_disk = [json.loads(line) for line in _lines(path)]

    assert report == VerifyReport(ok=True, records=len(calls), problems=[])
    assert on_disk == returned
    assert [r["seq"] for r in on_disk] == list(range(1, len(calls) + 1))


@pytest.fixture(scope="module")
def sample_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("auditlog") / "audit.jsonl"
    log = AuditLog(path)
    log.append("deidentify", actor="alice", batch_id="b-1", counts={"files": 12, "failed": 0})
    log.append("key_use", actor="token:7f55", details={"purpose": "vault", "ratio": 1e16, "n": -3})
    log.append("export", actor="Zoë", ids=["2.25.1", "2.25.2"], details={"ok": True, "x": 0.1})
    log.append("reidentify", actor="bob", outcome="refused", details={"tab": "a\x0bb"})
    return path.read_bytes()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_is_detected_at_its_line(
    sample_log: bytes, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(sample_log) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != sample_log[position]), label="byte")
    changed = bytearray(sample_log)
    changed[position] = new

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        path.write_bytes(bytes(changed))
        report = verify(path)

    assert not report.ok
    assert min(p.line for p in report.problems) == sample_log[:position].count(b"\n") + 1


@pytest.mark.parametrize(("before", "after"), [(b"1e+16", b"1E+16"), (b"\\u000b", b"\\u000B")])
def test_a_byte_change_that_keeps_the_value_is_still_detected(
    sample_log: bytes, tmp_path: Path, before: bytes, after: bytes
) -> None:
    assert sample_log.count(before) == 1
    path = tmp_path / "audit.jsonl"
    path.write_bytes(sample_log.replace(before, after))
    line = sample_log[: sample_log.index(before)].count(b"\n") + 1

    assert [(p.line, p.kind) for p in verify(path).problems] == [(line, ProblemKind.NOT_CANONICAL)]


def test_report_problems_are_plain_tuples_of_line_seq_kind_message() -> None:
    problem = Problem(3, 3, ProblemKind.HASH_MISMATCH, "line 3 (seq 3): ...")

    line, seq, kind, message = problem
    assert (line, seq, kind) == (3, 3, "hash_mismatch")
    assert isinstance(message, str)
