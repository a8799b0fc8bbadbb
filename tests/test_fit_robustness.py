"""Robustness of floating fits: physical default bounds of masses and widths, a warning when a
fit ends on a bound, the distinct minima of a multi-start fit, and the default number of starts."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastsim.events import MASSES, Detector, Events
from pwa.amplitude import MASS_MARGIN, THRESHOLD_MARGIN, WIDTH_MAX, WIDTH_MIN, Model, kinematic_mass_range
from pwa.card import load_model_card, parse_model_card
from pwa.errors import FitError
from pwa.fit import coarse_problem, distinct_minima, fit
from pwa.fit_result import FitConfig
from pwa.optimize import MinimizeResult
from pwa.problem import FitProblem
from pwa.report import fit_report_markdown, write_fit_outputs
from pwa.starts import default_starts, random_starts
from pwa.toys import iter_toys

from _shared import flat_events

MK = MASSES["K+"]
M_JPSI = 3.0969
M_PSI2S = 3.6861


def floating(path: str, which: dict[str, list[str]]) -> Model:
    """A shipped card with some lineshape parameters floating."""
    raw = load_model_card(Path("models") / path).to_dict()
    for r in raw["resonances"]:
        r["float"] = which.get(r["name"], [])
    return Model.from_card(parse_model_card(raw, source=path))


def bounds_of(model: Model) -> dict:
    return dict(zip(model.parameter_names, model.bounds))


# --- default bounds -------------------------------------------------------------------------


def test_bounds_of_jpsi_gamma_kk():
    model = floating("jpsi_gamma_kk.yaml", {"f2(1270)": ["mass", "width"], "f0(980)": ["mass"]})
    thr, m_max = model.kinematic_range("f2(1270)")
    assert thr == pytest.approx(2 * MK) and m_max == pytest.approx(M_JPSI, abs=1e-4)
    b = bounds_of(model)
    # A BW with energy-dependent width keeps its floor just above threshold.
    assert b["f2(1270):mass"] == pytest.approx((2 * MK + THRESHOLD_MARGIN, m_max + MASS_MARGIN))
    assert b["f2(1270):width"] == (WIDTH_MIN, WIDTH_MAX) == (1e-6, 2.0)
    # The sub-threshold Flatte f0(980) (0.979 < 2 m_K = 0.987) stays allowed, with room below it.
    lo, hi = b["f0(980):mass"]
    assert lo == pytest.approx(0.979 - MASS_MARGIN) and hi == pytest.approx(m_max + MASS_MARGIN)
    # Every optimiser and random_starts see them: every start lies strictly inside.
    for x in random_starts(model, model.initial_values(), 8, seed=3)[1:]:
        for v, (lo, hi) in zip(x, model.bounds):
            assert (lo is None or v > lo) and (hi is None or v < hi)


def test_bounds_of_four_body_and_three_chain_cards():
    model = floating("r0.yaml", {"f2(1270)": ["mass", "width"], "f0(980)": ["mass"], "phi(1020)": ["mass"]})
    b = bounds_of(model)
    thr, m_max = 2 * MK, M_PSI2S - 2 * MK  # psi(2S) -> phi f, f -> K+ K-: the phi's kaons are not in f
    for name in ("f2(1270)", "phi(1020)"):
        assert model.kinematic_range(name) == pytest.approx((thr, m_max), abs=1e-4)
    # BW_f2_pipi's own floor (the pi pi threshold) is looser than the kinematic one.
    assert b["f2(1270):mass"] == pytest.approx((thr - MASS_MARGIN, m_max + MASS_MARGIN), abs=1e-4)
    assert b["phi(1020):mass"] == pytest.approx((thr - MASS_MARGIN, m_max + MASS_MARGIN), abs=1e-4)
    assert b["f0(980):mass"][0] == pytest.approx(0.9795 - MASS_MARGIN)
    # D0 -> K- pi+ pi0, three chains: each node's pair recoils against the third particle.
    d0 = floating("d0_kpipi0.yaml", {"K*(892)-": ["mass"], "rho(770)+": ["mass"]})
    m_d0 = d0.reaction.parent_mass
    assert d0.kinematic_range("K*(892)-") == pytest.approx((MK + MASSES["pi0"], m_d0 - MASSES["pi+"]))
    assert kinematic_mass_range(d0.reaction, "rho") == pytest.approx(
        (MASSES["pi+"] + MASSES["pi0"], m_d0 - MK))
    assert bounds_of(d0)["rho(770)+:mass"][1] == pytest.approx(m_d0 - MK + MASS_MARGIN)


def test_card_bounds_win_and_card_values_outside_the_range_stay_allowed():
    card = {"resonances": [
        {"name": "f2'(1525)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.5223, "width": 0.0858},
         "float": ["mass", "width"], "bounds": {"mass": [1.45, None], "width": [0.01, 5.0]},
         "couplings": {0: [1.0, 0.0]}},
        # Above the J/psi -> gamma K+ K- range, and wider than WIDTH_MAX / 2: the card's own values.
        {"name": "X", "spin": 0, "lineshape": {"type": "BW_plain", "mass": 3.5, "width": 1.5},
         "float": ["mass", "width"], "couplings": {0: [0.1, 0.0]}}], "reference": "f2'(1525)"}
    b = bounds_of(Model.from_card(card))
    assert b["f2'(1525):mass"] == pytest.approx((1.45, M_JPSI + MASS_MARGIN), abs=1e-4)  # null side: default
    assert b["f2'(1525):width"] == (0.01, 5.0)
    assert b["X:mass"] == pytest.approx((2 * MK - MASS_MARGIN, 3.5 + MASS_MARGIN))
    assert b["X:width"] == (WIDTH_MIN, 3.0)


def test_default_starts():
    assert default_starts(Model.from_card(load_model_card("models/jpsi_gamma_kk.yaml"))) == 1
    assert default_starts(floating("jpsi_gamma_kk.yaml", {"f2(1270)": ["width"]})) == 5


# --- distinct minima ------------------------------------------------------------------------


def _outcome(fun: float, converged: bool = True) -> MinimizeResult:
    z = np.zeros((1, 1))
    return MinimizeResult(x=np.array([fun]), fun=fun, converged=converged, edm=0.0, hessian=z, covariance=z,
                          hessian_eigenvalues=np.ones(1), gradient=np.zeros(1), n_iterations=1,
                          n_evaluations=1, optimizer="test", message="", wall_time=0.0)


def test_distinct_minima_of_two_known_minima():
    outcomes = [_outcome(-10.0), _outcome(-3.0, False), _outcome(-9.995), FitError("bad start"),
                _outcome(-10.004, False), _outcome(float("inf")), _outcome(-3.005)]
    minima, failed = distinct_minima(outcomes, nll=lambda x: float(x[0]) + 1.0)
    assert failed == 2
    assert [m.n_starts for m in minima] == [3, 2]
    assert sum(m.n_starts for m in minima) + failed == len(outcomes)
    assert minima[0].objective == -10.004 and minima[0].nll == pytest.approx(-9.004)
    assert minima[0].starts == (0, 2, 4) and minima[0].n_converged == 2 and not minima[0].converged
    assert minima[1].starts == (1, 6) and minima[1].n_converged == 1 and minima[1].converged


# --- fits: a mass pushed against a bound, and one that is not --------------------------------

#: One D-wave state, its mass floating (three free parameters: one coupling and the mass), from
#: 1.45 GeV. Both fits use this model, so that they share its compiled programs.
CARD = {"resonances": [
    {"name": "f2'(1525)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.45, "width": 0.0858},
     "float": ["mass"], "couplings": {0: [1.0, 0.0], 1: [0.8, 1.2]}}],
    "reference": "f2'(1525)"}
PANELS = 20
N_DATA, N_MC = 800, 4000


def toy(mass: float, seed: int) -> Events:
    """Generator-level events of CARD's state at ``mass``."""
    raw = {**CARD, "resonances": [{**CARD["resonances"][0], "lineshape": {**CARD["resonances"][0]["lineshape"],
                                                                          "mass": mass}}]}
    return Events.concatenate(list(iter_toys(Model.from_card(raw), N_DATA, Detector(None), seed=seed)))


@pytest.fixture(scope="module")
def model():
    return Model.from_card(CARD)


@pytest.fixture(scope="module")
def mc():
    return flat_events(N_MC, seed=6)


@pytest.fixture(scope="module")
def free_fit(model, mc):
    """Data at 1.5223 GeV, well inside the default bounds; three starts."""
    data = toy(1.5223, seed=5)
    problem = FitProblem.build(model, data, mc, quadrature_panels=PANELS)
    return problem, data, fit(model, data, mc, FitConfig(starts=3, seed=4, quadrature_panels=PANELS),
                              problem=problem)


def test_a_mass_pushed_against_its_bound_is_named(model, mc, free_fit):
    """A state at 3.3 GeV, above the J/psi -> gamma K+ K- range: the mass runs to the default upper bound
    (m_max + MASS_MARGIN), not off to infinity, and the warning names it."""
    hi = model.bounds[model.parameter_names.index("f2'(1525):mass")][1]
    assert hi == pytest.approx(M_JPSI + MASS_MARGIN, abs=1e-4)
    res = fit(model, toy(3.3, seed=7), mc, FitConfig(quadrature_panels=PANELS))
    value, error = res.parameter("f2'(1525):mass")
    assert value == pytest.approx(hi, abs=1e-5) and error == 0.0
    expected = (f"f2'(1525):mass ended at its upper bound {hi:.6g} GeV: the fit ran to the edge of the allowed "
                "range; its error is not meaningful")
    assert expected in res.warnings
    assert f"warning: {expected}" in str(res)
    assert expected in fit_report_markdown(res, model)
    # The minimum's convergence is judged as the result's: without the parameter on the bound.
    assert res.converged and res.distinct_minima[0].converged


def test_a_coarse_stage_reaches_the_minimum_of_the_full_mc(model, mc, free_fit, tmp_path):
    """FitConfig.coarse_mc: every start is minimised first with every 4th MC event, then with all of
    them. The best minimum is that of the fit without the stage, from the same starts (the coarse
    problem's own minimum lies elsewhere: its normalisation sums other events); with refine = 2 the
    start of the highest coarse minimum stops there and is counted, not listed as a minimum."""
    problem, data, res = free_fit
    config = FitConfig(starts=3, seed=4, quadrature_panels=PANELS, coarse_mc=N_MC // 4, refine=2)
    coarse = coarse_problem(problem, data, mc, config, n_starts=3)
    assert coarse.n_mc == N_MC // 4 and coarse.n_data == problem.n_data
    assert coarse_problem(problem, data, mc, config, n_starts=1) is None
    assert coarse_problem(problem, data, mc, replace(config, coarse_mc=N_MC), n_starts=3) is None
    with pytest.raises(FitError, match="coarse_mc: the coarse stage subsamples the MC events"):
        coarse_problem(problem, None, None, config, n_starts=3)
    x_coarse = fit(model, data, mc, replace(config, coarse_mc=0, starts=1), problem=coarse).values
    assert abs(x_coarse - res.values).max() > 1e-4  # the stage's minimum is not the answer

    staged = fit(model, data, mc, config, problem=problem)
    assert staged.converged and staged.unrefined_starts == 1
    assert staged.objective == pytest.approx(res.objective, abs=1e-6)
    assert np.all(np.abs(staged.values - res.values) <= 1e-2 * res.errors), (staged.values - res.values) / res.errors
    minima = staged.distinct_minima
    assert sum(m.n_starts for m in minima) + staged.failed_starts + staged.unrefined_starts == 3
    assert "1 of 3 stopped after the coarse stage" in str(staged)
    write_fit_outputs(tmp_path, staged, problem, data=data, mc=mc, plots=False)
    assert json.loads((tmp_path / "result.json").read_text())["unrefined_starts"] == 1
    assert "1 start(s) stopped after the coarse stage" in (tmp_path / "report.md").read_text()


def test_a_free_fit_has_no_bound_warning_and_lists_its_minima(free_fit, mc, tmp_path):
    problem, data, res = free_fit
    assert res.converged
    mass, error = res.parameter("f2'(1525):mass")
    assert abs(mass - 1.5223) < 5 * error
    assert not any("bound" in w for w in res.warnings)
    minima = res.distinct_minima
    assert minima and sum(m.n_starts for m in minima) + res.failed_starts == 3
    assert sorted(i for m in minima for i in m.starts) == list(range(3 - res.failed_starts))
    assert minima[0].objective == pytest.approx(res.objective) and minima[0].converged
    assert minima[0].nll == pytest.approx(res.nll)  # no penalty: objective = NLL
    assert [m.objective for m in minima] == sorted(m.objective for m in minima)
    assert res.minima == tuple((m.objective, m.converged) for m in minima)

    write_fit_outputs(tmp_path, res, problem, data=data, mc=mc, plots=False)
    d = json.loads((tmp_path / "result.json").read_text())
    assert [m["n_starts"] for m in d["distinct_minima"]] == [m.n_starts for m in minima]
    assert d["distinct_minima"][0]["nll"] == pytest.approx(res.nll) and d["failed_starts"] == res.failed_starts
    report = (tmp_path / "report.md").read_text()
    assert "## Starts" in report and f"3 starts; {len(minima)} distinct minim" in report
    assert f"| 1 | {minima[0].objective:.3f} | +0.000 |" in report
    assert "distinct minima (NLL~)" in str(res) and f"{minima[0].n_starts} of 3 starts" in str(res)


def test_a_penalised_coarse_stage_draws_fewer_generator_events():
    """With a penalty on the fractions (here SF) and generator-level fraction events (D0 -> K- pi+ pi0),
    the coarse problem sums about coarse_mc of those too; without a penalty it keeps the fit's own."""
    model = floating("d0_kpipi0.yaml", {"K*(892)-": ["mass"]})
    rng = np.random.default_rng(11)
    from pwa.fractions import generator_events
    mc = generator_events(model, 3000, rng)
    data = generator_events(model, 300, rng)
    config = FitConfig(starts=3, coarse_mc=400, gen_events=2000, gen_seed=5)
    problem = FitProblem.build(model, data, mc, gen_events=config.gen_events, gen_seed=config.gen_seed)
    plain = coarse_problem(problem, data, mc, config, n_starts=3)
    assert plain.gen_cache is problem.gen_cache and plain.n_mc == 375  # every 8th event
    penalised = coarse_problem(problem, data, mc, replace(config, sf_lambda=1e-2), n_starts=3)
    n_gen = {c: len(np.asarray(c.weights)) for c in (problem.gen_cache, penalised.gen_cache)}
    assert n_gen[problem.gen_cache] == 2000 and n_gen[penalised.gen_cache] == 400
