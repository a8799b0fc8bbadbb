"""Check the ampform/tensorwaves baseline model against /work/shared/reference.

Builds the reference's 5-resonance model with experiments/bench/tensorwaves_baseline.py,
evaluates every single-coupling component and the total intensity on the
reference events, and prints the max relative deviations. Also checks the
coupling-convention mapping (ours -> ampform: factor (-1)**lR) by rebuilding the
total from couplings given in our convention.

Usage:  python experiments/bench/check_tensorwaves_model.py [--reference DIR] [--stable]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tensorwaves_baseline as twb  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default="/work/shared/reference")
    ap.add_argument("--stable", action="store_true", help="scalar final-state masses")
    ap.add_argument("--tol", type=float, default=1e-10)
    args = ap.parse_args()
    ref_dir = Path(args.reference)
    meta = json.loads((ref_dir / "ampform_jpsi_gamma_kk.json").read_text())
    ref = np.load(ref_dir / "ampform_jpsi_gamma_kk.npz")

    resonances = [
        {"name": name, "spin": r["spin"], "mass": r["mass"], "width": r["width"]}
        for name, r in meta["resonances"].items()
    ]
    for r in meta["resonances"].values():
        assert r["radius"] == twb.MESON_RADIUS
    t = time.perf_counter()
    model = twb.build_model(resonances, stable_final_state=args.stable)
    print(f"model built in {time.perf_counter() - t:.1f} s: {model.build_seconds}")
    data = twb.make_datasets(model, ref["p_gamma"], ref["p_kp"], ref["p_km"])

    worst = 0.0
    zero = model.zero_couplings()
    for comp in meta["components"]:
        stem, l_tag = comp[len("component_"):].rsplit("_l", 1)
        pars = dict(zero)
        pars[model.coupling_names[(stem, int(l_tag))]] = 1 + 0j
        got = model.intensity(data, pars)
        want = ref[comp]
        rel = float(np.max(np.abs(got - want) / np.abs(want)))
        worst = max(worst, rel)
        print(f"{comp:28s} max rel dev {rel:.3e}")

    # total, couplings as given (ampform convention)
    amp_conv = {
        name: {int(l): m * np.exp(1j * ph) for l, (m, ph) in r["couplings_used_for_intensity_total"].items()}
        for name, r in meta["resonances"].items()
    }
    got = model.intensity(data, model.to_parameters(amp_conv, ampform_convention=True))
    rel_total = float(np.max(np.abs(got - ref["intensity_total"]) / np.abs(ref["intensity_total"])))
    worst = max(worst, rel_total)
    print(f"{'intensity_total':28s} max rel dev {rel_total:.3e}")

    # same, through our convention: c_ours = (-1)^lR C_ampform
    ours = {n: {l: (-1) ** l * c for l, c in per.items()} for n, per in amp_conv.items()}
    got2 = model.intensity(data, model.to_parameters(ours))
    rel_ours = float(np.max(np.abs(got2 - ref["intensity_total"]) / np.abs(ref["intensity_total"])))
    print(f"{'intensity_total (ours->amp)':28s} max rel dev {rel_ours:.3e}")
    back = model.from_parameters(model.to_parameters(ours))
    assert all(abs(back[n][l] - ours[n][l]) == 0 for n in ours for l in ours[n])

    print(f"worst max rel dev {worst:.3e} (tolerance {args.tol:g}): {'OK' if worst < args.tol else 'FAIL'}")
    return 0 if worst < args.tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
