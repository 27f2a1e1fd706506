"""Executors: what maps the chunk function over chunk tasks, in this process or a pool of worker
processes, and survives a worker that dies.

Any object with ``map_unordered(fn, tasks)`` and ``close(cancel)`` can run a metric run's chunks
(the Dask executor in :mod:`qualmet.dask_executor` is one more).
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Protocol

_NO_TASK = object()  # end of an executor's task iterator


class Executor(Protocol):
    """Maps a picklable function over picklable tasks, yielding (task, result or exception) as they finish.

    ``tasks`` may be a generator: an executor takes a task only when it has room for it, so the
    tasks of a large run are never all in memory at once."""

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]: ...

    def close(self, cancel: bool = False) -> None: ...


class SerialExecutor:
    """Runs tasks in this process, in order (workers=1, debugging, tests)."""

    def map_unordered(self, fn, tasks):
        for t in tasks:
            try:
                yield t, fn(t)
            except Exception as exc:  # noqa: BLE001 - reported per chunk, the run goes on
                yield t, exc

    def close(self, cancel: bool = False) -> None:
        pass


def _worker_init(parent: int) -> None:
    """Ctrl-C is handled once, by the parent; and a worker ends with its parent: if the parent is
    killed (SIGKILL, SIGTERM), orphaned workers would otherwise wait forever, holding its stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # not Linux: orphans end when their next task never comes
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


class WorkerDied(RuntimeError):
    """A worker process ended abruptly (killed, out of memory, a crash in native code) while it ran
    this task alone, so the task itself is the cause."""


def is_killed_worker(res: Any) -> bool:
    """Dask's report of a task that kept killing its workers (it also hits tasks merely queued there)."""
    return type(res).__name__ == "KilledWorker"


def is_worker_death(res: Any) -> bool:
    return isinstance(res, WorkerDied) or is_killed_worker(res)


def _how_ended(procs: list) -> str:
    """' (killed by signal 9, SIGKILL)' or ' (exit code 3)' for the first of ``procs`` that ended badly."""
    import signal

    for p in procs:
        c = p.exitcode
        if c is None or c == 0:
            continue
        if c < 0 and -c in signal.valid_signals():
            return f" (killed by signal {-c}, {signal.Signals(-c).name})"
        return f" (exit code {c})"
    return ""


class LocalExecutor:
    """A pool of worker processes on this machine; at most ``2 * workers`` tasks in flight.

    A worker that dies (SIGKILL, the out-of-memory killer, a segfault in a plugin's native code)
    breaks the whole pool, and every task in flight fails with it. The pool is then restarted and
    each of those tasks is run again alone: the ones that finish give their results, the one that
    kills its worker again gives :class:`WorkerDied`, and the remaining tasks go on in parallel."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = self._new_pool()

    def _new_pool(self, workers: int | None = None) -> ProcessPoolExecutor:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        return ProcessPoolExecutor(max_workers=workers or self.workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(os.getpid(),))

    def _restart(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._new_pool()

    def _alone(self, fn, t):
        """Run ``t`` in a pool of its own with one process: if that process dies, ``t`` killed it, and
        its exit status is the one reported (a shared pool SIGTERMs its other workers on a break)."""
        pool = self._new_pool(1)
        try:
            pool.submit(os.getpid).result()  # the process exists now, before the task can kill it
            try:  # the pool's process table (private), read before a break can clear it
                procs = list((pool._processes or {}).values())
            except Exception:  # noqa: BLE001 - only for the message
                procs = []
            f = pool.submit(fn, t)
            exc = f.exception()
            if isinstance(exc, BrokenProcessPool):
                pool.shutdown(wait=True)  # reaps the process, so its exit status is known
                return WorkerDied(f"worker process died{_how_ended(procs)}")
            return exc if exc is not None else f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def map_unordered(self, fn, tasks):
        pending = iter(tasks)
        running: dict[Any, Any] = {}
        more = True
        while True:
            broken: list[Any] = []
            while more and len(running) < 2 * self.workers:
                t = next(pending, _NO_TASK)
                if t is _NO_TASK:
                    more = False
                    break
                try:
                    running[self.pool.submit(fn, t)] = t
                except BrokenProcessPool:  # a worker died since the last look
                    broken.append(t)
                    break
            if not running and not broken:
                break
            if not broken:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                if not any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    for f in done:
                        t = running.pop(f)
                        exc = f.exception()
                        yield t, (exc if exc is not None else f.result())
                    continue
            # The pool is broken: every task still in it fails too, and which one killed its worker
            # is unknown. Finished results are kept; the others are run again one at a time.
            wait(list(running))
            for f, t in list(running.items()):
                exc = f.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken.append(t)
                else:
                    yield t, (exc if exc is not None else f.result())
            running.clear()
            self._restart()
            for t in broken:
                yield t, self._alone(fn, t)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)

