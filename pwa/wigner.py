"""Wigner rotation functions (numpy, float64).

Used once per data set to build the angular factors of the amplitude, so they
need no autodiff. Convention (PHYSICS.md section 2, Rose / PDG):

    D^j_{m m'}(a, b, c) = exp(-i m a) d^j_{m m'}(b) exp(-i m' c),

    d^j_{m m'}(b) = sum_k (-1)^(k - m + m')
        sqrt((j+m)! (j-m)! (j+m')! (j-m')!) / ((j+m-k)! k! (j-k-m')! (k-m+m')!)
        cos(b/2)^(2j - 2k + m - m') sin(b/2)^(2k - m + m'),

so that d^1_{1 0} = -sin(b)/sqrt(2) and d^j_{m m'}(b) = (-1)^(m-m') d^j_{m' m}(b).
"""

from __future__ import annotations

from functools import lru_cache
from math import factorial, sqrt

import numpy as np


@lru_cache(maxsize=None)
def _small_d_terms(j: int, m: int, mp: int) -> tuple[tuple[float, int, int], ...]:
    """(coefficient, power of cos(b/2), power of sin(b/2)) of each term of d^j_{m m'}."""
    if j < 0 or abs(m) > j or abs(mp) > j:
        raise ValueError(f"no Wigner d^{j}_{{{m} {mp}}}: need j >= 0 and |m|, |m'| <= j")
    norm = sqrt(factorial(j + m) * factorial(j - m) * factorial(j + mp) * factorial(j - mp))
    terms = []
    for k in range(max(0, m - mp), min(j + m, j - mp) + 1):
        den = factorial(j + m - k) * factorial(k) * factorial(j - k - mp) * factorial(k - m + mp)
        terms.append(((-1) ** (k - m + mp) * norm / den, 2 * j - 2 * k + m - mp, 2 * k - m + mp))
    return tuple(terms)


def wigner_small_d(j: int, m: int, mp: int, cos_beta: np.ndarray) -> np.ndarray:
    """d^j_{m m'}(beta) for integer j, beta in [0, pi] given as cos(beta).

    Args:
        j, m, mp: integer spin and projections.
        cos_beta: (n,) cosines of the polar angle.

    Returns:
        (n,) float64 values.
    """
    x = np.asarray(cos_beta, dtype=np.float64)
    # Half angles from cos(beta): beta in [0, pi] so both are >= 0.
    c = np.sqrt(np.clip(0.5 * (1.0 + x), 0.0, 1.0))
    s = np.sqrt(np.clip(0.5 * (1.0 - x), 0.0, 1.0))
    out = np.zeros_like(x)
    for coef, pc, ps in _small_d_terms(j, m, mp):
        out = out + coef * c**pc * s**ps
    return out


def wigner_D_conj(j: int, m: int, mp: int, alpha: np.ndarray, cos_beta: np.ndarray) -> np.ndarray:
    """D^{j*}_{m m'}(alpha, beta, 0) = exp(+i m alpha) d^j_{m m'}(beta), shape (n,) complex128."""
    return np.exp(1j * m * np.asarray(alpha, dtype=np.float64)) * wigner_small_d(j, m, mp, cos_beta)
