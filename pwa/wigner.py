"""Wigner rotation functions and Clebsch-Gordan coefficients (numpy, float64).

Used once per data set to build the angular factors of the amplitude, so they
need no autodiff. Integer spins only. Convention (PHYSICS.md section 2; Rose,
"Elementary theory of angular momentum" (1957); the PDG review "Clebsch-Gordan
coefficients, spherical harmonics, and d functions"):

    D^j_{m m'}(a, b, c) = exp(-i m a) d^j_{m m'}(b) exp(-i m' c),
    d^j_{m m'}(b) = <j m| exp(-i b J_y) |j m'>,

with the first index m the row (final projection) and m' the column. Wigner's
formula in this convention:

    d^j_{m m'}(b) = sum_k (-1)^(k + m - m')
        sqrt((j+m)! (j-m)! (j+m')! (j-m')!) / ((j+m'-k)! k! (j-m-k)! (k+m-m')!)
        cos(b/2)^(2j - 2k - m + m') sin(b/2)^(2k + m - m'),

so that d^1_{1 0}(b) = -sin(b)/sqrt(2), d^1_{0 1}(b) = +sin(b)/sqrt(2), and

    d^j_{m m'}(b) = (-1)^(m - m') d^j_{m' m}(b) = d^j_{-m', -m}(b).

Clebsch-Gordan coefficients <j1 m1 j2 m2 | j m> follow Condon and Shortley
(real, <j1 j1 j2 (j - j1) | j j> > 0), the convention of the same PDG table.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import factorial, sqrt
from operator import index

import numpy as np


@lru_cache(maxsize=None)
def _small_d_terms(j: int, m: int, mp: int) -> tuple[tuple[float, int, int], ...]:
    """(coefficient, power of cos(b/2), power of sin(b/2)) of each term of d^j_{m m'}."""
    if j < 0 or abs(m) > j or abs(mp) > j:
        raise ValueError(f"no Wigner d^{j}_{{{m} {mp}}}: need j >= 0 and |m|, |m'| <= j")
    norm = sqrt(factorial(j + m) * factorial(j - m) * factorial(j + mp) * factorial(j - mp))
    terms = []
    for k in range(max(0, mp - m), min(j + mp, j - m) + 1):
        den = factorial(j + mp - k) * factorial(k) * factorial(j - m - k) * factorial(k + m - mp)
        terms.append(((-1) ** (k + m - mp) * norm / den, 2 * j - 2 * k - m + mp, 2 * k + m - mp))
    return tuple(terms)


def wigner_small_d(j: int, m: int, mp: int, cos_beta: np.ndarray) -> np.ndarray:
    """d^j_{m m'}(beta) for integer j, beta in [0, pi] given as cos(beta).

    Rose / PDG convention, m the row and m' the column (module docstring):
    ``wigner_small_d(1, 1, 0, cos b) == -sin(b) / sqrt(2)``.

    Args:
        j, m, mp: integer spin and projections, |m|, |m'| <= j.
        cos_beta: (n,) cosines of the polar angle.

    Returns:
        (n,) float64 values.

    Raises:
        ValueError: if j < 0 or a projection exceeds j.
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


@lru_cache(maxsize=None)
def _clebsch_gordan(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    if m1 + m2 != m or not abs(j1 - j2) <= j <= j1 + j2 or abs(m1) > j1 or abs(m2) > j2 or abs(m) > j:
        return 0.0
    f = factorial
    # Racah's formula: prefactor squared and the alternating sum, both exact rationals, so the
    # only rounding is the final square root.
    pre2 = Fraction((2 * j + 1) * f(j + j1 - j2) * f(j - j1 + j2) * f(j1 + j2 - j), f(j1 + j2 + j + 1))
    pre2 *= f(j + m) * f(j - m) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2)
    total = Fraction(0)
    for k in range(max(0, j2 - j - m1, j1 - j + m2), min(j1 + j2 - j, j1 - m1, j2 + m2) + 1):
        total += Fraction((-1) ** k, f(k) * f(j1 + j2 - j - k) * f(j1 - m1 - k) * f(j2 + m2 - k)
                          * f(j - j2 + m1 + k) * f(j - j1 - m2 + k))
    if total == 0:
        return 0.0
    return (1.0 if total > 0 else -1.0) * sqrt(pre2 * total * total)


def clebsch_gordan(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    """Clebsch-Gordan coefficient <j1 m1 j2 m2 | j m> for integer spins (Condon-Shortley).

    Racah's closed formula evaluated with exact integer factorials (rational
    arithmetic), then one square root: correct to about 1 ulp for any spins.

    Args:
        j1, m1, j2, m2: the two coupled spins and their projections.
        j, m: the total spin and projection.

    Returns:
        The coefficient; 0.0 when the combination is not allowed (m1 + m2 != m,
        no triangle |j1 - j2| <= j <= j1 + j2, or a projection exceeding its spin).

    Raises:
        TypeError: if an argument is not an integer.
        ValueError: if a spin is negative.
    """
    args = tuple(index(a) for a in (j1, m1, j2, m2, j, m))
    if min(args[0], args[2], args[4]) < 0:
        raise ValueError(f"spins must be >= 0, got j1={j1}, j2={j2}, j={j}")
    return _clebsch_gordan(*args)
