"""The HTTP gateway over HTTPS (``dicomframe serve --tls-cert --tls-key [--tls-ca]``), a real uvicorn.

Certificates come from the tls_certs fixture (conftest): the server's is for 127.0.0.1.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dicomframe.cli import main

from .test_gateway import CT, _anonymize, _start, _stop, httpx


def _trusting(tls_certs: Path, who: str | None = None) -> ssl.SSLContext:
    """A client's TLS context: trusts the CA of the gateway's certificate; with ``who``, shows that pair."""
    context = ssl.create_default_context(cafile=str(tls_certs / "ca.pem"))
    if who is not None:
        context.load_cert_chain(tls_certs / f"{who}.pem", tls_certs / f"{who}.key")
    return context


def test_https_serves_a_client_that_trusts_the_certificate(tls_certs: Path, tmp_path: Path) -> None:
    trusting = _trusting(tls_certs)
    gw = _start(
        tmp_path, "--tls-cert", str(tls_certs / "receiver.pem"), "--tls-key", str(tls_certs / "receiver.key"),
        client={"verify": trusting},
    )  # fmt: skip
    try:
        assert gw.url.startswith("https://")
        with httpx.Client(base_url=gw.url, verify=trusting, timeout=60) as client:
            answer = _anonymize(client, CT.read_bytes())
            assert answer.status_code == 200 and answer.headers["X-Dicomframe-Study-Id"]
        # plain HTTP to the HTTPS port gets no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(gw.url.replace("https://", "http://") + "/healthz", timeout=10)
        # nor does a client that does not trust the certificate
        with pytest.raises(httpx.TransportError):
            httpx.get(gw.url + "/healthz", timeout=10)
    finally:
        _stop(gw.process)
    assert "on https://127.0.0.1:" in gw.log.read_text()


def test_mutual_tls_lets_in_only_clients_with_a_certificate_the_ca_signed(tls_certs: Path, tmp_path: Path) -> None:
    site = _trusting(tls_certs, "site")
    gw = _start(
        tmp_path, "--tls-cert", str(tls_certs / "receiver.pem"), "--tls-key", str(tls_certs / "receiver.key"),
        "--tls-ca", str(tls_certs / "ca.pem"), client={"verify": site},
    )  # fmt: skip
    try:
        with httpx.Client(base_url=gw.url, verify=site, timeout=60) as client:
            assert _anonymize(client, CT.read_bytes()).status_code == 200
        for other in (_trusting(tls_certs), _trusting(tls_certs, "stranger")):  # no certificate; a stranger's
            with pytest.raises(httpx.TransportError):
                httpx.get(gw.url + "/healthz", verify=other, timeout=10)
    finally:
        _stop(gw.process)
    assert "clients need a certificate the --tls-ca signed" in gw.log.read_text()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--tls-key", "receiver.key"], "needs both --tls-cert"),
        (["--tls-cert", "receiver.pem", "--tls-key", "site.key"], "key belongs to the certificate"),
        (["--tls-cert", "receiver.pem", "--tls-key", "receiver.key", "--tls-ca", "missing.pem"], "--tls-ca: no such file"),
    ],
)
def test_tls_files_that_do_not_fit_stop_serve_before_it_listens(
    tls_certs: Path, tmp_path: Path, given: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomframe.keys import generate_key_file

    generate_key_file(tmp_path / "project.key")
    options = [str(tls_certs / a) if not a.startswith("--") else a for a in given]
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(tmp_path / "out"), "--key-file", str(tmp_path / "project.key"), "--vault", str(tmp_path / "vault"), *options])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
