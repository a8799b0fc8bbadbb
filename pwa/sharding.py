"""Data-parallel likelihoods: event caches split across devices.

A cache (:mod:`pwa.caches`) holds per-event arrays with the event axis last
(its ``EVENT_FIELDS``: ``masses`` (n_columns, n), ``weights`` (n,),
``ang_re``/``ang_im`` (n_terms, n_states, n) of an
:class:`~pwa.caches.EventCache`) and per-sample arrays (``norm_re``/``norm_im``
(n_terms, n_terms); every array of a
:class:`~pwa.caches.NormalisationCache`). :func:`shard_cache` puts the
per-event arrays on a 1-D device :class:`~jax.sharding.Mesh` with a
:class:`~jax.sharding.NamedSharding` along the event axis and replicates the
rest; every jitted function of the cache (``Model.nll``, its gradient and
Hessian) is then partitioned by XLA, each device summing its own events and
the partial sums reduced across devices.

The event count is padded to a multiple of the device count with copies of
the last event carrying weight 0, so that every weighted sum (the data term
sum_i w_i ln I_i, the normalisation sum_j v_j I_j / sum_j v_j, W = sum_i w_i,
the fraction integrals) is unchanged.

Several hosts: after ``jax.distributed.initialize(...)`` (called by the
entry point, never here) ``jax.devices()`` lists every process's devices and
:func:`event_mesh` spans them all. Each process builds the same host cache
(same events) and :func:`shard_cache` places only the shards its own
devices hold (``jax.make_array_from_callback``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .caches import Cache

#: Mesh axis name of the event axis.
EVENT_AXIS = "events"

C = TypeVar("C", bound=Cache)


def event_mesh(devices: Sequence[jax.Device] | int | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, across hosts when distributed).

    Args:
        devices: the devices, or how many of ``jax.devices()`` to take.
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(f"asked for {devices} devices, {len(available)} available")
        devices = available[:devices]
    return Mesh(np.asarray(list(devices)), (EVENT_AXIS,))


def n_events(cache: Cache) -> int:
    """Number of events of a cache (length of its ``weights``)."""
    return int(np.shape(cache.weights)[-1])


def pad_cache(cache: C, multiple: int) -> C:
    """Host (numpy) copy of ``cache`` with n padded up to a multiple of ``multiple``.

    Padding events repeat the last event with weight 0 (finite intensity,
    no contribution to any weighted sum).

    Returns:
        the cache of numpy arrays; event-axis arrays have length ceil(n / multiple) * multiple.
    """
    n = n_events(cache)
    if n == 0:
        raise ValueError("cannot pad an empty cache")
    n_pad = -n % multiple
    out: dict[str, np.ndarray] = {}
    for key, value in cache.arrays().items():
        a = np.asarray(value)
        if key not in cache.EVENT_FIELDS or n_pad == 0:
            out[key] = a
            continue
        if a.shape[-1] != n:
            raise ValueError(f"cache array {key!r} has shape {a.shape}, expected the event axis "
                             f"(length {n}) last")
        if key == "weights":
            tail = np.zeros(a.shape[:-1] + (n_pad,), dtype=a.dtype)
        else:
            tail = np.repeat(a[..., -1:], n_pad, axis=-1)
        out[key] = np.concatenate([a, tail], axis=-1)
    return dataclasses.replace(cache, **out)


def _put(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Works on one host and on several: each process fills only its addressable shards.
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def shard_cache(cache: C, mesh: Mesh | None = None) -> C:
    """``cache`` padded and placed on ``mesh``, split along the event axis.

    Args:
        cache: a cache from :meth:`Model.precompute` (jnp or numpy arrays).
        mesh: a 1-D mesh from :func:`event_mesh` (default: all devices).

    Returns:
        the cache as global ``jax.Array`` s: event-axis arrays sharded
        ``PartitionSpec(..., "events")``, per-sample arrays replicated.
    """
    mesh = mesh or event_mesh()
    if mesh.axis_names != (EVENT_AXIS,):
        raise ValueError(f"expected a 1-D mesh with axis {EVENT_AXIS!r}, got axes {mesh.axis_names}")
    host = pad_cache(cache, mesh.size)
    out = {}
    for key, a in host.arrays().items():
        if key in host.EVENT_FIELDS:
            spec = PartitionSpec(*([None] * (a.ndim - 1)), EVENT_AXIS)
        else:
            spec = PartitionSpec()
        out[key] = _put(a, NamedSharding(mesh, spec))
    return dataclasses.replace(host, **out)


def shard_problem(problem, mesh: Mesh | None = None, *, caches: Sequence[str] = ("data_cache", "mc_cache",
                                                                                   "gen_cache")):
    """A copy of a FitProblem-like frozen dataclass with its caches sharded.

    Args:
        problem: e.g. a :class:`pwa.problem.FitProblem`; the fields named in
            ``caches`` are replaced, everything else (event counts, weights
            sum) is kept, so fits, errors and fractions are unchanged.
        mesh: the device mesh (default: all devices).
        caches: names of the cache fields to shard.

    Returns:
        ``dataclasses.replace(problem, **sharded caches)``.
    """
    mesh = mesh or event_mesh()
    return dataclasses.replace(problem, **{name: shard_cache(getattr(problem, name), mesh)
                                           for name in caches})
