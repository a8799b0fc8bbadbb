"""Training loop, checkpoints (round trip, resume, every bad-file path) and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsim.checkpoint import load_checkpoint, load_simulator, save_checkpoint
from fastsim.coords import CoordinateMap
from fastsim.errors import CheckpointError
from fastsim.events import JPSI_GAMMA_KK, Detector, Reaction, conventional_mc, load_detector_card, write_events
from fastsim.training import TrainConfig, fit

TINY = {"n_layers": 3, "hidden": 8, "n_blocks": 1, "n_bins": 4}


@pytest.fixture(scope="module")
def mc_events():
    return conventional_mc(3000, Detector(load_detector_card("default")), reaction=JPSI_GAMMA_KK, seed=11, chunk_size=5000)


@pytest.fixture(scope="module")
def unit_sample(mc_events):
    return CoordinateMap.for_reaction(JPSI_GAMMA_KK).to_unit(mc_events.helicity_variables)


def _meta() -> dict:
    return {"coordinates": CoordinateMap.for_reaction(JPSI_GAMMA_KK).to_dict(),
            "reaction": JPSI_GAMMA_KK.to_dict(), "detector": None, "training_file": {"sha256": "x"}}


def _config(kind: str = "flow", epochs: int = 3) -> TrainConfig:
    hp = TINY if kind == "flow" else {"latent": 2, "hidden": 8, "n_hidden": 1, "n_importance": 8}
    return TrainConfig(kind=kind, hyperparameters=hp, epochs=epochs, batch_size=512, patience=10, seed=3)


@pytest.fixture(scope="module")
def trained(unit_sample, tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "flow.pt"
    result = fit(unit_sample, _config(), checkpoint=path, metadata=_meta())
    return path, result


def test_training_lowers_the_validation_loss(trained):
    _, result = trained
    hist = result["history"]
    assert len(hist) == 3 and result["stop_reason"] == "max_epochs"
    # Uniform density on the box has loss 0; the detector-level MC is far from uniform.
    assert hist[-1]["val_loss"] < hist[0]["val_loss"] < 0.0


def test_save_load_round_trip(trained, unit_sample):
    path, result = trained
    sim = load_simulator(path)
    assert sim.kind == "flow" and sim.model.hyperparameters["n_bins"] == 4
    for k, v in result["model"].state_dict().items():
        torch.testing.assert_close(sim.model.state_dict()[k], v)
    hv = sim.coords.from_unit(unit_sample[:200])
    with torch.no_grad():
        direct = result["model"].double().log_prob_unit(torch.as_tensor(unit_sample[:200])).numpy()
    result["model"].float()
    np.testing.assert_allclose(sim.log_prob(hv), direct + sim.coords.log_det(hv), atol=1e-5)
    sim2 = load_simulator(path)
    np.testing.assert_array_equal(sim.sample_hv(1000, seed=5), sim2.sample_hv(1000, seed=5))


@pytest.mark.parametrize("kind", ["flow", "vae"])
def test_resume_continues_where_training_stopped(kind, unit_sample, tmp_path):
    full = fit(unit_sample, _config(kind), checkpoint=tmp_path / "full.pt", metadata=_meta())

    def stop_after_first(rec):
        if rec["epoch"] == 1:
            raise KeyboardInterrupt

    part = tmp_path / "part.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(unit_sample, _config(kind), checkpoint=part, metadata=_meta(), on_epoch=stop_after_first)
    ck = load_checkpoint(part)
    assert ck["training"]["epoch"] == 1 and not ck["training"]["finished"]
    resumed = fit(unit_sample, _config(kind), checkpoint=part, metadata=_meta(), resume=ck["training"])
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    for a, b in zip(full["history"], resumed["history"]):
        assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    for k, v in full["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[k], v, rtol=0, atol=0)


def test_bad_checkpoints_give_clear_errors(trained, tmp_path):
    path, _ = trained
    with pytest.raises(CheckpointError, match="no such model file"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable model checkpoint"):
        load_checkpoint(junk)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a fastsim model checkpoint"):
        load_checkpoint(other)

    good = load_checkpoint(path)
    base = {k: v for k, v in good.items() if not k.startswith("_") and k not in ("format", "format_version")}

    def variant(name: str, **changes) -> object:
        p = tmp_path / f"{name}.pt"
        save_checkpoint(p, {**base, **changes})
        return p

    newer = tmp_path / "newer.pt"
    torch.save({**base, "format": "fastsim-checkpoint", "format_version": 99}, newer)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(newer)
    nostate = tmp_path / "nostate.pt"
    torch.save({k: v for k, v in {**base, "format": "fastsim-checkpoint", "format_version": 1}.items()
                if k != "model_state"}, nostate)
    with pytest.raises(CheckpointError, match="lacks the field.*model_state"):
        load_checkpoint(nostate)
    ks = Reaction(particles=("gamma", "K_S0", "K_S0"), prefixes=("gamma", "KS1", "KS2"))
    p = variant("ks", reaction=ks.to_dict(), coordinates=CoordinateMap.for_reaction(ks).to_dict())
    with pytest.raises(CheckpointError, match="trained for J/psi -> gamma K_S0 K_S0"):
        load_checkpoint(p, reaction=JPSI_GAMMA_KK)
    with pytest.raises(CheckpointError, match="trained for J/psi -> gamma K_S0 K_S0"):
        load_simulator(p, reaction=JPSI_GAMMA_KK)
    assert load_checkpoint(p, reaction=ks)["kind"] == "flow"
    # no reaction to check against: the checkpoint's own
    assert load_checkpoint(p)["_reaction"].particles == ks.particles
    p = variant("coords", coordinates={**base["coordinates"], "m_min": 0.5})
    with pytest.raises(CheckpointError, match="coordinate range"):
        load_checkpoint(p)
    p = variant("hp", hyperparameters={**base["hyperparameters"], "hidden": 9})
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_simulator(p)
    p = variant("kind", kind="gan")
    with pytest.raises(CheckpointError, match="unknown model kind"):
        load_simulator(p)


def test_cli_train_sample_validate(mc_events, tmp_path):
    from cli.fastsim_app import app

    mc = tmp_path / "mc.parquet"
    write_events(mc, mc_events)
    ref = tmp_path / "ref.parquet"
    write_events(ref, conventional_mc(1500, Detector(load_detector_card("default")), reaction=JPSI_GAMMA_KK, seed=12, chunk_size=5000))
    model = tmp_path / "m.pt"
    runner = CliRunner()
    hp = [a for k, v in TINY.items() for a in ("--hp", f"{k}={v}")]
    r = runner.invoke(app, ["train", "--mc", str(mc), "--out", str(model), "--epochs", "2",
                            "--device", "cpu", "--batch-size", "1024", *hp])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m_training.png").stat().st_size > 1000
    r = runner.invoke(app, ["train", "--mc", str(mc), "--out", str(model), "--resume"])
    assert r.exit_code == 0 and "already finished" in r.output
    r = runner.invoke(app, ["train", "--mc", str(ref), "--out", str(model), "--resume"])
    assert r.exit_code == 2 and "another file" in " ".join(r.output.split())
    out = tmp_path / "s.npz"
    r = runner.invoke(app, ["sample", "--model", str(model), "--n", "5000", "--out", str(out),
                            "--chunk-size", "2000"])
    assert r.exit_code == 0 and "events/s" in r.output, r.output
    from fastsim.events import read_events

    assert len(read_events(out, JPSI_GAMMA_KK)) == 5000
    before = model.read_bytes()
    r = runner.invoke(app, ["validate", "--model", str(model), "--reference", str(ref),
                            "--out", str(tmp_path / "val")])
    assert r.exit_code == 0, r.output
    assert model.read_bytes() == before  # validate reads the checkpoint only, unless --record
    r = runner.invoke(app, ["validate", "--model", str(model), "--reference", str(ref),
                            "--out", str(tmp_path / "val"), "--record"])
    assert r.exit_code == 0, r.output
    import json

    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert 0.0 <= metrics["classifier_test"]["auc"] <= 1.0
    assert set(metrics["chi2_per_coordinate"]) == {"m", "cos_theta_X", "phi_X", "cos_theta_1", "phi_1"}
    assert len(metrics["chi2_per_pair"]) == 10
    assert load_checkpoint(model)["validation"]["auc"] == metrics["classifier_test"]["auc"]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    r = runner.invoke(app, ["sample", "--model", str(bad), "--n", "10", "--out", str(out)])
    assert r.exit_code == 2 and "not a readable model checkpoint" in " ".join(r.output.split())


def test_cli_train_folds_by_default_and_refuses_an_asymmetric_sample(mc_events, tmp_path):
    from cli.fastsim_app import app
    from fastsim.events import Events

    mc = tmp_path / "mc.parquet"
    write_events(mc, mc_events)
    runner = CliRunner()
    hp = [a for k, v in TINY.items() for a in ("--hp", f"{k}={v}")]
    args = ["--epochs", "1", "--device", "cpu", "--batch-size", "1024", *hp]
    r = runner.invoke(app, ["train", "--mc", str(mc), "--out", str(tmp_path / "fold.pt"), *args])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "fold.pt")
    assert ck["coordinates"]["fold"] is True and ck["hyperparameters"]["n_dim"] == 4
    assert ck["symmetry_test"]["min_p_value"] > 1e-3
    sim = load_simulator(tmp_path / "fold.pt")
    hv = sim.sample_hv(2000, seed=1)
    assert hv.shape == (2000, 5) and (hv[:, 1] < 0).mean() == pytest.approx(0.5, abs=0.05)
    r = runner.invoke(app, ["train", "--mc", str(mc), "--out", str(tmp_path / "plain.pt"), "--no-fold", *args])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "plain.pt")
    assert "fold" not in ck["coordinates"] and "n_dim" not in ck["hyperparameters"]
    # forward-backward asymmetric "detector": no event with cos theta_X < -0.5
    hv = mc_events.helicity_variables
    skew = tmp_path / "skew.parquet"
    write_events(skew, Events.from_helicity_variables(hv[hv[:, 1] > -0.5], JPSI_GAMMA_KK))
    out = tmp_path / "skew.pt"
    r = runner.invoke(app, ["train", "--mc", str(skew), "--out", str(out), *args])
    msg = " ".join(r.output.split())
    assert r.exit_code == 2 and "not symmetric" in msg and "skew.parquet" in msg and "z_reflection" in msg
    assert not out.exists()
