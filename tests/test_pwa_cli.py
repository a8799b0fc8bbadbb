"""The pwa command line: fractions and toy generation, and clean errors."""

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cli.pwa_app import app
from fastsim.events import JPSI_GAMMA_KK, read_events

runner = CliRunner()


def test_fractions_json():
    res = runner.invoke(app, ["fractions", "--model", "models/jpsi_gamma_kk.yaml", "--n-mc", "20000", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["fractions"]) == {"f0(980)", "f2(2340)", "f2'(1525)", "f0(1710)", "f2(1270)", "f2(2150)"}
    assert out["sum_of_fractions"] == sum(out["fractions"].values())
    assert sum(out["fractions"].values()) + sum(out["interference"].values()) == np.float64(1.0) or \
        abs(sum(out["fractions"].values()) + sum(out["interference"].values()) - 1) < 1e-12


def test_generate_writes_events(tmp_path):
    out = tmp_path / "toy.npz"
    res = runner.invoke(app, ["generate", "--model", "models/jpsi_gamma_kk.yaml", "--n", "300", "--out", str(out),
                              "--detector", "none", "--seed", "4", "--chunk-size", "20000"])
    assert res.exit_code == 0, res.output
    assert "throughput" in res.stdout
    assert len(read_events(out, JPSI_GAMMA_KK)) == 300


def test_bad_card_is_one_line_error(tmp_path):
    card = tmp_path / "bad.yaml"
    card.write_text("resonances:\n- {name: X, spin: 1, lineshape: {type: NR}, couplings: {0: [1, 0]}}\n"
                    "reference: X\n")
    res = runner.invoke(app, ["fractions", "--model", str(card), "--n-mc", "1000"])
    assert res.exit_code == 2
    assert "bad.yaml" in res.output and "spin" in res.output and "Traceback" not in res.output


def test_fractions_of_another_reaction_with_mc_errors():
    res = runner.invoke(app, ["fractions", "--model", "models/d0_kpipi0.yaml", "--n-mc", "20000", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["fractions"]) == {"rho(770)+", "K*(892)-", "K*(892)~0"}
    assert all(0 < e < 0.02 for e in out["mc_errors"].values())


def test_closure_refuses_floating_lineshapes_of_any_reaction(tmp_path):
    """The closure runs for every reaction (tree flows), but fits couplings with fixed lineshapes only:
    a four-kaon card with a floating mass is refused before any toy."""
    import yaml

    card = yaml.safe_load(Path("models/r0.yaml").read_text())
    card["resonances"][2]["float"] = ["mass"]
    path = tmp_path / "r0_float.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    res = runner.invoke(app, ["closure", "--model", str(path), "--toys", "1", "--n-data", "100",
                              "--n-train", "1000", "--n-flow", "1000", "--n-reference", "1000",
                              "--out", str(tmp_path / "closure")])
    assert res.exit_code != 0
    assert "r0_float.yaml" in res.output and "fixed lineshapes" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "closure").exists()
