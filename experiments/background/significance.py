"""Likelihood-ratio statistics with background, checked with toys: significance, AIC and BIC.

Null-hypothesis toys: the data are the three-resonance card of
``experiments/background/run.py`` (f0(980), f2'(1525), f0(1710)) plus
background, through the default detector, with the same Poisson counts,
background shape and sideband as there. Each toy is fitted twice: with the
true model (H0) and with an extra f0(1500) (BW, m = 1.506 GeV, Gamma = 0.112
GeV, spin 0) whose true coupling is zero (H1: one more complex coupling,
k = 2 parameters). Without a boundary in the Cartesian coupling, Wilks says
2 Delta NLL = 2 (NLL_H0 - NLL_H1) follows chi2(2): mean 2, 5 % of the toys
above 5.99. Information criteria choose H1 wrongly when 2 Delta NLL > 2 k
(AIC: 13.5 % of the toys for chi2(2)) or > k ln N (BIC).

Three ways of treating the background (as in ``run.py``):

* ``signal_only``: the toy's signal events alone (the reference);
* ``sideband``: sideband subtraction, weights +1 and -s: the weighted NLL is
  not a likelihood. The statistic is reported raw, scaled by sum w / sum w^2
  (:func:`pwa.problem.likelihood_scale`, the first-order correction), and
  calibrated by the sandwich (:mod:`pwa.weighted_stats`, what
  ``pwa.fit.significances`` does for weighted data): the chi2(2) equivalent
  of its p-value under sum lambda_i chi2_1;
* ``term``: the explicit background term with the exact density and f_b
  floating: a true likelihood, so no correction is needed.

H1 is fitted from H0's minimum with the new coupling at magnitude 0.3 and
phases 0 and pi (the smaller NLL is kept). Writes ``significance.json`` and
``significance.md`` to ``--out``:

    nice .venv/bin/python experiments/background/significance.py --toys 100
"""

from __future__ import annotations

import argparse
import sys
import time
from copy import deepcopy
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CARD, background_pool, background_weight, problem_for  # noqa: E402

from fastsim.events import JPSI_GAMMA_KK, Detector, Events, conventional_mc, load_detector_card  # noqa: E402
from fastsim.events import write_text_atomic  # noqa: E402
from pwa import FitConfig, Model, fit  # noqa: E402
from pwa.background import BackgroundModel, sideband_subtraction  # noqa: E402
from pwa.fractions import generator_cache  # noqa: E402
from pwa.optimize import dumps  # noqa: E402
from pwa.problem import effective_size, likelihood_scale  # noqa: E402
from pwa.weighted_stats import information_ratio_eigenvalues, weighted_lr_pvalue  # noqa: E402
from pwa.toys import estimate_mass_envelope, iter_toys  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXTRA = {"name": "f0(1500)", "spin": 0, "lineshape": {"type": "BW", "mass": 1.506, "width": 0.112},
         "couplings": {0: [0.3, 0.0]}}
KINDS = ("signal_only", "sideband", "term")
LABELS = {"signal_only": "signal events only (reference)",
          "sideband_raw": "(a) sideband subtraction, raw weighted 2 Delta NLL",
          "sideband": "(a) sideband subtraction, 2 Delta NLL x sum w / sum w^2",
          "sideband_calibrated": "(a) sideband subtraction, sandwich-calibrated (chi2_2 equivalent; last column: "
                                 "mean lambda)",
          "term": "(b) background term, exact B, f_b floating"}
K_EXTRA = 2


def h1_start(h0: Model, h1: Model, x_h0: np.ndarray, phase: float, extra: tuple[float, ...]) -> np.ndarray:
    """H1's start: H0's fitted values by name, the new coupling at (0.3, phase); ``extra`` appended
    (a floating f_b)."""
    values = dict(zip(h0.parameter_names, x_h0[: h0.n_free]))
    start = dict(zip(h1.parameter_names, h1.initial_values()))
    start[f"{EXTRA['name']}:c0.phase"] = phase
    x = np.array([values.get(n, start[n]) for n in h1.parameter_names])
    return np.append(x, extra)


def rates(t: np.ndarray, n_eff: np.ndarray) -> dict:
    """What a chi2(2) statistic should give, and what the toys gave."""
    t = np.asarray(t, dtype=np.float64)
    bic_cut = K_EXTRA * np.log(n_eff)
    ks = stats.kstest(np.clip(t, 0.0, None), stats.chi2(K_EXTRA).cdf)
    k = len(t)
    p95 = float(np.mean(t > stats.chi2.ppf(0.95, K_EXTRA)))
    p_aic = float(np.mean(t > 2 * K_EXTRA))
    return {"n": k, "mean": float(t.mean()), "mean_error": float(t.std(ddof=1) / np.sqrt(k)),
            "above_95": p95, "above_95_error": float(np.sqrt(0.05 * 0.95 / k)),
            "aic_prefers_h1": p_aic, "aic_expected": float(stats.chi2.sf(2 * K_EXTRA, K_EXTRA)),
            "bic_prefers_h1": float(np.mean(t > bic_cut)),
            "bic_expected": float(np.mean(stats.chi2.sf(bic_cut, K_EXTRA))),
            "ks_pvalue": float(ks.pvalue), "negative": int(np.sum(t < -1e-3))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=100)
    ap.add_argument("--n-data", type=int, default=3000, help="signal-region events per toy")
    ap.add_argument("--bkg-fraction", type=float, default=0.2)
    ap.add_argument("--sideband-ratio", type=float, default=2.0, help="E[N_sideband] / E[N_background in SR]")
    ap.add_argument("--n-mc", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "background")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    h0 = Model.from_card(CARD)
    card1 = deepcopy(CARD)
    card1["resonances"].append(EXTRA)
    h1 = Model.from_card(card1)
    detector = Detector(load_detector_card("default"))
    truth = h0.initial_values()
    n, fb = args.n_data, args.bkg_fraction
    expected_b, expected_sb = fb * n, args.sideband_ratio * fb * n
    scale = expected_b / expected_sb
    rng = np.random.default_rng(args.seed)

    mc = conventional_mc(args.n_mc, detector, reaction=JPSI_GAMMA_KK, seed=args.seed + 100)
    caches = {m: (m.precompute(mc, normalisation_matrix=True), generator_cache(m, quadrature_panels=40))
              for m in (h0, h1)}
    n_pool = int(args.toys * n * (1 - fb) * 1.05 + 6 * np.sqrt(args.toys * n)) + 500
    signal_pool = Events.concatenate(list(iter_toys(h0, n_pool, detector, seed=args.seed + 300,
                                                    envelope=estimate_mass_envelope(h0, truth,
                                                                                    seed=args.seed + 200))))
    bkg_pool = background_pool(int(args.toys * (expected_b + expected_sb) * 1.15) + 2000, detector,
                               seed=args.seed + 400)
    g_mc_mean = float(background_weight(mc).mean())
    extra_index = [i for i, name in enumerate(h1.parameter_names) if name.startswith(f"{EXTRA['name']}:")]
    log(f"samples: {len(signal_pool)} signal, {len(bkg_pool)} background, {len(mc)} MC events")

    config = FitConfig()
    minimizers: dict[tuple[str, int], object] = {}
    pad_sr = n + int(6 * np.sqrt(n)) + 1
    pad_sb = pad_sr + int(expected_sb + 6 * np.sqrt(expected_sb)) + 1
    records: dict[str, list[dict]] = {k: [] for k in KINDS}

    def minimum(kind: str, model: Model, data: Events, pad: int, density, starts):
        mc_cache, gen = caches[model]
        bm = None
        if density is not None:
            bm = BackgroundModel(np.concatenate([density, np.ones(pad - len(density))]), 0.25, True)
        problem = problem_for(model, data, mc_cache, gen, len(mc), pad, background=bm)
        key = (kind, model.n_free)
        if key not in minimizers:
            minimizers[key] = problem.minimizer(config)
        best = None
        for x0 in starts:
            res = fit(model, None, None, config, problem=problem, x0=x0, minimizer=minimizers[key])
            if best is None or res.nll < best.nll:
                best = res
        return best.nll, best.values, bool(best.converged), problem

    used_s = used_b = 0
    for toy in range(args.toys):
        n_s, n_b, n_sb = int(rng.poisson(n - expected_b)), int(rng.poisson(expected_b)), int(rng.poisson(expected_sb))
        signal = signal_pool.subset(slice(used_s, used_s + n_s))
        background = bkg_pool.subset(slice(used_b, used_b + n_b))
        sideband = bkg_pool.subset(slice(used_b + n_b, used_b + n_b + n_sb))
        used_s, used_b = used_s + n_s, used_b + n_b + n_sb
        if used_s > len(signal_pool) or used_b > len(bkg_pool):
            raise RuntimeError("the event pools are exhausted: raise their sizes")
        data = Events.concatenate([signal, background])
        sets = {"signal_only": (signal, pad_sr, None, ()),
                "sideband": (sideband_subtraction(data, sideband, scale), pad_sb, None, ()),
                "term": (data, pad_sr, background_weight(data) / g_mc_mean, (0.25,))}
        line = []
        for kind, (events, pad, density, extra) in sets.items():
            nll0, x0, ok0, _ = minimum(kind, h0, events, pad, density, [np.append(truth, extra)])
            fb_fit = tuple(x0[h0.n_free:])
            nll1, x1, ok1, problem1 = minimum(kind, h1, events, pad, density,
                                              [h1_start(h0, h1, x0, phase, fb_fit) for phase in (0.0, np.pi)])
            w = events.weight_array
            rec = {"delta_nll": float(nll0 - nll1), "likelihood_scale": likelihood_scale(w),
                   "effective_events": effective_size(w), "converged": ok0 and ok1}
            if kind == "sideband":  # the sandwich-calibrated test of pwa.fit.significances
                lam = information_ratio_eigenvalues(problem1, x1, extra_index)
                p = weighted_lr_pvalue(2.0 * rec["delta_nll"], lam)
                rec.update(eigenvalues=lam.tolist(), calibrated_statistic=float(stats.chi2.isf(p, K_EXTRA)))
            records[kind].append(rec)
            line.append(f"{kind} {2 * rec['delta_nll'] * rec['likelihood_scale']:.2f}")
        log(f"toy {toy + 1}/{args.toys}: 2 Delta NLL (scaled) " + ", ".join(line))

    summary = {}
    ok = [r for r in records["sideband"] if r["converged"]]
    summary["sideband_calibrated"] = {
        "label": LABELS["sideband_calibrated"], "converged": len(ok),
        **rates(np.array([r["calibrated_statistic"] for r in ok]), np.array([r["effective_events"] for r in ok])),
        "mean_likelihood_scale": float(np.mean([np.mean(r["eigenvalues"]) for r in ok]))}
    for kind, recs in records.items():
        ok = [r for r in recs if r["converged"]]
        t = np.array([2 * r["delta_nll"] for r in ok])
        s = np.array([r["likelihood_scale"] for r in ok])
        n_eff = np.array([r["effective_events"] for r in ok])
        summary[kind] = {"label": LABELS[kind], "converged": len(ok), **rates(t * s, n_eff),
                         "mean_likelihood_scale": float(s.mean())}
        if kind == "sideband":
            summary["sideband_raw"] = {"label": LABELS["sideband_raw"], "converged": len(ok),
                                       **rates(t, np.array([r["effective_events"] for r in ok])),
                                       "mean_likelihood_scale": 1.0}
    out = {"config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                      "h0": CARD, "extra": EXTRA, "sideband_weight": -scale, "k": K_EXTRA},
           "summary": summary, "toys": records, "run_time_s": time.perf_counter() - t_start}
    write_text_atomic(args.out / "significance.json", dumps(out))
    write_text_atomic(args.out / "significance.md", readme(out))
    log(f"done: {args.out / 'significance.md'}")


def readme(out: dict) -> str:
    """significance.md from the results."""
    c = out["config"]
    rows = ["| method | toys | mean 2 Delta NLL (chi2(2): 2) | above 5.99 (5 %) | AIC prefers H1 "
            "(expected) | BIC prefers H1 (expected) | KS p-value vs chi2(2) | mean sum w / sum w^2 |",
            "|---|---|---|---|---|---|---|---|"]
    for key in ("signal_only", "sideband_raw", "sideband", "sideband_calibrated", "term"):
        s = out["summary"][key]
        rows.append(f"| {s['label']} | {s['converged']}/{c['toys']} | {s['mean']:.2f} +- {s['mean_error']:.2f} | "
                    f"{100 * s['above_95']:.1f} +- {100 * s['above_95_error']:.1f} % | "
                    f"{100 * s['aic_prefers_h1']:.1f} % ({100 * s['aic_expected']:.1f} %) | "
                    f"{100 * s['bic_prefers_h1']:.1f} % ({100 * s['bic_expected']:.2f} %) | "
                    f"{s['ks_pvalue']:.3f} | {s['mean_likelihood_scale']:.3f} |")
    return "\n".join([
        "# Significance, AIC and BIC with background: null-hypothesis toys",
        "",
        f"`python experiments/background/significance.py --toys {c['toys']} --seed {c['seed']}` "
        f"({out['run_time_s'] / 60:.1f} min on 2 CPU cores; see its docstring). J/psi -> gamma K+ K-, "
        f"default detector; {c['n_data']} expected signal-region events per toy with f_b = {c['bkg_fraction']}, "
        f"sideband {c['sideband_ratio']} x E[N_b] events with weight {c['sideband_weight']:.2f}; MC "
        f"{c['n_mc']} events. H0: the true three-resonance model; H1: H0 + f0(1500) (k = 2), whose true "
        "coupling is zero.",
        "",
        *rows,
        "",
        "Reading: " + reading(out["summary"]),
        "",
    ])


def reading(summary: dict) -> str:
    def row(key: str) -> str:
        r = summary[key]
        return (f"mean {r['mean']:.2f} +- {r['mean_error']:.2f}, {100 * r['above_95']:.0f} % above the 5 % "
                f"threshold")

    return (f"for a true likelihood (signal only: {row('signal_only')}; the background term: {row('term')}) "
            f"2 Delta NLL follows chi2(2). The raw weighted statistic of sideband subtraction does not "
            f"({row('sideband_raw')}), nor does it once scaled by sum w / sum w^2 ({row('sideband')}): the "
            "first-order scale assumes C = H sum w^2 / sum w, which the subtraction breaks, and significances "
            "would come out too large. Referred to sum lambda_i chi2_1 with the sandwich's eigenvalues "
            f"(mean lambda {summary['sideband_calibrated']['mean_likelihood_scale']:.2f}, against "
            f"1 / s = {1 / summary['sideband']['mean_likelihood_scale']:.2f}), as pwa.fit.significances does "
            f"for weighted data, it is right again ({row('sideband_calibrated')}). AIC's rate of choosing the "
            "superfluous state follows the statistic it is given; BIC's penalty k ln N is large enough for all.")


if __name__ == "__main__":
    main()
