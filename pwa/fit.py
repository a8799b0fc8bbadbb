"""Unbinned maximum-likelihood fits of a model to data (PHYSICS.md section 4).

``fit(model, data, mc)`` minimises

    NLL~(p) = NLL(p) + sf_lambda * W * (sf_target - SF(p))^2
                     + lasso * sum_R sqrt(F_R(p) + lasso_eps)

with exact autodiff gradients and Hessians (:mod:`pwa.optimize`). The
covariance is the inverse of the exact Hessian of the *objective that was
minimised* at its minimum; for weighted data it is the sandwich
H^-1 C H^-1, C = sum_i w_i^2 g_i g_i^T, g_i = grad ln(I(x_i)/norm)
(Langenbruch, EPJC 82 (2022) 393). Fit fractions F_R, interference
fractions and SF are integrals over generator-level flat phase space
(:func:`pwa.fractions.generator_cache`: deterministic quadrature for
J/psi -> gamma P P, generator-level MC for any other reaction),
with errors sigma^2 = J V J^T from the autodiff Jacobian.

LASSO: the square root is smoothed, sqrt(F_R + eps) with eps = 1e-6 by
default (a fraction of 1e-6 costs lambda * 1e-3 rather than an infinite
slope), so the objective stays differentiable and the exact Hessian exists.
"""

from __future__ import annotations

import copy
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from fastsim.events import Events

from .amplitude import Model, require_x64
from .card import parse_model_card
from .errors import FitError
from .fractions import generator_cache
from .optimize import (DEFAULT_OPTIMIZER, Minimizer, MinimizeResult, best_of_starts, dumps, hessian_summary,
                       propagate)
from .parallel import check_executor, map_tasks


@dataclass(frozen=True)
class FitConfig:
    """Options of one fit.

    Attributes:
        optimizer: key of :data:`pwa.optimize.OPTIMIZERS`.
        starts: number of starts; the first is the card's values, the others
            randomised (phases uniform, magnitudes scaled by e^U(-1,1),
            floating masses and widths moved by up to +-10 %).
        seed: seed of the randomised starts.
        sf_target, sf_lambda: fraction-sum constraint (off when sf_lambda = 0).
        lasso: LASSO strength lambda (off when 0); lasso_eps its smoothing.
        max_iter, edm_tolerance: convergence settings.
        quadrature_panels: m panels of the fraction quadrature (J/psi -> gamma P P).
        gen_events, gen_seed: generator-level MC of the fraction integrals of
            any other reaction (:func:`pwa.fractions.generator_cache`).
    """

    optimizer: str = DEFAULT_OPTIMIZER
    starts: int = 1
    seed: int = 0
    sf_target: float = 1.0
    sf_lambda: float = 0.0
    lasso: float = 0.0
    lasso_eps: float = 1e-6
    max_iter: int = 2000
    edm_tolerance: float = 1e-4
    quadrature_panels: int = 120
    gen_events: int = 1_000_000
    gen_seed: int = 0


@dataclass(frozen=True)
class FitResult:
    """Outcome of a fit, in physical parameters, printable and serialisable.

    Array shapes: ``values``/``errors`` (n_free,), ``covariance`` (n_free,
    n_free), ``fractions``/``fraction_errors`` (n_res, n_res) with F_R on the
    diagonal and interference fractions off it.
    """

    model_source: str
    parameter_names: tuple[str, ...]
    resonance_names: tuple[str, ...]
    values: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    nll: float
    objective: float
    converged: bool
    edm: float
    hessian_eigenvalues: np.ndarray
    message: str
    optimizer: str
    n_data: int
    n_mc: int
    sum_data_weights: float
    fractions: np.ndarray
    fraction_errors: np.ndarray
    sum_of_fractions: float
    sum_of_fractions_error: float
    sandwich: bool
    minima: tuple[tuple[float, bool], ...]
    wall_time: float
    config: FitConfig
    at_limit: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def positive_definite(self) -> bool:
        return bool(self.hessian_eigenvalues[0] > 0)

    @property
    def correlation(self) -> np.ndarray:
        e = self.errors
        denom = np.outer(e, e)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, self.covariance / denom, 0.0)

    def parameter(self, name: str) -> tuple[float, float]:
        i = self.parameter_names.index(name)
        return float(self.values[i]), float(self.errors[i])

    def fraction(self, name: str) -> tuple[float, float]:
        i = self.resonance_names.index(name)
        return float(self.fractions[i, i]), float(self.fraction_errors[i, i])

    def to_dict(self) -> dict:
        n = len(self.resonance_names)
        inter = {f"{self.resonance_names[i]} x {self.resonance_names[j]}":
                 {"value": self.fractions[i, j], "error": self.fraction_errors[i, j]}
                 for i in range(n) for j in range(i + 1, n)}
        return {
            "model": self.model_source,
            "nll": self.nll,
            "objective": self.objective,
            "converged": self.converged,
            "edm": self.edm,
            "message": self.message,
            "optimizer": self.optimizer,
            "hessian_positive_definite": self.positive_definite,
            "hessian_eigenvalues": self.hessian_eigenvalues,
            "parameters": {name: {"value": v, "error": e, "at_limit": bool(a)} for name, v, e, a in
                           zip(self.parameter_names, self.values, self.errors,
                               self.at_limit if self.at_limit.size else [False] * len(self.values))},
            "fractions": {name: {"value": self.fractions[i, i], "error": self.fraction_errors[i, i]}
                          for i, name in enumerate(self.resonance_names)},
            "interference_fractions": inter,
            "sum_of_fractions": {"value": self.sum_of_fractions, "error": self.sum_of_fractions_error},
            "covariance": self.covariance,
            "correlation": self.correlation,
            "covariance_kind": "sandwich H^-1 C H^-1" if self.sandwich else "inverse exact Hessian",
            "n_data": self.n_data,
            "n_mc": self.n_mc,
            "sum_data_weights": self.sum_data_weights,
            "distinct_minima": [{"nll": f, "converged": c} for f, c in self.minima],
            "wall_time_s": self.wall_time,
            "config": asdict(self.config),
        }

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def __str__(self) -> str:
        lines = [
            f"Fit of {self.model_source}: {self.n_data} data events, {self.n_mc} MC events",
            f"  NLL = {self.nll:.6f}   objective = {self.objective:.6f}   EDM = {self.edm:.2e}   "
            f"{'CONVERGED' if self.converged else 'NOT CONVERGED'} ({self.optimizer}, {self.wall_time:.1f} s)",
            f"  Hessian {'positive definite' if self.positive_definite else 'NOT POSITIVE DEFINITE'}; "
            f"smallest eigenvalue {self.hessian_eigenvalues[0]:.3g}"
            + ("; sandwich covariance (weighted data)" if self.sandwich else ""),
        ]
        if len(self.minima) > 1:
            lines.append("  distinct minima (NLL): " + ", ".join(f"{f:.3f}" for f, _ in self.minima))
        w = max(len(n) for n in self.parameter_names) if self.parameter_names else 10
        lines.append(f"  {'parameter':<{w}}  {'value':>12}  {'error':>10}")
        for i, name in enumerate(self.parameter_names):
            flag = "  at limit" if self.at_limit.size and self.at_limit[i] else ""
            lines.append(f"  {name:<{w}}  {self.values[i]:>12.6g}  {self.errors[i]:>10.3g}{flag}")
        wr = max(len(n) for n in self.resonance_names)
        lines.append(f"  {'fit fraction':<{wr}}  {'F (%)':>8}  {'error':>7}")
        for i, name in enumerate(self.resonance_names):
            lines.append(f"  {name:<{wr}}  {100 * self.fractions[i, i]:>8.2f}  "
                         f"{100 * self.fraction_errors[i, i]:>7.2f}")
        lines.append(f"  {'SF':<{wr}}  {100 * self.sum_of_fractions:>8.2f}  "
                     f"{100 * self.sum_of_fractions_error:>7.2f}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class FitProblem:
    """A model with its data, normalisation MC and fraction caches built once.

    The objective and its derivatives compile once per problem and are reused
    by every start, scan point and refit.
    """

    model: Model
    data_cache: dict
    mc_cache: dict
    gen_cache: dict
    n_data: int
    n_mc: int
    sum_data_weights: float
    weighted_data: bool

    @classmethod
    def build(cls, model: Model, data: Events, mc: Events, *, quadrature_panels: int = 120,
              gen_cache: dict | None = None, gen_events: int = 1_000_000, gen_seed: int = 0) -> "FitProblem":
        """Precompute the caches (the expensive, parameter-independent part)."""
        require_x64()
        if data.reaction != model.reaction:
            raise FitError(f"data are {' '.join(data.reaction.particles)} events but the model "
                           f"{model.card.source} describes {' '.join(model.reaction.particles)}")
        if mc.reaction != model.reaction:
            raise FitError("normalisation MC and model describe different reactions")
        if np.any(mc.weight_array < 0) and mc.weight_array.sum() <= 0:
            raise FitError("normalisation MC weights sum to a non-positive number")
        fixed = not model.floating_lineshapes
        data_cache = model.precompute(data)
        mc_cache = model.precompute(mc, normalisation_matrix=fixed)
        if gen_cache is None:
            gen_cache = generator_cache(model, quadrature_panels=quadrature_panels, n_events=gen_events,
                                        seed=gen_seed)
        w = data.weight_array
        return cls(model, data_cache, mc_cache, gen_cache, len(data), len(mc), float(w.sum()),
                   bool(np.any(w != 1.0)))

    @property
    def caches(self) -> tuple[dict, dict, dict]:
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
        precomputing events again (:func:`worker_problem`). Pass it as the
        ``shared`` object of :func:`~pwa.parallel.map_tasks` so that the
        caches travel once per worker, not once per task.
        """
        def to_numpy(cache: dict) -> dict[str, np.ndarray]:
            return {k: np.asarray(v) for k, v in cache.items()}

        card = self.model.card.to_dict()
        source = str(self.model.card.source)
        caches = to_numpy(self.data_cache), to_numpy(self.mc_cache), to_numpy(self.gen_cache)
        scalars = (self.n_data, self.n_mc, self.sum_data_weights, self.weighted_data)
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((card, source, scalars)).encode())
        for label, cache in zip(("data", "mc", "gen"), caches):
            for key in sorted(cache):
                a = np.ascontiguousarray(cache[key])
                h.update(f"{label}.{key}:{a.dtype}{a.shape}".encode())
                h.update(a)  # the buffer itself, no copy
        return PortableProblem(card, source, *caches, *scalars, digest=h.hexdigest())

    def sandwich_covariance(self, p: np.ndarray, hessian_inverse: np.ndarray) -> np.ndarray:
        """H^-1 C H^-1 with C = sum_i w_i^2 g_i g_i^T, g_i = grad ln(I(x_i)/norm)."""
        model = self.model

        def log_density(q):
            return jnp.log(model.intensity(q, self.data_cache)) - jnp.log(model.normalisation(q, self.mc_cache))

        G = np.asarray(jax.jacfwd(log_density)(jnp.asarray(p)))  # (n_data, n_par)
        w = np.asarray(self.data_cache["weights"])
        C = (G * (w**2)[:, None]).T @ G
        return hessian_inverse @ C @ hessian_inverse


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
        data_cache, mc_cache, gen_cache: the caches as numpy arrays.
        n_data, n_mc, sum_data_weights, weighted_data: as in FitProblem.
        digest: content hash of all the above; workers memoise by it.
    """

    card: dict
    source: str
    data_cache: dict[str, np.ndarray]
    mc_cache: dict[str, np.ndarray]
    gen_cache: dict[str, np.ndarray]
    n_data: int
    n_mc: int
    sum_data_weights: float
    weighted_data: bool
    digest: str

    def build(self) -> FitProblem:
        """The FitProblem again (float64 JAX arrays; no event is read or precomputed)."""
        require_x64()
        model = Model.from_card(parse_model_card(self.card, source=self.source))

        def to_jax(cache: dict) -> dict:
            return {k: jnp.asarray(v) for k, v in cache.items()}

        return FitProblem(model, to_jax(self.data_cache), to_jax(self.mc_cache), to_jax(self.gen_cache),
                          self.n_data, self.n_mc, self.sum_data_weights, self.weighted_data)


#: Problems a worker process keeps (least recently used dropped first), each
#: with its compiled minimisers by objective structure.
WORKER_MEMO_SIZE = 4
_worker_memo: OrderedDict[str, tuple[FitProblem, dict[tuple, Minimizer]]] = OrderedDict()
_worker_lock = threading.Lock()


def _memo_entry(portable: PortableProblem) -> tuple[FitProblem, dict[tuple, Minimizer]]:
    """The memo entry of ``portable``, built if missing (the caller holds ``_worker_lock``)."""
    entry = _worker_memo.get(portable.digest)
    if entry is None:
        entry = _worker_memo[portable.digest] = (portable.build(), {})
        while len(_worker_memo) > WORKER_MEMO_SIZE:
            _worker_memo.popitem(last=False)
    _worker_memo.move_to_end(portable.digest)
    return entry


def worker_problem(portable: PortableProblem) -> FitProblem:
    """The problem of ``portable``, rebuilt once per process and then reused.

    Tasks of one multi-start or scan all carry the same problem; the memo
    (keyed by its digest) spares every task after the first in a worker the
    rebuild and, with :func:`worker_minimizer`, the compilation.
    """
    with _worker_lock:
        return _memo_entry(portable)[0]


def worker_minimizer(portable: PortableProblem, config: FitConfig) -> Minimizer:
    """A minimiser of ``config``'s objective on ``portable``'s problem, compiled once per process.

    Returns a shallow copy of the memoised minimiser with its arguments set
    to ``config``'s penalty strengths: it shares the compiled functions, and
    concurrent tasks in one process (threaded Dask workers) do not race on
    the arguments.
    """
    with _worker_lock:
        problem, compiled = _memo_entry(portable)
        key = objective_structure(config)
        if key not in compiled:
            compiled[key] = problem.minimizer(config)
        mz = copy.copy(compiled[key])
    mz.args = problem.arguments(config)
    return mz


def _minimize_options(config: FitConfig) -> dict:
    """Keyword arguments of :meth:`Minimizer.minimize` from a config."""
    return {"optimizer": config.optimizer, "max_iter": config.max_iter, "edm_tolerance": config.edm_tolerance}


def _minimize_start(portable: PortableProblem, task: tuple[FitConfig, np.ndarray]) -> MinimizeResult | FitError:
    """One start of a parallel multi-start (a :func:`~pwa.parallel.map_tasks` task, problem shared)."""
    config, x0 = task
    return worker_minimizer(portable, config).try_minimize(x0, **_minimize_options(config))


def normalisation_cache(model: Model, chunks: Iterable[Events]) -> tuple[dict, int]:
    """Normalisation-matrix-only MC cache accumulated over event chunks.

    For fixed lineshapes the MC enters the NLL only through the weighted mean
    M of per-term products (:meth:`Model.term_integrals`), which is linear in
    the events: memory stays bounded by one chunk for any MC size. The cache
    serves :meth:`Model.nll` / :meth:`Model.normalisation`, not per-event
    quantities (plots).

    Returns:
        (cache with ``norm_re``, ``norm_im``, ``weights`` (the total weight,
        shape (1,)), number of events).
    """
    if model.floating_lineshapes:
        raise FitError("a normalisation-matrix cache needs fixed lineshapes")
    total = np.zeros((model.n_terms, model.n_terms), dtype=np.complex128)
    w_sum = 0.0
    n = 0
    for chunk in chunks:
        c = model.precompute(chunk, normalisation_matrix=True)
        w = float(chunk.weight_array.sum())
        total += (np.asarray(c["norm_re"]) + 1j * np.asarray(c["norm_im"])) * w
        w_sum += w
        n += len(chunk)
    if n == 0 or w_sum <= 0:
        raise FitError("the normalisation sample is empty or its weights sum to zero")
    M = total / w_sum
    return {"norm_re": jnp.asarray(M.real), "norm_im": jnp.asarray(M.imag),
            "weights": jnp.asarray([w_sum])}, n


def combine_normalisation_caches(terms: Sequence[tuple[float, dict]]) -> dict:
    """Linear combination sum_k a_k M_k of normalisation-matrix caches.

    The normalisation integral is linear in the density of the MC sample,
    so a combination of samples with coefficients summing to one is again an
    estimate of it; e.g. the bootstrap bias correction of a generator,
    2 M_flow - M_replica (:func:`fastsim.training.bootstrap_replicas`). The
    total weight of the result is that of the first cache.

    Args:
        terms: (coefficient, cache of :func:`normalisation_cache`) pairs.

    Raises:
        FitError: no terms, coefficients not summing to one, or a cache
            without a normalisation matrix.
    """
    if not terms:
        raise FitError("no normalisation caches to combine")
    total = sum(float(a) for a, _ in terms)
    if not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=1e-12):
        raise FitError(f"normalisation-cache coefficients must sum to 1, got {total}")
    M = 0.0
    for a, c in terms:
        if "norm_re" not in c or "norm_im" not in c:
            raise FitError("combine_normalisation_caches needs normalisation-matrix caches (norm_re, norm_im)")
        M = M + float(a) * (np.asarray(c["norm_re"]) + 1j * np.asarray(c["norm_im"]))
    return {"norm_re": jnp.asarray(M.real), "norm_im": jnp.asarray(M.imag), "weights": terms[0][1]["weights"]}


def random_starts(model: Model, x0: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """x0 followed by n - 1 randomised copies (see :class:`FitConfig`)."""
    rng = np.random.default_rng(seed)
    starts = [np.asarray(x0, dtype=np.float64)]
    lo = np.array([-np.inf if b[0] is None else b[0] for b in model.bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in model.bounds])
    for _ in range(n - 1):
        x = starts[0].copy()
        for i, name in enumerate(model.parameter_names):
            kind = name.rsplit(":", 1)[1]
            if kind.endswith(".phase"):
                x[i] = rng.uniform(-np.pi, np.pi)
            elif kind.endswith(".mag"):
                x[i] = max(abs(x[i]), 0.05) * np.exp(rng.uniform(-1.0, 1.0))
            else:
                x[i] = x[i] * (1.0 + rng.uniform(-0.1, 0.1))
        # Keep strictly inside finite bounds (the sine/sqrt transforms are flat on them).
        inner_lo, inner_hi = lo.copy(), hi.copy()
        fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
        inner_lo[fin_lo] += 1e-9 * np.maximum(np.abs(lo[fin_lo]), 1.0)
        inner_hi[fin_hi] -= 1e-9 * np.maximum(np.abs(hi[fin_hi]), 1.0)
        starts.append(np.clip(x, inner_lo, inner_hi))
    return starts


def fit(model: Model, data: Events, mc: Events, config: FitConfig = FitConfig(), *,
        problem: FitProblem | None = None, x0: np.ndarray | None = None,
        minimizer: Minimizer | None = None, executor: str = "serial", workers: int | None = None,
        scheduler: str | None = None) -> FitResult:
    """Fit ``model`` to ``data`` with ``mc`` as normalisation sample.

    With ``config.starts`` > 1 and a parallel ``executor`` every start is a
    task of :func:`pwa.parallel.map_tasks` (each worker rebuilds and compiles
    the problem once, :func:`worker_problem`); the starts, the choice of the
    best minimum and the distinct minima are those of the serial loop
    (:func:`pwa.optimize.best_of_starts`), and the covariance and fractions
    are computed here. The library default is ``"serial"``: fits nested in
    other tasks (closure toys, scan points) then do not start pools of their
    own; the command line defaults to ``"process"``.

    Args:
        model: the model (its card gives start values and floating parameters).
        data: data events (weights allowed, e.g. background-subtracted).
        mc: detector-level phase-space MC (weights allowed, e.g. reweighted flow MC).
        config: fit options.
        problem: a prebuilt :class:`FitProblem` (skips the precomputation).
        x0: start values (default: the card's).
        minimizer: a prebuilt :class:`Minimizer` for this problem and config
            (used where the starts run in this process).
        executor: ``"serial"``, ``"process"`` or ``"dask"`` for the starts.
        workers: processes of the pool or LocalCluster (default: one per
            start, at most the CPU count).
        scheduler: Dask scheduler address; None starts a LocalCluster.

    Returns:
        :class:`FitResult`.

    Raises:
        FitError: when the fit cannot start (bad input) or every start fails.
        ValueError: for an unknown executor.
    """
    t0 = time.perf_counter()
    check_executor(executor)
    problem = problem or FitProblem.build(model, data, mc, quadrature_panels=config.quadrature_panels,
                                          gen_events=config.gen_events, gen_seed=config.gen_seed)
    x0 = model.initial_values() if x0 is None else np.asarray(x0, dtype=np.float64)
    if model.n_free == 0:
        raise FitError(f"{model.card.source}: the model has no free parameter")
    starts = random_starts(model, x0, max(config.starts, 1), config.seed)
    if len(starts) > 1 and executor != "serial":
        outcomes = map_tasks(_minimize_start, [(config, x) for x in starts], executor=executor,
                             workers=workers, scheduler=scheduler, shared=problem.portable())
        best, distinct = best_of_starts(outcomes)
    else:
        if minimizer is None:
            mz = problem.minimizer(config)
        else:
            mz = minimizer
            mz.args = problem.arguments(config)
        best, distinct = mz.multi_start(starts, **_minimize_options(config))
    return summarise(problem, best, distinct, config, time.perf_counter() - t0)


def summarise(problem: FitProblem, best: MinimizeResult, distinct: Sequence[MinimizeResult],
              config: FitConfig, wall: float) -> FitResult:
    """FitResult from a minimisation: covariance, fractions with errors, NLL.

    Parameters on a bound (a coupling magnitude at 0) and the phases of
    zero-magnitude couplings (which then have no effect) are excluded from
    the covariance, the EDM and the positive-definiteness check: their
    Hessian rows are meaningless there. They are reported "at limit" with a
    zero error; the fit converges if the remaining Hessian is positive
    definite and its EDM is small.
    """
    model = problem.model
    names = model.parameter_names
    excluded = np.asarray(best.at_limit, dtype=bool).copy()
    for i, name in enumerate(names):
        if excluded[i] and name.endswith(".mag"):
            partner = name[: -len(".mag")] + ".phase"
            if partner in names:
                excluded[names.index(partner)] = True
    free = ~excluded
    cov, eig, edm = best.covariance, best.hessian_eigenvalues, best.edm
    converged = best.converged
    if excluded.any():
        sub_cov, eig, edm = hessian_summary(best.hessian[np.ix_(free, free)], best.gradient[free])
        cov = np.zeros_like(best.hessian)
        cov[np.ix_(free, free)] = sub_cov
        converged = bool(np.isfinite(best.fun) and edm < config.edm_tolerance and eig[0] > 0)
    if problem.weighted_data:
        hinv = cov
        cov = problem.sandwich_covariance(best.x, hinv)
    errors = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    gen = problem.gen_cache
    F, Fcov, _ = propagate(lambda p: model.fit_fractions(p, gen), best.x, cov)
    n = len(model.resonance_names)
    F_err = np.sqrt(np.clip(np.diag(Fcov), 0.0, None)).reshape(n, n)
    sf = np.trace(F)
    diag = np.arange(n) * (n + 1)  # flat indices of F_RR
    sf_var = Fcov[np.ix_(diag, diag)].sum()
    nll = float(jax.jit(model.nll)(jnp.asarray(best.x), problem.data_cache, problem.mc_cache))
    return FitResult(
        model_source=str(model.card.source), parameter_names=tuple(model.parameter_names),
        resonance_names=tuple(model.resonance_names), values=best.x, errors=errors,
        covariance=cov, nll=nll, objective=best.fun, converged=converged, edm=edm,
        hessian_eigenvalues=eig, message=best.message,
        optimizer=best.optimizer, n_data=problem.n_data, n_mc=problem.n_mc,
        sum_data_weights=problem.sum_data_weights, fractions=np.asarray(F),
        fraction_errors=F_err, sum_of_fractions=float(sf), sum_of_fractions_error=float(np.sqrt(max(sf_var, 0.0))),
        sandwich=problem.weighted_data, minima=tuple((r.fun, r.converged) for r in distinct),
        wall_time=wall, config=config, at_limit=excluded)


@dataclass(frozen=True)
class Significance:
    """Significance of one resonance from a refit without it (Wilks)."""

    resonance: str
    delta_nll: float
    n_parameters: int
    p_value: float
    sigma: float
    converged: bool

    def to_dict(self) -> dict:
        return asdict(self)


def significance_from_delta_nll(delta_nll: float, n_parameters: int) -> tuple[float, float]:
    """(p-value, Z) for a likelihood-ratio test with n_parameters degrees of freedom.

    p = P(chi2_k > 2 Delta NLL); Z = Phi^-1(1 - p/2) (two-sided convention,
    so that for one parameter Z = sqrt(2 Delta NLL)).
    """
    q = max(2.0 * delta_nll, 0.0)
    p = float(stats.chi2.sf(q, n_parameters))
    z = float(stats.norm.isf(p / 2.0)) if p > 0 else float("inf")
    return p, z


def significances(model: Model, data: Events, mc: Events, result: FitResult,
                  config: FitConfig = FitConfig(), names: Sequence[str] | None = None,
                  progress=None) -> list[Significance]:
    """Refit without each resonance (from the fitted values) and convert Delta NLL to sigma.

    Constraint and LASSO terms are switched off in the refits: the test
    compares plain NLLs, so ``result`` must be a plain-NLL fit as well.
    """
    if config.sf_lambda or config.lasso:
        raise FitError("significance needs a plain-NLL fit: switch off --sf-lambda and --lasso")
    fitted = Model.from_card(model.card_at(result.values))
    out = []
    for name in names or model.resonance_names:
        reduced = fitted.without(name)
        res = fit(reduced, data, mc, replace(config, starts=1))
        dnll = res.nll - result.nll
        k = model.n_free - reduced.n_free
        p, z = significance_from_delta_nll(dnll, k)
        out.append(Significance(name, dnll, k, p, z, res.converged))
        if progress:
            progress(name)
    return out
