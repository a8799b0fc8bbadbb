"""Exact flat three-body phase space for J/psi -> gamma P1 P2.

In the helicity variables flat phase space is uniform in
(cos theta_X, phi_X, cos theta_1, phi_1) and distributed in m = m(P1 P2) as
q(m) p(m), with q the photon momentum in the lab and p the P1 momentum in the
X rest frame (dPhi_3 ~ q p dm dOmega_X dOmega_1 for a massless photon).
The m distribution is sampled exactly by hit-or-miss against its maximum.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy import integrate, optimize

from .kinematics import two_body_momentum
from .particles import Reaction


class PhaseSpace:
    """Flat phase space of a :class:`Reaction` in helicity variables."""

    def __init__(self, reaction: Reaction) -> None:
        self.reaction = reaction

    def unnormalised_m_density(self, m: np.ndarray) -> np.ndarray:
        """q(m) p(m), zero outside the kinematic range."""
        M = self.reaction.parent_mass
        m = np.asarray(m, dtype=np.float64)
        inside = (m > self.reaction.m_min) & (m < self.reaction.m_max)
        q = np.where(inside, (M**2 - m**2) / (2.0 * M), 0.0)
        p = two_body_momentum(np.where(inside, m, M), self.reaction.m1, self.reaction.m2)
        return q * p

    @cached_property
    def m_norm(self) -> float:
        """Integral of q(m) p(m) over the kinematic range."""
        val, _ = integrate.quad(self.unnormalised_m_density, self.reaction.m_min,
                                self.reaction.m_max, limit=200, epsabs=0, epsrel=1e-12)
        return float(val)

    def m_density(self, m: np.ndarray) -> np.ndarray:
        """Normalised density of m under flat phase space (1/GeV)."""
        return self.unnormalised_m_density(m) / self.m_norm

    @cached_property
    def m_density_max(self) -> float:
        """Maximum of q(m) p(m), found numerically, with a 1e-6 safety margin."""
        lo, hi = self.reaction.m_min, self.reaction.m_max
        res = optimize.minimize_scalar(lambda x: -self.unnormalised_m_density(x),
                                       bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-12})
        grid = np.linspace(lo, hi, 20001)
        return float(max(-res.fun, self.unnormalised_m_density(grid).max()) * (1.0 + 1e-6))

    def sample_m(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Exact samples of m (hit-or-miss)."""
        out = np.empty(0)
        lo, hi, fmax = self.reaction.m_min, self.reaction.m_max, self.m_density_max
        while out.size < n:
            k = int(1.3 * (n - out.size)) + 16  # efficiency of the envelope is about 0.8
            m = rng.uniform(lo, hi, k)
            keep = rng.uniform(0.0, fmax, k) < self.unnormalised_m_density(m)
            out = np.concatenate([out, m[keep]])
        return out[:n]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Helicity variables (n, 5) of flat phase-space events."""
        m = self.sample_m(n, rng)
        ang = rng.uniform(size=(n, 4))
        return np.stack([
            m,
            2.0 * ang[:, 0] - 1.0,
            np.pi * (2.0 * ang[:, 1] - 1.0),
            2.0 * ang[:, 2] - 1.0,
            np.pi * (2.0 * ang[:, 3] - 1.0),
        ], axis=-1)

    @property
    def volume(self) -> float:
        """Integral of the flat density in (m, cos theta_X, phi_X, cos theta_1, phi_1)
        coordinates with unit weight q p: m_norm * (4 pi)^2."""
        return self.m_norm * (4.0 * np.pi) ** 2
