"""``fastsim``: conventional MC and the normalizing-flow fast simulator."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .common import check_output, detector_path, handle_errors, progress_bar, run_app, seed_option, version_callback

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Conventional MC generation and the flow fast simulator.")


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=version_callback,
                                       is_eager=True, help="Print the version and exit.")) -> None:
    pass


@app.command()
@handle_errors
def generate(
    n: int = typer.Option(..., "--n", min=1, help="Number of accepted events to write."),
    out: Path = typer.Option(..., "--out", help="Output event file (.parquet, .root or .npz)."),
    model: Path = typer.Option(None, "--model",
                               help="Model card (YAML) whose reaction to generate; default J/psi -> gamma K+ K-."),
    detector: str = typer.Option("default", "--detector",
                                 help="Detector card: a YAML path, 'default' or 'none' (generator level)."),
    seed: int = seed_option(),
    chunk_size: int = typer.Option(200_000, "--chunk-size", min=1000, help="Generated events per chunk."),
    weighted: bool = typer.Option(True, "--weighted/--flat",
                                  help="With --model: draw the masses of the card's narrow resonances (alone at a "
                                       "node, narrower than 1 %% of its mass range, e.g. the phi) from a "
                                       "Breit-Wigner and write flat / proposal weights (the normalisation sum's "
                                       "v_j); --flat: unweighted flat events."),
) -> None:
    """Generate conventional MC: flat phase space through the toy detector."""
    from fastsim.events import JPSI_GAMMA_KK, Detector, EventWriter, iter_conventional_mc, load_detector_card

    check_output(out, inputs={"--model": model, "--detector": detector_path(detector)})
    proposals: dict = {}
    if model is None:
        reaction = JPSI_GAMMA_KK
    else:
        from pwa import Model  # imports JAX: only when a card is given
        from pwa.card import load_model_card
        from pwa.fractions import integration_proposals

        card = load_model_card(model)
        reaction = card.reaction.to_reaction()
        if weighted:
            proposals = integration_proposals(Model.from_card(card))
    det = Detector(load_detector_card(detector))
    det.check(reaction)
    stats: dict = {}
    t0 = time.perf_counter()
    description = {"generator": "fastsim generate", "detector": det.name, "seed": seed,
                   "proposals": {k: list(v) for k, v in proposals.items()}, "flat_fraction": 0.0}
    with EventWriter(out, reaction, metadata=description) as writer, progress_bar() as bar:
        task = bar.add_task(f"conventional MC ({det.name})", total=n)
        for chunk in iter_conventional_mc(n, det, reaction=reaction, seed=seed, chunk_size=chunk_size,
                                          stats=stats, proposals=proposals or None):
            writer.write(chunk)
            bar.advance(task, len(chunk))
    dt = time.perf_counter() - t0
    acc = stats["n_passed"] / stats["n_generated"]
    typer.echo(f"wrote {writer.n_written} events of {reaction} ({', '.join(reaction.prefixes)}) to {out}")
    if proposals:
        typer.echo("weighted: Breit-Wigner proposals " + ", ".join(f"{k} ({m:g}, {w:g} GeV)"
                                                              for k, (m, w) in proposals.items())
                   + "; column 'weight' = flat / proposal density")
    typer.echo(f"detector {det.name}: acceptance x efficiency = {acc:.4f} "
               f"({stats['n_passed']} of {stats['n_generated']} generated {'proposals ' if proposals else ''}passed)")
    typer.echo(f"throughput: {writer.n_written / dt:,.0f} accepted events/s ({dt:.2f} s)")


def _reaction_of(mc: Path, model: Path | None):
    """The reaction of an event file: the card's (--model), else the file's description, else
    J/psi -> gamma K+ K- (files of other programs). A card and a description that differ are refused."""
    from fastsim.checkpoint import same_reaction
    from fastsim.events import JPSI_GAMMA_KK, reaction_of_file

    from .common import UserError

    in_file = reaction_of_file(mc) if mc.is_file() else None
    if model is None:
        return in_file or JPSI_GAMMA_KK
    from pwa.card import load_model_card

    reaction = load_model_card(model).reaction.to_reaction()
    if in_file is not None and not same_reaction(in_file, reaction):
        raise UserError(f"{mc}: holds events of {in_file}, but --model {model} describes {reaction}")
    return reaction


def _tree_training_setup(mc: Path, events, reaction, card, fold: bool):
    """(coordinates, symmetry test, training weights, note) of a flow in a decay tree's coordinates,
    with the proposals the file's description names (fastsim.tree_coords.proposal_training)."""
    from fastsim.events import read_event_metadata
    from fastsim.tree_coords import proposal_training

    from .common import UserError

    proposals = {k: tuple(v) for k, v in read_event_metadata(mc).get("proposals", {}).items()}
    try:
        coords, symmetry, weights = proposal_training(reaction, events.momenta, events.weights, proposals=proposals,
                                                      card=card, fold=fold, source=str(mc))
    except ValueError as exc:  # proposals without weights, a symmetry that flips no coordinate
        raise UserError(str(exc)) from None
    note = ""
    if coords.proposals:
        note = (f" (proposal MC: the flow learns the proposal density "
                f"{', '.join(f'{k} {m:g} GeV, width {w:g}' for k, (m, w) in coords.proposals.items())} and its "
                f"samples carry flat / proposal weights; training weights v = w / w_R have effective size "
                f"{weights.sum() ** 2 / (weights ** 2).sum():.0f})")
    return coords, symmetry, weights, note


def _parse_hp(items: list[str]) -> dict:
    """``key=value`` strings -> dict of ints/floats."""
    from .common import UserError

    out: dict = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise UserError(f"--hp expects key=value, got {item!r}")
        try:
            out[key] = int(val)
        except ValueError:
            try:
                out[key] = float(val)
            except ValueError:
                raise UserError(f"--hp {key}: {val!r} is not a number") from None
    return out


def _train_errors(fn):
    """TrainingError is a user error (bad resume, diverging loss): one red line, exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from fastsim.errors import TrainingError

        from .common import UserError

        try:
            return fn(*args, **kwargs)
        except TrainingError as exc:
            raise UserError(str(exc)) from None

    return wrapper


@app.command()
@handle_errors
@_train_errors
def train(
    mc: Path = typer.Option(..., "--mc", help="Detector-level MC event file to learn."),
    out: Path = typer.Option(..., "--out", help="Model checkpoint to write (.pt), updated every epoch."),
    model: Path = typer.Option(None, "--model",
                               help="Model card whose reaction the MC is of (default: the reaction the event "
                                    "file's description names, else J/psi -> gamma K+ K-)."),
    coordinates: str = typer.Option("auto", "--coordinates",
                                    help="'helicity' (J/psi -> gamma P1 P2 only: the five helicity variables, "
                                         "with gates and edge knots), 'tree' (the masses and angles of the "
                                         "reaction's first decay chain) or 'auto' (helicity for a photon and "
                                         "two tracks, tree otherwise)."),
    kind: str = typer.Option("flow", "--kind", help="Generator: 'flow' (spline flow) or 'vae'."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Maximum number of epochs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = seed_option(),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    detector: str = typer.Option("default", "--detector",
                                 help="Detector card the MC was made with (recorded in the checkpoint)."),
    batch_size: int = typer.Option(2048, "--batch-size", min=1),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (cosine decay)."),
    patience: int = typer.Option(5, "--patience", min=1, help="Early-stopping patience in epochs."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", help="Wall-clock budget (0: none)."),
    hp: list[str] = typer.Option([], "--hp", help="Model hyperparameter key=value (repeatable)."),
    edge_knots: bool = typer.Option(True, "--edge-knots/--no-edge-knots",
                                    help="Flow: piecewise-linear pre-transform with knots at the photon "
                                         "acceptance edges of the detector card (m, cos theta_X)."),
    gates: bool = typer.Option(True, "--gates/--no-gates",
                               help="Flow: multiply the density by soft steps at the detector card's "
                                    "cuts on each particle's lab variables (|cos theta|, pT, photon "
                                    "barrel/end cap and energy), positions and widths fitted with the "
                                    "flow (fastsim.acceptance); the flow continues smoothly across the "
                                    "edges instead of blurring them."),
    fold: bool = typer.Option(True, "--fold/--no-fold",
                              help="Learn the density on the fundamental domain of the detector's "
                                   "symmetries (rotations about and reflections of the beam axis, "
                                   "P1 <-> P2): 4 coordinates, 8 times the events per volume. The MC "
                                   "is tested for these symmetries first; an asymmetric detector needs "
                                   "--no-fold."),
) -> None:
    """Train a fast simulator (flow or VAE) on detector-level MC."""
    from fastsim.events import EventFileError, load_detector_card, read_events, reaction_of_file

    from .common import UserError

    if kind not in ("flow", "vae"):
        raise UserError(f"--kind must be flow or vae, got {kind!r}")
    if coordinates not in ("auto", "helicity", "tree"):
        raise UserError(f"--coordinates must be auto, helicity or tree, got {coordinates!r}")
    inputs = {"--mc": mc, "--detector": detector_path(detector), "--model": model}
    check_output(out, inputs=inputs)
    check_output(out.with_name(out.stem + "_training.png"), option="--out (its training plot)", inputs=inputs)
    from fastsim.checkpoint import file_fingerprint, load_checkpoint, package_versions
    from fastsim.coords import CoordinateMap
    from fastsim.errors import TrainingError
    from fastsim.generator import resolve_device
    from fastsim.training import TrainConfig, fit, model_hyperparameters, plot_training_curve
    from fastsim.validation import require_symmetry

    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    card = load_detector_card(detector)
    reaction = _reaction_of(mc, model)
    from .closure import uses_helicity_coordinates

    # the helicity map's gates and edge knots treat P1 and P2 as tracks
    tree = coordinates == "tree" or (coordinates == "auto" and not uses_helicity_coordinates(reaction))
    if coordinates == "helicity" and not reaction.is_radiative_pair:
        raise UserError(f"--coordinates helicity: defined for parent -> gamma P1 P2, not for {reaction}")
    if not tree and gates and kind == "flow" and card is not None and not uses_helicity_coordinates(reaction):
        raise UserError(f"--coordinates helicity --gates: the helicity map's gates treat P1 and P2 of {reaction} "
                        "as tracks; --coordinates tree gates every particle by its species (or give --no-gates)")
    try:
        events = read_events(mc, reaction)
    except EventFileError as exc:
        if model is None and reaction_of_file(mc) is None:
            raise UserError(f"{exc}. The file carries no reaction description, so {reaction} was assumed: "
                            "give the reaction with --model CARD") from None
        raise
    coords = None if tree else CoordinateMap.for_reaction(reaction, fold=fold)
    fingerprint = dict(file_fingerprint(mc), n_events=len(events))
    resume_state = None
    symmetry = None
    train_weights, note = events.weights, ""
    if resume:
        from fastsim.checkpoint import coordinates_from_dict

        ck = load_checkpoint(out, reaction)
        coords = coordinates_from_dict(ck["coordinates"])  # the run's own coordinates
        tree = coords.physical == "momenta"
        if tree:
            _, _, train_weights, note = _tree_training_setup(mc, events, reaction, card, fold=False)
        if ck.get("training") is None:
            raise TrainingError(f"{out}: the checkpoint holds no training state to resume from")
        if ck.get("training_file", {}).get("sha256") != fingerprint["sha256"]:
            raise TrainingError(f"{out}: was trained on another file than {mc} (sha256 differs)")
        cfg = dict(ck["training"]["config"])
        if cfg["kind"] != kind:
            raise TrainingError(f"{out}: holds a {cfg['kind']} model, not a {kind}")
        config = TrainConfig(**cfg)
        resume_state = ck["training"]
        if resume_state["finished"]:
            typer.echo(f"training in {out} already finished ({resume_state['stop_reason']} after epoch "
                       f"{resume_state['epoch']}); nothing to resume")
            return
    else:
        if tree:  # (TrainingError -> "error: ... train without folding" (--no-fold), exit 2)
            coords, symmetry, train_weights, note = _tree_training_setup(mc, events, reaction, card, fold)
        elif fold:
            symmetry = require_symmetry(events.helicity_variables, (coords.m_min, coords.m_max), str(mc))
        try:
            hyper = model_hyperparameters(kind, coords, card, _parse_hp(hp), edge_knots and not tree, gates)
        except ValueError as exc:
            raise UserError(f"--detector {detector}: {exc}") from None
        config = TrainConfig(kind=kind, hyperparameters=hyper, epochs=epochs, batch_size=batch_size,
                             learning_rate=lr, patience=patience, max_minutes=max_minutes, seed=seed)
    u = coords.to_unit(events.momenta if tree else events.helicity_variables)
    metadata = {"coordinates": coords.to_dict(), "reaction": reaction.to_dict(),
                "detector": None if card is None else card.model_dump(), "detector_spec": detector,
                "training_file": fingerprint, "versions": package_versions(), "validation": None}
    if symmetry is not None:
        metadata["symmetry_test"] = symmetry
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    weighted = note or ("" if events.weights is None else (
        f" (weighted: the NLL is weighted by the file's 'weight' column, effective size "
        f"{events.weights.sum() ** 2 / (events.weights ** 2).sum():.0f})"))
    typer.echo(f"training a {kind} on {len(events)} events from {mc}{weighted} (device {dev}, seed {config.seed})")
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("train {task.fields[train]}  val {task.fields[val]}  best@{task.fields[best]}"),
                   TimeElapsedColumn(), console=Console(stderr=True))
    with bar:
        task = bar.add_task("epoch 1", total=None, train="-", val="-", best="-")

        def on_batch(info: dict) -> None:
            bar.update(task, description=f"epoch {info['epoch']}/{config.epochs}",
                       total=info["n_batches"], completed=info["batch"], train=f"{info['loss']:.4f}")

        def on_epoch(rec: dict) -> None:
            bar.update(task, val=f"{rec['val_loss']:.4f}", best=str(rec["best_epoch"]))
            bar.console.print(f"epoch {rec['epoch']:3d}  train {rec['train_loss']:.5f}  "
                              f"val {rec['val_loss']:.5f}  lr {rec['lr']:.2e}  ({rec['epoch_s']:.1f} s)")

        result = fit(u, config, weights=train_weights, checkpoint=out, metadata=metadata, resume=resume_state,
                     device=dev, on_batch=on_batch, on_epoch=on_epoch)
    png = plot_training_curve(result["history"], out.with_name(out.stem + "_training.png"),
                              f"{kind} on {mc.name}")
    typer.echo(f"stopped: {result['stop_reason']}; best epoch {result['best_epoch']} "
               f"(validation loss {result['best_val']:.5f}); {result['elapsed_s']:.0f} s of training")
    typer.echo(f"wrote {out} and {png}")


@app.command()
@handle_errors
def sample(
    model: Path = typer.Option(..., "--model", help="Trained model checkpoint (.pt)."),
    n: int = typer.Option(..., "--n", min=1, help="Number of events."),
    out: Path = typer.Option(..., "--out", help="Output event file (.parquet, .root or .npz)."),
    seed: int = seed_option(),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
    chunk_size: int = typer.Option(500_000, "--chunk-size", min=1000, help="Events per chunk."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="torch CPU threads (0: torch's default). On a loaded machine 1 "
                                     "is often fastest."),
) -> None:
    """Sample events from a trained fast simulator, in chunks."""
    import torch

    from fastsim.checkpoint import load_simulator
    from fastsim.events import EventWriter

    from .common import UserError

    check_output(out, inputs={"--model": model})
    if threads > 0:
        torch.set_num_threads(threads)

    try:
        sim = load_simulator(model, device=device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    t0 = time.perf_counter()
    t_model = 0.0
    description = {"generator": f"fastsim sample ({sim.kind})", "model": str(model), "seed": seed,
                   "proposals": {k: list(v) for k, v in sim.proposals.items()}}
    with EventWriter(out, sim.reaction, metadata=description) as writer, progress_bar() as bar:
        task = bar.add_task(f"{sim.kind} sampling", total=n)
        it = sim.iter_sample(n, seed=seed, chunk_size=chunk_size)
        while True:
            t1 = time.perf_counter()
            events = next(it, None)
            t_model += time.perf_counter() - t1
            if events is None:
                break
            writer.write(events)
            bar.advance(task, len(events))
    dt = time.perf_counter() - t0
    typer.echo(f"wrote {writer.n_written} events of {sim.reaction} to {out}"
               + (" (column 'weight' = flat / proposal density)" if sim.proposals else ""))
    typer.echo(f"throughput: {n / dt:,.0f} events/s end to end ({dt:.2f} s, file included); "
               f"model sampling and four-momenta {n / t_model:,.0f} events/s")


@app.command()
@handle_errors
def validate(
    model: Path = typer.Option(..., "--model", help="Trained model checkpoint (.pt)."),
    reference: Path = typer.Option(..., "--reference", help="Held-out reference MC event file."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json and plots."),
    seed: int = seed_option(12345),
    n_model: int = typer.Option(0, "--n-model", min=0, help="Model events (0: as many as reference)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
    record: bool = typer.Option(False, "--record/--no-record",
                                help="Also store the summary metrics in the checkpoint itself (off: the "
                                     "checkpoint is never modified; the metrics are in --out/metrics.json)."),
) -> None:
    """Compare a fast simulator with held-out reference MC (classifier AUC, chi2, moments).

    The metrics go to --out/metrics.json (and plots beside it); the checkpoint is
    read only, unless --record asks to store the summary in it.
    """
    from fastsim.checkpoint import load_simulator, update_checkpoint
    from fastsim.events import read_events
    from fastsim.events.resources import is_shipped
    from fastsim.validation import validate_simulator

    from .common import UserError

    check_output(out, folder=True, inputs={"--model": model, "--reference": reference},
                 files=("metrics.json", "compare_1d.png", "compare_2d_pulls.png"))
    if record and is_shipped(model):
        raise UserError(f"--record {model}: is a shipped checkpoint of this installation; copy it to "
                        "record metrics into the copy")
    sim = load_simulator(model, device=device)
    ref = read_events(reference, sim.reaction)
    if sim.is_tree:
        from fastsim.validation import validate_tree_simulator

        metrics = validate_tree_simulator(sim, ref, out, n_model=n_model or None, seed=seed)
    else:
        metrics = validate_simulator(sim, ref.helicity_variables, out, n_model=n_model or None, seed=seed)
    auc = metrics["classifier_test"]
    typer.echo(f"{sim.kind}: classifier AUC = {auc['auc']:.4f} +- {auc['auc_error']:.4f} "
               f"(target <= 0.55: {'met' if metrics['targets']['auc_met'] else 'NOT met'})")
    for name, v in metrics["chi2_per_coordinate"].items():
        typer.echo(f"  chi2/ndf {name:12s} {v['chi2']:8.1f} / {v['ndf']:3d} = {v['chi2_ndf']:.2f}")
    typer.echo(f"  max chi2/ndf over pairs: {metrics['max_chi2_ndf_pair']:.2f}")
    ms = metrics.get("moments", {}).get("summary")
    if ms is not None:
        typer.echo(f"  moments: chi2 {ms['chi2_overall']:.1f} for {ms['n_overall']} (max |pull| "
               f"{ms['max_abs_pull_overall']:.1f}); m-binned chi2 {ms['chi2_m_binned']:.1f} for "
               f"{ms['n_m_binned']} (max |pull| {ms['max_abs_pull_m_binned']:.1f})")
    if record:
        summary = {"reference": str(reference), "n_reference": len(ref), "auc": auc["auc"],
                   "auc_error": auc["auc_error"],
                   "chi2_ndf_per_coordinate": {k: v["chi2_ndf"] for k, v in metrics["chi2_per_coordinate"].items()},
                   "max_chi2_ndf_pair": metrics["max_chi2_ndf_pair"], "moments": ms}
        update_checkpoint(model, validation=summary)
    typer.echo(f"wrote {out / 'metrics.json'}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``fastsim ...`` (``argv`` for calling it from Python)."""
    raise SystemExit(run_app(app, "fastsim", argv))


if __name__ == "__main__":
    main()
