"""Toy detector: acceptance against numerical integration, resolution,
determinism and card validation; rules by species and tree-variable
resolution for any reaction."""

import numpy as np
import pytest
from scipy import integrate, stats

from fastsim.events import (JPSI_GAMMA_KK, Detector, DetectorCardError, Events, PhaseSpace, Reaction,
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

    r = JPSI_GAMMA_KK
    space = PhaseSpace(r)
    grid = np.linspace(r.m_min, r.m_max, 20001)
    cdf = integrate.cumulative_trapezoid(space.m_density(grid), grid, initial=0.0)
    cdf /= cdf[-1]
    u = qmc.Sobol(5, scramble=True, seed=5).random(2**17)
    hv = np.stack([np.interp(u[:, 0], cdf, grid), 2 * u[:, 1] - 1, np.pi * (2 * u[:, 2] - 1),
                   2 * u[:, 3] - 1, np.pi * (2 * u[:, 4] - 1)], axis=1)
    integral = detector.efficiency(Events.from_helicity_variables(hv, r)).mean()

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
    soft = Events.from_helicity_variables(np.array([[r.m_max - 0.02, 0.0, 0.0, 0.0, 0.0]]), r)
    assert soft.momenta[0, 0, 0] < 0.025
    assert detector.efficiency(soft)[0] == 0.0
    # Photon along the beam (cos theta_X = -1 -> photon at cos = +1): outside every calorimeter.
    beam = Events.from_helicity_variables(np.array([[1.5, -1.0, 0.0, 0.0, 0.0]]), r)
    assert detector.efficiency(beam)[0] == 0.0
    # Central event: photon at 90 degrees, kaons at 90 degrees in the X frame.
    central = Events.from_helicity_variables(np.array([[1.5, 0.0, 0.0, 0.0, np.pi / 2]]), r)
    eff = detector.efficiency(central)[0]
    p = central.momenta[0]
    pts = np.hypot(p[1:, 1], p[1:, 2])
    expected = 0.98 * np.prod(0.99 * (1 - np.exp(-(pts - 0.1) / 0.05)))
    assert eff == pytest.approx(expected, rel=1e-12)
    assert Detector(None).efficiency(beam)[0] == 1.0


def test_resolution_keeps_events_physical_and_has_the_card_width(detector):
    hv = PhaseSpace(JPSI_GAMMA_KK).sample(100_000, np.random.default_rng(3))
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


# --- any final state: rules by species, tree-variable resolution -------------------------

from fastsim.events.detector import (ChargedRules, DetectorCard, NeutralRules,  # noqa: E402
                                     PhotonCard, species_kind)
from fastsim.events.kinematics import invariant_mass, polar_cos_and_pt  # noqa: E402
from fastsim.events.mc import LowAcceptanceError  # noqa: E402
from fastsim.events.nbody import NBodyPhaseSpace  # noqa: E402
from fastsim.events.tree import chain_variables, momenta_by_label  # noqa: E402

PSI2S_4K = Reaction.from_final_state({"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"}, "psi(2S)",
                                     chains=["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"])
D0_KPIPI0 = Reaction.from_final_state({"Km": "K-", "pip": "pi+", "pi0": "pi0"}, "D0",
                                      chains=["D0 -> Kst pip; Kst -> Km pi0"])
JPSI_GAMMA_PI0PI0 = Reaction.from_final_state({"gamma": "gamma", "pi01": "pi0", "pi02": "pi0"}, "J/psi")


def _card(**blocks) -> DetectorCard:
    return DetectorCard.model_validate(blocks)


def _flat(reaction, n, seed):
    return Events(NBodyPhaseSpace(reaction).sample(n, np.random.default_rng(seed)), None, reaction=reaction)


def test_rules_by_species(detector):
    assert [species_kind(p) for p in ("pi+", "K-", "gamma", "pi0", "K_S0")] == \
        ["charged", "charged", "photon", "neutral", "neutral"]
    pion = detector.rules_for("pi+")
    assert isinstance(pion, ChargedRules) and pion.pt_min == 0.1 and pion.cos_theta_max == 0.93
    assert isinstance(detector.rules_for("gamma"), PhotonCard)
    pi0 = detector.rules_for("pi0")
    assert isinstance(pi0, NeutralRules) and pi0.geometry == "photon"
    assert detector.rules_for("K_S0").geometry == "charged"
    # An override changes its species only, and only the fields it names.
    det = Detector(_card(charged={"species": {"pi+": {"pt_min": 0.05}}},
                         neutral={"species": {"pi0": {"efficiency": 0.5}}}))
    assert det.rules_for("pi+") == ChargedRules(pt_min=0.05)
    assert det.rules_for("pi-") == det.rules_for("K+") == ChargedRules()
    assert det.rules_for("pi0") == NeutralRules(geometry="photon", efficiency=0.5)
    assert det.rules_for("eta") == detector.rules_for("eta")


def test_shipped_card_equals_the_code_defaults(detector):
    """The YAML spells the defaults out: the default card is today's behaviour plus explicit neutral rules."""
    assert detector.card == DetectorCard()


def test_jpsi_gamma_kk_efficiency_is_the_first_versions_formula(detector):
    """Bit for bit: tracks in columns 1 and 2, then the photon in column 0, as before."""
    hv = PhaseSpace(JPSI_GAMMA_KK).sample(100_000, np.random.default_rng(21))
    ev = Events.from_helicity_variables(hv, JPSI_GAMMA_KK)
    mom = ev.momenta
    old = np.ones(len(ev))
    for i in (1, 2):
        cos_t, pt = polar_cos_and_pt(mom[:, i])
        ok = (np.abs(cos_t) < 0.93) & (pt > 0.1)
        old *= np.where(ok, 0.99 * -np.expm1(-(pt - 0.1) / 0.05), 0.0)
    e = mom[:, 0, 0]
    cos_g = np.abs(polar_cos_and_pt(mom[:, 0])[0])
    barrel = (cos_g < 0.80) & (e > 0.025)
    endcap = (cos_g > 0.86) & (cos_g < 0.92) & (e > 0.050)
    old *= np.where(barrel, 0.98, np.where(endcap, 0.95, 0.0))
    np.testing.assert_array_equal(detector.efficiency(ev), old)


def _at(p_abs, cos_t, m, phi=0.3):
    """(1, 4) four-momentum of a particle of mass m with |p| and cos theta given."""
    s = np.sqrt(1 - cos_t**2)
    return np.array([[np.sqrt(p_abs**2 + m**2), p_abs * s * np.cos(phi), p_abs * s * np.sin(phi), p_abs * cos_t]])


def test_neutral_hadron_efficiency_by_hand(detector):
    m = 0.1349768
    eff = lambda particle, p: detector.particle_efficiency(particle, p)[0]  # noqa: E731
    # pi0 at rest: 67 MeV photons, above both thresholds.
    assert eff("pi0", _at(0.0, 0.0, m)) == pytest.approx(0.95 * 0.98**2)
    assert eff("pi0", _at(0.5, 0.99, m)) == 0.0  # along the beam
    # End cap, 50 MeV threshold: photon energies flat on [(E - p)/2, (E + p)/2], both above 50 MeV.
    E = np.hypot(0.5, m)
    assert eff("pi0", _at(0.5, 0.89, m)) == pytest.approx(0.95 * 0.95**2 * (E - 2 * 0.050) / 0.5)
    # A fast pi0: its photon energies are flat on [(E - p)/2, (E + p)/2]; check the
    # both-above-threshold fraction against decays simulated in its rest frame.
    rng = np.random.default_rng(1)
    for p_abs, cos_t, t in ((1.5, 0.2, 0.025), (1.5, 0.9, 0.050), (0.3, 0.5, 0.025)):
        E = np.hypot(p_abs, m)
        c_star = rng.uniform(-1, 1, 400_000)
        e1 = 0.5 * (E + p_abs * c_star)
        frac = np.mean((e1 > t) & (E - e1 > t))
        region = 0.98**2 if abs(cos_t) < 0.8 else 0.95**2
        assert eff("pi0", _at(p_abs, cos_t, m)) == pytest.approx(0.95 * region * frac, abs=3e-3)
    # K_S0 from pi+ pi-: the track acceptance, no photon geometry.
    mk = 0.497611
    assert eff("K_S0", _at(0.4, 0.85, mk)) == pytest.approx(0.90 * 0.99**2)
    assert eff("K_S0", _at(0.4, 0.95, mk)) == 0.0


def test_unknown_species_rules_fail_naming_card_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, field, what in (("charged: {species: {pion: {pt_min: 0.05}}}", "charged.species", "unknown particle"),
                              ("charged: {species: {pi0: {pt_min: 0.05}}}", "charged.species", "neutral.species"),
                              ("neutral: {species: {pi+: {geometry: photon, efficiency: 1}}}", "neutral.species",
                               "charged.species"),
                              ("neutral: {species: {K_L0: {efficiency: 0.5}}}", "neutral.species.K_L0.geometry",
                               "Field required"),
                              ("neutral: {species: {pi0: {geometry: calorimeter}}}", "neutral.species.pi0.geometry",
                               "'photon' or 'charged'")):
        bad.write_text(text + "\n")
        with pytest.raises(DetectorCardError, match=rf"bad.yaml: field {field}: .*{what}"):
            load_detector_card(bad)
    # A final-state neutral hadron the card has no rule for: named with the card and the field.
    k_long = Reaction.from_final_state({"KL": "K_L0", "pip": "pi+", "pim": "pi-"}, "D0",
                                       chains=["D0 -> KL rho; rho -> pip pim"])
    det = Detector(load_detector_card("default"))
    with pytest.raises(DetectorCardError, match=r"besiii_like.yaml: no rules for the neutral hadron 'K_L0'.*"
                                                r"neutral.species.K_L0"):
        det.check(k_long)
    with pytest.raises(DetectorCardError, match="neutral.species.K_L0"):
        conventional_mc(10, det, reaction=k_long)
    bad.write_text("neutral: {species: {K_L0: {geometry: photon, efficiency: 0.5}}}\n")
    assert len(conventional_mc(100, Detector(load_detector_card(bad)), reaction=k_long, chunk_size=1000)) == 100


@pytest.mark.parametrize("reaction", [PSI2S_4K, D0_KPIPI0, JPSI_GAMMA_PI0PI0], ids=str)
def test_acceptance_cuts_respected_on_generated_mc(reaction):
    card = _card(charged={"species": {"pi+": {"pt_min": 0.05}}}, resolution={"enabled": False})
    ev = conventional_mc(20_000, Detector(card), reaction=reaction, seed=5, chunk_size=20_000)
    assert len(ev) == 20_000
    for i, particle in enumerate(reaction.particles):
        cos_t, pt = polar_cos_and_pt(ev.momenta[:, i])
        cos_t = np.abs(cos_t)
        if particle.startswith("K"):
            assert cos_t.max() < 0.93 and pt.min() > 0.1
        elif particle == "pi+":
            assert cos_t.max() < 0.93 and pt.min() > 0.05
            assert np.any(pt < 0.1)  # the override let soft pions in
        else:  # pi0 and the photon: calorimeter geometry
            assert np.all((cos_t < 0.80) | ((cos_t > 0.86) & (cos_t < 0.92)))
            assert np.any(cos_t > 0.86)
    # The generator level accepts everything (and the same seed gives the flat events).
    flat = conventional_mc(1000, Detector(None), reaction=reaction, seed=5, chunk_size=1000)
    assert len(flat) == 1000


def _node_masses(reaction, events):
    return chain_variables(reaction.chains[0], momenta_by_label(reaction, events.momenta))


@pytest.mark.parametrize("reaction", [PSI2S_4K, D0_KPIPI0], ids=str)
def test_tree_resolution_keeps_events_physical_and_has_the_card_width(detector, reaction):
    true = _flat(reaction, 100_000, 7)
    reco = detector.resolve(true, np.random.default_rng(8))
    # On the physical manifold: final state on shell, total momentum (M, 0, 0, 0).
    assert len(reco) == len(true)
    np.testing.assert_allclose(invariant_mass(reco.momenta) - np.array(reaction.masses), 0.0, atol=1e-9)
    np.testing.assert_allclose(reco.momenta.sum(axis=1) - [reaction.parent_mass, 0, 0, 0], 0.0, atol=1e-9)
    chain = reaction.chains[0]
    before, after = _node_masses(reaction, true), _node_masses(reaction, reco)
    final = dict(zip(reaction.prefixes, reaction.masses))
    for v in chain.vertices:
        m_d = [final[d.label] if d.is_final else after[d.label].m for d in v.daughters]
        assert np.all(after[v.label].m > m_d[0] + m_d[1] - 1e-12)
    # Mass widths: sigma_m away from the kinematic edges.
    for label in chain.inner_labels:
        lo, hi = NBodyPhaseSpace(reaction).mass_limits[label]
        central = (before[label].m > lo + 0.05) & (before[label].m < hi - 0.05)
        for other in chain.inner_labels:
            if other != label:  # the joint truncation also acts through the other masses
                lo_o, hi_o = NBodyPhaseSpace(reaction).mass_limits[other]
                central &= (before[other].m > lo_o + 0.05) & (before[other].m < hi_o - 0.05)
                central &= before[label].m + before[other].m < reaction.parent_mass - 0.05
        dm = after[label].m[central] - before[label].m[central]
        assert np.std(dm) == pytest.approx(0.004, rel=0.03)
        assert abs(np.mean(dm)) < 1e-4

    # Directions: the opening angle between true and smeared directions is Rayleigh(sigma_angle),
    # at the parent's vertex (the lab) and inside the first intermediate node.
    def unit(v):
        s = np.sqrt(1 - v.cos_theta**2)
        return np.stack([s * np.cos(v.phi), s * np.sin(v.phi), v.cos_theta], 1)

    rng = np.random.default_rng(9)
    smeared = detector.smear_chain(before, chain, final, reaction.parent_mass, rng)
    for v in chain.vertices[:2]:
        ang = np.arccos(np.clip(np.sum(unit(before[v.label]) * unit(smeared[v.label]), 1), -1, 1))
        assert stats.kstest(ang, stats.rayleigh(scale=0.005).cdf).pvalue > 1e-4


def test_tree_resolution_truncates_at_thresholds():
    """A wide mass resolution near the edges: still every node above its daughters."""
    det = Detector(_card(resolution={"sigma_m": 0.3}))
    reaction = PSI2S_4K
    true = _flat(reaction, 20_000, 3)
    reco = det.resolve(true, np.random.default_rng(4))
    after = _node_masses(reaction, reco)
    m_k = 0.493677
    for label in ("phi", "f"):
        assert np.all(after[label].m > 2 * m_k - 1e-12)
    assert np.all(after["phi"].m + after["f"].m < reaction.parent_mass + 1e-12)
    np.testing.assert_allclose(invariant_mass(reco.momenta), m_k, atol=1e-9)


@pytest.mark.parametrize("reaction", [PSI2S_4K, D0_KPIPI0], ids=str)
def test_any_reaction_deterministic_for_a_seed(detector, reaction):
    a = conventional_mc(2000, detector, reaction=reaction, seed=9, chunk_size=2000)
    b = conventional_mc(2000, detector, reaction=reaction, seed=9, chunk_size=2000)
    c = conventional_mc(2000, detector, reaction=reaction, seed=10, chunk_size=2000)
    np.testing.assert_array_equal(a.momenta, b.momenta)
    assert not np.array_equal(a.momenta, c.momenta)
    assert a.reaction == reaction and len(a) == 2000


def test_zero_acceptance_stops_within_seconds():
    import time

    det = Detector(_card(charged={"pt_min": 5.0}))  # no track of a D0 decay has 5 GeV
    t0 = time.perf_counter()
    with pytest.raises(LowAcceptanceError,
                       match=r"detector card .besiii_like.: 0 of 1000000 generated D0 -> K- pi\+ pi0 events passed"):
        conventional_mc(1000, det, reaction=D0_KPIPI0, chunk_size=250_000)
    assert time.perf_counter() - t0 < 10.0
    assert issubclass(LowAcceptanceError, DetectorCardError)  # the CLI prints it as one line
