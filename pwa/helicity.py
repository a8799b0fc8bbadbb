"""The helicity amplitude of any reaction: chains of two-body decays (PHYSICS.md 5b).

Built once per model, in numpy; it produces the per-event angular factors
that :class:`pwa.amplitude.Model` combines with couplings and lineshapes.

At every two-body vertex a -> b c of a chain the amplitude has the factor

    D^{J_a*}_{lambda_a, lambda_b - lambda_c}(phi_b, theta_b, 0) H^a_{lambda_b, lambda_c},

(phi_b, theta_b) the direction of the first daughter b in a's helicity frame
(:mod:`fastsim.events.tree`), and every resonance at an inner node brings its
lineshape F_R(m_node). Internal helicities are summed; the parent's spin
projection M (``e+e-``: +-1 on the beam; ``unpolarised``: all) and the
helicities of spinning final-state particles label incoherent *spin states*.
All chains are summed coherently, and so are the permutations of identical
final-state particles (Bose symmetrisation, no 1/sqrt(n!) factor).

Couplings. A *component* is one chain with one resonance at each inner node;
exactly one of its resonances, the *carrier*, holds the free couplings: those
of the vertex that produces it. Every other vertex of the component has a
single coupling (one helicity pair, or one LS wave, after parity), fixed to 1.
A carrier's couplings are given in one of two bases:

* ``helicity``: one complex H_{lambda_b, lambda_c} per independent helicity
  pair; with parity conservation the partner is
  H_{-lb,-lc} = eta H_{lb,lc} (:func:`pwa.ls_basis.parity_partner_sign`);
* ``ls``: one complex g_LS per allowed wave (L <= l_max), with
  H_{lb,lc} = sum_LS g_LS sqrt((2L+1)/(2J_a+1)) <L 0 S d|J_a d> <s_b lb s_c -lc|S d>,
  d = lb - lc, each wave times its Blatt-Weisskopf factor B_L(q) (q the
  break-up momentum of the vertex at the event's masses, d = 1 GeV^-1).

Each (component, basis element) is an amplitude *term* k with coupling c_k:
A_s(x) = sum_k c_k sum_perm Ang_{k,s}(x_perm) prod_nodes F_{R}(m_node(x_perm)).

Spin alignment: a reaction with several chains (or identical particles) and
a spinning final-state particle would need Wigner rotations between the
chains' helicity frames; such reactions are refused with a message.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fastsim.events.particles import DecayChain, DecayNode, Reaction, particle_info
from fastsim.events.tree import chain_variables

from .lineshapes import blatt_weisskopf_squared
from .ls_basis import allowed_helicities, allowed_ls, independent_helicities, ls_to_helicity, parity_partner_sign
from .wigner import wigner_D_conj

#: A parent lighter than this width (GeV) decays weakly: no parity constraint at its vertex.
WEAK_WIDTH = 1e-10

#: Meson radius (GeV^-1) of the LS-basis barrier factors.
BARRIER_RADIUS = 1.0

BASES = ("helicity", "ls")


class AmplitudeError(ValueError):
    """A reaction or resonance the amplitude cannot describe.

    Attributes:
        resonance: index of the resonance at fault (None: the reaction).
        field: the card field at fault (``spin``, ``node``, ``couplings``, ...).
    """

    def __init__(self, message: str, resonance: int | None = None, field: str = "") -> None:
        super().__init__(message)
        self.resonance = resonance
        self.field = field


@dataclass(frozen=True)
class Resonance:
    """What the amplitude needs of a resonance: where it sits and its J^P.

    Attributes:
        name: the card's name.
        node: the inner-node label it sits at.
        spin, parity: J and P.
        basis: ``helicity`` or ``ls`` for the couplings it carries.
        l_max: highest orbital wave kept in the LS basis (None: all).
        carries: whether it carries the couplings of its production vertex.
    """

    name: str
    node: str
    spin: int
    parity: int
    basis: str = "helicity"
    l_max: int | None = None
    carries: bool = True


@dataclass(frozen=True)
class Spin:
    """J^P of a node, and whether it is massless (a photon has helicities +-J only)."""

    spin: int
    parity: int
    massless: bool = False
    c_parity: int | None = None


@dataclass(frozen=True)
class BasisElement:
    """One coupling of a vertex: the helicity couplings H_{lb,lc} it contributes.

    Attributes:
        key: ``(lb, lc)`` in the helicity basis, ``(L, S)`` in the LS basis.
        basis: ``helicity`` or ``ls``.
        table: ((lb, lc), coefficient) pairs, each non-zero.
        barrier_l: orbital wave whose barrier factor multiplies it (LS basis), else None.
    """

    key: tuple[int, int]
    basis: str
    table: tuple[tuple[tuple[int, int], float], ...]
    barrier_l: int | None = None

    @property
    def label(self) -> str:
        a, b = self.key
        if self.basis == "ls":
            return f"ls({a},{b})"
        return f"h({a:+d},{b:+d})"


@dataclass(frozen=True)
class Vertex:
    """A vertex a -> b c of one component, with its spins and parity rule."""

    node: DecayNode
    a: Spin
    b: Spin
    c: Spin
    parity_conserved: bool

    def basis(self, kind: str = "helicity", l_max: int | None = None) -> tuple[BasisElement, ...]:
        """The vertex's independent couplings in the helicity or LS basis."""
        a, b, c = self.a, self.b, self.c
        massless = (b.massless, c.massless)
        if kind == "helicity":
            pairs = independent_helicities(a.spin, a.parity, b.spin, b.parity, c.spin, c.parity,
                                           parity_conserved=self.parity_conserved, massless=massless)
            sign = parity_partner_sign(a.spin, a.parity, b.spin, b.parity, c.spin, c.parity)
            out = []
            for lb, lc in pairs:
                table = [((lb, lc), 1.0)]
                if self.parity_conserved and (lb, lc) != (-lb, -lc):
                    table.append(((-lb, -lc), float(sign)))
                out.append(BasisElement((lb, lc), "helicity", tuple(table)))
            return tuple(out)
        if kind == "ls":
            waves = allowed_ls(a.spin, a.parity, b.spin, b.parity, c.spin, c.parity,
                               parity_conserved=self.parity_conserved, l_max=l_max, massless=massless)
            hel = allowed_helicities(a.spin, b.spin, c.spin, massless=massless)
            out = []
            for L, S in waves:
                table = tuple(((lb, lc), v) for lb, lc in hel
                              if abs(v := ls_to_helicity(a.spin, b.spin, c.spin, L, S, lb, lc)) > 1e-14)
                if table:
                    out.append(BasisElement((L, S), "ls", table, barrier_l=L))
            return tuple(out)
        raise ValueError(f"unknown coupling basis {kind!r}; expected one of {', '.join(BASES)}")


@dataclass(frozen=True)
class Component:
    """One chain with one resonance per inner node.

    Attributes:
        chain: index into ``reaction.chains``.
        resonances: (node label, resonance index) for every inner node, top-down.
        carrier: index of the resonance holding the free couplings.
        vertices: every vertex of the chain, top-down.
        carrier_vertex: position in ``vertices`` of the carrier's production vertex.
    """

    chain: int
    resonances: tuple[tuple[str, int], ...]
    carrier: int
    vertices: tuple[Vertex, ...]
    carrier_vertex: int


@dataclass(frozen=True)
class Term:
    """An amplitude term: a component and one basis element of its carrier's vertex."""

    component: int
    element: BasisElement


def _spin_of_label(label: str, reaction: Reaction, at_node: Mapping[str, Resonance]) -> Spin:
    if label == reaction.parent:
        info = particle_info(reaction.parent)
        return Spin(info.spin, info.parity, c_parity=info.c_parity)
    if label in reaction.prefixes:
        info = particle_info(reaction.particle_of(label))
        return Spin(info.spin, info.parity, massless=info.mass == 0.0, c_parity=info.c_parity)
    r = at_node[label]
    return Spin(r.spin, r.parity)


def parent_parity_conserved(reaction: Reaction) -> bool:
    """Strong and electromagnetic decays conserve parity; a parent narrower than
    :data:`WEAK_WIDTH` (a D or B meson) decays weakly."""
    return particle_info(reaction.parent).width > WEAK_WIDTH


@dataclass(frozen=True)
class HelicityAmplitude:
    """The structure of a reaction's amplitude: components, terms, spin states.

    Build with :meth:`build`; :meth:`angular_factors` evaluates the per-event
    factors of one sample.

    Attributes:
        reaction: the reaction.
        resonances: the resonances, in card order.
        components: every component, in chain then card order.
        terms: every term; ``terms[k].component`` indexes ``components``.
        spin_states: (M, helicities of the spinning final-state particles...).
        permutations: identical-particle permutations summed over.
        mass_columns: (chain, node label, permutation index) of every node mass
            a lineshape needs, in the order of the ``masses`` array.
    """

    reaction: Reaction
    resonances: tuple[Resonance, ...]
    components: tuple[Component, ...]
    terms: tuple[Term, ...]
    spin_states: tuple[tuple[int, ...], ...]
    permutations: tuple[tuple[int, ...], ...]
    mass_columns: tuple[tuple[int, str, int], ...]

    @classmethod
    def build(cls, reaction: Reaction, resonances: Sequence[Resonance], *,
              parity_conserved: bool | None = None) -> "HelicityAmplitude":
        """Enumerate components and terms.

        Args:
            reaction: the reaction with its chains.
            resonances: the resonances, each at an inner node of some chain.
            parity_conserved: at the parent's vertex; default
                :func:`parent_parity_conserved`.

        Raises:
            ValueError: a resonance on no chain, a node without resonances, a
                component without (or with two) coupling carriers, a vertex
                forbidden by angular momentum or parity, or a reaction that
                needs spin alignment.
        """
        resonances = tuple(resonances)
        top_parity = parent_parity_conserved(reaction) if parity_conserved is None else parity_conserved
        perms = reaction.identical_permutations()
        _require_no_alignment(reaction, perms)
        inner = {label for chain in reaction.chains for label in chain.inner_labels}
        for r in resonances:
            if r.node not in inner:
                raise AmplitudeError(f"resonance {r.name!r} sits at node {r.node!r}, which is on no chain "
                                 f"(inner nodes: {', '.join(sorted(inner)) or 'none'})", resonances.index(r), "node")
        components: list[Component] = []
        for ci, chain in enumerate(reaction.chains):
            options = []
            for label in chain.inner_labels:
                here = [i for i, r in enumerate(resonances) if r.node == label]
                if not here:
                    raise ValueError(f"chain {chain}: no resonance sits at node {label!r}")
                options.append([(label, i) for i in here])
            for combo in itertools.product(*options):
                components.append(_component(reaction, ci, chain, combo, resonances, top_parity))
        states = tuple(itertools.product(reaction.spin_projections,
                                         *[_final_helicities(s, m == 0.0)
                                           for s, m in zip(reaction.spins, reaction.masses) if s > 0]))
        terms = []
        for k, comp in enumerate(components):
            carrier = resonances[comp.carrier]
            elements = comp.vertices[comp.carrier_vertex].basis(carrier.basis, carrier.l_max)
            if not elements:
                raise ValueError(f"resonance {carrier.name!r}: its production vertex "
                                 f"{comp.vertices[comp.carrier_vertex].node.label} has no allowed coupling")
            terms += [Term(k, e) for e in elements]
        columns = sorted({(c.chain, label, p) for c in components for label, _ in c.resonances
                          for p in range(len(perms))})
        return cls(reaction, resonances, tuple(components), tuple(terms), states, perms, tuple(columns))

    # --- per-event factors ---------------------------------------------------------

    def node_variables(self, momenta: np.ndarray) -> list[list[dict]]:
        """Tree variables of every chain for every permutation: ``[perm][chain][label]``."""
        out = []
        for perm in self.permutations:
            moved = {label: momenta[:, j] for label, j in zip(self.reaction.prefixes, perm)}
            out.append([chain_variables(chain, moved) for chain in self.reaction.chains])
        return out

    def angular_factors(self, momenta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-event factors of every (term, permutation) and the node masses.

        Args:
            momenta: (n, n_final, 4) four-momenta in ``reaction.prefixes`` order.

        Returns:
            ``ang`` (n_terms, n_perm, n_states, n) complex128 and ``masses``
            (n_columns, n) float64 in :attr:`mass_columns` order.
        """
        momenta = np.asarray(momenta, dtype=np.float64)
        variables = self.node_variables(momenta)
        n = momenta.shape[0]
        ang = np.zeros((len(self.terms), len(self.permutations), len(self.spin_states), n), np.complex128)
        for p, per_chain in enumerate(variables):
            # Components that differ only in their resonances' lineshapes (every f2 of R0) share
            # their helicity-pair amplitudes: computed once per angular structure and permutation.
            partials: dict = {}
            d_cache: dict = {}
            for k, term in enumerate(self.terms):
                comp = self.components[term.component]
                key = _structure_key(self, comp)
                if key not in partials:
                    partials[key] = _partial_amplitudes(self, comp, per_chain[comp.chain], d_cache)
                part = partials[key]
                total = sum(coef * part[pair] for pair, coef in term.element.table if pair in part)
                barrier = _barrier(comp.vertices[comp.carrier_vertex], term.element, per_chain[comp.chain],
                                   self.reaction)
                ang[k, p] = total * barrier
        masses = np.stack([variables[p][c][label].m for c, label, p in self.mass_columns]) \
            if self.mass_columns else np.zeros((0, n))
        return ang, masses

    def column(self, chain: int, label: str, perm: int) -> int:
        return self.mass_columns.index((chain, label, perm))


def _require_no_alignment(reaction: Reaction, perms: tuple[tuple[int, ...], ...]) -> None:
    """Refuse reactions whose spinning final-state particles would need Wigner rotations.

    One chain needs no alignment. A spinning final-state particle that is, in every chain, a direct daughter
    of the parent at the same place, and that no permutation moves, has its
    helicity defined along its own direction in the parent frame in every
    coherent term: the spin states agree and no alignment is needed (J/psi ->
    gamma pi0 pi0). Anything else (a photon deeper in one chain, identical
    spinning particles) would need Wigner rotations, which are not implemented.
    """
    for i, (label, spin) in enumerate(zip(reaction.prefixes, reaction.spins)):
        if spin == 0:
            continue
        places = {tuple(d.label for d in chain.root.daughters).index(label)
                  if label in (d.label for d in chain.root.daughters) else None for chain in reaction.chains}
        if len(reaction.chains) == 1 and all(perm[i] == i for perm in perms):
            continue
        if None in places or len(places) > 1 or any(perm[i] != i for perm in perms):
            raise AmplitudeError(
                f"{reaction}: the spinning final-state particle {label} is not a daughter of the parent at "
                "the same place in every chain (or is one of identical particles), so the chains' spin "
                "states would need alignment (Wigner rotations), which is not implemented")


def _final_helicities(spin: int, massless: bool) -> tuple[int, ...]:
    return (spin, -spin) if massless else tuple(range(spin, -spin - 1, -1))


def _component(reaction: Reaction, ci: int, chain: DecayChain, combo, resonances: tuple[Resonance, ...],
               top_parity: bool) -> Component:
    at_node = {label: resonances[i] for label, i in combo}
    vertices = []
    for node in chain.vertices:
        b, c = node.daughters
        vertex = Vertex(node, _spin_of_label(node.label, reaction, at_node),
                        _spin_of_label(b.label, reaction, at_node), _spin_of_label(c.label, reaction, at_node),
                        top_parity if node.label == reaction.parent else True)
        try:
            _check_allowed(vertex, reaction, at_node)
        except ValueError as exc:
            culprit = at_node.get(node.label) or next((at_node[d.label] for d in node.daughters
                                                       if d.label in at_node), None)
            index = resonances.index(culprit) if culprit is not None else None
            raise AmplitudeError(str(exc), index, "spin") from None
        vertices.append(vertex)
    carriers = [(label, i) for label, i in combo if resonances[i].carries]
    names = " ".join(resonances[i].name for _, i in combo)
    if len(carriers) != 1:
        raise ValueError(f"chain {chain} with {names}: exactly one resonance must carry couplings "
                         f"(found {len(carriers)}: {', '.join(resonances[i].name for _, i in carriers) or 'none'})")
    label, carrier = carriers[0]
    cv = next(v for v, vert in enumerate(vertices) if any(d.label == label for d in vert.node.daughters))
    for v, vert in enumerate(vertices):
        n_couplings = len(vert.basis("helicity")) if v != cv else 1
        if n_couplings != 1:
            raise ValueError(f"chain {chain} with {names}: vertex {vert.node.label} -> "
                             f"{' '.join(d.label for d in vert.node.daughters)} has {n_couplings} couplings; "
                             "only the carrier's production vertex may have several")
    return Component(ci, tuple(combo), carrier, tuple(vertices), cv)


def _check_allowed(vertex: Vertex, reaction: Reaction, at_node: Mapping[str, Resonance]) -> None:
    """Angular momentum, parity, Bose symmetry and C parity of a vertex."""
    a, b, c = vertex.a, vertex.b, vertex.c
    node = vertex.node
    where = f"{node.label} -> {node.daughters[0].label} {node.daughters[1].label}"
    who = at_node[node.label].name if node.label in at_node else node.label
    waves = allowed_ls(a.spin, a.parity, b.spin, b.parity, c.spin, c.parity,
                       parity_conserved=vertex.parity_conserved, massless=(b.massless, c.massless))
    labels = [d.label for d in node.daughters]
    identical = all(x in reaction.prefixes for x in labels) and \
        reaction.particle_of(labels[0]) == reaction.particle_of(labels[1])
    if identical and b.spin == 0:
        waves = tuple((L, S) for L, S in waves if L % 2 == 0)
        if not waves:
            raise ValueError(f"{who} (J^P = {a.spin}{'+' if a.parity > 0 else '-'}) cannot decay into two "
                             f"identical {reaction.particle_of(labels[0])} ({where}): Bose symmetry needs even J")
    if not waves:
        raise ValueError(f"{who} (J^P = {a.spin}{'+' if a.parity > 0 else '-'}): the decay {where} is "
                         "forbidden by angular momentum and parity")
    # C parity: a neutral pair of spinless charge conjugates has C = (-1)^L = (-1)^J.
    if node.label == reaction.parent and a.c_parity is not None:
        cs = [_c_parity(d, reaction, at_node) for d in node.daughters]
        if None not in cs and a.c_parity != cs[0] * cs[1]:
            raise ValueError(f"{where}: C parity {a.c_parity:+d} of {reaction.parent} is not the product "
                             f"{cs[0]:+d} x {cs[1]:+d} of its daughters' (a resonance decaying into a spinless "
                             "particle-antiparticle pair has C = (-1)^J)")


def _c_parity(node: DecayNode, reaction: Reaction, at_node: Mapping[str, Resonance]) -> int | None:
    if node.is_final:
        return particle_info(reaction.particle_of(node.label)).c_parity
    r = at_node[node.label]
    names = [reaction.particle_of(d.label) if d.is_final else None for d in node.daughters]
    if None in names:
        return None
    infos = [particle_info(x) for x in names]
    conjugate = infos[0].charge == -infos[1].charge and infos[0].mass == infos[1].mass
    if conjugate and infos[0].spin == 0 and infos[1].spin == 0:
        return (-1) ** r.spin
    return None


def _structure_key(model: HelicityAmplitude, comp: Component) -> tuple:
    """What a component's angular factors depend on: its chain and the J^P at every node."""
    return (comp.chain, comp.carrier_vertex,
            tuple((label, model.resonances[i].spin, model.resonances[i].parity) for label, i in comp.resonances))


def _partial_amplitudes(model: HelicityAmplitude, comp: Component, variables: Mapping,
                        d_cache: dict) -> dict[tuple[int, int], np.ndarray]:
    """(n_states, n) amplitude of a component for each helicity pair (lb, lc) of its carrier vertex.

    The carrier vertex's coupling is set to 1 for that pair and 0 for the
    others; every other vertex has its single coupling. Sums over the
    internal helicities: every inner node's helicity runs over -J..J; the
    parent's is M, the final-state particles' are given by the state. A term's
    factor is then sum over its table of coefficient x partial amplitude.

    Args:
        d_cache: D-functions already evaluated on these events, keyed by
            (chain, vertex label, J, lambda_a, delta); shared between components.
    """
    reaction = model.reaction
    spinning = [p for p, s in zip(reaction.prefixes, reaction.spins) if s > 0]
    vertices = comp.vertices
    inner = [v.node.label for v in vertices[1:]]
    inner_spin = {v.node.label: v.a for v in vertices[1:]}
    n = len(variables[reaction.parent].m)
    out: dict[tuple[int, int], np.ndarray] = {}

    def D(vertex: Vertex, la: int, delta: int) -> np.ndarray:
        key = (comp.chain, vertex.node.label, vertex.a.spin, la, delta)
        if key not in d_cache:
            var = variables[vertex.node.label]
            d_cache[key] = wigner_D_conj(vertex.a.spin, la, delta, var.phi, var.cos_theta)
        return d_cache[key]

    ranges = [range(-inner_spin[label].spin, inner_spin[label].spin + 1) for label in inner]
    for s, state in enumerate(model.spin_states):
        hel = {reaction.parent: state[0]}
        hel.update({p: 0 for p in reaction.prefixes})
        hel.update(dict(zip(spinning, state[1:])))
        for combo in itertools.product(*ranges):
            hel.update(dict(zip(inner, combo)))
            factor = 1.0
            arrays = []
            pair = None
            for v, vertex in enumerate(vertices):
                la = hel[vertex.node.label]
                lb, lc = (hel[d.label] for d in vertex.node.daughters)
                if abs(lb - lc) > vertex.a.spin or abs(la) > vertex.a.spin:
                    break
                if v == comp.carrier_vertex:
                    pair = (lb, lc)
                else:
                    h = _single_coupling(vertex, lb, lc)
                    if h == 0.0:
                        break
                    factor *= h
                arrays.append(D(vertex, la, lb - lc))
            else:
                prod = arrays[0] * factor
                for arr in arrays[1:]:
                    prod = prod * arr
                if pair not in out:
                    out[pair] = np.zeros((len(model.spin_states), n), np.complex128)
                out[pair][s] += prod
    return out


@functools.lru_cache(maxsize=4096)
def _single_coupling(vertex: Vertex, lb: int, lc: int) -> float:
    """H_{lb,lc} of a vertex with one coupling (fixed to 1 at its representative)."""
    (element,) = vertex.basis("helicity")
    return dict(element.table).get((lb, lc), 0.0)


def _barrier(vertex: Vertex, element: BasisElement, variables: Mapping, reaction: Reaction) -> np.ndarray | float:
    """B_L(q) of an LS wave at the event's masses (1 in the helicity basis)."""
    if element.barrier_l is None or element.barrier_l == 0:
        return 1.0

    def node_mass(node: DecayNode) -> np.ndarray | float:
        if node.is_final:
            return reaction.masses[reaction.index(node.label)]
        return variables[node.label].m

    m_a = node_mass(vertex.node)
    m_b, m_c = (node_mass(d) for d in vertex.node.daughters)
    m_a = np.asarray(m_a, dtype=np.float64)
    q2 = np.clip((m_a**2 - (m_b + m_c) ** 2) * (m_a**2 - (m_b - m_c) ** 2) / (4.0 * m_a**2), 0.0, None)
    return np.sqrt(np.asarray(blatt_weisskopf_squared(q2 * BARRIER_RADIUS**2, element.barrier_l)))
