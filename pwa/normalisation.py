"""Normalisation-matrix caches: accumulated over event chunks, and combined linearly.

For fixed lineshapes the MC enters the NLL only through the weighted mean M
of per-term products (:meth:`pwa.amplitude.Model.term_integrals`); M is
linear in the events and in the sample's density, so it can be built chunk
by chunk for any MC size and combined across samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from fastsim.events import Events

from .amplitude import Model
from .caches import Cache, NormalisationCache
from .errors import FitError


def normalisation_cache(model: Model, chunks: Iterable[Events]) -> tuple[NormalisationCache, int]:
    """Normalisation-matrix-only MC cache accumulated over event chunks.

    For fixed lineshapes the MC enters the NLL only through the weighted mean
    M of per-term products (:meth:`Model.term_integrals`), which is linear in
    the events: memory stays bounded by one chunk for any MC size. The cache
    serves :meth:`Model.nll` / :meth:`Model.normalisation`, not per-event
    quantities (plots).

    Returns:
        (:class:`~pwa.caches.NormalisationCache` with ``norm_re``, ``norm_im``,
        ``weights`` (the total weight, shape (1,)), number of events).
    """
    if model.floating_lineshapes:
        raise FitError("a normalisation-matrix cache needs fixed lineshapes")
    total = np.zeros((model.n_terms, model.n_terms), dtype=np.complex128)
    w_sum = 0.0
    n = 0
    for chunk in chunks:
        c = model.precompute(chunk, normalisation_matrix=True)
        w = float(chunk.weight_array.sum())
        total += (np.asarray(c.norm_re) + 1j * np.asarray(c.norm_im)) * w
        w_sum += w
        n += len(chunk)
    if n == 0 or w_sum <= 0:
        raise FitError("the normalisation sample is empty or its weights sum to zero")
    M = total / w_sum
    return NormalisationCache(norm_re=jnp.asarray(M.real), norm_im=jnp.asarray(M.imag),
                              weights=jnp.asarray([w_sum])), n


def combine_normalisation_caches(terms: Sequence[tuple[float, Cache]]) -> NormalisationCache:
    """Linear combination sum_k a_k M_k of normalisation-matrix caches.

    The normalisation integral is linear in the density of the MC sample,
    so a combination of samples with coefficients summing to one is again an
    estimate of it; e.g. the bootstrap bias correction of a generator,
    2 M_flow - M_replica (:func:`fastsim.training.bootstrap_replicas`). The
    total weight of the result is that of the first cache.

    Args:
        terms: (coefficient, cache with a normalisation matrix) pairs, e.g. of
            :func:`normalisation_cache`.

    Raises:
        FitError: no terms, coefficients not summing to one, or a cache
            without a normalisation matrix.
    """
    if not terms:
        raise FitError("no normalisation caches to combine")
    total = sum(float(a) for a, _ in terms)
    if not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=1e-12):
        raise FitError(f"normalisation-cache coefficients must sum to 1, got {total}")
    M = 0.0
    for a, c in terms:
        if c.norm_re is None or c.norm_im is None:
            raise FitError("combine_normalisation_caches needs normalisation-matrix caches (norm_re, norm_im)")
        M = M + float(a) * (np.asarray(c.norm_re) + 1j * np.asarray(c.norm_im))
    return NormalisationCache(norm_re=jnp.asarray(M.real), norm_im=jnp.asarray(M.imag),
                              weights=terms[0][1].weights)
