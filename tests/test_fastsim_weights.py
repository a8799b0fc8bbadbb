"""Nothing silent, nothing lost: weighted training and DCTR, and the refusal of
non-finite weights in checkpoints and of non-finite sampled events."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fastsim.checkpoint import load_checkpoint, load_simulator, simulator_from_checkpoint
from fastsim.errors import CheckpointError, SamplingError, TrainingError
from fastsim.events import JPSI_GAMMA_KK
from fastsim.events.resources import shipped
from fastsim.generator import FastSimulator, build_model
from fastsim.reweight import dctr_weights
from fastsim.training import TrainConfig, fit

#: A small flow on [0, 1]^3 (the third coordinate periodic): cheap enough to train in seconds.
SMALL_3D = {"n_dim": 3, "circular": [2], "n_layers": 3, "hidden": 16, "n_bins": 8}


def _config(epochs: int, **changes) -> TrainConfig:
    settings = {"hyperparameters": SMALL_3D, "epochs": epochs, "batch_size": 500, "patience": 10,
                "seed": 1, "learning_rate": 1e-2, **changes}
    return TrainConfig(**settings)


# -- weighted training -----------------------------------------------------------


def test_weighted_training_learns_the_weighted_density():
    """Uniform points weighted by g(u) = 2 u_0: the flow learns g, not the uniform density."""
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(6000, 3))
    weights = 2.0 * u[:, 0]
    plain = fit(u, _config(3))
    weighted = fit(u, _config(3), weights=weights)
    gen = torch.Generator().manual_seed(3)
    mean_plain = plain["model"].sample_unit(20_000, gen).double().mean(dim=0).numpy()
    mean_weighted = weighted["model"].sample_unit(20_000, gen).double().mean(dim=0).numpy()
    assert abs(mean_plain[0] - 0.5) < 0.02
    assert abs(mean_weighted[0] - 2.0 / 3.0) < 0.02  # <u_0> under g
    np.testing.assert_allclose(mean_weighted[1:], 0.5, atol=0.03)  # g is flat in the others
    # The weighted validation loss approaches -E_g[log g] = -(log 2 - 1/2); the unweighted one 0.
    assert weighted["best_val"] < -0.15 and abs(plain["best_val"]) < 0.05
    state = weighted["payload"]["training"]
    assert state["weighted"] is True and state["sum_weights"] == pytest.approx(weights.sum())
    assert state["effective_sample_size"] == pytest.approx(weights.sum() ** 2 / np.sum(weights**2))
    assert plain["payload"]["training"]["weighted"] is False


def test_constant_weights_train_exactly_like_none():
    u = np.random.default_rng(1).uniform(size=(2000, 3))
    plain = fit(u, _config(1))
    doubled = fit(u, _config(1), weights=np.full(len(u), 2.0))
    assert plain["history"][0]["train_loss"] == doubled["history"][0]["train_loss"]
    assert plain["history"][0]["val_loss"] == doubled["history"][0]["val_loss"]
    assert doubled["payload"]["training"]["effective_sample_size"] == pytest.approx(len(u))


def test_weighted_resume_continues_and_must_match(tmp_path):
    rng = np.random.default_rng(1)
    u = rng.uniform(size=(2000, 3))
    weights = rng.uniform(0.5, 1.5, len(u))
    full = fit(u, _config(2), weights=weights)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    path = tmp_path / "part.pt"
    # (the training loop only needs the checkpoint's required fields to exist)
    with pytest.raises(KeyboardInterrupt):
        fit(u, _config(2), weights=weights, checkpoint=path, on_epoch=stop_after_first,
            metadata={"coordinates": None, "reaction": None})
    state = torch.load(path, weights_only=True)["training"]
    assert state["weighted"] is True and state["sum_weights"] == pytest.approx(weights.sum())

    with pytest.raises(TrainingError, match="trained on a weighted sample; resume with the same weights"):
        fit(u, _config(2), resume=state)
    with pytest.raises(TrainingError, match="cannot resume with other weights"):
        fit(u, _config(2), weights=1.1 * weights, resume=state)
    with pytest.raises(TrainingError, match="trained on an unweighted sample; cannot resume with weights"):
        fit(u, _config(2), weights=weights, resume=fit(u, _config(1))["payload"]["training"])
    resumed = fit(u, _config(2), weights=weights, resume=state)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for a, b in zip(full["history"], resumed["history"]):
        assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]


@pytest.mark.parametrize(("weights", "message"), [
    (np.ones(99), r"training weights must have shape \(100,\), one per event, got \(99,\)"),
    (np.ones((100, 1)), r"must have shape \(100,\)"),
    (np.r_[np.ones(98), np.nan, np.inf], "training weights have 2 non-finite values"),
    (np.zeros(100), "training weights are all zero"),
    (np.r_[np.ones(50), -np.ones(50)], "training weights sum to 0; the sum must be positive"),
    (np.r_[np.ones(40), -np.ones(60)], "training weights sum to -20"),
])
def test_bad_training_weights_are_refused(weights, message):
    u = np.random.default_rng(2).uniform(size=(100, 3))
    with pytest.raises(TrainingError, match=message):
        fit(u, _config(1), weights=weights)


def test_negative_weights_with_a_positive_sum_are_allowed():
    rng = np.random.default_rng(3)
    u = rng.uniform(size=(1000, 3))
    weights = np.where(rng.uniform(size=len(u)) < 0.1, -0.5, 1.0)
    result = fit(u, _config(1), weights=weights)
    assert np.isfinite(result["best_val"])
    ess = result["payload"]["training"]["effective_sample_size"]
    assert ess == pytest.approx(weights.sum() ** 2 / np.sum(weights**2)) and ess < len(u)


# -- checkpoints with non-finite weights ---------------------------------------------


@pytest.fixture(scope="module")
def shipped_checkpoint() -> dict:
    return torch.load(shipped("flow_besiii_like.pt"), map_location="cpu", weights_only=True)


def test_checkpoint_with_non_finite_weights_is_refused(shipped_checkpoint, tmp_path):
    name = "layers.0.net.initial_layer.weight"
    data = {**shipped_checkpoint, "model_state": dict(shipped_checkpoint["model_state"])}
    bad = data["model_state"][name].clone()
    bad.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    data["model_state"][name] = bad
    path = tmp_path / "flow.pt"
    torch.save(data, path)
    message = (f"{path}: parameter '{name}' has 3 non-finite values (NaN or inf); "
               f"the checkpoint is corrupt")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=f"parameter '{name}' has 3 non-finite"):
        load_simulator(path)


def test_checkpoint_with_a_non_finite_training_state_is_refused(shipped_checkpoint, tmp_path):
    name = "layers.2.net.final_layer.bias"
    training = dict(shipped_checkpoint["training"])
    training["current_state"] = dict(training["current_state"])
    training["current_state"][name] = torch.full_like(training["current_state"][name], float("nan"))
    path = tmp_path / "resume.pt"
    torch.save({**shipped_checkpoint, "training": training}, path)
    n = training["current_state"][name].numel()
    with pytest.raises(CheckpointError, match=f"parameter '{name}' of training.current_state has {n} non-finite"):
        load_checkpoint(path)


def test_simulator_from_checkpoint_checks_the_state_it_loads(shipped_checkpoint, tmp_path):
    path = tmp_path / "good.pt"
    torch.save(shipped_checkpoint, path)
    data = load_checkpoint(path)
    name = next(k for k, v in data["model_state"].items() if v.is_floating_point())
    data["other_state"] = {**data["model_state"], name: data["model_state"][name] * float("nan")}
    assert simulator_from_checkpoint(data).kind == "flow"  # model_state is fine
    with pytest.raises(CheckpointError, match=f"good.pt: parameter '{name}' of other_state has"):
        simulator_from_checkpoint(data, state="other_state")


# -- sampling ----------------------------------------------------------------------


def test_sampling_refuses_non_finite_events(monkeypatch):
    model = build_model("flow", {"n_layers": 2, "hidden": 8, "n_bins": 4})
    sim = FastSimulator(model, reaction=JPSI_GAMMA_KK)
    assert np.isfinite(sim.sample_hv(300, seed=1, chunk_size=100)).all()
    drawn = {"chunks": 0}

    def broken_sample_unit(n, generator=None):
        """Finite in the first chunk; the second has one NaN row and one infinite row."""
        u = torch.rand((n, 5), generator=generator)
        drawn["chunks"] += 1
        if drawn["chunks"] == 2:
            u[3, 1] = float("nan")
            u[7, 0] = float("inf")  # from_unit would clip it onto the box edge
        return u

    monkeypatch.setattr(sim.model, "sample_unit", broken_sample_unit)
    chunks = sim.iter_sample_hv(300, seed=1, chunk_size=100)
    assert np.isfinite(next(chunks)).all()
    with pytest.raises(SamplingError, match=r"produced 2 non-finite events \(NaN or inf\) among events 100..199"):
        next(chunks)
    for draw in (sim.sample_hv, sim.sample):
        drawn["chunks"] = 0
        with pytest.raises(SamplingError, match="2 non-finite events"):
            draw(300, seed=1, chunk_size=100)


# -- DCTR with weighted samples -----------------------------------------------------------


def _flat(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) helicity variables, flat in each."""
    return np.column_stack([rng.uniform(1.0, 3.0, n), rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n),
                            rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)])


def _slope_and_histogram(x: np.ndarray, w: np.ndarray, a: float) -> tuple[float, np.ndarray]:
    """The slope b of 1 + b x fitted by moments (b = 3 <x>_w) and the weighted histogram
    of x in 10 bins over its expectation under 1 + a x."""
    edges = np.linspace(-1.0, 1.0, 11)
    h, _ = np.histogram(x, edges, weights=w)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return 3.0 * np.average(x, weights=w), h / (w.sum() * (1.0 + a * centres) / 10)


def test_dctr_reweights_flat_points_to_a_weighted_reference():
    """Reference: flat points with weights 1 + a cos theta_1; the DCTR weights of flat
    generated points must make their histogram follow 1 + a cos theta_1."""
    rng = np.random.default_rng(7)
    a = 0.8
    gen, ref = _flat(15_000, rng), _flat(15_000, rng)
    w, info = dctr_weights(gen, ref, reference_weights=1.0 + a * ref[:, 3], seed=3)
    assert info["reference_weighted"] and not info["generated_weighted"]
    assert abs(w.mean() - 1.0) < 1e-12
    slope, ratio = _slope_and_histogram(gen[:, 3], w, a)
    # (the regularised classifier closes about 9/10 of the gap, as with an unweighted reference)
    assert 0.85 * a < slope < 1.05 * a, slope
    assert np.all(np.abs(ratio - 1.0) < 0.2), ratio  # flat would be off by -42 % ... +257 %
    assert abs(3.0 * gen[:, 3].mean()) < 0.05  # unweighted: flat


def test_dctr_weights_carry_the_generated_weights():
    """Generated and reference samples weighted alike: the classifier sees two equal
    weighted densities (ratio ~ 1), and the returned weights are the generated ones."""
    rng = np.random.default_rng(8)
    a = 0.8
    gen, ref = _flat(15_000, rng), _flat(15_000, rng)
    wg = 1.0 + a * gen[:, 3]
    w, info = dctr_weights(gen, ref, generated_weights=wg, reference_weights=1.0 + a * ref[:, 3], seed=4)
    assert info["generated_weighted"] and info["reference_weighted"]
    ratio = w / wg
    assert np.std(ratio / ratio.mean()) < 0.3  # (the classifier's noise on 7,500 events a class)
    slope, hist = _slope_and_histogram(gen[:, 3], w, a)
    assert abs(slope - a) < 0.05, slope  # ignoring wg in the classifier would give (1 + a x)^2: 1.32
    assert np.all(np.abs(hist - 1.0) < 0.1), hist


@pytest.mark.parametrize(("keyword", "weights", "message"), [
    ("reference_weights", np.zeros(200), "reference weights are all zero"),
    ("reference_weights", -np.ones(200), "reference weights sum to -200; the sum must be positive"),
    ("generated_weights", np.ones(199), r"generated weights must have shape \(200,\)"),
    ("generated_weights", np.r_[np.ones(199), np.nan], "generated weights have 1 non-finite values"),
])
def test_dctr_refuses_bad_weights(keyword, weights, message):
    rng = np.random.default_rng(9)
    with pytest.raises(TrainingError, match=message):
        dctr_weights(_flat(200, rng), _flat(200, rng), **{keyword: weights})
