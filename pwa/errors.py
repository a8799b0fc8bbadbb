"""Domain errors of the partial-wave analysis.

``cli.common.handle_errors`` looks these names up here and prints them as one
red line with exit code 2, so every user-facing failure of ``pwa`` should be
one of them.
"""

from __future__ import annotations


class ModelCardError(Exception):
    """A model card that does not exist, is not YAML, or does not validate.

    The message names the file and the offending field.
    """


class FitError(Exception):
    """A fit that cannot start or does not converge."""


class PrecisionError(RuntimeError):
    """The library was called without ``jax_enable_x64``.

    Library modules never switch float64 on themselves (no global
    configuration); entry points must call
    ``jax.config.update("jax_enable_x64", True)`` first.
    """


class GenerationError(RuntimeError):
    """Toy generation failed, e.g. an event exceeded the hit-or-miss maximum."""
