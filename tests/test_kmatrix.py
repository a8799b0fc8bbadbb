"""The KMatrix lineshape (pwa.kmatrix): unitarity, the one-pole limit, ampform, a model, card errors.

The contract tests of every registered lineshape (tests/test_pwa_lineshapes.py)
run on its registered two-channel, two-pole example as well.
"""

import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from _shared import flat_events, without_floats

from fastsim.events.particles import particle_info
from pwa import Model, ModelCardError
from pwa.card import parse_model_card
from pwa.kmatrix import (EXAMPLE_CARD, canonical_parameters, channel_phase_space, k_matrix, kmatrix_values,
                         phase_space_matrix, production_amplitude, t_matrix)
from pwa.lineshapes import LINESHAPES, LineshapeContext

DATA = Path(__file__).parent / "data" / "kmatrix_reference.json"
MPI, MK, META = particle_info("pi+").mass, particle_info("K+").mass, particle_info("eta").mass

TWO_CHANNELS = {
    "type": "KMatrix", "channels": ["pi+ pi-", "K+ K-"],
    "poles": {"f0(980)": {"mass": 0.98, "g": [0.30, 0.75]},
              "f0(1500)": {"mass": 1.50, "g": [0.35, 0.20], "beta": [0.8, 1.2]},
              "f0(1710)": {"mass": 1.71, "g": [-0.15, 0.45], "beta": [0.5, -2.0]}},
    "background": [[0.2, 0.1], [0.1, -0.1]],
}
THREE_CHANNELS = {
    "type": "KMatrix", "channels": ["pi+ pi-", "K+ K-", "eta eta"],
    "poles": {"f0(980)": {"mass": 0.98, "g": [0.30, 0.70, 0.20]},
              "f0(1370)": {"mass": 1.37, "g": [0.50, 0.10, -0.30], "beta": [0.6, -2.0]},
              "f0(1500)": {"mass": 1.50, "g": [0.30, 0.20, 0.40], "beta": [0.9, 0.4]},
              "f0(1710)": {"mass": 1.71, "g": [0.10, 0.50, 0.30], "beta": [1.1, 2.8]}},
    "background": [[0.3, 0.1, -0.2], [0.1, -0.4, 0.05], [-0.2, 0.05, 0.15]],
}


def values_of(mapping):
    """(spec, KMatrixValues) of a card's lineshape mapping (nested or flat)."""
    _, flat = LINESHAPES["KMatrix"].for_card(mapping)
    spec, values = canonical_parameters({k: v for k, v in flat.items() if k != "type"})
    return spec, kmatrix_values(spec, values)


def bound(mapping, m1, m2):
    """(function, parameters) of a card's K-matrix for a resonance decaying to masses m1, m2."""
    ls, flat = LINESHAPES["KMatrix"].for_card(mapping)
    return ls.bind(LineshapeContext(0, m1, m2)), {k: v for k, v in flat.items() if k != "type"}


def test_registered_with_a_two_channel_two_pole_example():
    ls = LINESHAPES["KMatrix"]
    assert ls.parameters[:3] == ("f0(980).mass", "f0(980).g[pi+ pi-]", "f0(980).g[K+ K-]")
    assert "f0(1500).beta.mag" in ls.parameters and "f0(980).beta.mag" not in ls.parameters
    assert {"f[pi+ pi-, K+ K-]", "fP[K+ K-].phase"} <= set(ls.parameters)
    assert ls.for_card(EXAMPLE_CARD)[0].parameters == ls.parameters
    assert ls.bounds["f0(1500).beta.mag"] == (0.0, None)


# --- (2) unitarity ---------------------------------------------------------------------


@pytest.mark.parametrize("mapping", [TWO_CHANNELS, THREE_CHANNELS], ids=["2 channels", "3 channels"])
def test_s_matrix_is_unitary_above_all_thresholds(mapping):
    """S = I + 2i sqrt(rho) T sqrt(rho) with T = (I - i K rho)^-1 K: S S^dagger = I to 1e-12."""
    spec, v = values_of(mapping)
    top = max(sum(c.masses) for c in spec.channels)
    s = jnp.linspace(top + 1e-6, 3.1, 2001) ** 2
    T = np.asarray(t_matrix(s, v))
    rho = np.asarray(phase_space_matrix(s, v.channel_masses))
    assert np.all(np.abs(rho.imag) == 0) and np.all(rho.real > 0)
    root = np.sqrt(rho.real)
    S = np.eye(len(spec.channels)) + 2j * root[:, :, None] * T * root[:, None, :]
    assert np.max(np.abs(S @ np.conj(np.swapaxes(S, 1, 2)) - np.eye(len(spec.channels)))) < 1e-12
    assert np.max(np.abs(T - np.swapaxes(T, 1, 2))) < 1e-12 * np.max(np.abs(T))
    # The bordered solve equals the textbook inverse (away from the K-matrix poles, where K is finite).
    K = np.asarray(k_matrix(s, v))
    direct = np.linalg.solve(np.eye(len(spec.channels)) - 1j * K * rho[:, None, :], K + 0j)
    assert np.max(np.abs(T - direct)) < 1e-12 * np.max(np.abs(direct))


@pytest.mark.parametrize("mapping", [TWO_CHANNELS, THREE_CHANNELS], ids=["2 channels", "3 channels"])
def test_production_with_p_equal_to_a_column_of_k_is_that_column_of_t(mapping):
    """P = K_{.k} (beta_a = g_ak, fP = f_{.k}) gives F = T_{.k}, below thresholds too."""
    spec, v = values_of(mapping)
    s = jnp.linspace(2 * MPI + 1e-3, 3.1, 1001) ** 2
    T = np.asarray(t_matrix(s, v))
    for k in range(len(spec.channels)):
        w = replace(v, beta=v.couplings[:, k] + 0j, production_background=v.background[:, k] + 0j)
        F = np.asarray(production_amplitude(s, w))
        assert np.max(np.abs(F - T[:, :, k])) < 1e-12 * np.max(np.abs(T[:, :, k]))


def test_phase_space_factor_and_its_continuation():
    """rho = sqrt(1 - (m1+m2)^2/s) sqrt(1 - (m1-m2)^2/s) above threshold, i |rho| below (also below m1 - m2)."""
    m1, m2 = META, MPI  # unequal masses
    s = jnp.asarray([3.0, 0.3, 0.1])  # above (m1+m2)^2 = 0.472, between, below (m1-m2)^2 = 0.167
    rho = np.asarray(channel_phase_space(s, m1, m2))
    exact = np.sqrt(np.abs((1 - (m1 + m2) ** 2 / np.asarray(s)) * (1 - (m1 - m2) ** 2 / np.asarray(s))))
    assert rho[0] == pytest.approx(exact[0], rel=1e-15)
    assert rho[1] == pytest.approx(1j * exact[1], rel=1e-15) and rho[2] == pytest.approx(1j * exact[2], rel=1e-15)


# --- (3) one pole, one channel = Breit-Wigner ---------------------------------------------


def test_one_pole_one_channel_is_a_breit_wigner():
    """F = g / (m0^2 - s - i m0 Gamma(s)), Gamma(s) = g^2 rho(s) / m0: the BW (L = 0) times g / (m0 Gamma0)."""
    m0, g = 1.5, 0.6
    card = {"type": "KMatrix", "channels": ["K+ K-"], "poles": {"f0(1500)": {"mass": m0, "g": [g]}}}
    fn, params = bound(card, MK, MK)
    m = np.linspace(2 * MK, 3.0969, 2001)
    s = m * m
    F = np.asarray(fn(jnp.asarray(m), params))
    rho = np.sqrt(1 - 4 * MK**2 / s)
    analytic = g / (m0**2 - s - 1j * m0 * (g**2 * rho / m0))
    assert np.max(np.abs(F / analytic - 1)) < 1e-12
    gamma0 = g**2 * np.sqrt(1 - 4 * MK**2 / m0**2) / m0
    bw = LINESHAPES["BW"].bind(LineshapeContext(0, MK, MK))
    F_bw = np.asarray(bw(jnp.asarray(m), {"mass": m0, "width": gamma0, "radius": 1.0}))
    assert np.max(np.abs(F / (g / (m0 * gamma0) * F_bw) - 1)) < 1e-12
    # Exactly at the K-matrix pole, where K and P are infinite: F = i / (g rho).
    at_pole = complex(fn(jnp.asarray([m0]), params)[0])
    assert at_pole == pytest.approx(1j / (g * np.sqrt(1 - 4 * MK**2 / m0**2)), rel=1e-13)


def test_finite_exactly_at_every_pole_and_smooth_through_it():
    fn, params = bound(THREE_CHANNELS, MK, MK)
    for name in ("f0(1370)", "f0(1500)", "f0(1710)"):
        m0 = params[f"{name}.mass"]
        m = jnp.asarray([m0 - 1e-7, m0, m0 + 1e-7])
        F = np.asarray(fn(m, params))
        assert np.all(np.isfinite(F))
        assert abs(F[1] - (F[0] + F[2]) / 2) < 1e-6 * abs(F[1])


# --- (4) ampform ----------------------------------------------------------------------------


def _reference_cases():
    return json.loads(DATA.read_text())["cases"]


def test_reference_masses_are_the_projects():
    ref = json.loads(DATA.read_text())
    for name, mass in ref["masses_GeV"].items():
        assert particle_info(name).mass == pytest.approx(mass, abs=1e-12), name


@pytest.mark.parametrize("case", _reference_cases(), ids=lambda c: c["name"])
def test_matches_ampform(case):
    """F_k on a grid of s against ampform's RelativisticPVector f_hat (experiments/kmatrix/reference.py)."""
    worst = 0.0
    for ev in case["evaluations"]:
        fn, params = bound(case["lineshape"], *ev["channel_masses_GeV"])
        F = np.asarray(fn(jnp.asarray(ev["m_GeV"]), params))
        ref = np.asarray(ev["F"]) @ np.asarray([1.0, 1j])
        worst = max(worst, float(np.max(np.abs(F - ref) / np.abs(ref))))
    assert worst < 1e-10


# --- (5) a model ------------------------------------------------------------------------------

CARD_YAML = """
reaction: {parent: J/psi, final_state: {gamma: gamma, Kp: K+, Km: K-}}
resonances:
  - name: S-wave
    spin: 0
    lineshape:
      type: KMatrix
      channels: [pi+ pi-, K+ K-]
      poles:
        f0(980):  {mass: 0.98, g: [0.30, 0.75]}
        f0(1500): {mass: 1.50, g: [0.35, 0.20], beta: [0.8, 1.2]}
      background: [[0.2, 0.1], [0.1, -0.1]]
      production_background: [[0.05, 0.0], [0.3, -0.5]]
    float: ["f0(980).mass", "f0(980).g[K+ K-]", "f0(1500).g[pi+ pi-]", "f0(1500).beta.mag",
            "f0(1500).beta.phase", "f[pi+ pi-, K+ K-]", "fP[K+ K-].mag"]
    bounds: {"f0(980).mass": [0.9, 1.1]}
    couplings: {0: [1.0, 0.0]}
  - name: f2'(1525)
    spin: 2
    lineshape: {type: BW, mass: 1.5223, width: 0.0858}
    couplings: {0: [6.0, 1.2], 1: [4.5, 2.4], 2: [2.0, 0.6]}
reference: S-wave
"""


@pytest.fixture(scope="module")
def kmatrix_model():
    return Model.from_card(parse_model_card(yaml.safe_load(CARD_YAML), source="kmatrix-test-card"))


def test_model_parameters(kmatrix_model):
    model = kmatrix_model
    kmat = [p for p in model.parameter_names if p.startswith("S-wave:")]
    assert kmat == ["S-wave:f0(980).mass", "S-wave:f0(980).g[K+ K-]", "S-wave:f0(1500).g[pi+ pi-]",
                    "S-wave:f0(1500).beta.mag", "S-wave:f0(1500).beta.phase", "S-wave:f[pi+ pi-, K+ K-]",
                    "S-wave:fP[K+ K-].mag"]
    assert model.bounds[model.parameter_names.index("S-wave:f0(980).mass")] == (0.9, 1.1)
    assert model.bounds[model.parameter_names.index("S-wave:f0(1500).beta.mag")] == (0.0, None)
    assert "S-wave:f0(980).g[pi+ pi-]" in model.all_parameter_names  # fixed, not free
    assert model.floating_lineshapes


def test_model_intensities_and_exact_nll_gradient(kmatrix_model):
    model = kmatrix_model
    data = model.precompute(flat_events(1000, seed=11))
    mc = model.precompute(flat_events(2000, seed=12))
    p0 = jnp.asarray(model.initial_values())
    intensity = np.asarray(model.intensity(p0, mc))
    assert np.all(np.isfinite(intensity)) and np.all(intensity > 0)
    nll = jax.jit(lambda p: model.nll(p, data, mc))
    grad = np.asarray(jax.jit(jax.grad(lambda p: model.nll(p, data, mc)))(p0))
    for i, name in enumerate(model.parameter_names):
        h = 1e-6 * max(1.0, abs(float(p0[i])))
        e = jnp.zeros_like(p0).at[i].set(h)
        fd = float(nll(p0 + e) - nll(p0 - e)) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-6, abs=1e-4), name


def test_fixed_kmatrix_folds_into_the_cache(kmatrix_model):
    """With nothing floating the K-matrix is folded into the stored factors, as any fixed lineshape."""
    fixed = Model.from_card(parse_model_card(without_floats(yaml.safe_load(CARD_YAML)), source="fixed"))
    events = flat_events(300, seed=14)
    p = jnp.asarray(fixed.initial_values())
    folded = fixed.precompute(events, normalisation_matrix=True)
    assert folded.folded
    np.testing.assert_allclose(np.asarray(fixed.intensity(p, folded)),
                               np.asarray(fixed.intensity(p, fixed.precompute(events, fold_lineshapes=False))),
                               rtol=1e-12)


def test_fitted_card_round_trip(kmatrix_model, tmp_path):
    """card_at (after every fit) and to_yaml write the flat form; it loads back to the same model."""
    model = kmatrix_model
    p = model.initial_values()
    p[model.parameter_names.index("S-wave:f0(1500).beta.mag")] = 0.65
    again = Model.from_card(model.card_at(p))
    assert again.parameter_names == model.parameter_names
    np.testing.assert_array_equal(again.initial_values(), p)
    text = again.card.to_yaml()
    assert "f0(1500).beta.mag: 0.65" in text and "channels" not in text
    reloaded = Model.from_card(parse_model_card(yaml.safe_load(text), source="round-trip"))
    assert reloaded.parameter_names == model.parameter_names
    mc = model.precompute(flat_events(300, seed=13))
    np.testing.assert_allclose(np.asarray(reloaded.intensity(jnp.asarray(p), mc)),
                               np.asarray(model.intensity(jnp.asarray(p), mc)), rtol=1e-14)
    assert model.without("f2'(1525)").resonance_names == ("S-wave",)


def test_channels_by_mass_and_parameter_order():
    """A channel given by masses is the same physics; the function ignores the order of its parameters."""
    by_mass = dict(EXAMPLE_CARD, channels=[[MPI, MPI], "K+ K-"])
    fn, params = bound(EXAMPLE_CARD, MK, MK)
    fn_m, params_m = bound(by_mass, MK, MK)
    assert f"f0(980).g[{MPI!r} {MPI!r}]" in params_m
    m = jnp.linspace(2 * MK, 3.0, 50)
    # Another channel order reorders the linear system: equal to rounding.
    np.testing.assert_allclose(np.asarray(fn(m, params)), np.asarray(fn_m(m, params_m)), rtol=1e-13)
    shuffled = dict(reversed(list(params.items())))
    np.testing.assert_allclose(np.asarray(fn(m, params)), np.asarray(fn(m, shuffled)), rtol=1e-13)
    # The same K-matrix seen in pi+ pi-: another channel of the same card.
    fn_pipi, _ = bound(EXAMPLE_CARD, MPI, MPI)
    assert np.all(np.isfinite(np.asarray(fn_pipi(jnp.linspace(2 * MPI, 2.5, 50), params))))


# --- (6) card errors --------------------------------------------------------------------------


def _card(lineshape=None, **resonance):
    raw = yaml.safe_load(CARD_YAML)
    if lineshape is not None:  # another K-matrix: the card's float and bounds may not apply
        raw["resonances"][0]["lineshape"] = lineshape
        del raw["resonances"][0]["float"], raw["resonances"][0]["bounds"]
    raw["resonances"][0].update(resonance)
    return raw


F0_980 = {"mass": 0.98, "g": [0.3, 0.7]}


def _two_poles(second):
    return dict(EXAMPLE_CARD, poles={"f0(980)": F0_980, "f0(1500)": second})


BAD = [
    (dict(EXAMPLE_CARD, channels=["pi+ pi-", "K+ Kx"]), {}, r"lineshape: channels\[1\]: unknown particle 'Kx'"),
    (dict(EXAMPLE_CARD, channels=["pi+", "K+ K-"]), {}, r"channels\[0\]: expected two particles"),
    (dict(EXAMPLE_CARD, channels=["K+ K-", "K- K+"]), {}, r"channels\[1\]: 'K- K\+' has the masses of channels\[0\]"),
    (dict(EXAMPLE_CARD, channels=["pi+ pi-", "pi0 pi0"]), {},
     r"lineshape: channels: none of pi\+ pi-, pi0 pi0 is the pair the resonance decays to"),
    (dict(EXAMPLE_CARD, poles={"f0(980)": {"mass": 0.98, "g": [0.3]}}), {},
     r"poles\.f0\(980\)\.g: expected 2 couplings, one per channel \(pi\+ pi-, K\+ K-\), got 1 couplings"),
    (_two_poles({"g": [0.3, 0.2], "beta": [1, 0]}), {}, r"poles\.f0\(1500\)\.mass: missing"),
    (dict(EXAMPLE_CARD, poles={"f0(980)": {"mass": 0.98, "g": [0.3, 0.7], "beta": [1, 0]}}), {},
     r"poles\.f0\(980\)\.beta: the first pole's beta is fixed to 1"),
    (_two_poles({"mass": 1.5, "g": [0.3, 0.2]}), {}, r"poles\.f0\(1500\)\.beta: missing"),
    (dict(EXAMPLE_CARD, poles={"f0(980)": {"mass": 0.98, "g": [0.3, 0.7], "width": 0.1}}), {},
     r"poles\.f0\(980\): unknown field\(s\) width"),
    (dict(EXAMPLE_CARD, background=[[0.2, 0.1], [0.3, -0.1]]), {},
     r"background: not symmetric: \[0\]\[1\] = 0.1 but \[1\]\[0\] = 0.3"),
    (dict(EXAMPLE_CARD, background=[[0.2, 0.1]]), {}, r"background: expected a 2 x 2 matrix"),
    (dict(EXAMPLE_CARD, production_background=[[0.1, 0.0]]), {},
     r"production_background: expected 2 \[magnitude, phase\]"),
    (_two_poles({"mass": 1.5, "g": [0.3, 0.2], "beta": [-1, 0]}), {},
     r"lineshape: parameter 'f0\(1500\)\.beta\.mag' = -1 is outside its allowed range \[0.0, None\]"),
    (dict(EXAMPLE_CARD, widths=[0.1]), {}, r"KMatrix has no field\(s\) widths"),
    ({"type": "KMatrix", "f0(980).mass": 0.98, "f0(980).g[pi+ pi-]": 0.3, "f0(1500).mass": 1.5,
      "f0(1500).beta.mag": 1.0, "f0(1500).beta.phase": 0.0, "f0(1500).g[K+ K-]": 0.1, "f0(980).g[K+ K-]": 0.7},
     {}, r"f0\(1500\)\.g\[pi\+ pi-\]: missing"),
    ({"type": "KMatrix", "f0(980).mass": 0.98, "f0(980).g[K+ K-]": 0.7, "f0(980).width": 0.1}, {},
     r"'f0\(980\)\.width' is not a K-matrix parameter"),
    ({"type": "KMatrix", "f0(980).mass": 0.98, "f0(980).g[K+ K-]": 0.7, "f[K+ K-, K+ K-]": 0.1,
      "f[K+  K-, K+ K-]": 0.2}, {}, r"f\[K\+  K-, K\+ K-\]: the same parameter as 'f\[K\+ K-, K\+ K-\]'"),
    (None, {"float": ["f0(980).width"]}, r"float: 'f0\(980\)\.width' is not a parameter of lineshape KMatrix"),
    (None, {"bounds": {"f0(1500).beta.mag": [1.0, 2.0]}}, r"bounds: f0\(1500\)\.beta\.mag = 0.8 must lie inside"),
    (None, {"spin": 2, "couplings": {0: [1.0, 0.0]}}, r"describes an S wave \(spin 0\), not spin 2"),
]


@pytest.mark.parametrize("lineshape, changes, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_kmatrix_cards_name_the_field(lineshape, changes, message):
    with pytest.raises(ModelCardError, match=message) as err:
        parse_model_card(_card(lineshape, **changes), source="kmatrix.yaml")
    text = str(err.value)
    assert text.startswith("kmatrix.yaml: field resonances[0] (S-wave)") and "\n" not in text


def test_small_solve_matches_numpy_and_pivots():
    """The unrolled Gauss-Jordan solve of the bordered systems (no LAPACK call: see small_solve)."""
    from pwa.kmatrix import small_solve

    rng = np.random.default_rng(5)
    a = rng.normal(size=(50, 5, 5)) + 1j * rng.normal(size=(50, 5, 5))
    a[:7, 0, 0] = 0.0  # a zero leading pivot: the row swap must handle it
    b = rng.normal(size=(50, 5, 2)) + 1j * rng.normal(size=(50, 5, 2))
    np.testing.assert_allclose(np.asarray(small_solve(jnp.asarray(a), jnp.asarray(b))), np.linalg.solve(a, b),
                               rtol=1e-10, atol=1e-12)
