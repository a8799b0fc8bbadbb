"""Bias maps of freshly trained flows in helicity and per-particle lab variables (issue 6).

Like ``bias_map.py`` (same linearised sensitivity s_k(x) of each fit fraction
at the proxy's reference minimum), for flows trained here with the closure's
schedule on the 50k conventional samples of closure toys K (``bias_proxy.small_mc``),
binned in m, |cos theta_X|, the smaller kaon lab pT, the larger kaon lab
|cos theta| and |cos theta_1|. Each bin's contribution (flow minus a 2M
conventional sample, in reference sigma) is averaged over the flows, ± the
error of that mean over flows. Run ``bias_proxy.py prepare`` first.

    python experiments/closure_jpsi/bias_map_lab.py gates 0,1,2,3 --json out.json   # default flow (gated)
    python experiments/closure_jpsi/bias_map_lab.py plain 0,1,2,3                    # --no-gates, edge knots
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias_map import M_EDGES, Sensitivity, binned  # noqa: E402  (sets up paths and float64 JAX)
from bias_proxy import SETTINGS, Proxy, _seed, small_mc  # noqa: E402

EDGES = {"m": M_EDGES,
         "|cosX|": np.array([0, .4, .8, .86, .92, 1.0001]),
         "min pT_K": np.array([0.1, .15, .2, .3, .5, .8, 2.]),
         "max|cosK|": np.array([0, .5, .8, .88, .91, .93, 1.0001]),
         "|cos1|": np.array([0, .25, .5, .75, .9, 1.0001])}


def columns(events, reaction) -> np.ndarray:
    from fastsim.acceptance import lab_features

    hv = events.helicity_variables
    f = lab_features(hv, reaction.parent_mass, reaction.m1, reaction.m2)
    return np.stack([hv[:, 0], np.abs(hv[:, 1]), np.minimum(f[:, 1], f[:, 3]),
                     np.maximum(np.abs(f[:, 0]), np.abs(f[:, 2])), np.abs(hv[:, 3])], axis=1)


def main() -> None:
    from fastsim.coords import CoordinateMap
    from fastsim.events import Events, iter_conventional_mc
    from fastsim.generator import FastSimulator
    from fastsim.training import TrainConfig, fit, model_hyperparameters

    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=["gates", "plain"])
    ap.add_argument("samples", help="comma-separated training-sample indices")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    proxy = Proxy()
    reaction, det = proxy.model.reaction, proxy.det
    conv = Events.concatenate(list(iter_conventional_mc(2_000_000, det, reaction=reaction,
                                                        seed=_seed(SETTINGS, 0, 99))))
    sens = Sensitivity(proxy, conv)
    s_c, c_c = sens.values(conv), columns(conv, reaction)
    coords = CoordinateMap.for_reaction(reaction, fold=True)
    per_bin: dict[str, list] = {k: [] for k in EDGES}
    linear = []
    for s in (int(x) for x in a.samples.split(",")):
        train = small_mc(det, reaction, s)
        gates = a.variant == "gates"
        hp = model_hyperparameters("flow", coords, det.card, {}, edge_knots=not gates, gates=gates)
        cfg = TrainConfig(kind="flow", hyperparameters=hp, epochs=40, patience=8, batch_size=2048,
                          learning_rate=2e-3, seed=100 + s)
        model = fit(coords.to_unit(train.helicity_variables), cfg)["model"]
        ev = FastSimulator(model, coords, reaction=reaction).sample(500_000, seed=2000 + s)
        s_x, c_x = sens.values(ev), columns(ev, reaction)
        linear.append(s_x.mean(axis=1) - s_c.mean(axis=1))
        print(f"{a.variant} sample {s}: linear shift {proxy.fmt(linear[-1])}", flush=True)
        for i, (k, e) in enumerate(EDGES.items()):
            per_bin[k].append(binned(c_x, s_x, c_c, s_c, i, e)[0])
    n = len(linear)
    print(f"mean linear shift over {n} flows: {proxy.fmt(np.mean(linear, axis=0))}")
    out = {}
    for k, e in EDGES.items():
        v = np.array(per_bin[k])
        mean = v.mean(axis=0)
        err = v.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
        print(f"\n{k} bins: " + " ".join(f"{lo:.2f}-{hi:.2f}".rjust(12) for lo, hi in zip(e[:-1], e[1:])))
        for j, name in enumerate(proxy.names):
            print(f"{name:12s} " + " ".join(f"{x:+6.2f}({y:4.2f})" for x, y in zip(mean[j], err[j])))
        out[k] = {"edges": e.tolist(), "mean": mean.tolist(), "error": err.tolist()}
    if a.json:
        a.json.write_text(json.dumps({"variant": a.variant, "names": proxy.names, "linear": np.array(linear).tolist(),
                                      "bins": out}, indent=1))


if __name__ == "__main__":
    main()
