"""Fit-fraction errors in bounded memory (pwa.fraction_errors): the chunked Jacobian equals the direct one."""

import numpy as np
import pytest

from _shared import TWO_STATE_CARD, without_floats
from pwa import Model
from pwa.fraction_errors import fraction_jacobian, propagate_model_fractions
from pwa.fractions import generator_cache
from pwa.optimize import propagate, propagate_fractions


@pytest.fixture(scope="module")
def model():
    return Model.from_card(TWO_STATE_CARD)  # the f2'(1525) mass and width float


@pytest.fixture(scope="module")
def gen(model):
    return generator_cache(model, quadrature_panels=24)


def covariance(n: int) -> np.ndarray:
    a = np.random.default_rng(3).normal(size=(n, n)) * 0.01
    return a @ a.T + 1e-4 * np.eye(n)


def test_chunked_jacobian_equals_the_direct_one(model, gen):
    x = model.initial_values() * (1 + 0.02 * np.cos(np.arange(model.n_free)))
    n_gen = int(np.shape(gen.weights)[-1])
    F_direct, _, J_direct = propagate(lambda p: model.fit_fractions(p, gen), x, np.eye(model.n_free))
    for chunk in (997, n_gen // 3, n_gen):  # padding, several chunks, one chunk
        F, J = fraction_jacobian(model, gen, x, chunk_size=chunk)
        np.testing.assert_allclose(F, F_direct, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(J, J_direct, rtol=1e-9, atol=1e-11 * np.abs(J_direct).max())
    # The mass and width columns are not zero: the lineshapes' dependence goes through M.
    i = model.parameter_names.index("f2'(1525):mass")
    assert np.abs(J_direct[:, i]).max() > 1e-3


def test_errors_and_extra_parameters(model, gen):
    x = model.initial_values()
    V = covariance(model.n_free + 1)  # a floating background fraction as the last entry
    F, err, sf, sf_err = propagate_model_fractions(model, gen, np.append(x, 0.2), V, chunk_size=1500)
    F0, err0, sf0, sf_err0 = propagate_fractions(lambda p: model.fit_fractions(p, gen), x,
                                                 V[:-1, :-1])
    np.testing.assert_allclose(F, F0, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(err, err0, rtol=1e-8, atol=1e-12)
    assert sf == pytest.approx(sf0, rel=1e-12) and sf_err == pytest.approx(sf_err0, rel=1e-8)


def test_fixed_lineshapes_take_the_direct_path(gen):
    fixed = Model.from_card(without_floats(TWO_STATE_CARD))
    g = generator_cache(fixed, quadrature_panels=24)
    assert g.normalisation_matrix is not None
    V = covariance(fixed.n_free)
    out = propagate_model_fractions(fixed, g, fixed.initial_values(), V, chunk_size=10)
    ref = propagate_fractions(lambda p: fixed.fit_fractions(p, g), fixed.initial_values(), V)
    np.testing.assert_allclose(out[1], ref[1], rtol=1e-12)
