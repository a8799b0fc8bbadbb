"""float32 storage of the event caches: does it move a fitted R0 value by more than 0.05 sigma?

The option measured: data and MC angular arrays rounded to float32 (half the
bytes per event), every arithmetic operation still in float64 (JAX promotes
float32 * float64 to float64). A full-float32 arithmetic mode is not
measured here. R0 (models/jpsi_gamma_kk.yaml), fixed lineshapes, toy data through the
default toy detector, conventional MC; both fits start at the card values.

Usage: nice python experiments/bench/bench_float32.py [--n-data 20000 --n-mc 200000]
Writes experiments/results/bench_float32.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fastsim.events import JPSI_GAMMA_KK

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-data", type=int, default=20_000)
    ap.add_argument("--n-mc", type=int, default=200_000)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from fastsim.events import Detector, Events, conventional_mc, load_detector_card
    from pwa.amplitude import Model
    from pwa.caches import NormalisationCache
    from pwa.optimize import Minimizer
    from pwa.toys import iter_toys

    model = Model.from_card(ROOT / "models" / "jpsi_gamma_kk.yaml")
    det = Detector(load_detector_card("default"))
    data_ev = Events.concatenate(list(iter_toys(model, args.n_data, det, seed=21)))
    mc_ev = conventional_mc(args.n_mc, det, reaction=JPSI_GAMMA_KK, seed=22)
    data = model.precompute(data_ev)
    mc = model.precompute(mc_ev, normalisation_matrix=True)

    def to32(cache):
        return dataclasses.replace(cache, ang_re=cache.ang_re.astype(jnp.float32),
                                   ang_im=cache.ang_im.astype(jnp.float32))

    mc_f32 = model.precompute(mc_ev, fold_lineshapes=True)
    M = jax.jit(model.term_integrals)(jnp.asarray(model.initial_values()), to32(mc_f32))
    mc32 = NormalisationCache(norm_re=jnp.real(M), norm_im=jnp.imag(M),
                              weights=jnp.sum(mc_f32.weights, keepdims=True))
    del mc_f32
    out = {"model": "models/jpsi_gamma_kk.yaml", "n_data": len(data_ev), "n_mc": len(mc_ev),
           "loadavg_at_start": os.getloadavg(), "fits": {}}
    x0 = model.initial_values()
    res = {}
    for label, a in (("float64", (data, mc)), ("float32_storage", (to32(data), mc32))):
        mz = Minimizer(model.nll, model.n_free, model.bounds, args=a)
        t = time.perf_counter()
        r = mz.minimize(x0)
        res[label] = r
        out["fits"][label] = {"nll": float(r.fun), "converged": bool(r.converged), "edm": float(r.edm),
                              "wall_s": time.perf_counter() - t}
        print(label, out["fits"][label], flush=True)
    r64, r32 = res["float64"], res["float32_storage"]
    shift = np.abs(r32.x - r64.x) / r64.errors
    out["max_shift_in_sigma"] = float(shift.max())
    out["parameter_with_max_shift"] = model.parameter_names[int(shift.argmax())]
    out["max_relative_error_change"] = float(np.max(np.abs(r32.errors / r64.errors - 1)))
    out["criterion"] = "max shift < 0.05 sigma"
    out["passes"] = bool(shift.max() < 0.05)
    print(json.dumps({k: v for k, v in out.items() if k != "fits"}), flush=True)
    (ROOT / "experiments" / "results" / "bench_float32.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
