"""Helicity kinematics: round trips, conservation laws, frame conventions."""

import numpy as np
import pytest

from fastsim.events import JPSI_GAMMA_KK, Reaction, four_momenta, helicity_variables
from fastsim.events.kinematics import invariant_mass, two_body_momentum


def random_hv(n, reaction=JPSI_GAMMA_KK, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([
        rng.uniform(reaction.m_min + 1e-6, reaction.m_max - 1e-6, n),
        rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n),
        rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)], axis=1)


@pytest.mark.parametrize("particles", [("gamma", "K+", "K-"), ("gamma", "pi+", "pi-"),
                                       ("gamma", "K_S0", "K_S0"), ("gamma", "pi0", "pi0")])
def test_round_trip_helicity_to_momenta_and_back(particles):
    reaction = Reaction(particles=particles, prefixes=("gamma", "a", "b"))
    hv = random_hv(20000, reaction, seed=1)
    pg, p1, p2 = four_momenta(hv, reaction.parent_mass, reaction.m1, reaction.m2)
    back = helicity_variables(pg, p1, p2)
    assert np.max(np.abs(back - hv)) < 1e-10


def test_round_trip_momenta_to_helicity_and_back():
    r = JPSI_GAMMA_KK
    pg, p1, p2 = four_momenta(random_hv(5000, seed=2), r.parent_mass, r.m1, r.m2)
    pg2, p12, p22 = four_momenta(helicity_variables(pg, p1, p2), r.parent_mass, r.m1, r.m2)
    for a, b in ((pg, pg2), (p1, p12), (p2, p22)):
        assert np.max(np.abs(a - b)) < 1e-10


def test_conservation_and_masses():
    r = JPSI_GAMMA_KK
    pg, p1, p2 = four_momenta(random_hv(5000, seed=3), r.parent_mass, r.m1, r.m2)
    total = pg + p1 + p2
    np.testing.assert_allclose(total, np.tile([r.parent_mass, 0, 0, 0], (5000, 1)), atol=1e-12)
    np.testing.assert_allclose(invariant_mass(p1), r.m1, atol=1e-10)
    np.testing.assert_allclose(invariant_mass(p2), r.m2, atol=1e-10)
    np.testing.assert_allclose(pg[:, 0], np.linalg.norm(pg[:, 1:], axis=1), atol=1e-12)


def test_frame_conventions_by_hand():
    """X along +x (theta_X = pi/2, phi_X = 0): helicity axes z' = x, y' = y, x' = -z.

    P1 emitted along x' in the X frame (theta_1 = pi/2, phi_1 = 0) must then
    point along -z in the lab (the boost is along x), with positive x component.
    """
    r = JPSI_GAMMA_KK
    hv = np.array([[1.5, 0.0, 0.0, 0.0, 0.0]])
    pg, p1, p2 = four_momenta(hv, r.parent_mass, r.m1, r.m2)
    assert pg[0, 1] < 0 and abs(pg[0, 2]) < 1e-14 and abs(pg[0, 3]) < 1e-14
    assert p1[0, 3] < 0 and abs(p1[0, 2]) < 1e-14 and p1[0, 1] > 0
    # phi_1 = pi/2: P1 along y' = y.
    _, p1, _ = four_momenta(np.array([[1.5, 0.0, 0.0, 0.0, np.pi / 2]]), r.parent_mass, r.m1, r.m2)
    assert p1[0, 2] > 0 and abs(p1[0, 3]) < 1e-14
    # X rest frame momentum magnitude.
    q = two_body_momentum(1.5, r.m1, r.m2)
    assert q == pytest.approx(np.sqrt(1.5**2 / 4 - r.m1**2))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="helicity variables"):
        four_momenta(np.zeros((3, 4)), 3.0969, 0.49, 0.49)
    with pytest.raises(ValueError, match="four-momenta"):
        helicity_variables(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((2, 4)))
