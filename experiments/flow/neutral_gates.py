"""Neutral-hadron acceptance gates: a gated and a plain flow of J/psi -> gamma pi0 pi0, side by side.

    python experiments/flow/neutral_gates.py [--n-train 200000] [--n-test 200000] [--epochs 10]
        [--work experiments/flow/work_neutral] [--out experiments/results/flow_neutral_gates]

The pi0s are reconstructed from two photons: the default detector keeps a pi0
whose direction is in the photon barrel (|cos theta| < 0.80) or end cap
(0.86-0.92), and both of whose photons pass the region's energy threshold
(fastsim/events/detector.py). Through the commands a physicist runs
(``fastsim generate --model``, ``fastsim train --gates / --no-gates``,
``fastsim validate``), on the same training sample with the same seed, this
compares the two flows on held-out MC: classifier AUC, the largest chi2/ndf
of a coordinate, and the share of sampled events with a pi0 outside the
calorimeter (in the barrel-end cap gap or beyond), against the MC's own share
(the resolution's). Writes ``summary.json`` and ``summary.md`` under --out
(atomically) and each flow's validation folder beside them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "models" / "jpsi_gamma_pi0pi0.yaml"


def fastsim(*args: str) -> float:
    """Run one fastsim command; its wall time in s."""
    exe = shutil.which("fastsim") or str(Path(sys.executable).with_name("fastsim"))
    t = time.perf_counter()
    subprocess.run([exe, *args], check=True)
    return time.perf_counter() - t


def outside_share(momenta: np.ndarray, pions: list[int], card) -> float:
    """Share of events with a pi0 outside the photon barrel and end cap in |cos theta|."""
    p = momenta[:, pions]
    cos = np.abs(p[..., 3]) / np.linalg.norm(p[..., 1:], axis=-1)
    b, e = card.photon.barrel, card.photon.endcap
    inside = (cos < b.cos_theta_max) | ((cos > e.cos_theta_min) & (cos < e.cos_theta_max))
    return float((~inside).any(axis=1).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200_000)
    ap.add_argument("--n-test", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=ROOT / "experiments" / "flow" / "work_neutral")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "flow_neutral_gates")
    args = ap.parse_args()

    from fastsim.checkpoint import load_simulator
    from fastsim.events import load_detector_card, read_events, write_text_atomic
    from pwa.card import load_model_card

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = args.work / "train.npz", args.work / "test.npz"
    timings = {}
    for path, n, seed in ((train, args.n_train, args.seed), (test, args.n_test, args.seed + 1)):
        if not path.exists():
            timings[f"generate_{path.stem}_s"] = fastsim("generate", "--model", str(CARD), "--n", str(n),
                                                         "--out", str(path), "--seed", str(seed))
    card = load_detector_card("default")
    reaction = load_model_card(CARD).reaction.to_reaction()
    reference = read_events(test, reaction)
    pions = [i for i, name in enumerate(reference.reaction.particles) if name == "pi0"]
    rows = {"mc (held out)": {"outside": outside_share(reference.momenta, pions, card)}}
    for label, flag in (("gated", "--gates"), ("plain", "--no-gates")):
        model = args.work / f"{label}.pt"
        train_s = fastsim("train", "--mc", str(train), "--out", str(model), "--model", str(CARD),
                          "--epochs", str(args.epochs), "--seed", str(args.seed), flag)
        folder = args.out / f"validation_{label}"
        fastsim("validate", "--model", str(model), "--reference", str(test), "--out", str(folder),
                "--seed", str(args.seed))
        metrics = json.loads((folder / "metrics.json").read_text())
        sim = load_simulator(model)
        samples = sim.sample(len(reference), seed=args.seed + 2)
        test_auc = metrics.get("classifier_test", {})
        rows[label] = {"train_s": train_s, "auc": test_auc.get("auc"), "auc_error": test_auc.get("auc_error"),
                       "max_chi2_ndf_coordinate": metrics.get("max_chi2_ndf_coordinate"),
                       "outside": outside_share(samples.momenta, pions, card),
                       "gates": None if sim.model.gates is None else sim.model.gates.summary()}
    summary = {"reaction": str(reference.reaction), "card": str(CARD.relative_to(ROOT)), "detector": card.name,
               "n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "seed": args.seed,
               "timings_s": timings, "flows": rows}
    write_text_atomic(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    lines = [f"# Neutral-hadron gates: {summary['reaction']}, default detector", "",
             f"Trained on {args.n_train} events for {args.epochs} epochs (seed {args.seed}); validated on "
             f"{args.n_test} held-out events. Produced by `experiments/flow/neutral_gates.py`.", "",
             "| sample | classifier AUC | max chi2/ndf of a coordinate | events with a pi0 outside the calorimeter | training s |",
             "|---|---|---|---|---|"]
    for label, r in rows.items():
        auc = "" if r.get("auc") is None else f"{r['auc']:.4f} ± {r['auc_error']:.4f}"
        chi2 = "" if r.get("max_chi2_ndf_coordinate") is None else f"{r['max_chi2_ndf_coordinate']:.2f}"
        train_s = "" if r.get("train_s") is None else f"{r['train_s']:.0f}"
        lines.append(f"| {label} | {auc} | {chi2} | {100 * r['outside']:.2f} % | {train_s} |")
    write_text_atomic(args.out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
