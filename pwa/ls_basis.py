"""LS basis of a two-body vertex a -> b c and its helicity couplings (PHYSICS.md 5b).

Integer spins only; parities are +1 or -1. Helicity couplings H_{lb, lc}
(lb, lc the helicities of b and c in a's rest frame) and LS couplings g_LS
(orbital angular momentum L, total daughter spin S) are related by

    H_{lb, lc} = sum_{L, S} g_LS sqrt((2L + 1) / (2 ja + 1))
                 <L 0 S (lb - lc) | ja (lb - lc)> <sb lb sc -lc | S (lb - lc)>,

the Jacob-Wick recoupling in the form of S. U. Chung, "Spin formalisms",
CERN 71-8 (updated as BNL-QGS-02-0900, 2008) and Phys. Rev. D 48 (1993) 1225
(M. Jacob and G. C. Wick, Ann. Phys. 7 (1959) 404). Clebsch-Gordan
coefficients are Condon-Shortley (:func:`pwa.wigner.clebsch_gordan`). With this
normalisation the LS -> helicity matrix of massive daughters is orthogonal: the
columns (one per (L, S), all allowed (L, S) without a parity constraint) are
orthonormal over all helicity pairs and the matrix is square, so
sum_{lb, lc} |H_{lb, lc}|^2 = sum_{LS} |g_LS|^2.

Parity conservation gives H_{-lb, -lc} = pa pb pc (-1)^(sb + sc - ja) H_{lb, lc}
(Jacob and Wick; J. D. Richman, "An experimenter's guide to the helicity
formalism", CALT-68-1148 (1984); Chung, op. cit.), and in the LS basis the
selection rule pa = pb pc (-1)^L.

A massless daughter (a photon) has only the helicities +-s (0 if s = 0). The
LS waves projected on those helicities are then linearly dependent (gauge
invariance: J/psi -> gamma f0 has L = 0 and 2 but a single helicity
amplitude); :func:`allowed_ls` keeps, in (L, S) order, each wave that is
independent of the ones before it, i.e. the lowest multipoles, so that the
number of LS couplings always equals the number of independent helicity
couplings.
"""

from __future__ import annotations

from math import sqrt
from operator import index

import numpy as np

from .wigner import clebsch_gordan

__all__ = ["allowed_helicities", "allowed_ls", "independent_helicities", "ls_to_helicity",
           "parity_partner_sign"]

# Relative tolerance of the rank test that drops dependent LS waves for massless daughters;
# the projected vectors are Clebsch-Gordan products of order 0.01-1, rounding is ~1e-16.
_RANK_RTOL = 1e-9


def _spin(name: str, value: int) -> int:
    value = index(value)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer spin, got {value}")
    return value


def _parity(name: str, value: int) -> int:
    if value not in (1, -1):
        raise ValueError(f"{name} must be +1 or -1, got {value!r}")
    return int(value)


def _helicities(s: int, massless: bool) -> tuple[int, ...]:
    if massless:
        return (-s, s) if s > 0 else (0,)
    return tuple(range(-s, s + 1))


def allowed_helicities(ja: int, sb: int, sc: int, *,
                       massless: tuple[bool, bool] = (False, False)) -> tuple[tuple[int, int], ...]:
    """Helicity pairs (lb, lc) of a -> b c allowed by angular momentum.

    Args:
        ja, sb, sc: spins of a, b, c.
        massless: whether b, c are massless (then only helicities +-s).

    Returns:
        All (lb, lc) with |lb| <= sb, |lc| <= sc and |lb - lc| <= ja, sorted
        ascending by (lb, lc).
    """
    ja, sb, sc = _spin("ja", ja), _spin("sb", sb), _spin("sc", sc)
    return tuple((lb, lc) for lb in _helicities(sb, massless[0]) for lc in _helicities(sc, massless[1])
                 if abs(lb - lc) <= ja)


def ls_to_helicity(ja: int, sb: int, sc: int, L: int, S: int, lb: int, lc: int) -> float:
    """Coefficient of g_LS in H_{lb, lc} (Chung, Phys. Rev. D 48 (1993) 1225; module docstring).

    sqrt((2L+1)/(2ja+1)) <L 0 S (lb-lc) | ja (lb-lc)> <sb lb sc -lc | S (lb-lc)>, Condon-Shortley.

    Args:
        ja, sb, sc: spins of a, b, c.
        L, S: orbital angular momentum and total spin of b c.
        lb, lc: helicities of b and c.

    Returns:
        The coefficient; 0.0 where angular momentum forbids the combination.
    """
    ja, sb, sc, L, S = (_spin(n, v) for n, v in (("ja", ja), ("sb", sb), ("sc", sc), ("L", L), ("S", S)))
    lb, lc = index(lb), index(lc)
    if abs(lb) > sb or abs(lc) > sc:
        raise ValueError(f"helicities ({lb}, {lc}) exceed the spins ({sb}, {sc})")
    delta = lb - lc
    return (sqrt((2 * L + 1) / (2 * ja + 1)) * clebsch_gordan(L, 0, S, delta, ja, delta)
            * clebsch_gordan(sb, lb, sc, -lc, S, delta))


def parity_partner_sign(ja: int, pa: int, sb: int, pb: int, sc: int, pc: int) -> int:
    """Sign eta in H_{-lb, -lc} = eta H_{lb, lc} when parity is conserved.

    eta = pa pb pc (-1)^(sb + sc - ja) (Jacob and Wick 1959; Richman, CALT-68-1148,
    1984; Chung, "Spin formalisms").

    Args:
        ja, pa, sb, pb, sc, pc: spins and intrinsic parities (+-1) of a, b, c.

    Returns:
        +1 or -1.
    """
    ja, sb, sc = _spin("ja", ja), _spin("sb", sb), _spin("sc", sc)
    sign = _parity("pa", pa) * _parity("pb", pb) * _parity("pc", pc)
    return sign * (-1) ** ((sb + sc - ja) % 2)


def _projection(ja: int, sb: int, sc: int, waves, helicities) -> np.ndarray:
    """(n_helicities, n_waves) LS -> helicity matrix."""
    return np.array([[ls_to_helicity(ja, sb, sc, L, S, lb, lc) for L, S in waves] for lb, lc in helicities],
                    dtype=np.float64).reshape(len(helicities), len(waves))


def allowed_ls(ja: int, pa: int, sb: int, pb: int, sc: int, pc: int, *, parity_conserved: bool,
               l_max: int | None = None,
               massless: tuple[bool, bool] = (False, False)) -> tuple[tuple[int, int], ...]:
    """LS waves (L, S) of a -> b c.

    All (L, S) with |sb - sc| <= S <= sb + sc, |L - S| <= ja <= L + S, L <= l_max
    if given, and pa = pb pc (-1)^L if parity is conserved. With a massless
    daughter, waves whose helicity projection (on the helicities +-s) depends
    linearly on lower (L, S) waves are dropped (module docstring), so the
    lowest multipoles remain.

    Args:
        ja, pa, sb, pb, sc, pc: spins and intrinsic parities (+-1) of a, b, c.
        parity_conserved: apply the parity selection rule (strong and
            electromagnetic decays).
        l_max: largest L kept, None for no limit.
        massless: whether b, c are massless.

    Returns:
        (L, S) pairs sorted by (L, S).
    """
    ja, sb, sc = _spin("ja", ja), _spin("sb", sb), _spin("sc", sc)
    pa, pb, pc = _parity("pa", pa), _parity("pb", pb), _parity("pc", pc)
    waves = sorted((L, S) for S in range(abs(sb - sc), sb + sc + 1) for L in range(abs(ja - S), ja + S + 1)
                   if (l_max is None or L <= l_max) and (not parity_conserved or pa == pb * pc * (-1) ** L))
    if not any(massless):
        return tuple(waves)
    helicities = allowed_helicities(ja, sb, sc, massless=massless)
    kept: list[tuple[int, int]] = []
    rank = 0
    for wave in waves:
        t = _projection(ja, sb, sc, [*kept, wave], helicities)
        new_rank = np.linalg.matrix_rank(t, tol=_RANK_RTOL * max(1.0, np.abs(t).max())) if t.size else 0
        if new_rank > rank:
            kept.append(wave)
            rank = new_rank
    return tuple(kept)


def independent_helicities(ja: int, pa: int, sb: int, pb: int, sc: int, pc: int, *, parity_conserved: bool,
                           massless: tuple[bool, bool] = (False, False)) -> tuple[tuple[int, int], ...]:
    """Helicity pairs (lb, lc) whose couplings are independent.

    Without parity conservation: every pair of :func:`allowed_helicities`.
    With it, H_{-lb, -lc} = eta H_{lb, lc} (:func:`parity_partner_sign`) ties
    each pair to its partner; the representative kept is the one whose first
    non-zero entry of (lb, lc) is positive, e.g. (0, +1) rather than (0, -1),
    (+1, -1) rather than (-1, +1). The pair (0, 0) is its own partner: kept if
    eta = +1, dropped (H_00 = 0) if eta = -1.

    Args:
        ja, pa, sb, pb, sc, pc: spins and intrinsic parities (+-1) of a, b, c.
        parity_conserved: apply the parity relation.
        massless: whether b, c are massless.

    Returns:
        (lb, lc) pairs sorted ascending by (lb, lc). For psi(2S) -> f_2 phi
        ((lf, lphi), parity conserved): (0, 0), (0, 1), (1, 0), (1, 1), (2, 1).
    """
    pairs = allowed_helicities(ja, sb, sc, massless=massless)
    eta = parity_partner_sign(ja, pa, sb, pb, sc, pc)
    if not parity_conserved:
        return pairs
    return tuple((lb, lc) for lb, lc in pairs
                 if (lb, lc) > (0, 0) or ((lb, lc) == (0, 0) and eta == 1))
