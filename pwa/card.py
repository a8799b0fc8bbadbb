"""Model cards: YAML descriptions of an amplitude model, validated when loaded.

Example (``models/r0.yaml`` is a full one)::

    reaction: {parent: J/psi, final_state: {gamma: gamma, Kp: K+, Km: K-}}
    resonances:
      - name: f2'(1525)
        spin: 2
        lineshape: {type: BW, mass: 1.5223, width: 0.0858, radius: 1.0}
        float: [mass, width]        # optional; default: couplings only
        bounds: {mass: [1.45, 1.60]} # optional; default: the lineshape's own
        couplings: {0: [1.0, 0.0], 1: [0.8, 1.2], 2: [0.4, -0.6]}
    reference: f2'(1525)

Conventions:

* ``couplings`` maps the X helicity ``lambda_R`` (with photon helicity +1) to
  ``[magnitude, phase]``, phase in radians: ``H^R_{lR,+1} = mag * exp(i phase)``;
  parity gives ``H^R_{-lR,-1} = H^R_{lR,+1}`` (PHYSICS.md section 2). Spin 0
  allows lR = 0 only; spin 2 and 4 allow lR = 0, 1, 2. A helicity left out
  of the card is absent from the model (its coupling is zero).
* The reference resonance's lR = 0 coupling is fixed to (1, 0): it sets the
  overall scale and phase, which the likelihood cannot see. Every other
  coupling floats; lineshape parameters float only when listed in ``float``.
* Identical final-state pseudoscalars (K_S K_S, pi0 pi0) would need a
  symmetrised amplitude, which is not implemented: such a card is rejected.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fastsim.events import Reaction
from fastsim.events.cards import read_yaml_card

from .errors import ModelCardError
from .lineshapes import LINESHAPES, Bound, LineshapeContext

#: Spins of X -> two pseudoscalars with C = +1 (J^PC = 0++, 2++, 4++).
ALLOWED_SPINS = (0, 2, 4)


def allowed_helicities(spin: int) -> tuple[int, ...]:
    """X helicities lR >= 0 with photon helicity +1: |lR - 1| <= 1 and lR <= J."""
    return tuple(lr for lr in (0, 1, 2) if lr <= spin)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReactionCard(_Strict):
    """``reaction:`` block: parent and {column prefix: particle}, photon first."""

    parent: str = "J/psi"
    final_state: dict[str, str] = Field(default_factory=lambda: {"gamma": "gamma", "Kp": "K+", "Km": "K-"})

    def to_reaction(self) -> Reaction:
        return Reaction.from_final_state(self.final_state, parent=self.parent)

    @model_validator(mode="after")
    def _valid(self) -> "ReactionCard":
        try:
            reaction = self.to_reaction()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if reaction.identical:
            raise ValueError(
                f"identical final-state particles {reaction.particles[1]} {reaction.particles[2]} need a "
                "symmetrised amplitude, which this package does not implement yet")
        return self


class ResonanceCard(_Strict):
    """One entry of ``resonances:``."""

    name: str = Field(min_length=1)
    spin: int
    lineshape: dict[str, Any]
    float_: tuple[str, ...] = Field(default=(), alias="float")
    bounds: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    couplings: dict[int, tuple[float, float]]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if ":" in v or v != v.strip():
            raise ValueError(f"resonance name {v!r} must not contain ':' or surrounding spaces")
        return v

    @field_validator("spin")
    @classmethod
    def _spin(cls, v: int) -> int:
        if v not in ALLOWED_SPINS:
            raise ValueError(f"spin {v} is not allowed for X -> two pseudoscalars with C = +1; "
                             f"expected one of {ALLOWED_SPINS}")
        return v

    @field_validator("lineshape")
    @classmethod
    def _lineshape(cls, v: dict[str, Any]) -> dict[str, Any]:
        kind = v.get("type")
        if kind not in LINESHAPES:
            raise ValueError(f"type {kind!r} is not a known lineshape; known: {', '.join(LINESHAPES)}")
        ls = LINESHAPES[kind]
        unknown = sorted(set(v) - {"type", *ls.parameters})
        if unknown:
            raise ValueError(f"{kind} has no parameter(s) {', '.join(unknown)}; "
                             f"its parameters are {', '.join(ls.parameters) or 'none'}")
        out: dict[str, Any] = {"type": kind}
        for name in ls.parameters:
            if name not in v and name not in ls.defaults:
                raise ValueError(f"{kind} needs parameter {name!r}")
            value = v.get(name, ls.defaults.get(name))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
            lo, hi = ls.bounds.get(name, (None, None))
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"parameter {name!r} = {value} is outside its allowed range [{lo}, {hi}]")
            out[name] = float(value)
        return out

    @field_validator("couplings")
    @classmethod
    def _couplings(cls, v: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
        if not v:
            raise ValueError("at least one coupling is needed")
        for lr, (mag, phase) in v.items():
            if not (math.isfinite(mag) and math.isfinite(phase)):
                raise ValueError(f"coupling {lr}: magnitude and phase must be finite")
            if mag < 0:
                raise ValueError(f"coupling {lr}: magnitude {mag} must be >= 0 (put the sign in the phase)")
        return dict(sorted(v.items()))

    @model_validator(mode="after")
    def _consistent(self) -> "ResonanceCard":
        allowed = allowed_helicities(self.spin)
        bad = [lr for lr in self.couplings if lr not in allowed]
        if bad:
            raise ValueError(f"couplings: helicity lambda_R = {bad[0]} is not allowed for spin {self.spin} "
                             f"(allowed: {', '.join(map(str, allowed))})")
        params = LINESHAPES[self.lineshape["type"]].parameters
        for name in self.float_:
            if name not in params:
                raise ValueError(f"float: {name!r} is not a parameter of lineshape "
                                 f"{self.lineshape['type']} ({', '.join(params) or 'none'})")
        if len(set(self.float_)) != len(self.float_):
            raise ValueError("float: a parameter is listed twice")
        for name, (lo, hi) in self.bounds.items():
            if name not in params:
                raise ValueError(f"bounds: {name!r} is not a parameter of lineshape {self.lineshape['type']}")
            value = self.lineshape[name]
            if (lo is not None and value < lo) or (hi is not None and value > hi) or \
                    (lo is not None and hi is not None and lo >= hi):
                raise ValueError(f"bounds: {name} = {value} must lie inside [{lo}, {hi}] with lo < hi")
        return self

    @property
    def lineshape_type(self) -> str:
        return self.lineshape["type"]

    @property
    def lineshape_parameters(self) -> dict[str, float]:
        """Lineshape parameter values (defaults filled in), without ``type``."""
        return {k: v for k, v in self.lineshape.items() if k != "type"}

    def parameter_bounds(self, name: str) -> Bound:
        """Fit bounds of a lineshape parameter: the card's, else the lineshape's default."""
        if name in self.bounds:
            return self.bounds[name]
        return LINESHAPES[self.lineshape_type].bounds.get(name, (None, None))


class ModelCard(_Strict):
    """A validated model card (frozen)."""

    reaction: ReactionCard = Field(default_factory=ReactionCard)
    resonances: tuple[ResonanceCard, ...] = Field(min_length=1)
    reference: str
    source: str = Field(default="<card>", exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        names = [r.name for r in self.resonances]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"resonances: name {dup[0]!r} appears more than once")
        if self.reference not in names:
            raise ValueError(f"reference: {self.reference!r} is not one of the resonances ({', '.join(names)})")
        ref = self.resonance(self.reference)
        if 0 not in ref.couplings:
            raise ValueError(f"reference: {self.reference!r} has no lambda_R = 0 coupling to fix to (1, 0)")
        reaction = self.reaction.to_reaction()
        for r in self.resonances:
            ctx = LineshapeContext(r.spin, reaction.m1, reaction.m2)
            check = LINESHAPES[r.lineshape_type].validate
            problems = check(r.lineshape_parameters, ctx) if check else []
            if problems:
                raise ValueError(f"resonances ({r.name}).lineshape: {problems[0]}")
        return self

    def resonance(self, name: str) -> ResonanceCard:
        for r in self.resonances:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary in card form (``float`` spelled as in YAML)."""
        return self.model_dump(by_alias=True, exclude={"source"})

    def to_yaml(self) -> str:
        """YAML text of the card (empty ``float``/``bounds`` left out, short lists inline)."""
        d = self.to_dict()
        for r in d["resonances"]:
            r["couplings"] = {int(k): [float(a), float(b)] for k, (a, b) in r["couplings"].items()}
            r["float"] = list(r["float"])
            r["bounds"] = {k: list(v) for k, v in r["bounds"].items()}
            for key in ("float", "bounds"):
                if not r[key]:
                    del r[key]
        d["reaction"] = {"parent": d["reaction"]["parent"], "final_state": d["reaction"]["final_state"]}
        return yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=110)


def _location(loc: tuple, raw: Any) -> str:
    """``resonances[2] (f2(1270)).couplings.3`` from a pydantic error location."""
    parts: list[str] = []
    node = raw
    for i, key in enumerate(loc):
        if isinstance(key, int) and parts:
            label = f"[{key}]"
            if parts[-1] == "resonances" and isinstance(node, list) and key < len(node) \
                    and isinstance(node[key], dict) and "name" in node[key]:
                label += f" ({node[key]['name']})"
            parts[-1] += label
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def parse_model_card(raw: Any, source: str = "<card>") -> ModelCard:
    """Validate a card given as a dictionary.

    Raises:
        ModelCardError: naming ``source``, the field and what was expected.
    """
    if not isinstance(raw, dict):
        raise ModelCardError(f"{source}: expected a mapping with reaction, resonances and reference")
    try:
        return ModelCard.model_validate({**raw, "source": source})
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            msgs.append(f"field {_location(e['loc'], raw)}: {msg}")
        raise ModelCardError(f"{source}: " + "; ".join(msgs)) from None


def load_model_card(path: str | Path) -> ModelCard:
    """Read and validate a YAML model card.

    Raises:
        ModelCardError: for a missing file, invalid YAML or an invalid field
            (the message names the file and the field).
    """
    path = Path(path)
    raw = read_yaml_card(path, ModelCardError, "model card")
    return parse_model_card(raw, source=str(path))
