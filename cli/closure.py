"""Closure test: can flow-generated MC replace conventional MC in the
normalisation integral? (issue 6; PHYSICS.md section 7)

This module is orchestration where the two worlds meet (torch trains and
samples the flow, JAX fits), so it lives in ``cli/``; the physics comes from
library calls. For each toy k:

1. toy data of N events from the card through the detector;
2. normalisation samples: conventional MC of T events (the affordable
   budget), a flow trained on those T events sampling F events (optionally
   DCTR-reweighted to the T events), and a large conventional reference of
   R events;
3. the same fit with each (one compiled objective, MC entering through its
   normalisation matrix, fixed lineshapes).

Every toy is written to ``DIR/toys/toy_KKK.json`` when it ends; a rerun with
the same settings skips finished toys (interrupt and resume).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .common import UserError

#: Normalisation choices compared against the large conventional reference: the small
#: conventional MC, the flow, the DCTR-reweighted flow and the bootstrap-bias-corrected flow
#: (2 M_flow - mean M_replica, fastsim.training.bootstrap_replicas).
CHOICES = ("small", "flow", "flow_rw", "flow_bc")
FLOW_CHOICES = CHOICES[1:]


@dataclass(frozen=True)
class ClosureSettings:
    """Everything that defines a closure run (its hash names the toy files' validity)."""

    model: str
    toys: int = 20
    n_data: int = 20_000
    n_train: int = 50_000
    n_flow: int = 500_000
    n_reference: int = 2_000_000
    seed: int = 0
    detector: str = "default"
    reweight: bool = True
    flow_epochs: int = 20
    flow_minutes: float = 0.0
    flow_hyperparameters: dict = field(default_factory=dict)
    optimizer: str = "trust-exact"
    quadrature_panels: int = 120
    flow_batch_size: int = 2048
    flow_learning_rate: float = 2e-3
    flow_patience: int = 5
    flow_m_map: str = "phase_space"
    flow_fold: bool = True
    flow_bootstrap: int = 0
    flow_gates: bool = True
    #: Content hashes of the model and detector cards (:func:`input_hashes`): a resumed run
    #: reuses a toy only when the cards say the same as when it ran, wherever they are.
    inputs: dict = field(default_factory=dict)

    #: Fields added after the first runs, with the values those runs used: left out of the
    #: digest at these values, so that toy files written before they existed stay valid.
    _LATER_FIELDS = {"flow_batch_size": 2048, "flow_learning_rate": 2e-3, "flow_patience": 5,
                     "flow_m_map": "affine", "flow_fold": False, "flow_bootstrap": 0,
                     "flow_gates": False, "inputs": {}}

    def digest(self) -> str:
        """Hash of what defines one toy (not the number of toys: a run can be extended)."""
        fields = {k: v for k, v in asdict(self).items() if k != "toys"
                  and not (k in self._LATER_FIELDS and v == self._LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def input_hashes(model_card, detector_card) -> dict:
    """sha256 of what the cards say (their validated content, not their bytes or paths)."""
    def digest(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()

    return {"model": digest(model_card.to_dict()),
            "detector": None if detector_card is None else digest(detector_card.model_dump())}


def _seed(settings: ClosureSettings, toy: int, stage: int) -> int:
    return int(settings.seed) * 1_000_003 + toy * 101 + stage


def _fit_record(result) -> dict:
    n = len(result.resonance_names)
    return {
        "values": result.values.tolist(), "errors": result.errors.tolist(),
        "fractions": [float(result.fractions[i, i]) for i in range(n)],
        "fraction_errors": [float(result.fraction_errors[i, i]) for i in range(n)],
        "sf": result.sum_of_fractions, "sf_error": result.sum_of_fractions_error,
        "nll": result.nll, "converged": result.converged, "wall_time_s": result.wall_time,
    }


class ClosureInputError(UserError):
    """A closure run that cannot resume: its folder holds toys of other settings or card contents."""


def run_toy(task: tuple[ClosureSettings, int, str]) -> dict:
    """One closure toy (module-level so that process pools can pickle it)."""
    settings, toy, out_dir = task
    import jax

    jax.config.update("jax_enable_x64", True)
    import torch

    torch.set_num_threads(1)  # toys run in parallel processes: one thread each
    from fastsim.coords import CoordinateMap
    from fastsim.events import (Detector, Events, iter_conventional_mc, load_detector_card,
                                write_text_atomic)
    from fastsim.generator import FastSimulator
    from fastsim.reweight import dctr_weights
    from fastsim.training import TrainConfig, bootstrap_replicas, fit as train_flow, model_hyperparameters
    from fastsim.tree_coords import proposal_training
    from fastsim.validation import classifier_auc, require_symmetry, tree_classifier_auc
    from pwa import Model, load_model_card
    from pwa.fractions import integration_proposals
    from pwa.fit import fit
    from pwa.fit_result import FitConfig
    from pwa.normalisation import combine_normalisation_caches, normalisation_cache
    from pwa.problem import FitProblem
    from pwa.fractions import generator_cache
    from pwa.toys import iter_toys

    timings: dict[str, float] = {}
    clock = time.perf_counter
    card, det_card = load_model_card(settings.model), load_detector_card(settings.detector)
    if settings.inputs and input_hashes(card, det_card) != settings.inputs:
        raise ClosureInputError(f"{settings.model} or the detector card {settings.detector} changed during the run")
    model = Model.from_card(card)
    det = Detector(det_card)
    reaction = model.reaction

    t = clock()
    data = Events.concatenate(list(iter_toys(model, settings.n_data, det, seed=_seed(settings, toy, 1))))
    timings["toy_data"] = clock() - t

    # Any reaction but J/psi -> gamma + two tracks: tree coordinates, the MC from the card's
    # Breit-Wigner proposals (as `fastsim generate --model` and `fastsim train`)
    tree = not uses_helicity_coordinates(reaction)
    proposals = integration_proposals(model) if tree else {}
    t = clock()
    small = Events.concatenate(list(iter_conventional_mc(settings.n_train, det, reaction=reaction,
                                                         seed=_seed(settings, toy, 2), proposals=proposals or None)))
    timings["mc_small"] = clock() - t

    t = clock()
    symmetry = None
    train_weights = small.weights
    if tree:
        coords, symmetry, train_weights = proposal_training(
            reaction, small.momenta, small.weights, proposals=proposals, card=det.card, fold=settings.flow_fold,
            source=f"toy {toy}: conventional MC of detector {settings.detector!r}")
    else:
        coords = CoordinateMap.for_reaction(reaction, m_map=settings.flow_m_map, fold=settings.flow_fold)
        if settings.flow_fold:  # as `fastsim train --fold`: refuse an asymmetric detector
            symmetry = require_symmetry(small.helicity_variables, (coords.m_min, coords.m_max),
                                        f"toy {toy}: conventional MC of detector {settings.detector!r}")
    # as `fastsim train`: pre-transform knots at the acceptance edges
    # and the acceptance gates at the card's cuts (fastsim.acceptance)
    hyper = model_hyperparameters("flow", coords, det.card, settings.flow_hyperparameters,
                                  edge_knots=not tree, gates=settings.flow_gates)
    train_config = TrainConfig(kind="flow", hyperparameters=hyper,
                               epochs=settings.flow_epochs, max_minutes=settings.flow_minutes,
                               batch_size=settings.flow_batch_size,
                               learning_rate=settings.flow_learning_rate,
                               patience=settings.flow_patience,
                               seed=_seed(settings, toy, 3))
    trained = train_flow(coords.to_unit(small.momenta if tree else small.helicity_variables), train_config,
                         weights=train_weights)
    sim = FastSimulator(trained["model"], coords, reaction=reaction)
    timings["flow_training"] = clock() - t

    t = clock()
    flow = sim.sample(settings.n_flow, seed=_seed(settings, toy, 4))
    timings["flow_sampling"] = clock() - t

    t = clock()
    ref_head: list[Events] = []

    def reference_chunks():
        for chunk in iter_conventional_mc(settings.n_reference, det, reaction=reaction,
                                          seed=_seed(settings, toy, 5), proposals=proposals or None):
            if sum(len(c) for c in ref_head) < 100_000:
                ref_head.append(chunk)
            yield chunk

    caches = {"reference": normalisation_cache(model, reference_chunks())}
    timings["mc_reference"] = clock() - t

    t = clock()
    ref_events = Events.concatenate(ref_head).subset(slice(0, 100_000))
    n_val = min(len(ref_events), settings.n_flow, 100_000)
    if tree:  # the reference weighted as the flow's training sample
        ref_w = None if ref_events.weights is None else ref_events.weights[:n_val]
        validation = tree_classifier_auc(coords, flow.momenta[:n_val], ref_events.momenta[:n_val], ref_w, seed=toy)
    else:
        validation = classifier_auc(flow.helicity_variables[:n_val], ref_events.helicity_variables[:n_val],
                                    seed=toy)
    timings["flow_validation"] = clock() - t

    caches["small"] = normalisation_cache(model, [small])
    caches["flow"] = normalisation_cache(model, flow_chunks(flow))
    reweight_info = None
    if settings.reweight and not tree:  # DCTR classifies helicity variables
        t = clock()
        w, reweight_info = dctr_weights(flow.helicity_variables, small.helicity_variables,
                                        seed=_seed(settings, toy, 6), fold=settings.flow_fold,
                                        reference_weights=small.weights)
        caches["flow_rw"] = normalisation_cache(model, flow_chunks(Events(flow.momenta, w, reaction=reaction)))
        timings["reweighting"] = clock() - t
    if settings.flow_bootstrap:
        # replicas trained on T events of the flow itself, as the flow was on T conventional events
        t = clock()
        replicas = bootstrap_replicas(trained["model"], settings.n_train, train_config, settings.flow_bootstrap,
                                      seed=_seed(settings, toy, 7) * 1000)
        k = len(replicas)
        replica_caches = [normalisation_cache(model, flow_chunks(
            FastSimulator(r["model"], coords, reaction=reaction).sample(
                settings.n_flow, seed=_seed(settings, toy, 8) * 1000 + i)))[0]
            for i, r in enumerate(replicas)]
        caches["flow_bc"] = (combine_normalisation_caches([(2.0, caches["flow"][0])]
                                                          + [(-1.0 / k, c) for c in replica_caches]),
                             caches["flow"][1])
        timings["bootstrap_replicas"] = clock() - t

    t = clock()
    data_cache = model.precompute(data)
    # generator-level fractions: the quadrature, or (any other reaction) the per-term integrals of
    # seeded generator MC, the same for every toy and choice
    gen_cache = generator_cache(model, quadrature_panels=settings.quadrature_panels)
    config = FitConfig(optimizer=settings.optimizer, quadrature_panels=settings.quadrature_panels)
    fits = {}
    minimizer = None
    for name, (mc_cache, n_mc) in caches.items():
        problem = FitProblem(model, data_cache, mc_cache, gen_cache, len(data), n_mc,
                             float(len(data)), False)
        minimizer = minimizer or problem.minimizer(config)
        fits[name] = _fit_record(fit(model, None, None, config, problem=problem, minimizer=minimizer))
    timings["fits"] = clock() - t

    record = {"toy": toy, "settings_digest": settings.digest(), "fits": fits, "timings_s": timings,
              "flow_validation": validation, "flow_training": {
                  "epochs": len(trained["history"]), "stop_reason": trained["stop_reason"],
                  "best_val": trained["best_val"], "fold": settings.flow_fold,
                  "gates": None if getattr(trained["model"], "gates", None) is None
                  else trained["model"].gates.summary(),
                  "symmetry_min_p": None if symmetry is None else symmetry["min_p_value"]},
              "reweighting": reweight_info}
    path = Path(out_dir) / "toys" / f"toy_{toy:03d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1))
    return record


def uses_helicity_coordinates(reaction) -> bool:
    """Whether the flow of a reaction works in the five helicity variables (a photon and two tracks,
    as ``fastsim train --coordinates auto``) rather than in its decay tree's."""
    from fastsim.events.detector import species_kind

    return reaction.is_radiative_pair and all(species_kind(p) == "charged" for p in reaction.particles[1:])


def flow_chunks(events, size: int = 100_000):
    for i in range(0, len(events), size):
        yield events.subset(slice(i, i + size))


def _wrap(d: np.ndarray, is_phase: np.ndarray) -> np.ndarray:
    return np.where(is_phase, (d + np.pi) % (2 * np.pi) - np.pi, d)


def summarise(records: list[dict], names: list[str], truth: np.ndarray, is_phase: np.ndarray) -> dict:
    """Shifts against the reference, pulls against the truth, amplification.

    ``names`` are the quantities (free parameters, then ``F(<resonance>)``
    and ``SF``); ``truth`` their generated values. A quantity fixed by
    symmetry (SF = 1 without interference) has zero error: its shifts and
    pulls are undefined and come out as NaN (null in JSON).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _summarise(records, names, truth, is_phase)


def _summarise(records: list[dict], names: list[str], truth: np.ndarray, is_phase: np.ndarray) -> dict:
    def arr(choice: str, key: str) -> np.ndarray:
        rows = []
        for r in records:
            f = r["fits"][choice]
            if key == "value":
                rows.append(f["values"] + f["fractions"] + [f["sf"]])
            else:
                rows.append(f["errors"] + f["fraction_errors"] + [f["sf_error"]])
        return np.asarray(rows)

    K = len(records)
    choices = [c for c in CHOICES if c in records[0]["fits"]]
    ref_v, ref_e = arr("reference", "value"), arr("reference", "error")
    out: dict = {"n_toys": K, "quantities": names, "shift": {}, "pull": {}, "amplification": {},
                 "converged": {c: int(sum(r["fits"][c]["converged"] for r in records))
                               for c in ("reference", *choices)}}
    for c in choices:
        s = _wrap(arr(c, "value") - ref_v, is_phase) / ref_e
        out["shift"][c] = {n: {"mean": float(s[:, i].mean()), "mean_error": float(s[:, i].std(ddof=1) / math.sqrt(K))
                               if K > 1 else float("nan"),
                               "rms": float(np.sqrt(np.mean(s[:, i] ** 2)))} for i, n in enumerate(names)}
    for c in ("reference", *choices):
        p = _wrap(arr(c, "value") - truth, is_phase) / arr(c, "error")
        width = p.std(axis=0, ddof=1) if K > 1 else np.full(len(names), np.nan)
        out["pull"][c] = {n: {"mean": float(p[:, i].mean()), "mean_error": float(width[i] / math.sqrt(K)),
                              "width": float(width[i]),
                              "width_error": float(width[i] / math.sqrt(2 * max(K - 1, 1)))}
                          for i, n in enumerate(names)}
        out["pull"][c]["_values"] = p.tolist()
    if "small" in choices:
        for c in FLOW_CHOICES:
            if c in choices:
                out["amplification"][c] = {n: out["shift"]["small"][n]["rms"] / max(out["shift"][c][n]["rms"], 1e-300)
                                           for n in names}
    return out


def report_markdown(settings: ClosureSettings, summary: dict, records: list[dict]) -> str:
    names = summary["quantities"]
    choices = list(summary["shift"])
    K = summary["n_toys"]
    tmean = {k: float(np.mean([r["timings_s"].get(k, 0.0) for r in records])) for k in records[0]["timings_s"]}
    auc = [r["flow_validation"]["auc"] for r in records]
    lines = [
        f"# Closure test: flow MC against conventional MC ({Path(settings.model).name})", "",
        f"{K} toys; per toy N = {settings.n_data} data events, conventional MC T = {settings.n_train} "
        f"(the affordable budget; the flow is trained on it), F = {settings.n_flow} flow events, "
        f"reference R = {settings.n_reference} conventional events; detector `{settings.detector}`; "
        f"seed {settings.seed}.", "",
        "Shift = (value_X - value_reference) / error_reference for the same toy data: the bias (mean) and "
        "the spread (RMS) that the normalisation sample X adds. Amplification = RMS(small-MC shift) / "
        "RMS(flow shift): above 1 the flow beats the sample it was trained on (Butter et al., SciPost Phys. "
        "10 (2021) 139).", "",
        *(["flow_rw: the flow reweighted by a classifier against the T conventional events (DCTR).", ""]
          if settings.reweight else []),
        *([f"flow_bc: bootstrap bias correction, normalisation 2 M_flow - mean M_replica over "
           f"{settings.flow_bootstrap} replica flow(s), each trained with the same settings on T events "
           f"drawn from the toy's flow (fastsim.training.bootstrap_replicas).", ""]
          if settings.flow_bootstrap else []),
        "Converged fits: " + ", ".join(f"{c} {n}/{K}" for c, n in summary["converged"].items()) + ".", "",
        f"Flow validation (classifier AUC flow vs reference, 0.5 = perfect): mean {np.mean(auc):.4f}, "
        f"range {min(auc):.4f}-{max(auc):.4f}.", "",
        "## Shifts against the large reference MC (units of the reference error)", "",
        "| quantity | " + " | ".join(f"{c} mean | {c} RMS" for c in choices)
        + "".join(f" | amplification {c}" for c in summary["amplification"]) + " |",
        "|---|" + "---|---|" * len(choices) + "---|" * len(summary["amplification"]),
    ]
    for n in names:
        row = f"| {n} | " + " | ".join(
            f"{summary['shift'][c][n]['mean']:+.3f} ± {summary['shift'][c][n]['mean_error']:.3f} | "
            f"{summary['shift'][c][n]['rms']:.3f}" for c in choices)
        row += "".join(f" | {summary['amplification'][c][n]:.2f}" for c in summary["amplification"])
        lines.append(row + " |")
    lines += ["", "## Pulls against the generated truth", "",
              "| quantity | " + " | ".join(f"{c} mean | {c} width" for c in summary["pull"]) + " |",
              "|---|" + "---|---|" * len(summary["pull"])]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            f"{summary['pull'][c][n]['mean']:+.2f} ± {summary['pull'][c][n]['mean_error']:.2f} | "
            f"{summary['pull'][c][n]['width']:.2f} ± {summary['pull'][c][n]['width_error']:.2f}"
            for c in summary["pull"]) + " |")
    lines += ["", "## Wall time per toy (mean, s)", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in tmean.items()]
    rw = [r["reweighting"] for r in records if r.get("reweighting")]
    if rw:
        lines += ["", f"DCTR reweighting: effective sample size {np.mean([x['ess_fraction'] for x in rw]):.3f} "
                      f"of the flow sample on average."]
    lines.append("")
    return "\n".join(lines)


def plot_pulls(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsim.events import atomic_path

    names = summary["quantities"]
    frac_idx = [i for i, n in enumerate(names) if n.startswith("F(") or n == "SF"]
    choices = list(summary["pull"])
    fig, axes = plt.subplots(1, len(frac_idx), figsize=(2.6 * len(frac_idx), 2.8), squeeze=False)
    for ax, i in zip(axes[0], frac_idx):
        for c in choices:
            vals = np.asarray(summary["pull"][c]["_values"])[:, i]
            ax.hist(vals, bins=np.linspace(-4, 4, 17), histtype="step", label=c)
        ax.set_title(names[i], fontsize=8)
        ax.set_xlabel("pull", fontsize=8)
    axes[0][0].legend(fontsize=6, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_shifts(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsim.events import atomic_path

    names = summary["quantities"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names)), 3.5))
    for k, c in enumerate(summary["shift"]):
        m = [summary["shift"][c][n]["mean"] for n in names]
        e = [summary["shift"][c][n]["rms"] for n in names]
        ax.errorbar(x + 0.2 * (k - 1), m, yerr=e, fmt="o", ms=3, label=c)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, names, rotation=90, fontsize=6)
    ax.set_ylabel("shift / reference error (mean ± RMS)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run_closure(settings: ClosureSettings, out_dir: Path, *, workers: int = 1, executor: str = "process",
                scheduler: str | None = None, progress=None) -> dict:
    """Run (or resume) all toys, then write report.md, metrics.json and plots."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from fastsim.events import write_text_atomic
    from pwa import Model, fit_fractions_mc, fit_fractions_quadrature, load_model_card
    from pwa.optimize import dumps
    from pwa.parallel import map_tasks

    model = Model.from_card(load_model_card(settings.model))
    if settings.reweight and not uses_helicity_coordinates(model.reaction):
        import dataclasses

        # DCTR classifies the helicity variables of J/psi -> gamma P1 P2: not for a tree's flow
        settings = dataclasses.replace(settings, reweight=False)
    if model.floating_lineshapes:  # refused before anything is written
        from pwa.errors import FitError

        raise FitError(f"{settings.model}: the closure test fits couplings with fixed lineshapes; "
                       "remove the 'float' entries of the card")
    out_dir = Path(out_dir)
    (out_dir / "toys").mkdir(parents=True, exist_ok=True)
    digest = settings.digest()
    done: dict[int, dict] = {}
    stale = []
    for f in sorted((out_dir / "toys").glob("toy_*.json")):
        rec = json.loads(f.read_text())
        if rec.get("settings_digest") != digest:
            stale.append(f.name)
        elif rec.get("toy", -1) < settings.toys:
            done[rec["toy"]] = rec
    if stale:
        # Overwriting them would lose hours of toys; comparing them with new truth would be wrong.
        raise ClosureInputError(
            f"{out_dir / 'toys'}: {len(stale)} toy file(s) ({stale[0]}, ...) were made with other settings "
            "or other card contents (an edited model or detector card); give another --out, or remove them")
    todo = [k for k in range(settings.toys) if k not in done]
    if progress:
        progress(len(done), settings.toys)
    t0 = time.perf_counter()

    def finished(i, rec):
        done[todo[i]] = rec
        if progress:
            progress(len(done), settings.toys)

    map_tasks(run_toy, [(settings, k, str(out_dir)) for k in todo], executor=executor,
              workers=workers, scheduler=scheduler, on_result=finished)
    records = [done[k] for k in range(settings.toys)]
    truth_F = (fit_fractions_quadrature(model, n_panels=settings.quadrature_panels) if model.reaction.is_radiative_pair
               else fit_fractions_mc(model, seed=0)).matrix
    names = list(model.parameter_names) + [f"F({n})" for n in model.resonance_names] + ["SF"]
    truth = np.concatenate([model.initial_values(), np.diag(truth_F), [np.trace(truth_F)]])
    is_phase = np.array([n.endswith(".phase") for n in names])
    summary = summarise(records, names, truth, is_phase)
    summary["settings"] = asdict(settings)
    summary["truth"] = dict(zip(names, truth.tolist()))
    summary["flow_validation"] = [r["flow_validation"] for r in records]
    summary["timings_s_mean"] = {k: float(np.mean([r["timings_s"].get(k, 0.0) for r in records]))
                                 for k in records[0]["timings_s"]}
    summary["wall_time_this_run_s"] = time.perf_counter() - t0
    write_text_atomic(out_dir / "metrics.json", dumps(summary))
    write_text_atomic(out_dir / "report.md", report_markdown(settings, summary, records))
    plot_pulls(summary, out_dir / "pulls.png")
    plot_shifts(summary, out_dir / "shifts.png")
    return summary
