"""The normalisation sample's own statistical error on a fit (PHYSICS.md section 4).

The NLL's only term that reads the normalisation MC is

    W ln N(p),   N(p) = sum_j v_j I_j(p) / sum_j v_j,   W = sum_i w_i,

(:meth:`pwa.amplitude.Model.nll`), with I_j = I(x_j; p) and v_j the MC weights
(1 for conventional MC, flat / proposal for Breit-Wigner proposals, the
reweighting of a flow sample: every such sample is an i.i.d. draw of
(x_j, v_j) whose weighted mean estimates the phase-space average of I).
The sum of weights in the denominator does not depend on p, so it drops out
of every derivative; only the ratio

    g(p) = grad ln N(p) = sum_j v_j grad I_j / sum_j v_j I_j     (n_par,)

enters the score. It is a ratio of two sample means, so by the delta method
its sampling covariance over independent MC samples of M events is

    Cov[g] = (1/M) Cov_j[u_j],   u_j = v_j (grad I_j - I_j g) / b,
    b = (1/M) sum_j v_j I_j,

where the u_j have zero mean by construction (their sample mean is exactly
0 at the sample's own g). Estimated from the sample itself,

    Cov[g] ~= (1/M^2) sum_j u_j u_j^T = sum_j v_j^2 d_j d_j^T / (sum_j v_j I_j)^2,
    d_j = grad I_j - I_j g = I_j (grad ln I_j - g),

independent of how the weights are normalised (a common scale of v cancels).
The score of the NLL is W g - sum_i w_i grad ln I_i, so its MC part has the
covariance

    C = W^2 sum_j v_j^2 d_j d_j^T / (sum_j v_j I_j)^2            (n_par, n_par).

With a background term (:class:`pwa.background.BackgroundModel`) the NLL is
-sum_i w_i ln((1 - f_b) I_i / N + f_b B_i): ln N no longer enters as W ln N
alone, so the value of ln N fluctuates into the score as well as its
gradient. In general the score's MC fluctuation is J (delta ln N, delta g),
J = d(grad NLL)/d(ln N, g) by autodiff (:func:`score_sensitivity`; [0 | W 1]
for signal only), and (ln N, g) have the joint sample covariance of
:attr:`ScoreMoments.log_normalisation_covariance` (influence of event j on
ln N: v_j (I_j / sum v I - 1 / sum v)), so C = J Cov[ln N, g] J^T; for
signal only this is the C above. The background densities B_i are taken as
given: their own estimate (a classifier trained on the MC) is not included.

The minimum moves by delta p = -H^-1 delta(score) to first order, H the
Hessian of the minimised objective (the fraction-sum and LASSO penalties
read only the generator-level fraction cache, not the normalisation MC), so

    V_MC = H^-1 C H^-1.

H^-1 is the inverse Hessian also for weighted data, whose *data* errors use
the sandwich: pass it explicitly (:func:`mc_statistics_of_fit` chooses it
from a :class:`~pwa.fit_result.FitResult`). Parameters a fit held at a bound
have zero rows in H^-1 and so no MC error. Data and MC are independent
samples: the total covariance is V_data + V_MC. V_MC scales as 1/M at fixed
weight distribution. The Kish size (sum v)^2 / sum v^2 of the weights says
little about what a weighted sample is worth for the fit: the events enter
as v_j I_j (and d_j), so :attr:`MCStatistics.effective_normalisation_events`
(sum v I)^2 / sum (v I)^2 is reported as well; the covariance above needs
neither, it already weighs every event by what it contributes.

Fit fractions are integrals over the generator-level quadrature or MC of
the problem's fraction cache, which is independent of the normalisation
sample, so their MC errors follow from V_MC with the fraction Jacobian,
sigma^2 = J V_MC J^T (:func:`pwa.fraction_errors.propagate_model_fractions`).

The per-event gradients grad I_j come from forward-mode autodiff
(``jax.jacfwd`` of :meth:`~pwa.amplitude.Model.intensity`, any lineshapes,
fixed or floating) over fixed-size chunks of events (the last one padded
with zero weights), so one compiled program serves every chunk and the
memory is bounded by one chunk for any MC size. Each chunk returns only
its sums: sum v I, sum v grad I and the centred second moments about
g0 = grad ln N of the problem (exact algebra then recentres on the sample's
own g, so nothing cancels even for 10^7 events).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events

from .amplitude import Model
from .caches import EventCache
from .chunked import split_cache
from .errors import FitError
from .fit_result import FitResult
from .fraction_errors import propagate_model_fractions
from .problem import FitProblem, mixture_log_density
from .sharding import n_events, pad_cache

#: Events per chunk of the per-event gradients (R0: about 40 MB of cache and tangents per chunk).
DEFAULT_CHUNK = 20_000

#: The MC events handed in must reproduce the problem's N(p) to this relative precision.
NORMALISATION_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MCStatistics:
    """What the finite normalisation sample adds to a fit's errors (module docstring).

    Attributes:
        parameter_names: (n_free,) as the fit's.
        resonance_names: (n_res,) fit-fraction components.
        covariance: (n_free, n_free) V_MC = H^-1 C H^-1.
        errors: (n_free,) sqrt(diag V_MC).
        fractions: (n_res, n_res) fit fractions at p (diagonal F_R, off-diagonal F_RS).
        fraction_errors: (n_res, n_res) MC-statistics errors of ``fractions``.
        sum_of_fractions_error: MC-statistics error of SF.
        n_mc: events of the normalisation sample.
        effective_mc_events: Kish size (sum v)^2 / sum v^2 of its weights.
        effective_normalisation_events: E_I = (sum v I)^2 / sum (v I)^2 at p, the Kish
            size of the weights v_j I_j (the relative variance of N is 1/E_I - 1/M):
            what the sample is worth for the normalisation. It can exceed the Kish size
            of v by far (a Breit-Wigner proposal's far tails carry huge weights v but
            no intensity).
        score_covariance: (n_free, n_free) C, the MC covariance of the NLL's gradient.
    """

    parameter_names: tuple[str, ...]
    resonance_names: tuple[str, ...]
    covariance: np.ndarray
    errors: np.ndarray
    fractions: np.ndarray
    fraction_errors: np.ndarray
    sum_of_fractions_error: float
    n_mc: int
    effective_mc_events: float
    effective_normalisation_events: float
    score_covariance: np.ndarray

    def fraction_error(self, name: str) -> float:
        """MC-statistics error of one resonance's fit fraction."""
        i = self.resonance_names.index(name)
        return float(self.fraction_errors[i, i])

    def scaled_to(self, n_mc: int) -> "MCStatistics":
        """The same statistics extrapolated to a sample of ``n_mc`` events of the same kind
        (errors times sqrt(self.n_mc / n_mc), covariances times n_mc ratio): an estimate, not a fit."""
        r = self.n_mc / n_mc
        return dataclasses.replace(self, covariance=self.covariance * r, errors=self.errors * np.sqrt(r),
                                   fraction_errors=self.fraction_errors * np.sqrt(r),
                                   sum_of_fractions_error=self.sum_of_fractions_error * np.sqrt(r),
                                   n_mc=int(n_mc), effective_mc_events=self.effective_mc_events / r,
                                   effective_normalisation_events=self.effective_normalisation_events / r,
                                   score_covariance=self.score_covariance * r)

    def to_dict(self) -> dict:
        n = len(self.resonance_names)
        names = self.resonance_names
        return {
            "method": "delta method: V_MC = H^-1 C H^-1, C = W^2 sum_j v_j^2 d_j d_j^T / (sum_j v_j I_j)^2, "
                      "d_j = grad I_j - I_j grad ln N",
            "n_mc": self.n_mc,
            "effective_mc_events": self.effective_mc_events,
            "effective_normalisation_events": self.effective_normalisation_events,
            "scaling": "errors scale as 1/sqrt(n_mc)",
            "parameters": {name: {"error": e} for name, e in zip(self.parameter_names, self.errors)},
            "fractions": {name: {"error": self.fraction_errors[i, i]} for i, name in enumerate(names)},
            "interference_fractions": {f"{names[i]} x {names[j]}": {"error": self.fraction_errors[i, j]}
                                       for i in range(n) for j in range(i + 1, n)},
            "sum_of_fractions": {"error": self.sum_of_fractions_error},
            "covariance": self.covariance,
        }

    def __str__(self) -> str:
        w = max((len(n) for n in self.resonance_names), default=10)
        lines = [f"MC statistics: {self.n_mc} normalisation events (effective {self.effective_mc_events:.0f}; "
                 f"for the normalisation {self.effective_normalisation_events:.0f})",
                 f"  {'fit fraction':<{w}}  {'MC err (%)':>10}"]
        lines += [f"  {name:<{w}}  {100 * self.fraction_errors[i, i]:>10.3f}"
                  for i, name in enumerate(self.resonance_names)]
        lines.append(f"  {'SF':<{w}}  {100 * self.sum_of_fractions_error:>10.3f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ScoreMoments:
    """Sums over a normalisation sample that give the MC covariance of grad ln N.

    Attributes:
        n: events (padding excluded).
        sum_v, sum_v2: sum v_j, sum v_j^2.
        sum_vi: sum v_j I_j.
        sum_v2i2: sum (v_j I_j)^2.
        gradient: (n_par,) g = sum v_j grad I_j / sum v_j I_j = grad ln N.
        second: (n_par, n_par) sum_j v_j^2 d_j d_j^T, d_j = grad I_j - I_j g.
        sum_v2i: sum v_j^2 I_j.
        sum_v2id: (n_par,) sum v_j^2 I_j d_j.
        sum_v2d: (n_par,) sum v_j^2 d_j.
    """

    n: int
    sum_v: float
    sum_v2: float
    sum_vi: float
    sum_v2i2: float
    gradient: np.ndarray
    second: np.ndarray
    sum_v2i: float
    sum_v2id: np.ndarray
    sum_v2d: np.ndarray

    @property
    def gradient_covariance(self) -> np.ndarray:
        """(n_par, n_par) MC covariance of g = grad ln N, sum v^2 d d^T / (sum v I)^2."""
        return self.second / self.sum_vi**2

    @property
    def log_normalisation_covariance(self) -> np.ndarray:
        """(1 + n_par, 1 + n_par) joint MC covariance of (ln N, g = grad ln N).

        Influence of event j: a_j = v_j (I_j / sum v I - 1 / sum v) on ln N (its sum is
        exactly zero) and v_j d_j / sum v I on g; the covariance is the sum of their
        outer products.
        """
        svi, sv = self.sum_vi, self.sum_v
        var = self.sum_v2i2 / svi**2 - 2.0 * self.sum_v2i / (svi * sv) + self.sum_v2 / sv**2
        cross = (self.sum_v2id / svi - self.sum_v2d / sv) / svi
        out = np.empty((1 + cross.size, 1 + cross.size))
        out[0, 0], out[0, 1:], out[1:, 0] = var, cross, cross
        out[1:, 1:] = self.gradient_covariance
        return out

    @property
    def effective_size(self) -> float:
        """Kish size (sum v)^2 / sum v^2."""
        return self.sum_v**2 / self.sum_v2 if self.sum_v2 > 0 else 0.0

    @property
    def effective_normalisation_size(self) -> float:
        """(sum v I)^2 / sum (v I)^2: the Kish size of the weights v_j I_j."""
        return self.sum_vi**2 / self.sum_v2i2 if self.sum_v2i2 > 0 else 0.0


def intensity_gradients(model: Model, p: np.ndarray, cache: EventCache) -> tuple[np.ndarray, np.ndarray]:
    """(I (n,), grad I (n, n_par)) per event at free parameters p, by forward-mode autodiff."""
    I, dI = _compiled_gradients(model)(jnp.asarray(p, dtype=jnp.float64), cache)
    return np.asarray(I), np.asarray(dI)


@lru_cache(maxsize=8)
def _compiled_gradients(model: Model):
    def f(p, cache):
        return model.intensity(p, cache), jax.jacfwd(model.intensity)(p, cache)

    return jax.jit(f)


@lru_cache(maxsize=8)
def _compiled_chunk_sums(model: Model):
    """One jitted program per model: a chunk's sums, the second moments centred on g0."""

    def f(p, g0, cache):
        I = model.intensity(p, cache)
        dI = jax.jacfwd(model.intensity)(p, cache)  # (n, n_par)
        v = cache.weights
        v2 = v * v
        e = dI - I[:, None] * g0[None, :]
        return {"sum_v": jnp.sum(v), "sum_v2": jnp.sum(v2), "sum_vi": jnp.sum(v * I), "sum_vdi": v @ dI,
                "A": (e * v2[:, None]).T @ e, "b": (v2 * I) @ e, "c": jnp.sum(v2 * I * I),
                "sum_v2i": jnp.sum(v2 * I), "sum_v2e": v2 @ e}

    return jax.jit(f)


def score_moments(model: Model, p: np.ndarray, chunks: Iterable[tuple[EventCache, int]],
                  center: np.ndarray | None = None) -> ScoreMoments:
    """Accumulate :class:`ScoreMoments` over chunks of a normalisation sample.

    Args:
        model: the model.
        p: (n_par,) free parameters.
        chunks: (event cache of one chunk, number of real events in it): caches of
            equal size, padded with zero weights (:func:`iter_chunks`).
        center: (n_par,) a first guess of g (e.g. grad ln N of the whole sample), around
            which the second moments are summed; default zero. Any value gives the
            same result; one near g avoids cancellation.
    """
    p = jnp.asarray(p, dtype=jnp.float64)
    g0 = np.zeros(model.n_free) if center is None else np.asarray(center, dtype=np.float64)
    fn = _compiled_chunk_sums(model)
    total: dict[str, np.ndarray] | None = None
    n = 0
    for cache, n_real in chunks:
        out = fn(p, jnp.asarray(g0), cache)
        out = {k: np.asarray(v) for k, v in out.items()}
        total = out if total is None else {k: total[k] + out[k] for k in total}
        n += int(n_real)
    if total is None or n == 0:
        raise FitError("the normalisation sample is empty")
    if not total["sum_vi"] > 0:
        raise FitError("the normalisation sample's weighted intensity sum is not positive")
    g = total["sum_vdi"] / total["sum_vi"]
    delta = g - g0
    # sum v^2 (e - I delta)(e - I delta)^T, e = grad I - I g0: exact, centred on the sample's own g.
    second = (total["A"] - np.outer(delta, total["b"]) - np.outer(total["b"], delta)
              + total["c"] * np.outer(delta, delta))
    second = 0.5 * (second + second.T)
    return ScoreMoments(n, float(total["sum_v"]), float(total["sum_v2"]), float(total["sum_vi"]),
                        float(total["c"]), g, second, float(total["sum_v2i"]),
                        total["b"] - total["c"] * delta, total["sum_v2e"] - total["sum_v2i"] * delta)


def iter_chunks(model: Model, source: EventCache | Events | Iterable[Events],
                chunk_size: int = DEFAULT_CHUNK) -> Iterator[tuple[EventCache, int]]:
    """Equal-size event caches (zero-weight padding) of a normalisation sample, one at a time.

    Args:
        model: the model.
        source: an event cache (e.g. a problem's MC cache), an event sample, or an
            iterable of event chunks (e.g. :func:`fastsim.events.iter_conventional_mc`):
            events are precomputed chunk by chunk, so no full-size cache is built.
        chunk_size: events per chunk.

    Yields:
        (cache of ``chunk_size`` events, number of real events in it).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if isinstance(source, EventCache):
        n = n_events(source)
        for k, chunk in enumerate(split_cache(source, chunk_size)):
            yield jax.tree_util.tree_map(jnp.asarray, chunk), min(chunk_size, n - k * chunk_size)
        return
    parts = [source] if isinstance(source, Events) else source
    for part in parts:
        for start in range(0, len(part), chunk_size):
            ev = part.subset(slice(start, start + chunk_size))
            cache = model.precompute(ev)
            if len(ev) < chunk_size:
                cache = jax.tree_util.tree_map(jnp.asarray, pad_cache(cache, chunk_size))
            yield cache, len(ev)


def score_sensitivity(problem: FitProblem, p: np.ndarray) -> np.ndarray:
    """(n_par, 1 + n_model) derivative of the NLL's gradient at p with respect to (ln N, g).

    The NLL reads the normalisation MC through ln N(q) alone (q the model's
    parameters, p = q plus a floating background fraction). A fluctuation of the
    sample shifts the value of ln N at the fit point by delta_0 and its gradient
    by delta_g, i.e. ln N(q) -> ln N(q) + delta_0 + delta_g . (q - q_hat) to first
    order; the columns are d(grad NLL)/d(delta_0, delta_g) at zero shift, by
    autodiff. Signal only, NLL = W ln N - sum w ln I, this is [0 | W 1]; with a
    background term, ln N enters each event's ln((1 - f_b) I / N + f_b B) and
    both columns matter.
    """
    model = problem.model
    n = model.n_free
    x = jnp.asarray(p, dtype=jnp.float64)
    q_hat = x[:n]
    data, mc = problem.data_cache, problem.mc_cache
    background = problem.background_arguments()

    def nll(x, shift):
        q = x[:n]
        log_norm = jnp.log(model.normalisation(q, mc)) + shift[0] + shift[1:] @ (q - q_hat)
        signal = model.intensity(q, data) * jnp.exp(-log_norm)
        if not background:
            log_density = jnp.log(signal)
        else:
            density, fixed = background
            log_density = mixture_log_density(signal, x[n] if problem.floating_background else fixed, density)
        return -jnp.sum(data.weights * log_density)

    return np.asarray(jax.jacfwd(jax.grad(nll), argnums=1)(x, jnp.zeros(n + 1)))


def mc_statistical_covariance(problem: FitProblem, p: np.ndarray, hessian_inverse: np.ndarray, *,
                              mc: Events | Iterable[Events] | None = None,
                              chunk_size: int = DEFAULT_CHUNK) -> MCStatistics:
    """The normalisation sample's contribution V_MC = H^-1 C H^-1 to a fit's covariance.

    Args:
        problem: the fit problem.
        p: (n_free,) fitted parameters.
        hessian_inverse: (n_free, n_free) inverse Hessian of the minimised objective at p
            (a plain fit of unweighted data: its covariance; weighted data: not the sandwich).
        mc: the problem's normalisation events (a sample or an iterable of chunks); needed
            when ``problem.mc_cache`` holds no per-event arrays (a normalisation-matrix
            cache), else its per-event cache is used.
        chunk_size: events per chunk of the per-event gradients.

    Returns:
        :class:`MCStatistics`.

    Raises:
        FitError: no per-event MC is available, the events given do not reproduce the
            problem's normalisation N(p), or the sample is empty.
    """
    model = problem.model
    p = np.asarray(p, dtype=np.float64)
    n_par = problem.n_parameters
    hinv = np.asarray(hessian_inverse, dtype=np.float64)
    if p.shape != (n_par,):
        raise ValueError(f"p has shape {p.shape}, expected ({n_par},)")
    if hinv.shape != (n_par, n_par):
        raise ValueError(f"hessian_inverse has shape {hinv.shape}, expected ({n_par}, {n_par})")
    if mc is None:
        if not isinstance(problem.mc_cache, EventCache):
            raise FitError("the problem's normalisation cache holds no per-event arrays: pass its MC events "
                           "(mc=...) to estimate their statistical error")
        mc = problem.mc_cache
    q = problem.signal_parameters(p)
    qj = jnp.asarray(q)
    log_norm = lambda q: jnp.log(model.normalisation(q, problem.mc_cache))  # noqa: E731
    norm = float(jnp.exp(log_norm(qj)))
    g0 = np.asarray(jax.grad(log_norm)(qj))
    m = score_moments(model, q, iter_chunks(model, mc, chunk_size), center=g0)
    if abs(m.sum_vi / m.sum_v - norm) > NORMALISATION_TOLERANCE * abs(norm):
        raise FitError(f"the MC events give the normalisation {m.sum_vi / m.sum_v:.8g}, the problem's cache "
                       f"{norm:.8g}: pass the events the problem's normalisation was built from")
    J = score_sensitivity(problem, p)
    C = J @ m.log_normalisation_covariance @ J.T
    C = 0.5 * (C + C.T)
    V = hinv @ C @ hinv
    V = 0.5 * (V + V.T)
    F, F_err, _, sf_err = propagate_model_fractions(model, problem.gen_cache, p, V)
    return MCStatistics(tuple(problem.parameter_names), tuple(model.resonance_names), V,
                        np.sqrt(np.clip(np.diag(V), 0.0, None)), F, F_err, sf_err, m.n, m.effective_size,
                        m.effective_normalisation_size, C)


def fit_hessian_inverse(problem: FitProblem, result: FitResult) -> np.ndarray:
    """(n_free, n_free) inverse Hessian of the fit's objective at its minimum.

    The fit's covariance when it is one (unweighted data); for weighted data (sandwich
    covariance) the exact Hessian of the objective again, inverted on the parameters
    not held at a bound (the others get zero rows, as in :func:`pwa.fit.summarise`).
    """
    if not result.sandwich:
        return np.asarray(result.covariance)
    H = problem.hessian(result.values, result.config)
    free = ~np.asarray(result.at_limit, dtype=bool) if result.at_limit.size else np.ones(len(H), bool)
    hinv = np.zeros_like(H)
    sub = 0.5 * (H[np.ix_(free, free)] + H[np.ix_(free, free)].T)
    hinv[np.ix_(free, free)] = np.linalg.inv(sub) if np.linalg.eigvalsh(sub)[0] > 0 else np.linalg.pinv(sub)
    return hinv


def mc_statistics_of_fit(problem: FitProblem, result: FitResult, *,
                         mc: Events | Iterable[Events] | None = None,
                         chunk_size: int = DEFAULT_CHUNK) -> MCStatistics:
    """:func:`mc_statistical_covariance` at a fit's minimum, with its inverse Hessian
    (:func:`fit_hessian_inverse`)."""
    return mc_statistical_covariance(problem, result.values, fit_hessian_inverse(problem, result), mc=mc,
                                     chunk_size=chunk_size)


__all__ = ["MCStatistics", "ScoreMoments", "fit_hessian_inverse", "intensity_gradients", "iter_chunks",
           "mc_statistical_covariance", "mc_statistics_of_fit", "score_moments", "score_sensitivity"]
