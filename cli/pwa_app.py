"""``pwa``: partial-wave analysis fits, fractions, toys and closure tests."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .common import handle_errors, progress_bar, seed_option, version_callback

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

    result = fit_fractions_mc(Model.from_card(load_model_card(model)), n_mc=n_mc, seed=seed)
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
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    dt = time.perf_counter() - t0
    typer.echo(f"wrote {writer.n_written} events to {out}")
    typer.echo(f"hit-or-miss: I_max = {stats['i_max']:.6g}, {stats['n_hit']} of {stats['n_proposed']} "
               f"proposals kept; detector {det.name}: {stats['n_accepted']} accepted")
    typer.echo(f"throughput: {writer.n_written / dt:,.0f} accepted events/s ({dt:.2f} s)")


def main() -> None:
    app()
