"""Where the shipped defaults are found: the installed package ``pwa_fastsim_models``.

The checkout's ``models/`` folder is installed under that name (``package-dir`` in
pyproject.toml), so the model cards, the default detector card and the default flow resolve
the same way in a checkout, an editable install and an installed wheel, whatever the working
directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path, PurePosixPath

#: Import name of the installed ``models/`` folder.
MODELS_PACKAGE = "pwa_fastsim_models"


class ShippedFileError(FileNotFoundError):
    """A shipped default that this installation lacks."""


def _models_root() -> Path:
    try:
        root = resources.files(MODELS_PACKAGE)
    except ModuleNotFoundError:
        raise ShippedFileError(f"the shipped defaults (package {MODELS_PACKAGE}, the models/ folder) "
                               "are not installed: reinstall pwa-fastsim") from None
    if not isinstance(root, Path):
        # A zipped install has no file paths to hand to readers that take a path.
        raise ShippedFileError(f"the shipped defaults (package {MODELS_PACKAGE}) are not on the "
                               f"file system ({root}): install pwa-fastsim unzipped")
    return root


def shipped_files() -> list[str]:
    """Names of the shipped files (cards, detector cards, flows), relative to the models folder."""
    root = _models_root()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix in (".yaml", ".pt", ".json"))


def shipped(name: str) -> Path:
    """Path of a shipped file, e.g. ``shipped("r0.yaml")`` or ``shipped("detector/besiii_like.yaml")``.

    Args:
        name: path relative to the models folder, with ``/`` separators.

    Raises:
        ShippedFileError: the shipped defaults are not installed, or lack ``name``
            (the message lists what is shipped).
        ValueError: ``name`` is absolute or climbs out of the models folder.
    """
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"{name!r}: a shipped file is named relative to the models folder")
    path = _models_root().joinpath(*rel.parts)
    if not path.is_file():
        raise ShippedFileError(f"{name}: not a shipped file of this installation ({path} is missing); "
                               f"shipped: {', '.join(shipped_files()) or 'nothing'}")
    return path


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` lies inside this installation's shipped models folder."""
    try:
        root = _models_root().resolve()
    except ShippedFileError:
        return False
    return Path(path).expanduser().resolve().is_relative_to(root)
