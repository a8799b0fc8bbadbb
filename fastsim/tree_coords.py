"""Flow coordinates of any reaction: a decay tree's masses and angles on the unit box.

For an n-body reaction and one of its decay chains (:mod:`fastsim.events.tree`)
an event is fixed by the n - 2 intermediate masses and the direction
(cos theta, phi) of each of the n - 1 vertices: 3n - 4 numbers (5 for three
bodies, 8 for psi(2S) -> K+ K- K+ K-). Each is mapped onto [0, 1]:

* an angle affinely: u = (cos theta + 1) / 2, u = (phi + pi) / (2 pi) (periodic);
* a mass m_i through the conditional CDF of the generator's own density,
  u_i = G_i(m_i | masses before it), which generalises u_m of
  :mod:`fastsim.coords`: flat phase space (or the Breit-Wigner proposal of
  :class:`~fastsim.events.nbody.NBodyPhaseSpace`) maps onto the uniform
  density of the box, so what a flow learns is acceptance x efficiency x
  resolution, smooth and of order one, without the square-root edges at
  thresholds nor a narrow peak (the phi) it would otherwise have to draw.

Masses are processed top-down (the chain's ``inner_labels``). Given its
parent's mass m_a, flat phase space distributes a vertex's daughter masses as
q(m_a; m_b, m_c) V_b(m_b) V_c(m_c), where V_x(m) is the integral of the
product of break-up momenta over x's own subtree at mass m (the recursion of
:mod:`fastsim.events.nbody`). So the first daughter b has the conditional
density V_b(m_b) W(m_a, m_b), W = int q(m_a; m_b, m_c) V_c(m_c) dm_c, and the
second c, given m_b, the density q(m_a; m_b, m_c) V_c(m_c). A node proposed by
a Breit-Wigner carries the proposal's factor c(m) / B(m) in its V. Each
conditional CDF is tabulated (trapezoid integration on a grid clustered at
both ends and around a proposal's peak) in t = (m - lo) / (hi - lo) over the
node's range given its context, and, when the range or density depends on an
earlier mass (the context: the parent's mass below the root, the first
sibling's mass), on a grid of that mass too, linearly interpolated between
rows. A map piecewise linear in t at fixed context is exactly invertible and
has an exact Jacobian (the slope of its segment); the Jacobian of the whole
map is triangular, the product of the diagonal terms. The table is an
approximation of the CDF, not of the map: a model density on the box maps to
an exactly normalised density in the physical variables whatever the table.

Densities are stated with respect to the normalised flat phase-space measure
dPhi_n / Phi_n (chain-independent and invariant under every symmetry below):

    log p(x) = log q(u(x)) + sum_i log du_i/dm_i - log f(m),

f the flat phase-space density of the intermediate masses: the angles'
Jacobians cancel against f's angular factors, and p = 1 for q = 1 when the
masses' CDF is that of flat phase space.

Symmetries (the detector's and the reaction's, each tested on the training MC
by :func:`symmetry_tests` before the flow folds on it):

* ``rotation`` about the beam: only the root vertex's azimuth changes, so it
  is dropped (drawn uniformly when sampling): 3n - 5 coordinates;
* order-2 operations on the four-momenta, each folding one coordinate onto
  its non-negative half (:data:`OPERATIONS`): ``z_reflection``
  (p_z -> -p_z), ``conjugation`` (every particle exchanged with its
  antiparticle, a relabelling of the final state; when the detector treats
  both alike) and ``mirror`` (p_y -> -p_y, with ``rotation``). The coordinate
  an operation flips (cos theta -> -cos theta or phi -> -phi) is found on a
  seeded phase-space sample, and an operation is accepted only if it leaves
  the signs of the coordinates folded before it unchanged; then the 2^K
  images of a point are told apart by those signs, the model lives on the
  fundamental domain (u = cos theta or phi / pi there) and the density in the
  physical variables is exactly the folded formula above;
* ``permute``: identical final-state particles. With a Breit-Wigner proposal
  the generator relabels each event by a random permutation (a symmetric
  mixture), so a training event is relabelled to the permutation under which
  the proposal density is largest (the phi's pairing at the phi's node), and a
  sample by a uniformly drawn permutation. The domain is not box-aligned, so
  the density is the average over the permutations of the folded density,
  exactly normalised whatever the model puts outside it.

Arrays: four-momenta (n, n_final, 4) in ``reaction.prefixes`` order.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

import numpy as np

from fastsim.events import Reaction
from fastsim.events.kinematics import invariant_mass, two_body_momentum
from fastsim.events.nbody import NBodyPhaseSpace, _unit_gauss_legendre
from fastsim.events.particles import DecayChain
from fastsim.events.tree import NodeVariables, chain_momenta, chain_variables, momenta_by_label, stack_momenta

#: The order-2 operations a map can fold, in the order they are applied.
OPERATIONS = ("z_reflection", "conjugation", "mirror")
#: Grid of each conditional CDF table: points in t, rows in the context mass.
T_POINTS = 1025
PEAK_POINTS = 512
S_ROWS = 97
#: Quadrature nodes of the V and W integrals.
QUAD_NODES = 96
#: Share of the uniform CDF mixed into each table (keeps it strictly increasing).
CDF_FLOOR = 1e-9
#: Seeded flat phase-space events on which the flipped coordinates are found.
PROBE_EVENTS = 2000


class SymmetryError(ValueError):
    """A requested symmetry cannot be folded on (no coordinate it flips cleanly)."""


def _clustered(n: int) -> np.ndarray:
    """n points in [0, 1] clustered at both ends: (1 - cos(pi s)) / 2."""
    return 0.5 * (1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, n)))


def _q(m_a, m_b, m_c) -> np.ndarray:
    """Break-up momentum, zero below threshold."""
    m_a, m_b, m_c = np.broadcast_arrays(np.asarray(m_a, float), np.asarray(m_b, float), np.asarray(m_c, float))
    ok = m_a > m_b + m_c
    return np.where(ok, two_body_momentum(np.where(ok, m_a, m_b + m_c + 1.0), m_b, m_c), 0.0)


def antiparticle_permutation(reaction: Reaction) -> tuple[int, ...] | None:
    """A relabelling ``perm`` with ``momenta[:, perm]`` the charge-conjugate event, or None.

    Slot i of the conjugate event takes the momentum of a slot holding the
    antiparticle of particle i; with identical particles the first such
    permutation is returned (the others follow from the identical ones).
    """
    from particle import Particle

    from fastsim.events.particles import ALIASES, _pdg_spelling

    ids = []
    for name in reaction.particles:
        p = Particle.from_name(ALIASES.get(name) or _pdg_spelling(name))
        ids.append((int(p.pdgid), int(p.invert().pdgid)))
    perm, used = [], set()
    for own, anti in ids:
        j = next((k for k, (o, _) in enumerate(ids) if o == anti and k not in used), None)
        if j is None:
            return None
        perm.append(j)
        used.add(j)
    return tuple(perm)


def apply_operation(name: str, momenta: np.ndarray, reaction: Reaction) -> np.ndarray:
    """The image (n, n_final, 4) of events under one of :data:`OPERATIONS`."""
    p = np.array(momenta, dtype=np.float64, copy=True)
    if name == "z_reflection":
        p[..., 3] *= -1.0
    elif name == "mirror":
        p[..., 2] *= -1.0
    elif name == "conjugation":
        perm = antiparticle_permutation(reaction)
        if perm is None:
            raise SymmetryError(f"{reaction}: the final state is not its own charge conjugate")
        p = p[:, list(perm)]
    else:
        raise SymmetryError(f"unknown symmetry operation {name!r}; known: {', '.join(OPERATIONS)}")
    return p


class TreeCoordinateMap:
    """Map of the events of any reaction onto the unit box, along one decay chain.

    Args:
        reaction: the reaction.
        chain: the chain whose variables are used; default the first (the
            generator's, so that proposals name its nodes).
        proposals: node label -> (mass, width) of the generator's Breit-Wigner
            proposals (``fastsim generate`` records them); the masses' CDF is
            then that of the proposal.
        rotation: drop the root azimuth (detector symmetric about the beam).
        operations: order-2 symmetries to fold on, a subset of :data:`OPERATIONS`.
        permute: relabel identical particles to the proposal's pairing
            (needs proposals; module docstring).
    """

    def __init__(self, reaction: Reaction, chain: DecayChain | None = None, *,
                 proposals: Mapping[str, tuple[float, float]] | None = None,
                 rotation: bool = False, operations: tuple[str, ...] = (), permute: bool = False) -> None:
        self.reaction = reaction
        self.chain = reaction.chains[0] if chain is None else chain
        self.space = NBodyPhaseSpace(reaction, self.chain)
        self.proposals = {k: (float(m), float(w)) for k, (m, w) in (proposals or {}).items()}
        for label, (m, w) in self.proposals.items():
            self.space._cauchy(label, m, w)  # validates label, mass and width
        self._check_proposals_apart()
        self.rotation = bool(rotation)
        unknown = [o for o in operations if o not in OPERATIONS]
        if unknown:
            raise SymmetryError(f"unknown symmetry operation(s) {', '.join(unknown)}; known: {', '.join(OPERATIONS)}")
        self.operations = tuple(o for o in OPERATIONS if o in operations)
        if "mirror" in self.operations and not self.rotation:
            raise SymmetryError("the mirror symmetry is folded together with the rotation about the beam only")
        self.permute = bool(permute) and reaction.has_identical_particles
        if self.permute and not self.proposals:
            raise SymmetryError("permute folds identical particles onto a proposal's pairing: it needs proposals")
        self.vertices = self.chain.vertices
        self.inner = self.chain.inner_labels
        self._flips = self._find_flips()

    # --- description -----------------------------------------------------------------

    @property
    def fold(self) -> bool:
        return bool(self.operations) or self.rotation or self.permute

    @property
    def physical(self) -> str:
        """What the map's physical side is: four-momenta (``"momenta"``)."""
        return "momenta"

    @property
    def _angle_names(self) -> list[str]:
        names = []
        for v in self.vertices:
            names.append(f"cos_theta_{v.label}")
        for v in self.vertices:
            if not (self.rotation and v is self.chain.root):
                names.append(f"phi_{v.label}")
        return names

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of the tree variables (the full set, root azimuth included)."""
        return tuple([f"m_{k}" for k in self.inner] + [f"cos_theta_{v.label}" for v in self.vertices]
                     + [f"phi_{v.label}" for v in self.vertices])

    @property
    def unit_variables(self) -> tuple[str, ...]:
        return tuple([f"m_{k}" for k in self.inner] + self._angle_names)

    @property
    def n_dim(self) -> int:
        return len(self.unit_variables)

    @property
    def n_unfold(self) -> int:
        """Uniform random numbers one sample needs to leave the fundamental domain."""
        return int(self.rotation) + len(self.operations) + int(self.permute)

    @property
    def circular(self) -> tuple[int, ...]:
        """Periodic unit coordinates (the azimuths not folded)."""
        folded = {c for c in self._flips.values()}
        return tuple(i for i, name in enumerate(self.unit_variables)
                     if name.startswith("phi_") and i not in folded)

    def to_dict(self) -> dict:
        return {"kind": "tree_unit_box", "reaction": self.reaction.to_dict(), "chain": str(self.chain),
                "proposals": {k: list(v) for k, v in self.proposals.items()}, "rotation": self.rotation,
                "operations": list(self.operations), "permute": self.permute,
                "unit_variables": list(self.unit_variables),
                "grid": [T_POINTS, PEAK_POINTS, S_ROWS, QUAD_NODES]}

    @classmethod
    def from_dict(cls, d: dict) -> "TreeCoordinateMap":
        if d.get("kind") != "tree_unit_box":
            raise ValueError(f"not a tree coordinate map: kind {d.get('kind')!r}")
        if list(d.get("grid", [])) != [T_POINTS, PEAK_POINTS, S_ROWS, QUAD_NODES]:
            raise ValueError(f"tree coordinates tabulated on grid {d.get('grid')}, this version uses "
                             f"{[T_POINTS, PEAK_POINTS, S_ROWS, QUAD_NODES]}")
        r = d["reaction"]
        reaction = Reaction.from_final_state(r["final_state"], r["parent"], chains=r.get("chains", ()),
                                             production=r.get("production"))
        chain = next((c for c in reaction.chains if str(c) == d["chain"]), None)
        if chain is None:
            raise ValueError(f"chain {d['chain']!r} is not a chain of {reaction}")
        out = cls(reaction, chain, proposals={k: tuple(v) for k, v in d.get("proposals", {}).items()},
                  rotation=bool(d.get("rotation")), operations=tuple(d.get("operations", ())),
                  permute=bool(d.get("permute")))
        if list(out.unit_variables) != list(d.get("unit_variables", out.unit_variables)):
            raise ValueError("stored unit variables differ from the map's")
        return out

    # --- conditional densities of the masses ------------------------------------------

    def _check_proposals_apart(self) -> None:
        for label in self.proposals:
            node = self.chain.node(label)
            near = [d.label for d in node.daughters if d.label in self.proposals]
            parent = self.chain.parent_of(label)
            if parent.label in self.proposals:
                near.append(parent.label)
            if near:
                raise ValueError(f"proposals on {label} and on its neighbour {near[0]}: the flow coordinates "
                                 f"need proposals on nodes that share no vertex")

    def _final_mass(self, label: str) -> float:
        return self.space.final_masses[label]

    def _proposal_factor(self, label: str, m: np.ndarray) -> np.ndarray:
        """c(m) / B(m) of a proposed node (1 otherwise): the proposal's factor in V."""
        if label not in self.proposals:
            return np.ones_like(m)
        cauchy = self.space._cauchy(label, *self.proposals[label])
        bound = self.space._envelope({label: m}, frozenset([label]))
        return np.where(bound > 0.0, cauchy.density(m) / np.where(bound > 0.0, bound, 1.0), 0.0)

    def _quad(self, lo: np.ndarray, hi: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Nodes (k, K) and weights (k, K) of int_lo^hi dm for node ``label``: cos-clustered, or
        sinh-clustered about a proposal's peak."""
        t, w = _unit_gauss_legendre(QUAD_NODES)
        x, dx = 0.5 * (1.0 - np.cos(np.pi * t)), 0.5 * np.pi * np.sin(np.pi * t)
        lo, hi = np.asarray(lo, float)[:, None], np.maximum(np.asarray(hi, float), np.asarray(lo, float))[:, None]
        if label in self.proposals:
            m0, g = self.proposals[label][0], 0.5 * self.proposals[label][1]
            y_lo, y_hi = np.arcsinh((lo - m0) / g), np.arcsinh((hi - m0) / g)
            y = y_lo + (y_hi - y_lo) * x
            return np.clip(m0 + g * np.sinh(y), lo, hi), (y_hi - y_lo) * dx * g * np.cosh(y) * w
        return lo + (hi - lo) * x, (hi - lo) * dx * w

    def _V(self, label: str, m: np.ndarray) -> np.ndarray:
        """V_x(m): int over x's subtree of the break-up momenta (and proposal factors), x at mass m."""
        node = self.chain.node(label)
        b, c = node.daughters
        m = np.asarray(m, dtype=np.float64)
        if b.is_final and c.is_final:
            val = _q(m, self._final_mass(b.label), self._final_mass(c.label))
        elif b.is_final or c.is_final:
            fin, inner = (b, c) if b.is_final else (c, b)
            mf = self._final_mass(fin.label)
            nodes, w = self._quad(np.full(m.size, self.space.thresholds[inner.label]), m.ravel() - mf, inner.label)
            val = np.sum(w * _q(m.ravel()[:, None], nodes, mf) * self._V(inner.label, nodes), axis=1).reshape(m.shape)
        else:
            flat = m.ravel()
            nodes_b, w_b = self._quad(np.full(flat.size, self.space.thresholds[b.label]),
                                      flat - self.space.thresholds[c.label], b.label)
            inner = self._W(c.label, np.repeat(flat, QUAD_NODES), nodes_b.ravel()).reshape(nodes_b.shape)
            val = np.sum(w_b * self._V(b.label, nodes_b) * inner, axis=1).reshape(m.shape)
        return val * self._proposal_factor(label, m)

    def _W(self, c_label: str, m_a: np.ndarray, m_b: np.ndarray) -> np.ndarray:
        """int q(m_a; m_b, m_c) V_c(m_c) dm_c over the second daughter c (q itself if c is final)."""
        if c_label in self.space.final_masses:
            return _q(m_a, m_b, self._final_mass(c_label))
        m_a, m_b = np.broadcast_arrays(np.asarray(m_a, float).ravel(), np.asarray(m_b, float).ravel())
        nodes, w = self._quad(np.full(m_a.size, self.space.thresholds[c_label]), m_a - m_b, c_label)
        return np.sum(w * _q(m_a[:, None], m_b[:, None], nodes) * self._V(c_label, nodes), axis=1)

    def _role(self, label: str) -> dict:
        """How node ``label``'s conditional is built: its parent, sibling, whether it is the first
        daughter, and its context labels."""
        parent = self.chain.parent_of(label)
        b, c = parent.daughters
        first = b.label == label
        sibling = c if first else b
        context = []
        if parent is not self.chain.root:
            context.append(parent.label)
        if not first and not sibling.is_final:
            context.append(sibling.label)
        if len(context) > 1:
            raise ValueError(f"chain {self.chain}: the mass of {label} depends on two earlier masses "
                             f"({', '.join(context)}); the flow coordinates tabulate one at most")
        return {"parent": parent, "sibling": sibling, "first": first, "context": tuple(context)}

    def _range(self, label: str, role: dict, ctx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of node ``label``'s mass given the context masses (arrays)."""
        parent, sibling = role["parent"], role["sibling"]
        lo = self.space.thresholds[label]
        m_a = self.space.parent_mass if parent is self.chain.root else None
        if sibling.is_final:
            lo_sib = self._final_mass(sibling.label)
        elif not role["first"]:
            lo_sib = None  # the sibling's mass is the context
        else:
            lo_sib = self.space.thresholds[sibling.label]
        if m_a is None:
            m_a = ctx
        if lo_sib is None:
            lo_sib = ctx
        hi = np.asarray(m_a, float) - np.asarray(lo_sib, float)
        return np.full(np.shape(hi), lo, dtype=float), hi

    def _density(self, label: str, role: dict, ctx: np.ndarray | None, m: np.ndarray) -> np.ndarray:
        """Unnormalised conditional density of node ``label``'s mass m (rows of ctx)."""
        parent, sibling = role["parent"], role["sibling"]
        m_a = self.space.parent_mass if parent is self.chain.root else ctx
        m_a = np.broadcast_to(np.asarray(m_a, float), m.shape)
        if role["first"]:
            return self._V(label, m) * self._W(sibling.label, m_a, m).reshape(m.shape)
        m_b = self._final_mass(sibling.label) if sibling.is_final else np.broadcast_to(np.asarray(ctx, float), m.shape)
        return _q(m_a, m_b, m) * self._V(label, m)

    @cached_property
    def _tables(self) -> dict[str, dict]:
        """Per intermediate node: t grid, context grid (or None), CDF rows."""
        out = {}
        for label in self.inner:
            role = self._role(label)
            t = _clustered(T_POINTS)
            if label in self.proposals:
                lo0, hi0 = self.space.mass_limits[label]
                m0, g = self.proposals[label][0], 0.5 * self.proposals[label][1]
                y = np.linspace(np.arcsinh((lo0 - m0) / g), np.arcsinh((hi0 - m0) / g), PEAK_POINTS)
                t = np.unique(np.clip(np.concatenate([t, (m0 + g * np.sinh(y) - lo0) / (hi0 - lo0)]), 0.0, 1.0))
            if role["context"]:
                z = role["context"][0]
                z_lo, z_hi = self.space.mass_limits[z]
                s = _clustered(S_ROWS)
                ctx = z_lo + s * (z_hi - z_lo)
            else:
                s, ctx, z_lo, z_hi = None, None, None, None
            rows = 1 if ctx is None else len(ctx)
            ctx_col = None if ctx is None else ctx[:, None]
            lo, hi = self._range(label, role, ctx_col)
            lo, hi = np.broadcast_to(lo, (rows, 1)), np.broadcast_to(hi, (rows, 1))
            width = np.maximum(hi - lo, 0.0)
            m = lo + width * t[None, :]
            dens = self._density(label, role, None if ctx is None else np.broadcast_to(ctx_col, m.shape), m)
            dens = np.where(np.isfinite(dens) & (dens > 0.0), dens, 0.0)
            cdf = np.concatenate([np.zeros((rows, 1)), np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * np.diff(t), axis=1)],
                                 axis=1)
            total = cdf[:, -1:]
            cdf = np.where(total > 0.0, cdf / np.where(total > 0.0, total, 1.0), t[None, :])
            cdf = (1.0 - CDF_FLOOR) * cdf + CDF_FLOOR * t[None, :]
            cdf[:, -1] = 1.0
            out[label] = {"role": role, "t": t, "s": s, "z_range": (z_lo, z_hi), "cdf": cdf}
        return out

    def _row_weights(self, tab: dict, masses: Mapping[str, np.ndarray], n: int):
        """Row index j and weight a of the context for each event (j = 0, a = 0 without one)."""
        if tab["s"] is None:
            return np.zeros(n, dtype=np.int64), np.zeros(n)
        z_lo, z_hi = tab["z_range"]
        s = np.clip((masses[tab["role"]["context"][0]] - z_lo) / (z_hi - z_lo), 0.0, 1.0)
        grid = tab["s"]
        j = np.clip(np.searchsorted(grid, s, side="right") - 1, 0, len(grid) - 2)
        a = (s - grid[j]) / (grid[j + 1] - grid[j])
        return j, a

    def _mass_forward(self, label: str, masses: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(u, log du/dm) of node ``label`` for events with the given masses."""
        tab = self._tables[label]
        m = np.asarray(masses[label], float)
        n = m.size
        ctx = masses[tab["role"]["context"][0]] if tab["role"]["context"] else None
        lo, hi = self._range(label, tab["role"], ctx)
        lo, hi = np.broadcast_to(lo, (n,)), np.broadcast_to(hi, (n,))
        width = np.maximum(hi - lo, 1e-300)
        t = np.clip((m - lo) / width, 0.0, 1.0)
        j, a = self._row_weights(tab, masses, n)
        grid, cdf = tab["t"], tab["cdf"]
        k = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, len(grid) - 2)
        dt = grid[k + 1] - grid[k]
        rows = (j, j + 1) if tab["s"] is not None else (j, j)
        slope = ((1.0 - a) * (cdf[rows[0], k + 1] - cdf[rows[0], k])
                 + a * (cdf[rows[1], k + 1] - cdf[rows[1], k])) / dt
        base = (1.0 - a) * cdf[rows[0], k] + a * cdf[rows[1], k]
        u = base + slope * (t - grid[k])
        with np.errstate(divide="ignore"):
            return u, np.log(slope) - np.log(width)

    def _mass_inverse(self, label: str, u: np.ndarray, masses: Mapping[str, np.ndarray]) -> np.ndarray:
        tab = self._tables[label]
        n = u.size
        ctx = masses[tab["role"]["context"][0]] if tab["role"]["context"] else None
        lo, hi = self._range(label, tab["role"], ctx)
        lo, hi = np.broadcast_to(lo, (n,)), np.broadcast_to(hi, (n,))
        j, a = self._row_weights(tab, masses, n)
        grid, cdf = tab["t"], tab["cdf"]
        r0, r1 = (j, j + 1) if tab["s"] is not None else (j, j)

        def blended(k):
            return (1.0 - a) * cdf[r0, k] + a * cdf[r1, k]

        lo_k, hi_k = np.zeros(n, dtype=np.int64), np.full(n, len(grid) - 1, dtype=np.int64)
        while np.any(hi_k - lo_k > 1):  # largest k with blended(k) <= u
            mid = (lo_k + hi_k) // 2
            below = blended(mid) <= u
            lo_k, hi_k = np.where(below, mid, lo_k), np.where(below, hi_k, mid)
        c0, c1 = blended(lo_k), blended(hi_k)
        t = grid[lo_k] + (u - c0) / np.maximum(c1 - c0, 1e-300) * (grid[hi_k] - grid[lo_k])
        return lo + np.clip(t, 0.0, 1.0) * np.maximum(hi - lo, 0.0)

    # --- symmetries ------------------------------------------------------------------

    def _raw_coordinates(self, momenta: np.ndarray) -> tuple[dict[str, NodeVariables], np.ndarray]:
        """Tree variables and the (n, n_angles) array [cos of every vertex, phi of every vertex]."""
        var = chain_variables(self.chain, momenta_by_label(self.reaction, momenta))
        ang = np.stack([var[v.label].cos_theta for v in self.vertices] + [var[v.label].phi for v in self.vertices],
                       axis=1)
        return var, ang

    def _find_flips(self) -> dict[str, int]:
        """Operation -> index into the unit variables of the coordinate it folds.

        Found on PROBE_EVENTS seeded phase-space events: the first angle that the
        operation maps to minus itself on every event, keeping the signs of the
        angles folded before it.

        Raises:
            SymmetryError: no such angle.
        """
        if not self.operations:
            return {}
        p = self.space.sample(PROBE_EVENTS, np.random.default_rng(20261202))
        _, ang = self._raw_coordinates(p)
        names = [f"cos_theta_{v.label}" for v in self.vertices] + [f"phi_{v.label}" for v in self.vertices]
        unit = list(self.unit_variables)
        flips: dict[str, int] = {}
        chosen: list[int] = []
        for op in self.operations:
            _, img = self._raw_coordinates(apply_operation(op, p, self.reaction))
            found = None
            for i, name in enumerate(names):
                if name not in unit or unit.index(name) in flips.values():
                    continue
                if not np.allclose(img[:, i], -ang[:, i], atol=1e-7):
                    continue
                if all(np.array_equal(np.sign(img[:, c]), np.sign(ang[:, c])) for c in chosen):
                    found = i
                    break
            if found is None:
                raise SymmetryError(f"{self.reaction}, chain {self.chain}: the {op} symmetry flips no coordinate "
                                    f"cleanly; fold without it")
            chosen.append(found)
            flips[op] = unit.index(names[found])
        return flips

    def _angle_index(self, unit_index: int) -> int:
        """Index into [cos..., phi...] of a unit variable."""
        names = [f"cos_theta_{v.label}" for v in self.vertices] + [f"phi_{v.label}" for v in self.vertices]
        return names.index(self.unit_variables[unit_index])

    def _proposal_score(self, momenta: np.ndarray) -> np.ndarray:
        """s(m_P) of each event as labelled (the proposal density up to a constant)."""
        cauchys = {label: self.space._cauchy(label, *mw) for label, mw in self.proposals.items()}
        masses = {label: invariant_mass(sum(momenta[:, self.reaction.index(leaf)]
                                            for leaf in self.chain.node(label).leaves)) for label in cauchys}
        return self.space._proposal_ratio(masses, cauchys)

    def _relabel_to_pairing(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Events relabelled by the identical-particle permutation under which the proposal
        density is largest, and that permutation's index."""
        perms = self.reaction.identical_permutations()
        scores = np.stack([self._proposal_score(p[:, list(perm)]) for perm in perms], axis=1)
        best = np.argmax(scores, axis=1)
        return p[np.arange(len(p))[:, None], np.asarray(perms)[best]], best

    def training_weights(self, momenta: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
        """Weights under which a sample's density is what a model in these coordinates learns:
        v = w / w_R with proposals (:func:`proposal_training`), else the sample's own."""
        if not self.proposals or weights is None:
            return weights
        return np.asarray(weights, dtype=np.float64) / self.space.weights(momenta, self.proposals)

    def canonical(self, momenta: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each event's image in the fundamental domain, and which image it was.

        Returns:
            (n, n_final, 4) images and {"permutation": index into
            ``reaction.identical_permutations()``, op: bool for each operation applied}.
        """
        p = np.asarray(momenta, dtype=np.float64)
        which: dict[str, np.ndarray] = {}
        if self.permute:
            p, which["permutation"] = self._relabel_to_pairing(p)
        p, applied = self._fold_operations(p)
        return p, {**which, **applied}

    def _fold_operations(self, p: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Events moved by the order-2 operations onto the non-negative side of each one's
        coordinate, in order, and where each was applied."""
        applied = {}
        for op, ui in self._flips.items():
            _, ang = self._raw_coordinates(p)
            neg = ang[:, self._angle_index(ui)] < 0.0
            if neg.any():
                p = p.copy()
                p[neg] = apply_operation(op, p[neg], self.reaction)
            applied[op] = neg
        return p, applied

    # --- the map ---------------------------------------------------------------------

    def _unit_of_canonical(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        var, ang = self._raw_coordinates(p)
        masses = {k: var[k].m for k in self.inner}
        cols, log_jac = [], np.zeros(len(p))
        for label in self.inner:
            u, lj = self._mass_forward(label, masses)
            cols.append(u)
            log_jac += lj
        folded = {self._angle_index(ui) for ui in self._flips.values()}
        n_v = len(self.vertices)
        for i, v in enumerate(self.vertices):
            c = ang[:, i]
            cols.append(c if i in folded else 0.5 * (c + 1.0))
        for i, v in enumerate(self.vertices):
            if self.rotation and v is self.chain.root:
                continue
            phi = ang[:, n_v + i]
            cols.append(phi / np.pi if n_v + i in folded else np.mod((phi + np.pi) / (2.0 * np.pi), 1.0))
        return np.stack(cols, axis=1), log_jac, masses

    def to_unit(self, momenta: np.ndarray) -> np.ndarray:
        """(n, n_final, 4) four-momenta -> (n, n_dim) unit coordinates (of the canonical image)."""
        p, _ = self.canonical(momenta)
        return self._unit_of_canonical(p)[0]

    def from_unit(self, u: np.ndarray, unfold: np.ndarray | None = None) -> np.ndarray:
        """(n, n_dim) unit coordinates -> (n, n_final, 4) four-momenta.

        ``unfold`` (n, n_unfold) uniform numbers pick the image: the root
        azimuth 2 pi r - pi, then each operation (last first) where r >= 0.5,
        then a uniformly drawn identical-particle permutation; without them
        the point of the fundamental domain (root azimuth 0).
        """
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if u.ndim != 2 or u.shape[1] != self.n_dim:
            raise ValueError(f"expected (n, {self.n_dim}) unit coordinates, got {u.shape}")
        n = len(u)
        masses: dict[str, np.ndarray] = {}
        for i, label in enumerate(self.inner):
            masses[label] = self._mass_inverse(label, u[:, i], masses)
        folded = {self._angle_index(ui) for ui in self._flips.values()}
        col = len(self.inner)
        n_v = len(self.vertices)
        cos = []
        for i in range(n_v):
            cos.append(u[:, col] if i in folded else 2.0 * u[:, col] - 1.0)
            col += 1
        phi = []
        r = None if unfold is None else np.asarray(unfold, dtype=np.float64)
        if r is not None and r.shape != (n, self.n_unfold):
            raise ValueError(f"expected ({n}, {self.n_unfold}) random numbers to unfold, got {r.shape}")
        for i, v in enumerate(self.vertices):
            if self.rotation and v is self.chain.root:
                phi.append(np.zeros(n) if r is None else 2.0 * np.pi * r[:, 0] - np.pi)
                continue
            phi.append(np.pi * u[:, col] if n_v + i in folded else 2.0 * np.pi * u[:, col] - np.pi)
            col += 1
        masses_all = dict(masses)
        masses_all[self.chain.root.label] = np.full(n, self.space.parent_mass)
        variables = {v.label: NodeVariables(masses_all[v.label], cos[i], phi[i]) for i, v in enumerate(self.vertices)}
        p = stack_momenta(self.reaction, chain_momenta(self.chain, variables, self.space.final_masses,
                                                        self.space.parent_mass))
        if r is None:
            return p
        k = int(self.rotation)
        for j, op in reversed(list(enumerate(self.operations))):
            flip = r[:, k + j] >= 0.5
            if flip.any():
                p[flip] = apply_operation(op, p[flip], self.reaction)
        if self.permute:
            perms = np.asarray(self.reaction.identical_permutations())
            pick = np.minimum((r[:, -1] * len(perms)).astype(np.int64), len(perms) - 1)
            p = p[np.arange(n)[:, None], perms[pick]]
        return p

    def mass_log_density(self, momenta: np.ndarray) -> np.ndarray:
        """log f(m): flat phase space's normalised density of the chain's intermediate masses."""
        var = chain_variables(self.chain, momenta_by_label(self.reaction, np.asarray(momenta, float)))
        with np.errstate(divide="ignore"):
            return np.log(self.space.mass_density({k: var[k].m for k in self.inner}))

    def log_det(self, momenta: np.ndarray) -> np.ndarray:
        """(n,) sum_i log du_i/dm_i - log f(m) at each event's canonical image: with the model's
        log density on the box it gives the log density relative to dPhi/Phi (module docstring)."""
        p, _ = self.canonical(momenta)
        _, lj, _ = self._unit_of_canonical(p)
        return lj - self.mass_log_density(p)

    def images(self, momenta: np.ndarray) -> list[np.ndarray]:
        """The events relabelled by every identical-particle permutation (only the event with
        ``permute`` off): the terms of the density's average."""
        p = np.asarray(momenta, dtype=np.float64)
        if not self.permute:
            return [p]
        return [p[:, list(perm)] for perm in self.reaction.identical_permutations()]

    def unit_and_log_det_of_images(self, momenta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(u, log_det) of each permutation image, each folded by the operations only."""
        out = []
        for img in self.images(momenta):
            p, _ = self._fold_operations(img)
            u, lj, _ = self._unit_of_canonical(p)
            out.append((u, lj - self.mass_log_density(p)))
        return out

    def tree_variables(self, momenta: np.ndarray) -> tuple[list[str], np.ndarray, list[tuple[float, float]]]:
        """(names, (n, 3n - 3) values, histogram ranges) of the chain's variables, each event
        relabelled to the identical-particle pairing first (``permute``), not folded otherwise."""
        p = np.asarray(momenta, dtype=np.float64)
        if self.permute:
            p, _ = self._relabel_to_pairing(p)
        var, ang = self._raw_coordinates(p)
        names = list(self.variables)
        x = np.column_stack([var[k].m for k in self.inner] + [ang])
        ranges = []
        for k in self.inner:  # a proposal's node: its peak, 20 widths either side
            lo, hi = self.space.mass_limits[k]
            if k in self.proposals:
                m0, w = self.proposals[k]
                lo, hi = max(lo, m0 - 20.0 * w), min(hi, m0 + 20.0 * w)
            ranges.append((lo, hi))
        ranges += [(-1.0, 1.0)] * len(self.vertices) + [(-np.pi, np.pi)] * len(self.vertices)
        return names, x, ranges

    def inside(self, momenta: np.ndarray) -> np.ndarray:
        """(n,) bool: finite events of the reaction's kinematics (any four-momenta of the right shape)."""
        p = np.asarray(momenta, dtype=np.float64)
        return np.all(np.isfinite(p), axis=(1, 2))


def symmetry_tests(coords: TreeCoordinateMap, momenta: np.ndarray, bins: int = 4) -> dict:
    """Tests on a sample of each symmetry the map folds on.

    Under a symmetry the images of a point are equally likely given the
    fundamental-domain point: each operation's bit (whether it was applied by
    :meth:`TreeCoordinateMap.canonical`) is a fair coin, and the permutation
    index is uniform, in every cell of the domain (``bins`` per coordinate, on
    the first four unit coordinates). chi^2 = sum over cells and categories of
    (N_k - N / K)^2 / (N / K); the root azimuth (``rotation``) gets a 20-bin
    chi^2 against flat. Returns chi^2, ndf and p-value per test and the
    smallest p-value of the tests that a fold relies on (all but the
    permutation's: see the comment at its end).
    """
    from scipy import stats

    p = np.asarray(momenta, dtype=np.float64)
    can, which = coords.canonical(p)
    u = coords._unit_of_canonical(can)[0]
    cell = np.zeros(len(p), dtype=np.int64)
    for c in range(min(4, u.shape[1])):
        cell = cell * bins + np.clip((u[:, c] * bins).astype(np.int64), 0, bins - 1)
    n_cells = bins ** min(4, u.shape[1])
    out: dict = {}
    for name, values in which.items():
        k = len(coords.reaction.identical_permutations()) if name == "permutation" else 2
        counts = np.zeros((n_cells, k))
        np.add.at(counts, (cell, values.astype(np.int64)), 1.0)
        tot = counts.sum(axis=1)
        use = tot > 0
        expected = tot[use, None] / k
        chi2 = float(np.sum((counts[use] - expected) ** 2 / expected))
        ndf = int(use.sum()) * (k - 1)
        out[name] = {"chi2": chi2, "ndf": ndf, "p_value": float(stats.chi2.sf(chi2, ndf))}
    if coords.rotation:
        _, ang = coords._raw_coordinates(p)
        h = np.histogram(ang[:, len(coords.vertices)], 20, (-np.pi, np.pi))[0].astype(np.float64)
        chi2 = float(np.sum((h - h.mean()) ** 2 / h.mean()))
        out["rotation"] = {"chi2": chi2, "ndf": 19, "p_value": float(stats.chi2.sf(chi2, 19))}
    # The permutation test is reported, not required: |A|^2 is symmetric under the exchange
    # of identical particles, so the normalisation needs only the symmetrised density,
    # which is what a permute map samples, whatever the detector does with the labels.
    out["min_p_value"] = min((v["p_value"] for k, v in out.items() if k != "permutation"), default=1.0)
    out["n_events"] = len(p)
    return out


#: Smallest p-value of :func:`symmetry_tests` with which a sample is taken as symmetric.
SYMMETRY_P_MIN = 1e-3


def detector_symmetries(reaction: Reaction, card) -> tuple[bool, tuple[str, ...]]:
    """(rotation, operations) a detector card can have for a reaction.

    Every card of :mod:`fastsim.events.detector` cuts on |cos theta|, pT and
    energies, so it is symmetric about the beam, under z -> -z and under the
    mirror planes through the beam. ``conjugation`` is a candidate when the
    final state is its own charge conjugate and the card has the same rules
    for every charged particle and its antiparticle.
    """
    ops = ["z_reflection", "mirror"]
    perm = antiparticle_permutation(reaction)
    if perm is not None and any(j != i for i, j in enumerate(perm)):
        same = True
        if card is not None:
            for i, j in enumerate(perm):
                a, b = reaction.particles[i], reaction.particles[j]
                from fastsim.events.detector import species_kind

                if species_kind(a) == "charged" and card.charged.rules_for(a) != card.charged.rules_for(b):
                    same = False
        if same:
            ops.insert(1, "conjugation")
    return True, tuple(ops)


def training_coordinates(reaction: Reaction, momenta: np.ndarray, *, card=None, fold: bool = True,
                         proposals: Mapping[str, tuple[float, float]] | None = None,
                         source: str = "the training sample") -> tuple["TreeCoordinateMap", dict | None]:
    """The tree coordinate map a flow trains in, with its symmetries tested on the sample.

    With ``fold`` the candidates of :func:`detector_symmetries` (and the
    identical particles, with proposals) are folded on; each is tested first
    (:func:`symmetry_tests`).

    Raises:
        fastsim.errors.TrainingError: a symmetry fails its test (p below
            SYMMETRY_P_MIN), naming ``source`` and the test.
    """
    from .errors import TrainingError

    proposals = dict(proposals or {})
    if not fold:
        return TreeCoordinateMap(reaction, proposals=proposals), None
    rotation, ops = detector_symmetries(reaction, card)
    coords = TreeCoordinateMap(reaction, proposals=proposals, rotation=rotation, operations=ops,
                               permute=bool(proposals) and reaction.has_identical_particles)
    res = symmetry_tests(coords, momenta)
    if res["min_p_value"] < SYMMETRY_P_MIN:
        tests = ", ".join(f"{k} p = {v['p_value']:.2g}" for k, v in res.items()
                          if isinstance(v, dict) and k != "permutation")
        raise TrainingError(f"{source}: the events are not symmetric under the symmetries the folded coordinates "
                            f"assume ({tests}; need p >= {SYMMETRY_P_MIN:g} for each); train without folding")
    return coords, res


def widened_proposals(proposals: Mapping[str, tuple[float, float]], card) -> dict[str, tuple[float, float]]:
    """The generator's proposals widened by the card's mass resolution (widths added as FWHM in
    quadrature, sigma_m x 2 sqrt(2 ln 2)): the shape of the reconstructed peak, which a flow of
    detector-level proposal MC learns."""
    sigma = card.resolution.sigma_m if (card is not None and card.resolution.enabled) else 0.0
    fwhm = 2.0 * np.sqrt(2.0 * np.log(2.0)) * sigma
    return {k: (float(m), float(np.hypot(w, fwhm))) for k, (m, w) in proposals.items()}


def proposal_training(reaction: Reaction, momenta: np.ndarray, weights: np.ndarray | None, *,
                      proposals: Mapping[str, tuple[float, float]] | None, card=None, fold: bool = True,
                      source: str = "the training sample") -> tuple["TreeCoordinateMap", dict | None, np.ndarray | None]:
    """(coordinates, symmetry tests, training weights) of a flow of detector-level MC.

    Without proposals the sample's own weights are the training weights. With
    the generator's Breit-Wigner proposals the flow learns the proposal's
    detector-level density and its samples carry the analytic weight
    w_R = flat / proposal of the proposal widened by the mass resolution
    (:func:`widened_proposals`, the reconstructed peak's width); each training
    event gets v = w / w_R(its reconstructed momenta), w its generator weight,
    so that flow samples weighted by w_R follow flat phase space through the
    detector exactly in expectation, whatever w_R is. The price is the spread
    of v: on the default card and psi(2S) -> phi K+ K- about half the sample's
    size (effective size / size 0.51).

    Raises:
        ValueError: proposals without weights.
        fastsim.errors.TrainingError: a folded symmetry fails its test (:func:`training_coordinates`).
    """
    widened = widened_proposals(proposals or {}, card)
    coords, symmetry = training_coordinates(reaction, momenta, card=card, fold=fold, proposals=widened,
                                            source=source)
    if not widened:
        return coords, symmetry, weights
    if weights is None:
        raise ValueError(f"{source}: proposals {', '.join(widened)} are named but the events have no weights")
    return coords, symmetry, coords.training_weights(momenta, weights)
