"""Paired comparison of two closure runs made with the same seed (issue 6).

Toy k of both runs has the same data, small MC and reference MC, so the
difference of a normalisation choice's shift between the runs, toy by toy,
measures what changed in that choice (here: the flow) without the toys' data
and small-MC noise. Prints, for every fit fraction and SF, the mean shift
(X - reference) / error_reference of each run's choice, and the mean paired
difference, each ± the error of the mean.

    python experiments/closure_jpsi/compare_runs.py experiments/results/closure_jpsi_plain \
        experiments/results/closure_jpsi [--choice flow] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _fractions(fit: dict) -> np.ndarray:
    return np.concatenate([np.asarray(fit["fractions"]), [fit["sf"]]])


def _errors(fit: dict) -> np.ndarray:
    return np.concatenate([np.asarray(fit["fraction_errors"]), [fit["sf_error"]]])


def shifts(run: Path, choice: str) -> dict[int, np.ndarray]:
    """{toy: (n_res + 1,) shift of ``choice`` against the reference fit, in reference errors}."""
    out = {}
    for f in sorted((run / "toys").glob("toy_*.json")):
        rec = json.loads(f.read_text())
        fits = rec["fits"]
        if choice in fits:
            ref = fits["reference"]
            out[rec["toy"]] = (_fractions(fits[choice]) - _fractions(ref)) / _errors(ref)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--choice", default="flow", help="normalisation choice (flow, flow_bc, flow_rw, small)")
    ap.add_argument("--choice-b", default=None, help="choice of run B (default: --choice)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    sa, sb = shifts(a.run_a, a.choice), shifts(a.run_b, a.choice_b or a.choice)
    toys = sorted(set(sa) & set(sb))
    if not toys:
        raise SystemExit(f"no common toys with choice {a.choice!r} in {a.run_a} and {a.run_b}")
    names = json.loads((a.run_a / "metrics.json").read_text())["quantities"]
    names = [n for n in names if n.startswith("F(") or n == "SF"]
    A = np.array([sa[t] for t in toys])
    B = np.array([sb[t] for t in toys])
    n = len(toys)

    def ms(x):
        return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(n)

    rows = {}
    print(f"{n} common toys; shift of {a.choice!r} against the reference, in reference sigma")
    print(f"{'':14s} {'A: ' + a.run_a.name:>22s} {'B: ' + a.run_b.name:>22s} {'B - A (paired)':>22s}")
    if len(names) != A.shape[1]:
        raise SystemExit(f"{a.run_a}/metrics.json names {len(names)} fractions, the toys have {A.shape[1]}")
    for i, name in enumerate(names):
        (ma, ea), (mb, eb), (md, ed) = ms(A[:, i]), ms(B[:, i]), ms(B[:, i] - A[:, i])
        print(f"{name:14s} {ma:+10.2f} ± {ea:4.2f}      {mb:+10.2f} ± {eb:4.2f}      {md:+10.2f} ± {ed:4.2f}")
        rows[name] = {"a": [ma, ea], "b": [mb, eb], "b_minus_a": [md, ed],
                      "rms_a": float(A[:, i].std(ddof=1)), "rms_b": float(B[:, i].std(ddof=1))}
    if a.json:
        a.json.write_text(json.dumps({"run_a": str(a.run_a), "run_b": str(a.run_b), "choice": a.choice,
                                      "toys": toys, "quantities": rows}, indent=1))


if __name__ == "__main__":
    main()
