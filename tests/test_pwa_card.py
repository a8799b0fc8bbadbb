"""Model cards: shipped cards load; bad cards fail with the file and the field named."""

from pathlib import Path

import pytest
import yaml

from pwa import Model, ModelCardError, load_model_card

GOOD = {
    "reaction": {"parent": "J/psi", "final_state": {"gamma": "gamma", "Kp": "K+", "Km": "K-"}},
    "resonances": [
        {"name": "f2'(1525)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.5223, "width": 0.0858},
         "float": ["mass", "width"], "bounds": {"mass": [1.45, 1.6]},
         "couplings": {0: [1.0, 0.0], 1: [0.8, 1.2], 2: [0.4, -0.6]}},
        {"name": "f0(980)", "spin": 0, "lineshape": {"type": "Flatte", "mass": 0.979, "g_pipi": 0.107},
         "couplings": {0: [0.5, 0.3]}},
    ],
    "reference": "f2'(1525)",
}


def write(tmp_path, card):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


@pytest.mark.parametrize("name, reaction, n_res", [
    ("r0.yaml", "psi(2S) -> K+ K- K+ K-", 6), ("r0_plus4.yaml", "psi(2S) -> K+ K- K+ K-", 10),
    ("jpsi_gamma_kk.yaml", "J/psi -> gamma K+ K-", 6), ("jpsi_gamma_kk_plus4.yaml", "J/psi -> gamma K+ K-", 10),
    ("d0_kpipi0.yaml", "D0 -> K- pi+ pi0", 3), ("jpsi_gamma_pi0pi0.yaml", "J/psi -> gamma pi0 pi0", 3),
])
def test_shipped_cards_load(name, reaction, n_res):
    model = Model.from_card(load_model_card(Path("models") / name))
    assert str(model.reaction) == reaction
    assert len(model.resonance_names) == n_res
    assert all(p.endswith((".mag", ".phase")) for p in model.parameter_names)
    assert Model.from_card(model.card_at(model.initial_values())).parameter_names == model.parameter_names


def test_every_shipped_card_is_tested():
    tested = {"r0.yaml", "r0_plus4.yaml", "jpsi_gamma_kk.yaml", "jpsi_gamma_kk_plus4.yaml", "d0_kpipi0.yaml",
              "jpsi_gamma_pi0pi0.yaml"}
    assert {p.name for p in Path("models").glob("*.yaml")} == tested


def test_parameters_and_bounds(tmp_path):
    model = Model.from_card(load_model_card(write(tmp_path, GOOD)))
    assert model.parameter_names == (
        "f2'(1525):c1.mag", "f2'(1525):c1.phase", "f2'(1525):c2.mag", "f2'(1525):c2.phase",
        "f2'(1525):mass", "f2'(1525):width", "f0(980):c0.mag", "f0(980):c0.phase")
    assert model.bounds[4] == (1.45, 1.6) and model.bounds[0] == (0.0, None) and model.bounds[1] == (None, None)
    assert list(model.initial_values()) == [0.8, 1.2, 0.4, -0.6, 1.5223, 0.0858, 0.5, 0.3]
    assert Model.from_card(model.card_at(model.initial_values())).parameter_names == model.parameter_names


def _with(resonance_changes=None, **top):
    card = yaml.safe_load(yaml.safe_dump(GOOD, sort_keys=False))
    card.update(top)
    if resonance_changes:
        card["resonances"][0].update(resonance_changes)
    return card


@pytest.mark.parametrize("card, field, words", [
    (_with({"spin": 3}), "resonances[0] (f2'(1525)).spin", "C parity -1 of J/psi"),
    (_with({"spin": 5}), "resonances[0] (f2'(1525)).spin", "expected 0 to 4"),
    (_with({"couplings": {0: [1.0, 0.0], 3: [1.0, 0.0]}}), "resonances[0] (f2'(1525)).couplings",
     "3 is not an independent helicity pair"),
    (_with({"spin": 0}), "resonances[0] (f2'(1525)).couplings", "1 is not an independent helicity pair"),
    (_with({"couplings": {"+1 0": [1.0, 0.0]}}), "resonances[0] (f2'(1525)).couplings",
     "expected one of \"+0 +1\", \"+1 +1\", \"+2 +1\""),
    (_with({"node": "Y"}), "resonances[0] (f2'(1525)).node", "on no chain"),
    (_with({"lineshape": {"type": "Gauss", "mass": 1.5}}), "lineshape", "not a known lineshape"),
    (_with({"name": "X(1600)", "lineshape": {"type": "BW", "mass": 1.5}}, reference="X(1600)"), "lineshape",
     "needs parameter 'width'"),
    (_with({"lineshape": {"type": "BW", "mass": 0.9, "width": 0.1}, "bounds": {}}), "lineshape", "threshold"),
    (_with({"float": ["radius", "g_pipi"]}), "resonances[0]", "'g_pipi' is not a parameter"),
    (_with({"couplings": {0: [-1.0, 0.0]}}), "couplings", "must be >= 0"),
    (_with(reference="f2(1270)"), "reference", "not one of the resonances"),
    (_with(reaction={"final_state": {"gamma": "gamma", "Kp": "K+", "Km": "K-"},
                     "chains": ["J/psi -> X gamma; X -> Kp pi"]}), "reaction", "neither decays nor is a final-state"),
    (_with(reaction={"parent": "psi(2S)", "final_state": {"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"},
                     "chains": ["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"]}),
     "resonances[0] (f2'(1525)).node", "the reaction's chains have the inner nodes f, phi"),
    (_with({"bounds": {"mass": [1.6, 1.7]}}), "resonances[0]", "must lie inside"),
])
def test_bad_cards_name_file_and_field(tmp_path, card, field, words):
    path = write(tmp_path, card)
    with pytest.raises(ModelCardError) as err:
        load_model_card(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and words in msg, msg


def test_identical_pseudoscalars_are_symmetrised_and_odd_spins_refused(tmp_path):
    """J/psi -> gamma K_S K_S: allowed (Bose-symmetrised amplitude); J = 1 into K_S K_S is refused."""
    card = _with(reaction={"final_state": {"gamma": "gamma", "KS1": "K_S0", "KS2": "K_S0"}})
    model = Model.from_card(load_model_card(write(tmp_path, card)))
    assert model.amplitude.permutations == ((0, 1, 2), (0, 2, 1))
    bad = yaml.safe_load(yaml.safe_dump(card, sort_keys=False))
    bad["resonances"][0].update({"spin": 1, "parity": -1, "couplings": {0: [1.0, 0.0]}})
    with pytest.raises(ModelCardError, match=r"resonances\[0\] \(f2'\(1525\)\)\.spin: .*(Bose symmetry|C parity)"):
        load_model_card(write(tmp_path, bad))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ModelCardError, match="no such model card"):
        load_model_card(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resonances: [\n")
    with pytest.raises(ModelCardError, match="not valid YAML"):
        load_model_card(bad)
