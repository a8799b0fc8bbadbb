"""A small closure run on a reaction whose flow works in its decay tree's coordinates.

J/psi -> gamma pi0 pi0: identical neutral pions, reconstructed from photons, so
the flow is the tree-coordinate one with the neutral-hadron acceptance gates
(fastsim.acceptance) and the identical-pion fold. The numbers are not a closure
result (two toys of 600 events); the test checks that every stage of the chain
runs on such a reaction and that its report is consistent.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.pwa_app import app

runner = CliRunner()

ARGS = ["--toys", "2", "--n-data", "600", "--n-train", "4000", "--n-flow", "8000", "--n-reference", "20000",
        "--flow-epochs", "2", "--flow-layers", "2", "--flow-hidden", "16", "--executor", "serial", "--seed", "5",
        "--flow-bootstrap", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("closure_tree") / "out"
    res = runner.invoke(app, ["closure", "--model", "models/jpsi_gamma_pi0pi0.yaml", "--out", str(out), *ARGS])
    return out, res


def test_tree_closure_report(run):
    out, res = run
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    names = m["quantities"]
    assert names[-4:] == ["F(f0(980))", "F(f2(1270))", "F(f0(1710))", "SF"]
    # No DCTR reweighting for a tree flow (it classifies the helicity variables of gamma + two tracks).
    assert "flow_rw" not in m["shift"] and {"small", "flow"} <= set(m["shift"])
    for table in m["shift"].values():
        for n in names:
            assert np.isfinite(table[n]["mean"]) and table[n]["rms"] >= abs(table[n]["mean"]) - 1e-12
    t = m["truth"]
    assert t["F(f0(980))"] + t["F(f2(1270))"] + t["F(f0(1710))"] == pytest.approx(t["SF"], rel=1e-12)
    assert m["converged"]["reference"] == 2
    assert all(0.4 < v["auc"] < 1.0 for v in m["flow_validation"])


def test_tree_closure_flow_is_gated_on_the_neutral_pions(run):
    """Each toy's flow carries gates at the photon barrel and end cap, which the pi0s share."""
    out, res = run
    assert res.exit_code == 0, res.output
    records = [json.loads(p.read_text()) for p in sorted((out / "toys").glob("*.json"))]
    assert len(records) == 2
    for r in records:
        gates = r["flow_training"]["gates"]
        assert gates is not None
        assert gates["barrel_cos_max"][0] == pytest.approx(0.80, abs=0.01)
        assert gates["endcap_cos_min"][0] == pytest.approx(0.86, abs=0.01)
