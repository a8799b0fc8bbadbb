"""Domain errors of the fast simulator (``cli.common`` prints them without a traceback),
and the check of per-event weights that raises them."""

from __future__ import annotations

import numpy as np


class CheckpointError(Exception):
    """A model file that is missing, truncated, not a fastsim checkpoint, made for
    another reaction or coordinate mapping, or holding non-finite weights."""


class TrainingError(Exception):
    """Training cannot start or continue (empty sample, bad event weights, non-finite
    loss, bad resume)."""


class SamplingError(Exception):
    """A generator produced events that are not finite numbers (NaN or inf)."""


def checked_weights(weights, n: int, what: str = "event weights") -> np.ndarray:
    """Per-event weights (n,) as float64, or a :class:`TrainingError` naming ``what``.

    Refused: another shape than (n,), NaN or inf, all zero, a sum that is not
    positive. Negative weights are allowed when the sum is positive.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise TrainingError(f"{what} must have shape ({n},), one per event, got {w.shape}")
    bad = int(np.sum(~np.isfinite(w)))
    if bad:
        raise TrainingError(f"{what} have {bad} non-finite values (NaN or inf)")
    if not np.any(w):
        raise TrainingError(f"{what} are all zero")
    total = float(w.sum())
    if not total > 0.0:
        raise TrainingError(f"{what} sum to {total:.6g}; the sum must be positive "
                            f"(negative weights are allowed only with a positive sum)")
    return w
