"""The normalisation sample's statistical error (pwa.mc_statistics).

The analytic (delta-method) MC covariance V_MC = H^-1 C H^-1 against the
spread of the fitted parameters and fractions over refits of the SAME data
with INDEPENDENT normalisation samples, plain and importance-weighted; its
1/sqrt(M) scaling; the per-event gradients against finite differences; the
score moments against a direct two-pass sum; the report column.

Statistical precision of the replica comparison (R = 20 replicas of 4000 MC
events, 2000 data events, MC errors 1-1.5 times the data errors): the spread
(standard deviation) of one quantity over R replicas has a relative standard
deviation of about 1 / sqrt(2 (R - 1)) = 0.16, so each fit fraction's ratio
spread / mean predicted error must lie in 0.6-1.6 (about -2.5 / +3.7 sigma).
The six coupling parameters are less linear (the weak helicity-2 coupling's
phase has a heavy-tailed predicted error from replica to replica), so each
of their ratios must lie in 0.45-2.0 and the geometric mean of all eight
ratios in 0.75-1.35. Observed: flat MC, parameters 1.07 1.09 1.38 1.04 0.98
0.61, F 1.00, geometric mean 1.00; weighted MC 1.16 0.85 0.99 0.99 0.67 1.54,
F 1.18, geometric mean 1.04. A longer run (200 replicas of 6000 flat events,
not a test) gives spread / mean predicted error 1.07 0.97 1.04 0.94 0.98 0.97
and F 1.06.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from fastsim.events import Detector, Events
from pwa.amplitude import Model
from pwa.caches import NormalisationCache
from pwa.errors import FitError
from pwa.fit import fit
from pwa.fit_result import FitConfig
from pwa.mc_statistics import (MCStatistics, intensity_gradients, iter_chunks, mc_statistical_covariance,
                               mc_statistics_of_fit, score_moments)
from pwa.problem import FitProblem
from pwa.report import fit_report_markdown, write_fit_outputs
from pwa.toys import iter_toys

from _shared import TWO_STATE_CARD, flat_events, without_floats

CONFIG = FitConfig(quadrature_panels=40)
N_DATA = 2000
N_MC = 4000
REPLICAS = 20


@pytest.fixture(scope="module")
def model():
    return Model.from_card(without_floats(TWO_STATE_CARD))


@pytest.fixture(scope="module")
def data(model):
    return Events.concatenate(list(iter_toys(model, N_DATA, Detector(None), seed=31)))


@pytest.fixture(scope="module")
def base(model, data):
    """The problem with one MC sample, and a minimiser compiled once for every replica."""
    problem = FitProblem.build(model, data, flat_events(N_MC, 500), quadrature_panels=CONFIG.quadrature_panels)
    return problem, problem.minimizer(CONFIG)


def refit(model, base, mc: Events):
    """Fit of the base problem's data with another normalisation sample (same shapes: no recompilation)."""
    problem, minimizer = base
    p = dataclasses.replace(problem, mc_cache=model.precompute(mc, normalisation_matrix=True), n_mc=len(mc))
    result = fit(model, None, None, CONFIG, problem=p, minimizer=minimizer)
    assert result.converged, result.message
    return p, result, mc_statistical_covariance(p, result.values, result.covariance)


def importance_sampled(n: int, seed: int) -> Events:
    """n flat events thinned with acceptance q(m) = 1 - 0.75 exp(-((m - 1.52 GeV) / 0.15 GeV)^2) and
    weighted v = 1 / q: a weighted sample of flat phase space (as flow MC with its weights), poor
    where the f2'(1525) is (weights up to 4 there)."""
    rng = np.random.default_rng(seed)
    parts, have = [], 0
    while have < n:
        ev = flat_events(3 * n, int(rng.integers(2**31)))
        m = ev.helicity_variables[:, 0]
        q = 1.0 - 0.75 * np.exp(-(((m - 1.52) / 0.15) ** 2))
        keep = rng.uniform(size=len(ev)) < q
        parts.append(Events(ev.momenta[keep], 1.0 / q[keep], reaction=ev.reaction))
        have += int(keep.sum())
    return Events.concatenate(parts).subset(slice(0, n))


def replica_comparison(model, base, make_mc, seeds):
    """(spread / mean predicted error of each parameter, of each fraction F_R, the fits)."""
    fits = [refit(model, base, make_mc(s)) for s in seeds]
    values = np.array([r.values for _, r, _ in fits])
    fractions = np.array([np.diag(r.fractions) for _, r, _ in fits])
    # Mean predicted *errors*: a replica with a poorly determined phase can have a huge
    # predicted variance, which would dominate a mean covariance.
    parameters = values.std(axis=0, ddof=1) / np.mean([s.errors for _, _, s in fits], axis=0)
    predicted = np.mean([np.diag(s.fraction_errors) for _, _, s in fits], axis=0)
    return parameters, fractions.std(axis=0, ddof=1) / predicted, fits


def check_agreement(parameters, fractions):
    """Bounds of the module docstring on spread / predicted error."""
    assert np.all((fractions > 0.6) & (fractions < 1.6)), fractions
    assert np.all((parameters > 0.45) & (parameters < 2.0)), parameters
    ratios = np.concatenate([parameters, fractions])
    assert 0.75 < np.exp(np.mean(np.log(ratios))) < 1.35, ratios


@pytest.fixture(scope="module")
def replicas(model, base):
    return replica_comparison(model, base, lambda s: flat_events(N_MC, s), range(1000, 1000 + REPLICAS))


def test_mc_covariance_matches_spread_over_independent_mc_samples(replicas):
    parameters, fractions, fits = replicas
    _, result, stats = fits[0]
    # The regime of the test: the MC error is comparable to the data error.
    assert np.all(stats.errors > 0.5 * result.errors), (stats.errors, result.errors)
    check_agreement(parameters, fractions)


def test_importance_weighted_mc_is_honoured(model, base, replicas):
    parameters, fractions, fits = replica_comparison(model, base, lambda s: importance_sampled(N_MC, s),
                                                     range(2000, 2000 + REPLICAS))
    stats = fits[0][2]
    assert stats.effective_mc_events < 0.9 * N_MC  # weights 1-4
    check_agreement(parameters, fractions)
    # Same number of events, less information where it matters: the weights are large under
    # the f2'(1525), so the MC errors grow by about 1.6, not by the Kish factor
    # sqrt(N / N_eff) = 1.07 of the weights alone (the estimate weighs v_j I_j).
    flat = np.mean([s.fraction_errors[0, 0] for _, _, s in replicas[2]])
    weighted = np.mean([s.fraction_errors[0, 0] for _, _, s in fits])
    assert weighted > 1.3 * flat * np.sqrt(N_MC / stats.effective_mc_events), (weighted, flat)


def test_mc_errors_scale_as_one_over_sqrt_m(model, base):
    # Four times the MC (new shapes: an own problem and minimiser).
    problem, _ = base
    small = refit(model, base, flat_events(N_MC, 3001))[2]
    big_mc = flat_events(4 * N_MC, 3002)
    big_problem = dataclasses.replace(problem, mc_cache=model.precompute(big_mc, normalisation_matrix=True),
                                      n_mc=len(big_mc))
    big_result = fit(model, None, None, CONFIG, problem=big_problem)
    big = mc_statistical_covariance(big_problem, big_result.values, big_result.covariance)
    assert big.n_mc == 4 * N_MC and small.n_mc == N_MC
    ratio = small.fraction_errors[0, 0] / big.fraction_errors[0, 0]
    assert 1.7 < ratio < 2.3, ratio
    # All parameters together: sqrt of the mean variance ratio.
    r = np.sqrt(np.mean(small.errors**2 / big.errors**2))
    assert 1.7 < r < 2.3, small.errors / big.errors


@pytest.mark.parametrize("floating", [False, True], ids=["folded", "floating-lineshapes"])
def test_per_event_gradient_matches_finite_differences(floating):
    model = Model.from_card(TWO_STATE_CARD if floating else without_floats(TWO_STATE_CARD))
    cache = model.precompute(flat_events(50, 7))
    p = model.initial_values()
    I, dI = intensity_gradients(model, p, cache)
    assert I.shape == (50,) and dI.shape == (50, model.n_free)
    h = 1e-6
    for a in range(model.n_free):
        e = np.zeros(model.n_free)
        e[a] = h * max(1.0, abs(p[a]))
        fd = (np.asarray(model.intensity(jnp.asarray(p + e), cache))
              - np.asarray(model.intensity(jnp.asarray(p - e), cache))) / (2 * e[a])
        np.testing.assert_allclose(dI[:, a], fd, rtol=1e-6, atol=1e-8 * np.max(np.abs(fd)))


def test_score_moments_equal_a_direct_two_pass_sum(model):
    mc = flat_events(2500, 8, weighted=True)
    p = model.initial_values() * 1.1
    I, dI = intensity_gradients(model, p, model.precompute(mc))
    v = mc.weights
    g = (v @ dI) / (v @ I)
    d = dI - I[:, None] * g[None, :]
    direct = (d * (v**2)[:, None]).T @ d / (v @ I) ** 2
    for chunk_size, center in [(700, None), (2500, g), (700, 5 * g)]:  # padding, any centre
        m = score_moments(model, p, iter_chunks(model, mc, chunk_size), center=center)
        assert m.n == 2500
        np.testing.assert_allclose(m.gradient, g, rtol=1e-10)
        np.testing.assert_allclose(m.gradient_covariance, direct, rtol=1e-8, atol=1e-12 * np.abs(direct).max())
    # A common scale of the weights changes nothing.
    scaled = Events(mc.momenta, 7.0 * v, reaction=mc.reaction)
    m2 = score_moments(model, p, iter_chunks(model, scaled, 700))
    np.testing.assert_allclose(m2.gradient_covariance, direct, rtol=1e-8)
    np.testing.assert_allclose(m2.effective_size, v.sum() ** 2 / (v**2).sum(), rtol=1e-12)


def test_normalisation_matrix_cache_needs_the_events(model, base, data):
    problem, _ = base
    mc = flat_events(N_MC, 500)
    result = fit(model, None, None, CONFIG, problem=problem, minimizer=base[1])
    from_cache = mc_statistics_of_fit(problem, result)
    matrix_only = dataclasses.replace(problem, mc_cache=NormalisationCache(
        problem.mc_cache.norm_re, problem.mc_cache.norm_im, jnp.asarray([float(N_MC)])))
    with pytest.raises(FitError, match="no per-event arrays"):
        mc_statistics_of_fit(matrix_only, result)
    chunks = [mc.subset(slice(0, 1500)), mc.subset(slice(1500, N_MC))]
    from_events = mc_statistics_of_fit(matrix_only, result, mc=chunks, chunk_size=1024)
    np.testing.assert_allclose(from_events.covariance, from_cache.covariance, rtol=1e-8)
    with pytest.raises(FitError, match="pass the events the problem's normalisation was built from"):
        mc_statistics_of_fit(matrix_only, result, mc=flat_events(N_MC, 501))


def test_report_and_result_json_carry_the_mc_errors(model, base, data, tmp_path):
    import json

    problem, minimizer = base
    mc = flat_events(N_MC, 500)
    result = fit(model, None, None, CONFIG, problem=problem, minimizer=minimizer)
    stats = mc_statistics_of_fit(problem, result)
    assert isinstance(stats, MCStatistics)
    text = fit_report_markdown(result, model, mc_statistics=stats)
    assert "MC stat. (%)" in text and f"normalisation sample of {N_MC} events" in text
    assert f"{100 * stats.fraction_errors[1, 1]:.2f} |" in text
    assert "MC stat." not in fit_report_markdown(result, model)  # callers without it unchanged
    write_fit_outputs(tmp_path, result, problem, data=data, mc=mc, plots=False, mc_statistics=stats)
    d = json.loads((tmp_path / "result.json").read_text())
    assert d["mc_statistics"]["n_mc"] == N_MC
    name = model.resonance_names[0]
    assert d["mc_statistics"]["fractions"][name]["error"] == pytest.approx(stats.fraction_errors[0, 0])
    # The 1/sqrt(M) extrapolation.
    assert stats.scaled_to(4 * N_MC).fraction_errors[0, 0] == pytest.approx(stats.fraction_errors[0, 0] / 2)


# --- with an explicit background term ------------------------------------------------------------

def background_shape(events: Events) -> np.ndarray:
    """g(x) = 1 + 3 (m - m_min) / (m_max - m_min) in the K+ K- mass: a background rising with m."""
    m = events.helicity_variables[:, 0]
    lo, hi = 2 * 0.493677, 3.0969 - 0.0
    return 1.0 + 3.0 * (m - lo) / (hi - lo)


@pytest.fixture(scope="module")
def background_base(model, data):
    """Signal toys plus 600 background events; B = g / <g>, the mean over a large fixed flat sample,
    so that B does not depend on the normalisation sample; f_b floats."""
    from pwa.background import BackgroundModel

    rng = np.random.default_rng(77)
    flat = flat_events(20_000, 78)
    g = background_shape(flat)
    keep = rng.uniform(size=len(flat)) < g / g.max()
    bkg = flat.subset(np.flatnonzero(keep)[:600])
    mixed = Events.concatenate([data, bkg])
    mean_g = float(np.mean(background_shape(flat_events(200_000, 79))))
    term = BackgroundModel(background_shape(mixed) / mean_g, fraction=0.2, float_fraction=True)
    problem = FitProblem.build(model, mixed, flat_events(N_MC, 500), quadrature_panels=CONFIG.quadrature_panels,
                               background=term)
    return problem, problem.minimizer(CONFIG)


def test_score_sensitivity_of_the_signal_nll_is_w_times_identity(model, base):
    from pwa.mc_statistics import score_sensitivity

    problem, _ = base
    J = score_sensitivity(problem, model.initial_values() * 1.05)
    W = problem.sum_data_weights
    np.testing.assert_allclose(J[:, 0], 0.0, atol=1e-9 * W)
    np.testing.assert_allclose(J[:, 1:], W * np.eye(model.n_free), atol=1e-9 * W)


def test_mc_covariance_with_a_background_term_matches_the_replica_spread(model, background_base):
    """The mixture NLL reads ln N itself, not only its gradient: the delta-method covariance
    J Cov[ln N, g] J^T must still match refits with independent MC samples (same bounds as the
    signal-only test), including the background fraction.

    Observed spread / mean predicted error: parameters 0.98 1.06 1.07 1.20 1.11 1.02, f_b 1.11,
    F 1.01 1.01. With the ln N column of the sensitivity zeroed (the signal-only formula) the
    f_b ratio is 3.05: its MC error would be a third of the true one, and the test fails."""
    from pwa.mc_statistics import score_sensitivity

    problem, _ = background_base
    assert problem.n_parameters == model.n_free + 1
    parameters, fractions, fits = replica_comparison(model, background_base, lambda s: flat_events(N_MC, s),
                                                     range(4000, 4000 + REPLICAS))
    _, result, stats = fits[0]
    assert stats.parameter_names[-1] == "background_fraction" and stats.errors[-1] > 0
    assert 0.1 < result.values[-1] < 0.35  # truth 600 / 2600 = 0.23
    check_agreement(parameters, fractions)
    # The ln N column matters here: without it the f_b error would be another number.
    J = score_sensitivity(fits[0][0], result.values)
    assert abs(J[-1, 0]) > 0.05 * problem.sum_data_weights, J[:, 0]
