"""Start points of a multi-start fit.

The first start is the given x0 (the card's values); the others randomise it
(:class:`pwa.fit_result.FitConfig`): phases uniform, magnitudes scaled by
e^U(-1,1), floating masses and widths moved by up to +-10 %, all kept
strictly inside finite bounds.
"""

from __future__ import annotations

import numpy as np

from .amplitude import Model


def random_starts(model: Model, x0: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """x0 followed by n - 1 randomised copies (see :class:`~pwa.fit_result.FitConfig`)."""
    rng = np.random.default_rng(seed)
    starts = [np.asarray(x0, dtype=np.float64)]
    lo = np.array([-np.inf if b[0] is None else b[0] for b in model.bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in model.bounds])
    for _ in range(n - 1):
        x = starts[0].copy()
        for i, name in enumerate(model.parameter_names):
            kind = name.rsplit(":", 1)[1]
            if kind.endswith(".phase"):
                x[i] = rng.uniform(-np.pi, np.pi)
            elif kind.endswith(".mag"):
                x[i] = max(abs(x[i]), 0.05) * np.exp(rng.uniform(-1.0, 1.0))
            else:
                x[i] = x[i] * (1.0 + rng.uniform(-0.1, 0.1))
        # Keep strictly inside finite bounds (the sine/sqrt transforms are flat on them).
        inner_lo, inner_hi = lo.copy(), hi.copy()
        fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
        inner_lo[fin_lo] += 1e-9 * np.maximum(np.abs(lo[fin_lo]), 1.0)
        inner_hi[fin_hi] -= 1e-9 * np.maximum(np.abs(hi[fin_hi]), 1.0)
        starts.append(np.clip(x, inner_lo, inner_hi))
    return starts
