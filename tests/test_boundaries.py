"""The two worlds meet only in cli/: pwa never imports torch, fastsim never imports JAX."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, forbidden", [
    ("pwa", "torch"), ("pwa.fit", "torch"), ("pwa.scans", "torch"), ("pwa.sharding", "torch"),
    ("fastsim", "jax"), ("fastsim.events", "jax"), ("fastsim.events", "torch"),
    ("fastsim.generator", "jax"), ("fastsim.training", "jax"), ("fastsim.reweight", "jax"),
])
def test_module_does_not_import(module, forbidden):
    code = f"import sys, {module}; print({forbidden!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{module} imports {forbidden}"
