"""Fraction scans and LASSO paths (PHYSICS.md section 4).

Both reuse one compiled objective for every point (the penalty strengths
are arguments) and warm-start each point from the previous minimum, which
follows a continuous branch of minima.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fastsim.events import Events

from .amplitude import Model
from .errors import FitError
from .fit import FitConfig, FitProblem, FitResult, fit


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
                  progress: Callable[[ScanPoint], None] | None = None) -> list[ScanPoint]:
    """Minimise NLL~ = NLL + lambda N (SF_target - SF)^2 for each SF_target.

    Args:
        problem: the fit problem (caches built once).
        targets: SF_target values (fractions, 1.15 = 115 %), scanned in order.
        config: fit options; ``sf_lambda`` must be positive.
        x0: start of the first point (default: the card's values).

    Returns:
        One :class:`ScanPoint` per target; plot ``nll`` against ``sum_of_fractions``.
    """
    if config.sf_lambda <= 0:
        raise FitError("a fraction scan needs a positive --sf-lambda")
    mz = problem.minimizer(replace(config, sf_target=float(targets[0])))
    x = problem.model.initial_values() if x0 is None else np.asarray(x0)
    points = []
    for t in targets:
        cfg = replace(config, sf_target=float(t))
        res = fit(problem.model, None, None, cfg, problem=problem, x0=x, minimizer=mz)
        x = res.values
        points.append(ScanPoint(float(t), res))
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


def lasso_scan(model: Model, data: Events, mc: Events, lambdas: Sequence[float], config: FitConfig,
               *, threshold: float = 1e-3,
               progress: Callable[[LassoPoint], None] | None = None) -> tuple[list[LassoPoint], LassoPoint]:
    """LASSO path: fit NLL + lambda sum_R sqrt(F_R + eps) for each lambda (ascending).

    At each lambda the selected model keeps the resonances with F_R above
    ``threshold``; it is refitted without penalty (once per distinct
    selection) and scored by AIC = 2 NLL + 2 k and BIC = 2 NLL + k ln N
    (k free parameters, N the sum of data weights).

    Returns:
        (path, the point with the smallest BIC).
    """
    if any(lam <= 0 for lam in lambdas):
        raise FitError("LASSO strengths must be positive")
    problem = FitProblem.build(model, data, mc, quadrature_panels=config.quadrature_panels)
    lasso_cfg = replace(config, lasso=float(lambdas[0]))
    mz = problem.minimizer(lasso_cfg)
    x = model.initial_values()
    refits: dict[tuple[str, ...], tuple[float, int]] = {}
    plain = replace(config, lasso=0.0, sf_lambda=0.0, starts=1)
    path = []
    for lam in sorted(lambdas):
        cfg = replace(config, lasso=float(lam))
        res = fit(model, None, None, cfg, problem=problem, x0=x, minimizer=mz)
        x = res.values
        keep = tuple(n for i, n in enumerate(model.resonance_names) if res.fractions[i, i] > threshold)
        if not keep:
            keep = (model.card.reference,)
        if keep not in refits:
            reduced = Model.from_card(model.card_at(res.values))
            for name in model.resonance_names:
                if name not in keep:
                    reduced = reduced.without(name)
            ref = fit(reduced, data, mc, plain)
            refits[keep] = (ref.nll, reduced.n_free)
        nll_sel, k = refits[keep]
        N = problem.sum_data_weights
        point = LassoPoint(float(lam), res, keep, nll_sel, k, 2 * nll_sel + 2 * k, 2 * nll_sel + k * np.log(N))
        path.append(point)
        if progress:
            progress(point)
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
