"""Running many independent fits: toys, multi-start, scans, closure toys.

Three executors behind one function, :func:`map_tasks`:

* ``"serial"``: in this process (debugging, tiny jobs);
* ``"process"`` (default): a local process pool. Workers are *spawned*, not
  forked, because a forked JAX runtime is not safe; each worker switches on
  float64 before running a task;
* ``"dask"``: a Dask cluster (``scheduler`` address), or a LocalCluster when
  no address is given, for users who outgrow one machine.

Tasks are ``fn(item)`` with ``fn`` a picklable module-level function; results
come back in the order of ``items``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

EXECUTORS = ("serial", "process", "dask")


def _init_worker() -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)


def _run_x64(fn: Callable[[Any], Any], item: Any) -> Any:
    _init_worker()
    return fn(item)


def map_tasks(fn: Callable[[Any], Any], items: Iterable[Any], *, executor: str = "process",
              workers: int | None = None, scheduler: str | None = None,
              on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Apply ``fn`` to every item on the chosen executor.

    Args:
        fn: picklable function of one item.
        items: task inputs.
        executor: ``"serial"``, ``"process"`` or ``"dask"``.
        workers: processes (process pool, LocalCluster); default: CPU count.
        scheduler: Dask scheduler address (``tcp://host:8786``); None starts
            a LocalCluster.
        on_result: called as ``on_result(index, result)`` as each task ends
            (progress bars, checkpointing finished toys).

    Returns:
        Results in the order of ``items``.
    """
    items = list(items)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    if executor == "serial" or (executor == "process" and (workers == 1 or len(items) == 1)):
        for i, item in enumerate(items):
            results[i] = fn(item)
            if on_result:
                on_result(i, results[i])
        return results
    if executor == "process":
        n = workers or min(len(items), os.cpu_count() or 1)
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if on_result:
                    on_result(i, results[i])
        return results
    return _map_dask(fn, items, workers, scheduler, on_result, results)


def _map_dask(fn, items: Sequence[Any], workers, scheduler, on_result, results):
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
        futures = client.map(_run_x64, [fn] * len(items), items, pure=False)
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
