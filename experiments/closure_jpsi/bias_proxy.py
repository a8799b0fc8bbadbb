"""Cheap proxy for the flow-normalisation bias of the R0 closure test (issue 6).

One toy's data and a 2M-event conventional reference are fixed (exactly as
``cli/closure.py`` builds them for that toy). The reference fit gives p_ref,
the exact NLL Hessian H and the fraction errors. For another normalisation
sample X (fixed lineshapes: only its normalisation matrix M_X matters) the fit
moves by about one Newton step

    delta_p = -H^-1 grad NLL_X(p_ref) = -H^-1 W grad[log norm_X - log norm_ref](p_ref)

(the data term and grad NLL_ref(p_ref) ~ 0 cancel), and the fractions by
J delta_p (autodiff Jacobian of F_RR and SF). Divided by the reference errors
this is the shift in sigma that a full refit with X would give, with no fit.
``--newton-steps k`` iterates the Newton step on the full NLL_X (data term
included) for the nonlinear part.

    python experiments/closure_jpsi/bias_proxy.py prepare           # reference fit -> /tmp/closure_proxy/ref.npz
    python experiments/closure_jpsi/bias_proxy.py validate          # proxy vs refit (small MC, shipped flow)
    python experiments/closure_jpsi/bias_proxy.py shipped [FLOW.pt ...]  # (a) the 1M-trained flow(s)
    python experiments/closure_jpsi/bias_proxy.py samples --n 6 [--fold]  # 50k conventional training samples
    python experiments/closure_jpsi/bias_proxy.py flows DIR...      # proxy for trained flows (train_flows.py)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from cli.closure import ClosureSettings, _seed, flow_chunks  # noqa: E402

CACHE = Path("/tmp/closure_proxy")
SETTINGS = ClosureSettings(model=str(ROOT / "models" / "jpsi_gamma_kk.yaml"), seed=2026)
N_FLOW = 500_000


def _setup():
    from fastsim.events import Detector, load_detector_card
    from pwa import Model, load_model_card

    model = Model.from_card(load_model_card(SETTINGS.model))
    det = Detector(load_detector_card(SETTINGS.detector))
    return model, det


def _data(model, det, toy: int):
    from fastsim.events import Events
    from pwa.toys import iter_toys

    return Events.concatenate(list(iter_toys(model, SETTINGS.n_data, det, seed=_seed(SETTINGS, toy, 1))))


def _gen_cache(model):
    from pwa.fractions import phase_space_quadrature

    return model.precompute(phase_space_quadrature(model.reaction, n_panels=SETTINGS.quadrature_panels),
                            normalisation_matrix=True)


def small_mc(det, reaction, sample: int):
    """The 50k conventional MC of closure toy ``sample`` (the flow's training sample there)."""
    from fastsim.events import Events, iter_conventional_mc

    return Events.concatenate(list(iter_conventional_mc(SETTINGS.n_train, det, reaction=reaction,
                                                        seed=_seed(SETTINGS, sample, 2))))


def _problem(model, data_cache, mc_cache, n_mc, gen_cache, n_data):
    from pwa.problem import FitProblem

    return FitProblem(model, data_cache, mc_cache, gen_cache, n_data, n_mc, float(n_data), False)


def prepare(toy: int = 0) -> None:
    from fastsim.events import Events, iter_conventional_mc
    from pwa.fit import fit
    from pwa.fit_result import FitConfig
    from pwa.normalisation import normalisation_cache

    t0 = time.perf_counter()
    model, det = _setup()
    data = _data(model, det, toy)
    head: list = []

    def chunks():
        for c in iter_conventional_mc(SETTINGS.n_reference, det, reaction=model.reaction,
                                      seed=_seed(SETTINGS, toy, 5)):
            if sum(len(x) for x in head) < 100_000:
                head.append(c)
            yield c

    ref_cache, n_ref = normalisation_cache(model, chunks())
    print(f"reference matrix {n_ref} events: {time.perf_counter() - t0:.0f} s", flush=True)
    data_cache = model.precompute(data)
    gen = _gen_cache(model)
    problem = _problem(model, data_cache, ref_cache, n_ref, gen, len(data))
    config = FitConfig(optimizer=SETTINGS.optimizer, quadrature_panels=SETTINGS.quadrature_panels)
    res = fit(model, None, None, config, problem=problem)
    print(res, flush=True)
    p = jnp.asarray(res.values)
    H = np.asarray(jax.hessian(problem.nll)(p))
    n = len(model.resonance_names)
    ref_hv = Events.concatenate(head).helicity_variables[:100_000]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE / "ref.npz", p=res.values, H=H, cov=res.covariance, errors=res.errors,
             fractions=np.diag(res.fractions), fraction_errors=np.diag(res.fraction_errors),
             sf=res.sum_of_fractions, sf_error=res.sum_of_fractions_error,
             M_re=np.asarray(ref_cache.norm_re), M_im=np.asarray(ref_cache.norm_im),
             data_hv=data.helicity_variables, ref_hv=ref_hv, converged=res.converged, toy=toy,
             names=np.array(list(model.resonance_names) + ["SF"]))
    cov_h = np.linalg.inv(H)
    print("max |inv(H) - fit covariance| / fit variance:",
          float(np.max(np.abs(np.diag(cov_h) - np.diag(res.covariance)) / np.diag(res.covariance))))
    print(f"prepare done in {time.perf_counter() - t0:.0f} s; {n} resonances")


class Proxy:
    """Shift in sigma per fraction (and SF) for a normalisation matrix M_X."""

    def __init__(self, newton_steps: int = 1):
        from fastsim.events import Events

        model, det = _setup()
        self.model, self.det = model, det
        r = np.load(CACHE / "ref.npz")
        self.r = r
        self.names = [str(x) for x in r["names"]]
        self.p = jnp.asarray(r["p"])
        self.H = np.asarray(r["H"])
        self.err = np.concatenate([r["fraction_errors"], [float(r["sf_error"])]])
        self.ref_cache = self.cache_from_matrix(r["M_re"] + 1j * r["M_im"])
        self.n_data = len(r["data_hv"])
        self.gen = _gen_cache(model)
        self.newton_steps = newton_steps
        gen = self.gen

        def frac_vec(q):
            F = model.fit_fractions(q, gen)
            return jnp.concatenate([jnp.diagonal(F), jnp.trace(F)[None]])

        self.frac_vec = jax.jit(frac_vec)
        self.J = np.asarray(jax.jacfwd(frac_vec)(self.p))
        W = float(self.n_data)

        def lognorm(q, c):
            return W * jnp.log(model.normalisation(q, c))

        self.grad_lognorm = jax.jit(jax.grad(lognorm))
        self.g_ref = np.asarray(self.grad_lognorm(self.p, self.ref_cache))
        self._data_cache = None
        self._data_events = Events.from_helicity_variables(r["data_hv"], model.reaction)

    @staticmethod
    def cache_from_matrix(M):
        from pwa.caches import NormalisationCache

        return NormalisationCache(norm_re=jnp.asarray(np.real(M)), norm_im=jnp.asarray(np.imag(M)),
                                  weights=jnp.asarray([1.0]))

    def data_cache(self):
        if self._data_cache is None:
            self._data_cache = self.model.precompute(self._data_events)
            model = self.model
            self._nll_grad = jax.jit(jax.grad(model.nll))
            self._nll_hess = jax.jit(jax.hessian(model.nll))
        return self._data_cache

    def shift(self, mc_cache, newton_steps: int | None = None) -> np.ndarray:
        """(n_res + 1,) fraction/SF shifts in units of the reference errors."""
        k = self.newton_steps if newton_steps is None else newton_steps
        g = np.asarray(self.grad_lognorm(self.p, mc_cache)) - self.g_ref
        dp = -np.linalg.solve(self.H, g)
        if k <= 1:
            return (self.J @ dp) / self.err
        dc = self.data_cache()
        q = self.p + dp
        for _ in range(k - 1):
            gq = np.asarray(self._nll_grad(q, dc, mc_cache))
            Hq = np.asarray(self._nll_hess(q, dc, mc_cache))
            q = q - np.linalg.solve(Hq, gq)
        return (np.asarray(self.frac_vec(q)) - np.asarray(self.frac_vec(self.p))) / self.err

    def refit(self, mc_cache, n_mc: int) -> np.ndarray:
        from pwa.fit import fit
        from pwa.fit_result import FitConfig

        problem = _problem(self.model, self.data_cache(), mc_cache, n_mc, self.gen, self.n_data)
        config = FitConfig(optimizer=SETTINGS.optimizer, quadrature_panels=SETTINGS.quadrature_panels)
        res = fit(self.model, None, None, config, problem=problem, x0=np.asarray(self.p))
        v = np.concatenate([np.diag(res.fractions), [res.sum_of_fractions]])
        return (v - np.concatenate([self.r["fractions"], [float(self.r["sf"])]])) / self.err

    def matrix_cache(self, events):
        from pwa.normalisation import normalisation_cache

        return normalisation_cache(self.model, flow_chunks(events))[0]

    def fmt(self, s: np.ndarray) -> str:
        return "  ".join(f"{n}:{v:+.2f}" for n, v in zip(self.names, s))


def flow_events(sim, seed: int):
    return sim.sample(N_FLOW, seed=seed)


def shipped(proxy: Proxy, seeds=(11, 12), path: Path = ROOT / "models" / "flow_besiii_like.pt") -> dict:
    """Proxy shifts of a flow checkpoint (default: the shipped one) for a few sampling seeds."""
    from fastsim import load_simulator
    from fastsim.validation import classifier_auc

    sim = load_simulator(path)
    out = []
    for s in seeds:
        ev = flow_events(sim, s)
        c = proxy.matrix_cache(ev)
        sh = proxy.shift(c)
        auc = classifier_auc(ev.helicity_variables[:100_000], proxy.r["ref_hv"], seed=0)["auc"]
        print(f"shipped flow seed {s}: AUC {auc:.4f}  {proxy.fmt(sh)}", flush=True)
        out.append({"seed": s, "shift": sh.tolist(), "auc": auc})
    return {"names": proxy.names, "checkpoint": str(path), "newton_steps": proxy.newton_steps,
            "samples": out}


def validate(proxy: Proxy) -> dict:
    """Proxy (1 and 3 Newton steps) against refits, for small MC samples and the shipped flow."""
    from fastsim import load_simulator

    rows = []
    cases = []
    for s in (0, 1):
        ev = small_mc(proxy.det, proxy.model.reaction, s)
        cases.append((f"small MC sample {s}", ev))
    sim = load_simulator(ROOT / "models" / "flow_besiii_like.pt")
    cases.append(("shipped flow 500k", flow_events(sim, 11)))
    for label, ev in cases:
        c = proxy.matrix_cache(ev)
        s1, s3 = proxy.shift(c, 1), proxy.shift(c, 3)
        t = time.perf_counter()
        rf = proxy.refit(c, len(ev))
        print(f"{label}\n  refit   {proxy.fmt(rf)}  ({time.perf_counter() - t:.0f} s)\n"
              f"  newton1 {proxy.fmt(s1)}\n  newton3 {proxy.fmt(s3)}", flush=True)
        rows.append({"case": label, "refit": rf.tolist(), "newton1": s1.tolist(), "newton3": s3.tolist(),
                     "max_abs_diff_newton1": float(np.max(np.abs(s1 - rf))),
                     "max_abs_diff_newton3": float(np.max(np.abs(s3 - rf)))})
    return {"names": proxy.names, "cases": rows}


def samples(n: int, out: Path, fold: bool = False) -> None:
    """Unit-box coordinates of the 50k conventional samples of closure toys 0..n-1, with the knots."""
    from fastsim.coords import CoordinateMap, acceptance_knots

    model, det = _setup()
    coords = CoordinateMap.for_reaction(model.reaction, fold=fold)
    knots = acceptance_knots(det.card, coords, model.reaction.parent_mass)
    out.mkdir(parents=True, exist_ok=True)
    for s in range(n):
        ev = small_mc(det, model.reaction, s)
        np.save(out / f"train_{s}.npy", coords.to_unit(ev.helicity_variables))
    (out / "knots.json").write_text(json.dumps(knots))
    print(f"wrote {n} samples to {out}")


def small_shifts(proxy: Proxy, n: int) -> list:
    out = []
    for s in range(n):
        ev = small_mc(proxy.det, proxy.model.reaction, s)
        sh = proxy.shift(proxy.matrix_cache(ev))
        print(f"small MC sample {s}: {proxy.fmt(sh)}", flush=True)
        out.append(sh.tolist())
    return out


def evaluate_flows(proxy: Proxy, files: list[Path], results: Path) -> None:
    """Proxy shift (and AUC) for each trained flow file of train_flows.py; appends JSON lines."""
    import torch

    from fastsim.coords import CoordinateMap
    from fastsim.flow import SplineFlow
    from fastsim.generator import FastSimulator
    from fastsim.validation import classifier_auc

    torch.set_num_threads(1)
    done = set()
    if results.exists():
        done = {json.loads(line)["file"] for line in results.read_text().splitlines() if line.strip()}
    for f in files:
        if str(f) in done:
            continue
        d = torch.load(f, weights_only=False)
        hp = {k: v for k, v in d["hyperparameters"].items()}
        m = SplineFlow(**hp)
        m.load_state_dict(d["state"])
        coords = CoordinateMap.for_reaction(proxy.model.reaction, fold=m.n_dim == 4)
        sim = FastSimulator(m.eval(), coords, reaction=proxy.model.reaction)
        ev = flow_events(sim, seed=1000 + int(d["sample"]))
        sh = proxy.shift(proxy.matrix_cache(ev))
        auc = classifier_auc(ev.helicity_variables[:100_000], proxy.r["ref_hv"], seed=0)["auc"]
        rec = {"file": str(f), "setting": d["setting"], "sample": d["sample"], "shift": sh.tolist(),
               "auc": auc, "train_s": d["train_s"], "epochs": d["epochs"], "best_epoch": d["best_epoch"],
               "stop_reason": d["stop_reason"], "best_val": d["best_val"]}
        print(f"{d['setting']} sample {d['sample']}: AUC {auc:.4f} {proxy.fmt(sh)}", flush=True)
        with open(results, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prepare", "validate", "shipped", "samples", "small", "flows"])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "closure_jpsi_tuning")
    ap.add_argument("--newton-steps", type=int, default=1)
    ap.add_argument("--fold", action="store_true", help="samples: folded coordinates (fastsim.coords)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.cmd == "prepare":
        return prepare()
    if a.cmd == "samples":
        return samples(a.n, CACHE / ("samples_fold" if a.fold else "samples"), a.fold)
    proxy = Proxy(a.newton_steps)
    if a.cmd == "validate":
        (a.out / "validation.json").write_text(json.dumps(validate(proxy), indent=1))
    elif a.cmd == "shipped":  # the shipped flow, or the 1M-trained checkpoints given as files
        for f in a.files or [ROOT / "models" / "flow_besiii_like.pt"]:
            name = "shipped.json" if not a.files else f"checkpoint_{f.stem}.json"
            (a.out / name).write_text(json.dumps(shipped(proxy, path=f), indent=1))
    elif a.cmd == "small":
        (a.out / "small.json").write_text(json.dumps({"names": proxy.names, "shifts": small_shifts(proxy, a.n)},
                                                     indent=1))
    elif a.cmd == "flows":
        files = sorted(p for f in a.files for p in (f.glob("*.pt") if f.is_dir() else [f]))
        evaluate_flows(proxy, files, a.out / "flows.jsonl")


if __name__ == "__main__":
    main()
