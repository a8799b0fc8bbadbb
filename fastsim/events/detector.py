"""A BESIII-like toy detector: acceptance, efficiency and resolution.

The response is configured by a YAML detector card (``models/detector/``).
Acceptance and tracking/photon efficiency act on the true lab four-momenta;
accepted events then get a resolution applied in the helicity variables
(m by a Gaussian truncated to the kinematic range, the two directions by an
isotropic Gaussian kick on the unit sphere), so every reconstructed event is a
physical J/psi -> gamma P1 P2 event, as after a kinematic fit.
Deterministic for a given numpy Generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .cards import read_yaml_card
from .kinematics import polar_cos_and_pt
from .particles import Reaction
from .sample import Events

#: Folder of the shipped detector cards.
DETECTOR_DIR = Path(__file__).resolve().parents[2] / "models" / "detector"
DEFAULT_DETECTOR = DETECTOR_DIR / "besiii_like.yaml"


class DetectorCardError(Exception):
    """A detector card that does not exist or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChargedCard(_Strict):
    cos_theta_max: float = Field(0.93, gt=0, le=1)
    pt_min: float = Field(0.1, ge=0)
    efficiency_plateau: float = Field(0.99, ge=0, le=1)
    turn_on: float = Field(0.05, gt=0)


class BarrelCard(_Strict):
    cos_theta_max: float = Field(0.80, gt=0, le=1)
    e_min: float = Field(0.025, ge=0)
    efficiency: float = Field(0.98, ge=0, le=1)


class EndcapCard(_Strict):
    cos_theta_min: float = Field(0.86, ge=0, le=1)
    cos_theta_max: float = Field(0.92, ge=0, le=1)
    e_min: float = Field(0.050, ge=0)
    efficiency: float = Field(0.95, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "EndcapCard":
        if self.cos_theta_min >= self.cos_theta_max:
            raise ValueError("cos_theta_min must be below cos_theta_max")
        return self


class PhotonCard(_Strict):
    barrel: BarrelCard = BarrelCard()
    endcap: EndcapCard = EndcapCard()


class ResolutionCard(_Strict):
    enabled: bool = True
    sigma_m: float = Field(0.004, ge=0)
    sigma_angle: float = Field(0.005, ge=0)


class DetectorCard(_Strict):
    """Validated detector card."""

    name: str = "besiii_like"
    charged: ChargedCard = ChargedCard()
    photon: PhotonCard = PhotonCard()
    resolution: ResolutionCard = ResolutionCard()


def load_detector_card(spec: str | Path | None) -> DetectorCard | None:
    """Detector card from a path, ``"default"`` or ``"none"`` (generator level -> None)."""
    if spec is None or str(spec).lower() == "none":
        return None
    path = DEFAULT_DETECTOR if str(spec).lower() == "default" else Path(spec)
    raw = read_yaml_card(path, DetectorCardError, "detector card (give a YAML path, 'default' or 'none')")
    if not isinstance(raw, dict):
        raise DetectorCardError(f"{path}: expected a mapping of detector settings")
    try:
        return DetectorCard.model_validate(raw)
    except ValidationError as exc:
        msgs = "; ".join(f"field {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DetectorCardError(f"{path}: {msgs}") from None


class Detector:
    """Toy detector response; ``Detector(None)`` is the generator level (accepts all)."""

    def __init__(self, card: DetectorCard | None) -> None:
        self.card = card

    @property
    def name(self) -> str:
        return "none" if self.card is None else self.card.name

    def efficiency(self, events: Events) -> np.ndarray:
        """Probability (n,) that each event is reconstructed: acceptance x efficiency."""
        n = len(events)
        if self.card is None:
            return np.ones(n)
        mom = events.momenta
        eff = np.ones(n)
        ch = self.card.charged
        for i in (1, 2):
            cos_t, pt = polar_cos_and_pt(mom[:, i])
            ok = (np.abs(cos_t) < ch.cos_theta_max) & (pt > ch.pt_min)
            eff *= np.where(ok, ch.efficiency_plateau * -np.expm1(-(pt - ch.pt_min) / ch.turn_on), 0.0)
        e = mom[:, 0, 0]
        cos_g = np.abs(polar_cos_and_pt(mom[:, 0])[0])
        b, ec = self.card.photon.barrel, self.card.photon.endcap
        barrel = (cos_g < b.cos_theta_max) & (e > b.e_min)
        endcap = (cos_g > ec.cos_theta_min) & (cos_g < ec.cos_theta_max) & (e > ec.e_min)
        eff *= np.where(barrel, b.efficiency, np.where(endcap, ec.efficiency, 0.0))
        return eff

    def smear(self, hv: np.ndarray, reaction: Reaction, rng: np.random.Generator) -> np.ndarray:
        """Resolution applied to helicity variables (n, 5); returns a new array."""
        if self.card is None or not self.card.resolution.enabled:
            return hv.copy()
        res = self.card.resolution
        out = hv.copy()
        out[:, 0] = _truncated_normal(hv[:, 0], res.sigma_m, reaction.m_min, reaction.m_max, rng)
        for ic, ip in ((1, 2), (3, 4)):
            out[:, ic], out[:, ip] = _kick_direction(hv[:, ic], hv[:, ip], res.sigma_angle, rng)
        return out

    def apply(self, events: Events, rng: np.random.Generator) -> Events:
        """Accepted events with resolution applied (a new, usually smaller, sample)."""
        keep = rng.uniform(size=len(events)) < self.efficiency(events)
        acc = events.subset(keep)
        if self.card is None or not self.card.resolution.enabled:
            return acc
        hv = self.smear(acc.helicity_variables, events.reaction, rng)
        return Events.from_helicity_variables(hv, events.reaction, acc.weights)


def _truncated_normal(mu: np.ndarray, sigma: float, lo: float, hi: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Gaussian around each mu, redrawn until it lies strictly inside (lo, hi)."""
    x = mu + sigma * rng.standard_normal(mu.shape)
    bad = (x <= lo) | (x >= hi)
    while bad.any():
        x[bad] = mu[bad] + sigma * rng.standard_normal(int(bad.sum()))
        bad = (x <= lo) | (x >= hi)
    return x


def _kick_direction(cos_t: np.ndarray, phi: np.ndarray, sigma: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move each direction by a 2-D Gaussian of width sigma (rad) in its tangent plane."""
    sin_t = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
    n = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)
    e_t = np.stack([cos_t * np.cos(phi), cos_t * np.sin(phi), -sin_t], axis=-1)
    e_p = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], axis=-1)
    g = sigma * rng.standard_normal((len(phi), 2))
    v = n + g[:, :1] * e_t + g[:, 1:] * e_p
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.clip(v[:, 2], -1.0, 1.0), np.arctan2(v[:, 1], v[:, 0])
