"""Toy detector: acceptance against numerical integration, resolution,
determinism and card validation; rules by species and tree-variable
resolution for any reaction."""

import numpy as np
import pytest
from scipy import integrate, stats

from fastsim.events import (JPSI_GAMMA_KK, Detector, DetectorCardError, Events, PhaseSpace,
                            conventional_mc, load_detector_card)


@pytest.fixture(scope="module")
def detector():
    return Detector(load_detector_card("default"))


def test_acceptance_matches_numerical_integration(detector):
    """MC fraction accepted vs a quasi-MC integral of the efficiency over phase space.

    The integral uses a scrambled Sobol sequence with m drawn by the inverse of
    the tabulated analytic m distribution: independent of the hit-or-miss
    generator and of the random accept step.
    """
    from scipy.stats import qmc

    space = PhaseSpace()
    r = JPSI_GAMMA_KK
    grid = np.linspace(r.m_min, r.m_max, 20001)
    cdf = integrate.cumulative_trapezoid(space.m_density(grid), grid, initial=0.0)
    cdf /= cdf[-1]
    u = qmc.Sobol(5, scramble=True, seed=5).random(2**17)
    hv = np.stack([np.interp(u[:, 0], cdf, grid), 2 * u[:, 1] - 1, np.pi * (2 * u[:, 2] - 1),
                   2 * u[:, 3] - 1, np.pi * (2 * u[:, 4] - 1)], axis=1)
    integral = detector.efficiency(Events.from_helicity_variables(hv)).mean()

    stats_: dict = {}
    from fastsim.events import iter_conventional_mc

    for _ in iter_conventional_mc(300_000, detector, reaction=JPSI_GAMMA_KK, seed=2, stats=stats_):
        pass
    n = stats_["n_generated"]
    frac = stats_["n_passed"] / n
    sigma = np.sqrt(frac * (1 - frac) / n)
    assert abs(frac - integral) < 4 * sigma + 5e-4, (frac, integral, sigma)
    assert 0.6 < frac < 0.8


def test_efficiency_by_hand(detector):
    """One event per case, built from helicity variables, with known answers."""
    r = JPSI_GAMMA_KK
    # X at rest-ish (m near the top): soft photon below the 25 MeV barrel threshold.
    soft = Events.from_helicity_variables(np.array([[r.m_max - 0.02, 0.0, 0.0, 0.0, 0.0]]))
    assert soft.momenta[0, 0, 0] < 0.025
    assert detector.efficiency(soft)[0] == 0.0
    # Photon along the beam (cos theta_X = -1 -> photon at cos = +1): outside every calorimeter.
    beam = Events.from_helicity_variables(np.array([[1.5, -1.0, 0.0, 0.0, 0.0]]))
    assert detector.efficiency(beam)[0] == 0.0
    # Central event: photon at 90 degrees, kaons at 90 degrees in the X frame.
    central = Events.from_helicity_variables(np.array([[1.5, 0.0, 0.0, 0.0, np.pi / 2]]))
    eff = detector.efficiency(central)[0]
    p = central.momenta[0]
    pts = np.hypot(p[1:, 1], p[1:, 2])
    expected = 0.98 * np.prod(0.99 * (1 - np.exp(-(pts - 0.1) / 0.05)))
    assert eff == pytest.approx(expected, rel=1e-12)
    assert Detector(None).efficiency(beam)[0] == 1.0


def test_resolution_keeps_events_physical_and_has_the_card_width(detector):
    hv = PhaseSpace().sample(100_000, np.random.default_rng(3))
    sm = detector.smear(hv, JPSI_GAMMA_KK, np.random.default_rng(4))
    r = JPSI_GAMMA_KK
    assert np.all((sm[:, 0] > r.m_min) & (sm[:, 0] < r.m_max))
    assert np.all(np.abs(sm[:, [1, 3]]) <= 1) and np.all(np.abs(sm[:, [2, 4]]) <= np.pi)
    central = (hv[:, 0] > 1.2) & (hv[:, 0] < 2.8)
    dm = sm[central, 0] - hv[central, 0]
    assert np.std(dm) == pytest.approx(0.004, rel=0.02)
    # Opening angle between true and smeared X direction: Rayleigh with sigma = 5 mrad.
    def unit(c, p):
        s = np.sqrt(1 - c**2)
        return np.stack([s * np.cos(p), s * np.sin(p), c], 1)
    ang = np.arccos(np.clip(np.sum(unit(hv[:, 1], hv[:, 2]) * unit(sm[:, 1], sm[:, 2]), 1), -1, 1))
    assert stats.kstest(ang, stats.rayleigh(scale=0.005).cdf).pvalue > 1e-4


def test_deterministic_for_a_seed(detector):
    a = conventional_mc(3000, detector, reaction=JPSI_GAMMA_KK, seed=9, chunk_size=2000)
    b = conventional_mc(3000, detector, reaction=JPSI_GAMMA_KK, seed=9, chunk_size=2000)
    c = conventional_mc(3000, detector, reaction=JPSI_GAMMA_KK, seed=10, chunk_size=2000)
    np.testing.assert_array_equal(a.momenta, b.momenta)
    assert not np.array_equal(a.momenta, c.momenta)
    assert len(a) == 3000


def test_card_errors(tmp_path):
    with pytest.raises(DetectorCardError, match="no such detector card"):
        load_detector_card(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("charged: {cos_theta_max: 1.5}\n")
    with pytest.raises(DetectorCardError, match=r"bad.yaml: field charged.cos_theta_max"):
        load_detector_card(bad)
    bad.write_text("photon: {endcap: {cos_theta_min: 0.95, cos_theta_max: 0.9}}\n")
    with pytest.raises(DetectorCardError, match="cos_theta_min must be below"):
        load_detector_card(bad)
    bad.write_text("resolution: {sigma_m: 0.004, typo: 1}\n")
    with pytest.raises(DetectorCardError, match="resolution.typo"):
        load_detector_card(bad)
    bad.write_text("[1, 2\n")
    with pytest.raises(DetectorCardError, match="not valid YAML"):
        load_detector_card(bad)
    assert load_detector_card("none") is None
    assert load_detector_card("default").name == "besiii_like"
