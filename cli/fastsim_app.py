"""``fastsim``: conventional MC and the normalizing-flow fast simulator."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .common import handle_errors, progress_bar, seed_option, version_callback

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
    detector: str = typer.Option("default", "--detector",
                                 help="Detector card: a YAML path, 'default' or 'none' (generator level)."),
    seed: int = seed_option(),
    chunk_size: int = typer.Option(200_000, "--chunk-size", min=1000, help="Generated events per chunk."),
) -> None:
    """Generate conventional MC: flat phase space through the toy detector."""
    from fastsim.events import Detector, EventWriter, iter_conventional_mc, load_detector_card

    det = Detector(load_detector_card(detector))
    stats: dict = {}
    t0 = time.perf_counter()
    with EventWriter(out) as writer, progress_bar() as bar:
        task = bar.add_task(f"conventional MC ({det.name})", total=n)
        for chunk in iter_conventional_mc(n, det, seed=seed, chunk_size=chunk_size, stats=stats):
            writer.write(chunk)
            bar.advance(task, len(chunk))
    dt = time.perf_counter() - t0
    acc = stats["n_passed"] / stats["n_generated"]
    typer.echo(f"wrote {writer.n_written} events to {out}")
    typer.echo(f"detector {det.name}: acceptance x efficiency = {acc:.4f} "
               f"({stats['n_passed']} of {stats['n_generated']} generated passed)")
    typer.echo(f"throughput: {writer.n_written / dt:,.0f} accepted events/s ({dt:.2f} s)")


def main() -> None:
    app()
