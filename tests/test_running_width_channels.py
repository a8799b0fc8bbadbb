"""BW_channels: a Breit-Wigner whose running width sums named decay channels (pwa/decay_channels.py).

The registry-wide contract checks (shapes, finite values, gradients, the K K
threshold) run on it from test_pwa_lineshapes.py; here: BW as its one-channel
case, the width against numpy, the propagator, gradients, card errors, a model.
"""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from _shared import FAST, flat_events
from fastsim.events import MASSES
from pwa import Model, ModelCardError, parse_model_card
from pwa.decay_channels import EXAMPLE_CARD, running_width
from pwa.lineshapes import F2_PIPI_B0, F2_PIPI_B1, LINESHAPES, LineshapeContext

MK, MPI, MPI0 = MASSES["K+"], MASSES["pi+"], MASSES["pi0"]
BWC = LINESHAPES["BW_channels"]

#: f2(1270) in J/psi -> gamma K+ K-, decaying to pi pi and K K.
F2 = {"type": "BW_channels", "mass": 1.2754, "width": 0.1866, "radius": 1.3,
      "channels": {"pi+ pi-": 0.6, "pi0 pi0": 0.3, "K+ K-": 0.1}}


def _flat(mapping):
    """(type of the card, flat parameters without ``type``) of a lineshape mapping."""
    ls, flat = BWC.for_card(mapping)
    return ls, {k: v for k, v in flat.items() if k != "type"}


def _jnp(params):
    return {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}


def _q2(m, m1, m2):
    s = np.asarray(m, dtype=float) ** 2
    return (s - (m1 + m2) ** 2) * (s - (m1 - m2) ** 2) / (4 * s)


def _width_by_hand(m, m0, g0, d, channels):
    """The issue's formula with normalised D-wave barriers F_2^2 = 13 / ((z-3)^2 + 9z) (-> 1 at q = 0):
    Gamma = sum_c Gamma0 BR_c (q_c/q_c0)^5 (m0/m) F_2^2(q_c)/F_2^2(q_c0), zero below a channel's threshold."""
    def f2sq(q2):
        z = q2 * d**2
        return 13.0 / ((z - 3.0) ** 2 + 9.0 * z)

    total = np.zeros_like(np.asarray(m, dtype=float))
    for br, (m1, m2) in channels:
        q2, q02 = np.maximum(_q2(m, m1, m2), 0.0), _q2(m0, m1, m2)
        total += g0 * br * (np.sqrt(q2 / q02)) ** 5 * (m0 / m) * f2sq(q2) / f2sq(q02)
    return total


F2_CHANNELS = [(0.6, (MPI, MPI)), (0.3, (MPI0, MPI0)), (0.1, (MK, MK))]


@pytest.mark.parametrize("spin, pair", [(L, (MK, MK)) for L in range(5)] + [(1, (MPI, MPI0))],
                         ids=[f"K+K-, L={L}" for L in range(5)] + ["pi+pi0, L=1"])
def test_one_channel_equal_to_the_node_pair_is_bw(spin, pair):
    """{node pair: 1} reproduces BW (values, and the gradient in mass, width and radius) to 1e-12."""
    m1, m2 = pair
    label = "K+ K-" if pair == (MK, MK) else "pi+ pi0"
    ctx = LineshapeContext(spin, m1, m2)
    params = {"mass": 1.5223, "width": 0.0858, "radius": 2.5}
    _, flat = _flat({"type": "BW_channels", **params, "channels": {label: 1.0}})
    m = jnp.linspace(m1 + m2, 3.0, 401)
    bw, bwc = LINESHAPES["BW"].bind(ctx), BWC.bind(ctx)
    a, b = np.asarray(bw(m, _jnp(params))), np.asarray(bwc(m, _jnp(flat)))
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=0)

    def functional(fn, p):
        return lambda x: jnp.sum(jnp.abs(fn(m, {**p, "mass": x[0], "width": x[1], "radius": x[2]})) ** 2)

    x = jnp.asarray([params["mass"], params["width"], params["radius"]])
    ga = np.asarray(jax.grad(functional(bw, _jnp(params)))(x))
    gb = np.asarray(jax.grad(functional(bwc, _jnp(flat)))(x))
    np.testing.assert_allclose(gb, ga, rtol=1e-12)


def test_a_channel_by_masses_is_the_same_channel():
    ctx = LineshapeContext(2, MK, MK)
    _, by_name = _flat({**F2, "channels": {"pi+ pi-": 0.9, "K+ K-": 0.1}})
    _, by_mass = _flat({**F2, "channels": {f"{MPI} {MPI}": 0.9, f"{MK} {MK}": 0.1}})
    m = jnp.linspace(2 * MK, 3.0, 101)
    np.testing.assert_array_equal(np.asarray(BWC.bind(ctx)(m, _jnp(by_mass))),
                                  np.asarray(BWC.bind(ctx)(m, _jnp(by_name))))


def test_f2_in_kk_runs_with_the_pi_pi_momentum():
    """f2(1270) seen in K+ K-: Gamma(m) against numpy at masses below the K K threshold (pi pi open) and above."""
    ctx = LineshapeContext(2, MK, MK)
    _, flat = _flat(F2)
    m = np.array([0.30, 0.60, 0.95, 2 * MK, 1.0, 1.2754, 1.6, 2.5])
    got = np.asarray(running_width(jnp.asarray(m), _jnp(flat), ctx))
    want = _width_by_hand(m, F2["mass"], F2["width"], F2["radius"], F2_CHANNELS)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert float(running_width(jnp.asarray([F2["mass"]]), _jnp(flat), ctx)[0]) == pytest.approx(F2["width"],
                                                                                                   rel=1e-15)
    # Below 2 m_K only pi pi contributes: today's BW (K K momentum) would give 0 there.
    assert got[2] > 0.1 * F2["width"]
    kk_only = _width_by_hand(m, F2["mass"], F2["width"], F2["radius"], [(1.0, (MK, MK))])
    assert kk_only[2] == 0 and abs(got[-1] / kk_only[-1] - 1) > 0.1


def test_pi_pi_channel_is_the_seed_f2_width_times_m0_over_m():
    """{pi+ pi-: 1} with d = sqrt(3/0.1825) is the seed author's BW_f2_pipi width g(s)/m0 times m0/m
    (his b(x) has 0.033306 for (3/d^2)^2 = 0.03330625, a 1e-5 effect)."""
    m0, g0 = 1.29, 0.196
    d = np.sqrt(3.0 / F2_PIPI_B1)
    assert F2_PIPI_B0 == pytest.approx(F2_PIPI_B1**2, rel=1e-5)
    ctx = LineshapeContext(2, MK, MK)
    _, flat = _flat({"type": "BW_channels", "mass": m0, "width": g0, "radius": d, "channels": {"pi+ pi-": 1.0}})
    m = np.linspace(2 * MK + 1e-3, 3.0, 50)
    seed = np.asarray(LINESHAPES["BW_f2_pipi"].bind(ctx)(jnp.asarray(m), _jnp({"mass": m0, "width": g0})))
    g = np.imag(m0 * g0 / seed)  # F = m0 G0 / (s - m0^2 + i g)
    ours = np.asarray(running_width(jnp.asarray(m), _jnp(flat), ctx))
    np.testing.assert_allclose(ours, g / m0 * (m0 / m), rtol=2e-5)


def test_inverse_propagator():
    """F = B_2(q_KK) m0 Gamma0 / D: Im D = -m0 Gamma(m) (numpy) and Re D = m0^2 - m^2, above the K K threshold."""
    ctx = LineshapeContext(2, MK, MK)
    _, flat = _flat(F2)
    m = np.linspace(2 * MK + 1e-3, 3.0, 200)
    F = np.asarray(BWC.bind(ctx)(jnp.asarray(m), _jnp(flat)))
    z = _q2(m, MK, MK) * F2["radius"] ** 2
    barrier = np.sqrt(13 * z**2 / ((z - 3) ** 2 + 9 * z))
    m0, g0 = F2["mass"], F2["width"]
    D = barrier * m0 * g0 / F
    np.testing.assert_allclose(D.imag, -m0 * _width_by_hand(m, m0, g0, F2["radius"], F2_CHANNELS), rtol=1e-12)
    np.testing.assert_allclose(D.real, m0**2 - m**2, rtol=1e-12, atol=1e-12)


def test_gradient_in_mass_width_radius_matches_finite_differences():
    ctx = LineshapeContext(2, MK, MK)
    _, flat = _flat(F2)
    fn = BWC.bind(ctx)
    m = jnp.linspace(2 * MK, 2.5, 101)
    weights = jnp.cos(5.0 * m)

    def functional(x):
        f = fn(m, {**_jnp(flat), "mass": x[0], "width": x[1], "radius": x[2]})
        return jnp.sum(weights * (jnp.real(f) - 0.4 * jnp.imag(f) + 0.2 * jnp.abs(f) ** 2))

    x0 = jnp.asarray([flat["mass"], flat["width"], flat["radius"]])
    grad = np.asarray(jax.jit(jax.grad(functional))(x0))
    for i, name in enumerate(("mass", "width", "radius")):
        h = 1e-6 * max(1.0, abs(float(x0[i])))
        e = jnp.zeros(3).at[i].set(h)
        fd = float(functional(x0 + e) - functional(x0 - e)) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-6, abs=1e-9), name


def _card(lineshape, spin=2, **extra):
    return {"reaction": {"parent": "J/psi", "final_state": {"gamma": "gamma", "Kp": "K+", "Km": "K-"}},
            "resonances": [{"name": "f2(1270)", "spin": spin, "lineshape": lineshape,
                            "couplings": {0: [1.0, 0.0], 1: [0.8, 1.2], 2: [0.4, -0.6]}, **extra},
                           {"name": "f0(1710)", "spin": 0, "lineshape": {"type": "BW", "mass": 1.6762, "width": 0.1627},
                            "couplings": {0: [1.5, -0.5]}}],
            "reference": "f2(1270)"}


BASE = {"type": "BW_channels", "mass": 1.2754, "width": 0.1866}
BAD = [
    ({**BASE, "channels": {"pion+ pi-": 1.0}}, {}, "lineshape", "channels.pion+ pi-: unknown particle 'pion+'"),
    ({**BASE, "channels": {"pi+ pi-": 0.9, "K+ K-": -0.1}}, {}, "lineshape",
     "channels.K+ K-: branching fraction -0.1 must lie in [0, 1]"),
    ({**BASE, "channels": {"pi+ pi-": 0.6, "K+ K-": 0.3}}, {}, "lineshape",
     "channels: the branching fractions sum to 0.9, expected 1"),
    ({**BASE, "channels": {"pi+ pi-": "most"}}, {}, "lineshape",
     "channels.pi+ pi-: the branching fraction must be a finite number, got 'most'"),
    ({**BASE, "channels": {"pi+ pi-": 0.5, "pi- pi+": 0.5}}, {}, "lineshape",
     "channels.pi- pi+: has the masses (and L) of 'pi+ pi-'"),
    ({**BASE, "channels": {"pi+ pi-": {"fraction": 1.0, "L": 1}}}, {}, "lineshape",
     "channels: pi+ pi- has L = 1, but two spinless daughters decay from spin J = 2 only with L = J"),
    ({**BASE, "channels": {"rho(770)0 pi0": 1.0}}, {}, "lineshape",
     "channels.rho(770)0 pi0: a daughter has spin (rho(770)0: 1), so the resonance's J does not fix L"),
    ({**BASE, "channels": {"rho(770)0 pi0": {"fraction": 1.0, "L": 4}}}, {}, "lineshape",
     "channels: rho(770)0 pi0 with L = 4 cannot make spin J = 2 from daughter spins 1 and 0"),
    ({**BASE, "channels": {"rho(770)0 pi0": {"fraction": 1.0, "L": 5}}}, {}, "lineshape",
     "channels.rho(770)0 pi0: L: expected an integer 0 to 4"),
    ({**BASE, "mass": 0.979, "channels": {"pi+ pi-": 0.7, "K+ K-": 0.3}}, {}, "lineshape",
     "mass 0.979 GeV is not above the threshold 0.987354 GeV of channel K+ K-"),
    ({**BASE, "channels": [["pi+", "pi-"]]}, {}, "lineshape", "channels: expected a mapping"),
    (dict(BASE), {}, "lineshape", "channels: missing"),
    ({**BASE, "chanels": {"pi+ pi-": 1.0}}, {}, "lineshape", "BW_channels has no field(s) chanels"),
    ({**BASE, "channels": {"pi+ pi-": 1.0}, "BR[K+ K-]": 0.0}, {}, "lineshape",
     "give the channels either nested"),
    ({**BASE, "BR[pi+ pi-": 1.0}, {}, "lineshape", "'BR[pi+ pi-' is not a BW_channels parameter"),
    ({**BASE, "channels": {"pi+ pi-": 1.0}}, {"float": ["mass", "BR[pi+ pi-]"]}, "",
     "float: 'BR[pi+ pi-]' is a fixed constant of lineshape BW_channels and cannot float"),
]


@pytest.mark.parametrize("lineshape, extra, field, message", BAD, ids=[m.split(":")[0][:40] for *_, m in BAD])
def test_card_errors_name_the_field(lineshape, extra, field, message):
    with pytest.raises(ModelCardError) as info:
        parse_model_card(_card(lineshape, **extra), source="card.yaml")
    text = str(info.value)
    assert text.count("field ") == 1, text
    assert f"card.yaml: field resonances[0] (f2(1270)){'.' + field if field else ''}: {message}" in text, text


def test_identical_spinless_bosons_need_an_even_wave():
    """pi0 pi0 from a spin-1 state (the rho(770)0 at a pi+ pi0 node, say) is refused."""
    _, flat = _flat({"type": "BW_channels", "mass": 0.775, "width": 0.149,
                     "channels": {"pi+ pi0": 0.5, "pi0 pi0": 0.5}})
    problems = BWC.validate(flat, LineshapeContext(1, MPI, MPI0))
    assert problems == ["channels: pi0 pi0: two identical spinless bosons need an even L, not L = 1 (J = 1)"]
    assert BWC.validate(flat, LineshapeContext(2, MPI, MPI0)) == []


def test_a_spinning_channel_with_its_wave():
    """a2(1320)-like: rho pi in the D wave next to eta pi (L = J = 2); the flat name carries the L."""
    ls, flat = _flat({"type": "BW_channels", "mass": 1.3182, "width": 0.107,
                      "channels": {"rho(770)0 pi0": {"fraction": 0.85, "L": 2}, "eta pi0": 0.15}})
    assert ls.parameters == ("mass", "width", "radius", "BR[rho(770)0 pi0, L=2]", "BR[eta pi0]")
    assert ls.fixed == ls.parameters[3:] and ls.bounds["mass"][0] == pytest.approx(0.77526 + MPI0 + 1e-3)
    assert BWC.validate({**flat, "radius": 1.0}, LineshapeContext(2, MASSES["pi0"], 0.547862)) == []


def test_model_card_loads_evaluates_and_round_trips():
    """A J/psi -> gamma K+ K- card with BW_channels (PDG mass and width, both floating) gives finite, positive
    intensities and a finite NLL gradient; its flat form (to_yaml) loads back to the same model."""
    card = parse_model_card(_card({"type": "BW_channels", "channels": {"pi+ pi-": 0.6, "pi0 pi0": 0.3,
                                                                         "K+ K-": 0.1}},
                                  float=["mass", "width"]), source="f2 card")
    assert card.resonances[0].lineshape == {"type": "BW_channels", "mass": 1.2754, "width": 0.1866, "radius": 1.0,
                                            "BR[pi+ pi-]": 0.6, "BR[pi0 pi0]": 0.3, "BR[K+ K-]": 0.1}
    model = Model.from_card(card)
    i_mass, i_width = (model.parameter_names.index(f"f2(1270):{p}") for p in ("mass", "width"))
    assert "f2(1270):BR[pi+ pi-]" in model.all_parameter_names
    assert not any("BR[" in p for p in model.parameter_names)
    assert model.bounds[i_mass][0] == pytest.approx(2 * MK + 1e-3)
    data, mc = model.precompute(flat_events(400, seed=3)), model.precompute(flat_events(800, seed=4))
    p0 = jnp.asarray(model.initial_values())
    intensity = np.asarray(jax.jit(model.intensity, compiler_options=FAST)(p0, mc))
    assert np.all(np.isfinite(intensity)) and np.all(intensity > 0)
    grad = np.asarray(jax.jit(jax.grad(lambda p: model.nll(p, data, mc)), compiler_options=FAST)(p0))
    assert np.all(np.isfinite(grad)) and grad[i_mass] != 0 and grad[i_width] != 0
    reloaded = Model.from_card(parse_model_card(yaml.safe_load(card.to_yaml()), source="round trip"))
    assert reloaded.all_parameter_names == model.all_parameter_names
    np.testing.assert_allclose(np.asarray(jax.jit(reloaded.intensity, compiler_options=FAST)(p0, mc)), intensity,
                               rtol=1e-12)


def test_registered_for_the_contract_tests():
    """test_pwa_lineshapes.py parametrises over the registry: the example is a valid f2(1270) card block."""
    assert "BW_channels" in LINESHAPES and BWC.example_spin == 2
    ls, flat = BWC.for_card(EXAMPLE_CARD)
    assert ls.parameters == BWC.parameters and ls.example == BWC.example
    assert sum(v for k, v in BWC.example.items() if k.startswith("BR[")) == pytest.approx(1.0, abs=1e-12)
    assert BWC.validate(BWC.example, LineshapeContext(2, MK, MK)) == []


def test_readme_card_builds():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "BW_channels" in b)
    model = Model.from_card(parse_model_card(yaml.safe_load(block), source="README BW_channels card"))
    assert any(p.endswith(":BR[pi+ pi-]") for p in model.all_parameter_names)
