"""Profile-likelihood (MINOS-like) intervals of parameters and fit fractions.

The Hessian error assumes a parabolic NLL. A profile interval does not: for
a quantity q (a fit parameter, or a fit fraction F_R) the profiled

    Delta(v) = min over the other parameters of NLL at q = v, minus NLL_min

is followed on each side of the fitted value until it reaches ``delta``
(0.5 for 68.3 % with one parameter), and the crossing is found by Brent's
method. A parameter is fixed by substitution (the minimiser runs over the
others, one compiled program for every v); a fraction is held by a stiff
quadratic penalty (kappa / 2) ((F_R - v) / sigma_F)^2 with kappa =
:data:`FRACTION_STIFFNESS`, which holds F_R to about sigma_F / kappa^(1/2)
of v, and Delta is the plain NLL at that minimum. Each point starts from
the nearest point already profiled.

A side that does not reach ``delta`` within :data:`MAX_SIGMAS` Hessian errors,
or that meets a parameter's bound, is reported open (``None``) with the
reason, rather than invented. Weighted data: the NLL is scaled by sum w / sum w^2
(:func:`pwa.problem.likelihood_scale`) before comparing with ``delta``, as the
significance does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from .errors import FitError
from .fit_result import FitConfig, FitResult
from .optimize import Minimizer
from .problem import FitProblem, likelihood_scale

#: The penalty strength that holds a fraction at its profiled value.
FRACTION_STIFFNESS = 1e4
#: A side is followed to at most this many Hessian errors.
MAX_SIGMAS = 8.0


@dataclass(frozen=True)
class ProfileInterval:
    """A profile-likelihood interval: [lower, upper] where Delta NLL <= delta.

    Attributes:
        quantity: a parameter name, or ``"F(<resonance>)"``.
        value: the fitted value.
        lower, upper: the crossings, or None for an open side.
        hessian_error: the quantity's error from the fit's covariance.
        delta: the Delta NLL of the interval.
        notes: why a side is open.
        points: (v, Delta NLL) pairs that were evaluated.
    """

    quantity: str
    value: float
    lower: float | None
    upper: float | None
    hessian_error: float
    delta: float
    notes: tuple[str, ...] = ()
    points: tuple[tuple[float, float], ...] = field(default=(), repr=False)

    @property
    def minus(self) -> float | None:
        return None if self.lower is None else self.value - self.lower

    @property
    def plus(self) -> float | None:
        return None if self.upper is None else self.upper - self.value

    def to_dict(self) -> dict:
        return {"value": self.value, "lower": self.lower, "upper": self.upper, "minus": self.minus,
                "plus": self.plus, "hessian_error": self.hessian_error, "delta_nll": self.delta,
                "notes": list(self.notes), "points": [list(p) for p in self.points]}

    def __str__(self) -> str:
        fmt = lambda v: "open" if v is None else f"{v:.4g}"  # noqa: E731
        return (f"{self.quantity:<28} {self.value:12.6g}  -{fmt(self.minus)} +{fmt(self.plus)}  "
                f"(Hessian {self.hessian_error:.4g})")


class _Profile:
    """Delta NLL at fixed q = v, minimised over the rest; one compiled minimiser."""

    def __init__(self, problem: FitProblem, result: FitResult, quantity: str, config: FitConfig):
        names = list(problem.parameter_names)
        f = problem.objective(config)
        args = problem.arguments(config)
        self.scale = likelihood_scale(np.asarray(problem.data_cache.weights))
        self.nll_min = float(result.nll)
        self.options = {"optimizer": config.optimizer, "max_iter": config.max_iter,
                        "edm_tolerance": config.edm_tolerance}
        x = np.asarray(result.values, dtype=np.float64)
        if quantity in names:
            i = names.index(quantity)
            self.index = i
            keep = np.array([k for k in range(len(names)) if k != i])

            def fixed(y, v, *a):
                return f(jnp.insert(y, i, v), *a)

            bounds = [b for k, b in enumerate(problem.bounds) if k != i]
            self.bound = problem.bounds[i]
            self.minimizer = Minimizer(fixed, len(keep), bounds, args=(jnp.asarray(x[i]), *args))
            self.args = args
            self.start = x[keep]
            self.value, self.error = float(x[i]), float(result.errors[i])
            self.penalised = False
        elif quantity.startswith("F(") and quantity.endswith(")") and quantity[2:-1] in result.resonance_names:
            r = list(result.resonance_names).index(quantity[2:-1])
            self.value, self.error = float(result.fractions[r, r]), float(result.fraction_errors[r, r])
            if not self.error > 0:
                raise FitError(f"{quantity} has no error to scale the profile by")
            model, signal = problem.model, problem.signal_parameters
            kappa, s = FRACTION_STIFFNESS, self.error

            def penalised(p, v, *a):
                F = model.fit_fractions(signal(p), a[2])  # a = (data, mc, gen, hyper, *background)
                return f(p, *a) + 0.5 * kappa * ((F[r, r] - v) / s) ** 2

            self.index, self.bound = None, (0.0, None)
            self.minimizer = Minimizer(penalised, len(names), problem.bounds, args=(jnp.asarray(self.value), *args))
            self.args, self.start = args, x
            self.nll = lambda p: float(f(jnp.asarray(p), *args))  # noqa: E731
            self.penalised = True
        else:
            raise FitError(f"profile: {quantity!r} is neither a fit parameter ({', '.join(names)}) nor a fit "
                           f"fraction F(<resonance>) of {', '.join(result.resonance_names)}")

    def delta(self, v: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """(scaled Delta NLL at q = v, the minimising vector of the free parameters)."""
        self.minimizer.args = (jnp.asarray(v, dtype=jnp.float64), *self.args)
        res = self.minimizer.minimize(start, **self.options)
        nll = self.nll(res.x) if self.penalised else float(res.fun)
        return self.scale * (nll - self.nll_min), res.x


def profile_interval(problem: FitProblem, result: FitResult, quantity: str, config: FitConfig = FitConfig(),
                     *, delta: float = 0.5) -> ProfileInterval:
    """The profile-likelihood interval of one parameter or fit fraction (module docstring).

    Args:
        problem: the fit's problem.
        result: its plain-NLL fit (no fraction-sum or LASSO term).
        quantity: a name of ``problem.parameter_names`` or ``"F(<resonance>)"``.
        config: options of the profile minimisations.
        delta: Delta NLL of the interval (0.5: one sigma; 2.0: two).
    """
    if config.sf_lambda or config.lasso:
        raise FitError("profile intervals are of the plain NLL: switch off --sf-lambda and --lasso")
    if not result.converged:
        raise FitError("profile intervals need a converged fit")
    prof = _Profile(problem, result, quantity, config)
    if not prof.error > 0:
        raise FitError(f"profile: {quantity} has no Hessian error (held at a bound?)")
    points = [(prof.value, 0.0)]
    ends, notes = [], []
    for side in (-1.0, 1.0):
        lo, hi = prof.bound
        start, prev_v, prev_d = prof.start, prof.value, 0.0
        end = None
        k = 0.5
        while k <= MAX_SIGMAS:
            v = prof.value + side * k * prof.error
            edge = lo if side < 0 else hi
            if edge is not None and (v - edge) * side >= 0:
                notes.append(f"{'lower' if side < 0 else 'upper'} side: reaches the bound {edge:g} "
                             f"before Delta NLL = {delta:g}")
                break
            try:
                d, y = prof.delta(v, start)
            except FitError as exc:
                notes.append(f"{'lower' if side < 0 else 'upper'} side: minimisation failed at {v:.6g} ({exc})")
                break
            points.append((v, d))
            if d >= delta:
                cache = {v: (d, y)}

                def g(u, y0=start):
                    if u in cache:
                        return cache[u][0] - delta
                    du, _ = prof.delta(u, y0)
                    return du - delta

                end = brentq(g, prev_v, v, xtol=1e-4 * prof.error) if prev_d < delta else v
                break
            start, prev_v, prev_d = y, v, d
            k += 0.5
        else:
            notes.append(f"{'lower' if side < 0 else 'upper'} side: Delta NLL stays below {delta:g} within "
                         f"{MAX_SIGMAS:g} Hessian errors")
        ends.append(end)
    return ProfileInterval(quantity, prof.value, ends[0], ends[1], prof.error, float(delta), tuple(notes),
                           tuple(sorted(points)))


__all__ = ["FRACTION_STIFFNESS", "MAX_SIGMAS", "ProfileInterval", "profile_interval"]
