"""Sampling speed of the shipped flows, one per reaction, in one process.

    python experiments/flow/any_reaction.py [--n 200000] [--threads 1] [--out experiments/results/flow_any_reaction.json]

For each shipped flow: events/s of the model alone (unit-box samples, gates
included), of the whole draw (model, coordinates to four-momenta and, for a
proposal flow, the analytic weights), and the training time and validation
metrics recorded beside the checkpoint. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from fastsim.checkpoint import load_checkpoint, load_simulator
from fastsim.events import write_text_atomic
from fastsim.events.resources import shipped

FLOWS = ("flow_besiii_like.pt", "flow_psi2s_kkkk.pt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/flow_any_reaction.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in FLOWS:
        path = shipped(name)
        sim = load_simulator(path)
        sim.sample(1000, seed=0)  # warm-up (lazy log Z of the gates, tables)
        gen = torch.Generator().manual_seed(1)
        t = time.perf_counter()
        with torch.no_grad():
            sim.model.sample_unit(args.n, gen)
        t_model = time.perf_counter() - t
        t = time.perf_counter()
        events = sim.sample(args.n, seed=1)
        t_all = time.perf_counter() - t
        ck = load_checkpoint(path)
        history = (ck.get("training") or {}).get("history", [])
        metrics_file = path.with_name(path.stem + ".metrics.json")
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append({
            "flow": name, "reaction": str(sim.reaction), "coordinates": ck["coordinates"].get("kind"),
            "n_dim": sim.coords.n_dim, "weighted": events.weights is not None,
            "model_events_per_s": args.n / t_model, "events_per_s": args.n / t_all,
            "training_s": float(sum(h.get("epoch_s", 0.0) for h in history)), "epochs": len(history),
            "training_events": (ck.get("training_file") or {}).get("n_events"),
            "auc": metrics.get("classifier_test", {}).get("auc"),
            "auc_error": metrics.get("classifier_test", {}).get("auc_error"),
            "max_chi2_ndf_coordinate": metrics.get("max_chi2_ndf_coordinate"),
            "bytes": path.stat().st_size,
        })
    for r in rows:
        print(f"{r['flow']:22s} {r['reaction']:28s} {r['n_dim']} coords  model {r['model_events_per_s']:>10,.0f}/s  "
              f"events {r['events_per_s']:>10,.0f}/s  training {r['training_s']:.0f} s ({r['epochs']} epochs)  "
              f"AUC {r['auc']}")
    out = {"n": args.n, "threads": args.threads, "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "flows": rows}
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
