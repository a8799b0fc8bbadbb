"""Start points of a multi-start fit.

The first start is the given x0 (the card's values); the others randomise it
(:class:`pwa.fit_result.FitConfig`): phases uniform, magnitudes scaled by
e^U(-1,1), floating masses and widths moved by up to +-10 %, all kept
strictly inside finite bounds (:attr:`pwa.amplitude.Model.bounds`: a
floating mass within its node's kinematic range, a width below 2 GeV).

:func:`default_starts` is how many starts a fit should make when the user
does not say: one for a fit of couplings only (the previous default, and the
fits that scans, toys and significance refits repeat many times), five when
a lineshape parameter floats. There the NLL is far from quadratic (a mass
and a width enter every event non-linearly, two states can swap roles, a
state can run to the edge of its range), and only several starts can show,
in the listing of distinct minima
(:attr:`pwa.fit_result.FitResult.distinct_minima`), whether other minima
lie close to the best one found.
"""

from __future__ import annotations

import numpy as np

from .amplitude import Model

#: Starts of a fit in which a lineshape parameter floats (:func:`default_starts`).
FLOATING_LINESHAPE_STARTS = 5


def default_starts(model: Model) -> int:
    """Default number of starts of a fit of ``model``: :data:`FLOATING_LINESHAPE_STARTS` (5)
    when any lineshape parameter floats (a mass, a width, a K-matrix entry), else 1.

    Five starts cost five fits; with them a fit reports how many starts ended
    in its best minimum (:attr:`pwa.fit_result.FitResult.distinct_minima`),
    which tells whether more are worth running.
    """
    return FLOATING_LINESHAPE_STARTS if model.floating_lineshapes else 1


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
