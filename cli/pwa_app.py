"""``pwa``: partial-wave analysis fits, fractions, toys and closure tests."""

from __future__ import annotations

import time
from pathlib import Path

import typer

import numpy as np

from .common import (UserError, check_output, detector_path, handle_errors, progress_bar,
                     run_app, seed_option, version_callback)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Unbinned maximum-likelihood partial-wave analysis (JAX).")


def _float64() -> None:
    """Entry-point precision: the library never switches float64 on itself."""
    import jax

    jax.config.update("jax_enable_x64", True)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=version_callback,
                                       is_eager=True, help="Print the version and exit.")) -> None:
    pass


@app.command()
@handle_errors
def fractions(
    model: Path = typer.Option(..., "--model", help="Model card (YAML)."),
    n_mc: int = typer.Option(1_000_000, "--n-mc", min=1, help="Generator-level flat phase-space events."),
    seed: int = seed_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Fit fractions, interference fractions and SF at the card's parameters."""
    _float64()
    from pwa import Model, fit_fractions_mc, load_model_card

    m = Model.from_card(load_model_card(model))
    with progress_bar() as bar:
        task = bar.add_task("generator-level phase space", total=n_mc)
        result = fit_fractions_mc(m, n_mc=n_mc, seed=seed, progress=lambda k: bar.advance(task, k))
    typer.echo(result.to_json() if as_json else str(result))


@app.command()
@handle_errors
def generate(
    model: Path = typer.Option(..., "--model", help="Model card (YAML)."),
    n: int = typer.Option(..., "--n", min=1, help="Number of accepted events to write."),
    out: Path = typer.Option(..., "--out", help="Output event file (.parquet, .root or .npz)."),
    detector: str = typer.Option("default", "--detector",
                                 help="Detector card: a YAML path, 'default' or 'none' (generator level)."),
    seed: int = seed_option(),
    margin: float = typer.Option(1.25, "--margin", min=1.0001, help="Safety factor on the intensity maximum."),
    chunk_size: int = typer.Option(100_000, "--chunk-size", min=1000, help="Proposals per chunk."),
) -> None:
    """Toy data: hit-or-miss with the card's intensity, then the detector."""
    check_output(out, inputs={"--model": model, "--detector": detector_path(detector)})
    _float64()
    from fastsim.events import Detector, EventWriter, load_detector_card
    from pwa import GenerationError, Model, load_model_card
    from pwa.toys import iter_toys

    m = Model.from_card(load_model_card(model))
    det = Detector(load_detector_card(detector))
    stats: dict = {}
    t0 = time.perf_counter()
    try:
        with EventWriter(out, m.reaction) as writer, progress_bar() as bar:
            task = bar.add_task(f"toys ({det.name})", total=n)
            for chunk in iter_toys(m, n, det, seed=seed, margin=margin, chunk_size=chunk_size, stats=stats):
                writer.write(chunk)
                bar.advance(task, len(chunk))
    except GenerationError as exc:
        from .common import print_error

        print_error(str(exc))
        raise typer.Exit(1) from None
    dt = time.perf_counter() - t0
    typer.echo(f"wrote {writer.n_written} events to {out}")
    typer.echo(f"hit-or-miss: I_max = {stats['i_max']:.6g}, {stats['n_hit']} of {stats['n_proposed']} "
               f"proposals kept; detector {det.name}: {stats['n_accepted']} accepted")
    typer.echo(f"throughput: {writer.n_written / dt:,.0f} accepted events/s ({dt:.2f} s)")


# ---------------------------------------------------------------------------
# Fits
# ---------------------------------------------------------------------------

#: The flow of ``--mc flow`` without ``--flow-model``, named as a shipped file.
DEFAULT_FLOW = "flow_besiii_like.pt"
#: The shipped flow of each other reaction, by (parent, final-state particles).
DEFAULT_FLOWS = {("psi(2S)", ("K+", "K-", "K+", "K-")): "flow_psi2s_kkkk.pt"}


def default_flow(reaction) -> Path:
    """The shipped flow for a reaction; refused (UserError) when none is shipped."""
    from fastsim.events.resources import shipped

    key = (reaction.parent, reaction.particles)
    name = DEFAULT_FLOW if key == ("J/psi", ("gamma", "K+", "K-")) else DEFAULT_FLOWS.get(key)
    if name is None:
        raise UserError(f"--mc flow: no flow is shipped for {reaction}; train one (fastsim train --model CARD) "
                        f"and pass it with --flow-model")
    return shipped(name)


def _load_fit_inputs(model_path: Path, data_path: Path, mc: str, flow_model: Path | None, n_mc: int,
                     seed: int, reweight: Path | None = None):
    """(model, data events, normalisation events, MC description) from the command's options."""
    from fastsim.events import read_events
    from pwa import Model, load_model_card

    model = Model.from_card(load_model_card(model_path))
    data = read_events(data_path, model.reaction)
    mc_events, mc_info = _normalisation_mc(model, mc, flow_model, n_mc, seed, reweight)
    return model, data, mc_events, mc_info


def _normalisation_mc(model, mc: str, flow_model: Path | None, n_mc: int, seed: int,
                      reweight: Path | None = None):
    """Events for the normalisation sum: an event file, or samples of a trained flow
    (optionally DCTR-reweighted towards a conventional MC file)."""
    from fastsim.events import Events, read_events

    if mc != "flow":
        if reweight is not None:
            raise UserError("--reweight corrects flow MC: use it with --mc flow")
        path = Path(mc)
        return read_events(path, model.reaction), {"mc": str(path)}
    reference = read_events(reweight, model.reaction) if reweight is not None else None
    from fastsim import load_simulator
    from fastsim.checkpoint import same_reaction

    path = flow_model if flow_model is not None else default_flow(model.reaction)
    t0 = time.perf_counter()
    sim = load_simulator(path)
    if not same_reaction(sim.reaction, model.reaction) or sim.reaction.prefixes != model.reaction.prefixes:
        raise UserError(f"{path}: the flow generates {sim.reaction} events ({', '.join(sim.reaction.prefixes)}), "
                        f"the model describes {model.reaction} ({', '.join(model.reaction.prefixes)})")
    if reference is not None and sim.is_tree:
        raise UserError(f"--reweight: the DCTR classifier works in the helicity variables of J/psi -> gamma P1 P2; "
                        f"{path} is a flow of {sim.reaction}")
    events = sim.sample(n_mc, seed=seed)
    events = Events(events.momenta, events.weights, reaction=model.reaction)  # the card's chains
    dt = time.perf_counter() - t0
    typer.echo(f"flow MC: {len(events)} events from {path} in {dt:.1f} s", err=True)
    info = {"mc": "flow", "flow_model": str(path), "n_flow": n_mc, "flow_seed": seed}
    if reference is not None:
        from fastsim.reweight import dctr_weights

        # a folded flow was trained on MC that passed the symmetry test: classify folded points
        w, rw = dctr_weights(events.helicity_variables, reference.helicity_variables, seed=seed,
                             fold=sim.coords.fold, reference_weights=reference.weights)
        events = Events(events.momenta, w, reaction=events.reaction)
        typer.echo(f"DCTR reweighting against {reweight} ({len(reference)} events): effective sample size "
                   f"{rw['effective_sample_size']:.0f} ({100 * rw['ess_fraction']:.1f} % of {len(w)})", err=True)
        info["reweighting"] = {"reference": str(reweight), **rw}
    return events, info


def _fit_config(optimizer: str, starts: int, seed: int, sf_target: float, sf_lambda: float,
                lasso: float, coarse_mc: int = 0, refine: int = 0):
    from pwa.fit_result import FitConfig
    from pwa.optimize import OPTIMIZERS

    if optimizer not in OPTIMIZERS:
        raise UserError(f"--optimizer {optimizer!r}: not an optimizer; choose one of {', '.join(OPTIMIZERS)}")
    return FitConfig(optimizer=optimizer, starts=starts, seed=seed, sf_target=sf_target,
                     sf_lambda=sf_lambda, lasso=lasso, coarse_mc=coarse_mc, refine=refine)


_MODEL = typer.Option(..., "--model", help="Model card (YAML).")
_DATA = typer.Option(..., "--data", help="Data event file (.parquet, .root, .npz).")
_MC = typer.Option(..., "--mc", help="Normalisation MC: an event file, or 'flow' to sample the fast simulator.")
_FLOW = typer.Option(None, "--flow-model", help="Flow checkpoint for --mc flow (default: the shipped model).")
_NMC = typer.Option(400_000, "--n-mc", min=1, help="Events drawn from the flow with --mc flow.")
_OPT = typer.Option("trust-exact", "--optimizer",
                    help="BFGS, L-BFGS-B, trust-exact, trust-ncg, Newton-CG, trust-krylov or minuit.")
_SFT = typer.Option(1.0, "--sf-target", help="Target sum of fractions of the constraint (1.2 = 120 %).")
_SFL = typer.Option(0.0, "--sf-lambda", min=0.0, help="Strength of the fraction-sum constraint (0 = off).")


_BACKGROUND = typer.Option(None, "--background",
                           help="Background sample (sideband events or background MC): the likelihood becomes "
                                "(1 - f_b) I/N + f_b B, B its density relative to the MC (a classifier density "
                                "ratio, pwa.background).")
_BACKGROUND_FRACTION = typer.Option(0.1, "--background-fraction", min=0.0, max=0.999,
                                    help="f_b: its value, or its start with --float-background.")
_FLOAT_BACKGROUND = typer.Option(True, "--float-background/--fixed-background",
                                 help="Fit f_b (bounded to [0, 1]) or keep it at --background-fraction.")
_BACKGROUND_METHOD = typer.Option("classifier", "--background-method",
                                  help="Density ratio of --background: classifier or knn.")
_SIDEBAND = typer.Option(None, "--sideband",
                         help="Sideband events to subtract: they join the data with weight -(--sideband-scale) x "
                              "their own, and the errors use the sandwich.")
_SIDEBAND_SCALE = typer.Option(1.0, "--sideband-scale", min=0.0,
                               help="Expected background in the signal region / sum of sideband weights.")


def _check_background_method(method: str) -> None:
    if method not in ("classifier", "knn"):
        raise UserError(f"--background-method {method!r}: choose classifier or knn")


def _with_background(m, data_events, mc_events, mc_info: dict, seed: int, *, background, background_fraction,
                     float_background, background_method, sideband, sideband_scale):
    """(data, background term or None, info): --sideband subtracted from the data, --background's term."""
    bkg = None
    if sideband is not None:
        from fastsim.events import read_events
        from pwa.background import sideband_subtraction

        data_events = sideband_subtraction(data_events, read_events(sideband, m.reaction), sideband_scale)
        typer.echo(f"sideband subtraction: {len(data_events)} events, sum of weights "
                   f"{data_events.weight_array.sum():.1f}", err=True)
        mc_info = {**mc_info, "sideband": {"sample": str(sideband), "scale": sideband_scale}}
    if background is not None:
        from fastsim.events import read_events
        from pwa.background import background_model

        bkg = background_model(data_events, mc_events, read_events(background, m.reaction),
                               fraction=background_fraction, float_fraction=float_background,
                               method=background_method, seed=seed)
        mc_info = {**mc_info, "background": {"sample": str(background), **bkg.to_dict()}}
    return data_events, bkg, mc_info


def _executor_choice(value: str) -> str:
    from pwa.parallel import EXECUTORS

    if value not in EXECUTORS:
        raise typer.BadParameter(f"unknown executor {value!r}; choose one of {', '.join(EXECUTORS)}")
    return value


_EXECUTOR = typer.Option("process", "--executor", callback=_executor_choice,
                         help="Where independent fits (starts, scan points, refits) run: process (a local pool), "
                              "dask or serial.")
_WORKERS = typer.Option(None, "--workers", min=1,
                        help="Processes of the pool or LocalCluster (default: one per fit, at most the CPU count).")
_SCHEDULER = typer.Option(None, "--scheduler",
                          help="Dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster).")
_DEVICES = typer.Option(0, "--devices", min=0,
                        help="Devices the events are split over (pwa.sharding): 0 = every local accelerator "
                             "(GPU/TPU), or one CPU device; N = the first N of jax.devices().")
_DISTRIBUTED = typer.Option(False, "--distributed/--no-distributed",
                            help="Call jax.distributed.initialize() first (multi-host: coordinator from the "
                                 "cluster environment or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                                 "JAX_PROCESS_ID); the events are then split over every host's devices and "
                                 "only process 0 writes.")


def _device_setup(devices: int, distributed: bool):
    """Start jax.distributed if asked; return the mesh the events are split over (None: one device)."""
    import jax

    from pwa.sharding import event_mesh

    if distributed:
        try:
            jax.distributed.initialize()
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"--distributed: jax.distributed.initialize() failed: {exc}") from None
    available = jax.devices()
    if devices == 0:
        devices = len(available) if available[0].platform != "cpu" else 1
    if devices > len(available):
        raise UserError(f"--devices {devices}: only {len(available)} devices available "
                        f"({available[0].platform})")
    return event_mesh(devices) if devices > 1 else None


@app.command()
@handle_errors
def fit(
    model: Path = typer.Option(None, "--model", help="Model card (YAML); or --fit-card."),
    data: Path = typer.Option(None, "--data", help="Data event file (.parquet, .root, .npz); or --fit-card."),
    mc: str = typer.Option(None, "--mc", help="Normalisation MC: an event file, or 'flow' to sample the fast "
                                              "simulator; or --fit-card."),
    fit_card: Path = typer.Option(None, "--fit-card",
                                  help="A joint fit of several channels sharing parameters (YAML: channels with "
                                       "model, data and mc each, and the shared parameter names) instead of "
                                       "--model/--data/--mc; see the README, 'Several data sets in one fit'."),
    flow_model: Path = _FLOW,
    n_mc: int = _NMC,
    out: Path = typer.Option(Path("fit_out"), "--out", help="Output folder."),
    optimizer: str = _OPT,
    starts: int = typer.Option(None, "--starts", min=1,
                               help="Starts (first: card values; others randomised). Default: 1, or "
                                    "pwa.starts.FLOATING_LINESHAPE_STARTS when a mass or width floats."),
    seed: int = seed_option(),
    coarse_mc: int = typer.Option(0, "--coarse-mc", min=0,
                                  help="With several starts and a floating mass or width: minimise every start "
                                       "first with about this many MC events (every k-th), then with the full MC "
                                       "from there; e.g. 20000 for an MC of 200,000 (0: no coarse stage)."),
    refine: int = typer.Option(0, "--refine", min=0,
                               help="With --coarse-mc: only this many starts, those with the lowest coarse "
                                    "NLL~, go on to the full MC (0: all)."),
    sf_target: float = _SFT,
    sf_lambda: float = _SFL,
    lasso: float = typer.Option(0.0, "--lasso", min=0.0, help="LASSO strength lambda (0 = off)."),
    reweight: Path = typer.Option(None, "--reweight",
                                  help="With --mc flow: conventional MC file; a classifier between it and the "
                                       "flow sample gives per-event weights D/(1-D) (DCTR)."),
    significance: bool = typer.Option(False, "--significance", help="Refit without each resonance."),
    significance_toys: int = typer.Option(0, "--significance-toys", min=0,
                                          help="Toy-calibrated significance of each resonance: N pseudo-"
                                               "experiments drawn from the MC under the fit without it, each "
                                               "fitted with and without it (pwa.significance_toys; unweighted "
                                               "data)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write projection plots."),
    profile: list[str] = typer.Option([], "--profile",
                                      help="Profile-likelihood (MINOS-like) interval of a parameter or of a fit "
                                           "fraction 'F(<resonance>)' (repeat it; 'fractions' = every F), "
                                           "beside its Hessian error (pwa.profile)."),
    background: Path = _BACKGROUND,
    background_fraction: float = _BACKGROUND_FRACTION,
    float_background: bool = _FLOAT_BACKGROUND,
    background_method: str = _BACKGROUND_METHOD,
    sideband: Path = _SIDEBAND,
    sideband_scale: float = _SIDEBAND_SCALE,
    binned_mc: int = typer.Option(0, "--binned-mc", min=0,
                                  help="With floating masses/widths: bin the normalisation in this many mass bins "
                                       "with a second-order lineshape expansion (pwa.binned; J/psi -> gamma P P "
                                       "and other one-node models); an iteration then costs the same for any MC "
                                       "size. 0: the exact per-event sum. 2000 is accurate to ~1e-8 in ln N."),
    mc_statistics: bool = typer.Option(True, "--mc-statistics/--no-mc-statistics",
                                       help="Report the error that the finite normalisation sample adds to every "
                                            "parameter and fraction (pwa.mc_statistics; it scales as 1/sqrt(M))."),
    strict: bool = typer.Option(False, "--strict",
                                help="Make warnings about the inputs errors (normalisation MC that does not "
                                     "cover the data, fewer effective events than free parameters) before "
                                     "the fit starts."),
    executor: str = _EXECUTOR,
    workers: int = _WORKERS,
    scheduler: str = _SCHEDULER,
    devices: int = _DEVICES,
    distributed: bool = _DISTRIBUTED,
) -> None:
    """Unbinned maximum-likelihood fit; writes result.json, report.md and plots into --out.

    With --starts > 1 the starts run in parallel on --executor. The events are
    split over --devices (all local GPUs by default) and, with --distributed,
    over several hosts.
    """
    _float64()
    import jax

    from pwa.errors import FitError, ModelCardError
    from pwa.fit import fit as run_fit, significances
    from pwa.problem import FitProblem
    from pwa.report import write_fit_outputs
    from pwa.sharding import shard_problem

    if fit_card is not None:
        if model is not None or data is not None or mc is not None:
            raise UserError("--fit-card names the channels' cards, data and MC: give it without --model, --data "
                            "and --mc")
        if coarse_mc or refine:
            raise UserError("--coarse-mc and --refine are options of a single-channel fit, not of --fit-card")
        return _joint_fit(fit_card, out, _fit_config(optimizer, starts or 1, seed, sf_target, sf_lambda, lasso),
                          plots)
    missing = [flag for flag, v in (("--model", model), ("--data", data), ("--mc", mc)) if v is None]
    if missing:
        raise UserError(f"missing option {', '.join(missing)}: a fit needs --model, --data and --mc "
                        "(or --fit-card for a joint fit)")
    check_output(out, folder=True, inputs={"--model": model, "--data": data, "--mc": None if mc == "flow" else mc,
                                           "--flow-model": flow_model, "--reweight": reweight,
                                           "--background": background, "--sideband": sideband},
                 files=("result.json", "report.md"))
    _check_background_method(background_method)
    if significance and (sf_lambda or lasso):
        raise UserError("--significance compares plain NLLs: switch off --sf-lambda and --lasso")
    if profile and (sf_lambda or lasso):
        raise UserError("--profile intervals are of the plain NLL: switch off --sf-lambda and --lasso")
    if significance_toys and (sf_lambda or lasso):
        raise UserError("--significance-toys compares plain NLLs: switch off --sf-lambda and --lasso")
    if significance_toys and sideband is not None:
        raise UserError("--significance-toys needs unweighted data, and --sideband gives signed weights: use "
                        "--significance (Wilks, scaled by sum w / sum w^2)")
    mesh = _device_setup(devices, distributed)

    if refine and not coarse_mc:
        raise UserError("--refine chooses among the starts of the coarse stage: give --coarse-mc too")
    config = _fit_config(optimizer, starts or 1, seed, sf_target, sf_lambda, lasso, coarse_mc, refine)
    m, data_events, mc_events, mc_info = _load_fit_inputs(model, data, mc, flow_model, n_mc, seed, reweight)
    if starts is None:  # several starts by default when a mass or width floats
        from dataclasses import replace

        from pwa.starts import default_starts

        config = replace(config, starts=default_starts(m))
    for flag, on in (("--significance", significance), ("--significance-toys", significance_toys)):
        if on and len(m.resonance_names) < 2:
            raise UserError(f"{flag}: {model} has one resonance; there is no reduced model to refit")
    if significance_toys and np.any(data_events.weight_array != 1.0):
        raise UserError(f"--significance-toys: {data} has weighted events; the toys are unweighted: use "
                        "--significance (Wilks, scaled by sum w / sum w^2)")
    data_events, bkg, mc_info = _with_background(
        m, data_events, mc_events, mc_info, seed, background=background, background_fraction=background_fraction,
        float_background=float_background, background_method=background_method, sideband=sideband,
        sideband_scale=sideband_scale)
    warnings, coverage = _input_warnings(m, data_events, mc_events, seed, strict)
    mc_info = {**mc_info, "mc_coverage": coverage}
    typer.echo(f"fitting {m} to {len(data_events)} events ({len(mc_events)} MC events) ...", err=True)
    problem = FitProblem.build(m, data_events, mc_events, background=bkg)
    fit_problem = problem
    if binned_mc:
        from pwa.binned import with_binned_normalisation

        if mesh is not None:
            raise UserError("--binned-mc runs on one device: give --devices 1 (the binned sums are small)")
        fit_problem = with_binned_normalisation(problem, binned_mc)  # the outputs use the exact problem
        typer.echo(f"normalisation binned in {binned_mc} mass bins (pwa.binned)", err=True)
    if mesh is not None:  # the fit runs on the sharded caches; the outputs use the host ones
        typer.echo(f"events split over {mesh.devices.size} devices ({mesh.devices.flat[0].platform})", err=True)
        fit_problem = shard_problem(problem, mesh)
    result = run_fit(m, data_events, mc_events, config, problem=fit_problem, executor=executor, workers=workers,
                     scheduler=scheduler)
    if jax.process_index() != 0:  # multi-host: one writer
        return
    typer.echo(str(result))

    mc_stat = None
    if mc_statistics:
        from pwa.mc_statistics import mc_statistics_of_fit

        mc_stat = mc_statistics_of_fit(problem, result, mc=mc_events)
        typer.echo(str(mc_stat))

    def write(sig=None):
        return write_fit_outputs(out, result, problem, data=data_events, mc=mc_events, significance=sig,
                                 plots=plots, extra=mc_info, warnings=warnings, mc_statistics=mc_stat)

    paths = write()  # the fit is on disk before anything else can fail
    typer.echo(f"wrote {', '.join(p.name for p in paths)} to {out}")
    if significance:
        try:
            with progress_bar() as bar:
                task = bar.add_task("significance refits", total=len(m.resonance_names))
                sig = significances(m, data_events, mc_events, result, config, background=bkg, problem=problem,
                                    progress=lambda name: bar.advance(task))
        except (FitError, ModelCardError) as exc:
            raise UserError(f"--significance: {exc} (the fit itself is written to {out / 'result.json'})") from None
        for s in sig:
            typer.echo(f"  {s.resonance:<14} {s.sigma:6.1f} sigma  (Delta NLL {s.delta_nll:.2f}, "
                       f"{s.n_parameters} parameters)")
        write(sig)
        typer.echo(f"added the significances to {out / 'result.json'} and {out / 'report.md'}")
    if profile:
        from pwa.profile import profile_interval

        wanted = [q for item in profile
                  for q in ([f"F({r})" for r in m.resonance_names] if item == "fractions" else [item])]
        try:
            with progress_bar() as bar:
                task = bar.add_task("profile intervals", total=len(wanted))
                intervals = []
                for q in wanted:
                    intervals.append(profile_interval(problem, result, q, config))
                    bar.advance(task)
        except FitError as exc:
            raise UserError(f"--profile: {exc} (the fit itself is written to {out / 'result.json'})") from None
        for iv in intervals:
            typer.echo(f"  {iv}")
        mc_info = {**mc_info, "profile": {iv.quantity: iv.to_dict() for iv in intervals}}
        write(sig if significance else None)
        typer.echo(f"added the profile intervals to {out / 'result.json'}")
    if significance_toys:
        from pwa.significance_toys import toy_significances

        try:
            with progress_bar() as bar:
                tasks = {name: bar.add_task(f"{name}: significance toys", total=significance_toys)
                         for name in m.resonance_names}
                toys = toy_significances(m, data_events, mc_events, result, significance_toys, config, seed=seed,
                                         background=bkg,
                                         progress=lambda name, i: bar.update(tasks[name], completed=i))
        except (FitError, ModelCardError) as exc:
            raise UserError(f"--significance-toys: {exc} (the fit itself is written to {out / 'result.json'})"
                            ) from None
        for t in toys:
            typer.echo(f"  {t}")
        mc_info = {**mc_info, "significance_toys": {t.resonance: t.to_dict() for t in toys}}
        write(sig if significance else None)
        typer.echo(f"added the toy significances to {out / 'result.json'}")
    if not result.converged:
        typer.echo("warning: the fit did not converge (see report.md)", err=True)
        raise typer.Exit(3)


def _joint_fit(fit_card: Path, out: Path, config, plots: bool) -> None:
    """``pwa fit --fit-card``: the joint fit of the card's channels (pwa.joint)."""
    from fastsim.events import read_events, write_text_atomic
    from pwa import Model, load_model_card
    from pwa.joint import JointProblem, fit_joint, load_fit_card
    from pwa.problem import FitProblem
    from pwa.report import write_fit_outputs

    card = load_fit_card(fit_card)
    inputs = {"--fit-card": fit_card}
    for c, entry in card.channels.items():
        inputs.update({f"{c}.model": card.path(entry.model), f"{c}.data": card.path(entry.data),
                       f"{c}.mc": card.path(entry.mc)})
        for what in ("background", "sideband"):
            if getattr(entry, what) is not None:
                inputs[f"{c}.{what}.sample"] = card.path(getattr(entry, what).sample)
    check_output(out, folder=True, inputs=inputs, files=("joint.json", "joint.md"))
    channels, events, warnings, infos = {}, {}, {}, {}
    for c, entry in card.channels.items():
        m = Model.from_card(load_model_card(card.path(entry.model)))
        d = read_events(card.path(entry.data), m.reaction)
        mc = read_events(card.path(entry.mc), m.reaction)
        b, sb = entry.background, entry.sideband
        d, bkg, infos[c] = _with_background(
            m, d, mc, {}, config.seed, background=b and card.path(b.sample),
            background_fraction=b.fraction if b else 0.0, float_background=bool(b and b.floating),
            background_method=b.method if b else "classifier", sideband=sb and card.path(sb.sample),
            sideband_scale=sb.scale if sb else 1.0)
        warnings[c], _ = _input_warnings(m, d, mc, config.seed, strict=False)
        typer.echo(f"channel {c}: {m} with {len(d)} events ({len(mc)} MC events)", err=True)
        channels[c] = FitProblem.build(m, d, mc, background=bkg)
        events[c] = (d, mc)
    result = fit_joint(JointProblem.build(channels, card.shared), config)
    typer.echo(str(result))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "joint.json", result.to_json())
    write_text_atomic(out / "joint.md", f"# Joint fit of {fit_card}\n\n```\n{result}\n```\n")
    for c, r in result.channels.items():
        d, mc = events[c]
        write_fit_outputs(out / c, r, channels[c], data=d, mc=mc, plots=plots, warnings=warnings[c],
                          extra={"fit_card": str(fit_card), "channel": c, **infos[c]})
    typer.echo(f"wrote joint.json, joint.md and {', '.join(result.channels)}/ (result.json, report.md) to {out}")
    if not result.converged:
        typer.echo("warning: the joint fit did not converge", err=True)
        raise typer.Exit(3)


def _input_warnings(model, data, mc, seed: int, strict: bool) -> tuple[list[str], dict]:
    """Checks of the fit's inputs that make a result doubtful: warnings, or with --strict errors.

    The fit result itself warns about fewer effective data events than free
    parameters (pwa.fit); --strict refuses them here, before the fit.
    """
    from pwa.coverage import mc_coverage

    from pwa.problem import effective_size

    n_eff = effective_size(data.weight_array)
    if strict and n_eff < model.n_free:
        raise UserError(f"--strict: the data have {n_eff:.1f} effective events ((sum w)^2 / sum w^2), fewer "
                        f"than the {model.n_free} free parameters")
    coverage = mc_coverage(data, mc, seed=seed)
    if coverage.covered:
        return [], coverage.to_dict()
    if strict:
        raise UserError(f"--strict: {coverage.message}")
    typer.echo(f"warning: {coverage.message}", err=True)
    return [coverage.message], coverage.to_dict()


def _grid(spec: str, log: bool) -> list[float]:
    """'a,b,c' or 'start:stop:n' (linear, or logarithmic if log)."""
    try:
        if ":" in spec:
            a, b, n = spec.split(":")
            if log:
                return list(np.logspace(np.log10(float(a)), np.log10(float(b)), int(n)))
            return list(np.linspace(float(a), float(b), int(n)))
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"cannot read the grid {spec!r}: give 'a,b,c' or 'start:stop:n'") from None


@app.command("scan-fraction")
@handle_errors
def scan_fraction(
    model: Path = _MODEL,
    data: Path = _DATA,
    mc: str = _MC,
    flow_model: Path = _FLOW,
    n_mc: int = _NMC,
    targets: str = typer.Option("1.00:1.40:9", "--targets", help="SF targets: 'a,b,c' or 'start:stop:n'."),
    sf_lambda: float = typer.Option(1e-2, "--sf-lambda", min=0.0, help="Constraint strength."),
    optimizer: str = _OPT,
    seed: int = seed_option(),
    out: Path = typer.Option(Path("scan_out"), "--out", help="Output folder."),
    background: Path = _BACKGROUND,
    background_fraction: float = _BACKGROUND_FRACTION,
    float_background: bool = _FLOAT_BACKGROUND,
    background_method: str = _BACKGROUND_METHOD,
    sideband: Path = _SIDEBAND,
    sideband_scale: float = _SIDEBAND_SCALE,
    executor: str = _EXECUTOR,
    workers: int = _WORKERS,
    scheduler: str = _SCHEDULER,
) -> None:
    """Fraction scan: minimise NLL~ over a grid of SF targets; table and plot of NLL against SF.

    With --executor serial each target starts from the previous minimum (one
    branch of minima); otherwise the targets are independent fits from the
    card's values, run in parallel.
    """
    _float64()
    from fastsim.events import write_text_atomic
    from pwa.problem import FitProblem
    from pwa.optimize import dumps
    from pwa.scans import plot_fraction_scan, scan_fraction as run_scan

    check_output(out, folder=True, inputs={"--model": model, "--data": data, "--mc": None if mc == "flow" else mc,
                                           "--flow-model": flow_model, "--background": background,
                                           "--sideband": sideband}, files=("scan.md", "scan.json"))
    _check_background_method(background_method)
    grid = _grid(targets, log=False)
    config = _fit_config(optimizer, 1, seed, grid[0], sf_lambda, 0.0)
    m, data_events, mc_events, mc_info = _load_fit_inputs(model, data, mc, flow_model, n_mc, seed)
    data_events, bkg, mc_info = _with_background(
        m, data_events, mc_events, mc_info, seed, background=background, background_fraction=background_fraction,
        float_background=float_background, background_method=background_method, sideband=sideband,
        sideband_scale=sideband_scale)
    problem = FitProblem.build(m, data_events, mc_events, background=bkg)
    with progress_bar() as bar:
        task = bar.add_task("fraction scan", total=len(grid))
        points = run_scan(problem, grid, config, progress=lambda p: bar.advance(task), executor=executor,
                          workers=workers, scheduler=scheduler)
    nll_min = min(p.result.nll for p in points)
    lines = ["| SF target (%) | SF fitted (%) | NLL - min | converged |", "|---|---|---|---|"]
    lines += [f"| {100 * p.setting:.1f} | {100 * p.result.sum_of_fractions:.2f} ± "
              f"{100 * p.result.sum_of_fractions_error:.2f} | {p.result.nll - nll_min:.3f} | "
              f"{p.result.converged} |" for p in points]
    table = "\n".join(lines)
    typer.echo(table)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "scan.md", f"# Fraction scan of {model}\n\nlambda = {sf_lambda:g}\n\n{table}\n")
    write_text_atomic(out / "scan.json", dumps({**mc_info, "sf_lambda": sf_lambda,
                                                "points": [p.to_dict() for p in points]}))
    plot_fraction_scan(points, out / "scan.png")
    typer.echo(f"wrote scan.md, scan.json, scan.png to {out}")


@app.command("lasso-scan")
@handle_errors
def lasso_scan(
    model: Path = _MODEL,
    data: Path = _DATA,
    mc: str = _MC,
    flow_model: Path = _FLOW,
    n_mc: int = _NMC,
    lambdas: str = typer.Option("1:1000:7", "--lambdas", help="LASSO strengths: 'a,b,c' or 'start:stop:n' (log)."),
    threshold: float = typer.Option(1e-3, "--threshold", help="F_R above which a resonance counts as selected."),
    optimizer: str = _OPT,
    seed: int = seed_option(),
    out: Path = typer.Option(Path("lasso_out"), "--out", help="Output folder."),
    background: Path = _BACKGROUND,
    background_fraction: float = _BACKGROUND_FRACTION,
    float_background: bool = _FLOAT_BACKGROUND,
    background_method: str = _BACKGROUND_METHOD,
    sideband: Path = _SIDEBAND,
    sideband_scale: float = _SIDEBAND_SCALE,
    executor: str = _EXECUTOR,
    workers: int = _WORKERS,
    scheduler: str = _SCHEDULER,
) -> None:
    """LASSO path: every F_R against lambda, AIC/BIC per point, the selected model.

    With --executor serial each lambda starts from the previous minimum;
    otherwise the lambdas, then the refits of the distinct selections, are
    independent fits (from the card's values) run in parallel.
    """
    _float64()
    from fastsim.events import write_text_atomic
    from pwa.optimize import dumps
    from pwa.scans import lasso_scan as run_lasso, plot_lasso_path

    check_output(out, folder=True, inputs={"--model": model, "--data": data, "--mc": None if mc == "flow" else mc,
                                           "--flow-model": flow_model, "--background": background,
                                           "--sideband": sideband}, files=("lasso.md", "lasso.json"))
    _check_background_method(background_method)
    grid = _grid(lambdas, log=True)
    config = _fit_config(optimizer, 1, seed, 1.0, 0.0, grid[0])
    m, data_events, mc_events, mc_info = _load_fit_inputs(model, data, mc, flow_model, n_mc, seed)
    data_events, bkg, mc_info = _with_background(
        m, data_events, mc_events, mc_info, seed, background=background, background_fraction=background_fraction,
        float_background=float_background, background_method=background_method, sideband=sideband,
        sideband_scale=sideband_scale)
    with progress_bar() as bar:
        task = bar.add_task("LASSO path", total=len(grid))
        path, best = run_lasso(m, data_events, mc_events, grid, config, threshold=threshold,
                               progress=lambda p: bar.advance(task), executor=executor, workers=workers,
                               scheduler=scheduler, background=bkg)
    names = m.resonance_names
    lines = ["| lambda | " + " | ".join(names) + " | k | AIC | BIC |",
             "|---|" + "---|" * (len(names) + 3)]
    for p in path:
        fr = " | ".join(f"{100 * p.result.fractions[i, i]:.2f}" for i in range(len(names)))
        lines.append(f"| {p.lam:.3g} | {fr} | {p.n_parameters} | {p.aic:.1f} | {p.bic:.1f} |")
    table = "\n".join(lines)
    typer.echo(table)
    typer.echo(f"selected (min BIC at lambda = {best.lam:.3g}): {', '.join(best.selected)}")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "lasso.md", f"# LASSO path of {model}\n\nFractions in %.\n\n{table}\n\n"
                                        f"Selected (min BIC, lambda = {best.lam:.3g}): {', '.join(best.selected)}\n")
    write_text_atomic(out / "lasso.json", dumps({**mc_info, "threshold": threshold,
                                                 "selected": list(best.selected), "selected_lambda": best.lam,
                                                 "path": [p.to_dict() for p in path]}))
    plot_lasso_path(path, best, out / "lasso.png")
    typer.echo(f"wrote lasso.md, lasso.json, lasso.png to {out}")


@app.command()
@handle_errors
def closure(
    model: Path = _MODEL,
    toys: int = typer.Option(20, "--toys", min=1, help="Number of toys K."),
    n_data: int = typer.Option(20_000, "--n-data", min=10, help="Data events per toy N."),
    n_train: int = typer.Option(50_000, "--n-train", min=100, help="Conventional MC budget T (the flow trains on it)."),
    n_flow: int = typer.Option(500_000, "--n-flow", min=100, help="Flow events F per toy."),
    n_reference: int = typer.Option(2_000_000, "--n-reference", min=100, help="Reference conventional MC R."),
    out: Path = typer.Option(Path("closure_out"), "--out", help="Output folder (toys kept for resuming)."),
    seed: int = seed_option(),
    detector: str = typer.Option("default", "--detector", help="Detector card: path, 'default' or 'none'."),
    reweight: bool = typer.Option(True, "--reweight/--no-reweight", help="Also fit with DCTR-reweighted flow MC."),
    flow_epochs: int = typer.Option(20, "--flow-epochs", min=1, help="Epochs of each toy's flow training."),
    flow_minutes: float = typer.Option(0.0, "--flow-minutes", min=0.0, help="Time budget per flow training (0: none)."),
    flow_layers: int = typer.Option(0, "--flow-layers", min=0, help="Coupling layers (0: the model default)."),
    flow_hidden: int = typer.Option(0, "--flow-hidden", min=0, help="Hidden units (0: the model default)."),
    flow_bins: int = typer.Option(0, "--flow-bins", min=0, help="Spline bins (0: the model default)."),
    flow_batch_size: int = typer.Option(2048, "--flow-batch-size", min=1, help="Events per training step."),
    flow_lr: float = typer.Option(2e-3, "--flow-lr", min=0.0, help="Peak learning rate of the flow training."),
    flow_patience: int = typer.Option(5, "--flow-patience", min=1,
                                      help="Epochs without a validation improvement before the training stops."),
    flow_fold: bool = typer.Option(True, "--flow-fold/--no-flow-fold",
                                   help="Train the flows on folded coordinates (fastsim train --fold); the MC "
                                        "of each toy is tested for the detector symmetries first."),
    flow_bootstrap: int = typer.Option(0, "--flow-bootstrap", min=0,
                                       help="Also fit with the bootstrap-bias-corrected flow (flow_bc): this "
                                            "many replica flows trained on T events of the toy's flow."),
    flow_gates: bool = typer.Option(True, "--flow-gates/--no-flow-gates",
                                    help="Flows with acceptance gates at the detector card's cuts "
                                         "(fastsim train --gates)."),
    optimizer: str = _OPT,
    workers: int = typer.Option(1, "--workers", min=1, help="Toys run in parallel processes."),
    executor: str = typer.Option("process", "--executor", help="process, serial or dask."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a LocalCluster)."),
) -> None:
    """Closure test: fits with flow MC, small conventional MC and a large reference, over K toys."""
    from .closure import ClosureSettings, run_closure

    hp = {}
    if flow_layers:
        hp["n_layers"] = flow_layers
    if flow_hidden:
        hp["hidden"] = flow_hidden
    if flow_bins:
        hp["n_bins"] = flow_bins
    check_output(out, folder=True, inputs={"--model": model, "--detector": detector_path(detector)},
                 files=("report.md", "metrics.json"))
    _fit_config(optimizer, 1, seed, 1.0, 0.0, 0.0)  # an unknown optimizer fails here, not in every toy
    # Validate the cards before any toy starts; the toys are keyed on what they say.
    from fastsim.events import load_detector_card
    from pwa import load_model_card

    from .closure import input_hashes

    inputs = input_hashes(load_model_card(model), load_detector_card(detector))
    settings = ClosureSettings(model=str(model), toys=toys, n_data=n_data, n_train=n_train, n_flow=n_flow,
                               n_reference=n_reference, seed=seed, detector=detector, reweight=reweight,
                               flow_epochs=flow_epochs, flow_minutes=flow_minutes, flow_hyperparameters=hp,
                               optimizer=optimizer, flow_batch_size=flow_batch_size, flow_learning_rate=flow_lr,
                               flow_patience=flow_patience, flow_fold=flow_fold, flow_bootstrap=flow_bootstrap,
                               flow_gates=flow_gates, inputs=inputs)
    with progress_bar() as bar:
        task = bar.add_task("closure toys", total=toys)
        summary = run_closure(settings, out, workers=workers, executor=executor, scheduler=scheduler,
                              progress=lambda done, total: bar.update(task, completed=done))
    typer.echo((out / "report.md").read_text())
    typer.echo(f"wrote report.md, metrics.json, pulls.png, shifts.png to {out} "
               f"({summary['wall_time_this_run_s']:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``pwa ...`` (``argv`` for calling it from Python)."""
    raise SystemExit(run_app(app, "pwa", argv))


if __name__ == "__main__":
    main()
