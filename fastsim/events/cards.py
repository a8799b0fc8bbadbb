"""Reading YAML cards (detector and model cards share this)."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml_card(path: str | Path, error: type[Exception], kind: str) -> object:
    """Parsed YAML of a card file.

    Raises:
        error: naming the file, for a missing file or invalid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {kind}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
