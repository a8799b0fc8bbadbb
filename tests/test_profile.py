"""Profile-likelihood intervals (pwa.profile).

Near-Gaussian case (6000 events, two resonances, fixed lineshapes): the profile intervals of a coupling
and of a fit fraction agree with the Hessian errors within 10 % on each side, and the profiled
Delta NLL at each end is 0.5. Small sample (150 events): the ends, refitted independently, are at
Delta NLL = 0.5, and the interval is not symmetric (the Hessian error is). A 2-sigma interval (delta = 2) is
about twice the 1-sigma one.
"""

import pytest

from _shared import TWO_STATE_CARD, flat_events, without_floats
from fastsim.events import Detector, Events
from pwa import Model
from pwa.errors import FitError
from pwa.fit import fit
from pwa.fit_result import FitConfig
from pwa.problem import FitProblem
from pwa.profile import profile_interval
from pwa.toys import iter_toys

CONFIG = FitConfig(quadrature_panels=40)


@pytest.fixture(scope="module")
def model():
    return Model.from_card(without_floats(TWO_STATE_CARD))


@pytest.fixture(scope="module")
def big(model):
    data = Events.concatenate(list(iter_toys(model, 6000, Detector(None), seed=51)))
    problem = FitProblem.build(model, data, flat_events(30_000, 52), quadrature_panels=40)
    return problem, fit(model, None, None, CONFIG, problem=problem)


def test_profile_agrees_with_the_hessian_near_the_gaussian_limit(big):
    problem, result = big
    assert result.converged
    name = "f2'(1525):c0.mag"
    iv = profile_interval(problem, result, name, CONFIG)
    assert iv.lower < iv.value < iv.upper and not iv.notes
    assert iv.minus / iv.hessian_error == pytest.approx(1.0, abs=0.1)
    assert iv.plus / iv.hessian_error == pytest.approx(1.0, abs=0.1)
    # the crossings are where the profiled Delta NLL is 0.5
    from pwa.profile import _Profile

    prof = _Profile(problem, result, name, CONFIG)
    for end in (iv.lower, iv.upper):
        assert prof.delta(end, prof.start)[0] == pytest.approx(0.5, abs=2e-3)
    two = profile_interval(problem, result, name, CONFIG, delta=2.0)
    assert (two.upper - two.lower) / (iv.upper - iv.lower) == pytest.approx(2.0, abs=0.25)


def test_fraction_profile(big):
    problem, result = big
    iv = profile_interval(problem, result, "F(f0(1710))", CONFIG)
    assert iv.minus / iv.hessian_error == pytest.approx(1.0, abs=0.1)
    assert iv.plus / iv.hessian_error == pytest.approx(1.0, abs=0.1)
    assert iv.to_dict()["lower"] == iv.lower


def test_small_sample_profile_crossings_from_independent_minimisations(model):
    """150 events: far from the Gaussian limit; each end, refitted from the best fit (not warm-started
    from the neighbouring profile points), has Delta NLL = 0.5, and the interval is asymmetric."""
    from pwa.profile import _Profile

    data = Events.concatenate(list(iter_toys(model, 150, Detector(None), seed=53)))
    problem = FitProblem.build(model, data, flat_events(30_000, 52), quadrature_panels=40)
    result = fit(model, None, None, CONFIG, problem=problem)
    name = "f2'(1525):c0.mag"
    iv = profile_interval(problem, result, name, CONFIG)
    prof = _Profile(problem, result, name, CONFIG)
    for end in (iv.lower, iv.upper):
        assert prof.delta(end, prof.start)[0] == pytest.approx(0.5, abs=2e-3)
    assert iv.plus != pytest.approx(iv.minus, rel=0.02), (iv.minus, iv.plus)


def test_unknown_quantity_is_refused(big):
    problem, result = big
    with pytest.raises(FitError, match="neither a fit parameter"):
        profile_interval(problem, result, "f9(9999):mass", CONFIG)
