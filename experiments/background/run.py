"""Background in an amplitude fit, checked with toys: sideband subtraction and an explicit background term.

J/psi -> gamma K+ K- with the three-resonance card of the tests (f0(980),
f2'(1525), f0(1710); fixed lineshapes, 6 free parameters), through the
default (BESIII-like) detector.

Per toy:

* signal region (SR): N_s ~ Poisson((1 - f_b) n) signal toys of the card
  (:func:`pwa.toys.iter_toys`) and N_b ~ Poisson(f_b n) background events,
  n = ``--n-data``, f_b = ``--bkg-fraction``. Poisson counts, as in data:
  the sandwich covariance of (a) is the variance of a Poisson sample; with
  a fixed total n it would overestimate the errors by the term
  n f_b^2 <g>_bkg <g>_bkg^T of the background's mean score;
* background: detector-level flat phase-space MC reweighted (accept-reject)
  by the smooth g(m, cos theta_X, cos theta_K) =
  exp(-1.5 (m_KK - 0.99 GeV)) (1 + 0.8 cos^2 theta_X) (1 + 0.8 cos^2 theta_K),
  so its density relative to the MC is exactly B_true = g / <g>_MC;
* sideband (SB): N_sb ~ Poisson(r E[N_b]) further background events
  (r = ``--sideband-ratio``): background-like events from outside the signal
  region, kinematically fitted into it, distributed as the background under
  the signal (the assumption of sideband subtraction). Their weight is
  -s, s = E[N_b] / E[N_sb] = 1 / r (in an analysis from a fit of the
  selection variable), so that every weighted sum subtracts the background
  on average.

Fits of each toy (started at the truth; a floating f_b at 0.25):

* ``signal_only``: the toy's signal events alone (the reference pulls);
* ``ignored``: the SR events, background ignored (biased);
* ``sideband``: (a) SR events weight +1 and SB events weight -s, sandwich
  errors H^-1 C H^-1 (also recorded: the pulls with the plain inverse-Hessian
  errors, which are wrong for weighted data);
* ``term_bkg_mc``: (b) the background term with f_b floating, B estimated
  once by the classifier density ratio (:func:`pwa.background.fit_density_ratio`)
  from an independent background-MC sample of ``--n-bkg-mc`` events;
* ``term_bkg_mc_fixed``: the same with f_b fixed at its expected value;
* ``term_sideband``: (b) with f_b floating, B estimated per toy from that
  toy's sideband events (the same information as (a)), the classifier
  trained on ``--sideband-training-mc`` of the MC events;
* ``term_true_density``: (b) with the exact B_true (separates the method from
  the density estimate).

Pulls (fitted - truth) / error of the three fit fractions (truth: the card's
fractions, 120-panel quadrature) and of f_b. Writes results.json and
README.md to ``--out``:

    nohup nice .venv/bin/python experiments/background/run.py > experiments/results/background/run.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fastsim.events import (JPSI_GAMMA_KK, Detector, Events, conventional_mc, load_detector_card,  # noqa: E402
                            write_text_atomic)
from pwa import FitConfig, Model, fit  # noqa: E402
from pwa.background import BackgroundModel, fit_density_ratio, sideband_subtraction  # noqa: E402
from pwa.fractions import generator_cache  # noqa: E402
from pwa.optimize import dumps, propagate  # noqa: E402
from pwa.problem import FitProblem, effective_size  # noqa: E402
from pwa.sharding import pad_cache  # noqa: E402
from pwa.toys import estimate_mass_envelope, iter_toys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from _shared import SMALL_CARD  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

#: The three-resonance card of the CLI tests.
CARD = SMALL_CARD

METHODS = ("signal_only", "ignored", "sideband", "term_bkg_mc", "term_bkg_mc_fixed", "term_sideband",
           "term_true_density")
LABELS = {
    "signal_only": "signal events only (reference)",
    "ignored": "background ignored",
    "sideband": "(a) sideband subtraction, sandwich errors",
    "sideband_naive": "(a) sideband subtraction, plain inverse-Hessian errors",
    "term_bkg_mc": "(b) background term, B from background MC, f_b floating",
    "term_bkg_mc_fixed": "(b) background term, B from background MC, f_b fixed",
    "term_sideband": "(b) background term, B from the toy's sideband, f_b floating",
    "term_true_density": "(b) background term, exact B, f_b floating",
}


def background_weight(events: Events) -> np.ndarray:
    """g(m, cos theta_X, cos theta_K) of the injected background (module docstring)."""
    hv = events.helicity_variables
    return np.exp(-1.5 * (hv[:, 0] - 0.99)) * (1.0 + 0.8 * hv[:, 1] ** 2) * (1.0 + 0.8 * hv[:, 3] ** 2)


def background_pool(n: int, detector: Detector, seed: int) -> Events:
    """At least n detector-level background events: flat MC kept with probability g / max g."""
    rng = np.random.default_rng(seed)
    parts, total, chunk = [], 0, 0
    while total < n:
        mc = conventional_mc(200_000, detector, reaction=JPSI_GAMMA_KK, seed=seed + 1 + chunk)
        g = background_weight(mc)
        kept = mc.subset(rng.uniform(size=len(mc)) < g / 4.0)  # max g = 1.8^2 = 3.24 < 4 at m >= 0.99
        parts.append(kept)
        total += len(kept)
        chunk += 1
    return Events.concatenate(parts)


def problem_for(model: Model, data: Events, mc_cache, gen_cache, n_mc: int, pad_to: int,
                background: BackgroundModel | None = None) -> FitProblem:
    """A FitProblem of ``data`` whose data cache is padded (zero weights) to ``pad_to`` events, so that
    one compiled minimiser serves every toy; the statistics are those of the unpadded data."""
    cache = jax.tree_util.tree_map(jnp.asarray, pad_cache(model.precompute(data), pad_to))
    w = data.weight_array
    return FitProblem(model, cache, mc_cache, gen_cache, len(data), n_mc, float(w.sum()), bool(np.any(w != 1.0)),
                      effective_size(w), background)


def summary(values: np.ndarray) -> dict:
    """Mean and width of pulls with their standard errors."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    k = len(v)
    if k < 2:
        return {"n": k}
    sd = float(np.std(v, ddof=1))
    return {"n": k, "mean": float(v.mean()), "mean_error": sd / np.sqrt(k), "width": sd,
            "width_error": sd / np.sqrt(2.0 * (k - 1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=50)
    ap.add_argument("--n-data", type=int, default=3000, help="signal-region events per toy")
    ap.add_argument("--bkg-fraction", type=float, default=0.2)
    ap.add_argument("--sideband-ratio", type=float, default=2.0, help="E[N_sideband] / E[N_background in SR]")
    ap.add_argument("--n-mc", type=int, default=50_000)
    ap.add_argument("--n-bkg-mc", type=int, default=20_000)
    ap.add_argument("--sideband-training-mc", type=int, default=15_000,
                    help="MC events that train the per-toy sideband classifier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "background")
    ap.add_argument("--readme-only", action="store_true", help="rewrite README.md from an existing results.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.readme_only:
        out = json.loads((args.out / "results.json").read_text())
        write_text_atomic(args.out / "README.md", readme(out, list(out["true_fractions"])))
        return
    t_start = time.perf_counter()
    timing: dict[str, float] = {}

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    model = Model.from_card(CARD)
    detector = Detector(load_detector_card("default"))
    truth = model.initial_values()
    n, fb = args.n_data, args.bkg_fraction
    expected_b = fb * n
    expected_sb = args.sideband_ratio * expected_b
    scale = expected_b / expected_sb
    rng = np.random.default_rng(args.seed)

    t = time.perf_counter()
    gen_cache = generator_cache(model, quadrature_panels=120)
    true_fractions = np.diag(np.asarray(model.fit_fractions(jnp.asarray(truth), gen_cache)))
    mc = conventional_mc(args.n_mc, detector, reaction=JPSI_GAMMA_KK, seed=args.seed + 100)
    mc_cache = model.precompute(mc, normalisation_matrix=True)
    n_signal_pool = int(args.toys * n * (1 - fb) * 1.05 + 6 * np.sqrt(args.toys * n)) + 500
    envelope = estimate_mass_envelope(model, truth, seed=args.seed + 200)
    signal_pool = Events.concatenate(list(iter_toys(model, n_signal_pool, detector, seed=args.seed + 300,
                                                    envelope=envelope)))
    n_bkg_needed = int(args.toys * (expected_b + expected_sb) * 1.15) + args.n_bkg_mc + 2000
    bkg_pool = background_pool(n_bkg_needed, detector, seed=args.seed + 400)
    bkg_mc = bkg_pool.subset(slice(0, args.n_bkg_mc))
    timing["samples_s"] = time.perf_counter() - t
    log(f"samples: {len(signal_pool)} signal, {len(bkg_pool)} background, {len(mc)} MC events; "
        f"true fractions {np.round(100 * true_fractions, 2).tolist()} %")

    # Exact density ratio, normalised on the fit's MC like the estimates.
    g_mc_mean = float(background_weight(mc).mean())

    t = time.perf_counter()
    ratio_mc = fit_density_ratio(mc, bkg_mc, method="classifier", seed=args.seed)
    timing["density_bkg_mc_s"] = time.perf_counter() - t
    independent = conventional_mc(50_000, detector, reaction=JPSI_GAMMA_KK, seed=args.seed + 500)
    density_quality = {"bkg_mc": {"raw_mc_mean": ratio_mc.info["raw_mc_mean"],
                                  "mean_on_independent_mc": float(ratio_mc(independent).mean()),
                                  "iterations": ratio_mc.info["iterations"],
                                  "training_s": timing["density_bkg_mc_s"]}}
    log(f"background-MC density ratio: raw MC mean {ratio_mc.info['raw_mc_mean']:.4f}, mean on an independent "
        f"MC {density_quality['bkg_mc']['mean_on_independent_mc']:.4f} ({timing['density_bkg_mc_s']:.1f} s)")

    config = FitConfig()
    minimizers: dict[str, object] = {}
    records: dict[str, list[dict]] = {m: [] for m in METHODS}
    records["sideband_naive"] = []
    density_rows: list[dict] = []
    fit_time = {m: 0.0 for m in METHODS}
    used_b = 0
    used_s = 0
    pad_sr = n + int(6 * np.sqrt(n)) + 1  # Poisson counts padded to one length: one compile per method
    pad_sb = pad_sr + int(expected_sb + 6 * np.sqrt(expected_sb)) + 1

    def run(method: str, problem: FitProblem, x0: np.ndarray) -> dict:
        t0 = time.perf_counter()
        if method not in minimizers:
            minimizers[method] = problem.minimizer(config)
        res = fit(model, None, None, config, problem=problem, x0=x0, minimizer=minimizers[method])
        fit_time[method] += time.perf_counter() - t0
        F, dF = np.diag(res.fractions), np.diag(res.fraction_errors)
        rec = {"converged": bool(res.converged), "fractions": F.tolist(), "errors": dF.tolist(),
               "pulls": ((F - true_fractions) / dF).tolist()}
        if problem.floating_background:
            value, error = res.parameter("background_fraction")
            rec.update(background_fraction=value, background_fraction_error=error,
                       background_fraction_pull=(value - fb) / error)
        if method == "sideband":
            # The plain inverse Hessian of the weighted NLL, for comparison with the sandwich.
            mz = minimizers[method]
            H = np.asarray(mz.hessian(jnp.asarray(res.values)))
            _, Fcov, _ = propagate(lambda p: model.fit_fractions(p, gen_cache), res.values, np.linalg.inv(H))
            k = len(F)
            dF_naive = np.sqrt(np.diag(Fcov).reshape(k, k).diagonal())
            records["sideband_naive"].append({"converged": bool(res.converged), "fractions": F.tolist(),
                                              "errors": dF_naive.tolist(),
                                              "pulls": ((F - true_fractions) / dF_naive).tolist()})
        return rec

    for toy in range(args.toys):
        n_s, n_b = int(rng.poisson(n - expected_b)), int(rng.poisson(expected_b))
        n_sb = int(rng.poisson(expected_sb))
        signal = signal_pool.subset(slice(used_s, used_s + n_s))
        used_s += n_s
        background = bkg_pool.subset(slice(args.n_bkg_mc + used_b, args.n_bkg_mc + used_b + n_b))
        used_b += n_b
        sideband = bkg_pool.subset(slice(args.n_bkg_mc + used_b, args.n_bkg_mc + used_b + n_sb))
        used_b += n_sb
        if used_s > len(signal_pool) or args.n_bkg_mc + used_b > len(bkg_pool):
            raise RuntimeError("the event pools are exhausted: raise their sizes")
        data = Events.concatenate([signal, background])
        x_bkg = np.append(truth, 0.25)

        records["signal_only"].append(run("signal_only", problem_for(model, signal, mc_cache, gen_cache, len(mc),
                                                                     pad_sr), truth))
        records["ignored"].append(run("ignored", problem_for(model, data, mc_cache, gen_cache, len(mc), pad_sr),
                                      truth))
        subtracted = sideband_subtraction(data, sideband, scale)
        records["sideband"].append(run("sideband", problem_for(model, subtracted, mc_cache, gen_cache, len(mc),
                                                               pad_sb), truth))

        b_true = background_weight(data) / g_mc_mean
        b_mc = ratio_mc(data)
        t0 = time.perf_counter()
        ratio_sb = fit_density_ratio(mc, sideband, method="classifier", seed=args.seed + toy,
                                     max_training_mc=args.sideband_training_mc)
        t_sb = time.perf_counter() - t0
        b_sb = ratio_sb(data)
        for label, b in (("bkg_mc", b_mc), ("sideband", b_sb)):
            density_rows.append({"toy": toy, "estimate": label,
                                 "relative_rms_vs_true": float(np.sqrt(np.mean((b / b_true - 1.0) ** 2))),
                                 "correlation_with_true": float(np.corrcoef(b, b_true)[0, 1])})
        density_rows[-1]["raw_mc_mean"] = ratio_sb.info["raw_mc_mean"]
        density_rows[-1]["training_s"] = t_sb

        def term(density, floating):
            # Padded with ones like the data cache (zero weights there), so that the shapes stay fixed.
            padded = np.concatenate([density, np.ones(pad_sr - len(density))])
            bm = BackgroundModel(padded, 0.25 if floating else fb, floating)
            return problem_for(model, data, mc_cache, gen_cache, len(mc), pad_sr, background=bm)

        records["term_bkg_mc"].append(run("term_bkg_mc", term(b_mc, True), x_bkg))
        records["term_bkg_mc_fixed"].append(run("term_bkg_mc_fixed", term(b_mc, False), truth))
        records["term_sideband"].append(run("term_sideband", term(b_sb, True), x_bkg))
        records["term_true_density"].append(run("term_true_density", term(b_true, True), x_bkg))
        r = {m: records[m][-1] for m in METHODS}
        log(f"toy {toy + 1}/{args.toys}: N_s = {n_s}, N_b = {n_b}, N_sb = {n_sb}; F(f0(1710)) truth "
            f"{100 * true_fractions[2]:.1f}: " + ", ".join(f"{m} {100 * r[m]['fractions'][2]:.1f}" for m in METHODS)
            + f"; f_b {r['term_bkg_mc']['background_fraction']:.3f}; sideband classifier {t_sb:.1f} s")

    names = list(model.resonance_names)
    table = {}
    for method, recs in records.items():
        pulls = np.array([r["pulls"] for r in recs])
        fr = np.array([r["fractions"] for r in recs])
        err = np.array([r["errors"] for r in recs])
        row = {"label": LABELS[method], "converged": int(sum(r["converged"] for r in recs)), "n": len(recs),
               "fractions": {}}
        for i, name in enumerate(names):
            row["fractions"][name] = {"pull": summary(pulls[:, i]),
                                      "bias_percent": float(100 * (fr[:, i].mean() - true_fractions[i])),
                                      "bias_error_percent": float(100 * fr[:, i].std(ddof=1) / np.sqrt(len(fr))),
                                      "mean_error_percent": float(100 * err[:, i].mean()),
                                      "spread_percent": float(100 * fr[:, i].std(ddof=1))}
        if recs and "background_fraction_pull" in recs[0]:
            row["background_fraction"] = {
                "pull": summary([r["background_fraction_pull"] for r in recs]),
                "mean": float(np.mean([r["background_fraction"] for r in recs])),
                "mean_error": float(np.mean([r["background_fraction_error"] for r in recs])),
                "spread": float(np.std([r["background_fraction"] for r in recs], ddof=1))}
        table[method] = row
    dens = {}
    for label in ("bkg_mc", "sideband"):
        rows = [d for d in density_rows if d["estimate"] == label]
        dens[label] = {"relative_rms_vs_true": float(np.mean([d["relative_rms_vs_true"] for d in rows])),
                       "correlation_with_true": float(np.mean([d["correlation_with_true"] for d in rows]))}
    density_quality["bkg_mc"].update(dens["bkg_mc"])
    density_quality["sideband"] = {**dens["sideband"],
                                   "raw_mc_mean": float(np.mean([d["raw_mc_mean"] for d in density_rows
                                                                 if "raw_mc_mean" in d])),
                                   "training_s_per_toy": float(np.mean([d["training_s"] for d in density_rows
                                                                        if "training_s" in d]))}
    timing.update({f"fits_{m}_s": v for m, v in fit_time.items()})
    timing["total_s"] = time.perf_counter() - t_start
    out = {"config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                      "card": CARD, "sideband_weight": -scale, "detector": "default",
                      "background": "flat MC x exp(-1.5 (m - 0.99)) (1 + 0.8 cos^2 theta_X) (1 + 0.8 cos^2 theta_K)",
                      "density_method": "classifier (HistGradientBoosting, 2-fold cross-fitted)"},
           "true_fractions": dict(zip(names, true_fractions.tolist())),
           "summary": table, "density_quality": density_quality, "timing": timing,
           "toys": records, "density_per_toy": density_rows}
    write_text_atomic(args.out / "results.json", dumps(out))
    write_text_atomic(args.out / "README.md", readme(out, names))
    log(f"done: {args.out}")


def readme(out: dict, names: list[str]) -> str:
    cfg, s, dq, tm = out["config"], out["summary"], out["density_quality"], out["timing"]
    truth = out["true_fractions"]
    lines = [
        "# Background: sideband subtraction and an explicit background term, checked with toys",
        "",
        f"`experiments/background/run.py` (see its docstring): J/psi -> gamma K+ K-, the three-resonance test card "
        f"(6 free parameters), default detector; {cfg['toys']} toys of {cfg['n_data']} expected signal-region "
        f"events with a background fraction f_b = {cfg['bkg_fraction']} (N_s, N_b Poisson), background = "
        f"{cfg['background']}; "
        f"sideband {cfg['sideband_ratio']:g} x E[N_b] events (Poisson) with weight {cfg['sideband_weight']:g}; "
        f"normalisation MC {cfg['n_mc']} events; background MC for (b) {cfg['n_bkg_mc']} events; the per-toy "
        f"sideband classifier trains on {cfg['sideband_training_mc']} of the MC events. "
        f"Truth: " + ", ".join(f"F({k}) = {100 * v:.2f} %" for k, v in truth.items()) + ".",
        "",
        "Pulls (fitted - truth) / error of the fit fractions: mean +- its error, width +- its error "
        "(a correct fit: 0 and 1). Bias: mean fitted - truth in percentage points (+- error of the mean); "
        "error: mean reported error; spread: standard deviation of the fitted values over toys.",
        "",
        "| method | conv. | " + " | ".join(f"{n} pull mean | {n} pull width | {n} bias (pp) | {n} error / spread (pp)"
                                        for n in names) + " |",
        "|---|---|" + "---|---|---|---|" * len(names),
    ]
    for method, row in s.items():
        cells = [row["label"], f"{row['converged']}/{row['n']}"]
        for n in names:
            f = row["fractions"][n]
            p = f["pull"]
            cells += [f"{p['mean']:+.2f} +- {p['mean_error']:.2f}", f"{p['width']:.2f} +- {p['width_error']:.2f}",
                      f"{f['bias_percent']:+.2f} +- {f['bias_error_percent']:.2f}",
                      f"{f['mean_error_percent']:.2f} / {f['spread_percent']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Background fraction f_b (truth " + f"{cfg['bkg_fraction']}" + "), where it floats:", "",
              "| method | mean | pull mean | pull width | mean error | spread |", "|---|---|---|---|---|---|"]
    for method, row in s.items():
        if "background_fraction" in row:
            b = row["background_fraction"]
            p = b["pull"]
            lines.append(f"| {row['label']} | {b['mean']:.4f} | {p['mean']:+.2f} +- {p['mean_error']:.2f} | "
                         f"{p['width']:.2f} +- {p['width_error']:.2f} | {b['mean_error']:.4f} | {b['spread']:.4f} |")
    lines += ["", "## Reading", ""] + reading(out, names)
    lines += [
        "",
        "Density ratio B = p_bkg / p_mc (classifier, `pwa.background.fit_density_ratio`), against the exact "
        "g / <g>_MC on the data events (means over toys):",
        "",
        "| background sample | events | relative RMS of B / B_true - 1 | correlation | raw MC mean | training |",
        "|---|---|---|---|---|---|",
        f"| background MC | {cfg['n_bkg_mc']} | {dq['bkg_mc']['relative_rms_vs_true']:.3f} | "
        f"{dq['bkg_mc']['correlation_with_true']:.3f} | {dq['bkg_mc']['raw_mc_mean']:.4f} "
        f"(independent MC: {dq['bkg_mc']['mean_on_independent_mc']:.4f}) | {dq['bkg_mc']['training_s']:.1f} s |",
        f"| the toy's sideband | ~{cfg['sideband_ratio'] * cfg['bkg_fraction'] * cfg['n_data']:.0f} | "
        f"{dq['sideband']['relative_rms_vs_true']:.3f} | {dq['sideband']['correlation_with_true']:.3f} | "
        f"{dq['sideband']['raw_mc_mean']:.4f} | {dq['sideband']['training_s_per_toy']:.1f} s per toy |",
        "",
        f"Run time {tm['total_s'] / 60:.1f} min on 2 CPU cores (samples {tm['samples_s']:.0f} s; fits: "
        + ", ".join(f"{k[5:-2]} {v:.0f} s" for k, v in tm.items() if k.startswith("fits_")) + ").",
        "",
    ]
    return "\n".join(lines)


def reading(out: dict, names: list[str]) -> list[str]:
    """The findings, with the numbers of this run."""
    s = out["summary"]

    def pulls(method: str) -> str:
        return ", ".join(f"{n} {s[method]['fractions'][n]['pull']['mean']:+.2f}" for n in names)

    def widths(method: str) -> str:
        return ", ".join(f"{s[method]['fractions'][n]['pull']['width']:.2f}" for n in names)

    def bias(method: str) -> str:
        return ", ".join(f"{n} {s[method]['fractions'][n]['bias_percent']:+.1f} pp" for n in names)

    cfg = out["config"]
    n_sideband = cfg["sideband_ratio"] * cfg["bkg_fraction"] * cfg["n_data"]
    lines = [
        f"* Reference: the signal events alone give pull means {pulls('signal_only')} and widths "
        f"{widths('signal_only')}. The normalisation MC is one sample shared by all toys and methods, so its "
        "fluctuation is a common offset: compare every method with this row.",
        f"* Background ignored: biased, {bias('ignored')} (pull means {pulls('ignored')}).",
        f"* (a) Sideband subtraction with the sandwich covariance: pull means {pulls('sideband')}, widths "
        f"{widths('sideband')}. With the plain inverse Hessian of the weighted NLL the widths are "
        f"{widths('sideband_naive')}: those errors are too small for signed weights. The subtraction costs "
        "precision: its errors are above those of the background term (the sideband events' scores add to C).",
        f"* (b) Background term, B from the background MC, f_b floating: pull means {pulls('term_bkg_mc')}, widths "
        f"{widths('term_bkg_mc')}; f_b pull {s['term_bkg_mc']['background_fraction']['pull']['mean']:+.2f} "
        f"(width {s['term_bkg_mc']['background_fraction']['pull']['width']:.2f}). With the exact B: f_b pull "
        f"{s['term_true_density']['background_fraction']['pull']['mean']:+.2f}, fraction pulls "
        f"{pulls('term_true_density')}: the likelihood is unbiased; what remains with the estimated B comes from "
        "the estimate's errors (most likely: an event whose B is underestimated looks less like background, "
        "so f_b comes out low; the signal fractions hardly move).",
        f"* (b) with B from the toy's own ~{n_sideband:.0f} sideband events: fraction pulls "
        f"{pulls('term_sideband')}, f_b pull {s['term_sideband']['background_fraction']['pull']['mean']:+.2f}: a "
        "classifier trained on so few events is a poorer estimate (larger relative RMS and a raw MC mean below "
        "1, see below), and f_b is biased low. Use a larger background sample, or sideband subtraction, when "
        "only a small sideband is available.",
    ]
    return lines


if __name__ == "__main__":
    main()
