"""`pwa fit`, `pwa scan-fraction` and `pwa lasso-scan` end to end on a small model."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cli.pwa_app import app
from fastsim.events import Detector, Events, conventional_mc, load_detector_card, write_events, JPSI_GAMMA_KK
from pwa.amplitude import Model
from pwa.toys import iter_toys

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_card):
    raw = small_card
    tmp = tmp_path_factory.mktemp("fitcli")
    card = tmp / "card.yaml"
    card.write_text(yaml.safe_dump(raw, sort_keys=False))
    det = Detector(load_detector_card("default"))
    model = Model.from_card(raw)
    write_events(tmp / "data.parquet", Events.concatenate(list(iter_toys(model, 1500, det, seed=3))))
    write_events(tmp / "mc.parquet", conventional_mc(15_000, det, reaction=JPSI_GAMMA_KK, seed=4))
    return tmp, card


def test_fit_writes_result_report_and_plots(files):
    tmp, card = files
    out = tmp / "fit"
    res = runner.invoke(app, ["fit", "--model", str(card), "--data", str(tmp / "data.parquet"),
                              "--mc", str(tmp / "mc.parquet"), "--out", str(out), "--significance"])
    assert res.exit_code == 0, res.output
    assert "CONVERGED" in res.output and "sigma" in res.output
    d = json.loads((out / "result.json").read_text())
    for key in ("nll", "converged", "parameters", "fractions", "sum_of_fractions", "covariance",
                "n_data", "n_mc", "significance"):
        assert key in d, key
    assert d["n_data"] == 1500 and d["n_mc"] == 15000 and d["converged"]
    assert np.isfinite(d["fractions"]["f2'(1525)"]["error"])
    report = (out / "report.md").read_text()
    assert "| f2'(1525) | 2++ |" in report and "| SF |" in report
    for stem in ("m", "cos_theta_X", "cos_theta_1", "phi_1", "dalitz"):
        assert (out / f"fit_{stem}.png").stat().st_size > 1000
        assert f"(fit_{stem}.png)" in report



def test_fit_split_over_devices_matches_one_device(files):
    """`pwa fit --devices 4` (events sharded over the 4 host devices of the test session,
    padded with zero-weight events) gives the one-device fit; too many devices is a clear error."""
    tmp, card = files
    results = {}
    for n in (1, 4):
        out = tmp / f"fit_dev{n}"
        res = runner.invoke(app, ["fit", "--model", str(card), "--data", str(tmp / "data.parquet"),
                                  "--mc", str(tmp / "mc.parquet"), "--out", str(out), "--no-plots",
                                  "--devices", str(n)])
        assert res.exit_code == 0, res.output
        assert ("split over 4 devices" in res.output) == (n == 4)
        results[n] = json.loads((out / "result.json").read_text())
    assert results[4]["nll"] == pytest.approx(results[1]["nll"], rel=1e-10)
    for name, par in results[1]["parameters"].items():
        assert results[4]["parameters"][name]["value"] == pytest.approx(par["value"], rel=1e-6, abs=1e-8)
        assert results[4]["parameters"][name]["error"] == pytest.approx(par["error"], rel=1e-5)
    res = runner.invoke(app, ["fit", "--model", str(card), "--data", str(tmp / "data.parquet"),
                              "--mc", str(tmp / "mc.parquet"), "--out", str(tmp / "x"), "--devices", "64"])
    assert res.exit_code == 2 and "only 4 devices available" in res.output

def test_fraction_scan(files):
    tmp, card = files
    out = tmp / "scan"
    res = runner.invoke(app, ["scan-fraction", "--model", str(card), "--data", str(tmp / "data.parquet"),
                              "--mc", str(tmp / "mc.parquet"), "--targets", "0.9,1.0,1.1",
                              "--sf-lambda", "1.0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    pts = json.loads((out / "scan.json").read_text())["points"]
    sf = [p["sum_of_fractions"] for p in pts]
    assert sf[0] < sf[1] < sf[2]  # a strong constraint follows its target
    assert (out / "scan.png").exists() and (out / "scan.md").exists()


def test_lasso_scan(files):
    tmp, card = files
    out = tmp / "lasso"
    res = runner.invoke(app, ["lasso-scan", "--model", str(card), "--data", str(tmp / "data.parquet"),
                              "--mc", str(tmp / "mc.parquet"), "--lambdas", "1,300", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "lasso.json").read_text())
    assert len(d["path"]) == 2 and d["selected"]
    for p in d["path"]:
        assert np.isfinite(p["bic"]) and np.isfinite(p["aic"])
    # A stronger penalty never increases the total of the penalised fractions' roots.
    roots = [sum(np.sqrt(max(v, 0)) for v in p["fractions"].values()) for p in d["path"]]
    assert roots[1] <= roots[0] + 1e-9


@pytest.mark.parametrize("case, message", [
    ("missing_data", "no such file"),
    ("bad_card", "card.yaml"),
    ("mismatch", "missing column(s) Kp_E"),
    ("bad_grid", "cannot read the grid"),
])
def test_bad_input_is_a_clean_error(files, tmp_path, case, message, small_card):
    raw = small_card
    tmp, card = files
    args = ["fit", "--model", str(card), "--data", str(tmp / "data.parquet"), "--mc", str(tmp / "mc.parquet"),
            "--out", str(tmp_path / "o")]
    if case == "missing_data":
        args[4] = str(tmp_path / "nope.parquet")
    elif case == "bad_card":
        bad = tmp_path / "card.yaml"
        bad.write_text(yaml.safe_dump({**raw, "reference": "f9(9999)"}, sort_keys=False))
        args[2] = str(bad)
    elif case == "mismatch":
        from fastsim.events import PhaseSpace, Reaction

        r = Reaction(particles=("gamma", "pi+", "pi-"), prefixes=("gamma", "pip", "pim"))
        ev = Events.from_helicity_variables(PhaseSpace(r).sample(100, np.random.default_rng(1)), r)
        write_events(tmp_path / "pipi.parquet", ev)
        args[4] = str(tmp_path / "pipi.parquet")
    else:
        args = ["scan-fraction", *args[1:7], "--targets", "1.0:x:3"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_fit_with_flow_mc_and_reweighting(files):
    tmp, card = files
    out = tmp / "flowfit"
    res = runner.invoke(app, ["fit", "--model", str(card), "--data", str(tmp / "data.parquet"), "--mc", "flow",
                              "--n-mc", "20000", "--reweight", str(tmp / "mc.parquet"), "--out", str(out),
                              "--no-plots"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "result.json").read_text())
    assert d["mc"] == "flow" and d["n_mc"] == 20000 and d["converged"]
    assert 0 < d["reweighting"]["ess_fraction"] <= 1
    assert "effective sample size" in res.output
    bad = runner.invoke(app, ["fit", "--model", str(card), "--data", str(tmp / "data.parquet"), "--mc",
                              str(tmp / "mc.parquet"), "--reweight", str(tmp / "mc.parquet")])
    assert bad.exit_code == 2 and "use it with --mc flow" in bad.output
