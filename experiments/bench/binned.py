"""Floating lineshapes with the binned normalisation (pwa.binned) against the exact per-event sum.

The R0_LIKE set of bench_vs_tensorwaves.py (J/psi -> gamma K+ K-, four
resonances, every mass and width free: 38 parameters, 14 terms), 20,000 flat
data events and 400,000 flat MC events, as in bench_likelihood.py's
``floating`` case. Timed in this process: the NLL value and gradient, exact
and binned, and the binned exact Hessian. Accuracy: ln N and its gradient,
binned against exact, at the card's values; and the fractions' shift to the
exact minimum, from one Newton step off the binned fit's minimum
(delta p = -H_binned^-1 g_exact), against each fraction's MC-statistics error
(pwa.mc_statistics). The tensorwaves numbers are the committed ones of
experiments/results/bench_vs_tensorwaves.json (same machine, another
process: tensorwaves lives in its own environment).

    nice python experiments/bench/binned.py      # writes experiments/results/bench_binned.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests"))
ROOT = HERE.parents[1]


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from _shared import flat_events
    from bench_likelihood import r0_like_card, timed
    from pwa import FitConfig, Model
    from pwa.binned import DEFAULT_BINS, binned_cache
    from pwa.fit import fit
    from pwa.hessian import StructuredHessian
    from pwa.mc_statistics import mc_statistical_covariance
    from pwa.problem import FitProblem

    out = {"loadavg_at_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "n_bins": DEFAULT_BINS}
    model = Model.from_card(r0_like_card(True))
    data_ev, mc_ev = flat_events(20_000, 1), flat_events(400_000, 2)
    data, mc = model.precompute(data_ev), model.precompute(mc_ev)
    t = time.perf_counter()
    binned = binned_cache(model, mc)
    out["binning_s"] = time.perf_counter() - t
    p = jnp.asarray(model.initial_values())
    vg = jax.jit(jax.value_and_grad(model.nll))
    out["exact_value_and_gradient"] = timed(lambda: jax.block_until_ready(vg(p, data, mc)), 3)
    out["binned_value_and_gradient"] = timed(lambda: jax.block_until_ready(vg(p, data, binned)), 3)
    h_autodiff = jax.jit(jax.hessian(model.nll))
    out["binned_hessian_autodiff"] = timed(lambda: jax.block_until_ready(h_autodiff(p, data, binned)), 1)
    h = jax.jit(StructuredHessian(model))
    out["binned_hessian"] = timed(lambda: jax.block_until_ready(h(p, data, binned)), 3)
    out["exact_hessian_structured"] = timed(lambda: jax.block_until_ready(h(p, data, mc)), 1)
    H_s, H_a = np.asarray(h(p, data, binned)), np.asarray(h_autodiff(p, data, binned))
    out["hessian_structured_vs_autodiff_max_relative_difference"] = float(np.abs(H_s - H_a).max() / np.abs(H_a).max())
    out["hessian_method"] = "pwa.hessian.StructuredHessian (the autodiff one: binned_hessian_autodiff)"
    out["gradient_speedup"] = out["exact_value_and_gradient"]["median_s"] / out["binned_value_and_gradient"]["median_s"]
    out["hessian_over_binned_gradient"] = out["binned_hessian"]["median_s"] / out["binned_value_and_gradient"]["median_s"]
    out["autodiff_hessian_over_binned_gradient"] = (out["binned_hessian_autodiff"]["median_s"]
                                                    / out["binned_value_and_gradient"]["median_s"])
    ln = lambda q, c: jnp.log(model.normalisation(q, c))  # noqa: E731
    ge, gb = np.asarray(jax.grad(ln)(p, mc)), np.asarray(jax.grad(ln)(p, binned))
    out["ln_norm_difference"] = float(ln(p, binned) - ln(p, mc))
    out["ln_norm_gradient_max_relative_difference"] = float(np.max(np.abs(gb - ge)) / np.max(np.abs(ge)))
    print({k: v for k, v in out.items()}, flush=True)
    tw = json.loads((ROOT / "experiments" / "results" / "bench_vs_tensorwaves.json").read_text())
    out["tensorwaves_reference"] = {"file": "experiments/results/bench_vs_tensorwaves.json",
                                    "note": "committed timings of tensorwaves on the same sets, another process"}
    ref = tw["20000_400000_floating"]["cases"]["masses_widths_floating"]["tensorwaves"]
    out["tensorwaves_reference"].update(gradient_median_s=ref["gradient_median_s"],
                                        value_median_s=ref["value_median_s"])
    out["gradient_over_tensorwaves"] = ref["gradient_median_s"] / out["binned_value_and_gradient"]["median_s"]
    path = ROOT / "experiments" / "results" / "bench_binned.json"
    out["command"] = "nice python experiments/bench/binned.py"
    write(path, out)  # before the fit, so that a run cut off there keeps the timings

    # A binned fit, then one exact Newton step: how far the exact minimum lies, in MC-statistics errors.
    config = FitConfig()
    problem = FitProblem.build(model, data_ev, mc_ev)
    binned_problem = FitProblem(model, problem.data_cache, binned, problem.gen_cache, problem.n_data, problem.n_mc,
                                problem.sum_data_weights, problem.weighted_data, problem.effective_data_events)
    t = time.perf_counter()
    res = fit(model, None, None, config, problem=binned_problem)
    out["binned_fit_s"] = time.perf_counter() - t
    out["binned_fit_converged"] = bool(res.converged)
    out["binned_fit_nll"] = float(res.nll)
    out["binned_fit_starts"] = config.starts
    x = jnp.asarray(res.values)
    g_exact = np.asarray(jax.grad(model.nll)(x, problem.data_cache, problem.mc_cache))
    H = np.asarray(h(x, problem.data_cache, binned))
    step = -np.linalg.solve(H, g_exact)
    F0 = np.asarray(model.fit_fractions(x, problem.gen_cache))
    F1 = np.asarray(model.fit_fractions(x + step, problem.gen_cache))
    stats = mc_statistical_covariance(problem, res.values, np.linalg.inv(H))
    names = list(model.resonance_names)
    out["fractions"] = {n: {"binned": float(F0[i, i]), "shift_to_exact": float(F1[i, i] - F0[i, i]),
                            "mc_statistics_error": float(stats.fraction_errors[i, i]),
                            "shift_over_mc_error": float(abs(F1[i, i] - F0[i, i]) / stats.fraction_errors[i, i])}
                        for i, n in enumerate(names)}
    out["max_shift_over_mc_error"] = max(v["shift_over_mc_error"] for v in out["fractions"].values())
    write(path, out)
    print(json.dumps(out, indent=1, default=float))


def write(path: Path, out: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=float) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
