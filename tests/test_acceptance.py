"""Acceptance-gated flows (fastsim.acceptance): lab variables, normalisation,
sampling against the density, the log Z gradient, checkpoints, and recovery of
a hard-cut acceptance from events."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsim.acceptance import AcceptanceGates, gate_settings, lab_features
from fastsim.checkpoint import load_simulator
from fastsim.coords import CoordinateMap
from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace, load_detector_card
from fastsim.flow import SplineFlow
from fastsim.training import TrainConfig, fit, model_hyperparameters

TINY = {"n_layers": 4, "hidden": 16, "n_blocks": 1, "n_bins": 6}
R = JPSI_GAMMA_KK


@pytest.fixture(scope="module")
def card():
    return load_detector_card("default")


def _random_hv(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(R.m_min, R.m_max, n), rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n),
                     rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)], axis=1)


def _hard_acceptance(feats: np.ndarray, card) -> np.ndarray:
    """The card's geometric cuts (no efficiency, no resolution) on lab features."""
    ch, b, e = card.charged, card.photon.barrel, card.photon.endcap
    ok = np.ones(len(feats), bool)
    for k in (0, 2):
        ok &= (np.abs(feats[:, k]) < ch.cos_theta_max) & (feats[:, k + 1] > ch.pt_min)
    c, en = np.abs(feats[:, 4]), feats[:, 5]
    barrel = (c < b.cos_theta_max) & (en > b.e_min)
    endcap = (c > e.cos_theta_min) & (c < e.cos_theta_max) & (en > e.e_min)
    return ok & (barrel | endcap)


def test_lab_features_match_the_four_momenta():
    hv = _random_hv(2000, 1)
    f = lab_features(hv, R.parent_mass, R.m1, R.m2)
    mom = Events.from_helicity_variables(hv, R).momenta
    ref = []
    for i in (1, 2):
        p = mom[:, i]
        ref += [p[:, 3] / np.linalg.norm(p[:, 1:], axis=1), np.hypot(p[:, 1], p[:, 2])]
    g = mom[:, 0]
    ref += [g[:, 3] / np.linalg.norm(g[:, 1:], axis=1), g[:, 0]]
    np.testing.assert_allclose(f, np.stack(ref, axis=1), atol=1e-12)


def test_gates_are_soft_steps_at_the_card_cuts(card):
    gates = AcceptanceGates(gate_settings(card))
    f = np.zeros((5, 6))
    f[:, [1, 3]] = 5.0           # kaons: pT far above threshold, cos theta 0
    f[:, 5] = 1.0                # photon: 1 GeV
    f[:, 4] = [0.5, 0.80, 0.83, 0.89, 0.95]  # barrel, barrel edge, gap, end cap, beyond
    g = gates.log_g(torch.as_tensor(f)).exp().detach().numpy()
    assert g[0] > 1 - 1e-9 and g[3] > 1 - 1e-6
    assert g[1] == pytest.approx(0.5, abs=1e-9)  # at the edge: half
    assert g[2] < 1e-9 and g[4] < 1e-9
    # tracking turn-on: 1 - exp(-(pT - pT_min) / turn_on) for each kaon, as in the card
    f = np.zeros((2, 6))
    f[:, 5], f[:, 3] = 1.0, 5.0
    f[:, 1] = [card.charged.pt_min + card.charged.turn_on, card.charged.pt_min + 3 * card.charged.turn_on]
    g = gates.log_g(torch.as_tensor(f)).exp().detach().numpy()
    np.testing.assert_allclose(g, 1.0 - np.exp([-1.0, -3.0]), rtol=1e-4)  # (smoothed threshold)


def _gated(card, fold: bool, seed: int = 0, scale: float = 0.0) -> SplineFlow:
    coords = CoordinateMap.for_reaction(R, fold=fold)
    hp = model_hyperparameters("flow", coords, card, TINY, edge_knots=False, gates=True)
    torch.manual_seed(seed)
    flow = SplineFlow(**hp).double()
    if scale:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in flow.layers.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow.eval()


@pytest.mark.parametrize("fold", [True, False])
def test_gated_density_integrates_to_one(card, fold):
    flow = _gated(card, fold, scale=0.2)
    u = torch.rand((400_000, flow.n_dim), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        p = flow.log_prob_unit(u).exp().numpy()
    err = p.std() / np.sqrt(len(p))
    assert abs(p.mean() - 1.0) < 4 * err + 3e-4  # + the 2^20-point estimate of Z


def test_gated_samples_follow_the_density_and_respect_the_cuts(card):
    flow = _gated(card, True, scale=0.2)
    coords = CoordinateMap.for_reaction(R, fold=True)
    s = flow.sample_unit(100_000, torch.Generator().manual_seed(4))
    assert s.shape == (100_000, 4)
    np.testing.assert_array_equal(s.numpy(), flow.sample_unit(100_000, torch.Generator().manual_seed(4)).numpy())
    feats = lab_features(coords.from_unit(s.numpy()), R.parent_mass, R.m1, R.m2)
    assert 1.0 - _hard_acceptance(feats, card).mean() < 0.01  # only the soft edges' tails
    # E_samples[h] = E_uniform[h p] for a few test functions h
    u = torch.rand((400_000, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        w = flow.log_prob_unit(u).exp().numpy()
    for h in (lambda x: x[:, 0] < 0.3, lambda x: x[:, 1] > 0.7, lambda x: x[:, 2] * x[:, 3]):
        hs, hu = h(s.numpy()).astype(float), h(u.numpy()).astype(float)
        err = np.hypot(hs.std() / np.sqrt(len(hs)), (hu * w).std() / np.sqrt(len(hu)))
        assert abs(hs.mean() - (hu * w).mean()) < 4 * err


def test_log_z_surrogate_has_the_gradient_of_log_z_in_the_gate_parameters(card):
    flow = _gated(card, True, scale=0.2).train()
    value = flow._log_z_surrogate(20_000, torch.Generator().manual_seed(6))
    value.backward()
    grad = torch.cat([flow.gates.shift.grad, flow.gates.log_width.grad])
    with torch.no_grad():
        est = flow._log_mean_g(20_000, torch.Generator().manual_seed(6))
        assert float(value) == pytest.approx(est, abs=1e-12)
        fd = []
        for par in (flow.gates.shift, flow.gates.log_width):
            for i in range(len(par)):
                old = float(par[i])
                vals = []
                for step in (1e-4, -1e-4):
                    par[i] = old + step
                    vals.append(flow._log_mean_g(20_000, torch.Generator().manual_seed(6)))
                par[i] = old
                fd.append((vals[0] - vals[1]) / 2e-4)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-4, atol=1e-7)


def test_gated_flow_recovers_a_hard_cut_acceptance(card, tmp_path):
    """Flat phase space through the card's hard cuts is uniform x acceptance on the
    unit box: a gated flow learns it with its samples inside the cuts, and its
    checkpoint reloads to the same density and samples."""
    coords = CoordinateMap.for_reaction(R, fold=True)
    gen = PhaseSpace(R).sample(60_000, np.random.default_rng(7))
    acc = gen[_hard_acceptance(lab_features(gen, R.parent_mass, R.m1, R.m2), card)]
    u = coords.to_unit(acc)
    out = {}
    for gates in (False, True):
        hp = model_hyperparameters("flow", coords, card, TINY, edge_knots=False, gates=gates)
        cfg = TrainConfig(kind="flow", hyperparameters=hp, epochs=4, batch_size=1024, patience=10, seed=1)
        res = fit(u, cfg, checkpoint=tmp_path / f"g{gates}.pt",
                  metadata={"coordinates": coords.to_dict(), "reaction": R.to_dict(), "detector": None,
                            "training_file": {"sha256": "x"}})
        s = res["model"].sample_unit(50_000, torch.Generator().manual_seed(8)).double().numpy()
        f = lab_features(coords.from_unit(s), R.parent_mass, R.m1, R.m2)
        out[gates] = (1.0 - _hard_acceptance(f, card).mean(), res)
    assert out[True][0] < 0.01 < out[False][0]
    sim = load_simulator(tmp_path / "gTrue.pt")
    model = out[True][1]["model"]
    hv = acc[:300]
    with torch.no_grad():
        direct = model.double().log_prob_unit(torch.as_tensor(u[:300])).numpy()
    np.testing.assert_allclose(sim.log_prob(hv), direct + coords.log_det(hv), atol=1e-6)
    np.testing.assert_array_equal(sim.sample_hv(2000, seed=5), load_simulator(tmp_path / "gTrue.pt").sample_hv(2000, seed=5))


def test_bad_acceptance_settings_are_refused(card):
    coords = CoordinateMap.for_reaction(R, fold=True)
    with pytest.raises(ValueError, match="acceptance needs"):
        SplineFlow(**TINY, n_dim=4, circular=(), acceptance={"gates": gate_settings(card)})
    bad = gate_settings(card)
    bad["charged_cos_max"] = [0.93, 0.0]
    with pytest.raises(ValueError, match="widths must be positive"):
        SplineFlow(**TINY, n_dim=4, circular=(), acceptance={"coords": coords.to_dict(), "gates": bad})
