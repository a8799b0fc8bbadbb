"""From a model card to the amplitude's structure: which coupling feeds which term.

:func:`build_structure` turns a validated card into a
:class:`~pwa.helicity.HelicityAmplitude` whose terms are exactly the
couplings the card lists, in card order, and names each coupling's free
parameters. The card's validation calls it too, so that every problem the
amplitude finds (a forbidden J^P, a coupling that the vertex does not have, a
resonance on no chain) is reported as a card error naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fastsim.events.particles import particle_info

from .card import parse_coupling_key
from .helicity import AmplitudeError, HelicityAmplitude, Resonance, Term
from .lineshapes import LINESHAPES, LineshapeContext

if TYPE_CHECKING:
    from fastsim.events import Reaction

    from .card import ModelCard, ResonanceCard


@dataclass(frozen=True)
class CouplingSlot:
    """One free complex coupling of the card.

    Attributes:
        resonance: index of the carrier in the card's resonances.
        key: the card's key.
        label: parameter label, ``c1`` (lambda_R of J/psi -> gamma P P cards),
            ``h(+1,+2)`` (helicity basis) or ``ls(1,1)`` (LS basis).
        value: (magnitude, phase) from the card.
    """

    resonance: int
    key: int | str
    label: str
    value: tuple[float, float]


@dataclass(frozen=True)
class ModelStructure:
    """The amplitude of a card, one term per :class:`CouplingSlot`.

    Attributes:
        amplitude: the helicity amplitude with ``terms[k]`` fed by ``slots[k]``.
        slots: the card's couplings in card order.
        daughter_masses: per resonance (card order), the masses of its node's
            two daughters (the lineshape's kinematics).
    """

    amplitude: HelicityAmplitude
    slots: tuple[CouplingSlot, ...]
    daughter_masses: tuple[tuple[float, float], ...]

    @property
    def carriers(self) -> tuple[int, ...]:
        """Card indices of the resonances that carry couplings (the fit-fraction components)."""
        return tuple(dict.fromkeys(s.resonance for s in self.slots))


def _node_of(r: "ResonanceCard", reaction: "Reaction", where: str) -> str:
    if r.node is not None:
        return r.node
    inner = sorted({label for chain in reaction.chains for label in chain.inner_labels})
    if len(inner) != 1:
        raise ValueError(f"{where}.node: missing; the reaction's chains have the inner nodes "
                         f"{', '.join(inner)}, so the card must say where {r.name!r} sits")
    return inner[0]


def _daughters(node: str, reaction: "Reaction", where: str) -> tuple[float, float]:
    found = set()
    for chain in reaction.chains:
        if node in chain.inner_labels:
            daughters = chain.node(node).daughters
            if not all(d.is_final for d in daughters):
                raise ValueError(f"{where}: node {node!r} decays into another resonance "
                                 f"({' '.join(d.label for d in daughters)}); lineshapes of cascades are "
                                 "not implemented")
            found.add(tuple(reaction.masses[reaction.index(d.label)] for d in daughters))
    if len(found) != 1:
        raise ValueError(f"{where}: node {node!r} decays into particles of different masses in "
                         "different chains")
    return found.pop()


def _spin_parity(r: "ResonanceCard", node: str, reaction: "Reaction", where: str) -> tuple[int, int]:
    """J^P from the card (PDG defaults filled in); natural parity for a decay into two spinless particles."""
    if r.spin is None:
        raise ValueError(f"{where}.spin: missing, and {r.name!r} is not a PDG particle name")
    if r.parity is not None:
        return r.spin, r.parity
    chain = next(c for c in reaction.chains if node in c.inner_labels)
    a, b = (particle_info(reaction.particle_of(d.label)) for d in chain.node(node).daughters)
    if a.spin or b.spin:
        raise ValueError(f"{where}.parity: missing, and {r.name!r} is not a PDG particle name")
    return r.spin, a.parity * b.parity * (-1) ** r.spin


def build_structure(card: "ModelCard") -> ModelStructure:
    """The amplitude structure of a card (raises ValueError naming the field)."""
    reaction = card.reaction.to_reaction()
    resonances, masses = [], []
    for i, r in enumerate(card.resonances):
        where = f"resonances[{i}] ({r.name})"
        node = _node_of(r, reaction, where)
        inner = sorted({label for chain in reaction.chains for label in chain.inner_labels})
        if node not in inner:
            raise ValueError(f"{where}.node: {node!r} is on no chain (inner nodes: {', '.join(inner)})")
        masses.append(_daughters(node, reaction, where))
        spin, parity = _spin_parity(r, node, reaction, where)
        check = LINESHAPES[r.lineshape_type].validate
        problems = check(r.lineshape_parameters, LineshapeContext(spin, *masses[-1])) if check else []
        if problems:
            raise ValueError(f"{where}.lineshape: {problems[0]}")
        resonances.append(Resonance(r.name, node, spin, parity, r.basis, r.l_max, r.couplings is not None))
    try:
        amplitude = HelicityAmplitude.build(reaction, resonances, parity_conserved=card.reaction.parity_conserved)
    except AmplitudeError as exc:
        if exc.resonance is None:
            raise ValueError(f"reaction: {exc}") from None
        where = f"resonances[{exc.resonance}] ({card.resonances[exc.resonance].name})"
        raise ValueError(f"{where}{'.' + exc.field if exc.field else ''}: {exc}") from None
    by_carrier: dict[int, list[Term]] = {}
    for term in amplitude.terms:
        by_carrier.setdefault(amplitude.components[term.component].carrier, []).append(term)
    terms, slots = [], []
    for i, r in enumerate(card.resonances):
        if r.couplings is None:
            continue
        where = f"resonances[{i}] ({r.name}).couplings"
        available = {t.element.key: t for t in by_carrier.get(i, [])}
        comp = amplitude.components[by_carrier[i][0].component] if i in by_carrier else None
        vertex = comp.vertices[comp.carrier_vertex].node if comp else None
        for key, value in r.couplings.items():
            parsed = parse_coupling_key(key)
            if isinstance(parsed, int):
                parsed = _radiative_key(parsed, vertex, reaction, where)
            if parsed not in available:
                names = ", ".join(f'"{a:+d} {b:+d}"' if r.basis == "helicity" else f'"{a} {b}"'
                                  for a, b in available)
                what = "helicity pair" if r.basis == "helicity" else "(L, S) wave"
                at = f"{vertex.label} -> {' '.join(d.label for d in vertex.daughters)}" if vertex else "?"
                raise ValueError(f"{where}: {key!r} is not an independent {what} of the vertex {at} "
                                 f"(expected one of {names or 'none'})")
            term = available[parsed]
            label = f"c{key}" if isinstance(key, int) else term.element.label
            terms.append(term)
            slots.append(CouplingSlot(i, key, label, (float(value[0]), float(value[1]))))
    return ModelStructure(replace(amplitude, terms=tuple(terms)), tuple(slots), tuple(masses))


def _radiative_key(lr: int, vertex, reaction: "Reaction", where: str) -> tuple[int, int]:
    """lambda_R of a J/psi -> gamma P P card -> (lambda_R, lambda_gamma = +1) at ``parent -> X gamma``."""
    if vertex is None or len(vertex.daughters) != 2 or not vertex.daughters[1].is_final or \
            reaction.particle_of(vertex.daughters[1].label) != "gamma":
        raise ValueError(f"{where}: integer keys (lambda_R) are for a 'parent -> X gamma' vertex; "
                         "give helicity pairs such as \"+1 0\"")
    return (lr, 1)
