"""Small pieces several test files use (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

from fastsim.events import Events, PhaseSpace

#: Cheap XLA settings for tests that compile many small functions.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

#: Two resonances, S and D wave, the f2'(1525) mass and width floating.
TWO_STATE_CARD = {
    "resonances": [
        {"name": "f0(1710)", "spin": 0, "lineshape": {"type": "BW", "mass": 1.6762, "width": 0.1627},
         "couplings": {0: [1.0, 0.0]}},
        {"name": "f2'(1525)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.5223, "width": 0.0858},
         "float": ["mass", "width"], "couplings": {0: [6.0, 1.2], 1: [4.5, 2.4], 2: [2.0, 0.6]}},
    ],
    "reference": "f0(1710)",
}


def without_floats(card: dict) -> dict:
    """The card with every lineshape parameter fixed."""
    return {**card, "resonances": [{k: v for k, v in r.items() if k != "float"} for r in card["resonances"]]}


def flat_events(n: int, seed: int, weighted: bool = False) -> Events:
    """n flat phase-space events, optionally with weights uniform in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, n) if weighted else None
    return Events.from_helicity_variables(PhaseSpace().sample(n, rng), weights=w)
