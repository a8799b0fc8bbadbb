"""Joint-fit toys: two channels sharing parameters, pulls of the shared and own parameters.

Channel A and channel B are J/psi -> gamma K+ K- samples of two models that
differ in the f2'(1525) helicity-1 and -2 couplings and share its helicity-0
coupling (magnitude and phase) and everything else of the f0(1710). Each toy
draws new data for both channels (generator level, N events each) and fits
A alone, B alone and A + B jointly (pwa.joint) with the same normalisation
MC: by default one MC for all toys, with --fresh-mc a new one per toy (seeded
from the toy's seed), for the single-channel and the joint fits alike.
Written: experiments/results/joint/README.md and results.json (with --fresh-mc
README_fresh_mc.md and results_fresh_mc.json; --tag names other suffixes).

    python experiments/joint/run.py --toys 20 --n 2000
    python experiments/joint/run.py --toys 20 --n 2000 --fresh-mc
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from _shared import TWO_STATE_CARD, flat_events, without_floats  # noqa: E402
from fastsim.events import Detector, Events  # noqa: E402
from pwa import Model  # noqa: E402
from pwa.card import parse_model_card  # noqa: E402
from pwa.fit import fit  # noqa: E402
from pwa.fit_result import FitConfig  # noqa: E402
from pwa.joint import JointProblem, fit_joint  # noqa: E402
from pwa.problem import FitProblem  # noqa: E402
from pwa.toys import iter_toys  # noqa: E402

SHARED = ("f2'(1525):c0.mag", "f2'(1525):c0.phase")


def cards() -> dict[str, dict]:
    a = without_floats(TWO_STATE_CARD)
    b = copy.deepcopy(a)
    b["resonances"][1]["couplings"] = {0: [6.0, 1.2], 1: [5.0, 1.9], 2: [1.0, 2.5]}
    return {"A": a, "B": b}


def pull(value: float, truth: float, error: float, phase: bool) -> float:
    d = float(np.angle(np.exp(1j * (value - truth)))) if phase else value - truth
    return d / error if error > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=20)
    ap.add_argument("--n", type=int, default=2000, help="events per channel and toy")
    ap.add_argument("--n-mc", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fresh-mc", action="store_true",
                    help="a new normalisation MC per toy instead of one for all toys")
    ap.add_argument("--tag", default=None,
                    help="suffix of the output files (default: none, 'fresh_mc' with --fresh-mc)")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "joint")
    args = ap.parse_args()
    tag = ("fresh_mc" if args.fresh_mc else "") if args.tag is None else args.tag
    suffix = f"_{tag}" if tag else ""
    models = {c: Model.from_card(parse_model_card(raw, source=f"<channel {c}>")) for c, raw in cards().items()}
    truth = {c: dict(zip(m.parameter_names, m.initial_values())) for c, m in models.items()}
    if not args.fresh_mc:
        mc = flat_events(args.n_mc, seed=args.seed * 1000)
    config = FitConfig()
    records = []
    t0 = time.perf_counter()
    for toy in range(args.toys):
        toy_seed = args.seed * 7919 + 2 * toy  # data of channel k: toy_seed + k
        if args.fresh_mc:  # one MC for both channels of this toy, its own stream
            mc = flat_events(args.n_mc, seed=[toy_seed, 1000])
        problems, datas = {}, {}
        for k, (c, m) in enumerate(models.items()):
            datas[c] = Events.concatenate(list(iter_toys(m, args.n, Detector(None), seed=toy_seed + k)))
            problems[c] = FitProblem.build(m, datas[c], mc)
        alone = {c: fit(models[c], datas[c], mc, config, problem=problems[c]) for c in models}
        joint = fit_joint(JointProblem.build(problems, SHARED), config)
        rec = {"toy": toy, "converged": {"A": alone["A"].converged, "B": alone["B"].converged,
                                         "joint": joint.converged}, "pulls": {}, "errors": {}}
        for name in SHARED:
            phase = name.endswith(".phase")
            i = joint.parameter_names.index(name)
            rec["pulls"][f"joint {name}"] = pull(joint.values[i], truth["A"][name], joint.errors[i], phase)
            rec["errors"][f"joint {name}"] = float(joint.errors[i])
            for c in models:
                v, e = alone[c].parameter(name)
                rec["pulls"][f"{c} alone {name}"] = pull(v, truth[c][name], e, phase)
                rec["errors"][f"{c} alone {name}"] = e
        for c, m in models.items():
            r = joint.channels[c]
            for name in m.parameter_names:
                if name in SHARED:
                    continue
                v, e = r.parameter(name)
                rec["pulls"][f"joint {c}/{name}"] = pull(v, truth[c][name], e, name.endswith(".phase"))
        records.append(rec)
        print(f"toy {toy}: converged {rec['converged']}, {time.perf_counter() - t0:.0f} s", flush=True)
    keys = list(records[0]["pulls"])
    table = ["| quantity | pull mean | pull width | mean error |", "|---|---|---|---|"]
    summary = {}
    for k in keys:
        x = np.array([r["pulls"][k] for r in records], dtype=float)
        mean, width = float(np.mean(x)), float(np.std(x, ddof=1))
        err = float(np.mean([r["errors"][k] for r in records])) if k in records[0]["errors"] else float("nan")
        summary[k] = {"pull_mean": mean, "pull_mean_error": width / np.sqrt(len(x)), "pull_width": width,
                      "mean_error": err}
        table.append(f"| {k} | {mean:+.2f} +- {width / np.sqrt(len(x)):.2f} | {width:.2f} | "
                     + ("" if np.isnan(err) else f"{err:.4f}") + " |")
    ratio = {name: {c: summary[f"joint {name}"]["mean_error"] / summary[f"{c} alone {name}"]["mean_error"]
                    for c in models} for name in SHARED}
    conv = {k: sum(r["converged"][k] for r in records) for k in ("A", "B", "joint")}
    args.out.mkdir(parents=True, exist_ok=True)
    options = (" --fresh-mc" if args.fresh_mc else "") + (f" --tag {args.tag}" if args.tag is not None else "")
    mc_text = (f"a new normalisation MC of {args.n_mc} flat events per toy (for its three fits)" if args.fresh_mc
               else f"one normalisation MC of {args.n_mc} flat events for all fits")
    text = (f"# Joint fit toys: two channels sharing the f2'(1525) helicity-0 coupling\n\n"
            f"`python experiments/joint/run.py --toys {args.toys} --n {args.n} --n-mc {args.n_mc}"
            + (f" --seed {args.seed}" if args.seed != 1 else "") + f"{options}` "
            f"({time.perf_counter() - t0:.0f} s). Generator level; {args.n} events per channel and toy; {mc_text}. "
            f"Converged: A alone {conv['A']}, B alone "
            f"{conv['B']}, joint {conv['joint']} of {args.toys}.\n\n"
            "Error of the joint fit on each shared parameter over the single-channel error (mean errors): "
            + "; ".join(f"{n}: A {ratio[n]['A']:.2f}, B {ratio[n]['B']:.2f}" for n in SHARED)
            + " (1/sqrt(2) = 0.71 for equal information).\n\n" + "\n".join(table) + "\n")
    (args.out / f"README{suffix}.md").write_text(text)
    (args.out / f"results{suffix}.json").write_text(json.dumps({"summary": summary, "ratio": ratio, "converged": conv,
                                                       "records": records}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
