"""Event files: .parquet, .root (TTree ``events``) and .npz, chosen by extension.

Columns: ``{p}_E, {p}_px, {p}_py, {p}_pz`` (GeV) for each final-state prefix
``p`` of the reaction (``gamma``, ``Kp``, ``Km`` for J/psi -> gamma K+ K-),
and an optional ``weight``. Every file is validated when read; every write
is atomic (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .kinematics import invariant_mass
from .particles import Reaction
from .sample import Events

FORMATS = (".parquet", ".root", ".npz")
DEFAULT_TREE = "events"

#: Tolerances of the physical checks, GeV.
MASS_TOLERANCE = 1e-3
MOMENTUM_TOLERANCE = 1e-3
ENERGY_TOLERANCE = 1e-6


class EventFileError(Exception):
    """An event file that cannot be read or is not a valid event sample."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    An exception or an interrupt leaves no file under the final name (and
    removes the temporary one), so readers never see a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise EventFileError(f"{path}: unknown event-file format {suffix or '(no extension)'!r}; "
                             f"expected one of {', '.join(FORMATS)}")
    return suffix


def events_to_columns(events: Events) -> dict[str, np.ndarray]:
    """Flat column dictionary of an event sample."""
    cols: dict[str, np.ndarray] = {}
    for i, prefix in enumerate(events.reaction.prefixes):
        for j, comp in enumerate(("E", "px", "py", "pz")):
            cols[f"{prefix}_{comp}"] = np.ascontiguousarray(events.momenta[:, i, j])
    if events.weights is not None:
        cols["weight"] = events.weights
    return cols


def write_events(path: str | os.PathLike, events: Events, *, tree: str = DEFAULT_TREE) -> Path:
    """Write events to ``path`` (format by extension), atomically."""
    path = Path(path)
    fmt = _format(path)
    cols = events_to_columns(events)
    with atomic_path(path) as tmp:
        if fmt == ".npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, **cols)
        elif fmt == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(cols), tmp)
        else:
            import uproot

            with uproot.recreate(tmp) as f:
                f[tree] = cols
    return path


def _read_columns(path: Path, fmt: str, tree: str) -> dict[str, np.ndarray]:
    if fmt == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        except Exception as exc:  # zipfile/pickle errors of every kind
            raise EventFileError(f"{path}: not a readable .npz file ({exc})") from None
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise EventFileError(f"{path}: not a readable parquet file ({exc})") from None
        return {name: table.column(name).to_numpy() for name in table.column_names}
    import uproot

    try:
        f = uproot.open(path)
    except Exception as exc:
        raise EventFileError(f"{path}: not a readable ROOT file ({exc})") from None
    with f:
        if tree not in f:
            keys = sorted({k.split(";")[0] for k in f.keys()})
            raise EventFileError(f"{path}: no TTree {tree!r} in the file; it holds {keys or 'nothing'}")
        t = f[tree]
        try:
            return {k: np.asarray(v) for k, v in t.arrays(library="np").items()}
        except Exception as exc:
            raise EventFileError(f"{path}: cannot read TTree {tree!r} ({exc})") from None


def read_events(path: str | os.PathLike, reaction: Reaction, *,
                tree: str = DEFAULT_TREE, check_total_momentum: bool = True) -> Events:
    """Read and validate an event file.

    Raises:
        EventFileError: naming the file, the column and the number of
            offending rows, for a missing file or column, an empty file,
            NaN/inf, E < |p|, an invariant mass far from the particle's mass,
            a total four-momentum far from (m_parent, 0, 0, 0), or a
            ``weight`` column that is all zero or sums to a non-positive
            number (:func:`weight_problem`).
    """
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise EventFileError(f"{path}: no such file")
    cols = _read_columns(path, fmt, tree)
    missing = [c for c in reaction.columns if c not in cols]
    if missing:
        raise EventFileError(f"{path}: missing column(s) {', '.join(missing)}; an event file for "
                             f"{reaction.parent} -> {' '.join(reaction.particles)} needs "
                             f"{', '.join(reaction.columns)}")
    n = len(cols[reaction.columns[0]])
    if n == 0:
        raise EventFileError(f"{path}: the file holds no events")
    names = reaction.columns + (["weight"] if "weight" in cols else [])
    for name in names:
        col = cols[name]
        if col.shape != (n,):
            raise EventFileError(f"{path}: column {name} has shape {col.shape}, expected ({n},)")
        if not np.issubdtype(col.dtype, np.number):
            raise EventFileError(f"{path}: column {name} has type {col.dtype}, expected numbers")
        bad = ~np.isfinite(col.astype(np.float64))
        if bad.any():
            raise EventFileError(f"{path}: column {name} has {int(bad.sum())} row(s) with NaN or inf")
    mom = np.stack([np.stack([cols[f"{p}_{c}"] for c in ("E", "px", "py", "pz")], axis=-1)
                    for p in reaction.prefixes], axis=1).astype(np.float64)
    for i, (prefix, particle) in enumerate(zip(reaction.prefixes, reaction.particles)):
        p = mom[:, i]
        pabs = np.linalg.norm(p[:, 1:], axis=1)
        bad = p[:, 0] < pabs - ENERGY_TOLERANCE * np.maximum(1.0, p[:, 0])
        if bad.any():
            raise EventFileError(f"{path}: column {prefix}_E is below |p| (spacelike four-momentum) "
                                 f"in {int(bad.sum())} row(s)")
        mass = invariant_mass(p)
        bad = np.abs(mass - reaction.masses[i]) > MASS_TOLERANCE
        if bad.any():
            raise EventFileError(
                f"{path}: columns {prefix}_E/px/py/pz give an invariant mass more than "
                f"{MASS_TOLERANCE * 1e3:g} MeV from the {particle} mass {reaction.masses[i]:.6f} GeV "
                f"in {int(bad.sum())} row(s)")
    if check_total_momentum:
        total = mom.sum(axis=1)
        dev = np.abs(total - np.array([reaction.parent_mass, 0.0, 0.0, 0.0])).max(axis=1)
        bad = dev > MOMENTUM_TOLERANCE
        if bad.any():
            raise EventFileError(
                f"{path}: columns {', '.join(reaction.columns)}: total four-momentum differs from "
                f"({reaction.parent_mass}, 0, 0, 0) GeV (the {reaction.parent} rest frame) by more "
                f"than {MOMENTUM_TOLERANCE * 1e3:g} MeV in {int(bad.sum())} row(s)")
    weights = None
    if "weight" in cols:
        weights = cols["weight"].astype(np.float64)
        problem = weight_problem(weights)
        if problem:
            raise EventFileError(f"{path}: {problem}")
    return Events(mom, weights, reaction=reaction)


def weight_problem(weights: np.ndarray, subject: str = "column 'weight'", *, plural: bool = False) -> str | None:
    """Why event weights cannot be a sample's weights (one sentence), or None if they can.

    Negative weights are allowed (sideband subtraction, reweighted MC), but
    weights that are not finite, all zero, or sum to a non-positive number
    have no meaning as a likelihood or a normalisation sum: a fit to them
    "converges" with zero errors.

    Args:
        weights: (n_events,) weights.
        subject: what the sentence is about, e.g. ``"column 'weight'"`` or
            ``"data: the weights"`` (then ``plural=True``).
        plural: whether ``subject`` takes a plural verb.

    Returns:
        None, or e.g. "column 'weight' sums to -2000 (2000 events); expected
        a positive sum (negative weights are allowed, e.g. sideband
        subtraction, but not a non-positive total)".
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.size
    has, is_, sums = ("have", "are", "sum") if plural else ("has", "is", "sums")
    bad = ~np.isfinite(w)
    if bad.any():
        return f"{subject} {has} {int(bad.sum())} of {n} value(s) NaN or inf; expected finite weights"
    if not w.any():
        return f"{subject} {is_} zero in all {n} events; expected a positive sum"
    total = float(w.sum())
    if total <= 0.0:
        return (f"{subject} {sums} to {total:.6g} ({n} events); expected a positive sum (negative weights "
                f"are allowed, e.g. sideband subtraction, but not a non-positive total)")
    return None


#: Key of the generator's description (JSON) in an event file: parquet schema metadata,
#: an .npz entry, a ROOT TObjString.
METADATA_KEY = "fastsim_metadata"


def read_event_metadata(path: str | os.PathLike) -> dict:
    """The description a writer stored in an event file (reaction, proposals, detector), or {}.

    Files of other programs have none; an unreadable description is an error.
    """
    import json

    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise EventFileError(f"{path}: no such file")
    text = None
    try:
        if fmt == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            raw = meta.get(METADATA_KEY.encode())
            text = None if raw is None else raw.decode()
        elif fmt == ".npz":
            with np.load(path, allow_pickle=False) as z:
                text = str(z[METADATA_KEY]) if METADATA_KEY in z.files else None
        else:
            import uproot

            with uproot.open(path) as f:
                text = str(f[METADATA_KEY]) if METADATA_KEY in {k.split(";")[0] for k in f.keys()} else None
    except EventFileError:
        raise
    except Exception as exc:
        raise EventFileError(f"{path}: cannot read the file's description ({type(exc).__name__}: {exc})") from None
    if text is None:
        return {}
    try:
        out = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventFileError(f"{path}: the {METADATA_KEY} entry is not JSON ({exc})") from None
    if not isinstance(out, dict):
        raise EventFileError(f"{path}: the {METADATA_KEY} entry is not a JSON object")
    return out


def reaction_of_file(path: str | os.PathLike) -> Reaction | None:
    """The reaction an event file's description names, or None when it has none."""
    meta = read_event_metadata(path)
    r = meta.get("reaction")
    if r is None:
        return None
    try:
        return Reaction.from_final_state(r["final_state"], r["parent"], chains=r.get("chains", ()),
                                         production=r.get("production"))
    except Exception as exc:
        raise EventFileError(f"{path}: the description's reaction is invalid ({exc})") from None


class EventWriter:
    """Write an event file chunk by chunk, atomically.

    Parquet and ROOT files are streamed (memory bounded by one chunk); .npz
    needs the whole sample at once, so its chunks are gathered in memory.
    Use as a context manager: the file appears under its final name only if
    the block finishes without an exception.
    """

    def __init__(self, path: str | os.PathLike, reaction: Reaction, *,
                 tree: str = DEFAULT_TREE, metadata: dict | None = None) -> None:
        import json

        self.path = Path(path)
        #: JSON description stored with the events (``reaction`` always; ``read_event_metadata``).
        self.metadata_json = json.dumps({"reaction": reaction.to_dict(), **(metadata or {})})
        self.format = _format(self.path)
        self.reaction = reaction
        self.tree = tree
        self.n_written = 0
        self._ctx = atomic_path(self.path)
        self._tmp: Path | None = None
        self._handle = None
        self._parts: list[dict[str, np.ndarray]] = []

    def __enter__(self) -> "EventWriter":
        self._tmp = self._ctx.__enter__()
        return self

    def write(self, events: Events) -> None:
        if events.reaction != self.reaction:
            raise ValueError("events of another reaction than the writer's")
        cols = events_to_columns(events)
        if self.format == ".npz":
            self._parts.append(cols)
        elif self.format == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(cols)
            table = table.replace_schema_metadata({METADATA_KEY: self.metadata_json})
            if self._handle is None:
                self._handle = pq.ParquetWriter(self._tmp, table.schema)
            self._handle.write_table(table)
        else:
            import uproot

            if self._handle is None:
                self._handle = uproot.recreate(self._tmp)
                self._handle[self.tree] = cols
                self._handle[METADATA_KEY] = self.metadata_json
            else:
                self._handle[self.tree].extend(cols)
        self.n_written += len(events)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if self.n_written == 0:
                    raise ValueError(f"{self.path}: no events were written")
                if self.format == ".npz":
                    cols = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
                    with open(self._tmp, "wb") as fh:
                        np.savez(fh, **cols, **{METADATA_KEY: np.array(self.metadata_json)})
            if self._handle is not None:
                self._handle.close()
        except BaseException:
            self._ctx.__exit__(*__import__("sys").exc_info())
            raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))
