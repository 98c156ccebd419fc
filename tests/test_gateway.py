"""The HTTP gateway, served by a real uvicorn (``dicomframe serve``) on loopback, over real HTTP.

The gateways here run with ``--pixel-clean off``: pixel clean is tested elsewhere, and
the files sent here are searched for planted values in their header bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the gateway needs fastapi: pip install -e '.[test]' (or '.[serve]')")
pytest.importorskip("uvicorn", reason="the gateway needs uvicorn: pip install -e '.[test]' (or '.[serve]')")
httpx = pytest.importorskip("httpx", reason="the gateway tests need httpx: pip install -e '.[test]'")

import pydicom

from dicomframe.cli import main
from dicomframe.keys import generate_key_file, load_key
from dicomframe.vault import list_batches, read_mapping, reidentify_study

from .conftest import ROOT, SAMPLES, _free_port
from .test_deidentify import _dataset_bytes, _planted

COHORT = SAMPLES / "cohort"
CT = COHORT / "DOE_JANE_MRN1234567" / "2023-03-14_CT_CHEST" / "series_1" / "IM0001"
TOKEN = "gateway-test-token-0123456789abcdef"
#: files of each encoding: explicit VR LE, deflated, big endian (Latin-1), implicit VR, UTF-8, an SR
SENT = [
    CT,
    COHORT / "SMITH_JOHN_MRN2345678" / "20221102_MR_BRAIN" / "SE002_T2_AX" / "IM0001.dcm",
    next((COHORT / "ASTROM_SVEN_MRN4567890" / "ACC00351298_CT_ABD").rglob("IM0001.dcm")),
    COHORT / "DOE_JANE_MRN1234567" / "2023-03-14_CT_CHEST" / "series_2" / "IM0001",
    COHORT / "MUELLER_JUERGEN_MRN3456789" / "Study 2023-06-21 US ABDOMEN" / "series 1" / "US_001.DCM",
    COHORT / "DOE_JANE_MRN1234567" / "2023-09-20_CT_CHEST_FU" / "series_2" / "SR0001.dcm",
]


@dataclass
class Gateway:
    url: str
    root: Path
    vault: Path
    key_file: Path
    log: Path
    tmp: Path
    process: subprocess.Popen[bytes]


def _start(root: Path, *options: str, client: dict[str, Any] | None = None) -> Gateway:
    """``dicomframe serve`` in a process of its own, on a free loopback port; waits until it answers.

    ``client``: httpx options (``verify``, ``cert``) for a gateway serving HTTPS (``--tls-cert``)."""
    root.mkdir(parents=True, exist_ok=True)
    key_file = root / "project.key"
    if not key_file.exists():
        generate_key_file(key_file)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    port = _free_port()
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "DICOMFRAME_AUDIT_LOG"}
    env["TMPDIR"] = str(tmp)  # where uploads pass through: checked empty after each request
    command = [
        sys.executable, "-m", "dicomframe.cli", "serve", str(root / "out"),
        "--key-file", str(key_file), "--vault", str(root / "vault"), "--port", str(port),
        "--pixel-clean", "off", *options,
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"{'https' if '--tls-cert' in options else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2, **(client or {})).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"dicomframe serve did not start (exit code {process.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return Gateway(url, root, root / "vault", key_file, log, tmp, process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


#: the bucket and prefix the main gateway may read batches from (on the moto S3 server)
BUCKET = "gateway-incoming"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Gateway]:
    """The main gateway: a token, an audit log, and three allowed sources (the cohort, a
    local folder holding a link out of it, and a prefix of a bucket on the S3 server)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    for path in sorted(CT.parent.iterdir())[:3]:
        fs.pipe(f"{BUCKET}/incoming/study1/{path.name}", path.read_bytes())
    s3fs.S3FileSystem.clear_instance_cache()
    root = tmp_path_factory.mktemp("gateway")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    incoming = root / "incoming"
    outside = root / "outside"
    incoming.mkdir()
    outside.mkdir()
    (outside / "IM0001").write_bytes(CT.read_bytes())
    (incoming / "escape").symlink_to(outside)  # a link inside an allowed root, to a folder outside it
    gw = _start(
        root,
        "--allow-source", str(COHORT), "--allow-source", str(incoming), "--allow-source", f"s3://{BUCKET}/incoming",
        "--token-file", str(token_file),
        "--audit-log", str(root / "audit.jsonl"),
    )  # fmt: skip
    yield gw
    _stop(gw.process)


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as c:
        yield c


def _anonymize(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/v1/anonymize", content=data, headers={"Content-Type": "application/dicom"})


def _planted_bytes() -> list[bytes]:
    values = [v.encode("utf-8") for v in _planted()] + [v.encode("latin-1", "ignore") for v in _planted()]
    return sorted({p.lower() for p in values if len(p) >= 4})


def _no_planted_value_in(text: bytes) -> None:
    found = [p for p in _planted_bytes() if p in text.lower()]
    assert not found, f"{len(found)} planted values"


def _no_upload_left(gateway: Gateway) -> None:
    """Nothing of an upload is left: at most the gateway's spool, empty."""
    left = list(gateway.tmp.iterdir())
    assert len(left) <= 1 and not [p.name for p in left if not p.name.startswith("dicomframe-gateway-")]
    assert not [p for p in gateway.tmp.rglob("*") if p not in left]


def test_health_answers_without_a_token(gateway: Gateway) -> None:
    answer = httpx.get(f"{gateway.url}/healthz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok" and answer.json()["version"]


@pytest.mark.parametrize("path", SENT, ids=lambda p: f"{p.parts[-4][:6].lower()}-{p.name.lower()}")
def test_a_file_sent_comes_back_deidentified_and_its_mapping_is_in_the_vault(
    gateway: Gateway, client: httpx.Client, path: Path
) -> None:
    answer = _anonymize(client, path.read_bytes())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    batch, study = answer.headers["X-Dicomframe-Batch-Id"], answer.headers["X-Dicomframe-Study-Id"]
    new = pydicom.dcmread(io.BytesIO(answer.content))
    old = pydicom.dcmread(path)
    assert new.PatientIdentityRemoved == "YES"
    assert new.StudyInstanceUID.startswith("2.25.") and new.StudyInstanceUID != old.StudyInstanceUID
    _no_planted_value_in(_dataset_bytes(answer.content))
    # the upload's private folder is gone once the answer is sent
    _no_upload_left(gateway)
    # a batch of one file in the vault: the study is re-identified through it
    key = load_key(gateway.key_file)
    assert batch in list_batches(gateway.vault)
    mapping = read_mapping(gateway.vault, batch, key)
    assert mapping.height == 1 and mapping["status"][0] == "written" and mapping["cloud_study_id"][0] == study
    found = reidentify_study(gateway.vault, key, batch, study)
    assert found["study_instance_uid"] == old.StudyInstanceUID


def test_the_same_file_sent_twice_gets_the_same_pseudonymous_uids(client: httpx.Client) -> None:
    first, second = (_anonymize(client, CT.read_bytes()) for _ in range(2))
    assert first.status_code == second.status_code == 200
    a, b = (pydicom.dcmread(io.BytesIO(r.content)) for r in (first, second))
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SOPInstanceUID == b.SOPInstanceUID
    assert first.headers["X-Dicomframe-Study-Id"] == second.headers["X-Dicomframe-Study-Id"]
    assert first.headers["X-Dicomframe-Batch-Id"] != second.headers["X-Dicomframe-Batch-Id"]


def test_concurrent_uploads_each_get_their_own_file_back(gateway: Gateway, client: httpx.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alone = {path: pydicom.dcmread(io.BytesIO(_anonymize(client, path.read_bytes()).content)).SOPInstanceUID for path in SENT}
    with ThreadPoolExecutor(len(SENT)) as pool:
        answers = list(pool.map(lambda path: _anonymize(client, path.read_bytes()), SENT * 2))
    for path, answer in zip(SENT * 2, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert pydicom.dcmread(io.BytesIO(answer.content)).SOPInstanceUID == alone[path]
    _no_upload_left(gateway)


def test_a_body_that_is_not_dicom_is_refused_without_being_echoed(gateway: Gateway, client: httpx.Client) -> None:
    notes = SAMPLES / "odd" / "notes.txt"  # plain text holding a fake name, MRN, phone and e-mail
    answer = _anonymize(client, notes.read_bytes())
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/json"
    problem = answer.json()
    assert problem["error"] == "not_dicom" and problem["detail"]
    for line in notes.read_text().splitlines():
        for word in line.split():
            if len(word) >= 4:
                assert word.lower() not in answer.text.lower()
    _no_upload_left(gateway)
    damaged = _anonymize(client, CT.read_bytes()[:700])  # cut inside the header
    assert damaged.status_code == 422 and damaged.json()["error"] == "truncated"
    _no_planted_value_in(damaged.content)
    empty = _anonymize(client, b"")
    assert empty.status_code == 422 and empty.json()["error"] == "empty"
    wrong_type = client.post("/v1/anonymize", content=CT.read_bytes(), headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and "application/dicom" in wrong_type.json()["detail"]


def test_the_token_is_required(gateway: Gateway, client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        sent = httpx.post(
            f"{gateway.url}/v1/anonymize", content=CT.read_bytes(),
            headers={"Content-Type": "application/dicom", **headers},
        )  # fmt: skip
        assert sent.status_code == 401 and sent.headers["WWW-Authenticate"] == "Bearer"
        assert sent.json()["error"] == "unauthorized"
        assert httpx.get(f"{gateway.url}/v1/batches/anything", headers=headers).status_code == 401
        assert httpx.post(f"{gateway.url}/v1/batches", json={"src": str(COHORT)}, headers=headers).status_code == 401
    assert _anonymize(client, CT.read_bytes()).status_code == 200


@pytest.mark.parametrize(
    ("src", "status"),
    [
        ("/etc", 403),
        (str(COHORT / ".."), 403),  # resolves to the folder above the allowed root
        (str(SAMPLES / "odd"), 403),
        ("escape", 422),  # relative: which folder it means is not for the gateway to guess
        ("s3://bucket/studies", 403),
        ("file://localhost/etc", 422),
        (str(COHORT / "*"), 422),
        (f"s3://{BUCKET}/incoming-other/study1", 403),  # a prefix ends at a '/'
        (f"s3://{BUCKET}/incoming/../secret", 422),
        (f"s3://{BUCKET}/incoming/study1::file:///etc", 422),  # fsspec's chain of file systems
        (f"s3://{BUCKET}/incoming/study1?versionId=1", 422),
    ],
)
def test_a_batch_from_outside_the_allowed_sources_is_refused(client: httpx.Client, src: str, status: int) -> None:
    answer = client.post("/v1/batches", json={"src": src})
    assert answer.status_code == status, answer.text
    assert src not in answer.text


def test_a_link_out_of_an_allowed_source_is_refused(gateway: Gateway, client: httpx.Client) -> None:
    escape = gateway.root / "incoming" / "escape"
    answer = client.post("/v1/batches", json={"src": str(escape)})
    assert answer.status_code == 403 and answer.json()["error"] == "forbidden_source"
    assert not (gateway.root / "out").exists() or not any((gateway.root / "out").iterdir())


def test_malformed_batch_requests_are_refused(client: httpx.Client) -> None:
    for body, error in (
        ({"src": str(COHORT), "batch_id": "../../etc"}, "bad_batch_id"),
        ({"src": str(COHORT), "batch_id": "Müller"}, "bad_batch_id"),
        ({"src": str(COHORT), "priority": "NOW"}, "bad_priority"),
        ({"src": str(COHORT), "dst": "/tmp"}, "bad_request"),
        ({"source": str(COHORT)}, "bad_request"),
        ([str(COHORT)], "bad_request"),
    ):
        answer = client.post("/v1/batches", json=body)
        assert answer.status_code == 422 and answer.json()["error"] == error, body
    nul = client.post("/v1/batches", json={"src": str(COHORT) + "/\u0000x"})
    assert nul.status_code == 422 and nul.json()["error"] == "bad_source"
    as_json = {"Content-Type": "application/json"}
    assert client.post("/v1/batches", content=b"{not json", headers=as_json).status_code == 422
    too_large = client.post("/v1/batches", content=b" " * (65 * 1024), headers=as_json)
    assert too_large.status_code == 413 and "--max-body" not in too_large.text  # a fixed limit, not the setting


def test_a_dicomdir_uploaded_is_told_apart_from_an_image(client: httpx.Client) -> None:
    answer = _anonymize(client, (SAMPLES / "odd" / "dicomdir" / "DICOMDIR").read_bytes())
    assert answer.status_code == 422 and answer.json()["error"] == "not_an_image"


def test_a_cross_site_request_is_refused(gateway: Gateway, client: httpx.Client) -> None:
    # a web page may send text/plain or a form anywhere without asking: a batch is JSON only
    body = json.dumps({"src": str(COHORT)}).encode()
    answer = client.post("/v1/batches", content=body, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415 and answer.json()["error"] == "unsupported_media_type"
    # a page that renamed itself to reach the gateway (DNS rebinding) names its own host
    for path in ("/v1/batches/b1", "/v1/anonymize"):
        answer = client.request("GET" if "b1" in path else "POST", path, headers={"Host": "evil.example:8080"})
        assert answer.status_code == 400 and answer.json()["error"] == "bad_host"
    assert client.get("/healthz", headers={"Host": "lb.internal"}).status_code == 200  # for load balancers
    assert client.get("/v1/batches/b1", headers={"Host": "localhost:1"}).status_code in (404, 200)
    # no redirect for a trailing slash (it would answer before the token is checked)
    assert client.post("/v1/anonymize/", content=b"x", headers={"Content-Type": "application/dicom"}).status_code == 404


def _wait(client: httpx.Client, url: str) -> dict[str, object]:
    """Poll a batch's status until it is neither queued nor running (a generous bound, not a speed)."""
    deadline = time.monotonic() + 900
    while True:
        status: dict[str, object] = client.get(url).json()
        if status["status"] not in ("queued", "running"):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"the batch is still {status['status']} after 900 s")
        time.sleep(0.5)


def test_batches_unfinished_at_a_stop_are_queued_again_at_the_next_start(tmp_path: Path) -> None:
    """The vault keeps each accepted batch, sealed, until it ends: a stop loses none."""
    small = CT.parent.parent  # one study
    options = ("--allow-source", str(COHORT), "--jobs", "1")
    first = _start(tmp_path, *options)
    with httpx.Client(base_url=first.url, timeout=120) as client:
        for batch_id, src in (("gw-slow", COHORT), ("gw-small", small)):
            answer = client.post("/v1/batches", json={"src": str(src), "batch_id": batch_id})
            assert answer.status_code == 202, answer.text
    _stop(first.process)  # at once: the cohort is still being written, the study waits its turn
    kept = {p.parent.name: p.read_bytes() for p in first.vault.glob("*/gateway-job.json.enc")}
    assert "gw-small" in kept
    for sealed in kept.values():  # the source folders name patients: sealed, never in clear
        assert str(COHORT).encode() not in sealed and b"DOE_JANE" not in sealed
    assert "the gateway queues them again when it starts" in first.log.read_text()

    second = _start(tmp_path, *options)
    try:
        with httpx.Client(base_url=second.url, timeout=120) as client:
            for batch_id in kept:
                status = _wait(client, f"/v1/batches/{batch_id}")
                assert status["status"] == "ok", status
            assert client.get("/v1/batches/gw-small").json()["written"] == len(list(small.rglob("IM*")))
    finally:
        _stop(second.process)
    assert "queued again" in second.log.read_text()
    assert not list(second.vault.glob("*/gateway-job.json.enc"))  # ended: nothing left to resume
    assert {"gw-slow", "gw-small"} <= set(list_batches(second.vault))


def test_a_batch_runs_in_the_background_until_committed(gateway: Gateway, client: httpx.Client) -> None:
    answer = client.post("/v1/batches", json={"src": str(COHORT), "batch_id": "gw-cohort", "priority": "urgent"})
    assert answer.status_code == 202, answer.text
    queued = answer.json()
    assert queued["batch_id"] == "gw-cohort" and queued["status"] == "queued"
    assert queued["status_url"] == "/v1/batches/gw-cohort" == answer.headers["Location"]
    status = _wait(client, queued["status_url"])
    assert status["status"] == "ok", status
    assert status["written"] == 70 and status["failed"] == 0 and status["studies"] == 10
    assert status["priority"] == "URGENT" and status["finished_at"]
    manifest = json.loads(Path(str(status["manifest_uri"])).read_text())
    assert manifest["batch_id"] == "gw-cohort" and manifest["total_images"] == 70
    assert Path(str(status["manifest_uri"])) == gateway.root / "out" / "gw-cohort" / "manifest.json"
    assert "gw-cohort" in list_batches(gateway.vault)
    assert "src" not in status and str(COHORT) not in json.dumps(status)
    # a committed batch is never rewritten, from any source
    again = client.post("/v1/batches", json={"src": str(COHORT / "DOE_JANE_MRN1234567"), "batch_id": "gw-cohort"})
    assert again.status_code == 409 and again.json()["error"] == "batch_committed"
    assert json.loads(Path(str(status["manifest_uri"])).read_text())["total_images"] == 70


def test_a_batch_is_read_from_an_allowed_bucket_prefix(gateway: Gateway, client: httpx.Client) -> None:
    answer = client.post("/v1/batches", json={"src": f"s3://{BUCKET}/incoming/study1", "batch_id": "gw-s3"})
    assert answer.status_code == 202, answer.text
    status = _wait(client, answer.json()["status_url"])
    assert status["status"] == "ok" and status["written"] == 3, status
    assert (gateway.root / "out" / "gw-s3" / "manifest.json").is_file()


def test_an_unknown_batch_is_404_and_a_malformed_id_422(client: httpx.Client) -> None:
    unknown = client.get("/v1/batches/no-such-batch")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_batch"
    assert client.get("/v1/batches/not%20an%20id").status_code == 422
    assert client.get("/v2/nothing").status_code == 404


def test_a_batch_committed_without_the_gateway_is_told_from_its_manifest(gateway: Gateway, client: httpx.Client) -> None:
    from dicomframe.pipeline import deidentify

    src = gateway.root / "cli-input"
    src.mkdir()
    (src / "IM0001").write_bytes(CT.read_bytes())
    deidentify(src, gateway.root / "out", key=gateway.key_file, vault=gateway.vault, batch_id="cli-made", progress=False)
    status = client.get("/v1/batches/cli-made").json()
    assert status["status"] == "ok" and status["written"] == 1 and status["studies"] == 1
    assert Path(status["manifest_uri"]).is_file()


def test_every_upload_is_in_the_audit_log_and_its_chain_holds(gateway: Gateway, client: httpx.Client) -> None:
    from dicomframe.auditlog import verify

    batch = _anonymize(client, CT.read_bytes()).headers["X-Dicomframe-Batch-Id"]
    log = gateway.root / "audit.jsonl"
    assert verify(log).ok
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r.get("batch_id") == batch for r in records)
    _no_planted_value_in(log.read_bytes())


def test_no_planted_value_reaches_the_server_log(gateway: Gateway, client: httpx.Client) -> None:
    for path in SENT:
        assert _anonymize(client, path.read_bytes()).status_code == 200
    _anonymize(client, (SAMPLES / "odd" / "notes.txt").read_bytes())
    client.post("/v1/batches", json={"src": str(COHORT / "DOE_JANE_MRN1234567" / "nothing")})
    # an unknown character set: pydicom warns and logs its name (here, an MRN and a name)
    odd = pydicom.dcmread(CT)
    odd.SpecificCharacterSet = "MRN7654321 ROE"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        odd.save_as(buffer)
    _anonymize(client, buffer.getvalue())
    text = gateway.log.read_bytes()
    assert b"POST /v1/anonymize 200" in text
    assert b"MRN7654321" not in text
    _no_planted_value_in(text)
    assert str(COHORT).encode() not in text and b"DOE_JANE" not in text


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with a leaky profile (it keeps PatientName), a small --max-body and no source."""
    root = tmp_path_factory.mktemp("gateway-strict")
    leaky = root / "leaky.toml"
    leaky.write_text('[profile]\nbase = "default"\n\n[[rule]]\nkeyword = "PatientName"\naction = "K"\n')
    gw = _start(root, "--profile", str(leaky), "--max-body", "64K")
    yield gw
    _stop(gw.process)


def test_the_leak_gate_stops_a_file_and_names_only_its_rules(strict_gateway: Gateway) -> None:
    answer = httpx.post(
        f"{strict_gateway.url}/v1/anonymize", content=CT.read_bytes(), headers={"Content-Type": "application/dicom"}
    )
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/json"
    problem = answer.json()
    assert problem["error"] == "leak_gate" and "original_identifier" in problem["rules"]
    assert b"DICM" not in answer.content
    _no_planted_value_in(answer.content)
    _no_upload_left(strict_gateway)
    _no_planted_value_in(strict_gateway.log.read_bytes())


def test_a_body_over_max_body_is_413(strict_gateway: Gateway) -> None:
    answer = httpx.post(
        f"{strict_gateway.url}/v1/anonymize", content=bytes(65 * 1024), headers={"Content-Type": "application/dicom"}
    )
    assert answer.status_code == 413 and answer.json()["error"] == "too_large"
    _no_upload_left(strict_gateway)


def test_a_gateway_without_allowed_sources_takes_no_batch(strict_gateway: Gateway) -> None:
    answer = httpx.post(f"{strict_gateway.url}/v1/batches", json={"src": str(COHORT)})
    assert answer.status_code == 403 and "--allow-source" in answer.json()["detail"]


def test_serve_refuses_settings_that_cannot_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "project.key"
    generate_key_file(key)
    base = ["serve", "--key-file", str(key), "--vault", str(tmp_path / "vault")]
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    for argv, message in (
        ([*base, str(COHORT / "out"), "--allow-source", str(COHORT)], "must not be inside"),
        ([*base, str(tmp_path / "out"), "--allow-source", str(tmp_path / "missing")], "is not a folder"),
        ([*base, str(tmp_path / "out"), "--token-file", str(token)], "chmod 600"),
        ([*base, str(tmp_path / "out"), "--max-body", "lots"], "--max-body"),
        ([*base, str(tmp_path / "out"), "--pixel-clean", "maybe"], "--pixel-clean"),
        ([*base, str(tmp_path / "out"), "--host", "0.0.0.0"], "without --token-file"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        assert message in capsys.readouterr().err


def test_with_pixel_clean_on_an_ultrasound_comes_back_with_its_burned_in_text_blacked_out(tmp_path: Path) -> None:
    import shutil

    pytest.importorskip("pytesseract", reason="pixel clean needs `pip install 'dicomframe[ocr]'` (pytesseract)")
    if shutil.which("tesseract") is None:
        pytest.skip("pixel clean needs the tesseract program: `apt-get install tesseract-ocr` (or `make install`)")
    ultrasound = SENT[4]
    gw = _start(tmp_path, "--pixel-clean", "auto")  # the option given last wins over _start's "off"
    try:
        answer = httpx.post(
            f"{gw.url}/v1/anonymize", content=ultrasound.read_bytes(),
            headers={"Content-Type": "application/dicom"}, timeout=600,
        )  # fmt: skip
    finally:
        _stop(gw.process)
    assert answer.status_code == 200, answer.text
    new, old = pydicom.dcmread(io.BytesIO(answer.content)), pydicom.dcmread(ultrasound)
    assert new.BurnedInAnnotation == "NO" and "113101" in {i.CodeValue for i in new.DeidentificationMethodCodeSequence}
    assert new.PixelData != old.PixelData


def test_a_vault_that_cannot_be_written_answers_500_without_the_error_text(strict_gateway: Gateway) -> None:
    vault, aside = strict_gateway.vault, strict_gateway.root / "vault-aside"
    if vault.exists():
        vault.rename(aside)
    # the mapping cannot be written: the vault leads into a file (a vault that is a file is
    # refused before any work, as a setting; this one shows only when written to)
    blocker = strict_gateway.root / "blocker"
    blocker.write_text("not a folder")
    vault.symlink_to(blocker / "vault")
    try:
        answer = httpx.post(
            f"{strict_gateway.url}/v1/anonymize", content=CT.read_bytes(), headers={"Content-Type": "application/dicom"}
        )
    finally:
        vault.unlink()
        blocker.unlink()
        if aside.exists():
            aside.rename(vault)
    assert answer.status_code == 500 and answer.json()["error"] == "vault"
    assert str(strict_gateway.root) not in answer.text  # the error's message names the vault's path
    _no_upload_left(strict_gateway)
    log = strict_gateway.log.read_text()
    assert "anonymize failed: vault (VaultError at vault.py" in log
    _no_planted_value_in(log.encode())


@contextlib.contextmanager
def _served(app: Any) -> Iterator[str]:
    """``app`` served by a uvicorn in a thread of this process, on loopback: its URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start in a thread")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_an_unexpected_error_answers_a_generic_500_and_is_logged_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The app in a uvicorn of this process, with one more route that fails as a bug would."""
    from dicomframe.gateway.http import GatewaySettings, create_app

    key = tmp_path / "project.key"
    generate_key_file(key)
    app = create_app(GatewaySettings(str(tmp_path / "out"), key=str(key), vault=str(tmp_path / "vault")))

    @app.get("/v1/fails")
    def fails() -> None:
        raise ValueError("Doe^Jane^Marie MRN1234567")  # an exception quoting values, as a bug may

    with caplog.at_level("INFO", logger="dicomframe.gateway"), _served(app) as url:
        answer = httpx.get(f"{url}/v1/fails")
    assert answer.status_code == 500 and answer.json()["error"] == "internal"
    assert "Doe" not in answer.text and "MRN" not in answer.text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "internal error: ValueError at http.py" in logged and "raised in test_gateway.py" in logged
    assert "GET /v1/fails 500" in logged
    assert "Doe" not in logged and "MRN" not in logged


def test_uploads_beyond_those_let_wait_are_refused_at_once_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One file de-identifying (held), one waiting: a third is 503 before its body is read."""
    from dicomframe.gateway.http import RETRY_AFTER, GatewaySettings, create_app

    key = tmp_path / "project.key"
    generate_key_file(key)
    settings = GatewaySettings(
        str(tmp_path / "out"), key=str(key), vault=str(tmp_path / "vault"), pixel_clean="off",
        concurrency=1, max_waiting=1, temp_dir=str(tmp_path),
    )  # fmt: skip
    app = create_app(settings)
    gw = app.state.gateway
    inside, release = threading.Semaphore(0), threading.Event()
    real = gw.anonymize

    def held(work: str) -> Any:
        inside.release()
        assert release.wait(60)
        return real(work)

    gw.anonymize = held
    data = CT.read_bytes()
    answers: list[httpx.Response] = []
    with caplog.at_level("INFO", logger="dicomframe.gateway"), _served(app) as url:

        def send() -> httpx.Response:
            return httpx.post(f"{url}/v1/anonymize", content=data, headers={"Content-Type": "application/dicom"}, timeout=120)

        senders = [threading.Thread(target=lambda: answers.append(send())) for _ in range(2)]
        for sender in senders:
            sender.start()
        assert inside.acquire(timeout=60) and inside.acquire(timeout=60)  # both in: the slot is held twice over
        busy = send()
        release.set()
        for sender in senders:
            sender.join(120)
        after = send()  # the two ended: taken in again
    assert busy.status_code == 503 and busy.json()["error"] == "busy"
    assert busy.headers["retry-after"] == str(RETRY_AFTER) and "Retry-After" in busy.json()["detail"]
    assert [a.status_code for a in answers] == [200, 200] and after.status_code == 200
    assert gw.admitted == 0
    assert "refused with 503" in "\n".join(record.getMessage() for record in caplog.records)


def test_the_gateway_refuses_a_concurrency_or_waiting_limit_that_cannot_work(tmp_path: Path) -> None:
    from dicomframe.errors import UserInputError
    from dicomframe.gateway.http import GatewaySettings, create_app

    key = tmp_path / "project.key"
    generate_key_file(key)
    for limits, option in (({"concurrency": 0}, "--concurrency"), ({"max_waiting": -1}, "--max-waiting")):
        with pytest.raises(UserInputError, match=option):
            create_app(GatewaySettings(str(tmp_path / "out"), key=str(key), vault=str(tmp_path / "vault"), **limits))


def test_uploads_left_by_a_killed_gateway_are_removed_by_the_next(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    tmp = tmp_path / "tmp"
    stale = tmp / f"dicomframe-gateway-{gone.pid}-abc" / "xyz" / "in"
    stale.mkdir(parents=True)
    (stale / "upload.dcm").write_bytes(CT.read_bytes())
    running = tmp / f"dicomframe-gateway-{os.getpid()}-abc"  # a running process's spool: left alone
    running.mkdir()
    gw = _start(tmp_path)
    try:
        assert sorted(p.name for p in tmp.iterdir() if "abc" in p.name) == [running.name]
        answer = httpx.post(f"{gw.url}/v1/anonymize", content=CT.read_bytes(), headers={"Content-Type": "application/dicom"})
        assert answer.status_code == 200
    finally:
        _stop(gw.process)
    assert gw.process.returncode == 0
    assert [p.name for p in tmp.iterdir()] == [running.name]  # its own spool went at shutdown
    assert "removed 1 upload folder(s)" in gw.log.read_text()


def test_a_warning_is_logged_by_category_and_place_never_its_text(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from dicomframe.gateway.http import quiet_warnings

    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="dicomframe.gateway"):
        warnings.simplefilter("always")
        quiet_warnings()
        warnings.warn("Invalid value for VR DA: 'Doe^Jane^Marie'", UserWarning, stacklevel=1)
    assert "UserWarning at test_gateway.py" in caplog.text and "Doe" not in caplog.text
    assert "Doe" not in capsys.readouterr().err
