"""DCTR reweighting turns one known density into another."""

import numpy as np

from fastsim.reweight import dctr_weights


def _sample(n, slope, rng):
    """cos theta_1 distributed as 1 + slope * x, the rest flat."""
    x = rng.uniform(-1, 1, 4 * n)
    keep = rng.uniform(0, 1 + abs(slope), 4 * n) < 1 + slope * x
    x = x[keep][:n]
    hv = np.column_stack([rng.uniform(1.0, 3.0, n), rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n),
                          x, rng.uniform(-np.pi, np.pi, n)])
    return hv


def test_weights_correct_a_mismodelled_slope():
    rng = np.random.default_rng(1)
    gen = _sample(25_000, 0.0, rng)       # "flow": flat in cos theta_1
    ref = _sample(25_000, 0.5, rng)       # "conventional MC": 1 + 0.5 x
    w, info = dctr_weights(gen, ref, seed=2)
    assert abs(w.mean() - 1) < 1e-12
    # <x> under 1 + a x on [-1, 1] is a / 3.
    mean_w = np.average(gen[:, 3], weights=w)
    assert abs(mean_w - 0.5 / 3) < 0.03, mean_w
    assert abs(gen[:, 3].mean()) < 0.02  # the unweighted sample is flat
    assert 0.5 < info["ess_fraction"] < 1.0


def test_identical_samples_give_near_unit_weights():
    rng = np.random.default_rng(3)
    w, info = dctr_weights(_sample(15_000, 0.2, rng), _sample(15_000, 0.2, rng), seed=4)
    assert info["ess_fraction"] > 0.9


def test_folded_classifier_corrects_a_symmetric_mismodelling():
    """fold=True classifies on the folded point: a mismodelling symmetric under P1 <-> P2
    (1 + a cos^2 theta_1) is corrected, and <cos theta_1> stays 0."""
    rng = np.random.default_rng(5)

    def sample(n, a):
        x = rng.uniform(-1, 1, 4 * n)
        x = x[rng.uniform(0, 1 + a, 4 * n) < 1 + a * x**2][:n]
        return np.column_stack([rng.uniform(1.0, 3.0, n), rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n),
                                x, rng.uniform(-np.pi, np.pi, n)])

    gen, ref = sample(25_000, 0.0), sample(25_000, 0.5)
    w, info = dctr_weights(gen, ref, seed=2, fold=True)
    assert info["features"] == "folded"
    expected = (1 / 3 + 0.5 / 5) / (1 + 0.5 / 3)  # <x^2> under 1 + a x^2
    # (the regularised classifier closes about 3/4 of the gap, as without folding)
    assert abs(np.average(gen[:, 3] ** 2, weights=w) - expected) < 0.015
    assert abs(np.mean(gen[:, 3] ** 2) - 1 / 3) < 0.01  # unweighted: flat, 0.038 below
    assert abs(np.average(gen[:, 3], weights=w)) < 0.02
