"""A small closure run: report structure, finite and consistent numbers, resume."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cli.pwa_app import app

runner = CliRunner()


ARGS = ["--toys", "2", "--n-data", "600", "--n-train", "4000", "--n-flow", "8000", "--n-reference", "20000",
        "--flow-epochs", "2", "--flow-layers", "2", "--flow-hidden", "16", "--executor", "serial", "--seed", "3",
        "--flow-bootstrap", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_card):
    raw = small_card
    tmp = tmp_path_factory.mktemp("closure")
    card = tmp / "card.yaml"
    card.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp / "out"
    res = runner.invoke(app, ["closure", "--model", str(card), "--out", str(out), *ARGS])
    return card, out, res


def test_report_structure_and_finite_numbers(run):
    _, out, res = run
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    names = m["quantities"]
    assert names[-4:] == ["F(f0(980))", "F(f2'(1525))", "F(f0(1710))", "SF"]
    assert set(m["shift"]) == {"small", "flow", "flow_rw", "flow_bc"}
    assert set(m["pull"]) == {"reference", "small", "flow", "flow_rw", "flow_bc"}
    assert set(m["amplification"]) == {"flow", "flow_rw", "flow_bc"}
    for c, table in m["shift"].items():
        for n in names:
            assert np.isfinite(table[n]["mean"]) and table[n]["rms"] >= abs(table[n]["mean"]) - 1e-12
    for c in m["amplification"]:
        assert all(np.isfinite(v) and v > 0 for v in m["amplification"][c].values())
    # Consistency: the truth's fractions sum to its SF.
    t = m["truth"]
    assert t["F(f0(980))"] + t["F(f2'(1525))"] + t["F(f0(1710))"] == pytest.approx(t["SF"], rel=1e-12)
    assert m["converged"]["reference"] == 2
    assert all(0.4 < v["auc"] < 1.0 for v in m["flow_validation"])
    report = (out / "report.md").read_text()
    assert "Amplification" in report and "| F(f2'(1525)) |" in report and "flow_bc: bootstrap" in report
    assert (out / "pulls.png").exists() and (out / "shifts.png").exists()


def test_resume_keeps_finished_toys(run):
    card, out, _ = run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "toys").iterdir()}
    res = runner.invoke(app, ["closure", "--model", str(card), "--out", str(out), *ARGS])
    assert res.exit_code == 0, res.output
    after = {p.name: p.stat().st_mtime_ns for p in (out / "toys").iterdir()}
    assert before == after  # nothing was recomputed
