"""Flow coordinates of any reaction (fastsim.tree_coords): the contract, over every shipped card.

For each reaction: flat phase space (or the Breit-Wigner proposal's MC) maps onto
the uniform box; the map inverts; its Jacobian matches finite differences; a
model's density integrates to one over phase space, folded and permuted
included; gated samples respect the card's cuts; a checkpoint round-trips and
refuses another reaction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from fastsim.checkpoint import load_checkpoint, load_simulator, save_checkpoint
from fastsim.errors import CheckpointError
from fastsim.events import JPSI_GAMMA_KK, Detector, load_detector_card
from fastsim.events.nbody import NBodyPhaseSpace
from fastsim.events.tree import NodeVariables, chain_momenta, chain_variables, momenta_by_label, stack_momenta
from fastsim.flow import SplineFlow
from fastsim.generator import FastSimulator
from fastsim.training import model_hyperparameters
from fastsim.tree_coords import (OPERATIONS, SymmetryError, TreeCoordinateMap, antiparticle_permutation,
                                 apply_operation, detector_symmetries, symmetry_tests, training_coordinates)
from pwa.card import load_model_card

MODELS = Path(__file__).resolve().parents[1] / "models"
CARDS = ("jpsi_gamma_kk.yaml", "jpsi_gamma_pi0pi0.yaml", "d0_kpipi0.yaml", "r0.yaml")
PHI = {"phi": (1.019461, 0.004249)}


def reaction_of(card: str):
    return load_model_card(MODELS / card).reaction.to_reaction()


def folded_map(reaction, proposals=None) -> TreeCoordinateMap:
    rotation, ops = detector_symmetries(reaction, load_detector_card("default"))
    return TreeCoordinateMap(reaction, proposals=proposals, rotation=rotation, operations=ops,
                             permute=bool(proposals) and reaction.has_identical_particles)


def generated(reaction, n: int, seed: int, proposals=None) -> np.ndarray:
    space = NBodyPhaseSpace(reaction)
    rng = np.random.default_rng(seed)
    return space.sample_weighted(n, rng, proposals)[0] if proposals else space.sample(n, rng)


CASES = [(c, None, False) for c in CARDS] + [(c, None, True) for c in CARDS] + [("r0.yaml", PHI, True)]
IDS = [f"{c.removesuffix('.yaml')}{'-proposal' if p else ''}{'-folded' if f else ''}" for c, p, f in CASES]


@pytest.fixture(scope="module")
def maps():
    out = {}
    for card, props, fold in CASES:
        r = reaction_of(card)
        out[(card, bool(props), fold)] = folded_map(r, props) if fold else TreeCoordinateMap(r, proposals=props)
    return out


@pytest.mark.parametrize("card,props,fold", CASES, ids=IDS)
def test_generator_density_maps_to_uniform(maps, card, props, fold):
    cm = maps[(card, bool(props), fold)]
    n_body = cm.reaction.n_final
    assert cm.n_dim == 3 * n_body - 4 - (1 if fold else 0)  # the root azimuth dropped when folded
    u = cm.to_unit(generated(cm.reaction, 20_000, 1, props))
    assert u.shape == (20_000, cm.n_dim)
    assert np.all((u >= 0.0) & (u <= 1.0))
    p_values = [stats.kstest(u[:, i], "uniform").pvalue for i in range(cm.n_dim)]
    assert min(p_values) > 1e-4, dict(zip(cm.unit_variables, np.round(p_values, 5)))
    if not props:  # the tabulated CDF is flat phase space's: unit density relative to dPhi/Phi
        assert np.abs(np.expm1(cm.log_det(generated(cm.reaction, 2000, 2)))).max() < 2e-2


@pytest.mark.parametrize("card,props,fold", CASES, ids=IDS)
def test_round_trip(maps, card, props, fold):
    cm = maps[(card, bool(props), fold)]
    p = generated(cm.reaction, 3000, 3, props)
    u = cm.to_unit(p)
    back = cm.from_unit(u)
    np.testing.assert_allclose(cm.to_unit(back), u, atol=1e-9)
    canonical, _ = cm.canonical(p)
    if not cm.rotation:  # without the rotation fold the momenta themselves come back
        np.testing.assert_allclose(back, canonical, atol=1e-8)
    # any image drawn by from_unit's random numbers maps back onto the same domain point,
    # with the parent's four-momentum
    r = np.random.default_rng(4).random((len(u), cm.n_unfold))
    img = cm.from_unit(u, r)
    np.testing.assert_allclose(cm.to_unit(img), u, atol=1e-9)
    np.testing.assert_allclose(img.sum(axis=1), np.tile([cm.reaction.parent_mass, 0, 0, 0], (len(u), 1)),
                               atol=1e-9)


def _masses_to_unit(cm: TreeCoordinateMap, variables: dict, labels) -> np.ndarray:
    p = stack_momenta(cm.reaction, chain_momenta(cm.chain, variables, cm.space.final_masses, cm.space.parent_mass))
    return cm._unit_of_canonical(p)[0][:, :len(labels)]


@pytest.mark.parametrize("card,props", [("jpsi_gamma_kk.yaml", None), ("d0_kpipi0.yaml", None),
                                        ("r0.yaml", None), ("r0.yaml", PHI)])
def test_jacobian_against_finite_differences(card, props):
    cm = TreeCoordinateMap(reaction_of(card), proposals=props)
    p = generated(cm.reaction, 200, 5, props)
    var = chain_variables(cm.chain, momenta_by_label(cm.reaction, p))
    labels = cm.inner
    _, log_jac, _ = cm._unit_of_canonical(p)
    jac = np.zeros((len(p), len(labels), len(labels)))
    h = 1e-7
    for j, label in enumerate(labels):
        cols = []
        for sign in (+1.0, -1.0):
            moved = {k: NodeVariables(v.m + (sign * h if k == label else 0.0), v.cos_theta, v.phi)
                     for k, v in var.items()}
            cols.append(_masses_to_unit(cm, moved, labels))
        jac[:, :, j] = (cols[0] - cols[1]) / (2 * h)
    numeric = np.log(np.abs(np.linalg.det(jac)))
    # away from the grid's kinks (a finite difference across one is meaningless)
    ok = np.isfinite(numeric)
    assert ok.mean() > 0.95
    close = np.abs(numeric[ok] - log_jac[ok]) < 1e-4
    assert close.mean() > 0.97, np.sort(np.abs(numeric[ok] - log_jac[ok]))[-5:]
    # the map is triangular: d u_i / d m_j = 0 for j after i
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            assert np.abs(jac[:, i, j]).max() < 1e-6


def _random_flow(cm, seed=0, gates=False):
    torch.manual_seed(seed)
    hp = model_hyperparameters("flow", cm, load_detector_card("default") if gates else None,
                               {"n_layers": 2, "hidden": 16, "n_bins": 6}, False, gates)
    flow = SplineFlow(**hp)
    with torch.no_grad():  # a density far from uniform
        for prm in flow.parameters():
            prm.add_(0.3 * torch.randn_like(prm))
    return FastSimulator(flow, cm, reaction=cm.reaction)


@pytest.mark.parametrize("card,props,fold", [("jpsi_gamma_kk.yaml", None, True), ("d0_kpipi0.yaml", None, False),
                                             ("r0.yaml", None, True), ("r0.yaml", PHI, True)],
                         ids=["jpsi-folded", "d0", "r0-folded", "r0-proposal-folded-permuted"])
def test_density_integrates_to_one(maps, card, props, fold):
    """E_flat[p] = int p dPhi / Phi = 1 for any model, and E_p[1 / p] = 1 on its own samples."""
    cm = maps[(card, bool(props), fold)]
    sim = _random_flow(cm)
    lp = sim.log_prob(generated(cm.reaction, 40_000, 6))
    assert np.isfinite(lp).all()
    w = np.exp(lp)
    assert abs(w.mean() - 1.0) < 4 * w.std() / np.sqrt(len(w)) + 1e-3
    own = sim.sample(20_000, seed=7)
    inv = np.exp(-sim.log_prob(own.momenta))
    assert abs(inv.mean() - 1.0) < 4 * inv.std() / np.sqrt(len(inv)) + 1e-3
    if props:  # flow samples carry flat / proposal weights
        assert own.weights is not None and np.all(own.weights > 0)


def test_samples_are_reproducible_and_checkpoint_round_trip(tmp_path, maps):
    cm = maps[("r0.yaml", True, True)]
    sim = _random_flow(cm, gates=True)
    a = sim.sample(3000, seed=11, chunk_size=1000)
    np.testing.assert_array_equal(a.momenta, sim.sample(3000, seed=11, chunk_size=1000).momenta)
    assert not np.array_equal(a.momenta, sim.sample(3000, seed=12, chunk_size=1000).momenta)
    path = tmp_path / "r0.pt"
    save_checkpoint(path, {"kind": "flow", "hyperparameters": sim.model.hyperparameters,
                           "coordinates": cm.to_dict(), "reaction": cm.reaction.to_dict(),
                           "model_state": sim.model.state_dict()})
    sim2 = load_simulator(path)
    assert sim2.is_tree and sim2.reaction == cm.reaction and sim2.proposals == cm.proposals
    b = sim2.sample(3000, seed=11, chunk_size=1000)
    np.testing.assert_array_equal(a.momenta, b.momenta)
    np.testing.assert_allclose(sim.log_prob(a.momenta[:500]), sim2.log_prob(b.momenta[:500]), atol=1e-10)
    with pytest.raises(CheckpointError, match=r"trained for psi\(2S\) -> K\+ K- K\+ K-, not for J/psi -> gamma K\+ K-"):
        load_checkpoint(path, JPSI_GAMMA_KK)
    with pytest.raises(ValueError, match="samples four-momenta"):
        sim2.sample_hv(10)


def test_gated_samples_respect_the_cuts(maps):
    """An untrained gated flow: its samples lie inside the card's track cuts, to the gates' widths."""
    cm = maps[("r0.yaml", True, True)]
    card = load_detector_card("default")
    sim = _random_flow(cm, gates=True)
    p = sim.sample(20_000, seed=3).momenta
    pt = np.hypot(p[..., 1], p[..., 2])
    cos = p[..., 3] / np.linalg.norm(p[..., 1:], axis=-1)
    outside = (np.abs(cos) > card.charged.cos_theta_max + 0.01) | (pt < card.charged.pt_min - 0.015)
    assert outside.any(axis=1).mean() < 2e-3
    # without the gates the same flow puts a sizeable share outside
    plain = _random_flow(cm, gates=False).sample(20_000, seed=3).momenta
    pt0 = np.hypot(plain[..., 1], plain[..., 2])
    cos0 = plain[..., 3] / np.linalg.norm(plain[..., 1:], axis=-1)
    assert ((np.abs(cos0) > card.charged.cos_theta_max + 0.01) | (pt0 < card.charged.pt_min - 0.015)).any(axis=1).mean() > 0.05


def test_symmetry_operations_flip_one_coordinate():
    r0 = reaction_of("r0.yaml")
    assert antiparticle_permutation(r0) == (1, 0, 3, 2)
    assert antiparticle_permutation(reaction_of("d0_kpipi0.yaml")) is None  # K- pi+ pi0 -> K+ pi- pi0
    assert antiparticle_permutation(JPSI_GAMMA_KK) == (0, 2, 1)
    cm = TreeCoordinateMap(r0, rotation=True, operations=OPERATIONS)
    assert [cm.unit_variables[i] for i in cm._flips.values()] == ["cos_theta_psi(2S)", "cos_theta_phi", "phi_phi"]
    p = generated(r0, 500, 8)
    for op in OPERATIONS:  # each is an involution that keeps every invariant mass
        q = apply_operation(op, p, r0)
        np.testing.assert_allclose(apply_operation(op, q, r0), p)
    with pytest.raises(SymmetryError, match="charge conjugate"):
        TreeCoordinateMap(reaction_of("d0_kpipi0.yaml"), rotation=True, operations=("conjugation",))
    with pytest.raises(SymmetryError, match="mirror"):
        TreeCoordinateMap(r0, operations=("mirror",))
    with pytest.raises(SymmetryError, match="needs proposals"):
        TreeCoordinateMap(r0, permute=True)


def test_symmetry_tests_catch_an_asymmetric_sample():
    """MC through the default detector passes; the same MC with a forward-only cut fails z -> -z."""
    r0 = reaction_of("r0.yaml")
    det = Detector(load_detector_card("default"))
    from fastsim.events import Events

    ev = det.apply(Events(generated(r0, 40_000, 9), None, reaction=r0), np.random.default_rng(10))
    coords, res = training_coordinates(r0, ev.momenta, card=det.card)
    assert res["min_p_value"] > 1e-3 and set(coords.operations) == set(OPERATIONS)
    forward = ev.momenta[:, 0, 3] > -0.5 * np.linalg.norm(ev.momenta[:, 0, 1:], axis=1)  # Kp1 cos > -0.5
    res = symmetry_tests(coords, ev.momenta[forward])
    assert res["z_reflection"]["p_value"] < 1e-6
    from fastsim.errors import TrainingError

    with pytest.raises(TrainingError, match="z_reflection p = "):
        training_coordinates(r0, ev.momenta[forward], card=det.card, source="forward.parquet")


def test_map_round_trips_through_its_dictionary(maps):
    cm = maps[("r0.yaml", True, True)]
    again = TreeCoordinateMap.from_dict(cm.to_dict())
    p = generated(cm.reaction, 500, 12, PHI)
    np.testing.assert_array_equal(again.to_unit(p), cm.to_unit(p))
    bad = dict(cm.to_dict(), grid=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="grid"):
        TreeCoordinateMap.from_dict(bad)


def _narrow_gates(reaction, card):
    """Gates of the reaction at the card's cuts with every width shrunk to 1e-7: hard cuts."""
    from fastsim.acceptance import AcceptanceGates, tree_gate_settings

    settings = tree_gate_settings(card, reaction)
    for key, value in settings.items():
        if key in AcceptanceGates.NAMES:
            settings[key] = [value[0], 1e-7]
    return AcceptanceGates(settings), settings


def _region_constant(detector, particle: str, p: np.ndarray) -> np.ndarray:
    """The efficiency constant of a particle's detector region (what the gates leave to the flow)."""
    from fastsim.events.detector import ChargedRules, PhotonCard

    rules = detector.rules_for(particle)
    cos = np.abs(p[:, 3]) / np.linalg.norm(p[:, 1:], axis=1)
    card = detector.card
    photon = np.where(cos < card.photon.barrel.cos_theta_max, card.photon.barrel.efficiency,
                      card.photon.endcap.efficiency)
    if isinstance(rules, ChargedRules):
        return np.full(len(p), rules.efficiency_plateau)
    if isinstance(rules, PhotonCard):
        return photon
    if rules.geometry == "charged":
        return np.full(len(p), rules.efficiency * card.charged.rules_for("pi+").efficiency_plateau ** 2)
    return rules.efficiency * photon ** 2


@pytest.mark.parametrize("card", ["jpsi_gamma_pi0pi0.yaml", "d0_kpipi0.yaml", "jpsi_gamma_kk.yaml"])
def test_gates_at_vanishing_widths_are_the_detector_acceptance(card):
    """Tracks, photon and neutral hadrons (pi0 from two photons, with the exact two-photon energy
    threshold): at widths -> 0 the gates equal the detector's efficiency up to each region's
    constant, away from the cut edges."""
    from fastsim.acceptance import tree_lab_features
    from fastsim.events import Events

    reaction = reaction_of(card)
    dcard = load_detector_card("default")
    detector = Detector(dcard)
    gates, settings = _narrow_gates(reaction, dcard)
    p = generated(reaction, 20_000, 21)
    g = gates.log_g(torch.as_tensor(tree_lab_features(p, settings))).exp().detach().numpy()
    eff = detector.efficiency(Events(p, reaction=reaction))
    const = np.prod([_region_constant(detector, name, p[:, i]) for i, name in enumerate(reaction.particles)], axis=0)
    cos = np.abs(p[..., 3]) / np.linalg.norm(p[..., 1:], axis=-1)
    edges = [dcard.charged.cos_theta_max, dcard.photon.barrel.cos_theta_max, dcard.photon.endcap.cos_theta_min,
             dcard.photon.endcap.cos_theta_max]
    away = np.all(np.abs(cos[..., None] - np.asarray(edges)).min(axis=-1) > 1e-4, axis=1)
    pt = np.hypot(p[..., 1], p[..., 2])
    away &= np.all(np.abs(pt - dcard.charged.pt_min) > 1e-4, axis=1)
    assert away.mean() > 0.98
    np.testing.assert_allclose(g[away], (eff / const)[away], atol=2e-6)
    assert 0.05 < (g > 0.5).mean() < 0.95  # the cuts matter for this final state
    if "neutral" in settings:  # the energy threshold is exercised: partial two-photon acceptance
        assert ((g[away] > 1e-3) & (g[away] < 0.999)).mean() > 1e-3


def test_neutral_hadron_gates_keep_a_flow_inside_the_calorimeter():
    """An untrained gated flow of J/psi -> gamma pi0 pi0: its pi0s lie in the photon barrel or end cap
    (to the gates' widths); without the gates a sizeable share falls in the gap or beyond."""
    reaction = reaction_of("jpsi_gamma_pi0pi0.yaml")
    dcard = load_detector_card("default")
    b, e = dcard.photon.barrel, dcard.photon.endcap
    cm = folded_map(reaction)
    pions = [i for i, name in enumerate(reaction.particles) if name == "pi0"]

    def outside(sim):
        p = sim.sample(20_000, seed=3).momenta[:, pions]
        cos = np.abs(p[..., 3]) / np.linalg.norm(p[..., 1:], axis=-1)
        inside = (cos < b.cos_theta_max + 0.01) | ((cos > e.cos_theta_min - 0.01) & (cos < e.cos_theta_max + 0.01))
        return (~inside).any(axis=1).mean()

    gated = _random_flow(cm, gates=True)
    assert gated.model.gates.neutral == pions and gated.model.gates.neutral_geometry == ["photon", "photon"]
    assert outside(gated) < 2e-3
    assert outside(_random_flow(cm, gates=False)) > 0.05


def test_neutral_gates_refuse_what_they_do_not_model():
    from fastsim.acceptance import tree_gate_settings
    from fastsim.events.particles import Reaction

    dcard = load_detector_card("default")
    pi0 = dcard.neutral.species["pi0"].model_copy(update={"e_min": 0.2})
    with_cut = dcard.model_copy(update={"neutral": dcard.neutral.model_copy(
        update={"species": dcard.neutral.species | {"pi0": pi0}})})
    with pytest.raises(ValueError, match=r"neutral\.species\.pi0 has its own e_min or pt_min"):
        tree_gate_settings(with_cut, reaction_of("jpsi_gamma_pi0pi0.yaml"))
    # K_S0 from two pions: the pi+ track cut; refused where the other tracks' cut differs
    ks = Reaction.from_final_state({"Ks": "K_S0", "pip": "pi+", "pim": "pi-"}, parent="D0",
                                   chains=("D0 -> R Ks; R -> pip pim",))
    settings = tree_gate_settings(dcard, ks)
    assert settings["neutral_geometry"] == ["charged"]
    assert settings["charged_cos_max"][0] == dcard.charged.rules_for("pi+").cos_theta_max
    from fastsim.events.detector import ChargedOverride

    narrow_pions = dcard.model_copy(update={"charged": dcard.charged.model_copy(
        update={"species": {"pi+": ChargedOverride(cos_theta_max=0.85)}})})
    kk = Reaction.from_final_state({"Ks": "K_S0", "Kp": "K+", "pim": "pi-"}, parent="D0",
                                   chains=("D0 -> R Ks; R -> Kp pim",))
    with pytest.raises(ValueError, match=r"K_S0 is reconstructed in the pi\+ track acceptance, \|cos theta\| < 0.85"):
        tree_gate_settings(narrow_pions, kk)
