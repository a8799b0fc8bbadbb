"""Typed caches: the parameter-independent arrays a likelihood reads.

Two frozen pytrees (registered dataclasses), so that they pass through
``jax.jit``, ``jax.grad``, ``jax.device_put`` and ``jax.tree_util.tree_map``
like any pytree, pickle for process pools, and name their fields:

* :class:`EventCache` (:meth:`pwa.amplitude.Model.precompute`): per-event
  arrays of one sample, the event axis last, and optionally the stored
  normalisation matrix of fixed lineshapes. Whether the lineshapes are folded
  into the angular factors is the static field ``folded``: it is part of the
  tree structure, so every compiled program is specialised on it.
* :class:`NormalisationCache` (:func:`pwa.normalisation.normalisation_cache`,
  :func:`pwa.fractions.generator_cache`): only the normalisation matrix and
  the sample's total weight, for fixed lineshapes and any MC size.

Both hold jnp arrays after building; a host copy (``tree_map(np.asarray,
cache)``) holds numpy arrays, e.g. chunks (:mod:`pwa.chunked`) and portable
problems (:class:`pwa.problem.PortableProblem`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax


class _Arrays:
    """What both caches share: their set array fields and the stored matrix."""

    #: Fields with the event axis last (padded, sharded and chunked along it).
    EVENT_FIELDS: ClassVar[tuple[str, ...]] = ()

    norm_re: Any
    norm_im: Any

    def arrays(self) -> dict[str, Any]:
        """The array fields that are set (not None), by name, in field order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.metadata.get("static") and getattr(self, f.name) is not None}

    @property
    def normalisation_matrix(self) -> Any:
        """(n_terms, n_terms) complex stored M_kl = norm_re + i norm_im, or None when not stored."""
        if self.norm_re is None:
            return None
        return self.norm_re + 1j * self.norm_im


@jax.tree_util.register_dataclass
@dataclass(frozen=True, eq=False)
class EventCache(_Arrays):
    """Per-event arrays of one sample (:meth:`pwa.amplitude.Model.precompute`).

    Attributes:
        masses: (n_columns, n) node masses of every chain and permutation.
        weights: (n,) event weights.
        ang_re, ang_im: real and imaginary parts of the angular factors,
            ((n_terms n_perm), n_states, n); with the lineshapes folded in
            and the permutations summed, (n_terms, n_states, n).
        norm_re, norm_im: (n_terms, n_terms) stored normalisation matrix
            (fixed lineshapes), or None.
        folded: whether the (fixed) lineshapes are folded into ``ang_re``/``ang_im``.
    """

    EVENT_FIELDS: ClassVar[tuple[str, ...]] = ("masses", "weights", "ang_re", "ang_im")

    masses: Any
    weights: Any
    ang_re: Any
    ang_im: Any
    norm_re: Any = None
    norm_im: Any = None
    folded: bool = field(default=False, metadata={"static": True})


@jax.tree_util.register_dataclass
@dataclass(frozen=True, eq=False)
class NormalisationCache(_Arrays):
    """A normalisation matrix without per-event arrays (fixed lineshapes, any MC size).

    Serves :meth:`~pwa.amplitude.Model.normalisation`, ``nll`` (as the MC
    cache) and ``fit_fractions`` (as the generator cache), not per-event
    quantities (intensities, plots).

    Attributes:
        norm_re, norm_im: (n_terms, n_terms) weighted mean M_kl of the per-term products.
        weights: (1,) the sample's total weight.
    """

    norm_re: Any
    norm_im: Any
    weights: Any


#: Either cache: what the normalisation, the NLL's MC term and the fit fractions take.
Cache = EventCache | NormalisationCache
