"""Toy-calibrated significance (pwa.significance_toys).

H1: f0(1710) (reference), f2'(1525) and f0(1500) (spin 0: k = 2); H0 without the f0(1500). On data
generated from H0 the toys' 2 Delta NLL must look like chi2(2) (mean 2; 25 toys give a mean with a
standard error of 0.4, so the test allows 0.9-3.6) and the observed p-value is a number in (0, 1]
that agrees with Wilks' roughly; on data with a strong f0(1500) no toy comes near, the toy sigma is
a lower bound, and Wilks' is far above it. Same seed, same toys.
"""

import copy

import numpy as np
import pytest

from _shared import TWO_STATE_CARD, flat_events, without_floats
from fastsim.events import Detector, Events
from pwa import Model
from pwa.errors import FitError
from pwa.fit import fit
from pwa.fit_result import FitConfig
from pwa.significance_toys import toy_significances
from pwa.toys import iter_toys

CONFIG = FitConfig(quadrature_panels=40)
N_DATA, N_MC, N_TOYS = 1500, 20_000, 25


def card(f0_1500: list[float]) -> dict:
    raw = copy.deepcopy(without_floats(TWO_STATE_CARD))
    raw["resonances"].append({"name": "f0(1500)", "spin": 0, "lineshape": {"type": "BW", "mass": 1.506,
                                                                          "width": 0.112},
                              "couplings": {0: f0_1500}})
    return raw


@pytest.fixture(scope="module")
def mc():
    return flat_events(N_MC, 41)


@pytest.fixture(scope="module")
def h1():
    return Model.from_card(card([0.3, 0.0]))


def data_from(raw: dict, seed: int) -> Events:
    return Events.concatenate(list(iter_toys(Model.from_card(raw), N_DATA, Detector(None), seed=seed)))


@pytest.fixture(scope="module")
def null_case(h1, mc):
    data = data_from(without_floats(TWO_STATE_CARD), 42)
    result = fit(h1, data, mc, CONFIG)
    (sig,) = toy_significances(h1, data, mc, result, N_TOYS, CONFIG, names=["f0(1500)"], seed=5)
    return data, result, sig


def test_null_toys_follow_chi2_with_two_degrees_of_freedom(null_case):
    _, result, sig = null_case
    assert result.converged
    assert sig.n_parameters == 2 and sig.n_toys + sig.n_failed == N_TOYS and sig.n_toys >= N_TOYS - 2
    assert 0.9 < sig.toy_wilks_mean < 3.6, sig.toy_delta_nll
    assert np.all(sig.toy_delta_nll > -1e-3)  # H1 contains H0: its minimum is never higher
    assert 0 < sig.p_value <= 1 and sig.p_value == pytest.approx((1 + sig.n_above) / (1 + sig.n_toys))
    assert abs(sig.p_value - sig.wilks_p_value) < 0.3, (sig.p_value, sig.wilks_p_value)


def test_same_seed_same_toys(h1, mc, null_case):
    data, result, sig = null_case
    (again,) = toy_significances(h1, data, mc, result, 3, CONFIG, names=["f0(1500)"], seed=5)
    np.testing.assert_allclose(again.toy_delta_nll, sig.toy_delta_nll[:3], rtol=1e-6, atol=1e-6)


def test_a_strong_signal_gives_a_lower_bound(h1, mc):
    data = data_from(card([1.2, 0.8]), 43)
    result = fit(h1, data, mc, CONFIG)
    (sig,) = toy_significances(h1, data, mc, result, 8, CONFIG, names=["f0(1500)"], seed=6)
    assert sig.n_above == 0 and sig.lower_bound
    assert sig.p_value == pytest.approx(1 / (1 + sig.n_toys))
    assert sig.wilks_sigma > 5 and sig.sigma < sig.wilks_sigma
    assert "sigma from" in str(sig) and sig.to_dict()["lower_bound"]


def test_refusals(h1, mc, null_case):
    data, result, _ = null_case
    weighted = Events(data.momenta, np.full(len(data), 0.5), reaction=data.reaction)
    with pytest.raises(FitError, match="unweighted data"):
        toy_significances(h1, weighted, mc, result, 5, CONFIG)
    with pytest.raises(FitError, match="10 MC events per data event"):
        toy_significances(h1, data, mc.subset(slice(0, 5000)), result, 5, CONFIG)
    with pytest.raises(FitError, match="no resonance 'f0\\(1370\\)'"):
        toy_significances(h1, data, mc, result, 5, CONFIG, names=["f0(1370)"])
