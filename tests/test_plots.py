"""Projection histograms: normalisation and pulls."""

import numpy as np

from pwa.plots import projection_histograms


def test_model_is_scaled_to_data_and_pulls_are_standard_normal():
    rng = np.random.default_rng(1)
    data = rng.uniform(0, 1, 20_000)
    mc = rng.uniform(0, 1, 400_000)
    h = projection_histograms(data, np.ones_like(data), mc, np.full(mc.size, 0.3), 40, 0.0, 1.0)
    assert abs(h["model"].sum() - 20_000) < 1e-6
    assert abs(h["pull"].mean()) < 0.4 and 0.6 < h["pull"].std() < 1.4


def test_empty_data_bin_has_a_moderate_pull():
    data = np.full(100, 0.25)
    mc = np.concatenate([np.full(900, 0.25), np.full(100, 0.75)])
    h = projection_histograms(data, np.ones(100), mc, np.ones(1000), 2, 0.0, 1.0)
    # 100 data events expected as 90 + 10: the empty bin expects 10, pull about -sqrt(10).
    assert -3.5 < h["pull"][1] < -2.5
