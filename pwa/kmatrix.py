"""K-matrix lineshape with P-vector production: the ``KMatrix`` lineshape family.

Coupled-channel S wave (J^PC = 0++) of N two-body channels i (pi+ pi-, K+ K-,
eta eta, ...) with n poles a, at s = m^2 of the resonance's pair:

    K_ij(s) = sum_a g_ai g_aj / (m_a^2 - s) + f_ij          (f symmetric, optional)
    P_i(s)  = sum_a beta_a g_ai / (m_a^2 - s) + fP_i        (fP optional)
    F(s)    = (I - i K(s) rho(s))^{-1} P(s),   rho = diag(rho_1 .. rho_N)
    T(s)    = (I - i K(s) rho(s))^{-1} K(s)

The lineshape of a resonance is F_k, k the channel of its own decay (the pair
of the model card's node, :class:`~pwa.lineshapes.LineshapeContext` m1, m2).

Conventions:

* Phase-space factor: the simple one,
  ``rho_i(s) = 2 q_i / sqrt(s) = sqrt(1 - (m1+m2)^2/s) sqrt(1 - (m1-m2)^2/s)``
  above the channel's threshold, continued below it as ``rho -> i |rho|`` (the
  Flatte's continuation, physical sheet); for an unequal-mass channel the same
  ``i |rho|`` is kept below the pseudo-threshold ``(m1-m2)^2`` too (where the two
  split roots would give a real negative value). No dispersive (Chew-Mandelstam)
  real part: a possible later option (ampform's ``PhaseSpaceFactorSWave``).
  With a real symmetric K and real rho >= 0 above all thresholds,
  ``S = I + 2 i sqrt(rho) T sqrt(rho)`` is unitary.
* Units: m_a and g_ai in GeV (real; g may be negative), f_ij dimensionless and
  real, beta_a dimensionless and complex, fP_i complex in GeV^-1, F in GeV^-1.
* Production couplings are ``[magnitude, phase]`` (phase in radians), as the
  card's couplings: ``beta_a = mag e^{i phase}``. The first pole's beta is
  fixed to 1: the resonance's complex coupling in the card gives the overall
  factor. The same for ``fP_i``.
* No barrier factors (S wave only: a card with spin != 0 is refused), no Adler
  zero.
* The resonance's channel k is the one whose two masses equal the pair's
  (either order) within :data:`MASS_TOLERANCE`; its rho then uses the pair's
  masses exactly, so that it vanishes at the pair's threshold. Other channels
  use their own masses (PDG, scikit-hep ``particle`` through
  :func:`fastsim.events.particles.particle_info`, or given in GeV).
* Numerics: F and T solve the bordered linear system of N + n unknowns
  (x, w), ``w = D^{-1} (beta + i G rho x)``, ``D = diag(m_a^2 - s)``::

      [ I - i f rho   -G^T ] [x]   [fP  ]
      [ -i G rho        D  ] [w] = [beta],     G_ai = g_ai,

  whose x is F (T with the right-hand side [f; G]). It has no 1/(m_a^2 - s):
  F stays finite and exact at a K-matrix pole s = m_a^2, where K and P are
  infinite. The small systems are solved by unrolled Gauss-Jordan elimination
  with partial pivoting (:func:`small_solve`), not LAPACK (see there).

Card forms. The readable (nested) form::

    lineshape:
      type: KMatrix
      channels: [pi+ pi-, K+ K-]        # each two PDG names or masses (GeV): "0.1396 0.1396"
      poles:
        f0(980):  {mass: 0.98, g: [0.30, 0.75]}                  # one g per channel
        f0(1500): {mass: 1.50, g: [0.35, 0.20], beta: [0.8, 1.2]} # beta: [magnitude, phase]
      background: [[0.2, 0.1], [0.1, -0.1]]                     # f_ij, optional, symmetric
      production_background: [[0.05, 0.0], [0.3, -0.5]]         # fP_i [mag, phase], optional

is validated into the flat form that names every real parameter; the flat
form is a card too (it is what ``ModelCard.to_yaml`` and fitted cards write),
and its names are what ``float`` and ``bounds`` take::

    f0(980).mass   f0(980).g[pi+ pi-]   f0(980).g[K+ K-]
    f0(1500).mass  f0(1500).g[pi+ pi-]  f0(1500).g[K+ K-]  f0(1500).beta.mag  f0(1500).beta.phase
    f[pi+ pi-, pi+ pi-]  f[pi+ pi-, K+ K-]  f[K+ K-, K+ K-]
    fP[pi+ pi-].mag  fP[pi+ pi-].phase  fP[K+ K-].mag  fP[K+ K-].phase

The names describe the K-matrix completely (poles, channels, which background
terms exist), so one registered function evaluates every card's K-matrix from
its parameter mapping alone, and a model's parameters are
``"<resonance>:f0(1500).beta.mag"`` and so on.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp

from fastsim.events.particles import particle_info

from .lineshapes import LINESHAPES, Bound, LineshapeContext, LineshapeType, register_lineshape

#: Two channel masses (GeV) closer than this are the same particle (pi0 and pi+ differ by 4.6 MeV).
MASS_TOLERANCE = 1e-4

_NAME_FORBIDDEN = set("[],:")

_MASS_KEY = re.compile(r"^(?P<pole>.+)\.mass$")
_G_KEY = re.compile(r"^(?P<pole>.+)\.g\[(?P<ch>[^\[\]]+)\]$")
_BETA_KEY = re.compile(r"^(?P<pole>.+)\.beta\.(?P<part>mag|phase)$")
_F_KEY = re.compile(r"^f\[(?P<a>[^\[\],]+),(?P<b>[^\[\],]+)\]$")
_FP_KEY = re.compile(r"^fP\[(?P<ch>[^\[\]]+)\]\.(?P<part>mag|phase)$")

_NESTED_FIELDS = ("channels", "poles", "background", "production_background")


# --- channels -------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """A two-body channel.

    Attributes:
        label: the daughters as the parameter names spell them, e.g. ``"pi+ pi-"``.
        masses: (m1, m2) in GeV.
    """

    label: str
    masses: tuple[float, float]

    def matches(self, m1: float, m2: float) -> bool:
        """Whether (m1, m2) are this channel's masses, in either order."""
        a, b = self.masses
        return ((abs(a - m1) < MASS_TOLERANCE and abs(b - m2) < MASS_TOLERANCE)
                or (abs(a - m2) < MASS_TOLERANCE and abs(b - m1) < MASS_TOLERANCE))


def _daughter(token: Any) -> tuple[str, float]:
    """(spelling, mass) of one daughter: a PDG name or a mass in GeV."""
    if isinstance(token, bool):
        raise ValueError(f"{token!r} is neither a particle name nor a mass")
    if isinstance(token, (int, float)):
        value = float(token)
    else:
        text = str(token).strip()
        try:
            value = float(text)
        except ValueError:
            return text, particle_info(text).mass  # ValueError names the unknown particle
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"mass {value} GeV must be finite and >= 0")
    return repr(value), value


def parse_channel(spec: Any) -> Channel:
    """A channel from ``"pi+ pi-"``, ``[pi+, pi-]`` or ``[0.13957, 0.13957]`` (GeV)."""
    tokens = spec.split() if isinstance(spec, str) else spec
    if not isinstance(tokens, Sequence) or isinstance(tokens, str) or len(tokens) != 2:
        raise ValueError(f"expected two particles (PDG names or masses in GeV) such as \"pi+ pi-\", "
                         f"got {spec!r}")
    (n1, m1), (n2, m2) = (_daughter(t) for t in tokens)
    label = f"{n1} {n2}"
    if _NAME_FORBIDDEN & set(label):
        raise ValueError(f"channel {label!r}: names must not contain any of [ ] , :")
    return Channel(label, (m1, m2))


def channel_phase_space(s: jnp.ndarray, m1: float, m2: float) -> jnp.ndarray:
    """rho(s) = sqrt(1 - (m1+m2)^2/s) sqrt(1 - (m1-m2)^2/s), i |rho| below the threshold (m1+m2)^2."""
    prod = (1.0 - (m1 + m2) ** 2 / s) * (1.0 - (m1 - m2) ** 2 / s)
    # The masses are constants: the floor only keeps sqrt finite at threshold, no gradient flows here.
    root = jnp.sqrt(jnp.maximum(jnp.abs(prod), 1e-300))
    return jnp.where(s >= (m1 + m2) ** 2, root + 0j, 1j * root)


# --- the structure of a K-matrix: read off its parameter names -------------------


@dataclass(frozen=True)
class KMatrixSpec:
    """Poles, channels and background terms of a K-matrix (no values).

    Attributes:
        poles: pole names; the first one's beta is fixed to 1.
        channels: the channels, in order.
        background: (i, j) channel indices (i <= j) of the f_ij that are parameters.
        production_background: channel indices of the fP_i that are parameters.
    """

    poles: tuple[str, ...]
    channels: tuple[Channel, ...]
    background: tuple[tuple[int, int], ...] = ()
    production_background: tuple[int, ...] = ()

    def mass_name(self, a: int) -> str:
        return f"{self.poles[a]}.mass"

    def g_name(self, a: int, i: int) -> str:
        return f"{self.poles[a]}.g[{self.channels[i].label}]"

    def beta_names(self, a: int) -> tuple[str, str]:
        return f"{self.poles[a]}.beta.mag", f"{self.poles[a]}.beta.phase"

    def f_name(self, i: int, j: int) -> str:
        return f"f[{self.channels[i].label}, {self.channels[j].label}]"

    def fp_names(self, i: int) -> tuple[str, str]:
        label = self.channels[i].label
        return f"fP[{label}].mag", f"fP[{label}].phase"

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every real parameter name, in canonical order."""
        names: list[str] = []
        for a in range(len(self.poles)):
            names.append(self.mass_name(a))
            names += [self.g_name(a, i) for i in range(len(self.channels))]
            if a > 0:
                names += self.beta_names(a)
        names += [self.f_name(i, j) for i, j in self.background]
        for i in self.production_background:
            names += self.fp_names(i)
        return tuple(names)

    @property
    def bounds(self) -> dict[str, Bound]:
        out: dict[str, Bound] = {self.mass_name(a): (0.0, None) for a in range(len(self.poles))}
        for a in range(1, len(self.poles)):
            out[self.beta_names(a)[0]] = (0.0, None)
        for i in self.production_background:
            out[self.fp_names(i)[0]] = (0.0, None)
        return out

    def channel_of(self, m1: float, m2: float) -> int | None:
        """Index of the channel with masses (m1, m2), None if none has them."""
        for i, c in enumerate(self.channels):
            if c.matches(m1, m2):
                return i
        return None


def _check_pole_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip() or _NAME_FORBIDDEN & set(name):
        raise ValueError(f"{where}: pole name {name!r} must be a non-empty string without surrounding "
                         "spaces and without any of [ ] , :")
    return name


def _check_channels(channels: Sequence[Channel], where: str) -> None:
    for i, c in enumerate(channels):
        for j in range(i):
            if channels[j].matches(*c.masses):
                raise ValueError(f"{where}: {c.label!r} has the masses of {channels[j].label!r}: "
                                 "the same channel twice")


@functools.lru_cache(maxsize=256)
def parse_names(names: tuple[str, ...]) -> tuple[KMatrixSpec, tuple[str, ...]]:
    """The K-matrix a set of flat parameter names describes (any order), and each name's canonical spelling.

    Canonical: channel labels as :func:`parse_channel` spells them, ``f[a, b]``
    in channel order. The pole without beta is the first pole. Raises
    ValueError naming the offending parameter.
    """
    poles: list[str] = []
    channels: dict[str, Channel] = {}   # label -> channel, in order of appearance
    masses: set[str] = set()
    betas: dict[str, set[str]] = {}
    fps: dict[str, set[str]] = {}
    gs: set[tuple[str, str]] = set()
    fs: list[tuple[str, str]] = []
    parsed: list[tuple] = []

    def channel(text: str, key: str) -> str:
        try:
            c = parse_channel(text)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        channels.setdefault(c.label, c)
        return c.label

    def pole(name: str, key: str) -> str:
        _check_pole_name(name, key)
        if name not in poles:
            poles.append(name)
        return name

    for key in names:
        if (match := _G_KEY.match(key)) is not None:
            parsed.append(("g", pole(match["pole"], key), channel(match["ch"], key)))
            gs.add(parsed[-1][1:])
        elif (match := _BETA_KEY.match(key)) is not None:
            parsed.append(("beta", pole(match["pole"], key), match["part"]))
            betas.setdefault(parsed[-1][1], set()).add(match["part"])
        elif (match := _MASS_KEY.match(key)) is not None:
            parsed.append(("mass", pole(match["pole"], key)))
            masses.add(parsed[-1][1])
        elif (match := _FP_KEY.match(key)) is not None:
            parsed.append(("fP", channel(match["ch"], key), match["part"]))
            fps.setdefault(parsed[-1][1], set()).add(match["part"])
        elif (match := _F_KEY.match(key)) is not None:
            parsed.append(("f", channel(match["a"], key), channel(match["b"], key)))
            fs.append(parsed[-1][1:])
        else:
            raise ValueError(f"{key!r} is not a K-matrix parameter: expected <pole>.mass, "
                             "<pole>.g[<channel>], <pole>.beta.mag/.phase, f[<channel>, <channel>] or "
                             "fP[<channel>].mag/.phase (or the nested form with channels and poles)")
    if not poles:
        raise ValueError("a K-matrix needs channels and at least one pole (poles: {name: {mass, g}})")
    labels = list(channels)
    _check_channels(list(channels.values()), "channels")
    for p in poles:
        if p not in masses:
            raise ValueError(f"{p}.mass: missing (the K-matrix pole mass, GeV)")
        for c in labels:
            if (p, c) not in gs:
                raise ValueError(f"{p}.g[{c}]: missing (every pole has a coupling to every channel; "
                                 "write 0 for none)")
        if p in betas and betas[p] != {"mag", "phase"}:
            raise ValueError(f"{p}.beta: give both {p}.beta.mag and {p}.beta.phase")
    for c, parts in fps.items():
        if parts != {"mag", "phase"}:
            raise ValueError(f"fP[{c}]: give both fP[{c}].mag and fP[{c}].phase")
    without_beta = [p for p in poles if p not in betas]
    if len(without_beta) != 1:
        raise ValueError("exactly one pole, the first, has no beta (it is fixed to 1); poles without "
                         f"beta: {', '.join(without_beta) or 'none'}")
    index = {label: i for i, label in enumerate(labels)}
    background = sorted({tuple(sorted((index[a], index[b]))) for a, b in fs})
    spec = KMatrixSpec((without_beta[0], *(p for p in poles if p != without_beta[0])),
                       tuple(channels.values()), tuple(background), tuple(sorted(index[c] for c in fps)))
    canonical = []
    for item in parsed:
        kind = item[0]
        if kind == "g":
            canonical.append(spec.g_name(spec.poles.index(item[1]), index[item[2]]))
        elif kind == "beta":
            canonical.append(f"{item[1]}.beta.{item[2]}")
        elif kind == "mass":
            canonical.append(f"{item[1]}.mass")
        elif kind == "fP":
            canonical.append(f"fP[{item[1]}].{item[2]}")
        else:
            canonical.append(spec.f_name(*sorted((index[item[1]], index[item[2]]))))
    seen: dict[str, str] = {}
    for key, name in zip(names, canonical):
        if name in seen:
            raise ValueError(f"{key}: the same parameter as {seen[name]!r}"
                             + (" (f is symmetric: give each pair once)" if name.startswith("f[") else ""))
        seen[name] = key
    return spec, tuple(canonical)


def spec_of(params: Mapping[str, Any]) -> KMatrixSpec:
    """The K-matrix that a flat parameter mapping describes (its keys; any order)."""
    return parse_names(tuple(params))[0]


def canonical_parameters(params: Mapping[str, Any]) -> tuple[KMatrixSpec, dict[str, Any]]:
    """(spec, values by canonical name) of a flat mapping in any key order (jit sorts a dict's keys)."""
    spec, canonical = parse_names(tuple(params))
    return spec, dict(zip(canonical, params.values()))


# --- the nested card form -> the flat one ---------------------------------------------


def _number_pair(value: Any, where: str, what: str) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where}: expected {what}, got {value!r}")
    return value[0], value[1]


def flatten_card(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The flat parameter mapping (without ``type``) of a nested KMatrix card mapping.

    Raises ValueError naming the field (``channels[1]``, ``poles.f0(1500).g``, ``background``, ...).
    """
    unknown = sorted(set(mapping) - {"type", *_NESTED_FIELDS})
    if unknown:
        raise ValueError(f"KMatrix has no field(s) {', '.join(unknown)}: the nested form has "
                         f"{', '.join(_NESTED_FIELDS)}; parameter names such as f0(980).mass belong to the "
                         "flat form, without channels and poles")
    raw_channels = mapping.get("channels")
    if not isinstance(raw_channels, (list, tuple)) or not raw_channels:
        raise ValueError("channels: expected a list of two-particle channels such as [pi+ pi-, K+ K-], "
                         f"got {raw_channels!r}")
    channels = []
    for i, c in enumerate(raw_channels):
        try:
            channels.append(parse_channel(c))
        except ValueError as exc:
            raise ValueError(f"channels[{i}]: {exc}") from None
    for i, c in enumerate(channels):
        for j in range(i):
            if channels[j].matches(*c.masses):
                raise ValueError(f"channels[{i}]: {c.label!r} has the masses of channels[{j}] "
                                 f"{channels[j].label!r}: the same channel twice")
    n = len(channels)
    listing = ", ".join(c.label for c in channels)
    raw_poles = mapping.get("poles")
    if not isinstance(raw_poles, Mapping) or not raw_poles:
        raise ValueError("poles: expected a mapping {name: {mass: ..., g: [...]}} with at least one pole, "
                         f"got {raw_poles!r}")
    poles = [_check_pole_name(name, "poles") for name in raw_poles]
    out: dict[str, Any] = {}
    spec = KMatrixSpec(tuple(poles), tuple(channels))
    for a, name in enumerate(poles):
        where = f"poles.{name}"
        entry = raw_poles[name]
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected {{mass: ..., g: [...]}}, got {entry!r}")
        extra = sorted(set(entry) - {"mass", "g", "beta"})
        if extra:
            raise ValueError(f"{where}: unknown field(s) {', '.join(map(str, extra))}; a pole has mass, g "
                             "and (except the first) beta")
        if "mass" not in entry:
            raise ValueError(f"{where}.mass: missing (the K-matrix pole mass, GeV)")
        out[spec.mass_name(a)] = entry["mass"]
        g = entry.get("g")
        if not isinstance(g, (list, tuple)) or len(g) != n:
            got = f"{len(g)} couplings" if isinstance(g, (list, tuple)) else repr(g)
            raise ValueError(f"{where}.g: expected {n} couplings, one per channel ({listing}), got {got}")
        for i, value in enumerate(g):
            out[spec.g_name(a, i)] = value
        if a == 0:
            if "beta" in entry:
                raise ValueError(f"{where}.beta: the first pole's beta is fixed to 1 (the resonance's "
                                 "coupling gives the overall factor); leave it out")
        else:
            if "beta" not in entry:
                raise ValueError(f"{where}.beta: missing: [magnitude, phase] of the pole's production "
                                 "coupling (only the first pole's is fixed to 1)")
            mag_name, phase_name = spec.beta_names(a)
            out[mag_name], out[phase_name] = _number_pair(entry["beta"], f"{where}.beta", "[magnitude, phase]")
    background = []
    if mapping.get("background") is not None:
        f = mapping["background"]
        if not isinstance(f, (list, tuple)) or len(f) != n or \
                not all(isinstance(row, (list, tuple)) and len(row) == n for row in f):
            raise ValueError(f"background: expected a {n} x {n} matrix f_ij (channels {listing}), got {f!r}")
        for i in range(n):
            for j in range(i + 1, n):
                if f[i][j] != f[j][i]:
                    raise ValueError(f"background: not symmetric: [{i}][{j}] = {f[i][j]!r} but "
                                     f"[{j}][{i}] = {f[j][i]!r} (f_ij = f_ji)")
        background = [(i, j) for i in range(n) for j in range(i, n)]
        for i, j in background:
            out[spec.f_name(i, j)] = f[i][j]
    production = []
    if mapping.get("production_background") is not None:
        fp = mapping["production_background"]
        if not isinstance(fp, (list, tuple)) or len(fp) != n:
            raise ValueError(f"production_background: expected {n} [magnitude, phase] pairs, one per "
                             f"channel ({listing}), got {fp!r}")
        production = list(range(n))
        for i in production:
            mag_name, phase_name = spec.fp_names(i)
            out[mag_name], out[phase_name] = _number_pair(fp[i], f"production_background[{i}]",
                                                          "[magnitude, phase]")
    return out


def specialise(mapping: Mapping[str, Any]) -> tuple[LineshapeType, dict[str, Any]]:
    """The LineshapeType of one card's K-matrix and the card's mapping in canonical flat form (with ``type``).

    Accepts the nested form (``channels``, ``poles``, ...) or the flat one
    (parameter names); raises ValueError naming the field.
    """
    if any(k in mapping for k in _NESTED_FIELDS):
        flat = flatten_card(mapping)
    else:
        flat = {k: v for k, v in mapping.items() if k != "type"}
    spec, canonical = parse_names(tuple(flat))
    spelled = dict(zip(canonical, flat.values()))
    values = {name: spelled[name] for name in spec.parameters}
    base = LINESHAPES["KMatrix"]
    ls = replace(base, parameters=spec.parameters, bounds=spec.bounds, example=values)
    return ls, {"type": base.name, **values}


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True)
class KMatrixValues:
    """Numbers of a K-matrix (jnp arrays; traced when they are fit parameters).

    Attributes:
        pole_masses: (n,) m_a (GeV).
        couplings: (n, N) g_ai (GeV).
        background: (N, N) f_ij, symmetric.
        beta: (n,) complex production couplings, beta_0 = 1.
        production_background: (N,) complex fP_i (GeV^-1).
        channel_masses: (N, 2) daughter masses (GeV), static floats.
    """

    pole_masses: jnp.ndarray
    couplings: jnp.ndarray
    background: jnp.ndarray
    beta: jnp.ndarray
    production_background: jnp.ndarray
    channel_masses: tuple[tuple[float, float], ...]


def _polar(mag: Any, phase: Any) -> jnp.ndarray:
    return jnp.asarray(mag) * jnp.exp(1j * jnp.asarray(phase))


def kmatrix_values(spec: KMatrixSpec, params: Mapping[str, Any],
                   channel_masses: Sequence[tuple[float, float]] | None = None) -> KMatrixValues:
    """The arrays of ``spec`` from values by canonical name (channel masses: the spec's unless given)."""
    n, N = len(spec.poles), len(spec.channels)
    pole_masses = jnp.stack([jnp.asarray(params[spec.mass_name(a)]) for a in range(n)])
    g = jnp.stack([jnp.stack([jnp.asarray(params[spec.g_name(a, i)]) for i in range(N)]) for a in range(n)])
    entries = {}
    for i, j in spec.background:
        entries[i, j] = entries[j, i] = jnp.asarray(params[spec.f_name(i, j)])
    zero = jnp.zeros_like(pole_masses[0])
    f = jnp.stack([jnp.stack([entries.get((i, j), zero) for j in range(N)]) for i in range(N)])
    beta = jnp.stack([jnp.ones_like(pole_masses[0]) + 0j]
                     + [_polar(*(params[k] for k in spec.beta_names(a))) for a in range(1, n)])
    fp_entries = {i: _polar(*(params[k] for k in spec.fp_names(i))) for i in spec.production_background}
    fp = jnp.stack([fp_entries.get(i, zero + 0j) for i in range(N)])
    masses = tuple(channel_masses) if channel_masses is not None else tuple(c.masses for c in spec.channels)
    return KMatrixValues(pole_masses, g, f, beta, fp, masses)


def phase_space_matrix(s: jnp.ndarray, channel_masses: Sequence[tuple[float, float]]) -> jnp.ndarray:
    """(n_s, N) complex rho_i(s) of every channel."""
    return jnp.stack([channel_phase_space(s, m1, m2) for m1, m2 in channel_masses], axis=-1)


def k_matrix(s: jnp.ndarray, v: KMatrixValues) -> jnp.ndarray:
    """(n_s, N, N) real K_ij(s) = sum_a g_ai g_aj / (m_a^2 - s) + f_ij (infinite at a pole)."""
    d = v.pole_masses[None, :] ** 2 - s[:, None]
    return jnp.einsum("ai,aj,na->nij", v.couplings, v.couplings, 1.0 / d) + v.background[None]


def _bordered_solve(s: jnp.ndarray, v: KMatrixValues, rhs_top: jnp.ndarray, rhs_bottom: jnp.ndarray) -> jnp.ndarray:
    """x of the bordered system of the module docstring: (n_s, N, r) for right-hand sides (N, r), (n, r)."""
    return _bordered_solve_arrays(s, v.pole_masses, v.couplings, v.background, rhs_top, rhs_bottom,
                                  channel_masses=tuple(v.channel_masses))


# One compiled program (inlined into an enclosing jit): evaluated op by op, the solve and its
# gradient would compile each of their many small operations separately.
@functools.partial(jax.jit, static_argnames="channel_masses")
def _bordered_solve_arrays(s, pole_masses, couplings, background, rhs_top, rhs_bottom, *, channel_masses):
    rho = phase_space_matrix(s, channel_masses)                          # (n_s, N)
    g = couplings + 0j                                                   # (n, N)
    n_s, N = rho.shape
    n = g.shape[0]
    top_left = jnp.eye(N)[None] - 1j * background[None] * rho[:, None, :]
    top_right = jnp.broadcast_to(-g.T, (n_s, N, n))
    bottom_left = -1j * g[None] * rho[:, None, :]
    d = pole_masses[None, :] ** 2 - s[:, None]                           # (n_s, n)
    bottom_right = d[:, :, None] * jnp.eye(n)[None]
    matrix = jnp.concatenate([jnp.concatenate([top_left, top_right], axis=2),
                              jnp.concatenate([bottom_left, bottom_right + 0j], axis=2)], axis=1)
    rhs = jnp.concatenate([rhs_top, rhs_bottom], axis=0) + 0j
    x = small_solve(matrix, jnp.broadcast_to(rhs, (n_s,) + rhs.shape))
    return x[:, :N, :]


def small_solve(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """x of a x = b for a batch of small systems, (n_s, m, m) and (n_s, m, r), by Gauss-Jordan
    elimination with partial pivoting, unrolled over the static size m.

    Plain array operations instead of ``jnp.linalg.solve``: on a 2-core CPU the batched LAPACK
    triangular solve inside a compiled gradient or Hessian could deadlock XLA's thread pool
    (every worker waiting in ``ParallelBatchMap``), and for m <= ~10 the unrolled form is as fast.
    """
    m = a.shape[-1]
    aug = jnp.concatenate([a, b.astype(a.dtype)], axis=-1)     # (n_s, m, m + r)
    rows = jnp.arange(m)
    for k in range(m):
        piv = k + jnp.argmax(jnp.abs(aug[:, k:, k]), axis=1)    # (n_s,) row of the largest pivot
        order = jnp.where(rows[None, :] == k, piv[:, None], jnp.where(rows[None, :] == piv[:, None], k, rows[None, :]))
        aug = jnp.take_along_axis(aug, order[:, :, None], axis=1)
        factor = aug[:, :, k] / aug[:, k:k + 1, k]              # (n_s, m)
        factor = jnp.where(rows[None, :] == k, 0.0, factor)
        aug = aug - factor[:, :, None] * aug[:, k:k + 1, :]
    diagonal = jnp.diagonal(aug[:, :, :m], axis1=1, axis2=2)    # (n_s, m)
    return aug[:, :, m:] / diagonal[:, :, None]


def t_matrix(s: jnp.ndarray, v: KMatrixValues) -> jnp.ndarray:
    """(n_s, N, N) complex T = (I - i K rho)^{-1} K (symmetric; finite at the poles)."""
    return _bordered_solve(s, v, v.background, v.couplings)


def production_amplitude(s: jnp.ndarray, v: KMatrixValues) -> jnp.ndarray:
    """(n_s, N) complex F = (I - i K rho)^{-1} P in every channel."""
    return _bordered_solve(s, v, v.production_background[:, None], v.beta[:, None])[..., 0]


# --- the registered lineshape -----------------------------------------------------------


def _own_channel(spec: KMatrixSpec, ctx: LineshapeContext) -> int | None:
    return spec.channel_of(ctx.m1, ctx.m2)


def _validate(params: Mapping[str, float], ctx: LineshapeContext) -> list[str]:
    spec = spec_of(params)
    problems = []
    if ctx.spin != 0:
        problems.append(f"a KMatrix (no barrier factors) describes an S wave (spin 0), not spin {ctx.spin}")
    if _own_channel(spec, ctx) is None:
        problems.append(f"channels: none of {', '.join(c.label for c in spec.channels)} is the pair the "
                        f"resonance decays to (masses {ctx.m1:.6f}, {ctx.m2:.6f} GeV); add that channel")
    return problems


#: A two-channel (pi+ pi-, K+ K-), two-pole K-matrix with every kind of term: an f0(980)-like and
#: an f0(1500)-like pole, background and production background (the contract tests' example).
EXAMPLE_CARD: dict[str, Any] = {
    "type": "KMatrix",
    "channels": ["pi+ pi-", "K+ K-"],
    "poles": {"f0(980)": {"mass": 0.98, "g": [0.30, 0.75]},
              "f0(1500)": {"mass": 1.50, "g": [0.35, 0.20], "beta": [0.8, 1.2]}},
    "background": [[0.2, 0.1], [0.1, -0.1]],
    "production_background": [[0.05, 0.0], [0.3, -0.5]],
}

_EXAMPLE = flatten_card(EXAMPLE_CARD)
_EXAMPLE_SPEC = spec_of(_EXAMPLE)


@register_lineshape("KMatrix", _EXAMPLE_SPEC.parameters, bounds=_EXAMPLE_SPEC.bounds, validate=_validate,
                    example=_EXAMPLE, specialise=specialise)
def kmatrix_lineshape(m: jnp.ndarray, params: Mapping[str, jnp.ndarray], *, ctx: LineshapeContext) -> jnp.ndarray:
    """K-matrix S wave with P-vector production, F_k = [(I - i K rho)^{-1} P]_k (card-defined poles, channels)."""
    spec, values = canonical_parameters(params)
    k = _own_channel(spec, ctx)
    if k is None:
        raise ValueError(_validate(params, LineshapeContext(0, ctx.m1, ctx.m2))[0])
    masses = [c.masses for c in spec.channels]
    masses[k] = (ctx.m1, ctx.m2)
    return production_amplitude(m * m, kmatrix_values(spec, values, masses))[:, k]

