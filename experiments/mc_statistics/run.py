"""How much normalisation MC does R0 need? The MC's own statistical error on its fit fractions.

One toy data set of the seed's reaction psi(2S) -> phi K+ K- K+ K- (models/r0.yaml,
generator level: ``Detector(None)``) is fitted twice, with a normalisation sample of
50,000 and of 2,000,000 generator-level events (flat phase space with the
Breit-Wigner proposal for the narrow phi, weights flat / proposal, as
``fastsim generate --model`` does). For each fit the data (Hessian) errors and the
analytic MC-statistics errors of :func:`pwa.mc_statistics.mc_statistics_of_fit` are
reported; the 50k prediction is checked against the spread of refits of the same
data with independent 50k samples, and its 1/sqrt(M) extrapolation against the 2M
result. The fraction integrals use an independent 1M-event generator-level sample
(``generator_cache``, seed 0; the normalisation samples use other seeds).

    .venv/bin/python experiments/mc_statistics/run.py [--data 20000] [--replicas 20]

Writes experiments/results/mc_statistics/{mc_statistics.json, mc_statistics.md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "experiments" / "results" / "mc_statistics"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--card", default=str(ROOT / "models" / "r0.yaml"))
    ap.add_argument("--data", type=int, default=20_000, help="toy data events")
    ap.add_argument("--small", type=int, default=50_000, help="events of the small normalisation sample")
    ap.add_argument("--large", type=int, default=2_000_000, help="events of the large normalisation sample")
    ap.add_argument("--replicas", type=int, default=20, help="refits with independent small samples")
    ap.add_argument("--gen-events", type=int, default=1_000_000, help="events of the fraction integrals")
    ap.add_argument("--chunk", type=int, default=100_000, help="events per precomputed chunk")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from fastsim.events import Detector, Events, iter_conventional_mc
    from pwa.amplitude import Model
    from pwa.fit import fit
    from pwa.fit_result import FitConfig
    from pwa.fractions import generator_cache, integration_proposals
    from pwa.mc_statistics import mc_statistics_of_fit
    from pwa.normalisation import normalisation_cache
    from pwa.optimize import dumps
    from pwa.problem import FitProblem
    from pwa.toys import iter_toys

    clock = time.perf_counter
    timings: dict[str, float] = {}
    t_all = clock()
    model = Model.from_card(args.card)
    proposals = integration_proposals(model)
    det = Detector(None)
    config = FitConfig()

    def log(msg: str) -> None:
        print(f"[{clock() - t_all:7.1f} s] {msg}", flush=True)

    t = clock()
    data = Events.concatenate(list(iter_toys(model, args.data, det, seed=1)))
    timings["toy_data"] = clock() - t
    log(f"{len(data)} toy events")
    t = clock()
    gen_cache = generator_cache(model, n_events=args.gen_events, seed=0)
    timings["fraction_integrals"] = clock() - t
    t = clock()
    data_cache = model.precompute(data)
    timings["data_cache"] = clock() - t
    log("fraction integrals and data cache")

    def normalisation_sample(n: int, seed: int) -> Events:
        return Events.concatenate(list(iter_conventional_mc(n, det, reaction=model.reaction, seed=seed,
                                                            chunk_size=args.chunk, proposals=proposals)))

    def chunks(events: Events):
        for start in range(0, len(events), args.chunk):
            yield events.subset(slice(start, start + args.chunk))

    minimizer = None

    def fit_with(mc: Events, label: str):
        nonlocal minimizer
        t = clock()
        mc_cache, n_mc = normalisation_cache(model, chunks(mc))
        t_norm = clock() - t
        problem = FitProblem(model, data_cache, mc_cache, gen_cache, len(data), n_mc, float(len(data)), False,
                             float(len(data)))
        minimizer = minimizer or problem.minimizer(config)  # NormalisationCache: shapes independent of M
        t = clock()
        result = fit(model, None, None, config, problem=problem, minimizer=minimizer)
        t_fit = clock() - t
        t = clock()
        stats = mc_statistics_of_fit(problem, result, mc=chunks(mc))
        t_stats = clock() - t
        status = "converged" if result.converged else "NOT converged"
        log(f"{label}: normalisation {t_norm:.1f} s, fit {t_fit:.1f} s ({status}), MC statistics {t_stats:.1f} s")
        return result, stats, {"normalisation_s": t_norm, "fit_s": t_fit, "mc_statistics_s": t_stats}

    t = clock()
    small_mc = normalisation_sample(args.small, seed=11)
    timings["generate_small"] = clock() - t
    small, small_stats, timings["small"] = fit_with(small_mc, f"M = {args.small}")
    del small_mc
    t = clock()
    large_mc = normalisation_sample(args.large, seed=12)
    timings["generate_large"] = clock() - t
    log(f"{len(large_mc)} large-sample events generated")
    large, large_stats, timings["large"] = fit_with(large_mc, f"M = {args.large}")
    del large_mc

    replica_fractions, replica_values, replica_pred = [], [], []
    t = clock()
    for r in range(args.replicas):
        res, st, _ = fit_with(normalisation_sample(args.small, seed=100 + r), f"replica {r}")
        replica_fractions.append(np.diag(res.fractions))
        replica_values.append(res.values)
        replica_pred.append(np.diag(st.fraction_errors))
    timings["replicas"] = clock() - t

    names = list(model.resonance_names)
    extrapolated = small_stats.scaled_to(args.large)
    rows = []
    for i, name in enumerate(names):
        rows.append({
            "fraction": name, "value": large.fractions[i, i], "data_error": large.fraction_errors[i, i],
            "mc_error_small": small_stats.fraction_errors[i, i], "mc_error_large": large_stats.fraction_errors[i, i],
            "mc_error_large_from_small": extrapolated.fraction_errors[i, i],
            "ratio_small": small_stats.fraction_errors[i, i] / large.fraction_errors[i, i],
            "ratio_large": large_stats.fraction_errors[i, i] / large.fraction_errors[i, i],
            "value_small_fit": small.fractions[i, i], "data_error_small_fit": small.fraction_errors[i, i]})
    rows.append({"fraction": "SF", "value": large.sum_of_fractions, "data_error": large.sum_of_fractions_error,
                 "mc_error_small": small_stats.sum_of_fractions_error,
                 "mc_error_large": large_stats.sum_of_fractions_error,
                 "mc_error_large_from_small": extrapolated.sum_of_fractions_error,
                 "ratio_small": small_stats.sum_of_fractions_error / large.sum_of_fractions_error,
                 "ratio_large": large_stats.sum_of_fractions_error / large.sum_of_fractions_error,
                 "value_small_fit": small.sum_of_fractions, "data_error_small_fit": small.sum_of_fractions_error})
    replica = None
    if args.replicas >= 2:
        F = np.array(replica_fractions)
        spread = F.std(axis=0, ddof=1)
        predicted = np.mean(replica_pred, axis=0)
        replica = {"replicas": args.replicas, "events": args.small,
                   "fractions": {name: {"spread": spread[i], "mean_predicted": predicted[i],
                                        "ratio": spread[i] / predicted[i]} for i, name in enumerate(names)},
                   "relative_precision_of_a_spread": 1.0 / np.sqrt(2 * (args.replicas - 1))}
    timings["total"] = clock() - t_all
    record = {
        "card": str(Path(args.card).relative_to(ROOT)) if Path(args.card).is_relative_to(ROOT) else args.card,
        "n_data": len(data), "detector": "none (generator level)", "proposals": proposals,
        "fraction_integrals": {"events": args.gen_events, "seed": 0},
        "normalisation": {"small": {"events": args.small, "seed": 11}, "large": {"events": args.large, "seed": 12}},
        "fits": {"small": {"converged": small.converged, "nll": small.nll, "wall_s": small.wall_time},
                 "large": {"converged": large.converged, "nll": large.nll, "wall_s": large.wall_time}},
        "mc_statistics_small": small_stats.to_dict(), "mc_statistics_large": large_stats.to_dict(),
        "data_errors_large_fit": {name: e for name, e in zip(large.parameter_names, large.errors)},
        "table": rows, "replica_check": replica, "timings_s": timings,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mc_statistics.json").write_text(dumps(record))
    (out / "mc_statistics.md").write_text(markdown(record, small_stats, large_stats, args))
    log(f"wrote {out}")


def markdown(record: dict, small, large, args) -> str:
    ks = f"{args.small // 1000}k"
    kl = f"{args.large / 1e6:g}M" if args.large >= 1e6 else f"{args.large // 1000}k"
    lines = [
        "# The normalisation sample's statistical error on R0's fit fractions", "",
        f"Toy data: {record['n_data']} generator-level events of `{record['card']}` (psi(2S) -> phi K+ K- K+ K-), "
        f"fitted from the card's values with normalisation samples of {args.small} and {args.large} "
        "generator-level events (flat phase space, Breit-Wigner proposal for the phi, weights flat / proposal). "
        f"Fractions integrate over an independent {args.gen_events}-event generator-level sample.", "",
        "Data error: inverse Hessian (of the fit with the large sample). MC stat.: "
        "`pwa.mc_statistics` (delta method, V_MC = H^-1 C H^-1, C = W^2 sum v^2 d d^T / (sum v I)^2, "
        "d_j = grad I_j - I_j grad ln N), each fit's own estimate. Total error = sqrt(data^2 + MC^2).", "",
        f"Effective sizes: {ks}: (sum v)^2 / sum v^2 = {small.effective_mc_events:.0f}, (sum vI)^2 / sum (vI)^2 = "
        f"{small.effective_normalisation_events:.0f}; {kl}: {large.effective_mc_events:.0f} and "
        f"{large.effective_normalisation_events:.0f}. (The Kish size of the weights alone is tiny: the Breit-Wigner "
        "proposal's far tails carry huge weights where the phi's intensity vanishes.)", "",
        f"| Fraction | F (%) | data error (%) | MC stat. {ks} (%) | MC stat. {kl} (%) "
        f"| {kl} from {ks} by 1/sqrt(M) (%) | MC/data {ks} | MC/data {kl} |",
        "|---|---|---|---|---|---|---|---|"]
    for r in record["table"]:
        lines.append(f"| {r['fraction']} | {100 * r['value']:.2f} | {100 * r['data_error']:.2f} | "
                     f"{100 * r['mc_error_small']:.3f} | {100 * r['mc_error_large']:.3f} | "
                     f"{100 * r['mc_error_large_from_small']:.3f} | {r['ratio_small']:.2f} | {r['ratio_large']:.3f} |")
    lines.append("")
    rep = record["replica_check"]
    if rep:
        lines += [f"Check of the {ks} prediction: spread of the fractions over {rep['replicas']} refits of the same "
                  f"data with independent {ks} samples, against the mean predicted MC error (a spread of "
                  f"{rep['replicas']} values is itself uncertain by about "
                  f"{100 * rep['relative_precision_of_a_spread']:.0f} %):", "",
                  "| Fraction | spread (%) | predicted (%) | ratio |", "|---|---|---|---|"]
        lines += [f"| {name} | {100 * v['spread']:.3f} | {100 * v['mean_predicted']:.3f} | {v['ratio']:.2f} |"
                  for name, v in rep["fractions"].items()]
        lines.append("")
    t = record["timings_s"]
    lines += [f"Runtimes ({record['machine']['cpus']} CPUs): toy data {t['toy_data']:.0f} s, fraction integrals "
              f"{t['fraction_integrals']:.0f} s; {ks}: normalisation {t['small']['normalisation_s']:.1f} s, fit "
              f"{t['small']['fit_s']:.1f} s, MC statistics {t['small']['mc_statistics_s']:.1f} s; {kl}: generation "
              f"{t['generate_large']:.0f} s, normalisation {t['large']['normalisation_s']:.0f} s, fit "
              f"{t['large']['fit_s']:.1f} s, MC statistics {t['large']['mc_statistics_s']:.0f} s; replicas "
              f"{t['replicas']:.0f} s; total {t['total']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
