"""Likelihood speed: NLL value, gradient and Hessian, bytes moved against a
STREAM-like bandwidth measured in the same process, and the FALLS
configuration (16,000 data, 400,000 MC, 190 free parameters).

Usage (niced; the machine is shared):
    nice python experiments/bench/bench_likelihood.py [--quick] [--out FILE]

Cases
* ``floating``: the R0_LIKE set of bench_vs_tensorwaves.py with every mass
  and width free (38 parameters); data and MC evaluated per event from the
  cached angular arrays. Bytes moved per call = cache bytes of data + MC
  (masses, weights, ang_re, ang_im: (2 * 4 * n_terms + 2) * 8 bytes per event);
  a gradient needs at least two passes over them (forward and reverse).
* ``fixed``: the same with masses and widths fixed: lineshapes folded into the
  data cache, normalisation c^H M c from the stored matrix (MC size drops out).
* ``falls``: 32 spin-2/spin-4 resonances, 3 couplings each, all free except
  the reference's lR = 0 one: 96 terms, 190 parameters, fixed lineshapes.
  The normalisation matrix is accumulated over MC chunks of 50,000 events
  (the full 400,000-event cache would be 2.5 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parents[1]


def timed(fn, repeats):
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"first_call_s": first, "median_s": statistics.median(ts), "min_s": min(ts), "all_s": ts}


def r0_like_card(floating: bool) -> dict:
    from bench_vs_tensorwaves import our_card
    from run_tensorwaves_baseline import R0_COUPLINGS

    return our_card(floating, R0_COUPLINGS)


def falls_card(n_res: int = 32) -> dict:
    rng = np.random.default_rng(190)
    masses = np.linspace(1.10, 2.95, n_res)
    res = []
    for i, m in enumerate(masses):
        spin = 2 if i % 2 == 0 else 4
        res.append({"name": f"X{spin}({int(1000 * m)})", "spin": spin,
                    "lineshape": {"type": "BW", "mass": float(m), "width": float(rng.uniform(0.08, 0.3)),
                                  "radius": 1.0},
                    "couplings": {l: [float(rng.uniform(0.3, 1.5)), float(rng.uniform(-3, 3))] for l in (0, 1, 2)}})
    return {"resonances": res, "reference": res[0]["name"]}


def flat_events(n, seed):
    from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace

    hv = PhaseSpace(JPSI_GAMMA_KK).sample(n, np.random.default_rng(seed))
    return Events.from_helicity_variables(hv, JPSI_GAMMA_KK)


def cache_bytes(cache) -> int:
    """Bytes of a cache's per-event arrays (what one pass over the events reads)."""
    return int(sum(np.asarray(getattr(cache, k)).nbytes for k in cache.EVENT_FIELDS))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_likelihood.json"))
    ap.add_argument("--cases", default="stream,floating,fixed,falls")
    ap.add_argument("--floating-hessian", action="store_true",
                    help="also time the chunked floating-lineshape Hessian (minutes on a CPU)")
    args = ap.parse_args()
    cases = args.cases.split(",")
    reps = 3 if args.quick else 5

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pwa.amplitude import Model
    from pwa.normalisation import normalisation_cache
    from stream import triad_bandwidth

    dev = jax.devices()[0]
    out = {"description": "pwa likelihood timings (seconds, median of warm calls) and bandwidth; "
                          "produced by experiments/bench/bench_likelihood.py",
           "device": str(dev), "device_kind": getattr(dev, "device_kind", ""), "platform": dev.platform,
           "host": platform.node(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
           "loadavg_at_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": {}}
    bw = None
    if "stream" in cases:
        bw = triad_bandwidth(n=20_000_000, repeats=reps)
        out["stream"] = bw
        print("stream", bw, flush=True)

    data_ev, mc_ev = flat_events(20_000, 1), flat_events(400_000, 2)
    for case in ("floating", "fixed"):
        if case not in cases:
            continue
        model = Model.from_card(r0_like_card(case == "floating"))
        data = model.precompute(data_ev)
        mc = model.precompute(mc_ev, normalisation_matrix=case == "fixed")
        p = jnp.asarray(model.initial_values())
        a = (data, mc)
        f = jax.jit(model.nll)
        vg = jax.jit(jax.value_and_grad(model.nll))
        if case == "floating":
            # the one-shot forward-over-reverse Hessian would hold n_free tangents of every
            # per-event intermediate (30 GB at 400,000 MC): accumulate over MC chunks.
            from pwa.chunked import ChunkedNLL

            chunked = ChunkedNLL.from_caches(model, data, mc, 50_000)
            h = lambda q, *_: chunked.hessian(q)  # noqa: E731
        else:
            h = jax.jit(jax.hessian(model.nll))
        r = {"n_data": 20_000, "n_mc": 400_000, "n_free": model.n_free, "n_terms": model.n_terms,
             "value": timed(lambda: jax.block_until_ready(f(p, *a)), reps),
             "value_and_gradient": timed(lambda: jax.block_until_ready(vg(p, *a)), reps),
             }
        if case == "fixed" or args.floating_hessian:
            r["hessian"] = timed(lambda: jax.block_until_ready(h(p, *a)), 1 if case == "floating" else reps)
            r["hessian_over_gradient"] = r["hessian"]["median_s"] / r["value_and_gradient"]["median_s"]
        r["hessian_method"] = "not timed (see bench_vs_tensorwaves.json)" if "hessian" not in r else ("pwa.chunked.ChunkedNLL, MC chunks of 50,000" if case == "floating"
                               else "jax.hessian (forward-over-reverse), one shot")
        moved = cache_bytes(data) + (cache_bytes(mc) if case == "floating" else 0)
        r["cache_bytes_read_per_value"] = moved
        r["value_GBps"] = moved / r["value"]["min_s"] / 1e9
        r["gradient_GBps_two_passes"] = 2 * moved / r["value_and_gradient"]["min_s"] / 1e9
        if bw:
            r["value_fraction_of_read_bandwidth"] = r["value_GBps"] / bw["read_reduce_GBps"]
            r["gradient_fraction_of_read_bandwidth"] = r["gradient_GBps_two_passes"] / bw["read_reduce_GBps"]
        out["cases"][case] = r
        print(case, {k: (v["median_s"] if isinstance(v, dict) else v) for k, v in r.items()}, flush=True)
        del data, mc

    if "falls" in cases:
        model = Model.from_card(falls_card())
        t = time.perf_counter()
        data = model.precompute(flat_events(16_000, 3))
        # normalisation matrix accumulated over MC chunks (weighted means combined by weight)
        mc, _ = normalisation_cache(model, (flat_events(50_000, 100 + k) for k in range(8)))
        pre = time.perf_counter() - t
        p = jnp.asarray(model.initial_values())
        vg = jax.jit(jax.value_and_grad(model.nll))
        h = jax.jit(jax.hessian(model.nll))
        r = {"n_data": 16_000, "n_mc": 400_000, "n_free": model.n_free, "n_terms": model.n_terms,
             "precompute_s": pre,
             "value_and_gradient": timed(lambda: jax.block_until_ready(vg(p, data, mc)), reps),
             "hessian": timed(lambda: jax.block_until_ready(h(p, data, mc)), 2)}
        r["hessian_over_gradient"] = r["hessian"]["median_s"] / r["value_and_gradient"]["median_s"]
        r["cache_bytes_read_per_value"] = cache_bytes(data)
        r["gradient_GBps_two_passes"] = 2 * cache_bytes(data) / r["value_and_gradient"]["min_s"] / 1e9
        r["falls_reference"] = ("FALLS (seed): 500,000 iterations in 50 min on one V100 = 6 ms per "
                                "iteration at 16,000 data / 400,000 MC / 190 parameters")
        out["cases"]["falls"] = r
        print("falls", {k: (v["median_s"] if isinstance(v, dict) else v) for k, v in r.items()}, flush=True)

    out["loadavg_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
