"""Fitter: truth recovery, exact derivatives against finite differences,
propagated fraction errors, constraints, LASSO and significance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastsim.events import Detector, Events, conventional_mc, load_detector_card, JPSI_GAMMA_KK
from pwa.amplitude import Model
from pwa.errors import FitError
from pwa.fit import fit, significance_from_delta_nll, significances
from pwa.fit_result import FitConfig
from pwa.problem import FitProblem
from pwa.toys import iter_toys

SMALL = {
    "resonances": [
        {"name": "f0(980)", "spin": 0, "lineshape": {"type": "Flatte", "mass": 0.979, "g_pipi": 0.107},
         "couplings": {0: [1.0, 0.0]}},
        {"name": "f2'(1525)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.5223, "width": 0.0858},
         "float": ["mass", "width"],
         "couplings": {0: [6.0, 1.2], 1: [4.5, 2.4], 2: [2.0, 0.6]}},
        {"name": "f0(1710)", "spin": 0, "lineshape": {"type": "BW", "mass": 1.6762, "width": 0.1627},
         "couplings": {0: [1.5, -0.5]}},
    ],
    "reference": "f0(980)",
}


@pytest.fixture(scope="module")
def detector():
    return Detector(load_detector_card("default"))


@pytest.fixture(scope="module")
def model():
    return Model.from_card(SMALL)


@pytest.fixture(scope="module")
def samples(model, detector):
    data = Events.concatenate(list(iter_toys(model, 4000, detector, seed=11)))
    mc = conventional_mc(40_000, detector, reaction=JPSI_GAMMA_KK, seed=12)
    return data, mc


@pytest.fixture(scope="module")
def problem(model, samples):
    return FitProblem.build(model, *samples, quadrature_panels=60)


@pytest.fixture(scope="module")
def result(model, samples, problem):
    return fit(model, *samples, FitConfig(quadrature_panels=60), problem=problem)


@pytest.fixture(scope="module")
def fixed_model():
    """SMALL with fixed lineshapes: the fast (folded, normalisation-matrix) path."""
    return Model.from_card({**SMALL, "resonances": [{**r, "float": []} for r in SMALL["resonances"]]})


@pytest.fixture(scope="module")
def fixed_problem(fixed_model, samples):
    return FitProblem.build(fixed_model, *samples, quadrature_panels=60)


@pytest.fixture(scope="module")
def fixed_result(fixed_model, samples, fixed_problem):
    return fit(fixed_model, *samples, FitConfig(quadrature_panels=60), problem=fixed_problem)


def test_fit_recovers_generated_truth(model, result):
    assert result.converged, result.message
    assert result.positive_definite
    pulls = (result.values - model.initial_values()) / result.errors
    assert np.all(np.abs(pulls) < 3.0), dict(zip(model.parameter_names, np.round(pulls, 2)))
    # Fractions against the generating model's (quadrature) fractions.
    from pwa.fractions import fit_fractions_quadrature

    true = fit_fractions_quadrature(model, n_panels=60).matrix
    for i, name in enumerate(model.resonance_names):
        f, e = result.fraction(name)
        assert abs(f - true[i, i]) < 3 * e, (name, f, e, true[i, i])


def test_result_prints_and_serialises(result):
    import json

    text = str(result)
    assert "CONVERGED" in text and "f2'(1525):mass" in text and "SF" in text
    d = json.loads(result.to_json())
    for key in ("nll", "converged", "parameters", "fractions", "sum_of_fractions", "covariance",
                "n_data", "n_mc"):
        assert key in d
    assert d["parameters"]["f2'(1525):mass"]["error"] > 0


def test_gradient_and_hessian_against_finite_differences(model, problem):
    config = FitConfig(sf_lambda=1e-2, sf_target=1.2, lasso=3.0)
    obj, args = problem.objective(config), problem.arguments(config)

    def f(q, a):  # the caches as arguments, not constants folded into the programs
        return obj(q, *a)

    p = model.initial_values() * 1.01
    grad = jax.jit(jax.grad(f))
    g = np.asarray(grad(jnp.asarray(p), args))
    H = np.asarray(jax.jit(jax.hessian(f))(jnp.asarray(p), args))
    f = jax.jit(f)
    h = 1e-5 * np.maximum(np.abs(p), 1e-2)
    g_fd = np.empty_like(p)
    H_fd = np.empty((p.size, p.size))
    for i in range(p.size):
        e = np.zeros_like(p)
        e[i] = h[i]
        g_fd[i] = (float(f(p + e, args)) - float(f(p - e, args))) / (2 * h[i])
        H_fd[i] = (np.asarray(grad(p + e, args)) - np.asarray(grad(p - e, args))) / (2 * h[i])
    np.testing.assert_allclose(g, g_fd, rtol=1e-5, atol=1e-4 * np.abs(g).max())
    np.testing.assert_allclose(H, H_fd, rtol=1e-4, atol=1e-6 * np.abs(H).max())
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-10 * np.abs(H).max())


def test_fraction_errors_match_numerical_propagation(model, problem, result):
    p = result.values
    n = len(model.resonance_names)
    frac = jax.jit(problem.fractions)
    J = np.empty((n * n, p.size))
    for i in range(p.size):
        h = 1e-6 * max(abs(p[i]), 1e-2)
        e = np.zeros_like(p)
        e[i] = h
        J[:, i] = (np.ravel(frac(p + e)) - np.ravel(frac(p - e))) / (2 * h)
    err_fd = np.sqrt(np.diag(J @ result.covariance @ J.T)).reshape(n, n)
    # S-D interference integrates to exactly zero: compare those entries absolutely.
    np.testing.assert_allclose(result.fraction_errors, err_fd, rtol=1e-5, atol=1e-9)


def test_fraction_constraint_pulls_the_sum(fixed_model, samples, fixed_problem, fixed_result):
    model, problem, result = fixed_model, fixed_problem, fixed_result
    target = result.sum_of_fractions + 0.10
    strong = fit(model, *samples, FitConfig(sf_target=target, sf_lambda=1.0, quadrature_panels=60),
                 problem=problem, x0=result.values)
    assert strong.converged
    assert abs(strong.sum_of_fractions - target) < abs(result.sum_of_fractions - target) / 3
    assert strong.nll > result.nll  # the constraint costs likelihood


def test_lasso_removes_an_absent_resonance(detector):
    card = {**SMALL, "resonances": [dict(r) for r in SMALL["resonances"]]}
    truth = Model.from_card({**card, "resonances": card["resonances"][:2]})
    card["resonances"][1] = {**card["resonances"][1], "float": []}
    full = Model.from_card(card)
    data = Events.concatenate(list(iter_toys(truth, 3000, detector, seed=21)))
    mc = conventional_mc(30_000, detector, reaction=JPSI_GAMMA_KK, seed=22)
    plain = fit(full, data, mc, FitConfig(quadrature_panels=60))
    lasso = fit(full, data, mc, FitConfig(lasso=20.0, quadrature_panels=60), x0=plain.values)
    f_plain, _ = plain.fraction("f0(1710)")
    f_lasso, _ = lasso.fraction("f0(1710)")
    assert f_lasso < 0.005, (f_plain, f_lasso)
    # A magnitude on its bound at 0 (and its then meaningless phase) is left out
    # of the convergence check rather than making the Hessian indefinite.
    assert lasso.converged, lasso.message
    i = full.parameter_names.index("f0(1710):c0.phase")
    if lasso.at_limit[full.parameter_names.index("f0(1710):c0.mag")]:
        assert lasso.at_limit[i] and lasso.errors[i] == 0.0
    assert f_lasso <= f_plain
    # The true resonances survive.
    from pwa.fractions import fit_fractions_quadrature

    true = fit_fractions_quadrature(truth, n_panels=60).matrix
    assert lasso.fraction("f2'(1525)")[0] > 0.5 * true[1, 1]


def test_significance_conversion():
    p, z = significance_from_delta_nll(0.5 * 9.0, 1)
    assert z == pytest.approx(3.0, rel=1e-10)
    p, z = significance_from_delta_nll(0.5 * 25.0, 1)
    assert z == pytest.approx(5.0, rel=1e-10)
    p2, z2 = significance_from_delta_nll(0.5 * 25.0, 4)
    assert z2 < z and p2 > p


def test_significance_of_a_present_resonance_is_large(fixed_model, samples, fixed_result):
    sig = significances(fixed_model, *samples, fixed_result, FitConfig(quadrature_panels=60),
                        names=["f0(1710)"])
    assert sig[0].n_parameters == 2
    assert sig[0].delta_nll > 0 and sig[0].sigma > 5


def test_weighted_data_use_the_sandwich_covariance(fixed_model, samples, fixed_result):
    model, result = fixed_model, fixed_result
    data, mc = samples
    w = np.where(np.arange(len(data)) % 2 == 0, 1.5, 0.5)
    weighted = Events(data.momenta, w, reaction=data.reaction)
    res = fit(model, weighted, mc, FitConfig(quadrature_panels=60), x0=result.values)
    assert res.sandwich and res.converged
    assert np.all(np.isfinite(res.errors)) and np.all(res.errors > 0)
    # Weights with mean 1 and spread: errors grow relative to the unweighted fit.
    assert np.median(res.errors / result.errors) > 1.0


def test_bad_inputs_give_fit_errors(model, samples):
    from fastsim.events import Reaction

    data, mc = samples
    pipi = Events(data.momenta, None, reaction=Reaction(particles=("gamma", "pi+", "pi-"),
                                                        prefixes=("gamma", "pip", "pim")))
    with pytest.raises(FitError, match="data are gamma pi\\+ pi- events"):
        fit(model, pipi, mc)
    with pytest.raises(FitError, match="unknown optimizer"):
        fit(model, data, mc, FitConfig(optimizer="sgd", quadrature_panels=20))
    with pytest.raises(FitError, match="plain-NLL fit"):
        significances(model, data, mc, None, FitConfig(lasso=1.0))


def test_chunked_normalisation_cache_equals_one_shot(fixed_model, samples):
    from pwa.normalisation import normalisation_cache

    fixed = fixed_model
    _, mc = samples
    w = np.linspace(0.5, 1.5, len(mc))
    mc = Events(mc.momenta, w, reaction=mc.reaction)
    one = fixed.precompute(mc, normalisation_matrix=True)
    chunked, n = normalisation_cache(fixed, (mc.subset(slice(i, i + 7000)) for i in range(0, len(mc), 7000)))
    assert n == len(mc)
    np.testing.assert_allclose(chunked.norm_re, one.norm_re, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(chunked.norm_im, one.norm_im, rtol=1e-10, atol=1e-14)
    p = jnp.asarray(fixed.initial_values())
    np.testing.assert_allclose(fixed.normalisation(p, chunked), fixed.normalisation(p, one), rtol=1e-12)


def test_random_starts_are_finite_distinct_and_inside_bounds(model):
    from pwa.starts import random_starts

    starts = random_starts(model, model.initial_values(), 5, seed=1)
    assert len(starts) == 5
    np.testing.assert_array_equal(starts[0], model.initial_values())
    for x in starts[1:]:
        assert np.all(np.isfinite(x))
        assert not np.allclose(x, starts[0])
        for v, (lo, hi) in zip(x, model.bounds):
            assert (lo is None or v > lo) and (hi is None or v < hi)
    again = random_starts(model, model.initial_values(), 5, seed=1)
    np.testing.assert_array_equal(np.array(starts), np.array(again))


def test_multi_start_fit_lists_minima(fixed_model, samples, fixed_problem, fixed_result):
    model, problem, result = fixed_model, fixed_problem, fixed_result
    res = fit(model, *samples, FitConfig(starts=3, seed=2, quadrature_panels=60), problem=problem)
    assert res.converged
    assert len(res.minima) >= 1
    assert res.nll <= result.nll + 1e-6
