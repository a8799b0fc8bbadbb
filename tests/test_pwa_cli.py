"""The pwa command line: fractions and toy generation, and clean errors."""

import json

import numpy as np
from typer.testing import CliRunner

from cli.pwa_app import app
from fastsim.events import read_events

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
    assert len(read_events(out)) == 300


def test_bad_card_is_one_line_error(tmp_path):
    card = tmp_path / "bad.yaml"
    card.write_text("resonances:\n- {name: X, spin: 1, lineshape: {type: NR}, couplings: {0: [1, 0]}}\n"
                    "reference: X\n")
    res = runner.invoke(app, ["fractions", "--model", str(card), "--n-mc", "1000"])
    assert res.exit_code == 2
    assert "bad.yaml" in res.output and "spin" in res.output and "Traceback" not in res.output
