"""Likelihood-ratio statistics of weighted data (e.g. sideband-subtracted), calibrated by the sandwich.

A weighted NLL is not a likelihood. Near its minimum, for the k parameters
theta that a test removes, 2 Delta NLL_w ~ theta^T [V_H]^-1 theta with
V_H = H^-1 the inverse Hessian of the weighted NLL, while theta fluctuates
with the sandwich covariance V_S = H^-1 C H^-1 (C = sum w_i^2 g_i g_i^T,
:meth:`pwa.problem.FitProblem.sandwich_covariance`). So

    2 Delta NLL_w ~ sum_i lambda_i chi2_1,   lambda = eig([V_H]_tt^-1 [V_S]_tt),

not chi2_k (the eigenvalues do not depend on how theta is parametrised).
Its tail is taken from the Satterthwaite-Welch approximation
a chi2_nu, a = sum lambda^2 / sum lambda, nu = (sum lambda)^2 / sum lambda^2
(:func:`weighted_lr_pvalue`). For equal weights c every lambda is c, and this
is the test of the unweighted data. The first-order scale sum w / sum w^2
(:func:`pwa.problem.likelihood_scale`) assumes C = H (sum w^2 / sum w), which
sideband subtraction breaks: null toys with 20 % subtracted background gave
a mean scaled 2 Delta NLL of 2.9 for a chi2(2)
(``experiments/results/background/significance.md``).

For information criteria the same ratio over all free parameters gives an
effective scale (:func:`effective_likelihood_scale`): k / sum lambda, with
which 2 s NLL_w + 2 k penalises a model like AIC (Takeuchi's trace term
divided out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from .problem import FitProblem


def information_ratio_eigenvalues(problem: FitProblem, p: np.ndarray, indices: Sequence[int] | None = None
                                  ) -> np.ndarray:
    """lambda = eig([V_H]_tt^-1 [V_S]_tt) of the parameters ``indices`` (default: all) at p.

    Parameters with no curvature (held at a bound) should be left out of ``indices``.
    """
    p = np.asarray(p, dtype=np.float64)
    H = problem.hessian(p)
    H = 0.5 * (H + H.T)
    V_H = np.linalg.pinv(H)
    V_S = problem.sandwich_covariance(p, V_H)
    idx = np.arange(len(p)) if indices is None else np.asarray(indices, dtype=int)
    A = np.linalg.solve(V_H[np.ix_(idx, idx)], V_S[np.ix_(idx, idx)])
    lam = np.linalg.eigvals(A).real
    return np.sort(np.clip(lam, 0.0, None))


def weighted_lr_pvalue(statistic: float, eigenvalues: np.ndarray) -> float:
    """P(sum lambda_i chi2_1 > statistic) by Satterthwaite-Welch (module docstring); statistic = 2 Delta NLL_w."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    s1, s2 = float(lam.sum()), float((lam**2).sum())
    if s1 <= 0:
        return 1.0
    a, nu = s2 / s1, s1**2 / s2
    return float(stats.chi2.sf(max(statistic, 0.0) / a, nu))


def effective_likelihood_scale(problem: FitProblem, p: np.ndarray, indices: Sequence[int] | None = None) -> float:
    """k / sum lambda over the parameters ``indices`` (default all): 1 for unweighted data
    with a correct model, 1/c for weights all c."""
    lam = information_ratio_eigenvalues(problem, p, indices)
    return float(len(lam) / lam.sum()) if lam.sum() > 0 else 0.0


__all__ = ["effective_likelihood_scale", "information_ratio_eigenvalues", "weighted_lr_pvalue"]
