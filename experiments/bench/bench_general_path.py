"""Floating-lineshape path: the current einsum formulation of Model.amplitudes
against a broadcast-multiply-and-sum one (a candidate for pwa/amplitude.py,
not applied: measured here only). Same cache, same lineshapes.

Usage: nice python experiments/bench/bench_general_path.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> int:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from bench_likelihood import flat_events, r0_like_card
    from pwa.amplitude import Model

    model = Model.from_card(r0_like_card(True))
    data = model.precompute(flat_events(20_000, 1))
    mc = model.precompute(flat_events(400_000, 2))
    p = jnp.asarray(model.initial_values())

    def intensity_sum(p, cache):
        full = model.full_parameters(p)
        L = model._term_lineshapes(full, cache.masses)  # (K, P, n)
        a = (model._couplings_full(full)[:, None, None] * L).reshape(-1, 1, L.shape[-1])  # (K P, 1, n)
        a_re, a_im = jnp.real(a), jnp.imag(a)
        A_re = jnp.sum(a_re * cache.ang_re - a_im * cache.ang_im, axis=0)  # (S, n)
        A_im = jnp.sum(a_re * cache.ang_im + a_im * cache.ang_re, axis=0)
        return jnp.sum(A_re**2 + A_im**2, axis=0)

    def nll_alt(p, d, m):
        w, v = d.weights, m.weights
        return (-jnp.sum(w * jnp.log(intensity_sum(p, d)))
                + jnp.sum(w) * jnp.log(jnp.sum(v * intensity_sum(p, m)) / jnp.sum(v)))

    out = {"loadavg_at_start": os.getloadavg()}
    for label, fn in (("einsum (current)", model.nll), ("broadcast-sum", nll_alt)):
        f, vg = jax.jit(fn), jax.jit(jax.value_and_grad(fn))
        ref = f(p, data, mc).block_until_ready()
        jax.block_until_ready(vg(p, data, mc))
        tv, tg = [], []
        for _ in range(3):
            t = time.perf_counter(); f(p, data, mc).block_until_ready(); tv.append(time.perf_counter() - t)
            t = time.perf_counter(); jax.block_until_ready(vg(p, data, mc)); tg.append(time.perf_counter() - t)
        out[label] = {"nll": float(ref), "value_median_s": statistics.median(tv),
                      "value_and_gradient_median_s": statistics.median(tg)}
        print(label, out[label], flush=True)
    out["loadavg_at_end"] = os.getloadavg()
    (HERE.parents[1] / "experiments" / "results" / "bench_general_path.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
