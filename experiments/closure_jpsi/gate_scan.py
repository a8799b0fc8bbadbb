"""Acceptance gates against the plain flow on the closure's 50k training samples (issue 6).

For each variant and each training sample (the 50k conventional MC of closure
toy K, as ``bias_proxy.small_mc``): train with the closure's schedule (40
epochs, patience 8, batch 2048), then record the held-out NLL per event on
200,000 fresh conventional MC events (a low-noise measure of how far the
density is from the truth: NLL = entropy + KL) and the bias proxy's fraction
shifts of 500,000 samples (``bias_proxy.py``; run ``bias_proxy.py prepare`` first).

    python experiments/closure_jpsi/gate_scan.py plain,gates,gates_xs 0,1 \
        --out experiments/results/closure_jpsi_tuning/gates/scan.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bias_proxy as bp  # noqa: E402  (sets up paths and float64 JAX)

VARIANTS = {
    "plain": dict(knots=True, gates=False, hp={}, lr=2e-3),
    "gates": dict(knots=False, gates=True, hp={"n_layers": 8, "hidden": 64, "n_bins": 16}, lr=2e-3),
    "gates_lr1e-3": dict(knots=False, gates=True, hp={"n_layers": 8, "hidden": 64, "n_bins": 16}, lr=1e-3),
    "gates_small": dict(knots=False, gates=True, hp={"n_layers": 8, "hidden": 32, "n_bins": 8}, lr=2e-3),
    "gates_knots": dict(knots=True, gates=True, hp={"n_layers": 8, "hidden": 64, "n_bins": 16}, lr=2e-3),
    "gates_l6": dict(knots=False, gates=True, hp={"n_layers": 6, "hidden": 32, "n_bins": 16}, lr=2e-3),
    "gates_xs": dict(knots=False, gates=True, hp={"n_layers": 6, "hidden": 32, "n_bins": 8}, lr=2e-3),
    "gates_h16": dict(knots=False, gates=True, hp={"n_layers": 8, "hidden": 16, "n_bins": 8}, lr=2e-3),
}


def main() -> None:
    from fastsim.coords import CoordinateMap
    from fastsim.events import Events, iter_conventional_mc
    from fastsim.generator import FastSimulator
    from fastsim.training import TrainConfig, fit, model_hyperparameters

    ap = argparse.ArgumentParser()
    ap.add_argument("variants", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("samples", help="comma-separated training-sample indices")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines appended here")
    a = ap.parse_args()
    proxy = bp.Proxy(1)
    det, reaction = proxy.det, proxy.model.reaction
    coords = CoordinateMap.for_reaction(reaction, fold=True)
    test = Events.concatenate(list(iter_conventional_mc(200_000, det, reaction=reaction, seed=999)))
    u_test = torch.as_tensor(coords.to_unit(test.helicity_variables))
    for s in (int(x) for x in a.samples.split(",")):
        train = bp.small_mc(det, reaction, s)
        for name in a.variants.split(","):
            v = VARIANTS[name]
            hp = model_hyperparameters("flow", coords, det.card, v["hp"], edge_knots=v["knots"], gates=v["gates"])
            cfg = TrainConfig(kind="flow", hyperparameters=hp, epochs=40, patience=8, batch_size=2048,
                              learning_rate=v["lr"], seed=100 + s)
            t = time.perf_counter()
            tr = fit(coords.to_unit(train.helicity_variables), cfg)
            train_s = time.perf_counter() - t
            model = tr["model"].double().eval()
            with torch.no_grad():
                nll = -float(torch.cat([model.log_prob_unit(u_test[i:i + 50_000])
                                        for i in range(0, len(u_test), 50_000)]).mean())
            ev = FastSimulator(model, coords, reaction=reaction).sample(bp.N_FLOW, seed=1000 + s)
            shift = proxy.shift(proxy.matrix_cache(ev))
            print(f"{name:14s} sample {s}: test NLL {nll:.5f}, best epoch {tr['best_epoch']}, "
                  f"{train_s:.0f} s  {proxy.fmt(shift)}", flush=True)
            with open(a.out, "a") as fh:
                fh.write(json.dumps({"name": name, "sample": s, "nll": nll, "best_epoch": tr["best_epoch"],
                                     "train_s": train_s, "shift": shift.tolist(), "hyperparameters": v}) + "\n")


if __name__ == "__main__":
    main()
