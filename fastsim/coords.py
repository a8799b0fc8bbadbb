"""Physical helicity variables <-> model coordinates on the unit box.

The physical region of J/psi -> gamma P1 P2 in the helicity variables
(m, cos theta_X, phi_X, cos theta_1, phi_1) is exactly the box
[m_min, m_max] x [-1, 1] x [-pi, pi) x [-1, 1] x [-pi, pi). Each variable is
mapped affinely onto [0, 1]:

    u_m   = (m - m_min) / (m_max - m_min)
    u_cos = (cos + 1) / 2
    u_phi = (phi + pi) / (2 pi)      (periodic: u_phi = 0 and 1 are the same point)

so a density on the unit box becomes a density in the physical variables by
the constant log-Jacobian ``log|du/dhv| = -log(m_max - m_min) - 2 log 2 - 2 log(2 pi)``.
Plain numpy (float64); the torch side calls it on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastsim.events import HELICITY_VARIABLES, JPSI_GAMMA_KK, Reaction

#: Index of the periodic coordinates (phi_X, phi_1) in ``HELICITY_VARIABLES``.
CIRCULAR = (2, 4)


@dataclass(frozen=True)
class CoordinateMap:
    """Affine map of the helicity variables onto the unit box [0, 1]^5.

    Attributes:
        m_min, m_max: kinematic range of m(P1 P2) in GeV.
    """

    m_min: float
    m_max: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.m_min) and np.isfinite(self.m_max) and self.m_max > self.m_min):
            raise ValueError(f"need m_min < m_max, got [{self.m_min}, {self.m_max}]")

    @classmethod
    def for_reaction(cls, reaction: Reaction = JPSI_GAMMA_KK) -> "CoordinateMap":
        return cls(m_min=reaction.m_min, m_max=reaction.m_max)

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

    @property
    def log_jacobian(self) -> float:
        """log |det du/dhv| (constant: the map is affine)."""
        return float(-np.sum(np.log(self._width)))

    def to_unit(self, hv: np.ndarray) -> np.ndarray:
        """(n, 5) helicity variables -> (n, 5) unit-box coordinates.

        Azimuths are wrapped into [0, 1); m and the cosines are *not* clipped,
        so a point outside the physical region maps outside the box.
        """
        hv = np.asarray(hv, dtype=np.float64)
        if hv.ndim != 2 or hv.shape[1] != 5:
            raise ValueError(f"expected (n, 5) helicity variables, got {hv.shape}")
        u = (hv - self._low) / self._width
        for i in CIRCULAR:
            u[:, i] = np.mod(u[:, i], 1.0)
        return u

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """(n, 5) unit-box coordinates -> (n, 5) helicity variables (clipped to the box)."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if u.ndim != 2 or u.shape[1] != 5:
            raise ValueError(f"expected (n, 5) unit coordinates, got {u.shape}")
        return self._low + u * self._width

    def inside(self, hv: np.ndarray) -> np.ndarray:
        """(n,) bool: inside the physical region (azimuths are always inside)."""
        hv = np.asarray(hv, dtype=np.float64)
        return ((hv[:, 0] >= self.m_min) & (hv[:, 0] <= self.m_max)
                & (np.abs(hv[:, 1]) <= 1.0) & (np.abs(hv[:, 3]) <= 1.0)
                & np.all(np.isfinite(hv), axis=1))

    def to_dict(self) -> dict:
        return {"kind": "affine_unit_box", "variables": list(HELICITY_VARIABLES),
                "circular": list(CIRCULAR), "m_min": self.m_min, "m_max": self.m_max}

    @classmethod
    def from_dict(cls, d: dict) -> "CoordinateMap":
        if d.get("kind") != "affine_unit_box" or list(d.get("variables", [])) != list(HELICITY_VARIABLES):
            raise ValueError(f"unknown coordinate mapping {d!r}")
        return cls(m_min=float(d["m_min"]), m_max=float(d["m_max"]))


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
                u_m.update((np.sqrt(m2) + k * res.sigma_m - coords.m_min) / (coords.m_max - coords.m_min)
                           for k in offsets)
        knots[0] = sorted(float(v) for v in u_m if 0.0 < v < 1.0)
    return knots
