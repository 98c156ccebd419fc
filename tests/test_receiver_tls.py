"""DICOM over TLS: the receiver with a certificate, and with mutual TLS, against dcmtk's storescu/echoscu.

The certificates come from the tls_certs fixture (a CA, the receiver's, a site's, and one from a CA nobody
trusts) with ``cryptography``; dcmtk is Debian's (`make services`).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomframe.errors import UserInputError
from dicomframe.keys import ProjectKey

from .conftest import SAMPLES, require_dicom_network

require_dicom_network()

from dicomframe.gateway.scp import Receiver

KEY = ProjectKey.from_bytes(bytes(range(32)))
STUDY = SAMPLES / "cohort" / "RIVERA_CARLOS_MRN5678901" / "2024-04-02_CT_KNEE_LT"
TIMEOUT = 120  # seconds a batch may take on a busy machine (never asserted as speed)


def _dcmtk(tool: str, port: int, *options: str, files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, *options, "-aec", "DICOMFRAME", "-aet", "SITE_A", "127.0.0.1", str(port), *files],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def _tls(tls_certs: Path, who: str = "site") -> list[str]:
    """storescu/echoscu options: TLS with ``who``'s certificate, trusting the CA that signed the receiver's."""
    return ["+tls", str(tls_certs / f"{who}.key"), str(tls_certs / f"{who}.pem"), "-pw", "+cf", str(tls_certs / "ca.pem")]


@pytest.fixture(scope="module")
def mutual(tls_certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, Path]]:
    root = tmp_path_factory.mktemp("receiver-tls")
    receiver = Receiver(
        root / "out", key=KEY, vault=root / "vault", port=0, spool=root / "spool", pixel_clean="rules",
        tls_cert=tls_certs / "receiver.pem", tls_key=tls_certs / "receiver.key", tls_ca=tls_certs / "ca.pem",
    )  # fmt: skip
    receiver.start()
    try:
        yield receiver, root
    finally:
        receiver.stop()


def test_a_site_with_a_certificate_the_ca_signed_stores_a_study_over_tls(mutual, tls_certs: Path) -> None:
    receiver, root = mutual
    before = len(receiver.batches)
    sent = _dcmtk("storescu", receiver.port, *_tls(tls_certs), "+sd", "+r", files=(str(STUDY),))
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert receiver.wait_idle(TIMEOUT)
    (batch,) = receiver.batches[before:]
    assert batch.committed and batch.written == len([p for p in STUDY.rglob("*") if p.is_file()])
    assert (root / "out" / batch.batch_id / "manifest.json").is_file()
    assert "TLS, senders need a certificate" in receiver.security


def test_plain_tcp_and_strangers_are_refused_before_any_dicom(mutual, tls_certs: Path, caplog) -> None:
    receiver, _root = mutual
    before = len(receiver.batches)
    with caplog.at_level(logging.WARNING, logger="dicomframe"):
        assert _dcmtk("echoscu", receiver.port).returncode != 0  # no TLS at all
        assert _dcmtk("echoscu", receiver.port, "+tla", "-ic").returncode != 0  # TLS without a certificate
        assert _dcmtk("echoscu", receiver.port, *_tls(tls_certs, "stranger")).returncode != 0  # a CA nobody trusts
        assert _dcmtk("echoscu", receiver.port, *_tls(tls_certs)).returncode == 0
        # the operator reads why, one line each, no traceback
        said = _logged(caplog, "refused in the TLS handshake", 3)
    assert receiver.wait_idle(TIMEOUT) and len(receiver.batches) == before
    assert any("did not speak TLS" in m for m in said)
    assert any("PEER_DID_NOT_RETURN_A_CERTIFICATE" in m for m in said)
    assert any("CERTIFICATE_VERIFY_FAILED" in m and "--tls-ca" in m for m in said)
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("pynetdicom")]


def test_one_silent_connection_holds_no_other_sender_back(mutual, tls_certs: Path) -> None:
    """The handshake runs in each association's thread, not in the one accepting loop."""
    receiver, _root = mutual
    with socket.create_connection(("127.0.0.1", receiver.port)):  # connects, says nothing
        assert _dcmtk("echoscu", receiver.port, *_tls(tls_certs), "-to", "30").returncode == 0


def _logged(caplog: Any, text: str, count: int) -> list[str]:
    """The messages holding ``text`` once there are ``count`` (logged on the associations' threads)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        said = [r.getMessage() for r in caplog.records if text in r.getMessage()]
        if len(said) >= count or time.monotonic() > deadline:
            return said
        time.sleep(0.05)


def test_tls_without_client_certificates(tls_certs: Path, tmp_path: Path) -> None:
    receiver = Receiver(
        tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool",
        tls_cert=tls_certs / "receiver.pem", tls_key=tls_certs / "receiver.key",
    )  # fmt: skip
    with receiver:
        assert receiver.security == " (TLS)"
        # a sender that checks the receiver's certificate, without one of its own
        assert _dcmtk("echoscu", receiver.port, "+tla", "+cf", str(tls_certs / "ca.pem")).returncode == 0
        # (plain TCP to a TLS port: see the mutual test; pynetdicom then waits out its ACSE timeout)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_cert": "receiver.pem"}, "needs both --tls-cert"),
        ({"tls_ca": "ca.pem"}, "--tls-ca needs --tls-cert and --tls-key"),
        ({"tls_cert": "receiver.pem", "tls_key": "nothing.key"}, "--tls-key: no such file"),
        ({"tls_cert": "receiver.pem", "tls_key": "site.key"}, "key belongs to the certificate"),
        ({"tls_cert": "receiver.pem", "tls_key": "receiver.key", "tls_ca": "receiver.key"}, "--tls-ca: not a PEM"),
    ],
)
def test_tls_files_that_do_not_fit_are_refused_before_listening(
    tls_certs: Path, tmp_path: Path, given: dict[str, str], message: str
) -> None:
    files = {option: tls_certs / name for option, name in given.items()}
    with pytest.raises(UserInputError, match=message):
        Receiver(tmp_path / "out", key=KEY, vault=tmp_path / "vault", port=0, spool=tmp_path / "spool", **files).start()
