"""Running many independent fits: toys, multi-start, scans, closure toys.

Three executors behind one function, :func:`map_tasks`:

* ``"serial"``: in this process (debugging, tiny jobs);
* ``"process"`` (default): a local process pool. Workers are *spawned*, not
  forked, because a forked JAX runtime is not safe; each worker switches on
  float64 before running a task;
* ``"dask"``: a Dask cluster (``scheduler`` address), or a LocalCluster when
  no address is given, for users who outgrow one machine.

Tasks are ``fn(item)`` with ``fn`` a picklable module-level function, or
``fn(shared, item)`` when a ``shared`` object is given (a fit problem common
to every task: sent once per worker, not once per task); results come back
in the order of ``items``.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

EXECUTORS = ("serial", "process", "dask")


def check_executor(executor: str) -> str:
    """``executor`` itself if it is one of :data:`EXECUTORS`, else ValueError naming them.

    Call it before expensive set-up so that a typo fails at once.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    return executor


#: Marks "no shared object" (None is a valid shared object).
_NOTHING: Any = object()

#: The shared object of a process-pool worker, set by its initializer.
_worker_shared: Any = _NOTHING


def _init_worker(shared: Any = _NOTHING) -> None:
    global _worker_shared
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    _worker_shared = shared


def _call(fn: Callable[..., Any], item: Any, shared: Any = _NOTHING) -> Any:
    return fn(item) if shared is _NOTHING else fn(shared, item)


def _call_pool_shared(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_worker_shared, item)


def _run_x64(fn: Callable[..., Any], item: Any, shared: Any = _NOTHING) -> Any:
    _init_worker()
    return _call(fn, item, shared)


def map_tasks(fn: Callable[..., Any], items: Iterable[Any], *, executor: str = "process",
              workers: int | None = None, scheduler: str | None = None,
              on_result: Callable[[int, Any], None] | None = None, shared: Any = _NOTHING) -> list[Any]:
    """Apply ``fn`` to every item on the chosen executor.

    Args:
        fn: picklable function of one item, or of (shared, item) when
            ``shared`` is given.
        items: task inputs.
        executor: ``"serial"``, ``"process"`` or ``"dask"``.
        workers: processes (process pool, LocalCluster); default: one per
            item, at most the CPU count.
        scheduler: Dask scheduler address (``tcp://host:8786``); None starts
            a LocalCluster.
        on_result: called as ``on_result(index, result)`` as each task ends
            (progress bars, checkpointing finished toys).
        shared: an object every task needs (large event caches): pickled
            once per pool worker (its initializer), broadcast once to the
            Dask workers (scatter), instead of once per task.

    Returns:
        Results in the order of ``items``.
    """
    items = list(items)
    check_executor(executor)
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    if executor == "serial" or (executor == "process" and (workers == 1 or len(items) == 1)):
        for i, item in enumerate(items):
            results[i] = _call(fn, item, shared)
            if on_result:
                on_result(i, results[i])
        return results
    if executor == "process":
        n = workers or min(len(items), os.cpu_count() or 1)
        task = fn if shared is _NOTHING else functools.partial(_call_pool_shared, fn)
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=() if shared is _NOTHING else (shared,)) as pool:
            futures = {pool.submit(task, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if on_result:
                    on_result(i, results[i])
        return results
    return _map_dask(fn, items, workers, scheduler, on_result, results, shared)


def _map_dask(fn, items: Sequence[Any], workers, scheduler, on_result, results, shared):
    try:
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise ValueError("executor 'dask' needs dask[distributed]: pip install 'pwa-fastsim[dask]'") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or min(len(items), os.cpu_count() or 1),
                               threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        kwargs = {}
        if shared is not _NOTHING:
            kwargs["shared"] = client.scatter(shared, broadcast=True, hash=False)
        futures = client.map(_run_x64, [fn] * len(items), items, pure=False, **kwargs)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in dask_completed(futures):
            i = index[fut.key]
            results[i] = fut.result()
            if on_result:
                on_result(i, results[i])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results
