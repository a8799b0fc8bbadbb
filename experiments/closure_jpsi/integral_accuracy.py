"""Accuracy of a flow's normalisation integrals against conventional MC (issue 6).

The fit sees the normalisation sample only through the integrals
M_kl = <conj(G_k) G_l> (fixed lineshapes). This script evaluates, at the
card's couplings, the integral of each resonance's |A_R|^2 and of the total
|A|^2 over K independent samples of N events from the flow and from
conventional MC (phase space + detector), and reports the mean, the relative
spread between samples and the flow/conventional ratio. At N = 20,000 data
events a relative error e on a resonance's integral moves its fit fraction by
roughly e / (relative fraction error) sigma: for R0 about 0.25 % is needed to
stay below 0.2 sigma, far below what a classifier AUC resolves.

    python experiments/closure_jpsi/integral_accuracy.py [--flow models/flow_besiii_like.pt] \
        [--n 200000] [--samples 6] [--out experiments/results/closure_jpsi_tuning/integral_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastsim.events import JPSI_GAMMA_KK

ROOT = Path(__file__).resolve().parents[2]


def resonance_integrals(model, p, events) -> np.ndarray:
    """(n_res + 1,) integrals of |A_R|^2 per resonance and of |A|^2, at couplings p: the
    fit-fraction diagonal (Model.fractions_from_integrals) times the total."""
    M = model.term_integrals(p, model.precompute(events, normalisation_matrix=True))
    c = model.couplings(p)
    total = float(np.real(np.conj(c) @ M @ c))
    return np.append(np.diag(np.asarray(model.fractions_from_integrals(p, M))) * total, total)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "jpsi_gamma_kk.yaml"))
    ap.add_argument("--flow", default=str(ROOT / "models" / "flow_besiii_like.pt"))
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "closure_jpsi_tuning"
                                        / "integral_accuracy.json"))
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from fastsim.checkpoint import load_simulator
    from fastsim.events import Detector, Events, iter_conventional_mc, load_detector_card, write_text_atomic
    from pwa import Model

    model = Model.from_card(args.model)
    p = jnp.asarray(model.initial_values())
    det = Detector(load_detector_card("default"))
    sim = load_simulator(args.flow)
    conv = np.array([resonance_integrals(model, p, Events.concatenate(
        list(iter_conventional_mc(args.n, det, reaction=JPSI_GAMMA_KK, seed=100 + s)))) for s in range(args.samples)])
    flow = np.array([resonance_integrals(model, p, sim.sample(args.n, seed=200 + s))
                     for s in range(args.samples)])
    out = {"model": args.model, "flow": args.flow, "n_per_sample": args.n, "samples": args.samples,
           "quantities": {}}
    for i, name in enumerate(list(model.resonance_names) + ["total"]):
        cm, fm = conv[:, i].mean(), flow[:, i].mean()
        err = np.hypot(conv[:, i].std(ddof=1), flow[:, i].std(ddof=1)) / np.sqrt(args.samples) / cm
        out["quantities"][name] = {
            "conventional_mean": cm, "flow_mean": fm,
            "conventional_relative_spread": conv[:, i].std(ddof=1) / cm,
            "flow_relative_spread": flow[:, i].std(ddof=1) / fm,
            "flow_over_conventional_minus_1": fm / cm - 1.0, "error_of_that": err}
        q = out["quantities"][name]
        print(f"{name:12s} flow/conv - 1 = {q['flow_over_conventional_minus_1']:+.4f} +- {err:.4f}   "
              f"spread conv {q['conventional_relative_spread']:.4f} flow {q['flow_relative_spread']:.4f}")
    write_text_atomic(Path(args.out), json.dumps(out, indent=1, default=float) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
