"""The amplitude model: built once from a card, applied many times.

Amplitude (PHYSICS.md section 2), written as a sum over *terms* k = (R, lR)
with lR >= 0 the X helicity for photon helicity +1:

    A_{M,lg}(x) = sum_k c_k(p) F_{R(k)}(m; p) Ang_{k,M,lg}(x),

    Ang_{k,M,+1} = D^{1*}_{M, lR-1}(phi_X, theta_X, 0) D^{J*}_{lR, 0}(phi_1, theta_1, 0),
    Ang_{k,M,-1} = D^{1*}_{M, 1-lR}(phi_X, theta_X, 0) D^{J*}_{-lR, 0}(phi_1, theta_1, 0),

where parity, H_{-lR,-1} = H_{lR,+1}, lets one coupling c_k serve both photon
helicities, and

    I(x) = sum_{M=+-1} sum_{lg=+-1} |A_{M,lg}(x)|^2.

The four (M, lg) combinations are stored in the order
:data:`SPIN_STATES` = ((+1,+1), (+1,-1), (-1,+1), (-1,-1)).

:meth:`Model.precompute` evaluates the angular factors once per event sample
and stores them as separate real and imaginary float64 arrays; every call of
:meth:`Model.intensity`, :meth:`Model.nll` or :meth:`Model.fit_fractions`
recomputes only couplings and lineshapes from the free-parameter vector p.

No symmetrisation for identical pseudoscalars: cards with K_S K_S or pi0 pi0
are rejected when loaded (:mod:`pwa.card`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events, Reaction

from .card import ModelCard, load_model_card, parse_model_card
from .errors import ModelCardError, PrecisionError
from .lineshapes import LINESHAPES, LineshapeContext, LineshapeFunction, require_above_threshold
from .wigner import wigner_D_conj

#: (M, lambda_gamma) of the four incoherent spin states, in cache order.
SPIN_STATES: tuple[tuple[int, int], ...] = ((1, 1), (1, -1), (-1, 1), (-1, -1))

#: A per-sample cache: a dict pytree of jnp float64 arrays.
Cache = dict[str, jnp.ndarray]


#: A floating Breit-Wigner mass stays this far (GeV) above the P1 P2 threshold.
THRESHOLD_MARGIN = 1e-3


def _fit_bound(resonance, name: str, reaction: Reaction) -> tuple[float | None, float | None]:
    """Fit bound of a lineshape parameter.

    A Breit-Wigner with energy-dependent width needs q0 = q(m0) > 0, so a
    floating BW mass is bounded below by the P1 P2 threshold (plus a small
    margin): without it a fit can step below threshold into NaNs.
    """
    lo, hi = resonance.parameter_bounds(name)
    if name == "mass" and LINESHAPES[resonance.lineshape_type].validate is require_above_threshold:
        thr = reaction.m1 + reaction.m2 + THRESHOLD_MARGIN
        lo = thr if lo is None else max(lo, thr)
    return lo, hi


def require_x64() -> None:
    """Raise :class:`PrecisionError` unless JAX computes in float64."""
    if not jax.config.jax_enable_x64:
        raise PrecisionError(
            "pwa needs float64 JAX: call jax.config.update('jax_enable_x64', True) in the entry "
            "point before using it (library modules never switch it on themselves)")


def angular_factors(hv: np.ndarray, terms: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Ang_{k,M,lg}(x) for every term and spin state.

    Args:
        hv: (n, 5) helicity variables (m, cos theta_X, phi_X, cos theta_1, phi_1).
        terms: (spin J, lR >= 0) of each term.

    Returns:
        (n_terms, 4, n) complex128, spin states in :data:`SPIN_STATES` order.
    """
    _, cos_x, phi_x, cos_1, phi_1 = np.asarray(hv, dtype=np.float64).T
    out = np.empty((len(terms), len(SPIN_STATES), len(cos_x)), dtype=np.complex128)
    for k, (spin, lr) in enumerate(terms):
        for s, (M, lg) in enumerate(SPIN_STATES):
            lr_signed = lr if lg == 1 else -lr
            out[k, s] = (wigner_D_conj(1, M, lr_signed - lg, phi_x, cos_x)
                         * wigner_D_conj(spin, lr_signed, 0, phi_1, cos_1))
    return out


@dataclass(frozen=True, eq=False)
class Model:
    """A frozen amplitude model built from a :class:`~pwa.card.ModelCard`.

    Parameters live in one *full* vector (every coupling magnitude and phase,
    every lineshape parameter); the *free* ones, in :attr:`parameter_names`
    order, form the vector ``p`` that every physics function takes.

    Attributes:
        card: the card the model was built from.
        reaction: the reaction (masses, event-file columns).
        resonance_names: (n_res,) names in card order.
        spins: (n_res,) spins.
        terms: (n_terms,) (resonance index, lR) of each amplitude term.
        all_parameter_names: names of the full vector.
        parameter_names: names of the free parameters, e.g.
            ``"f2(1270):c1.mag"``, ``"f2(1270):c1.phase"``, ``"f2'(1525):mass"``.
        bounds: (lo, hi) per free parameter, None = unbounded.
    """

    card: ModelCard
    reaction: Reaction
    resonance_names: tuple[str, ...]
    spins: tuple[int, ...]
    terms: tuple[tuple[int, int], ...]
    all_parameter_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    bounds: tuple[tuple[float | None, float | None], ...]
    _template: np.ndarray
    _free: np.ndarray
    _mag_index: np.ndarray
    _phase_index: np.ndarray
    _lineshapes: tuple[LineshapeFunction, ...]
    _lineshape_index: tuple[dict[str, int], ...]

    # --- construction ------------------------------------------------------

    @classmethod
    def from_card(cls, card: ModelCard | str | Path | Mapping) -> "Model":
        """Build from a card object, a YAML path, or a card dictionary."""
        if isinstance(card, (str, Path)):
            card = load_model_card(card)
        elif isinstance(card, Mapping):
            card = parse_model_card(dict(card))
        reaction = card.reaction.to_reaction()
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

        terms, mag_index, phase_index, fns, ls_index = [], [], [], [], []
        for i, r in enumerate(card.resonances):
            for lr, (mag, phase) in r.couplings.items():
                fixed = r.name == card.reference and lr == 0
                if fixed:
                    mag, phase = 1.0, 0.0
                terms.append((i, lr))
                mag_index.append(add(f"{r.name}:c{lr}.mag", mag, not fixed, (0.0, None)))
                phase_index.append(add(f"{r.name}:c{lr}.phase", phase, not fixed, (None, None)))
            ls = LINESHAPES[r.lineshape_type]
            fns.append(ls.bind(LineshapeContext(r.spin, reaction.m1, reaction.m2)))
            ls_index.append({p: add(f"{r.name}:{p}", v, p in r.float_, _fit_bound(r, p, reaction))
                             for p, v in r.lineshape_parameters.items()})
        free_arr = np.flatnonzero(free)
        return cls(
            card=card, reaction=reaction,
            resonance_names=tuple(r.name for r in card.resonances),
            spins=tuple(r.spin for r in card.resonances),
            terms=tuple(terms),
            all_parameter_names=tuple(names),
            parameter_names=tuple(names[i] for i in free_arr),
            bounds=tuple(bounds[i] for i in free_arr),
            _template=np.asarray(values, dtype=np.float64),
            _free=free_arr,
            _mag_index=np.asarray(mag_index),
            _phase_index=np.asarray(phase_index),
            _lineshapes=tuple(fns),
            _lineshape_index=tuple(ls_index),
        )

    def __repr__(self) -> str:
        return (f"Model({len(self.resonance_names)} resonances, {len(self.terms)} terms, "
                f"{self.n_free} free parameters; reference {self.card.reference}; from {self.card.source})")

    @property
    def n_free(self) -> int:
        return len(self.parameter_names)

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    def initial_values(self) -> np.ndarray:
        """(n_free,) float64 free-parameter values from the card."""
        return self._template[self._free].copy()

    def resonance_parameters(self, name: str) -> tuple[str, ...]:
        """Free parameters carried by one resonance (its couplings and floating lineshape parameters)."""
        if name not in self.resonance_names:
            raise KeyError(f"no resonance {name!r} in the model ({', '.join(self.resonance_names)})")
        return tuple(p for p in self.parameter_names if p.split(":", 1)[0] == name)

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
        """The model with one resonance removed (for significance tests).

        If the reference resonance is removed, the first remaining resonance
        with a lR = 0 coupling becomes the reference and every coupling is
        divided by its (complex) lR = 0 coupling: the same physics, in the
        new normalisation, so the initial values stay meaningful.
        """
        if name not in self.resonance_names:
            raise KeyError(f"no resonance {name!r} in the model ({', '.join(self.resonance_names)})")
        if len(self.resonance_names) == 1:
            raise ModelCardError(f"{self.card.source}: cannot remove the only resonance {name!r}")
        raw = self.card.to_dict()
        raw["resonances"] = [r for r in raw["resonances"] if r["name"] != name]
        if raw["reference"] == name:
            new_ref = next((r for r in raw["resonances"] if 0 in r["couplings"]), None)
            if new_ref is None:
                raise ModelCardError(f"{self.card.source}: removing {name!r} leaves no resonance with a "
                                     "lambda_R = 0 coupling to serve as the reference")
            mag0, ph0 = new_ref["couplings"][0]
            if mag0 == 0:
                raise ModelCardError(f"{self.card.source}: new reference {new_ref['name']!r} has a zero "
                                     "lambda_R = 0 coupling")
            for r in raw["resonances"]:
                r["couplings"] = {lr: (m / mag0, float(np.angle(np.exp(1j * (ph - ph0)))))
                                  for lr, (m, ph) in r["couplings"].items()}
            raw["reference"] = new_ref["name"]
        return Model.from_card(parse_model_card(raw, source=f"{self.card.source} without {name}"))

    def card_at(self, p: np.ndarray) -> ModelCard:
        """The card with its values replaced by the free parameters p (e.g. a fit result)."""
        full = self.full_parameters(np.asarray(p, dtype=np.float64))
        value = dict(zip(self.all_parameter_names, np.asarray(full).tolist()))
        raw = self.card.to_dict()
        for r in raw["resonances"]:
            r["couplings"] = {lr: (value[f"{r['name']}:c{lr}.mag"], value[f"{r['name']}:c{lr}.phase"])
                              for lr in r["couplings"]}
            for k in r["lineshape"]:
                if k != "type":
                    r["lineshape"][k] = value[f"{r['name']}:{k}"]
        return parse_model_card(raw, source=self.card.source)

    # --- build once ----------------------------------------------------------

    def precompute(self, events: Events, *, normalisation_matrix: bool = False,
                   fold_lineshapes: bool | None = None) -> Cache:
        """Per-event arrays that do not depend on the parameters (built once).

        Args:
            events: the sample (data, detector-level MC, or generator-level MC).
            normalisation_matrix: also store the weighted mean of the
                per-term products (see :meth:`term_integrals`), so that the
                normalisation becomes the quadratic form c^H M c. Only
                possible when no lineshape parameter floats.
            fold_lineshapes: multiply the (fixed) lineshapes into the stored
                angular factors, G_ks = F_R(k)(m) Ang_ks, so that a call only
                forms sum_k c_k G_ks: the minimal work per event. Default: yes
                when no lineshape parameter floats.

        Returns:
            dict with ``m`` (n,), ``weights`` (n,), ``ang_re``/``ang_im``
            (n_terms, 4, n) (with lineshapes folded in if ``folded`` is a key)
            and, if asked, ``norm_re``/``norm_im`` (n_terms, n_terms); all jnp
            float64.
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
        hv = events.helicity_variables
        ang = angular_factors(hv, tuple((self.spins[i], lr) for i, lr in self.terms))
        if fold_lineshapes:
            # jit: one compiled program instead of an op-by-op dispatch of every lineshape.
            F = np.asarray(self._compiled_term_lineshapes(jnp.asarray(self._template), jnp.asarray(hv[:, 0])))
            ang *= F[:, None, :]
        cache = {
            "m": jnp.asarray(hv[:, 0]),
            "weights": jnp.asarray(events.weight_array),
            "ang_re": jnp.asarray(ang.real),
            "ang_im": jnp.asarray(ang.imag),
        }
        if fold_lineshapes:
            cache["folded"] = jnp.zeros(())
        if normalisation_matrix:
            M = self._compiled_term_integrals(jnp.asarray(self._template), cache)
            cache["norm_re"], cache["norm_im"] = jnp.real(M), jnp.imag(M)
        return cache

    @cached_property
    def _compiled_term_lineshapes(self):
        """jit once per model (a new jax.jit wrapper per call would recompile every time)."""
        return jax.jit(self._term_lineshapes)

    @cached_property
    def _compiled_term_integrals(self):
        return jax.jit(self._term_integrals)

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
        """(n_res, n) complex F_R(m) at parameters p."""
        return self._lineshapes_full(self.full_parameters(p), m)

    def _lineshape_list(self, full: jnp.ndarray, m: jnp.ndarray) -> list[jnp.ndarray]:
        """F_R(m) per resonance. Fixed lineshape parameters enter as Python floats, not as
        entries of ``full``: then no derivative is propagated through them and XLA folds
        their per-event arithmetic (e.g. the Blatt-Weisskopf factors of a fixed radius)."""
        free = set(self._free.tolist())
        return [fn(m, {k: (full[i] if i in free else float(self._template[i])) for k, i in idx.items()})
                for fn, idx in zip(self._lineshapes, self._lineshape_index)]

    def _lineshapes_full(self, full: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
        return jnp.stack(self._lineshape_list(full, m))

    def _term_lineshapes(self, full: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
        """(n_terms, n) complex F_{R(k)}(m), stacked from the per-resonance list (an index
        gather here would differentiate into a scatter-add, slow on CPUs)."""
        F = self._lineshape_list(full, m)
        return jnp.stack([F[i] for i, _ in self.terms])

    def amplitudes(self, p: jnp.ndarray, cache: Cache) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Real and imaginary parts of A_{M,lg}(x), each (4, n), spin states in SPIN_STATES order."""
        require_x64()
        full = self.full_parameters(p)
        c = self._couplings_full(full)
        if "folded" in cache:
            # Lineshapes already in the cache: A_s = sum_k c_k G_ks, a (4n x K) by K product.
            a_re, a_im = jnp.real(c), jnp.imag(c)
            A_re = (jnp.einsum("k,ksn->sn", a_re, cache["ang_re"])
                    - jnp.einsum("k,ksn->sn", a_im, cache["ang_im"]))
            A_im = (jnp.einsum("k,ksn->sn", a_re, cache["ang_im"])
                    + jnp.einsum("k,ksn->sn", a_im, cache["ang_re"]))
            return A_re, A_im
        a = c[:, None] * self._term_lineshapes(full, cache["m"])
        a_re, a_im = jnp.real(a), jnp.imag(a)
        # Real arithmetic on the split arrays: no complex copy of the cache per call.
        A_re = (jnp.einsum("kn,ksn->sn", a_re, cache["ang_re"])
                - jnp.einsum("kn,ksn->sn", a_im, cache["ang_im"]))
        A_im = (jnp.einsum("kn,ksn->sn", a_re, cache["ang_im"])
                + jnp.einsum("kn,ksn->sn", a_im, cache["ang_re"]))
        return A_re, A_im

    def intensity(self, p: jnp.ndarray, cache: Cache) -> jnp.ndarray:
        """(n,) intensity I(x) = sum_{M, lg} |A_{M,lg}(x)|^2 at free parameters p (n_free,)."""
        A_re, A_im = self.amplitudes(p, cache)
        return jnp.sum(A_re**2 + A_im**2, axis=0)

    def _term_integrals(self, full: jnp.ndarray, cache: Cache) -> jnp.ndarray:
        G = cache["ang_re"] + 1j * cache["ang_im"]
        if "folded" not in cache:
            G = self._term_lineshapes(full, cache["m"])[:, None, :] * G
        w = cache["weights"]
        return jnp.einsum("ksn,lsn,n->kl", jnp.conj(G), G, w) / jnp.sum(w)

    def term_integrals(self, p: jnp.ndarray, cache: Cache) -> jnp.ndarray:
        """(n_terms, n_terms) complex M_kl = <sum_s conj(G_ks) G_ls>, G_ks = F_{R(k)} Ang_{k,s}.

        The mean is weighted with the cache's weights. With it the mean
        intensity is the quadratic form c^H M c. Uses the stored matrix
        when the cache has one (fixed lineshapes).
        """
        require_x64()
        if "norm_re" in cache:
            return cache["norm_re"] + 1j * cache["norm_im"]
        return self._term_integrals(self.full_parameters(p), cache)

    def normalisation(self, p: jnp.ndarray, mc_cache: Cache) -> jnp.ndarray:
        """Weighted mean intensity sum_j v_j I(x_j) / sum_j v_j over a sample (scalar).

        With a stored normalisation matrix this is c^H M c (fast path).
        """
        require_x64()
        if "norm_re" in mc_cache:
            c = self.couplings(p)
            M = mc_cache["norm_re"] + 1j * mc_cache["norm_im"]
            return jnp.real(jnp.conj(c) @ M @ c)
        v = mc_cache["weights"]
        return jnp.sum(v * self.intensity(p, mc_cache)) / jnp.sum(v)

    def nll(self, p: jnp.ndarray, data_cache: Cache, mc_cache: Cache) -> jnp.ndarray:
        """Negative log-likelihood of PHYSICS.md section 4 (scalar).

        NLL = - sum_i w_i ln I(x_i) + W ln(sum_j v_j I(x_j) / sum_j v_j), W = sum_i w_i,
        with data weights w from ``data_cache`` and MC weights v from ``mc_cache``.
        """
        w = data_cache["weights"]
        return (-jnp.sum(w * jnp.log(self.intensity(p, data_cache)))
                + jnp.sum(w) * jnp.log(self.normalisation(p, mc_cache)))

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
        res = np.asarray([i for i, _ in self.terms])
        P = res[None, :] == np.arange(len(self.resonance_names))[:, None]  # (n_res, n_terms)
        C = jnp.where(jnp.asarray(P), c[None, :], 0.0)
        X = jnp.real(jnp.conj(C) @ M @ C.T)
        total = jnp.real(jnp.conj(c) @ M @ c)
        off = 2.0 - jnp.eye(len(self.resonance_names))
        return X * off / total
