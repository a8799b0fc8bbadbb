"""The README's cards and its claims about the shipped cards hold."""

import re
from pathlib import Path

import pytest
import yaml

from pwa import Model, fit_fractions_mc, parse_model_card

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE1 = {"f0(980)": 39.5, "f2(2340)": 37.1, "f2'(1525)": 24.7, "f0(1710)": 8.30, "f2(1270)": 3.16,
          "f2(2150)": 2.22}


def _section_cards() -> list[str]:
    text = README.read_text()
    section = text.split("## A card for your reaction", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_readme_has_three_topologies():
    assert len(_section_cards()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_card_builds(index):
    card = parse_model_card(yaml.safe_load(_section_cards()[index]), source=f"README card {index}")
    model = Model.from_card(card)
    assert model.n_free > 0 and len(model.resonance_names) >= 2


def test_r0_card_reproduces_seed_table1():
    """pwa fractions --model models/r0.yaml: Table 1 within the MC error (3 sigma) plus 0.1 % absolute."""
    result = fit_fractions_mc(Model.from_card("models/r0.yaml"), n_mc=300_000, seed=5)
    assert str(Model.from_card("models/r0.yaml").reaction) == "psi(2S) -> K+ K- K+ K-"
    for (name, f), err in zip(result.fractions.items(), result.errors):
        assert abs(100 * f - TABLE1[name]) < 3 * 100 * err + 0.1, (name, 100 * f, 100 * err)
    assert abs(100 * result.sum_of_fractions - 115.0) < 3 * 100 * result.errors[-1] + 0.1


def _real_analysis_cards() -> list[str]:
    text = README.read_text()
    section = text.split("## What a real analysis brings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_readme_kmatrix_card_builds_and_floats_its_parameters():
    card = parse_model_card(yaml.safe_load(_real_analysis_cards()[0]), source="README K-matrix card")
    model = Model.from_card(card)
    assert "S-wave:f0(980).mass" in model.parameter_names and "S-wave:f0(1500).beta.phase" in model.parameter_names


def test_readme_fit_card_validates(tmp_path):
    from pwa.joint import load_fit_card

    path = tmp_path / "joint.yaml"
    path.write_text(_real_analysis_cards()[1])
    card = load_fit_card(path)
    assert list(card.channels) == ["period1", "period2"] and card.shared == ["f2'(1525):mass", "f2'(1525):width"]
