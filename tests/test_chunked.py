"""Chunked NLL: value, gradient and Hessian through the chain rule equal the one-shot ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shared import FAST, TWO_STATE_CARD, flat_events, without_floats

from pwa.amplitude import Model
from pwa.chunked import ChunkedNLL, precompute_chunks, split_cache

CARD = without_floats(TWO_STATE_CARD)
DATA_CHUNK, MC_CHUNK = 400, 1200  # 900 = 2 * 400 + 100, 5000 = 4 * 1200 + 200


@pytest.fixture(scope="module")
def setup():
    """Lineshapes folded into the caches (cheap to compile; the chain rule does not care
    what the intensity depends on), MC summed per event, chunk by chunk."""
    model = Model.from_card(CARD)
    data_ev, mc_ev = flat_events(900, 3, weighted=True), flat_events(5000, 4, weighted=True)
    data, mc = model.precompute(data_ev), model.precompute(mc_ev)
    p = jnp.asarray(model.initial_values()) * 1.02

    def vgh(q, d, m):
        return model.nll(q, d, m), jax.grad(model.nll)(q, d, m), jax.hessian(model.nll)(q, d, m)

    ref = [np.asarray(x) for x in jax.jit(vgh, compiler_options=FAST)(p, data, mc)]
    nll = ChunkedNLL.from_caches(model, data, mc, MC_CHUNK, data_chunk_size=DATA_CHUNK,
                                 compiler_options=FAST)
    return model, data_ev, mc_ev, data, mc, p, ref, nll


def _check(got, ref):
    assert abs(float(got[0]) - float(ref[0])) <= 1e-10 * abs(float(ref[0]))
    for a, b in zip(got[1:], ref[1:]):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-10 * np.abs(b).max())


def test_split_cache_pads_with_zero_weights(setup):
    mc = setup[4]
    chunks = split_cache(mc, MC_CHUNK)
    assert len(chunks) == 5 and all(c.ang_re.shape[-1] == MC_CHUNK for c in chunks)
    assert np.count_nonzero(chunks[-1].weights) == 200
    np.testing.assert_allclose(sum(c.weights.sum() for c in chunks), np.asarray(mc.weights).sum())


def test_chunked_value_gradient_hessian_equal_one_shot(setup):
    *_, p, ref, nll = setup
    assert len(nll.data_chunks) == 3 and len(nll.mc_chunks) == 5
    _check(nll.value_grad_hessian(p), ref)
    _check(nll.value_and_grad(p), ref[:2])


def test_precompute_chunks_never_builds_the_full_cache(setup):
    """Chunks built piece by piece (same chunk sizes: the compiled programs are reused)."""
    model, data_ev, mc_ev, *_, p, ref, nll = setup
    built = ChunkedNLL(model, precompute_chunks(model, data_ev, DATA_CHUNK),
                       precompute_chunks(model, mc_ev, MC_CHUNK), compiler_options=FAST)
    built._data, built._mc = nll._data, nll._mc  # same shapes: share the compiled programs
    _check(built.value_grad_hessian(p), ref)


def test_unequal_chunks_rejected(setup):
    model, _, _, data, mc, *_ = setup
    with pytest.raises(ValueError, match="differ in size"):
        ChunkedNLL(model, split_cache(data, 900), split_cache(mc, 1000)[:1] + split_cache(mc, 2500)[:1])
