"""Fit fractions over generator-level flat phase space (PHYSICS.md section 4).

The per-term integrals M_kl (see :meth:`pwa.amplitude.Model.term_integrals`)
are linear in the events, so they are accumulated over chunks of exact flat
phase-space events: the memory stays bounded for any number of MC events.
Fractions, interference fractions and SF then follow from M and the couplings.

Any reaction: the events come from :class:`fastsim.events.nbody.NBodyPhaseSpace`
(J/psi -> gamma P P keeps its exact helicity-variable sampler, so that every
committed result stays reproducible). A resonance that sits alone at a node
of the sampler's chain and is narrower than :data:`NARROW` of that node's
mass range (the phi of psi(2S) -> phi K+ K-: 4 MeV in 1.7 GeV) gets a
Breit-Wigner proposal, and the events carry the weights flat / proposal, so
that the narrow peak is not left to a few flat events. The MC error of every
fraction is estimated with the delta method from the same events
(:attr:`FitFractions.errors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events, PhaseSpace, Reaction
from fastsim.events.nbody import NBodyPhaseSpace

from .amplitude import Model, require_x64
from .caches import Cache, NormalisationCache

DEFAULT_N_MC = 1_000_000
DEFAULT_CHUNK = 100_000

#: A lone resonance narrower than this share of its node's mass range gets a BW proposal.
NARROW = 0.01


def integration_proposals(model: Model) -> dict[str, tuple[float, float]]:
    """{node label: (mass, width)} of the narrow resonances worth a Breit-Wigner proposal.

    Only nodes of the reaction's first chain (the sampler's) that hold a single
    resonance qualify: that resonance multiplies every term of the chain.
    """
    reaction = model.reaction
    if reaction.is_radiative_pair:
        return {}
    space = NBodyPhaseSpace(reaction)
    out = {}
    for label in reaction.chains[0].inner_labels:
        here = [r for r, res in zip(model.card.resonances, model.amplitude.resonances) if res.node == label]
        if len(here) != 1 or not {"mass", "width"} <= set(here[0].lineshape_parameters):
            continue
        lo, hi = space.mass_limits[label]
        mass, width = here[0].lineshape["mass"], here[0].lineshape["width"]
        if width < NARROW * (hi - lo) and lo < mass < hi:
            out[label] = (mass, width)
    return out


def generator_events(model: Model, n: int, rng: np.random.Generator) -> Events:
    """n generator-level events of the model's reaction, flat in phase space (weighted where
    :func:`integration_proposals` gives narrow-resonance proposals)."""
    reaction = model.reaction
    if reaction.is_radiative_pair:
        return Events.from_helicity_variables(PhaseSpace(reaction).sample(n, rng), reaction)
    space = NBodyPhaseSpace(reaction)
    proposals = integration_proposals(model)
    if proposals:
        momenta, weights = space.sample_weighted(n, rng, proposals)
        return Events(momenta, weights, reaction=reaction)
    return Events(space.sample(n, rng), None, reaction=reaction)


def phase_space_quadrature(reaction: Reaction, *, n_panels: int = 120,
                           order: int = 8) -> Events:
    """Weighted events whose weighted mean is the flat phase-space average.

    A deterministic alternative to generator-level MC for the per-term
    integrals (no MC error; used to solve for the R0 couplings and to check
    the MC fractions):

    * m: the substitution m = m_min + (m_max - m_min) t^2 removes the square
      root of the two-body momentum at threshold; composite Gauss-Legendre in
      t with ``n_panels`` panels of ``order`` nodes, weighted by q(m) p(m) dm/dt;
    * cos theta_X: 3-node Gauss-Legendre, exact because sum_M |d^1|^2 products
      are polynomials of degree <= 2;
    * phi_X: one node, exact because A_{M,lg} depends on phi_X only through
      the common phase exp(i M phi_X), which cancels in every |.|^2 and in
      every per-term product of the same spin state;
    * cos theta_1: 8-node Gauss-Legendre, exact for the d^J d^J' products
      (polynomials of degree <= 2 * 4 = 8 in cos theta_1);
    * phi_1: 8 equally spaced nodes, exact for exp(i n phi_1), |n| <= 4 < 8.

    With the defaults the R0 fractions are converged to better than 1e-6
    (relative; doubling and quadrupling the panels changes nothing at that level).

    Returns:
        Events of size n_panels * order * 3 * 8 with normalised weights (sum 1).
    """
    space = PhaseSpace(reaction)
    lo, hi = reaction.m_min, reaction.m_max
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, 1.0, n_panels + 1)
    t = (0.5 * (edges[1:] - edges[:-1])[:, None] * (x[None, :] + 1.0) + edges[:-1, None]).ravel()
    wt = (0.5 * (edges[1:] - edges[:-1])[:, None] * w[None, :]).ravel()
    m = lo + (hi - lo) * t**2
    wm = wt * 2.0 * (hi - lo) * t * space.unnormalised_m_density(m)
    cx, wcx = np.polynomial.legendre.leggauss(3)
    c1, wc1 = np.polynomial.legendre.leggauss(8)
    phi1 = np.pi * (2.0 * (np.arange(8) + 0.5) / 8.0 - 1.0)
    grids = np.meshgrid(np.arange(m.size), np.arange(3), np.arange(8), np.arange(8), indexing="ij")
    im, ix, i1, ip = (g.ravel() for g in grids)
    hv = np.stack([m[im], cx[ix], np.full(im.size, 0.3), c1[i1], phi1[ip]], axis=-1)
    weights = wm[im] * wcx[ix] * wc1[i1]
    keep = weights > 0  # t = 0 never occurs with Gauss nodes; guards m exactly at threshold
    return Events.from_helicity_variables(hv[keep], reaction, weights[keep] / weights[keep].sum())


def _moments(model: Model):
    """Weighted sums of one chunk for the fractions and their MC errors (jitted per model)."""
    P = np.asarray([i for i, _ in model.terms])[None, :] == np.arange(len(model.resonance_names))[:, None]

    def moments(p, cache):
        c = model.couplings(p)
        G = model.term_factors(p, cache)  # (K, S, n)
        w = cache.weights
        a = jnp.sum(jnp.abs(jnp.einsum("rk,ksn->rsn", jnp.where(jnp.asarray(P), c[None, :], 0.0), G)) ** 2,
                    axis=1)  # (n_res, n)
        b = jnp.sum(jnp.abs(jnp.einsum("k,ksn->sn", c, G)) ** 2, axis=0)
        a = jnp.concatenate([a, jnp.sum(a, axis=0, keepdims=True)])  # last row: the sum of fractions
        M = jnp.einsum("ksn,lsn,n->kl", jnp.conj(G), G, w)
        return {"M": M, "w": jnp.sum(w), "w2": jnp.sum(w * w), "wa": a @ w, "wb": jnp.sum(w * b),
                "aa": (a * a) @ (w * w), "ab": (a * b) @ (w * w), "bb": jnp.sum((b * w) ** 2)}

    return jax.jit(moments)


def phase_space_term_integrals(model: Model, p: np.ndarray, n_mc: int = DEFAULT_N_MC, *,
                               seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
                               moments: dict | None = None,
                               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Per-term integrals M (n_terms, n_terms) complex over n_mc flat phase-space events.

    Args:
        model: the model.
        p: (n_free,) free parameters (the lineshapes depend on them).
        n_mc: number of generator-level events.
        seed: seed of the numpy Generator.
        chunk_size: events per chunk.
        moments: if given, filled with the summed moments of the fraction
            estimates (see :func:`fit_fractions_mc`).
        progress: called with the number of events of each finished chunk.
    """
    require_x64()
    if n_mc <= 0:
        raise ValueError(f"number of MC events must be positive, got {n_mc}")
    rng = np.random.default_rng(seed)
    step = _moments(model)
    pj = jnp.asarray(p, dtype=jnp.float64)
    total: dict = {}
    done = 0
    while done < n_mc:
        k = min(chunk_size, n_mc - done)
        part = step(pj, model.precompute(generator_events(model, k, rng)))
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + np.asarray(value)
        done += k
        if progress is not None:
            progress(k)
    if moments is not None:
        moments.update(total)
    if not total["w"] > 0:
        raise ValueError("the generator-level weights sum to zero: no phase-space integral")
    return total["M"] / total["w"]


#: Generator-level events of the fraction integrals in fits of reactions without quadrature.
DEFAULT_GEN_EVENTS = 1_000_000
#: With floating lineshapes the per-event factors are kept: at most this many events.
FLOATING_GEN_EVENTS = 200_000


def generator_cache(model: Model, *, quadrature_panels: int = 120, n_events: int = DEFAULT_GEN_EVENTS,
                    seed: int = 0) -> Cache:
    """The fraction cache of a fit: generator-level flat phase space of the model's reaction.

    J/psi -> gamma P P: the deterministic quadrature (:func:`phase_space_quadrature`).
    Any other reaction: ``n_events`` generator-level MC events (:func:`generator_events`,
    seed ``seed``); with fixed lineshapes only their per-term integrals are kept (a
    normalisation-matrix cache, memory of one chunk), with floating lineshapes at most
    :data:`FLOATING_GEN_EVENTS` events' factors.
    """
    require_x64()
    fixed = not model.floating_lineshapes
    if model.reaction.is_radiative_pair:
        return model.precompute(phase_space_quadrature(model.reaction, n_panels=quadrature_panels),
                                normalisation_matrix=fixed)
    if fixed:
        M = phase_space_term_integrals(model, model.initial_values(), n_events, seed=seed)
        return NormalisationCache(norm_re=jnp.asarray(M.real), norm_im=jnp.asarray(M.imag), weights=jnp.ones(1))
    rng = np.random.default_rng(seed)
    return model.precompute(generator_events(model, min(n_events, FLOATING_GEN_EVENTS), rng))


@dataclass(frozen=True)
class FitFractions:
    """Fit fractions of a model at given parameters.

    Attributes:
        names: (n_res,) resonance names.
        matrix: (n_res, n_res) diagonal F_R, off-diagonal interference F_RS.
        n_mc: generator-level MC events used.
        seed: their seed.
        errors: (n_res + 1,) MC errors of the F_R and of SF (None for quadrature).
        n_effective: effective number of events of the normalisation integral,
            (sum w I)^2 / sum (w I)^2 (equal to n_mc when w I is constant).
    """

    names: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    n_mc: int
    seed: int
    errors: np.ndarray | None = field(default=None, repr=False)
    n_effective: float | None = None

    @property
    def fractions(self) -> dict[str, float]:
        return dict(zip(self.names, np.diag(self.matrix).tolist()))

    @property
    def sum_of_fractions(self) -> float:
        """SF = sum_R F_R."""
        return float(np.trace(self.matrix))

    def interference(self) -> dict[str, float]:
        """F_RS for R before S in card order, keyed ``"R x S"``."""
        n = len(self.names)
        return {f"{self.names[i]} x {self.names[j]}": float(self.matrix[i, j])
                for i in range(n) for j in range(i + 1, n)}

    def to_dict(self) -> dict:
        out = {"fractions": self.fractions, "interference": self.interference(),
               "sum_of_fractions": self.sum_of_fractions, "n_mc": self.n_mc, "seed": self.seed}
        if self.errors is not None:
            out["mc_errors"] = dict(zip(self.names, self.errors[:-1].tolist()))
            out["mc_error_sum_of_fractions"] = float(self.errors[-1])
            out["n_effective"] = self.n_effective
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        width = max(len(n) for n in self.names)
        err = [""] * (len(self.names) + 1) if self.errors is None else \
            [f" +- {100 * e:.3f}" for e in self.errors]
        lines = [f"{'resonance':<{width}}  fraction (%)" + ("" if self.errors is None else " +- MC error")]
        lines += [f"{n:<{width}}  {100 * f:10.3f}{e}" for (n, f), e in zip(self.fractions.items(), err)]
        lines.append(f"{'SF':<{width}}  {100 * self.sum_of_fractions:10.3f}{err[-1]}")
        big = {k: v for k, v in self.interference().items() if abs(v) >= 1e-4}
        if big:
            lines.append("interference fractions (%), |F_RS| >= 0.01 %:")
            w2 = max(len(k) for k in big)
            lines += [f"  {k:<{w2}}  {100 * v:10.3f}" for k, v in big.items()]
        eff = "" if self.n_effective is None else f", {self.n_effective:.0f} effective for the integral"
        lines.append(f"({self.n_mc} generator-level phase-space events{eff}, seed {self.seed})")
        return "\n".join(lines)


def fit_fractions_quadrature(model: Model, p: np.ndarray | None = None, *,
                             n_panels: int = 120) -> FitFractions:
    """Fit fractions at p (default: the card's values) by deterministic quadrature.

    ``n_mc`` of the result is the number of quadrature nodes and ``seed`` is -1.
    """
    p = model.initial_values() if p is None else np.asarray(p, dtype=np.float64)
    cache = model.precompute(phase_space_quadrature(model.reaction, n_panels=n_panels))
    matrix = np.asarray(model.fit_fractions(jnp.asarray(p), cache))
    return FitFractions(model.resonance_names, matrix, int(cache.weights.shape[0]), -1)


def fit_fractions_mc(model: Model, p: np.ndarray | None = None, n_mc: int = DEFAULT_N_MC, *,
                     seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
                     progress: Callable[[int], None] | None = None) -> FitFractions:
    """Fit fractions at p (default: the card's values) over flat phase space, with their MC errors.

    ``progress`` is called with the number of events of each finished chunk."""
    p = model.initial_values() if p is None else np.asarray(p, dtype=np.float64)
    mom: dict = {}
    M = phase_space_term_integrals(model, p, n_mc, seed=seed, chunk_size=chunk_size, moments=mom,
                                   progress=progress)
    matrix = np.asarray(model.fractions_from_integrals(jnp.asarray(p), jnp.asarray(M)))
    # Delta method: F = <w a> / <w b>, var F = sum w^2 (a - F b)^2 / (sum w b)^2.
    F = mom["wa"] / mom["wb"]
    var = (mom["aa"] - 2.0 * F * mom["ab"] + F**2 * mom["bb"]) / mom["wb"] ** 2
    errors = np.sqrt(np.maximum(var, 0.0))
    return FitFractions(model.resonance_names, matrix, n_mc, seed, errors, float(mom["wb"] ** 2 / mom["bb"]))
