"""The amplitude model: built once from a card, applied many times.

The amplitude of any reaction (:mod:`pwa.helicity`, PHYSICS.md sections 2 and
5b) is a sum over *terms* k, one per free coupling of the card:

    A_s(x) = sum_k c_k(p) sum_perm Ang_{k,perm,s}(x) prod_nodes F_R(m_node(x_perm); p),

with s the incoherent spin states (the parent's M, and the helicities of
spinning final-state particles), perm the permutations of identical
final-state particles, and F_R the lineshapes of the resonances on the term's
chain. The intensity is I(x) = sum_s |A_s(x)|^2.

For J/psi -> gamma P1 P2 (one chain ``J/psi -> X gamma; X -> P1 P2``) a term
is k = (R, lR) and the four spin states (M, lambda_gamma) are stored in the
order :data:`SPIN_STATES` = ((+1,+1), (+1,-1), (-1,+1), (-1,-1)):

    Ang_{k,M,+1} = D^{1*}_{M, lR-1}(phi_X, theta_X, 0) D^{J*}_{lR, 0}(phi_1, theta_1, 0),
    Ang_{k,M,-1} = D^{1*}_{M, 1-lR}(phi_X, theta_X, 0) D^{J*}_{-lR, 0}(phi_1, theta_1, 0).

:meth:`Model.precompute` evaluates the angular factors once per event sample
and stores them as separate real and imaginary float64 arrays; every call of
:meth:`Model.intensity`, :meth:`Model.nll` or :meth:`Model.fit_fractions`
recomputes only couplings and lineshapes from the free-parameter vector p.
With fixed lineshapes they are folded into the stored factors (and the
permutations summed), so that a call only forms sum_k c_k G_ks.

Fit bounds of floating lineshape parameters (:attr:`Model.bounds`, seen by
every optimiser and by :func:`pwa.starts.random_starts`). A benchmark fit ran
an f2(1270) mass off to 8e4 GeV; a mass and a width therefore get physical
default bounds, side by side:

* the card's explicit ``bounds:`` of the parameter win (a side given as
  ``null`` takes the default below);
* otherwise the lineshape's own bound (:data:`pwa.lineshapes.LINESHAPES`)
  intersected with a physical one:
  ``mass`` in [threshold - :data:`MASS_MARGIN`, m_max + :data:`MASS_MARGIN`]
  of the resonance's node (:func:`kinematic_mass_range`: threshold = the sum of
  the node's final-state masses, m_max = the parent mass minus the masses of
  the final-state particles not in the node), and ``width`` in
  [:data:`WIDTH_MIN`, :data:`WIDTH_MAX`] = [1e-6, 2] GeV. The margin keeps
  states that cards legitimately put just outside the range (the f0(980) in
  K+ K-, 8 MeV below threshold; a state above the range whose tail is seen)
  inside; 0.1 GeV is a fixed margin rather than "a few widths" because a
  Flatte has no width and a floating width would make the bound move;
* a card mass outside [threshold, m_max] takes the place of that end of the
  range (the bound is then the value -+ MASS_MARGIN), and a card width above
  WIDTH_MAX / 2 raises the upper bound to twice the value, so that every card
  keeps fitting from its own values with room on both sides;
* a Breit-Wigner with energy-dependent width keeps its floor just above
  threshold (:data:`THRESHOLD_MARGIN`), whatever the card says: q0 must be real.

Other lineshape parameters (radii, Flatte couplings, K-matrix entries) keep
the lineshape's own bounds: the Flatte couplings in particular run together
along a known near-flat direction (Baru et al., Eur. Phys. J. A 23 (2005) 523)
that a bound would only cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events, Reaction

from .caches import Cache, EventCache
from .card import ModelCard, load_model_card, parse_model_card
from .errors import ModelCardError, PrecisionError
from .helicity import HelicityAmplitude
from .lineshapes import LINESHAPES, LineshapeContext, LineshapeFunction, require_above_threshold
from .structure import CouplingSlot, build_structure

#: (M, lambda_gamma) of the four incoherent spin states of J/psi -> gamma P P, in cache order.
SPIN_STATES: tuple[tuple[int, int], ...] = ((1, 1), (1, -1), (-1, 1), (-1, -1))

#: A floating Breit-Wigner mass stays this far (GeV) above its decay's threshold.
THRESHOLD_MARGIN = 1e-3

#: Default physical bound of a floating mass: its node's kinematic range widened by this (GeV) on
#: each side, so that a sub-threshold state (the f0(980) in K+ K-) stays allowed.
MASS_MARGIN = 0.1

#: Default physical bounds (GeV) of a floating width.
WIDTH_MIN = 1e-6
WIDTH_MAX = 2.0


def kinematic_mass_range(reaction: Reaction, node: str) -> tuple[float, float]:
    """(threshold, m_max) of the invariant mass of an inner node of the reaction's chains.

    threshold = the sum of the masses of the final-state particles below the
    node; m_max = the parent mass minus the masses of the other final-state
    particles (all of them at rest in the node's recoil system).

    Raises:
        KeyError: no chain has the node.
    """
    for chain in reaction.chains:
        if node in chain.inner_labels:
            below = chain.node(node).leaves
            inside = sum(reaction.masses[reaction.index(label)] for label in below)
            return inside, reaction.parent_mass - (sum(reaction.masses) - inside)
    raise KeyError(f"no chain of {reaction} has the node {node!r}")


def _side(card_side: float | None, own: float | None, physical: float | None, pick) -> float | None:
    """One side of a bound: the card's, else the tighter of the lineshape's own and the physical one."""
    if card_side is not None:
        return card_side
    if own is None or physical is None:
        return own if physical is None else physical
    return pick(own, physical)


def _fit_bound(resonance, name: str, daughters: tuple[float, float],
               mass_range: tuple[float, float]) -> tuple[float | None, float | None]:
    """Fit bound of a lineshape parameter (see the module docstring).

    A Breit-Wigner with energy-dependent width needs q0 = q(m0) > 0, so a
    floating BW mass is bounded below by its decay's threshold (plus a small
    margin): without it a fit can step below threshold into NaNs.
    """
    own = resonance.lineshape_spec.bounds.get(name, (None, None))
    card = resonance.bounds.get(name, (None, None))
    value = resonance.lineshape_parameters[name]
    physical: tuple[float | None, float | None] = (None, None)
    if name == "mass":
        thr, m_max = mass_range
        physical = (max(min(thr, value) - MASS_MARGIN, 0.0), max(m_max, value) + MASS_MARGIN)
    elif name == "width":
        physical = (min(WIDTH_MIN, value), max(WIDTH_MAX, 2.0 * value))
    lo = _side(card[0], own[0], physical[0], max)
    hi = _side(card[1], own[1], physical[1], min)
    if name == "mass" and LINESHAPES[resonance.lineshape_type].validate is require_above_threshold:
        thr = sum(daughters) + THRESHOLD_MARGIN
        lo = thr if lo is None else max(lo, thr)
    return lo, hi


def require_x64() -> None:
    """Raise :class:`PrecisionError` unless JAX computes in float64."""
    if not jax.config.jax_enable_x64:
        raise PrecisionError(
            "pwa needs float64 JAX: call jax.config.update('jax_enable_x64', True) in the entry "
            "point before using it (library modules never switch it on themselves)")


@dataclass(frozen=True, eq=False)
class Model:
    """A frozen amplitude model built from a :class:`~pwa.card.ModelCard`.

    Parameters live in one *full* vector (every coupling magnitude and phase,
    every lineshape parameter); the *free* ones, in :attr:`parameter_names`
    order, form the vector ``p`` that every physics function takes.

    Attributes:
        card: the card the model was built from.
        reaction: the reaction (masses, chains, event-file columns).
        amplitude: the helicity amplitude's structure (terms, spin states, permutations).
        resonance_names: (n_res,) the fit-fraction components: the resonances
            that carry couplings, in card order (a resonance without couplings,
            such as the phi of psi(2S) -> phi f_J, is part of every component).
        spins: (n_res,) their spins.
        terms: (n_terms,) (component index, coupling label) of each amplitude term.
        all_parameter_names: names of the full vector.
        parameter_names: names of the free parameters, e.g.
            ``"f2(1270):c1.mag"``, ``"f2(1270):h(+1,+2).phase"``, ``"f2'(1525):mass"``.
        bounds: (lo, hi) per free parameter, None = unbounded: coupling
            magnitudes >= 0, phases unbounded, lineshape parameters as the
            module docstring says (a floating mass within its node's
            kinematic range, a width within (1e-6, 2) GeV).
    """

    card: ModelCard
    reaction: Reaction
    amplitude: HelicityAmplitude
    resonance_names: tuple[str, ...]
    spins: tuple[int, ...]
    terms: tuple[tuple[int, str], ...]
    all_parameter_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    bounds: tuple[tuple[float | None, float | None], ...]
    _slots: tuple[CouplingSlot, ...]
    _template: np.ndarray
    _free: np.ndarray
    _mag_index: np.ndarray
    _phase_index: np.ndarray
    _lineshapes: tuple[LineshapeFunction, ...]
    _lineshape_index: tuple[dict[str, int], ...]
    _sub_factors: tuple[tuple[tuple[int, int], ...], ...]

    # --- construction ------------------------------------------------------

    @classmethod
    def from_card(cls, card: ModelCard | str | Path | Mapping) -> "Model":
        """Build from a card object, a YAML path, or a card dictionary."""
        if isinstance(card, (str, Path)):
            card = load_model_card(card)
        elif isinstance(card, Mapping):
            card = parse_model_card(dict(card))
        structure = build_structure(card)
        amplitude = structure.amplitude
        reaction = amplitude.reaction
        names: list[str] = []
        values: list[float] = []
        free: list[bool] = []
        bounds: list[tuple[float | None, float | None]] = []

        def add(name: str, value: float, is_free: bool, bound: tuple[float | None, float | None]) -> int:
            names.append(name)
            values.append(float(value))
            free.append(is_free)
            bounds.append(bound)
            return len(names) - 1

        carriers = structure.carriers
        ref = next(s for s in structure.slots if card.resonances[s.resonance].name == card.reference)
        # Parameters resonance by resonance, in card order: couplings, then lineshape parameters.
        mag_of, phase_of, fns, ls_index = {}, {}, [], []
        for i, (r, res, daughters) in enumerate(zip(card.resonances, amplitude.resonances,
                                                    structure.daughter_masses)):
            for slot in (s for s in structure.slots if s.resonance == i):
                fixed = slot is ref
                mag, phase = slot.value
                mag_of[slot] = add(f"{r.name}:{slot.label}.mag", mag, not fixed, (0.0, None))
                phase_of[slot] = add(f"{r.name}:{slot.label}.phase", phase, not fixed, (None, None))
            ls = LINESHAPES[r.lineshape_type]
            fns.append(ls.bind(LineshapeContext(res.spin, *daughters)))
            mass_range = kinematic_mass_range(reaction, res.node)
            ls_index.append({p: add(f"{r.name}:{p}", v, p in r.float_, _fit_bound(r, p, daughters, mass_range))
                             for p, v in r.lineshape_parameters.items()})
        terms = [(carriers.index(s.resonance), s.label) for s in structure.slots]
        mag_index = [mag_of[s] for s in structure.slots]
        phase_index = [phase_of[s] for s in structure.slots]
        n_perm = len(amplitude.permutations)
        sub_factors = []
        for term in amplitude.terms:
            comp = amplitude.components[term.component]
            for p in range(n_perm):
                sub_factors.append(tuple((i, amplitude.column(comp.chain, label, p))
                                         for label, i in comp.resonances))
        free_arr = np.flatnonzero(free)
        return cls(
            card=card, reaction=reaction, amplitude=amplitude,
            resonance_names=tuple(card.resonances[i].name for i in carriers),
            spins=tuple(amplitude.resonances[i].spin for i in carriers),
            terms=tuple(terms),
            all_parameter_names=tuple(names),
            parameter_names=tuple(names[i] for i in free_arr),
            bounds=tuple(bounds[i] for i in free_arr),
            _slots=structure.slots,
            _template=np.asarray(values, dtype=np.float64),
            _free=free_arr,
            _mag_index=np.asarray(mag_index),
            _phase_index=np.asarray(phase_index),
            _lineshapes=tuple(fns),
            _lineshape_index=tuple(ls_index),
            _sub_factors=tuple(sub_factors),
        )

    def __repr__(self) -> str:
        return (f"Model({self.reaction}: {len(self.resonance_names)} components, {len(self.terms)} terms, "
                f"{self.n_free} free parameters; reference {self.card.reference}; from {self.card.source})")

    @property
    def n_free(self) -> int:
        return len(self.parameter_names)

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @property
    def n_states(self) -> int:
        """Number of incoherent spin states."""
        return len(self.amplitude.spin_states)

    def initial_values(self) -> np.ndarray:
        """(n_free,) float64 free-parameter values from the card."""
        return self._template[self._free].copy()

    def resonance_parameters(self, name: str) -> tuple[str, ...]:
        """Free parameters carried by one resonance (its couplings and floating lineshape parameters)."""
        if name not in {r.name for r in self.card.resonances}:
            raise KeyError(f"no resonance {name!r} in the model ({', '.join(self.resonance_names)})")
        return tuple(p for p in self.parameter_names if p.split(":", 1)[0] == name)

    def kinematic_range(self, name: str) -> tuple[float, float]:
        """(threshold, m_max) of the invariant mass at the node of resonance ``name``
        (:func:`kinematic_mass_range`)."""
        for res in self.amplitude.resonances:
            if res.name == name:
                return kinematic_mass_range(self.reaction, res.node)
        raise KeyError(f"no resonance {name!r} in the model")

    @property
    def coupling_magnitude_names(self) -> tuple[str, ...]:
        """Free parameters that are coupling magnitudes (bounded below by 0, where a term switches off)."""
        names = {self.all_parameter_names[i] for i in self._mag_index}
        return tuple(p for p in self.parameter_names if p in names)

    def resonance_parameter_indices(self, name: str) -> np.ndarray:
        """Indices into p of :meth:`resonance_parameters`."""
        wanted = set(self.resonance_parameters(name))
        return np.asarray([i for i, p in enumerate(self.parameter_names) if p in wanted], dtype=int)

    @property
    def floating_lineshapes(self) -> bool:
        """Whether any lineshape parameter is free (then no fixed normalisation matrix)."""
        coupling = set(self._mag_index) | set(self._phase_index)
        return any(i not in coupling for i in self._free)

    def without(self, name: str) -> "Model":
        """The model with one fit-fraction component removed (for significance tests).

        If the reference is removed, the first remaining component becomes the
        reference and every coupling is divided by its (complex) first
        coupling: the same physics, in the new normalisation, so the initial
        values stay meaningful.
        """
        if name not in self.resonance_names:
            raise KeyError(f"no resonance {name!r} in the model ({', '.join(self.resonance_names)})")
        if len(self.resonance_names) == 1:
            raise ModelCardError(f"{self.card.source}: cannot remove the only resonance {name!r}")
        raw = self.card.to_dict()
        raw["resonances"] = [r for r in raw["resonances"] if r["name"] != name]
        if raw["reference"] == name:
            new_ref = next(r for r in raw["resonances"] if r["couplings"])
            mag0, ph0 = next(iter(new_ref["couplings"].values()))
            if mag0 == 0:
                raise ModelCardError(f"{self.card.source}: new reference {new_ref['name']!r} has a zero "
                                     "first coupling")
            for r in raw["resonances"]:
                if r["couplings"]:
                    r["couplings"] = {k: (m / mag0, float(np.angle(np.exp(1j * (ph - ph0)))))
                                      for k, (m, ph) in r["couplings"].items()}
            raw["reference"] = new_ref["name"]
        return Model.from_card(parse_model_card(raw, source=f"{self.card.source} without {name}"))

    def card_at(self, p: np.ndarray) -> ModelCard:
        """The card with its values replaced by the free parameters p (e.g. a fit result)."""
        full = self.full_parameters(np.asarray(p, dtype=np.float64))
        value = dict(zip(self.all_parameter_names, np.asarray(full).tolist()))
        raw = self.card.to_dict()
        label = {(s.resonance, s.key): s.label for s in self._slots}
        for i, r in enumerate(raw["resonances"]):
            if r["couplings"]:
                r["couplings"] = {k: (value[f"{r['name']}:{label[i, k]}.mag"],
                                      value[f"{r['name']}:{label[i, k]}.phase"])
                                  for k in r["couplings"]}
            for k in r["lineshape"]:
                if k != "type":
                    r["lineshape"][k] = value[f"{r['name']}:{k}"]
        return parse_model_card(raw, source=self.card.source)

    # --- build once ----------------------------------------------------------

    def precompute(self, events: Events, *, normalisation_matrix: bool = False,
                   fold_lineshapes: bool | None = None) -> EventCache:
        """Per-event arrays that do not depend on the parameters (built once).

        Args:
            events: the sample (data, detector-level MC, or generator-level MC).
            normalisation_matrix: also store the weighted mean of the
                per-term products (see :meth:`term_integrals`), so that the
                normalisation becomes the quadratic form c^H M c. Only
                possible when no lineshape parameter floats.
            fold_lineshapes: multiply the (fixed) lineshapes into the stored
                angular factors and sum the permutations,
                G_ks = sum_perm prod F Ang_{k,perm,s}, so that a call only
                forms sum_k c_k G_ks: the minimal work per event. Default: yes
                when no lineshape parameter floats.

        Returns:
            :class:`~pwa.caches.EventCache` of jnp float64 arrays: ``masses``
            (n_columns, n) node masses, ``weights`` (n,), ``ang_re``/``ang_im``
            ((n_terms n_perm), n_states, n), or (n_terms, n_states, n) when
            ``folded``, and, if asked, ``norm_re``/``norm_im`` (n_terms, n_terms).
        """
        require_x64()
        if events.reaction != self.reaction:
            raise ValueError(f"events of {events.reaction} do not match the model's {self.reaction}")
        fixed = not self.floating_lineshapes
        if fold_lineshapes is None:
            fold_lineshapes = fixed
        if (fold_lineshapes or normalisation_matrix) and not fixed:
            raise ValueError("folded lineshapes and a fixed normalisation matrix need fixed "
                             "lineshapes, but some lineshape parameters float")
        ang, masses = self.amplitude.angular_factors(events.momenta)
        K, P, S, n = ang.shape
        ang = ang.reshape(K * P, S, n)
        if fold_lineshapes:
            # jit: one compiled program instead of an op-by-op dispatch of every lineshape.
            F = np.asarray(self._compiled_term_lineshapes(jnp.asarray(self._template), jnp.asarray(masses)))
            ang = (ang * F.reshape(K * P, 1, n)).reshape(K, P, S, n).sum(axis=1)
        cache = EventCache(masses=jnp.asarray(masses), weights=jnp.asarray(events.weight_array),
                           ang_re=jnp.asarray(ang.real), ang_im=jnp.asarray(ang.imag),
                           folded=bool(fold_lineshapes))
        if normalisation_matrix:
            M = self._compiled_term_integrals(jnp.asarray(self._template), cache)
            cache = replace(cache, norm_re=jnp.real(M), norm_im=jnp.imag(M))
        return cache

    @cached_property
    def _compiled_term_lineshapes(self):
        """jit once per model (a new jax.jit wrapper per call would recompile every time)."""
        return jax.jit(self._term_lineshapes)

    @cached_property
    def _compiled_term_integrals(self):
        return jax.jit(self._term_integrals)

    @cached_property
    def compiled_fit_fractions(self):
        """``jax.jit(self.fit_fractions)``, compiled once per model (and per cache shape): the
        fraction errors of every fit of the model differentiate one program instead of
        dispatching the quadrature op by op."""
        return jax.jit(self.fit_fractions)

    # --- apply many times (pure, jittable, differentiable in p) ---------------

    def full_parameters(self, p: jnp.ndarray) -> jnp.ndarray:
        """(n_all,) full parameter vector with the free ones replaced by p (n_free,)."""
        p = jnp.asarray(p)
        if p.shape != (self.n_free,):
            raise ValueError(f"expected {self.n_free} free parameters, got shape {p.shape}")
        return jnp.asarray(self._template).at[self._free].set(p)

    def couplings(self, p: jnp.ndarray) -> jnp.ndarray:
        """(n_terms,) complex couplings c_k = mag * exp(i phase)."""
        full = self.full_parameters(p)
        return self._couplings_full(full)

    def _couplings_full(self, full: jnp.ndarray) -> jnp.ndarray:
        return full[self._mag_index] * jnp.exp(1j * full[self._phase_index])

    def lineshapes(self, p: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
        """(n_all_res, n) complex F_R(m) of every resonance of the card at one mass array."""
        return self._lineshapes_full(self.full_parameters(p), m)

    def _lineshape_list(self, full: jnp.ndarray, m: jnp.ndarray) -> list[jnp.ndarray]:
        """F_R(m) per resonance (:meth:`_lineshape`)."""
        return [self._lineshape(full, m, r) for r in range(len(self._lineshapes))]

    def _lineshapes_full(self, full: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
        return jnp.stack(self._lineshape_list(full, m))

    def _factor(self, full: jnp.ndarray, masses: jnp.ndarray, r: int, col: int) -> jnp.ndarray:
        """(n,) complex F_r at the node mass of column ``col``."""
        return self._lineshape(full, masses[col], r)

    def _lineshape(self, full: jnp.ndarray, m: jnp.ndarray, r: int) -> jnp.ndarray:
        """F_r(m). Fixed lineshape parameters enter as Python floats, not as entries of ``full``:
        then no derivative is propagated through them and XLA folds their per-event arithmetic
        (e.g. the Blatt-Weisskopf factors of a fixed radius)."""
        free = set(self._free.tolist())
        idx = self._lineshape_index[r]
        return self._lineshapes[r](m, {k: (full[i] if i in free else float(self._template[i])) for k, i in idx.items()})

    @staticmethod
    def _product(values: list[jnp.ndarray]) -> jnp.ndarray:
        prod = values[0]
        for v in values[1:]:
            prod = prod * v
        return prod

    def _term_lineshapes(self, full: jnp.ndarray, masses: jnp.ndarray) -> jnp.ndarray:
        """(n_terms, n_perm, n) complex prod_nodes F_R(m_node) of every term and permutation.

        Each (resonance, node mass) pair is evaluated once and the products are
        stacked (an index gather here would differentiate into a scatter-add,
        slow on CPUs)."""
        values: dict[tuple[int, int], jnp.ndarray] = {}
        for factors in self._sub_factors:
            for f in factors:
                if f not in values:
                    values[f] = self._factor(full, masses, *f)
        products = [self._product([values[f] for f in factors]) for factors in self._sub_factors]
        n_perm = len(self.amplitude.permutations)
        stacked = jnp.stack(products)
        return stacked.reshape(self.n_terms, n_perm, stacked.shape[-1])

    def _term_lineshape_row(self, full: jnp.ndarray, masses: jnp.ndarray, k: int) -> jnp.ndarray:
        """(n_perm, n) complex lineshape products of term k alone (row k of :meth:`_term_lineshapes`)."""
        n_perm = len(self.amplitude.permutations)
        return jnp.stack([self._product([self._factor(full, masses, *f) for f in factors])
                          for factors in self._sub_factors[k * n_perm:(k + 1) * n_perm]])

    def _unfolded(self, cache: EventCache) -> tuple[jnp.ndarray, jnp.ndarray]:
        """The stored factors as (n_terms, n_perm, n_states, n) real and imaginary parts."""
        shape = (self.n_terms, len(self.amplitude.permutations)) + cache.ang_re.shape[1:]
        return cache.ang_re.reshape(shape), cache.ang_im.reshape(shape)

    def amplitudes(self, p: jnp.ndarray, cache: EventCache) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Real and imaginary parts of A_s(x), each (n_states, n) (SPIN_STATES order for J/psi -> gamma P P)."""
        require_x64()
        full = self.full_parameters(p)
        c = self._couplings_full(full)
        if cache.folded:
            # Lineshapes already in the cache: A_s = sum_k c_k G_ks, a (S n x K) by K product.
            a_re, a_im = jnp.real(c), jnp.imag(c)
            A_re = (jnp.einsum("k,ksn->sn", a_re, cache.ang_re)
                    - jnp.einsum("k,ksn->sn", a_im, cache.ang_im))
            A_im = (jnp.einsum("k,ksn->sn", a_re, cache.ang_im)
                    + jnp.einsum("k,ksn->sn", a_im, cache.ang_re))
            return A_re, A_im
        a = c[:, None, None] * self._term_lineshapes(full, cache.masses)
        a_re, a_im = jnp.real(a), jnp.imag(a)
        ang_re, ang_im = self._unfolded(cache)
        # Real arithmetic on the split arrays: no complex copy of the cache per call.
        A_re = (jnp.einsum("kpn,kpsn->sn", a_re, ang_re) - jnp.einsum("kpn,kpsn->sn", a_im, ang_im))
        A_im = (jnp.einsum("kpn,kpsn->sn", a_re, ang_im) + jnp.einsum("kpn,kpsn->sn", a_im, ang_re))
        return A_re, A_im

    def intensity(self, p: jnp.ndarray, cache: EventCache) -> jnp.ndarray:
        """(n,) intensity I(x) = sum_s |A_s(x)|^2 at free parameters p (n_free,)."""
        A_re, A_im = self.amplitudes(p, cache)
        return jnp.sum(A_re**2 + A_im**2, axis=0)

    def term_factors(self, p: jnp.ndarray, cache: EventCache) -> jnp.ndarray:
        """(n_terms, n_states, n) complex G_ks = sum_perm prod F Ang: A_s = sum_k c_k G_ks."""
        if cache.folded:
            return cache.ang_re + 1j * cache.ang_im
        ang_re, ang_im = self._unfolded(cache)
        L = self._term_lineshapes(self.full_parameters(p), cache.masses)
        return jnp.einsum("kpn,kpsn->ksn", L, ang_re + 1j * ang_im)

    def _term_integrals(self, full: jnp.ndarray, cache: EventCache) -> jnp.ndarray:
        if cache.folded:
            G = cache.ang_re + 1j * cache.ang_im
        else:
            ang_re, ang_im = self._unfolded(cache)
            G = jnp.einsum("kpn,kpsn->ksn", self._term_lineshapes(full, cache.masses), ang_re + 1j * ang_im)
        w = cache.weights
        return jnp.einsum("ksn,lsn,n->kl", jnp.conj(G), G, w) / jnp.sum(w)

    def term_integrals(self, p: jnp.ndarray, cache: Cache) -> jnp.ndarray:
        """(n_terms, n_terms) complex M_kl = <sum_s conj(G_ks) G_ls>, G_ks = F_{R(k)} Ang_{k,s}.

        The mean is weighted with the cache's weights. With it the mean
        intensity is the quadratic form c^H M c. Uses the stored matrix
        when the cache has one (fixed lineshapes).
        """
        require_x64()
        M = cache.normalisation_matrix
        if M is not None:
            return M
        if hasattr(cache, "term_integrals"):  # binned moments (pwa.binned)
            return cache.term_integrals(self, self.full_parameters(p))
        return self._term_integrals(self.full_parameters(p), cache)

    def normalisation(self, p: jnp.ndarray, mc_cache: Cache) -> jnp.ndarray:
        """Weighted mean intensity sum_j v_j I(x_j) / sum_j v_j over a sample (scalar).

        With a stored normalisation matrix this is c^H M c (fast path).
        """
        require_x64()
        M = mc_cache.normalisation_matrix
        if M is None and hasattr(mc_cache, "term_integrals"):  # binned moments (pwa.binned)
            M = self.term_integrals(p, mc_cache)
        if M is not None:
            c = self.couplings(p)
            return jnp.real(jnp.conj(c) @ M @ c)
        v = mc_cache.weights
        return jnp.sum(v * self.intensity(p, mc_cache)) / jnp.sum(v)

    def nll(self, p: jnp.ndarray, data_cache: EventCache, mc_cache: Cache) -> jnp.ndarray:
        """Negative log-likelihood of PHYSICS.md section 4 (scalar).

        NLL = - sum_i w_i ln I(x_i) + W ln(sum_j v_j I(x_j) / sum_j v_j), W = sum_i w_i,
        with data weights w from ``data_cache`` and MC weights v from ``mc_cache``.
        """
        w = data_cache.weights
        return (-jnp.sum(w * jnp.log(self.intensity(p, data_cache)))
                + jnp.sum(w) * jnp.log(self.normalisation(p, mc_cache)))

    @property
    def term_resonances(self) -> np.ndarray:
        """(n_res, n_terms) bool: entry (R, k) is true when term k belongs to resonance R."""
        res = np.asarray([i for i, _ in self.terms])
        return res[None, :] == np.arange(len(self.resonance_names))[:, None]

    def fit_fractions(self, p: jnp.ndarray, gen_cache: Cache) -> jnp.ndarray:
        """(n_res, n_res) fit-fraction matrix over a (generator-level) sample.

        Diagonal: F_R = integral |A_R|^2 / integral |A|^2 (all helicity terms
        of R). Off-diagonal (symmetric): interference fraction
        F_RS = 2 Re integral A_R^* A_S / integral |A|^2, so that the diagonal
        plus the upper triangle sums to 1 and SF = trace.
        """
        return self.fractions_from_integrals(p, self.term_integrals(p, gen_cache))

    def fractions_from_integrals(self, p: jnp.ndarray, M: jnp.ndarray) -> jnp.ndarray:
        """Fit-fraction matrix (n_res, n_res) from per-term integrals M (n_terms, n_terms) at p."""
        c = self.couplings(p)
        C = jnp.where(jnp.asarray(self.term_resonances), c[None, :], 0.0)
        X = jnp.real(jnp.conj(C) @ M @ C.T)
        total = jnp.real(jnp.conj(c) @ M @ c)
        off = 2.0 - jnp.eye(len(self.resonance_names))
        return X * off / total
