"""Where in phase space does a normalisation sample's fit-fraction shift come from?

To first order the proxy shift of ``bias_proxy.py`` is linear in the sample:

    shift_k(X) = <s_k>_X - <s_k>_ref,
    s_k(x) = v_k . grad_p I(x; p_ref) - a_k I(x; p_ref),

with v_k = -(J H^-1)_k W / (N_ref err_k), a_k = v_k . <grad_p I>_ref / N_ref
(J: Jacobian of fraction k, H: NLL Hessian, W: data weight, N_ref: reference
mean intensity, all at the reference minimum of ``bias_proxy.py prepare``).
Histogramming s_k over the sample under test and over an independent
conventional sample of the same detector gives each bin's contribution to the
shift (in sigma of the reference fit), with its statistical error; the bins
add up to the linear shift.

    python experiments/closure_jpsi/bias_map.py FLOW.pt [--n-flow 500000] [--n-conv 2000000]
    python experiments/closure_jpsi/bias_map.py /tmp/dir/C0_closure_s0.pt ...   # train_flows.py files

Prints, per fraction, the m bins (and cos theta_X bins) that carry the shift;
``--json`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from bias_proxy import Proxy, SETTINGS, _seed  # noqa: E402

M_EDGES = np.array([0.987, 1.05, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.1])
C_EDGES = np.array([-1.0, -0.92, -0.86, -0.8, -0.4, 0.0, 0.4, 0.8, 0.86, 0.92, 1.0])


class Sensitivity:
    """Per-event s_k(x) at the reference minimum of the proxy."""

    def __init__(self, proxy: Proxy, conv_events) -> None:
        self.proxy = proxy
        model = proxy.model
        p = proxy.p
        ref = proxy.ref_cache
        n_ref = model.normalisation(p, ref)
        g_ref = jax.grad(lambda q: model.normalisation(q, ref))(p)
        W = float(proxy.n_data)
        V = -(proxy.J @ np.linalg.inv(proxy.H)) * W / (float(n_ref) * proxy.err[:, None])
        self.V = jnp.asarray(V)
        self.a = jnp.asarray(V @ np.asarray(g_ref) / float(n_ref))

        def s(cache):
            f = lambda q: model.intensity(q, cache)  # noqa: E731
            I, dI = jax.vmap(lambda v: jax.jvp(f, (p,), (v,)), out_axes=(None, 0))(self.V)
            return dI - self.a[:, None] * I[None, :]

        self._s = jax.jit(s)

    def values(self, events, chunk: int = 100_000) -> np.ndarray:
        out = []
        for i in range(0, len(events), chunk):
            part = events.subset(np.arange(i, min(i + chunk, len(events))))
            out.append(np.asarray(self._s(self.proxy.model.precompute(part))))
        return np.concatenate(out, axis=1)


def binned(hv_x, s_x, hv_c, s_c, col: int, edges) -> tuple[np.ndarray, np.ndarray]:
    """Per bin: contribution <s 1_bin>_X - <s 1_bin>_conv (k, bins) and its statistical error."""
    cx = np.clip(np.digitize(hv_x[:, col], edges) - 1, 0, len(edges) - 2)
    cc = np.clip(np.digitize(hv_c[:, col], edges) - 1, 0, len(edges) - 2)
    nb, k = len(edges) - 1, s_x.shape[0]
    val, var = np.zeros((k, nb)), np.zeros((k, nb))
    for b in range(nb):
        for s, c, sign in ((s_x, cx, 1.0), (s_c, cc, -1.0)):
            t = np.where(c == b, s, 0.0)
            n = s.shape[1]
            val[:, b] += sign * t.mean(axis=1)
            var[:, b] += t.var(axis=1) / n
    return val, np.sqrt(var)


def main() -> None:
    from fastsim import load_simulator
    from fastsim.events import Events, iter_conventional_mc

    ap = argparse.ArgumentParser()
    ap.add_argument("flows", nargs="+", type=Path)
    ap.add_argument("--n-flow", type=int, default=500_000)
    ap.add_argument("--n-conv", type=int, default=2_000_000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    proxy = Proxy()
    conv = Events.concatenate(list(iter_conventional_mc(a.n_conv, proxy.det, reaction=proxy.model.reaction,
                                                        seed=_seed(SETTINGS, 0, 99))))
    sens = Sensitivity(proxy, conv)
    s_c = sens.values(conv)
    hv_c = conv.helicity_variables
    names = proxy.names
    tot_m = tot_c = None
    var_m = var_c = None
    for i, f in enumerate(a.flows):
        ev = _flow_events(f, proxy, a.n_flow, seed=2000 + i)
        s_x = sens.values(ev)
        hv_x = ev.helicity_variables
        vm, em = binned(hv_x, s_x, hv_c, s_c, 0, M_EDGES)
        vc, ec = binned(hv_x, s_x, hv_c, s_c, 1, C_EDGES)
        lin = s_x.mean(axis=1) - s_c.mean(axis=1)
        print(f"{f.name}: linear shift " + "  ".join(f"{n}:{v:+.2f}" for n, v in zip(names, lin)), flush=True)
        tot_m = vm if tot_m is None else tot_m + vm
        tot_c = vc if tot_c is None else tot_c + vc
        var_m = em**2 if var_m is None else var_m + em**2
        var_c = ec**2 if var_c is None else var_c + ec**2
    n = len(a.flows)
    mean_m, err_m = tot_m / n, np.sqrt(var_m) / n
    mean_c, err_c = tot_c / n, np.sqrt(var_c) / n
    print(f"\nmean over {n} flow(s) of the per-bin contribution (sigma), +- statistical error")
    print("m bins:      " + " ".join(f"{lo:.2f}-{hi:.2f}".rjust(12) for lo, hi in zip(M_EDGES[:-1], M_EDGES[1:])))
    for k, name in enumerate(names):
        print(f"{name:12s} " + " ".join(f"{v:+6.2f}({e:4.2f})" for v, e in zip(mean_m[k], err_m[k])))
    print("cos_X bins:  " + " ".join(f"{lo:+.2f},{hi:+.2f}".rjust(12) for lo, hi in zip(C_EDGES[:-1], C_EDGES[1:])))
    for k, name in enumerate(names):
        print(f"{name:12s} " + " ".join(f"{v:+6.2f}({e:4.2f})" for v, e in zip(mean_c[k], err_c[k])))
    if a.json:
        a.json.write_text(json.dumps({"names": names, "flows": [str(f) for f in a.flows],
                                      "m_edges": M_EDGES.tolist(), "m_contrib": mean_m.tolist(),
                                      "m_error": err_m.tolist(), "cos_edges": C_EDGES.tolist(),
                                      "cos_contrib": mean_c.tolist(), "cos_error": err_c.tolist()}, indent=1))


def _flow_events(path: Path, proxy: Proxy, n: int, seed: int):
    """Events from a simulator checkpoint or from a train_flows.py record."""
    import torch

    from fastsim import load_simulator
    from fastsim.coords import CoordinateMap
    from fastsim.flow import SplineFlow
    from fastsim.generator import FastSimulator

    d = torch.load(path, weights_only=False)
    if isinstance(d, dict) and "setting" in d:
        m = SplineFlow(**d["hyperparameters"])
        m.load_state_dict(d["state"])
        coords = CoordinateMap.for_reaction(proxy.model.reaction, fold=m.n_dim == 4)
        sim = FastSimulator(m.eval(), coords, reaction=proxy.model.reaction)
    else:
        sim = load_simulator(path)
    return sim.sample(n, seed=seed)


if __name__ == "__main__":
    main()
