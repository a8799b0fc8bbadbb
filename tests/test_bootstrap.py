"""Bootstrap bias correction: replica flows (fastsim.training.bootstrap_replicas) and the linear
combination of normalisation caches (pwa.normalisation.combine_normalisation_caches)."""

import jax
import numpy as np
import pytest
import torch
from _shared import TWO_STATE_CARD, flat_events, without_floats

from fastsim.training import TrainConfig, bootstrap_replicas, fit as train_flow
from pwa import Model
from pwa.errors import FitError
from pwa.normalisation import combine_normalisation_caches, normalisation_cache

jax.config.update("jax_enable_x64", True)

CONFIG = TrainConfig(kind="flow", hyperparameters={"n_layers": 2, "hidden": 8, "n_bins": 4}, epochs=1,
                     batch_size=256, seed=5)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    u = np.clip(rng.beta(2.0, 2.0, size=(1500, 5)), 0.0, 1.0)  # not uniform: the flow has something to learn
    return train_flow(u, CONFIG)["model"]


def _state(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_replicas_are_seeded_distinct_and_reproducible(trained):
    a = bootstrap_replicas(trained, 800, CONFIG, 2, seed=11)
    b = bootstrap_replicas(trained, 800, CONFIG, 2, seed=11)
    assert len(a) == 2
    assert torch.equal(_state(a[0]["model"]), _state(b[0]["model"]))
    assert torch.equal(_state(a[1]["model"]), _state(b[1]["model"]))
    assert not torch.equal(_state(a[0]["model"]), _state(a[1]["model"]))
    # each replica is a trained generator of the same kind and dimension
    u = a[0]["model"].sample_unit(100, generator=torch.Generator().manual_seed(0))
    assert u.shape == (100, 5) and torch.all((u >= 0) & (u <= 1))


def test_replicas_reject_bad_arguments(trained):
    from fastsim.errors import TrainingError

    with pytest.raises(TrainingError, match="replicas >= 1"):
        bootstrap_replicas(trained, 800, CONFIG, 0, seed=1)


def test_combined_cache_is_the_linear_combination():
    model = Model.from_card(without_floats(TWO_STATE_CARD))
    ca, na = normalisation_cache(model, [flat_events(3000, 1)])
    cb, _ = normalisation_cache(model, [flat_events(2000, 2)])
    comb = combine_normalisation_caches([(2.0, ca), (-1.0, cb)])
    for k in ("norm_re", "norm_im"):
        got, first, second = (np.asarray(getattr(c, k)) for c in (comb, ca, cb))
        np.testing.assert_allclose(got, 2 * first - second, rtol=0, atol=1e-14)
    assert float(comb.weights[0]) == float(ca.weights[0])
    # The NLL's normalisation is linear in the matrix: the combination's normalisation is the combination
    x = np.asarray(model.initial_values())
    na_ = float(model.normalisation(x, ca))
    nb_ = float(model.normalisation(x, cb))
    assert float(model.normalisation(x, comb)) == pytest.approx(2 * na_ - nb_, rel=1e-12)
    # a cache combined with itself is itself
    same = combine_normalisation_caches([(0.5, ca), (0.5, ca)])
    np.testing.assert_allclose(np.asarray(same.norm_re), np.asarray(ca.norm_re), rtol=1e-15, atol=0)


def test_combination_rejects_bad_input():
    model = Model.from_card(without_floats(TWO_STATE_CARD))
    ca, _ = normalisation_cache(model, [flat_events(500, 1)])
    with pytest.raises(FitError, match="sum to 1"):
        combine_normalisation_caches([(2.0, ca), (-0.5, ca)])
    with pytest.raises(FitError, match="no normalisation caches"):
        combine_normalisation_caches([])
    with pytest.raises(FitError, match="normalisation-matrix caches"):
        combine_normalisation_caches([(1.0, model.precompute(flat_events(500, 1)))])  # per-event, no matrix
