"""A BESIII-like toy detector: acceptance, efficiency and resolution, for any final state.

The response is configured by a YAML detector card (``models/detector/``).

Acceptance and efficiency act on the true lab four-momenta, particle by
particle, by the particle's *species* (its PDG name), never by its column:

* **charged tracks** (charge != 0; the ``charged:`` block): |cos theta| <
  ``cos_theta_max`` and pT > ``pt_min``, tracking efficiency
  ``efficiency_plateau * (1 - exp(-(pT - pt_min) / turn_on))``.
  ``charged.species`` overrides any of these fields for one species, e.g.
  ``charged: {species: {pi+: {pt_min: 0.05}}}``; the other fields keep the
  block's values. Species are PDG names, so ``pi+`` and ``pi-`` are two
  entries (a detector need not be charge symmetric).
* **photons** (``photon:``): barrel or end cap in |cos theta| with an energy
  threshold and an efficiency for each (PHYSICS.md section 6).
* **neutral hadrons** (``neutral:``), reconstructed from their decay products
  and approximated by the direction of the hadron itself (the decay products
  are not generated). ``neutral.species`` holds one rule per species, with
  these built-in defaults (:data:`DEFAULT_NEUTRAL_RULES`; an entry in the card
  changes only the fields it names):

  - ``pi0`` and ``eta``: ``geometry: photon``, i.e. reconstructed from two
    photons in the calorimeter. The hadron's direction must be in the
    photon barrel or end cap; each of the two photons is detected with that
    region's photon efficiency (so the factor is its square) and must be
    above that region's photon threshold ``e_min``. For a spin-0 particle
    decaying isotropically into two massless photons the lab photon energy
    is uniform on [(E - |p|)/2, (E + |p|)/2], so the fraction with both
    photons above the threshold t is exactly
    ``clip((E - 2 max(t, (E - |p|)/2)) / |p|, 0, 1)``: that is the energy
    threshold, smooth in the hadron's energy, with no new parameter. A
    further ``efficiency`` (default 0.95) stands for the gamma-gamma mass
    window and the photon pairing. The opening angle of the two photons
    (at least 2 arcsin(m/E), 15 degrees for a 1 GeV pi0) is neglected. The
    eta is taken in its gamma gamma mode; branching fractions are never
    applied (the final state names the reconstructed mode).
  - ``K_S0``: ``geometry: charged``, i.e. reconstructed from K_S0 -> pi+ pi-
    in the tracker: its direction must be inside the charged-track
    acceptance of ``pi+`` (|cos theta| < that rule's ``cos_theta_max``),
    each pion is found with the ``pi+`` tracking plateau (squared), and
    ``efficiency`` (default 0.90) stands for the displaced-vertex fit. The
    daughters' pT turn-on is not applied (a K_S0 at rest already gives
    206 MeV pions).

  The two efficiencies are round numbers of the size a BESIII-like
  analysis quotes, not measurements; like every number here they are card
  fields. Both geometries also take optional cuts ``e_min`` and ``pt_min`` on the
  hadron's own energy and transverse momentum (default 0: none). A neutral
  species without a built-in rule (K_L0, n, ...) needs its own entry with
  a ``geometry``; a final state with such a particle and no entry fails
  with :class:`DetectorCardError` naming the card and the field.

The event efficiency is the product over the final state: charged tracks
first, then photons, then neutral hadrons, each group in event-file order (for
J/psi -> gamma K+ K- this is the first version's product, bit for bit).

Resolution (``resolution:``), as after a kinematic fit, keeps every accepted
event on the physical manifold:

* parent -> gamma P1 P2: in the five helicity variables, m by a Gaussian
  truncated to the kinematic range and the two directions by an isotropic
  Gaussian kick on the unit sphere (the first version, same random stream);
* any other reaction: in the tree variables of the reaction's first chain
  (:mod:`fastsim.events.tree`). Every intermediate mass gets a Gaussian of
  ``sigma_m``, redrawn jointly for the event until every node is above the
  sum of its daughters' masses (the two-body momenta real); every vertex
  direction gets the isotropic kick of ``sigma_angle``. The four-momenta are
  rebuilt by :func:`~fastsim.events.tree.chain_momenta`, so final-state
  masses stay on shell and the total momentum stays (M, 0, 0, 0).

Deterministic for a given numpy Generator.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from .cards import read_yaml_card
from .kinematics import polar_cos_and_pt
from .particles import DecayChain, Reaction, particle_info
from .resources import shipped
from .sample import Events
from .tree import NodeVariables, chain_momenta, chain_variables, momenta_by_label, stack_momenta

#: The default detector card, named as a shipped file (its path: ``shipped(DEFAULT_DETECTOR)``).
DEFAULT_DETECTOR = "detector/besiii_like.yaml"

#: Redraw rounds of the truncated tree-mass smearing before an event keeps its true masses.
MAX_MASS_REDRAWS = 1000


class DetectorCardError(Exception):
    """A detector card that does not exist, does not validate, or lacks rules for a particle."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def species_kind(particle: str) -> Literal["charged", "photon", "neutral"]:
    """Which block of the detector card a final-state particle falls under.

    Raises:
        ValueError: an unknown particle name.
    """
    if particle == "gamma":
        return "photon"
    return "charged" if particle_info(particle).charge != 0 else "neutral"


def _check_species(name: str, kind: str) -> None:
    """A key of ``{kind}.species`` must be a known particle of that kind."""
    try:
        found = species_kind(name)
    except ValueError as exc:
        raise ValueError(f"entry {name!r}: {exc}") from None
    if found != kind:
        where = {"charged": "charged.species", "photon": "the photon: block",
                 "neutral": "neutral.species"}[found]
        raise ValueError(f"entry {name!r}: {name} is {'a photon' if found == 'photon' else found}, "
                         f"not {kind}: its rules belong in {where}")


class ChargedRules(_Strict):
    """Acceptance and tracking efficiency of one charged species."""

    cos_theta_max: float = Field(0.93, gt=0, le=1)
    pt_min: float = Field(0.1, ge=0)
    efficiency_plateau: float = Field(0.99, ge=0, le=1)
    turn_on: float = Field(0.05, gt=0)


class ChargedOverride(_Strict):
    """Fields of :class:`ChargedRules` that one species changes (None: the block's value)."""

    cos_theta_max: float | None = Field(None, gt=0, le=1)
    pt_min: float | None = Field(None, ge=0)
    efficiency_plateau: float | None = Field(None, ge=0, le=1)
    turn_on: float | None = Field(None, gt=0)


class ChargedCard(ChargedRules):
    """``charged:`` block: the rules of every charged track, and per-species overrides."""

    species: dict[str, ChargedOverride] = Field(default_factory=dict)

    @field_validator("species")
    @classmethod
    def _known_charged(cls, value: dict[str, ChargedOverride]) -> dict[str, ChargedOverride]:
        for name in value:
            _check_species(name, "charged")
        return value

    def rules_for(self, particle: str) -> ChargedRules:
        """The block's rules with the species' overrides applied."""
        base = {k: getattr(self, k) for k in ChargedRules.model_fields}
        override = self.species.get(particle)
        if override is not None:
            base.update({k: v for k, v in override.model_dump().items() if v is not None})
        return ChargedRules(**base)


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


class NeutralRules(_Strict):
    """How one neutral-hadron species is reconstructed (module docstring).

    Attributes:
        geometry: ``photon`` (from two photons in the calorimeter: the photon
            barrel/end cap, the square of the region's photon efficiency and
            both photons above its threshold) or ``charged`` (from pi+ pi- in
            the tracker: the pi+ track acceptance, the square of its plateau).
        e_min: cut on the hadron's energy (GeV).
        pt_min: cut on the hadron's transverse momentum (GeV).
        efficiency: reconstruction efficiency of the decay (mass window,
            vertex fit), multiplying the daughters' detection efficiencies.
    """

    geometry: Literal["photon", "charged"]
    e_min: float = Field(0.0, ge=0)
    pt_min: float = Field(0.0, ge=0)
    efficiency: float = Field(..., ge=0, le=1)


#: Built-in rules of ``neutral.species`` (module docstring says why).
DEFAULT_NEUTRAL_RULES: dict[str, NeutralRules] = {
    "pi0": NeutralRules(geometry="photon", efficiency=0.95),
    "eta": NeutralRules(geometry="photon", efficiency=0.95),
    "K_S0": NeutralRules(geometry="charged", efficiency=0.90),
}


class NeutralCard(_Strict):
    """``neutral:`` block: one rule per neutral-hadron species.

    An entry of the card is merged field by field onto the built-in rule of
    its species (:data:`DEFAULT_NEUTRAL_RULES`); a species without one needs
    ``geometry`` and ``efficiency``.
    """

    species: dict[str, NeutralRules] = Field(default_factory=lambda: dict(DEFAULT_NEUTRAL_RULES))

    @field_validator("species", mode="before")
    @classmethod
    def _merge_defaults(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        merged: dict[str, object] = dict(DEFAULT_NEUTRAL_RULES)
        for name, entry in value.items():
            if isinstance(entry, dict) and name in DEFAULT_NEUTRAL_RULES:
                entry = {**DEFAULT_NEUTRAL_RULES[name].model_dump(), **entry}
            merged[name] = entry
        return merged

    @field_validator("species")
    @classmethod
    def _known_neutral(cls, value: dict[str, NeutralRules]) -> dict[str, NeutralRules]:
        for name in value:
            if name not in DEFAULT_NEUTRAL_RULES:
                _check_species(name, "neutral")
        return value


class ResolutionCard(_Strict):
    enabled: bool = True
    sigma_m: float = Field(0.004, ge=0)
    sigma_angle: float = Field(0.005, ge=0)


class DetectorCard(_Strict):
    """Validated detector card."""

    name: str = "besiii_like"
    charged: ChargedCard = ChargedCard()
    photon: PhotonCard = PhotonCard()
    neutral: NeutralCard = NeutralCard()
    resolution: ResolutionCard = ResolutionCard()
    # Where the card came from, for error messages (not part of the card).
    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The card's file, or ``detector card <name>`` for one built in code."""
        return self._source or f"detector card {self.name!r}"

    # A value object: equal and hashable by its settings, whatever file it came from
    # (pydantic would compare the private source, and the species dicts are unhashable).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, DetectorCard) and self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(self.model_dump_json())


def load_detector_card(spec: str | Path | None) -> DetectorCard | None:
    """Detector card from a path, ``"default"`` or ``"none"`` (generator level -> None)."""
    if spec is None or str(spec).lower() == "none":
        return None
    path = shipped(DEFAULT_DETECTOR) if str(spec).lower() == "default" else Path(spec)
    raw = read_yaml_card(path, DetectorCardError, "detector card (give a YAML path, 'default' or 'none')")
    if not isinstance(raw, dict):
        raise DetectorCardError(f"{path}: expected a mapping of detector settings")
    try:
        card = DetectorCard.model_validate(raw)
    except ValidationError as exc:
        msgs = "; ".join(f"field {'.'.join(str(x) for x in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
        raise DetectorCardError(f"{path}: {msgs}") from None
    card._source = str(path)
    return card


class Detector:
    """Toy detector response; ``Detector(None)`` is the generator level (accepts all)."""

    def __init__(self, card: DetectorCard | None) -> None:
        self.card = card

    @property
    def name(self) -> str:
        return "none" if self.card is None else self.card.name

    # --- acceptance and efficiency ------------------------------------------------------

    def rules_for(self, particle: str) -> ChargedRules | PhotonCard | NeutralRules:
        """The card's rules for one final-state species.

        Raises:
            DetectorCardError: a neutral hadron without an entry in
                ``neutral.species`` (the message names the card and the field).
        """
        if self.card is None:
            raise ValueError("the generator level (no detector card) has no rules")
        kind = species_kind(particle)
        if kind == "charged":
            return self.card.charged.rules_for(particle)
        if kind == "photon":
            return self.card.photon
        rules = self.card.neutral.species.get(particle)
        if rules is None:
            raise DetectorCardError(
                f"{self.card.source}: no rules for the neutral hadron {particle!r}: add the field "
                f"neutral.species.{particle} with geometry (photon or charged) and efficiency "
                f"(built-in rules: {', '.join(DEFAULT_NEUTRAL_RULES)})")
        return rules

    def check(self, reaction: Reaction) -> None:
        """Fail early if the card has no rules for a particle of the reaction's final state."""
        if self.card is not None:
            for particle in reaction.particles:
                self.rules_for(particle)

    def particle_efficiency(self, particle: str, p: np.ndarray) -> np.ndarray:
        """Probability (n,) that one final-state particle of this species is reconstructed.

        Args:
            particle: the species (PDG name, e.g. ``pi+``, ``gamma``, ``pi0``).
            p: (n, 4) lab four-momenta of that particle.
        """
        if self.card is None:
            return np.ones(len(p))
        rules = self.rules_for(particle)
        if isinstance(rules, ChargedRules):
            cos_t, pt = polar_cos_and_pt(p)
            ok = (np.abs(cos_t) < rules.cos_theta_max) & (pt > rules.pt_min)
            return np.where(ok, rules.efficiency_plateau * -np.expm1(-(pt - rules.pt_min) / rules.turn_on), 0.0)
        if isinstance(rules, PhotonCard):
            e = p[:, 0]
            cos_g = np.abs(polar_cos_and_pt(p)[0])
            b, ec = rules.barrel, rules.endcap
            barrel = (cos_g < b.cos_theta_max) & (e > b.e_min)
            endcap = (cos_g > ec.cos_theta_min) & (cos_g < ec.cos_theta_max) & (e > ec.e_min)
            return np.where(barrel, b.efficiency, np.where(endcap, ec.efficiency, 0.0))
        return self._neutral_efficiency(rules, p)

    def _neutral_efficiency(self, rules: NeutralRules, p: np.ndarray) -> np.ndarray:
        cos_t, pt = polar_cos_and_pt(p)
        cos_t = np.abs(cos_t)
        e = p[:, 0]
        cuts = (e >= rules.e_min) & (pt >= rules.pt_min)  # 0 = no cut, also for a hadron at rest
        if rules.geometry == "charged":
            pion = self.card.charged.rules_for("pi+")
            ok = cuts & (cos_t < pion.cos_theta_max)
            return np.where(ok, rules.efficiency * pion.efficiency_plateau**2, 0.0)
        b, ec = self.card.photon.barrel, self.card.photon.endcap
        barrel = cos_t < b.cos_theta_max
        endcap = (cos_t > ec.cos_theta_min) & (cos_t < ec.cos_theta_max)
        eff_photon = np.where(barrel, b.efficiency, np.where(endcap, ec.efficiency, 0.0))
        threshold = np.where(barrel, b.e_min, ec.e_min)
        pabs = np.sqrt(pt * pt + p[:, 3] ** 2)
        # Lab photon energy is uniform on [(E - |p|)/2, (E + |p|)/2] (isotropic two-photon decay).
        e_soft = 0.5 * (e - pabs)
        both = np.where(threshold <= e_soft, 1.0,
                        np.clip((e - 2.0 * threshold) / np.maximum(pabs, 1e-300), 0.0, 1.0))
        return np.where(cuts & (barrel | endcap), rules.efficiency * eff_photon**2 * both, 0.0)

    def efficiency(self, events: Events) -> np.ndarray:
        """Probability (n,) that each event is reconstructed: acceptance x efficiency.

        The product runs over charged tracks, then photons, then neutral
        hadrons, each in event-file order.
        """
        n = len(events)
        if self.card is None:
            return np.ones(n)
        reaction = events.reaction
        eff = np.ones(n)
        for i in _efficiency_order(reaction.particles):
            eff *= self.particle_efficiency(reaction.particles[i], events.momenta[:, i])
        return eff

    # --- resolution ------------------------------------------------------------------

    @property
    def smears(self) -> bool:
        """Whether accepted events get a resolution."""
        return self.card is not None and self.card.resolution.enabled

    def smear(self, hv: np.ndarray, reaction: Reaction, rng: np.random.Generator) -> np.ndarray:
        """Resolution applied to helicity variables (n, 5) of parent -> gamma P1 P2; a new array."""
        if not self.smears:
            return hv.copy()
        res = self.card.resolution
        out = hv.copy()
        out[:, 0] = _truncated_normal(hv[:, 0], res.sigma_m, reaction.m_min, reaction.m_max, rng)
        for ic, ip in ((1, 2), (3, 4)):
            out[:, ic], out[:, ip] = _kick_direction(hv[:, ic], hv[:, ip], res.sigma_angle, rng)
        return out

    def smear_chain(self, variables: dict[str, NodeVariables], chain: DecayChain,
                    final_masses: dict[str, float], parent_mass: float,
                    rng: np.random.Generator) -> dict[str, NodeVariables]:
        """Resolution applied to the tree variables of a chain; a new mapping.

        Masses of the intermediate nodes: a Gaussian of ``sigma_m`` each,
        redrawn jointly for an event until every vertex has its node above the
        sum of its daughters' masses (after :data:`MAX_MASS_REDRAWS` rounds an
        event keeps its true masses). Directions: the isotropic kick of
        ``sigma_angle`` at every vertex. Random draws: the masses, then the
        vertices in ``chain.vertices`` order.

        Args:
            variables: node label -> :class:`NodeVariables` of (n,) arrays
                (from :func:`~fastsim.events.tree.chain_variables`).
            chain: the decay tree.
            final_masses: final-state label -> mass (GeV).
            parent_mass: the parent's mass (GeV).
            rng: the random generator.
        """
        if not self.smears:
            return dict(variables)
        res = self.card.resolution
        root = chain.root.label
        inner = chain.inner_labels
        masses = _truncated_tree_masses(chain, {k: variables[k].m for k in inner}, res.sigma_m,
                                        final_masses, parent_mass, rng)
        masses[root] = variables[root].m
        out = {}
        for v in chain.vertices:
            cos_t, phi = _kick_direction(variables[v.label].cos_theta, variables[v.label].phi,
                                         res.sigma_angle, rng)
            out[v.label] = NodeVariables(masses[v.label], cos_t, phi)
        return out

    def resolve(self, events: Events, rng: np.random.Generator) -> Events:
        """Resolution applied to events of any reaction (module docstring); a new sample."""
        if not self.smears:
            return events
        reaction = events.reaction
        if reaction.is_radiative_pair:
            hv = self.smear(events.helicity_variables, reaction, rng)
            return Events.from_helicity_variables(hv, reaction, events.weights)
        chain = reaction.chains[0]
        final_masses = dict(zip(reaction.prefixes, reaction.masses))
        variables = chain_variables(chain, momenta_by_label(reaction, events.momenta))
        smeared = self.smear_chain(variables, chain, final_masses, reaction.parent_mass, rng)
        momenta = chain_momenta(chain, smeared, final_masses, reaction.parent_mass)
        return Events(stack_momenta(reaction, momenta), events.weights, reaction=reaction)

    def apply(self, events: Events, rng: np.random.Generator) -> Events:
        """Accepted events with resolution applied (a new, usually smaller, sample)."""
        keep = rng.uniform(size=len(events)) < self.efficiency(events)
        return self.resolve(events.subset(keep), rng)


@lru_cache(maxsize=None)
def _efficiency_order(particles: tuple[str, ...]) -> tuple[int, ...]:
    """Final-state positions: charged tracks, then photons, then neutral hadrons."""
    kinds = [species_kind(p) for p in particles]
    return tuple(i for kind in ("charged", "photon", "neutral") for i, k in enumerate(kinds) if k == kind)


def _truncated_normal(mu: np.ndarray, sigma: float, lo: float, hi: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Gaussian around each mu, redrawn until it lies strictly inside (lo, hi)."""
    x = mu + sigma * rng.standard_normal(mu.shape)
    bad = (x <= lo) | (x >= hi)
    while bad.any():
        x[bad] = mu[bad] + sigma * rng.standard_normal(int(bad.sum()))
        bad = (x <= lo) | (x >= hi)
    return x


def _truncated_tree_masses(chain: DecayChain, mu: dict[str, np.ndarray], sigma: float,
                           final_masses: dict[str, float], parent_mass: float,
                           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Intermediate masses smeared by independent Gaussians, truncated jointly to the allowed region.

    The region (every vertex's node heavier than its two daughters together)
    is a convex polytope in the masses, so the joint redraw of an event's
    masses samples the product of Gaussians restricted to it.
    """
    inner = chain.inner_labels
    if not inner:
        return {}
    col = {label: j for j, label in enumerate(inner)}
    centre = np.stack([np.asarray(mu[label], dtype=np.float64) for label in inner], axis=1)

    def allowed(x: np.ndarray) -> np.ndarray:
        def m(node) -> np.ndarray | float:
            if node is chain.root:
                return parent_mass
            return final_masses[node.label] if node.is_final else x[:, col[node.label]]

        ok = np.ones(len(x), dtype=bool)
        for v in chain.vertices:
            ok &= m(v) > m(v.daughters[0]) + m(v.daughters[1])
        return ok

    x = centre + sigma * rng.standard_normal(centre.shape)
    bad = ~allowed(x)
    for _ in range(MAX_MASS_REDRAWS):
        if not bad.any():
            break
        x[bad] = centre[bad] + sigma * rng.standard_normal((int(bad.sum()), len(inner)))
        bad = ~allowed(x)
    x[bad] = centre[bad]
    return {label: x[:, j] for label, j in col.items()}


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
