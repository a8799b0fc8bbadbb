"""Peak memory of the fit-fraction errors with every mass and width floating (R0, psi(2S) -> phi K+ K- K+ K-).

The errors need the Jacobian of the fractions over the generator-level
fraction sample. Forward-mode autodiff over the whole sample (the direct way)
carries one tangent per parameter through every event; the chunked Jacobian
(:mod:`pwa.fraction_errors`) accumulates dM/dp chunk by chunk. Each
measurement runs in its own process and reports its peak resident memory
(ru_maxrss). The direct way is measured on smaller samples and extrapolated
linearly to the full one (run on the full one, it is what was killed at 24 GB).

    python experiments/bench/fraction_memory.py      # writes experiments/results/bench_fraction_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def floating_r0():
    import yaml

    from pwa import Model
    from pwa.card import parse_model_card

    raw = yaml.safe_load((ROOT / "models" / "r0.yaml").read_text())
    for r in raw["resonances"]:
        r["float"] = [k for k in ("mass", "width") if k in r["lineshape"]]
    return Model.from_card(parse_model_card(raw, source="r0.yaml, every mass and width floating"))


def measure(mode: str, n_events: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from pwa.fraction_errors import propagate_model_fractions
    from pwa.fractions import generator_cache
    from pwa.optimize import propagate_fractions

    model = floating_r0()
    gen = generator_cache(model, n_events=n_events, seed=1)
    x = model.initial_values()
    V = 1e-6 * np.eye(model.n_free)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == "chunked":
        F, err, _, _ = propagate_model_fractions(model, gen, x, V)
    else:
        F, err, _, _ = propagate_fractions(lambda p: model.fit_fractions(p, gen), x, V)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "n_events": int(np.shape(gen.weights)[-1]), "n_free": model.n_free,
            "seconds": wall, "peak_rss_gb": peak / 2**20, "rss_before_gb": before / 2**20,
            "f0(980)_error": float(err[1, 1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("chunked", "direct"))
    ap.add_argument("--n-events", type=int, default=200_000)
    ap.add_argument("--direct-sizes", default="5000,10000,20000")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "bench_fraction_memory.json")
    args = ap.parse_args()
    if args.mode:  # a child: one measurement, printed as JSON
        print(json.dumps(measure(args.mode, args.n_events)))
        return
    runs = []
    for mode, n in [("chunked", args.n_events)] + [("direct", int(k)) for k in args.direct_sizes.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--n-events", str(n)], check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    direct = [r for r in runs if r["mode"] == "direct"]
    slope = (direct[-1]["peak_rss_gb"] - direct[0]["peak_rss_gb"]) / (direct[-1]["n_events"] - direct[0]["n_events"])
    full = runs[0]["n_events"]
    extrapolated = direct[-1]["peak_rss_gb"] + slope * (full - direct[-1]["n_events"])
    result = {"card": "models/r0.yaml, every mass and width floating", "n_free": runs[0]["n_free"],
              "runs": runs, "direct_gb_per_1000_events": 1000 * slope,
              "direct_extrapolated_to_full_gb": extrapolated, "chunked_peak_gb": runs[0]["peak_rss_gb"],
              "machine": "2 CPU cores, 24 GB"}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"chunked: {runs[0]['peak_rss_gb']:.2f} GB peak for {full} events and {runs[0]['n_free']} parameters "
          f"({runs[0]['seconds']:.1f} s); direct: {1000 * slope:.3f} GB per 1000 events, about "
          f"{extrapolated:.1f} GB for {full}")


if __name__ == "__main__":
    main()
