"""Fit fractions over generator-level flat phase space (PHYSICS.md section 4).

The per-term integrals M_kl (see :meth:`pwa.amplitude.Model.term_integrals`)
are linear in the events, so they are accumulated over chunks of exact flat
phase-space events: the memory stays bounded for any number of MC events.
Fractions, interference fractions and SF then follow from M and the couplings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace, Reaction

from .amplitude import Model, require_x64

DEFAULT_N_MC = 1_000_000
DEFAULT_CHUNK = 100_000


def phase_space_quadrature(reaction: Reaction = JPSI_GAMMA_KK, *, n_panels: int = 120,
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


def phase_space_term_integrals(model: Model, p: np.ndarray, n_mc: int = DEFAULT_N_MC, *,
                               seed: int = 0, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Per-term integrals M (n_terms, n_terms) complex over n_mc flat phase-space events.

    Args:
        model: the model.
        p: (n_free,) free parameters (the lineshapes depend on them).
        n_mc: number of generator-level events.
        seed: seed of the numpy Generator.
        chunk_size: events per chunk.
    """
    require_x64()
    if n_mc <= 0:
        raise ValueError(f"number of MC events must be positive, got {n_mc}")
    rng = np.random.default_rng(seed)
    space = PhaseSpace(model.reaction)
    integrals = jax.jit(model.term_integrals)
    pj = jnp.asarray(p, dtype=jnp.float64)
    total = np.zeros((model.n_terms, model.n_terms), dtype=np.complex128)
    done = 0
    while done < n_mc:
        k = min(chunk_size, n_mc - done)
        cache = model.precompute(Events.from_helicity_variables(space.sample(k, rng), model.reaction))
        total += np.asarray(integrals(pj, cache)) * k
        done += k
    return total / n_mc


@dataclass(frozen=True)
class FitFractions:
    """Fit fractions of a model at given parameters.

    Attributes:
        names: (n_res,) resonance names.
        matrix: (n_res, n_res) diagonal F_R, off-diagonal interference F_RS.
        n_mc: generator-level MC events used.
        seed: their seed.
    """

    names: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    n_mc: int
    seed: int

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
        return {"fractions": self.fractions, "interference": self.interference(),
                "sum_of_fractions": self.sum_of_fractions, "n_mc": self.n_mc, "seed": self.seed}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        width = max(len(n) for n in self.names)
        lines = [f"{'resonance':<{width}}  fraction (%)"]
        lines += [f"{n:<{width}}  {100 * f:10.3f}" for n, f in self.fractions.items()]
        lines.append(f"{'SF':<{width}}  {100 * self.sum_of_fractions:10.3f}")
        big = {k: v for k, v in self.interference().items() if abs(v) >= 1e-4}
        if big:
            lines.append("interference fractions (%), |F_RS| >= 0.01 %:")
            w2 = max(len(k) for k in big)
            lines += [f"  {k:<{w2}}  {100 * v:10.3f}" for k, v in big.items()]
        lines.append(f"({self.n_mc} generator-level phase-space events, seed {self.seed})")
        return "\n".join(lines)


def fit_fractions_quadrature(model: Model, p: np.ndarray | None = None, *,
                             n_panels: int = 120) -> FitFractions:
    """Fit fractions at p (default: the card's values) by deterministic quadrature.

    ``n_mc`` of the result is the number of quadrature nodes and ``seed`` is -1.
    """
    p = model.initial_values() if p is None else np.asarray(p, dtype=np.float64)
    cache = model.precompute(phase_space_quadrature(model.reaction, n_panels=n_panels))
    matrix = np.asarray(model.fit_fractions(jnp.asarray(p), cache))
    return FitFractions(model.resonance_names, matrix, int(cache["m"].shape[0]), -1)


def fit_fractions_mc(model: Model, p: np.ndarray | None = None, n_mc: int = DEFAULT_N_MC, *,
                     seed: int = 0, chunk_size: int = DEFAULT_CHUNK) -> FitFractions:
    """Fit fractions at p (default: the card's values) over flat phase space."""
    p = model.initial_values() if p is None else np.asarray(p, dtype=np.float64)
    M = phase_space_term_integrals(model, p, n_mc, seed=seed, chunk_size=chunk_size)
    matrix = np.asarray(model.fractions_from_integrals(jnp.asarray(p), jnp.asarray(M)))
    return FitFractions(model.resonance_names, matrix, n_mc, seed)
