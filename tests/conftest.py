"""Test-session settings.

Four host devices let the multi-device tests run on the CPU; they must be
set before JAX is first imported. float64 is switched on here, as every
entry point of the suite does (library modules never flip it themselves).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

# Identical XLA programs (same model, same shapes, new closures) compile once
# per session instead of once per fit.
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="pwa-jax-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
