"""The NLL, its gradient and Hessian accumulated over event chunks.

For samples larger than device memory (the seed's multi-GPU formula):

    NLL = - sum_i w_i ln I_i + W ln(S / V),   S = sum_j v_j I_j,  V = sum_j v_j,

with S, dS, d2S and the data sums L = sum_i w_i ln I_i, dL, d2L each a sum
over chunks. By the chain rule

    grad NLL = - dL + W dS / S,
    Hess NLL = - d2L + W (d2S / S - dS dS^T / S^2).

Every chunk has the same number of events (the last one padded with
zero-weight copies of its last event), so one compiled program serves all
chunks. Chunks live in host memory (numpy) and are sent to the device one
at a time; JAX's asynchronous dispatch overlaps the next transfer with the
current chunk's work. Per-chunk Hessians come from the amplitude's
structure (:class:`pwa.hessian.StructuredHessian`, a few gradients each).

A stored normalisation matrix (fixed lineshapes) already makes the MC cost
independent of its size, so :class:`ChunkedNLL` always evaluates the MC per
event from the chunked angular arrays; use it when lineshapes float or when
even building the matrix in one piece does not fit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fastsim.events import Events

from .amplitude import Model
from .caches import EventCache
from .hessian import StructuredHessian
from .sharding import n_events, pad_cache

#: One chunk: an event cache of host (numpy) arrays, without a normalisation matrix.
HostChunk = EventCache


def split_cache(cache: EventCache, chunk_size: int) -> list[HostChunk]:
    """Equal-size host chunks of a cache; the stored matrix (``norm_*``) is dropped.

    Args:
        cache: a cache from :meth:`Model.precompute`.
        chunk_size: events per chunk; the last chunk is padded with zero weights.

    Returns:
        list of event caches of numpy arrays, event axis last, each of length chunk_size.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not isinstance(cache, EventCache):
        raise TypeError(f"chunks need per-event arrays (an EventCache), got a {type(cache).__name__}")
    host = pad_cache(dataclasses.replace(cache, norm_re=None, norm_im=None), chunk_size)
    n = n_events(host)
    chunks = []
    for start in range(0, n, chunk_size):
        part = slice(start, start + chunk_size)
        chunks.append(dataclasses.replace(host, **{k: np.ascontiguousarray(getattr(host, k)[..., part])
                                                   for k in host.EVENT_FIELDS}))
    return chunks


def precompute_chunks(model: Model, events: Events, chunk_size: int, *,
                      fold_lineshapes: bool | None = None) -> list[HostChunk]:
    """Build the chunks piece by piece, so no full-size cache ever sits on the device.

    Args:
        model: the model.
        events: the (large) sample.
        chunk_size: events per chunk.
        fold_lineshapes: passed to :meth:`Model.precompute`.
    """
    chunks: list[HostChunk] = []
    for start in range(0, len(events), chunk_size):
        part = model.precompute(events.subset(slice(start, start + chunk_size)),
                                fold_lineshapes=fold_lineshapes)
        chunks.extend(split_cache(part, chunk_size))
        del part
    return chunks


class ChunkedNLL:
    """NLL of ``model`` with data and MC evaluated chunk by chunk.

    Args:
        model: the model.
        data_chunks, mc_chunks: host chunks (:func:`split_cache`,
            :func:`precompute_chunks`); all chunks of one sample have the same size.
        device: where chunks are evaluated (default: the default device).
        compiler_options: XLA options for the per-chunk programs (e.g.
            ``{"xla_llvm_disable_expensive_passes": True}`` trades run time for
            a faster CPU compile in tests).

    Methods return JAX scalars/arrays in float64: :meth:`value`,
    :meth:`value_and_grad` (scalar, (n_free,)), :meth:`hessian`
    ((n_free, n_free)), :meth:`value_grad_hessian`.
    """

    def __init__(self, model: Model, data_chunks: list[HostChunk], mc_chunks: list[HostChunk],
                 device: jax.Device | None = None, compiler_options: dict | None = None):
        if not data_chunks or not mc_chunks:
            raise ValueError("need at least one data chunk and one MC chunk")
        for name, chunks in (("data", data_chunks), ("MC", mc_chunks)):
            if len({n_events(c) for c in chunks}) != 1:
                raise ValueError(f"{name} chunks differ in size; build them with split_cache")
        self.model = model
        self.data_chunks = data_chunks
        self.mc_chunks = mc_chunks
        self.device = device or jax.devices()[0]
        self.sum_data_weights = float(sum(c.weights.sum() for c in data_chunks))
        self.sum_mc_weights = float(sum(c.weights.sum() for c in mc_chunks))

        def data_sum(p, chunk):  # L_chunk = sum_i w_i ln I_i
            return jnp.sum(chunk.weights * jnp.log(model.intensity(p, chunk)))

        def mc_sum(p, chunk):  # S_chunk = sum_j v_j I_j
            return jnp.sum(chunk.weights * model.intensity(p, chunk))

        def jit(f):
            return jax.jit(f, compiler_options=compiler_options)

        structured = StructuredHessian(model)
        data_vg = jax.value_and_grad(data_sum)

        def data_vgh(p, c):
            value, grad = data_vg(p, c)
            return value, grad, -structured.data_hessian(p, c)

        self._data = {0: jit(lambda p, c: (data_sum(p, c),)), 1: jit(data_vg), 2: jit(data_vgh)}
        self._mc = {0: jit(lambda p, c: (mc_sum(p, c),)), 1: jit(jax.value_and_grad(mc_sum)),
                    2: jit(structured.intensity_sum)}

    @classmethod
    def from_caches(cls, model: Model, data_cache: EventCache, mc_cache: EventCache,
                    chunk_size: int, *, data_chunk_size: int | None = None,
                    device: jax.Device | None = None, compiler_options: dict | None = None) -> "ChunkedNLL":
        """Split existing caches (data chunks default to the whole data sample)."""
        n_data = n_events(data_cache)
        return cls(model, split_cache(data_cache, data_chunk_size or n_data),
                   split_cache(mc_cache, chunk_size), device, compiler_options)

    def _accumulate(self, fns, chunks, p, order):
        total = None
        for chunk in chunks:
            dev = jax.device_put(chunk, self.device)
            out = fns[order](p, dev)
            total = out if total is None else tuple(a + b for a, b in zip(total, out))
        return total

    def _derivatives(self, p, order: int):
        p = jax.device_put(jnp.asarray(p, dtype=jnp.float64), self.device)
        L = self._accumulate(self._data, self.data_chunks, p, order)
        S = self._accumulate(self._mc, self.mc_chunks, p, order)
        W, V = self.sum_data_weights, self.sum_mc_weights
        value = -L[0] + W * jnp.log(S[0] / V)
        if order == 0:
            return (value,)
        grad = -L[1] + W * S[1] / S[0]
        if order == 1:
            return value, grad
        hess = -L[2] + W * (S[2] / S[0] - jnp.outer(S[1], S[1]) / S[0] ** 2)
        return value, grad, hess

    def value(self, p) -> jax.Array:
        """NLL at p (scalar)."""
        return self._derivatives(p, 0)[0]

    def value_and_grad(self, p) -> tuple[jax.Array, jax.Array]:
        """(NLL, gradient (n_free,)) at p."""
        return self._derivatives(p, 1)

    def value_grad_hessian(self, p) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(NLL, gradient (n_free,), Hessian (n_free, n_free)) at p."""
        return self._derivatives(p, 2)

    def hessian(self, p) -> jax.Array:
        """Exact Hessian (n_free, n_free) at p."""
        return self._derivatives(p, 2)[2]
