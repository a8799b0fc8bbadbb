"""Minimisers with exact autodiff gradients and Hessians.

An objective is a pure JAX function ``f(p) -> scalar`` of the free physical
parameter vector p (float64, shape (n_par,)). Parameters with bounds are
mapped to an unconstrained internal vector u for the minimiser (Minuit's
sine transform, p = lo + (hi - lo) (sin u + 1) / 2; a one-sided bound uses
sqrt((u^2 + 1)) as Minuit does); values, the Hessian and all errors are
reported in the physical parameters, evaluated at the minimum.

Optimisers register themselves in :data:`OPTIMIZERS`; each takes the
internal objective with its exact gradient and Hessian.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from .errors import FitError

Bounds = Sequence[tuple[float | None, float | None] | None]


# ---------------------------------------------------------------------------
# Bounds transform
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BoundsTransform:
    """Map between physical p and internal unconstrained u, per parameter."""

    lower: np.ndarray  # -inf where unbounded
    upper: np.ndarray  # +inf where unbounded

    @classmethod
    def from_bounds(cls, bounds: Bounds | None, n: int) -> "BoundsTransform":
        lo = np.full(n, -np.inf)
        hi = np.full(n, np.inf)
        for i, b in enumerate(bounds or []):
            if b is None:
                continue
            lo[i] = -np.inf if b[0] is None else float(b[0])
            hi[i] = np.inf if b[1] is None else float(b[1])
            if not lo[i] < hi[i]:
                raise ValueError(f"parameter {i}: lower bound {lo[i]} is not below upper bound {hi[i]}")
        return cls(lo, hi)

    def to_physical(self, u: jnp.ndarray) -> jnp.ndarray:
        lo, hi = jnp.asarray(self.lower), jnp.asarray(self.upper)
        both = np.isfinite(self.lower) & np.isfinite(self.upper)
        only_lo = np.isfinite(self.lower) & ~np.isfinite(self.upper)
        only_hi = ~np.isfinite(self.lower) & np.isfinite(self.upper)
        lo0 = jnp.where(np.isfinite(self.lower), lo, 0.0)
        hi0 = jnp.where(np.isfinite(self.upper), hi, 0.0)
        p = u
        p = jnp.where(both, lo0 + (hi0 - lo0) * (jnp.sin(u) + 1.0) / 2.0, p)
        p = jnp.where(only_lo, lo0 - 1.0 + jnp.sqrt(u * u + 1.0), p)
        p = jnp.where(only_hi, hi0 + 1.0 - jnp.sqrt(u * u + 1.0), p)
        return p

    def to_internal(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        u = p.copy()
        for i in range(p.size):
            lo, hi = self.lower[i], self.upper[i]
            if np.isfinite(lo) and np.isfinite(hi):
                x = np.clip(2.0 * (p[i] - lo) / (hi - lo) - 1.0, -1.0, 1.0)
                u[i] = math.asin(x)
            elif np.isfinite(lo):
                u[i] = math.sqrt(max((p[i] - lo + 1.0) ** 2 - 1.0, 0.0))
            elif np.isfinite(hi):
                u[i] = math.sqrt(max((hi - p[i] + 1.0) ** 2 - 1.0, 0.0))
        return u

    def at_limit(self, p: np.ndarray, rel: float = 1e-6) -> np.ndarray:
        """Parameters sitting on a bound (their Hessian error is not meaningful)."""
        span = np.where(np.isfinite(self.upper - self.lower), self.upper - self.lower, 1.0)
        return (np.abs(p - self.lower) < rel * span) | (np.abs(self.upper - p) < rel * span)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MinimizeResult:
    """Outcome of one minimisation, in physical parameters.

    Attributes:
        x: (n_par,) parameter values at the minimum.
        fun: objective value there.
        converged: optimiser success and EDM below tolerance and a
            positive-definite Hessian.
        edm: estimated distance to minimum, g^T H^-1 g / 2 (Minuit's EDM).
        hessian: (n_par, n_par) exact Hessian at x.
        covariance: inverse Hessian (pseudo-inverse if singular), errors = sqrt(diag).
        hessian_eigenvalues: ascending; a non-positive one means no proper minimum.
        gradient: (n_par,) gradient at x.
        n_iterations, n_evaluations: optimiser counters.
        optimizer, message: what ran and what it said.
        wall_time: seconds.
        at_limit: (n_par,) bool, parameters sitting on a bound.
    """

    x: np.ndarray
    fun: float
    converged: bool
    edm: float
    hessian: np.ndarray
    covariance: np.ndarray
    hessian_eigenvalues: np.ndarray
    gradient: np.ndarray
    n_iterations: int
    n_evaluations: int
    optimizer: str
    message: str
    wall_time: float
    at_limit: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def errors(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    @property
    def positive_definite(self) -> bool:
        return bool(self.hessian_eigenvalues.size and self.hessian_eigenvalues[0] > 0)

    @property
    def correlation(self) -> np.ndarray:
        e = self.errors
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.covariance / np.outer(e, e)
        return np.where(np.outer(e, e) > 0, c, 0.0)


def hessian_summary(hess: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(covariance, eigenvalues, edm) from an exact Hessian and gradient."""
    hess = 0.5 * (hess + hess.T)
    eig = np.linalg.eigvalsh(hess)
    if eig[0] > 0:
        cov = np.linalg.inv(hess)
    else:
        cov = np.linalg.pinv(hess)
    edm = float(0.5 * grad @ cov @ grad)
    return cov, eig, abs(edm)


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------

#: name -> function(fun, grad, hess, u0, max_iter) -> (u, n_iter, n_eval, success, message)
OPTIMIZERS: dict[str, Callable] = {}


def register_optimizer(name: str):
    def deco(fn):
        OPTIMIZERS[name] = fn
        return fn
    return deco


def _scipy(method: str):
    def run(fun, grad, hess, u0, max_iter):
        from scipy.optimize import minimize

        kw: dict = {"jac": grad}
        if method in ("trust-exact", "trust-ncg", "Newton-CG", "trust-krylov"):
            kw["hess"] = hess
        opts = {"maxiter": max_iter}
        if method == "BFGS":
            opts["gtol"] = 1e-6
        if method == "L-BFGS-B":
            opts.update(ftol=1e-14, gtol=1e-8)
        if method in ("trust-exact", "trust-ncg", "trust-krylov"):
            opts["gtol"] = 1e-6
        res = minimize(fun, u0, method=method, options=opts, **kw)
        return res.x, int(res.get("nit", 0)), int(res.get("nfev", 0)), bool(res.success), str(res.message)
    return run


for _m in ("BFGS", "L-BFGS-B", "trust-exact", "trust-ncg", "Newton-CG", "trust-krylov"):
    register_optimizer(_m)(_scipy(_m))


@register_optimizer("minuit")
def _minuit(fun, grad, hess, u0, max_iter):
    try:
        from iminuit import Minuit
    except ImportError:  # pragma: no cover - optional extra
        raise FitError("optimizer 'minuit' needs iminuit: pip install 'pwa-fastsim[minuit]'") from None
    m = Minuit(fun, u0, grad=grad)
    m.errordef = Minuit.LIKELIHOOD
    m.strategy = 1
    m.migrad(ncall=max_iter * 20)
    return (np.array(m.values), int(m.fmin.nfcn), int(m.fmin.nfcn), bool(m.fmin.is_valid),
            "MIGRAD valid minimum" if m.fmin.is_valid else "MIGRAD: invalid minimum")


DEFAULT_OPTIMIZER = "trust-exact"


#: Hessian columns computed together: bounds the memory of forward-over-reverse
#: to this many tangents of the per-event intermediates (a full jax.hessian
#: keeps all n_par at once: 30 GB for 38 parameters and 420,000 events).
HESSIAN_BATCH = 8


def batched_hessian(f: Callable[..., jnp.ndarray], batch_size: int = HESSIAN_BATCH) -> Callable:
    """Exact Hessian of ``f(p, *args)`` as forward-over-reverse, ``batch_size`` columns at a time."""
    grad = jax.grad(f)

    def hess(p, *args):
        def column(v):
            return jax.jvp(lambda q: grad(q, *args), (p,), (v,))[1]

        H = jax.lax.map(column, jnp.eye(p.shape[0], dtype=p.dtype), batch_size=batch_size)
        return 0.5 * (H + H.T)

    return hess


class Minimizer:
    """An objective with its compiled value, gradient and Hessian, reusable
    across many starts (nothing is recompiled between them).

    Args:
        objective: pure, differentiable ``f(p, *args) -> scalar`` of the
            physical parameters p, shape (n_par,).
        n_par: number of parameters.
        bounds: per parameter (lo, hi), None or a None side for unbounded.
        args: extra arguments of the objective (pytrees of arrays: the event
            caches), passed to the compiled functions at every call.
        hessian: ``h(p, *args)``, the exact Hessian of the objective in p
            (e.g. :class:`pwa.hessian.StructuredHessian`); default
            forward-over-reverse autodiff (:func:`batched_hessian`).
    """

    def __init__(self, objective: Callable[..., jnp.ndarray], n_par: int,
                 bounds: Bounds | None = None, args: tuple = (),
                 hessian: Callable[..., jnp.ndarray] | None = None) -> None:
        self.objective = objective
        self.n_par = n_par
        self.args = tuple(args)
        self.transform = tr = BoundsTransform.from_bounds(bounds, n_par)
        if hessian is None:
            hessian = batched_hessian(objective)

        # Only the objective's value-and-gradient and its Hessian are compiled, in the
        # physical parameters. The bounds transform p = T(u) is elementwise, so the
        # internal-space gradient and Hessian follow from them by the chain rule
        # (:meth:`internal`): no second Hessian program for the internal space. Data
        # arrays enter as arguments, never as closure constants: constants would be
        # baked into the XLA program (slow compiles, no cache reuse).
        self._vg = jax.jit(jax.value_and_grad(objective))
        self._hessian = jax.jit(hessian)

        def jets(u):
            ones = jnp.ones_like(u)
            p, dp = jax.jvp(tr.to_physical, (u,), (ones,))
            d2p = jax.jvp(lambda v: jax.jvp(tr.to_physical, (v,), (ones,))[1], (u,), (ones,))[1]
            return p, dp, d2p

        self._jets = jax.jit(jets)
        self._value = jax.jit(objective)  # compiled on first use: minimize() does not need it

    def value(self, p: jnp.ndarray) -> jnp.ndarray:
        return self._value(p, *self.args)

    def gradient(self, p: jnp.ndarray) -> jnp.ndarray:
        return self._vg(p, *self.args)[1]

    def hessian(self, p: jnp.ndarray) -> jnp.ndarray:
        return self._hessian(p, *self.args)

    def _at(self, u: np.ndarray) -> dict:
        """p = T(u), T', T'' and the objective's value and physical gradient at u."""
        p, dp, d2p = (np.asarray(a) for a in self._jets(jnp.asarray(u, dtype=jnp.float64)))
        v, g = self._vg(jnp.asarray(p), *self.args)
        return {"p": p, "dp": dp, "d2p": d2p, "value": float(v), "gradient": np.asarray(g)}

    def _internal_hessian(self, at: dict) -> np.ndarray:
        # p = T(u) elementwise: d2f/du2 = T' H T' + diag(df/dp T'').
        H = np.asarray(self._hessian(jnp.asarray(at["p"]), *self.args))
        dp = at["dp"]
        return dp[:, None] * H * dp[None, :] + np.diag(at["gradient"] * at["d2p"])

    def internal(self, u: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(value, gradient, Hessian) of the objective in the internal (unbounded) space at u,
        by the chain rule from the physical gradient and Hessian (df/du = T' df/dp)."""
        at = self._at(u)
        return at["value"], at["gradient"] * at["dp"], self._internal_hessian(at)

    def minimize(self, x0: np.ndarray, *, optimizer: str = DEFAULT_OPTIMIZER, max_iter: int = 2000,
                 edm_tolerance: float = 1e-4, newton_polish: bool = True) -> MinimizeResult:
        """Minimise from x0.

        Args:
            x0: (n_par,) starting values, inside the bounds.
            optimizer: a key of :data:`OPTIMIZERS`.
            max_iter: iteration limit of the optimiser.
            edm_tolerance: convergence requires EDM below this (NLL units).
            newton_polish: after the optimiser, take exact-Newton steps (at
                most 10, each accepted only if it lowers f) while the Hessian
                is positive definite and the EDM is above 1e-3 * edm_tolerance.

        Returns:
            :class:`MinimizeResult` with the exact Hessian at the minimum.
        """
        if optimizer not in OPTIMIZERS:
            raise FitError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        tr = self.transform
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape != (self.n_par,):
            raise FitError(f"start vector has shape {x0.shape}, expected ({self.n_par},)")
        if np.any(x0 < tr.lower) or np.any(x0 > tr.upper):
            bad = np.flatnonzero((x0 < tr.lower) | (x0 > tr.upper))
            raise FitError(f"start values outside their bounds for parameter index(es) {bad.tolist()}")
        counter = {"n": 0}

        last: dict = {}  # the latest point: optimisers ask for value, gradient and Hessian at one u

        def at(u):
            key = np.asarray(u, dtype=np.float64).tobytes()
            if last.get("key") != key:
                last.clear()
                last.update(self._at(u), key=key)
            return last

        def fun(u):
            counter["n"] += 1
            v = at(u)["value"]
            return v if np.isfinite(v) else 1e300

        def grad(u):
            pt = at(u)
            g = pt["gradient"] * pt["dp"]
            return np.where(np.isfinite(g), g, 0.0)

        def hess(u):
            return self._internal_hessian(at(u))

        u0 = tr.to_internal(x0)
        if fun(u0) >= 1e300:
            raise FitError("the objective is not finite at the start values")
        t0 = time.perf_counter()
        u, n_iter, n_eval, success, message = OPTIMIZERS[optimizer](fun, grad, hess, u0, max_iter)
        x = np.asarray(self._jets(jnp.asarray(u, dtype=jnp.float64))[0])
        if newton_polish:
            x = _newton_polish(lambda q: self._vg(q, *self.args)[0], self.gradient, self.hessian, x, tr,
                               edm_tolerance * 1e-3)
        xj = jnp.asarray(x)
        fval, g = self._vg(xj, *self.args)
        fval, g = float(fval), np.asarray(g)
        H = np.asarray(self.hessian(xj))
        cov, eig, edm = hessian_summary(H, g)
        wall = time.perf_counter() - t0
        converged = bool(np.isfinite(fval) and edm < edm_tolerance and eig[0] > 0)
        if not success and converged:
            message = f"{message} (accepted: EDM {edm:.2g} < {edm_tolerance:g}, Hessian positive definite)"
        return MinimizeResult(x=x, fun=fval, converged=converged, edm=edm, hessian=H, covariance=cov,
                              hessian_eigenvalues=eig, gradient=g, n_iterations=n_iter,
                              n_evaluations=max(n_eval, counter["n"]), optimizer=optimizer,
                              message=message, wall_time=wall, at_limit=tr.at_limit(x))

    def multi_start(self, starts: Sequence[np.ndarray], *, nll_tolerance: float = 1e-3,
                    **kwargs) -> tuple[MinimizeResult, list[MinimizeResult]]:
        """Minimise from every start, one after the other; see :func:`best_of_starts`.

        ``kwargs`` go to :meth:`minimize`. Starts whose fit raises are skipped
        (all failing raises FitError). To run the starts as parallel tasks,
        call :meth:`try_minimize` per start and combine with :func:`best_of_starts`.
        """
        return best_of_starts([self.try_minimize(x0, **kwargs) for x0 in starts], nll_tolerance=nll_tolerance)

    def try_minimize(self, x0: np.ndarray, **kwargs) -> MinimizeResult | FitError:
        """:meth:`minimize`, returning a FitError instead of raising it (one start of many)."""
        try:
            return self.minimize(x0, **kwargs)
        except FitError as exc:
            return exc


def best_of_starts(outcomes: Sequence[MinimizeResult | FitError], *, nll_tolerance: float = 1e-3
                   ) -> tuple[MinimizeResult, list[MinimizeResult]]:
    """The best minimum and the distinct minima of several starts.

    Args:
        outcomes: per start, its :class:`MinimizeResult` or the FitError it
            raised (failed starts are skipped), in start order.
        nll_tolerance: minima are distinct when their objective values differ
            by more than this.

    Returns:
        (best: the converged result with the lowest objective, or the lowest
        objective if none converged; one representative of each distinct
        minimum, sorted by objective value).

    Raises:
        FitError: every start failed (naming the first failure).
    """
    results = [r for r in outcomes if isinstance(r, MinimizeResult)]
    if not results:
        errors = [str(r) for r in outcomes]
        raise FitError(f"every start failed: {errors[0] if errors else 'no start given'}")
    results.sort(key=lambda r: (not r.converged, r.fun))
    finite = sorted([r for r in results if np.isfinite(r.fun)], key=lambda r: r.fun)
    distinct: list[MinimizeResult] = []
    for r in finite:
        if not distinct or r.fun - distinct[-1].fun > nll_tolerance:
            distinct.append(r)
    return results[0], distinct


def minimize(objective: Callable[[jnp.ndarray], jnp.ndarray], x0: np.ndarray, *,
             bounds: Bounds | None = None, **kwargs) -> MinimizeResult:
    """One minimisation of ``objective`` from x0 (see :meth:`Minimizer.minimize`)."""
    x0 = np.asarray(x0, dtype=np.float64)
    return Minimizer(objective, x0.size, bounds).minimize(x0, **kwargs)


def _newton_polish(f, g, h, x, tr: BoundsTransform, edm_target: float, steps: int = 10) -> np.ndarray:
    fx = float(f(jnp.asarray(x)))
    for _ in range(steps):
        gx = np.asarray(g(jnp.asarray(x)))
        H = np.asarray(h(jnp.asarray(x)))
        try:
            L = np.linalg.cholesky(0.5 * (H + H.T))
        except np.linalg.LinAlgError:
            break
        step = np.linalg.solve(L.T, np.linalg.solve(L, gx))
        if 0.5 * gx @ step < edm_target:
            break
        xn = np.clip(x - step, tr.lower, tr.upper)
        fn = float(f(jnp.asarray(xn)))
        if not fn < fx:
            break
        x, fx = xn, fn
    return x


# ---------------------------------------------------------------------------
# Error propagation
# ---------------------------------------------------------------------------

def propagate(fn: Callable[[jnp.ndarray], jnp.ndarray], x: np.ndarray,
              covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, covariance and Jacobian of a derived quantity, sigma^2 = J V J^T.

    Args:
        fn: differentiable function of the parameter vector (any output shape).
        x: (n_par,) parameters.
        covariance: (n_par, n_par).

    Returns:
        (value, covariance of the flattened value, Jacobian (n_out, n_par)).
    """
    xj = jnp.asarray(x)
    val = np.asarray(fn(xj))
    J = np.asarray(jax.jacfwd(lambda p: jnp.ravel(fn(p)))(xj))
    return val, J @ covariance @ J.T, J


def propagate_fractions(fractions: Callable[[jnp.ndarray], jnp.ndarray], x: np.ndarray,
                        covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Fit-fraction matrix with errors propagated from a parameter covariance.

    Args:
        fractions: p -> (n_res, n_res) fit-fraction matrix (F_R on the diagonal).
        x: (n_par,) parameters.
        covariance: (n_par, n_par).

    Returns:
        (F (n_res, n_res), errors of F (n_res, n_res), SF = trace F, error of SF
        with the correlations of the diagonal fractions).
    """
    F, Fcov, _ = propagate(fractions, x, covariance)
    return fraction_summary(F, Fcov)


def fraction_summary(F: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(F, errors of F, SF, error of SF) from F (n_res, n_res) and the covariance of its flattened entries."""
    F = np.asarray(F)
    n = F.shape[0]
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None)).reshape(n, n)
    diag = np.arange(n) * (n + 1)  # flat indices of F_RR
    sf_var = float(np.asarray(covariance)[np.ix_(diag, diag)].sum())
    return F, errors, float(np.trace(F)), float(np.sqrt(max(sf_var, 0.0)))


def to_jsonable(obj):
    """numpy-aware conversion for ``json.dumps``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(obj) -> str:
    return json.dumps(to_jsonable(obj), indent=2)
