"""Scale out with Dask: a real local cluster (two worker processes on 127.0.0.1) gives the
local engine's tables and outputs, byte for byte; errors on the workers come back clear."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason="distributed is not installed: pip install -e '.[test]' (or '.[dask]')"
)

import dicomframe.pipeline
from dicomframe.cli import main
from dicomframe.distributed import dask_client, dask_map
from dicomframe.errors import DicomframeError, StorageError, UserInputError
from dicomframe.keys import ProjectKey, generate_key_file, load_key
from dicomframe.pipeline import deidentify
from dicomframe.scanner import scan

from .conftest import ROOT, SAMPLES

KEY = ProjectKey.from_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def cluster(s3_server: str) -> Iterator[Any]:
    """Two worker processes of one thread each, on loopback; a worker that dies once fails its task.

    Started after the S3 server: the workers read its credentials and endpoint from the
    environment they inherit (none is sent with the work)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), _local_cluster(2) as running:
        yield running


@contextlib.contextmanager
def _local_cluster(workers: int) -> Iterator[Any]:
    """A LocalCluster on loopback without a dashboard.

    Without one, its scheduler still serves /health and /metrics, on port 8787 by default:
    on a free port instead, so that another cluster on this machine is no conflict."""
    with distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster, set_as_default=False) as connected:
        yield connected


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative name."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _same_batch(local: Path, remote: Path) -> None:
    """Every output byte-identical, same names; the manifests differ in their time only."""
    a, b = _digests(local), _digests(remote)
    assert sorted(a) == sorted(b)
    assert {k: v for k, v in a.items() if k != "manifest.json"} == {k: v for k, v in b.items() if k != "manifest.json"}
    ma, mb = (json.loads((root / "manifest.json").read_text()) for root in (local, remote))
    assert ma.pop("submitted_at") and mb.pop("submitted_at")
    assert ma == mb


def test_a_scan_on_dask_gives_the_local_tables(client: Any) -> None:
    local = scan(SAMPLES / "cohort", progress=False)
    remote = scan(SAMPLES / "cohort", progress=False, dask=client)
    assert remote.instances.height == 70
    assert remote.instances.equals(local.instances)
    assert remote.elements.equals(local.elements)
    assert remote.errors.equals(local.errors)


def test_damaged_files_scanned_on_dask_are_error_rows_with_the_paths_as_given(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a relative source: the workers have another working folder, the tables keep the paths given
    monkeypatch.chdir(ROOT)
    local = scan("data-samples/odd", progress=False)
    remote = scan("data-samples/odd", progress=False, dask=client)
    assert remote.errors.height == local.errors.height > 0
    assert remote.errors.equals(local.errors)
    assert remote.instances.equals(local.instances)
    assert all(not os.path.isabs(p) for p in remote.errors["path"].to_list() + remote.instances["path"].to_list())


@pytest.fixture(scope="module")
def batches(client: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path, Any]:
    root = tmp_path_factory.mktemp("dask-deid")
    local = deidentify(SAMPLES / "cohort", root / "local", key=KEY, vault=root / "vl", batch_id="b1", progress=False)
    remote = deidentify(
        SAMPLES / "cohort", root / "dask", key=KEY, vault=root / "vd", batch_id="b1", progress=False, dask=client
    )
    return root / "local" / "b1", local, root / "dask" / "b1", remote


def test_deidentify_on_dask_writes_the_local_engines_bytes(batches: tuple[Path, Any, Path, Any]) -> None:
    local_out, local, dask_out, remote = batches
    assert remote.ok and remote.committed and remote.written == local.written == 70
    _same_batch(local_out, dask_out)
    studies = json.loads((dask_out / "manifest.json").read_text())["studies"]
    assert len(studies) == 10
    # the workers' temporary folders are gone: outputs were published from here, after the gate
    assert not [p for p in dask_out.rglob(".*")], "temporary files left behind"


def test_a_batch_in_parts_on_dask_writes_the_same_bytes(
    client: Any, batches: tuple[Path, Any, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the workers' temporary folders are removed after each part, and made again for the next
    monkeypatch.setattr(dicomframe.pipeline, "PART_FILES", 25)
    result = deidentify(
        SAMPLES / "cohort", tmp_path / "out", key=KEY, vault=tmp_path / "v", batch_id="b1", progress=False, dask=client
    )
    assert result.ok and result.written == 70
    _same_batch(batches[0], tmp_path / "out" / "b1")
    assert not [p for p in (tmp_path / "out").rglob(".*")], "temporary files left behind"


@pytest.mark.s3
def test_an_s3_batch_on_dask_is_the_local_engines(client: Any, s3_bucket: str, batches: tuple[Path, Any, Path, Any], tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for path in sorted((SAMPLES / "cohort").rglob("*.dcm"))[:12]:
        fs.pipe_file(f"{s3_bucket}/in/{path.relative_to(SAMPLES / 'cohort')}", path.read_bytes())
    src = f"s3://{s3_bucket}/in"
    local_scan = scan(src, progress=False)
    remote_scan = scan(src, progress=False, dask=client)
    assert remote_scan.instances.height == 12
    assert remote_scan.instances.equals(local_scan.instances) and remote_scan.elements.equals(local_scan.elements)

    local = deidentify(src, f"s3://{s3_bucket}/local", key=KEY, vault=tmp_path / "vl", batch_id="b4", progress=False)
    remote = deidentify(
        src, f"s3://{s3_bucket}/dask", key=KEY, vault=tmp_path / "vd", batch_id="b4", progress=False, dask=client
    )
    assert local.ok and remote.ok and remote.written == 12
    objects = {
        prefix: {
            key.split(f"{prefix}/b4/", 1)[1]: hashlib.sha256(fs.cat_file(key)).hexdigest()
            for key in fs.find(f"{s3_bucket}/{prefix}/b4")
            if not key.endswith("manifest.json")
        }
        for prefix in ("local", "dask")
    }
    assert len(objects["dask"]) == 13 and objects["dask"] == objects["local"]


def test_a_damaged_input_on_dask_is_a_failed_row_and_the_rest_is_written(client: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cohort = sorted(p for p in (SAMPLES / "cohort").rglob("*.dcm"))[:6]
    for i, path in enumerate(cohort):
        (src / f"s{i}").mkdir(parents=True)
        shutil.copy(path, src / f"s{i}" / "image.dcm")
    for name in ("truncated_header.dcm", "empty.dcm"):
        shutil.copy(SAMPLES / "odd" / name, src / name)
    local = deidentify(src, tmp_path / "local", key=KEY, vault=tmp_path / "vl", batch_id="b2", progress=False)
    remote = deidentify(
        src, tmp_path / "dask", key=KEY, vault=tmp_path / "vd", batch_id="b2", progress=False, dask=client
    )
    assert remote.written == local.written == 6
    assert remote.failed == local.failed and {f["kind"] for f in remote.failed} == {"truncated", "empty"}
    assert not remote.ok and remote.committed
    _same_batch(tmp_path / "local" / "b2", tmp_path / "dask" / "b2")


def test_the_cli_runs_scan_and_deidentify_on_the_schedulers_address(
    cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = cluster.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    with pytest.raises(SystemExit) as exc:
        main(["scan", str(SAMPLES / "odd"), "-o", str(tmp_path / "odd.parquet"), "--no-progress", "--dask", address])
    assert exc.value.code == 1  # damaged files, as without --dask
    import polars as pl

    assert pl.read_parquet(tmp_path / "odd.errors.parquet").equals(scan(SAMPLES / "odd", progress=False).errors)

    key_file = tmp_path / "project.key"
    generate_key_file(key_file)
    src = tmp_path / "src"
    for i, path in enumerate(sorted((SAMPLES / "cohort").rglob("*.dcm"))[:5]):
        (src / f"s{i}").mkdir(parents=True)
        shutil.copy(path, src / f"s{i}" / "image.dcm")
    args = ["deidentify", str(src), str(tmp_path / "cli"), "--key-file", str(key_file), "--vault", str(tmp_path / "vc")]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--batch-id", "b3", "--no-progress", "--dask", address])
    assert exc.value.code in (0, None), capsys.readouterr()
    local = deidentify(
        src, tmp_path / "local", key=load_key(key_file), vault=tmp_path / "vl", batch_id="b3", progress=False
    )
    assert local.ok
    _same_batch(tmp_path / "local" / "b3", tmp_path / "cli" / "b3")


def test_memory_urls_are_refused_on_dask(client: Any, tmp_path: Path) -> None:
    import fsspec

    fsspec.filesystem("memory").pipe_file("/dask-test/a.dcm", (SAMPLES / "odd" / "empty.dcm").read_bytes())
    with pytest.raises(UserInputError, match="memory:// files live in this process only"):
        scan("memory://dask-test", progress=False, dask=client)
    with pytest.raises(UserInputError, match="memory:// files live in this process only"):
        deidentify(SAMPLES / "odd", "memory://dask-out", key=KEY, vault=tmp_path / "v", progress=False, dask=client)


def test_a_given_client_is_left_open_and_an_opened_one_is_closed(cluster: Any, client: Any) -> None:
    with dask_client(client) as used:
        assert used is client
    assert client.status == "running"
    with dask_client(cluster.scheduler_address) as opened:
        assert opened is not client and opened.status == "running"
    assert opened.status == "closed"


def _double_all(chunk: list[int]) -> list[int]:
    return [2 * x for x in chunk]


def test_dask_map_yields_in_order_with_few_futures_in_flight(client: Any) -> None:
    chunks = [[i, i + 1] for i in range(0, 40, 2)]
    seen: list[int] = []
    submitted: list[str] = []

    class Counting:  # the client, counting the chunks submitted (its own futures list forgets released ones)
        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            submitted.append(kwargs["key"])
            return client.submit(*args, **kwargs)

    for index, result in enumerate(dask_map(_double_all, chunks, Counting(), in_flight=3, what="test")):
        # submitted so far: this chunk's, the ones before it, and at most 3 whose results are not taken yet
        assert index < len(submitted) <= index + 1 + 3
        seen.extend(result)
    assert seen == [2 * x for x in range(40)]


def _refused(chunk: Any) -> Any:
    raise StorageError("access to s3://bucket was refused: check the credentials")


def _bug(chunk: Any) -> Any:
    raise ValueError("DOE^JANE")  # a bug whose message quotes a value from a file


def _die(chunk: Any) -> Any:
    os._exit(1)


def test_a_dicomframe_error_on_a_worker_is_raised_here_as_it_was(client: Any) -> None:
    with pytest.raises(StorageError, match="access to s3://bucket was refused"):
        list(dask_map(_refused, [[1]], client, what="test"))


def test_a_bug_on_a_worker_is_told_without_its_message(client: Any) -> None:
    with pytest.raises(DicomframeError) as exc:
        list(dask_map(_bug, [[1]], client, what="scan"))
    text = str(exc.value)
    assert "DOE" not in text and "JANE" not in text
    assert "internal error on a Dask worker during the scan (ValueError at tests/test_distributed.py:" in text
    assert "in _bug)" in text and "report it" in text
    # nor do the workers' logs: the task returned the error as a value, it did not raise there
    logs = client.get_worker_logs()
    assert logs and not any("JANE" in line for lines in logs.values() for _level, line in lines)


def test_a_worker_that_dies_is_a_clear_error(client: Any) -> None:
    # last in the file: the worker is restarted by its nanny
    with pytest.raises(DicomframeError, match="Dask workers died running a chunk of the scan") as exc:
        list(dask_map(_die, [[1]], client, what="scan"))
    assert "re-run the same command" in str(exc.value)


def test_a_dry_run_on_dask_plans_what_the_local_one_plans(client: Any, tmp_path: Path) -> None:
    local = deidentify(SAMPLES / "odd", tmp_path / "a", key=KEY, vault=tmp_path / "va", dry_run=True, progress=False)
    remote = deidentify(
        SAMPLES / "odd", tmp_path / "b", key=KEY, vault=tmp_path / "vb", dry_run=True, progress=False, dask=client
    )
    assert remote.plan.table.equals(local.plan.table) and remote.failed == local.failed
    assert not (tmp_path / "b").exists()


def test_workers_of_another_version_are_refused_before_any_work(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    real = importlib.metadata.version
    # this process claims another version; the workers answer with the installed one
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.0" if name == "dicomframe" else real(name))
    with pytest.raises(UserInputError, match=r"has dicomframe .*, this process 0\.0\.0: the outputs would not be"):
        scan(SAMPLES / "odd", progress=False, dask=client)


def test_a_scheduler_without_workers_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomframe.distributed

    monkeypatch.setattr(dicomframe.distributed, "WORKER_TIMEOUT_S", 1)
    with _local_cluster(0) as empty, pytest.raises(UserInputError, match="has no worker .*start some"):
        scan(SAMPLES / "odd", progress=False, dask=empty.scheduler_address)


def test_a_lost_cluster_is_told_with_what_to_do() -> None:
    from concurrent.futures import CancelledError

    from dicomframe.distributed import _cluster_error

    for exc in (CancelledError(), OSError("connection reset"), TimeoutError()):
        error = _cluster_error(exc, "de-identification")
        assert "lost the Dask cluster during the de-identification" in str(error)
        assert "the same --batch-id resumes" in str(error)
