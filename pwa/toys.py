"""Toy data: accept-reject sampling of a model's intensity, then the detector.

The target density in the helicity variables x = (m, cos theta_X, phi_X,
cos theta_1, phi_1) is

    f(x) = I(x) q(m) p(m),

I times flat phase space (PHYSICS.md section 1). Two exact proposals:

``proposal="mass"`` (default, fast)
    An envelope h(m), piecewise constant on ``n_bins`` equal m bins, with
    h_b = margin * max over (m in bin b, all angles) of f. The per-bin maxima
    come from a stratified scan (``n_scan`` points spread evenly over the
    bins) refined by a batched, bounded stochastic hill climb from the best
    points of every bin. A proposal picks bin b with probability
    h_b * width_b / sum, m uniform in the bin and the four angles flat; it is
    kept with probability f(x) / h_b. Because h >= f everywhere the kept
    events follow f exactly; the narrow peaks of the lineshapes no longer
    cost proposals (only the angular variation does).

``proposal="flat"`` (the original generator)
    Flat phase-space proposals (``fastsim.events.PhaseSpace``) kept with
    probability I(x) / I_max, I_max = margin * the largest intensity found by
    a flat scan and local L-BFGS-B refinement.

``proposal="phase-space"`` (any reaction; the only one for reactions other
    than J/psi -> gamma P P)
    Generator-level events of :func:`pwa.fractions.generator_events` (flat
    n-body phase space, with Breit-Wigner proposals and weights w for narrow
    resonances such as the phi of psi(2S) -> phi K+ K-), kept with
    probability I(x) w(x) / (margin * the largest I w of a scan); an event
    above that bound among the first proposals restarts the generation with
    a raised bound.

Either way an event above its envelope would bias the sample, so
generation stops with :class:`~pwa.errors.GenerationError` if one appears.
Kept events then pass through the toy detector until n are accepted. The
numpy Generator seeded with ``seed`` drives envelope search and generation,
so a seed gives the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from fastsim.events import Detector, Events, PhaseSpace
from fastsim.events.mc import MIN_ACCEPTANCE, LowAcceptanceError

from .amplitude import Model, require_x64
from .errors import GenerationError

DEFAULT_MARGIN = 1.25
DEFAULT_CHUNK = 100_000
DEFAULT_BINS = 400
PROPOSALS = ("mass", "flat", "phase-space")
DEFAULT_SCAN = 500_000
#: Phase-space toys: proposals whose events are held back (see :func:`_iter_phase_space_toys`).
DEFAULT_HOLD = 2_000_000
#: A sample of at most this many events is held back whole (an event above the bound
#: anywhere restarts it; memory about 128 bytes per four-body event).
DEFAULT_HOLD_EVENTS = 2_000_000
MAX_RESTARTS = 5
#: Toys (kept by accept-reject) through the detector after which an acceptance below
#: ``MIN_ACCEPTANCE`` (none passed, at this point) stops the generation: a card to check, found in seconds.
DETECTOR_CHECK_AFTER = 100_000


@lru_cache(maxsize=8)
def _compiled_intensity(model: Model) -> Callable:
    """One jitted intensity per model, so envelope search and generation share its compilation."""
    return jax.jit(model.intensity)


def _intensity_function(model: Model, p: np.ndarray, block: int = 2048) -> Callable[[np.ndarray], np.ndarray]:
    """I at free parameters p as a function of helicity variables (n, 5) -> (n,).

    Evaluated in blocks of a fixed size (the last one padded) so that the
    intensity compiles once, whatever the sizes of scan, refinement and chunks.
    """
    intensity = _compiled_intensity(model)
    pj = jnp.asarray(p, dtype=jnp.float64)
    filler = np.array([0.5 * (model.reaction.m_min + model.reaction.m_max), 0.0, 0.0, 0.0, 0.0])

    def evaluate(hv: np.ndarray) -> np.ndarray:
        n = len(hv)
        padded = np.concatenate([hv, np.broadcast_to(filler, (-n % block, 5))])
        out = np.empty(len(padded))
        for start in range(0, len(padded), block):
            ev = Events.from_helicity_variables(padded[start:start + block], model.reaction)
            # Lineshapes are evaluated inside the one compiled intensity: folding them into
            # the cache would compile a lineshape program on every call (~0.5 s each).
            out[start:start + block] = np.asarray(intensity(pj, model.precompute(ev, fold_lineshapes=False)))
        return out[:n]

    return evaluate


def _momentum_intensity(model: Model, p: np.ndarray, block: int = 8192) -> Callable[[np.ndarray], np.ndarray]:
    """I at free parameters p as a function of four-momenta (n, n_final, 4) -> (n,), in fixed-size
    blocks (the last one padded with copies of the first event) so that it compiles once."""
    intensity = _compiled_intensity(model)
    pj = jnp.asarray(p, dtype=jnp.float64)

    def evaluate(momenta: np.ndarray) -> np.ndarray:
        n = len(momenta)
        padded = np.concatenate([momenta, np.broadcast_to(momenta[:1], (-n % block,) + momenta.shape[1:])])
        out = np.empty(len(padded))
        for start in range(0, len(padded), block):
            ev = Events(padded[start:start + block], None, reaction=model.reaction)
            out[start:start + block] = np.asarray(intensity(pj, model.precompute(ev, fold_lineshapes=False)))
        return out[:n]

    return evaluate


def _flat_angles(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4) cos theta_X, phi_X, cos theta_1, phi_1, uniform."""
    u = rng.uniform(size=(n, 4))
    return np.stack([2.0 * u[:, 0] - 1.0, np.pi * (2.0 * u[:, 1] - 1.0),
                     2.0 * u[:, 2] - 1.0, np.pi * (2.0 * u[:, 3] - 1.0)], axis=-1)


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
    values = _intensity_function(model, p)(hv)
    evaluate = _intensity_function(model, p, block=16)  # a point and its 10 neighbours per call
    best = float(values.max())
    eps = 1e-9
    box = np.array([(reaction.m_min + eps, reaction.m_max - eps), (-1.0, 1.0), (-np.pi, np.pi), (-1.0, 1.0),
                    (-np.pi, np.pi)])

    def negative_with_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        # Central differences, clipped to the box, all in one batched call.
        h = 1e-6 * np.array([reaction.m_max - reaction.m_min, 2.0, 2.0 * np.pi, 2.0, 2.0 * np.pi])
        pts = np.concatenate([x[None, :], x + np.diag(h), x - np.diag(h)])
        pts = np.clip(pts, box[:, 0], box[:, 1])
        v = evaluate(pts)
        step = pts[1:6].diagonal() - pts[6:11].diagonal()
        return -float(v[0]), -(v[1:6] - v[6:11]) / step

    for i in np.argsort(values)[-n_refine:]:
        res = optimize.minimize(negative_with_gradient, hv[i], jac=True, method="L-BFGS-B", bounds=box)
        best = max(best, -float(res.fun), float(evaluate(np.clip(res.x, box[:, 0], box[:, 1])[None, :])[0]))
    return best


@dataclass(frozen=True, eq=False)
class MassEnvelope:
    """Piecewise-constant upper bound h(m) of f(x) = I(x) q(m) p(m) over the angles.

    Attributes:
        edges: (n_bins + 1,) m bin edges (GeV), equal widths.
        heights: (n_bins,) largest f found in each bin (no margin).
        i_max: largest intensity I met during the search (for reports).
        margin: safety factor applied to ``heights`` when sampling.
    """

    edges: np.ndarray
    heights: np.ndarray
    i_max: float
    margin: float

    @property
    def n_bins(self) -> int:
        return self.heights.size

    @property
    def bound(self) -> np.ndarray:
        """(n_bins,) the envelope h_b = margin * heights."""
        return self.margin * self.heights

    @property
    def bin_probabilities(self) -> np.ndarray:
        """(n_bins,) probability of proposing in each bin, proportional to h_b * width_b."""
        w = self.bound * np.diff(self.edges)
        return w / w.sum()

    def propose(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(n, 5) helicity variables from the envelope and their (n,) bin indices."""
        cdf = np.cumsum(self.bin_probabilities)
        b = np.minimum(np.searchsorted(cdf, rng.uniform(size=n) * cdf[-1], side="right"), self.n_bins - 1)
        lo, hi = self.edges[b], self.edges[b + 1]
        m = lo + (hi - lo) * rng.uniform(size=n)
        return np.concatenate([m[:, None], _flat_angles(n, rng)], axis=1), b


def estimate_mass_envelope(model: Model, p: np.ndarray, *, n_bins: int = DEFAULT_BINS,
                           n_scan: int = 50_000, n_keep: int = 4, n_iter: int = 40,
                           n_shared: int = 64, margin: float = DEFAULT_MARGIN,
                           seed: int = 0) -> MassEnvelope:
    """Per-m-bin maxima of f(x) = I(x) q(m) p(m) over the angles, by scan and refinement.

    1. Scan: ``n_scan // n_bins`` points in every bin (m uniform in the bin,
       angles flat).
    2. Climb: the ``n_keep`` best points of every bin climb together, a
       batched (1+1) evolution strategy: each iteration moves every point by
       a Gaussian step (m in units of the bin width and clipped to the bin,
       cosines clipped to [-1, 1], azimuths wrapped) and keeps the move if f
       grows; each point's step follows the 1/5 success rule. Every fifth
       iteration a point tries instead the angles of the best point of a
       neighbouring bin (f is smooth in m, so a better basin found next door
       is likely better here too).
    3. Share: the angles of up to ``n_shared`` bins' best points are tried in
       every bin (at that bin's best m); where one beats a bin's worst
       climber it replaces it, and all climb ``n_iter // 2`` more iterations.
       This carries a basin found anywhere to bins whose own climbers missed it.

    The angular maxima have several local basins, so the result is an
    estimate, not a bound: the caller multiplies it by a margin and checks
    every proposal against it.

    Args:
        model: the model.
        p: (n_free,) free parameters.
        n_bins: equal-width m bins over the kinematic range.
        n_scan: scan points (at least 64 per bin are used).
        n_keep: best points per bin refined.
        n_iter: iterations of the first climb.
        n_shared: angle sets shared between bins in step 3.
        margin: safety factor stored with the envelope (> 1).
        seed: seed of scan and refinement.
    """
    require_x64()
    if n_bins < 1:
        raise ValueError(f"need at least one m bin, got {n_bins}")
    rng = np.random.default_rng(seed)
    reaction = model.reaction
    space = PhaseSpace(reaction)
    evaluate = _intensity_function(model, p)
    edges = np.linspace(reaction.m_min, reaction.m_max, n_bins + 1)
    width = np.diff(edges)
    i_max = 0.0

    def density(hv: np.ndarray) -> np.ndarray:
        nonlocal i_max
        i = evaluate(hv)
        i_max = max(i_max, float(i.max()))
        return i * space.unnormalised_m_density(hv[:, 0])

    # Random points plus a coarse grid that includes the bin's corners: the Wigner
    # functions have their extrema at cos = 0, +-1 (at cos theta_1 = +-1 only
    # lambda_R = 0 survives), and maxima of R0 sit there in many bins.
    corners = np.array(np.meshgrid([0.0, 0.5, 1.0], [-1.0, 0.0, 1.0], [0.0], [-1.0, 0.0, 1.0],
                                   [-np.pi, -0.5 * np.pi, 0.0, 0.5 * np.pi], indexing="ij")).reshape(5, -1).T
    n_random = max(64, n_scan // n_bins, n_keep)
    per_bin = n_random + len(corners)
    b = np.repeat(np.arange(n_bins), per_bin)
    hv = np.concatenate([(edges[b] + width[b] * rng.uniform(size=b.size))[:, None],
                         _flat_angles(b.size, rng)], axis=1)
    hv = hv.reshape(n_bins, per_bin, 5)
    hv[:, n_random:, 1:] = corners[None, :, 1:]
    hv[:, n_random:, 0] = edges[:-1, None] + width[:, None] * corners[None, :, 0]
    hv = hv.reshape(-1, 5)
    f = density(hv).reshape(n_bins, per_bin)
    heights = f.max(axis=1)
    top = np.argsort(f, axis=1)[:, -n_keep:]
    idx = (np.arange(n_bins)[:, None] * per_bin + top).ravel()
    x, fx, bx = hv[idx], f.ravel()[idx], b[idx]
    lo, hi = edges[bx], edges[bx + 1]
    scale = np.array([1.0, 2.0, 2.0 * np.pi, 2.0, 2.0 * np.pi])  # ranges (m in bin widths)
    sigma = np.full(len(x), 0.1)

    def best_per_bin() -> tuple[np.ndarray, np.ndarray]:
        k = np.argmax(fx.reshape(n_bins, n_keep), axis=1)
        j = np.arange(n_bins) * n_keep + k
        return x[j], fx[j]

    def climb(n: int) -> None:
        nonlocal sigma
        for it in range(n):
            exchange = it % 5 == 4
            if exchange:
                best, _ = best_per_bin()
                y = x.copy()
                y[:, 1:] = best[np.clip(bx + rng.choice([-1, 1], size=len(x)), 0, n_bins - 1), 1:]
            else:
                y = x + rng.normal(size=x.shape) * sigma[:, None] * scale
                y[:, 0] = np.clip(x[:, 0] + (y[:, 0] - x[:, 0]) * width[bx], lo, hi)
                y[:, [1, 3]] = np.clip(y[:, [1, 3]], -1.0, 1.0)
                y[:, [2, 4]] = (y[:, [2, 4]] + np.pi) % (2.0 * np.pi) - np.pi
            fy = density(y)
            better = fy > fx
            x[better], fx[better] = y[better], fy[better]
            if not exchange:
                sigma = np.clip(np.where(better, 2.0 * sigma, 0.84 * sigma), 1e-7, 0.5)

    climb(n_iter)
    best, _ = best_per_bin()
    shared = best[rng.permutation(n_bins)[:n_shared], 1:]
    trial = np.concatenate([np.repeat(best[:, :1], len(shared), axis=0),
                            np.tile(shared, (n_bins, 1))], axis=1)
    ft = density(trial).reshape(n_bins, len(shared))
    k = np.argmax(ft, axis=1)
    worst = np.arange(n_bins) * n_keep + np.argmin(fx.reshape(n_bins, n_keep), axis=1)
    replace = ft[np.arange(n_bins), k] > fx[worst]
    j = worst[replace]
    x[j] = trial.reshape(n_bins, len(shared), 5)[np.arange(n_bins), k][replace]
    fx[j] = ft[np.arange(n_bins), k][replace]
    sigma[:] = 0.02
    climb(n_iter // 2)
    np.maximum.at(heights, bx, fx)
    if not np.all(np.isfinite(heights)) or heights.max() <= 0:
        raise GenerationError("the intensity is zero or not finite over phase space: check the model")
    # A bin where nothing was found above zero could still hold intensity the
    # scan missed; give it a small floor so proposals there are tested too.
    heights = np.maximum(heights, 1e-9 * heights.max())
    return MassEnvelope(edges, heights, i_max, float(margin))


def iter_toys(model: Model, n: int, detector: Detector, *, p: np.ndarray | None = None, seed: int = 0,
              margin: float = DEFAULT_MARGIN, chunk_size: int = DEFAULT_CHUNK,
              stats: dict | None = None, proposal: str = "mass",
              n_bins: int = DEFAULT_BINS, envelope: MassEnvelope | None = None) -> Iterator[Events]:
    """Yield chunks of accepted toy events distributed as the model's intensity, n in all.

    Args:
        model: the model.
        n: accepted (detector-level) events wanted.
        detector: detector response (``Detector(None)`` for generator level).
        p: free parameters (default: the card's values).
        seed: seed of the numpy Generator (envelope search and generation).
        margin: safety factor on the estimated maxima (> 1).
        chunk_size: proposals per chunk.
        stats: if given, updated with ``proposal``, ``i_max`` (largest
            intensity found, times the margin), ``n_proposed``, ``n_hit``
            (kept by accept-reject), ``n_accepted`` (yielded) and, for the
            mass envelope, ``n_bins``.
        proposal: ``"mass"`` (binned envelope in m, the default) or
            ``"flat"`` (flat phase space against one maximum); both are exact.
        n_bins: m bins of the mass envelope.
        envelope: a precomputed :func:`estimate_mass_envelope` for this model
            and p (its own margin is used), to skip the search when many toys
            share one model; only with ``proposal="mass"``.

    Raises:
        GenerationError: if an event's density exceeds its envelope.
    """
    require_x64()
    if n <= 0:
        raise ValueError(f"number of events must be positive, got {n}")
    if margin <= 1.0:
        raise ValueError(f"the safety margin must exceed 1, got {margin}")
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r}; choose one of {', '.join(PROPOSALS)}")
    p = model.initial_values() if p is None else np.asarray(p, dtype=np.float64)
    if not model.reaction.is_radiative_pair or proposal == "phase-space":
        if envelope is not None:
            raise ValueError("a precomputed envelope needs proposal='mass'")
        yield from _iter_phase_space_toys(model, n, detector, p, seed, margin, chunk_size, stats)
        return
    rng = np.random.default_rng(seed)
    space = PhaseSpace(model.reaction)
    evaluate = _intensity_function(model, p)
    if envelope is not None and proposal != "mass":
        raise ValueError("a precomputed envelope needs proposal='mass'")
    if proposal == "mass":
        search_seed = int(rng.integers(2**31))  # drawn even when unused: same stream either way
        if envelope is None:
            envelope = estimate_mass_envelope(model, p, n_bins=n_bins, margin=margin, seed=search_seed)
        margin = envelope.margin
        i_max = margin * envelope.i_max
        bound = envelope.bound
    else:
        i_max = margin * estimate_maximum(model, p, seed=int(rng.integers(2**31)))
    if stats is not None:
        stats.update(proposal=proposal, i_max=i_max)
        if proposal == "mass":
            stats["n_bins"] = envelope.n_bins

    def draw() -> Events:
        if proposal == "mass":
            hv, b = envelope.propose(chunk_size, rng)
            values = evaluate(hv) * space.unnormalised_m_density(hv[:, 0])
            ceiling = bound[b]
        else:
            hv = space.sample(chunk_size, rng)
            values = evaluate(hv)
            ceiling = np.full(chunk_size, i_max)
        ratio = values / ceiling
        if ratio.max() > 1.0:
            j = int(np.argmax(ratio))
            raise GenerationError(
                f"an event (m = {hv[j, 0]:.6g} GeV) has density {values[j]:.6g} above its accept-reject "
                f"bound {ceiling[j]:.6g} (estimate x margin {margin}, {proposal} proposal); the sample "
                "would be biased: raise the margin")
        keep = rng.uniform(size=chunk_size) < ratio
        return Events.from_helicity_variables(hv[keep], model.reaction)

    yield from _accepted(n, chunk_size, draw, detector, rng, stats)


def _accepted(n: int, chunk_size: int, draw: Callable[[], Events], detector: Detector, rng: np.random.Generator,
              stats: dict | None) -> Iterator[Events]:
    """Chunks of ``draw()``'s kept events through the detector until n are accepted (n in all)."""
    proposed = hit = passed = accepted = 0
    if stats is not None:
        stats.update(n_proposed=0, n_hit=0, n_accepted=0)
    while accepted < n:
        gen = draw()
        acc = detector.apply(gen, rng)
        proposed += chunk_size
        hit += len(gen)
        passed += len(acc)
        if hit >= DETECTOR_CHECK_AFTER and passed < max(1.0, MIN_ACCEPTANCE * hit):
            raise LowAcceptanceError(
                f"{detector.card.source if detector.card is not None else 'the generator level'}: {passed} of "
                f"{hit} generated {gen.reaction} toy events passed (acceptance x efficiency below "
                f"{max(1.0 / hit, MIN_ACCEPTANCE):.2g}); {n} events would need more than "
                f"{n * hit / max(passed, 1):.3g} toys: check the detector card's cuts")
        if len(acc) > n - accepted:
            acc = acc.subset(slice(0, n - accepted))
        accepted += len(acc)
        if stats is not None:
            stats.update(n_proposed=proposed, n_hit=hit, n_accepted=accepted)
        if len(acc):
            yield acc
        if accepted == 0 and proposed > 1000 * max(n, chunk_size):
            raise GenerationError("no event is accepted: check the model and the detector card")


class _AboveBound(Exception):
    """An event above the accept-reject bound (carries the value)."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


def _iter_phase_space_toys(model: Model, n: int, detector: Detector, p: np.ndarray, seed: int, margin: float,
                           chunk_size: int, stats: dict | None, n_scan: int = DEFAULT_SCAN,
                           hold: int = DEFAULT_HOLD, hold_events: int = DEFAULT_HOLD_EVENTS) -> Iterator[Events]:
    """Accept-reject on generator-level phase-space events of any reaction (module docstring).

    The bound is margin x the largest I w of ``n_scan`` scanned events. In
    eight dimensions with narrow peaks a scan can miss the maximum, so events
    are held back: an event above the bound discards them, raises the bound to
    margin x that event's value and starts again (at most :data:`MAX_RESTARTS`
    times). A sample of at most ``hold_events`` events is held back whole;
    a larger one for its first ``hold`` proposals, and past them an event above
    the bound is an error, as in the other proposals. (With weighted proposals
    I w has a long tail: on R0 one toy of 20,000 events met an event 7 % above
    the bound after 2.3 million proposals.)
    """
    from .fractions import generator_events

    rng = np.random.default_rng(seed)
    evaluate = _momentum_intensity(model, p)
    scan = generator_events(model, n_scan, rng)
    f_scan = evaluate(scan.momenta) * scan.weight_array
    if not np.all(np.isfinite(f_scan)) or f_scan.max() <= 0:
        raise GenerationError("the intensity is zero or not finite over phase space: check the model")
    ceiling = margin * float(f_scan.max())

    def draw() -> Events:
        gen = generator_events(model, chunk_size, rng)
        f = evaluate(gen.momenta) * gen.weight_array
        if f.max() > ceiling:
            raise _AboveBound(float(f.max()))
        keep = rng.uniform(size=len(gen)) < f / ceiling
        return Events(gen.momenta[keep], None, reaction=model.reaction)

    local: dict = {}
    for restart in range(MAX_RESTARTS + 1):
        held: list[Events] = []
        released = False
        try:
            for chunk in _accepted(n, chunk_size, draw, detector, rng, local):
                if released:
                    yield chunk
                    continue
                held.append(chunk)
                if (n > hold_events and local["n_proposed"] >= hold) or local["n_accepted"] >= n:
                    released = True
                    yield from held
            break
        except _AboveBound as exc:
            if released or restart == MAX_RESTARTS:
                raise GenerationError(
                    f"an event has intensity x weight {exc.value:.6g} above its accept-reject bound "
                    f"{ceiling:.6g} after {local.get('n_proposed', 0)} proposals ({restart} restarts with a "
                    f"raised bound); the sample would be biased: raise the margin (now {margin})") from None
            ceiling = margin * exc.value
        finally:
            if stats is not None:
                stats.update(local, proposal="phase-space", i_max=ceiling, restarts=restart)
