"""Fraction scans and LASSO paths (PHYSICS.md section 4).

Two ways to run the points:

* ``executor="serial"`` (the library default): in this process, with one
  compiled objective for every point (the penalty strengths are arguments),
  each point warm-started from the previous minimum, which follows a
  continuous branch of minima;
* ``"process"`` or ``"dask"`` (:func:`pwa.parallel.map_tasks`): every point
  is an independent fit started from the same x0 (the card's values unless
  given). Points then do *not* follow one branch: where the objective has
  several minima, neighbouring points may land on different ones. Each
  worker rebuilds and compiles the problem once (:func:`pwa.workers.worker_problem`).

Weighted data (e.g. sideband-subtracted) and a background term: the
information criteria of the LASSO path use the NLL times a likelihood scale
(1/c for weights all c; k / sum lambda from the sandwich for varying weights,
:mod:`pwa.weighted_stats`) and N = (sum w)^2 / sum w^2 in BIC's k ln N (both
exact for unit weights), and k counts a floating background fraction; a
fraction scan's problem carries its background term itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fastsim.events import Events

from .amplitude import Model
from .card import parse_model_card
from .errors import FitError
from .fit import fit
from .fit_result import FitConfig, FitResult
from .background import BackgroundModel
from .problem import FitProblem, PortableProblem, effective_size, likelihood_scale
from .workers import worker_minimizer, worker_problem
from .parallel import check_executor, map_tasks


def _fit_point(portable: PortableProblem, task: tuple[FitConfig, np.ndarray]) -> FitResult:
    """One scan point as an independent fit from x0 (a :func:`~pwa.parallel.map_tasks` task, problem shared)."""
    config, x0 = task
    problem = worker_problem(portable)
    return fit(problem.model, None, None, config, problem=problem, x0=x0,
               minimizer=worker_minimizer(portable, config))


def _fit_points(problem: FitProblem, configs: Sequence[FitConfig], x0: np.ndarray, *, executor: str,
                workers: int | None, scheduler: str | None,
                on_result: Callable[[int, FitResult], None] | None = None) -> list[FitResult]:
    """Independent fits of ``problem``, one per config, all from ``x0``, in the order of ``configs``."""
    return map_tasks(_fit_point, [(c, x0) for c in configs], executor=executor, workers=workers,
                     scheduler=scheduler, on_result=on_result, shared=problem.portable())


@dataclass(frozen=True)
class ScanPoint:
    """One point of a scan: the penalty setting and the fit at it."""

    setting: float
    result: FitResult

    def to_dict(self) -> dict:
        r = self.result
        return {"setting": self.setting, "nll": r.nll, "objective": r.objective, "converged": r.converged,
                "sum_of_fractions": r.sum_of_fractions, "sum_of_fractions_error": r.sum_of_fractions_error,
                "fractions": {n: float(r.fractions[i, i]) for i, n in enumerate(r.resonance_names)}}


def scan_fraction(problem: FitProblem, targets: Sequence[float], config: FitConfig,
                  *, x0: np.ndarray | None = None,
                  progress: Callable[[ScanPoint], None] | None = None, executor: str = "serial",
                  workers: int | None = None, scheduler: str | None = None) -> list[ScanPoint]:
    """Minimise NLL~ = NLL + lambda N (SF_target - SF)^2 for each SF_target.

    Serially each point starts from the previous minimum (one branch of
    minima); on a parallel executor every point is an independent fit from
    ``x0`` and need not lie on the same branch as its neighbours (see the
    module docstring).

    Args:
        problem: the fit problem (caches built once).
        targets: SF_target values (fractions, 1.15 = 115 %), scanned in order.
        config: fit options; ``sf_lambda`` must be positive.
        x0: start of the first point, or of every point on a parallel
            executor (default: the card's values).
        progress: called with each finished point (in completion order on a
            parallel executor).
        executor: ``"serial"``, ``"process"`` or ``"dask"``.
        workers: processes of the pool or LocalCluster (default: one per
            point, at most the CPU count).
        scheduler: Dask scheduler address; None starts a LocalCluster.

    Returns:
        One :class:`ScanPoint` per target, in the order of ``targets``; plot
        ``nll`` against ``sum_of_fractions``.
    """
    check_executor(executor)
    if config.sf_lambda <= 0:
        raise FitError("a fraction scan needs a positive --sf-lambda")
    x = problem.initial_values(x0)
    configs = [replace(config, sf_target=float(t)) for t in targets]
    if executor != "serial":
        def finished(i: int, res: FitResult) -> None:
            if progress:
                progress(ScanPoint(configs[i].sf_target, res))

        results = _fit_points(problem, configs, x, executor=executor, workers=workers, scheduler=scheduler,
                              on_result=finished)
        return [ScanPoint(c.sf_target, r) for c, r in zip(configs, results)]
    mz = problem.minimizer(configs[0])
    points = []
    for cfg in configs:
        res = fit(problem.model, None, None, cfg, problem=problem, x0=x, minimizer=mz)
        x = res.values
        points.append(ScanPoint(cfg.sf_target, res))
        if progress:
            progress(points[-1])
    return points


@dataclass(frozen=True)
class LassoPoint:
    """A point of the LASSO path with the selected model and its information criteria."""

    lam: float
    result: FitResult
    selected: tuple[str, ...]
    refit_nll: float
    n_parameters: int
    aic: float
    bic: float

    def to_dict(self) -> dict:
        r = self.result
        return {"lambda": self.lam, "nll": r.nll, "objective": r.objective, "converged": r.converged,
                "fractions": {n: float(r.fractions[i, i]) for i, n in enumerate(r.resonance_names)},
                "selected": list(self.selected), "refit_nll": self.refit_nll,
                "n_parameters": self.n_parameters, "aic": self.aic, "bic": self.bic}


def _selection(model: Model, result: FitResult, threshold: float) -> tuple[str, ...]:
    """Resonances with F_R above ``threshold`` (the reference alone if none)."""
    keep = tuple(n for i, n in enumerate(model.resonance_names) if result.fractions[i, i] > threshold)
    return keep or (model.card.reference,)


def _selected_card(model: Model, values: np.ndarray, keep: tuple[str, ...]) -> tuple[dict, str]:
    """(card dictionary, source) of the model at ``values`` (its own free parameters, without a
    floating background fraction) reduced to the resonances ``keep``."""
    reduced = Model.from_card(model.card_at(values))
    for name in model.resonance_names:
        if name not in keep:
            reduced = reduced.without(name)
    return reduced.card.to_dict(), str(reduced.card.source)


def _refit_selection(samples: tuple[Events, Events, FitConfig, BackgroundModel | None],
                     card: tuple[dict, str]) -> tuple[float, int, float]:
    """(NLL, free parameters with a floating background fraction, likelihood scale) of an
    unpenalised fit of a selected model.

    The scale turns the NLL into one of a likelihood for the information criteria: 1 for unit
    weights, 1/c for weights all c, and for varying weights k / sum lambda from the sandwich
    (:func:`pwa.weighted_stats.effective_likelihood_scale`, over the parameters not at a bound).
    A :func:`~pwa.parallel.map_tasks` task: (data, mc, config, background) are shared,
    the card (from :func:`_selected_card`) is the item.
    """
    from .weighted_stats import effective_likelihood_scale

    data, mc, config, background = samples
    reduced = Model.from_card(parse_model_card(card[0], source=card[1]))
    problem = FitProblem.build(reduced, data, mc, quadrature_panels=config.quadrature_panels,
                               gen_events=config.gen_events, gen_seed=config.gen_seed, background=background)
    res = fit(reduced, None, None, config, problem=problem)
    w = data.weight_array
    scale = likelihood_scale(w)
    if np.ptp(w) > 0:
        free = np.flatnonzero(~np.asarray(res.at_limit, dtype=bool)) if res.at_limit.size else None
        scale = effective_likelihood_scale(problem, res.values, free)
    return res.nll, problem.n_parameters, scale


def lasso_scan(model: Model, data: Events, mc: Events, lambdas: Sequence[float], config: FitConfig,
               *, threshold: float = 1e-3, progress: Callable[[LassoPoint], None] | None = None,
               executor: str = "serial", workers: int | None = None,
               scheduler: str | None = None,
               background: BackgroundModel | None = None) -> tuple[list[LassoPoint], LassoPoint]:
    """LASSO path: fit NLL + lambda sum_R sqrt(F_R + eps) for each lambda (ascending).

    At each lambda the selected model keeps the resonances with F_R above
    ``threshold``; it is refitted without penalty (once per distinct
    selection) and scored by AIC = 2 s NLL + 2 k and BIC = 2 s NLL + k ln N
    (k free parameters, a floating background fraction included; s the
    likelihood scale of :func:`_refit_selection` and N = (sum w)^2 / sum w^2
    of the data weights: s = 1 and N the number of events for unit weights).

    Serially each lambda starts from the previous minimum. On a parallel
    executor every lambda is an independent fit from the card's values
    (points need not follow one branch of minima, see the module
    docstring), then the refits of the distinct selections run as tasks
    as well.

    Args:
        progress: called with each finished point (on a parallel executor
            once its selection's refit is done, in completion order).
        executor, workers, scheduler: as in :func:`scan_fraction`.
        background: an explicit background term (:func:`pwa.background.background_model`),
            in every fit of the path and every refit.

    Returns:
        (path in ascending lambda, the point with the smallest BIC).
    """
    check_executor(executor)
    if any(lam <= 0 for lam in lambdas):
        raise FitError("LASSO strengths must be positive")
    problem = FitProblem.build(model, data, mc, quadrature_panels=config.quadrature_panels,
                               gen_events=config.gen_events, gen_seed=config.gen_seed, background=background)
    configs = [replace(config, lasso=float(lam)) for lam in sorted(lambdas)]
    plain = replace(config, lasso=0.0, sf_lambda=0.0, starts=1)
    N = effective_size(data.weight_array)
    x0 = problem.initial_values()
    shared = (data, mc, plain, background)

    def selected_card(res: FitResult, keep: tuple[str, ...]) -> tuple[dict, str]:
        return _selected_card(model, problem.signal_parameters(res.values), keep)

    def point(cfg: FitConfig, res: FitResult, keep: tuple[str, ...], refit: tuple[float, int, float]) -> LassoPoint:
        nll_sel, k, scale = refit
        return LassoPoint(cfg.lasso, res, keep, nll_sel, k, 2 * scale * nll_sel + 2 * k,
                          2 * scale * nll_sel + k * np.log(N))

    path: list[LassoPoint | None] = [None] * len(configs)
    if executor == "serial":
        mz = problem.minimizer(configs[0])
        refits: dict[tuple[str, ...], tuple[float, int, float]] = {}
        x = x0
        for i, cfg in enumerate(configs):
            res = fit(model, None, None, cfg, problem=problem, x0=x, minimizer=mz)
            x = res.values
            keep = _selection(model, res, threshold)
            if keep not in refits:
                refits[keep] = _refit_selection(shared, selected_card(res, keep))
            path[i] = point(cfg, res, keep, refits[keep])
            if progress:
                progress(path[i])
    else:
        results = _fit_points(problem, configs, x0, executor=executor, workers=workers, scheduler=scheduler)
        keeps = [_selection(model, r, threshold) for r in results]
        distinct = list(dict.fromkeys(keeps))
        first = [keeps.index(keep) for keep in distinct]

        def refitted(j: int, refit: tuple[float, int, float]) -> None:
            for i, keep in enumerate(keeps):
                if keep == distinct[j]:
                    path[i] = point(configs[i], results[i], keep, refit)
                    if progress:
                        progress(path[i])

        map_tasks(_refit_selection, [selected_card(results[i], keeps[i]) for i in first],
                  executor=executor, workers=workers, scheduler=scheduler, on_result=refitted,
                  shared=shared)
    best = min(path, key=lambda p: p.bic)
    return path, best


def plot_fraction_scan(points: Sequence[ScanPoint], path) -> None:
    """NLL (plain, relative to its minimum) against the fitted SF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsim.events import atomic_path

    sf = np.array([100 * p.result.sum_of_fractions for p in points])
    nll = np.array([p.result.nll for p in points])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sf, nll - nll.min(), "o-")
    for p, s, v in zip(points, sf, nll - nll.min()):
        ax.annotate(f"{100 * p.setting:.0f}", (s, v), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("SF (%)")
    ax.set_ylabel(r"NLL $-$ NLL$_{min}$")
    ax.set_title("fraction scan (labels: SF target %)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_lasso_path(path_points: Sequence[LassoPoint], best: LassoPoint, path) -> None:
    """Every F_R against lambda (log-log), the BIC-selected lambda marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsim.events import atomic_path

    lam = np.array([p.lam for p in path_points])
    names = path_points[0].result.resonance_names
    fig, (ax, axb) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    for i, n in enumerate(names):
        f = np.array([max(p.result.fractions[i, i], 1e-7) for p in path_points])
        ax.plot(lam, 100 * f, "o-", ms=3, label=n)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("F (%)")
    ax.axvline(best.lam, color="k", ls=":")
    ax.legend(fontsize=7, ncol=2, frameon=False)
    axb.plot(lam, [p.bic - best.bic for p in path_points], "s-", label="BIC")
    axb.plot(lam, [p.aic - min(q.aic for q in path_points) for p in path_points], "^-", label="AIC")
    axb.set_xlabel(r"LASSO $\lambda$")
    axb.set_ylabel(r"$\Delta$IC")
    axb.legend(frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
