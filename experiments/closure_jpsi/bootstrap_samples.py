"""Parametric bootstrap for the bias proxy: T unit-box samples drawn from each trained flow A
(train_flows.py) become the training samples of replica flows B.

    python experiments/closure_jpsi/bootstrap_samples.py A_DIR B_SAMPLES_DIR /tmp/closure_proxy/samples_fold
    python experiments/closure_jpsi/train_flows.py B_SAMPLES_DIR B_DIR --settings F0_closure_fold --samples 0,1,2,3,4,5,6,7
    python experiments/closure_jpsi/bias_proxy.py flows B_DIR --out OUT

Each B sample has as many events as A's training sample and A's pre-transform knots.
Results: experiments/results/closure_jpsi_tuning/bootstrap/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fastsim.flow import SplineFlow  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("flows_dir", type=Path, help="flows A (train_flows.py output)")
    ap.add_argument("out_dir", type=Path, help="training samples for the replicas B")
    ap.add_argument("samples_dir", type=Path, help="A's training samples (bias_proxy.py samples)")
    ap.add_argument("--seed", type=int, default=7_000)
    a = ap.parse_args()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(a.samples_dir / "knots.json", a.out_dir / "knots.json")
    for f in sorted(a.flows_dir.glob("*.pt")):
        d = torch.load(f, weights_only=False)
        flow = SplineFlow(**d["hyperparameters"])
        flow.load_state_dict(d["state"])
        flow.eval()
        n = len(np.load(a.samples_dir / f"train_{d['sample']}.npy"))
        with torch.no_grad():
            u = flow.sample_unit(n, generator=torch.Generator().manual_seed(a.seed + int(d["sample"])))
        path = a.out_dir / f"train_{d['sample']}.npy"
        np.save(path, np.clip(u.double().numpy(), 0.0, 1.0))
        print(f"{f.name}: {n} events -> {path}")


if __name__ == "__main__":
    main()
