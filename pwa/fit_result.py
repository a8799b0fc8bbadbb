"""The value objects of a fit: its options and its outcome.

:class:`FitConfig` (what to fit, how), :class:`FitResult` (values, errors,
covariance, fractions; prints like Minuit's table, serialises with
:meth:`FitResult.to_json`) and :class:`Significance` (one resonance's
likelihood-ratio test, :func:`pwa.fit.significances`).
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
    diagonal and interference fractions off it. ``warnings``: one line each
    about statistics that may not be right although the fit converged (e.g.
    fewer effective data events than free parameters); printed after the
    table, one ``warning: ...`` line each, and listed in ``to_dict()["warnings"]``.
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
            "warnings": list(self.warnings),
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
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


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
