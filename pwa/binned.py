"""Floating lineshapes at the cost of fixed ones: the normalisation integral expanded over mass bins.

With floating masses and widths the normalisation N(p) = <|sum_k c_k F_k(m) Ang_k(x)|^2>
over the MC needs every MC event's lineshapes at every iteration. But the
lineshapes depend on the node mass alone. Where every term's lineshape reads
one and the same node mass (one chain, one permutation: J/psi -> gamma K+ K-
and any radiative P P pair), bin that mass in u = sqrt(m^2 - m_thr^2) (the
break-up momentum up to a factor: the threshold's square-root behaviour of a
Flatte is smooth in u), and expand each lineshape to second order about its
bin's centre u_b,

    F_k(m_n) ~ D0_k + D1_k d_n + D2_k d_n^2,   d_n = u_n - u_b,
    D0 = F(u_b), D1 = dF/du, D2 = (1/2) d^2F/du^2 (forward-mode autodiff).

Then the per-term integrals are

    M_kl = sum_b sum_{i,j=0..2} [ conj(Di_k) Dj_l A^(i+j)_kl ]_b / sum v,
    A^(r)_klb = sum_{n in b} v_n d_n^r sum_s conj(Ang_ksn) Ang_lsn,   r = 0..4,

precomputed once (:func:`binned_cache`), so that an iteration, its gradient
and its exact Hessian cost n_bins x n_terms^2, independent of the MC size.
The error of the expansion is third order in the bin width; it is
measured against the exact sum (:func:`approximation_error`, the tests and
``experiments/bench/binned.py``). Only the normalisation is binned: the data
term stays exact per event, and the per-event MC is still needed for plots
and the MC-statistics error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

from fastsim.events import Events

from .amplitude import Model
from .caches import EventCache
from .errors import FitError
from .problem import FitProblem

#: Default number of bins.
DEFAULT_BINS = 2000
#: Events per chunk while the moments are summed.
CHUNK = 20_000


def eligibility(model: Model) -> str | None:
    """None if the model's normalisation can be binned, else why not."""
    if not model.floating_lineshapes:
        return "no lineshape floats: the stored normalisation matrix is already exact and fast"
    if len(model.amplitude.permutations) != 1:
        return "identical final-state particles (several permutations) put the lineshapes on several masses"
    columns = {col for factors in model._sub_factors for _, col in factors}
    if len(columns) != 1 or any(len(f) != 1 for f in model._sub_factors):
        return "the terms' lineshapes read more than one node mass (several chains or nested resonances)"
    return None


@jax.tree_util.register_dataclass
@dataclass(frozen=True, eq=False)
class BinnedCache:
    """Binned moments of a normalisation sample (module docstring).

    Attributes:
        u: (n_columns, n_bins) u at the bin centres (every column the same).
        tangent: (n_columns, n_bins) 1 in the binned column, 0 elsewhere (the direction of d/du).
        threshold: the node's threshold mass (u = sqrt(m^2 - threshold^2)).
        a_re, a_im: (5, n_terms, n_terms, n_bins) the moments A0 .. A4.
        weights: (1,) the sample's total weight.
        half_width: (1,) half the bin width in u.
        pseudo_re, pseudo_im, pseudo_sign: the bins as pseudo-events of the exact Hessian
            (:func:`pseudo_events`, :mod:`pwa.hessian`).
    """

    u: Any
    tangent: Any
    threshold: Any
    a_re: Any
    a_im: Any
    weights: Any
    half_width: Any = None
    pseudo_re: Any = None
    pseudo_im: Any = None
    pseudo_sign: Any = None
    folded: bool = field(default=False, metadata={"static": True})

    normalisation_matrix = None

    def taylor_lineshapes(self, model: Model, full: jnp.ndarray, scaled: bool = False,
                          term: int | None = None) -> jnp.ndarray:
        """(n_terms, 3, n_bins) complex Taylor coefficients D0, D1, D2 of each term's lineshape
        at the bin centres, in d = u - u_b; ``scaled``: in d / h instead (h the half bin width),
        the variable of the pseudo-events; ``term``: that term's (3, n_bins) alone."""
        def lineshapes(u):  # F as a function of u at the bin centres: m(u) = sqrt(u^2 + thr^2)
            m = jnp.sqrt(u**2 + self.threshold**2)
            if term is not None:
                return model._term_lineshape_row(full, m, term)[0]
            return model._term_lineshapes(full, m)[:, 0, :]

        def first(u):
            return jax.jvp(lineshapes, (u,), (self.tangent,))

        (F, dF), (_, d2F) = jax.jvp(first, (self.u,), (self.tangent,))
        h = self.half_width[0] if scaled else 1.0
        return jnp.stack([F, dF * h, 0.5 * d2F * h**2], axis=-2)

    def term_integrals(self, model: Model, full: jnp.ndarray) -> jnp.ndarray:
        """(n_terms, n_terms) complex M_kl at the full parameter vector."""
        D = self.taylor_lineshapes(model, full)
        A = self.a_re + 1j * self.a_im
        M = 0.0
        for i in range(3):
            for j in range(3):
                M = M + jnp.einsum("kb,lb,klb->kl", jnp.conj(D[:, i]), D[:, j], A[i + j])
        return M / self.weights[0]


def pseudo_events(A: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's Hermitian form over (term k, order i) as at most 3 n_terms weighted states.

    Q_b[(k, i), (l, j)] = A^(i+j)_klb / h^(i+j) (the moments in d / h, all of one
    order of magnitude) = sum_s lambda_s V_s V_s^H, so that
    sum_kl,ij conj(e_ki) e_lj Q = sum_s sign(lambda_s) |sum_ki e_ki X_kis|^2 with
    X_kis = conj(V_(ki)s) sqrt|lambda_s|: the per-event form of pwa.hessian.

    Returns:
        X (n_terms, 3, 3 n_terms, n_bins) complex and the signs (3 n_terms, n_bins).
    """
    _, K, _, n_bins = A.shape
    scale = half_width ** np.arange(5)
    Q = np.empty((n_bins, K, 3, K, 3), dtype=np.complex128)
    for i in range(3):
        for j in range(3):
            Q[:, :, i, :, j] = np.moveaxis(A[i + j] / scale[i + j], -1, 0)
    Q = Q.reshape(n_bins, 3 * K, 3 * K)
    lam, V = np.linalg.eigh(0.5 * (Q + np.conj(np.swapaxes(Q, 1, 2))))
    X = np.conj(V) * np.sqrt(np.abs(lam))[:, None, :]  # (b, (k, i), s)
    X = np.moveaxis(X.reshape(n_bins, K, 3, 3 * K), 0, -1)
    return X, np.sign(lam).T


def binned_cache(model: Model, mc: Events | EventCache, n_bins: int = DEFAULT_BINS) -> BinnedCache:
    """The binned moments of a normalisation sample (events, or their unfolded per-event cache)."""
    reason = eligibility(model)
    if reason:
        raise FitError(f"binned normalisation: {reason}")
    if n_bins < 2:
        raise FitError(f"binned normalisation: expected at least 2 bins, got {n_bins}")
    from .amplitude import kinematic_mass_range

    col = next(col for factors in model._sub_factors for _, col in factors)
    _, node, _ = model.amplitude.mass_columns[col]
    caches = _chunks(model, mc)
    masses = np.concatenate([np.asarray(c.masses)[col] for c in caches])
    thr = min(kinematic_mass_range(model.reaction, node)[0], float(masses.min()))
    u = np.sqrt(np.clip(masses**2 - thr**2, 0.0, None))
    u_max = float(u.max()) * (1 + 1e-9) + 1e-12
    width = u_max / n_bins
    centres_u = (np.arange(n_bins) + 0.5) * width
    n_terms = model.n_terms
    A = np.zeros((5, n_terms * n_terms, n_bins), dtype=np.complex128)
    total = 0.0
    start = 0
    for cache in caches:
        n = int(np.shape(cache.weights)[-1])
        uc = u[start:start + n]
        start += n
        b = np.minimum((uc / width).astype(int), n_bins - 1)
        d = uc - centres_u[b]
        v = np.asarray(cache.weights)
        ang = (np.asarray(cache.ang_re) + 1j * np.asarray(cache.ang_im)).reshape(n_terms, -1, n)  # (k, s, n)
        P = np.einsum("ksn,lsn->kln", np.conj(ang), ang).reshape(n_terms * n_terms, n)
        onehot = sparse.csr_matrix((np.ones(n), (b, np.arange(n))), shape=(n_bins, n))
        for r in range(5):
            A[r] += (onehot @ (P * (v * d**r)).T).T
        total += float(v.sum())
    if not total > 0:
        raise FitError("binned normalisation: the sample's weights sum to zero or less")
    n_cols = int(np.shape(caches[0].masses)[0])
    u_b = np.tile(centres_u, (n_cols, 1))
    tangent = np.zeros_like(u_b)
    tangent[col] = 1.0
    A = A.reshape(5, n_terms, n_terms, n_bins)
    X, sign = pseudo_events(A, 0.5 * width)
    return BinnedCache(jnp.asarray(u_b), jnp.asarray(tangent), jnp.asarray(thr), jnp.asarray(A.real),
                       jnp.asarray(A.imag), jnp.asarray([total]), jnp.asarray([0.5 * width]),
                       jnp.asarray(X.real), jnp.asarray(X.imag), jnp.asarray(sign))


def _chunks(model: Model, mc: Events | EventCache) -> list[EventCache]:
    if isinstance(mc, EventCache):
        if mc.folded:
            raise FitError("binned normalisation needs the unfolded per-event factors (floating lineshapes)")
        return [mc]
    return [model.precompute(mc.subset(slice(i, i + CHUNK))) for i in range(0, len(mc), CHUNK)]


def with_binned_normalisation(problem: FitProblem, n_bins: int = DEFAULT_BINS) -> FitProblem:
    """The problem with its MC term binned, keeping its per-event MC cache as
    :attr:`~pwa.problem.FitProblem.exact_mc_cache`: :func:`pwa.fit.fit` checks the binned
    minimum against the exact sum there (:func:`pwa.fit.exact_check`)."""
    if problem.binned:
        raise FitError("the problem's normalisation is binned already")
    return replace(problem, mc_cache=binned_cache(problem.model, problem.mc_cache, n_bins),
                   exact_mc_cache=problem.mc_cache)


def approximation_error(model: Model, p: np.ndarray, exact: EventCache, binned: BinnedCache) -> float:
    """Relative difference of the normalisation N(p), binned against exact."""
    q = jnp.asarray(p)
    n_exact = float(model.normalisation(q, exact))
    return abs(float(model.normalisation(q, binned)) - n_exact) / abs(n_exact)


__all__ = ["BinnedCache", "DEFAULT_BINS", "approximation_error", "binned_cache", "eligibility", "pseudo_events",
           "with_binned_normalisation"]
