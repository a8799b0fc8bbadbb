"""The typed caches (pwa.caches): named fields, a static ``folded`` flag, pytrees that
pickle, and per-sample arrays that sharding replicates."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shared import TWO_STATE_CARD, flat_events, without_floats

from pwa.amplitude import Model
from pwa.caches import EventCache, NormalisationCache
from pwa.normalisation import normalisation_cache
from pwa.sharding import event_mesh, shard_cache


@pytest.fixture(scope="module")
def fixed():
    return Model.from_card(without_floats(TWO_STATE_CARD))


def test_folded_is_structure_not_an_array(fixed):
    folded = fixed.precompute(flat_events(50, 1))
    plain = fixed.precompute(flat_events(50, 1), fold_lineshapes=False)
    assert isinstance(folded, EventCache) and folded.folded and not plain.folded
    assert jax.tree_util.tree_structure(folded) != jax.tree_util.tree_structure(plain)
    assert set(folded.arrays()) == set(EventCache.EVENT_FIELDS)  # no matrix asked for, no marker array
    assert folded.normalisation_matrix is None


def test_host_copy_pickles_and_gives_the_same_nll(fixed):
    data = fixed.precompute(flat_events(200, 2))
    mc = fixed.precompute(flat_events(600, 3), normalisation_matrix=True)
    host = pickle.loads(pickle.dumps(jax.tree_util.tree_map(np.asarray, (data, mc))))
    p = jnp.asarray(fixed.initial_values())
    nll = jax.jit(fixed.nll)
    assert float(nll(p, *host)) == float(nll(p, data, mc))
    assert host[0].folded and isinstance(host[1].norm_re, np.ndarray)


def test_normalisation_cache_is_replicated_whole(fixed):
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    cache, _ = normalisation_cache(fixed, [flat_events(300, 4)])
    assert isinstance(cache, NormalisationCache)
    sharded = shard_cache(cache, event_mesh(4))
    assert all(a.sharding.is_fully_replicated for a in sharded.arrays().values())
    assert sharded.weights.shape == (1,)
    p = jnp.asarray(fixed.initial_values())
    assert float(fixed.normalisation(p, sharded)) == pytest.approx(float(fixed.normalisation(p, cache)), rel=1e-14)
