"""The fit problem: a model with its caches, and the objective a fit minimises.

:class:`FitProblem` precomputes the data, normalisation-MC and fraction
caches once (:mod:`pwa.caches`); its :meth:`~FitProblem.objective` is the
penalised negative log-likelihood of PHYSICS.md section 4,

    NLL~(p) = NLL(p) + sf_lambda * W * (sf_target - SF(p))^2
                     + lasso * sum_R sqrt(F_R(p) + lasso_eps),

as a pure function of p, the caches and the penalty strengths, compiled
once per problem and objective structure (:func:`objective_structure`).

LASSO: the square root is smoothed, sqrt(F_R + eps) with eps = 1e-6 by
default (a fraction of 1e-6 costs lambda * 1e-3 rather than an infinite
slope), so the objective stays differentiable and the exact Hessian exists.

:class:`PortableProblem` is the same problem as picklable data (card as a
dictionary, caches of numpy arrays) for fits in other processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events
from fastsim.events.io import weight_problem

from .amplitude import Model, require_x64
from .caches import Cache, EventCache
from .card import parse_model_card
from .errors import FitError
from .fit_result import FitConfig
from .fractions import generator_cache
from .optimize import Minimizer


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

    @classmethod
    def build(cls, model: Model, data: Events, mc: Events, *, quadrature_panels: int = 120,
              gen_cache: Cache | None = None, gen_events: int = 1_000_000, gen_seed: int = 0) -> "FitProblem":
        """Precompute the caches (the expensive, parameter-independent part).

        Raises:
            FitError: data or MC of another reaction than the model's, an
                empty sample, or weights that are not finite, all zero or sum
                to a non-positive number (:func:`check_sample`).
        """
        require_x64()
        if data.reaction != model.reaction:
            raise FitError(f"data are {' '.join(data.reaction.particles)} events but the model "
                           f"{model.card.source} describes {' '.join(model.reaction.particles)}")
        if mc.reaction != model.reaction:
            raise FitError("normalisation MC and model describe different reactions")
        for label, events in (("data", data), ("normalisation MC", mc)):
            check_sample(label, events)
        fixed = not model.floating_lineshapes
        data_cache = model.precompute(data)
        mc_cache = model.precompute(mc, normalisation_matrix=fixed)
        if gen_cache is None:
            gen_cache = generator_cache(model, quadrature_panels=quadrature_panels, n_events=gen_events,
                                        seed=gen_seed)
        w = data.weight_array
        return cls(model, data_cache, mc_cache, gen_cache, len(data), len(mc), float(w.sum()),
                   bool(np.any(w != 1.0)), effective_size(w))

    @property
    def caches(self) -> tuple[EventCache, Cache, Cache]:
        """(data, mc, gen) caches: the arguments of :meth:`objective`'s function."""
        return self.data_cache, self.mc_cache, self.gen_cache

    def nll(self, p: jnp.ndarray) -> jnp.ndarray:
        return self.model.nll(p, self.data_cache, self.mc_cache)

    def fractions(self, p: jnp.ndarray) -> jnp.ndarray:
        return self.model.fit_fractions(p, self.gen_cache)

    def objective(self, config: FitConfig):
        """NLL~ as a pure function ``f(p, data_cache, mc_cache, gen_cache, hyper)``.

        The caches and the penalty strengths ``hyper`` = (sf_target,
        sf_lambda, lasso) are arguments, not closure constants, so compiled
        programs stay small and one compile serves a whole scan (call it with
        ``*self.arguments(config)``). Which penalties exist is structural.
        """
        W = self.sum_data_weights
        model = self.model
        use_sf, use_lasso, eps = objective_structure(config)

        def f(p, data_cache, mc_cache, gen_cache, hyper):
            val = model.nll(p, data_cache, mc_cache)
            if use_sf or use_lasso:
                F = model.fit_fractions(p, gen_cache)
                if use_sf:
                    val = val + hyper[1] * W * (hyper[0] - jnp.trace(F)) ** 2
                if use_lasso:
                    val = val + hyper[2] * jnp.sum(jnp.sqrt(jnp.diagonal(F) + eps))
            return val

        return f

    def arguments(self, config: FitConfig) -> tuple:
        """Arguments after p of :meth:`objective`'s function for this config."""
        hyper = jnp.asarray([config.sf_target, config.sf_lambda, config.lasso], dtype=jnp.float64)
        return (*self.caches, hyper)

    def minimizer(self, config: FitConfig) -> Minimizer:
        """A compiled minimiser of the config's objective on this problem.

        Reuse it for other penalty strengths of the same kind by setting
        ``minimizer.args = problem.arguments(other_config)``.
        """
        return Minimizer(self.objective(config), self.model.n_free, self.model.bounds,
                         args=self.arguments(config))

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
        for label, cache in zip(("data", "mc", "gen"), caches):
            h.update(f"{label}:{jax.tree_util.tree_structure(cache)}".encode())  # type, folded, fields set
            for key, value in sorted(cache.arrays().items()):
                a = np.ascontiguousarray(value)
                h.update(f"{label}.{key}:{a.dtype}{a.shape}".encode())
                h.update(a)  # the buffer itself, no copy
        return PortableProblem(card, source, *caches, *scalars, digest=h.hexdigest(),
                               effective_data_events=self.effective_data_events)

    def sandwich_covariance(self, p: np.ndarray, hessian_inverse: np.ndarray) -> np.ndarray:
        """H^-1 C H^-1 with C = sum_i w_i^2 g_i g_i^T, g_i = grad ln(I(x_i)/norm)."""
        model = self.model

        def log_density(q):
            return jnp.log(model.intensity(q, self.data_cache)) - jnp.log(model.normalisation(q, self.mc_cache))

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

    def build(self) -> FitProblem:
        """The FitProblem again (float64 JAX arrays; no event is read or precomputed)."""
        require_x64()
        model = Model.from_card(parse_model_card(self.card, source=self.source))
        caches = jax.tree_util.tree_map(jnp.asarray, (self.data_cache, self.mc_cache, self.gen_cache))
        return FitProblem(model, *caches, self.n_data, self.n_mc, self.sum_data_weights, self.weighted_data,
                          self.effective_data_events)
