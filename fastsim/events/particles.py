"""Particles and reactions: a reaction is data (parent, final state, decay chains).

A :class:`Reaction` names the decaying parent, its final-state particles (each
with an event-file column prefix, the particle's *label*) and the decay chains
as trees of two-body decays, for example::

    psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2

Leaves are final-state labels; inner nodes (``phi``, ``f``) are places where
resonances of the model card sit. Nothing indexes "column 1 is the first
kaon": kinematics (:mod:`fastsim.events.tree`), phase space
(:mod:`fastsim.events.nbody`), the detector and the amplitude all take the
reaction as an argument.

Particle data (masses, widths, J^P, charges) comes from scikit-hep's
``particle`` package (PDG tables). The masses of the first version (PHYSICS.md
section 1) are kept as overrides so that every committed result stays
reproducible; they agree with the package to the digits PHYSICS.md prints.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

#: Masses of PHYSICS.md section 1 (GeV): they take precedence over the PDG package.
MASSES: dict[str, float] = {
    "J/psi": 3.096900,
    "psi(2S)": 3.686097,
    "gamma": 0.0,
    "K+": 0.493677,
    "K-": 0.493677,
    "K_S0": 0.497611,
    "pi+": 0.13957039,
    "pi-": 0.13957039,
    "pi0": 0.1349768,
    "D0": 1.86484,
}

#: Card spellings -> names in the ``particle`` package.
ALIASES: dict[str, str] = {
    "J/psi": "J/psi(1S)",
    "psi(2S)": "psi(2S)",
    "phi": "phi(1020)",
    "D0": "D0",
    "anti-D0": "D~0",
    "K_S0": "K(S)0",
    "K_L0": "K(L)0",
    "gamma": "gamma",
}

#: Production modes of the parent: ``e+e-`` (spin projection M = +-1 on the
#: beam axis, summed incoherently) or ``unpolarised`` (every M, incoherently).
PRODUCTIONS = ("e+e-", "unpolarised")

# Default column prefixes of each particle in event files.
DEFAULT_PREFIX: dict[str, str] = {
    "gamma": "gamma",
    "K+": "Kp",
    "K-": "Km",
    "K_S0": "KS",
    "pi+": "pip",
    "pi-": "pim",
    "pi0": "pi0",
}


@dataclass(frozen=True)
class ParticleInfo:
    """PDG data of one particle.

    Attributes:
        name: the card's spelling.
        mass, width: GeV.
        spin: J (integer spins only).
        parity: intrinsic parity, +1 or -1.
        c_parity: C parity, or None when not a C eigenstate.
        charge: in units of e.
    """

    name: str
    mass: float
    width: float
    spin: int
    parity: int
    c_parity: int | None
    charge: int


_SHORT_NAME = re.compile(r"^([a-zA-Z]+)(\d)(['~]*)(\(\d+\).*)$")


def _pdg_spelling(name: str) -> str:
    """``f0(980)`` -> ``f(0)(980)``, ``f2'(1525)`` -> ``f(2)'(1525)`` (the package's spelling)."""
    match = _SHORT_NAME.match(name)
    return f"{match[1]}({match[2]}){match[3]}{match[4]}" if match else name


@lru_cache(maxsize=None)
def particle_info(name: str) -> ParticleInfo:
    """PDG data of a particle from the ``particle`` package (masses of :data:`MASSES` win).

    Raises:
        ValueError: an unknown name (the message lists how to spell it).
    """
    from particle import Particle
    from particle.particle.particle import ParticleNotFound

    pdg_name = ALIASES.get(name) or _pdg_spelling(name)
    try:
        p = Particle.from_name(pdg_name)
    except ParticleNotFound:
        found = Particle.findall(name=pdg_name) or Particle.findall(pdg_name)
        hint = f"; did you mean {', '.join(sorted({q.name for q in found})[:5])}?" if found else ""
        raise ValueError(f"unknown particle {name!r} (names as in the PDG 'particle' package, "
                         f"e.g. K+, pi0, psi(2S), D0){hint}") from None
    if p.J is None or float(p.J) != int(p.J):
        raise ValueError(f"particle {name!r} has spin {p.J}: only integer spins are supported")
    mass = MASSES.get(name, round((p.mass or 0.0) / 1000.0, 12))
    width = round((p.width or 0.0) / 1000.0, 15)
    parity = int(p.P) if p.P in (1, -1) else 1
    c_parity = int(p.C) if p.C in (1, -1) else None
    return ParticleInfo(name, float(mass), float(width), int(p.J), parity, c_parity, int(round(p.charge)))


def mass(name: str) -> float:
    """Mass of a particle (GeV)."""
    return particle_info(name).mass


_DECAY = re.compile(r"^\s*(\S+)\s*->\s*(\S+)\s+(\S+)\s*$")


@dataclass(frozen=True)
class DecayNode:
    """A node of a decay tree: a final-state label (no daughters) or a two-body decay.

    Attributes:
        label: final-state label (column prefix), an inner node's label, or the parent.
        daughters: () for a final-state particle, else the two daughters in
            the order written; the first daughter's direction gives the angles
            of this node's decay.
    """

    label: str
    daughters: tuple["DecayNode", ...] = ()

    @property
    def is_final(self) -> bool:
        return not self.daughters

    @property
    def leaves(self) -> tuple[str, ...]:
        """Final-state labels below this node, left to right."""
        if self.is_final:
            return (self.label,)
        return tuple(x for d in self.daughters for x in d.leaves)

    def decays(self) -> tuple["DecayNode", ...]:
        """This node and every decaying node below it, parents before children."""
        if self.is_final:
            return ()
        return (self,) + tuple(x for d in self.daughters for x in d.decays())

    def __str__(self) -> str:
        return "; ".join(f"{n.label} -> {n.daughters[0].label} {n.daughters[1].label}"
                         for n in self.decays())


@dataclass(frozen=True)
class DecayChain:
    """One decay chain of a reaction: a tree of two-body decays.

    Attributes:
        root: the parent's node (its label is the parent's name).
    """

    root: DecayNode

    @property
    def vertices(self) -> tuple[DecayNode, ...]:
        """Every decaying node, the parent first, parents before children."""
        return self.root.decays()

    @property
    def inner_labels(self) -> tuple[str, ...]:
        """Labels of the intermediate nodes (where resonances sit), top-down."""
        return tuple(n.label for n in self.vertices[1:])

    def node(self, label: str) -> DecayNode:
        for n in self.vertices:
            if n.label == label:
                return n
        raise KeyError(label)

    def parent_of(self, label: str) -> DecayNode:
        for n in self.vertices:
            if any(d.label == label for d in n.daughters):
                return n
        raise KeyError(label)

    def __str__(self) -> str:
        return str(self.root)


def parse_chain(text: str, parent: str, final_labels: tuple[str, ...]) -> DecayChain:
    """Parse ``"psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"``.

    Args:
        text: two-body decays separated by ``;``; the first decays the parent.
        parent: the parent's name.
        final_labels: the final-state labels (every one must be a leaf exactly once).

    Raises:
        ValueError: naming what is wrong (a decay that is not two-body, a
            label used twice, a chain that does not end in the final state).
    """
    decays: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    for part in [p for p in text.split(";") if p.strip()]:
        match = _DECAY.match(part)
        if not match:
            raise ValueError(f"chain {text!r}: {part.strip()!r} is not a two-body decay 'A -> B C'")
        a, b, c = match.groups()
        if a in decays:
            raise ValueError(f"chain {text!r}: {a!r} decays twice")
        if a in final_labels:
            raise ValueError(f"chain {text!r}: final-state particle {a!r} cannot decay")
        decays[a] = (b, c)
        order.append(a)
    if not order:
        raise ValueError(f"chain {text!r}: no decay")
    if order[0] != parent:
        raise ValueError(f"chain {text!r}: the first decay must be of the parent {parent!r}, not {order[0]!r}")
    used: list[str] = []

    def build(label: str, depth: int) -> DecayNode:
        if depth > len(order) + 1:
            raise ValueError(f"chain {text!r}: {label!r} decays into itself")
        used.append(label)
        if label in decays:
            return DecayNode(label, tuple(build(d, depth + 1) for d in decays[label]))
        if label not in final_labels:
            raise ValueError(f"chain {text!r}: {label!r} neither decays nor is a final-state particle "
                             f"({', '.join(final_labels)})")
        return DecayNode(label)

    root = build(parent, 0)
    twice = sorted({u for u in used if used.count(u) > 1})
    if twice:
        raise ValueError(f"chain {text!r}: {twice[0]!r} appears more than once")
    unused = [a for a in order if a not in used]
    if unused:
        raise ValueError(f"chain {text!r}: {unused[0]!r} decays but is not produced in the chain")
    missing = [f for f in final_labels if f not in root.leaves]
    if missing:
        raise ValueError(f"chain {text!r} does not end in the final state: {', '.join(missing)} missing")
    return DecayChain(root)


@dataclass(frozen=True)
class Reaction:
    """A decaying parent at rest, its final state and its decay chains.

    The default is the first version's J/psi -> gamma K+ K- with the one chain
    ``J/psi -> X gamma; X -> Kp Km``.

    Attributes:
        parent: name of the decaying particle (lab = its rest frame, z = beam).
        particles: final-state particle names, in event-file order.
        prefixes: event-file column prefix (label) of each final-state particle.
        chains: the decay chains; empty means the default chain of a
            three-body radiative decay (``parent -> X photon; X -> P1 P2``).
        production: one of :data:`PRODUCTIONS`.
    """

    parent: str = "J/psi"
    particles: tuple[str, ...] = ("gamma", "K+", "K-")
    prefixes: tuple[str, ...] = ("gamma", "Kp", "Km")
    chains: tuple[DecayChain, ...] = ()
    production: str = "e+e-"

    def __post_init__(self) -> None:
        for name in (self.parent, *self.particles):
            particle_info(name)
        if len(self.particles) < 2:
            raise ValueError(f"a final state needs at least two particles, got {len(self.particles)}")
        if len(self.prefixes) != len(self.particles):
            raise ValueError(f"{len(self.prefixes)} column prefixes for {len(self.particles)} particles")
        if len(set(self.prefixes)) != len(self.prefixes):
            raise ValueError(f"column prefixes must be distinct, got {self.prefixes}")
        if self.production not in PRODUCTIONS:
            raise ValueError(f"production {self.production!r}: expected one of {', '.join(PRODUCTIONS)}")
        if self.parent_mass <= sum(self.masses):
            raise ValueError(f"{self.parent} ({self.parent_mass} GeV) is below the threshold of "
                             f"{' '.join(self.particles)} ({sum(self.masses):.6f} GeV)")
        if not self.chains:
            if not self.is_radiative_pair:
                raise ValueError("a reaction other than parent -> photon P1 P2 needs its decay chains")
            text = f"{self.parent} -> X {self.prefixes[0]}; X -> {self.prefixes[1]} {self.prefixes[2]}"
            object.__setattr__(self, "chains", (parse_chain(text, self.parent, self.prefixes),))
        for chain in self.chains:
            if chain.root.label != self.parent or sorted(chain.root.leaves) != sorted(self.prefixes):
                raise ValueError(f"chain {chain} does not decay {self.parent} into {', '.join(self.prefixes)}")

    # --- the final state ------------------------------------------------------

    @property
    def n_final(self) -> int:
        return len(self.particles)

    @property
    def parent_mass(self) -> float:
        return particle_info(self.parent).mass

    @property
    def parent_spin(self) -> int:
        return particle_info(self.parent).spin

    @property
    def masses(self) -> tuple[float, ...]:
        return tuple(particle_info(p).mass for p in self.particles)

    @property
    def spins(self) -> tuple[int, ...]:
        return tuple(particle_info(p).spin for p in self.particles)

    def index(self, label: str) -> int:
        """Position of a final-state label in event-file order."""
        return self.prefixes.index(label)

    def particle_of(self, label: str) -> str:
        return self.particles[self.index(label)]

    @property
    def columns(self) -> list[str]:
        """Event-file four-momentum columns, (E, px, py, pz) per prefix."""
        return [f"{p}_{c}" for p in self.prefixes for c in ("E", "px", "py", "pz")]

    @property
    def spin_projections(self) -> tuple[int, ...]:
        """Parent spin projections M summed incoherently."""
        if self.production == "e+e-":
            return (1, -1)
        j = self.parent_spin
        return tuple(range(j, -j - 1, -1))

    def identical_permutations(self) -> tuple[tuple[int, ...], ...]:
        """Permutations of the final state that exchange identical particles only.

        Each entry is a tuple ``perm`` such that ``momenta[:, perm]`` is the event
        with identical particles swapped; the identity comes first. K+ K- K+ K-
        has four, gamma pi0 pi0 two, K- pi+ pi0 one.
        """
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(self.particles):
            groups.setdefault(p, []).append(i)
        per_group = [list(itertools.permutations(idx)) for idx in groups.values()]
        out = []
        for combo in itertools.product(*per_group):
            perm = list(range(self.n_final))
            for idx, img in zip(groups.values(), combo):
                for i, j in zip(idx, img):
                    perm[i] = j
            out.append(tuple(perm))
        return tuple(out)

    @property
    def has_identical_particles(self) -> bool:
        return len(set(self.particles)) < self.n_final

    # --- the first version's three-body radiative decay -------------------------

    @property
    def is_radiative_pair(self) -> bool:
        """parent -> photon P1 P2 with the photon first (the five-variable reaction)."""
        return self.n_final == 3 and self.particles[0] == "gamma"

    def require_radiative_pair(self, what: str) -> None:
        if not self.is_radiative_pair:
            raise ValueError(f"{what} is defined for parent -> gamma P1 P2 only, not for {self}")

    @property
    def m1(self) -> float:
        self.require_radiative_pair("m1")
        return self.masses[1]

    @property
    def m2(self) -> float:
        self.require_radiative_pair("m2")
        return self.masses[2]

    @property
    def m_min(self) -> float:
        """Lower kinematic limit of m(P1 P2)."""
        self.require_radiative_pair("m_min")
        return self.m1 + self.m2

    @property
    def m_max(self) -> float:
        """Upper kinematic limit of m(P1 P2) (photon energy -> 0)."""
        self.require_radiative_pair("m_max")
        return self.parent_mass

    @property
    def identical(self) -> bool:
        """Whether P1 and P2 of parent -> gamma P1 P2 are identical."""
        self.require_radiative_pair("identical")
        return self.particles[1] == self.particles[2]

    # --- description ----------------------------------------------------------------

    def __str__(self) -> str:
        return f"{self.parent} -> {' '.join(self.particles)}"

    def to_dict(self) -> dict:
        out = {"parent": self.parent, "final_state": dict(zip(self.prefixes, self.particles))}
        default = Reaction(self.parent, self.particles, self.prefixes) if self.is_radiative_pair else None
        if default is None or default.chains != self.chains:
            out["chains"] = [str(c) for c in self.chains]
        if self.production != "e+e-":
            out["production"] = self.production
        return out

    @classmethod
    def from_final_state(cls, final_state: dict[str, str], parent: str = "J/psi", *,
                         chains: list[str] | tuple[str, ...] = (), production: str | None = None) -> "Reaction":
        """Build from a {prefix: particle} mapping and chain texts.

        ``production`` defaults to ``e+e-`` for a 1-- parent and to
        ``unpolarised`` otherwise.
        """
        items = list(final_state.items())
        prefixes = tuple(k for k, _ in items)
        particles = tuple(v for _, v in items)
        for name in (parent, *particles):
            particle_info(name)
        if production is None:
            info = particle_info(parent)
            production = "e+e-" if (info.spin, info.parity, info.c_parity) == (1, -1, -1) else "unpolarised"
        parsed = tuple(parse_chain(c, parent, prefixes) for c in chains)
        return cls(parent=parent, particles=particles, prefixes=prefixes, chains=parsed, production=production)


JPSI_GAMMA_KK = Reaction()
