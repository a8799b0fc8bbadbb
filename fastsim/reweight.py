"""Classifier reweighting of generated events towards a reference sample (DCTR).

A classifier separates generated (flow) events from reference (conventional
MC) events; with D(x) = P(reference | x) the weight w = D / (1 - D) (times
the sample-size ratio) turns the generated density into the reference one
(Andreassen & Nachman, Phys. Rev. D 101 (2020) 091901). Two-fold cross
fitting: each half of the generated sample is weighted by a classifier that
never saw it, so the weights do not fit its own fluctuations. Weighted
samples (weighted MC on either side) enter the classifier with their weights.

Plain numpy + scikit-learn: usable from both halves of the project.
"""

from __future__ import annotations

import numpy as np

from .errors import TrainingError, checked_weights


def _features(hv: np.ndarray, fold: bool = False) -> np.ndarray:
    """m, cos theta_X, cos theta_1 and (cos, sin) of both azimuths (periodic); folded:
    the point of the fundamental domain (m, |cos theta_X|, |cos theta_1|, phi_1 in [0, pi])."""
    if fold:
        from .coords import fold_helicity_variables

        f = fold_helicity_variables(hv)
        return np.column_stack([f[:, 0], f[:, 1], f[:, 3], f[:, 4]])
    return np.column_stack([hv[:, 0], hv[:, 1], np.cos(hv[:, 2]), np.sin(hv[:, 2]), hv[:, 3],
                            np.cos(hv[:, 4]), np.sin(hv[:, 4])])


def dctr_weights(hv_generated: np.ndarray, hv_reference: np.ndarray, *,
                 generated_weights: np.ndarray | None = None, reference_weights: np.ndarray | None = None,
                 seed: int = 0, max_weight: float = 20.0, fold: bool = False) -> tuple[np.ndarray, dict]:
    """Per-event weights for the generated sample, mean 1.

    Args:
        hv_generated: (n_gen, 5) helicity variables of the generated events.
        hv_reference: (n_ref, 5) helicity variables of the reference MC.
        generated_weights: (n_gen,) weights of the generated events, or None.
        reference_weights: (n_ref,) weights of the reference events (e.g.
            weighted conventional MC), or None. Both enter the classifier's
            sample weights, and the classes are balanced by their sums of
            weights, so that D / (1 - D) estimates the ratio of the weighted
            densities; the returned weights are that ratio times
            ``generated_weights``. Each must be finite with a positive sum
            (single weights may be negative).
        seed: seed of the fold split and the classifier.
        max_weight: the density ratio is clipped here (before the generated
            weights multiply it and before normalising) so that a few
            badly-modelled events cannot dominate.
        fold: classify on the folded point (``fastsim.coords``): for samples
            of a detector with the symmetries of folded coordinates (a
            folded simulator), whose densities depend on it alone; the weight
            is then a function of the folded point, symmetric like both samples.

    Returns:
        (weights (n_gen,), info with the effective sample size
        (sum w)^2 / sum w^2, its fraction of n_gen, and the clipped count).

    Raises:
        TrainingError: weights of another shape than their sample, not
            finite, or with a sum (over the sample or a cross-fitting half)
            that is not positive.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    Xg, Xr = _features(hv_generated, fold), _features(hv_reference, fold)
    wg = np.ones(len(Xg)) if generated_weights is None else checked_weights(
        generated_weights, len(Xg), "generated weights")
    wr = np.ones(len(Xr)) if reference_weights is None else checked_weights(
        reference_weights, len(Xr), "reference weights")
    fold_g = rng.integers(0, 2, len(Xg))
    fold_r = rng.integers(0, 2, len(Xr))
    ratio = np.empty(len(Xg))
    for k in (0, 1):
        tr_g, tr_r = Xg[fold_g != k], Xr[fold_r != k]
        sum_g, sum_r = wg[fold_g != k].sum(), wr[fold_r != k].sum()
        if not (sum_g > 0.0 and sum_r > 0.0):
            raise TrainingError(f"the weights of a cross-fitting half sum to {sum_g:.6g} (generated) and "
                                f"{sum_r:.6g} (reference); both sums must be positive")
        X = np.concatenate([tr_g, tr_r])
        y = np.concatenate([np.zeros(len(tr_g)), np.ones(len(tr_r))])
        # Balance the classes' sums of weights so that D/(1-D) estimates the density ratio directly.
        sw = np.concatenate([wg[fold_g != k], wr[fold_r != k] * (sum_g / sum_r)])
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31,
                                             early_stopping=True, validation_fraction=0.1,
                                             l2_regularization=1.0, random_state=seed + k)
        clf.fit(X, y, sample_weight=sw)
        d = np.clip(clf.predict_proba(Xg[fold_g == k])[:, 1], 1e-6, 1 - 1e-6)
        ratio[fold_g == k] = d / (1.0 - d)
    clipped = int(np.sum(ratio > max_weight))
    weights = np.minimum(ratio, max_weight)
    if generated_weights is not None:
        weights *= wg
        if not weights.sum() > 0.0:
            raise TrainingError(f"the reweighted generated weights sum to {weights.sum():.6g}; "
                                f"the sum must be positive")
    weights /= weights.mean()
    ess = float(weights.sum() ** 2 / np.sum(weights**2))
    return weights, {"effective_sample_size": ess, "ess_fraction": ess / len(weights),
                     "n_clipped": clipped, "max_weight": max_weight,
                     "generated_weighted": generated_weights is not None,
                     "reference_weighted": reference_weights is not None,
                     "classifier": "HistGradientBoostingClassifier, 2-fold cross-fitted",
                     "features": "folded" if fold else "helicity variables"}
