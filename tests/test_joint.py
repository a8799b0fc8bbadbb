"""Simultaneous fits (pwa.joint): two data sets generated with shared lineshape parameters.

Channel A and channel B are J/psi -> gamma K+ K- data of two different
models (other helicity couplings of the f2'(1525)) that share its
helicity-0 coupling (magnitude and phase). The joint fit recovers the truth,
and its error on each shared parameter is smaller than either channel's
alone (about 1/sqrt(2) of it for equal sizes). Lineshapes are fixed here to
keep the test fast; a shared mass or width is the same code path (any free
parameter name can be shared).
"""

import copy

import numpy as np
import pytest

from _shared import TWO_STATE_CARD, flat_events, without_floats
from fastsim.events import Detector, Events
from pwa import Model
from pwa.card import parse_model_card
from pwa.errors import FitError, ModelCardError
from pwa.fit import fit
from pwa.fit_result import FitConfig
from pwa.joint import JointProblem, fit_joint, load_fit_card
from pwa.problem import FitProblem
from pwa.toys import iter_toys

SHARED = ("f2'(1525):c0.mag", "f2'(1525):c0.phase")
CARD_A = without_floats(TWO_STATE_CARD)


def card_b() -> dict:
    raw = copy.deepcopy(CARD_A)
    raw["resonances"][1]["couplings"] = {0: [6.0, 1.2], 1: [5.0, 1.9], 2: [1.0, 2.5]}
    return raw


@pytest.fixture(scope="module")
def channels():
    out = {}
    mc = flat_events(20_000, seed=11)
    for k, (name, raw) in enumerate((("A", CARD_A), ("B", card_b()))):
        model = Model.from_card(parse_model_card(copy.deepcopy(raw), source=f"<channel {name}>"))
        data = Events.concatenate(list(iter_toys(model, 2000, Detector(None), seed=20 + k)))
        out[name] = (model, data, mc)
    return out


@pytest.fixture(scope="module")
def fits(channels):
    config = FitConfig()
    problems = {c: FitProblem.build(m, d, mc) for c, (m, d, mc) in channels.items()}
    alone = {c: fit(*channels[c], config, problem=problems[c]) for c in channels}
    joint = fit_joint(JointProblem.build(problems, SHARED), config)
    return alone, joint


def test_joint_fit_recovers_the_shared_truth_with_smaller_errors(fits, channels):
    alone, joint = fits
    assert joint.converged and all(r.converged for r in alone.values())
    truth = dict(zip(channels["A"][0].parameter_names, channels["A"][0].initial_values()))
    for name in SHARED:
        i = joint.parameter_names.index(name)
        value, error = joint.values[i], joint.errors[i]
        assert abs(value - truth[name]) < 3.5 * error, name
        for c, r in alone.items():
            assert error < 0.9 * r.parameter(name)[1], (name, c, error, r.parameter(name)[1])
    # each channel keeps its own couplings, recovered within errors
    for c, (model, _, _) in channels.items():
        r = joint.channels[c]
        for name, t in zip(model.parameter_names, model.initial_values()):
            v, e = r.parameter(name)
            if name.endswith(".phase"):
                d = np.angle(np.exp(1j * (v - t)))
            else:
                d = v - t
            assert abs(d) < 4.0 * e, (c, name, v, t, e)


def test_joint_nll_is_the_sum_of_the_channels_and_gradients_are_exact(channels):
    import jax
    import jax.numpy as jnp

    problems = {c: FitProblem.build(m, d, mc) for c, (m, d, mc) in channels.items()}
    joint = JointProblem.build(problems, SHARED)
    f = joint.objective()
    x = joint.initial_values() * (1 + 0.01 * np.sin(np.arange(joint.n_free)))
    total = float(f(jnp.asarray(x), joint.arguments()))
    assert total == pytest.approx(sum(joint.channel_nll(k, x) for k in range(2)), rel=1e-12)
    g = np.asarray(jax.grad(f)(jnp.asarray(x), joint.arguments()))
    for i in (joint.parameter_names.index(SHARED[0]), 0, joint.n_free - 1):
        h = 1e-6 * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        fd = (float(f(jnp.asarray(x + e), joint.arguments())) - float(f(jnp.asarray(x - e), joint.arguments()))) / (2 * h)
        assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-6)
    assert joint.n_free == sum(len(i) for i in joint.index) - len(SHARED)
    assert sum(name in SHARED for name in joint.parameter_names) == 2
    assert all(name in SHARED or name.split("/")[0] in ("A", "B") for name in joint.parameter_names)


def test_a_shared_name_must_be_free_in_two_channels(channels):
    problems = {c: FitProblem.build(m, d, mc) for c, (m, d, mc) in channels.items()}
    with pytest.raises(FitError, match=r"shared: 'f0\(1710\):mass' is a free parameter of no channel"):
        JointProblem.build(problems, ["f0(1710):mass"])
    floating = Model.from_card(parse_model_card(copy.deepcopy(TWO_STATE_CARD), source="<floating>"))
    with pytest.raises(FitError, match="only of channel C"):
        JointProblem.build({"A": problems["A"], "C": FitProblem.build(floating, *channels["B"][1:])},
                           ["f2'(1525):mass"])


def test_fit_card_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "joint.yaml"
    bad.write_text("channels:\n  kk: {model: a.yaml, data: d.npz}\n")
    with pytest.raises(ModelCardError, match=r"joint.yaml: field channels.kk.mc: Field required"):
        load_fit_card(bad)
    bad.write_text("channels: {}\n")
    with pytest.raises(ModelCardError, match="joint.yaml: field channels"):
        load_fit_card(bad)
    bad.write_text("channels:\n  kk: {model: a.yaml, data: d.npz, mc: m.npz, background: {sample: b.npz, "
                   "method: histogram}}\n")
    with pytest.raises(ModelCardError, match="joint.yaml: field channels.kk.background.method"):
        load_fit_card(bad)
    bad.write_text("channels:\n  kk: {model: a.yaml, data: d.npz, mc: m.npz}\nshare: [x]\n")
    with pytest.raises(ModelCardError, match="field share: Extra inputs are not permitted"):
        load_fit_card(bad)
    good = tmp_path / "sub" / "joint.yaml"
    good.parent.mkdir()
    good.write_text("channels:\n  kk: {model: a.yaml, data: /abs/d.npz, mc: m.npz}\n")
    card = load_fit_card(good)
    assert card.path(card.channels["kk"].model) == good.parent / "a.yaml"
    assert str(card.path(card.channels["kk"].data)) == "/abs/d.npz"


def test_a_channel_with_a_background_term(channels):
    """Channel A gets 25 % background (flat x a rising K K mass) and the explicit term with its exact
    density, f_b floating: the joint fit recovers the shared coupling and A's background fraction
    ("A/background_fraction"), and the joint NLL is still the sum of the channels'."""
    import jax.numpy as jnp

    from pwa.background import BackgroundModel

    def shape(events):
        m = events.helicity_variables[:, 0]
        return 1.0 + 2.0 * (m - m.min()) / (m.max() - m.min())

    model, data, mc = channels["A"]
    flat = flat_events(6000, seed=12)
    rng = np.random.default_rng(13)
    s = shape(flat)
    bkg = flat.subset(np.flatnonzero(rng.uniform(size=len(flat)) < s / s.max())[:667])
    mixed = Events.concatenate([data, bkg])
    m_mixed = mixed.helicity_variables[:, 0]
    lo, hi = flat.helicity_variables[:, 0].min(), flat.helicity_variables[:, 0].max()
    g = lambda m: 1.0 + 2.0 * (m - lo) / (hi - lo)  # noqa: E731
    density = g(m_mixed) / g(mc.helicity_variables[:, 0]).mean()
    term = BackgroundModel(density, fraction=0.2, float_fraction=True)
    problems = {"A": FitProblem.build(model, mixed, mc, background=term),
                "B": FitProblem.build(*channels["B"])}
    joint = JointProblem.build(problems, SHARED)
    i_fb = joint.parameter_names.index("A/background_fraction")
    assert joint.bounds[i_fb] == (0.0, 1.0)
    x = joint.initial_values()
    f = joint.objective()
    assert float(f(jnp.asarray(x), joint.arguments())) == pytest.approx(
        joint.channel_nll(0, x) + joint.channel_nll(1, x), rel=1e-12)
    result = fit_joint(joint)
    assert result.converged
    v, e = result.channels["A"].parameter("background_fraction")
    assert abs(v - 667 / 2667) < 3.5 * e and e < 0.05
    truth = dict(zip(model.parameter_names, model.initial_values()))
    for name in SHARED:
        i = result.parameter_names.index(name)
        assert abs(result.values[i] - truth[name]) < 3.5 * result.errors[i], name
    assert result.channels["A"].parameter_names[-1] == "background_fraction"
