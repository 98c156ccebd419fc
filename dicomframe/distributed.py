"""Run the scan's and the de-identification's chunks on a Dask cluster, beyond one machine.

The same chunk mapping as :func:`dicomframe.parallel.ordered_map`, on the workers of a
``distributed`` cluster: chunks are submitted in order, at most ``2 ×`` the workers'
threads are in flight (memory stays flat on both sides), and results come back in
order, so the tables and outputs are the local engine's, byte for byte. Keyed
pseudonyms make the workers independent: a chunk needs nothing from another.

The workers read the sources and write the outputs themselves: the storage must be
reachable from every worker under the same name (a local path on a file system the
workers share, or an object-store URL), and each worker needs dicomframe installed,
of the same version as the client. Credentials are not sent: the workers read theirs
from their own environment, as each storage back-end does. The scan's results (every
header value of the inputs) and the inputs' paths travel between the client and the
workers: across a network, the cluster needs TLS (``tls://`` addresses).

Needs the ``dask`` extra (``pip install 'dicomframe[dask]'``); importing
:mod:`dicomframe` does not import it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from . import errors as _errors
from .errors import DicomframeError, MissingExtraError, UserInputError, innermost_frame

__all__ = ["check_workers", "dask_client", "dask_map", "total_threads"]

T = TypeVar("T")
R = TypeVar("R")

#: seconds to wait for the scheduler to answer
CONNECT_TIMEOUT_S = 10
#: seconds to wait for a first worker to join the scheduler
WORKER_TIMEOUT_S = 30
#: what the workers must have in the same version as the client: the outputs' bytes depend on them
SAME_VERSIONS = ("dicomframe", "pydicom")


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("Running on a Dask cluster (dask=, --dask)", "dask", "distributed") from None
    return distributed


def _is_client(obj: Any) -> bool:
    cls = type(obj)
    return cls.__name__ == "Client" and cls.__module__.split(".")[0] == "distributed"


@contextlib.contextmanager
def dask_client(dask: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``dask``: the client given, or one connected to an address.

    Parameters
    ----------
    dask
        A ``distributed.Client`` (used as it is, and left open), or the scheduler's
        address, such as ``"tcp://scheduler:8786"`` (a client is connected to it, and
        closed on leaving the block).

    Yields
    ------
    distributed.Client
        Connected, with at least one worker, whose dicomframe and pydicom are the
        client's versions (see :func:`check_workers`).

    Raises
    ------
    MissingExtraError
        ``distributed`` is not installed.
    UserInputError
        The scheduler cannot be reached, or has no worker.

    Examples
    --------
    >>> with dask_client("tcp://scheduler:8786") as client:  # doctest: +SKIP
    ...     total_threads(client)
    8
    """
    if _is_client(dask):
        check_workers(dask)
        yield dask
        return
    if not isinstance(dask, str | os.PathLike) or not os.fspath(dask).strip():
        raise UserInputError(
            "dask= takes a distributed.Client or the scheduler's address, such as tcp://scheduler:8786 "
            f"(got a {type(dask).__name__})"
        )
    address = os.fspath(dask).strip()
    distributed = _import_distributed()
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserInputError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}): check the address "
            "(e.g. tcp://scheduler:8786) and that the scheduler is running (`dask scheduler`)"
        ) from None
    try:
        check_workers(client, address)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _versions() -> dict[str, str]:
    """The versions of :data:`SAME_VERSIONS` in this process (runs on each worker too)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in SAME_VERSIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "(none)"
    return found


def check_workers(client: Any, address: str | None = None) -> None:
    """Refuse a cluster whose workers could not give the local engine's bytes.

    Waits (at most :data:`WORKER_TIMEOUT_S` seconds) for a first worker, then asks each
    worker for its versions of dicomframe and pydicom: they must be the client's.

    Raises
    ------
    UserInputError
        No worker joined in time, a worker cannot import dicomframe, or its versions differ.
    """
    where = address or getattr(getattr(client, "scheduler", None), "address", None) or "the scheduler"
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
    except (TimeoutError, OSError) as exc:
        raise UserInputError(
            f"the Dask scheduler at {where} has no worker ({type(exc).__name__} after {WORKER_TIMEOUT_S} s): "
            f"start some (`dask worker {where}`) on machines that reach the storage, then run again"
        ) from None
    try:
        found = client.run(_versions)
    except ImportError:
        raise UserInputError(_NOT_INSTALLED.format(where=where)) from None
    except Exception as exc:  # noqa: BLE001 - the cluster's own errors: told by type
        raise UserInputError(
            f"could not ask the Dask workers at {where} for their versions ({type(exc).__name__}): "
            "check the cluster (`dask worker` logs), then run again"
        ) from None
    ours = _versions()
    for worker, theirs in found.items():
        for name in SAME_VERSIONS:
            if theirs.get(name) != ours[name]:
                raise UserInputError(
                    f"the Dask worker {worker} has {name} {theirs.get(name)}, this process {ours[name]}: "
                    "the outputs would not be the local engine's bytes. Install the same versions on every "
                    "worker (`pip install 'dicomframe[dask]==<version>'`), then run again"
                )


_NOT_INSTALLED = (
    "the Dask workers at {where} cannot import dicomframe: install it on every worker, of the same "
    "version as here (`pip install 'dicomframe[dask]'`), then run again"
)


def total_threads(client: Any) -> int:
    """The worker threads of the cluster (at least 1): how many chunks run at once."""
    try:
        return max(1, sum(int(n) for n in client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a cluster that does not answer: the map will say so
        return 1


def _run_task(fn: Callable[..., R], chunk: Any, *args: Any) -> tuple[str, Any]:
    """Run ``fn(chunk, *args)`` on a worker; an error comes back as a value, told without PHI.

    A task that raised would be logged by the worker with its message and its arguments
    (file paths; folder names often hold patient names): nothing is raised here.
    ``("ok", result)``, ``("error", (class name, message))`` for a :class:`DicomframeError`
    (their messages hold no value from a file), ``("memory", None)`` or
    ``("bug", (type name, where))``.
    """
    try:
        return "ok", fn(chunk, *args)
    except DicomframeError as exc:
        return "error", (type(exc).__name__, str(exc))
    except MemoryError:
        return "memory", None
    except Exception as exc:  # noqa: BLE001 - a bug: its message may quote a value from a file
        last = innermost_frame(exc, skip=1)  # not this function's own frame
        where = ""
        if last is not None:
            folder = os.path.basename(os.path.dirname(last.filename))
            where = f" at {folder}/{os.path.basename(last.filename)}:{last.lineno} in {last.name}"
        return "bug", (type(exc).__name__, where)


def _raise_task_error(outcome: str, detail: Any, what: str) -> None:
    if outcome == "error":
        name, message = detail
        cls = getattr(_errors, name, None)
        if isinstance(cls, type) and issubclass(cls, DicomframeError):
            try:
                error = cls(message)
            except TypeError:  # a class with another signature: the message is what matters
                error = DicomframeError(message)
        else:
            error = DicomframeError(message)
        raise error
    if outcome == "memory":
        raise DicomframeError(
            f"a Dask worker ran out of memory during the {what}; nothing half-written is visible: give "
            "the workers more memory (or fewer threads each), then re-run the same command"
        )
    name, where = detail
    raise DicomframeError(
        f"internal error on a Dask worker during the {what} ({name}{where}). This is a bug in dicomframe: "
        "please report it with that line. Its message is not shown, as it may quote a value from a file; "
        "run the same command without --dask (and DICOMFRAME_DEBUG=1) to see the whole traceback"
    )


def _cluster_error(exc: BaseException, what: str) -> DicomframeError:
    """What a failure of the cluster itself (not of a task's code) means, and what to do."""
    name = type(exc).__name__
    resume = "nothing half-written is visible: re-run the same command (deidentify: the same --batch-id resumes)"
    if name == "KilledWorker":
        return DicomframeError(
            f"Dask workers died running a chunk of the {what}, several times (out of memory, or killed); "
            f"{resume}, after giving the workers more memory or fewer threads each"
        )
    if isinstance(exc, ImportError):
        return UserInputError(_NOT_INSTALLED.format(where="the scheduler"))
    if name in ("CancelledError", "FutureCancelledError", "CommClosedError") or isinstance(exc, OSError | TimeoutError):
        return DicomframeError(
            f"lost the Dask cluster during the {what} ({name}: the scheduler stopped or restarted, or the "
            f"connection to it broke); {resume}, once the scheduler is back"
        )
    return DicomframeError(
        f"a chunk of the {what} failed on the Dask cluster ({name}); {resume}, after looking at the "
        "workers' logs"
    )


def dask_map(
    fn: Callable[..., R],
    chunks: Sequence[T],
    client: Any,
    *args: Any,
    what: str = "work",
    in_flight: int | None = None,
) -> Iterator[R]:
    """``fn(chunk, *args)`` for every chunk on the Dask workers of ``client``, yielded in order.

    Parameters
    ----------
    fn
        A function importable on the workers (a module-level function of dicomframe).
    chunks
        The work, in order.
    client
        A connected ``distributed.Client`` (see :func:`dask_client`).
    *args
        Passed to every call after the chunk.
    what
        What the work is, for error messages (``"scan"``, ``"de-identification"``).
    in_flight
        Chunks submitted whose results were not taken yet, at most (default: twice
        the workers' threads, at least 2): memory stays flat however many chunks
        there are.

    Yields
    ------
    The results, in the order of ``chunks``. The chunks not yet done when the caller
    stops iterating (or on an error) are cancelled.

    Raises
    ------
    DicomframeError
        A worker died running a chunk again and again (``KilledWorker``), the cluster
        was lost, or a task failed: the message says what to do next and holds no value
        from a file. A :class:`DicomframeError` raised by ``fn`` on the worker is raised
        here, of the same class where it can be (so a :class:`StorageError` still exits 2).

    Examples
    --------
    >>> with dask_client("tcp://scheduler:8786") as client:  # doctest: +SKIP
    ...     list(dask_map(len, [[1, 2], [3]], client))
    [2, 1]
    """
    limit = max(2, in_flight or 2 * total_threads(client))
    token = uuid.uuid4().hex[:12]
    tag = what.replace(" ", "-")
    pending: collections.deque[Any] = collections.deque()
    submitted = 0

    def submit() -> None:
        nonlocal submitted
        pending.append(
            client.submit(_run_task, fn, chunks[submitted], *args, key=f"dicomframe-{tag}-{token}-{submitted}", pure=False)
        )
        submitted += 1

    try:
        try:
            while submitted < len(chunks) and len(pending) < limit:
                submit()
        except Exception as exc:  # noqa: BLE001 - the client could not reach the scheduler
            raise _cluster_error(exc, what) from None
        while pending:
            future = pending.popleft()
            try:
                outcome, detail = future.result()
                if submitted < len(chunks):
                    submit()  # the workers stay busy while this result is used
            except Exception as exc:  # noqa: BLE001 - the cluster's errors: told by type, with what to do
                raise _cluster_error(exc, what) from None
            finally:
                future.release()
            del future
            if outcome != "ok":
                _raise_task_error(outcome, detail, what)
            yield detail
            detail = None
    finally:
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(list(pending))
