"""``pwa``: partial-wave analysis fits, fractions, toys and closure tests."""

from __future__ import annotations

import typer

from .common import version_callback

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Unbinned maximum-likelihood partial-wave analysis (JAX).")


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=version_callback,
                                       is_eager=True, help="Print the version and exit.")) -> None:
    pass


def main() -> None:
    app()
