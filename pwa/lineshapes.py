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

A lineshape *family* has a card-dependent set of parameters (the K-matrix of
:mod:`pwa.kmatrix`: its poles and channels come from the card). It registers
one type with an ``example`` (for the contract tests) and a ``specialise``
hook; :meth:`LineshapeType.for_card` turns a card's lineshape mapping into the
type of that card (its own parameter names, bounds and example) and the
mapping in canonical form, whose keys are exactly those parameter names. The
registered ``function`` and ``validate`` work for every member: they read the
structure off the names of the parameters they are given.

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
  ``rho -> i |rho|``; no barrier factor (S wave only). For two equal masses
  ``2 q / m = sqrt(1 - 4 m_a^2 / s)``, so this is the analytic continuation of
  PHYSICS.md section 3: below the K K threshold the K K term becomes real,
  ``+ g_KK |rho_KK|`` in the denominator (the physical sheet). It is the
  physical choice and the default for the seed card's f0(980) (psi(2S) ->
  phi f_J); ``Flatte_abs`` below reproduces the author's code;
* ``NR``: ``1`` (a constant S-wave term);
* ``KMatrix``: the coupled-channel S wave ``[(I - i K rho)^{-1} P]_k`` with a
  P-vector, poles and channels named in the card: see :mod:`pwa.kmatrix`;
* ``BW_channels``: the ``BW`` with its running width summed over decay
  channels named in the card, ``Gamma(m) = sum_c Gamma0 BR_c (q_c/q_c0) (m0/m)
  B_Lc^2(q_c)/B_Lc^2(q_c0)`` (each channel its own break-up momentum and
  barrier), the numerator ``B_L(q) m0 Gamma0`` of the node's pair as in ``BW``:
  see :mod:`pwa.decay_channels`. ``BW`` and ``BW_channels`` share
  :func:`partial_width` and :func:`running_width_breit_wigner`; one channel,
  the node's pair, is ``BW``.

The lineshapes of the seed author's public code (PWACG, ``pwa/propogator.py``
used by ``config/pwa_info_kk.json``, PHYSICS.md section 5), with ``s = m^2``:

* ``BW_plain``: ``1 / (m0^2 - s - i m0 Gamma0)``: constant width, no barrier
  factor, no numerator (PWACG's ``BW``; the phi, m0 = 1.02, Gamma0 = 0.004,
  and every f_J except the f0(980) and the f2(1270));
* ``Flatte_abs``: the ``Flatte`` formula with the author's continuation
  ``rho = sqrt(|1 - 4 m_a^2 / s|)`` (real) below a threshold, so that the K K
  term stays in the width, ``- i g_KK |rho_KK|``, where ``Flatte`` has
  ``+ g_KK |rho_KK|``. Above both thresholds (every m >= 2 m_K, i.e. every
  f_J -> K+ K- of the seed reaction) the two are identical; between the
  pi pi and K K thresholds ``D_Flatte - D_Flatte_abs = (1 + i) g_KK |rho_KK|``
  for the denominators D (and the same with g_pipi |rho_pipi| added below the
  pi pi threshold). It is PWACG's ``flatte980`` as of the fit that produced
  the values of PHYSICS.md section 5 (commits of March 2024 to March 2025). A later PWACG revision
  (April 2025) moves the K K term to the real part below threshold, as
  ``Flatte`` does, but also multiplies the imaginary part, not the real one,
  by m0; neither type follows that revision;
* ``BW_f2_pipi``: ``m0 Gamma0 / (s - m0^2 + i g(s))`` with
  ``g(s) = m0 Gamma0 (q/q0)^5 b(q0^2) / b(q^2)``, ``q^2 = s/4 - m_pi^2`` the
  pi pi break-up momentum (charged pion mass, whatever the pair the f2 is
  seen in), ``q0 = q(m0)``, ``b(x) = x^2 + 0.1825 x + 0.033306`` GeV^4
  (PWACG's ``flatte1270``, the f2(1270)). Since ``B_2^2(z) = 13 z^2 / (z^2 +
  3 z + 9)`` with ``z = q^2 d^2``, ``(q/q0)^4 b(q0^2)/b(q^2) = B_2^2(q) /
  B_2^2(q0)`` for ``b(x) = x^2 + (3/d^2) x + 9/d^4``: ``g(s)/m0`` is the D-wave
  running width ``Gamma0 (q/q0) B_2^2(q)/B_2^2(q0)`` without the usual
  ``m0/m``. The printed constants are ``a = 0.1825 = 3/d^2`` and ``a^2 =
  0.03330625``, rounded to 0.033306, i.e. ``d = sqrt(3/0.1825) = 4.0544``
  GeV^-1 (0.800 fm); "4.05" is this rounded: d = 4.05 exactly would give
  0.18290 and 0.033452. The constants are used as printed. Note the overall
  sign: this is ``-1`` times the usual ``m0 Gamma0 / (m0^2 - s - i ...)``, so
  ``F(m0) = -i``, a phase of pi that the couplings absorb; the author also
  hard-codes m_pi^2 = 0.0194792 GeV^2 (here the charged pion mass of
  :data:`fastsim.events.MASSES`, a 4e-5 relative difference in m_pi^2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
        specialise: for a family only, ``specialise(mapping) -> (type, canonical
            mapping)`` of one card's lineshape mapping (raises ValueError naming
            the field); see :meth:`for_card`.
        fixed: parameters that a card may not list in ``float`` (constants of
            the lineshape's structure, such as the branching fractions of
            ``BW_channels``, which must keep summing to 1).
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
    specialise: Callable[[Mapping[str, Any]], tuple["LineshapeType", dict[str, Any]]] | None = None
    fixed: tuple[str, ...] = ()

    def bind(self, ctx: LineshapeContext) -> LineshapeFunction:
        """The ``(m, params) -> complex`` function for fixed kinematics."""
        return functools.partial(self.function, ctx=ctx)

    def for_card(self, mapping: Mapping[str, Any]) -> tuple["LineshapeType", dict[str, Any]]:
        """(type, mapping) of a card's ``lineshape:`` mapping: this type and the mapping itself,
        or, for a family, the type built from the mapping and the mapping in canonical form
        (``type`` plus one key per parameter)."""
        if self.specialise is None:
            return self, dict(mapping)
        return self.specialise(mapping)


#: Registry of lineshape types by card name.
LINESHAPES: dict[str, LineshapeType] = {}


def register_lineshape(name: str, parameters: tuple[str, ...], *,
                       defaults: Mapping[str, float] | None = None,
                       bounds: Mapping[str, Bound] | None = None,
                       validate: Callable[[Mapping[str, float], LineshapeContext], list[str]] | None = None,
                       example: Mapping[str, float] | None = None, example_spin: int = 0,
                       specialise: Callable[[Mapping[str, Any]], tuple[LineshapeType, dict[str, Any]]] | None = None,
                       fixed: tuple[str, ...] = (),
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
                                         dict(bounds or {}), validate, ex, example_spin, doc, specialise,
                                         tuple(fixed))
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


def phase_space_factor_abs(m: jnp.ndarray, m1: float, m2: float) -> jnp.ndarray:
    """rho = 2 |q| / m, real on both sides of threshold (sqrt(|1 - 4 m1^2/m^2|) for m1 = m2).

    Not analytic at threshold: the seed author's continuation, for ``Flatte_abs`` only.
    """
    q2 = breakup_momentum_squared(m, m1, m2)
    return jnp.sqrt(jnp.maximum(jnp.abs(q2), 1e-300)) * (2.0 / m)


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


def barrier_factor(b2: jnp.ndarray) -> jnp.ndarray:
    """B_L = sqrt(B_L^2), with a zero (not NaN) gradient where B_L^2 = 0 (L > 0 at threshold)."""
    positive = b2 > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, b2, 1.0)), 0.0)


def require_above_threshold(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    thr = ctx.m1 + ctx.m2
    if params["mass"] <= thr:
        return [f"mass {params['mass']} GeV is not above the P1 P2 threshold {thr:.6f} GeV, where q0 "
                f"would be imaginary; use a Flatte for a state below threshold"]
    return []


_BW_BOUNDS: dict[str, Bound] = {"mass": (0.0, None), "width": (1e-6, None), "radius": (1e-6, None)}


# --- the registered lineshapes -------------------------------------------------


def partial_width(m: jnp.ndarray, m0: jnp.ndarray, gamma0: jnp.ndarray, radius: jnp.ndarray, L: int,
                  m1: float, m2: float) -> jnp.ndarray:
    """Running partial width Gamma_c(m) of one two-body channel c -> m1 m2 in the wave L.

    ``Gamma_c(m) = gamma0 (q/q0) (m0/m) B_L^2(q)/B_L^2(q0)`` (PHYSICS.md
    section 3), q and q0 the channel's break-up momenta at m and m0, so that
    ``Gamma_c(m0) = gamma0``. The unnormalised B_L^2 carries the ``q^{2L}`` of
    the centrifugal barrier: the width goes as ``(q/q0)^{2L+1}`` at small q.
    Zero below the channel's threshold (q = 0 there, no continuation). Needs
    m0 above the threshold (q0 > 0).

    Args:
        m: (n,) masses (GeV); m0, gamma0, radius: scalars (traced when they float).
        L: orbital angular momentum of the channel (0..4, static).
        m1, m2: the channel's masses (GeV, static).

    Returns:
        (n,) real Gamma_c(m) in GeV.
    """
    q2 = jnp.maximum(breakup_momentum_squared(m, m1, m2), 0.0)
    q02 = breakup_momentum_squared(m0, m1, m2)
    b2 = blatt_weisskopf_squared(q2 * radius**2, L)
    b02 = blatt_weisskopf_squared(q02 * radius**2, L)
    # sqrt(q2) does not depend on the parameters, so its infinite slope at q = 0
    # never enters a gradient.
    return gamma0 * (jnp.sqrt(q2) / jnp.sqrt(q02)) * (m0 / m) * b2 / b02


def running_width_breit_wigner(m: jnp.ndarray, m0: jnp.ndarray, g0: jnp.ndarray, radius: jnp.ndarray,
                               width: jnp.ndarray, ctx: LineshapeContext) -> jnp.ndarray:
    """``B_L(q) m0 Gamma0 / (m0^2 - m^2 - i m0 Gamma(m))`` for a given running width Gamma(m).

    The numerator's barrier factor is that of the resonance's own decay (the
    pair of ``ctx``, L = ``ctx.spin``); ``width`` is Gamma(m), shape (n,).
    """
    q2 = jnp.maximum(breakup_momentum_squared(m, ctx.m1, ctx.m2), 0.0)
    b = barrier_factor(blatt_weisskopf_squared(q2 * radius**2, ctx.spin))
    return b * m0 * g0 / (m0**2 - m**2 - 1j * m0 * width)


@register_lineshape("BW", ("mass", "width", "radius"), defaults={"radius": 1.0},
                    bounds=_BW_BOUNDS, validate=require_above_threshold,
                    example={"mass": 1.5223, "width": 0.0858, "radius": 1.0}, example_spin=2)
def breit_wigner(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Relativistic Breit-Wigner with energy-dependent width and Blatt-Weisskopf factor."""
    m0, g0, d = params["mass"], params["width"], params["radius"]
    width = partial_width(m, m0, g0, d, ctx.spin, ctx.m1, ctx.m2)
    return running_width_breit_wigner(m, m0, g0, d, width, ctx)


@register_lineshape("BW_const", ("mass", "width", "radius"), defaults={"radius": 1.0},
                    bounds=_BW_BOUNDS, example={"mass": 2.011, "width": 0.202, "radius": 1.0},
                    example_spin=4)
def breit_wigner_constant_width(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *,
                                ctx: LineshapeContext) -> jnp.ndarray:
    """Relativistic Breit-Wigner with constant width and Blatt-Weisskopf factor B_L(q)."""
    m0, g0, d = params["mass"], params["width"], params["radius"]
    q2 = jnp.maximum(breakup_momentum_squared(m, ctx.m1, ctx.m2), 0.0)
    b = barrier_factor(blatt_weisskopf_squared(q2 * d**2, ctx.spin))
    return b * m0 * g0 / (m0**2 - m**2 - 1j * m0 * g0)


def _s_wave_only(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    return [] if ctx.spin == 0 else [f"a Flatte describes an S wave (spin 0), not spin {ctx.spin}"]


_FLATTE_BOUNDS: dict[str, Bound] = {"mass": (0.0, None), "g_pipi": (1e-6, None), "g_ratio": (0.0, None)}


def _flatte(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], continued: bool) -> jnp.ndarray:
    """Flatte with rho -> i |rho| below threshold when ``continued``, else the real |rho|."""
    m0, g_pipi = params["mass"], params["g_pipi"]
    g_kk = params["g_ratio"] * g_pipi
    rho = phase_space_factor if continued else phase_space_factor_abs
    rho_pipi = rho(m, MASSES["pi+"], MASSES["pi-"])
    rho_kk = rho(m, MASSES["K+"], MASSES["K-"])
    return 1.0 / (m0**2 - m**2 - 1j * (g_pipi * rho_pipi + g_kk * rho_kk))


@register_lineshape("Flatte", ("mass", "g_pipi", "g_ratio"), defaults={"g_ratio": 4.21},
                    bounds=_FLATTE_BOUNDS, validate=_s_wave_only,
                    example={"mass": 0.979, "g_pipi": 0.107, "g_ratio": 4.21})
def flatte(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Flatte for the f0(980): couplings g_pipi and g_KK = g_ratio * g_pipi (GeV^2)."""
    return _flatte(m, params, continued=True)


@register_lineshape("Flatte_abs", ("mass", "g_pipi", "g_ratio"), defaults={"g_ratio": 4.21},
                    bounds=_FLATTE_BOUNDS, validate=_s_wave_only,
                    example={"mass": 0.9795, "g_pipi": 0.1068, "g_ratio": 8.57})
def flatte_abs(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Flatte with the seed author's rho = sqrt(|1 - 4 m^2/s|) below threshold (not analytic)."""
    return _flatte(m, params, continued=False)


@register_lineshape("BW_plain", ("mass", "width"),
                    bounds={"mass": (0.0, None), "width": (1e-6, None)},
                    example={"mass": 1.5223, "width": 0.0858}, example_spin=2)
def breit_wigner_plain(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *,
                       ctx: LineshapeContext) -> jnp.ndarray:
    """Constant-width Breit-Wigner 1 / (m0^2 - m^2 - i m0 Gamma0), no barrier factor (seed author's BW)."""
    m0, g0 = params["mass"], params["width"]
    return 1.0 / (m0**2 - m**2 - 1j * m0 * g0)


#: The seed author's pi pi D-wave form factor b(x) = x^2 + F2_PIPI_B1 x + F2_PIPI_B0 (GeV^4),
#: x = q^2: 3/d^2 and (3/d^2)^2 for d = sqrt(3/0.1825) = 4.0544 GeV^-1, as printed in PWACG.
F2_PIPI_B1 = 0.1825
F2_PIPI_B0 = 0.033306

_PIPI_THRESHOLD = MASSES["pi+"] + MASSES["pi-"]


def _f2_pipi_checks(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    problems = []
    if ctx.spin != 2:
        problems.append(f"BW_f2_pipi has a pi pi D-wave width (spin 2), not spin {ctx.spin}")
    if params["mass"] <= _PIPI_THRESHOLD:
        problems.append(f"mass {params['mass']} GeV is not above the pi pi threshold "
                        f"{_PIPI_THRESHOLD:.6f} GeV, where q0 would be imaginary")
    return problems


def _f2_pipi_b(x: jnp.ndarray) -> jnp.ndarray:
    return x * (x + F2_PIPI_B1) + F2_PIPI_B0


# The mass bound keeps q0^2 = m0^2/4 - m_pi^2 > 0 (1 MeV above the pi pi threshold).
@register_lineshape("BW_f2_pipi", ("mass", "width"),
                    bounds={"mass": (_PIPI_THRESHOLD + 1e-3, None), "width": (1e-6, None)},
                    validate=_f2_pipi_checks, example={"mass": 1.29, "width": 0.196}, example_spin=2)
def breit_wigner_f2_pipi(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *,
                         ctx: LineshapeContext) -> jnp.ndarray:
    """Seed author's f2(1270): m0 G0 / (s - m0^2 + i g(s)), pi pi D-wave running width g(s)."""
    m0, g0 = params["mass"], params["width"]
    mpi2 = MASSES["pi+"] ** 2
    # The pi pi momentum is real wherever the f2 is seen in K K; the floor only
    # keeps m < 2 m_pi finite (g = 0 there).
    q2 = jnp.maximum(m**2 / 4.0 - mpi2, 0.0)
    q02 = m0**2 / 4.0 - mpi2
    g = m0 * g0 * (q2 / q02) ** 2.5 * _f2_pipi_b(q02) / _f2_pipi_b(q2)
    return m0 * g0 / (m**2 - m0**2 + 1j * g)


@register_lineshape("NR", (), example={})
def non_resonant(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """Constant non-resonant term, F = 1."""
    return jnp.ones_like(m) + 0j


# The K-matrix and BW_channels families register themselves (they import the registry from this module).
from . import kmatrix as _kmatrix  # noqa: E402,F401
from . import decay_channels as _decay_channels  # noqa: E402,F401
