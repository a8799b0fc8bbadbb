"""Simultaneous fits: several data sets, each with its own model card and
normalisation MC, sharing named parameters.

A *channel* is one data set with its card, data and MC (a decay mode, or a
data-taking period with its own detector). The joint NLL is the sum of the
channels' NLLs,

    NLL(theta) = sum_c NLL_c(P_c theta),

where P_c picks channel c's free parameters out of the joint vector theta.
A parameter named in ``shared`` (e.g. ``"f2'(1525):mass"``) is one entry of
theta for every channel whose card has it free; every other parameter is the
channel's own and is named ``"<channel>/<parameter>"`` in the joint vector.
Exact gradients and the exact Hessian run over the whole sum (one compiled
objective). The joint covariance is H^-1, or, when a channel has weighted
data, the sandwich H^-1 C H^-1 with C = sum_c P_c^T C_c P_c (C_c the
channel's sum of w_i^2 g_i g_i^T for weighted data, its Hessian block
otherwise: with every channel unweighted this is H^-1). Each channel is then
reported on its own (:class:`pwa.fit_result.FitResult`: its parameters with
their marginal errors, fit fractions with errors propagated from the joint
covariance, projections), since fractions belong to a channel's model.

The fit card (YAML) lists the channels and the shared parameters; paths are
relative to the fit card::

    channels:
      kk:    {model: kk.yaml,    data: data_kk.parquet,    mc: mc_kk.parquet}
      pipi:  {model: pipi.yaml,  data: data_pipi.parquet,  mc: mc_pipi.parquet}
    shared: ["f2'(1525):mass", "f2'(1525):width"]

A channel may carry background (:mod:`pwa.background`), as ``pwa fit``'s
options do for one data set::

    channels:
      kk:
        model: kk.yaml
        data: data_kk.parquet
        mc: mc_kk.parquet
        background: {sample: bkg_mc_kk.parquet, fraction: 0.2}   # explicit term; float: true by default
      pipi:
        ...
        sideband: {sample: sb_pipi.parquet, scale: 0.5}          # signed weights, sandwich errors

A floating background fraction is the channel's own parameter
``"<channel>/background_fraction"`` (it may be shared like any other).

Not (yet) in joint fits: fraction-sum and LASSO penalties, random starts
(the fit starts from the cards' values).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import FitError, ModelCardError
from .fit_result import FitConfig, FitResult
from .fraction_errors import propagate_model_fractions
from .optimize import Minimizer, dumps
from .problem import FitProblem


class BackgroundEntry(BaseModel):
    """A channel's explicit background term (``pwa fit --background``)."""

    model_config = ConfigDict(extra="forbid")
    sample: str
    fraction: float = Field(0.1, ge=0.0, lt=1.0)
    floating: bool = Field(True, alias="float")
    method: str = Field("classifier", pattern="^(classifier|knn)$")


class SidebandEntry(BaseModel):
    """A channel's sideband to subtract (``pwa fit --sideband``)."""

    model_config = ConfigDict(extra="forbid")
    sample: str
    scale: float = Field(1.0, ge=0.0)


class ChannelEntry(BaseModel):
    """One channel of a fit card: its model card, data and normalisation MC files, and its background."""

    model_config = ConfigDict(extra="forbid")
    model: str
    data: str
    mc: str
    background: BackgroundEntry | None = None
    sideband: SidebandEntry | None = None


class FitCard(BaseModel):
    """A validated fit card (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    channels: dict[str, ChannelEntry] = Field(min_length=1)
    shared: list[str] = Field(default_factory=list)
    source: str = ""

    def path(self, value: str) -> Path:
        """A channel's file path, relative to the fit card's folder."""
        p = Path(value)
        return p if p.is_absolute() or not self.source else Path(self.source).parent / p


def load_fit_card(path: str | Path) -> FitCard:
    """Read and validate a fit card; errors name the file and the field."""
    from fastsim.events.cards import read_yaml_card

    raw = read_yaml_card(Path(path), ModelCardError, "fit card (YAML with channels and shared)")
    if not isinstance(raw, dict):
        raise ModelCardError(f"{path}: expected a mapping with channels and shared")
    try:
        card = FitCard.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        msgs = "; ".join(f"field {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ModelCardError(f"{path}: {msgs}") from None
    for name in card.channels:
        if "/" in name or not name:
            raise ModelCardError(f"{path}: field channels: {name!r} is not a channel name (no '/', not empty)")
    return card


@dataclass(frozen=True, eq=False)
class JointProblem:
    """Several channels' FitProblems and the map from the joint parameter vector to each.

    Attributes:
        names: channel names, in order.
        problems: each channel's :class:`~pwa.problem.FitProblem`.
        shared: the shared parameter names.
        parameter_names: names of the joint vector's entries.
        index: per channel, (n_free_c,) positions of its free parameters in the joint vector.
        bounds: per joint parameter (lo, hi), the intersection over the channels that have it.
    """

    names: tuple[str, ...]
    problems: tuple[FitProblem, ...]
    shared: tuple[str, ...]
    parameter_names: tuple[str, ...]
    index: tuple[np.ndarray, ...]
    bounds: tuple[tuple[float | None, float | None], ...]

    @classmethod
    def build(cls, channels: Mapping[str, FitProblem], shared: Sequence[str] = ()) -> "JointProblem":
        """Joint parameters from the channels' free parameters; ``shared`` names appear once.

        Raises:
            FitError: a shared name that is not a free parameter of at least
                two channels, or no channel.
        """
        if not channels:
            raise FitError("a joint fit needs at least one channel")
        names = tuple(channels)
        problems = tuple(channels.values())
        for s in shared:
            having = [c for c, p in channels.items() if s in p.parameter_names]
            if len(having) < 2:
                where = f"only of channel {having[0]}" if having else "of no channel"
                raise FitError(f"shared: {s!r} is a free parameter {where}; a shared parameter must be free "
                               "in two channels or more (a lineshape parameter floats when listed in 'float')")
        joint: list[str] = []
        bounds: dict[str, tuple] = {}
        index = []
        for c, p in channels.items():
            idx = []
            for name, b in zip(p.parameter_names, p.bounds):
                key = name if name in shared else f"{c}/{name}"
                if key not in bounds:
                    joint.append(key)
                    bounds[key] = tuple(b)
                else:
                    lo0, hi0 = bounds[key]
                    lo = b[0] if lo0 is None else lo0 if b[0] is None else max(lo0, b[0])
                    hi = b[1] if hi0 is None else hi0 if b[1] is None else min(hi0, b[1])
                    bounds[key] = (lo, hi)
                idx.append(joint.index(key))
            index.append(np.asarray(idx, dtype=int))
        return cls(names, problems, tuple(shared), tuple(joint), tuple(index),
                   tuple(bounds[k] for k in joint))

    @property
    def n_free(self) -> int:
        return len(self.parameter_names)

    def initial_values(self) -> np.ndarray:
        """(n_free,) the cards' values; a shared parameter takes its first channel's value."""
        x = np.full(self.n_free, np.nan)
        for idx, p in zip(reversed(self.index), reversed(self.problems)):
            x[idx] = p.initial_values()
        return x

    def arguments(self) -> tuple:
        """The caches and background terms, the arguments after theta of :meth:`objective`."""
        return tuple((p.data_cache, p.mc_cache, *p.background_arguments()) for p in self.problems)

    def objective(self):
        """The joint NLL as a pure function ``f(theta, channel arguments)`` (module docstring)."""
        nlls = [p.nll_function() for p in self.problems]
        index = [jnp.asarray(i) for i in self.index]

        def f(theta, arguments):
            return sum(nll(theta[i], *a) for nll, i, a in zip(nlls, index, arguments))

        return f

    def channel_nll(self, c: int, theta: np.ndarray) -> float:
        return float(self.problems[c].nll(jnp.asarray(theta)[self.index[c]]))


@dataclass(frozen=True)
class JointResult:
    """A joint fit: the joint vector with its covariance, and each channel's own result."""

    parameter_names: tuple[str, ...]
    shared: tuple[str, ...]
    values: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    nll: float
    converged: bool
    edm: float
    message: str
    wall_time: float
    channels: dict[str, FitResult]

    def to_dict(self) -> dict:
        return {"nll": self.nll, "converged": self.converged, "edm": self.edm, "message": self.message,
                "shared": list(self.shared), "wall_time_s": self.wall_time,
                "parameters": {n: {"value": v, "error": e}
                               for n, v, e in zip(self.parameter_names, self.values, self.errors)},
                "covariance": self.covariance,
                "channels": {c: {"nll": r.nll, "fractions": r.to_dict()["fractions"],
                                 "sum_of_fractions": r.to_dict()["sum_of_fractions"]}
                             for c, r in self.channels.items()}}

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def __str__(self) -> str:
        lines = [f"joint fit of {len(self.channels)} channels ({', '.join(self.channels)}): NLL = {self.nll:.4f}, "
                 f"{'CONVERGED' if self.converged else 'NOT CONVERGED'} (EDM {self.edm:.2g})",
                 f"  {'parameter':<36} {'value':>12} {'error':>11}"]
        for n, v, e in zip(self.parameter_names, self.values, self.errors):
            mark = "  (shared)" if n in self.shared else ""
            lines.append(f"  {n:<36} {v:12.6g} {e:11.4g}{mark}")
        for c, r in self.channels.items():
            lines.append(f"channel {c}: fit fractions (%)")
            lines += [f"  {name:<16} {100 * r.fractions[i, i]:8.3f} +- {100 * r.fraction_errors[i, i]:.3f}"
                      for i, name in enumerate(r.resonance_names)]
        return "\n".join(lines)


def fit_joint(joint: JointProblem, config: FitConfig = FitConfig()) -> JointResult:
    """Minimise the joint NLL from the cards' values (exact gradient and Hessian)."""
    if config.sf_lambda or config.lasso or config.starts != 1:
        raise FitError("joint fits take neither the fraction-sum constraint, LASSO nor random starts yet")
    t0 = time.perf_counter()
    minimizer = Minimizer(joint.objective(), joint.n_free, joint.bounds, args=(joint.arguments(),))
    best = minimizer.minimize(joint.initial_values(), optimizer=config.optimizer, max_iter=config.max_iter,
                              edm_tolerance=config.edm_tolerance)
    if not np.isfinite(best.fun):
        raise FitError(f"the joint NLL is not finite at the minimum ({best.message})")
    cov = _joint_covariance(joint, best.x, best.hessian, best.covariance)
    errors = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    wall = time.perf_counter() - t0
    results = {c: _channel_result(joint, k, best, cov, config, wall) for k, c in enumerate(joint.names)}
    return JointResult(joint.parameter_names, joint.shared, best.x, errors, cov, float(best.fun),
                       bool(best.converged), float(best.edm), best.message, wall, results)


def _joint_covariance(joint: JointProblem, x: np.ndarray, hessian: np.ndarray, hinv: np.ndarray) -> np.ndarray:
    """H^-1, or H^-1 C H^-1 when a channel has weighted data (module docstring)."""
    if not any(p.weighted_data for p in joint.problems):
        return hinv
    n = joint.n_free
    C = np.zeros((n, n))
    for idx, p in zip(joint.index, joint.problems):
        block = np.ix_(idx, idx)
        if p.weighted_data:  # sum_i w_i^2 g_i g_i^T: the sandwich with H^-1 = 1
            C[block] += p.sandwich_covariance(x[idx], np.eye(len(idx)))
        else:
            C[block] += np.asarray(jax.hessian(p.nll)(jnp.asarray(x[idx])))
    return hinv @ C @ hinv


def _channel_result(joint: JointProblem, k: int, best, cov: np.ndarray, config: FitConfig,
                    wall: float) -> FitResult:
    """Channel k's parameters, marginal errors and fractions at the joint minimum."""
    problem, idx = joint.problems[k], joint.index[k]
    model = problem.model
    x, v = best.x[idx], cov[np.ix_(idx, idx)]
    gen = problem.gen_cache
    F, F_err, sf, sf_err = propagate_model_fractions(model, gen, x, v)
    shared = [name for name in problem.parameter_names if name in joint.shared]
    note = (f"joint fit with channels {', '.join(joint.names)}; shared: {', '.join(shared) or 'none'}; "
            f"errors from the joint covariance")
    return FitResult(
        model_source=str(model.card.source), parameter_names=tuple(problem.parameter_names),
        resonance_names=tuple(model.resonance_names), values=x, errors=np.sqrt(np.clip(np.diag(v), 0.0, None)),
        covariance=v, nll=joint.channel_nll(k, best.x), objective=float(best.fun), converged=bool(best.converged),
        edm=float(best.edm), hessian_eigenvalues=np.asarray(best.hessian_eigenvalues),
        message=f"{best.message} ({note})", optimizer=best.optimizer, n_data=problem.n_data, n_mc=problem.n_mc,
        sum_data_weights=problem.sum_data_weights, fractions=F, fraction_errors=F_err,
        sum_of_fractions=sf, sum_of_fractions_error=sf_err,
        sandwich=bool(any(p.weighted_data for p in joint.problems)), minima=((float(best.fun), bool(best.converged)),),
        wall_time=wall, config=config, at_limit=_at_limit(best, idx))


def _at_limit(best, idx: np.ndarray) -> np.ndarray:
    flags = np.asarray(best.at_limit, dtype=bool)
    return flags[idx] if flags.size else np.zeros(len(idx), dtype=bool)
