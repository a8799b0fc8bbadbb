"""Sampling-rate benchmark: flow, VAE and conventional MC in the same run.

    python experiments/flow/benchmark.py --flow models/flow_besiii_like.pt \
        --vae /tmp/fastsim_flow_work/vae.pt --n 500000

Measures events/s of (a) the generator alone (helicity variables), (b) the
generator plus four-momenta (what ``fastsim sample`` writes, file I/O
excluded), (c) conventional MC (phase space + toy detector, same output),
and the float32 vs float64 difference of the flow's log density. Writes
experiments/results/flow_benchmark.json. Not a test: timings depend on the load
of the machine, which is recorded (os.getloadavg) beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fastsim.checkpoint import load_simulator
from fastsim.events import Detector, Events, iter_conventional_mc, load_detector_card, write_text_atomic, JPSI_GAMMA_KK


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flow", default="models/flow_besiii_like.pt")
    ap.add_argument("--vae", default=None)
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the main measurement (the flow is also timed with 2)")
    ap.add_argument("--out", default="experiments/results/flow_benchmark.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.n
    res: dict = {"n_events": n, "torch_threads": args.threads, "cpu_count": os.cpu_count(),
                 "machine": platform.processor() or platform.machine(), "load_before": os.getloadavg()}
    det = Detector(load_detector_card("default"))
    res["conventional_mc_per_s"] = rate(lambda: sum(len(c) for c in iter_conventional_mc(n, det, reaction=JPSI_GAMMA_KK, seed=1)), n)
    for name, path in (("flow", args.flow), ("vae", args.vae)):
        if path is None:
            continue
        sim = load_simulator(path)
        sim.sample_hv(1000, seed=0)  # warm-up
        r_hv = rate(lambda: sim.sample_hv(n, seed=1), n)
        r_ev = rate(lambda: [Events.from_helicity_variables(hv, sim.reaction)
                             for hv in sim.iter_sample_hv(n, seed=1)], n)
        res[name] = {"checkpoint": path, "sample_hv_per_s": r_hv, "sample_four_momenta_per_s": r_ev}
        other = 2 if args.threads != 2 else 1
        torch.set_num_threads(other)
        res[name][f"sample_hv_per_s_{other}_threads"] = rate(lambda: sim.sample_hv(n, seed=1), n)
        torch.set_num_threads(args.threads)
        if name == "flow":
            hv = sim.sample_hv(100_000, seed=2)
            t0 = time.perf_counter()
            lp64 = sim.log_prob(hv)
            t64 = time.perf_counter() - t0
            t0 = time.perf_counter()
            lp32 = sim.log_prob(hv, float64=False)
            t32 = time.perf_counter() - t0
            d = np.abs(lp32 - lp64)
            res[name]["log_prob_float32_vs_float64"] = {"max_abs_diff": float(d.max()),
                                                        "mean_abs_diff": float(d.mean()),
                                                        "float64_per_s": len(hv) / t64,
                                                        "float32_per_s": len(hv) / t32}
    res["load_after"] = os.getloadavg()
    write_text_atomic(Path(args.out), json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
