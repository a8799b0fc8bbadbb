"""The common face of every learned generator: a :class:`FastSimulator`.

A fast simulator couples a density model on the unit box (a
:class:`~fastsim.flow.SplineFlow` or a :class:`~fastsim.vae.VAE`) with the
:class:`~fastsim.coords.CoordinateMap` and the reaction, and offers

* ``sample(n, seed) -> Events`` / ``iter_sample`` (chunks, bounded memory),
  every chunk checked: a non-finite event raises :class:`~fastsim.errors.SamplingError`,
* ``log_prob(hv) -> (n,)`` the log density in the physical helicity variables
  (m in GeV, cosines, azimuths in rad), float64, every Jacobian included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch import nn

from fastsim.events import Events, Reaction

from .coords import CoordinateMap
from .errors import SamplingError

DEFAULT_CHUNK = 500_000


class UnitBoxModel(Protocol):
    """What a generator model provides (torch module on [0, 1]^5)."""

    kind: str
    hyperparameters: dict

    def log_prob_unit(self, u: torch.Tensor) -> torch.Tensor: ...
    def sample_unit(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def loss(self, u: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor: ...


def model_registry() -> dict[str, type[nn.Module]]:
    """Model kinds by name."""
    from .flow import SplineFlow
    from .vae import VAE

    return {"flow": SplineFlow, "vae": VAE}


def build_model(kind: str, hyperparameters: dict | None = None) -> nn.Module:
    """A fresh model of ``kind`` ('flow' or 'vae') with the given hyperparameters."""
    reg = model_registry()
    if kind not in reg:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(reg)}")
    hp = dict(hyperparameters or {})
    if "circular" in hp:
        hp["circular"] = tuple(hp["circular"])
    return reg[kind](**hp)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    return torch.device(device)


class FastSimulator:
    """A trained generator of detector-level events.

    Args:
        model: a unit-box model (``SplineFlow`` or ``VAE``).
        coords: mapping of the helicity variables onto the unit box; None:
            ``CoordinateMap.for_reaction(reaction)``.
        reaction: the reaction (masses, column prefixes); required, keyword-only.
        metadata: checkpoint metadata (detector card, training file, metrics).
    """

    def __init__(self, model: nn.Module, coords: CoordinateMap | None = None, *,
                 reaction: Reaction, metadata: dict | None = None) -> None:
        self.model = model.eval()
        self.reaction = reaction
        self.coords = coords or CoordinateMap.for_reaction(reaction)
        self.metadata = dict(metadata or {})
        self._model64: nn.Module | None = None

    def __repr__(self) -> str:
        return (f"FastSimulator(kind={self.kind!r}, {self.model.hyperparameters}, "
                f"device={self.device}, reaction={' '.join(self.reaction.particles)})")

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "FastSimulator":
        self.model.to(device)
        self._model64 = None
        return self

    # -- sampling ----------------------------------------------------------
    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @property
    def is_tree(self) -> bool:
        """Coordinates of a decay tree (:mod:`fastsim.tree_coords`): samples are four-momenta."""
        return self.coords.physical == "momenta"

    @property
    def proposals(self) -> dict:
        """Breit-Wigner proposals the samples follow (tree maps only): they carry flat / proposal weights."""
        return dict(getattr(self.coords, "proposals", {}) or {})

    @torch.no_grad()
    def _iter_physical(self, n: int, seed: int, chunk_size: int) -> Iterator[np.ndarray]:
        """Chunks of the coordinate map's physical variables: (k, 5) helicity variables or
        (k, n_final, 4) four-momenta."""
        if n <= 0:
            raise ValueError(f"number of events must be positive, got {n}")
        gen = self._generator(seed)
        done = 0
        n_unfold = getattr(self.coords, "n_unfold", 4)
        while done < n:
            k = min(chunk_size, n - done)
            u = self.model.sample_unit(k, gen).double().cpu().numpy()
            unfold = None
            if self.coords.fold:  # the image of each domain point: from the same generator
                unfold = torch.rand((k, n_unfold), generator=gen, dtype=torch.float64,
                                    device=self.device).cpu().numpy()
            x = self.coords.from_unit(u, unfold)
            # from_unit clips an infinite u onto the box edge: the model's own output is checked too
            finite_x = np.isfinite(x).reshape(k, -1).all(axis=1)
            bad = int(np.sum(~(np.isfinite(u).all(axis=1) & finite_x)))
            if bad:
                raise SamplingError(f"the {self.kind} model produced {bad} non-finite events (NaN or inf) "
                                    f"among events {done}..{done + k - 1}; refusing to return them")
            yield x
            done += k

    def iter_sample_hv(self, n: int, seed: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """Yield (k, 5) float64 helicity-variable chunks, n rows in all (J/psi -> gamma P1 P2 maps).

        The same seed and chunk size give the same numbers.

        Raises:
            SamplingError: a chunk has rows that are not finite (NaN or inf),
                e.g. from broken model weights; no such chunk is yielded.
            ValueError: the simulator's coordinates are a decay tree's (use :meth:`iter_sample`).
        """
        if self.is_tree:
            raise ValueError(f"a simulator of {self.reaction} in tree coordinates samples four-momenta: "
                             f"use iter_sample")
        yield from self._iter_physical(n, seed, chunk_size)

    def iter_sample(self, n: int, seed: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[Events]:
        """Yield chunks of :class:`Events` (four-momenta), n events in all.

        With proposals (tree maps trained on Breit-Wigner-proposal MC) the
        events carry the exact weights flat / proposal density, as the
        conventional MC they imitate.
        """
        if not self.is_tree:
            for hv in self._iter_physical(n, seed, chunk_size):
                yield Events.from_helicity_variables(hv, self.reaction)
            return
        props = self.proposals
        for p in self._iter_physical(n, seed, chunk_size):
            w = self.coords.space.weights(p, props) if props else None
            yield Events(p, w, reaction=self.reaction)

    def sample_hv(self, n: int, seed: int = 0, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
        """(n, 5) helicity variables."""
        return np.concatenate(list(self.iter_sample_hv(n, seed, chunk_size)))

    def sample(self, n: int, seed: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Events:
        """n events in memory."""
        return Events.concatenate(list(self.iter_sample(n, seed, chunk_size)))

    # -- density -------------------------------------------------------------
    def _double_model(self) -> nn.Module:
        if self._model64 is None:
            self._model64 = copy.deepcopy(self.model).double().eval()
        return self._model64

    @torch.no_grad()
    def log_prob(self, hv: np.ndarray, *, float64: bool = True, seed: int = 0,
                 chunk_size: int = 100_000) -> np.ndarray:
        """log density (n,) in the physical helicity variables (1/GeV/rad^2).

        For tree coordinates ``hv`` is four-momenta (n, n_final, 4) or Events and
        the density is relative to dPhi / Phi (:meth:`_log_prob_tree`).
        -inf outside the physical region. Evaluated in float64 by default. For
        the VAE the density is an importance-sampling estimate (seeded).
        """
        if self.is_tree:
            return self._log_prob_tree(hv, float64=float64, seed=seed, chunk_size=chunk_size)
        hv = np.asarray(hv, dtype=np.float64)
        inside = self.coords.inside(hv)
        hv = np.where(inside[:, None], hv, self.coords.from_unit(np.full((len(hv), self.coords.n_dim), 0.5)))
        u = self.coords.to_unit(hv)
        model = self._double_model() if float64 else self.model
        dtype = torch.float64 if float64 else torch.float32
        out = np.empty(len(hv))
        kwargs = {}
        if self.kind == "vae":
            kwargs["generator"] = self._generator(seed)
        for s in range(0, len(hv), chunk_size):
            t = torch.as_tensor(u[s:s + chunk_size], dtype=dtype, device=self.device)
            out[s:s + chunk_size] = model.log_prob_unit(t, **kwargs).double().cpu().numpy()
        out += self.coords.log_det(hv)
        out[~inside] = -np.inf
        return out

    def _unit_log_prob(self, u: np.ndarray, float64: bool, seed: int, chunk_size: int) -> np.ndarray:
        model = self._double_model() if float64 else self.model
        dtype = torch.float64 if float64 else torch.float32
        out = np.empty(len(u))
        kwargs = {"generator": self._generator(seed)} if self.kind == "vae" else {}
        with torch.no_grad():
            for s in range(0, len(u), chunk_size):
                t = torch.as_tensor(u[s:s + chunk_size], dtype=dtype, device=self.device)
                out[s:s + chunk_size] = model.log_prob_unit(t, **kwargs).double().cpu().numpy()
        return out

    def _log_prob_tree(self, momenta, *, float64: bool, seed: int, chunk_size: int) -> np.ndarray:
        """log density relative to the normalised flat phase space dPhi / Phi of four-momenta
        (n, n_final, 4) or Events: the average over identical-particle images of the folded
        density (:mod:`fastsim.tree_coords`)."""
        p = momenta.momenta if isinstance(momenta, Events) else np.asarray(momenta, dtype=np.float64)
        terms = [self._unit_log_prob(u, float64, seed, chunk_size) + ld
                 for u, ld in self.coords.unit_and_log_det_of_images(p)]
        stacked = np.stack(terms)
        top = np.max(stacked, axis=0)
        safe = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            out = safe + np.log(np.mean(np.exp(stacked - safe), axis=0))
        return np.where(np.isfinite(top), out, -np.inf)
