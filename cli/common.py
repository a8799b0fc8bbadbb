"""Shared CLI plumbing: domain errors become one red line and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
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
                       ("fastsim.errors", ("CheckpointError", "TrainingError", "SamplingError"))):
        try:
            m = __import__(mod, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(errors)


def print_error(message: str) -> None:
    """``error: message`` on stderr as one line (red on a terminal)."""
    line = " ".join(str(message).split())  # a message is one line, however it was built
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {line}", err=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: known errors print ``error: ...`` and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if isinstance(exc, _domain_errors()):
                print_error(str(exc))
                raise typer.Exit(USER_ERROR) from None
            raise

    return wrapper


def run_app(app: typer.Typer, name: str, argv: Sequence[str] | None = None) -> int:
    """Run a Typer app; a bad option or value is one ``error:`` line and exit 2.

    Click's own usage errors (an unknown option, ``--n abc``, ``--seed -1``)
    come out as ``error: fastsim generate: Invalid value for '--seed': ...``
    instead of a framed panel, so that every command fails the same way.

    Args:
        app: the Typer application.
        name: its command name (``fastsim``, ``pwa``) for messages.
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code (what ``main`` passes to ``sys.exit``).
    """
    # Typer's own copy of click (typer >= 0.25 vendors it): its exception classes.
    click = sys.modules[typer.BadParameter.__module__]
    command = typer.main.get_command(app)
    prog = name
    try:
        result = command.main(args=None if argv is None else list(argv), prog_name=prog,
                              standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help())
        return 0
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog
        print_error(f"{where}: {exc.format_message()} (see {where} --help)")
        return USER_ERROR
    except typer.Abort:
        typer.echo("interrupted", err=True)
        return 130
    except click.ClickException as exc:
        print_error(exc.format_message())
        return exc.exit_code
    return result if isinstance(result, int) else 0


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


#: Largest seed: numpy and torch both take any integer in [0, 2^63).
MAX_SEED = 2**63 - 1


def seed_option(default: int = 0):
    return typer.Option(default, "--seed", min=0, max=MAX_SEED,
                        help="Seed of every random step (an integer >= 0); same seed, same numbers.")


def detector_path(spec: str) -> Path | None:
    """The file of a ``--detector`` value ('default' and 'none' name no file)."""
    return None if spec in ("default", "none") else Path(spec)


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a == b


def check_output(path: Path, *, option: str = "--out", folder: bool = False,
                 inputs: dict[str, Path | str | None] | None = None, files: Sequence[str] = ()) -> Path:
    """Refuse, before any long work, an output that cannot be written or would replace an input.

    Args:
        path: the output file, or folder if ``folder``.
        option: the option that named it (for the message).
        folder: the output is a folder (created here) rather than a file.
        inputs: option -> input path of the same command (None: not given).
        files: for a folder, the names of the files written into it.

    Returns:
        The resolved output path.

    Raises:
        UserError: one line naming the option, the path and what is wrong.
    """
    import tempfile

    out = Path(path).expanduser().resolve()
    targets = [out] + [out / f for f in files] if folder else [out]
    for name, value in (inputs or {}).items():
        if value is None:
            continue
        src = Path(value).expanduser().resolve()
        if any(_same(t, src) for t in targets):
            raise UserError(f"{option} {path}: would overwrite the input {name} {value}; "
                            "give another output path")
    if folder and out.exists() and not out.is_dir():
        raise UserError(f"{option} {path}: exists and is not a folder (expected a folder for the outputs)")
    if not folder and out.is_dir():
        raise UserError(f"{option} {path}: is a folder (expected a file name)")
    where = out if folder else out.parent
    ancestor = where
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{option} {path}: {ancestor} is a file, not a folder")
    try:  # a probe file in the folder, or in the nearest one that exists (nothing is created)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from None
    return out
