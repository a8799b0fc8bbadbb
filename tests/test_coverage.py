"""MC coverage check (pwa.coverage): MC from the data's generator covers the
data, for a three-body and a four-body reaction and for intensity-distributed
toys; MC of a detector with |cos theta| < 0.3 does not cover data of the
default detector."""

import numpy as np
import pytest

from fastsim.events import (JPSI_GAMMA_KK, Detector, DetectorCard, Events, conventional_mc,
                            load_detector_card)
from pwa.amplitude import Model
from pwa.card import load_model_card
from pwa.coverage import CoverageResult, mc_coverage, tree_coordinates
from pwa.toys import iter_toys

#: Tracks and photons only within |cos theta| < 0.3 (the end cap switched off).
TIGHT = {"charged": {"cos_theta_max": 0.3},
         "photon": {"barrel": {"cos_theta_max": 0.3}, "endcap": {"efficiency": 0.0}}}


@pytest.fixture(scope="module")
def default_detector():
    return Detector(load_detector_card("default"))


@pytest.fixture(scope="module")
def four_body():
    return load_model_card("models/r0.yaml").reaction.to_reaction()


@pytest.fixture(scope="module")
def kk_data(default_detector):
    return conventional_mc(5000, default_detector, reaction=JPSI_GAMMA_KK, seed=1)


def test_coordinates_are_the_tree_variables_in_the_unit_cube(kk_data, four_body):
    x = tree_coordinates(kk_data)
    assert x.shape == (len(kk_data), 5)  # 3 n - 4
    assert np.all((x >= 0) & (x <= 1))
    hv = kk_data.helicity_variables  # m, cos theta_X, phi_X, cos theta_1, phi_1: the same chain
    r = JPSI_GAMMA_KK
    np.testing.assert_allclose(x[:, 0], (hv[:, 0] - r.m_min) / (r.m_max - r.m_min), atol=1e-9)
    np.testing.assert_allclose(x[:, 1:], np.c_[(hv[:, 1] + 1) / 2, hv[:, 2] / (2 * np.pi) + 0.5,
                                               (hv[:, 3] + 1) / 2, hv[:, 4] / (2 * np.pi) + 0.5], atol=1e-9)
    four = conventional_mc(200, Detector(None), reaction=four_body, seed=3, chunk_size=200)
    x4 = tree_coordinates(four)
    assert x4.shape == (200, 8) and np.all((x4 >= 0) & (x4 <= 1))


@pytest.mark.parametrize("detector", ["none", "default"])
def test_mc_of_the_same_generator_covers_the_data(detector):
    det = Detector(load_detector_card(detector))
    data = conventional_mc(5000, det, reaction=JPSI_GAMMA_KK, seed=1)
    mc = conventional_mc(50_000, det, reaction=JPSI_GAMMA_KK, seed=2)
    res = mc_coverage(data, mc)
    assert res.covered, res.message
    assert res.uncovered_fraction < 0.002 and res.control_fraction < 0.002
    assert (res.n_data, res.n_mc, res.n_control, res.dimensions) == (5000, 50_000, 5000, 5)
    assert res.message.startswith("normalisation MC covers the data: ")


def test_four_body_mc_covers_four_body_data(four_body):
    det = Detector(None)
    data = conventional_mc(5000, det, reaction=four_body, seed=1)
    mc = conventional_mc(50_000, det, reaction=four_body, seed=2)
    res = mc_coverage(data, mc)
    assert res.covered, res.message
    assert res.dimensions == 8 and res.uncovered_fraction < 0.002 and res.control_fraction < 0.002


def test_phase_space_mc_covers_intensity_distributed_toys(default_detector):
    model = Model.from_card(load_model_card("models/jpsi_gamma_kk.yaml"))
    toys = Events.concatenate(list(iter_toys(model, 3000, default_detector, seed=5)))
    mc = conventional_mc(30_000, default_detector, reaction=JPSI_GAMMA_KK, seed=6)
    res = mc_coverage(toys, mc)
    assert res.covered, res.message
    assert res.uncovered_fraction < 0.002


def test_mc_of_a_narrower_detector_does_not_cover_the_data(kk_data):
    mc = conventional_mc(50_000, Detector(DetectorCard.model_validate(TIGHT)), reaction=JPSI_GAMMA_KK, seed=2)
    res = mc_coverage(kk_data, mc)
    assert not res.covered
    # 90 % of the data lie outside the narrow acceptance: the ball test alone flags 0.26, with the
    # one-dimensional test 0.88
    assert res.uncovered_fraction > 0.7 and res.marginal_fraction > 0.7
    assert res.control_fraction < 0.002  # the MC covers itself: the sample sizes are not the cause
    assert res.message.startswith(f"normalisation MC does not cover the data: {100 * res.uncovered_fraction:.3g} "
                                  "% of data events (threshold 1 %) have no MC event within the distance of "
                                  "their 10th-nearest data neighbour (5 tree variables) or lie in a "
                                  "one-dimensional bin without MC")
    d = res.to_dict()
    assert d["covered"] is False and d["checked"] is True and d["message"] == res.message and d["k"] == 10
    assert CoverageResult(**{k: v for k, v in d.items() if k not in ("message", "checked")}) == res


def test_too_few_data_events_are_not_checked(kk_data):
    mc = conventional_mc(1000, Detector(None), reaction=JPSI_GAMMA_KK, seed=2)
    res = mc_coverage(kk_data.subset(slice(0, 10)), mc)
    assert not res.checked and res.covered and np.isnan(res.uncovered_fraction)
    assert res.message == ("normalisation MC coverage not checked: 10 data events of non-zero weight, "
                           "the check needs more than k = 10")
    assert mc_coverage(kk_data.subset(slice(0, 11)), mc).checked


def test_zero_weight_events_are_left_out_and_the_mc_subsample_is_seeded(kk_data):
    mc = conventional_mc(20_000, Detector(None), reaction=JPSI_GAMMA_KK, seed=2)
    far = conventional_mc(20_000, Detector(DetectorCard.model_validate(TIGHT)), reaction=JPSI_GAMMA_KK, seed=3)
    # The covering half carries weight 0: it does not count, and the rest does not cover.
    both = Events.concatenate([mc, far])
    weighted = Events(both.momenta, np.r_[np.zeros(len(mc)), np.ones(len(far))], reaction=JPSI_GAMMA_KK)
    res = mc_coverage(kk_data, weighted)
    assert res.n_mc == len(far) and not res.covered
    a, b = mc_coverage(kk_data, mc, max_mc=5000, seed=4), mc_coverage(kk_data, mc, max_mc=5000, seed=4)
    assert a == b and a.n_mc == 5000 and a.n_control == 2500


def test_bad_inputs(kk_data, four_body):
    mc = conventional_mc(1000, Detector(None), reaction=JPSI_GAMMA_KK, seed=2)
    with pytest.raises(ValueError, match="different reactions"):
        mc_coverage(kk_data, conventional_mc(100, Detector(None), reaction=four_body, seed=2, chunk_size=100))
    with pytest.raises(ValueError, match="no event of non-zero weight"):
        mc_coverage(kk_data, Events(mc.momenta, np.zeros(len(mc)), reaction=JPSI_GAMMA_KK))
    with pytest.raises(ValueError, match="k must be at least 1"):
        mc_coverage(kk_data, mc, k=0)


def test_a_thin_shell_without_mc_is_seen(kk_data):
    """MC of charged |cos theta| < 0.8 against data of < 0.93: about 20 % of the data lie in a shell
    thinner than the ball test resolves; the one-dimensional test in the lab variables sees it."""
    narrow = {"charged": {"cos_theta_max": 0.8}}
    mc = conventional_mc(50_000, Detector(DetectorCard.model_validate(narrow)), reaction=JPSI_GAMMA_KK, seed=2)
    res = mc_coverage(kk_data, mc)
    assert not res.covered and res.marginal_fraction > 0.1, res.message
    outside = np.abs(kk_data.momenta[:, 1:, 3] / np.linalg.norm(kk_data.momenta[:, 1:, 1:], axis=-1)) > 0.8
    assert res.uncovered_fraction <= np.mean(outside.any(axis=1)) + 0.01  # a lower bound of the truth


def test_four_body_mc_of_a_narrower_detector_does_not_cover(four_body):
    data = conventional_mc(5000, Detector(load_detector_card("default")), reaction=four_body, seed=1)
    mc = conventional_mc(50_000, Detector(DetectorCard.model_validate({"charged": {"cos_theta_max": 0.8}})),
                         reaction=four_body, seed=2)
    res = mc_coverage(data, mc)
    assert not res.covered and res.uncovered_fraction > 0.1, res.message
