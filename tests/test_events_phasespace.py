"""Exact phase space: the m density is q*p, the angles are flat, and the
Dalitz plot is uniform (an independent characterisation of flat phase space)."""

import numpy as np
from scipy import integrate, stats

from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace


def test_m_follows_q_times_p():
    space = PhaseSpace(JPSI_GAMMA_KK)
    m = space.sample_m(200_000, np.random.default_rng(7))
    lo, hi = JPSI_GAMMA_KK.m_min, JPSI_GAMMA_KK.m_max
    grid = np.linspace(lo, hi, 4001)
    cdf_grid = integrate.cumulative_trapezoid(space.m_density(grid), grid, initial=0.0)
    assert abs(cdf_grid[-1] - 1.0) < 1e-5  # trapezoid error at the sqrt threshold
    res = stats.kstest(m, lambda x: np.interp(x, grid, cdf_grid))
    assert res.pvalue > 1e-3, res


def test_angles_are_flat_and_independent_of_m():
    hv = PhaseSpace(JPSI_GAMMA_KK).sample(200_000, np.random.default_rng(8))
    for col, (a, b) in zip(range(1, 5), [(-1, 1), (-np.pi, np.pi)] * 2):
        res = stats.kstest(hv[:, col], stats.uniform(loc=a, scale=b - a).cdf)
        assert res.pvalue > 1e-3, (col, res)
    # cos theta_1 in the upper and lower halves of m has the same distribution.
    upper = hv[:, 0] > np.median(hv[:, 0])
    assert stats.ks_2samp(hv[upper, 3], hv[~upper, 3]).pvalue > 1e-3


def test_dalitz_plot_is_uniform():
    """Flat three-body phase space is uniform in (m^2(K+K-), m^2(gamma K+))."""
    ev = Events.from_helicity_variables(PhaseSpace(JPSI_GAMMA_KK).sample(400_000, np.random.default_rng(9)),
                                     JPSI_GAMMA_KK)
    p = ev.momenta
    s12 = np.einsum("ni,ni->n", p[:, 1] + p[:, 2], (p[:, 1] + p[:, 2]) * [1, -1, -1, -1])
    s01 = np.einsum("ni,ni->n", p[:, 0] + p[:, 1], (p[:, 0] + p[:, 1]) * [1, -1, -1, -1])
    # Use only bins fully inside the Dalitz region: its boundary cuts partial bins.
    counts, xe, ye = np.histogram2d(s12, s01, bins=40)
    r = JPSI_GAMMA_KK
    M, mk = r.parent_mass, r.m1

    def inside(x, y):
        # gamma K+ mass^2 range at fixed m^2(K+K-) = x (standard Dalitz limits).
        m12 = np.sqrt(x)
        e1 = m12 / 2  # K+ energy in the K+K- frame (equal masses)
        e0 = (M**2 - x) / (2 * m12)  # photon energy in KK frame
        p1 = np.sqrt(np.clip(e1**2 - mk**2, 0, None))
        return (y > mk**2 + 2 * e0 * (e1 - p1)) & (y < mk**2 + 2 * e0 * (e1 + p1))

    X, Y = np.meshgrid(xe, ye, indexing="ij")
    corners = inside(X, Y)
    full = corners[:-1, :-1] & corners[1:, :-1] & corners[:-1, 1:] & corners[1:, 1:]
    c = counts[full]
    assert c.size > 500
    chi2 = np.sum((c - c.mean()) ** 2 / c.mean())
    ndf = c.size - 1
    assert stats.chi2.sf(chi2, ndf) > 1e-3, (chi2, ndf)


def test_same_seed_same_events():
    a = PhaseSpace(JPSI_GAMMA_KK).sample(1000, np.random.default_rng(3))
    b = PhaseSpace(JPSI_GAMMA_KK).sample(1000, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
