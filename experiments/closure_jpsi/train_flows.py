"""Train closure-style flows (fastsim.training.fit, as cli/closure.py's run_toy does) for a grid
of training settings x 50k conventional samples, one single-threaded process per flow.

    python experiments/closure_jpsi/train_flows.py SAMPLES_DIR OUT_DIR --settings S0,S1 --samples 0,1,2 --jobs 2

SAMPLES_DIR holds train_K.npy (unit-box coordinates of closure toy K's 50k MC) and knots.json
(bias_proxy.py samples). Each flow is saved as OUT_DIR/<setting>_s<K>.pt with its state dict,
hyperparameters, history and training time; bias_proxy.py flows evaluates them.
On a machine without the project's event dependencies (pydantic), fastsim.events is stubbed:
training needs none of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: name -> (TrainConfig overrides, flow hyperparameter overrides). Seed = closure's stage-3 seed.
SETTINGS = {
    # current closure (experiments/closure_jpsi/run.sh: 15 epochs; TrainConfig defaults batch 2048, lr 2e-3)
    "S0_base": ({"epochs": 15, "batch_size": 2048, "learning_rate": 2e-3}, {}),
    "S1_b512_lr1e-3_e60": ({"epochs": 60, "batch_size": 512, "learning_rate": 1e-3, "patience": 10}, {}),
    "S2_b1024_lr2e-3_e60": ({"epochs": 60, "batch_size": 1024, "learning_rate": 2e-3, "patience": 10}, {}),
    "S3_b512_lr2e-3_e60_L6_bins8": ({"epochs": 60, "batch_size": 512, "learning_rate": 2e-3, "patience": 10},
                                     {"n_layers": 6, "n_bins": 8}),
    "S4_b256_lr1e-3_e40": ({"epochs": 40, "batch_size": 256, "learning_rate": 1e-3, "patience": 10}, {}),
    "S5_b1024_lr1e-3_e40_h128": ({"epochs": 40, "batch_size": 1024, "learning_rate": 1e-3, "patience": 10},
                                  {"hidden": 128}),
    "S6_b2048_lr2e-3_e100": ({"epochs": 100, "batch_size": 2048, "learning_rate": 2e-3, "patience": 15}, {}),
    # extra piecewise-linear pre-transform knots in m near the KK threshold (u_m -> 0, where f0(980) sits)
    "K1_b512_lr1e-3_e60_thr": ({"epochs": 60, "batch_size": 512, "learning_rate": 1e-3, "patience": 10},
                               {"extra_m_knots": [0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08]}),
    "K0_base_thr": ({"epochs": 15, "batch_size": 2048, "learning_rate": 2e-3},
                    {"extra_m_knots": [0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08]}),
    # the R0 closure run's settings (experiments/closure_jpsi/run.sh)
    "C0_closure": ({"epochs": 40, "batch_size": 2048, "learning_rate": 2e-3, "patience": 8}, {}),
    # the same on folded coordinates (bias_proxy.py samples --fold): 4-d flow, no periodic coordinate
    "F0_closure_fold": ({"epochs": 40, "batch_size": 2048, "learning_rate": 2e-3, "patience": 8},
                        {"n_dim": 4, "circular": []}),
    # folded, the cosine schedule run to its end (no early stopping)
    "F1_fold_e25_full": ({"epochs": 25, "batch_size": 2048, "learning_rate": 2e-3, "patience": 1000},
                         {"n_dim": 4, "circular": []}),
    "F2_fold_e50_full": ({"epochs": 50, "batch_size": 2048, "learning_rate": 2e-3, "patience": 1000},
                         {"n_dim": 4, "circular": []}),
    # folded + cube root of u_m as a conditioner input
    "F3_fold_cbrt": ({"epochs": 40, "batch_size": 2048, "learning_rate": 2e-3, "patience": 8},
                     {"n_dim": 4, "circular": [], "cbrt_features": [0]}),
    # folded: less capacity / fewer bins / bigger batches (the folded flows overfit 45k events:
    # train loss -0.237, validation -0.195 after 25 epochs)
    "F4_fold_h32": ({"epochs": 40, "batch_size": 2048, "learning_rate": 2e-3, "patience": 8},
                    {"n_dim": 4, "circular": [], "hidden": 32}),
    "F5_fold_bins8": ({"epochs": 40, "batch_size": 2048, "learning_rate": 2e-3, "patience": 8},
                      {"n_dim": 4, "circular": [], "n_bins": 8}),
    "F7_fold_b8192_lr3e-3": ({"epochs": 60, "batch_size": 8192, "learning_rate": 3e-3, "patience": 12},
                             {"n_dim": 4, "circular": []}),
    "T0_quick": ({"epochs": 1, "batch_size": 2048, "learning_rate": 2e-3}, {}),
}


def _stub_events() -> None:
    try:
        import fastsim.events  # noqa: F401
    except ImportError:
        m = types.ModuleType("fastsim.events")
        m.HELICITY_VARIABLES = ("m", "cos_theta_X", "phi_X", "cos_theta_1", "phi_1")
        m.JPSI_GAMMA_KK = None
        m.Reaction = m.Events = object
        from contextlib import contextmanager

        @contextmanager
        def atomic_path(p):
            yield p
        m.atomic_path = atomic_path
        sys.modules["fastsim.events"] = m


def train_one(task: tuple) -> dict:
    setting, sample, samples_dir, out_dir, max_minutes, device = task
    os.environ["OMP_NUM_THREADS"] = "1"
    _stub_events()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from cli.closure import ClosureSettings, _seed
    from fastsim.training import TrainConfig, fit

    cfg, hp_over = SETTINGS[setting]
    u = np.load(Path(samples_dir) / f"train_{sample}.npy")
    hp_over = dict(hp_over)
    knots = json.loads((Path(samples_dir) / "knots.json").read_text())
    knots[0] = sorted(set(knots[0]) | set(hp_over.pop("extra_m_knots", [])))
    hyper = {"pre_knots": knots, **hp_over}
    seed = _seed(ClosureSettings(model="models/jpsi_gamma_kk.yaml", seed=2026), sample, 3)
    t = time.perf_counter()
    tr = fit(u, TrainConfig(kind="flow", hyperparameters=hyper, seed=seed, max_minutes=max_minutes, **cfg),
             device=device)
    dt = time.perf_counter() - t
    rec = {"setting": setting, "sample": sample, "train_s": dt, "epochs": len(tr["history"]),
           "best_epoch": tr["best_epoch"], "stop_reason": tr["stop_reason"], "best_val": tr["best_val"],
           "hyperparameters": tr["model"].hyperparameters, "config": cfg,
           "history": tr["history"], "state": {k: v.cpu() for k, v in tr["model"].state_dict().items()}}
    torch.save(rec, Path(out_dir) / f"{setting}_s{sample}.pt")
    print(f"{setting} s{sample}: {dt:.0f} s, {rec['epochs']} epochs, best {rec['best_epoch']} "
          f"val {rec['best_val']:.4f} ({rec['stop_reason']})", flush=True)
    return {k: v for k, v in rec.items() if k not in ("state", "history")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("samples_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--samples", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    Path(a.out_dir).mkdir(parents=True, exist_ok=True)
    tasks = []  # "NAME" uses --samples, "NAME@0+1" its own samples
    for spec in a.settings.split(","):
        name, _, own = spec.partition("@")
        for k in (own.split("+") if own else a.samples.split(",")):
            tasks.append((name, int(k), a.samples_dir, a.out_dir, a.max_minutes, a.device))
    if a.jobs == 1:
        res = [train_one(t) for t in tasks]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(a.jobs, maxtasksperchild=1) as pool:
            res = pool.map(train_one, tasks, chunksize=1)
    (Path(a.out_dir) / "summary.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
