"""Sandwich-calibrated likelihood-ratio statistics of weighted data (pwa.weighted_stats)."""

import numpy as np
import pytest
from scipy import stats

from _shared import TWO_STATE_CARD, flat_events, without_floats
from fastsim.events import Detector, Events
from pwa import Model
from pwa.problem import FitProblem
from pwa.toys import iter_toys
from pwa.weighted_stats import effective_likelihood_scale, information_ratio_eigenvalues, weighted_lr_pvalue


@pytest.fixture(scope="module")
def setup():
    model = Model.from_card(without_floats(TWO_STATE_CARD))
    data = Events.concatenate(list(iter_toys(model, 800, Detector(None), seed=61)))
    return model, data, flat_events(8000, 62)


def test_eigenvalues_follow_the_weights_exactly(setup):
    """Events with weight 2, against the same events listed twice with weight 1: the same NLL and
    Hessian, but sum w^2 g g^T doubles, so every eigenvalue doubles; with weights all c the
    effective scale of the doubled-weight sample is half that of the duplicated one."""
    model, data, mc = setup
    doubled = Events(data.momenta, np.full(len(data), 2.0), reaction=data.reaction)
    twice = Events.concatenate([data, data])
    p = model.initial_values() * (1 + 0.03 * np.sin(np.arange(model.n_free)))
    problems = [FitProblem.build(model, ev, mc, quadrature_panels=24) for ev in (doubled, twice)]
    lam2, lam1 = (information_ratio_eigenvalues(pr, p) for pr in problems)
    np.testing.assert_allclose(lam2, 2.0 * lam1, rtol=1e-8)
    idx = [0, 1]
    np.testing.assert_allclose(information_ratio_eigenvalues(problems[0], p, idx),
                               2.0 * information_ratio_eigenvalues(problems[1], p, idx), rtol=1e-8)
    assert effective_likelihood_scale(problems[0], p) == pytest.approx(
        0.5 * effective_likelihood_scale(problems[1], p), rel=1e-8)


def test_satterthwaite_is_exact_for_equal_eigenvalues():
    for c, k, t in [(1.0, 2, 5.99), (0.5, 2, 3.0), (2.5, 4, 11.0)]:
        assert weighted_lr_pvalue(t, np.full(k, c)) == pytest.approx(stats.chi2.sf(t / c, k), rel=1e-12)
    # unequal: between the tails of the smallest and the largest eigenvalue
    p = weighted_lr_pvalue(6.0, np.array([1.0, 3.0]))
    assert stats.chi2.sf(6.0, 2) < p < stats.chi2.sf(6.0 / 3.0, 2)
