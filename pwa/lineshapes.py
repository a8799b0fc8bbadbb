"""Lineshapes F_R(m) of ../shared/PHYSICS.md section 3, and their registry.

A lineshape is a pure JAX function ``(m, params) -> complex``: ``m`` is an
array of P1 P2 masses (GeV, shape (n,)), ``params`` a mapping from parameter
name to a real scalar (a jnp float64 0-d array when it floats in a fit), and
the result has the shape of ``m``. Static kinematics (spin = orbital angular
momentum L, daughter masses) is bound when the model is built, see
:meth:`LineshapeType.bind`.

New lineshapes register themselves with :func:`register_lineshape`; the model
card, the model and the contract tests pick them up from :data:`LINESHAPES`
with no other change.

Conventions (written here because PHYSICS.md leaves them open):

* ``q`` is the P1 momentum in the X rest frame, ``z = (q d)^2`` with the meson
  radius ``d`` in GeV^-1, ``L`` = spin of the resonance;
* Blatt-Weisskopf factors are the unnormalised ones of PHYSICS.md
  (``B_L^2 -> const * z^L`` at small z), the same as ampform's
  ``BlattWeisskopfSquared``;
* ``BW``: ``B_L(q) m0 Gamma0 / (m0^2 - m^2 - i m0 Gamma(m))`` with
  ``Gamma(m) = Gamma0 (q/q0) (m0/m) B_L^2(q)/B_L^2(q0)``;
* ``BW_const``: the same numerator ``B_L(q) m0 Gamma0`` (the barrier factor
  belongs to the decay vertex, not to the width) over
  ``m0^2 - m^2 - i m0 Gamma0``;
* ``Flatte``: ``1 / (m0^2 - m^2 - i (g_pipi rho_pipi + g_KK rho_KK))`` with
  ``g_KK = g_ratio * g_pipi``, ``rho = 2 q / m`` of the channel, computed with
  the charged pion and charged kaon masses, continued below threshold as
  ``rho -> i |rho|``; no barrier factor (S wave only);
* ``NR``: ``1`` (a constant S-wave term).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax.numpy as jnp

from fastsim.events import MASSES

#: ``(m, params) -> complex`` with m of shape (n,) and a result of shape (n,).
LineshapeFunction = Callable[[jnp.ndarray, Mapping[str, jnp.ndarray]], jnp.ndarray]

#: Bounds (lo, hi) of a parameter; None = unbounded on that side.
Bound = tuple[float | None, float | None]


@dataclass(frozen=True)
class LineshapeContext:
    """Static kinematics a lineshape is built with.

    Attributes:
        spin: spin J of the resonance = orbital angular momentum L of X -> P1 P2.
        m1, m2: masses of P1 and P2 (GeV).
    """

    spin: int
    m1: float
    m2: float


@dataclass(frozen=True)
class LineshapeType:
    """A registered lineshape.

    Attributes:
        name: the card's ``lineshape.type``.
        function: ``function(m, params, ctx) -> complex`` (see module docstring).
        parameters: names of its real parameters, in order.
        defaults: default values of the optional parameters.
        bounds: default fit bounds per parameter.
        validate: ``validate(params, ctx) -> list of problems`` for a card's
            values (e.g. a mass below threshold); empty when fine.
        example: typical values of every parameter (with ``example_spin``),
            used by the contract tests that every registered lineshape passes.
        example_spin: a spin the example is valid for.
        doc: one line for listings.
    """

    name: str
    function: Callable[..., jnp.ndarray]
    parameters: tuple[str, ...]
    defaults: Mapping[str, float] = field(default_factory=dict)
    bounds: Mapping[str, Bound] = field(default_factory=dict)
    validate: Callable[[Mapping[str, float], LineshapeContext], list[str]] | None = None
    example: Mapping[str, float] = field(default_factory=dict)
    example_spin: int = 0
    doc: str = ""

    def bind(self, ctx: LineshapeContext) -> LineshapeFunction:
        """The ``(m, params) -> complex`` function for fixed kinematics."""
        return functools.partial(self.function, ctx=ctx)


#: Registry of lineshape types by card name.
LINESHAPES: dict[str, LineshapeType] = {}


def register_lineshape(name: str, parameters: tuple[str, ...], *,
                       defaults: Mapping[str, float] | None = None,
                       bounds: Mapping[str, Bound] | None = None,
                       validate: Callable[[Mapping[str, float], LineshapeContext], list[str]] | None = None,
                       example: Mapping[str, float] | None = None, example_spin: int = 0,
                       ) -> Callable[[Callable[..., jnp.ndarray]], Callable[..., jnp.ndarray]]:
    """Decorator registering ``function(m, params, *, ctx) -> complex`` under ``name``."""

    def decorate(function: Callable[..., jnp.ndarray]) -> Callable[..., jnp.ndarray]:
        if name in LINESHAPES:
            raise ValueError(f"lineshape {name!r} is already registered")
        doc = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        ex = dict(example or {})
        if set(ex) != set(parameters):
            raise ValueError(f"lineshape {name!r}: the example must give every parameter {parameters}")
        LINESHAPES[name] = LineshapeType(name, function, tuple(parameters), dict(defaults or {}),
                                         dict(bounds or {}), validate, ex, example_spin, doc)
        return function

    return decorate


# --- kinematics ------------------------------------------------------------


def breakup_momentum_squared(m: jnp.ndarray, m1: float, m2: float) -> jnp.ndarray:
    """q^2 of either daughter in the rest frame of mass m (negative below threshold)."""
    m2sq = m * m
    return (m2sq - (m1 + m2) ** 2) * (m2sq - (m1 - m2) ** 2) / (4.0 * m2sq)


def breakup_momentum(m: jnp.ndarray, m1: float, m2: float) -> jnp.ndarray:
    """q >= 0, zero below threshold (lineshapes needing continuation use :func:`phase_space_factor`)."""
    # The floor keeps the gradient of sqrt finite exactly at threshold.
    return jnp.sqrt(jnp.maximum(breakup_momentum_squared(m, m1, m2), 1e-300))


def phase_space_factor(m: jnp.ndarray, m1: float, m2: float) -> jnp.ndarray:
    """rho = 2 q / m, complex: i |rho| below threshold (analytic continuation)."""
    q2 = breakup_momentum_squared(m, m1, m2)
    root = jnp.sqrt(jnp.maximum(jnp.abs(q2), 1e-300))
    return jnp.where(q2 >= 0, root + 0j, 1j * root) * (2.0 / m)


def blatt_weisskopf_squared(z: jnp.ndarray, L: int) -> jnp.ndarray:
    """Unnormalised Blatt-Weisskopf B_L^2(z), z = (q d)^2, L = 0..4 (PHYSICS.md section 3)."""
    if L == 0:
        return jnp.ones_like(z)
    if L == 1:
        return 2.0 * z / (z + 1.0)
    if L == 2:
        return 13.0 * z**2 / ((z - 3.0) ** 2 + 9.0 * z)
    if L == 3:
        return 277.0 * z**3 / (z * (z - 15.0) ** 2 + 9.0 * (2.0 * z - 5.0) ** 2)
    if L == 4:
        return 12746.0 * z**4 / ((z**2 - 45.0 * z + 105.0) ** 2 + 25.0 * z * (2.0 * z - 21.0) ** 2)
    raise ValueError(f"Blatt-Weisskopf factor for L = {L} not implemented (0..4)")


def require_above_threshold(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    thr = ctx.m1 + ctx.m2
    if params["mass"] <= thr:
        return [f"mass {params['mass']} GeV is not above the P1 P2 threshold {thr:.6f} GeV, where q0 "
                f"would be imaginary; use a Flatte for a state below threshold"]
    return []


_BW_BOUNDS: dict[str, Bound] = {"mass": (0.0, None), "width": (1e-6, None), "radius": (1e-6, None)}


# --- the registered lineshapes -------------------------------------------------


@register_lineshape("BW", ("mass", "width", "radius"), defaults={"radius": 1.0},
                    bounds=_BW_BOUNDS, validate=require_above_threshold,
                    example={"mass": 1.5223, "width": 0.0858, "radius": 1.0}, example_spin=2)
def breit_wigner(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Relativistic Breit-Wigner with energy-dependent width and Blatt-Weisskopf factor."""
    m0, g0, d = params["mass"], params["width"], params["radius"]
    q2 = jnp.maximum(breakup_momentum_squared(m, ctx.m1, ctx.m2), 0.0)
    q02 = breakup_momentum_squared(m0, ctx.m1, ctx.m2)
    b2 = blatt_weisskopf_squared(q2 * d**2, ctx.spin)
    b02 = blatt_weisskopf_squared(q02 * d**2, ctx.spin)
    # sqrt(q2) does not depend on the parameters, so its infinite slope at q = 0
    # never enters a gradient.
    width = g0 * (jnp.sqrt(q2) / jnp.sqrt(q02)) * (m0 / m) * b2 / b02
    return jnp.sqrt(b2) * m0 * g0 / (m0**2 - m**2 - 1j * m0 * width)


@register_lineshape("BW_const", ("mass", "width", "radius"), defaults={"radius": 1.0},
                    bounds=_BW_BOUNDS, example={"mass": 2.011, "width": 0.202, "radius": 1.0},
                    example_spin=4)
def breit_wigner_constant_width(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *,
                                ctx: LineshapeContext) -> jnp.ndarray:
    """Relativistic Breit-Wigner with constant width and Blatt-Weisskopf factor B_L(q)."""
    m0, g0, d = params["mass"], params["width"], params["radius"]
    q2 = jnp.maximum(breakup_momentum_squared(m, ctx.m1, ctx.m2), 0.0)
    b = jnp.sqrt(blatt_weisskopf_squared(q2 * d**2, ctx.spin))
    return b * m0 * g0 / (m0**2 - m**2 - 1j * m0 * g0)


def _s_wave_only(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    return [] if ctx.spin == 0 else [f"a Flatte describes an S wave (spin 0), not spin {ctx.spin}"]


@register_lineshape("Flatte", ("mass", "g_pipi", "g_ratio"), defaults={"g_ratio": 4.21},
                    bounds={"mass": (0.0, None), "g_pipi": (1e-6, None), "g_ratio": (0.0, None)},
                    validate=_s_wave_only, example={"mass": 0.979, "g_pipi": 0.107, "g_ratio": 4.21})
def flatte(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Flatte for the f0(980): couplings g_pipi and g_KK = g_ratio * g_pipi (GeV^2)."""
    m0, g_pipi = params["mass"], params["g_pipi"]
    g_kk = params["g_ratio"] * g_pipi
    rho_pipi = phase_space_factor(m, MASSES["pi+"], MASSES["pi-"])
    rho_kk = phase_space_factor(m, MASSES["K+"], MASSES["K-"])
    return 1.0 / (m0**2 - m**2 - 1j * (g_pipi * rho_pipi + g_kk * rho_kk))


@register_lineshape("NR", (), example={})
def non_resonant(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Constant non-resonant term, F = 1."""
    return jnp.ones_like(m) + 0j
