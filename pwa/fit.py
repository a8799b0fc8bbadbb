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

``significances`` refits without each resonance and converts Delta NLL to
a significance (Wilks); for weighted data the Delta NLL is first scaled by
sum w / sum w^2 (:func:`pwa.problem.likelihood_scale`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from fastsim.events import Events

from .amplitude import Model
from .background import BackgroundModel
from .errors import FitError
from .fit_result import FitConfig, FitResult, Significance
from .optimize import Minimizer, MinimizeResult, best_of_starts, hessian_summary, propagate_fractions
from .parallel import check_executor, map_tasks
from .problem import FitProblem, PortableProblem, effective_size, likelihood_scale
from .starts import random_starts
from .workers import worker_minimizer


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

    Warnings (:attr:`FitResult.warnings`): fewer effective data events
    (sum w)^2 / sum w^2 than free parameters (:func:`effective_size_warning`).

    A floating background fraction is the last parameter (its Hessian or
    sandwich error); the fractions are the signal model's.
    """
    model = problem.model
    names = list(problem.parameter_names)
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
    signal = problem.signal_parameters
    F, F_err, sf, sf_err = propagate_fractions(lambda p: model.fit_fractions(signal(p), gen), best.x, cov)
    nll = float(jax.jit(problem.nll_function())(jnp.asarray(best.x), problem.data_cache, problem.mc_cache,
                                                *problem.background_arguments()))
    return FitResult(
        model_source=str(model.card.source), parameter_names=tuple(names),
        resonance_names=tuple(model.resonance_names), values=best.x, errors=errors,
        covariance=cov, nll=nll, objective=best.fun, converged=converged, edm=edm,
        hessian_eigenvalues=eig, message=best.message,
        optimizer=best.optimizer, n_data=problem.n_data, n_mc=problem.n_mc,
        sum_data_weights=problem.sum_data_weights, fractions=F,
        fraction_errors=F_err, sum_of_fractions=sf, sum_of_fractions_error=sf_err,
        sandwich=problem.weighted_data, minima=tuple((r.fun, r.converged) for r in distinct),
        wall_time=wall, config=config, at_limit=excluded, warnings=fit_warnings(problem))


def fit_warnings(problem: FitProblem) -> tuple[str, ...]:
    """Warnings about a problem whose statistics a converged fit cannot make right."""
    message = effective_size_warning(_effective_data_events(problem), problem.n_parameters)
    return (message,) if message else ()


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
                  progress=None, background: BackgroundModel | None = None) -> list[Significance]:
    """Refit without each resonance (from the fitted values) and convert Delta NLL to sigma.

    Constraint and LASSO terms are switched off in the refits: the test
    compares plain NLLs, so ``result`` must be a plain-NLL fit as well.

    Weighted data (e.g. sideband-subtracted): a weighted NLL is not a
    likelihood, and its Delta NLL is too large (weights above 1) or too small
    by the factor the weights scale the information by. The reported
    ``delta_nll`` is the refit's Delta NLL times sum w / sum w^2
    (:func:`pwa.problem.likelihood_scale`, 1 for unit weights), and the
    p-value and Z follow from it: exact for equal weights, the usual
    first-order correction otherwise (check with toys for strongly varying
    weights).

    Args:
        background: the background term ``result`` was fitted with (the
            refits use it too; a floating fraction starts at its fitted value).
    """
    if config.sf_lambda or config.lasso:
        raise FitError("significance needs a plain-NLL fit: switch off --sf-lambda and --lasso")
    n_extra = 0 if background is None else background.n_parameters
    if len(result.values) != model.n_free + n_extra:
        raise FitError(f"the result has {len(result.values)} parameters, the model {model.n_free}"
                       + (f" and the background {n_extra}" if n_extra else "")
                       + ": pass the background term the result was fitted with")
    if n_extra:
        background = background.with_fraction(float(np.clip(result.values[-1], 1e-6, 1 - 1e-6)))
    fitted = Model.from_card(model.card_at(result.values[: model.n_free]))
    scale = likelihood_scale(data.weight_array)
    out = []
    for name in names or model.resonance_names:
        reduced = fitted.without(name)
        res = fit(reduced, data, mc, replace(config, starts=1), background=background)
        dnll = (res.nll - result.nll) * scale
        k = model.n_free - reduced.n_free
        p, z = significance_from_delta_nll(dnll, k)
        out.append(Significance(name, dnll, k, p, z, res.converged))
        if progress:
            progress(name)
    return out
