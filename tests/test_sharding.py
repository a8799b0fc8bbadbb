"""Data-parallel NLL: identical results with 1, 2 and 4 (host) devices.

conftest.py gives the CPU four devices (XLA_FLAGS=--xla_force_host_platform_device_count=4).
Each device count compiles its own program, so the programs are compiled
with cheap LLVM settings (FAST) to keep the file quick on a loaded machine.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shared import FAST, TWO_STATE_CARD, flat_events, without_floats

from pwa.amplitude import Model
from pwa.caches import EventCache
from pwa.sharding import EVENT_AXIS, event_mesh, pad_cache, shard_cache, shard_problem

CARD = TWO_STATE_CARD
FIXED = without_floats(CARD)

N_DATA, N_MC = 1001, 4003  # not multiples of 2 or 4: the padding is exercised


def _vgh(model, hessian=True):
    """One program: NLL, gradient and (forward-over-reverse) Hessian, caches as arguments."""
    def f(p, data, mc):
        v, g = jax.value_and_grad(model.nll)(p, data, mc)
        return (v, g, jax.jacfwd(jax.grad(model.nll))(p, data, mc)) if hessian else (v, g)
    return jax.jit(f, compiler_options=FAST)


def _close(got, ref):
    assert abs(float(got[0]) - float(ref[0])) <= 1e-10 * abs(float(ref[0]))
    for a, b in zip(got[1:], ref[1:]):
        b = np.asarray(b)
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


@pytest.fixture(scope="module")
def folded():
    """Fixed lineshapes folded into both caches, MC summed per event (no matrix): every
    sum of the NLL runs over sharded events."""
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    model = Model.from_card(FIXED)
    data = model.precompute(flat_events(N_DATA, 1, weighted=True))
    mc = model.precompute(flat_events(N_MC, 2, weighted=True))
    p = jnp.asarray(model.initial_values()) * 1.01
    fn = _vgh(model)
    return model, data, mc, p, fn, fn(p, data, mc)


def test_pad_cache_keeps_weighted_sums(folded):
    model, data, mc, p, _, _ = folded
    padded = pad_cache(data, 4)
    assert padded.ang_re.shape[-1] == 1004 and padded.weights[-3:].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(padded.ang_re[..., -1], padded.ang_re[..., N_DATA - 1])
    assert pad_cache(mc, 1).weights.shape == (N_MC,)


@pytest.mark.parametrize("n_devices", [1, 2, 4])
def test_sharded_nll_gradient_hessian_match_single_device(folded, n_devices):
    model, data, mc, p, fn, ref = folded
    mesh = event_mesh(n_devices)
    sdata, smc = shard_cache(data, mesh), shard_cache(mc, mesh)
    assert sdata.ang_re.sharding.spec[-1] == EVENT_AXIS
    assert len(smc.weights.sharding.device_set) == n_devices
    assert smc.weights.shape[0] % n_devices == 0
    _close(fn(p, sdata, smc), ref)


def test_sharded_floating_lineshapes_and_normalisation_matrix():
    """Floating masses/widths (per-event lineshapes), and the replicated normalisation matrix."""
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices")
    mesh = event_mesh(4)
    floating = Model.from_card(CARD)
    data = floating.precompute(flat_events(N_DATA, 3))
    mc = floating.precompute(flat_events(N_MC, 4))
    p = jnp.asarray(floating.initial_values()) * 0.99
    fn = _vgh(floating, hessian=False)
    _close(fn(p, shard_cache(data, mesh), shard_cache(mc, mesh)), fn(p, data, mc))

    fixed = Model.from_card(FIXED)
    data = fixed.precompute(flat_events(N_DATA, 3))
    mc = fixed.precompute(flat_events(N_MC, 4), normalisation_matrix=True)
    smc = shard_cache(mc, mesh)
    assert smc.norm_re.sharding.is_fully_replicated
    q = jnp.asarray(fixed.initial_values())
    fn = _vgh(fixed, hessian=False)
    _close(fn(q, shard_cache(data, mesh), smc), fn(q, data, mc))


def test_shard_problem_replaces_only_caches(folded):
    @dataclasses.dataclass(frozen=True)
    class Problem:
        data_cache: EventCache
        mc_cache: EventCache
        n_data: int

    model, data, mc, p, fn, ref = folded
    prob = shard_problem(Problem(data, mc, N_DATA), event_mesh(4), caches=("data_cache", "mc_cache"))
    assert prob.n_data == N_DATA
    assert prob.mc_cache.weights.shape == (4004,)
    _close(fn(p, prob.data_cache, prob.mc_cache), ref)
