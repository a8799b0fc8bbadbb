"""Executors for independent fits give the same results as a serial loop."""

import pytest

from pwa.parallel import map_tasks


def _square_in_float64(x):
    import jax.numpy as jnp

    y = jnp.asarray(x, dtype=jnp.float64) ** 2
    assert y.dtype == jnp.float64  # workers run with float64 switched on
    return float(y)


def test_serial_and_process_pool_agree():
    seen = []
    serial = map_tasks(_square_in_float64, [1.5, 2.0, 3.0], executor="serial")
    pooled = map_tasks(_square_in_float64, [1.5, 2.0, 3.0], executor="process", workers=2,
                       on_result=lambda i, r: seen.append(i))
    assert serial == pooled == [2.25, 4.0, 9.0]
    assert sorted(seen) == [0, 1, 2]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dask_local_cluster():
    pytest.importorskip("dask.distributed")
    res = map_tasks(_square_in_float64, [1.0, 2.0, 4.0], executor="dask", workers=2)
    assert res == [1.0, 4.0, 16.0]


def test_unknown_executor():
    with pytest.raises(ValueError, match="unknown executor 'mpi'"):
        map_tasks(_square_in_float64, [1.0], executor="mpi")
