"""Unbinned maximum-likelihood fits of a model to data (PHYSICS.md section 4).

``fit(model, data, mc)`` minimises the objective NLL~ of a
:class:`~pwa.problem.FitProblem` (the NLL with optional fraction-sum and
LASSO penalties) with exact autodiff gradients and Hessians
(:mod:`pwa.optimize`), from the starts of :func:`pwa.starts.random_starts`.
The covariance is the inverse of the exact Hessian of the *objective that
was minimised* at its minimum; for weighted data it is the sandwich
H^-1 C H^-1, C = sum_i w_i^2 g_i g_i^T, g_i = grad ln(I(x_i)/norm)
(Langenbruch, EPJC 82 (2022) 393). Fit fractions F_R, interference
fractions and SF are integrals over generator-level flat phase space
(:func:`pwa.fractions.generator_cache`: deterministic quadrature for
J/psi -> gamma P P, generator-level MC for any other reaction),
with errors sigma^2 = J V J^T from the autodiff Jacobian.

With a background term (``background=``, :class:`pwa.background.BackgroundModel`)
the NLL is the mixture's (:class:`~pwa.problem.FitProblem`); a floating
background fraction is the last fit parameter, ``"background_fraction"``,
reported with its error, while the fit fractions stay those of the signal
model (their Jacobian has no f_b column; the covariance they use is the
full one, so f_b's correlations are accounted for).

Several starts (``FitConfig.starts`` > 1, :func:`pwa.starts.default_starts`
proposes how many): the best is the lowest converged minimum
(:func:`pwa.optimize.best_of_starts`), and the result lists every distinct
minimum with the number of starts that ended in it
(:func:`distinct_minima`, :attr:`FitResult.distinct_minima`).

Warnings (:attr:`FitResult.warnings`, :func:`bound_warnings`): a parameter
that ends on a bound (a mass at the edge of its kinematic range, a width at
its cap, a background fraction at 0 or 1) gets one line naming it, since its
error (reported as zero, "at limit") means nothing there. A coupling
magnitude at 0 does not: that only switches one amplitude term off, common
and harmless, and the table marks it "at limit"; but a resonance whose free
couplings all end at 0 has dropped out of the fit, and that is said.

``significances`` refits without each resonance and converts Delta NLL to
a significance (Wilks); for weighted data the Delta NLL is first scaled by
sum w / sum w^2 (:func:`pwa.problem.likelihood_scale`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from fastsim.events import Events

from .amplitude import Model
from .background import BackgroundModel
from .caches import EventCache
from .errors import FitError
from .fit_result import EXACT_SHIFT_TOLERANCE, MINIMA_TOLERANCE, BinnedCheck, FitConfig, FitResult, Minimum, Significance
from .fraction_errors import propagate_model_fractions
from .fractions import generator_cache
from .optimize import BoundsTransform, Minimizer, MinimizeResult, best_of_starts, hessian_summary
from .parallel import check_executor, map_tasks
from .problem import FitProblem, PortableProblem, effective_size, likelihood_scale
from .starts import random_starts
from .workers import worker_minimizer


#: Units of lineshape parameters, for the warnings.
_UNITS = {"mass": " GeV", "width": " GeV", "radius": " GeV^-1"}


def _minimize_options(config: FitConfig) -> dict:
    """Keyword arguments of :meth:`Minimizer.minimize` from a config."""
    return {"optimizer": config.optimizer, "max_iter": config.max_iter, "edm_tolerance": config.edm_tolerance}


def _minimize_start(portable: PortableProblem, task: tuple[FitConfig, np.ndarray]) -> MinimizeResult | FitError:
    """One start of a parallel multi-start (a :func:`~pwa.parallel.map_tasks` task, problem shared)."""
    config, x0 = task
    return worker_minimizer(portable, config).try_minimize(x0, **_minimize_options(config))


def fit(model: Model, data: Events, mc: Events, config: FitConfig = FitConfig(), *,
        problem: FitProblem | None = None, x0: np.ndarray | None = None,
        minimizer: Minimizer | None = None, executor: str = "serial", workers: int | None = None,
        scheduler: str | None = None, background: BackgroundModel | None = None) -> FitResult:
    """Fit ``model`` to ``data`` with ``mc`` as normalisation sample.

    With ``config.starts`` > 1 and a parallel ``executor`` every start is a
    task of :func:`pwa.parallel.map_tasks` (each worker rebuilds and compiles
    the problem once, :func:`pwa.workers.worker_problem`); the starts, the
    choice of the best minimum and the distinct minima are those of the serial loop
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
        background: an explicit background term for ``data``
            (:func:`pwa.background.background_model`); not with ``problem``,
            which carries its own.

    Returns:
        :class:`FitResult`; with a floating background fraction its last
        parameter is ``"background_fraction"``.

    Raises:
        FitError: when the fit cannot start (bad input) or every start fails.
        ValueError: for an unknown executor.
    """
    t0 = time.perf_counter()
    check_executor(executor)
    if problem is not None and background is not None and problem.background is not background:
        raise FitError("give the background term either to FitProblem.build or to fit, not a different one to each")
    problem = problem or FitProblem.build(model, data, mc, quadrature_panels=config.quadrature_panels,
                                          gen_events=config.gen_events, gen_seed=config.gen_seed,
                                          background=background)
    if model.n_free == 0:
        raise FitError(f"{model.card.source}: the model has no free parameter")
    x0 = problem.initial_values(x0)
    n = model.n_free
    # Random starts of the model's parameters; a floating f_b starts at its given value in each.
    starts = [np.concatenate([x, x0[n:]])
              for x in random_starts(model, x0[:n], max(config.starts, 1), config.seed)]
    coarse = coarse_problem(problem, data, mc, config, len(starts))
    if coarse is None:
        outcomes = _minimize_starts(problem, config, starts, executor, workers, scheduler, minimizer)
        best, _ = best_of_starts(outcomes)
        if problem.binned:
            best, check = exact_check(problem, best, config)
            result = summarise(problem.exact(), best, outcomes, config, time.perf_counter() - t0)
            return replace(result, binned_check=check, warnings=result.warnings + check.warnings())
        return summarise(problem, best, outcomes, config, time.perf_counter() - t0)
    # Every start first on the coarse problem; the lowest coarse minima then on the full one.
    first = _minimize_starts(coarse, config, starts, executor, workers, scheduler, None)
    ranked = sorted((i for i, r in enumerate(first) if isinstance(r, MinimizeResult) and np.isfinite(r.fun)),
                    key=lambda i: first[i].fun)
    refined = ranked[:config.refine] if config.refine else ranked
    second = _minimize_starts(problem, config, [first[i].x for i in refined], executor, workers, scheduler,
                              minimizer) if refined else []
    # Per start: its full minimisation, the FitError of its coarse one, or None (not refined).
    outcomes: list[MinimizeResult | FitError | None] = [
        None if i in ranked else (r if isinstance(r, FitError) else FitError(f"coarse objective {r.fun}"))
        for i, r in enumerate(first)]
    for i, r in zip(refined, second):
        outcomes[i] = r
    best, _ = best_of_starts(outcomes)
    result = summarise(problem, best, outcomes, config, time.perf_counter() - t0)
    return replace(result, unrefined_starts=sum(r is None for r in outcomes))


@lru_cache(maxsize=8)
def _nll_value_and_gradient(nll: Callable):
    """``jax.jit(jax.value_and_grad(nll))``, once per NLL function (repeated fits reuse the compilation)."""
    return jax.jit(jax.value_and_grad(nll))


def exact_check(problem: FitProblem, best: MinimizeResult, config: FitConfig,
                tolerance: float = EXACT_SHIFT_TOLERANCE) -> tuple[MinimizeResult, BinnedCheck]:
    """The minimum of a binned normalisation, checked against the exact per-event sum.

    At the binned minimum the exact objective's gradient g gives the Newton
    shift d = H^-1 g to the exact minimum (H the binned Hessian, equal to the
    exact one to the expansion's order); its largest component in units of the
    parameter's error is the check. Within ``tolerance`` (default 0.01 sigma)
    the minimum is kept, with the exact objective value and gradient (and the
    EDM from them). Beyond it, where the fit found a region the expansion does
    not hold (a width narrower than the bins), the exact problem is minimised
    from the binned minimum and its result replaces it. Parameters on a bound
    are left out of the shift, as of the covariance.
    """
    exact = problem.exact()
    # The penalties do not depend on the normalisation: the exact objective differs from the
    # binned one by the NLL's difference alone.
    vg = _nll_value_and_gradient(problem.nll_function())
    x, background = jnp.asarray(best.x), problem.background_arguments()
    v_exact, g_exact = vg(x, problem.data_cache, exact.mc_cache, *background)
    v_binned, g_binned = vg(x, problem.data_cache, problem.mc_cache, *background)
    value = float(best.fun) + float(v_exact) - float(v_binned)
    g = np.asarray(best.gradient, dtype=np.float64) + np.asarray(g_exact) - np.asarray(g_binned)
    excluded = _excluded_at_limit(problem.parameter_names, best.at_limit)
    cov, _, _, _ = _limited_summary(best, excluded, config.edm_tolerance)
    sigma = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    shift = np.where(sigma > 0, np.abs(cov @ g) / np.where(sigma > 0, sigma, 1.0), 0.0)
    worst = int(np.argmax(shift)) if shift.size else 0
    largest = float(shift[worst]) if shift.size else 0.0
    binned_value = float(best.fun)
    if np.isfinite(largest) and largest <= tolerance:
        fixed = _limited_summary(replace(best, gradient=g), excluded, config.edm_tolerance)
        kept = replace(best, fun=float(value), gradient=g, edm=float(fixed[2]),
                       converged=bool(best.converged and np.isfinite(value) and fixed[3]))
        return kept, BinnedCheck(binned_value, float(value), largest, problem.parameter_names[worst], tolerance)
    refit = exact.minimizer(config).minimize(best.x, **_minimize_options(config))
    return refit, BinnedCheck(binned_value, float(value), largest, problem.parameter_names[worst], tolerance,
                              refit_iterations=refit.n_iterations, refit_objective=float(refit.fun))


def coarse_problem(problem: FitProblem, data: Events, mc: Events, config: FitConfig,
                   n_starts: int) -> FitProblem | None:
    """The coarse stage's problem of a multi-start fit (``config.coarse_mc``), or None when there is none.

    Only where it saves time: several starts, a floating lineshape parameter
    (with every lineshape fixed an iteration never touches the MC events,
    :meth:`pwa.amplitude.Model.precompute`'s normalisation matrix) and an MC
    of more than ``coarse_mc`` events, summed event by event. Its MC is every k-th event of ``mc``,
    k = ceil(len(mc) / coarse_mc), so that an MC written in runs is still
    sampled evenly; data and background term are the full problem's. So are
    the fraction integrals, except where a penalty (the fraction-sum
    constraint, LASSO) sums generator-level events in every iteration: then
    the coarse stage draws about ``coarse_mc`` of them (``config.gen_seed``).
    """
    if not config.coarse_mc or n_starts < 2 or not problem.model.floating_lineshapes \
            or (mc is not None and config.coarse_mc >= len(mc)) or not isinstance(problem.mc_cache, EventCache):
        return None  # a binned normalisation (pwa.binned) costs the same for any MC size
    if data is None or mc is None:
        raise FitError("coarse_mc: the coarse stage subsamples the MC events; give fit the data and MC, "
                       "not only a prebuilt problem")
    step = -(-len(mc) // config.coarse_mc)
    gen = problem.gen_cache
    if (config.sf_lambda or config.lasso) and not problem.model.reaction.is_radiative_pair \
            and config.coarse_mc < config.gen_events:
        gen = generator_cache(problem.model, n_events=config.coarse_mc, seed=config.gen_seed)
    return FitProblem.build(problem.model, data, mc.subset(slice(None, None, step)), gen_cache=gen,
                            background=problem.background)


def _minimize_starts(problem: FitProblem, config: FitConfig, starts: list[np.ndarray], executor: str,
                     workers: int | None, scheduler: str | None,
                     minimizer: Minimizer | None) -> list[MinimizeResult | FitError]:
    """Every start's outcome (its result or the FitError it raised), in start order."""
    if len(starts) > 1 and executor != "serial":
        return map_tasks(_minimize_start, [(config, x) for x in starts], executor=executor,
                         workers=workers, scheduler=scheduler, shared=problem.portable())
    if minimizer is None:
        mz = problem.minimizer(config)
    else:
        mz = minimizer
        mz.args = problem.arguments(config)
    # Minimizer.multi_start's loop, keeping every start's outcome for the listing of minima.
    return [mz.try_minimize(x, **_minimize_options(config)) for x in starts]


def distinct_minima(outcomes: Sequence[MinimizeResult | FitError], *, tolerance: float = MINIMA_TOLERANCE,
                    nll: Callable[[np.ndarray], float] | None = None,
                    converged: Callable[[MinimizeResult], bool] | None = None
                    ) -> tuple[tuple[Minimum, ...], int]:
    """The distinct minima of several starts, lowest first, and the number of failed starts.

    Starts are sorted by their final objective; a start within ``tolerance``
    of the lowest objective of the current minimum joins it, otherwise it
    opens the next one (the grouping of :func:`pwa.optimize.best_of_starts`).
    Starts that raised or ended on a non-finite objective are failed starts; a
    None outcome (a start that a coarse stage did not refine, :func:`fit`) is neither.

    Args:
        outcomes: per start, in start order, its result, the FitError it raised, or None.
        tolerance: NLL units.
        nll: the plain NLL at a parameter vector (default: the objective).
        converged: whether a start converged (default: its ``converged``; :func:`fit`
            judges it as :func:`summarise` judges the best one, without the parameters
            on a bound).

    Returns:
        (minima, failed): the counts of the minima plus ``failed`` give ``len(outcomes)``.
    """
    ok = [(i, r) for i, r in enumerate(outcomes) if isinstance(r, MinimizeResult) and np.isfinite(r.fun)]
    ok.sort(key=lambda t: (t[1].fun, not t[1].converged))
    groups: list[list[tuple[int, MinimizeResult]]] = []
    for i, r in ok:
        if groups and r.fun - groups[-1][0][1].fun <= tolerance:
            groups[-1].append((i, r))
        else:
            groups.append([(i, r)])
    judge = converged or (lambda r: bool(r.converged))
    minima = []
    for group in groups:
        lowest = group[0][1]
        flags = [judge(r) for _, r in group]
        minima.append(Minimum(objective=float(lowest.fun),
                              nll=float(lowest.fun) if nll is None else float(nll(lowest.x)),
                              n_starts=len(group), n_converged=sum(flags), converged=flags[0],
                              starts=tuple(sorted(i for i, _ in group))))
    return tuple(minima), sum(r is not None for r in outcomes) - len(ok)


def summarise(problem: FitProblem, best: MinimizeResult, outcomes: Sequence[MinimizeResult | FitError | None],
              config: FitConfig, wall: float) -> FitResult:
    """FitResult from the minimisations of every start: covariance, fractions with errors, NLL,
    the distinct minima (:func:`distinct_minima`) and the warnings.

    Parameters on a bound (a coupling magnitude at 0) and the phases of
    zero-magnitude couplings (which then have no effect) are excluded from
    the covariance, the EDM and the positive-definiteness check: their
    Hessian rows are meaningless there. They are reported "at limit" with a
    zero error; the fit converges if the remaining Hessian is positive
    definite and its EDM is small.

    Warnings (:attr:`FitResult.warnings`): fewer effective data events
    (sum w)^2 / sum w^2 than free parameters (:func:`effective_size_warning`);
    parameters that ended on a bound (:func:`bound_warnings`).

    A floating background fraction is the last parameter (its Hessian or
    sandwich error); the fractions are the signal model's.
    """
    model = problem.model
    names = list(problem.parameter_names)
    excluded = _excluded_at_limit(names, best.at_limit)
    cov, eig, edm, converged = _limited_summary(best, excluded, config.edm_tolerance)
    if problem.weighted_data:
        hinv = cov
        cov = problem.sandwich_covariance(best.x, hinv)
    errors = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    gen = problem.gen_cache
    F, F_err, sf, sf_err = propagate_model_fractions(model, gen, best.x, cov)
    nll_function = jax.jit(problem.nll_function())

    def nll_at(x: np.ndarray) -> float:
        return float(nll_function(jnp.asarray(x), problem.data_cache, problem.mc_cache,
                                  *problem.background_arguments()))

    nll = nll_at(best.x)
    minima, failed = distinct_minima(
        outcomes, nll=nll_at,
        converged=lambda r: _limited_summary(r, _excluded_at_limit(names, r.at_limit), config.edm_tolerance)[3])
    return FitResult(
        model_source=str(model.card.source), parameter_names=tuple(names),
        resonance_names=tuple(model.resonance_names), values=best.x, errors=errors,
        covariance=cov, nll=nll, objective=best.fun, converged=converged, edm=edm,
        hessian_eigenvalues=eig, message=best.message,
        optimizer=best.optimizer, n_data=problem.n_data, n_mc=problem.n_mc,
        sum_data_weights=problem.sum_data_weights, fractions=F,
        fraction_errors=F_err, sum_of_fractions=sf, sum_of_fractions_error=sf_err,
        sandwich=problem.weighted_data, minima=tuple((m.objective, m.converged) for m in minima),
        wall_time=wall, config=config, at_limit=excluded,
        warnings=fit_warnings(problem) + bound_warnings(problem, best.x, best.at_limit),
        distinct_minima=minima, failed_starts=failed)


def _excluded_at_limit(names: Sequence[str], at_limit: np.ndarray) -> np.ndarray:
    """(n,) bool: parameters on a bound, and the phases of magnitudes on one (see :func:`summarise`)."""
    names = list(names)
    excluded = np.asarray(at_limit, dtype=bool).copy()
    if excluded.shape != (len(names),):
        return np.zeros(len(names), dtype=bool)
    for i, name in enumerate(names):
        if excluded[i] and name.endswith(".mag"):
            partner = name[: -len(".mag")] + ".phase"
            if partner in names:
                excluded[names.index(partner)] = True
    return excluded


def _limited_summary(r: MinimizeResult, excluded: np.ndarray, edm_tolerance: float
                     ) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """(covariance, Hessian eigenvalues, EDM, converged) of a minimum without the ``excluded``
    parameters (their covariance rows are zero)."""
    if not excluded.any():
        return r.covariance, r.hessian_eigenvalues, r.edm, r.converged
    free = ~excluded
    cov = np.zeros_like(r.hessian)
    if not free.any():
        return cov, np.ones(1), 0.0, bool(np.isfinite(r.fun))
    sub_cov, eig, edm = hessian_summary(r.hessian[np.ix_(free, free)], r.gradient[free])
    cov[np.ix_(free, free)] = sub_cov
    return cov, eig, edm, bool(np.isfinite(r.fun) and edm < edm_tolerance and eig[0] > 0)


def fit_warnings(problem: FitProblem) -> tuple[str, ...]:
    """Warnings about a problem whose statistics a converged fit cannot make right."""
    message = effective_size_warning(_effective_data_events(problem), problem.n_parameters)
    return (message,) if message else ()


def bound_warnings(problem: FitProblem, x: np.ndarray, at_limit: np.ndarray | None = None) -> tuple[str, ...]:
    """One line per parameter that ended on a bound of :attr:`FitProblem.bounds`, and one per
    resonance whose free couplings all ended at 0 (see the module docstring).

    Args:
        problem: the fit problem (its parameter names and bounds).
        x: (n_parameters,) the fitted values.
        at_limit: (n_parameters,) which of them sit on a bound (default:
            :meth:`pwa.optimize.BoundsTransform.at_limit`, as the fit flags them).
    """
    names, bounds = problem.parameter_names, problem.bounds
    x = np.asarray(x, dtype=np.float64)
    tr = BoundsTransform.from_bounds(bounds, len(names))
    if at_limit is None or len(at_limit) != len(names):
        at_limit = tr.at_limit(x)
    lines = []
    for i, name in enumerate(names):
        if not at_limit[i]:
            continue
        lo, hi = tr.lower[i], tr.upper[i]
        lower = abs(x[i] - lo) <= abs(hi - x[i])
        if name.endswith(".mag") and lower and lo == 0.0:
            continue  # a magnitude at 0 switches a term off: common, flagged "at limit" in the table
        side, value = ("lower", lo) if lower else ("upper", hi)
        unit = _UNITS.get(name.rsplit(":", 1)[-1], "")
        lines.append(f"{name} ended at its {side} bound {value:.6g}{unit}: the fit ran to the edge of the "
                     "allowed range; its error is not meaningful")
    model = problem.model
    magnitudes = set(model.coupling_magnitude_names)
    index = {name: i for i, name in enumerate(names)}
    for res in model.resonance_names:
        if res == model.card.reference:
            continue  # its first coupling is fixed: it cannot drop out
        mags = [index[p] for p in model.resonance_parameters(res) if p in magnitudes]
        if mags and all(at_limit[i] and abs(x[i]) <= abs(x[i] - tr.upper[i]) for i in mags):
            lines.append(f"{res}: every coupling ended at 0: the resonance dropped out of the fit (its "
                         "fraction is 0 and its lineshape parameters, if floating, are undetermined)")
    return tuple(lines)


def effective_size_warning(n_effective: float, n_free: int) -> str | None:
    """One line if the effective data size is below the number of free parameters, else None."""
    if n_effective >= n_free:
        return None
    return (f"the data have {n_effective:.3g} effective events ((sum w)^2 / sum w^2), fewer than the "
            f"{n_free} free parameters: the errors and the convergence are not meaningful")


def _effective_data_events(problem: FitProblem) -> float:
    if problem.effective_data_events is not None:
        return problem.effective_data_events
    # A problem assembled by hand: from its data weights (zero-weight padding changes nothing).
    return effective_size(np.asarray(problem.data_cache.weights))


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
                  progress=None, background: BackgroundModel | None = None,
                  problem: FitProblem | None = None) -> list[Significance]:
    """Refit without each resonance (from the fitted values) and convert Delta NLL to sigma.

    Constraint and LASSO terms are switched off in the refits: the test
    compares plain NLLs, so ``result`` must be a plain-NLL fit as well.

    Weighted data (e.g. sideband-subtracted): a weighted NLL is not a
    likelihood. With equal weights c, Delta NLL_w / c is the unweighted test.
    Otherwise 2 Delta NLL_w of the refit is referred to sum_i lambda_i
    chi2_1, lambda the eigenvalues of [V_H]^-1 V_S over the resonance's
    parameters at the fit's minimum (:mod:`pwa.weighted_stats`); the reported
    ``delta_nll`` is the chi2_k equivalent of that p-value, and ``method``
    says so. If the resonance's parameters cannot be told apart (it is the
    reference), the first-order scale sum w / sum w^2 is used instead and
    ``method`` says that.

    Args:
        background: the background term ``result`` was fitted with (the
            refits use it too; a floating fraction starts at its fitted value).
        problem: the problem ``result`` was fitted on (weighted data only: it is
            built from data, mc and background when not given).
    """
    from .weighted_stats import information_ratio_eigenvalues, weighted_lr_pvalue

    if config.sf_lambda or config.lasso:
        raise FitError("significance needs a plain-NLL fit: switch off --sf-lambda and --lasso")
    n_extra = 0 if background is None else background.n_parameters
    if len(result.values) != model.n_free + n_extra:
        raise FitError(f"the result has {len(result.values)} parameters, the model {model.n_free}"
                       + (f" and the background {n_extra}" if n_extra else "")
                       + ": pass the background term the result was fitted with")
    w = data.weight_array
    weighted = bool(np.ptp(w) > 0)  # equal weights c: Delta NLL_w / c is exactly the unweighted test
    if weighted and problem is None:
        problem = FitProblem.build(model, data, mc, quadrature_panels=config.quadrature_panels,
                                   gen_events=config.gen_events, gen_seed=config.gen_seed, background=background)
    if n_extra:
        background = background.with_fraction(float(np.clip(result.values[-1], 1e-6, 1 - 1e-6)))
    fitted = Model.from_card(model.card_at(result.values[: model.n_free]))
    scale = likelihood_scale(data.weight_array)
    out = []
    for name in names or model.resonance_names:
        reduced = fitted.without(name)
        res = fit(reduced, data, mc, replace(config, starts=1), background=background)
        raw = res.nll - result.nll
        k = model.n_free - reduced.n_free
        method = "Wilks"
        if weighted:
            idx = [i for i, n in enumerate(model.parameter_names)
                   if n.startswith(f"{name}:") and not (result.at_limit.size and result.at_limit[i])]
            if name != model.card.reference and len(idx) == k:
                lam = information_ratio_eigenvalues(problem, result.values, idx)
                p = weighted_lr_pvalue(2.0 * raw, lam)
                dnll = 0.5 * float(stats.chi2.isf(p, k)) if p > 0 else float("inf")
                method = ("sandwich-calibrated: 2 Delta NLL_w against sum lambda_i chi2_1, lambda = "
                          + ", ".join(f"{v:.3g}" for v in lam))
            else:
                dnll = raw * scale
                method = "Wilks on Delta NLL_w x sum w / sum w^2 (first order)"
        else:
            dnll = raw * scale
            if scale != 1.0:
                method = "Wilks on Delta NLL_w x sum w / sum w^2 (equal weights: exact)"
        p, z = significance_from_delta_nll(dnll, k)
        out.append(Significance(name, dnll, k, p, z, res.converged, method))
        if progress:
            progress(name)
    return out
