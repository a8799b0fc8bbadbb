"""Reproduce seed Tables 2, 3 and 4 (PHYSICS.md section 5) with our toy data.

* data: 20,000 toy events of models/jpsi_gamma_kk.yaml through the default (BESIII-like)
  detector (``pwa.toys.iter_toys``, mass-envelope proposal);
* normalisation: 400,000 conventional MC events (flat phase space through the
  same detector, an independent seed);
* Table 2: R0 fitted with the plain NLL;
* Table 3: R0 fitted with NLL~, SF_target = 1.20, lambda = 1e-2;
* Table 4: models/jpsi_gamma_kk_plus4.yaml (R0 + four spurious states) fitted to the
  same data with NLL~, SF_target = 1.15, lambda = 1e2.

Writes experiments/results/seed_table{2,3,4}.md and seed_tables.json
(atomically). Run from the repository root:

    nice python experiments/seed_tables/run.py --n-data 20000 --n-mc 400000 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from fastsim.events import Detector, Events, conventional_mc, load_detector_card, write_text_atomic, JPSI_GAMMA_KK  # noqa: E402
from pwa import Model, fit_fractions_quadrature  # noqa: E402
from pwa.fit import fit  # noqa: E402
from pwa.fit_result import FitConfig, FitResult  # noqa: E402
from pwa.problem import FitProblem  # noqa: E402
from pwa.optimize import dumps  # noqa: E402
from pwa.toys import iter_toys  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"

#: Seed Table 1: generated truth (fit fractions in %).
TABLE1 = {"f0(980)": 39.5, "f2(2340)": 37.1, "f2'(1525)": 24.7, "f0(1710)": 8.30,
          "f2(1270)": 3.16, "f2(2150)": 2.22}
TABLE1_SF = 115.0
#: Seed Table 2: plain NLL fit (value, error) in %.
TABLE2 = {"f0(980)": (39.2, 1.5), "f2(2340)": (37.5, 1.6), "f2'(1525)": (23.5, 1.0),
          "f0(1710)": (8.66, 0.93), "f2(1270)": (2.68, 0.57), "f2(2150)": (2.52, 0.63)}
TABLE2_SF = 114.0
SPURIOUS = ("f2(2010)", "f0(1500)", "f0(1370)", "f2(1640)")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(x: float) -> float:
    return 100.0 * float(x)


def fit_summary(res: FitResult) -> dict:
    """The numbers a table needs, in %."""
    return {
        "fractions": {n: {"value": pct(res.fraction(n)[0]), "error": pct(res.fraction(n)[1])}
                      for n in res.resonance_names},
        "sum_of_fractions": {"value": pct(res.sum_of_fractions), "error": pct(res.sum_of_fractions_error)},
        "nll": res.nll, "objective": res.objective, "converged": res.converged, "edm": res.edm,
        "hessian_positive_definite": res.positive_definite, "wall_time_s": res.wall_time,
        "message": res.message, "optimizer": res.optimizer,
        "n_at_limit": int(np.sum(res.at_limit)) if res.at_limit.size else 0,
        "distinct_minima": [{"nll": f, "converged": c} for f, c in res.minima],
    }


def table_md(title: str, notes: list[str], res: FitResult, truth_card: dict[str, float],
             seed_col: dict[str, str], seed_sf: str, extra_rows: list[tuple[str, str, str]]) -> str:
    s = fit_summary(res)
    lines = [f"# {title}", ""] + notes + [""]
    lines.append("| resonance | ours F (%) | seed F (%) | truth: seed Table 1 (%) | truth: card, quadrature (%) "
                 "| (ours - card) / error |")
    lines.append("|---|---|---|---|---|---|")
    for n in res.resonance_names:
        v, e = s["fractions"][n]["value"], s["fractions"][n]["error"]
        t1 = TABLE1.get(n, 0.0)
        tc = truth_card.get(n, 0.0)
        pull = (v - tc) / e if e > 0 else float("nan")
        lines.append(f"| {n} | {v:.2f} ± {e:.2f} | {seed_col.get(n, '—')} | {t1:.2f} | {tc:.3f} | {pull:+.2f} |")
    sf = s["sum_of_fractions"]
    tc_sf = sum(truth_card.values())
    lines.append(f"| **SF** | {sf['value']:.1f} ± {sf['error']:.1f} | {seed_sf} | {TABLE1_SF:.1f} | {tc_sf:.2f} "
                 f"| {(sf['value'] - tc_sf) / sf['error']:+.2f} |" if sf["error"] > 0 else "")
    lines += ["", "| fit | value |", "|---|---|"]
    lines.append(f"| NLL | {res.nll:.3f} |")
    lines.append(f"| objective (NLL~) | {res.objective:.3f} |")
    lines.append(f"| converged | {res.converged} (EDM {res.edm:.2e}; {res.message}) |")
    lines.append(f"| Hessian positive definite | {res.positive_definite} |")
    lines.append(f"| parameters at a limit | {s['n_at_limit']} |")
    lines.append(f"| optimizer | {res.optimizer}, starts = {res.config.starts} |")
    lines.append(f"| fit time | {res.wall_time:.1f} s |")
    if len(res.minima) > 1:
        lines.append("| distinct minima (NLL) | " + ", ".join(f"{f:.3f}" for f, _ in res.minima) + " |")
    for row in extra_rows:
        lines.append(f"| {row[0]} | {row[1]} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-data", type=int, default=20_000)
    ap.add_argument("--n-mc", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=1, help="toy data seed; the MC uses seed + 1000")
    ap.add_argument("--starts-t4", type=int, default=1, help="starts of the Table 4 fit")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    r0 = Model.from_card(ROOT / "models" / "jpsi_gamma_kk.yaml")
    r0p4 = Model.from_card(ROOT / "models" / "jpsi_gamma_kk_plus4.yaml")
    detector = Detector(load_detector_card("default"))
    truth_card = {n: pct(v) for n, v in fit_fractions_quadrature(r0).fractions.items()}
    log(f"truth of models/jpsi_gamma_kk.yaml (quadrature): " + ", ".join(f"{n} {v:.3f}" for n, v in truth_card.items()))
    timings: dict[str, float] = {}

    t = time.perf_counter()
    stats: dict = {}
    parts = []
    for chunk in iter_toys(r0, args.n_data, detector, seed=args.seed, stats=stats):
        parts.append(chunk)
        log(f"toys: {stats['n_accepted']}/{args.n_data} accepted ({stats['n_proposed']} proposed)")
    data = Events.concatenate(parts)
    timings["toys_s"] = time.perf_counter() - t
    log(f"toy data: {len(data)} events in {timings['toys_s']:.1f} s")

    t = time.perf_counter()
    mc = conventional_mc(args.n_mc, detector, reaction=JPSI_GAMMA_KK, seed=args.seed + 1000)
    timings["mc_s"] = time.perf_counter() - t
    log(f"conventional MC: {len(mc)} events in {timings['mc_s']:.1f} s")

    t = time.perf_counter()
    problem = FitProblem.build(r0, data, mc)
    timings["precompute_r0_s"] = time.perf_counter() - t
    log(f"R0 caches built in {timings['precompute_r0_s']:.1f} s")

    results: dict[str, FitResult] = {}
    configs = {
        "table2": (r0, FitConfig(), problem),
        "table3": (r0, FitConfig(sf_target=1.2, sf_lambda=1e-2), problem),
        "table4": (r0p4, FitConfig(sf_target=1.15, sf_lambda=1e2, starts=args.starts_t4), None),
    }
    for key, (model, config, prob) in configs.items():
        log(f"{key}: fitting {model.card.source} ({model.n_free} free parameters), "
            f"sf_lambda={config.sf_lambda}, sf_target={config.sf_target}, starts={config.starts}")
        t = time.perf_counter()
        if prob is None:
            prob = FitProblem.build(model, data, mc)
            timings[f"precompute_{key}_s"] = time.perf_counter() - t
        res = fit(model, data, mc, config, problem=prob)
        timings[f"{key}_total_s"] = time.perf_counter() - t
        results[key] = res
        log(f"{key}: done in {timings[f'{key}_total_s']:.1f} s (fit {res.wall_time:.1f} s), "
            f"converged={res.converged}, NLL={res.nll:.3f}, SF={pct(res.sum_of_fractions):.2f}")
        print(res, flush=True)

    setup = [f"Toy data: {len(data)} events of models/jpsi_gamma_kk.yaml (seed {args.seed}), default detector; "
             f"normalisation: {len(mc)} conventional MC events (seed {args.seed + 1000}). "
             f"Produced by `experiments/seed_tables/run.py`; one toy, so ours scatter around the truth by "
             "about one error, as the seed's do."]
    seed2 = {n: f"{v:.2f} ± {e:.2f}" for n, (v, e) in TABLE2.items()}
    md2 = table_md("Seed Table 2: fit of R0 with the plain NLL",
                   setup, results["table2"], truth_card, seed2, f"{TABLE2_SF:.1f}", [])
    seed3 = {n: "errors ≈ Table 2" for n in TABLE1}
    md3 = table_md("Seed Table 3: fit of R0 with NLL~ (SF_target = 1.20, lambda = 1e-2)",
                   setup + ["", "The seed gives no numbers for this table, only that the errors are nearly "
                            "identical to Table 2. Ratio of our errors, Table 3 / Table 2: " + ", ".join(
                                f"{n} {results['table3'].fraction(n)[1] / results['table2'].fraction(n)[1]:.3f}"
                                for n in r0.resonance_names) + "."],
                   results["table3"], truth_card, seed3, "—", [])
    seed4 = {n: "kept" for n in TABLE1} | {n: "< 0.4" for n in SPURIOUS}
    r4 = results["table4"]
    spur = {n: pct(r4.fraction(n)[0]) for n in SPURIOUS}
    verdict = (f"all four spurious fractions below 0.4 %: {all(v < 0.4 for v in spur.values())} "
               f"(largest {max(spur.values()):.3f} %)")
    md4 = table_md("Seed Table 4: R0 + four spurious states with NLL~ (SF_target = 1.15, lambda = 1e2)",
                   setup + ["", "Truth of the four spurious states is 0 (they are not in the generated model). "
                            "The seed gives only that each spurious fraction falls below 0.4 % while the six "
                            "true states are kept."],
                   r4, truth_card, seed4, "—", [("spurious states", verdict)])
    out = {
        "setup": {"n_data": len(data), "n_mc": len(mc), "seed": args.seed, "mc_seed": args.seed + 1000,
                  "detector": detector.name, "toy_stats": stats},
        "timings_s": timings,
        "truth": {"seed_table1": TABLE1, "seed_table1_sf": TABLE1_SF, "card_quadrature": truth_card,
                  "card_quadrature_sf": sum(truth_card.values())},
        "seed": {"table2": {n: {"value": v, "error": e} for n, (v, e) in TABLE2.items()},
                 "table2_sf": TABLE2_SF, "table4_spurious_below": 0.4},
        "ours": {k: fit_summary(r) for k, r in results.items()},
        "ours_full": {k: r.to_dict() for k, r in results.items()},
    }
    write_text_atomic(args.out / "seed_table2.md", md2)
    write_text_atomic(args.out / "seed_table3.md", md3)
    write_text_atomic(args.out / "seed_table4.md", md4)
    write_text_atomic(args.out / "seed_tables.json", dumps(out))
    log(f"wrote {args.out}/seed_table2.md, seed_table3.md, seed_table4.md, seed_tables.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
