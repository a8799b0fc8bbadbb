"""Solve the couplings of R0 in the seed's own reaction, psi(2S) -> phi f_J -> K+ K- K+ K-.

PHYSICS.md section 5: the masses and widths of seed Table 1 are those of the
talk author's public code (PWACG ``config/pwa_info_kk.json``) for
e+e- -> psi(2S) -> phi f_J, phi -> K+ K-, f_J -> K+ K-. Lineshapes as there:

* phi: constant-width BW 1 / (m0^2 - s - i m0 Gamma0), m0 = 1.02, Gamma0 = 0.004
  (fixed; ``BW_plain``);
* f0(980): Flatte, m0 = 0.9795, g_pipi = 0.1068, g_KK / g_pipi = 8.57, with the
  analytic continuation rho -> i |rho| below threshold (``Flatte``; it equals
  the author's |1 - 4m^2/s| form everywhere above the K K threshold, where
  every f_J -> K+ K- of this reaction lives);
* f2(1270): the author's pi pi D-wave running width (``BW_f2_pipi``);
* every other f_J: constant-width BW (``BW_plain``).

The seed gives fractions, not couplings. Choices made here (not in the seed):

* helicity basis at psi(2S) -> phi f_J, keys "lambda_phi lambda_f"; J = 0 has
  (+1, 0) and (0, 0) with |c00 / c10| = 0.6 at a relative phase of 0.7 rad;
  J = 2 has (+1,+2), (+1,+1), (+1,0), (0,+1), (0,0) with magnitudes
  1, 0.8, 0.6, 0.5, 0.4 and phases 0, 1.2, -0.6, 0.4, -1.0 rad relative to the
  first; the same pattern for every state of a spin;
* f0(980) is the reference (its first coupling is (1, 0)).

Unknowns: an overall magnitude and phase for each of the five other
resonances (10 numbers); equations: the six fractions of Table 1. The system
is underdetermined; ``least_squares`` starts from the Table-1 magnitudes with
all overall phases at 0.5 rad. The per-term integrals M come from
``N_SOLVE`` generator-level events (``N_SOLVE_PLUS4`` for r0_plus4) (flat phase space with the phi proposal of
``pwa.fractions``, weighted), so the solved fractions carry that sample's MC
error; they are then checked on an independent sample, the ``pwa fractions``
default (1,000,000 events, seed 0).

Writes ``models/r0.yaml`` and ``models/r0_plus4.yaml`` (R0 plus the four
spurious states of seed Table 4 at 0.5 % each), or into the folder given as
the argument; run from the repo root:

    nice python experiments/r0_couplings/solve_psi2s.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve import solve_overall  # noqa: E402  (the least-squares core of the J/psi -> gamma K K solver)

from pwa import Model, fit_fractions_mc, parse_model_card  # noqa: E402
from pwa.fractions import phase_space_term_integrals  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE1 = {"f0(980)": 39.5, "f2(2340)": 37.1, "f2'(1525)": 24.7, "f0(1710)": 8.30,
          "f2(1270)": 3.16, "f2(2150)": 2.22}
PHI = {"name": "phi(1020)", "node": "phi", "lineshape": {"type": "BW_plain", "mass": 1.02, "width": 0.004}}
LINESHAPES = {
    "f0(980)": (0, {"type": "Flatte", "mass": 0.9795, "g_pipi": 0.1068, "g_ratio": 8.57}),
    "f2(2340)": (2, {"type": "BW_plain", "mass": 2.548, "width": 0.324}),
    "f2'(1525)": (2, {"type": "BW_plain", "mass": 1.5223, "width": 0.0858}),
    "f0(1710)": (0, {"type": "BW_plain", "mass": 1.6762, "width": 0.1627}),
    "f2(1270)": (2, {"type": "BW_f2_pipi", "mass": 1.290, "width": 0.196}),
    "f2(2150)": (2, {"type": "BW_plain", "mass": 2.162, "width": 0.159}),
}
SPURIOUS = {
    "f2(2010)": (2, {"type": "BW_plain", "mass": 2.011, "width": 0.202}),
    "f0(1500)": (0, {"type": "BW_plain", "mass": 1.507, "width": 0.112}),
    "f0(1370)": (0, {"type": "BW_plain", "mass": 1.347, "width": 0.200}),
    "f2(1640)": (2, {"type": "BW_plain", "mass": 1.639, "width": 0.099}),
}
SPURIOUS_FRACTION = 0.5
PATTERN = {
    0: {"+1 0": (1.0, 0.0), "0 0": (0.6, 0.7)},
    2: {"+1 +2": (1.0, 0.0), "+1 +1": (0.8, 1.2), "+1 0": (0.6, -0.6), "0 +1": (0.5, 0.4), "0 0": (0.4, -1.0)},
}
REFERENCE = "f0(980)"
START_PHASE = 0.5
N_SOLVE, SEED_SOLVE = 16_000_000, 7
N_SOLVE_PLUS4 = 4_000_000
N_CHECK, SEED_CHECK = 1_000_000, 0
REACTION = {"parent": "psi(2S)", "final_state": {"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"},
            "chains": ["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"]}


def couplings(spin: int, mag: float, phase: float) -> dict[str, list[float]]:
    return {k: [mag * a, float(np.angle(np.exp(1j * (phase + b))))] for k, (a, b) in PATTERN[spin].items()}


def card_dict(shapes: dict, mags: dict, phases: dict) -> dict:
    return {"reaction": REACTION,
            "resonances": [PHI] + [{"name": n, "node": "f", "spin": s, "lineshape": ls,
                                    "couplings": couplings(s, mags[n], phases[n])}
                                   for n, (s, ls) in shapes.items()],
            "reference": REFERENCE}


def solve(shapes: dict, targets: dict, fixed: dict | None = None, n_events: int = N_SOLVE) -> tuple[dict, dict]:
    """Magnitudes and phases of the resonances in ``targets`` (others kept at ``fixed``)."""
    names = list(shapes)
    model = Model.from_card(parse_model_card(card_dict(shapes, dict.fromkeys(names, 1.0), dict.fromkeys(names, 0.0))))
    print(f"per-term integrals from {n_events} events ...", file=sys.stderr)
    M = phase_space_term_integrals(model, model.initial_values(), n_events, seed=SEED_SOLVE)
    return solve_overall(model, M, names, targets, fixed or {}, REFERENCE, START_PHASE)


def write_card(path: Path, raw: dict, comment: str) -> None:
    card = parse_model_card(raw, source=str(path))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"# {line}".rstrip() + "\n" for line in comment.strip().splitlines()) + card.to_yaml())
    tmp.replace(path)
    print(f"wrote {path}", file=sys.stderr)


def main(out: Path = ROOT / "models") -> None:
    mags, phases = solve(LINESHAPES, TABLE1)
    r0 = card_dict(LINESHAPES, mags, phases)
    check = fit_fractions_mc(Model.from_card(parse_model_card(r0)), n_mc=N_CHECK, seed=SEED_CHECK)
    rows = "\n".join(f"  {n:<10} {TABLE1[n]:7.2f}   {100 * f:7.3f} +- {100 * e:.3f}"
                     for (n, f), e in zip(check.fractions.items(), check.errors))
    sf = f"  {'SF':<10} {'115.0':>7}   {100 * check.sum_of_fractions:7.3f} +- {100 * check.errors[-1]:.3f}"
    write_card(out / "r0.yaml", r0,
               f"Benchmark model R0 of the seed in its own reaction (Table 1; PHYSICS.md section 5).\n\n"
               f"Couplings solved by experiments/r0_couplings/solve_psi2s.py on {N_SOLVE} weighted\n"
               f"generator-level events (seed {SEED_SOLVE}); its docstring lists the choices.\n\n"
               f"Fractions (%): seed Table 1, then pwa fractions --model models/r0.yaml\n"
               f"({N_CHECK} events, seed {SEED_CHECK}, an independent sample) with its MC error:\n{rows}\n{sf}")
    shapes4 = {**LINESHAPES, **SPURIOUS}
    targets4 = {n: SPURIOUS_FRACTION for n in SPURIOUS}
    targets4[REFERENCE] = TABLE1[REFERENCE]
    fixed = {n: (mags[n], phases[n]) for n in LINESHAPES}
    m4, p4 = solve(shapes4, targets4, fixed, N_SOLVE_PLUS4)
    write_card(out / "r0_plus4.yaml", card_dict(shapes4, m4, p4),
               "R0 (models/r0.yaml) plus the four spurious states of seed Table 4 (masses and widths\n"
               f"as fitted there), each at {SPURIOUS_FRACTION} % of the intensity on its own at these couplings\n"
               "(experiments/r0_couplings/solve_psi2s.py); the R0 couplings are those of r0.yaml.")
    print(check, file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models")
