"""The value objects of a fit: its options and its outcome.

:class:`FitConfig` (what to fit, how), :class:`FitResult` (values, errors,
covariance, fractions; prints like Minuit's table, serialises with
:meth:`FitResult.to_json`), :class:`Minimum` (one distinct minimum of a
multi-start fit) and :class:`Significance` (one resonance's likelihood-ratio
test, :func:`pwa.fit.significances`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .optimize import DEFAULT_OPTIMIZER, dumps


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
        coarse_mc: with several starts and a floating lineshape parameter,
            minimise every start first with about this many MC events (every
            k-th one), then from there with the full MC (:func:`pwa.fit.fit`);
            0: no coarse stage. An iteration of the coarse stage costs about
            coarse_mc / n_mc of a full one; it only moves the starts, the
            minima are the full MC's.
        refine: how many starts, those of the lowest coarse objective, go on
            to the full MC (0: all); the others are counted in
            :attr:`FitResult.unrefined_starts`.
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
    coarse_mc: int = 0
    refine: int = 0


#: Starts whose final objectives differ by at most this (NLL units) ended in the same minimum: a
#: start reaches its minimum to within its EDM (1e-4 by default), and two minima closer than
#: this are not told apart by the data anyway.
MINIMA_TOLERANCE = 0.01


#: Largest Newton shift to the exact minimum, in units of a parameter's error, at which the
#: minimum of a binned normalisation is kept (:func:`pwa.fit.exact_check`).
EXACT_SHIFT_TOLERANCE = 0.01


@dataclass(frozen=True)
class BinnedCheck:
    """A binned normalisation's minimum against the exact per-event sum (:func:`pwa.fit.exact_check`).

    Attributes:
        objective_binned, objective_exact: the objective at the binned minimum, both ways.
        max_shift_sigma: the largest component of the exact objective's Newton
            shift H^-1 g there, in units of that parameter's error.
        worst_parameter: the parameter of that component.
        tolerance: the shift accepted without a refit.
        refit_iterations: iterations of the exact refit from the binned
            minimum, None when the shift was within the tolerance.
        refit_objective: the exact objective at the refit's minimum, or None.
    """

    objective_binned: float
    objective_exact: float
    max_shift_sigma: float
    worst_parameter: str
    tolerance: float
    refit_iterations: int | None = None
    refit_objective: float | None = None

    @property
    def refitted(self) -> bool:
        return self.refit_iterations is not None

    def warnings(self) -> tuple[str, ...]:
        if not self.refitted:
            return ()
        return (f"the binned normalisation's minimum was {self.max_shift_sigma:.3g} sigma ({self.worst_parameter}) "
                f"from the exact MC sum's (objective {self.objective_binned:.3f} binned, "
                f"{self.objective_exact:.3f} exact there): refitted with the exact sum from it "
                f"({self.refit_iterations} iterations, objective {self.refit_objective:.3f}); more bins "
                f"(--binned-mc) or a width bound above the bins' mass resolution keep the binned fit exact",)

    def __str__(self) -> str:
        what = (f"refitted with the exact sum ({self.refit_iterations} iterations)" if self.refitted
                else f"within {self.tolerance:g} sigma: kept")
        return (f"binned normalisation: exact-sum Newton shift {self.max_shift_sigma:.2g} sigma "
                f"({self.worst_parameter}) at its minimum, {what}")


@dataclass(frozen=True)
class Minimum:
    """One distinct minimum of a multi-start fit (:func:`pwa.fit.distinct_minima`).

    Starts whose final objective lies within the tolerance (0.01 by default,
    :data:`MINIMA_TOLERANCE`) of a minimum's lowest one ended in the
    same minimum.

    Attributes:
        objective: the lowest objective (NLL~) of its starts.
        nll: the plain NLL there (the objective without penalties).
        n_starts: how many starts ended in it.
        n_converged: how many of those converged.
        converged: whether its lowest start converged.
        starts: indices of those starts (0 = the card's values).
    """

    objective: float
    nll: float
    n_starts: int
    n_converged: int
    converged: bool
    starts: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"nll": self.nll, "objective": self.objective, "n_starts": self.n_starts,
                "n_converged": self.n_converged, "converged": self.converged, "starts": list(self.starts)}


@dataclass(frozen=True)
class FitResult:
    """Outcome of a fit, in physical parameters, printable and serialisable.

    Array shapes: ``values``/``errors`` (n_free,), ``covariance`` (n_free,
    n_free), ``fractions``/``fraction_errors`` (n_res, n_res) with F_R on the
    diagonal and interference fractions off it. ``warnings``: one line each
    about results that may not be right although the fit converged (fewer
    effective data events than free parameters, a parameter that ended on a
    bound, a resonance whose couplings all vanished); printed after the
    table, one ``warning: ...`` line each, and listed in ``to_dict()["warnings"]``.

    ``minima``: (objective, converged) of each distinct minimum, lowest first;
    ``distinct_minima``: the same minima with how many starts ended in each
    (:class:`Minimum`; empty for a result that did not come from starts, e.g.
    a joint fit), ``failed_starts`` the starts that raised and
    ``unrefined_starts`` those that a coarse stage did not refine
    (``config.refine``), so that the counts plus both add up to ``config.starts``.
    ``binned_check``: for a fit with a binned normalisation, its minimum
    checked against the exact MC sum (:class:`BinnedCheck`); the NLL, objective,
    EDM and fractions are then the exact sum's.
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
    warnings: tuple[str, ...] = ()
    distinct_minima: tuple[Minimum, ...] = ()
    failed_starts: int = 0
    unrefined_starts: int = 0
    binned_check: BinnedCheck | None = None

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
            "distinct_minima": ([m.to_dict() for m in self.distinct_minima] if self.distinct_minima
                                else [{"nll": f, "converged": c} for f, c in self.minima]),
            "failed_starts": self.failed_starts,
            "unrefined_starts": self.unrefined_starts,
            "wall_time_s": self.wall_time,
            "config": asdict(self.config),
            "warnings": list(self.warnings),
            **({"binned_check": asdict(self.binned_check)} if self.binned_check else {}),
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
        if self.distinct_minima and (len(self.distinct_minima) > 1 or self.config.starts > 1):
            lines.append("  distinct minima (NLL~): " + minima_summary(self.distinct_minima, self.failed_starts,
                                                                        self.unrefined_starts))
        elif len(self.minima) > 1:
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
        if self.binned_check is not None:
            lines.append(f"  {self.binned_check}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def minima_summary(minima: tuple[Minimum, ...], failed_starts: int = 0, unrefined_starts: int = 0) -> str:
    """One line: each minimum's objective (NLL~), above the best, and its starts, e.g.
    ``-1234.567: 4 of 5 starts (4 converged); -1230.012 (+4.555): 1 of 5 starts (0 converged)``."""
    n = sum(m.n_starts for m in minima) + failed_starts + unrefined_starts
    best = minima[0].objective if minima else 0.0
    parts = [f"{m.objective:.3f}{f' ({m.objective - best:+.3f})' if i else ''}: {m.n_starts} of {n} "
             f"start{'s' if n != 1 else ''} ({m.n_converged} converged)" for i, m in enumerate(minima)]
    if failed_starts:
        parts.append(f"{failed_starts} of {n} failed")
    if unrefined_starts:
        parts.append(f"{unrefined_starts} of {n} stopped after the coarse stage")
    return "; ".join(parts)


@dataclass(frozen=True)
class Significance:
    """Significance of one resonance from a refit without it (Wilks)."""

    resonance: str
    delta_nll: float
    n_parameters: int
    p_value: float
    sigma: float
    converged: bool
    #: How delta_nll became p: "Wilks" (unweighted data), or for weighted data the
    #: sandwich-calibrated test (pwa.weighted_stats), delta_nll then being the chi2_k
    #: equivalent of its p-value.
    method: str = "Wilks"

    def to_dict(self) -> dict:
        return asdict(self)
