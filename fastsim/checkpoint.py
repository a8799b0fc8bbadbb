"""Checkpoints: one ``torch.save`` file per model, validated when loaded.

A checkpoint is a plain dictionary (loaded with ``weights_only=True``, so no
code runs on load) holding

* ``format`` = ``"fastsim-checkpoint"`` and ``format_version``;
* ``kind`` ('flow' or 'vae') and ``hyperparameters``;
* ``coordinates`` (the :class:`~fastsim.coords.CoordinateMap`), ``reaction``,
  ``detector`` (the card the training MC was made with);
* ``training_file`` (path, sha256, number of events), ``versions`` of the packages;
* ``model_state``: the weights of the best epoch;
* ``training``: the state that ``--resume`` continues from (current weights,
  optimiser, scheduler, history, early-stopping counters, RNG state);
* ``validation``: metrics of ``fastsim validate`` (or None).

Every write is atomic, so an interrupted save never leaves a truncated file
under the final name. Weights that are not finite (NaN or inf) are refused
when loaded, as a corrupt checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path

from fastsim.events import Reaction, atomic_path

from .coords import CoordinateMap
from .errors import CheckpointError

FORMAT = "fastsim-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("kind", "hyperparameters", "coordinates", "reaction", "model_state")


def file_fingerprint(path: str | os.PathLike) -> dict:
    """sha256 and size of a file (identifies the training sample)."""
    h = hashlib.sha256()
    path = Path(path)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": str(path), "sha256": h.hexdigest(), "bytes": path.stat().st_size}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("pwa-fastsim", "torch", "normflows", "numpy", "scipy", "scikit-learn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def same_reaction(a: Reaction, b: Reaction) -> bool:
    """Same parent and final state (particles in event-file order)."""
    return (a.parent, a.particles) == (b.parent, b.particles)


def coordinates_from_dict(d: dict):
    """The coordinate map a checkpoint records: a decay tree's (``kind: tree_unit_box``) or the
    helicity variables of J/psi -> gamma P1 P2 (:class:`~fastsim.coords.CoordinateMap`)."""
    if isinstance(d, dict) and d.get("kind") == "tree_unit_box":
        from .tree_coords import TreeCoordinateMap

        return TreeCoordinateMap.from_dict(d)
    return CoordinateMap.from_dict(d)


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a checkpoint dictionary atomically (format keys are added)."""
    import torch

    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {', '.join(missing)}")
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def check_finite_state(path: str | os.PathLike, state: dict, where: str = "model_state") -> None:
    """Refuse a state dict (name -> tensor) with NaN or inf in a floating-point tensor.

    Raises:
        CheckpointError: naming ``path``, the first offending tensor, its count
            of non-finite values and (for another state than ``model_state``) ``where``.
    """
    import torch

    for name, tensor in state.items():
        if not (torch.is_tensor(tensor) and (tensor.is_floating_point() or tensor.is_complex())):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            in_state = "" if where == "model_state" else f" of {where}"
            raise CheckpointError(f"{path}: parameter {name!r}{in_state} has {bad} non-finite values "
                                  f"(NaN or inf); the checkpoint is corrupt")


def load_checkpoint(path: str | os.PathLike, reaction: Reaction | None = None) -> dict:
    """Read and validate a checkpoint.

    Args:
        path: the ``.pt`` file.
        reaction: the reaction the caller works with; a checkpoint made for
            another one is refused. None (the default): no check, the
            checkpoint's own recorded reaction is used (``data["_reaction"]``).

    Raises:
        CheckpointError: missing file, unreadable or truncated file, a torch
            file that is not a fastsim checkpoint, a newer format, missing
            fields, non-finite weights (in ``model_state`` or the training
            state's ``current_state`` and ``best_state``), another reaction or
            an inconsistent coordinate mapping.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and EOF errors of every kind
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable model checkpoint (truncated, corrupted or "
                              f"not written by torch.save; {reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a torch file, but not a fastsim model checkpoint "
                              f"(no format = {FORMAT!r}); train one with `fastsim train`")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported "
                              f"(this fastsim reads up to {FORMAT_VERSION})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the field(s) {', '.join(missing)}")
    states = {"model_state": data["model_state"]}
    if isinstance(data.get("training"), dict):  # what a resume loads
        states.update({f"training.{k}": data["training"][k] for k in ("current_state", "best_state")
                       if k in data["training"]})
    for where, state in states.items():
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: field {where} is not a dictionary of tensors")
        check_finite_state(path, state, where)
    try:
        r = data["reaction"]
        ck_reaction = Reaction.from_final_state(r["final_state"], r["parent"], chains=r.get("chains", ()),
                                                production=r.get("production"))
    except Exception as exc:
        raise CheckpointError(f"{path}: field reaction is invalid ({exc})") from None
    if reaction is not None and not same_reaction(ck_reaction, reaction):
        raise CheckpointError(
            f"{path}: the model was trained for {ck_reaction.parent} -> {' '.join(ck_reaction.particles)}, "
            f"not for {reaction.parent} -> {' '.join(reaction.particles)}")
    try:
        coords = coordinates_from_dict(data["coordinates"])
    except Exception as exc:
        raise CheckpointError(f"{path}: field coordinates is invalid ({exc})") from None
    if coords.physical == "momenta":
        if not same_reaction(coords.reaction, ck_reaction):
            raise CheckpointError(f"{path}: the coordinates are those of {coords.reaction}, the reaction field "
                                  f"says {ck_reaction}")
    else:
        expected = CoordinateMap.for_reaction(ck_reaction)
        if abs(coords.m_min - expected.m_min) > 1e-9 or abs(coords.m_max - expected.m_max) > 1e-9:
            raise CheckpointError(f"{path}: coordinate range m in [{coords.m_min}, {coords.m_max}] GeV does not "
                                  f"match the kinematic range of the reaction [{expected.m_min}, {expected.m_max}]")
    data["_reaction"] = ck_reaction
    data["_coords"] = coords
    data["_path"] = str(path)
    return data


def simulator_from_checkpoint(data: dict, device: str = "cpu", *, state: str = "model_state"):
    """A :class:`~fastsim.generator.FastSimulator` from a loaded checkpoint dictionary.

    ``state`` names the weights to load (a top-level field of ``data``);
    non-finite ones raise :class:`CheckpointError`.
    """
    from .generator import FastSimulator, build_model, resolve_device

    path = data.get("_path", "checkpoint")
    if isinstance(data.get(state), dict):  # else load_state_dict below says what is wrong
        check_finite_state(path, data[state], state)
    try:
        model = build_model(data["kind"], data["hyperparameters"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build a {data['kind']!r} model from the stored "
                              f"hyperparameters ({exc})") from None
    try:
        model.load_state_dict(data[state])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{path}: stored weights do not fit the {data['kind']} model ({first})") from None
    meta = {k: v for k, v in data.items() if k not in ("model_state", "training") and not k.startswith("_")}
    sim = FastSimulator(model, data["_coords"], reaction=data["_reaction"], metadata=meta)
    return sim.to(resolve_device(device))


def load_simulator(path: str | os.PathLike, device: str = "cpu",
                   reaction: Reaction | None = None):
    """Load a trained generator from a checkpoint file (validated).

    The simulator has the reaction recorded in the checkpoint; ``reaction``, if
    given, is the one the caller works with, and a checkpoint for another is refused.
    """
    return simulator_from_checkpoint(load_checkpoint(path, reaction), device)


def update_checkpoint(path: str | os.PathLike, **fields) -> None:
    """Rewrite a checkpoint with some top-level fields replaced (e.g. ``validation``)."""
    data = load_checkpoint(path, reaction=None)
    for k in [k for k in data if k.startswith("_") or k in ("format", "format_version")]:
        del data[k]
    data.update(fields)
    save_checkpoint(path, data)
