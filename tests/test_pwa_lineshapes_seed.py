"""The seed author's lineshapes (PWACG, PHYSICS.md section 5) against hand computations in numpy.

The registry-wide contract checks (shapes, finite values, gradients) are in
test_pwa_lineshapes.py; here: the values, the two Flatte continuations, and the
pi pi D-wave constants of ``BW_f2_pipi``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastsim.events import MASSES
from pwa.lineshapes import (F2_PIPI_B0, F2_PIPI_B1, LINESHAPES, LineshapeContext,
                            blatt_weisskopf_squared)

MK, MPI = MASSES["K+"], MASSES["pi+"]

#: The author's fitted f0(980) (config/pwa_info_kk.json).
F0_980 = {"mass": 0.9795, "g_pipi": 0.1068, "g_ratio": 8.57}
F2_1270 = {"mass": 1.29, "width": 0.196}
PHI = {"mass": 1.02, "width": 0.004}


def _evaluate(name, m, params, spin=0):
    fn = LINESHAPES[name].bind(LineshapeContext(spin, MK, MK))
    return np.asarray(fn(jnp.asarray(m, dtype=jnp.float64), {k: jnp.asarray(v) for k, v in params.items()}))


def _flatte_by_hand(m, mass, g_pipi, g_ratio, physical):
    s = np.asarray(m) ** 2

    def rho(ma):
        x = 1.0 - 4.0 * ma**2 / s
        # +0j: numpy's principal root gives +i sqrt(|x|) below threshold.
        return np.sqrt(x + 0j) if physical else np.sqrt(np.abs(x))

    return 1.0 / (mass**2 - s - 1j * (g_pipi * rho(MPI) + g_ratio * g_pipi * rho(MK)))


def _f2_pipi_by_hand(m, mass, width, mpi2=MPI**2):
    """PWACG's flatte1270, line by line (its hard-coded m_pi^2 = 0.0194792 replaced by ``mpi2``)."""
    s = np.asarray(m) ** 2
    rm, gr = mass * mass, mass * width
    q2r = 0.25 * rm - mpi2
    b2r = q2r * (q2r + 0.1825) + 0.033306
    g11270 = gr * b2r / np.power(q2r, 2.5)
    q2 = 0.25 * s - mpi2
    b2 = q2 * (q2 + 0.1825) + 0.033306
    g1 = g11270 * np.power(q2, 2.5) / b2
    return gr / (s - rm + 1j * g1)


def test_registered_with_their_parameters():
    assert LINESHAPES["BW_plain"].parameters == ("mass", "width")
    assert LINESHAPES["BW_f2_pipi"].parameters == ("mass", "width")
    assert LINESHAPES["Flatte_abs"].parameters == LINESHAPES["Flatte"].parameters == ("mass", "g_pipi", "g_ratio")
    assert LINESHAPES["Flatte_abs"].defaults == LINESHAPES["Flatte"].defaults


@pytest.mark.parametrize("params", [PHI, {"mass": 1.6762, "width": 0.1627}])
def test_bw_plain_matches_hand_computation(params):
    m = np.array([2 * MK, 1.0, params["mass"], 1.3, 2.0, 2.6])
    m0, g0 = params["mass"], params["width"]
    expected = 1.0 / (m0**2 - m**2 - 1j * m0 * g0)
    np.testing.assert_allclose(_evaluate("BW_plain", m, params), expected, rtol=1e-14)
    # At the pole mass: i / (m0 Gamma0), no barrier factor whatever the spin.
    assert complex(_evaluate("BW_plain", [m0], params, spin=2)[0]) == pytest.approx(1j / (m0 * g0), rel=1e-14)


# Below the pi pi threshold, between the thresholds, at and above the K K one.
FLATTE_MASSES = np.array([0.2, 0.27, 0.5, 0.9, 0.97, 2 * MK, 2 * MK + 1e-6, 1.0, 1.5, 2.5])


@pytest.mark.parametrize("name, physical", [("Flatte", True), ("Flatte_abs", False)])
def test_flatte_variants_match_hand_computation(name, physical):
    got = _evaluate(name, FLATTE_MASSES, F0_980)
    np.testing.assert_allclose(got, _flatte_by_hand(FLATTE_MASSES, **F0_980, physical=physical), rtol=1e-12)


def test_flatte_variants_identical_above_both_thresholds():
    """Every f_J -> K+ K- mass of the seed reaction: the continuation choice does not matter."""
    m = np.concatenate([[2 * MK, 2 * MK * (1 + 1e-12)], np.linspace(2 * MK + 1e-6, 3.0, 200)])
    for params in (F0_980, {"mass": 0.965, "g_pipi": 0.165, "g_ratio": 4.21}):
        np.testing.assert_allclose(_evaluate("Flatte_abs", m, params), _evaluate("Flatte", m, params),
                                   rtol=1e-14, atol=0)


def test_flatte_variants_differ_below_the_kk_threshold_as_documented():
    """D_Flatte - D_Flatte_abs = (1 + i) g |rho| for each closed channel (D = 1/F)."""
    g_pipi = F0_980["g_pipi"]
    g_kk = F0_980["g_ratio"] * g_pipi
    between = np.linspace(2 * MPI + 1e-3, 2 * MK - 1e-3, 50)
    rho_kk = np.sqrt(4 * MK**2 / between**2 - 1)
    d_phys = 1.0 / _evaluate("Flatte", between, F0_980)
    d_abs = 1.0 / _evaluate("Flatte_abs", between, F0_980)
    np.testing.assert_allclose(d_phys - d_abs, (1 + 1j) * g_kk * rho_kk, rtol=1e-9)
    # Physical: the closed K K channel shifts the real part, the width is pi pi only.
    np.testing.assert_allclose(d_phys.imag, -g_pipi * np.sqrt(1 - 4 * MPI**2 / between**2), rtol=1e-12)
    assert np.all(np.abs(d_phys - d_abs) > 0.05)

    below = np.array([0.1, 0.2, 0.27])
    rho_pipi = np.sqrt(4 * MPI**2 / below**2 - 1)
    rho_kk = np.sqrt(4 * MK**2 / below**2 - 1)
    d_phys = 1.0 / _evaluate("Flatte", below, F0_980)
    d_abs = 1.0 / _evaluate("Flatte_abs", below, F0_980)
    np.testing.assert_allclose(d_phys - d_abs, (1 + 1j) * (g_pipi * rho_pipi + g_kk * rho_kk), rtol=1e-9)
    np.testing.assert_allclose(d_phys.imag, 0.0, atol=1e-12)  # no open channel: real denominator


@pytest.mark.parametrize("params", [F2_1270, {"mass": 1.2754, "width": 0.1866}, {"mass": 1.5, "width": 0.05}])
def test_bw_f2_pipi_is_minus_i_at_the_pole_mass(params):
    """s = m0^2: m0 Gamma0 / (i m0 Gamma0) = -i exactly."""
    f = complex(_evaluate("BW_f2_pipi", [params["mass"]], params, spin=2)[0])
    assert f == pytest.approx(-1j, abs=1e-15)


@pytest.mark.parametrize("params", [F2_1270, {"mass": 1.2754, "width": 0.1866}])
def test_bw_f2_pipi_matches_hand_computation(params):
    m = np.array([2 * MK, 2 * MK + 1e-6, 1.0, 1.2, params["mass"] + 0.01, 1.5, 2.0, 2.6])
    got = _evaluate("BW_f2_pipi", m, params, spin=2)
    np.testing.assert_allclose(got, _f2_pipi_by_hand(m, **params), rtol=1e-13)
    # The author's hard-coded m_pi^2 = 0.0194792 GeV^2 makes no visible difference.
    np.testing.assert_allclose(got, _f2_pipi_by_hand(m, **params, mpi2=0.0194792), rtol=1e-5)


def test_bw_f2_pipi_is_a_pi_pi_d_wave_running_width():
    """g(s) = m0 Gamma0 (q/q0) B_2^2(q d)/B_2^2(q0 d) with d = sqrt(3/0.1825), up to 0.033306 vs 0.1825^2."""
    m0, g0 = F2_1270["mass"], F2_1270["width"]
    m = np.linspace(2 * MK, 3.0, 100)
    f = _evaluate("BW_f2_pipi", m, F2_1270, spin=2)
    g = (m0 * g0 / f).imag
    np.testing.assert_allclose((m0 * g0 / f).real, m**2 - m0**2, rtol=1e-12, atol=1e-14)
    d = np.sqrt(3.0 / 0.1825)
    q2, q02 = m**2 / 4 - MPI**2, m0**2 / 4 - MPI**2
    b2 = np.asarray(blatt_weisskopf_squared(jnp.asarray(q2 * d**2), 2))
    b02 = float(blatt_weisskopf_squared(jnp.asarray(q02 * d**2), 2))
    np.testing.assert_allclose(g, m0 * g0 * np.sqrt(q2 / q02) * b2 / b02, rtol=2e-5)


def test_bw_f2_pipi_constants():
    """b(x) = x^2 + a x + a^2 with a = 3/d^2 = 0.1825: d = 4.0544 GeV^-1, printed as 4.05."""
    assert F2_PIPI_B1 == 0.1825 and F2_PIPI_B0 == 0.033306
    d = np.sqrt(3.0 / F2_PIPI_B1)
    assert round(d, 2) == 4.05 and d == pytest.approx(4.05442, abs=1e-5)
    assert round(9.0 / d**4, 6) == F2_PIPI_B0
    assert d * 0.1973269804 == pytest.approx(0.800, abs=1e-3)  # fm
    # d = 4.05 exactly would not give the printed digits.
    assert abs(3.0 / 4.05**2 - F2_PIPI_B1) > 3e-4 and abs(9.0 / 4.05**4 - F2_PIPI_B0) > 1e-4


def test_validation():
    ctx2, ctx0 = LineshapeContext(2, MK, MK), LineshapeContext(0, MK, MK)
    f2 = LINESHAPES["BW_f2_pipi"].validate
    assert f2(F2_1270, ctx2) == []
    assert "spin" in f2(F2_1270, ctx0)[0]
    assert "pi pi threshold" in f2({"mass": 0.25, "width": 0.1}, ctx2)[0]
    assert LINESHAPES["BW_f2_pipi"].bounds["mass"][0] > 2 * MPI
    assert LINESHAPES["Flatte_abs"].validate(F0_980, ctx0) == []
    assert "S wave" in LINESHAPES["Flatte_abs"].validate(F0_980, ctx2)[0]
    # Any spin, any mass: the phi sits 33 MeV above the K K threshold, the card may go below.
    assert LINESHAPES["BW_plain"].validate is None


# Just above the K K threshold, where the f_J of the seed reaction start.
NEAR_KK = jnp.asarray(2 * MK + np.array([0.0, 1e-9, 1e-6, 1e-3, 0.01, 0.03, 0.1]))


@pytest.mark.parametrize("name, params, spin", [
    ("BW_plain", PHI, 1), ("BW_plain", {"mass": 2.548, "width": 0.324}, 2),
    ("Flatte", F0_980, 0), ("Flatte_abs", F0_980, 0), ("BW_f2_pipi", F2_1270, 2)])
def test_gradient_near_kk_threshold_matches_finite_differences(name, params, spin):
    ls = LINESHAPES[name]
    fn = ls.bind(LineshapeContext(spin, MK, MK))
    x0 = jnp.asarray([params[k] for k in ls.parameters])
    weights = jnp.linspace(1.0, 2.0, NEAR_KK.shape[0])

    def functional(x):
        f = fn(NEAR_KK, dict(zip(ls.parameters, x)))
        return jnp.sum(weights * (jnp.real(f) - 0.7 * jnp.imag(f) + 0.2 * jnp.abs(f) ** 2))

    grad = np.asarray(jax.jit(jax.grad(functional))(x0))
    assert np.all(np.isfinite(grad))
    for i in range(len(x0)):
        h = 1e-7 * abs(float(x0[i]))
        e = jnp.zeros_like(x0).at[i].set(h)
        fd = float((functional(x0 + e) - functional(x0 - e)) / (2 * h))
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-9), ls.parameters[i]
