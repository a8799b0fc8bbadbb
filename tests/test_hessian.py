"""The structured exact Hessian (pwa.hessian) against autodiff and finite differences.

Every case compares StructuredHessian with ``jax.hessian`` of Model.nll on the
same caches: floating Breit-Wigner and Flatte parameters in J/psi -> gamma
K+ K- (exact per-event MC, several chunks with padding, signed data weights,
the binned normalisation's pseudo-events), fixed lineshapes (folded data,
stored normalisation matrix), and psi(2S) -> phi K+ K- K+ K- with the phi's
and two f states' masses and widths floating (four permutations, products of
two lineshapes). One case also checks the gradient's finite differences, and
one a fit: its reported Hessian, with the bounds' transform, is the autodiff
one of the fit's objective with a fraction-sum penalty.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _shared import FAST, SMALL_CARD, flat_events
from fastsim.events import Events
from fastsim.events.nbody import NBodyPhaseSpace
from pwa import Model
from pwa.binned import binned_cache
from pwa.card import load_model_card
from pwa.fit_result import FitConfig
from pwa.hessian import StructuredHessian
from pwa.optimize import Minimizer
from pwa.problem import FitProblem
from fastsim.events.resources import shipped


def floating(card: dict, params=("mass", "width", "g_pipi")) -> dict:
    card = copy.deepcopy(card)
    for r in card["resonances"]:
        r["float"] = [k for k in params if k in r["lineshape"]]
    return card


def four_kaons(*names: str) -> Model:
    """R0 in psi(2S) -> phi K+ K- K+ K- with these states' lineshape parameters floating."""
    card = load_model_card(shipped("r0.yaml")).to_dict()
    for r in card["resonances"]:
        if r["name"] in names:
            r["float"] = [k for k in ("mass", "width", "g_pipi") if k in r["lineshape"]]
    return Model.from_card(card)


def moved(model: Model) -> jnp.ndarray:
    return jnp.asarray(model.initial_values() * (1 + 0.02 * np.cos(np.arange(model.n_free))))


def compiled(fn):
    return jax.jit(fn, compiler_options=FAST)


def autodiff(fn):
    return compiled(jax.hessian(fn))


def assert_same(H, ref, rel=1e-9):
    H, ref = np.asarray(H), np.asarray(ref)
    assert np.all(np.isfinite(H))
    np.testing.assert_allclose(H, ref, rtol=0, atol=rel * np.abs(ref).max())
    d = np.diag(ref)
    np.testing.assert_allclose(np.diag(H), d, rtol=1e-7, atol=rel * np.abs(ref).max())


@pytest.fixture(scope="module")
def jpsi():
    model = Model.from_card(floating(SMALL_CARD))
    rng = np.random.default_rng(3)
    data_ev = flat_events(400, 1)
    w = rng.uniform(-0.2, 1.5, len(data_ev))  # signed weights, positive sum (sideband subtraction)
    data = model.precompute(Events(data_ev.momenta, reaction=data_ev.reaction, weights=w))
    mc = model.precompute(flat_events(1500, 2))
    return model, data, mc


def test_floating_lineshapes_with_event_mc_in_chunks(jpsi):
    model, data, mc = jpsi
    p = moved(model)
    ref = autodiff(model.nll)(p, data, mc)
    assert_same(compiled(StructuredHessian(model, chunk=256))(p, data, mc), ref)  # 2 data, 6 MC chunks, padded


def test_binned_normalisation_through_pseudo_events(jpsi):
    model, data, mc = jpsi
    binned = binned_cache(model, mc, 120)
    p = moved(model)
    assert_same(compiled(StructuredHessian(model))(p, data, binned), autodiff(model.nll)(p, data, binned))


def test_against_finite_differences_of_the_gradient(jpsi):
    model, data, mc = jpsi
    p = np.asarray(moved(model))
    grad = compiled(jax.grad(model.nll))
    H = np.asarray(compiled(StructuredHessian(model))(jnp.asarray(p), data, mc))
    step = 1e-5 * np.maximum(np.abs(p), 1e-2)
    fd = np.stack([(np.asarray(grad(jnp.asarray(p + e), data, mc)) - np.asarray(grad(jnp.asarray(p - e), data, mc)))
                   / (2 * e[i]) for i, e in enumerate(np.diag(step))], axis=1)
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-5 * np.abs(H).max())


def test_fixed_lineshapes_folded_data_and_stored_matrix():
    model = Model.from_card(SMALL_CARD)
    data = model.precompute(flat_events(500, 4))
    mc = model.precompute(flat_events(2000, 5), normalisation_matrix=True)
    assert data.folded and mc.normalisation_matrix is not None
    p = moved(model)
    assert_same(compiled(StructuredHessian(model))(p, data, mc), autodiff(model.nll)(p, data, mc))


def test_four_kaons_products_of_lineshapes_and_permutations():
    model = four_kaons("phi(1020)", "f0(980)", "f2(2340)")
    assert len(model.amplitude.permutations) == 4
    assert any(len(f) == 2 for f in model._sub_factors)  # phi x f_J
    rng = np.random.default_rng(8)
    ps = NBodyPhaseSpace(model.reaction)
    data = model.precompute(Events(ps.sample(200, rng), reaction=model.reaction))
    mc = model.precompute(Events(ps.sample(600, rng), reaction=model.reaction))
    p = moved(model)
    assert_same(compiled(StructuredHessian(model, chunk=400))(p, data, mc), autodiff(model.nll)(p, data, mc))


def test_a_fit_reports_the_exact_hessian_of_its_objective():
    """Fixed lineshapes with a fraction-sum penalty: the structured NLL Hessian plus the penalty's."""
    model = Model.from_card(SMALL_CARD)
    problem = FitProblem.build(model, flat_events(400, 11), flat_events(1500, 12))
    config = FitConfig(sf_target=1.1, sf_lambda=0.05)
    mz = problem.minimizer(config)
    p = moved(model)
    f = problem.objective(config)
    args = problem.arguments(config)
    assert_same(mz.hessian(p), autodiff(f)(p, *args))
    # The internal (bounded) space: the transform's chain rule against autodiff through it.
    u = jnp.asarray(mz.transform.to_internal(np.asarray(p)))
    assert mz.transform.lower.max() == 0.0  # magnitudes bounded below: a non-linear transform
    assert_same(mz.internal(np.asarray(u))[2], autodiff(lambda v, *a: f(mz.transform.to_physical(v), *a))(u, *args))


def test_fraction_sum_jets_four_kaons():
    """SF = sum_R F_R with its exact first and second derivatives, against autodiff of the fractions."""
    model = four_kaons("phi(1020)", "f0(980)", "f2'(1525)")
    rng = np.random.default_rng(9)
    ps = NBodyPhaseSpace(model.reaction)
    gen = model.precompute(Events(ps.sample(700, rng), reaction=model.reaction, weights=rng.uniform(0.5, 2.0, 700)))
    p = moved(model)
    sf, dsf, d2sf = compiled(StructuredHessian(model, chunk=300).fraction_sum)(p, gen)  # 3 chunks, padded

    def trace(q):
        return jnp.trace(model.fit_fractions(q, gen))

    np.testing.assert_allclose(float(sf), float(trace(p)), rtol=1e-12)
    ref_g = np.asarray(compiled(jax.grad(trace))(p))
    np.testing.assert_allclose(np.asarray(dsf), ref_g, rtol=0, atol=1e-10 * np.abs(ref_g).max())
    assert_same(d2sf, autodiff(trace)(p))


def test_fraction_sum_penalty_hessian_with_floating_lineshapes():
    """A floating fit's objective with a fraction-sum penalty: structured NLL plus structured penalty."""
    model = Model.from_card(floating(SMALL_CARD))
    problem = FitProblem.build(model, flat_events(300, 13), flat_events(900, 14), quadrature_panels=4)
    assert problem.gen_cache.normalisation_matrix is None  # the events' path, not a stored matrix
    config = FitConfig(sf_target=1.3, sf_lambda=0.2)
    p = moved(model)
    assert_same(problem.minimizer(config).hessian(p), autodiff(problem.objective(config))(p, *problem.arguments(config)))


def test_the_default_minimizer_keeps_autodiff():
    mz = Minimizer(lambda p: jnp.sum(p**4) + p[0] * p[1], 2, [(0.0, 3.0), None])
    np.testing.assert_allclose(np.asarray(mz.hessian(jnp.asarray([1.0, 2.0]))), [[12.0, 1.0], [1.0, 48.0]])
