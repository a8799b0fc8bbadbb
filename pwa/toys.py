"""Toy data: hit-or-miss sampling of a model's intensity, then the detector.

Proposals are exact flat phase-space events (``fastsim.events.PhaseSpace``);
an event is kept with probability I(x) / I_max. I_max is the largest
intensity found on a flat sample, refined by local maximisation from the
highest points, times a safety margin. An event above I_max would bias the
sample, so generation stops with :class:`~pwa.errors.GenerationError` if one
appears. Kept events then pass through the toy detector until n are accepted.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from fastsim.events import Detector, Events, PhaseSpace

from .amplitude import Model, require_x64
from .errors import GenerationError

DEFAULT_MARGIN = 1.25
DEFAULT_CHUNK = 100_000


def estimate_maximum(model: Model, p: np.ndarray, *, n_scan: int = 200_000, n_refine: int = 10,
                     seed: int = 0) -> float:
    """Largest intensity over phase space (no margin), found by scan and local refinement.

    Args:
        model: the model.
        p: (n_free,) free parameters.
        n_scan: flat events scanned.
        n_refine: highest scan points refined with L-BFGS-B in the helicity variables.
        seed: seed of the scan.
    """
    require_x64()
    rng = np.random.default_rng(seed)
    reaction = model.reaction
    hv = PhaseSpace(reaction).sample(n_scan, rng)
    intensity = jax.jit(model.intensity)
    pj = jnp.asarray(p, dtype=jnp.float64)
    values = np.asarray(intensity(pj, model.precompute(Events.from_helicity_variables(hv, reaction))))
    best = float(values.max())
    eps = 1e-9
    box = [(reaction.m_min + eps, reaction.m_max - eps), (-1.0, 1.0), (-np.pi, np.pi), (-1.0, 1.0),
           (-np.pi, np.pi)]

    def negative(x: np.ndarray) -> float:
        ev = Events.from_helicity_variables(x[None, :], reaction)
        return -float(intensity(pj, model.precompute(ev))[0])

    for i in np.argsort(values)[-n_refine:]:
        res = optimize.minimize(negative, hv[i], method="L-BFGS-B", bounds=box)
        best = max(best, -float(res.fun))
    return best


def iter_toys(model: Model, n: int, detector: Detector, *, p: np.ndarray | None = None, seed: int = 0,
              margin: float = DEFAULT_MARGIN, chunk_size: int = DEFAULT_CHUNK,
              stats: dict | None = None) -> Iterator[Events]:
    """Yield chunks of accepted toy events distributed as the model's intensity, n in all.

    Args:
        model: the model.
        n: accepted (detector-level) events wanted.
        detector: detector response (``Detector(None)`` for generator level).
        p: free parameters (default: the card's values).
        seed: seed of the numpy Generator (scan and generation).
        margin: safety factor on the estimated maximum (> 1).
        chunk_size: proposals per chunk.
        stats: if given, updated with ``i_max``, ``n_proposed``, ``n_hit``
            (kept by hit-or-miss), ``n_accepted`` (yielded).

    Raises:
        GenerationError: if an event's intensity exceeds the maximum.
    """
    require_x64()
    if n <= 0:
        raise ValueError(f"number of events must be positive, got {n}")
    if margin <= 1.0:
        raise ValueError(f"the safety margin must exceed 1, got {margin}")
    p = model.initial_values() if p is None else np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    i_max = margin * estimate_maximum(model, p, seed=int(rng.integers(2**31)))
    space = PhaseSpace(model.reaction)
    intensity = jax.jit(model.intensity)
    pj = jnp.asarray(p)
    proposed = hit = accepted = 0
    if stats is not None:
        stats.update(i_max=i_max, n_proposed=0, n_hit=0, n_accepted=0)
    while accepted < n:
        gen = Events.from_helicity_variables(space.sample(chunk_size, rng), model.reaction)
        values = np.asarray(intensity(pj, model.precompute(gen)))
        if values.max() > i_max:
            raise GenerationError(
                f"an event has intensity {values.max():.6g} above the hit-or-miss maximum {i_max:.6g} "
                f"(estimate x margin {margin}); the sample would be biased: raise the margin")
        keep = rng.uniform(0.0, i_max, chunk_size) < values
        acc = detector.apply(gen.subset(keep), rng)
        proposed += chunk_size
        hit += int(keep.sum())
        if len(acc) > n - accepted:
            acc = acc.subset(slice(0, n - accepted))
        accepted += len(acc)
        if stats is not None:
            stats.update(n_proposed=proposed, n_hit=hit, n_accepted=accepted)
        if len(acc):
            yield acc
        if accepted == 0 and proposed > 1000 * max(n, chunk_size):
            raise GenerationError("no event is accepted: check the model and the detector card")
