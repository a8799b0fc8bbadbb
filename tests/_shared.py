"""Small pieces several test files use (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace

#: Cheap XLA settings for tests that compile many small functions.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

#: Three resonances in J/psi -> gamma K+ K- (S and D waves, S-S interference): the CLI tests'
#: card (``small_card`` fixture) and the background study's.
SMALL_CARD = {
    "reaction": {"parent": "J/psi", "final_state": {"gamma": "gamma", "Kp": "K+", "Km": "K-"}},
    "resonances": [
        {"name": "f0(980)", "spin": 0, "lineshape": {"type": "Flatte", "mass": 0.979, "g_pipi": 0.107},
         "couplings": {0: [1.0, 0.0]}},
        {"name": "f2'(1525)", "spin": 2, "lineshape": {"type": "BW", "mass": 1.5223, "width": 0.0858},
         "couplings": {0: [6.0, 1.2], 1: [4.5, 2.4]}},
        {"name": "f0(1710)", "spin": 0, "lineshape": {"type": "BW", "mass": 1.6762, "width": 0.1627},
         "couplings": {0: [1.5, -0.5]}},
    ],
    "reference": "f0(980)",
}

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
    """n flat phase-space events of J/psi -> gamma K+ K-, optionally with weights uniform in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, n) if weighted else None
    return Events.from_helicity_variables(PhaseSpace(JPSI_GAMMA_KK).sample(n, rng), JPSI_GAMMA_KK, weights=w)


#: The psi(2S) -> K+ K- K+ K- chain of the public model P3 (phi on the first pair).
PSI2S_CHAIN = "psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"


def reference_bw(r: dict) -> dict:
    """A reference JSON resonance entry as a BW lineshape block."""
    return {"type": "BW", "mass": r["mass"], "width": r["width"], "radius": r["radius_GeV^-1"]}


def p3_card(data_dir) -> dict:
    """The card of the public model P3 (tests/data/ampform_psi2s_phi_kk.json): phi at one node, f0(1500),
    f2(1270), f0(1710) at the other, ampform's couplings (the mapping is the identity; keys are
    "lambda_phi lambda_f" because the chain writes phi first)."""
    import json
    from pathlib import Path

    ref = json.loads((Path(data_dir) / "ampform_psi2s_phi_kk.json").read_text())
    resonances = [{"name": "phi(1020)", "node": "phi", "lineshape": reference_bw(ref["phi(1020)"])}]
    for name, r in ref["resonances"].items():
        couplings = {}
        for key, c in r["couplings"].items():
            lf, lp = (int(part.split("=")[1]) for part in key.split(","))
            couplings[f"{lp:+d} {lf:+d}"] = c["value_mag_phase"]
        resonances.append({"name": name, "node": "f", "spin": r["J"], "parity": r["P"],
                           "lineshape": reference_bw(r), "couplings": couplings})
    return {"reaction": {"parent": "psi(2S)", "final_state": {"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"},
                         "chains": [PSI2S_CHAIN]},
            "resonances": resonances, "reference": resonances[1]["name"]}


#: J/psi -> gamma K+ K- with a two-channel, two-pole K-matrix S wave and the f2'(1525): the K-matrix
#: recovery test and experiments/kmatrix/recovery.py (beta, its phase and the second pole mass float).
KMATRIX_FIT_CARD = """
reaction:
  parent: J/psi
  final_state: {gamma: gamma, Kp: K+, Km: K-}
resonances:
  - name: S-wave
    spin: 0
    lineshape:
      type: KMatrix
      channels: [pi+ pi-, K+ K-]
      poles:
        f0(980):  {mass: 0.98, g: [0.30, 0.75]}
        f0(1710): {mass: 1.71, g: [0.20, 0.45], beta: [0.8, 1.2]}
    float: ["f0(1710).beta.mag", "f0(1710).beta.phase", "f0(1710).mass"]
    couplings: {0: [1.0, 0.0]}
  - name: f2'(1525)
    spin: 2
    lineshape: {type: BW, mass: 1.5223, width: 0.0858}
    couplings: {0: [9.6, 1.2], 1: [7.2, 2.4], 2: [3.2, 0.6]}
reference: S-wave
"""
