"""Particle masses and the reaction J/psi -> gamma P1 P2.

Masses in GeV, from ../shared/PHYSICS.md section 1 (PDG values).
"""

from __future__ import annotations

from dataclasses import dataclass

MASSES: dict[str, float] = {
    "J/psi": 3.096900,
    "gamma": 0.0,
    "K+": 0.493677,
    "K-": 0.493677,
    "K_S0": 0.497611,
    "pi+": 0.13957039,
    "pi-": 0.13957039,
    "pi0": 0.1349768,
}

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

# Neutral pairs of identical particles; the amplitude must be symmetrised for them.
IDENTICAL_PAIRS = {("K_S0", "K_S0"), ("pi0", "pi0")}


@dataclass(frozen=True)
class Reaction:
    """J/psi -> gamma P1 P2 with named column prefixes.

    Attributes:
        parent: name of the decaying particle (lab = its rest frame).
        particles: final-state particle names in the order (gamma, P1, P2).
        prefixes: event-file column prefix of each final-state particle.
    """

    parent: str = "J/psi"
    particles: tuple[str, str, str] = ("gamma", "K+", "K-")
    prefixes: tuple[str, str, str] = ("gamma", "Kp", "Km")

    def __post_init__(self) -> None:
        for name in (self.parent, *self.particles):
            if name not in MASSES:
                raise ValueError(f"unknown particle {name!r}; known: {sorted(MASSES)}")
        if self.particles[0] != "gamma":
            raise ValueError("the first final-state particle must be the photon")
        if len(set(self.prefixes)) != 3:
            raise ValueError(f"column prefixes must be distinct, got {self.prefixes}")

    @property
    def parent_mass(self) -> float:
        return MASSES[self.parent]

    @property
    def m1(self) -> float:
        return MASSES[self.particles[1]]

    @property
    def m2(self) -> float:
        return MASSES[self.particles[2]]

    @property
    def masses(self) -> tuple[float, float, float]:
        return tuple(MASSES[p] for p in self.particles)  # type: ignore[return-value]

    @property
    def m_min(self) -> float:
        """Lower kinematic limit of m(P1 P2)."""
        return self.m1 + self.m2

    @property
    def m_max(self) -> float:
        """Upper kinematic limit of m(P1 P2) (photon energy -> 0)."""
        return self.parent_mass

    @property
    def identical(self) -> bool:
        return (self.particles[1], self.particles[2]) in IDENTICAL_PAIRS

    @property
    def columns(self) -> list[str]:
        """Event-file four-momentum columns, (E, px, py, pz) per prefix."""
        return [f"{p}_{c}" for p in self.prefixes for c in ("E", "px", "py", "pz")]

    def to_dict(self) -> dict:
        return {"parent": self.parent, "final_state": dict(zip(self.prefixes, self.particles))}

    @classmethod
    def from_final_state(cls, final_state: dict[str, str], parent: str = "J/psi") -> "Reaction":
        """Build from a {prefix: particle} mapping with the photon first."""
        items = list(final_state.items())
        if len(items) != 3:
            raise ValueError(f"final_state needs three particles, got {len(items)}")
        prefixes = tuple(k for k, _ in items)
        particles = tuple(v for _, v in items)
        return cls(parent=parent, particles=particles, prefixes=prefixes)  # type: ignore[arg-type]


JPSI_GAMMA_KK = Reaction()
