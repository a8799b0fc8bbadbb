"""Conventional Monte Carlo: flat phase space through the toy detector, for any reaction.

Events are generated in chunks until the requested number has been accepted,
so memory stays bounded by the chunk size when the output is streamed. The
generator is :class:`~fastsim.events.phasespace.PhaseSpace` (helicity
variables) for parent -> gamma P1 P2, as in the first version, and
:class:`~fastsim.events.nbody.NBodyPhaseSpace` (the tree variables of the
reaction's first chain) for every other reaction.

A reaction with a narrow resonance (the phi of psi(2S) -> phi K+ K-, 4 MeV
wide) puts few flat events under its peak, so its normalisation integral
needs a huge flat sample. ``proposals`` then draws that node's mass from a
Breit-Wigner and gives every event the weight flat / proposal density
(:meth:`~fastsim.events.nbody.NBodyPhaseSpace.sample_weighted`, mean 1): the
sample is flat phase space in expectation, and it is the weights v_j of the
normalisation sum (PHYSICS.md section 4).

A detector that accepts (almost) nothing stops the generation with
:class:`LowAcceptanceError` once :data:`ACCEPTANCE_CHECK_AFTER` events have
been generated and fewer than :data:`MIN_ACCEPTANCE` of them passed (fewer
than 10 in 10^6): at that rate n events would need more than 10^5 n
proposals, which is a wrong card or reaction, not a slow run. The check
costs about a second of generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from .detector import Detector, DetectorCardError
from .nbody import NBodyPhaseSpace
from .particles import Reaction
from .phasespace import PhaseSpace
from .sample import Events

DEFAULT_CHUNK = 200_000

#: Generated events after which the accepted fraction is checked.
ACCEPTANCE_CHECK_AFTER = 1_000_000
#: Smallest accepted fraction (passed / generated) allowed past that point.
MIN_ACCEPTANCE = 1e-5


class LowAcceptanceError(DetectorCardError):
    """The detector accepts (almost) no event of the reaction: a card or reaction to check."""


def _flat_events(reaction: Reaction, proposals: Mapping[str, tuple[float, float]] | None = None
                 ) -> Callable[[int, np.random.Generator], Events]:
    """Generator of n flat phase-space events of the reaction (weighted with proposals)."""
    if proposals:
        nbody = NBodyPhaseSpace(reaction)

        def weighted(n: int, rng: np.random.Generator) -> Events:
            momenta, weights = nbody.sample_weighted(n, rng, proposals)
            return Events(momenta, weights, reaction=reaction)

        return weighted
    if reaction.is_radiative_pair:
        space = PhaseSpace(reaction)
        return lambda n, rng: Events.from_helicity_variables(space.sample(n, rng), reaction)
    nbody = NBodyPhaseSpace(reaction)
    return lambda n, rng: Events(nbody.sample(n, rng), None, reaction=reaction)


def iter_conventional_mc(n: int, detector: Detector, *, reaction: Reaction,
                         seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
                         stats: dict | None = None,
                         proposals: Mapping[str, tuple[float, float]] | None = None) -> Iterator[Events]:
    """Yield chunks of accepted detector-level phase-space events, n in all.

    Args:
        n: number of accepted events wanted.
        detector: detector response (``Detector(None)`` for generator level).
        reaction: the reaction (parent, final state, chains).
        seed: seed of the numpy Generator; the same seed gives the same events.
        chunk_size: generated events per chunk.
        stats: if given, updated with ``n_generated`` and ``n_passed`` (events
            that passed the detector, for the acceptance estimate) and
            ``n_accepted`` (events yielded, at most n).
        proposals: node label of the reaction's first chain -> (mass, width)
            of a Breit-Wigner proposal (module docstring); the events are then
            weighted. None: unweighted flat events.

    Raises:
        DetectorCardError: the card has no rules for a final-state particle.
        LowAcceptanceError: after :data:`ACCEPTANCE_CHECK_AFTER` generated
            events fewer than a fraction :data:`MIN_ACCEPTANCE` passed.
    """
    if n <= 0:
        raise ValueError(f"number of events must be positive, got {n}")
    detector.check(reaction)
    rng = np.random.default_rng(seed)
    flat = _flat_events(reaction, proposals)
    accepted = generated = passed = 0
    while accepted < n:
        acc = detector.apply(flat(chunk_size, rng), rng)
        generated += chunk_size
        passed += len(acc)
        if generated >= ACCEPTANCE_CHECK_AFTER and passed < MIN_ACCEPTANCE * generated:
            where = "the generator level" if detector.card is None else detector.card.source
            raise LowAcceptanceError(
                f"{where}: {passed} of {generated} generated {reaction} events "
                f"passed (acceptance x efficiency below {MIN_ACCEPTANCE:g}); {n} events would need "
                f"more than {n / MIN_ACCEPTANCE:.3g} proposals: check the detector card's cuts")
        if len(acc) > n - accepted:
            acc = acc.subset(slice(0, n - accepted))
        accepted += len(acc)
        if stats is not None:
            stats.update(n_generated=generated, n_passed=passed, n_accepted=accepted)
        if len(acc):
            yield acc


def conventional_mc(n: int, detector: Detector, *, reaction: Reaction,
                    seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
                    progress: Callable[[int], None] | None = None,
                    proposals: Mapping[str, tuple[float, float]] | None = None) -> Events:
    """All n accepted events in memory (see :func:`iter_conventional_mc`)."""
    parts = []
    for chunk in iter_conventional_mc(n, detector, reaction=reaction, seed=seed, chunk_size=chunk_size,
                                      proposals=proposals):
        parts.append(chunk)
        if progress is not None:
            progress(len(chunk))
    return Events.concatenate(parts)
