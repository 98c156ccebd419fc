"""Cloud batches: object metadata, manifest.parquet, resume after a crash, transient faults, Azure, GCS.

Real services only: the moto S3 server, Azurite and fake-gcs-server (started by the
fixtures in conftest), plus a small fault-injecting reverse proxy defined here.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import polars as pl
import pytest

import dicomframe.apply
from dicomframe.errors import StorageError
from dicomframe.keys import ProjectKey, generate_key_file
from dicomframe.pipeline import deidentify

from .conftest import GCS_OPTIONS, SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted local run of the cohort (batch b1): what every other run must equal."""
    root = tmp_path_factory.mktemp("reference")
    result = deidentify(
        SAMPLES / "cohort", root / "out", key=KEY, vault=root / "vault", batch_id="b1", progress=False,
        manifest_parquet=True,
    )
    assert result.ok and result.written == 70
    return root / "out" / "b1"


def _local_objects(batch: Path) -> dict[str, bytes]:
    return {str(p.relative_to(batch)): p.read_bytes() for p in sorted(batch.rglob("*.dcm"))}


def _manifest_without_time(data: bytes) -> dict[str, Any]:
    manifest = json.loads(data)
    manifest.pop("submitted_at")
    return manifest


def _s3() -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def _s3_objects(bucket: str, prefix: str) -> dict[str, bytes]:
    fs = _s3()
    return {
        key.split(f"{prefix}/", 1)[1]: fs.cat_file(key)
        for key in sorted(fs.find(f"{bucket}/{prefix}"))
        if key.endswith(".dcm")
    }


# --- slice 1: content types and object metadata ------------------------------------------------


@pytest.mark.s3
def test_s3_objects_carry_content_type_and_batch_metadata(s3_bucket: str, tmp_path: Path) -> None:
    import boto3

    result = deidentify(
        SAMPLES / "cohort", f"s3://{s3_bucket}/batches", key=KEY, vault=tmp_path / "v", batch_id="b7",
        priority="stat", progress=False,
    )
    assert result.ok
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    dcm_key = result.outputs[0].split(f"s3://{s3_bucket}/", 1)[1]
    head = client.head_object(Bucket=s3_bucket, Key=dcm_key)
    assert head["ContentType"] == "application/dicom"
    assert head["Metadata"]["batch_id"] == "b7" and head["Metadata"]["priority"] == "STAT"
    assert head["Metadata"]["uploaded_at"].endswith("Z")
    manifest = client.head_object(Bucket=s3_bucket, Key="batches/b7/manifest.json")
    assert manifest["ContentType"] == "application/json"
    assert manifest["Metadata"]["batch_id"] == "b7"
    client.close()


@pytest.mark.parametrize(
    ("scheme", "server", "options"),
    [pytest.param("s3", "s3_server", None, marks=pytest.mark.s3), ("gs", "gcs_server", GCS_OPTIONS)],
)
def test_a_missing_bucket_fails_fast_naming_the_url(
    scheme: str, server: str, options: dict[str, Any] | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    request.getfixturevalue(server)
    started = time.perf_counter()
    with pytest.raises(StorageError, match=rf"{scheme}://no-such-bucket-x1 .*bucket or container exists"):
        deidentify(
            SAMPLES / "cohort", f"{scheme}://no-such-bucket-x1/batches", key=KEY, vault=tmp_path / "v",
            progress=False, storage_options=options,
        )  # fmt: skip
    assert time.perf_counter() - started < 5  # no retries for a permanent error
    assert not (tmp_path / "v").exists()


# --- slice 2: manifest.parquet -------------------------------------------------------------------


def test_manifest_parquet_has_one_row_per_file_with_its_sha256(reference: Path) -> None:
    table = pl.read_parquet(reference / "manifest.parquet")
    manifest = json.loads((reference / "manifest.json").read_text())
    assert table.height == manifest["total_images"] == 70
    assert table.columns == [
        "object_key", "bytes", "sha256", "cloud_study_id", "study_instance_uid", "series_instance_uid",
        "sop_instance_uid", "modality", "series_description", "pixel_clean",
    ]
    for key, size, digest in table.select("object_key", "bytes", "sha256").iter_rows():
        data = (reference / key).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
    assert sorted(table["object_key"]) == sorted(f for s in manifest["studies"] for f in s["files"])
    assert table["modality"].null_count() == 0
    planted = json.loads((SAMPLES / "PLANTED_PHI.json").read_text())
    originals = {u for p in planted["patients"].values() for u in p["study_instance_uids"] + p["sop_instance_uids"]}
    assert originals.isdisjoint(set(table["study_instance_uid"]) | set(table["sop_instance_uid"]))


# --- slice 3: resume after a crash -------------------------------------------------------------


def _crash_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """Make the apply step die (like a killed process) after ``budget`` files."""
    import threading

    original = dicomframe.apply.apply_chunk
    left = [budget]
    lock = threading.Lock()  # chunks run on several threads: take the budget atomically

    def crashing(items: Any, *args: Any) -> Any:
        with lock:
            part = list(items)[: left[0]]
            left[0] -= len(part)
        done = original(part, *args) if part else []
        if len(part) < len(items):
            raise RuntimeError("simulated crash")
        return done

    monkeypatch.setattr(dicomframe.apply, "apply_chunk", crashing)


@pytest.mark.parametrize("part_files", [None, 16], ids=["at-once", "in-parts"])
def test_a_local_rerun_after_a_crash_finishes_the_batch(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, part_files: int | None
) -> None:
    """Local outputs are published part by part, once the leak gate has passed them: a crash
    leaves the parts done before it visible (and resumed), and nothing of the part it hit."""
    kwargs: dict[str, Any] = {"key": KEY, "vault": tmp_path / "v", "batch_id": "b1", "progress": False, "manifest_parquet": True}
    if part_files is not None:  # 5 parts of 14: the crash comes in the third, two (28 files) are done
        monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", part_files)
    done = 0 if part_files is None else 28
    with monkeypatch.context() as patch:
        _crash_after(patch, 35)
        with pytest.raises(RuntimeError, match="simulated crash"):
            deidentify(SAMPLES / "cohort", tmp_path / "out", **kwargs)
    batch = tmp_path / "out" / "b1"
    assert not (batch / "manifest.json").exists() and len(list(batch.rglob("*.dcm"))) == done
    assert not [p for p in batch.rglob("*") if p.is_file() and not p.name.endswith(".dcm")]  # no temporary file left
    batch.mkdir(parents=True, exist_ok=True)
    (batch / ".stale.dcm.0000.tmp").write_bytes(b"half")  # what a kill -9 mid-write leaves behind
    result = deidentify(SAMPLES / "cohort", tmp_path / "out", **kwargs)
    assert result.ok and result.written == 70 and result.skipped == done
    if done:
        assert ("already there (resumed)", str(done)) in result.rows()
    assert not list(batch.rglob("*.tmp"))
    assert _local_objects(batch) == _local_objects(reference)
    assert _manifest_without_time((batch / "manifest.json").read_bytes()) == _manifest_without_time(
        (reference / "manifest.json").read_bytes()
    )
    assert pl.read_parquet(batch / "manifest.parquet").equals(pl.read_parquet(reference / "manifest.parquet"))


def test_a_rerun_with_another_option_writes_again_the_outputs_of_the_same_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming compares contents, not sizes: another ``--org`` of the same length gives
    outputs of the same size that must not be left as the crashed run wrote them."""
    import pydicom

    kwargs: dict[str, Any] = {"key": KEY, "vault": tmp_path / "v", "batch_id": "b1", "progress": False}
    monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", 16)  # 5 parts of 14: two published before the crash
    with monkeypatch.context() as patch:
        _crash_after(patch, 35)
        with pytest.raises(RuntimeError, match="simulated crash"):
            deidentify(SAMPLES / "cohort", tmp_path / "out", profile="cloud-upload", org="AAAA", **kwargs)
    batch = tmp_path / "out" / "b1"
    before = {p: p.stat().st_size for p in batch.rglob("*.dcm")}
    assert len(before) == 28
    result = deidentify(SAMPLES / "cohort", tmp_path / "out", profile="cloud-upload", org="BBBB", **kwargs)
    assert result.ok and result.written == 70 and result.skipped == 0
    assert all(p.stat().st_size == size for p, size in before.items())  # the premise: equal sizes
    for path in batch.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.InstitutionName == "BBBB" and ds.PatientID.startswith("BBBB-")


@pytest.mark.parametrize("part_files", [None, 16], ids=["at-once", "in-parts"])
def test_a_batch_id_that_holds_another_runs_outputs_is_not_committed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part_files: int | None
) -> None:
    """Re-using a batch id with another key would mix the pseudonyms of two keys in one batch."""
    from dicomframe.errors import UserInputError

    if part_files is not None:
        monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", part_files)
    kwargs: dict[str, Any] = {"batch_id": "b1", "progress": False}
    first = deidentify(SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "v", **kwargs)
    batch = tmp_path / "out" / "b1"
    manifest = (batch / "manifest.json").read_bytes()
    other = ProjectKey.from_bytes(bytes(range(1, 33)))
    # committed: refused before any work, whatever the parts
    with pytest.raises(UserInputError, match=r"is a committed batch .* made with other settings.*--batch-id"):
        deidentify(SAMPLES / "cohort", tmp_path / "out", key=other, vault=tmp_path / "v-other", **kwargs)
    assert (batch / "manifest.json").read_bytes() == manifest and len(list(batch.rglob("*.dcm"))) == 70
    # not committed (a run that stopped before its manifest): the outputs it left decide
    (batch / "manifest.json").unlink()
    wrote = "This run's outputs are not committed" if part_files else "This run wrote nothing"
    with pytest.raises(UserInputError, match=rf"holds 70 DICOM outputs that this run does not produce.*{wrote}.*--batch-id"):
        deidentify(SAMPLES / "cohort", tmp_path / "out", key=other, vault=tmp_path / "v-other", **kwargs)
    assert not (batch / "manifest.json").exists()
    written = len(list(batch.rglob("*.dcm")))
    # at once, it is known before writing (nothing written); in parts, once all are planned
    assert written == (70 if part_files is None else 140)
    if part_files is None:  # the same key and options again: every output already there
        again = deidentify(SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "v", **kwargs)
        assert again.ok and again.skipped == 70 and again.outputs == first.outputs


@pytest.mark.parametrize(
    "change",
    [{"profile": "research"}, {"profile": "cloud-upload", "org": "OTHER"}, {"pixel_clean": "off"}, {"org": "ACME2"}],
    ids=["profile", "profile+org", "pixel-clean", "org"],
)
def test_a_committed_batch_is_not_changed_by_a_run_with_other_settings(tmp_path: Path, change: dict[str, Any]) -> None:
    from dicomframe.errors import UserInputError

    kwargs: dict[str, Any] = {"key": KEY, "vault": tmp_path / "v", "batch_id": "b1", "progress": False}
    deidentify(SAMPLES / "cohort", tmp_path / "out", **kwargs)
    batch = tmp_path / "out" / "b1"
    before = {p: p.read_bytes() for p in sorted(batch.rglob("*")) if p.is_file()}
    mapping = sorted((tmp_path / "v").rglob("*"))
    with pytest.raises(UserInputError, match="committed batch"):
        deidentify(SAMPLES / "cohort", tmp_path / "out", **kwargs, **change)
    assert {p: p.read_bytes() for p in sorted(batch.rglob("*")) if p.is_file()} == before
    assert sorted((tmp_path / "v").rglob("*")) == mapping
    again = deidentify(SAMPLES / "cohort", tmp_path / "out", **kwargs)  # the same settings: nothing changes
    assert again.ok and again.skipped == 70


@pytest.mark.s3
@pytest.mark.parametrize("part_files", [None, 16], ids=["at-once", "in-parts"])
def test_an_s3_rerun_after_a_crash_uploads_only_what_is_missing(
    s3_bucket: str, tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, part_files: int | None
) -> None:
    prefix = f"batches-{part_files or 'all'}"
    dst = f"s3://{s3_bucket}/{prefix}"
    kwargs: dict[str, Any] = {"key": KEY, "vault": tmp_path / "v", "batch_id": "b1", "progress": False}
    if part_files is not None:  # a batch in parts: the crash comes in the third part
        monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", part_files)
    with monkeypatch.context() as patch:
        _crash_after(patch, 35)
        with pytest.raises(RuntimeError, match="simulated crash"):
            deidentify(SAMPLES / "cohort", dst, **kwargs)
    fs = _s3()
    assert not fs.exists(f"{s3_bucket}/{prefix}/b1/manifest.json")
    assert len(_s3_objects(s3_bucket, f"{prefix}/b1")) == 35
    result = deidentify(SAMPLES / "cohort", dst, **kwargs)
    assert result.ok and result.skipped == 35 and result.written == 70
    assert _s3_objects(s3_bucket, f"{prefix}/b1") == _local_objects(reference)
    assert _manifest_without_time(_s3().cat_file(f"{s3_bucket}/{prefix}/b1/manifest.json")) == _manifest_without_time(
        (reference / "manifest.json").read_bytes()
    )


# --- a fault-injecting reverse proxy ------------------------------------------------------------


#: headers that concern one connection only (RFC 9110 7.6.1): never forwarded
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "proxy-connection")
)


class FaultProxy:
    """HTTP reverse proxy on loopback: forwards to ``upstream``, answers 503 or drops the
    connection for a share of requests (seeded), optionally slows every request down."""

    def __init__(
        self,
        upstream: str,
        fault_rate: float = 0.0,
        delay: float = 0.0,
        max_faults: int = 500,
        methods: frozenset[str] = frozenset(("GET", "PUT", "POST", "HEAD", "DELETE")),
    ) -> None:
        self.methods = methods
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fault_rate, self.delay, self.max_faults = fault_rate, delay, max_faults
        self.counts = {"forwarded": 0, "503": 0, "dropped": 0}
        self._rng = random.Random(7)
        self._in_a_row = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                """The request body, byte for byte: per Content-Length, or de-chunked."""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline(1024)  # CRLF after each chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                # BaseHTTPRequestHandler has already answered "Expect: 100-continue" with 100
                body = self._body()
                if proxy.delay:
                    time.sleep(proxy.delay)
                fault = proxy.pick() if self.command in proxy.methods else "forwarded"
                if fault == "dropped":
                    self.close_connection = True
                    return
                if fault == "503":
                    err = b"<Error><Code>ServiceUnavailable</Code><Message>try again</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(err)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(err)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"expect"}}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))  # de-chunked: forwarded with its length
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body if body else None)
                    resp = conn.getresponse()
                    data = resp.read()  # de-chunked by http.client; empty for HEAD
                finally:
                    conn.close()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    # a HEAD answer keeps the upstream Content-Length: it is the size of the object
                    if k.lower() in _HOP_BY_HOP or (k.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def pick(self) -> str:
        with self._lock:
            faults = self.counts["503"] + self.counts["dropped"]
            roll = self._rng.random()
            # bounded: at most max_faults in all and (below a 100 % rate) two in a row
            in_a_row_ok = self.fault_rate >= 1 or self._in_a_row < 2
            if faults < self.max_faults and roll < self.fault_rate and in_a_row_ok:
                kind = "503" if roll < self.fault_rate / 2 else "dropped"
                self._in_a_row += 1
            else:
                kind = "forwarded"
                self._in_a_row = 0
            self.counts[kind] += 1
            return kind

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture()
def no_botocore_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries nothing: the retries that happen are dicomframe's (and s3fs' for resets)."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")


# --- slice 4: transient faults -----------------------------------------------------------------


@pytest.mark.s3
def test_a_service_that_keeps_failing_stops_with_a_clear_message(
    s3_bucket: str, s3_server: str, tmp_path: Path, no_botocore_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dicomframe.apply, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(dicomframe.apply, "RETRY_MAX_S", 0.02)
    with FaultProxy(s3_server, fault_rate=1.0) as proxy:
        proxy.fault_rate = 2.0  # every request: half 503, half dropped
        with pytest.raises(StorageError, match=rf"s3://{s3_bucket}.* after 5 attempts.*re-run the same command"):
            deidentify(
                SAMPLES / "cohort", f"s3://{s3_bucket}/batches", key=KEY, vault=tmp_path / "v", batch_id="b1",
                progress=False, storage_options={"endpoint_url": proxy.url, "skip_instance_cache": True},
            )



@pytest.mark.s3
def test_a_batch_through_a_flaky_network_completes_and_equals_the_local_batch(
    s3_bucket: str, s3_server: str, tmp_path: Path, reference: Path, no_botocore_retries: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dicomframe.apply, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(dicomframe.apply, "RETRY_MAX_S", 0.05)
    # every method faults (GET and LIST, HEAD, PUT): writes, the listing and the leak gate's read-back
    with FaultProxy(s3_server, fault_rate=0.2) as proxy:
        result = deidentify(
            SAMPLES / "cohort", f"s3://{s3_bucket}/batches", key=KEY, vault=tmp_path / "v", batch_id="b1",
            progress=False, storage_options={"endpoint_url": proxy.url, "skip_instance_cache": True},
        )
    assert result.ok and result.written == 70, result.rows()
    assert proxy.counts["503"] >= 5 and proxy.counts["dropped"] >= 5, proxy.counts
    assert _s3_objects(s3_bucket, "batches/b1") == _local_objects(reference)
    assert _manifest_without_time(_s3().cat_file(f"{s3_bucket}/batches/b1/manifest.json")) == _manifest_without_time(
        (reference / "manifest.json").read_bytes()
    )
    print("proxy counts:", proxy.counts)

# --- slice 3 (for real): kill -9 on S3 -----------------------------------------------------------


@pytest.mark.s3
def test_kill_9_during_an_s3_upload_then_rerun_gives_the_uninterrupted_batch(
    s3_bucket: str, s3_server: str, tmp_path: Path
) -> None:
    import boto3

    key_file = tmp_path / "project.key"
    key = generate_key_file(key_file)
    ref = deidentify(SAMPLES / "cohort", tmp_path / "ref", key=key, vault=tmp_path / "rv", batch_id="k1", progress=False)
    assert ref.ok
    dst = f"s3://{s3_bucket}/batches"
    cmd = [
        str(Path(sys.executable).with_name("dicomframe")), "deidentify", str(SAMPLES / "cohort"), dst,
        "--key-file", str(key_file), "--vault", str(tmp_path / "v"), "--batch-id", "k1", "--no-progress",
    ]
    client = boto3.client("s3", endpoint_url=s3_server)

    def uploaded() -> list[str]:
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="batches/k1/")
        return [o["Key"] for o in listing.get("Contents", [])]

    with FaultProxy(s3_server, delay=0.05) as proxy:  # slow enough to be caught mid-batch
        env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": proxy.url, "AWS_ENDPOINT_URL": proxy.url}
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while len(uploaded()) < 10 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(10)
    before = uploaded()
    assert process.returncode == -signal.SIGKILL
    assert 10 <= len(before) < 70 and "batches/k1/manifest.json" not in before
    rerun = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "already there (resumed)" in rerun.stdout
    client.close()
    assert _s3_objects(s3_bucket, "batches/k1") == _local_objects(tmp_path / "ref" / "k1")
    assert _manifest_without_time(_s3().cat_file(f"{s3_bucket}/batches/k1/manifest.json")) == _manifest_without_time(
        (tmp_path / "ref" / "k1" / "manifest.json").read_bytes()
    )


# --- slice 5: Azure Blob through Azurite ----------------------------------------------------------


@pytest.fixture()
def azure_container(azurite: str) -> Iterator[tuple[str, str]]:
    """A fresh container on Azurite: yields (container name, connection string)."""
    import uuid

    from azure.storage.blob import BlobServiceClient

    name = f"c{uuid.uuid4().hex[:12]}"
    with BlobServiceClient.from_connection_string(azurite) as service:
        service.create_container(name)
    yield name, azurite


def test_batch_to_azure_blob_matches_the_local_batch(
    azure_container: tuple[str, str], tmp_path: Path, reference: Path
) -> None:
    from azure.storage.blob import ContainerClient

    container, conn = azure_container
    result = deidentify(
        SAMPLES / "cohort", f"az://{container}/prefix", key=KEY, vault=tmp_path / "v", batch_id="b1",
        progress=False, storage_options={"connection_string": conn}, manifest_parquet=True,
    )
    assert result.ok and result.batch_uri == f"az://{container}/prefix/b1/"
    with ContainerClient.from_connection_string(conn, container) as client:
        objects = {
            blob.name.split("prefix/b1/", 1)[1]: client.download_blob(blob.name).readall()
            for blob in client.list_blobs(name_starts_with="prefix/b1/")
        }
        props = client.get_blob_client(result.outputs[0].split(f"az://{container}/", 1)[1]).get_blob_properties()
        manifest_props = client.get_blob_client("prefix/b1/manifest.json").get_blob_properties()
    assert {k: v for k, v in objects.items() if k.endswith(".dcm")} == _local_objects(reference)
    assert _manifest_without_time(objects["manifest.json"]) == _manifest_without_time(
        (reference / "manifest.json").read_bytes()
    )
    assert objects["manifest.parquet"] == (reference / "manifest.parquet").read_bytes()
    assert props.content_settings.content_type == "application/dicom"
    assert props.metadata["batch_id"] == "b1" and props.metadata["priority"] == "ROUTINE"
    assert manifest_props.content_settings.content_type == "application/json"


@pytest.mark.s3
def test_the_gate_on_bytes_put_to_s3_equals_the_gate_on_a_read_back(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects PUT now are checked on the body sent (an S3 PUT stores exactly it); the same
    findings as reading every object back."""
    from polars.testing import assert_frame_equal

    from dicomframe.profiles import Profile, Rule

    leaky = Profile.preset("default").with_rules(
        Rule(keyword="PatientName", action="K"), Rule(private_creator="ACME_HOSPITAL_PRIVATE", action="K")
    )
    runs = {}
    for name in ("inline", "read_back"):
        with monkeypatch.context() as patch:
            if name == "read_back":
                patch.setattr(dicomframe.apply, "_output_rows", lambda pieces, size: None)
            runs[name] = deidentify(
                SAMPLES / "cohort", f"s3://{s3_bucket}/{name}", key=KEY, vault=tmp_path / name, profile=leaky,
                batch_id="g1", progress=False,
            )  # fmt: skip
    inline, read_back = runs["inline"], runs["read_back"]
    assert inline.findings is not None and read_back.findings is not None
    assert inline.findings.height > 0 and not inline.committed and not read_back.committed
    assert_frame_equal(inline.findings, read_back.findings)


@pytest.mark.s3
def _upload_cohort(fs: Any, prefix: str) -> None:
    """Put every file of the sample cohort under ``prefix`` (``bucket/…``), keeping its relative name."""
    for path in sorted((SAMPLES / "cohort").rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{prefix}/{path.relative_to(SAMPLES / 'cohort').as_posix()}", path.read_bytes())


def test_a_cohort_read_from_s3_gives_the_local_batch(s3_bucket: str, tmp_path: Path, reference: Path) -> None:
    """SRC as an s3:// URL: the same outputs, byte for byte, as from the local folder."""
    _upload_cohort(_s3(), f"{s3_bucket}/incoming")
    result = deidentify(
        f"s3://{s3_bucket}/incoming", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b1", progress=False,
        manifest_parquet=True,
    )  # fmt: skip
    assert result.ok and result.written == 70
    batch = tmp_path / "out" / "b1"
    assert _local_objects(batch) == _local_objects(reference)
    assert _manifest_without_time((batch / "manifest.json").read_bytes()) == _manifest_without_time(
        (reference / "manifest.json").read_bytes()
    )


# --- slice 6: Google Cloud Storage through fake-gcs-server --------------------------------------


def _gcs() -> Any:
    import gcsfs

    return gcsfs.GCSFileSystem(skip_instance_cache=True, **GCS_OPTIONS)


def test_batch_to_gcs_matches_the_local_batch_and_a_rerun_uploads_nothing(
    gcs_bucket: str, tmp_path: Path, reference: Path
) -> None:
    """gs:// through gcsfs against a real server: the local batch's bytes, content types and
    object metadata; the same command again finds every object there and uploads none."""
    dst = f"gs://{gcs_bucket}/prefix"
    options: dict[str, Any] = {
        "key": KEY, "vault": tmp_path / "v", "batch_id": "b1", "progress": False, "manifest_parquet": True,
        "storage_options": GCS_OPTIONS,
    }  # fmt: skip
    result = deidentify(SAMPLES / "cohort", dst, **options)
    assert result.ok and result.written == 70 and result.batch_uri == f"{dst}/b1/"
    fs = _gcs()
    objects = {key.split("prefix/b1/", 1)[1]: fs.cat_file(key) for key in fs.find(f"{gcs_bucket}/prefix/b1")}
    assert {k: v for k, v in objects.items() if k.endswith(".dcm")} == _local_objects(reference)
    assert _manifest_without_time(objects["manifest.json"]) == _manifest_without_time(
        (reference / "manifest.json").read_bytes()
    )
    assert objects["manifest.parquet"] == (reference / "manifest.parquet").read_bytes()
    info = fs.info(result.outputs[0].split("://", 1)[1])
    assert info["contentType"] == "application/dicom"
    assert info["metadata"]["batch_id"] == "b1" and info["metadata"]["priority"] == "ROUTINE"
    assert fs.info(f"{gcs_bucket}/prefix/b1/manifest.json")["contentType"] == "application/json"
    again = deidentify(SAMPLES / "cohort", dst, **options)
    assert again.ok and again.skipped == 70 and again.outputs == result.outputs


def test_a_cohort_read_from_gcs_with_its_vault_on_gcs_gives_the_local_batch(
    gcs_bucket: str, tmp_path: Path, reference: Path
) -> None:
    """SRC and VAULT as gs:// URLs: the local batch's outputs, and the study re-identifies
    through the vault on GCS."""
    from dicomframe.vault import reidentify_study

    fs = _gcs()
    _upload_cohort(fs, f"{gcs_bucket}/incoming")
    vault = f"gs://{gcs_bucket}/vault"
    result = deidentify(
        f"gs://{gcs_bucket}/incoming", tmp_path / "out", key=KEY, vault=vault, batch_id="b1", progress=False,
        storage_options=GCS_OPTIONS,
    )  # fmt: skip
    assert result.ok and result.written == 70
    batch = tmp_path / "out" / "b1"
    assert _local_objects(batch) == _local_objects(reference)
    study = json.loads((batch / "manifest.json").read_bytes())["studies"][0]["cloud_study_id"]
    found = reidentify_study(vault, KEY, "b1", study, storage_options=GCS_OPTIONS)
    assert found["cloud_study_id"] == study and found["study_instance_uid"]
    assert not any(name.endswith(".dcm") for name in fs.find(f"{gcs_bucket}/vault"))  # the mapping only


# --- slice 7: large inputs uploaded a block at a time ---------------------------------------------


@pytest.fixture()
def streamed(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every input with pixel data leaves it on disk (however small) and is uploaded a block at
    a time; yields the count of such uploads."""
    import dicomframe._stream as stream

    from .test_large_inputs import leave_all_pixel_data_on_disk

    leave_all_pixel_data_on_disk(monkeypatch)
    monkeypatch.setattr(stream, "CHUNK", 64 << 10)
    uploads = {"streamed": 0}
    real = dicomframe.apply._put_stream

    def put_stream(*args: Any) -> None:
        uploads["streamed"] += 1
        real(*args)

    monkeypatch.setattr(dicomframe.apply, "_put_stream", put_stream)
    return uploads


def _store_objects(store: str, where: Any, prefix: str) -> dict[str, tuple[bytes, str, dict[str, str]]]:
    """name -> (bytes, content type, metadata) of the objects under ``prefix``."""
    found: dict[str, tuple[bytes, str, dict[str, str]]] = {}
    if store == "s3":
        import boto3

        client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        for key in sorted(_s3().find(f"{where}/{prefix}")):
            got = client.get_object(Bucket=where, Key=key.split("/", 1)[1])
            found[key.split(f"{prefix}/", 1)[1]] = (got["Body"].read(), got["ContentType"], got["Metadata"])
        client.close()
        return found
    if store == "gs":
        fs = _gcs()
        return {
            key.split(f"{prefix}/", 1)[1]: (fs.cat_file(key), fs.info(key)["contentType"], fs.info(key)["metadata"])
            for key in sorted(fs.find(f"{where}/{prefix}"))
        }
    from azure.storage.blob import ContainerClient

    container, conn = where
    with ContainerClient.from_connection_string(conn, container) as container_client:
        for blob in container_client.list_blobs(name_starts_with=f"{prefix}/", include=["metadata"]):
            found[blob.name.split(f"{prefix}/", 1)[1]] = (
                container_client.download_blob(blob.name).readall(), blob.content_settings.content_type,
                dict(blob.metadata),
            )  # fmt: skip
        return found


@pytest.mark.parametrize(
    "store", [pytest.param("s3", marks=pytest.mark.s3), "az", "gs"]
)
def test_inputs_uploaded_a_block_at_a_time_equal_the_local_batch(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, reference: Path, streamed: dict[str, int]
) -> None:
    """Inputs whose pixel data is read from the file while uploading (S3 multipart, Azure
    blocks, GCS resumable): the local batch's bytes, with content type and batch metadata."""
    if store == "s3":
        where: Any = request.getfixturevalue("s3_bucket")
        dst, options = f"s3://{where}/prefix", None
    elif store == "gs":
        where = request.getfixturevalue("gcs_bucket")
        dst, options = f"gs://{where}/prefix", GCS_OPTIONS
    else:
        where = request.getfixturevalue("azure_container")
        dst, options = f"az://{where[0]}/prefix", {"connection_string": where[1]}
    result = deidentify(
        SAMPLES / "cohort", dst, key=KEY, vault=tmp_path / "v", batch_id="b1", progress=False,
        storage_options=options, manifest_parquet=True,
    )  # fmt: skip
    assert result.ok and result.written == 70 and streamed["streamed"] > 40  # those without pixel clean
    objects = _store_objects(store, where, "prefix/b1")
    assert {k: v[0] for k, v in objects.items() if k.endswith(".dcm")} == _local_objects(reference)
    assert objects["manifest.parquet"][0] == (reference / "manifest.parquet").read_bytes()
    for name, (_, content_type, metadata) in objects.items():
        if name.endswith(".dcm"):
            assert content_type == "application/dicom"
            assert metadata["batch_id"] == "b1" and metadata["priority"] == "ROUTINE"


@pytest.mark.s3
def test_an_input_that_changes_during_its_multipart_upload_leaves_no_object(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12 MB image, uploaded in 8 MiB parts, whose pixel data changes after the first part:
    a failed input, no object, and the multipart upload aborted (nothing left to complete)."""
    import boto3

    import dicomframe._stream as stream

    from .test_large_inputs import _big

    monkeypatch.setattr(stream, "STREAM_BYTES", 4 << 20)
    big = tmp_path / "in" / "big.dcm"
    _big(big, frames=24)
    _big(tmp_path / "in" / "small" / "other.dcm", frames=1)  # below the threshold: uploaded whole
    real = stream.FileRange.chunks

    def chunks(self: stream.FileRange) -> Any:
        writing = self.digest is not None  # the second read: the upload
        for number, chunk in enumerate(real(self)):
            yield chunk
            if writing and number == 1:  # 8 MiB sent: the first part is up, 4 MiB to go
                with open(big, "r+b") as fh:
                    fh.seek(self.stop - 100)
                    fh.write(b"\x5a" * 50)

    monkeypatch.setattr(stream.FileRange, "chunks", chunks)
    import s3fs.core

    discarded: list[bool] = []
    discard = s3fs.core.S3File.discard

    def spy(self: Any) -> None:
        discarded.append(bool(self.mpu))  # a multipart upload was under way
        discard(self)

    monkeypatch.setattr(s3fs.core.S3File, "discard", spy)
    result = deidentify(
        tmp_path / "in", f"s3://{s3_bucket}/prefix", key=KEY, vault=tmp_path / "v", batch_id="b1", progress=False,
    )  # fmt: skip
    assert not result.ok and result.written == 1
    assert [f["kind"] for f in result.failed] == ["unreadable"]
    assert discarded == [True]
    assert len([k for k in _s3().find(f"{s3_bucket}/prefix") if k.endswith(".dcm")]) == 1
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    assert "Uploads" not in client.list_multipart_uploads(Bucket=s3_bucket)
    client.close()


@pytest.mark.s3
def test_large_inputs_read_from_s3_by_ranges_give_the_local_outputs(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large native and a large encapsulated image in a bucket: read by ranged GETs, their
    pixel data never held whole, and de-identified to the bytes a local source gives."""
    import dicomframe._stream as stream

    from .test_large_inputs import _big

    monkeypatch.setattr(stream, "STREAM_BYTES", 4 << 20)
    _big(tmp_path / "in" / "native.dcm", frames=24)
    _big(tmp_path / "in" / "encapsulated.dcm", frames=400, encapsulated=True)
    local = deidentify(tmp_path / "in", tmp_path / "local", key=KEY, vault=tmp_path / "v1", batch_id="b1", progress=False)
    fs = _s3()
    for path in (tmp_path / "in").iterdir():
        fs.put_file(str(path), f"{s3_bucket}/incoming/{path.name}")
    ranged: list[int] = []
    real = stream.load_remote

    def load_remote(size: int, fetch: Any) -> Any:
        loaded = real(size, fetch)
        ranged.append(loaded is not None)
        return loaded

    monkeypatch.setattr(stream, "load_remote", load_remote)
    remote = deidentify(
        f"s3://{s3_bucket}/incoming", tmp_path / "out", key=KEY, vault=tmp_path / "v2", batch_id="b1", progress=False,
    )  # fmt: skip
    assert local.ok and remote.ok and remote.written == 2
    assert ranged == [True, True]
    assert _local_objects(tmp_path / "out" / "b1") == _local_objects(tmp_path / "local" / "b1")


@pytest.mark.s3
def test_large_images_pixel_cleaned_from_s3_give_the_local_outputs(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pixel clean of a native and a JPEG cine loop in a bucket: frames read by ranged GETs
    (never the whole value), cleaned as a local source is."""
    pytest.importorskip("libjpeg", reason="JPEG needs pylibjpeg-libjpeg (extra `ocr`)")
    from .test_large_inputs import leave_all_pixel_data_on_disk
    from .test_large_pixel_clean import RULE, _image, _jpeg, count_streamed

    _image(tmp_path / "in" / "native.dcm", "mono12", frames=12, rows=256, cols=256)
    _jpeg(tmp_path / "in" / "cine.dcm", colour=True, frames=12, rows=256, cols=256)
    profile = tmp_path / "rule.toml"
    profile.write_text(RULE)
    options: dict[str, Any] = {"key": KEY, "batch_id": "b1", "progress": False, "profile": str(profile)}
    local = deidentify(tmp_path / "in", tmp_path / "local", vault=tmp_path / "v1", **options)
    fs = _s3()
    for path in (tmp_path / "in").iterdir():
        fs.put_file(str(path), f"{s3_bucket}/incoming/{path.name}")
    leave_all_pixel_data_on_disk(monkeypatch)
    used = count_streamed(monkeypatch)
    remote = deidentify(f"s3://{s3_bucket}/incoming", tmp_path / "out", vault=tmp_path / "v2", **options)
    assert local.ok and remote.ok and remote.written == 2
    assert used == [True, True]
    assert _local_objects(tmp_path / "out" / "b1") == _local_objects(tmp_path / "local" / "b1")
