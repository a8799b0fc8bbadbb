"""Time the ampform + tensorwaves baseline (NLL value, gradient, fit) for an
R0-like resonance set and write experiments/results/bench_tensorwaves_baseline.json.

Usage (run it niced; the machine is shared):
    nice python experiments/bench/run_tensorwaves_baseline.py nll
    nice python experiments/bench/run_tensorwaves_baseline.py fit --n-mc 100000

Each part updates its own section of the JSON file (other sections are kept).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorwaves_baseline as twb  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "experiments" / "results" / "bench_tensorwaves_baseline.json"

# R0-like set (PHYSICS.md section 5) with every state a relativistic BW with
# energy-dependent width + Blatt-Weisskopf factor (ampform has no Flatte in this
# builder): f0(980) as BW m = 0.99, w = 0.06 (the reference's values; the seed's
# 0.979 is below the K+K- threshold); PDG-like values for f2(1270), f2'(1525),
# f0(1710); seed Table 1 values for f2(2150) and f2(2340).
R0_LIKE = [
    {"name": "f(0)(980)", "spin": 0, "mass": 0.99, "width": 0.06},
    {"name": "f(2)(1270)", "spin": 2, "mass": 1.2754, "width": 0.1866},
    {"name": "f(2)'(1525)", "spin": 2, "mass": 1.5223, "width": 0.0858},
    {"name": "f(0)(1710)", "spin": 0, "mass": 1.723, "width": 0.149},
    {"name": "f(2)(2150)", "spin": 2, "mass": 2.162, "width": 0.159},
    {"name": "f(2)(2340)", "spin": 2, "mass": 2.548, "width": 0.324},
]

# arbitrary but fixed couplings in OUR convention (per resonance, per lR)
R0_COUPLINGS = {
    "f(0)(980)": {0: 1.0 + 0j},
    "f(2)(1270)": {0: 0.4 * np.exp(0.3j), 1: 0.3 * np.exp(-1.0j), 2: 0.2 * np.exp(2.0j)},
    "f(2)'(1525)": {0: 0.8 * np.exp(1.2j), 1: 0.5 * np.exp(0.4j), 2: 0.3 * np.exp(-0.6j)},
    "f(0)(1710)": {0: 0.6 * np.exp(-0.8j)},
    "f(2)(2150)": {0: 0.5 * np.exp(2.5j), 1: 0.3 * np.exp(1.5j), 2: 0.2 * np.exp(0.1j)},
    "f(2)(2340)": {0: 1.5 * np.exp(-2.0j), 1: 1.0 * np.exp(0.7j), 2: 0.6 * np.exp(-1.4j)},
}


def flat_momenta(n: int, seed: int) -> np.ndarray:
    from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace

    hv = PhaseSpace(JPSI_GAMMA_KK).sample(n, np.random.default_rng(seed))
    return Events.from_helicity_variables(hv, JPSI_GAMMA_KK).momenta


def datasets(model, p: np.ndarray):
    return twb.make_datasets(model, p[:, 0], p[:, 1], p[:, 2])


def generate_data(model, n: int, seed: int, chunk: int = 200_000) -> np.ndarray:
    """Accept-reject n events from the model intensity (current parameters)."""
    rng = np.random.default_rng(seed + 1000)
    kept, wmax, i = [], None, 0
    while sum(len(k) for k in kept) < n:
        p = flat_momenta(chunk, seed + i)
        i += 1
        w = model.intensity(datasets(model, p))
        if wmax is None:
            wmax = 1.5 * w.max()
        if w.max() > wmax:
            raise RuntimeError("accept-reject bound exceeded; raise the safety factor")
        kept.append(p[rng.uniform(0, wmax, len(w)) < w])
    return np.concatenate(kept)[:n]


def environment() -> dict:
    import jax

    return {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_x64": bool(jax.config.jax_enable_x64),
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": {m: importlib.metadata.version(m) for m in ("ampform", "tensorwaves", "qrules", "sympy", "numpy", "iminuit", "scipy")},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def setup(n_data: int, n_mc: int, seed: int):
    t = time.perf_counter()
    model = twb.build_model(R0_LIKE)
    build_s = time.perf_counter() - t
    truth = model.to_parameters(R0_COUPLINGS)
    model.set_parameters(truth)
    t = time.perf_counter()
    p_data = generate_data(model, n_data, seed)
    p_mc = flat_momenta(n_mc, seed + 777)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    data = datasets(model, p_data)
    mc = datasets(model, p_mc)
    next(iter(mc.values())).block_until_ready()
    transform_s = time.perf_counter() - t
    info = {
        "resonances": R0_LIKE,
        "couplings_ours": {n: {str(l): [c.real, c.imag] for l, c in per.items()} for n, per in R0_COUPLINGS.items()},
        "data": f"{n_data} events accept-reject from the model at these couplings (flat phase space, seed {seed})",
        "mc": f"{n_mc} flat phase-space events (seed {seed + 777})",
        "model_build_s": build_s,
        "model_build_breakdown_s": model.build_seconds,
        "event_generation_s": gen_s,
        "helicity_transform_s": transform_s,
    }
    return model, truth, data, mc, info


def update_json(section: str, payload: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    doc.setdefault("description", (
        "Baseline timings of ComPWA ampform 0.16 + tensorwaves (JAX backend, UnbinnedNLL) "
        "for J/psi -> gamma K+K- with an R0-like resonance set; produced by "
        "experiments/bench/run_tensorwaves_baseline.py (module tensorwaves_baseline.py). "
        "Times in seconds; '*_median_s' = median of warm repeats, '*_first_call_s' includes "
        "JAX tracing + XLA compilation."))
    doc[section] = payload
    OUT.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(f"wrote section {section!r} of {OUT}")


def run_nll(args) -> None:
    model, truth, data, mc, info = setup(args.n_data, args.n_mc, args.seed)
    free_c = model.coupling_parameter_names()
    free_mw = free_c + model.mass_width_parameter_names()
    res = {"environment": environment(), "setup": info}
    for label, free in (("masses_widths_fixed", free_c), ("masses_widths_floating", free_mw)):
        r = twb.time_nll_and_gradient(model, data, mc, free, truth, repeats=args.repeats)
        r["free_parameters"] = free
        res[label] = r
        print(label, {k: v for k, v in r.items() if not isinstance(v, list)})
    update_json(f"nll_{args.n_data}_{args.n_mc}", res)


def run_fit(args) -> None:
    model, truth, data, mc, info = setup(args.n_data, args.n_mc, args.seed)
    free = model.coupling_parameter_names()
    if args.float_mw:
        free = free + model.mass_width_parameter_names()
    rng = np.random.default_rng(args.seed + 5)
    start = {}
    for k in free:  # perturbed truth as start point
        v = model.values[k]
        if isinstance(v, complex):
            start[k] = v * (1 + 0.15 * rng.normal()) * np.exp(0.15j * rng.normal())
        else:
            start[k] = float(v) * (1 + 0.01 * rng.normal())
    res = {"environment": environment(), "setup": info, "fits": []}
    for opt, grad in args.variants:
        r = twb.time_fit(model, data, mc, free, start, optimizer=opt,
                         use_analytic_gradient=grad, repeats=args.repeats, fixed=truth)
        r["nll_truth"] = twb.nll_functions(model, data, mc, free, truth).value(truth)
        print({k: v for k, v in r.items() if k != "parameters"})
        res["fits"].append(r)
    tag = "floating" if args.float_mw else "fixed"
    labels = "+".join(f"{o}-{'analytic' if g else 'numeric'}" for o, g in args.variants)
    update_json(f"fit_{tag}_{args.n_data}_{args.n_mc}_{labels}", res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["nll", "fit"])
    ap.add_argument("--n-data", type=int, default=20_000)
    ap.add_argument("--n-mc", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--float-mw", action="store_true", help="fit: float masses/widths too")
    ap.add_argument("--variant", action="append", default=None,
                    help="fit: optimizer:gradient, e.g. minuit:numeric, minuit:analytic, scipy:analytic")
    args = ap.parse_args()
    if args.part == "fit":
        v = args.variant or ["minuit:numeric", "minuit:analytic"]
        args.variants = [(s.split(":")[0], s.split(":")[1] == "analytic") for s in v]
        if args.repeats == 5:
            args.repeats = 1
        run_fit(args)
    else:
        run_nll(args)


if __name__ == "__main__":
    main()
