"""Background: the explicit background term (mixture likelihood, density ratio, floating fraction) and
sideband subtraction (signed weights, sandwich errors, scaled likelihood ratios).

The injected background is flat detector-level MC reweighted by a smooth g(m, cos theta_X, cos theta_K), so
its exact density relative to the MC is g / <g>_MC. Every fit's data cache is padded with zero-weight events
to one length, so that one compiled minimiser per objective serves all fits of the file (the large version
of these checks is experiments/background)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastsim.events import JPSI_GAMMA_KK, Detector, Events, conventional_mc, load_detector_card
from pwa.amplitude import Model
from pwa.background import (BACKGROUND_FRACTION, BackgroundModel, background_model, fit_density_ratio,
                            sideband_subtraction)
from pwa.errors import FitError
from pwa.fit import fit, significances
from pwa.fit_result import FitConfig
from pwa.fractions import generator_cache
from pwa.optimize import propagate
from pwa.problem import FitProblem, effective_size, likelihood_scale
from pwa.sharding import event_mesh, pad_cache, shard_problem
from pwa.toys import iter_toys

PANELS = 40
CONFIG = FitConfig(quadrature_panels=PANELS)
#: Every data cache is padded to this many events (one compile per objective structure).
PAD = 6000
N_BIG, FB_BIG = 6000, 0.25  # the recovery toy: events, background fraction
FB = 0.2  # background fraction of the sideband toys
N_SMALL, N_SB, N_TOYS = 3000, 1200, 10  # the sideband toys: signal-region events, expected sideband, toys


def g(events: Events) -> np.ndarray:
    hv = events.helicity_variables
    return np.exp(-1.5 * (hv[:, 0] - 0.99)) * (1.0 + 0.8 * hv[:, 1] ** 2) * (1.0 + 0.8 * hv[:, 3] ** 2)


@pytest.fixture(scope="module")
def model(small_card):
    return Model.from_card(small_card)


@pytest.fixture(scope="module")
def detector():
    return Detector(load_detector_card("default"))


@pytest.fixture(scope="module")
def mc(detector):
    return conventional_mc(20_000, detector, reaction=JPSI_GAMMA_KK, seed=31)


@pytest.fixture(scope="module")
def caches(model, mc):
    return model.precompute(mc, normalisation_matrix=True), generator_cache(model, quadrature_panels=PANELS)


@pytest.fixture(scope="module")
def truth_fractions(model, caches):
    return np.diag(np.asarray(model.fit_fractions(jnp.asarray(model.initial_values()), caches[1])))


@pytest.fixture(scope="module")
def signal_pool(model, detector):
    n = N_BIG + int(1.1 * N_TOYS * N_SMALL)
    return Events.concatenate(list(iter_toys(model, n, detector, seed=32)))


@pytest.fixture(scope="module")
def background_pool(detector):
    flat = conventional_mc(330_000, detector, reaction=JPSI_GAMMA_KK, seed=33)
    rng = np.random.default_rng(34)
    return flat.subset(rng.uniform(size=len(flat)) < g(flat) / 4.0)  # g < 3.3 at m_KK >= 2 m_K


@pytest.fixture(scope="module")
def background_sample(background_pool):
    return background_pool.subset(slice(0, 8000))


@pytest.fixture(scope="module")
def ratio(mc, background_sample):
    return fit_density_ratio(mc, background_sample, method="classifier", seed=1)


@pytest.fixture(scope="module")
def big_toy(signal_pool, background_pool):
    """N_BIG signal-region events, a fraction FB_BIG (binomial) of them background."""
    n_b = int(np.random.default_rng(35).binomial(N_BIG, FB_BIG))
    return Events.concatenate([signal_pool.subset(slice(0, N_BIG - n_b)),
                               background_pool.subset(slice(8000, 8000 + n_b))])


def padded_problem(model, data, caches, background=None) -> FitProblem:
    """FitProblem of ``data`` with the data cache padded (zero weights) to PAD events; statistics unpadded."""
    cache = jax.tree_util.tree_map(jnp.asarray, pad_cache(model.precompute(data), PAD))
    w = data.weight_array
    return FitProblem(model, cache, *caches, len(data), int(np.shape(caches[0].weights)[-1]), float(w.sum()),
                      bool(np.any(w != 1.0)), effective_size(w), background)


_minimizers: dict = {}


def minimizer_for(problem: FitProblem):
    """One minimiser per objective structure (same padded shapes: compiled once), set to ``problem``."""
    key = (problem.background is not None, problem.floating_background)
    if key not in _minimizers:
        _minimizers[key] = problem.minimizer(CONFIG)
    mz = _minimizers[key]
    mz.args = problem.arguments(CONFIG)
    return mz


def fit_padded(problem: FitProblem, x0=None):
    """fit() with the minimiser of :func:`minimizer_for`."""
    return fit(problem.model, None, None, CONFIG, problem=problem, x0=x0, minimizer=minimizer_for(problem))


def fraction_chi2(model, result, truth, gen_cache) -> float:
    """(F - F_true)^T V_F^-1 (F - F_true) of the fit fractions with their full covariance."""
    n = model.n_free

    def diagonal(p):
        return jnp.diagonal(model.fit_fractions(p[:n], gen_cache))

    _, cov, _ = propagate(diagonal, result.values, result.covariance)
    d = np.diag(result.fractions) - truth
    return float(d @ np.linalg.solve(cov, d))


# --- (b) the background term --------------------------------------------------


def test_without_background_the_objective_is_todays_nll(model, mc, big_toy, caches):
    problem = FitProblem.build(model, big_toy, mc, gen_cache=caches[1])
    assert problem.nll_function() == model.nll and problem.n_parameters == model.n_free
    assert problem.arguments(CONFIG)[-1].shape == (3,)  # (..., hyper): nothing appended
    f = problem.objective(CONFIG)
    p = jnp.asarray(model.initial_values())
    assert float(f(p, *problem.arguments(CONFIG))) == float(model.nll(p, problem.data_cache, problem.mc_cache))


def test_zero_background_fraction_gives_todays_nll(model, mc, big_toy, caches, ratio):
    plain = FitProblem.build(model, big_toy, mc, gen_cache=caches[1])
    zero = FitProblem.build(model, big_toy, mc, gen_cache=caches[1],
                            background=background_model(big_toy, mc, None, fraction=0.0, ratio=ratio))
    rng = np.random.default_rng(0)
    for _ in range(3):
        p = jnp.asarray(model.initial_values() * rng.uniform(0.7, 1.3, model.n_free))
        a = float(plain.objective(CONFIG)(p, *plain.arguments(CONFIG)))
        b = float(zero.objective(CONFIG)(p, *zero.arguments(CONFIG)))
        assert b == pytest.approx(a, rel=1e-13, abs=1e-9)
    # f_b = 0 floating: the same NLL at p = (signal parameters, 0)
    floating = dataclasses.replace(zero, background=zero.background.with_fraction(0.3, True))
    p0 = jnp.asarray(np.append(model.initial_values(), 0.0))
    assert float(floating.nll(p0)) == pytest.approx(float(plain.nll(p0[:-1])), rel=1e-13)


@pytest.mark.parametrize("method, max_rms", [("classifier", 0.2), ("knn", 0.35)])
def test_background_density_is_normalised_on_the_mc_and_matches_the_truth(mc, background_sample, ratio, detector,
                                                                         big_toy, method, max_rms):
    r = ratio if method == "classifier" else fit_density_ratio(mc, background_sample, method="knn")
    v = mc.weight_array
    assert np.sum(v * r.mc_density) / np.sum(v) == pytest.approx(1.0, abs=1e-12)
    # Calibration: an MC sample the estimate never saw integrates it to 1 as well.
    fresh = conventional_mc(20_000, detector, reaction=JPSI_GAMMA_KK, seed=36)
    assert r(fresh).mean() == pytest.approx(1.0, abs=0.03)
    assert 0.9 < r.info["raw_mc_mean"] < 1.1
    b, b_true = r(big_toy), g(big_toy) / g(mc).mean()
    rms = np.sqrt(np.mean((b / b_true - 1.0) ** 2))
    assert rms < max_rms, rms
    assert np.corrcoef(b, b_true)[0, 1] > 0.8
    assert np.all(b >= 0) and np.all(np.isfinite(b))


def test_background_objective_gradient_matches_finite_differences(model, big_toy, caches, ratio):
    bm = BackgroundModel(ratio(big_toy), 0.25, float_fraction=True)
    problem = padded_problem(model, big_toy, caches, bm)
    mz = minimizer_for(problem)  # its compiled value and gradient (shared with the recovery fit)
    p = np.append(model.initial_values() * 1.05, 0.23)
    grad = np.asarray(mz.gradient(jnp.asarray(p)))
    for i in range(p.size):
        e = np.zeros_like(p)
        e[i] = 1e-5 * max(1.0, abs(p[i]))
        fd = (float(mz.value(jnp.asarray(p + e))) - float(mz.value(jnp.asarray(p - e)))) / (2 * e[i])
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-4), (i, problem.parameter_names[i])


@pytest.fixture(scope="module")
def recovery(model, mc, big_toy, caches, ratio):
    background = background_model(big_toy, mc, None, fraction=0.3, float_fraction=True, ratio=ratio)
    term = fit_padded(padded_problem(model, big_toy, caches, background))
    ignored = fit_padded(padded_problem(model, big_toy, caches))
    return term, ignored


def test_background_term_recovers_the_fractions_and_ignoring_it_biases_them(model, recovery, truth_fractions,
                                                                              caches):
    term, ignored = recovery
    assert term.converged and ignored.converged
    assert term.parameter_names[-1] == BACKGROUND_FRACTION and len(term.values) == len(ignored.values) + 1
    pulls = (np.diag(term.fractions) - truth_fractions) / np.diag(term.fraction_errors)
    biased = (np.diag(ignored.fractions) - truth_fractions) / np.diag(ignored.fraction_errors)
    chi2_term = fraction_chi2(model, term, truth_fractions, caches[1])
    chi2_ignored = fraction_chi2(model, ignored, truth_fractions, caches[1])
    assert np.all(np.abs(pulls) < 3) and chi2_term < 11.3, (pulls, chi2_term)  # chi2(3 dof): p = 0.01
    assert np.max(np.abs(biased)) > 4 and chi2_ignored > 16.3, (biased, chi2_ignored)  # p = 0.001
    # The fraction errors come from the signal parameters with f_b profiled: larger than with f_b known.
    assert np.all(np.diag(term.fraction_errors) > 0.9 * np.diag(ignored.fraction_errors))


def test_floating_background_fraction_recovers_its_truth(recovery, big_toy):
    term, _ = recovery
    value, error = term.parameter(BACKGROUND_FRACTION)
    assert 0.005 < error < 0.05
    assert abs(value - FB_BIG) < 3 * error
    d = term.to_dict()["parameters"][BACKGROUND_FRACTION]
    assert d["value"] == value and not d["at_limit"]
    assert BACKGROUND_FRACTION in str(term)


def test_bad_background_terms_are_refused(model, mc, big_toy, caches):
    with pytest.raises(FitError, match="one per data event"):
        FitProblem.build(model, big_toy, mc, gen_cache=caches[1],
                         background=BackgroundModel(np.ones(len(big_toy) - 1), 0.2))
    with pytest.raises(FitError, match="strictly inside"):
        BackgroundModel(np.ones(3), 0.0, float_fraction=True)
    with pytest.raises(FitError, match="non-negative"):
        BackgroundModel(np.array([1.0, -0.5]), 0.2)
    with pytest.raises(FitError, match="unknown method"):
        fit_density_ratio(mc, big_toy, method="histogram")


def test_portable_and_sharded_problems_carry_the_background(model, mc, big_toy, caches, ratio):
    data = big_toy.subset(slice(0, N_BIG - 1))  # not a multiple of the device count: sharding pads it
    bm = background_model(data, mc, None, fraction=0.25, float_fraction=True, ratio=ratio)
    problem = FitProblem.build(model, data, mc, gen_cache=caches[1], background=bm)
    portable = problem.portable()
    assert portable.digest != FitProblem.build(model, data, mc, gen_cache=caches[1]).portable().digest
    rebuilt = portable.build()
    p = jnp.asarray(np.append(model.initial_values(), 0.2))
    assert float(rebuilt.nll(p)) == pytest.approx(float(problem.nll(p)), rel=1e-13)
    assert rebuilt.parameter_names == problem.parameter_names
    # Sharding pads the data cache with zero-weight events; the density is padded to match in the objective.
    n_dev = min(4, len(jax.devices()))
    sharded = shard_problem(problem, event_mesh(n_dev))
    assert float(sharded.nll(p)) == pytest.approx(float(problem.nll(p)), rel=1e-12)
    # Projection weights on the MC: signal and background components summing to the data.
    signal, background = problem.mc_component_weights(np.asarray(p))
    assert signal.sum() == pytest.approx(0.8 * len(data)) and background.sum() == pytest.approx(0.2 * len(data))


# --- (a) sideband subtraction ----------------------------------------------------


def test_equal_weights_leave_sandwich_errors_and_scaled_significance_unchanged(model, mc, signal_pool, caches):
    """Analytic case: weights all c scale the NLL, H and C by c, c and c^2, so the sandwich H^-1 C H^-1 and
    sum w / sum w^2 times Delta NLL are those of the unweighted sample, while the plain inverse Hessian would
    scale the errors by 1 / sqrt(c). For a correct model (signal events only) the sandwich is close to H^-1."""
    c = 0.5
    events = signal_pool.subset(slice(0, N_BIG))
    halved = Events(events.momenta, np.full(len(events), c), reaction=events.reaction)
    plain_problem, halved_problem = padded_problem(model, events, caches), padded_problem(model, halved, caches)
    plain, weighted = fit_padded(plain_problem), fit_padded(halved_problem)
    assert weighted.sandwich and not plain.sandwich
    np.testing.assert_allclose(weighted.values, plain.values, rtol=1e-6, atol=1e-8)
    h_plain = np.asarray(minimizer_for(plain_problem).hessian(jnp.asarray(plain.values)))
    h_halved = np.asarray(minimizer_for(halved_problem).hessian(jnp.asarray(weighted.values)))
    np.testing.assert_allclose(h_halved, c * h_plain, rtol=1e-5, atol=1e-8)
    unweighted_sandwich = plain_problem.sandwich_covariance(plain.values, np.linalg.inv(h_plain))
    np.testing.assert_allclose(weighted.covariance, unweighted_sandwich, rtol=1e-4, atol=1e-10)
    # H^-1 (sum g g^T) H^-1 against H^-1: equal up to the information identity's sampling error.
    np.testing.assert_allclose(weighted.errors, plain.errors, rtol=0.2)
    np.testing.assert_allclose(np.diag(weighted.fraction_errors), np.diag(plain.fraction_errors), rtol=0.2)
    assert likelihood_scale(halved.weight_array) == pytest.approx(1.0 / c)
    s_plain = significances(model, events, mc, plain, CONFIG, names=["f0(1710)"])[0]
    s_weighted = significances(model, halved, mc, weighted, CONFIG, names=["f0(1710)"])[0]
    assert s_weighted.delta_nll == pytest.approx(s_plain.delta_nll, rel=1e-6)
    assert s_weighted.sigma == pytest.approx(s_plain.sigma, rel=1e-5)


def test_lasso_information_criteria_use_the_scaled_nll_and_count_the_background_fraction(model, mc, signal_pool,
                                                                                         background_pool):
    """Weights all c = 0.5 and a floating background term: AIC = 2 s NLL + 2 k with s = sum w / sum w^2 = 1/c
    (the AIC of the unweighted sample: its NLL is NLL_w / c), k counts f_b, and BIC's N is the effective size."""
    from pwa.scans import lasso_scan

    c = 0.5
    events = Events.concatenate([signal_pool.subset(slice(0, 1500)), background_pool.subset(slice(8000, 8400))])
    halved = Events(events.momenta, np.full(len(events), c), reaction=events.reaction)
    term = BackgroundModel(g(events) / g(mc).mean(), fraction=0.25, float_fraction=True)
    (point,), best = lasso_scan(model, halved, mc, [1.0], CONFIG, background=term)
    assert best is point and point.result.parameter_names[-1] == BACKGROUND_FRACTION
    assert point.selected == tuple(model.resonance_names)  # a weak penalty keeps all three
    assert point.n_parameters == model.n_free + 1
    # The refit is the unpenalised fit of the same model with the background term: its NLL lies below the
    # penalised fit's plain NLL by less than the penalty (about 1.8 here); without the term it would
    # differ by hundreds.
    assert point.result.nll - 2.0 < point.refit_nll <= point.result.nll + 1e-6
    assert point.aic == pytest.approx(2 * point.refit_nll / c + 2 * point.n_parameters, rel=1e-9)
    assert point.bic == pytest.approx(2 * point.refit_nll / c + point.n_parameters * np.log(len(events)), rel=1e-9)


def test_cancelling_negative_weights_enter_the_sandwich_through_w_squared(model, signal_pool, background_pool,
                                                                          caches):
    """Exact case: events T added once with weight +1 and once with -1 cancel in the NLL (same minimum, same
    Hessian) but not in C = sum w^2 g g^T: the sandwich becomes H^-1 (C_D + 2 C_T) H^-1."""
    data = signal_pool.subset(slice(0, 2500))
    extra = background_pool.subset(slice(8000, 9000))
    w = np.concatenate([np.ones(len(data)), np.ones(len(extra)), -np.ones(len(extra))])
    both = Events(np.concatenate([data.momenta, extra.momenta, extra.momenta]), w, reaction=data.reaction)
    base_problem, both_problem = padded_problem(model, data, caches), padded_problem(model, both, caches)
    base, res = fit_padded(base_problem), fit_padded(both_problem, x0=model.initial_values())
    np.testing.assert_allclose(res.values, base.values, rtol=1e-6, atol=1e-8)
    assert res.nll == pytest.approx(base.nll, rel=1e-10)
    hinv = np.linalg.inv(np.asarray(minimizer_for(base_problem).hessian(jnp.asarray(base.values))))
    log_density = base_problem.log_density_function()

    def scores(events):
        cache = model.precompute(events)
        return np.asarray(jax.jacfwd(lambda q: log_density(q, cache, caches[0]))(jnp.asarray(base.values)))

    g_d, g_t = scores(data), scores(extra)
    expected = hinv @ (g_d.T @ g_d + 2.0 * g_t.T @ g_t) @ hinv
    np.testing.assert_allclose(res.covariance, expected, rtol=1e-6, atol=1e-12)
    assert np.all(res.errors > base.errors)


def test_sideband_subtraction_sandwich_errors_match_the_toy_spread(model, caches, signal_pool, background_pool,
                                                                  truth_fractions):
    """A loose check on 10 toys (experiments/background has the 50-toy study): the spread of the fitted
    fractions against the median sandwich error, and the plain inverse Hessian below the sandwich."""
    rng = np.random.default_rng(37)
    scale = FB * N_SMALL / N_SB
    fractions, errors, ratios = [], [], []
    s_used, b_used = N_BIG, 8000 + 2500
    for _ in range(N_TOYS):
        # Poisson counts, as in data: the sandwich is the variance of a Poisson sample (a fixed total would add
        # the background's mean score to C and overestimate the errors).
        n_s, n_b, n_sb = (int(x) for x in rng.poisson([(1 - FB) * N_SMALL, FB * N_SMALL, N_SB]))
        region = Events.concatenate([signal_pool.subset(slice(s_used, s_used + n_s)),
                                     background_pool.subset(slice(b_used, b_used + n_b))])
        sideband = background_pool.subset(slice(b_used + n_b, b_used + n_b + n_sb))
        s_used, b_used = s_used + n_s, b_used + n_b + n_sb
        data = sideband_subtraction(region, sideband, scale)
        assert data.weights.min() == -scale and data.weight_array.sum() == pytest.approx(n_s + n_b - scale * n_sb)
        res = fit_padded(padded_problem(model, data, caches), x0=model.initial_values())
        assert res.converged and res.sandwich
        fractions.append(np.diag(res.fractions))
        errors.append(np.diag(res.fraction_errors))
        hessian = np.asarray(_minimizers[(False, False)].hessian(jnp.asarray(res.values)))
        ratios.append(res.errors / np.sqrt(np.diag(np.linalg.inv(hessian))))
    fractions, errors = np.array(fractions), np.array(errors)
    spread_over_error = fractions.std(axis=0, ddof=1) / np.median(errors, axis=0)
    assert np.all((spread_over_error > 0.4) & (spread_over_error < 1.8)), spread_over_error
    pulls = (fractions - truth_fractions) / errors
    assert np.all(np.abs(np.median(pulls, axis=0)) < 1.5), pulls
    # Negative weights widen the errors: the sandwich is above the plain inverse Hessian of the weighted NLL.
    assert np.median(ratios) > 1.1
