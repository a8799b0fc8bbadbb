"""Our likelihood against ComPWA's ampform + tensorwaves, same events, same process.

Same resonances (the colleague's R0_LIKE set: all relativistic BW with
energy-dependent width and Blatt-Weisskopf factor, d = 1 GeV^-1), same
couplings (ours; the baseline module converts to ampform's (-1)^lR), same
data (accept-reject from the tensorwaves intensity) and MC four-momenta.
Before timing, the two NLLs are compared at two parameter points.

Usage (niced; the machine is shared):
    nice python experiments/bench/bench_vs_tensorwaves.py --n-data 20000 --n-mc 400000 \
        [--tw-fit fixed] [--tw-fit floating]

Writes the section ``<n_data>_<n_mc>`` of experiments/results/bench_vs_tensorwaves.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_tensorwaves_baseline as rtb  # noqa: E402
import tensorwaves_baseline as twb  # noqa: E402

ROOT = HERE.parents[1]
OUT = ROOT / "experiments" / "results" / "bench_vs_tensorwaves.json"


#: Resonances whose mass stays fixed in the floating fits: the f0(980) BW sits 2.6 MeV above
#: the K+K- threshold, where our BW (q0 real) is bounded and tensorwaves continues analytically,
#: so a fitted mass at or below threshold would not be the same model in the two codes.
FIXED_MASS_IN_FITS = ("f(0)(980)",)


def our_card(floating: bool, couplings: dict, fixed_masses: tuple[str, ...] = ()) -> dict:
    """Card dict of the R0_LIKE set; couplings: {name: {lR: complex (ours)}}; with ``floating``
    every mass and width floats except the masses named in ``fixed_masses``."""
    res = []
    for r in rtb.R0_LIKE:
        entry = {"name": r["name"], "spin": r["spin"],
                 "lineshape": {"type": "BW", "mass": r["mass"], "width": r["width"], "radius": twb.MESON_RADIUS},
                 "couplings": {int(l): [float(abs(c)), float(np.angle(c))] for l, c in couplings[r["name"]].items()}}
        if floating:
            entry["float"] = ["width"] if r["name"] in fixed_masses else ["mass", "width"]
        res.append(entry)
    return {"resonances": res, "reference": rtb.R0_LIKE[0]["name"]}


def our_vector(model, couplings: dict, masses: dict, widths: dict) -> np.ndarray:
    """Our free-parameter vector from couplings (ours), masses, widths."""
    out = []
    for name in model.parameter_names:
        res, par = name.split(":")
        if par.startswith("c"):
            l, kind = par[1:].split(".")
            c = complex(couplings[res][int(l)])
            out.append(abs(c) if kind == "mag" else np.angle(c))
        else:
            out.append({"mass": masses, "width": widths}[par][res])
    return np.asarray(out, dtype=np.float64)


_T0 = time.perf_counter()


def stage(case: str, what: str) -> None:
    """Timestamped progress line (a run cut off by a time limit then shows where it was)."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {case}: {what}", flush=True)


def timed(fn, repeats):
    fn()  # warm (compile)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-data", type=int, default=20_000)
    ap.add_argument("--n-mc", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tw-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--cases", default="fixed,floating")
    ap.add_argument("--fit-floating", action="store_true",
                    help="also fit with floating masses/widths (--floating-optimizer; exact Hessians in batches of "
                         "8 tangents: a few GB at 400,000 MC)")
    ap.add_argument("--floating-optimizer", default="BFGS",
                    help="our optimiser with floating lineshapes (default BFGS: exact gradients only, the "
                         "exact Hessian at the end for the Newton polish and the errors; trust-exact needs "
                         "a Hessian of ~37 gradients at every iteration there)")
    ap.add_argument("--hessian-chunk", type=int, default=50_000,
                    help="floating case: Hessian through pwa.chunked with MC chunks of this size")
    ap.add_argument("--events-cache", default=None,
                    help="npz of the data and MC four-momenta: loaded if it exists, else written after "
                         "generation (two processes on the same events pay the accept-reject once)")
    ap.add_argument("--binned-mc", type=int, default=0,
                    help="floating case: our fits use the binned normalisation with this many bins "
                         "(pwa.binned) and trust-exact with the structured exact Hessian (pwa.hessian); the "
                         "minimum is then also evaluated with the exact per-event MC sum")
    ap.add_argument("--starts", type=int, default=1,
                    help="floating case: after the single-start fits, also fit from this many starts "
                         "(the start and pwa.starts.random_starts) and record the best exact NLL and the total time")
    ap.add_argument("--tw-fit", action="append", default=[], choices=["fixed", "floating"],
                    help="also time tensorwaves' fit (--tw-optimizer) in this process")
    ap.add_argument("--tw-optimizer", default="scipy", choices=["scipy", "minuit-analytic", "minuit-numeric"],
                    help="tensorwaves' optimiser: scipy BFGS with its analytic gradient, falling back to "
                         "Minuit2 with numerical gradients when BFGS makes no step (default); Minuit2 with its "
                         "analytic gradient; or Minuit2 with numerical gradients (tensorwaves' own default)")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from fastsim.events import JPSI_GAMMA_KK, Events
    from pwa.amplitude import Model
    from pwa.optimize import Minimizer

    env = rtb.environment()
    stage("set-up", "building the tensorwaves model")
    # --- same events as the colleague's baseline --------------------------------------
    t = time.perf_counter()
    tw = twb.build_model(rtb.R0_LIKE)
    tw_build = time.perf_counter() - t
    truth_tw = tw.to_parameters(rtb.R0_COUPLINGS)
    tw.set_parameters(truth_tw)
    truth_all = dict(tw.values)  # every ampform parameter at the truth (masses, widths, radii too)
    stage("set-up", f"tensorwaves model built ({tw_build:.1f} s); events")
    cache = Path(args.events_cache) if args.events_cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            p_data, p_mc, cached_seed = z["data"], z["mc"], int(z["seed"])
        if len(p_data) != args.n_data or len(p_mc) != args.n_mc or cached_seed != args.seed:
            raise SystemExit(f"{cache}: holds {len(p_data)} data / {len(p_mc)} MC events of seed {cached_seed}, "
                             f"expected {args.n_data} / {args.n_mc} of seed {args.seed}")
    else:
        p_data = rtb.generate_data(tw, args.n_data, args.seed)
        p_mc = rtb.flat_momenta(args.n_mc, args.seed + 777)
        if cache is not None:
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, data=p_data, mc=p_mc, seed=args.seed)
            tmp.replace(cache)
    stage("set-up", "tensorwaves datasets (helicity variables)")
    data_tw, mc_tw = rtb.datasets(tw, p_data), rtb.datasets(tw, p_mc)
    stage("set-up", "done")
    data_ev, mc_ev = Events(p_data, reaction=JPSI_GAMMA_KK), Events(p_mc, reaction=JPSI_GAMMA_KK)

    # start point exactly as run_tensorwaves_baseline.run_fit draws it
    rng = np.random.default_rng(args.seed + 5)
    free_c = tw.coupling_parameter_names()
    fixed_mass_names = {tw.mass_names[n] for n in FIXED_MASS_IN_FITS}
    free_mw = free_c + [k for k in tw.mass_width_parameter_names() if k not in fixed_mass_names]
    start_tw = {}
    for k in free_mw:
        v = tw.values[k]
        if isinstance(v, complex):
            start_tw[k] = v * (1 + 0.15 * rng.normal()) * np.exp(0.15j * rng.normal())
        else:
            start_tw[k] = float(v) * (1 + 0.01 * rng.normal())
    # A 1 % draw puts f0(980) at 0.974 GeV, below the K+K- threshold (0.987 GeV), where a
    # BW with energy-dependent width has q0 imaginary: our fit bounds BW masses to
    # threshold + 1 MeV, tensorwaves continues analytically. Both fits start from the same
    # point, so the draw is clipped to threshold + 5 MeV for both.
    from pwa.amplitude import THRESHOLD_MARGIN
    from fastsim.events import JPSI_GAMMA_KK

    threshold = JPSI_GAMMA_KK.m1 + JPSI_GAMMA_KK.m2
    clipped = {}
    for name, k in tw.mass_names.items():
        if k in start_tw and start_tw[k] < threshold + 5 * THRESHOLD_MARGIN:
            clipped[name] = (start_tw[k], threshold + 5 * THRESHOLD_MARGIN)
            start_tw[k] = threshold + 5 * THRESHOLD_MARGIN

    def ours_from_tw(pars):
        full = {**truth_all, **pars}
        c = tw.from_parameters(full)
        m = {r["name"]: full[tw.mass_names[r["name"]]] for r in rtb.R0_LIKE}
        w = {r["name"]: full[tw.width_names[r["name"]]] for r in rtb.R0_LIKE}
        return c, m, w

    report = {"environment": env, "loadavg_at_start": os.getloadavg(),
              "n_data": args.n_data, "n_mc": args.n_mc, "resonances": rtb.R0_LIKE,
              "tensorwaves_model_build_s": tw_build, "cases": {}, "out": args.out,
              "start_masses_clipped_to_threshold": clipped,
              "key": f"{args.n_data}_{args.n_mc}_{args.cases.replace(',', '+')}"
                     + ("_twfit_" + "+".join(args.tw_fit) if args.tw_fit else "")
                     + (f"_tw{args.tw_optimizer}" if args.tw_fit and args.tw_optimizer != "scipy" else "")
                     + (f"_binned{args.binned_mc}" if args.binned_mc else "")
                     + (f"_starts{args.starts}" if args.starts > 1 else "")}
    for case, free in (("masses_widths_fixed", free_c), ("masses_widths_floating", free_mw)):
        floating = case.endswith("floating")
        if ("floating" if floating else "fixed") not in args.cases.split(","):
            continue
        model = Model.from_card(our_card(floating, rtb.R0_COUPLINGS, FIXED_MASS_IN_FITS))
        t = time.perf_counter()
        data_cache = model.precompute(data_ev)
        mc_cache = model.precompute(mc_ev, normalisation_matrix=not floating)
        jax.block_until_ready(mc_cache)
        precompute_s = time.perf_counter() - t
        x_truth = our_vector(model, *ours_from_tw(truth_tw))
        start_case = {k: start_tw[k] for k in free}
        x_start = our_vector(model, *ours_from_tw(start_case))

        nll = jax.jit(model.nll)
        vg = jax.jit(jax.value_and_grad(model.nll))
        a = (data_cache, mc_cache)
        if floating:
            # The exact Hessian from the amplitude's structure, in event chunks (bounded memory;
            # a one-shot forward-over-reverse Hessian held n_free tangents of every per-event
            # intermediate: 30 GB here).
            from pwa.hessian import StructuredHessian

            hess = jax.jit(StructuredHessian(model))
        else:
            hess = jax.jit(jax.hessian(model.nll))

        # --- agreement (NLL differences between two points; here also absolute) ------
        tw_fns = twb.nll_functions(tw, data_tw, mc_tw, free, truth_all)
        ours_vals = [float(nll(jnp.asarray(x), *a)) for x in (x_truth, x_start)]
        tw_vals = [tw_fns.value(truth_all), tw_fns.value(start_case)]
        agree = {"ours": ours_vals, "tensorwaves": tw_vals,
                 "difference_ours": ours_vals[1] - ours_vals[0],
                 "difference_tensorwaves": tw_vals[1] - tw_vals[0]}
        agree["relative_disagreement_of_differences"] = abs(agree["difference_ours"] - agree["difference_tensorwaves"]) / abs(agree["difference_tensorwaves"])
        print(case, "agreement", agree, flush=True)
        if agree["relative_disagreement_of_differences"] > 1e-8:
            raise SystemExit(f"NLLs disagree: {agree}")

        # --- timings ------------------------------------------------------------------
        xs = jnp.asarray(x_start)
        stage(case, "our gradient and Hessian: compile and time")
        t = time.perf_counter(); jax.block_until_ready(vg(xs, *a)); vg_first = time.perf_counter() - t
        t = time.perf_counter(); jax.block_until_ready(hess(xs, *a)); h_first = time.perf_counter() - t
        v_med, v_all = timed(lambda: jax.block_until_ready(nll(xs, *a)), args.repeats)
        g_med, g_all = timed(lambda: jax.block_until_ready(vg(xs, *a)), args.repeats)
        h_med, h_all = timed(lambda: jax.block_until_ready(hess(xs, *a)), max(3, args.repeats // 2))
        stage(case, "tensorwaves value and gradient: compile and time")
        tw_t = twb.time_nll_and_gradient(tw, data_tw, mc_tw, free, {**truth_all, **start_case},
                                         repeats=args.tw_repeats)

        entry = {
            "n_free_real": model.n_free,
            "agreement": agree,
            "ours": {"precompute_s": precompute_s, "value_median_s": v_med, "value_all_s": v_all,
                     "value_and_gradient_first_call_s": vg_first, "value_and_gradient_median_s": g_med,
                     "value_and_gradient_all_s": g_all, "hessian_first_call_s": h_first,
                     "hessian_median_s": h_med, "hessian_all_s": h_all,
                     "hessian_over_gradient": h_med / g_med, "fits": []},
            "tensorwaves": tw_t,
            "ratios": {"value": tw_t["value_median_s"] / v_med, "gradient": tw_t["gradient_median_s"] / g_med},
        }
        if floating:
            entry["ours"]["hessian_method"] = "pwa.hessian.StructuredHessian (exact per-event MC)"
        # written before the fits, so that a run cut off by a time limit keeps the timings
        report["cases"][case] = entry
        print(case, json.dumps(entry["ratios"]), flush=True)
        write(report)

        # --- our fit (fixed: trust-exact with the exact Hessian; floating: --floating-optimizer),
        # first (with compile) and warm; Minuit only if that fails -------------------------------
        stage(case, "our fits")
        fit_args, fit_hessian, floating_optimizer, check_problem = a, None, args.floating_optimizer, None
        if floating and args.binned_mc:
            from pwa.binned import binned_cache
            from pwa.hessian import StructuredHessian

            t = time.perf_counter()
            fit_args = (data_cache, binned_cache(model, mc_cache, args.binned_mc))
            entry["ours"]["binning_s"] = time.perf_counter() - t
            entry["ours"]["binned_mc_bins"] = args.binned_mc
            fit_hessian, floating_optimizer = StructuredHessian(model), "trust-exact"
            # what `pwa fit --binned-mc` does at the binned minimum: the exact sum's gradient there,
            # and a refit with the exact sum when its Newton shift exceeds 0.01 sigma (pwa.fit.exact_check)
            from pwa.fit_result import FitConfig
            from pwa.fractions import generator_cache
            from pwa.problem import FitProblem

            check_problem = FitProblem(model=model, data_cache=data_cache, mc_cache=fit_args[1],
                                       gen_cache=generator_cache(model, quadrature_panels=40), n_data=args.n_data,
                                       n_mc=args.n_mc, sum_data_weights=float(args.n_data), weighted_data=False,
                                       exact_mc_cache=mc_cache)
            # the binned gradient (what every iteration of the binned fit costs) against
            # tensorwaves' per-event one, same process
            vg_binned = jax.jit(jax.value_and_grad(model.nll))
            gb_med, gb_all = timed(lambda: jax.block_until_ready(vg_binned(xs, *fit_args)), args.repeats)
            entry["ours"]["binned_value_and_gradient_median_s"] = gb_med
            entry["ours"]["binned_value_and_gradient_all_s"] = gb_all
            entry["ratios"]["gradient_binned"] = tw_t["gradient_median_s"] / gb_med
            write(report)
        mz = Minimizer(model.nll, model.n_free, model.bounds, args=fit_args, hessian=fit_hessian)
        fits, first, warm = [], None, None
        ours = (floating_optimizer if floating else "trust-exact", "minuit")
        for optimizer in ours if (not floating or args.fit_floating) else ():
            runs = []
            for _ in range(2):  # first call includes compilation, second is warm
                t = time.perf_counter()
                try:
                    r = mz.minimize(x_start, optimizer=optimizer)
                    check = None
                    if check_problem is not None:
                        from pwa.fit import exact_check

                        r, check = exact_check(check_problem, r, FitConfig(optimizer=optimizer))
                except Exception as exc:  # noqa: BLE001 - recorded, then the next optimizer is tried
                    fits.append({"optimizer": optimizer, "failed": repr(exc)[:300],
                                 "wall_s": time.perf_counter() - t})
                    print(case, "fit failed", optimizer, repr(exc)[:300], flush=True)
                    break
                runs.append({"wall_s": time.perf_counter() - t, "message": r.message,
                             "nll_min": float(nll(jnp.asarray(r.x), *a)),  # the exact NLL (per-event MC)
                             "objective_min": float(r.fun),
                             "converged": bool(r.converged), "edm": float(r.edm),
                             "n_iterations": int(r.n_iterations), "n_evaluations": int(r.n_evaluations),
                             "optimizer": r.optimizer,
                             **({"exact_check": dataclasses.asdict(check)} if check is not None else {}),
                             "masses_widths": {name: float(v) for name, v in zip(model.parameter_names, r.x)
                                               if not name.split(":")[1].startswith("c")}})
            fits += runs
            if len(runs) == 2:
                first, warm = runs
                break
        print(case, "our fits", fits, flush=True)
        entry["ours"]["fits"] = fits
        if floating and args.starts > 1 and warm:
            from pwa.starts import random_starts

            stage(case, f"our fits from {args.starts} starts")
            t = time.perf_counter()
            multi = []
            for x0 in random_starts(model, x_start, args.starts, args.seed + 11):
                try:
                    r = mz.minimize(x0, optimizer=ours[0])
                    multi.append({"nll_min": float(nll(jnp.asarray(r.x), *a)), "converged": bool(r.converged),
                                  "n_iterations": int(r.n_iterations), "message": r.message})
                except Exception as exc:  # noqa: BLE001 - a failed start is recorded
                    multi.append({"failed": repr(exc)[:300]})
            best = min((m["nll_min"] for m in multi if "nll_min" in m), default=float("nan"))
            entry["ours"]["multi_start"] = {"starts": args.starts, "wall_s": time.perf_counter() - t,
                                            "best_nll": best, "runs": multi}
            print(case, "multi-start", entry["ours"]["multi_start"], flush=True)
        tag = "fixed" if not floating else "floating"
        if tag in args.tw_fit:
            stage(case, f"tensorwaves fit ({args.tw_optimizer})")
            optimizer, analytic = {"scipy": ("scipy", True), "minuit-analytic": ("minuit", True),
                                   "minuit-numeric": ("minuit", False)}[args.tw_optimizer]
            twfit = twb.time_fit(tw, data_tw, mc_tw, free, start_case, optimizer=optimizer,
                                 use_analytic_gradient=analytic, fixed=truth_all)
            tw_parameters = _complex_parameters(twfit.get("parameters", {}))
            if args.tw_optimizer == "scipy" and (not twfit["minimum_valid"] or twfit["nll_min"] >= twfit["nll_start"]):
                # scipy BFGS gave up (seen in the floating case: no step accepted); fall back
                # to tensorwaves' default optimiser, Minuit2 with its own numerical gradient
                print(case, "tw scipy fit failed, trying Minuit2", twfit, flush=True)
                failed = twfit
                twfit = twb.time_fit(tw, data_tw, mc_tw, free, start_case, optimizer="minuit",
                                     use_analytic_gradient=False, fixed=truth_all)
                tw_parameters = _complex_parameters(twfit.get("parameters", {}))
                twfit["scipy_bfgs_attempt"] = failed
            entry["tensorwaves_fit"] = twfit
            if floating and tw_parameters:
                entry["tensorwaves_end_point"] = tensorwaves_end_point(
                    model, mz, nll, a, our_vector(model, *ours_from_tw(tw_parameters)), ours[0])
                print(case, "tensorwaves' end point in ours", entry["tensorwaves_end_point"], flush=True)
            if warm:
                entry["ratios"]["fit_warm"] = twfit["fit_median_s"] / warm["wall_s"]
                entry["ratios"]["fit_tw_warm_over_ours_first"] = twfit["fit_median_s"] / first["wall_s"]
                entry["ratios"]["nll_min_ours_minus_tensorwaves"] = warm["nll_min"] - twfit["nll_min"]
            if "multi_start" in entry["ours"]:
                ms = entry["ours"]["multi_start"]
                entry["ratios"]["fit_multi_start"] = twfit["fit_median_s"] / ms["wall_s"]
                entry["ratios"]["best_nll_ours_minus_tensorwaves"] = ms["best_nll"] - twfit["nll_min"]
            print(case, "tw fit", twfit, flush=True)
        print(case, json.dumps(entry["ratios"]), flush=True)
        write(report)
    return 0


def _complex_parameters(pars: dict) -> dict:
    """time_fit's parameters back from JSON form ([re, im] for a complex coupling)."""
    return {k: complex(*v) if isinstance(v, list) else v for k, v in pars.items()}


def tensorwaves_end_point(model, mz, nll, args, x_tw, optimizer) -> dict:
    """Where tensorwaves' fit ended, seen from our side: our exact NLL there, the free
    parameters outside our bounds (tensorwaves has none), and our fit started from
    there (clipped into the bounds)."""
    import jax.numpy as jnp

    from pwa.optimize import BoundsTransform

    tr = BoundsTransform.from_bounds(model.bounds, model.n_free)
    outside = {name: {"value": float(v), "bounds": [float(lo), float(hi)]}
               for name, v, lo, hi in zip(model.parameter_names, x_tw, tr.lower, tr.upper)
               if not lo <= v <= hi}
    named = {name: float(v) for name, v in zip(model.parameter_names, x_tw)
             if not name.split(":")[1].startswith("c")}
    span = np.where(np.isfinite(tr.upper - tr.lower), tr.upper - tr.lower, 1.0)
    x0 = np.clip(x_tw, tr.lower + 1e-6 * span, tr.upper - 1e-6 * span)
    out = {"nll_ours_at_tensorwaves_end_point": float(nll(jnp.asarray(x_tw), *args)),
           "masses_widths": named, "outside_our_bounds": outside}
    t = time.perf_counter()
    try:
        r = mz.minimize(x0, optimizer=optimizer)
        out["our_fit_from_there"] = {"wall_s": time.perf_counter() - t, "nll_min": float(nll(jnp.asarray(r.x), *args)),
                                     "converged": bool(r.converged), "message": r.message,
                                     "masses_widths": {name: float(v) for name, v in zip(model.parameter_names, r.x)
                                                       if not name.split(":")[1].startswith("c")}}
    except Exception as exc:  # noqa: BLE001 - recorded
        out["our_fit_from_there"] = {"failed": repr(exc)[:300]}
    return out


def write(report) -> None:
    import jax

    report["loadavg_at_end"] = os.getloadavg()
    dev = jax.devices()[0]
    report["device"] = {"name": str(dev), "kind": getattr(dev, "device_kind", ""), "platform": dev.platform}
    out = Path(report["out"])
    doc = json.loads(out.read_text()) if out.exists() else {
        "description": "ours (pwa) vs ampform+tensorwaves (JAX backend), same events, same process; "
                       "times in seconds (median of warm calls); ratios = tensorwaves time / our time. "
                       "Produced by experiments/bench/bench_vs_tensorwaves.py."}
    key = report["key"]
    doc[key] = {k: v for k, v in report.items() if k not in ("out", "key")}
    tmp = out.with_name(out.name + ".tmp")  # whole or not at all: the file holds every earlier run
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    tmp.replace(out)
    print("wrote", out, key)


if __name__ == "__main__":
    sys.exit(main())
