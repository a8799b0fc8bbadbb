"""Maximum-likelihood training of a unit-box generator.

The step (:func:`train_step`) is a plain function of model, optimiser and
batch; the loop (:func:`fit`) is plain Python around it: hold-out validation
split, cosine learning-rate schedule, early stopping on the validation loss,
an atomic checkpoint after every epoch that :func:`fit` can resume from
(bit-for-bit the same result as an uninterrupted run on the same device),
and callbacks for a progress display. A weighted sample (e.g. weighted MC
with its proposal weights) is trained on by the weighted likelihood.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import save_checkpoint
from .errors import TrainingError, checked_weights
from .generator import build_model


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (stored in the checkpoint).

    Attributes:
        kind: 'flow' or 'vae'.
        hyperparameters: model hyperparameters (defaults of the model if empty).
        epochs: maximum number of epochs.
        batch_size: events per step.
        learning_rate: peak Adam learning rate (cosine decay to 1 % over all epochs).
        val_fraction: fraction of the sample held out for validation.
        patience: epochs without a validation improvement before stopping.
        min_delta: improvement of the validation loss that counts.
        max_minutes: wall-clock budget; training stops after the epoch that passes it (0: none).
        grad_clip: gradient-norm clip.
        seed: seed of the split, the initial weights, the shuffling and the VAE noise.
    """

    kind: str = "flow"
    hyperparameters: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 2048
    learning_rate: float = 2e-3
    val_fraction: float = 0.1
    patience: int = 5
    min_delta: float = 1e-4
    max_minutes: float = 0.0
    grad_clip: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("flow", "vae"):
            raise ValueError(f"kind must be 'flow' or 'vae', got {self.kind!r}")
        if self.epochs < 1 or self.batch_size < 1 or not 0.0 < self.val_fraction < 1.0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and 0 < val_fraction < 1")

    def to_dict(self) -> dict:
        return asdict(self)


#: Size of a gated flow unless overridden. With the edges carried by the gates the
#: rest of the density is smooth: on 50,000 folded BESIII-like events (closure toy
#: samples 0 and 1) 6 layers x 32 hidden x 8 bins reach a held-out NLL of -0.2659
#: per event against -0.2637 for the flow default 8 x 64 x 16 with gates and
#: -0.1957 for the default without (200,000 test events;
#: experiments/results/closure_jpsi_tuning/gates/scan.jsonl).
GATED_FLOW_DEFAULTS = {"n_layers": 6, "hidden": 32, "n_bins": 8}


def model_hyperparameters(kind: str, coords, detector_card=None, hyperparameters: dict | None = None,
                          edge_knots: bool = True, gates: bool = False) -> dict:
    """Hyperparameters of a fresh model for the coordinate map ``coords``.

    The number of coordinates and the periodic ones come from the map (when
    they differ from the models' 5-d defaults, i.e. for folded coordinates);
    flows get, with a detector card, the pre-transform knots at the card's
    acceptance edges (``edge_knots``, :func:`fastsim.coords.acceptance_knots`)
    and the acceptance gates at its cuts (``gates``, :mod:`fastsim.acceptance`).
    Entries of ``hyperparameters`` override all of these.
    """
    from .acceptance import gate_settings
    from .coords import acceptance_knots

    hp: dict = {}
    if coords.n_dim != 5:
        hp.update(n_dim=coords.n_dim, circular=list(coords.circular))
    if kind == "flow" and edge_knots and detector_card is not None and coords.physical == "helicity":
        hp["pre_knots"] = acceptance_knots(detector_card, coords, coords.parent_mass)
    if kind == "flow" and gates and detector_card is not None and coords.physical == "momenta":
        from .acceptance import tree_gate_settings

        hp["acceptance"] = {"coords": coords.to_dict(), "gates": tree_gate_settings(detector_card, coords.reaction)}
        hp.update(GATED_FLOW_DEFAULTS)
    elif kind == "flow" and gates and detector_card is not None:
        if coords.parent_mass is None:
            raise ValueError("acceptance gates need a coordinate map with the reaction's masses")
        hp["acceptance"] = {"coords": coords.to_dict(), "gates": gate_settings(detector_card)}
        hp.update(GATED_FLOW_DEFAULTS)
    hp.update(hyperparameters or {})
    return hp


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               grad_clip: float = 5.0, weights: torch.Tensor | None = None) -> float:
    """One optimiser step on the model's loss; returns the loss before the step.

    ``weights`` (n,): per-event weights of the batch, scaled to mean 1 over the
    whole training sample (the model's ``loss`` averages w_i times event i's loss).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(batch) if weights is None else model.loss(batch, weights)
    if not torch.isfinite(loss):
        raise TrainingError(f"non-finite training loss {loss.item()}; lower the learning rate")
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor, batch_size: int = 65536,
             weights: torch.Tensor | None = None) -> float:
    """Mean loss over ``data`` (n, d); with ``weights`` (n,), sum_i w_i loss_i / sum_i w_i."""
    total = 0.0
    for s in range(0, len(data), batch_size):
        b = data[s:s + batch_size]
        if weights is None:
            total += float(model.loss(b)) * len(b)
        else:
            total += float(model.loss(b, weights[s:s + batch_size])) * len(b)
    return total / (len(data) if weights is None else float(weights.sum()))


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) index arrays of a seeded random split."""
    perm = np.random.default_rng([seed, 1]).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise TrainingError(f"{n} events are too few to split off a validation set")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _optimizer(model: nn.Module, config: TrainConfig, steps: int):
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps),
                                                       eta_min=0.01 * config.learning_rate)
    return opt, sched


def _weights_summary(w: np.ndarray | None) -> dict:
    """What the training state records of the sample's weights (all None: unweighted)."""
    if w is None:
        return {"weighted": False, "sum_weights": None, "effective_sample_size": None}
    return {"weighted": True, "sum_weights": float(w.sum()),
            "effective_sample_size": float(w.sum() ** 2 / np.sum(w**2))}


def _check_resume_weights(resume: dict, summary: dict) -> None:
    """Refuse to resume a weighted training without its weights, or the other way round."""
    was = bool(resume.get("weighted", False))
    if was and not summary["weighted"]:
        raise TrainingError("the checkpoint was trained on a weighted sample; resume with the same weights")
    if summary["weighted"] and not was:
        raise TrainingError("the checkpoint was trained on an unweighted sample; cannot resume with weights")
    if was and not (math.isclose(resume["sum_weights"], summary["sum_weights"], rel_tol=1e-9)
                    and math.isclose(resume["effective_sample_size"], summary["effective_sample_size"],
                                     rel_tol=1e-9)):
        raise TrainingError(
            f"the checkpoint was trained with weights of sum {resume['sum_weights']:.9g} and effective "
            f"sample size {resume['effective_sample_size']:.9g}, not {summary['sum_weights']:.9g} and "
            f"{summary['effective_sample_size']:.9g}; cannot resume with other weights")


def fit(u: np.ndarray, config: TrainConfig, *, weights: np.ndarray | None = None,
        checkpoint: str | os.PathLike | None = None,
        metadata: dict | None = None, resume: dict | None = None, device: str | torch.device = "cpu",
        on_batch: Callable[[dict], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train a generator on unit-box coordinates.

    With ``weights`` the loss is the weighted negative log-likelihood: each
    batch's loss is sum_i w_i loss_i over the batch divided by (batch size x
    the mean weight of the training split), the validation loss
    sum_i w_i loss_i / sum_i w_i over the validation split. Normalising by
    the split's mean rather than each batch's sum keeps the estimate unbiased
    and finite when some weights are negative. The model then learns the
    weighted density, e.g. the physical density of weighted MC. The
    piecewise-linear pre-transform of a flow is still fitted to the
    unweighted points (it only needs to be a bijection of the box).

    Args:
        u: (n_events, d) training sample in unit-box coordinates (d = the
            ``n_dim`` hyperparameter, 5 by default; 4 for folded coordinates).
        config: training settings.
        weights: (n_events,) per-event weights, or None (unweighted). They must
            be finite with a positive sum, and the training and validation
            splits must each have a positive sum; single weights may be
            negative. The checkpoint's training state records ``weighted``,
            ``sum_weights`` and ``effective_sample_size`` (sum w)^2 / sum w^2,
            and a resume must give the same weights (or none, if none were given).
        checkpoint: file written (atomically) after every epoch, or None.
        metadata: extra checkpoint fields (coordinates, reaction, detector, training file...).
        resume: the ``training`` dictionary of a checkpoint to continue from.
        device: torch device.
        on_batch: called with {epoch, batch, n_batches, loss} after each step.
        on_epoch: called with the epoch's history record after its checkpoint is written.

    Returns:
        {"model": best model (eval mode), "history": [...], "stop_reason": str,
         "best_epoch": int, "best_val": float, "payload": the last checkpoint dict}.

    Raises:
        TrainingError: a bad sample or bad weights, a resume that does not
            match, a non-finite loss.
    """
    device = torch.device(device)
    u = np.asarray(u, dtype=np.float64)
    n_dim = int(config.hyperparameters.get("n_dim", 5))
    if u.ndim != 2 or u.shape[1] != n_dim or len(u) < 2:
        raise TrainingError(f"training sample must be (n >= 2, {n_dim}) unit coordinates, got {u.shape}")
    if not np.all(np.isfinite(u)) or u.min() < 0.0 or u.max() > 1.0:
        raise TrainingError("training sample has coordinates outside the unit box")
    w = None if weights is None else checked_weights(weights, len(u), "training weights")
    tr_idx, va_idx = split_indices(len(u), config.val_fraction, config.seed)
    x_train = torch.as_tensor(u[tr_idx], dtype=torch.float32, device=device)
    x_val = torch.as_tensor(u[va_idx], dtype=torch.float32, device=device)
    w_train = w_val = None
    if w is not None:
        for name, idx in (("training", tr_idx), ("validation", va_idx)):
            if not w[idx].sum() > 0.0:
                raise TrainingError(f"the weights of the {name} split sum to {w[idx].sum():.6g}; the sum "
                                    f"must be positive (change the seed or val_fraction)")
        # Training weights scaled to mean 1, so that a batch's loss is its weighted sum over its size.
        w_train = torch.as_tensor(w[tr_idx] / w[tr_idx].mean(), dtype=torch.float64, device=device)
        w_val = torch.as_tensor(w[va_idx], dtype=torch.float64, device=device)
    weight_summary = _weights_summary(w)
    n_batches = math.ceil(len(x_train) / config.batch_size)

    torch.manual_seed(config.seed)
    model = build_model(config.kind, config.hyperparameters).to(device)
    opt, sched = _optimizer(model, config, config.epochs * n_batches)
    if resume is None:
        if hasattr(model, "fit_pre_transform"):
            model.fit_pre_transform(torch.as_tensor(u[tr_idx], dtype=torch.float64, device=device))
        state = {"epoch": 0, "history": [], "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0,
                 "elapsed_s": 0.0, "finished": False, "stop_reason": None, "n_train": len(x_train),
                 "n_val": len(x_val), **weight_summary}
        best_state = copy.deepcopy(model.state_dict())
    else:
        if resume.get("n_train") != len(x_train) or resume.get("n_val") != len(x_val):
            raise TrainingError("the checkpoint was trained on a sample of another size; cannot resume")
        _check_resume_weights(resume, weight_summary)
        model.load_state_dict(resume["current_state"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        best_state = resume["best_state"]
        state = {k: resume[k] for k in ("epoch", "history", "best_val", "best_epoch", "bad_epochs",
                                        "elapsed_s", "finished", "stop_reason", "n_train", "n_val")}
        state.update(weight_summary)
        state["history"] = list(state["history"])
    hp = dict(model.hyperparameters)
    meta = dict(metadata or {})
    payload: dict = {}

    def make_payload() -> dict:
        return {**meta, "kind": config.kind, "hyperparameters": hp,
                "model_state": {k: v.detach().cpu() for k, v in best_state.items()},
                "training": {**state, "config": config.to_dict(),
                             "current_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                             "best_state": {k: v.detach().cpu() for k, v in best_state.items()},
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}}

    t_start = time.perf_counter() - state["elapsed_s"]
    while not state["finished"]:
        epoch = state["epoch"] + 1
        model.train()
        g = torch.Generator(device="cpu").manual_seed(config.seed * 100_003 + epoch)
        torch.manual_seed(config.seed * 100_019 + epoch)  # VAE reparameterisation noise
        perm = torch.randperm(len(x_train), generator=g).to(device)
        t_epoch = time.perf_counter()
        running = 0.0
        for b in range(n_batches):
            idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
            loss = train_step(model, opt, x_train[idx], config.grad_clip,
                              None if w_train is None else w_train[idx])
            sched.step()
            running += loss
            if on_batch is not None:
                on_batch({"epoch": epoch, "batch": b + 1, "n_batches": n_batches, "loss": loss})
        model.eval()
        torch.manual_seed(config.seed * 100_043 + epoch)
        val = evaluate(model, x_val, weights=w_val)
        if not math.isfinite(val):
            raise TrainingError(f"non-finite validation loss at epoch {epoch}")
        record = {"epoch": epoch, "train_loss": running / n_batches, "val_loss": val,
                  "lr": float(opt.param_groups[0]["lr"]), "epoch_s": time.perf_counter() - t_epoch}
        state["history"].append(record)
        state["epoch"] = epoch
        if val < state["best_val"] - config.min_delta:
            state.update(best_val=val, best_epoch=epoch, bad_epochs=0)
            best_state = copy.deepcopy(model.state_dict())
        else:
            state["bad_epochs"] += 1
        state["elapsed_s"] = time.perf_counter() - t_start
        if epoch >= config.epochs:
            state.update(finished=True, stop_reason="max_epochs")
        elif state["bad_epochs"] >= config.patience:
            state.update(finished=True, stop_reason="early_stopping")
        elif config.max_minutes > 0 and state["elapsed_s"] > 60.0 * config.max_minutes:
            state.update(finished=True, stop_reason="time_budget")
        payload = make_payload()
        if checkpoint is not None:
            save_checkpoint(checkpoint, payload)
        if on_epoch is not None:
            on_epoch(dict(record, best_epoch=state["best_epoch"], stop_reason=state["stop_reason"]))
    if not payload:
        payload = make_payload()
    model.load_state_dict(best_state)
    model.eval()
    return {"model": model, "history": state["history"], "stop_reason": state["stop_reason"],
            "best_epoch": state["best_epoch"], "best_val": state["best_val"],
            "elapsed_s": state["elapsed_s"], "payload": payload}


def bootstrap_replicas(model: nn.Module, n_events: int, config: TrainConfig, replicas: int, *,
                       seed: int, device: str | torch.device = "cpu") -> list[dict]:
    """Parametric bootstrap of the training procedure.

    Draws ``n_events`` unit-box points from the trained generator and trains a
    fresh one on them with the same settings, ``replicas`` times. A generator
    trained on n events is off from the true density by the training
    procedure's bias b (smoothing of sharp edges, too little or too much
    structure where events are few); a replica trained on n events of the
    generator is off from the generator by about the same b. So
    2 q - mean(replicas) removes b to first order (bootstrap bias correction,
    Efron & Tibshirani 1993, ch. 10), at the price of the replicas' extra
    sampling noise. With ``n_events`` equal to the original training size the
    replicas see the same statistics as the generator did.

    Args:
        model: the trained generator (any :class:`UnitBoxGenerator` with ``sample_unit``).
        n_events: events per replica's training sample.
        config: training settings (each replica gets its own seed from ``seed``).
        replicas: number of replicas (>= 1).
        seed: seeds the replicas' samples and trainings.
        device: torch device of the replicas' training.

    Returns:
        :func:`fit` results, one per replica.
    """
    if replicas < 1 or n_events < 2:
        raise TrainingError(f"need replicas >= 1 and n_events >= 2, got {replicas} and {n_events}")
    out = []
    for k in range(replicas):
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(int(seed) + 2 * k)
        with torch.no_grad():
            u = model.sample_unit(n_events, generator=gen).double().cpu().numpy()
        out.append(fit(np.clip(u, 0.0, 1.0), replace(config, seed=int(seed) + 2 * k + 1), device=device))
    return out


def plot_training_curve(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Train and validation loss against epoch, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsim.events import atomic_path

    path = Path(path)
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(ep, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per event (NLL on the unit box)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
