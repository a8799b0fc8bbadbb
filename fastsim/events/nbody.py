"""Exact flat n-body phase space of any reaction, in the variables of a decay tree.

Flat phase space in tree variables
----------------------------------
With the PDG normalisation, dPhi_n(P; p_1..p_n) = (2 pi)^4 delta^4(P - sum p)
prod_i d^3p_i / ((2 pi)^3 2 E_i), splitting off a group A of final-state
particles with total momentum p_a (the node a of the tree) gives

    dPhi_n(P; p_1..p_n) = dPhi_{n-|A|+1}(P; p_a, rest) dPhi_|A|(p_a; p_A) dm_a^2 / (2 pi),

and two-body phase space, evaluated in the rest frame of the decaying node a
(it is Lorentz invariant), is

    dPhi_2(p_a; p_b, p_c) = q_a / (16 pi^2 m_a) dOmega_a,

with q_a the break-up momentum and Omega_a the direction of b relative to
any axes fixed in that frame, e.g. the helicity axes of
:mod:`fastsim.events.tree` (they depend on the outer variables only, and a
rotation leaves dOmega unchanged). Applying both to every vertex v of a chain
(n - 1 vertices, n - 2 intermediate nodes i):

    dPhi_n = prod_v [q_v / (16 pi^2 m_v) dOmega_v] prod_i [2 m_i dm_i / (2 pi)]
           = C prod_v q_v  prod_i dm_i  prod_v dOmega_v,
    C = 1 / (M (16 pi^2)^(n-1) pi^(n-2)),

because each intermediate m_i is the m_v of its own vertex and cancels
against dm_i^2 = 2 m_i dm_i. So flat phase space is uniform in every cos theta
and phi and distributes the intermediate masses as prod_v q_v (the parent's q
at the fixed parent mass M times the q of every intermediate node), inside the
region m_v >= m_b + m_c at every vertex. The region and the density differ
between chains, the phase space they describe does not.

Sampling
--------
The intermediate masses are drawn uniformly in the box thr_i <= m_i <= M -
(sum of the other final-state masses) and kept with probability f(m) / B,
f = prod_v q_v. The bound B = prod_v q(hi_v; lo_b, lo_c) (hi_v the largest
mass the vertex's node can have, lo the smallest of its daughters) is rigorous
because q grows with the decaying mass and falls with either daughter mass.

Weighted sampling with Breit-Wigner proposals
---------------------------------------------
A proposal (m0, Gamma) for node i draws m_i from a Cauchy density c_i(m_i)
(half width gamma = Gamma / 2) truncated to the box, instead of uniformly;
the other masses stay uniform and the hit-or-miss step uses the bound B(m_P)
at the drawn proposed masses m_P (the same formula with hi = lo = m_i for a
proposed node, so tighter). The accepted events then have, per unit of phase
space dPhi_n, the density

    g(x) = s(m_P(x)) / N,   s(m_P) = prod_{i in P} c_i(m_i) / B(m_P),

while flat phase space has the constant density 1 / Phi_n. With identical
particles the proposal is the mixture over the permutations pi of
:meth:`Reaction.identical_permutations` (draw pi uniformly, relabel the event),
whose density is the average s_bar(x) = mean_pi s(m_P(x o pi)) / N. The weight

    w(x) = (1 / Phi_n) / (s_bar(x) / N) = E_flat[s] / s_bar(x)

has E_g[w] = 1 exactly, and its normalisation E_flat[s] = int s f dm / int f dm
is an (n - 2)-dimensional integral over the intermediate masses, computed once
per proposal (:meth:`NBodyPhaseSpace.weight_normalisation`) with a tensor
Gauss-Legendre rule whose substitutions make the integrand smooth (relative
accuracy about 1e-10 with one proposed node, 1e-7 with two, checked against
rules of half the order). An optional defensive fraction alpha
of flat events (Hesterberg 1995) gives w = 1 / (alpha + (1 - alpha) s_bar / E_flat[s]) <= 1 / alpha.

Arrays: masses are (n_events,), events (n_events, n_final, 4) four-momenta
(E, px, py, pz) in the parent rest frame, in ``reaction.prefixes`` order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy import special

from .kinematics import invariant_mass, two_body_momentum
from .particles import DecayChain, DecayNode, Reaction
from .tree import NodeVariables, chain_momenta, stack_momenta

#: Gauss-Legendre nodes per intermediate mass, by the number of intermediate masses.
_QUADRATURE_NODES = {1: 512, 2: 256, 3: 64}


@lru_cache(maxsize=None)
def _unit_gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1] (scipy's are fast for large n, numpy's are not)."""
    t, w = special.roots_legendre(n)
    return 0.5 * (t + 1.0), 0.5 * w


@dataclass(frozen=True)
class _Cauchy:
    """Cauchy density in m (a non-relativistic Breit-Wigner) truncated to [lo, hi]."""

    m0: float
    half_width: float
    lo: float
    hi: float

    @property
    def _atan_range(self) -> tuple[float, float]:
        return (float(np.arctan((self.lo - self.m0) / self.half_width)),
                float(np.arctan((self.hi - self.m0) / self.half_width)))

    def density(self, m: np.ndarray) -> np.ndarray:
        a_lo, a_hi = self._atan_range
        g = self.half_width
        inside = (m >= self.lo) & (m <= self.hi)
        return np.where(inside, g / ((m - self.m0) ** 2 + g * g) / (a_hi - a_lo), 0.0)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF: masses distributed as the density from uniform u in [0, 1]."""
        a_lo, a_hi = self._atan_range
        m = self.m0 + self.half_width * np.tan(a_lo + (a_hi - a_lo) * u)
        return np.clip(m, self.lo, self.hi)


class NBodyPhaseSpace:
    """Flat n-body phase space of a reaction, generated along one decay chain.

    Any chain gives the same phase space; the chain only fixes the variables
    the masses are drawn in (see the module docstring for the derivation).

    Args:
        reaction: the reaction (parent at rest, final-state masses).
        chain: the tree to generate along; default the reaction's first chain.
    """

    def __init__(self, reaction: Reaction, chain: DecayChain | None = None) -> None:
        self.reaction = reaction
        self.chain = reaction.chains[0] if chain is None else chain
        if sorted(self.chain.root.leaves) != sorted(reaction.prefixes):
            raise ValueError(f"chain {self.chain} does not decay into {', '.join(reaction.prefixes)}")
        self.parent_mass = reaction.parent_mass
        self.final_masses: dict[str, float] = dict(zip(reaction.prefixes, reaction.masses))
        #: Smallest mass of every node (the sum of its final-state masses).
        self.thresholds: dict[str, float] = {
            node.label: sum(self.final_masses[leaf] for leaf in node.leaves)
            for node in self._all_nodes(self.chain.root)}
        self._normalisations: dict[tuple, float] = {}
        total = sum(reaction.masses)
        #: Box of each intermediate mass: (threshold, M - the other final-state masses).
        self.mass_limits: dict[str, tuple[float, float]] = {
            label: (self.thresholds[label], self.parent_mass - (total - self.thresholds[label]))
            for label in self.chain.inner_labels}

    @staticmethod
    def _all_nodes(node: DecayNode) -> list[DecayNode]:
        return [node] + [x for d in node.daughters for x in NBodyPhaseSpace._all_nodes(d)]

    @property
    def inner_labels(self) -> tuple[str, ...]:
        """The intermediate nodes whose masses are variables, top-down."""
        return self.chain.inner_labels

    # --- densities -------------------------------------------------------------------

    def _mass_of(self, node: DecayNode, masses: Mapping[str, np.ndarray]) -> np.ndarray | float:
        if node is self.chain.root:
            return self.parent_mass
        if node.is_final:
            return self.final_masses[node.label]
        return masses[node.label]

    def unnormalised_mass_density(self, masses: Mapping[str, np.ndarray]) -> np.ndarray:
        """prod over vertices of the break-up momentum q_v; zero outside the kinematic region.

        Args:
            masses: intermediate-node label -> (n,) masses (GeV).

        Returns:
            (n,) density of flat phase space in the intermediate masses (unnormalised).
        """
        f = np.ones(np.broadcast_shapes(*(np.shape(masses[k]) for k in self.inner_labels)))
        for v in self.chain.vertices:
            m_a = self._mass_of(v, masses)
            m_b, m_c = (self._mass_of(d, masses) for d in v.daughters)
            # The explicit test matters: lambda is also positive for m_a < |m_b - m_c|.
            # (The floor only keeps a massless node out of a division; such points get 0.)
            f = f * np.where(m_a > m_b + m_c, two_body_momentum(np.maximum(m_a, 1e-300), m_b, m_c), 0.0)
        return f

    @cached_property
    def mass_integral(self) -> float:
        """int prod_v q_v d^(n-2)m over the kinematic region (GeV^(2n-3))."""
        return self._integrate(lambda masses: 1.0, {})

    def mass_density(self, masses: Mapping[str, np.ndarray]) -> np.ndarray:
        """Normalised density of the intermediate masses under flat phase space."""
        return self.unnormalised_mass_density(masses) / self.mass_integral

    @property
    def volume(self) -> float:
        """The phase-space volume Phi_n (PDG normalisation, GeV^(2n-4)): C (4 pi)^(n-1) mass_integral."""
        n = self.reaction.n_final
        c = 1.0 / (self.parent_mass * (16.0 * np.pi**2) ** (n - 1) * np.pi ** (n - 2))
        return c * (4.0 * np.pi) ** (n - 1) * self.mass_integral

    def _envelope(self, masses: Mapping[str, np.ndarray], proposed: frozenset[str]) -> np.ndarray:
        """Bound B(m_P) >= f over the box, given the masses of the proposed nodes (others free)."""
        def hi(node: DecayNode):
            if node is self.chain.root:
                return self.parent_mass
            return masses[node.label] if node.label in proposed else self.mass_limits[node.label][1]

        def lo(node: DecayNode):
            if node.is_final:
                return self.final_masses[node.label]
            return masses[node.label] if node.label in proposed else self.thresholds[node.label]

        bound = np.ones(np.broadcast_shapes(*(np.shape(masses[k]) for k in proposed)))
        for v in self.chain.vertices:
            b, c = v.daughters
            bound = bound * two_body_momentum(hi(v), lo(b), lo(c))
        return bound

    # --- integrals over the intermediate masses ---------------------------------------

    def _lowest(self, node: DecayNode, fixed: Mapping[str, np.ndarray]) -> np.ndarray | float:
        """Smallest mass a node can have given the fixed masses below it."""
        if node.is_final:
            return self.final_masses[node.label]
        if node.label in fixed:
            return fixed[node.label]
        return sum(self._lowest(d, fixed) for d in node.daughters)

    def _highest(self, node: DecayNode, fixed: Mapping[str, np.ndarray]) -> np.ndarray | float:
        """Largest mass a node can have given the fixed masses above it and beside its ancestors."""
        if node is self.chain.root:
            return self.parent_mass
        if node.label in fixed:
            return fixed[node.label]
        parent = self.chain.parent_of(node.label)
        sibling = next(d for d in parent.daughters if d is not node)
        return self._highest(parent, fixed) - self._lowest(sibling, fixed)

    def _integrate(self, fn: Callable[[dict[str, np.ndarray]], np.ndarray],
                   peaks: Mapping[str, _Cauchy], n_nodes: int | None = None) -> float:
        """int fn(m) f(m) d^(n-2)m over the kinematic region, f = prod_v q_v.

        Tensor Gauss-Legendre, one intermediate mass after the other, each
        within its range given the masses fixed before it (the region is
        m_v >= m_b + m_c at every vertex, so that range is an interval). The
        nodes in ``peaks`` come first: a narrow peak in an inner variable would
        make a step in the outer ones where the inner range edge crosses it.
        Each mass is m = lo + (hi - lo) (1 - cos(pi t)) / 2, which turns the
        square-root edges of q into smooth functions of t; a peaked node is
        first mapped through m = m0 + gamma sinh(y), uniform y, so that the
        node spacing grows like |m - m0| and resolves the peak and the tails.
        """
        labels = [k for k in self.inner_labels if k in peaks] + [k for k in self.inner_labels if k not in peaks]
        if not labels:
            return float(fn({}) * self.unnormalised_mass_density({}))
        n_nodes = n_nodes or _QUADRATURE_NODES.get(len(labels), 24)
        t, w = _unit_gauss_legendre(n_nodes)
        x, dx = 0.5 * (1.0 - np.cos(np.pi * t)), 0.5 * np.pi * np.sin(np.pi * t)
        masses: dict[str, np.ndarray] = {}
        weight = np.ones(1)
        for label in labels:
            node = self.chain.node(label)
            lo = sum(self._lowest(d, masses) for d in node.daughters) + np.zeros_like(weight)
            hi = np.maximum(self._highest(node, masses), lo)
            if label in peaks:
                m0, g = peaks[label].m0, peaks[label].half_width
                y_lo, y_hi = np.arcsinh((lo - m0) / g), np.arcsinh((hi - m0) / g)
                y = y_lo[:, None] + (y_hi - y_lo)[:, None] * x
                m = np.clip(m0 + g * np.sinh(y), lo[:, None], hi[:, None])
                jac = (y_hi - y_lo)[:, None] * dx * g * np.cosh(y)
            else:
                m = lo[:, None] + (hi - lo)[:, None] * x
                jac = (hi - lo)[:, None] * dx
            masses = {k: np.repeat(v, n_nodes) for k, v in masses.items()}
            masses[label] = m.ravel()
            weight = (weight[:, None] * w * jac).ravel()
        density = self.unnormalised_mass_density(masses)
        # fn may be infinite where the density vanishes (the region's boundary).
        return float(np.sum(weight * np.where(density > 0.0, fn(masses), 0.0) * density))

    def flat_average(self, fn: Callable[[dict[str, np.ndarray]], np.ndarray],
                     peaks: Mapping[str, tuple[float, float]] | None = None) -> float:
        """E_flat[fn(m)] over flat phase space, fn a function of the intermediate masses.

        Args:
            fn: intermediate-node label -> (k,) masses to (k,) values.
            peaks: label -> (mass, width) where fn peaks, for the quadrature's substitutions.
        """
        cauchys = {label: self._cauchy(label, *mw) for label, mw in (peaks or {}).items()}
        return self._integrate(fn, cauchys) / self.mass_integral

    # --- sampling ------------------------------------------------------------------------

    def _cauchy(self, label: str, mass: float, width: float) -> _Cauchy:
        if label not in self.mass_limits:
            raise ValueError(f"proposal for {label!r}: not an intermediate node of {self.chain} "
                             f"({', '.join(self.inner_labels)})")
        if not (np.isfinite(mass) and np.isfinite(width) and width > 0.0):
            raise ValueError(f"proposal for {label!r}: need a finite mass and a positive width, "
                             f"got ({mass}, {width})")
        return _Cauchy(float(mass), 0.5 * float(width), *self.mass_limits[label])

    def sample_masses(self, n: int, rng: np.random.Generator,
                      proposals: Mapping[str, tuple[float, float]] | None = None) -> dict[str, np.ndarray]:
        """Intermediate masses by hit-or-miss: flat phase space, or the proposal of the module docstring.

        Args:
            n: number of events.
            rng: the random generator (every draw uses it).
            proposals: intermediate-node label -> (mass, width) of a Cauchy proposal.

        Returns:
            Label -> (n,) masses of every intermediate node.
        """
        cauchys = {label: self._cauchy(label, *mw) for label, mw in (proposals or {}).items()}
        proposed = frozenset(cauchys)
        accepted = [{label: np.empty(0) for label in self.inner_labels}]
        n_done, n_tried, efficiency = 0, 0, 0.2
        while n_done < n:
            # Size the chunk from the acceptance seen so far, capped to bound memory.
            k = int(min(4_000_000, 1.2 * (n - n_done) / max(efficiency, 1e-4) + 64))
            masses = {}
            for label in self.inner_labels:
                u = rng.random(k)
                if label in cauchys:
                    masses[label] = cauchys[label].from_unit(u)
                else:
                    lo, hi = self.mass_limits[label]
                    masses[label] = lo + (hi - lo) * u
            f = self.unnormalised_mass_density(masses)
            keep = rng.random(k) * self._envelope(masses, proposed) < f
            accepted.append({label: m[keep] for label, m in masses.items()})
            n_done += int(keep.sum())
            n_tried += k
            efficiency = max(n_done, 1) / n_tried
        return {label: np.concatenate([a[label] for a in accepted])[:n] for label in self.inner_labels}

    def sample_variables(self, n: int, rng: np.random.Generator,
                         proposals: Mapping[str, tuple[float, float]] | None = None
                         ) -> dict[str, NodeVariables]:
        """Tree variables of n events: masses as :meth:`sample_masses`, angles uniform.

        cos theta is uniform in (-1, 1] and phi in (-pi, pi] at every vertex.
        """
        masses = self.sample_masses(n, rng, proposals)
        masses[self.chain.root.label] = np.full(n, self.parent_mass)
        vertices = self.chain.vertices
        u = rng.random((2, len(vertices), n))
        return {v.label: NodeVariables(masses[v.label], 1.0 - 2.0 * u[0, j], np.pi * (1.0 - 2.0 * u[1, j]))
                for j, v in enumerate(vertices)}

    def _momenta(self, variables: Mapping[str, NodeVariables]) -> np.ndarray:
        p = chain_momenta(self.chain, variables, self.final_masses, self.parent_mass)
        return stack_momenta(self.reaction, p)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, n_final, 4) four-momenta of flat phase-space events, in ``reaction.prefixes`` order."""
        return self._momenta(self.sample_variables(n, rng))

    def sample_weighted(self, n: int, rng: np.random.Generator,
                        proposals: Mapping[str, tuple[float, float]], *,
                        flat_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Events from Breit-Wigner proposals, with weights to flat phase space.

        With identical particles each event is relabelled by a random
        identical-particle permutation, so the proposal is the symmetric
        mixture over pairings (module docstring).

        Args:
            n: number of events.
            rng: the random generator.
            proposals: intermediate-node label -> (mass, width) (GeV).
            flat_fraction: share alpha of flat events mixed in (bounds w by 1 / alpha).

        Returns:
            (n, n_final, 4) four-momenta and (n,) weights w = flat density /
            proposal density, with expectation 1 exactly (:meth:`weights`).
        """
        if not 0.0 <= flat_fraction < 1.0:
            raise ValueError(f"flat_fraction must be in [0, 1), got {flat_fraction}")
        self.weight_normalisation(proposals)  # validate before drawing
        n_flat = int(rng.binomial(n, flat_fraction)) if flat_fraction > 0.0 else 0
        peaked = self._momenta(self.sample_variables(n - n_flat, rng, proposals))
        perms = np.asarray(self.reaction.identical_permutations())
        if len(perms) > 1:
            pick = perms[rng.integers(len(perms), size=len(peaked))]
            peaked = peaked[np.arange(len(peaked))[:, None], pick]
        momenta = np.concatenate([self.sample(n_flat, rng), peaked]) if n_flat else peaked
        if n_flat:
            momenta = momenta[rng.permutation(n)]
        return momenta, self.weights(momenta, proposals, flat_fraction=flat_fraction)

    # --- weights -------------------------------------------------------------------------

    def _proposal_ratio(self, masses: Mapping[str, np.ndarray], cauchys: Mapping[str, _Cauchy]) -> np.ndarray:
        """s(m_P) = prod c_i(m_i) / B(m_P): the proposal density per unit phase space, up to a constant."""
        bound = self._envelope(masses, frozenset(cauchys))
        s = np.ones_like(bound)
        for label, cauchy in cauchys.items():
            s = s * cauchy.density(masses[label])
        # B = 0 only on the boundary of the region (measure zero): the weight there is 0.
        return np.where(bound > 0.0, s / np.where(bound > 0.0, bound, 1.0), np.inf)

    def weight_normalisation(self, proposals: Mapping[str, tuple[float, float]]) -> float:
        """E_flat[s]: the constant of w = E_flat[s] / s_bar (module docstring)."""
        key = tuple(sorted((label, float(m), float(w)) for label, (m, w) in proposals.items()))
        cache = self._normalisations
        if key not in cache:
            cauchys = {label: self._cauchy(label, *mw) for label, mw in proposals.items()}
            cache[key] = self.flat_average(lambda masses: self._proposal_ratio(masses, cauchys), proposals)
        return cache[key]

    def weights(self, momenta: np.ndarray, proposals: Mapping[str, tuple[float, float]], *,
                flat_fraction: float = 0.0) -> np.ndarray:
        """Weights to flat phase space of events drawn by :meth:`sample_weighted`.

        Args:
            momenta: (n, n_final, 4) four-momenta in ``reaction.prefixes`` order.
            proposals, flat_fraction: as given to :meth:`sample_weighted`.

        Returns:
            (n,) weights 1 / (alpha + (1 - alpha) s_bar(x) / E_flat[s]),
            symmetric under the identical-particle permutations.
        """
        norm = self.weight_normalisation(proposals)
        cauchys = {label: self._cauchy(label, *mw) for label, mw in proposals.items()}
        momenta = np.asarray(momenta, dtype=np.float64)
        if momenta.ndim != 3 or momenta.shape[1:] != (self.reaction.n_final, 4):
            raise ValueError(f"expected (n, {self.reaction.n_final}, 4) four-momenta, got {momenta.shape}")
        perms = self.reaction.identical_permutations()
        s_bar = np.zeros(len(momenta))
        for perm in perms:
            moved = momenta[:, list(perm)]
            masses = {label: invariant_mass(sum(moved[:, self.reaction.index(leaf)]
                                                for leaf in self.chain.node(label).leaves))
                      for label in cauchys}
            s_bar += self._proposal_ratio(masses, cauchys)
        s_bar /= len(perms)
        return 1.0 / (flat_fraction + (1.0 - flat_fraction) * s_bar / norm)

