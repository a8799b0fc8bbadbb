"""STREAM-like memory bandwidth of the current JAX device.

Used by the likelihood benchmark to turn "bytes moved per call" into a
fraction of what the machine can stream. Triad a = b + s * c on float64
arrays much larger than the caches; bandwidth counts 3 arrays moved.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def triad_bandwidth(n: int = 20_000_000, repeats: int = 10) -> dict:
    """Best-of-``repeats`` triad bandwidth in GB/s on the default device."""
    b = jnp.ones(n, dtype=jnp.float64)
    c = jnp.full(n, 2.0, dtype=jnp.float64)
    triad = jax.jit(lambda b, c: b + 3.0 * c)
    triad(b, c).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        triad(b, c).block_until_ready()
        times.append(time.perf_counter() - t0)
    best = min(times)
    moved = 3 * n * 8
    # Also a pure read (reduction): what a likelihood sum mostly does.
    red = jax.jit(lambda b: jnp.sum(b * b))
    red(b).block_until_ready()
    rt = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        red(b).block_until_ready()
        rt.append(time.perf_counter() - t0)
    return {
        "device": str(jax.devices()[0]),
        "n": n,
        "triad_GBps": moved / best / 1e9,
        "read_reduce_GBps": n * 8 / min(rt) / 1e9,
        "triad_seconds_best": best,
        "median_seconds": float(np.median(times)),
    }


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    import json

    print(json.dumps(triad_bandwidth(), indent=2))
