"""Solve the couplings of the stand-in R0 in J/psi -> gamma K+ K- (models/jpsi_gamma_kk.yaml; PHYSICS.md section 5).

The seed gives fit fractions, not couplings. Choices made here (not in the seed):

* helicity structure of every tensor: |c1/c0| = 0.8, |c2/c0| = 0.4 with
  helicity phases 1.2 and -0.6 rad relative to c0 (the same pattern for all
  four f2 states; the example of the model-card spec);
* f0(980) is the reference (its coupling is fixed to (1, 0)).

Unknowns: an overall magnitude and phase for each of the five other
resonances (10 numbers). Equations: the six fractions of seed Table 1 (their
sum, 115 %, fixes how much the states interfere). The system is
underdetermined, so ``scipy.optimize.least_squares`` starts from the Table-1
magnitudes with all overall phases at 0.5 rad and takes the nearest solution.
The per-term integrals M over generator-level flat phase space are computed by
deterministic quadrature (``pwa.phase_space_quadrature``, converged to 1e-6
relative), so the solved fractions carry no MC error; the result is checked
with the ``pwa fractions`` default (1,000,000 flat MC events, seed 0), whose
statistical error is about 0.1 % absolute for the two largest fractions.

Writes ``models/jpsi_gamma_kk.yaml`` and ``models/jpsi_gamma_kk_plus4.yaml``; run from the repo root:

    nice python experiments/r0_couplings/solve.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402

from pwa import Model, fit_fractions_mc, fit_fractions_quadrature, parse_model_card  # noqa: E402
from pwa.fractions import phase_space_quadrature  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE1 = {"f0(980)": 39.5, "f2(2340)": 37.1, "f2'(1525)": 24.7, "f0(1710)": 8.30,
          "f2(1270)": 3.16, "f2(2150)": 2.22}
LINESHAPES = {
    "f0(980)": (0, {"type": "Flatte", "mass": 0.979, "g_pipi": 0.107, "g_ratio": 4.21}),
    "f2(2340)": (2, {"type": "BW", "mass": 2.548, "width": 0.324, "radius": 1.0}),
    "f2'(1525)": (2, {"type": "BW", "mass": 1.5223, "width": 0.0858, "radius": 1.0}),
    "f0(1710)": (0, {"type": "BW", "mass": 1.6762, "width": 0.1627, "radius": 1.0}),
    "f2(1270)": (2, {"type": "BW", "mass": 1.290, "width": 0.196, "radius": 1.0}),
    "f2(2150)": (2, {"type": "BW", "mass": 2.162, "width": 0.159, "radius": 1.0}),
}
# Seed Table 4: the four spurious states (fitted masses and widths).
SPURIOUS = {
    "f2(2010)": (2, {"type": "BW", "mass": 2.011, "width": 0.202, "radius": 1.0}),
    "f0(1500)": (0, {"type": "BW", "mass": 1.507, "width": 0.112, "radius": 1.0}),
    "f0(1370)": (0, {"type": "BW", "mass": 1.347, "width": 0.200, "radius": 1.0}),
    "f2(1640)": (2, {"type": "BW", "mass": 1.639, "width": 0.099, "radius": 1.0}),
}
# Target fraction of each spurious state in r0_plus4 at its card values (small,
# so the card is near R0; a fit then decides whether they survive).
SPURIOUS_FRACTION = 0.005
HELICITY_MAG = (1.0, 0.8, 0.4)
HELICITY_PHASE = (0.0, 1.2, -0.6)
REFERENCE = "f0(980)"
START_PHASE = 0.5
N_CHECK, SEED_CHECK = 1_000_000, 0


def integrals(model: Model) -> np.ndarray:
    """Per-term integrals (n_terms, n_terms) over flat phase space, by quadrature."""
    cache = model.precompute(phase_space_quadrature(model.reaction))
    return np.asarray(model.term_integrals(model.initial_values(), cache))


def couplings(spin: int, mag: float, phase: float) -> dict[int, list[float]]:
    if spin == 0:
        return {0: [mag, phase]}
    return {lr: [mag * HELICITY_MAG[lr], float(np.angle(np.exp(1j * (phase + HELICITY_PHASE[lr]))))]
            for lr in (0, 1, 2)}


def card_dict(shapes: dict, mags: dict, phases: dict) -> dict:
    return {
        "reaction": {"parent": "J/psi", "final_state": {"gamma": "gamma", "Kp": "K+", "Km": "K-"}},
        "resonances": [{"name": n, "spin": s, "lineshape": ls, "couplings": couplings(s, mags[n], phases[n])}
                       for n, (s, ls) in shapes.items()],
        "reference": REFERENCE,
    }


def solve(shapes: dict, targets: dict, fixed: dict | None = None) -> tuple[dict, dict]:
    """Magnitudes and phases of the resonances in ``targets`` (others kept at ``fixed``)."""
    names = list(shapes)
    model = Model.from_card(parse_model_card(card_dict(shapes, dict.fromkeys(names, 1.0), dict.fromkeys(names, 0.0))))
    return solve_overall(model, integrals(model), names, targets, fixed or {}, REFERENCE, START_PHASE)


def solve_overall(model: Model, M: np.ndarray, names: list[str], targets: dict, fixed: dict, reference: str,
                  start_phase: float) -> tuple[dict, dict]:
    """Overall magnitude and phase per resonance so that the fractions hit ``targets`` (%).

    ``model`` is the card with every overall factor 1 (its couplings give the
    helicity pattern u_k), ``M`` its per-term integrals; c_k = s_R e^{i phi_R} u_k.
    Shared with ``solve_psi2s.py``.
    """
    term_res = np.array([i for i, _ in model.terms])
    u = np.asarray(model.couplings(model.initial_values()))
    free = [n for n in targets if n != reference]

    def unpack(x):
        mags = {n: fixed.get(n, (1.0, 0.0))[0] for n in names}
        phases = {n: fixed.get(n, (1.0, 0.0))[1] for n in names}
        for i, n in enumerate(free):
            mags[n], phases[n] = np.exp(x[i]), x[len(free) + i]
        return mags, phases

    def fractions(x):
        mags, phases = unpack(x)
        scale = np.array([mags[names[r]] * np.exp(1j * phases[names[r]]) for r in term_res])
        c = scale * u
        total = np.real(np.conj(c) @ M @ c)
        return {n: np.real(np.conj(c * (term_res == i)) @ M @ (c * (term_res == i))) / total
                for i, n in enumerate(names)}

    def residuals(x):
        f = fractions(x)
        return np.array([100 * f[n] - targets[n] for n in targets])

    diag = {n: np.real(sum(M[k, k] * abs(u[k]) ** 2 for k in range(len(u)) if term_res[k] == i))
            for i, n in enumerate(names)}
    ref_scale = fixed.get(reference, (1.0, 0.0))[0] ** 2 * diag[reference] / targets.get(reference, 1.0)
    x0 = np.concatenate([[0.5 * np.log(targets[n] * ref_scale / diag[n]) for n in free],
                         [start_phase] * len(free)])
    sol = least_squares(residuals, x0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    print(f"least squares: cost {sol.cost:.3e}, residuals (%) {np.round(sol.fun, 5)}", file=sys.stderr)
    return unpack(sol.x)


def header(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.strip().splitlines())


def write_card(path: Path, raw: dict, comment: str) -> None:
    card = parse_model_card(raw, source=str(path))
    path.write_text(header(comment) + card.to_yaml())
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    mags, phases = solve(LINESHAPES, TABLE1)
    r0 = card_dict(LINESHAPES, mags, phases)
    exact = fit_fractions_quadrature(Model.from_card(parse_model_card(r0)))
    check = fit_fractions_mc(Model.from_card(parse_model_card(r0)), n_mc=N_CHECK, seed=SEED_CHECK)
    table = "\n".join(f"  {n:10s} {100 * exact.fractions[n]:7.3f}  {100 * f:7.3f}   {TABLE1[n]:5.2f}"
                      for n, f in check.fractions.items())
    common = f"""
Couplings solved by experiments/r0_couplings/solve.py: least squares on the
generator-level fit fractions (flat phase space integrated by quadrature).
Chosen, not from the seed: every f2 has |c1/c0| = 0.8, |c2/c0| = 0.4 with
helicity phases +1.2 and -0.6 rad relative to c0; overall phases solved from a
start of {START_PHASE} rad. Couplings: lambda_R: [magnitude, phase (rad)].
f0(980): Flatte (PHYSICS.md section 5), g_pipi = 0.107 GeV^2, g_KK = 4.21 g_pipi.
"""
    write_card(ROOT / "models" / "jpsi_gamma_kk.yaml", r0, f"""
The first version's stand-in R0 in J/psi -> gamma K+ K- (seed Table 1 fractions; PHYSICS.md section 5).
{common}
Fractions (%): quadrature, flat MC ({N_CHECK} events, seed {SEED_CHECK}, i.e.
pwa fractions --model models/jpsi_gamma_kk.yaml), seed Table 1:
{table}
  SF         {100 * exact.sum_of_fractions:7.3f}  {100 * check.sum_of_fractions:7.3f}   115.0
""")
    # r0_plus4: the six R0 states keep their couplings; each spurious state gets an
    # overall magnitude giving it about SPURIOUS_FRACTION of the total (phase 0).
    shapes4 = {**LINESHAPES, **SPURIOUS}
    targets4 = {n: 100 * SPURIOUS_FRACTION for n in SPURIOUS}
    fixed = {n: (mags[n], phases[n]) for n in LINESHAPES}
    m4, p4 = solve_spurious(shapes4, targets4, fixed)
    raw4 = card_dict(shapes4, m4, p4)
    check4 = fit_fractions_quadrature(Model.from_card(parse_model_card(raw4)))
    table4 = "\n".join(f"  {n:10s} {100 * f:7.3f}" for n, f in check4.fractions.items())
    write_card(ROOT / "models" / "jpsi_gamma_kk_plus4.yaml", raw4, f"""
R0 plus the four spurious states of seed Table 4 (f2(2010), f0(1500),
f0(1370), f2(1640); their fitted masses and widths in that table). The six R0
states keep the couplings of models/jpsi_gamma_kk.yaml; each spurious state has the
helicity pattern below, overall phase 0 and an overall magnitude that gives it
a small fit fraction ({100 * SPURIOUS_FRACTION:g} % of the R0 total intensity; the
fractions below include the larger total), so the card
starts near R0 and a fit (NLL~ with lambda = 1e2, SF_target = 1.15) decides.
{common}
Fractions at these values (quadrature):
{table4}
  SF         {100 * check4.sum_of_fractions:7.3f}
""")


def solve_spurious(shapes: dict, targets: dict, fixed: dict) -> tuple[dict, dict]:
    """Magnitude of each spurious state for a fraction ``targets[n]`` (%), phase 0."""
    names = list(shapes)
    unit = {n: fixed.get(n, (1.0, 0.0))[0] for n in names}
    ph = {n: fixed.get(n, (1.0, 0.0))[1] for n in names}
    for n in targets:
        ph[n] = 0.0
    model = Model.from_card(parse_model_card(card_dict(shapes, unit, ph)))
    M = integrals(model)
    term_res = np.array([i for i, _ in model.terms])
    c = np.asarray(model.couplings(model.initial_values()))
    total = np.real(np.conj(c) @ M @ c)
    mags = dict(unit)
    for n in targets:
        i = names.index(n)
        own = np.real(np.conj(c * (term_res == i)) @ M @ (c * (term_res == i)))
        # F = s^2 own / total with total ~ the R0 total (the spurious states are small).
        mags[n] = float(np.sqrt(targets[n] / 100 * total / own))
    return mags, ph


if __name__ == "__main__":
    main()
