"""Fits recover generated truth for any reaction.

* The public toys of ../shared/reference/README_topologies.md (copied into
  tests/data/; made with ampform, not by this project): P3 psi(2S) -> phi K+ K-
  (5,000 events, fitted with its 20,000 importance-weighted MC) and P4
  D0 -> K- pi+ pi0 (5,000 events, 20,000 flat MC). The fitted fractions must
  agree with the truth fractions of the README within 3 sigma (the fit's
  error and the truth's integration error added in quadrature).
* Our own toys of every shipped card with detector-free MC, fitted from
  perturbed start values (small here; larger runs in experiments/).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from fastsim.events import Detector, Events
from fastsim.events.nbody import NBodyPhaseSpace
from pwa import FitConfig, Model, fit
from pwa.toys import iter_toys

from _shared import p3_card

DATA = Path(__file__).parent / "data"
CONFIG = FitConfig(gen_events=300_000, starts=1)


def _events(z, prefix, keys, reaction, weights=None):
    return Events(np.stack([z[f"{prefix}{k}"] for k in keys], axis=1), weights, reaction=reaction)


def _start_far(model: Model) -> Model:
    """The same model with every free coupling at (1, 0): the fit must find the truth itself."""
    raw = model.card.to_dict()
    for r in raw["resonances"]:
        if r["couplings"]:
            r["couplings"] = {k: ((1.0, 0.0) if r["name"] != raw["reference"] or i else tuple(v))
                              for i, (k, v) in enumerate(r["couplings"].items())}
    return Model.from_card(raw)


def _check(result, truth: dict[str, float], truth_err: dict[str, float]) -> None:
    """Every fitted fraction within 3 sigma of the truth (fit error and truth error in quadrature)."""
    for name in result.resonance_names:
        f, e = result.fraction(name)
        pull = (f - truth[name]) / np.hypot(e, truth_err[name])
        assert abs(pull) < 3.0, (name, f, truth[name], e, pull)


def test_public_psi2s_toy_fractions_recovered():
    z = dict(np.load(DATA / "toy_psi2s_phi_kk.npz"))
    info = json.loads((DATA / "toy_psi2s_phi_kk.json").read_text())
    card = p3_card(DATA)
    model = _start_far(Model.from_card(card))
    keys = ("kp1", "km1", "kp2", "km2")
    data = _events(z, "p_", keys, model.reaction)
    mc = _events(z, "mcw_p_", keys, model.reaction, z["mcw_weight"])
    result = fit(model, data, mc, CONFIG)
    assert result.converged
    _check(result, info["fit_fractions"], info["fit_fraction_stat_errors"])


def test_public_d0_toy_fractions_recovered():
    z = dict(np.load(DATA / "toy_d0_kpipi0.npz"))
    info = json.loads((DATA / "toy_d0_kpipi0.json").read_text())
    model = _start_far(Model.from_card("models/d0_kpipi0.yaml"))
    keys = ("km", "pip", "pi0")
    result = fit(model, _events(z, "p_", keys, model.reaction), _events(z, "mc_p_", keys, model.reaction), CONFIG)
    assert result.converged
    _check(result, info["fit_fractions"], info["fit_fraction_stat_errors"])


@pytest.mark.parametrize("card, n_data, n_mc", [
    ("models/d0_kpipi0.yaml", 4000, 40_000),
    ("models/jpsi_gamma_pi0pi0.yaml", 4000, 40_000),
])
def test_own_toys_recovered(card, n_data, n_mc):
    truth = Model.from_card(card)
    data = Events.concatenate(list(iter_toys(truth, n_data, Detector(None), seed=11)))
    mc = Events(NBodyPhaseSpace(truth.reaction).sample(n_mc, np.random.default_rng(12)), None, reaction=truth.reaction)
    result = fit(_start_far(truth), data, mc, CONFIG)
    assert result.converged
    delta = result.values - truth.initial_values()
    phase = np.array([n.endswith(".phase") for n in truth.parameter_names])
    delta[phase] = np.angle(np.exp(1j * delta[phase]))
    pulls = delta / result.errors
    assert np.all(np.abs(pulls) < 4.0), dict(zip(truth.parameter_names, np.round(pulls, 2)))


def test_seed_reaction_r0_recovered():
    """models/r0.yaml (psi(2S) -> phi f_J -> K+ K- K+ K-, 46 free parameters): toys at generator level,
    fitted with importance-weighted phase-space MC from a start 0.3 rad and 20 % away from the truth."""
    from pwa.fractions import generator_events

    truth = Model.from_card("models/r0.yaml")
    data = Events.concatenate(list(iter_toys(truth, 3000, Detector(None), seed=21)))
    mc = generator_events(truth, 100_000, np.random.default_rng(22))
    x0 = truth.initial_values().copy()
    phase = np.array([n.endswith(".phase") for n in truth.parameter_names])
    x0[phase] += 0.3
    x0[~phase] *= 1.2
    result = fit(truth, data, mc, CONFIG, x0=x0)
    assert result.converged
    delta = result.values - truth.initial_values()
    delta[phase] = np.angle(np.exp(1j * delta[phase]))
    pulls = delta / result.errors
    assert np.all(np.abs(pulls) < 4.5), dict(zip(truth.parameter_names, np.round(pulls, 2)))
    true_fractions = np.diag(np.asarray(truth.fit_fractions(truth.initial_values(),
                                                             Model.precompute(truth, mc))))
    fpull = (np.diag(result.fractions) - true_fractions) / np.diag(result.fraction_errors)
    assert np.all(np.abs(fpull) < 4.0), dict(zip(truth.resonance_names, np.round(fpull, 2)))
