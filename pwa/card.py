"""Model cards: YAML descriptions of an amplitude model, validated when loaded.

A card names the reaction (parent, final state, decay chains) and the
resonances at the chains' inner nodes. The first version's J/psi -> gamma K+ K-
cards (``models/jpsi_gamma_kk.yaml``) need no chains: a parent -> gamma P1 P2
reaction defaults to the chain ``parent -> X gamma; X -> P1 P2``::

    reaction: {parent: J/psi, final_state: {gamma: gamma, Kp: K+, Km: K-}}
    resonances:
      - name: f2'(1525)
        spin: 2
        lineshape: {type: BW, mass: 1.5223, width: 0.0858, radius: 1.0}
        float: [mass, width]        # optional; default: couplings only
        bounds: {mass: [1.45, 1.60]} # optional; default: the lineshape's own
        couplings: {0: [1.0, 0.0], 1: [0.8, 1.2], 2: [0.4, -0.6]}
    reference: f2'(1525)

Any other reaction lists its chains of two-body decays; every resonance sits
at an inner node (``node:``), and exactly one resonance of each chain carries
the couplings of the vertex that produces it::

    reaction:
      parent: psi(2S)                  # production: e+e- (M = +-1) for a 1-- parent, else unpolarised
      final_state: {Kp1: K+, Km1: K-, Kp2: K+, Km2: K-}
      chains: ["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"]
    resonances:
      - name: phi(1020)
        node: phi                      # no couplings: a fixed part of every f_J's chain
        lineshape: {type: BW_plain, mass: 1.02, width: 0.004}
      - name: f2(1270)
        node: f
        lineshape: {type: BW, mass: 1.2754, width: 0.1866}
        couplings: {"+1 +2": [1.0, 0.4], "0 0": [2.0, -0.5]}   # helicity basis: "lambda_phi lambda_f"
      - name: f0(1710)
        node: f
        basis: ls                      # LS basis: keys "L S"; l_max drops higher waves
        couplings: {"0 1": [0.3, 0.0], "2 1": [0.1, 1.0]}
        lineshape: {type: BW, mass: 1.723, width: 0.149}
    reference: f2(1270)

Conventions:

* Helicity-basis keys are the helicities of the daughters of the carrier's
  production vertex, in the order the chain writes them; with parity
  conservation only one of each pair (lb, lc), (-lb, -lc) is independent
  (:func:`pwa.ls_basis.independent_helicities`) and the card names that one.
  The integer keys of the J/psi -> gamma P P cards are lambda_R with photon
  helicity +1 (PHYSICS.md section 2). A coupling left out of the card is
  absent from the model (zero).
* Couplings are ``[magnitude, phase]``, phase in radians.
* The reference resonance's first coupling is fixed at the card's value (it
  sets the overall scale and phase, which the likelihood cannot see). Every
  other coupling floats; lineshape parameters float only when listed in ``float``.
* Spin and parity default to the PDG values (scikit-hep ``particle``) when the
  name is a known particle; a resonance decaying into two spinless particles
  otherwise gets the natural parity (-1)^J times theirs.
* Identical final-state particles are symmetrised in the amplitude; a J^P
  that the decays forbid (odd J into two identical pseudoscalars, a C parity
  that the production cannot have) is refused.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fastsim.events import Reaction
from fastsim.events.cards import read_yaml_card
from fastsim.events.particles import particle_info

from .errors import ModelCardError
from .lineshapes import LINESHAPES, Bound, LineshapeType

#: A coupling key: lambda_R (J/psi -> gamma P P cards) or "a b" (helicities, or L S).
CouplingKey = int | str

_KEY = re.compile(r"^\s*\(?\s*([+-]?\d+)\s*[, ]\s*([+-]?\d+)\s*\)?\s*$")


def parse_coupling_key(key: CouplingKey) -> tuple[int, int] | int:
    """``"+1 0"`` -> (1, 0); an integer stays an integer."""
    if isinstance(key, int):
        return key
    match = _KEY.match(str(key))
    if not match:
        raise ValueError(f"coupling key {key!r}: expected two integers such as \"+1 0\" "
                         "(helicities, or L S in the LS basis)")
    return int(match[1]), int(match[2])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReactionCard(_Strict):
    """``reaction:`` block: parent, {column prefix: particle}, chains, production."""

    parent: str = "J/psi"
    final_state: dict[str, str] = Field(default_factory=lambda: {"gamma": "gamma", "Kp": "K+", "Km": "K-"})
    chains: tuple[str, ...] = ()
    production: str | None = None
    parity_conserved: bool | None = None

    def to_reaction(self) -> Reaction:
        return Reaction.from_final_state(self.final_state, parent=self.parent, chains=self.chains,
                                         production=self.production)

    @model_validator(mode="after")
    def _valid(self) -> "ReactionCard":
        try:
            self.to_reaction()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self


class ResonanceCard(_Strict):
    """One entry of ``resonances:``."""

    name: str = Field(min_length=1)
    spin: int | None = None
    parity: int | None = None
    node: str | None = None
    lineshape: dict[str, Any]
    basis: str = "helicity"
    l_max: int | None = None
    float_: tuple[str, ...] = Field(default=(), alias="float")
    bounds: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    couplings: dict[CouplingKey, tuple[float, float]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pdg_defaults(cls, raw: Any) -> Any:
        """Spin, parity, mass and width from the PDG tables when the card leaves them out."""
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            return raw
        try:
            info = particle_info(raw["name"])
        except ValueError:
            return raw
        out = dict(raw)
        out.setdefault("spin", info.spin)
        out.setdefault("parity", info.parity)
        ls = out.get("lineshape")
        if isinstance(ls, dict) and ls.get("type") in LINESHAPES:
            params = LINESHAPES[ls["type"]].parameters
            ls = dict(ls)
            if "mass" in params:
                ls.setdefault("mass", info.mass)
            if "width" in params and info.width > 0:
                ls.setdefault("width", info.width)
            out["lineshape"] = ls
        return out

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if ":" in v or v != v.strip():
            raise ValueError(f"resonance name {v!r} must not contain ':' or surrounding spaces")
        return v

    @field_validator("spin")
    @classmethod
    def _spin(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 4:
            raise ValueError(f"spin {v}: expected 0 to 4 (the Blatt-Weisskopf factors go up to L = 4)")
        return v

    @field_validator("parity")
    @classmethod
    def _parity(cls, v: int | None) -> int | None:
        if v is not None and v not in (1, -1):
            raise ValueError(f"parity {v}: expected +1 or -1")
        return v

    @field_validator("basis")
    @classmethod
    def _basis(cls, v: str) -> str:
        if v not in ("helicity", "ls"):
            raise ValueError(f"basis {v!r}: expected helicity or ls")
        return v

    @field_validator("lineshape")
    @classmethod
    def _lineshape(cls, v: dict[str, Any]) -> dict[str, Any]:
        kind = v.get("type")
        if kind not in LINESHAPES:
            raise ValueError(f"type {kind!r} is not a known lineshape; known: {', '.join(LINESHAPES)}")
        # A family (KMatrix) builds this card's own type and writes the mapping in its flat form.
        ls, v = LINESHAPES[kind].for_card(v)
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
    def _couplings(cls, v: dict | None) -> dict | None:
        if v is None:
            return None
        if not v:
            raise ValueError("an empty mapping; leave couplings out for a resonance that carries none")
        keys = {}
        for key, (mag, phase) in v.items():
            parsed = parse_coupling_key(key)
            if parsed in keys:
                raise ValueError(f"coupling {key!r} is the same as {keys[parsed]!r}")
            keys[parsed] = key
            if not (math.isfinite(mag) and math.isfinite(phase)):
                raise ValueError(f"coupling {key}: magnitude and phase must be finite")
            if mag < 0:
                raise ValueError(f"coupling {key}: magnitude {mag} must be >= 0 (put the sign in the phase)")
        if all(isinstance(k, int) for k in v):
            return dict(sorted(v.items()))
        return dict(v)

    @model_validator(mode="after")
    def _consistent(self) -> "ResonanceCard":
        spec = self.lineshape_spec
        params = spec.parameters
        for name in self.float_:
            if name not in params:
                raise ValueError(f"float: {name!r} is not a parameter of lineshape "
                                 f"{self.lineshape['type']} ({', '.join(params) or 'none'})")
            if name in spec.fixed:
                raise ValueError(f"float: {name!r} is a fixed constant of lineshape {self.lineshape['type']} "
                                 "and cannot float")
        if len(set(self.float_)) != len(self.float_):
            raise ValueError("float: a parameter is listed twice")
        for name, (lo, hi) in self.bounds.items():
            if name not in params:
                raise ValueError(f"bounds: {name!r} is not a parameter of lineshape {self.lineshape['type']}")
            value = self.lineshape[name]
            if (lo is not None and value < lo) or (hi is not None and value > hi) or \
                    (lo is not None and hi is not None and lo >= hi):
                raise ValueError(f"bounds: {name} = {value} must lie inside [{lo}, {hi}] with lo < hi")
        if self.l_max is not None and self.basis != "ls":
            raise ValueError("l_max: only with basis: ls")
        return self

    @property
    def lineshape_type(self) -> str:
        return self.lineshape["type"]

    @property
    def lineshape_spec(self) -> LineshapeType:
        """The lineshape type: the registered one, or, for a family (KMatrix), this card's own."""
        return LINESHAPES[self.lineshape_type].for_card(self.lineshape)[0]

    @property
    def lineshape_parameters(self) -> dict[str, float]:
        """Lineshape parameter values (defaults filled in), without ``type``."""
        return {k: v for k, v in self.lineshape.items() if k != "type"}

    def parameter_bounds(self, name: str) -> Bound:
        """Fit bounds of a lineshape parameter: the card's, else the lineshape's default."""
        if name in self.bounds:
            return self.bounds[name]
        return self.lineshape_spec.bounds.get(name, (None, None))


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
        if self.resonance(self.reference).couplings is None:
            raise ValueError(f"reference: {self.reference!r} carries no couplings to fix")
        from .structure import build_structure  # the amplitude's own checks name the field

        build_structure(self)
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
        """YAML text of the card (defaults and empty fields left out, short lists inline)."""
        d = self.to_dict()
        for r in d["resonances"]:
            if r["couplings"] is not None:
                r["couplings"] = {k: [float(a), float(b)] for k, (a, b) in r["couplings"].items()}
            r["float"] = list(r["float"])
            r["bounds"] = {k: list(v) for k, v in r["bounds"].items()}
            for key, default in (("float", []), ("bounds", {}), ("couplings", None), ("node", None),
                                 ("basis", "helicity"), ("l_max", None), ("parity", None)):
                if r[key] == default:
                    del r[key]
        reaction = {k: v for k, v in d["reaction"].items() if v not in (None, (), [])}
        if "chains" in reaction:
            reaction["chains"] = list(reaction["chains"])
        d["reaction"] = reaction
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
            msgs.append(f"field {_location(e['loc'], raw)}: {msg}" if e["loc"] else f"field {msg}")
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
