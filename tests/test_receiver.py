"""The DICOM receiver: dcmtk's echoscu and storescu push studies to a real Receiver on loopback."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomframe.errors import UserInputError
from dicomframe.keys import ProjectKey, generate_key_file
from dicomframe.vault import read_mapping

from .conftest import SAMPLES, require_dicom_network
from .test_deidentify import _dataset_bytes, _planted

require_dicom_network()

from dicomframe.gateway.scp import Receiver

KEY = ProjectKey.from_bytes(bytes(range(32)))
#: one study of the cohort (9 instances, two series, one in Explicit VR Big Endian); no image
#: at risk of burned-in text, so no OCR runs
STUDY = SAMPLES / "cohort" / "ASTROM_SVEN_MRN4567890" / "ACC00351298_CT_ABD"
#: a smaller study of another patient, for the tests that need any study at all
SMALL_STUDY = SAMPLES / "cohort" / "RIVERA_CARLOS_MRN5678901" / "2024-04-02_CT_KNEE_LT"
TIMEOUT = 120  # seconds a batch may take on a busy machine before the test fails (never asserted as speed)


def _echo(port: int, called: str = "DICOMFRAME", calling: str = "SITE_A") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-aec", called, "-aet", calling, "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def _store(
    port: int, folder: Path, called: str = "DICOMFRAME", calling: str = "SITE_A", *options: str
) -> subprocess.CompletedProcess[str]:
    """storescu of every file under ``folder``, in one association (verbose: it prints each status)."""
    return subprocess.run(
        ["storescu", "-v", *options, "-aec", called, "-aet", calling, "+sd", "+r", "127.0.0.1", str(port), str(folder)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def _study_uids(batch: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in batch.rglob("*.dcm")}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, Path]]:
    """A receiver on a free loopback port; yields it and its working folder (out/, vault/, spool/)."""
    root = tmp_path_factory.mktemp("receiver")
    receiver = Receiver(root / "out", key=KEY, vault=root / "vault", port=0, spool=root / "spool", pixel_clean="rules")
    receiver.start()
    try:
        yield receiver, root
    finally:
        receiver.stop()


def _send(receiver: Receiver, folder: Path, *options: str) -> list[Any]:
    """Send ``folder`` in one association; the batches it made once the receiver is idle."""
    before = len(receiver.batches)
    sent = _store(receiver.port, folder, "DICOMFRAME", "SITE_A", *options)
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert receiver.wait_idle(TIMEOUT), "the batch did not finish"
    return list(receiver.batches[before:])


def _logged(caplog: Any, text: str) -> list[str]:
    """The messages holding ``text``, waited for: the receiver logs a rejection on its
    association thread, just after the sender has its answer."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        said = [r.getMessage() for r in caplog.records if text in r.getMessage()]
        if said or time.monotonic() > deadline:
            return said
        time.sleep(0.05)


def test_echo_succeeds(site) -> None:
    receiver, _root = site
    assert _echo(receiver.port).returncode == 0


def test_an_association_to_another_called_ae_title_is_rejected(site, caplog) -> None:
    receiver, _root = site
    with caplog.at_level(logging.WARNING, logger="dicomframe"):
        answer = _echo(receiver.port, called="SOMEONE_ELSE")
    assert answer.returncode != 0
    assert "Called AE Title Not Recognized" in answer.stderr
    # the site's operator sees why in the receiver's log too
    said = _logged(caplog, "rejected")
    assert said and "'SOMEONE_ELSE'" in said[0] and "'DICOMFRAME'" in said[0]


def test_a_study_sent_becomes_a_committed_batch_without_phi(site) -> None:
    receiver, root = site
    (batch,) = _send(receiver, STUDY)
    assert batch.committed and batch.failed == 0 and batch.quarantined == 0
    assert batch.written == len([p for p in STUDY.rglob("*") if p.is_file()])
    out = root / "out" / batch.batch_id
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch_id"] == batch.batch_id and manifest["total_images"] == batch.written
    assert batch.manifest_uri is not None and Path(batch.manifest_uri) == out / "manifest.json"
    planted = {v.encode(enc, "ignore") for v in _planted() for enc in ("utf-8", "latin-1")}
    planted = {p for p in planted if len(p) >= 4}
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            blob = (_dataset_bytes(data) if path.suffix == ".dcm" else data).lower()
            assert not [p for p in planted if p.lower() in blob], f"{path.name} holds planted values"
    # the mapping is in the vault, and leads back to the study sent
    mapping = read_mapping(root / "vault", batch.batch_id, KEY)
    assert mapping.height == batch.written
    sent_study = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in STUDY.rglob("*.dcm")}
    assert set(mapping["original_study_instance_uid"].to_list()) == sent_study
    # the spool held PHI: nothing of it is left
    assert list(receiver.incoming.iterdir()) == []
    assert list(receiver.quarantine.iterdir()) == []


def test_two_associations_are_two_batches_and_a_study_sent_again_keeps_its_pseudonyms(site) -> None:
    receiver, root = site
    (first,) = _send(receiver, SMALL_STUDY)
    (second,) = _send(receiver, SMALL_STUDY)
    assert first.batch_id != second.batch_id and first.committed and second.committed
    uids = _study_uids(root / "out" / first.batch_id)
    assert len(uids) == 1 and uids == _study_uids(root / "out" / second.batch_id)
    assert next(iter(uids)).startswith("2.25.")
    assert list(receiver.incoming.iterdir()) == []


def test_two_sites_sending_at_once_get_a_batch_each(site) -> None:
    receiver, root = site
    before = len(receiver.batches)
    command = ["storescu", "-aec", "DICOMFRAME", "+sd", "+r", "127.0.0.1", str(receiver.port)]
    senders = [
        subprocess.Popen([*command, "-aet", calling, str(study)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for calling, study in (("SITE_A", STUDY), ("SITE_B", SMALL_STUDY))
    ]
    assert [sender.wait(TIMEOUT) for sender in senders] == [0, 0]
    assert receiver.wait_idle(TIMEOUT)
    batches = receiver.batches[before:]
    assert sorted(b.written for b in batches) == [4, 9] and all(b.committed for b in batches)
    for batch in batches:  # each association's instances, and only those, in its batch
        assert len(_study_uids(root / "out" / batch.batch_id)) == 1


def test_an_echo_alone_makes_no_batch(site) -> None:
    receiver, _root = site
    before = len(receiver.batches)
    assert _echo(receiver.port).returncode == 0
    assert receiver.wait_idle(TIMEOUT) and len(receiver.batches) == before


def test_only_the_calling_ae_titles_allowed_may_associate(tmp_path: Path, caplog) -> None:
    receiver = Receiver(
        tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool",
        allow_calling=["SITE_A"],
    )  # fmt: skip
    with receiver, caplog.at_level(logging.WARNING, logger="dicomframe"):
        refused = _echo(receiver.port, calling="SITE_B")
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr
        assert _logged(caplog, "'SITE_B' is not one of --allow-calling")
        assert _echo(receiver.port, calling="SITE_A").returncode == 0


def test_a_spool_write_that_fails_answers_out_of_resources_and_keeps_nothing(site) -> None:
    receiver, _root = site
    before = len(receiver.batches)
    incoming = receiver.incoming
    aside = incoming.with_name("incoming-aside")
    incoming.rename(aside)
    incoming.write_bytes(b"")  # a file where the folder was: no association folder can be made
    try:
        sent = _store(receiver.port, SMALL_STUDY)
    finally:
        incoming.unlink()
        aside.rename(incoming)
    assert sent.returncode != 0
    assert "Refused: OutOfResources" in sent.stdout + sent.stderr  # 0xA700
    assert receiver.wait_idle(TIMEOUT) and len(receiver.batches) == before


def test_a_spool_left_by_a_killed_receiver_is_deidentified_when_it_starts_again(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    left = spool / "incoming" / "20260101-120000-0123abcd"
    left.mkdir(parents=True)
    for folder in (spool, spool / "incoming", left):
        os.chmod(folder, 0o700)
    for number, path in enumerate(sorted(p for p in SMALL_STUDY.rglob("*.dcm"))):
        shutil.copy(path, left / f"{number:032x}.dcm")
    (left / ".tmp-0123").write_bytes(b"half an instance")  # never answered Success
    (left / f"{99:032x}.dcm").write_bytes(b"not DICOM at all")  # fails de-identification
    (spool / "receiving").mkdir(mode=0o700)
    (spool / "receiving" / "tmp1234.dcm").write_bytes(b"an instance received in part")
    receiver = Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=spool)
    with receiver:
        assert list((spool / "receiving").iterdir()) == []  # gone before anything is accepted
        assert receiver.wait_idle(TIMEOUT)
    (batch,) = receiver.batches
    assert batch.batch_id == "20260101-120000-0123abcd" and batch.committed
    assert batch.written == 4 and batch.failed == 1 and batch.quarantined == 1
    assert [p.name for p in (spool / "quarantine" / batch.batch_id).iterdir()] == [f"{99:032x}.dcm"]
    assert (spool / "quarantine" / batch.batch_id).stat().st_mode & 0o777 == 0o700
    assert list((spool / "incoming").iterdir()) == []


def test_a_batch_the_leak_gate_stops_keeps_every_input_in_quarantine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = tmp_path / "leaky.toml"
    leaky.write_text('[profile]\nbase = "default"\n\n[[rule]]\nkeyword = "PatientName"\naction = "K"\n')
    receiver = Receiver(
        tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool",
        profile=str(leaky), pixel_clean="rules",
    )  # fmt: skip
    with receiver:
        (batch,) = _send(receiver, SMALL_STUDY)
    assert not batch.committed and batch.manifest_uri is None
    assert batch.quarantined == 4 == len(list((receiver.quarantine / batch.batch_id).iterdir()))
    assert not (tmp_path / "out" / batch.batch_id / "manifest.json").exists()
    assert list(receiver.incoming.iterdir()) == []
    # the log says what happened and where the inputs are, never what they hold
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dicomframe")).lower()
    assert f"batch {batch.batch_id}: not committed" in logged
    assert not [v for v in _planted() if v.lower() in logged]


def test_a_spool_others_may_read_is_refused(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    os.chmod(spool, 0o755)
    receiver = Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=spool)
    with pytest.raises(UserInputError, match="chmod 700"):
        receiver.start()


def test_cli_receive_prints_each_batch_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    key_file = tmp_path / "project.key"
    generate_key_file(key_file)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "dicomframe.cli", "receive", str(tmp_path / "out"), "--key-file", str(key_file),
            "--vault", str(tmp_path / "vault"), "--port", "0", "--spool", str(tmp_path / "spool"),
            "--allow-calling", "SITE_A", "--pixel-clean", "rules",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    lines: list[str] = []
    batch_seen = threading.Event()
    listening = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            listening.set() if line.startswith("listening on") else None
            batch_seen.set() if line.startswith("batch ") else None

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(TIMEOUT), process.stderr.read() if process.poll() is not None else "no start"  # type: ignore[union-attr]
        port = int(lines[0].split()[2].rsplit(":", 1)[1].rstrip(";"))
        assert _store(port, SMALL_STUDY).returncode == 0
        assert batch_seen.wait(TIMEOUT)
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(TIMEOUT)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    (line,) = [x for x in lines if x.startswith("batch ")]
    batch_id = line.split()[1].rstrip(":")
    assert "4 written, 0 failed" in line and f"{batch_id}/manifest.json" in line
    assert (tmp_path / "out" / batch_id / "manifest.json").is_file()
    assert not any(part in "".join(lines) for part in ("RIVERA", "Rivera", "MRN5678901"))


@pytest.mark.parametrize(
    ("tool", "propose"),
    [("dcmcjpeg", "-xs"), ("dcmcrle", "-xr")],  # JPEG Lossless SV1, RLE Lossless
)
def test_compressed_pixel_data_is_stored_as_received(site, tmp_path: Path, tool: str, propose: str) -> None:
    receiver, root = site
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed: run `make services` (Debian package dcmtk)")
    sent = tmp_path / "compressed"
    sent.mkdir()
    source = min(SMALL_STUDY.rglob("*.dcm"))
    subprocess.run([tool, str(source), str(sent / "image.dcm")], check=True, capture_output=True, timeout=TIMEOUT)
    old = pydicom.dcmread(sent / "image.dcm")
    assert old.file_meta.TransferSyntaxUID.is_compressed
    (batch,) = _send(receiver, sent, propose)  # storescu proposes the image's syntax and the uncompressed ones
    assert batch.committed and batch.written == 1
    (output,) = (root / "out" / batch.batch_id).rglob("*.dcm")
    new = pydicom.dcmread(output)
    assert new.file_meta.TransferSyntaxUID == old.file_meta.TransferSyntaxUID
    assert new.PixelData == old.PixelData  # never decoded, never re-encoded


def test_an_aborted_association_keeps_what_was_stored_before_the_abort(site) -> None:
    from pynetdicom import AE

    receiver, _root = site
    files = sorted(SMALL_STUDY.rglob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    sender = AE(ae_title="SITE_A")
    sender.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
    before = len(receiver.batches)
    assoc = sender.associate("127.0.0.1", receiver.port, ae_title="DICOMFRAME")
    assert assoc.is_established
    try:
        for path in files[:2]:
            assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.abort()
    assert receiver.wait_idle(TIMEOUT)
    (batch,) = receiver.batches[before:]
    assert batch.committed and batch.written == 2 and batch.failed == 0
    assert list(receiver.incoming.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("spool", "chmod 700"),  # a spool others may read: it would hold patient data
        ("port", "give another --port"),  # a port already in use
        ("vault", "apart from DST"),  # the vault inside the output
    ],
)
def test_cli_receive_refuses_a_bad_setting_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    import socket

    from dicomframe.cli import main

    key_file = tmp_path / "project.key"
    generate_key_file(key_file)
    spool, vault = tmp_path / "spool", tmp_path / "vault"
    if option == "spool":
        spool.mkdir(mode=0o755)
        os.chmod(spool, 0o755)
    if option == "vault":
        vault = tmp_path / "out" / "vault"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if option == "port" else 0
        args = ["receive", str(tmp_path / "out"), "--key-file", str(key_file), "--vault", str(vault)]
        with pytest.raises(SystemExit) as exc:
            main([*args, "--port", str(port), "--spool", str(spool)])
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())


@pytest.mark.s3
def test_batches_go_to_a_bucket_as_deidentify_writes_them(s3_bucket: str, tmp_path: Path) -> None:
    import s3fs

    receiver = Receiver(
        f"s3://{s3_bucket}/incoming", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool",
        pixel_clean="rules", priority="STAT",
    )  # fmt: skip
    with receiver:
        (batch,) = _send(receiver, SMALL_STUDY)
    assert batch.committed and batch.manifest_uri == f"s3://{s3_bucket}/incoming/{batch.batch_id}/manifest.json"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    manifest = json.loads(fs.cat_file(f"{s3_bucket}/incoming/{batch.batch_id}/manifest.json"))
    assert manifest["priority"] == "STAT" and manifest["total_images"] == batch.written == 4
    assert list(receiver.incoming.iterdir()) == []


def test_stop_ends_an_association_still_open_and_finishes_its_batch(tmp_path: Path) -> None:
    from pynetdicom import AE

    files = sorted(SMALL_STUDY.rglob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    sender = AE(ae_title="SITE_A")
    sender.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
    receiver = Receiver(
        tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool", pixel_clean="rules"
    )
    receiver.start()
    assoc = sender.associate("127.0.0.1", receiver.port, ae_title="DICOMFRAME")
    try:
        assert assoc.is_established
        for path in files[:3]:
            assert assoc.send_c_store(path).Status == 0x0000
        receiver.stop()  # as Ctrl-C does: the association is aborted, what it stored is finished
    finally:
        if assoc.is_alive():
            assoc.abort()
    assert assoc.is_aborted
    (batch,) = receiver.batches
    assert batch.committed and batch.written == 3
    assert list(receiver.incoming.iterdir()) == []


def test_an_instance_sent_again_with_other_content_is_kept_in_quarantine(site, tmp_path: Path) -> None:
    receiver, _root = site
    original = min(SMALL_STUDY.rglob("*.dcm"))
    retry = tmp_path / "b.dcm"
    retry.write_bytes(original.read_bytes())  # a sender's retry: the same bytes
    corrected = pydicom.dcmread(original)
    corrected.PatientWeight = "81"  # a corrected instance sent again: the same UIDs, other content
    corrected.save_as(tmp_path / "c.dcm")
    before = len(receiver.batches)
    sent = subprocess.run(
        ["storescu", "-aec", "DICOMFRAME", "-aet", "SITE_A", "127.0.0.1", str(receiver.port),
         str(original), str(retry), str(tmp_path / "c.dcm")],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert receiver.wait_idle(TIMEOUT)
    (batch,) = receiver.batches[before:]
    assert batch.committed and batch.written == 1 and batch.duplicates == 2 and batch.quarantined == 1
    (kept,) = (receiver.quarantine / batch.batch_id).iterdir()
    assert pydicom.dcmread(kept).PatientWeight == 81  # the differing copy, nothing lost
    assert list(receiver.incoming.iterdir()) == []


def test_an_instance_is_spooled_as_received_from_pynetdicoms_buffer_not_a_copy(site, monkeypatch) -> None:
    """Where pynetdicom holds an instance in memory (its chunked mode off), the spooled bytes are
    what its own ``encoded_dataset`` gives, written from a view of its buffer: held once, not twice."""
    from pynetdicom import _config

    from dicomframe.gateway import scp

    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    compared: list[tuple[bool, bool]] = []
    real = scp._part10_pieces

    def pieces(event: Any) -> Any:
        got = real(event)
        compared.append((isinstance(got[-1], memoryview), b"".join(got) == event.encoded_dataset(include_meta=True)))
        return got

    monkeypatch.setattr(scp, "_part10_pieces", pieces)
    receiver, _ = site
    (batch,) = _send(receiver, SMALL_STUDY)
    assert batch.committed and batch.written == len(compared) > 0
    assert set(compared) == {(True, True)}


def test_an_instance_is_written_to_the_spool_as_it_comes_and_moved_not_copied(site, monkeypatch) -> None:
    """pynetdicom writes each instance to ``SPOOL/receiving`` as its fragments come (never the
    system temp folder); it is then renamed into the association's folder, the bytes as sent."""
    from dicomframe.gateway import scp

    receiver, _ = site
    moved: list[bytes] = []
    real = scp._move_durably

    def move(path: Path, folder: Path, order: int = 0) -> Path:
        assert path.parent == receiver.receiving.absolute() and folder.parent == receiver.incoming
        moved.append(path.read_bytes())
        return real(path, folder, order)

    monkeypatch.setattr(scp, "_move_durably", move)
    monkeypatch.setattr(scp, "_part10_pieces", lambda event: pytest.fail("held in memory"))
    (batch,) = _send(receiver, SMALL_STUDY)
    assert batch.committed and batch.written == len(moved) == 4
    sent = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in SMALL_STUDY.rglob("*") if p.is_file()}
    for data in moved:
        got = pydicom.dcmread(io.BytesIO(data))
        assert data[128:132] == b"DICM" and got == sent[got.SOPInstanceUID]  # the data set as sent
        assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID
    assert list(receiver.receiving.iterdir()) == []


def test_an_instance_cut_off_by_a_sender_that_dies_leaves_nothing_in_the_spool(tmp_path: Path) -> None:
    from .test_large_inputs import _big

    _big(tmp_path / "large" / "one.dcm", frames=400)  # 200 MiB: still coming when the sender dies
    receiver = Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool")
    with receiver:
        sender = subprocess.Popen(
            ["storescu", "-aec", "DICOMFRAME", "-aet", "SITE_A", "127.0.0.1", str(receiver.port),
             str(tmp_path / "large" / "one.dcm")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + TIMEOUT
            while not any(receiver.receiving.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert any(receiver.receiving.iterdir()), "nothing was being received"
        finally:
            sender.kill()
            sender.wait()
        while any(receiver.receiving.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(receiver.receiving.iterdir()) == []  # removed when its association ended
        assert receiver.wait_idle(TIMEOUT)
    assert receiver.batches == []  # it had stored nothing: no batch


_RECEIVING_CHILD = """
import os, sys, threading, time
from pynetdicom import _config
from dicomframe.gateway.scp import Receiver
out, key, vault, spool, mode = sys.argv[1:6]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
peak, stored, result = [0], threading.Event(), []
real = Receiver._on_store
def on_store(self, event):
    status = real(self, event)
    result.append(peak[0])  # what receiving it took, before its batch starts
    stored.set()
    return status
Receiver._on_store = on_store
receiver = Receiver(out, key=key, vault=vault, port=0, spool=spool)
receiver.start()
if mode == "in-memory":
    _config.STORE_RECV_CHUNKED_DATASET = False
start = rss()
def sample():
    while not stored.is_set():
        peak[0] = max(peak[0], rss() - start)
        time.sleep(0.001)
threading.Thread(target=sample, daemon=True).start()
print(receiver.port, flush=True)
stored.wait(120)
receiver.wait_idle(120)
receiver.stop()
print(result[0], flush=True)
"""


def test_memory_stays_flat_while_a_large_instance_is_received(tmp_path: Path) -> None:
    from .test_large_inputs import _big

    key_file = tmp_path / "project.key"
    generate_key_file(key_file)
    _big(tmp_path / "large" / "one.dcm", frames=200)  # 100 MiB of pixel data
    size = (tmp_path / "large" / "one.dcm").stat().st_size

    def grown(mode: str) -> int:
        child = subprocess.Popen(
            [sys.executable, "-c", _RECEIVING_CHILD, str(tmp_path / f"out-{mode}"), str(key_file),
             str(tmp_path / f"vault-{mode}"), str(tmp_path / f"spool-{mode}"), mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            assert _store(port, tmp_path / "large", "DICOMFRAME", "SITE_A").returncode == 0
            return int(child.stdout.readline())
        finally:
            if child.poll() is None:
                child.wait(TIMEOUT)
            for pipe in (child.stdout, child.stderr):
                if pipe is not None:
                    pipe.close()

    in_memory, chunked = grown("in-memory"), grown("chunked")
    assert in_memory > size  # pynetdicom's buffer holds the whole instance
    assert chunked < 0.1 * size, (chunked, size)


def test_silent_connections_hold_no_sender_back_and_are_closed(tmp_path: Path) -> None:
    """More silent TCP connections than pynetdicom's own limit (10) of associations: a real
    sender still gets in, and the receiver closes them once the request timeout passes."""
    import socket

    receiver = Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool",
                        request_timeout=1)  # fmt: skip
    receiver.start()
    silent = [socket.create_connection(("127.0.0.1", receiver.port), timeout=TIMEOUT) for _ in range(12)]
    try:
        echoed = _echo(receiver.port)
        assert echoed.returncode == 0, echoed.stderr[-2000:]
        for sock in silent:
            try:
                assert sock.recv(1) == b""  # closed by the receiver (or reset below)
            except ConnectionResetError:
                pass
    finally:
        for sock in silent:
            sock.close()
        receiver.stop()
