"""Folded coordinates (fastsim.coords, fold=True): the symmetry maps are the
detector symmetries of the four-momenta, folding and unfolding are inverse,
the folded flow's density is normalised in the physical variables and its
samples are symmetric; the symmetry test tells symmetric from asymmetric MC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsim.coords import (CoordinateMap, acceptance_knots, fold_helicity_variables,
                            unfold_helicity_variables)
from fastsim.events import JPSI_GAMMA_KK, Detector, Events, iter_conventional_mc, load_detector_card
from fastsim.events.kinematics import four_momenta, helicity_variables
from fastsim.flow import SplineFlow, coupling_masks
from fastsim.generator import FastSimulator
from fastsim.validation import symmetry_test

R = JPSI_GAMMA_KK
FOLDED = CoordinateMap.for_reaction(R, fold=True)
PLAIN = CoordinateMap.for_reaction(R)
TINY_FOLDED_FLOW = {"n_layers": 6, "hidden": 16, "n_blocks": 1, "n_bins": 6, "n_dim": 4, "circular": (),
                    "cbrt_features": (0,)}


def _random_hv(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(R.m_min + 0.01, R.m_max - 0.01, n), rng.uniform(-1, 1, n),
                     rng.uniform(-np.pi, np.pi, n), rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)], 1)


def _reflect(p: np.ndarray, axis: int) -> np.ndarray:
    q = p.copy()
    q[:, 1 + axis] *= -1.0
    return q


def _rotate_z(p: np.ndarray, a: float) -> np.ndarray:
    q = p.copy()
    q[:, 1] = np.cos(a) * p[:, 1] - np.sin(a) * p[:, 2]
    q[:, 2] = np.sin(a) * p[:, 1] + np.cos(a) * p[:, 2]
    return q


def test_every_detector_symmetry_of_the_momenta_folds_to_the_same_point():
    hv = _random_hv(2000, 0)
    g, p1, p2 = four_momenta(hv, R.parent_mass, R.m1, R.m2)
    images = {
        "P1 <-> P2": helicity_variables(g, p2, p1),
        "z -> -z": helicity_variables(_reflect(g, 2), _reflect(p1, 2), _reflect(p2, 2)),
        "y -> -y": helicity_variables(_reflect(g, 1), _reflect(p1, 1), _reflect(p2, 1)),
        "rotation about z": helicity_variables(_rotate_z(g, 0.7), _rotate_z(p1, 0.7), _rotate_z(p2, 0.7)),
    }
    f = fold_helicity_variables(hv)
    assert (f[:, 1] >= 0).all() and (f[:, 3] >= 0).all() and (f[:, 4] >= 0).all() and (f[:, 4] <= np.pi).all()
    for name, im in images.items():
        assert np.abs(im - hv).max() > 0.1, name  # the symmetry moves the point ...
        np.testing.assert_allclose(fold_helicity_variables(im), f, atol=1e-12, err_msg=name)  # ... within its orbit
    # a parity-odd change that is not a detector symmetry lands elsewhere
    other = hv.copy()
    other[:, 3] = -other[:, 3]
    assert np.abs(fold_helicity_variables(other) - f).max() > 0.1


def test_unfolding_inverts_folding_and_reaches_all_eight_images():
    hv = _random_hv(1000, 1)
    u = FOLDED.to_unit(hv)
    assert u.shape == (1000, 4) and u.min() >= 0.0 and u.max() <= 1.0
    r = np.random.default_rng(2).uniform(size=(1000, 4))
    back = FOLDED.from_unit(u, r)
    np.testing.assert_allclose(FOLDED.to_unit(back), u, atol=1e-12)
    np.testing.assert_allclose(back[:, 2], 2 * np.pi * r[:, 0] - np.pi)
    bits = [(a, b, c) for a in (0.1, 0.9) for b in (0.1, 0.9) for c in (0.1, 0.9)]
    images = np.array([FOLDED.from_unit(u[:1], np.array([[0.5, *b]]))[0] for b in bits])
    assert len({tuple(np.round(x, 9)) for x in images}) == 8
    with pytest.raises(ValueError, match="random numbers"):
        unfold_helicity_variables(hv, r[:, :3])
    with pytest.raises(ValueError, match="4\\) unit"):
        FOLDED.from_unit(np.full((3, 5), 0.5))


def test_folded_jacobian_and_serialisation():
    hv = _random_hv(500, 3)
    # the fold is 8 to 1 and measure-preserving, phi_X is integrated out: same density scale
    np.testing.assert_allclose(FOLDED.log_det(hv), PLAIN.log_det(hv), rtol=1e-14)
    assert CoordinateMap.from_dict(FOLDED.to_dict()) == FOLDED
    assert FOLDED.n_dim == 4 and FOLDED.circular == () and PLAIN.n_dim == 5


def test_masks_of_a_four_dimensional_flow_condition_every_pair():
    masks = np.array(coupling_masks(6, 4))
    assert (masks.sum(axis=1) == 2).all()
    for i in range(4):
        for j in range(4):
            if i != j:
                assert any(m[i] == 1 and m[j] == 0 for m in masks), (i, j)


def _folded_sim(scale: float = 0.1) -> FastSimulator:
    torch.manual_seed(0)
    flow = SplineFlow(**TINY_FOLDED_FLOW)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return FastSimulator(flow.eval(), FOLDED, reaction=R)


def test_folded_flow_density_is_normalised_in_the_physical_variables():
    from scipy.stats import qmc

    sim = _folded_sim()
    u5 = qmc.Sobol(5, scramble=True, seed=7).random_base2(15)
    hv = PLAIN.from_unit(u5)
    # integral over the whole physical box (all eight images, every phi_X)
    assert np.mean(np.exp(sim.log_prob(hv) - PLAIN.log_det(hv))) == pytest.approx(1.0, abs=5e-3)


def test_folded_flow_samples_are_symmetric_seeded_and_follow_the_density():
    sim = _folded_sim(0.3)
    hv = sim.sample_hv(60_000, seed=4, chunk_size=25_000)
    assert hv.shape == (60_000, 5) and PLAIN.inside(hv).all()
    np.testing.assert_array_equal(sim.sample_hv(60_000, seed=4, chunk_size=25_000), hv)
    assert not np.array_equal(sim.sample_hv(1000, seed=5), hv[:1000])
    assert symmetry_test(hv, (R.m_min, R.m_max))["min_p_value"] > 1e-3
    inv_p = np.exp(-(sim.log_prob(hv) - PLAIN.log_det(hv)))  # E_p[1/p] = volume of the unit box
    assert inv_p.mean() == pytest.approx(1.0, abs=4 * inv_p.std() / np.sqrt(len(inv_p)))


@pytest.fixture(scope="module")
def detector_mc() -> np.ndarray:
    det = Detector(load_detector_card("default"))
    return Events.concatenate(list(iter_conventional_mc(100_000, det, reaction=JPSI_GAMMA_KK, seed=11))).helicity_variables


def test_symmetry_test_passes_the_toy_detector_and_fails_an_asymmetric_one(detector_mc):
    m_range = (R.m_min, R.m_max)
    assert symmetry_test(detector_mc, m_range)["min_p_value"] > 1e-3
    rng = np.random.default_rng(0)
    # a forward-backward asymmetric efficiency: lose 15 % of the events with cos theta_X < -0.3
    lose = (detector_mc[:, 1] < -0.3) & (rng.uniform(size=len(detector_mc)) < 0.15)
    res = symmetry_test(detector_mc[~lose], m_range)
    assert res["z_reflection"]["p_value"] < 1e-6
    assert res["p1_p2_exchange"]["p_value"] > 1e-4  # the other symmetries still hold
    # a charge asymmetry: lose 15 % of the events with P1 forward in the X frame
    lose = (detector_mc[:, 3] > 0.3) & (rng.uniform(size=len(detector_mc)) < 0.15)
    assert symmetry_test(detector_mc[~lose], m_range)["p1_p2_exchange"]["p_value"] < 1e-6


def test_acceptance_knots_of_folded_coordinates_sit_at_the_positive_edges():
    card = load_detector_card("default")
    knots = acceptance_knots(card, FOLDED, R.parent_mass)
    assert len(knots) == 4 and knots[2] == [] and knots[3] == []
    ph = card.photon
    for c in (ph.barrel.cos_theta_max, ph.endcap.cos_theta_min, ph.endcap.cos_theta_max):
        assert min(abs(k - c) for k in knots[1]) < 1e-12
    assert all(0.0 < k < 1.0 for k in knots[1])
    assert knots[0] == acceptance_knots(card, PLAIN, R.parent_mass)[0]


def test_four_dimensional_flow_with_cube_root_feature_is_an_exact_bijection():
    """Invertible, log-det equal to the autodiff Jacobian, fast sampler equal to the flow map
    (the cube-root conditioner input enters all three paths)."""
    flow = _folded_sim(0.3).model.double()
    g = torch.Generator().manual_seed(2)
    y = 2 * torch.rand((400, 4), generator=g, dtype=torch.float64) - 1
    y[:5, 0] = -1.0  # u_m = 0: the cube root's steepest point
    with torch.no_grad():
        x, ld = flow.forward_and_log_det(y)
        y2, ld_i = flow.inverse_and_log_det(x)
    torch.testing.assert_close(y2, y, atol=1e-9, rtol=0)
    torch.testing.assert_close(ld_i, -ld, atol=1e-9, rtol=0)
    for k in (0, 7, 100):
        jac = torch.autograd.functional.jacobian(lambda v: flow.forward_and_log_det(v[None])[0][0], y[k])
        assert float(torch.linalg.slogdet(jac)[1]) == pytest.approx(float(ld[k]), abs=1e-8)
    u = flow.sample_unit(3000, torch.Generator().manual_seed(3))
    yb = 2.0 * torch.rand((3000, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 1.0
    with torch.no_grad():
        xb, _ = flow.forward_and_log_det(yb)
    torch.testing.assert_close(u, (0.5 * (xb + 1.0)).clamp(0.0, 1.0), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="cbrt_features"):
        SplineFlow(cbrt_features=(2,))  # a periodic coordinate
