"""Exact flat n-body phase space along any decay tree, and its Breit-Wigner-weighted variant.

The statistics are compared with densities computed here from the textbook
formulas (a uniform Dalitz plot; q p for J/psi -> gamma K+ K-; the four-body
two-mass density integrated with scipy), and each chi2 test is shown to
reject a wrong density (masses flat in m, without the q factors).
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from fastsim.events import JPSI_GAMMA_KK, PhaseSpace, Reaction
from fastsim.events.nbody import NBodyPhaseSpace
from fastsim.events.tree import NodeVariables, chain_momenta, chain_variables, momenta_by_label, stack_momenta

PSI = Reaction.from_final_state({"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"}, "psi(2S)",
                                chains=["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2",
                                        "psi(2S) -> Y Km2; Y -> Kp2 Z; Z -> Kp1 Km1"])
D0 = Reaction.from_final_state({"Km": "K-", "pip": "pi+", "pi0": "pi0"}, "D0",
                               chains=["D0 -> Kst pip; Kst -> Km pi0", "D0 -> rho Km; rho -> pip pi0"])
JPSI_PHOTON_INSIDE = Reaction.from_final_state({"gamma": "gamma", "Kp": "K+", "Km": "K-"}, "J/psi",
                                               chains=["J/psi -> Km Y; Y -> gamma Kp"])
PHI = {"phi": (1.019461, 0.004249)}  # PDG phi(1020): 4 MeV wide, 32 MeV above the K+K- threshold
MK = PSI.masses[0]


def _m2(momenta, reaction, *labels):
    p = sum(momenta[:, reaction.index(label)] for label in labels)
    return p[:, 0] ** 2 - np.sum(p[:, 1:] ** 2, axis=1)


def _q(M, m1, m2):
    """Two-body break-up momentum (scalar), written out here."""
    lam = (M * M - (m1 + m2) ** 2) * (M * M - (m1 - m2) ** 2)
    return math.sqrt(max(lam, 0.0)) / (2.0 * M)


def _chi2_pvalue(counts, expected, variance=None):
    variance = expected if variance is None else variance
    chi2 = float(np.sum((counts - expected) ** 2 / variance))
    return stats.chi2.sf(chi2, counts.size), chi2


def _flat_in_m(space, n, rng):
    """A WRONG phase space for the negative controls: intermediate masses uniform in their box
    (inside the region), no q factors, angles uniform."""
    masses = {}
    while not masses or len(next(iter(masses.values()))) < n:
        trial = {label: rng.uniform(*space.mass_limits[label], 4 * n) for label in space.inner_labels}
        inside = space.unnormalised_mass_density(trial) > 0
        masses = {k: np.concatenate([masses.get(k, []), v[inside]]) for k, v in trial.items()}
    masses = {k: v[:n] for k, v in masses.items()}
    masses[space.chain.root.label] = np.full(n, space.parent_mass)
    variables = {v.label: NodeVariables(masses[v.label], rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n))
                 for v in space.chain.vertices}
    p = chain_momenta(space.chain, variables, space.final_masses, space.parent_mass)
    return stack_momenta(space.reaction, p)


# --- three bodies: the Dalitz plot ---------------------------------------------------------

def _dalitz_limits(s12, M, m1, m2, m3):
    """Range of s23 at fixed s12 (PDG kinematics review, eq. 49.23)."""
    m12 = np.sqrt(s12)
    e2 = (s12 - m1**2 + m2**2) / (2 * m12)
    e3 = (M**2 - s12 - m3**2) / (2 * m12)
    p2 = np.sqrt(np.clip(e2**2 - m2**2, 0, None))
    p3 = np.sqrt(np.clip(e3**2 - m3**2, 0, None))
    return (e2 + e3) ** 2 - (p2 + p3) ** 2, (e2 + e3) ** 2 - (p2 - p3) ** 2


def _dalitz_histogram(momenta, reaction, bins=30):
    """Counts in the bins fully inside the Dalitz region of (m^2(1 2), m^2(2 3))."""
    l1, l2, l3 = reaction.prefixes
    m1, m2, m3 = reaction.masses
    M = reaction.parent_mass
    edges_x = np.linspace((m1 + m2) ** 2, (M - m3) ** 2, bins + 1)
    edges_y = np.linspace((m2 + m3) ** 2, (M - m1) ** 2, bins + 1)
    counts, _, _ = np.histogram2d(_m2(momenta, reaction, l1, l2), _m2(momenta, reaction, l2, l3),
                                  bins=[edges_x, edges_y])
    X, Y = np.meshgrid(edges_x, edges_y, indexing="ij")
    lo, hi = _dalitz_limits(np.maximum(X, (m1 + m2) ** 2 * (1 + 1e-12)), M, m1, m2, m3)
    corner_in = (Y > lo) & (Y < hi) & (X > (m1 + m2) ** 2)
    full = corner_in[:-1, :-1] & corner_in[1:, :-1] & corner_in[:-1, 1:] & corner_in[1:, 1:]
    # Convexity of the Dalitz region: four corners inside means the whole bin is inside.
    return counts[full]


@pytest.mark.parametrize("reaction, k", [(D0, 0), (D0, 1), (JPSI_GAMMA_KK, 0), (JPSI_PHOTON_INSIDE, 0)],
                         ids=["d0-kst", "d0-rho", "jpsi", "jpsi-photon-inside"])
def test_dalitz_plot_is_uniform(reaction, k):
    space = NBodyPhaseSpace(reaction, reaction.chains[k])
    counts = _dalitz_histogram(space.sample(300_000, np.random.default_rng(100 + k)), reaction)
    assert counts.size > 250
    p, chi2 = _chi2_pvalue(counts, np.full(counts.size, counts.mean()))
    assert p > 1e-3, (chi2, counts.size)


def test_dalitz_test_rejects_masses_flat_in_m():
    space = NBodyPhaseSpace(D0)
    counts = _dalitz_histogram(_flat_in_m(space, 300_000, np.random.default_rng(110)), D0)
    p, chi2 = _chi2_pvalue(counts, np.full(counts.size, counts.mean()))
    assert p < 1e-10, (chi2, counts.size)


def test_dalitz_plot_does_not_depend_on_the_chain():
    """Two-sample chi2 of the D0 Dalitz histograms generated along K*- and rho+ chains."""
    a = _dalitz_histogram(NBodyPhaseSpace(D0, D0.chains[0]).sample(200_000, np.random.default_rng(120)), D0)
    b = _dalitz_histogram(NBodyPhaseSpace(D0, D0.chains[1]).sample(200_000, np.random.default_rng(121)), D0)
    p, chi2 = _chi2_pvalue(a - b, np.zeros(a.size), variance=a + b)
    assert p > 1e-3, (chi2, a.size)
    wrong = _dalitz_histogram(_flat_in_m(NBodyPhaseSpace(D0, D0.chains[1]), 200_000,
                                         np.random.default_rng(122)), D0)
    assert _chi2_pvalue(a - wrong, np.zeros(a.size), variance=a + wrong)[0] < 1e-10


def test_jpsi_gamma_kk_mass_is_q_times_p_and_angles_flat():
    r = JPSI_GAMMA_KK
    p = NBodyPhaseSpace(r).sample(200_000, np.random.default_rng(130))
    v = chain_variables(r.chains[0], momenta_by_label(r, p))
    ref = PhaseSpace(r)
    grid = np.linspace(r.m_min, r.m_max, 4001)
    cdf = integrate.cumulative_trapezoid(ref.m_density(grid), grid, initial=0.0)
    assert stats.kstest(v["X"].m, lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3
    for node in v.values():
        assert stats.kstest(node.cos_theta, stats.uniform(-1, 2).cdf).pvalue > 1e-3
        assert stats.kstest(node.phi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3


# --- four bodies ----------------------------------------------------------------------------

def _four_body_pair_mass_bins(edges):
    """Probability of each m(K+ K-) bin: int dm12 q(m12) int dm34 q_top(M; m12, m34) q(m34)."""
    M = PSI.parent_mass

    def density(m34, m12):
        return _q(M, m12, m34) * _q(m12, MK, MK) * _q(m34, MK, MK)

    probs = np.array([integrate.dblquad(density, a, b, 2 * MK, lambda m12: M - m12, epsrel=1e-9)[0]
                      for a, b in zip(edges[:-1], edges[1:])])
    return probs / probs.sum()


EDGES = np.linspace(2 * MK, PSI.parent_mass - 2 * MK, 31)


@pytest.fixture(scope="module")
def four_body_probs():
    return _four_body_pair_mass_bins(EDGES)


@pytest.mark.parametrize("k, pair", [(0, ("Kp1", "Km1")), (0, ("Kp1", "Km2")), (1, ("Kp1", "Km1")),
                                     (1, ("Kp2", "Km2"))],
                         ids=["phi-f-node", "phi-f-other-pair", "sequential-node", "sequential-other-pair"])
def test_four_body_pair_mass_density(four_body_probs, k, pair):
    """Every K+K- pair has the analytic two-mass density integrated over the other pair,
    whether or not the pair is a node of the chain generated along."""
    n = 100_000
    p = NBodyPhaseSpace(PSI, PSI.chains[k]).sample(n, np.random.default_rng(140 + k))
    counts, _ = np.histogram(np.sqrt(_m2(p, PSI, *pair)), bins=EDGES)
    pvalue, chi2 = _chi2_pvalue(counts, n * four_body_probs)
    assert pvalue > 1e-3, chi2


def test_four_body_test_rejects_masses_flat_in_m(four_body_probs):
    n = 100_000
    p = _flat_in_m(NBodyPhaseSpace(PSI), n, np.random.default_rng(150))
    counts, _ = np.histogram(np.sqrt(_m2(p, PSI, "Kp1", "Km1")), bins=EDGES)
    assert _chi2_pvalue(counts, n * four_body_probs)[0] < 1e-10


def test_four_body_angles_are_flat():
    p = NBodyPhaseSpace(PSI).sample(100_000, np.random.default_rng(160))
    v = chain_variables(PSI.chains[0], momenta_by_label(PSI, p))
    for label, node in v.items():
        assert stats.kstest(node.cos_theta, stats.uniform(-1, 2).cdf).pvalue > 1e-3, label
        assert stats.kstest(node.phi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3, label
    # ... and independent of the masses: cos theta at the phi vertex above and below the median m(phi).
    upper = v["phi"].m > np.median(v["phi"].m)
    assert stats.ks_2samp(v["phi"].cos_theta[upper], v["phi"].cos_theta[~upper]).pvalue > 1e-3


def test_volume_matches_massless_formula_and_does_not_depend_on_the_chain():
    """Phi_n = (2 pi)^(4-3n) (pi/2)^(n-1) s^(n-2) / ((n-1)! (n-2)!) for massless particles."""
    photons = {f"g{i}": "gamma" for i in range(1, 5)}
    cases = [Reaction.from_final_state(dict(list(photons.items())[:3]), "J/psi",
                                       chains=["J/psi -> X g1; X -> g2 g3"]),
             Reaction.from_final_state(photons, "J/psi", chains=["J/psi -> X Y; X -> g1 g2; Y -> g3 g4"]),
             Reaction.from_final_state(photons, "J/psi", chains=["J/psi -> X g4; X -> Y g3; Y -> g1 g2"])]
    for r in cases:
        n, s = r.n_final, r.parent_mass**2
        exact = (2 * np.pi) ** (4 - 3 * n) * (np.pi / 2) ** (n - 1) * s ** (n - 2) \
            / (math.factorial(n - 1) * math.factorial(n - 2))
        assert NBodyPhaseSpace(r).volume == pytest.approx(exact, rel=1e-10), r.chains[0]
    two = Reaction.from_final_state({"Km": "K-", "pip": "pi+"}, "D0", chains=["D0 -> Km pip"])
    q = _q(two.parent_mass, *two.masses)
    assert NBodyPhaseSpace(two).volume == pytest.approx(q / (4 * np.pi * two.parent_mass), rel=1e-14)
    a, b = (NBodyPhaseSpace(PSI, c).mass_integral for c in PSI.chains)
    assert a == pytest.approx(b, rel=1e-9)
    assert NBodyPhaseSpace(JPSI_GAMMA_KK).mass_integral == pytest.approx(PhaseSpace(JPSI_GAMMA_KK).m_norm, rel=1e-10)


def test_flat_average_matches_the_sample_mean():
    space = NBodyPhaseSpace(PSI)
    v = chain_variables(PSI.chains[0], momenta_by_label(PSI, space.sample(100_000, np.random.default_rng(165))))
    h = v["phi"].m ** 2 * v["f"].m
    exact = space.flat_average(lambda m: m["phi"] ** 2 * m["f"])
    assert abs(h.mean() - exact) < 4 * h.std() / np.sqrt(h.size), (h.mean(), exact)


@pytest.mark.parametrize("reaction", [JPSI_GAMMA_KK, D0, PSI], ids=["jpsi", "d0", "psi"])
def test_events_conserve_four_momentum_and_are_reproducible(reaction):
    space = NBodyPhaseSpace(reaction)
    p = space.sample(5_000, np.random.default_rng(170))
    assert p.shape == (5_000, reaction.n_final, 4)
    np.testing.assert_allclose(p.sum(axis=1), np.tile([reaction.parent_mass, 0, 0, 0], (5_000, 1)),
                               rtol=0, atol=1e-12)
    for i, m in enumerate(reaction.masses):
        np.testing.assert_allclose(p[:, i, 0] ** 2 - np.sum(p[:, i, 1:] ** 2, axis=1), m**2, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(p, space.sample(5_000, np.random.default_rng(170)))
    assert not np.array_equal(p, space.sample(5_000, np.random.default_rng(171)))
    assert space.sample(0, np.random.default_rng(0)).shape == (0, reaction.n_final, 4)


# --- weighted sampling with Breit-Wigner proposals ----------------------------------------------

@pytest.mark.parametrize("reaction, proposals", [(PSI, PHI), (PSI, {**PHI, "f": (1.5, 0.1)}),
                                                 (D0, {"Kst": (0.89166, 0.0508)})],
                         ids=["psi-phi", "psi-phi-f", "d0-kst"])
def test_weights_have_mean_one(reaction, proposals):
    """E_flat[1 / w] = 1 (flat events) and E_g[w] = 1 (proposal events): the normalisation."""
    space = NBodyPhaseSpace(reaction)
    inv = 1.0 / space.weights(space.sample(200_000, np.random.default_rng(180)), proposals)
    assert abs(inv.mean() - 1.0) < 4 * inv.std() / np.sqrt(inv.size), (inv.mean(), inv.std())
    # A flat share bounds the weights, so their mean has a trustworthy error.
    _, w = space.sample_weighted(200_000, np.random.default_rng(181), proposals, flat_fraction=0.5)
    assert np.all(np.isfinite(w)) and np.all(w > 0) and w.max() <= 2.0
    assert abs(w.mean() - 1.0) < 4 * w.std() / np.sqrt(w.size), (w.mean(), w.std())
    # The quadrature of the normalisation has converged.
    key = {label: space._cauchy(label, *mw) for label, mw in proposals.items()}
    coarse = space._integrate(lambda m: space._proposal_ratio(m, key), key, n_nodes=128) / space.mass_integral
    assert coarse == pytest.approx(space.weight_normalisation(proposals), rel=1e-7)


def test_weights_are_symmetric_and_every_pairing_gets_the_peak():
    space = NBodyPhaseSpace(PSI)
    p, w = space.sample_weighted(50_000, np.random.default_rng(190), PHI)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    for perm in PSI.identical_permutations():
        np.testing.assert_allclose(space.weights(p[:, list(perm)], PHI), w, rtol=1e-12)
    # The mixture puts the phi into each of the four K+K- pairings equally often.
    near = [np.sum(np.abs(np.sqrt(_m2(p, PSI, a, b)) - PHI["phi"][0]) < 0.005)
            for a in ("Kp1", "Kp2") for b in ("Km1", "Km2")]
    assert stats.chisquare(near).pvalue > 1e-3, near
    assert min(near) > 5_000


def _phi_peak(p):
    """A phi-peaked function: the sum over the four K+K- pairings of |BW_phi|^2."""
    m0, width = PHI["phi"]
    return sum(1.0 / ((_m2(p, PSI, a, b) - m0**2) ** 2 + (m0 * width) ** 2)
               for a in ("Kp1", "Kp2") for b in ("Km1", "Km2")) * (m0 * width) ** 2


def _smooth(p):
    return _m2(p, PSI, "Kp1", "Km1") + 0.5 * np.sqrt(_m2(p, PSI, "Kp2", "Km1")) + p[:, 0, 3] ** 2


def test_weighted_sample_agrees_with_flat():
    space = NBodyPhaseSpace(PSI)
    flat = space.sample(400_000, np.random.default_rng(200))
    spread = {}
    for fn, fraction in [(_phi_peak, 0.0), (_smooth, 0.0), (_smooth, 0.5)]:
        f_flat = fn(flat)
        p, w = space.sample_weighted(200_000, np.random.default_rng(201), PHI, flat_fraction=fraction)
        f_w = w * fn(p)
        err_flat = f_flat.std() / np.sqrt(f_flat.size)
        err_w = f_w.std() / np.sqrt(f_w.size)
        z = (f_w.mean() - f_flat.mean()) / np.hypot(err_flat, err_w)
        assert abs(z) < 4, (fn.__name__, fraction, f_w.mean(), f_flat.mean(), z)
        spread[fn.__name__, fraction] = f_w.std() / f_flat.std()  # per event, relative to flat events
        if fraction == 0.0:
            # Negative control: the same events without their weights are far from flat.
            bias = (fn(p).mean() - f_flat.mean()) / np.hypot(err_flat, fn(p).std() / np.sqrt(len(p)))
            assert abs(bias) > 10, (fn.__name__, bias)
    # The point of the proposal: phi-peaked integrands need far fewer events than flat ones;
    # a smooth one needs more, and a flat share limits the loss.
    assert spread["_phi_peak", 0.0] < 0.1
    assert spread["_smooth", 0.5] < 0.2 * spread["_smooth", 0.0]


def test_weighted_pair_mass_histogram_is_the_flat_density(four_body_probs):
    """The weighted m(K+K-) histogram follows the analytic flat density, phi region included."""
    n = 200_000
    p, w = NBodyPhaseSpace(PSI).sample_weighted(n, np.random.default_rng(210), PHI, flat_fraction=0.2)
    m = np.sqrt(_m2(p, PSI, "Kp1", "Km1"))
    sw, _ = np.histogram(m, bins=EDGES, weights=w)
    sw2, _ = np.histogram(m, bins=EDGES, weights=w**2)
    pvalue, chi2 = _chi2_pvalue(sw, n * four_body_probs, variance=sw2)
    assert pvalue > 1e-3, chi2


def test_bad_proposals_are_refused():
    space = NBodyPhaseSpace(PSI)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="not an intermediate node"):
        space.sample_weighted(10, rng, {"Kp1": (0.5, 0.1)})
    with pytest.raises(ValueError, match="positive width"):
        space.sample_weighted(10, rng, {"phi": (1.02, 0.0)})
    with pytest.raises(ValueError, match="flat_fraction"):
        space.sample_weighted(10, rng, PHI, flat_fraction=1.0)
    with pytest.raises(ValueError, match="does not decay into"):
        NBodyPhaseSpace(PSI, D0.chains[0])


def test_weighted_sampling_is_reproducible():
    space = NBodyPhaseSpace(PSI)
    a = space.sample_weighted(2_000, np.random.default_rng(220), PHI, flat_fraction=0.3)
    b = space.sample_weighted(2_000, np.random.default_rng(220), PHI, flat_fraction=0.3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
