"""Wigner small-d and Clebsch-Gordan coefficients against the PDG table, sympy and first principles.

Convention under test (pwa/wigner.py): D^j_{m m'}(a, b, c) = e^{-i m a} d^j_{m m'}(b) e^{-i m' c},
d^j_{m m'}(b) = <j m| exp(-i b J_y) |j m'> (Rose, PDG), so d^1_{1 0} = -sin(b)/sqrt(2).
The symmetry, unitarity and orthogonality checks hold for the transposed matrix too; the PDG
entries, the sympy spot checks and the exp(-i b J_y) check are what pin rows versus columns.
"""

from functools import lru_cache
from math import sqrt

import numpy as np
import pytest
import sympy
from sympy.physics.quantum.cg import CG
from sympy.physics.quantum.spin import Rotation

from pwa.wigner import clebsch_gordan, wigner_D_conj, wigner_small_d

BETAS = np.array([0.0, 0.3, 1.0, np.pi / 2, 2.2, 2.9, np.pi])


def _pdg_listed(b: np.ndarray) -> dict[tuple[int, int, int], np.ndarray]:
    """The integer-j entries as the PDG table prints them (theta = b)."""
    c, s = np.cos(b), np.sin(b)
    return {
        (1, 1, 1): (1 + c) / 2,
        (1, 1, 0): -s / sqrt(2),
        (1, 1, -1): (1 - c) / 2,
        (1, 0, 0): c,
        (2, 2, 2): ((1 + c) / 2) ** 2,
        (2, 2, 1): -(1 + c) / 2 * s,
        (2, 2, 0): sqrt(6) / 4 * s**2,
        (2, 2, -1): -(1 - c) / 2 * s,
        (2, 2, -2): ((1 - c) / 2) ** 2,
        (2, 1, 1): (1 + c) / 2 * (2 * c - 1),
        (2, 1, 0): -sqrt(3 / 2) * s * c,
        (2, 1, -1): (1 - c) / 2 * (2 * c + 1),
        (2, 0, 0): 1.5 * c**2 - 0.5,
    }


def pdg_full_table(b: np.ndarray) -> dict[tuple[int, int, int], np.ndarray]:
    """Every d^1 and d^2 entry, from the listed ones and the PDG's relations
    d^j_{m' m} = (-1)^(m - m') d^j_{m m'} = d^j_{-m, -m'}."""
    table = dict(_pdg_listed(b))
    for (j, m, mp), v in list(table.items()):
        table.setdefault((j, mp, m), (-1) ** (m - mp) * v)
        table.setdefault((j, -m, -mp), (-1) ** (m - mp) * v)
        table.setdefault((j, -mp, -m), v)
    return table


def test_pdg_tables_complete():
    assert len(pdg_full_table(BETAS)) == 9 + 25


@pytest.mark.parametrize("key", sorted(pdg_full_table(BETAS)), ids=lambda k: "d{}_{}_{}".format(*k))
def test_small_d_matches_pdg_table(key):
    j, m, mp = key
    expected = pdg_full_table(BETAS)[key]
    assert np.allclose(wigner_small_d(j, m, mp, np.cos(BETAS)), expected, rtol=0, atol=1e-15)


def test_small_d_anchor_values():
    b = 0.7
    assert wigner_small_d(1, 1, 0, np.cos(b)) == pytest.approx(-np.sin(b) / sqrt(2), abs=4e-16)
    assert wigner_small_d(1, 0, 1, np.cos(b)) == pytest.approx(+np.sin(b) / sqrt(2), abs=4e-16)
    assert wigner_small_d(2, 2, 1, np.cos(b)) == pytest.approx(-(1 + np.cos(b)) / 2 * np.sin(b), abs=4e-16)


def _jy(j: int) -> np.ndarray:
    """J_y in the basis |j m>, m = j, j-1, ..., -j (rows and columns)."""
    ms = np.arange(j, -j - 1, -1)
    jp = np.zeros((2 * j + 1, 2 * j + 1))
    for col, m in enumerate(ms[1:], start=1):  # J+ |j m> = sqrt(j(j+1) - m(m+1)) |j m+1>
        jp[col - 1, col] = sqrt(j * (j + 1) - m * (m + 1))
    return (jp - jp.T) / 2j


@pytest.mark.parametrize("j", [1, 2, 3, 4, 5])
def test_small_d_is_matrix_element_of_rotation(j):
    """d^j_{m m'}(b) = <j m| exp(-i b J_y) |j m'> from the ladder operators (row m, column m')."""
    w, v = np.linalg.eigh(_jy(j))
    ms = range(j, -j - 1, -1)
    for b in (0.4, 1.9, 2.8):
        rot = (v * np.exp(-1j * b * w)) @ v.conj().T
        ours = np.array([[wigner_small_d(j, m, mp, np.cos(b)) for mp in ms] for m in ms])
        assert np.allclose(rot.imag, 0, atol=1e-13)
        assert np.allclose(ours, rot.real, rtol=0, atol=1e-12)


@lru_cache(maxsize=None)
def sympy_d(j: int, m: int, mp: int):
    beta = sympy.Symbol("beta")
    return sympy.lambdify(beta, Rotation.d(j, m, mp, beta).doit(), "numpy")


def test_sympy_sign_convention():
    """sympy's Rotation.d (checked on sympy 1.14) is Rose/PDG: d^1_{10} = -sin(b)/sqrt 2 and
    d^1_{01} = +sin(b)/sqrt 2, i.e. the same rows/columns and the same sign of beta as ours, so no
    mapping is needed below. (Other conventions, e.g. exp(+i b J_y), give d(-b) = d transposed;
    this anchor fails if a sympy release changes it.)"""
    assert np.allclose(sympy_d(1, 1, 0)(BETAS), -np.sin(BETAS) / sqrt(2), atol=1e-15)
    assert np.allclose(sympy_d(1, 0, 1)(BETAS), np.sin(BETAS) / sqrt(2), atol=1e-15)


SYMPY_SPOTS = [(3, 3, 3), (3, 3, -3), (3, 2, -1), (3, -1, 2), (3, 1, 0), (3, 0, 1), (3, -3, 2), (3, 0, 0),
               (4, 4, -4), (4, 3, 1), (4, 1, 3), (4, 2, -1), (4, -2, 1), (4, 0, 3), (4, -4, 1), (4, 0, 0)]


@pytest.mark.parametrize("j,m,mp", SYMPY_SPOTS)
def test_small_d_matches_sympy(j, m, mp):
    assert np.allclose(wigner_small_d(j, m, mp, np.cos(BETAS)), sympy_d(j, m, mp)(BETAS), rtol=0, atol=1e-14)


@pytest.mark.parametrize("j", [0, 1, 2, 3, 4, 6])
def test_small_d_symmetries(j):
    """d^j_{m m'} = (-1)^(m - m') d^j_{m' m} = d^j_{-m', -m}."""
    x = np.cos(BETAS)
    for m in range(-j, j + 1):
        for mp in range(-j, j + 1):
            d = wigner_small_d(j, m, mp, x)
            assert np.allclose(d, (-1) ** (m - mp) * wigner_small_d(j, mp, m, x), rtol=0, atol=1e-14)
            assert np.allclose(d, wigner_small_d(j, -mp, -m, x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("j", [0, 1, 2, 3, 4, 6])
def test_small_d_unitarity(j):
    """sum_m' d^j_{m m'} d^j_{k m'} = delta_{m k} (d is real orthogonal)."""
    x = np.cos(BETAS)
    d = np.array([[wigner_small_d(j, m, mp, x) for mp in range(-j, j + 1)] for m in range(-j, j + 1)])
    gram = np.einsum("mpn,kpn->mkn", d, d)
    assert np.allclose(gram, np.eye(2 * j + 1)[:, :, None], rtol=0, atol=1e-13)


def test_small_d_orthogonality_integral():
    """int_{-1}^{1} d^j_{m m'} d^j'_{m m'} dcos(b) = 2/(2j+1) delta_{j j'} (Gauss-Legendre, exact here)."""
    x, w = np.polynomial.legendre.leggauss(30)
    for m in range(-3, 4):
        for mp in range(-3, 4):
            for j in range(max(abs(m), abs(mp)), 6):
                for jp in range(max(abs(m), abs(mp)), 6):
                    integral = np.sum(w * wigner_small_d(j, m, mp, x) * wigner_small_d(jp, m, mp, x))
                    assert integral == pytest.approx(2 / (2 * j + 1) if j == jp else 0.0, abs=1e-13)


def test_wigner_D_conj_phase():
    alpha, b = np.array([0.3, -1.1, 2.5]), np.array([0.2, 1.3, 2.7])
    for j, m, mp in [(1, 1, 0), (2, -2, 1), (3, 1, -3)]:
        expected = np.exp(1j * m * alpha) * sympy_d(j, m, mp)(b)
        assert np.allclose(wigner_D_conj(j, m, mp, alpha, np.cos(b)), expected, rtol=0, atol=1e-14)


def test_small_d_rejects_bad_projections():
    with pytest.raises(ValueError):
        wigner_small_d(1, 2, 0, np.array([0.5]))


# --- Clebsch-Gordan ----------------------------------------------------------


def cg_cases(jmax: int = 4):
    for j1 in range(jmax + 1):
        for j2 in range(jmax + 1):
            for j in range(abs(j1 - j2), j1 + j2 + 1):
                for m1 in range(-j1, j1 + 1):
                    for m2 in range(-j2, j2 + 1):
                        if abs(m1 + m2) <= j:
                            yield j1, m1, j2, m2, j, m1 + m2


def test_clebsch_gordan_matches_sympy_all_spins_to_4():
    cases = list(cg_cases())
    assert len(cases) > 2000
    ours = np.array([clebsch_gordan(*c) for c in cases])
    ref = np.array([float(CG(*c).doit()) for c in cases])
    assert np.allclose(ours, ref, rtol=0, atol=2e-16 * 4)


def test_clebsch_gordan_pdg_values():
    """A few entries of the PDG table (Condon-Shortley signs)."""
    assert clebsch_gordan(1, 1, 1, -1, 0, 0) == pytest.approx(1 / sqrt(3), abs=4e-16)
    assert clebsch_gordan(1, 0, 1, 0, 0, 0) == pytest.approx(-1 / sqrt(3), abs=4e-16)
    assert clebsch_gordan(1, 1, 1, -1, 1, 0) == pytest.approx(1 / sqrt(2), abs=4e-16)
    assert clebsch_gordan(1, 0, 1, 0, 1, 0) == 0.0
    assert clebsch_gordan(1, 0, 1, 0, 2, 0) == pytest.approx(sqrt(2 / 3), abs=4e-16)
    assert clebsch_gordan(2, 1, 1, -1, 1, 0) == pytest.approx(sqrt(3 / 10), abs=4e-16)
    assert clebsch_gordan(2, 0, 1, 0, 1, 0) == pytest.approx(-sqrt(2 / 5), abs=4e-16)
    assert clebsch_gordan(3, 3, 4, 4, 7, 7) == 1.0


def test_clebsch_gordan_zero_when_not_allowed():
    assert clebsch_gordan(1, 1, 1, 0, 2, 0) == 0.0  # m1 + m2 != m
    assert clebsch_gordan(1, 0, 1, 0, 3, 0) == 0.0  # no triangle
    assert clebsch_gordan(2, 0, 0, 0, 1, 0) == 0.0
    assert clebsch_gordan(1, 2, 1, -1, 1, 1) == 0.0  # |m1| > j1
    assert clebsch_gordan(1, 1, 1, 1, 1, 2) == 0.0  # |m| > j
    with pytest.raises(ValueError):
        clebsch_gordan(-1, 0, 1, 0, 1, 0)
    with pytest.raises(TypeError):
        clebsch_gordan(0.5, 0.5, 0.5, -0.5, 0, 0)


@pytest.mark.parametrize("j1,j2", [(0, 3), (1, 1), (2, 1), (2, 2), (3, 2), (4, 4), (6, 5)])
def test_clebsch_gordan_orthogonality(j1, j2):
    """sum_{m1 m2} <m1 m2|j m><m1 m2|j' m'> = delta delta, and sum_{j m} <m1 m2|j m><m1' m2'|j m> = delta delta."""
    states = [(m1, m2) for m1 in range(-j1, j1 + 1) for m2 in range(-j2, j2 + 1)]
    totals = [(j, m) for j in range(abs(j1 - j2), j1 + j2 + 1) for m in range(-j, j + 1)]
    u = np.array([[clebsch_gordan(j1, m1, j2, m2, j, m) for j, m in totals] for m1, m2 in states])
    assert u.shape[0] == u.shape[1]
    assert np.allclose(u.T @ u, np.eye(len(totals)), rtol=0, atol=1e-14)
    assert np.allclose(u @ u.T, np.eye(len(states)), rtol=0, atol=1e-14)
