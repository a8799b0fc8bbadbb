"""Conventional Monte Carlo: flat phase space through the toy detector.

Events are generated in chunks until the requested number has been accepted,
so memory stays bounded by the chunk size when the output is streamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .detector import Detector
from .particles import JPSI_GAMMA_KK, Reaction
from .phasespace import PhaseSpace
from .sample import Events

DEFAULT_CHUNK = 200_000


def iter_conventional_mc(n: int, detector: Detector, *, reaction: Reaction = JPSI_GAMMA_KK,
                         seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
                         stats: dict | None = None) -> Iterator[Events]:
    """Yield chunks of accepted detector-level phase-space events, n in all.

    Args:
        n: number of accepted events wanted.
        detector: detector response (``Detector(None)`` for generator level).
        reaction: the reaction.
        seed: seed of the numpy Generator; the same seed gives the same events.
        chunk_size: generated events per chunk.
        stats: if given, updated with ``n_generated`` and ``n_passed`` (events
            that passed the detector, for the acceptance estimate) and
            ``n_accepted`` (events yielded, at most n).
    """
    if n <= 0:
        raise ValueError(f"number of events must be positive, got {n}")
    rng = np.random.default_rng(seed)
    space = PhaseSpace(reaction)
    accepted = generated = passed = 0
    while accepted < n:
        hv = space.sample(chunk_size, rng)
        gen = Events.from_helicity_variables(hv, reaction)
        acc = detector.apply(gen, rng)
        generated += chunk_size
        passed += len(acc)
        if len(acc) > n - accepted:
            acc = acc.subset(slice(0, n - accepted))
        accepted += len(acc)
        if stats is not None:
            stats.update(n_generated=generated, n_passed=passed, n_accepted=accepted)
        if len(acc):
            yield acc
        if generated > 1000 * max(n, chunk_size) and accepted == 0:
            raise RuntimeError("the detector accepts no events: check the detector card")


def conventional_mc(n: int, detector: Detector, *, reaction: Reaction = JPSI_GAMMA_KK,
                    seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
                    progress: Callable[[int], None] | None = None) -> Events:
    """All n accepted events in memory (see :func:`iter_conventional_mc`)."""
    parts = []
    for chunk in iter_conventional_mc(n, detector, reaction=reaction, seed=seed, chunk_size=chunk_size):
        parts.append(chunk)
        if progress is not None:
            progress(len(chunk))
    return Events.concatenate(parts)
