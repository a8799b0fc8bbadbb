"""Which fit-fraction definition (and error propagation) makes the seed's Table 2 errors
one consistent sample size?

`run.py` infers the seed's unprinted number of events from its Table 2 fraction
errors: for each state, the N at which our expected error (Fisher information at
the generated truth, propagated to the fraction) equals the seed's. With
generator-level fractions (PHYSICS.md) the six states give N from about 6,400 to
25,800, a factor 4, which is why f2(2340) and f0(1710) miss the 25 % error target
at any one N. Here the same inference is repeated for other definitions the
talk could have used; the one whose per-state N agree best is the likelier:

- ``generator``: F_R over generator-level phase space (ours, PHYSICS.md);
- ``detector``: over the detector-level MC (acceptance-weighted fractions);
- ``data_mean``: the talk's printed formula, the mean over the data events of
  |A_R(x_i)|^2 / |A(x_i)|^2 (here over the toy pool at the inferred size);
- ``generator_couplings_only``: generator-level F_R, but the error propagated
  through the couplings alone (lineshape columns of the Jacobian zeroed);
- ``generator_fixed_lineshapes``: generator-level F_R with the information of the
  couplings alone (masses and widths fixed: the conditional error).

Needs the toys and MC that `run.py` writes under `--work`. Writes
`experiments/results/seed_fraction_definition.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as seed  # noqa: E402

from fastsim.events import Events, write_text_atomic  # noqa: E402
from pwa.fraction_errors import fraction_jacobian  # noqa: E402
from pwa.fractions import generator_cache  # noqa: E402


def data_mean_fractions(model, cache):
    """q -> (n_res,) mean over the cache's events of |A_R|^2 / |A|^2 (the talk's formula)."""
    res = jnp.asarray(model.term_resonances)

    def fn(q):
        G = model.term_factors(q, cache)  # (terms, states, n)
        c = model.couplings(q)
        A_R = jnp.einsum("rk,k,ksn->rsn", res.astype(G.dtype), c, G)
        num = jnp.sum(jnp.abs(A_R) ** 2, axis=1)  # (res, n)
        den = jnp.sum(jnp.abs(jnp.einsum("k,ksn->sn", c, G)) ** 2, axis=0)
        return jnp.mean(num / den[None, :], axis=1)

    return fn


def inferred_sizes(info_per_event: np.ndarray, J: np.ndarray, names, *, coupling_block=None) -> dict[str, float]:
    """Per state, the N at which sqrt(J (N I1)^-1 J^T) equals the seed's Table 2 error.

    ``info_per_event``: the per-event Fisher information I1 at the truth. The
    error scales as 1/sqrt(N) exactly here, so N = (sigma_1 / sigma_seed)^2 with
    sigma_1 the one-event error. ``coupling_block``: indices kept (the others
    fixed) for the conditional error.
    """
    if coupling_block is not None:
        cov = np.zeros_like(info_per_event)
        idx = np.ix_(coupling_block, coupling_block)
        cov[idx] = np.linalg.inv(info_per_event[idx])
    else:
        cov = np.linalg.inv(info_per_event)
    out = {}
    for i, name in enumerate(names):
        sigma1 = float(np.sqrt(J[i] @ cov @ J[i])) * 100.0
        out[name] = (sigma1 / seed.TABLE2[name][0][1]) ** 2
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=seed.ROOT / "experiments" / "seed_tables" / "work")
    ap.add_argument("--pool", type=int, default=20_000, help="toy events of the Fisher information")
    ap.add_argument("--n-mc", type=int, default=200_000)
    ap.add_argument("--gen-events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=seed.RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    r0 = seed.seed_floating_model(seed.R0_CARD)
    names = r0.resonance_names
    paths = {"mc": args.work / f"mc_{args.n_mc}_seed{args.seed + 1000}.npz",
             "pool": args.work / f"toys_{args.pool}_seed{args.seed}.npz"}
    for label, path in paths.items():
        if not path.exists():
            raise SystemExit(f"{path}: missing ({label}); run experiments/seed_tables/run.py first, which writes it")
    z = np.load(paths["mc"])
    mc = Events(z["momenta"], z["weights"], reaction=r0.reaction)
    pool = Events(np.load(paths["pool"])["momenta"], reaction=r0.reaction)
    x = r0.initial_values()
    seed.log(f"{len(pool)} toys, {len(mc)} MC events, {r0.n_free} parameters")

    scores = seed.event_scores(r0, pool, mc, x)
    info1 = scores.T @ scores / len(scores)
    seed.log("scores done")

    gen = generator_cache(r0, n_events=args.gen_events, seed=args.seed + 3000)
    _, J_gen = fraction_jacobian(r0, gen, x)
    _, J_det = fraction_jacobian(r0, r0.precompute(mc), x)
    n_res = len(names)
    diag = [i * n_res + i for i in range(n_res)]
    J_gen, J_det = J_gen[diag], J_det[diag]
    # The talk's formula over the first 13,100 toys (the size run.py fits).
    sub = Events(pool.momenta[:13_100], reaction=r0.reaction)
    J_data = np.asarray(jax.jit(jax.jacfwd(data_mean_fractions(r0, r0.precompute(sub))))(jnp.asarray(x)))
    seed.log("Jacobians done")

    # Free parameters other than a coupling's magnitude or phase: the floating masses and widths.
    lineshape = np.array([not name.endswith((".mag", ".phase")) for name in r0.parameter_names])
    couplings = np.flatnonzero(~lineshape)
    J_coup = J_gen.copy()
    J_coup[:, lineshape] = 0.0

    variants = {
        "generator": inferred_sizes(info1, J_gen, names),
        "detector": inferred_sizes(info1, J_det, names),
        "data_mean": inferred_sizes(info1, J_data, names),
        "generator_couplings_only": inferred_sizes(info1, J_coup, names),
        "generator_fixed_lineshapes": inferred_sizes(info1, J_gen, names, coupling_block=couplings),
    }
    summary = {}
    for k, v in variants.items():
        n = np.array(list(v.values()))
        summary[k] = {"per_state": v, "n_geometric_mean": float(np.exp(np.mean(np.log(n)))),
                      "max_over_min": float(n.max() / n.min()),
                      "log_rms": float(np.std(np.log(n)))}
    out = {"lineshape_parameters": [p for p, f in zip(r0.parameter_names, lineshape) if f],
           "variants": summary, "seconds": time.perf_counter() - t0}
    rows = ["| definition | " + " | ".join(names) + " | geometric mean | max / min |",
            "|---|" + "---|" * (len(names) + 2)]
    for k, s in summary.items():
        rows.append(f"| {k} | " + " | ".join(f"{s['per_state'][n]:.0f}" for n in names)
                    + f" | {s['n_geometric_mean']:.0f} | {s['max_over_min']:.2f} |")
    md = "\n".join(["# Which fraction definition makes the seed's Table 2 errors one sample size?", "",
                    __doc__.split("\n\n", 1)[1].split("Needs the toys")[0].strip(), "",
                    "Inferred N per state (the N at which the expected error at the truth equals the seed's):", "",
                    *rows, "", f"Lineshape parameters: {', '.join(out['lineshape_parameters'])}.",
                    f"Produced by `experiments/seed_tables/fraction_definition.py` in {out['seconds']:.0f} s.", ""])
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "seed_fraction_definition.json", json.dumps(out, indent=1))
    write_text_atomic(args.out / "seed_fraction_definition.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
