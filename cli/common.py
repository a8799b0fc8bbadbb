"""Shared CLI plumbing: domain errors become one red line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

#: Exit code of every handled user error (bad file, card or option).
USER_ERROR = 2


class UserError(Exception):
    """An error in what the user gave (file, option); printed without traceback."""


def _domain_errors() -> tuple[type[BaseException], ...]:
    """Domain error classes, imported lazily so that --help stays fast."""
    errors: list[type[BaseException]] = [UserError, FileNotFoundError]
    from fastsim.events import DetectorCardError, EventFileError

    errors += [EventFileError, DetectorCardError]
    for mod, names in (("pwa.errors", ("ModelCardError", "FitError")),
                       ("fastsim.errors", ("CheckpointError", "TrainingError"))):
        try:
            m = __import__(mod, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(errors)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: known errors print ``error: ...`` and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except Exception as exc:
            if isinstance(exc, _domain_errors()):
                from rich.console import Console

                Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
                raise typer.Exit(USER_ERROR) from None
            raise

    return wrapper


def progress_bar():
    """A rich progress bar (count, elapsed, ETA) on stderr; use as a context manager."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))


def version_callback(value: bool) -> None:
    if value:
        from fastsim import __version__

        print(__version__)
        raise typer.Exit()


def seed_option(default: int = 0):
    return typer.Option(default, "--seed", help="Seed of every random step; same seed, same numbers.")
