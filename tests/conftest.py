"""Test-session settings.

Four host devices let the multi-device tests run on the CPU; they must be
set before JAX is first imported. float64 is switched on here, as every
entry point of the suite does (library modules never flip it themselves).
"""

import os

# The suite's time is mostly XLA compilation of small programs (a fit's Hessian takes
# seconds to compile, milliseconds to run): LLVM's optimisation level 0 cuts the compile
# time by a third (measured: 65 s -> 42 s of a binned-fit test's 90 s, which took 68 s),
# and CLI subprocesses inherit it.
# Library runs keep XLA's default level.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Under pytest-xdist (make test: one worker per core) each worker gets its share of
# the cores for torch's OpenMP pool, and so do the CLI subprocesses it starts. Two
# workers with a full pool each oversubscribe the cores, and OpenMP's spinning threads
# then cost several times the work (a flow-training test: 21 s alone, 111 s so).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

# Identical XLA programs (same model, same shapes, new closures) compile once
# per session instead of once per fit. Through the environment, spawned pool
# and Dask workers share the cache (they start with float64 on, see pwa.parallel).
import tempfile  # noqa: E402

os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="pwa-jax-cache-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


import pytest  # noqa: E402


def pytest_unconfigure(config):
    """The compilation cache is this session's alone: remove it (workers have stopped by now)."""
    import shutil

    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def small_card() -> dict:
    """A three-resonance K+K- card (S and D waves, S-S interference) for CLI-level tests."""
    import copy

    from _shared import SMALL_CARD

    return copy.deepcopy(SMALL_CARD)
