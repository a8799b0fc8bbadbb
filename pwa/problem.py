"""The fit problem: a model with its caches, and the objective a fit minimises.

:class:`FitProblem` precomputes the data, normalisation-MC and fraction
caches once (:mod:`pwa.caches`); its :meth:`~FitProblem.objective` is the
penalised negative log-likelihood of PHYSICS.md section 4,

    NLL~(p) = NLL(p) + sf_lambda * W * (sf_target - SF(p))^2
                     + lasso * sum_R sqrt(F_R(p) + lasso_eps),

as a pure function of p, the caches and the penalty strengths, compiled
once per problem and objective structure (:func:`objective_structure`).

With a background term (:class:`pwa.background.BackgroundModel`) the NLL is
that of the mixture, -sum_i w_i ln((1 - f_b) I(x_i) / N(p) + f_b B_i); a
floating f_b is the last entry of p (``"background_fraction"``, bounds
(0, 1)) and the model's parameters are ``p[:model.n_free]``. Without one
(the default) the objective is :meth:`pwa.amplitude.Model.nll`, unchanged.

LASSO: the square root is smoothed, sqrt(F_R + eps) with eps = 1e-6 by
default (a fraction of 1e-6 costs lambda * 1e-3 rather than an infinite
slope), so the objective stays differentiable and the exact Hessian exists.

:class:`PortableProblem` is the same problem as picklable data (card as a
dictionary, caches of numpy arrays) for fits in other processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events
from fastsim.events.io import weight_problem

from .amplitude import Model, require_x64
from .background import BACKGROUND_FRACTION, BackgroundModel
from .caches import Cache, EventCache
from .card import parse_model_card
from .errors import FitError
from .fit_result import FitConfig
from .fractions import generator_cache
from .hessian import StructuredHessian
from .optimize import Minimizer, batched_hessian


@dataclass(frozen=True, eq=False)
class FitProblem:
    """A model with its data, normalisation MC and fraction caches built once.

    The objective and its derivatives compile once per problem and are reused
    by every start, scan point and refit.
    """

    model: Model
    data_cache: EventCache
    mc_cache: Cache
    gen_cache: Cache
    n_data: int
    n_mc: int
    sum_data_weights: float
    weighted_data: bool
    #: Effective number of data events (sum w)^2 / sum w^2; None: compute from the data cache.
    effective_data_events: float | None = None
    #: The explicit background term, or None (signal only: today's NLL).
    background: BackgroundModel | None = None
    #: The per-event MC cache behind a binned normalisation (:func:`pwa.binned.with_binned_normalisation`),
    #: else None; :meth:`exact` is the problem with it.
    exact_mc_cache: Cache | None = None

    @property
    def binned(self) -> bool:
        """True when the normalisation is binned and :meth:`exact` holds the per-event sum."""
        return self.exact_mc_cache is not None

    def exact(self) -> "FitProblem":
        """This problem with the per-event MC sum (itself when its normalisation is not binned)."""
        if self.exact_mc_cache is None:
            return self
        return replace(self, mc_cache=self.exact_mc_cache, exact_mc_cache=None)

    @classmethod
    def build(cls, model: Model, data: Events, mc: Events, *, quadrature_panels: int = 120,
              gen_cache: Cache | None = None, gen_events: int = 1_000_000, gen_seed: int = 0,
              background: BackgroundModel | None = None) -> "FitProblem":
        """Precompute the caches (the expensive, parameter-independent part).

        Args:
            background: an explicit background term whose ``density`` has one
                entry per data event (:func:`pwa.background.background_model`).

        Raises:
            FitError: data or MC of another reaction than the model's, an
                empty sample, or weights that are not finite, all zero or sum
                to a non-positive number (:func:`check_sample`); a background
                density of another length than the data.
        """
        require_x64()
        if data.reaction != model.reaction:
            raise FitError(f"data are {' '.join(data.reaction.particles)} events but the model "
                           f"{model.card.source} describes {' '.join(model.reaction.particles)}")
        if mc.reaction != model.reaction:
            raise FitError("normalisation MC and model describe different reactions")
        for label, events in (("data", data), ("normalisation MC", mc)):
            check_sample(label, events)
        check_background(background, len(data))
        fixed = not model.floating_lineshapes
        data_cache = model.precompute(data)
        mc_cache = model.precompute(mc, normalisation_matrix=fixed)
        if gen_cache is None:
            gen_cache = generator_cache(model, quadrature_panels=quadrature_panels, n_events=gen_events,
                                        seed=gen_seed)
        w = data.weight_array
        return cls(model, data_cache, mc_cache, gen_cache, len(data), len(mc), float(w.sum()),
                   bool(np.any(w != 1.0)), effective_size(w), background)

    @property
    def caches(self) -> tuple[EventCache, Cache, Cache]:
        """(data, mc, gen) caches: the arguments of :meth:`objective`'s function."""
        return self.data_cache, self.mc_cache, self.gen_cache

    # --- the fit parameters: the model's, then a floating background fraction ---

    @property
    def floating_background(self) -> bool:
        return self.background is not None and self.background.float_fraction

    @property
    def n_parameters(self) -> int:
        """Length of the fit vector p: the model's free parameters, plus one for a floating f_b."""
        return self.model.n_free + int(self.floating_background)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        extra = (BACKGROUND_FRACTION,) if self.floating_background else ()
        return tuple(self.model.parameter_names) + extra

    @property
    def bounds(self) -> tuple[tuple[float | None, float | None], ...]:
        extra = ((0.0, 1.0),) if self.floating_background else ()
        return tuple(self.model.bounds) + extra

    def initial_values(self, x0: np.ndarray | None = None) -> np.ndarray:
        """(n_parameters,) start vector: ``x0`` (default the card's values) and, for a
        floating f_b, the background's start fraction appended if ``x0`` lacks it."""
        x = self.model.initial_values() if x0 is None else np.asarray(x0, dtype=np.float64)
        if self.floating_background and x.shape == (self.model.n_free,):
            x = np.append(x, self.background.fraction)
        if x.shape != (self.n_parameters,):
            raise FitError(f"start vector has shape {x.shape}, expected ({self.n_parameters},) "
                           f"({', '.join(self.parameter_names)})")
        return x

    def signal_parameters(self, p):
        """The model's free parameters p[:n_free] (p itself without a floating f_b)."""
        return p[: self.model.n_free] if self.floating_background else p

    def background_fraction(self, p) -> float | None:
        """f_b at p (the fixed value, or p[-1] when it floats); None without a background."""
        if self.background is None:
            return None
        return float(p[-1]) if self.background.float_fraction else self.background.fraction

    @property
    def likelihood_scale(self) -> float:
        """sum w / sum w^2 of the data weights: 1 for unit weights (:func:`likelihood_scale`)."""
        return likelihood_scale(np.asarray(self.data_cache.weights))

    # --- the likelihood ---------------------------------------------------------

    def background_arguments(self) -> tuple:
        """(density (n_data,), fixed fraction) as jnp arrays: the background's objective argument."""
        if self.background is None:
            return ()
        return (jnp.asarray(self.background.density), jnp.asarray(self.background.fraction, dtype=jnp.float64))

    def log_density_function(self):
        """Pure ``g(p, data_cache, mc_cache, *background) -> (n_data,)`` ln of each data event's density.

        ln(I_i / N) without a background, ln((1 - f_b) I_i / N + f_b B_i) with one.
        """
        if self.background is None:
            return _signal_log_density(self.model)
        return _mixture_functions(self.model, self.background.float_fraction)[0]

    def nll_function(self):
        """Pure ``nll(p, data_cache, mc_cache, *background)``: Model.nll, or the mixture's NLL.

        One function object per model and background structure, so that jitted
        wrappers of it share their compilation across problems (toys).
        """
        if self.background is None:
            return self.model.nll
        return _mixture_functions(self.model, self.background.float_fraction)[1]

    def nll(self, p: jnp.ndarray) -> jnp.ndarray:
        return self.nll_function()(p, self.data_cache, self.mc_cache, *self.background_arguments())

    def fractions(self, p: jnp.ndarray) -> jnp.ndarray:
        return self.model.fit_fractions(self.signal_parameters(p), self.gen_cache)

    def objective(self, config: FitConfig):
        """NLL~ as a pure function ``f(p, data_cache, mc_cache, gen_cache, hyper, *background)``.

        The caches and the penalty strengths ``hyper`` = (sf_target,
        sf_lambda, lasso) are arguments, not closure constants, so compiled
        programs stay small and one compile serves a whole scan (call it with
        ``*self.arguments(config)``). Which penalties exist is structural.
        With a background term its density and fixed fraction follow
        (:meth:`background_arguments`) and the penalties take the model's
        parameters only.
        """
        nll = self.nll_function()
        penalty = self._penalty(config)

        def f(p, data_cache, mc_cache, gen_cache, hyper, *background):
            val = nll(p, data_cache, mc_cache, *background)
            if penalty is not None:
                val = val + penalty(p, gen_cache, hyper)
            return val

        return f

    def _penalty(self, config: FitConfig):
        """``penalty(p, gen_cache, hyper)`` of the config's fraction-sum and LASSO terms, or None."""
        W = self.sum_data_weights
        model = self.model
        use_sf, use_lasso, eps = objective_structure(config)
        signal = self.signal_parameters
        if not (use_sf or use_lasso):
            return None

        def penalty(p, gen_cache, hyper):
            F = model.fit_fractions(signal(p), gen_cache)
            val = 0.0
            if use_sf:
                val = val + hyper[1] * W * (hyper[0] - jnp.trace(F)) ** 2
            if use_lasso:
                val = val + hyper[2] * jnp.sum(jnp.sqrt(jnp.diagonal(F) + eps))
            return val

        return penalty

    def objective_hessian(self, config: FitConfig):
        """The exact Hessian of :meth:`objective`'s function, same arguments, or None for autodiff.

        Without a background term the NLL's Hessian comes from the amplitude's
        structure (:class:`pwa.hessian.StructuredHessian`: a few gradients
        instead of one autodiff column per parameter). So does the fraction-sum
        penalty's over a generator-level event cache
        (:meth:`~pwa.hessian.StructuredHessian.fraction_sum`); over a stored
        matrix, or with LASSO, the penalty's is added by autodiff. A background
        mixture keeps plain autodiff (None).
        """
        if self.background is not None:
            return None
        structured = StructuredHessian(self.model)
        penalty = self._penalty(config)
        penalty_hessian = None if penalty is None else batched_hessian(penalty)
        use_sf, use_lasso, _ = objective_structure(config)
        W = self.sum_data_weights

        def h(p, data_cache, mc_cache, gen_cache, hyper, *background):
            H = structured(p, data_cache, mc_cache)
            if use_sf and not use_lasso and gen_cache.normalisation_matrix is None:
                # lambda W (t - SF)^2 from SF's exact jets over the generator-level events
                sf, dsf, d2sf = structured.fraction_sum(p, gen_cache)
                H = H + 2.0 * hyper[1] * W * (jnp.outer(dsf, dsf) - (hyper[0] - sf) * d2sf)
            elif penalty_hessian is not None:
                H = H + penalty_hessian(p, gen_cache, hyper)
            return H

        return h

    def hessian(self, p: np.ndarray, config: FitConfig = FitConfig()) -> np.ndarray:
        """(n_par, n_par) exact Hessian of :meth:`objective` at p (the NLL's with the default config)."""
        h = self.objective_hessian(config) or batched_hessian(self.objective(config))
        return np.asarray(jax.jit(h)(jnp.asarray(p, dtype=jnp.float64), *self.arguments(config)))

    def arguments(self, config: FitConfig) -> tuple:
        """Arguments after p of :meth:`objective`'s function for this config."""
        hyper = jnp.asarray([config.sf_target, config.sf_lambda, config.lasso], dtype=jnp.float64)
        return (*self.caches, hyper, *self.background_arguments())

    def minimizer(self, config: FitConfig) -> Minimizer:
        """A compiled minimiser of the config's objective on this problem.

        Reuse it for other penalty strengths of the same kind by setting
        ``minimizer.args = problem.arguments(other_config)``.
        """
        return Minimizer(self.objective(config), self.n_parameters, self.bounds,
                         args=self.arguments(config), hessian=self.objective_hessian(config))

    def mc_component_weights(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-MC-event weights of the fitted signal and background, for projections.

        Returns:
            (signal (n_mc,), background (n_mc,) or None): v_j (1 - f_b) I_j / N
            and v_j f_b B_j, scaled so that together they sum to the sum of
            data weights. Needs an MC cache with per-event arrays, and for the
            background the density on the MC (``background.mc_density``).
        """
        q = jnp.asarray(self.signal_parameters(np.asarray(p, dtype=np.float64)))
        v = np.asarray(self.mc_cache.weights)
        intensity = np.asarray(self.model.intensity(q, self.mc_cache))
        signal = v * intensity / np.sum(v * intensity)
        fb = self.background_fraction(np.asarray(p))
        if fb is None:
            return self.sum_data_weights * signal, None
        if self.background.mc_density is None or self.background.mc_density.shape != v.shape:
            raise FitError("background projections need the background density on the normalisation MC "
                           "(BackgroundModel.mc_density of one entry per MC event)")
        bkg = v * self.background.mc_density / np.sum(v * self.background.mc_density)
        W = self.sum_data_weights
        return W * (1.0 - fb) * signal, W * fb * bkg

    def portable(self) -> "PortableProblem":
        """This problem as plain, picklable data for fits in other processes.

        The card travels as a dictionary and the caches as numpy arrays, so a
        process-pool or Dask worker rebuilds the problem without reading or
        precomputing events again (:func:`pwa.workers.worker_problem`). Pass
        it as the ``shared`` object of :func:`~pwa.parallel.map_tasks` so
        that the caches travel once per worker, not once per task.
        """
        card = self.model.card.to_dict()
        source = str(self.model.card.source)
        caches = jax.tree_util.tree_map(np.asarray, self.caches)
        scalars = (self.n_data, self.n_mc, self.sum_data_weights, self.weighted_data)
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((card, source, scalars, self.effective_data_events)).encode())
        if self.background is not None:
            bkg = self.background
            h.update(f"background:{bkg.fraction!r}:{bkg.float_fraction}:{bkg.density.shape}".encode())
            h.update(bkg.density)
        for label, cache in zip(("data", "mc", "gen"), caches):
            h.update(f"{label}:{jax.tree_util.tree_structure(cache)}".encode())  # type, folded, fields set
            for key, value in sorted(cache.arrays().items()):
                a = np.ascontiguousarray(value)
                h.update(f"{label}.{key}:{a.dtype}{a.shape}".encode())
                h.update(a)  # the buffer itself, no copy
        return PortableProblem(card, source, *caches, *scalars, digest=h.hexdigest(),
                               effective_data_events=self.effective_data_events, background=self.background)

    def sandwich_covariance(self, p: np.ndarray, hessian_inverse: np.ndarray) -> np.ndarray:
        """H^-1 C H^-1 with C = sum_i w_i^2 g_i g_i^T, g_i = grad ln(density of event i).

        The density is I(x_i)/norm, or the mixture with the background term
        (:meth:`log_density_function`); negative weights (sideband
        subtraction) enter C through w_i^2 like positive ones.
        """
        log_density_function = self.log_density_function()
        background = self.background_arguments()

        def log_density(q):
            return log_density_function(q, self.data_cache, self.mc_cache, *background)

        G = np.asarray(jax.jacfwd(log_density)(jnp.asarray(p)))  # (n_data, n_par)
        w = np.asarray(self.data_cache.weights)
        C = (G * (w**2)[:, None]).T @ G
        return hessian_inverse @ C @ hessian_inverse


def check_sample(label: str, events: Events) -> None:
    """Refuse a sample a fit cannot use: no events, or unusable weights.

    Args:
        label: what the sample is, for the message (``"data"``, ``"normalisation MC"``).
        events: the sample.

    Raises:
        FitError: one line naming the sample and what was expected.
    """
    if len(events) == 0:
        raise FitError(f"{label}: the sample holds no events; expected at least one")
    if events.weights is not None:
        problem = weight_problem(events.weights, f"{label}: the weights", plural=True)
        if problem:
            raise FitError(problem)


def check_background(background: BackgroundModel | None, n_data: int) -> None:
    """Refuse a background term that does not belong to the data.

    Raises:
        FitError: not a :class:`~pwa.background.BackgroundModel`, or a density
            of another length than the data.
    """
    if background is None:
        return
    if not isinstance(background, BackgroundModel):
        raise FitError(f"background: expected a BackgroundModel (pwa.background.background_model), "
                       f"got {type(background).__name__}")
    if background.density.shape != (n_data,):
        raise FitError(f"background: the density has {background.density.size} entries but the data "
                       f"{n_data} events; expected one per data event")


@lru_cache(maxsize=32)
def _signal_log_density(model: Model):
    """ln(I_i / N) per data event: the density of the signal-only NLL."""
    def log_density(p, data_cache, mc_cache):
        return jnp.log(model.intensity(p, data_cache)) - jnp.log(model.normalisation(p, mc_cache))

    return log_density


@lru_cache(maxsize=32)
def _mixture_functions(model: Model, floating: bool):
    """(log_density, nll) of the mixture (1 - f_b) I / N + f_b B; f_b = p[-1] when floating."""
    n = model.n_free

    def log_density(p, data_cache, mc_cache, density, fixed_fraction):
        q, fb = (p[:n], p[n]) if floating else (p, fixed_fraction)
        signal = model.intensity(q, data_cache) / model.normalisation(q, mc_cache)
        return mixture_log_density(signal, fb, density)

    def nll(p, data_cache, mc_cache, density, fixed_fraction):
        return -jnp.sum(data_cache.weights * log_density(p, data_cache, mc_cache, density, fixed_fraction))

    return log_density, nll


def mixture_log_density(signal: jnp.ndarray, fraction, density: jnp.ndarray) -> jnp.ndarray:
    """(n,) ln((1 - f_b) S_i + f_b B_i) of signal densities S_i = I_i / N and background densities B_i.

    ``density`` may be shorter than ``signal`` (zero-weight padding of a sharded data cache).
    """
    return jnp.log((1.0 - fraction) * signal + fraction * _padded(density, signal.shape[-1]))


def _padded(density: jnp.ndarray, n: int) -> jnp.ndarray:
    """The (n_data,) density padded with ones to n events (zero-weight padding of a sharded data cache)."""
    pad = n - density.shape[-1]
    return density if pad == 0 else jnp.concatenate([density, jnp.ones(pad, density.dtype)])


def likelihood_scale(weights: np.ndarray) -> float:
    """sum w / sum w^2 of (n_events,) data weights (1 for unit weights; 0 if all are zero).

    A weighted NLL differs from a likelihood; multiplied by this factor its
    differences (Delta NLL of a likelihood-ratio test, the 2 NLL of AIC and
    BIC) are on the scale of a likelihood of (sum w)^2 / sum w^2 effective
    events, the usual first-order correction for weighted (e.g. sideband-
    subtracted) data. Exact when all weights are equal.
    """
    w = np.asarray(weights, dtype=np.float64)
    w2 = float(np.sum(w * w))
    return float(np.sum(w)) / w2 if w2 > 0 else 0.0


def effective_size(weights: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of (n_events,) weights (0 if all are zero)."""
    w = np.asarray(weights, dtype=np.float64)
    w2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / w2 if w2 > 0 else 0.0


def objective_structure(config: FitConfig) -> tuple[bool, bool, float]:
    """(SF constraint on, LASSO on, LASSO eps): what fixes the compiled objective's form.

    Configs with the same structure share one compiled :class:`Minimizer`;
    only the penalty strengths (arguments) differ.
    """
    return bool(config.sf_lambda), bool(config.lasso), float(config.lasso_eps)


@dataclass(frozen=True, eq=False)
class PortableProblem:
    """A :class:`FitProblem` as picklable data (see :meth:`FitProblem.portable`).

    Attributes:
        card: the model card as a dictionary (``ModelCard.to_dict``).
        source: the card's source (file name), kept for messages and results.
        data_cache, mc_cache, gen_cache: the caches, of numpy arrays.
        n_data, n_mc, sum_data_weights, weighted_data: as in FitProblem.
        digest: content hash of all the above; workers memoise by it.
        effective_data_events: as in FitProblem.
        background: as in FitProblem (numpy arrays, picklable).
    """

    card: dict
    source: str
    data_cache: EventCache
    mc_cache: Cache
    gen_cache: Cache
    n_data: int
    n_mc: int
    sum_data_weights: float
    weighted_data: bool
    digest: str
    effective_data_events: float | None = None
    background: BackgroundModel | None = None

    def build(self) -> FitProblem:
        """The FitProblem again (float64 JAX arrays; no event is read or precomputed)."""
        require_x64()
        model = Model.from_card(parse_model_card(self.card, source=self.source))
        caches = jax.tree_util.tree_map(jnp.asarray, (self.data_cache, self.mc_cache, self.gen_cache))
        return FitProblem(model, *caches, self.n_data, self.n_mc, self.sum_data_weights, self.weighted_data,
                          self.effective_data_events, self.background)
