"""LS basis of a -> b c (pwa/ls_basis.py): selection rules, parity relation, orthogonality.

The parity relation H_{-lb,-lc} = pa pb pc (-1)^(sb+sc-ja) H_{lb,lc} and the LS -> helicity
coefficients (Chung) are independent formulas; checking one against the other for every allowed
wave tests both, and the waves forbidden by parity must show the opposite sign.
"""

from itertools import product

import numpy as np
import pytest

from pwa.ls_basis import (allowed_helicities, allowed_ls, independent_helicities, ls_to_helicity,
                          parity_partner_sign)

# (name, ja, pa, sb, pb, sc, pc, massless)
PSI2S_F0_PHI = ("psi(2S) -> f0 phi", 1, -1, 0, +1, 1, -1, (False, False))
PSI2S_F2_PHI = ("psi(2S) -> f2 phi", 1, -1, 2, +1, 1, -1, (False, False))
PSI2S_F4_PHI = ("psi(2S) -> f4 phi", 1, -1, 4, +1, 1, -1, (False, False))
JPSI_F0_GAMMA = ("J/psi -> f0 gamma", 1, -1, 0, +1, 1, -1, (False, True))
JPSI_F2_GAMMA = ("J/psi -> f2 gamma", 1, -1, 2, +1, 1, -1, (False, True))
JPSI_F4_GAMMA = ("J/psi -> f4 gamma", 1, -1, 4, +1, 1, -1, (False, True))
D0_KSTAR_PI = ("D0 -> K* pi", 0, -1, 1, -1, 0, -1, (False, False))
VERTICES = [PSI2S_F0_PHI, PSI2S_F2_PHI, PSI2S_F4_PHI, JPSI_F0_GAMMA, JPSI_F2_GAMMA, JPSI_F4_GAMMA,
            D0_KSTAR_PI]


def _ids(v):
    return v[0]


def all_vertices(smax: int = 3):
    """Every (ja, pa, sb, pb, sc, pc) with spins <= smax."""
    for ja, sb, sc in product(range(smax + 1), repeat=3):
        for pa, pb, pc in product((1, -1), repeat=3):
            yield ja, pa, sb, pb, sc, pc


def test_allowed_ls_psi2s_phi_fj():
    """PHYSICS.md 5: 2 couplings for J = 0, 5 for J = 2 and 4 (b = f_J, c = phi)."""
    assert allowed_ls(1, -1, 0, 1, 1, -1, parity_conserved=True) == ((0, 1), (2, 1))
    assert allowed_ls(1, -1, 2, 1, 1, -1, parity_conserved=True) == ((0, 1), (2, 1), (2, 2), (2, 3), (4, 3))
    assert allowed_ls(1, -1, 4, 1, 1, -1, parity_conserved=True) == ((2, 3), (4, 3), (4, 4), (4, 5), (6, 5))
    assert allowed_ls(1, -1, 2, 1, 1, -1, parity_conserved=True, l_max=2) == ((0, 1), (2, 1), (2, 2), (2, 3))
    # without parity the odd waves join: S = 1, 2, 3 with every |L - S| <= 1 <= L + S
    assert len(allowed_ls(1, -1, 2, 1, 1, -1, parity_conserved=False)) == 9


def test_allowed_ls_d0_kstar_pi_and_forbidden():
    assert allowed_ls(0, -1, 1, -1, 0, -1, parity_conserved=True) == ((1, 1),)
    assert independent_helicities(0, -1, 1, -1, 0, -1, parity_conserved=True) == ((0, 0),)
    assert ls_to_helicity(0, 1, 0, 1, 1, 0, 0) == pytest.approx(-1.0, abs=1e-15)
    # 1+ -> 0- 0- is parity forbidden: no wave, and H_00 = -H_00 = 0
    assert parity_partner_sign(1, 1, 0, -1, 0, -1) == -1
    assert allowed_ls(1, 1, 0, -1, 0, -1, parity_conserved=True) == ()
    assert independent_helicities(1, 1, 0, -1, 0, -1, parity_conserved=True) == ()
    assert allowed_ls(1, 1, 0, -1, 0, -1, parity_conserved=False) == ((1, 0),)


def test_independent_helicities_match_reference_representatives():
    """The reference data's (lf, lphi) pairs for psi(2S) -> phi f_J and (lX, lgamma) for J/psi -> X gamma."""
    assert set(independent_helicities(1, -1, 0, 1, 1, -1, parity_conserved=True)) == {(0, 1), (0, 0)}
    for spin in (2, 4):
        assert set(independent_helicities(1, -1, spin, 1, 1, -1, parity_conserved=True)) == {
            (2, 1), (1, 1), (0, 1), (1, 0), (0, 0)}
    assert independent_helicities(1, -1, 0, 1, 1, -1, parity_conserved=True,
                                  massless=(False, True)) == ((0, 1),)
    for spin in (2, 4):
        assert independent_helicities(1, -1, spin, 1, 1, -1, parity_conserved=True,
                                      massless=(False, True)) == ((0, 1), (1, 1), (2, 1))


def test_allowed_ls_massless_keeps_lowest_multipoles():
    """J/psi -> X gamma: one wave for J = 0 (L = 0 of {0, 2}), three for J = 2 (of five)."""
    assert allowed_ls(1, -1, 0, 1, 1, -1, parity_conserved=True, massless=(False, True)) == ((0, 1),)
    assert allowed_ls(1, -1, 2, 1, 1, -1, parity_conserved=True,
                      massless=(False, True)) == ((0, 1), (2, 1), (2, 2))


def test_allowed_helicities():
    assert allowed_helicities(1, 2, 1) == ((-2, -1), (-1, -1), (-1, 0), (0, -1), (0, 0), (0, 1), (1, 0),
                                           (1, 1), (2, 1))
    assert allowed_helicities(1, 2, 1, massless=(False, True)) == ((-2, -1), (-1, -1), (0, -1), (0, 1),
                                                                    (1, 1), (2, 1))
    assert allowed_helicities(0, 1, 1, massless=(True, True)) == ((-1, -1), (1, 1))
    assert allowed_helicities(0, 0, 0, massless=(True, False)) == ((0, 0),)


def test_counts_psi2s_phi_fj():
    for spin, n in ((0, 2), (2, 5), (4, 5)):
        assert len(allowed_ls(1, -1, spin, 1, 1, -1, parity_conserved=True)) == n
        assert len(independent_helicities(1, -1, spin, 1, 1, -1, parity_conserved=True)) == n


@pytest.mark.parametrize("massless", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("parity_conserved", [True, False])
def test_number_of_waves_equals_number_of_independent_helicities(massless, parity_conserved):
    """Massive: a counting identity. Massless: what allowed_ls's reduction guarantees, checked as the
    rank of the projection on the independent helicities."""
    for ja, pa, sb, pb, sc, pc in all_vertices():
        kw = dict(parity_conserved=parity_conserved, massless=massless)
        waves = allowed_ls(ja, pa, sb, pb, sc, pc, **kw)
        hel = independent_helicities(ja, pa, sb, pb, sc, pc, **kw)
        assert len(waves) == len(hel), (ja, pa, sb, pb, sc, pc)
        if waves:
            t = np.array([[ls_to_helicity(ja, sb, sc, L, S, lb, lc) for L, S in waves] for lb, lc in hel])
            assert abs(np.linalg.det(t)) > 1e-6


def _check_parity_relation(ja, pa, sb, pb, sc, pc, massless):
    eta = parity_partner_sign(ja, pa, sb, pb, sc, pc)
    hel = allowed_helicities(ja, sb, sc, massless=massless)
    allowed = allowed_ls(ja, pa, sb, pb, sc, pc, parity_conserved=True, massless=massless)
    everything = allowed_ls(ja, pa, sb, pb, sc, pc, parity_conserved=False)
    for L, S in everything:
        # waves of the wrong parity have the opposite sign, so they are exactly the ones excluded
        sign = eta if pa == pb * pc * (-1) ** L else -eta
        for lb, lc in hel:
            h, partner = ls_to_helicity(ja, sb, sc, L, S, lb, lc), ls_to_helicity(ja, sb, sc, L, S, -lb, -lc)
            assert partner == pytest.approx(sign * h, abs=1e-14), (L, S, lb, lc)
    assert set(allowed) <= {w for w in everything if pa == pb * pc * (-1) ** w[0]}


@pytest.mark.parametrize("vertex", VERTICES, ids=_ids)
def test_ls_coefficients_obey_parity_relation(vertex):
    _check_parity_relation(*vertex[1:7], vertex[7])


def test_ls_coefficients_obey_parity_relation_all_spins():
    for v in all_vertices():
        _check_parity_relation(*v, (False, False))
        _check_parity_relation(*v, (False, True))


def test_parity_partner_sign_values():
    assert parity_partner_sign(1, -1, 2, 1, 1, -1) == 1   # psi(2S) -> f2 phi: H_00 free
    assert parity_partner_sign(1, -1, 0, 1, 1, -1) == 1   # J/psi -> f0 gamma: H_{0,-1} = H_{0,1}
    assert parity_partner_sign(0, -1, 1, -1, 0, -1) == 1  # D0 -> K* pi
    assert parity_partner_sign(0, -1, 1, -1, 1, -1) == -1  # eta_c -> V V: H_{-1-1} = -H_{11}


@pytest.mark.parametrize("smax", [3])
def test_ls_to_helicity_matrix_is_orthogonal(smax):
    """With sqrt((2L+1)/(2ja+1)) the LS -> helicity matrix over all waves (no parity) and all helicity
    pairs (massive) is square with orthonormal columns and rows: the normalisation constant is exactly 1."""
    for ja, sb, sc in product(range(smax + 1), repeat=3):
        waves = allowed_ls(ja, 1, sb, 1, sc, 1, parity_conserved=False)
        hel = allowed_helicities(ja, sb, sc)
        t = np.array([[ls_to_helicity(ja, sb, sc, L, S, lb, lc) for L, S in waves] for lb, lc in hel])
        assert t.shape == (len(hel), len(waves)) and len(hel) == len(waves), (ja, sb, sc)
        assert np.allclose(t.T @ t, np.eye(len(waves)), rtol=0, atol=1e-13), (ja, sb, sc)
        assert np.allclose(t @ t.T, np.eye(len(hel)), rtol=0, atol=1e-13), (ja, sb, sc)


def test_ls_to_helicity_values():
    """rho -> pi pi: H_00 = g_10; J/psi -> f0 gamma, L = 0: sqrt(1/3) <0 0 1 -1|1 -1> <0 0 1 -1|1 -1>."""
    assert ls_to_helicity(1, 0, 0, 1, 0, 0, 0) == pytest.approx(1.0, abs=1e-15)
    assert ls_to_helicity(1, 0, 1, 0, 1, 0, 1) == pytest.approx(np.sqrt(1 / 3), abs=1e-15)
    assert ls_to_helicity(1, 0, 1, 1, 1, 0, 0) == pytest.approx(0.0, abs=1e-15)  # <1 0 1 0|1 0> = 0


def test_validation():
    with pytest.raises(ValueError):
        allowed_ls(1, 0, 0, 1, 0, 1, parity_conserved=True)
    with pytest.raises(ValueError):
        ls_to_helicity(1, 0, 1, 0, 1, 1, 0)
    with pytest.raises(ValueError):
        allowed_helicities(-1, 0, 0)
