"""Amplitude, likelihood and fit fractions against analytic forms and slow references."""

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from sympy.physics.quantum.spin import Rotation

from fastsim.events import JPSI_GAMMA_KK, Detector, Events, PhaseSpace
from pwa import Model, PrecisionError, load_model_card
from pwa.fractions import fit_fractions_quadrature, phase_space_quadrature
from pwa.toys import iter_toys

TABLE1 = {"f0(980)": 39.5, "f2(2340)": 37.1, "f2'(1525)": 24.7, "f0(1710)": 8.30,
          "f2(1270)": 3.16, "f2(2150)": 2.22}

MIXED = {
    "resonances": [
        {"name": "f0(980)", "spin": 0, "lineshape": {"type": "Flatte", "mass": 0.979, "g_pipi": 0.107},
         "couplings": {0: [1.0, 0.0]}},
        {"name": "f2(1270)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.275, "width": 0.187},
         "float": ["mass", "width"], "couplings": {0: [2.0, 0.3], 1: [1.5, -1.1], 2: [0.7, 2.0]}},
        {"name": "f4(2050)", "spin": 4, "lineshape": {"type": "BW_const", "mass": 2.018, "width": 0.237},
         "couplings": {0: [0.9, 1.0], 2: [0.5, -0.4]}},
        {"name": "NR", "spin": 0, "lineshape": {"type": "NR"}, "couplings": {0: [0.3, 2.5]}},
    ],
    "reference": "f0(980)",
}


def flat_events(n, seed):
    hv = PhaseSpace(JPSI_GAMMA_KK).sample(n, np.random.default_rng(seed))
    return Events.from_helicity_variables(hv, JPSI_GAMMA_KK)


# --- independent slow reference: explicit helicity loops, sympy Wigner d -------


@lru_cache(maxsize=None)
def sympy_small_d(j, m, mp):
    beta = sympy.Symbol("beta")
    expr = Rotation.d(j, m, mp, beta).doit()
    return sympy.lambdify(beta, sympy.simplify(expr), "numpy")


def slow_intensity(model, events, only=None):
    """sum_{M,lg} |A|^2 with explicit loops; couplings and lineshapes from the model's card."""
    hv = events.helicity_variables
    m, th_x, ph_x, th_1, ph_1 = hv[:, 0], np.arccos(hv[:, 1]), hv[:, 2], np.arccos(hv[:, 3]), hv[:, 4]
    total = np.zeros(len(m))
    full = np.asarray(model.full_parameters(jnp.asarray(model.initial_values())))
    F = np.asarray(model._lineshapes_full(jnp.asarray(full), jnp.asarray(m)))
    for M in (1, -1):
        for lg in (1, -1):
            amp = np.zeros(len(m), complex)
            for r, res in enumerate(model.card.resonances):
                if only is not None and res.name not in only:
                    continue
                for lr in range(-res.spin, res.spin + 1):
                    if abs(lr - lg) > 1:
                        continue
                    # parity: H_{-lR,-lg} = H_{lR,lg}; the card gives H_{lR,+1} for lR >= 0
                    key = lr if lg == 1 else -lr
                    if key not in res.couplings:
                        continue
                    mag, ph = res.couplings[key]
                    if res.name == model.card.reference and key == 0:
                        mag, ph = 1.0, 0.0
                    D1 = np.exp(1j * M * ph_x) * sympy_small_d(1, M, lr - lg)(th_x)
                    DJ = np.exp(1j * lr * ph_1) * sympy_small_d(res.spin, lr, 0)(th_1)
                    amp += mag * np.exp(1j * ph) * D1 * F[r] * DJ
            total += np.abs(amp) ** 2
    return total


@pytest.fixture(scope="module")
def mixed():
    model = Model.from_card(MIXED)
    return model, flat_events(3000, 1), flat_events(20000, 2)


def test_sympy_convention_anchor():
    """The slow reference's d matches textbook values: d^1_{10} = -sin b / sqrt 2, d^2_{00}."""
    b = np.array([0.3, 1.2, 2.9])
    assert np.allclose(sympy_small_d(1, 1, 0)(b), -np.sin(b) / np.sqrt(2), rtol=1e-14)
    assert np.allclose(sympy_small_d(2, 0, 0)(b), (3 * np.cos(b) ** 2 - 1) / 2, rtol=1e-14)


def test_cached_intensity_matches_slow_reference(mixed):
    model, data, _ = mixed
    cache = model.precompute(data)
    ours = np.asarray(jax.jit(model.intensity)(jnp.asarray(model.initial_values()), cache))
    ref = slow_intensity(model, data)
    assert np.max(np.abs(ours / ref - 1)) < 1e-10


def single(spin, lr, shape=None):
    shape = shape or {"type": "BW", "mass": 1.5, "width": 0.1}
    card = {"resonances": [{"name": "X", "spin": spin, "lineshape": shape, "couplings": {lr: [1.0, 0.0]}}],
            "reference": "X"}
    if lr != 0:
        card["resonances"].append({"name": "Y", "spin": 0, "lineshape": {"type": "NR"},
                                   "couplings": {0: [0.0, 0.0]}})
        card["reference"] = "Y"
    return Model.from_card(card)


@pytest.mark.parametrize("spin", [0, 2])
def test_single_resonance_analytic_forms(spin):
    """J=0: |F|^2 (1 + cos^2 theta_X), flat in cos theta_1; J=2, lR=0: times (3 cos^2 theta_1 - 1)^2 / 4."""
    model = single(spin, 0)
    ev = flat_events(2000, 3)
    p = jnp.asarray(model.initial_values())
    cache = model.precompute(ev)
    hv = ev.helicity_variables
    F2 = np.abs(np.asarray(model.lineshapes(p, cache.masses[0]))[0]) ** 2
    expected = F2 * (1 + hv[:, 1] ** 2) * ((3 * hv[:, 3] ** 2 - 1) ** 2 / 4 if spin == 2 else 1.0)
    # Relative to the largest value: the angles come from the four-momenta, and near a zero of
    # d^2_00 (3 cos^2 theta_1 = 1) their rounding dominates a relative comparison.
    np.testing.assert_allclose(np.asarray(model.intensity(p, cache)), expected, rtol=1e-10,
                               atol=1e-13 * expected.max())


def test_toy_angular_distribution_spin2():
    """Hit-or-miss toys of J=2, lR=0 (NR lineshape) follow (3c^2-1)^2 in cos theta_1 and 1+c^2 in cos theta_X."""
    model = single(2, 0, {"type": "NR"})
    ev = next(iter_toys(model, 4000, Detector(None), seed=5, chunk_size=20000))
    hv = Events.concatenate([ev]).helicity_variables
    edges = np.linspace(-1, 1, 11)
    for col, density in ((3, lambda c: (3 * c**2 - 1) ** 2), (1, lambda c: 1 + c**2)):
        counts, _ = np.histogram(hv[:, col], edges)
        fine = np.linspace(-1, 1, 100001)
        cdf = np.concatenate([[0], np.cumsum(density(0.5 * (fine[1:] + fine[:-1])))])
        expected = np.diff(np.interp(edges, fine, cdf)) / cdf[-1] * len(hv)
        chi2 = np.sum((counts - expected) ** 2 / expected)
        assert chi2 < 35, (col, chi2)  # 10 bins: p ~ 1e-4; a wrong form gives chi2 in the hundreds


def test_invariance_under_rotation_about_beam_axis(mixed):
    model, data, _ = mixed
    a = 1.234
    R = np.array([[1, 0, 0, 0], [0, np.cos(a), -np.sin(a), 0], [0, np.sin(a), np.cos(a), 0], [0, 0, 0, 1]])
    rotated = Events(data.momenta @ R.T, reaction=data.reaction)
    p = jnp.asarray(model.initial_values())
    i0 = np.asarray(model.intensity(p, model.precompute(data)))
    i1 = np.asarray(model.intensity(p, model.precompute(rotated)))
    assert np.max(np.abs(i1 / i0 - 1)) < 1e-11
    assert not np.allclose(np.asarray(model.precompute(rotated).ang_re),
                           np.asarray(model.precompute(data).ang_re))  # the factors did change


def numpy_nll(model, data, mc, w, v):
    i_data, i_mc = slow_intensity(model, data), slow_intensity(model, mc)
    return -np.sum(w * np.log(i_data)) + np.sum(w) * np.log(np.sum(v * i_mc) / np.sum(v))


def test_nll_matches_numpy_reference_with_weights(mixed):
    model, data, mc = mixed
    rng = np.random.default_rng(7)
    w, v = rng.uniform(-0.2, 1.5, len(data)), rng.uniform(0.5, 2.0, len(mc))
    data_w, mc_w = Events(data.momenta, w, reaction=data.reaction), Events(mc.momenta, v, reaction=mc.reaction)
    ours = float(jax.jit(model.nll)(jnp.asarray(model.initial_values()),
                                    model.precompute(data_w), model.precompute(mc_w)))
    assert ours == pytest.approx(numpy_nll(model, data_w, mc_w, w, v), rel=1e-12)


def test_gradient_hessian_and_normalisation_fast_path(mixed):
    model, data, mc = mixed
    p = jnp.asarray(model.initial_values())
    dc, mcc = model.precompute(data.subset(slice(0, 500))), model.precompute(mc.subset(slice(0, 2000)))
    g = np.asarray(jax.jit(jax.grad(model.nll))(p, dc, mcc))
    nll = jax.jit(model.nll)
    for i in (0, 3, model.parameter_names.index("f2(1270):mass")):
        h = 1e-6
        e = jnp.zeros_like(p).at[i].set(h)
        fd = (nll(p + e, dc, mcc) - nll(p - e, dc, mcc)) / (2 * h)
        assert g[i] == pytest.approx(float(fd), rel=1e-5, abs=1e-4)
    # Hessian on a small model (compile time grows with the graph): finite, symmetric, and its
    # column for the mass matches finite differences of the gradient.
    small = Model.from_card({"resonances": MIXED["resonances"][1:2] + MIXED["resonances"][3:],
                             "reference": "NR"})
    ps = jnp.asarray(small.initial_values())
    ds, ms = small.precompute(data.subset(slice(0, 500))), small.precompute(mc.subset(slice(0, 2000)))
    H = np.asarray(jax.jit(jax.hessian(small.nll))(ps, ds, ms))
    assert np.all(np.isfinite(H)) and np.allclose(H, H.T, rtol=1e-9, atol=1e-9)
    i = small.parameter_names.index("f2(1270):mass")
    gs = jax.jit(jax.grad(small.nll))
    e = jnp.zeros_like(ps).at[i].set(1e-6)
    fd = (np.asarray(gs(ps + e, ds, ms)) - np.asarray(gs(ps - e, ds, ms))) / 2e-6
    np.testing.assert_allclose(H[:, i], fd, rtol=1e-4, atol=1e-2)
    # Fast path c^H M c needs fixed lineshapes: freeze f2(1270) and compare with the direct sum.
    with pytest.raises(ValueError, match="fixed lineshapes"):
        model.precompute(mc, normalisation_matrix=True)
    fixed = Model.from_card({**MIXED, "resonances": [{**r, "float": []} for r in MIXED["resonances"]]})
    q = jnp.asarray(fixed.initial_values()) * 1.1
    mc_small = mc.subset(slice(0, 5000))
    direct, fast = fixed.precompute(mc_small), fixed.precompute(mc_small, normalisation_matrix=True)
    assert float(fixed.normalisation(q, fast)) == pytest.approx(float(fixed.normalisation(q, direct)), rel=1e-12)
    grad = jax.jit(jax.grad(fixed.nll))
    dc_f = fixed.precompute(data.subset(slice(0, 500)))
    np.testing.assert_allclose(np.asarray(grad(q, dc_f, fast)), np.asarray(grad(q, dc_f, direct)),
                               rtol=1e-9, atol=1e-9)


def test_fit_fractions_match_slow_reference(mixed):
    model, _, mc = mixed
    F = np.asarray(jax.jit(model.fit_fractions)(jnp.asarray(model.initial_values()), model.precompute(mc)))
    total = np.mean(slow_intensity(model, mc))
    for r, name in enumerate(model.resonance_names):
        assert F[r, r] == pytest.approx(np.mean(slow_intensity(model, mc, only={name})) / total, rel=1e-10)
    i, j = model.resonance_names.index("f0(980)"), model.resonance_names.index("NR")
    pair = np.mean(slow_intensity(model, mc, only={"f0(980)", "NR"})) / total
    assert F[i, j] == pytest.approx(pair - F[i, i] - F[j, j], rel=1e-8, abs=1e-13)
    assert np.trace(F) + np.sum(np.triu(F, 1)) == pytest.approx(1.0, rel=1e-12)


def test_r0_card_reproduces_table1():
    """Generator-level fractions of models/jpsi_gamma_kk.yaml (exact quadrature) within 0.3 % of seed Table 1."""
    model = Model.from_card(load_model_card("models/jpsi_gamma_kk.yaml"))
    result = fit_fractions_quadrature(model)
    for name, target in TABLE1.items():
        assert 100 * result.fractions[name] == pytest.approx(target, abs=0.3), name
    assert 100 * result.sum_of_fractions == pytest.approx(115.0, abs=0.5)


def test_quadrature_agrees_with_flat_mc():
    """Quadrature fractions vs generator-level MC, within 5 sigma of the MC error (delta method)."""
    model = Model.from_card(MIXED)
    p = jnp.asarray(model.initial_values())
    quad = np.asarray(model.fit_fractions(p, model.precompute(phase_space_quadrature(model.reaction,
                                                                                      n_panels=60))))
    cache = model.precompute(flat_events(40000, 11))
    c = np.asarray(model.couplings(p))
    G = np.asarray(model.term_factors(p, cache))
    b = np.sum(np.abs(np.einsum("k,ksn->sn", c, G)) ** 2, axis=0)
    term_res = np.array([r for r, _ in model.terms])
    for r, name in enumerate(model.resonance_names):
        a = np.sum(np.abs(np.einsum("k,ksn->sn", c * (term_res == r), G)) ** 2, axis=0)
        f = a.mean() / b.mean()
        sigma = np.sqrt(np.var(a - f * b) / len(b)) / b.mean()
        assert abs(quad[r, r] - f) < 5 * sigma, (name, quad[r, r], f, sigma)


def test_without_resonance(mixed):
    model, data, _ = mixed
    smaller = model.without("f2(1270)")
    assert "f2(1270)" not in smaller.resonance_names
    assert smaller.n_free == model.n_free - len(model.resonance_parameters("f2(1270)"))
    assert set(model.resonance_parameters("f2(1270)")) == {
        "f2(1270):c0.mag", "f2(1270):c0.phase", "f2(1270):c1.mag", "f2(1270):c1.phase",
        "f2(1270):c2.mag", "f2(1270):c2.phase", "f2(1270):mass", "f2(1270):width"}
    # Removing the reference renormalises the couplings: same shape, scale |c_new_ref|^-2.
    no_ref = model.without("f0(980)")
    assert no_ref.card.reference == "f2(1270)"
    i_new = np.asarray(no_ref.intensity(jnp.asarray(no_ref.initial_values()), no_ref.precompute(data)))
    others = set(model.resonance_names) - {"f0(980)"}
    i_old = slow_intensity(model, data, only=others)
    assert np.allclose(i_new * 2.0**2, i_old, rtol=1e-10)


def test_float32_is_refused(mixed):
    model, data, _ = mixed
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(PrecisionError, match="jax_enable_x64"):
            model.precompute(data)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_folded_lineshapes_equal_the_general_path():
    """Fixed lineshapes folded into the cache give the same intensity, NLL and gradient."""
    model = Model.from_card("models/jpsi_gamma_kk.yaml")
    data, mc = flat_events(400, 31), flat_events(2000, 32)
    p = jnp.asarray(model.initial_values()) * 1.03
    plain = model.precompute(data, fold_lineshapes=False), model.precompute(mc, fold_lineshapes=False)
    folded = model.precompute(data), model.precompute(mc, normalisation_matrix=True)
    assert folded[0].folded and not plain[0].folded
    np.testing.assert_allclose(model.intensity(p, folded[0]), model.intensity(p, plain[0]), rtol=1e-12)
    np.testing.assert_allclose(model.nll(p, *folded), model.nll(p, *plain), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(model.nll)(p, *folded), jax.grad(model.nll)(p, *plain),
                               rtol=1e-9, atol=1e-9)
    floating = Model.from_card(MIXED)
    with pytest.raises(ValueError, match="need fixed lineshapes"):
        floating.precompute(data, fold_lineshapes=True)


def test_floating_bw_mass_is_bounded_above_threshold():
    """A BW with energy-dependent width needs q0 > 0: its floating mass cannot cross the threshold."""
    card = {"resonances": [
        {"name": "f0(980)", "spin": 0, "lineshape": {"type": "Flatte", "mass": 0.979, "g_pipi": 0.107},
         "float": ["mass"], "couplings": {0: [1.0, 0.0]}},
        {"name": "X", "spin": 0, "lineshape": {"type": "BW", "mass": 0.995, "width": 0.06},
         "float": ["mass"], "couplings": {0: [1.0, 0.0]}}], "reference": "f0(980)"}
    model = Model.from_card(card)
    bounds = dict(zip(model.parameter_names, model.bounds))
    assert bounds["X:mass"][0] == pytest.approx(2 * 0.493677 + 1e-3)
    assert bounds["f0(980):mass"][0] < 0.979  # a Flatte may sit below threshold
