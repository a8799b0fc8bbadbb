"""Minimisers and error propagation on cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pwa.errors import FitError
from pwa.optimize import OPTIMIZERS, BoundsTransform, minimize, propagate

# Gaussian NLL in 3 parameters with a known covariance: NLL = (p-mu)^T V^-1 (p-mu) / 2.
MU = np.array([1.0, -2.0, 0.5])
V = np.array([[0.04, 0.01, 0.0], [0.01, 0.09, -0.02], [0.0, -0.02, 0.25]])
VINV = np.linalg.inv(V)


def gauss_nll(p):
    d = p - MU
    return 0.5 * d @ VINV @ d


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_finds_the_gaussian_minimum_and_covariance(optimizer):
    res = minimize(gauss_nll, np.zeros(3), optimizer=optimizer)
    assert res.converged, res.message
    np.testing.assert_allclose(res.x, MU, atol=1e-6)
    np.testing.assert_allclose(res.covariance, V, rtol=1e-10, atol=1e-14)
    assert res.positive_definite and res.edm < 1e-8


def test_rosenbrock_non_convex_valley():
    def rosen(p):
        return 100.0 * (p[1] - p[0] ** 2) ** 2 + (1.0 - p[0]) ** 2

    res = minimize(rosen, np.array([-1.2, 1.0]), optimizer="trust-exact")
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-7)
    # Exact Hessian against the analytic one at the point found.
    x, y = res.x
    analytic = [[1200 * x**2 - 400 * y + 2, -400 * x], [-400 * x, 200]]
    np.testing.assert_allclose(res.hessian, analytic, rtol=1e-12)


def test_bounds_are_respected_and_reported_in_physical_units():
    # Minimum of the unbounded problem lies outside: p0 <= 0.8.
    bounds = [(0.0, 0.8), None, (None, 10.0)]
    res = minimize(gauss_nll, np.array([0.2, 0.0, 0.0]), bounds=bounds, optimizer="BFGS",
                   newton_polish=False)
    assert 0.0 <= res.x[0] <= 0.8
    assert res.at_limit[0]
    inside = minimize(gauss_nll, np.array([0.5, 0.0, 0.0]), bounds=[(0.0, 2.0), None, (0.0, None)])
    np.testing.assert_allclose(inside.x, MU, atol=1e-6)
    np.testing.assert_allclose(inside.covariance, V, rtol=1e-8, atol=1e-12)


def test_transform_round_trip():
    tr = BoundsTransform.from_bounds([(0.0, 1.0), (2.0, None), (None, -1.0), None], 4)
    p = np.array([0.3, 2.7, -3.0, 5.0])
    np.testing.assert_allclose(np.asarray(tr.to_physical(jnp.asarray(tr.to_internal(p)))), p, atol=1e-12)


def test_non_positive_definite_hessian_is_reported():
    # A saddle direction along p1 that is flat at the start: f = p0^2 + 0 * p1.
    res = minimize(lambda p: p[0] ** 2 + 0.0 * p[1], np.array([1.0, 0.0]), optimizer="BFGS")
    assert not res.positive_definite
    assert not res.converged
    assert res.hessian_eigenvalues[0] == pytest.approx(0.0, abs=1e-12)


def test_errors_on_bad_input():
    with pytest.raises(FitError, match="unknown optimizer 'nope'"):
        minimize(gauss_nll, np.zeros(3), optimizer="nope")
    with pytest.raises(FitError, match="outside their bounds"):
        minimize(gauss_nll, np.array([5.0, 0, 0]), bounds=[(0, 1), None, None])
    with pytest.raises(FitError, match="not finite at the start"):
        minimize(lambda p: jnp.log(p[0]) + 0 * p[1] + 0 * p[2], np.array([-1.0, 0, 0]))


def test_propagate_matches_linear_algebra_and_numerical_propagation():
    def f(p):
        return jnp.stack([p[0] * p[1], jnp.sin(p[2]) + p[0] ** 2])

    x = MU
    val, cov, J = propagate(f, x, V)
    Jexact = np.array([[x[1], x[0], 0.0], [2 * x[0], 0.0, np.cos(x[2])]])
    np.testing.assert_allclose(J, Jexact, rtol=1e-12)
    np.testing.assert_allclose(cov, Jexact @ V @ Jexact.T, rtol=1e-12)
    # Against a toy propagation with small covariance (linear regime).
    rng = np.random.default_rng(1)
    small = V * 1e-4
    draws = rng.multivariate_normal(x, small, 200_000)
    vals = np.stack([draws[:, 0] * draws[:, 1], np.sin(draws[:, 2]) + draws[:, 0] ** 2], 1)
    np.testing.assert_allclose(np.cov(vals.T), Jexact @ small @ Jexact.T, rtol=0.03)


def test_multi_start_finds_both_minima_of_a_double_well():
    from pwa.optimize import Minimizer

    def well(p):  # minima near p0 = +1 (f ~ -0.3, the global one) and p0 = -1 (f ~ +0.3)
        return (p[0] ** 2 - 1.0) ** 2 - 0.3 * p[0] + p[1] ** 2

    mz = Minimizer(well, 2)
    best, distinct = mz.multi_start([np.array([x, 0.5]) for x in (-2.0, -0.5, 0.5, 2.0)])
    assert len(distinct) == 2
    assert best.x[0] > 0 and best.fun < distinct[1].fun
    assert all(r.converged for r in distinct)


def test_batched_hessian_equals_full_hessian():
    from pwa.optimize import batched_hessian

    def f(p, a):
        return jnp.sum(jnp.sin(p) ** 2 * a) + jnp.prod(p[:3]) + (p @ p) ** 2

    p = jnp.linspace(0.1, 1.3, 11)
    a = jnp.arange(11.0)
    for batch in (1, 4, 11, 16):
        np.testing.assert_allclose(batched_hessian(f, batch)(p, a), jax.hessian(f)(p, a), rtol=1e-12, atol=1e-12)
