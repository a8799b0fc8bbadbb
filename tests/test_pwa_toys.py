"""Toy generation (pwa.toys): the fast mass-envelope proposal is exact, deterministic and checked."""

import numpy as np
import pytest
from scipy import stats

from fastsim.events import Detector, Events, PhaseSpace
from pwa import GenerationError, Model
from pwa.toys import MassEnvelope, _intensity_function, estimate_mass_envelope, iter_toys

# Two narrow peaks and an S-D interference: the case the flat proposal handles badly.
CARD = {
    "resonances": [
        {"name": "S", "spin": 0, "lineshape": {"type": "BW", "mass": 1.5, "width": 0.06},
         "couplings": {0: [1.0, 0.0]}},
        {"name": "D", "spin": 2, "lineshape": {"type": "BW", "mass": 2.0, "width": 0.08},
         "couplings": {0: [1.2, 0.4], 1: [0.9, 1.5], 2: [0.5, -0.7]}},
    ],
    "reference": "S",
}
N = 6000
SMALL = dict(n_bins=60)  # fewer bins than the default keep the envelope search quick


@pytest.fixture(scope="module")
def model():
    return Model.from_card(CARD)


@pytest.fixture(scope="module")
def fast(model):
    st: dict = {}
    ev = Events.concatenate(list(iter_toys(model, N, Detector(None), seed=3, chunk_size=20000,
                                           stats=st, **SMALL)))
    return ev, st


@pytest.fixture(scope="module")
def weighted_phase_space(model):
    """Flat phase space weighted with I: the exact target, as (hv, weights)."""
    hv = PhaseSpace(model.reaction).sample(200_000, np.random.default_rng(99))
    return hv, _intensity_function(model, model.initial_values())(hv)


def weighted_ecdf(x, w, at):
    order = np.argsort(x)
    cdf = np.cumsum(w[order]) / w.sum()
    return np.concatenate([[0.0], cdf])[np.searchsorted(x[order], at, side="right")]


@pytest.mark.parametrize("col", [0, 1, 3, 4])
def test_fast_toys_follow_the_intensity(fast, weighted_phase_space, col):
    """KS test of m, cos theta_X, cos theta_1, phi_1 against I-weighted flat phase space."""
    ev, _ = fast
    x = ev.helicity_variables[:, col]
    hv, w = weighted_phase_space
    # Effective size of the weighted reference, for the two-sample KS distribution.
    n_ref = w.sum() ** 2 / np.sum(w**2)
    xs = np.sort(x)
    d = np.max(np.abs(weighted_ecdf(hv[:, col], w, xs) - np.arange(1, len(xs) + 1) / len(xs)))
    d = max(d, np.max(np.abs(weighted_ecdf(hv[:, col], w, xs) - np.arange(len(xs)) / len(xs))))
    n_eff = len(xs) * n_ref / (len(xs) + n_ref)
    p = stats.kstwo.sf(d, int(round(n_eff)))
    assert p > 1e-3, (col, d, p)


def test_fast_and_flat_generators_agree(model, fast):
    """Two-sample KS and binned chi2 of m and cos theta_1 between the two exact generators."""
    ev, _ = fast
    flat = Events.concatenate(list(iter_toys(model, 3000, Detector(None), seed=4, chunk_size=50000,
                                             proposal="flat")))
    a, b = ev.helicity_variables, flat.helicity_variables
    for col in (0, 3):
        assert stats.ks_2samp(a[:, col], b[:, col]).pvalue > 1e-3, col
    edges = np.linspace(model.reaction.m_min, model.reaction.m_max, 31)
    ca, _ = np.histogram(a[:, 0], edges)
    cb, _ = np.histogram(b[:, 0], edges)
    used = (ca + cb) > 0
    ka, kb = np.sqrt(cb.sum() / ca.sum()), np.sqrt(ca.sum() / cb.sum())  # unequal sample sizes
    chi2 = np.sum((ka * ca[used] - kb * cb[used]) ** 2 / (ca[used] + cb[used]))
    assert stats.chi2.sf(chi2, used.sum() - 1) > 1e-3, chi2


def test_fast_generator_is_efficient(fast):
    _, st = fast
    assert st["proposal"] == "mass" and st["n_accepted"] == N
    # Narrow peaks: the flat proposal keeps a few per cent, the envelope a large fraction.
    assert st["n_hit"] / st["n_proposed"] > 0.1, st


def test_deterministic_for_a_seed(model):
    def run(seed, **kw):
        return Events.concatenate(list(iter_toys(model, 500, Detector(None), seed=seed, chunk_size=5000,
                                                 **kw))).momenta
    first = run(7, **SMALL)
    assert np.array_equal(first, run(7, **SMALL))
    # A precomputed envelope (build once, generate many) gives the same events for the same seed
    # when it is the one the seed would have built.
    rng = np.random.default_rng(7)
    env = estimate_mass_envelope(model, model.initial_values(), seed=int(rng.integers(2**31)), **SMALL)
    assert np.array_equal(first, run(7, envelope=env))
    assert not np.array_equal(first, run(8, envelope=env))


def test_envelope_bounds_the_density(model):
    """The envelope (no margin) is at or above f = I q p at dense random points in every bin."""
    p = model.initial_values()
    env = estimate_mass_envelope(model, p, seed=1, **SMALL)
    assert isinstance(env, MassEnvelope) and env.n_bins == 60
    rng = np.random.default_rng(5)
    hv, b = env.propose(100_000, rng)
    f = _intensity_function(model, p)(hv) * PhaseSpace(model.reaction).unnormalised_m_density(hv[:, 0])
    assert np.all(f <= env.heights[b] * 1.0001), np.max(f / env.heights[b])
    # Proposals follow the bin probabilities.
    counts = np.bincount(b, minlength=env.n_bins)
    assert np.allclose(counts / counts.sum(), env.bin_probabilities, atol=0.005)


def test_envelope_breach_fails_loudly(model, monkeypatch):
    """An envelope below the density must stop generation, not bias it."""
    import pwa.toys as toys

    real = toys.estimate_mass_envelope

    def too_low(*args, **kwargs):
        env = real(*args, **kwargs)
        return MassEnvelope(env.edges, 0.3 * env.heights, env.i_max, env.margin)

    monkeypatch.setattr(toys, "estimate_mass_envelope", too_low)
    with pytest.raises(GenerationError, match="above its accept-reject bound"):
        list(iter_toys(model, 2000, Detector(None), seed=1, chunk_size=20000, **SMALL))


def test_bad_options(model):
    with pytest.raises(ValueError, match="unknown proposal"):
        next(iter_toys(model, 10, Detector(None), proposal="vegas"))
    with pytest.raises(ValueError, match="margin"):
        next(iter_toys(model, 10, Detector(None), margin=1.0))


def test_phase_space_toys_restart_when_the_scan_misses_the_maximum():
    """A scan far too small for the bound: events above it among the held-back proposals restart the
    generation with a raised bound (the sample is then complete and the same for the same seed); past the
    hold-back such an event is an error. A small sample is held back whole."""
    from fastsim.events import Detector, Events
    from pwa import GenerationError, Model
    from pwa.toys import _iter_phase_space_toys

    model = Model.from_card("models/d0_kpipi0.yaml")
    p = model.initial_values()
    stats: dict = {}
    runs = [Events.concatenate(list(_iter_phase_space_toys(model, 2000, Detector(None), p, 3, 1.05, 20_000,
                                                           stats, n_scan=50, hold=10**9)))
            for _ in range(2)]
    assert stats["restarts"] >= 1 and len(runs[0]) == 2000
    np.testing.assert_array_equal(runs[0].momenta, runs[1].momenta)
    whole = Events.concatenate(list(_iter_phase_space_toys(model, 2000, Detector(None), p, 3, 1.05, 20_000, stats,
                                                           n_scan=50, hold=0)))
    np.testing.assert_array_equal(whole.momenta, runs[0].momenta)  # held whole: hold=0 does not matter
    with pytest.raises(GenerationError, match="above its accept-reject bound"):
        list(_iter_phase_space_toys(model, 20_000, Detector(None), p, 3, 1.0001, 5_000, None, n_scan=20, hold=0,
                                    hold_events=0))
