"""Projection histograms: normalisation, pulls and the errors of several entries per event."""

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


def test_entries_of_one_event_are_counted_as_correlated():
    """Two entries of one event in one bin add (2 w)^2 to the variance, not 2 w^2."""
    data = np.array([[0.1, 0.2], [0.1, 0.9]])  # event 0: both entries in bin 0
    w = np.array([2.0, 3.0])
    h = projection_histograms(data, w, data, w, 2, 0.0, 1.0)
    assert h["data"].tolist() == [7.0, 3.0]
    assert (h["data_err"] ** 2).tolist() == [4.0**2 + 3.0**2, 3.0**2]
    assert abs(h["model"].sum() - 2 * w.sum()) < 1e-12
    assert np.allclose(h["pull"], 0.0)


def test_values_at_the_range_ends_are_kept():
    """The upper edge belongs to the last bin (as in np.histogram); rounding at a limit stays inside."""
    x = np.array([0.0, 1.0, 1.0 + 1e-12, -1e-12, 1.5])
    h = projection_histograms(x, np.ones(5), x, np.ones(5), 4, 0.0, 1.0)
    assert h["data"].tolist() == [2.0, 0.0, 0.0, 2.0]
