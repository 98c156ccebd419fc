"""Run a function over chunks in worker processes, in order, with flat memory.

Used by the scan and by de-identification. Workers are forked from a fork
server that has preloaded the worker modules, so they start in milliseconds and
share the libraries' memory; while they start, this process works through
chunks from the end of the list itself, so the start-up time is not lost.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

from .errors import DicomframeError

__all__ = ["can_spawn_workers", "default_jobs", "ordered_map", "thread_map", "worker_context"]

T = TypeVar("T")
R = TypeVar("R")

#: modules the fork server imports once, before forking workers
PRELOAD = ["dicomframe._worker", "dicomframe.apply"]


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def can_spawn_workers() -> bool:
    """False when worker processes cannot re-import ``__main__`` (a script piped to stdin)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def worker_context() -> Any:
    """Processes for workers: a fork server that has preloaded the worker modules.

    Workers are forked from a clean server process (never from this one, which
    may run polars or rich threads).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def ordered_map(
    fn: Callable[..., R],
    chunks: Sequence[T],
    jobs: int,
    *args: Any,
    in_process: bool = False,
    what: str = "work",
) -> Iterator[R]:
    """``fn(chunk, *args)`` for every chunk, yielded in order.

    At most ``2 × jobs`` chunks are in flight, so memory stays flat. With
    ``in_process`` (or one job, one chunk, or no way to start workers) everything
    runs here.
    """
    if in_process or jobs <= 1 or len(chunks) <= 1 or not can_spawn_workers():
        for chunk in chunks:
            yield fn(chunk, *args)
        return
    try:
        yield from _pool_map(fn, chunks, jobs, args)
    except BrokenProcessPool:
        raise DicomframeError(
            f"a worker process died during the {what} (out of memory, or killed); nothing "
            "half-written is visible: re-run with fewer --jobs"
        ) from None


def thread_map(fn: Callable[[T], R], items: Sequence[T], threads: int) -> Iterator[R]:
    """``fn(item)`` for every item on ``threads`` threads of this process, yielded in order.

    For work that mostly waits (an object store's reads and writes). Work not started
    when the caller stops iterating is cancelled.
    """
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=max(1, min(threads, len(items))))
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(cancel_futures=True)


def _pool_map(fn: Callable[..., R], chunks: Sequence[T], jobs: int, args: tuple[Any, ...]) -> Iterator[R]:
    results: dict[int, R] = {}
    futures: dict[int, Future[R]] = {}
    next_submit = 0
    tail = len(chunks)  # chunks[tail:] are (being) done locally
    warming = True
    with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context()) as pool:

        def top_up() -> None:
            nonlocal next_submit
            while next_submit < tail and len(futures) < jobs * 2:
                futures[next_submit] = pool.submit(fn, chunks[next_submit], *args)
                next_submit += 1

        top_up()
        for index in range(len(chunks)):
            if index not in results:
                future = futures.pop(index)
                while warming and not future.done() and tail > next_submit:
                    tail -= 1
                    results[tail] = fn(chunks[tail], *args)
                warming = False
                results[index] = future.result()
                top_up()
            yield results.pop(index)
