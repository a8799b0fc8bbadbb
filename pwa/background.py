"""Background in an amplitude fit: an explicit background term, or sideband subtraction.

Two ways (PHYSICS.md section 4; the toy study is ``experiments/background``):

**Sideband subtraction** (:func:`sideband_subtraction`). Signal-region
events enter with weight +1 and sideband events with weight -s, s = expected
background in the signal region / sum of sideband weights, so that every
weighted sum over the data subtracts the background on average. The weighted
NLL is today's; its errors are the sandwich H^-1 C H^-1 of
:meth:`pwa.problem.FitProblem.sandwich_covariance` (C = sum w_i^2 g_i g_i^T,
w^2 > 0 for the negative weights as well), and likelihood-ratio statistics
are scaled by sum w / sum w^2 (:func:`pwa.problem.likelihood_scale`).

**Background term** (:class:`BackgroundModel`). The density of a data event
relative to the detector-level normalisation MC is the mixture

    L_i = (1 - f_b) I(x_i) / N(p) + f_b B_i,   N(p) = sum_j v_j I(x_j) / sum_j v_j,

with B_i = p_bkg(x_i) / p_mc(x_i) the background density relative to the
MC's (efficiency times phase space cancels in both terms, as in the signal
NLL) and normalised on the MC, sum_j v_j B(x_j) / sum_j v_j = 1. The fit
minimises -sum_i w_i ln L_i; f_b is fixed or a free parameter in (0, 1)
appended after the model's (``"background_fraction"``). B does not depend on
the parameters: it is estimated once, before the fit, from a background
sample (sideband events or background MC, weights allowed) and the MC:

* ``method="classifier"`` (default): a gradient-boosted classifier
  (scikit-learn ``HistGradientBoostingClassifier``) separates the background
  sample from the MC, the classes balanced by their sums of weights, so
  D / (1 - D) = p_bkg / p_mc (D = P(background | x); the DCTR construction of
  :func:`fastsim.reweight.dctr_weights`). Two-fold cross fitting: each MC
  half gets the ratio of the classifier that did not see it (its mean fixes
  the normalisation without the classifier's overfitting); data events, seen
  by neither, get the mean of both classifiers' ratios.
* ``method="knn"``: the k nearest neighbours of a point among the pooled
  background sample and MC; B = (background weight among them / total
  background weight) / (MC weight among them / total MC weight). An MC event
  does not count itself (leave one out).

Features (:func:`density_features`): the tree variables of the reaction's
first chain (:func:`pwa.coverage.tree_coordinates`: intermediate masses and
(cos theta + 1) / 2 in [0, 1]) with every azimuth as (cos phi, sin phi) / (2 pi),
periodic and on the scale of the unit range. Any reaction.

Plain numpy, scipy and scikit-learn: no JAX here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fastsim.events import Events
from fastsim.events.io import weight_problem

from .coverage import tree_coordinates
from .errors import FitError

#: Name of the extra fit parameter of a floating background fraction.
BACKGROUND_FRACTION = "background_fraction"
#: Density-ratio estimators of :func:`fit_density_ratio`.
DENSITY_METHODS = ("classifier", "knn")
#: The estimated ratio p_bkg / p_mc is clipped here (before normalising), so
#: that a few MC-poor regions cannot dominate.
DEFAULT_MAX_RATIO = 50.0
#: Neighbours of the ``"knn"`` estimator.
DEFAULT_NEIGHBOURS = 64


@dataclass(frozen=True, eq=False)
class BackgroundModel:
    """The background term of a fit: per-event densities and the fraction.

    Attributes:
        density: (n_data,) B_i = p_bkg(x_i) / p_mc(x_i) of every data event,
            normalised on the normalisation MC (>= 0, finite).
        fraction: f_b, the background fraction of the (weighted) data: its
            value when fixed, its start value when floating.
        float_fraction: fit f_b as the extra parameter ``"background_fraction"``
            with bounds (0, 1), after the model's parameters.
        mc_density: (n_mc,) B_j on the normalisation MC (out of fold), for
            projections and checks, or None.
        method: how ``density`` was estimated (``"classifier"``, ``"knn"``, ``"given"``).
        info: the estimate's diagnostics (normalisation before rescaling,
            clipped events, sample sizes).
    """

    density: np.ndarray
    fraction: float
    float_fraction: bool = False
    mc_density: np.ndarray | None = None
    method: str = "given"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = np.ascontiguousarray(self.density, dtype=np.float64)
        if b.ndim != 1 or b.size == 0:
            raise FitError(f"background density: expected a (n_data,) array, got shape {b.shape}")
        if not np.all(np.isfinite(b)) or np.any(b < 0):
            raise FitError("background density: expected finite, non-negative values (a density ratio), got "
                           f"{int(np.sum(~np.isfinite(b) | (b < 0)))} of {b.size} that are not")
        object.__setattr__(self, "density", b)
        if self.mc_density is not None:
            object.__setattr__(self, "mc_density", np.ascontiguousarray(self.mc_density, dtype=np.float64))
        f = float(self.fraction)
        if self.float_fraction and not 0.0 < f < 1.0:
            raise FitError(f"background fraction: a floating fraction needs a start value strictly inside (0, 1), "
                           f"got {f}")
        if not 0.0 <= f <= 1.0:
            raise FitError(f"background fraction: expected a value in [0, 1], got {f}")
        object.__setattr__(self, "fraction", f)
        object.__setattr__(self, "float_fraction", bool(self.float_fraction))

    @property
    def n_parameters(self) -> int:
        """Fit parameters the background adds (1 when the fraction floats)."""
        return int(self.float_fraction)

    def with_fraction(self, fraction: float, float_fraction: bool | None = None) -> "BackgroundModel":
        """The same densities with another (start) fraction, e.g. a fitted one."""
        floating = self.float_fraction if float_fraction is None else float_fraction
        return replace(self, fraction=float(fraction), float_fraction=floating)

    def to_dict(self) -> dict:
        """Summary for a result file (no per-event arrays)."""
        return {"method": self.method, "fraction": self.fraction, "float_fraction": self.float_fraction,
                "n_data": int(self.density.size), "density_mean_on_data": float(self.density.mean()),
                **{k: v for k, v in self.info.items()}}

    def __repr__(self) -> str:
        how = "floating" if self.float_fraction else "fixed"
        return (f"BackgroundModel({self.density.size} events, f_b = {self.fraction:.4g} {how}, "
                f"density by {self.method})")


# --- density ratio -----------------------------------------------------------


def density_features(events: Events) -> np.ndarray:
    """(n_events, n_masses + 3 n_vertices) features of the density-ratio estimators.

    The tree variables of :func:`pwa.coverage.tree_coordinates` (masses and
    (cos theta + 1) / 2 in [0, 1]), every azimuth replaced by
    (cos phi, sin phi) / (2 pi): periodic, and a small step in phi moves the
    point by dphi / (2 pi), as a step of the unit-range coordinates does.
    """
    u = tree_coordinates(events)
    n_masses = len(events.reaction.chains[0].inner_labels)
    columns = [u[:, :n_masses]]
    for k in range((u.shape[1] - n_masses) // 2):
        cos_col = u[:, n_masses + 2 * k]
        phi = 2.0 * np.pi * (u[:, n_masses + 2 * k + 1] - 0.5)
        columns += [cos_col[:, None], np.stack([np.cos(phi), np.sin(phi)], axis=1) / (2.0 * np.pi)]
    return np.concatenate(columns, axis=1)


@dataclass(frozen=True, eq=False)
class DensityRatio:
    """An estimate of B(x) = p_bkg(x) / p_mc(x), normalised on the MC (:func:`fit_density_ratio`).

    Call it on events to get their B (n,). Built once; applied to any number
    of data samples (toys) of the same reaction.

    Attributes:
        method: ``"classifier"`` or ``"knn"``.
        mc_density: (n_mc,) B of every MC event, out of fold (classifier) or
            leaving the event out (kNN); its weighted mean over the MC is 1.
        scale: the factor that normalised the raw ratio (1 / its out-of-fold MC mean).
        info: diagnostics: ``raw_mc_mean`` (the raw ratio's MC mean, 1 for a
            calibrated estimate), ``clipped_mc``, sizes, settings.
    """

    method: str
    mc_density: np.ndarray
    scale: float
    info: dict[str, Any]
    _raw: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    _reaction: Any = field(repr=False)

    def __call__(self, events: Events) -> np.ndarray:
        """(n_events,) normalised B of ``events`` (never seen by the estimator)."""
        if events.reaction != self._reaction:
            raise FitError(f"background density: events of {events.reaction}, but the estimate is for "
                           f"{self._reaction}")
        return self.scale * self._raw(density_features(events))


def _checked_weights(label: str, events: Events) -> np.ndarray:
    if len(events) == 0:
        raise FitError(f"{label}: the sample holds no events; expected at least one")
    w = events.weight_array
    problem = weight_problem(w, f"{label}: the weights", plural=True)
    if problem:
        raise FitError(problem)
    return np.asarray(w, dtype=np.float64)


def fit_density_ratio(mc: Events, background_sample: Events, *, method: str = "classifier", seed: int = 0,
                      max_ratio: float = DEFAULT_MAX_RATIO, neighbours: int = DEFAULT_NEIGHBOURS,
                      classifier_options: dict | None = None,
                      max_training_mc: int | None = None) -> DensityRatio:
    """Estimate B = p_bkg / p_mc from a background sample and the normalisation MC (module docstring).

    Args:
        mc: the detector-level normalisation MC of the fit (weights allowed).
        background_sample: detector-level background events (sideband data
            or background MC, weights allowed), distributed as the background
            under the signal.
        method: ``"classifier"`` (gradient-boosted classifier, two-fold
            cross-fitted) or ``"knn"`` (pooled k nearest neighbours).
        seed: seed of the fold split and of the classifier.
        max_ratio: the raw ratio is clipped to [0, max_ratio] before normalising.
        neighbours: k of the kNN estimator.
        classifier_options: keyword arguments for ``HistGradientBoostingClassifier``
            that replace the defaults.
        max_training_mc: train on at most this many MC events (a seeded
            random subset; faster for a small background sample); the other
            MC events, unseen in training like the data, get the estimate of
            new points. None: all.

    Returns:
        :class:`DensityRatio`, its MC mean normalised to 1.

    Raises:
        FitError: an empty sample, unusable weights, samples of different
            reactions, or an unknown method.
    """
    if method not in DENSITY_METHODS:
        raise FitError(f"background density: unknown method {method!r}; choose one of {', '.join(DENSITY_METHODS)}")
    if background_sample.reaction != mc.reaction:
        raise FitError(f"background sample of {background_sample.reaction}, normalisation MC of {mc.reaction}")
    v = _checked_weights("normalisation MC", mc)
    u = _checked_weights("background sample", background_sample)
    X_mc, X_b = density_features(mc), density_features(background_sample)
    rng = np.random.default_rng(seed)
    train = np.ones(len(mc), dtype=bool)
    if max_training_mc is not None and max_training_mc < len(mc):
        train[:] = False
        train[rng.choice(len(mc), size=int(max_training_mc), replace=False)] = True
    if method == "classifier":
        raw, oof_train, info = _classifier_ratio(X_mc[train], v[train], X_b, u, rng, seed, max_ratio,
                                                 classifier_options or {})
    else:
        raw, oof_train, info = _knn_ratio(X_mc[train], v[train], X_b, u, neighbours, max_ratio)
    oof = np.empty(len(mc))
    oof[train] = oof_train
    if not train.all():
        oof[~train] = raw(X_mc[~train])
    mean = float(np.sum(v * oof) / np.sum(v))
    if not mean > 0:
        raise FitError(f"background density: the estimated ratio averages {mean:.3g} over the MC; expected a "
                       "positive mean (does the background sample overlap the MC?)")
    info.update(raw_mc_mean=mean, n_mc=len(mc), n_training_mc=int(train.sum()),
                n_background_sample=len(background_sample),
                max_ratio=max_ratio, clipped_mc=int(np.sum(oof >= max_ratio)),
                features="tree variables, azimuths as (cos, sin)")
    return DensityRatio(method, oof / mean, 1.0 / mean, info, raw, mc.reaction)


def _classifier_ratio(X_mc, v, X_b, u, rng, seed, max_ratio, options):
    """(raw ratio of new points, out-of-fold raw ratio of the MC, info) from two cross-fitted classifiers."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    settings = dict(max_iter=300, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=40,
                    early_stopping=True, validation_fraction=0.2, n_iter_no_change=15,
                    l2_regularization=1.0)
    settings.update(options)
    fold_mc, fold_b = rng.integers(0, 2, len(X_mc)), rng.integers(0, 2, len(X_b))
    models = []
    oof = np.empty(len(X_mc))

    def ratio(clf, X):
        d = np.clip(clf.predict_proba(X)[:, 1], 1e-9, 1.0 - 1e-9)
        return np.clip(d / (1.0 - d), 0.0, max_ratio)

    for k in (0, 1):
        tm, tb = fold_mc != k, fold_b != k
        sum_mc, sum_b = v[tm].sum(), u[tb].sum()
        if not (sum_mc > 0 and sum_b > 0):
            raise FitError(f"background density: the weights of a cross-fitting half sum to {sum_mc:.6g} (MC) "
                           f"and {sum_b:.6g} (background sample); both must be positive")
        X = np.concatenate([X_mc[tm], X_b[tb]])
        y = np.concatenate([np.zeros(int(tm.sum())), np.ones(int(tb.sum()))])
        # Classes balanced by their sums of weights: D / (1 - D) is then the ratio of the densities.
        sw = np.concatenate([v[tm] / sum_mc, u[tb] / sum_b]) * len(y) / 2.0
        clf = HistGradientBoostingClassifier(random_state=seed + k, **settings)
        clf.fit(X, y, sample_weight=sw)
        models.append(clf)
        oof[~tm] = ratio(clf, X_mc[~tm])

    def raw(X):
        return 0.5 * (ratio(models[0], X) + ratio(models[1], X))

    info = {"classifier": "HistGradientBoostingClassifier, 2-fold cross-fitted",
            "iterations": [int(m.n_iter_) for m in models]}
    return raw, oof, info


def _knn_ratio(X_mc, v, X_b, u, k, max_ratio):
    """(raw ratio of new points, leave-one-out raw ratio of the MC, info) from pooled neighbours."""
    from scipy.spatial import cKDTree

    X = np.concatenate([X_mc, X_b])
    is_b = np.concatenate([np.zeros(len(X_mc), bool), np.ones(len(X_b), bool)])
    w = np.concatenate([v / v.sum(), u / u.sum()])  # each sample's weights sum to 1
    k = int(min(k, len(X) - 1))
    tree = cKDTree(X)

    def from_neighbours(idx):
        wb = np.where(is_b[idx], w[idx], 0.0).sum(axis=1)
        wm = np.where(is_b[idx], 0.0, w[idx]).sum(axis=1)
        # One pseudo-event of MC weight keeps the ratio finite where the k neighbours hold no MC.
        floor = 1.0 / v.size
        return np.clip(wb / np.maximum(wm, floor), 0.0, max_ratio)

    def raw(Xq):
        return from_neighbours(tree.query(Xq, k=k)[1])

    _, idx = tree.query(X_mc, k=k + 1)
    # Leave one out: drop the event itself (the nearest, at distance 0), keep the next k.
    own = idx == np.arange(len(X_mc))[:, None]
    keep = np.where(own.any(axis=1)[:, None], ~own, np.arange(k + 1)[None, :] < k)
    oof = from_neighbours(idx[keep].reshape(len(X_mc), k))
    return raw, oof, {"neighbours": k}


def background_density(data: Events, mc: Events, background_sample: Events, *, method: str = "classifier",
                       seed: int = 0, **options) -> np.ndarray:
    """(n_data,) B_i of the data events, normalised on ``mc`` (:func:`fit_density_ratio`)."""
    return fit_density_ratio(mc, background_sample, method=method, seed=seed, **options)(data)


def background_model(data: Events, mc: Events, background_sample: Events, *, fraction: float,
                     float_fraction: bool = False, method: str = "classifier", seed: int = 0,
                     ratio: DensityRatio | None = None, **options) -> BackgroundModel:
    """The background term of a fit of ``data``: B from ``background_sample`` against ``mc``.

    Args:
        data: the data to fit.
        mc: the fit's normalisation MC.
        background_sample: background events (sideband or background MC).
        fraction: f_b (fixed value, or start value when floating).
        float_fraction: fit f_b.
        method, seed, options: of :func:`fit_density_ratio`.
        ratio: an estimate already made (then ``background_sample``, method,
            seed and options are not used): one estimate for many toys.
    """
    if ratio is None:
        ratio = fit_density_ratio(mc, background_sample, method=method, seed=seed, **options)
    return BackgroundModel(ratio(data), fraction, float_fraction, mc_density=ratio.mc_density,
                           method=ratio.method, info=dict(ratio.info))


# --- sideband subtraction ---------------------------------------------------


def sideband_subtraction(signal_region: Events, sideband: Events, scale: float) -> Events:
    """Signal-region events with weight w and sideband events with weight -scale w, as one sample.

    Args:
        signal_region: events of the signal region (signal and background).
        sideband: events of the sideband(s), distributed as the background
            under the signal.
        scale: expected background in the signal region divided by the sum
            of sideband weights (e.g. from a fit of the selection variable),
            so that the sideband weights subtract the background on average.

    Returns:
        Events with signed weights; fit them as data (the sandwich covariance
        is used because they are weighted).

    Raises:
        FitError: a scale that is not positive and finite, samples of
            different reactions, or weights that sum to a non-positive number.
    """
    if not (np.isfinite(scale) and scale > 0):
        raise FitError(f"sideband subtraction: expected a positive, finite scale, got {scale}")
    if sideband.reaction != signal_region.reaction:
        raise FitError("sideband subtraction: signal region and sideband of different reactions")
    w = np.concatenate([signal_region.weight_array, -float(scale) * sideband.weight_array])
    events = Events(np.concatenate([signal_region.momenta, sideband.momenta]), w, reaction=signal_region.reaction)
    problem = weight_problem(w, "sideband-subtracted data: the weights", plural=True)
    if problem:
        raise FitError(problem)
    return events
