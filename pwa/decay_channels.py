"""Breit-Wigner whose running width is a sum over named decay channels: the ``BW_channels`` lineshape family.

The ``BW`` of :mod:`pwa.lineshapes` runs its width with the break-up momentum
of the pair the resonance is seen in (the card's node): an f2(1270) in
J/psi -> gamma K+ K- gets a K K width, though it decays to pi pi 84 % of the
time. ``BW_channels`` names the decay channels c, each with its branching
fraction BR_c at the pole, its own break-up momentum q_c and its own barrier:

    Gamma(m) = sum_c Gamma0 BR_c (q_c/q_c0) (m0/m) B_Lc^2(q_c) / B_Lc^2(q_c0),   q_c0 = q_c(m0)
    F(m)     = B_L(q) m0 Gamma0 / (m0^2 - m^2 - i m0 Gamma(m))

with q, L of the node's pair in the numerator, as in ``BW``. Both are built
from the same two functions, :func:`pwa.lineshapes.partial_width` (one
channel's running width) and :func:`pwa.lineshapes.running_width_breit_wigner`
(the propagator with its numerator); a single channel equal to the node's pair
is ``BW`` exactly.

Conventions (and why):

* Barrier factors: the unnormalised Blatt-Weisskopf B_L^2 of PHYSICS.md
  section 3 (``B_L^2 -> const z^L``) as ``BW`` uses them, so that the ratio
  ``(q/q0) B_L^2(q)/B_L^2(q0)`` already carries the ``(q/q0)^{2L+1}`` of the
  centrifugal barrier; with normalised factors (``F_L -> 1``) one writes
  ``(q/q0)^{2L+1} F_L^2(q)/F_L^2(q0)``, the same function. One meson radius
  ``radius`` (GeV^-1, default 1) for every channel and for the numerator.
* Branching fractions are fixed constants of the card, each in [0, 1], and
  sum to 1 within :data:`FRACTION_SUM_TOLERANCE`: ``width`` keeps its meaning,
  the total width at the pole, ``Gamma(m0) = Gamma0`` (the PDG's Gamma). They
  are divided by their sum when evaluated, so ``Gamma(m0) = Gamma0`` holds to
  rounding even with the tolerance. List every channel (fold one you leave
  out, e.g. f2(1270) -> 4 pi, into the others, or give it as a two-body channel
  by masses). They cannot float (:attr:`pwa.lineshapes.LineshapeType.fixed`):
  a floating fraction would break the sum on the fitted card, and one final
  state hardly constrains them. ``mass``, ``width`` and ``radius`` float as in
  ``BW`` (traced JAX scalars).
* Below a channel's threshold its partial width is zero (q_c = 0), as ``BW``
  and ``BW_f2_pipi`` treat their own channel. The analytic continuation
  ``q -> i |q|`` (the Flatte's and the K-matrix's, which would add a real part
  to the denominator) is not used: continued to ``q^2 < 0`` the Blatt-Weisskopf
  factors have poles (L = 1 at ``q^2 = -1/d^2``, L = 3 at ``-5.39/d^2``), which a
  floating radius could move into the fitted range; and every channel is open
  at the pole (below), so a closed channel only matters below its threshold, away
  from the peak. A state at or below a threshold needs ``Flatte`` or ``KMatrix``.
* The mass must lie above every channel's threshold (q_c0 > 0); a floating
  mass is bounded below by the highest threshold plus
  :data:`THRESHOLD_MARGIN` (or half the distance, for a mass closer than that).
  A card's explicit ``bounds: {mass: [lo, hi]}`` replaces that floor (as for
  every lineshape's own bound, :mod:`pwa.amplitude`): keep lo above it.
* Channels name their two daughters by PDG name (scikit-hep ``particle``
  through :func:`fastsim.events.particles.particle_info`, the project's masses of
  :data:`fastsim.events.MASSES` first) or by their masses in GeV, as the
  K-matrix's channels (:func:`pwa.kmatrix.parse_channel`). A channel with the
  masses of the node's pair (within :data:`pwa.kmatrix.MASS_TOLERANCE`) uses
  the node's masses exactly.
* The wave L_c: two spinless daughters decay from spin J only with L = J (the
  default; a card's L must equal it); two identical spinless bosons need an even
  L. A daughter with spin leaves L open: the card must give it, and
  ``|L - S| <= J <= L + S`` must hold for some S in ``|s1 - s2| .. s1 + s2``.
  Parity is not checked (the lineshape does not know the resonance's parity).
  Daughters given by mass have no known spin: L defaults to J, and an L the
  card gives is taken as it is.

Card forms. The readable (nested) form::

    lineshape:
      type: BW_channels
      mass: 1.2754
      width: 0.1866
      radius: 1.0                               # optional, default 1 GeV^-1
      channels: {pi+ pi-: 0.63, pi0 pi0: 0.315, K+ K-: 0.025, K0 K~0: 0.025, eta eta: 0.005}
      # a daughter with spin needs L:  "rho(770)0 pi0": {fraction: 0.7, L: 2}

is validated into the flat form, one real parameter per fraction, which is
what ``ModelCard.to_yaml`` and fitted cards write and a card too::

    {type: BW_channels, mass: 1.2754, width: 0.1866, radius: 1.0, "BR[pi+ pi-]": 0.63, ...,
     "BR[rho(770)0 pi0, L=2]": 0.7}

The names describe the channels completely, so one registered function
evaluates every card's lineshape from its parameter mapping alone (as
:mod:`pwa.kmatrix` does); in a model they read ``"f2(1270):BR[pi+ pi-]"``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax.numpy as jnp

from fastsim.events.particles import particle_info

from .kmatrix import Channel, parse_channel
from .lineshapes import (LINESHAPES, Bound, LineshapeContext, LineshapeType, partial_width,
                         register_lineshape, running_width_breit_wigner)

#: The branching fractions must sum to 1 within this.
FRACTION_SUM_TOLERANCE = 1e-6

#: A floating mass stays this far (GeV) above the highest channel threshold (as ``BW``'s in a model).
THRESHOLD_MARGIN = 1e-3

#: Highest L of the Blatt-Weisskopf factors.
L_MAX = 4

_NAME = "BW_channels"
_SCALARS = ("mass", "width", "radius")
_DEFAULTS = {"radius": 1.0}
_BR_KEY = re.compile(r"^BR\[(?P<ch>[^\[\],]+?)\s*(?:,\s*L\s*=\s*(?P<L>[0-9]+)\s*)?\]$")
_FIELDS = ("mass, width, radius (optional, default 1 GeV^-1) and channels: {<two particles>: "
           "<branching fraction>} such as {pi+ pi-: 0.85, K+ K-: 0.15}")


# --- channels ---------------------------------------------------------------------


@dataclass(frozen=True)
class DecayChannel:
    """One decay channel of the running width.

    Attributes:
        channel: the two daughters (label as the parameter names spell it, masses in GeV).
        L: the orbital angular momentum the card gives, or None: L = J of the resonance.
        spins: the daughters' spins; None for a daughter given by its mass (spin unknown).
        identical: the same particle (by name) twice.
    """

    channel: Channel
    L: int | None
    spins: tuple[int | None, int | None]
    identical: bool

    @property
    def label(self) -> str:
        return self.channel.label

    @property
    def parameter(self) -> str:
        """The fraction's parameter name: ``BR[pi+ pi-]``, or ``BR[rho(770)0 pi0, L=2]`` with an explicit L."""
        return f"BR[{self.label}]" if self.L is None else f"BR[{self.label}, L={self.L}]"

    @property
    def threshold(self) -> float:
        return sum(self.channel.masses)

    def wave(self, spin: int) -> int:
        """L of this channel for a resonance of spin J = ``spin``."""
        return spin if self.L is None else self.L


def decay_channel(spec: Any, L: Any = None) -> DecayChannel:
    """A channel from ``"pi+ pi-"``, ``[pi+, pi-]`` or masses in GeV, with an optional L.

    Raises ValueError for an unknown particle, a bad L, or a daughter with spin and no L.
    """
    channel = parse_channel(spec)
    names = channel.label.split()
    spins: list[int | None] = []
    for name in names:
        try:
            float(name)
            spins.append(None)  # a daughter given by its mass
        except ValueError:
            spins.append(particle_info(name).spin)
    if L is not None and (isinstance(L, bool) or not isinstance(L, int) or not 0 <= L <= L_MAX):
        raise ValueError(f"L: expected an integer 0 to {L_MAX} (the Blatt-Weisskopf factors go up to "
                         f"L = {L_MAX}), got {L!r}")
    if L is None and any(spins):
        spinning = ", ".join(f"{n}: {s}" for n, s in zip(names, spins) if s)
        raise ValueError(f"a daughter has spin ({spinning}), so the resonance's J does not fix L: give it, "
                         "e.g. {fraction: 0.7, L: 2}")
    identical = names[0] == names[1] and spins[0] is not None
    return DecayChannel(channel, L, (spins[0], spins[1]), identical)


@functools.lru_cache(maxsize=256)
def _parse_parameter(name: str) -> DecayChannel:
    match = _BR_KEY.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a {_NAME} parameter: expected mass, width, radius or "
                         "BR[<two particles>] / BR[<two particles>, L=<L>] (or the nested form with "
                         "channels: {...})")
    try:
        return decay_channel(match["ch"], None if match["L"] is None else int(match["L"]))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


@functools.lru_cache(maxsize=256)
def _channels_of_names(names: tuple[str, ...]) -> tuple[DecayChannel, ...]:
    return tuple(_parse_parameter(n) for n in names if n not in _SCALARS)


def channels_of(params: Mapping[str, Any]) -> tuple[DecayChannel, ...]:
    """The channels a flat parameter mapping names, in the order of its keys (every key but mass, width, radius)."""
    return _channels_of_names(tuple(params))


# --- checks -----------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _structure_problems(channels: tuple[DecayChannel, ...], where: list[str]) -> list[str]:
    """Duplicate channels (same masses, same L): the width sees only those."""
    problems = []
    for i, c in enumerate(channels):
        for j in range(i):
            if channels[j].channel.matches(*c.channel.masses) and channels[j].L == c.L:
                problems.append(f"{where[i]}: has the masses (and L) of {channels[j].label!r}, so the same "
                                "partial width twice: give the sum of their fractions once")
    return problems


def _fraction_problems(fractions: list[Any], where: list[str]) -> list[str]:
    problems, values = [], []
    for value, at in zip(fractions, where):
        number = _number(value)
        if number is None:
            problems.append(f"{at}: the branching fraction must be a finite number, got {value!r}")
        elif not 0.0 <= number <= 1.0:
            problems.append(f"{at}: branching fraction {number} must lie in [0, 1]")
        values.append(number)
    if not problems and abs(sum(values) - 1.0) > FRACTION_SUM_TOLERANCE:
        problems.append(f"channels: the branching fractions sum to {sum(values):.9g}, expected 1 (within "
                        f"{FRACTION_SUM_TOLERANCE:g}): width is the total width at the pole, so list every "
                        "channel (fold one you leave out into the others)")
    return problems


def _threshold_problems(mass: Any, channels: tuple[DecayChannel, ...]) -> list[str]:
    m0 = _number(mass)
    if m0 is None or not channels:
        return []  # the card's generic check names a missing or non-numeric mass
    highest = max(channels, key=lambda c: c.threshold)
    if m0 <= highest.threshold:
        return [f"mass {m0} GeV is not above the threshold {highest.threshold:.6f} GeV of channel "
                f"{highest.label}, where its q0 would be imaginary: every channel must be open at the mass "
                "(a state at or below a threshold needs a Flatte or a KMatrix)"]
    return []


def _wave_problems(channels: tuple[DecayChannel, ...], spin: int) -> list[str]:
    """L of each channel against the resonance's spin J."""
    problems = []
    for c in channels:
        L = c.wave(spin)
        s1, s2 = c.spins
        if s1 == 0 and s2 == 0 and L != spin:
            problems.append(f"channels: {c.label} has L = {L}, but two spinless daughters decay from spin "
                            f"J = {spin} only with L = J (leave L out)")
        elif s1 is not None and s2 is not None and (s1 or s2):
            if not any(abs(L - S) <= spin <= L + S for S in range(abs(s1 - s2), s1 + s2 + 1)):
                problems.append(f"channels: {c.label} with L = {L} cannot make spin J = {spin} from daughter "
                                f"spins {s1} and {s2} (|L - S| <= J <= L + S, |s1 - s2| <= S <= s1 + s2)")
        if c.identical and c.spins == (0, 0) and L % 2:
            problems.append(f"channels: {c.label}: two identical spinless bosons need an even L, not "
                            f"L = {L} (J = {spin})")
    return problems


def _validate(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    channels = channels_of(params)
    where = [c.parameter for c in channels]
    return (_structure_problems(channels, where)
            + _fraction_problems([params[c.parameter] for c in channels], where)
            + _threshold_problems(params.get("mass"), channels)
            + _wave_problems(channels, ctx.spin))


# --- the nested card form -> the flat one --------------------------------------------------


def flatten_card(mapping: Mapping[str, Any]) -> tuple[tuple[DecayChannel, ...], dict[str, Any]]:
    """(channels, flat mapping without ``type``) of a nested or flat ``BW_channels`` card mapping.

    Raises ValueError naming the field (``channels.pi+ pi-``, ``channels``, ``mass``, ...).
    """
    flat_keys = [k for k in mapping if isinstance(k, str) and k.startswith("BR[")]
    if "channels" in mapping and flat_keys:
        raise ValueError(f"give the channels either nested (channels: {{...}}) or as parameters "
                         f"({flat_keys[0]}, ...), not both")
    unknown = sorted(str(k) for k in mapping if k not in ("type", "channels", *_SCALARS, *flat_keys))
    if unknown:
        raise ValueError(f"{_NAME} has no field(s) {', '.join(unknown)}; its fields are {_FIELDS}")
    if "channels" in mapping:
        raw = mapping["channels"]
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError(f"channels: expected a mapping {{channel: branching fraction}} such as "
                             f"{{pi+ pi-: 0.85, K+ K-: 0.15}}, got {raw!r}")
        channels, fractions, where = [], [], []
        for key, value in raw.items():
            at = f"channels.{key}"
            L = None
            if isinstance(value, Mapping):
                extra = sorted(map(str, set(value) - {"fraction", "L"}))
                if extra or "fraction" not in value:
                    raise ValueError(f"{at}: expected a branching fraction or {{fraction: ..., L: ...}}, "
                                     f"got {dict(value)!r}")
                value, L = value["fraction"], value.get("L")
            try:
                channels.append(decay_channel(key, L))
            except ValueError as exc:
                raise ValueError(f"{at}: {exc}") from None
            fractions.append(value)
            where.append(at)
    else:
        if not flat_keys:
            raise ValueError(f"channels: missing; {_NAME} needs its decay channels, e.g. "
                             "channels: {pi+ pi-: 0.85, K+ K-: 0.15}")
        channels = [_parse_parameter(k) for k in flat_keys]
        fractions = [mapping[k] for k in flat_keys]
        where = [c.parameter for c in channels]
    channels_t = tuple(channels)
    problems = (_structure_problems(channels_t, where) + _fraction_problems(fractions, where)
                + _threshold_problems(mapping.get("mass"), channels_t))
    if problems:
        raise ValueError(problems[0])
    flat = {k: mapping[k] for k in _SCALARS if k in mapping}
    flat.update({c.parameter: f for c, f in zip(channels_t, fractions)})
    return channels_t, flat


def _bounds(channels: tuple[DecayChannel, ...], mass: Any) -> dict[str, Bound]:
    threshold = max(c.threshold for c in channels)
    m0 = _number(mass)
    margin = THRESHOLD_MARGIN if m0 is None else min(THRESHOLD_MARGIN, (m0 - threshold) / 2.0)
    out: dict[str, Bound] = {"mass": (threshold + margin, None), "width": (1e-6, None), "radius": (1e-6, None)}
    out.update({c.parameter: (0.0, 1.0) for c in channels})
    return out


def specialise(mapping: Mapping[str, Any]) -> tuple[LineshapeType, dict[str, Any]]:
    """The LineshapeType of one card's ``BW_channels`` and its mapping in canonical flat form (with ``type``)."""
    channels, flat = flatten_card(mapping)
    names = (*_SCALARS, *(c.parameter for c in channels))
    example = {**_DEFAULTS, **flat}
    ls = replace(LINESHAPES[_NAME], parameters=names, bounds=_bounds(channels, flat.get("mass")),
                 example={k: example.get(k) for k in names}, fixed=names[len(_SCALARS):])
    return ls, {"type": _NAME, **flat}


# --- evaluation --------------------------------------------------------------------------


def running_width(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], ctx: LineshapeContext) -> jnp.ndarray:
    """Gamma(m) = sum_c Gamma0 (BR_c / sum BR) Gamma_c(m)/Gamma_c(m0), shape (n,) (module docstring).

    Args:
        m: (n,) masses (GeV).
        params: ``mass``, ``width``, ``radius`` and one ``BR[...]`` per channel (flat form).
        ctx: the resonance's spin (L of spinless channels) and its node's pair.
    """
    m0, g0, d = params["mass"], params["width"], params["radius"]
    # A fixed order, whatever the mapping's (jit sorts a dict's keys), for the same rounding everywhere.
    channels = sorted(channels_of(params), key=lambda c: c.parameter)
    fractions = [params[c.parameter] for c in channels]
    total = functools.reduce(lambda a, b: a + b, fractions)
    width = None
    for c, fraction in zip(channels, fractions):
        m1, m2 = (ctx.m1, ctx.m2) if c.channel.matches(ctx.m1, ctx.m2) else c.channel.masses
        term = partial_width(m, m0, g0 * (fraction / total), d, c.wave(ctx.spin), m1, m2)
        width = term if width is None else width + term
    return width


#: An f2(1270) with the PDG's two-body channels (pi pi 84 %, K Kbar 4.6 %, eta eta 0.4 %), the 4 pi
#: (10 %) left out and the rest scaled to sum to 1 (the contract tests' example).
EXAMPLE_CARD: dict[str, Any] = {
    "type": _NAME, "mass": 1.2754, "width": 0.1866, "radius": 1.0,
    "channels": {"pi+ pi-": 0.63, "pi0 pi0": 0.315, "K+ K-": 0.025, "K0 K~0": 0.025, "eta eta": 0.005},
}

_EXAMPLE_CHANNELS, _EXAMPLE = flatten_card(EXAMPLE_CARD)


@register_lineshape(_NAME, tuple(_EXAMPLE), defaults=_DEFAULTS, bounds=_bounds(_EXAMPLE_CHANNELS, 1.2754),
                    validate=_validate, example=_EXAMPLE, example_spin=2, specialise=specialise,
                    fixed=tuple(c.parameter for c in _EXAMPLE_CHANNELS))
def breit_wigner_channels(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *,
                          ctx: LineshapeContext) -> jnp.ndarray:
    """BW with a running width summed over named decay channels (card-defined fractions, each its own q and barrier)."""
    return running_width_breit_wigner(m, params["mass"], params["width"], params["radius"],
                                      running_width(m, params, ctx), ctx)
