"""Recovery of the generated truth for every shipped card, through the default detector.

For each card: ``--toys`` toy data sets of ``--n-data`` events generated from
the card's intensity and passed through the BESIII-like detector, one
conventional MC sample of ``--n-mc`` events (flat phase space through the same
detector; weighted with a Breit-Wigner proposal for a narrow resonance such as
the phi, as ``fastsim generate --model`` writes it), fits started 0.3 rad and 20 % away from the truth. Reported per
card: the pulls (fit - truth) / error of every free parameter and of every fit
fraction (truth: the card's generator-level fractions from 2,000,000 events),
their mean and RMS over toys (a good fit gives mean 0 and RMS 1), and the fit
time. Writes ``experiments/results/recovery/<card>.json`` and ``summary.md``:

    nice python experiments/recovery/run.py [--cards r0.yaml d0_kpipi0.yaml ...] [--toys 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from fastsim.events import Detector, Events, conventional_mc, load_detector_card, write_text_atomic  # noqa: E402
from pwa import FitConfig, Model, fit, fit_fractions_mc  # noqa: E402
from pwa.fractions import integration_proposals  # noqa: E402
from pwa.toys import iter_toys  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CARDS = ("jpsi_gamma_kk.yaml", "r0.yaml", "d0_kpipi0.yaml", "jpsi_gamma_pi0pi0.yaml")


def start_values(model: Model) -> np.ndarray:
    x0 = model.initial_values().copy()
    phase = np.array([n.endswith(".phase") for n in model.parameter_names])
    x0[phase] += 0.3
    x0[~phase] *= 1.2
    return x0


def run_card(name: str, args) -> dict:
    truth = Model.from_card(ROOT / "models" / name)
    detector = Detector(load_detector_card(args.detector))
    t0 = time.perf_counter()
    true_f = fit_fractions_mc(truth, n_mc=2_000_000, seed=args.seed)
    # weighted (Breit-Wigner proposal) where the card has a narrow resonance, as fastsim generate --model does:
    # flat events put too few events under the 4-MeV phi for the normalisation integral
    proposals = integration_proposals(truth) or None
    mc = conventional_mc(args.n_mc, detector, reaction=truth.reaction, seed=args.seed + 1, proposals=proposals)
    setup = time.perf_counter() - t0
    phase = np.array([n.endswith(".phase") for n in truth.parameter_names])
    param_pulls, fraction_pulls, times, converged = [], [], [], []
    for toy in range(args.toys):
        if args.fresh_mc and toy:
            mc = conventional_mc(args.n_mc, detector, reaction=truth.reaction, seed=args.seed + 1000 + toy,
                                 proposals=proposals)
        data = Events.concatenate(list(iter_toys(truth, args.n_data, detector, seed=args.seed + 100 + toy)))
        t1 = time.perf_counter()
        result = fit(truth, data, mc, FitConfig(seed=toy), x0=start_values(truth))
        times.append(time.perf_counter() - t1)
        converged.append(bool(result.converged))
        delta = result.values - truth.initial_values()
        delta[phase] = np.angle(np.exp(1j * delta[phase]))
        # a parameter at its limit (a magnitude at 0) has no error: no pull
        param_pulls.append(np.where(result.errors > 0, delta / np.where(result.errors > 0, result.errors, 1.0),
                                    np.nan))
        fraction_pulls.append((np.diag(result.fractions) - np.diag(true_f.matrix)) / np.diag(result.fraction_errors))
        print(f"{name} toy {toy}: converged {result.converged}, fit {times[-1]:.1f} s, fraction pulls "
              f"{np.round(fraction_pulls[-1], 2).tolist()}", flush=True)
    pp, fp = np.asarray(param_pulls), np.asarray(fraction_pulls)
    return {"card": name, "reaction": str(truth.reaction), "n_toys": args.toys, "n_data": args.n_data,
            "n_mc": args.n_mc, "fresh_mc": bool(args.fresh_mc), "weighted_mc": bool(proposals),
            "detector": args.detector, "n_free": truth.n_free, "setup_s": setup, "fit_s": times, "converged": converged,
            "parameters": truth.parameter_names, "parameter_pulls": pp.tolist(),
            "parameter_pull_mean": np.nanmean(pp, axis=0).tolist(),
            "parameter_pull_rms": np.sqrt(np.nanmean(pp**2, axis=0)).tolist(),
            "parameters_at_limit": int(np.sum(~np.isfinite(pp))),
            "resonances": truth.resonance_names, "true_fractions": np.diag(true_f.matrix).tolist(),
            "fraction_pulls": fp.tolist(), "fraction_pull_mean": fp.mean(axis=0).tolist(),
            "fraction_pull_rms": np.sqrt((fp**2).mean(axis=0)).tolist()}


def summary(rows: list[dict]) -> str:
    lines = ["# Recovery of the generated truth (experiments/recovery/run.py)", ""]
    for r in rows:
        lines += [f"## {r['card']}: {r['reaction']}", "",
                  f"{r['n_toys']} toys of {r['n_data']} events through the detector {r.get('detector', 'default')}, {r['n_mc']} "
                  f"conventional MC ({'a new sample per toy' if r.get('fresh_mc') else 'one sample for all toys'}"
                  f"{', weighted' if r.get('weighted_mc') else ''}), {r['n_free']} free parameters; converged {sum(r['converged'])}/{r['n_toys']}; "
                  f"median fit {np.median(r['fit_s']):.1f} s.", "",
                  "| fraction | truth (%) | pull mean | pull RMS |", "|---|---|---|---|"]
        lines += [f"| {n} | {100 * t:.2f} | {m:+.2f} | {s:.2f} |" for n, t, m, s in
                  zip(r["resonances"], r["true_fractions"], r["fraction_pull_mean"], r["fraction_pull_rms"])]
        pp = np.asarray(r["parameter_pulls"], dtype=float)
        pp = np.where(np.isfinite(pp), pp, np.nan)
        pm, ps = np.nanmean(pp, axis=0), np.sqrt(np.nanmean(pp**2, axis=0))
        limit = int(np.sum(~np.isfinite(pp)))
        lines += ["", f"Free parameters: pull mean in [{np.nanmin(pm):+.2f}, {np.nanmax(pm):+.2f}], RMS in "
                  f"[{np.nanmin(ps):.2f}, {np.nanmax(ps):.2f}] (mean RMS {np.nanmean(ps):.2f})"
                  + (f"; {limit} fitted values at a limit (no error, no pull)" if limit else "") + ".", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cards", nargs="+", default=list(CARDS))
    ap.add_argument("--toys", type=int, default=5)
    ap.add_argument("--n-data", type=int, default=10_000)
    ap.add_argument("--n-mc", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--detector", default="default", help="detector card: a path, 'default' or 'none'")
    ap.add_argument("--fresh-mc", action="store_true",
                    help="a new MC sample for every toy (the pulls then include the MC's fluctuation, "
                         "uncorrelated between toys)")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "recovery")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.cards:
        row = run_card(name, args)
        write_text_atomic(args.out / f"{Path(name).stem}.json", json.dumps(row, indent=2) + "\n")
    # the summary covers every card run so far into this folder, in CARDS order
    done = {p.stem: json.loads(p.read_text()) for p in args.out.glob("*.json")}
    rows = [done[Path(c).stem] for c in CARDS if Path(c).stem in done]
    rows += [r for k, r in sorted(done.items()) if k not in {Path(c).stem for c in CARDS}]
    write_text_atomic(args.out / "summary.md", summary(rows) + "\n")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
