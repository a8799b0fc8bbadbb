"""Fit reports and projection plots for every reaction: D0 -> K- pi+ pi0, psi(2S) -> K+ K- K+ K-
(identical kaons) and J/psi -> gamma K+ K-.

Each reaction gets a small fit (a few thousand events, seconds) whose
outputs must be the expected files; the histograms must hold what they claim
(data sum = entries per event x data events, the weighted MC scaled to the
data's weight sum, four K+K- pairings per psi(2S) event, the same histogram
whichever identical kaon is called which), and the Dalitz plot of flat phase
space must be flat within statistics.
"""

from pathlib import Path

import numpy as np
import pytest

from fastsim.events import Detector, Events
from fastsim.events.nbody import NBodyPhaseSpace
from pwa import FitConfig, Model, fit
from pwa.problem import FitProblem
from pwa.projections import (dalitz_histograms, dalitz_plot, dalitz_values, projection_histograms,
                             projection_values, reaction_projections)
from pwa.report import write_fit_outputs
from pwa.toys import iter_toys

from _shared import p3_card

DATA = Path(__file__).parent / "data"
MODELS = Path(__file__).parents[1] / "models"
CONFIG = FitConfig(gen_events=200_000)

EXPECTED = {
    "d0": ["fit_m_Km_pi0.png", "fit_m_Km_pip.png", "fit_m_pip_pi0.png", "fit_cos_theta_D0.png",
           "fit_cos_theta_Kst.png", "fit_dalitz.png"],
    # phi and f are both K+K-: one m(K+K-) and one cos theta(K+) histogram hold both pairs.
    "psi2s": ["fit_m_Kp_Km.png", "fit_m_Kp_Kp.png", "fit_m_Km_Km.png", "fit_cos_theta_psi2S.png",
              "fit_cos_theta_phi.png"],
    "jpsi": ["fit_m.png", "fit_cos_theta_X.png", "fit_cos_theta_1.png", "fit_phi_1.png", "fit_dalitz.png"],
}


def _public_toy(name, keys, reaction, mc_prefix, n_data, weights=None):
    z = dict(np.load(DATA / f"toy_{name}.npz"))
    data = Events(np.stack([z[f"p_{k}"][:n_data] for k in keys], axis=1), reaction=reaction)
    mc = Events(np.stack([z[f"{mc_prefix}{k}"] for k in keys], axis=1),
                None if weights is None else z[weights], reaction=reaction)
    return data, mc


def _psi2s_model() -> Model:
    """The public model P3 (phi at one node, f0(1500), f2(1270), f0(1710) at the other)."""
    return Model.from_card(p3_card(DATA))


def _inputs(name, small_card):
    """(model, data, normalisation MC) of a small fit of each reaction."""
    if name == "d0":
        model = Model.from_card(MODELS / "d0_kpipi0.yaml")
        data, mc = _public_toy("d0_kpipi0", ("km", "pip", "pi0"), model.reaction, "mc_p_", 3000)
    elif name == "psi2s":
        # The importance-weighted MC of the public toy: the 4 MeV phi needs it.
        model = _psi2s_model()
        data, mc = _public_toy("psi2s_phi_kk", ("kp1", "km1", "kp2", "km2"), model.reaction, "mcw_p_", 2000,
                               weights="mcw_weight")
    else:
        model = Model.from_card(small_card)
        data = Events.concatenate(list(iter_toys(model, 2000, Detector(None), seed=5)))
        mc = Events(NBodyPhaseSpace(model.reaction).sample(20_000, np.random.default_rng(6)),
                    reaction=model.reaction)
    return model, data, mc


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def fitted(request, tmp_path_factory, small_card):
    name = request.param
    model, data, mc = _inputs(name, small_card)
    problem = FitProblem.build(model, data, mc, gen_events=CONFIG.gen_events)
    result = fit(model, data, mc, CONFIG, problem=problem)
    out = tmp_path_factory.mktemp(f"plots_{name}")
    paths = write_fit_outputs(out, result, problem, data=data, mc=mc)
    intensity = np.asarray(model.intensity(np.asarray(result.values), problem.mc_cache))
    return name, out, paths, result, data, mc, mc.weight_array * intensity


def test_fit_writes_the_expected_plots_and_report(fitted):
    name, out, paths, result, *_ = fitted
    assert result.converged
    assert [p.name for p in paths] == ["result.json", "report.md", *EXPECTED[name]]
    for p in paths[2:]:
        assert p.stat().st_size > 10_000, p
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "## Parameters" in report and "| SF |" in report and "## Plots" in report
    for r in result.resonance_names:
        f, e = result.fraction(r)
        assert f"| {100 * f:.2f} ± {100 * e:.2f} |" in report, r
    for p in result.parameter_names:
        assert f"| {p} |" in report
    for stem in EXPECTED[name]:
        assert f"[{stem}]({stem})" in report
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    if name == "psi2s":  # the phi carries no couplings: no fraction of its own
        assert "| phi(1020) | 1- |" in report and "— (in every component)" in report
    if name == "jpsi":
        assert "| f2'(1525) | 2++ |" in report
    if name == "d0":
        assert "| K*(892)- | 1- |" in report


def test_histograms_hold_every_entry_and_the_model_is_scaled_to_the_data(fitted):
    name, _, _, _, data, mc, mc_w = fitted
    projections = reaction_projections(data.reaction)
    n = len(data)
    for proj, xd, xm in zip(projections, projection_values(projections, data), projection_values(projections, mc)):
        k = proj.entries_per_event
        assert xd.shape == (n, k) and xm.shape == (len(mc), k)
        h = projection_histograms(xd, data.weight_array, xm, mc_w, 50, proj.lo, proj.hi)
        assert h["data"].sum() == pytest.approx(k * n, abs=1e-9), proj.stem
        assert h["model"].sum() == pytest.approx(k * data.weight_array.sum(), rel=1e-12), proj.stem
        assert np.all(np.isfinite(h["pull"]))
    if name == "psi2s":
        k = {p.stem: p.entries_per_event for p in projections}
        assert k == {"m_Kp_Km": 4, "m_Kp_Kp": 1, "m_Km_Km": 1, "cos_theta_psi2S": 4, "cos_theta_phi": 4}
        pairs = projections[0]
        assert sorted(map(sorted, pairs.combinations)) == [["Km1", "Kp1"], ["Km1", "Kp2"], ["Km2", "Kp1"],
                                                           ["Km2", "Kp2"]]
    dalitz = dalitz_plot(data.reaction)
    if dalitz is not None:
        h = dalitz_histograms(dalitz, dalitz_values(dalitz, data), data.weight_array, dalitz_values(dalitz, mc),
                              mc_w, 30)
        assert h["data"].sum() == pytest.approx(n, abs=1e-9)
        assert h["model"].sum() == pytest.approx(data.weight_array.sum(), rel=1e-12)


def test_identical_kaons_are_histogrammed_symmetrically(fitted):
    """Calling the other K+ (or K-) "Kp1" changes no histogram: every pairing is filled."""
    name, _, _, _, data, *_ = fitted
    if name != "psi2s":
        pytest.skip("no identical particles")
    r = data.reaction
    projections = reaction_projections(r)
    for perm in r.identical_permutations()[1:]:
        swapped = Events(data.momenta[:, list(perm)], reaction=r)
        for proj, a, b in zip(projections, projection_values(projections, data),
                              projection_values(projections, swapped)):
            np.testing.assert_allclose(np.sort(a, axis=1), np.sort(b, axis=1), rtol=0, atol=1e-9,
                                       err_msg=f"{proj.stem} {perm}")


def test_weighted_data_sum_to_their_weights():
    model = Model.from_card(MODELS / "d0_kpipi0.yaml")
    rng = np.random.default_rng(3)
    ps = NBodyPhaseSpace(model.reaction)
    data = Events(ps.sample(3000, rng), rng.uniform(-0.5, 2.0, 3000), reaction=model.reaction)
    mc = Events(ps.sample(10_000, rng), rng.uniform(0.5, 1.5, 10_000), reaction=model.reaction)
    projections = reaction_projections(model.reaction)
    for proj, xd, xm in zip(projections, projection_values(projections, data), projection_values(projections, mc)):
        h = projection_histograms(xd, data.weights, xm, mc.weights, 40, proj.lo, proj.hi)
        assert h["data"].sum() == pytest.approx(data.weights.sum(), rel=1e-12)
        assert h["model"].sum() == pytest.approx(data.weights.sum(), rel=1e-12)
        assert h["data_err"] ** 2 == pytest.approx(
            np.histogram(xd[:, 0], h["edges"], weights=data.weights**2)[0], rel=1e-12)


def test_radiative_pair_projections_are_the_helicity_variables(small_card):
    """J/psi -> gamma K+ K- keeps its plots: m, cos theta_X, cos theta_1, phi_1 of events.helicity_variables."""
    model = Model.from_card(small_card)
    ev = Events(NBodyPhaseSpace(model.reaction).sample(2000, np.random.default_rng(1)), reaction=model.reaction)
    projections = reaction_projections(model.reaction)
    assert [p.stem for p in projections] == ["m", "cos_theta_X", "cos_theta_1", "phi_1"]
    for values, col in zip(projection_values(projections, ev), (0, 1, 3, 4)):
        np.testing.assert_allclose(values[:, 0], ev.helicity_variables[:, col], rtol=0, atol=1e-12)
    assert projections[0].label == r"$m({K^{+}}{K^{-}})$ [GeV]"
    assert (projections[0].lo, projections[0].hi) == pytest.approx((model.reaction.m_min, model.reaction.m_max))


def _cell_area_fractions(dalitz, h, sub=24):
    """Share of each Dalitz cell inside the kinematic boundary (sub x sub points per cell)."""
    xe, ye = h["x_edges"], h["y_edges"]
    u = (np.arange(sub) + 0.5) / sub
    xs = (xe[:-1, None] + np.diff(xe)[:, None] * u).ravel()
    ys = (ye[:-1, None] + np.diff(ye)[:, None] * u).ravel()
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    inside = dalitz.contains(X, Y).reshape(len(xe) - 1, sub, len(ye) - 1, sub)
    return inside.mean(axis=(1, 3))


@pytest.mark.parametrize("card", ["d0_kpipi0.yaml", "jpsi_gamma_pi0pi0.yaml"])
def test_dalitz_plot_of_flat_phase_space_is_flat(card):
    """Flat phase space fills the Dalitz plot uniformly (also symmetrised over identical pi0s)."""
    reaction = Model.from_card(MODELS / card).reaction
    dalitz = dalitz_plot(reaction)
    ev = Events(NBodyPhaseSpace(reaction).sample(200_000, np.random.default_rng(11)), reaction=reaction)
    xy = dalitz_values(dalitz, ev)
    assert xy.shape == (len(ev), len(reaction.identical_permutations()), 2)
    lo, hi = dalitz.x_limits(xy[..., 1])
    assert np.all((xy[..., 0] > lo - 1e-9) & (xy[..., 0] < hi + 1e-9))
    w = np.ones(len(ev))
    h = dalitz_histograms(dalitz, xy, w, xy, w, bins=25)
    frac = _cell_area_fractions(dalitz, h)
    full = frac == 1.0
    assert full.sum() > 200
    total = xy.shape[1] * len(ev)
    expected = total * frac / frac.sum()
    chi2 = np.sum((h["data"][full] - expected[full]) ** 2 / h["data_err"][full] ** 2)
    ndf = int(full.sum())
    assert abs(chi2 - ndf) < 5 * np.sqrt(2 * ndf), (chi2, ndf)
    # No cell outside the boundary holds an entry.
    assert np.all(h["data"][frac == 0.0] == 0)


def test_plot_functions_draw_on_the_axes_they_are_given(small_card):
    import matplotlib
    from matplotlib.figure import Figure

    from pwa.plots import draw_dalitz, draw_dalitz_pulls, draw_projection

    backend = matplotlib.get_backend()
    model = Model.from_card(small_card)
    ev = Events(NBodyPhaseSpace(model.reaction).sample(5000, np.random.default_rng(2)), reaction=model.reaction)
    proj = reaction_projections(model.reaction)[0]
    x = projection_values([proj], ev)[0]
    h = projection_histograms(x, ev.weight_array, x, ev.weight_array, 20, proj.lo, proj.hi)
    fig = Figure()
    ax, ax_pull = fig.subplots(2, 1, sharex=True)
    chi2 = draw_projection(ax, ax_pull, proj, h, title="t")
    assert chi2 == pytest.approx(0.0) and ax_pull.get_xlabel() == proj.label and ax.get_title() == "t"
    assert ax.patches or ax.collections
    dalitz = dalitz_plot(model.reaction)
    xy = dalitz_values(dalitz, ev)
    hd = dalitz_histograms(dalitz, xy, ev.weight_array, xy, ev.weight_array, 10)
    fig2 = Figure()
    a, b = fig2.subplots(1, 2)
    draw_dalitz(a, dalitz, hd, "model")
    draw_dalitz_pulls(b, dalitz, hd)
    assert a.collections and b.collections and a.get_xlabel() == dalitz.x_label
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="which"):
        draw_dalitz(a, dalitz, hd, "pulls")
