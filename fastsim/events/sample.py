"""An event sample: final-state four-momenta of a reaction, optional weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .kinematics import four_momenta, helicity_variables
from .particles import Reaction


@dataclass(frozen=True, eq=False)
class Events:
    """Events of a reaction in the parent's rest frame.

    Attributes:
        momenta: (n_events, n_final, 4) four-momenta (E, px, py, pz) in GeV of
            the final-state particles in ``reaction.prefixes`` order (photon,
            P1, P2 for J/psi -> gamma P1 P2).
        weights: (n_events,) event weights, or None for unit weights.
        reaction: the reaction, which fixes masses and column prefixes;
            required and keyword-only: ``Events(momenta, weights, reaction=r)``.
    """

    momenta: np.ndarray
    weights: np.ndarray | None = None
    reaction: Reaction = field(kw_only=True)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reaction, Reaction):
            raise TypeError(f"Events needs the reaction its momenta belong to, as reaction=<Reaction> "
                            f"(e.g. model.reaction or events.reaction), got {self.reaction!r}")
        mom = np.ascontiguousarray(self.momenta, dtype=np.float64)
        shape = (self.reaction.n_final, 4)
        if mom.ndim != 3 or mom.shape[1:] != shape:
            raise ValueError(f"momenta must have shape (n, {shape[0]}, 4) for {self.reaction}, got {mom.shape}")
        object.__setattr__(self, "momenta", mom)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (mom.shape[0],):
                raise ValueError(f"weights must have shape ({mom.shape[0]},), got {w.shape}")
            object.__setattr__(self, "weights", w)

    def __len__(self) -> int:
        return self.momenta.shape[0]

    def __repr__(self) -> str:
        w = "weighted" if self.weights is not None else "unweighted"
        return f"Events(n={len(self)}, {w}, {' '.join(self.reaction.particles)})"

    @classmethod
    def from_helicity_variables(cls, hv: np.ndarray, reaction: Reaction,
                                weights: np.ndarray | None = None) -> "Events":
        """Events of the radiative-pair ``reaction`` from an (n, 5) array of helicity variables."""
        pg, p1, p2 = four_momenta(hv, reaction.parent_mass, reaction.m1, reaction.m2)
        ev = cls(np.stack([pg, p1, p2], axis=1), weights, reaction=reaction)
        ev._cache["hv"] = np.asarray(hv, dtype=np.float64)
        return ev

    def momentum(self, label: str) -> np.ndarray:
        """(n_events, 4) four-momenta of the final-state particle with this label (column prefix)."""
        return self.momenta[:, self.reaction.index(label)]

    def by_label(self) -> dict[str, np.ndarray]:
        """{label: (n_events, 4) four-momenta} of every final-state particle."""
        return {p: self.momenta[:, i] for i, p in enumerate(self.reaction.prefixes)}

    @property
    def helicity_variables(self) -> np.ndarray:
        """(n_events, 5): m, cos theta_X, phi_X, cos theta_1, phi_1 (computed once)."""
        if "hv" not in self._cache:
            self.reaction.require_radiative_pair("the five helicity variables")
            m = self.momenta
            self._cache["hv"] = helicity_variables(m[:, 0], m[:, 1], m[:, 2])
        return self._cache["hv"]

    @property
    def weight_array(self) -> np.ndarray:
        """Weights, ones if the sample is unweighted."""
        return np.ones(len(self)) if self.weights is None else self.weights

    def subset(self, index: np.ndarray | slice) -> "Events":
        w = None if self.weights is None else self.weights[index]
        ev = Events(self.momenta[index], w, reaction=self.reaction)
        if "hv" in self._cache:
            ev._cache["hv"] = self._cache["hv"][index]
        return ev

    @staticmethod
    def concatenate(parts: list["Events"]) -> "Events":
        if not parts:
            raise ValueError("nothing to concatenate")
        reaction = parts[0].reaction
        if any(p.reaction != reaction for p in parts):
            raise ValueError("cannot concatenate events of different reactions")
        weighted = any(p.weights is not None for p in parts)
        w = np.concatenate([p.weight_array for p in parts]) if weighted else None
        ev = Events(np.concatenate([p.momenta for p in parts]), w, reaction=reaction)
        if all("hv" in p._cache for p in parts):
            ev._cache["hv"] = np.concatenate([p._cache["hv"] for p in parts])
        return ev
