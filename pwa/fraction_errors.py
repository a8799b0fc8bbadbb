"""Fit-fraction errors in bounded memory.

Fractions are F(p) = g(p, M(p)) with M the per-term integrals over the
generator-level fraction sample (:meth:`pwa.amplitude.Model.term_integrals`)
and g the couplings' quadratic forms (:meth:`~pwa.amplitude.Model.fractions_from_integrals`).
Their errors are sigma^2 = J V J^T with the Jacobian J = dF/dp. Forward-mode
autodiff of F over the whole sample carries one tangent per free parameter
through every event's lineshapes and angular factors: with floating
lineshapes that is (n_par x n_events x n_terms x ...) at once, which killed a
38-parameter R0 fit at 24 GB. But M is a weighted mean, linear in the events,

    M = sum_c W_c M_c / sum_c W_c,     dM/dp = sum_c W_c dM_c/dp / sum_c W_c,

over chunks c (W_c a chunk's sum of weights), so dM/dp is accumulated chunk
by chunk (one compiled program for equal-size chunks, the last one padded
with zero weights), and

    J = dg/dp |_M + dg/dM . dM/dp

costs only (n_terms^2 x n_par) beyond one chunk's tangents. With fixed
lineshapes M is a stored matrix that does not depend on the lineshapes, and
the plain Jacobian is used.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .amplitude import Model
from .caches import Cache, EventCache
from .chunked import split_cache
from .optimize import fraction_summary, propagate_fractions
from .sharding import n_events

#: Generator-level events per chunk of the fraction Jacobian.
DEFAULT_CHUNK = 8192


def fraction_jacobian(model: Model, gen_cache: Cache, x: np.ndarray, *,
                      chunk_size: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(F (n_res, n_res), J (n_res^2, len(x))) at x, the Jacobian accumulated over chunks.

    Args:
        model: the model.
        gen_cache: its fraction cache (per-event: :func:`pwa.fractions.generator_cache`
            with floating lineshapes).
        x: the fit vector, the model's free parameters first; further entries (a floating
            background fraction) get zero columns.
        chunk_size: events per chunk.
    """
    x = np.asarray(x, dtype=np.float64)
    n = model.n_free
    q = jnp.asarray(x[:n])
    S, dS, W = None, None, 0.0
    fn = _chunk_integrals(model)
    for chunk in split_cache(gen_cache, chunk_size):
        chunk = jax.tree_util.tree_map(jnp.asarray, chunk)
        s, ds, w = fn(q, chunk)
        s, ds = np.asarray(s), np.asarray(ds)
        S, dS = (s, ds) if S is None else (S + s, dS + ds)
        W += float(w)
    M, dM = S / W, dS / W  # (nt, nt), (nt, nt, n)
    F, (Jq, JMr, JMi) = _fractions_and_partials(model)(q, jnp.asarray(M.real), jnp.asarray(M.imag))
    J = (np.asarray(Jq) + np.einsum("okl,klp->op", np.asarray(JMr), dM.real)
         + np.einsum("okl,klp->op", np.asarray(JMi), dM.imag))
    return np.asarray(F), np.concatenate([J, np.zeros((J.shape[0], x.size - n))], axis=1)


def propagate_model_fractions(model: Model, gen_cache: Cache, x: np.ndarray, covariance: np.ndarray, *,
                              chunk_size: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(F, errors of F, SF, error of SF) at x with the covariance of x, as
    :func:`pwa.optimize.propagate_fractions`, in memory bounded by one chunk.

    ``x`` holds the model's free parameters first; further entries (a floating
    background fraction) do not enter the fractions but their correlations do.
    """
    x = np.asarray(x, dtype=np.float64)
    n = model.n_free
    if not isinstance(gen_cache, EventCache) or gen_cache.normalisation_matrix is not None \
            or n_events(gen_cache) <= chunk_size:
        return propagate_fractions(lambda p: model.compiled_fit_fractions(p[:n], gen_cache), x, covariance)
    F, J = fraction_jacobian(model, gen_cache, x, chunk_size=chunk_size)
    return fraction_summary(F, J @ np.asarray(covariance) @ J.T)


@lru_cache(maxsize=8)
def _chunk_integrals(model: Model):
    """Jitted (W_c M_c, d(W_c M_c)/dq, W_c) of one chunk."""

    def weighted(q, chunk):
        return model.term_integrals(q, chunk) * jnp.sum(chunk.weights)

    def f(q, chunk):
        s = weighted(q, chunk)
        ds = jax.jacfwd(weighted)(q, chunk)
        return s, ds, jnp.sum(chunk.weights)

    return jax.jit(f)


@lru_cache(maxsize=8)
def _fractions_and_partials(model: Model):
    """Jitted F and its partial derivatives (dF/dq at fixed M, dF/dRe M, dF/dIm M), F flattened."""

    def g(q, m_re, m_im):
        return jnp.ravel(model.fractions_from_integrals(q, m_re + 1j * m_im))

    def f(q, m_re, m_im):
        F = model.fractions_from_integrals(q, m_re + 1j * m_im)
        return F, jax.jacfwd(g, argnums=(0, 1, 2))(q, m_re, m_im)

    return jax.jit(f)


__all__ = ["DEFAULT_CHUNK", "fraction_jacobian", "propagate_model_fractions"]
