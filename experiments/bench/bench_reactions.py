"""NLL value and gradient time for every shipped reaction, at 20,000 data / 400,000 MC.

For each card: toy data from the card's intensity (generator level), flat
phase-space MC (generator level; the normalisation sum is the same work
through a detector), the caches built once, then the jitted NLL and its
gradient timed (median of ``--repeats`` calls after one warm-up call):

* ``fixed``: the card's lineshapes fixed (the normalisation is the quadratic
  form c^H M c, the lineshapes are folded into the data cache);
* ``floating``: every mass and width of a resonance with couplings floating
  (every call evaluates the lineshapes on data and MC).

Prints a table and writes ``experiments/results/bench_reactions.json``:

    nice python experiments/bench/bench_reactions.py [--n-data 20000 --n-mc 400000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from fastsim.events import Detector, Events, write_text_atomic  # noqa: E402
from fastsim.events.nbody import NBodyPhaseSpace  # noqa: E402
from pwa import Model  # noqa: E402
from pwa.toys import iter_toys  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CARDS = ("jpsi_gamma_kk.yaml", "r0.yaml", "d0_kpipi0.yaml", "jpsi_gamma_pi0pi0.yaml")


def floating(model: Model) -> Model:
    """The model with mass and width of every coupling-carrying resonance floating."""
    raw = model.card.to_dict()
    for r in raw["resonances"]:
        if r["couplings"]:
            r["float"] = [p for p in ("mass", "width") if p in r["lineshape"]]
    return Model.from_card(raw)


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-data", type=int, default=20_000)
    ap.add_argument("--n-mc", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "bench_reactions.json")
    args = ap.parse_args()
    rows = []
    for name in CARDS:
        truth = Model.from_card(ROOT / "models" / name)
        data = Events.concatenate(list(iter_toys(truth, args.n_data, Detector(None), seed=1)))
        mc = Events(NBodyPhaseSpace(truth.reaction).sample(args.n_mc, np.random.default_rng(2)), None,
                    reaction=truth.reaction)
        for case, model in (("fixed", truth), ("floating", floating(truth))):
            fixed = case == "fixed"
            t0 = time.perf_counter()
            dc = model.precompute(data)
            mcc = model.precompute(mc, normalisation_matrix=fixed)
            build = time.perf_counter() - t0
            p = model.initial_values()
            value = jax.jit(model.nll)
            grad = jax.jit(jax.value_and_grad(model.nll))
            row = {"card": name, "reaction": str(model.reaction), "case": case, "n_free": model.n_free,
                   "n_terms": model.n_terms, "n_permutations": len(model.amplitude.permutations),
                   "n_states": model.n_states, "build_s": build,
                   "value_s": timed(lambda: value(p, dc, mcc), args.repeats),
                   "gradient_s": timed(lambda: grad(p, dc, mcc), args.repeats)}
            rows.append(row)
            print(f"{name:<24} {case:<8} {row['n_free']:3d} par  value {1e3 * row['value_s']:9.2f} ms  "
                  f"gradient {1e3 * row['gradient_s']:9.2f} ms  (caches {build:.1f} s)", flush=True)
    out = {"n_data": args.n_data, "n_mc": args.n_mc, "repeats": args.repeats, "jax": jax.__version__,
           "device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(), "rows": rows}
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
