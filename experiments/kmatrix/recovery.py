#!/usr/bin/env python3
"""Toy study of a K-matrix fit: do fits recover the generated truth, with the right errors?

The card (``CARD_YAML`` below; the one of ``tests/test_kmatrix_fit.py``):
J/psi -> gamma K+ K- with a two-channel (pi+ pi-, K+ K-), two-pole K-matrix S
wave, an f0(980)-like pole below the K+ K- threshold and an f0(1710)-like one
whose production coupling beta (magnitude, phase) and K-matrix mass float,
plus the f2'(1525) as a Breit-Wigner with three floating helicity couplings
(9 free parameters; the S wave is the reference).

Per toy (``--toys``): ``--n-data`` generator-level events (``Detector(None)``)
of the true card, a fresh flat phase-space normalisation sample of ``--n-mc``
events, one fit (``pwa.fit.fit``) from a start perturbed at random from the
truth (magnitudes times e^U(-0.4, 0.4), phases + U(-0.6, 0.6) rad, the pole
mass + U(-30, 30) MeV; ``--starts`` > 1 adds the fitter's own random starts).
Reported: for every free parameter and fit fraction the pull (fit - truth) /
error (phases wrapped), its mean and width (standard deviation) over the toys
with their statistical errors (width / sqrt(n) and width / sqrt(2 (n - 1))).
The error is the fit's (inverse Hessian, data only); with ``--mc-errors``
also the total error sqrt(data^2 + MC^2), the normalisation sample's part
from :func:`pwa.mc_statistics.mc_statistics_of_fit`. True fractions: the
card's, on the fit's own quadrature grid (``--quadrature-panels``).

Every random step descends from ``--seed`` (numpy SeedSequence: one child per
toy, which seeds its data, its MC and its start). Writes
``experiments/results/kmatrix/recovery.json`` and ``README.md`` (command,
card, sizes, run time, the table, mechanical flags; a reading by hand is
appended after a run)::

    nice -n 10 .venv/bin/python experiments/kmatrix/recovery.py --toys 30 --n-data 5000 --n-mc 20000 \
        --seed 1 --mc-errors
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

# While this study was written (jaxlib 0.10.2, CPU, 2 cores), the compiled gradient or Hessian
# of a K-matrix model's NLL could block forever: every thread of XLA's intra-op pool sits in LAPACK's
# triangular solve (lapack_ztrsm_ffi -> jax::ParallelBatchMap) waiting for sub-tasks that no
# free thread can run (gdb), a thread-starvation deadlock of the batched solve in
# pwa.kmatrix. With one host device (a 2-thread pool) it hangs once data + MC reach ~6000
# events; more host devices give a 4-thread pool (4 and 16 alike), which makes it rarer, not
# impossible: a run with 4 hung at its second toy, the recorded run with 16 finished. Turning
# off XLA's concurrency-optimised scheduler or multithreaded Eigen did not help. pwa.kmatrix
# now solves its small bordered systems without LAPACK (small_solve); the flag stays harmless.
_FLAG = "--xla_force_host_platform_device_count=16"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402  (after XLA_FLAGS)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from _shared import KMATRIX_FIT_CARD  # noqa: E402
OUT = ROOT / "experiments" / "results" / "kmatrix"

CARD_YAML = KMATRIX_FIT_CARD


def perturbed_start(names, truth, rng):
    """The truth moved at random: magnitudes times e^U(-0.4, 0.4), phases + U(-0.6, 0.6), masses + U(-0.03, 0.03) GeV.
    """
    import numpy as np

    x0 = np.array(truth, dtype=np.float64)
    for i, name in enumerate(names):
        if name.endswith(".mag"):
            x0[i] *= np.exp(rng.uniform(-0.4, 0.4))
        elif name.endswith(".phase"):
            x0[i] += rng.uniform(-0.6, 0.6)
        elif name.endswith(".mass"):
            x0[i] += rng.uniform(-0.03, 0.03)
        else:
            raise ValueError(f"no perturbation rule for {name}")
    return x0


def wrapped(delta, names):
    """delta with the entries of phases wrapped to (-pi, pi]."""
    import numpy as np

    d = np.array(delta, dtype=np.float64)
    phase = np.array([n.endswith(".phase") for n in names])
    d[..., phase] = np.angle(np.exp(1j * d[..., phase]))
    return d


def summary(pulls) -> dict:
    """Mean and width (ddof 1) of pulls over toys, with their statistical errors; NaN (no error) skipped."""
    import numpy as np

    p = np.asarray(pulls, dtype=np.float64)
    p = p[np.isfinite(p)]
    n = p.size
    if n < 2:
        return {"n": n, "mean": float("nan"), "mean_error": float("nan"), "width": float("nan"),
                "width_error": float("nan")}
    width = float(p.std(ddof=1))
    return {"n": n, "mean": float(p.mean()), "mean_error": width / np.sqrt(n), "width": width,
            "width_error": width / np.sqrt(2.0 * (n - 1))}


def summary_rows(record: dict) -> list[dict]:
    """Per free parameter and fit fraction: truth, mean fit and error, pull summaries (converged toys)."""
    import numpy as np

    ok = [t for t in record["toys"] if "failed" not in t and t["converged"]]
    with_total = record["arguments"]["mc_errors"]
    quantities = [(name, record["truth"][i], "values", "errors", "pulls", "mc_errors", "pulls_total", i)
                  for i, name in enumerate(record["parameters"])]
    quantities += [(f"F({name})", record["true_fractions"][j], "fractions", "fraction_errors", "fraction_pulls",
                    "mc_fraction_errors", "fraction_pulls_total", j) for j, name in enumerate(record["resonances"])]
    rows = []
    for name, truth, value, error, pull, mc_error, pull_total, i in quantities:
        row = {"name": name, "truth": float(truth), "mean_value": float(np.mean([t[value][i] for t in ok])),
               "mean_error": float(np.mean([t[error][i] for t in ok])), "pull": summary([t[pull][i] for t in ok])}
        if with_total:
            row["mc_to_data_error"] = float(np.mean([t[mc_error][i] / t[error][i] for t in ok]))
            row["pull_total"] = summary([t[pull_total][i] for t in ok])
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    with_total = "pull_total" in rows[0]
    head = "| quantity | truth | mean fit | mean error | pull mean | pull width |"
    rule = "|---|---|---|---|---|---|"
    if with_total:
        head += " MC / data error | pull mean (data+MC) | pull width (data+MC) |"
        rule += "---|---|---|"
    lines = [head, rule]
    for r in rows:
        s = r["pull"]
        line = (f"| {r['name']} | {r['truth']:.4g} | {r['mean_value']:.4g} | {r['mean_error']:.3g} | "
                f"{s['mean']:+.2f} ± {s['mean_error']:.2f} | {s['width']:.2f} ± {s['width_error']:.2f} |")
        if with_total:
            t = r["pull_total"]
            line += (f" {r['mc_to_data_error']:.2f} | {t['mean']:+.2f} ± {t['mean_error']:.2f} | "
                     f"{t['width']:.2f} ± {t['width_error']:.2f} |")
        lines.append(line)
    return "\n".join(lines)


def flags(rows: list[dict], key: str = "pull", label: str = "") -> list[str]:
    """Pull means more than 3 errors from 0, widths more than 3 errors from 1."""
    out = []
    for r in rows:
        s = r[key]
        if abs(s["mean"]) > 3 * s["mean_error"]:
            out.append(f"{r['name']}: pull mean{label} {s['mean']:+.2f} ± {s['mean_error']:.2f} "
                       "is over 3 errors from 0")
        if abs(s["width"] - 1.0) > 3 * s["width_error"]:
            out.append(f"{r['name']}: pull width{label} {s['width']:.2f} ± {s['width_error']:.2f} "
                       "is over 3 errors from 1")
    return out


def all_flags(rows: list[dict]) -> list[str]:
    return flags(rows) + (flags(rows, "pull_total", " (data+MC)") if "pull_total" in rows[0] else [])


def render_readme(record: dict, rows: list[dict], reading: str = "") -> str:
    """README.md of a run: command, sizes, run time, card, table, flags, and a reading by hand if given."""
    import numpy as np

    a, m = record["arguments"], record["machine"]
    fit_s = [t["fit_s"] for t in record["toys"] if "failed" not in t]
    wall = record["wall_s"]
    notes = all_flags(rows)
    mc = ("; data+MC: with the normalisation sample's own error (pwa.mc_statistics, delta method, each toy's "
          "estimate) added in quadrature; MC / data error: the mean ratio of the two errors"
          if a["mc_errors"] else "")
    text = f"""# K-matrix recovery: pulls over {a['toys']} toys

Produced by

    {record['command']}

in {wall:.0f} s ({wall / 60:.1f} min) on {m['cpus']} CPUs (load average {m['load_average_at_start'][0]:.1f} at the
start; the machine is shared with other jobs), {m['platform']}, jax {m['jax']}, XLA_FLAGS
`{m['xla_flags']}` (see the comment at the top of the script). Per toy: {a['n_data']} generator-level
data events (`Detector(None)`), a fresh sample of {a['n_mc']} flat phase-space MC events, one fit
with `{a['optimizer']}` ({a['starts']} start(s), the first perturbed at random from the truth:
magnitudes x e^U(-0.4, 0.4), phases + U(-0.6, 0.6) rad, pole mass + U(-30, 30) MeV), fractions on
a {a['quadrature_panels']}-panel quadrature. Fit time per toy: median {np.median(fit_s):.1f} s (the first
includes compilation: {fit_s[0]:.1f} s). Converged: {record['n_converged']} of {a['toys']}
({record['n_unconverged']} not converged, {record['n_failed']} failed); the table uses the converged ones.
Every number per toy (starts, values, errors, pulls, minima, times) is in `recovery.json`.

## Card

```yaml
{CARD_YAML}```

## Pulls

Pull = (fit - truth) / error, phases wrapped; mean and width (standard deviation) over the
toys, with their statistical errors (width / sqrt(n), width / sqrt(2 (n - 1))). Error: the
fit's (inverse Hessian: data statistics only){mc}.

{markdown_table(rows)}

## Flags (mechanical: pull mean over 3 errors from 0, width over 3 errors from 1)

{chr(10).join('- ' + n for n in notes) or '- none'}
"""
    return text + (f"\n{reading.strip()}\n" if reading.strip() else "")


def run(args) -> dict:
    """The toy study: generate, fit and record every toy (a JSON-ready record)."""
    import jax.numpy as jnp
    import numpy as np
    import yaml

    from fastsim.events import Detector, Events, PhaseSpace
    from pwa.amplitude import Model
    from pwa.card import parse_model_card
    from pwa.errors import FitError
    from pwa.fit import fit
    from pwa.fit_result import FitConfig
    from pwa.mc_statistics import mc_statistics_of_fit
    from pwa.problem import FitProblem
    from pwa.toys import estimate_mass_envelope, iter_toys

    t_start = time.perf_counter()
    load = os.getloadavg()
    truth_model = Model.from_card(parse_model_card(yaml.safe_load(CARD_YAML), source="experiments/kmatrix/recovery.py"))
    names = truth_model.parameter_names
    truth = truth_model.initial_values()
    children = np.random.SeedSequence(args.seed).spawn(args.toys + 1)
    # One envelope for every toy (same model and parameters): the search is the slow part of generation.
    envelope = estimate_mass_envelope(truth_model, truth, seed=int(children[0].generate_state(1)[0]))
    detector = Detector(None)
    space = PhaseSpace(truth_model.reaction)

    gen_cache = minimizer = true_fractions = None
    toys = []
    for k in range(args.toys):
        rng = np.random.default_rng(children[k + 1])
        t0 = time.perf_counter()
        data = Events.concatenate(list(iter_toys(truth_model, args.n_data, detector, seed=int(rng.integers(2**31)),
                                                 envelope=envelope)))
        mc = Events.from_helicity_variables(space.sample(args.n_mc, rng), truth_model.reaction)
        config = FitConfig(quadrature_panels=args.quadrature_panels, optimizer=args.optimizer, starts=args.starts,
                           seed=int(rng.integers(2**31)))
        x0 = perturbed_start(names, truth, rng)
        problem = FitProblem.build(truth_model, data, mc, quadrature_panels=args.quadrature_panels,
                                   gen_cache=gen_cache)
        if gen_cache is None:
            gen_cache = problem.gen_cache
            true_fractions = np.asarray(jax.jit(truth_model.fit_fractions)(jnp.asarray(truth), gen_cache))
            # Same shapes every toy: one compiled minimiser serves them all (fit sets its arguments).
            minimizer = problem.minimizer(config)
        t1 = time.perf_counter()
        try:
            result = fit(truth_model, None, None, config, problem=problem, x0=x0, minimizer=minimizer)
        except FitError as exc:
            print(f"toy {k}: fit failed: {exc}", flush=True)
            toys.append({"toy": k, "failed": str(exc)})
            continue
        t2 = time.perf_counter()
        err = np.where(result.errors > 0, result.errors, np.nan)  # at a limit: no error, no pull
        delta = wrapped(result.values - truth, names)
        F, F_err = np.diag(result.fractions), np.diag(result.fraction_errors)
        F_true = np.diag(true_fractions)
        entry = {"toy": k, "converged": bool(result.converged), "edm": result.edm, "nll": result.nll,
                 "minima": [list(m) for m in result.minima], "start": x0, "values": result.values,
                 "errors": result.errors, "start_in_sigma": wrapped(x0 - truth, names) / err,
                 "pulls": delta / err, "fractions": F, "fraction_errors": F_err,
                 "fraction_pulls": (F - F_true) / F_err, "generate_s": t1 - t0, "fit_s": t2 - t1}
        if args.mc_errors:
            mcs = mc_statistics_of_fit(problem, result)
            total = np.sqrt(result.errors**2 + mcs.errors**2)
            total_F = np.sqrt(F_err**2 + np.diag(mcs.fraction_errors) ** 2)
            entry.update(mc_errors=mcs.errors, mc_fraction_errors=np.diag(mcs.fraction_errors),
                         pulls_total=delta / np.where(total > 0, total, np.nan),
                         fraction_pulls_total=(F - F_true) / total_F, mc_statistics_s=time.perf_counter() - t2)
        toys.append(entry)
        print(f"toy {k}: converged {result.converged}, fit {t2 - t1:.1f} s, |pull| max "
              f"{np.nanmax(np.abs(entry['pulls'])):.2f}, fraction pulls "
              f"{np.round(entry['fraction_pulls'], 2).tolist()}",
              flush=True)
    n_failed = sum(1 for t in toys if "failed" in t)
    return {"command": "nice -n 10 .venv/bin/python experiments/kmatrix/recovery.py " + shlex.join(sys.argv[1:]),
            "card": yaml.safe_load(CARD_YAML), "arguments": vars(args), "parameters": names, "truth": truth,
            "true_fractions": np.diag(true_fractions), "resonances": truth_model.resonance_names,
            "n_converged": sum(1 for t in toys if "failed" not in t and t["converged"]),
            "n_unconverged": sum(1 for t in toys if "failed" not in t and not t["converged"]), "n_failed": n_failed,
            "toys": toys, "wall_s": time.perf_counter() - t_start,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_start": load,
                        "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", type=int, default=30)
    ap.add_argument("--n-data", type=int, default=5000, help="generator-level data events per toy")
    ap.add_argument("--n-mc", type=int, default=20_000, help="flat phase-space MC events per toy (fresh each toy)")
    ap.add_argument("--seed", type=int, default=1, help="root of every random step")
    ap.add_argument("--starts", type=int, default=1,
                    help="starts per fit: the perturbed one, then the fitter's random ones")
    ap.add_argument("--optimizer", default="L-BFGS-B")
    ap.add_argument("--quadrature-panels", type=int, default=40)
    ap.add_argument("--mc-errors", action="store_true",
                    help="also pulls with the normalisation sample's error (pwa.mc_statistics) added")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--readme-only", action="store_true",
                    help="rewrite README.md from the existing recovery.json (no fits), keeping its "
                         "'## Reading' section")
    args = ap.parse_args()

    jax.config.update("jax_enable_x64", True)
    # Every toy has the same shapes: identical programs (the NLL and fractions that each
    # fit's summary jits anew) then compile once per run.
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="kmatrix-recovery-jax-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    from pwa.optimize import dumps

    out = Path(args.out)
    reading = ""
    if args.readme_only:
        record = json.loads((out / "recovery.json").read_text())
        old = (out / "README.md").read_text() if (out / "README.md").exists() else ""
        # The reading belongs to the recorded run, which is unchanged: keep it.
        reading = old[old.index("## Reading"):] if "## Reading" in old else ""
    else:
        record = run(args)
    rows = summary_rows(record)
    record["summary"], record["flags"] = rows, all_flags(rows)
    print(markdown_table(rows))
    print("\n".join(record["flags"]) or "no flags")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recovery.json").write_text(dumps(record) + "\n")  # --readme-only: the same toys, summary recomputed
    (out / "README.md").write_text(render_readme(record, rows, reading))
    print(f"wrote {out / 'recovery.json'} and {out / 'README.md'}")


if __name__ == "__main__":
    main()
