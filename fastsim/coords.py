"""Physical helicity variables <-> model coordinates on the unit box.

The physical region of J/psi -> gamma P1 P2 in the helicity variables
(m, cos theta_X, phi_X, cos theta_1, phi_1) is exactly the box
[m_min, m_max] x [-1, 1] x [-pi, pi) x [-1, 1] x [-pi, pi). Each variable is
mapped onto [0, 1]:

    u_cos = (cos + 1) / 2
    u_phi = (phi + pi) / (2 pi)      (periodic: u_phi = 0 and 1 are the same point)
    u_m   = G(m)                     (m_map = "phase_space", the default), or
    u_m   = (m - m_min) / (m_max - m_min)   (m_map = "affine")

G is the cumulative distribution of m under flat phase space, whose density
q(m) p(m) rises like sqrt(m - m_min) at the P1 P2 threshold and falls like
sqrt(m_max - m) at the end point. Those square-root edges cannot be drawn by a
spline flow with finite end derivatives; after u_m = G(m) the density the flow
has to learn in u_m is (detector-level density) / (phase-space density), i.e.
acceptance x efficiency x resolution effects, smooth and of order one
everywhere, including at threshold where an S wave such as the f0(980) lives.
G is tabulated (piecewise linear on a grid clustered at both end points, so
its inverse is exact and cheap); the log-Jacobian log|du/dhv| of an event is
the log slope of its segment plus the constant of the affine coordinates, so
the density of a model on the unit box becomes an exactly normalised density
in the physical variables. Plain numpy (float64); the torch side calls it on
arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fastsim.events import HELICITY_VARIABLES, JPSI_GAMMA_KK, Reaction, two_body_momentum

#: Index of the periodic coordinates (phi_X, phi_1) in ``HELICITY_VARIABLES``.
CIRCULAR = (2, 4)


#: Grid points of the tabulated phase-space map G(m).
M_GRID_POINTS = 8193
M_MAPS = ("phase_space", "affine")


@dataclass(frozen=True)
class CoordinateMap:
    """Map of the helicity variables onto the unit box [0, 1]^5.

    Attributes:
        m_min, m_max: kinematic range of m(P1 P2) in GeV.
        m_map: ``"phase_space"`` (u_m = phase-space CDF of m) or ``"affine"``.
        parent_mass, m1, m2: masses of the reaction (GeV), needed by the
            phase-space map.
    """

    m_min: float
    m_max: float
    m_map: str = "affine"
    parent_mass: float | None = None
    m1: float | None = None
    m2: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.m_min) and np.isfinite(self.m_max) and self.m_max > self.m_min):
            raise ValueError(f"need m_min < m_max, got [{self.m_min}, {self.m_max}]")
        if self.m_map not in M_MAPS:
            raise ValueError(f"unknown m map {self.m_map!r}; choose one of {', '.join(M_MAPS)}")
        if self.m_map == "phase_space" and None in (self.parent_mass, self.m1, self.m2):
            raise ValueError("the phase-space m map needs parent_mass, m1 and m2")

    @classmethod
    def for_reaction(cls, reaction: Reaction = JPSI_GAMMA_KK, m_map: str = "phase_space") -> "CoordinateMap":
        return cls(m_min=reaction.m_min, m_max=reaction.m_max, m_map=m_map,
                   parent_mass=reaction.parent_mass, m1=reaction.m1, m2=reaction.m2)

    @property
    def variables(self) -> tuple[str, ...]:
        return HELICITY_VARIABLES

    @property
    def circular(self) -> tuple[int, ...]:
        return CIRCULAR

    @property
    def _low(self) -> np.ndarray:
        return np.array([self.m_min, -1.0, -np.pi, -1.0, -np.pi])

    @property
    def _width(self) -> np.ndarray:
        return np.array([self.m_max - self.m_min, 2.0, 2.0 * np.pi, 2.0, 2.0 * np.pi])

    @cached_property
    def _m_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(m grid, G(m) on it): trapezoid CDF of q(m) p(m) on a grid clustered at both ends."""
        s = np.linspace(0.0, 1.0, M_GRID_POINTS)
        grid = self.m_min + (self.m_max - self.m_min) * 0.5 * (1.0 - np.cos(np.pi * s))
        dens = _phase_space_m_density(grid, self.parent_mass, self.m1, self.m2)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
        cdf /= cdf[-1]
        return grid, cdf

    def m_to_unit(self, m: np.ndarray) -> np.ndarray:
        """u_m of masses m (not clipped: outside [m_min, m_max] maps outside [0, 1])."""
        m = np.asarray(m, dtype=np.float64)
        if self.m_map == "affine":
            return (m - self.m_min) / (self.m_max - self.m_min)
        grid, cdf = self._m_table
        u = np.interp(m, grid, cdf)
        # np.interp clamps; keep "outside maps outside" for points beyond the range
        return np.where(m < self.m_min, m - self.m_min, np.where(m > self.m_max, 1.0 + m - self.m_max, u))

    def m_from_unit(self, u: np.ndarray) -> np.ndarray:
        """m of u_m in [0, 1]."""
        u = np.asarray(u, dtype=np.float64)
        if self.m_map == "affine":
            return self.m_min + u * (self.m_max - self.m_min)
        grid, cdf = self._m_table
        return np.interp(u, cdf, grid)

    def log_det(self, hv: np.ndarray) -> np.ndarray:
        """(n,) log |det du/dhv| of each event (constant for the affine map)."""
        hv = np.asarray(hv, dtype=np.float64)
        const = -np.sum(np.log(self._width[1:]))
        if self.m_map == "affine":
            return np.full(len(hv), const - np.log(self.m_max - self.m_min))
        grid, cdf = self._m_table
        seg = np.clip(np.searchsorted(grid, hv[:, 0], side="right") - 1, 0, len(grid) - 2)
        slope = (cdf[seg + 1] - cdf[seg]) / (grid[seg + 1] - grid[seg])
        with np.errstate(divide="ignore"):
            return const + np.log(slope)

    def to_unit(self, hv: np.ndarray) -> np.ndarray:
        """(n, 5) helicity variables -> (n, 5) unit-box coordinates.

        Azimuths are wrapped into [0, 1); m and the cosines are *not* clipped,
        so a point outside the physical region maps outside the box.
        """
        hv = np.asarray(hv, dtype=np.float64)
        if hv.ndim != 2 or hv.shape[1] != 5:
            raise ValueError(f"expected (n, 5) helicity variables, got {hv.shape}")
        u = (hv - self._low) / self._width
        u[:, 0] = self.m_to_unit(hv[:, 0])
        for i in CIRCULAR:
            u[:, i] = np.mod(u[:, i], 1.0)
        return u

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """(n, 5) unit-box coordinates -> (n, 5) helicity variables (clipped to the box)."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if u.ndim != 2 or u.shape[1] != 5:
            raise ValueError(f"expected (n, 5) unit coordinates, got {u.shape}")
        hv = self._low + u * self._width
        hv[:, 0] = self.m_from_unit(u[:, 0])
        return hv

    def inside(self, hv: np.ndarray) -> np.ndarray:
        """(n,) bool: inside the physical region (azimuths are always inside)."""
        hv = np.asarray(hv, dtype=np.float64)
        return ((hv[:, 0] >= self.m_min) & (hv[:, 0] <= self.m_max)
                & (np.abs(hv[:, 1]) <= 1.0) & (np.abs(hv[:, 3]) <= 1.0)
                & np.all(np.isfinite(hv), axis=1))

    def to_dict(self) -> dict:
        d = {"kind": "affine_unit_box" if self.m_map == "affine" else "phase_space_m_unit_box",
             "variables": list(HELICITY_VARIABLES), "circular": list(CIRCULAR),
             "m_min": self.m_min, "m_max": self.m_max}
        if self.parent_mass is not None:
            d.update(parent_mass=self.parent_mass, m1=self.m1, m2=self.m2)
        if self.m_map == "phase_space":
            d["grid_points"] = M_GRID_POINTS
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CoordinateMap":
        kind = d.get("kind")
        if kind not in ("affine_unit_box", "phase_space_m_unit_box") \
                or list(d.get("variables", [])) != list(HELICITY_VARIABLES):
            raise ValueError(f"unknown coordinate mapping {d!r}")
        masses = {k: float(d[k]) for k in ("parent_mass", "m1", "m2") if d.get(k) is not None}
        if kind == "affine_unit_box":
            return cls(m_min=float(d["m_min"]), m_max=float(d["m_max"]), **masses)
        if int(d.get("grid_points", M_GRID_POINTS)) != M_GRID_POINTS:
            raise ValueError(f"coordinate mapping tabulated on {d['grid_points']} points, this version uses "
                             f"{M_GRID_POINTS}")
        return cls(m_min=float(d["m_min"]), m_max=float(d["m_max"]), m_map="phase_space", **masses)


def _phase_space_m_density(m: np.ndarray, parent_mass: float, m1: float, m2: float) -> np.ndarray:
    """Unnormalised flat-phase-space density q(m) p(m) of m (as :class:`~fastsim.events.PhaseSpace`):
    q the photon momentum in the parent frame, p the P1 momentum in the P1 P2 frame."""
    m = np.clip(np.asarray(m, dtype=np.float64), m1 + m2, parent_mass)
    q = (parent_mass**2 - m**2) / (2.0 * parent_mass)
    return q * two_body_momentum(m, m1, m2)


def acceptance_knots(card, coords: CoordinateMap, parent_mass: float | None = None) -> list[list[float]]:
    """Unit-box knots at the box-aligned acceptance edges of a detector card.

    The photon recoils against X in the J/psi rest frame, so its polar angle is
    that of -X: the barrel/endcap edges |cos theta_gamma| = barrel max, endcap
    min and max are edges in cos theta_X at +-those values. Its energy
    (M^2 - m^2) / (2 M) falls below the barrel and endcap thresholds e_min at
    fixed m: edges in m. With resolution on, knots at +-2 and +-4 sigma of the
    smearing are added around every edge. Returns one list of interior knots per coordinate
    (for ``SplineFlow(pre_knots=...)``); empty for the azimuths and cos theta_1.
    """
    knots: list[list[float]] = [[] for _ in HELICITY_VARIABLES]
    if card is None:
        return knots
    ph = card.photon
    res = card.resolution
    # Resolution smears each edge over a few sigma: extra knots at +-2 and +-4 sigma
    # let the piecewise-constant density follow the smeared step (and leave the
    # empty region beyond it nearly empty instead of spreading its few events).
    offsets = (0.0, -4.0, -2.0, 2.0, 4.0) if res.enabled else (0.0,)
    u_cos = set()
    for c in {ph.barrel.cos_theta_max, ph.endcap.cos_theta_min, ph.endcap.cos_theta_max}:
        if not 0.0 < c < 1.0:
            continue
        sigma = res.sigma_angle * np.sqrt(1.0 - c * c)
        for s in (-1.0, 1.0):
            u_cos.update((s * c + k * sigma + 1.0) / 2.0 for k in offsets)
    knots[1] = sorted(float(v) for v in u_cos if 0.0 < v < 1.0)
    if parent_mass is not None:
        u_m = set()
        for e_min in (ph.barrel.e_min, ph.endcap.e_min):
            m2 = parent_mass ** 2 - 2.0 * parent_mass * e_min
            if e_min > 0.0 and m2 > 0.0:
                u_m.update(float(coords.m_to_unit(np.sqrt(m2) + k * res.sigma_m)) for k in offsets)
        knots[0] = sorted(float(v) for v in u_m if 0.0 < v < 1.0)
    return knots
