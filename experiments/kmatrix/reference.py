#!/usr/bin/env python3
"""Reference values of the KMatrix lineshape from ComPWA's ampform, independent of ``pwa``.

Writes ``tests/data/kmatrix_reference.json``, which ``tests/test_kmatrix.py``
compares with :mod:`pwa.kmatrix` (to 1e-10 relative). ampform is not a
dependency of the project: run this in its own environment::

    python3 -m venv /tmp/ampform-env
    /tmp/ampform-env/bin/pip install ampform sympy numpy
    /tmp/ampform-env/bin/python experiments/kmatrix/reference.py

Nothing here imports ``pwa`` or ``fastsim``: masses are the PDG values the
project uses (PHYSICS.md section 1; eta from the PDG tables), and the test
checks that the project's particle data give the same numbers.

Which ampform formula is the same physics as ``pwa.kmatrix``:
``ampform.dynamics.kmatrix.RelativisticPVector.formulate(..., return_f_hat=True)``
is the Lorentz-invariant ``f_hat = (I - i K_hat rho)^{-1} P`` with
``K_hat = conj(sqrt(rho))^{-1} K sqrt(rho)^{-1}``. With ampform's
parametrisation (S wave, so its form factors are 1),
``K_ij = sum_R gamma_Ri gamma_Rj sqrt(m_R Gamma_Ri(s)) sqrt(m_R Gamma_Rj(s)) / (m_R^2 - s)``
and ``Gamma_Ri(s) = Gamma_Ri rho_i(s) / rho_i(m_R^2)``, the sqrt(rho(s)) cancel
above all thresholds and ``K_hat`` has the constant residues of ``pwa``:
``g_Ri = gamma_Ri sqrt(m_R Gamma_Ri / rho_i(m_R^2))``; ampform's
``P_i = sum_R beta_R gamma_Ri m_R Gamma_Ri / (m_R^2 - s)``. Both match ``pwa``
with ``Gamma_Ri = W_R / rho_i(m_R^2)``, ``gamma_Ri = g_Ri rho_i(m_R^2) / sqrt(m_R W_R)``
and ``beta_R(ampform) = beta_R(pwa) / sqrt(m_R W_R)``, W_R > 0 arbitrary; this
needs every pole above every threshold (rho_i(m_R^2) real), and it holds for s
above all thresholds only (below, ampform's conj(sqrt(rho)) of a closed channel
differs from the analytic continuation). ampform's ``RelativisticKMatrix`` is
not the same physics: its T-hat = K (I - i rho K)^{-1} takes the K with the
sqrt(rho_i(s) rho_j(s)) of the running widths, so its unitary
sqrt(rho) T-hat sqrt(rho) has the K-matrix rho K_const rho (K_const with
constant residues) where ``pwa`` has sqrt(rho) K sqrt(rho).

Two kinds of cases therefore:

* ``parametrised``: ampform's RelativisticPVector f_hat with ampform's own
  parametrisations of K (``RelativisticKMatrix.parametrization``), P
  (``RelativisticPVector.parametrization``) and rho (``PhaseSpaceFactor``) and
  the mapped parameters; poles and s above every threshold, no background
  terms (ampform has none);
* ``matrix_algebra``: the same f_hat with K_ij -> conj(sqrt(rho_i)) K_ij
  sqrt(rho_j) (so that K_hat is the K of pwa), K and P written here with
  background terms, rho = ampform's ``PhaseSpaceFactor``
  sqrt((s - (m1+m2)^2)(s - (m1-m2)^2)) / s, which for equal masses is i |rho|
  below threshold as in pwa; poles and s below thresholds too.

``formulate`` substitutes the parametrisations into f_hat symbolically; that
expression is too large to evaluate for three channels, so here f_hat is
lambdified in the entries of K, P and rho and the parametrisations are
evaluated entry by entry: the same expression, evaluated in stages.

Every expression is evaluated with mpmath at 40 digits from the double-precision
inputs, and checked here against a direct mpmath solve of (I - i K rho) F = P
(the largest relative difference is recorded in the file).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import mpmath as mp
import numpy as np
import sympy as sp
from ampform.dynamics.kmatrix import RelativisticPVector
from ampform.dynamics.phasespace import PhaseSpaceFactor
from ampform.sympy import create_symbol_matrix

mp.mp.dps = 40
DIGITS = 40

#: GeV; pi+- and K+- of PHYSICS.md section 1, eta of the PDG tables.
MASSES = {"pi+": 0.13957039, "pi-": 0.13957039, "K+": 0.493677, "K-": 0.493677, "eta": 0.547862}

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "kmatrix_reference.json"


def grid(lo: float, hi: float, n: int) -> list[float]:
    return [float(x) for x in np.linspace(lo, hi, n)]


M_PIPI, M_KK, M_ETAETA = 2 * MASSES["pi+"], 2 * MASSES["K+"], 2 * MASSES["eta"]

CASES = [
    {
        "name": "parametrised_2ch_3poles",
        "kind": "parametrised",
        "lineshape": {
            "type": "KMatrix",
            "channels": ["pi+ pi-", "K+ K-"],
            "poles": {"f0(1370)": {"mass": 1.35, "g": [0.25, 0.45]},
                      "f0(1500)": {"mass": 1.505, "g": [0.40, -0.18], "beta": [0.7, 2.1]},
                      "f0(1710)": {"mass": 1.72, "g": [0.12, 0.55], "beta": [1.3, -0.8]}},
        },
        "W": [0.3, 0.11, 0.14],
        "grids": {"pi+ pi-": grid(M_KK + 1e-3, 3.0, 30), "K+ K-": grid(M_KK + 1e-3, 3.0, 30)},
    },
    {
        "name": "parametrised_3ch_3poles",
        "kind": "parametrised",
        "lineshape": {
            "type": "KMatrix",
            "channels": ["pi+ pi-", "K+ K-", "eta eta"],
            "poles": {"f0(1370)": {"mass": 1.35, "g": [0.25, 0.45, -0.10]},
                      "f0(1500)": {"mass": 1.505, "g": [0.40, -0.18, 0.22], "beta": [0.7, 2.1]},
                      "f0(1710)": {"mass": 1.72, "g": [0.12, 0.55, 0.30], "beta": [1.3, -0.8]}},
        },
        "W": [0.2, 0.1, 0.15],
        "grids": {c: grid(M_ETAETA + 1e-3, 3.0, 30) for c in ("pi+ pi-", "K+ K-", "eta eta")},
    },
    {
        "name": "matrix_algebra_2ch_2poles_background",
        "kind": "matrix_algebra",
        "lineshape": {
            "type": "KMatrix",
            "channels": ["pi+ pi-", "K+ K-"],
            "poles": {"f0(980)": {"mass": 0.98, "g": [0.30, 0.75]},
                      "f0(1500)": {"mass": 1.50, "g": [0.35, 0.20], "beta": [0.8, 1.2]}},
            "background": [[0.2, 0.1], [0.1, -0.1]],
            "production_background": [[0.05, 0.0], [0.3, -0.5]],
        },
        "grids": {"pi+ pi-": grid(M_PIPI + 1e-3, 2.5, 40), "K+ K-": grid(M_KK + 1e-4, 3.0, 40)},
    },
    {
        "name": "matrix_algebra_3ch_4poles_background",
        "kind": "matrix_algebra",
        "lineshape": {
            "type": "KMatrix",
            "channels": ["pi+ pi-", "K+ K-", "eta eta"],
            "poles": {"f0(980)": {"mass": 0.98, "g": [0.30, 0.70, 0.20]},
                      "f0(1370)": {"mass": 1.37, "g": [0.50, 0.10, -0.30], "beta": [0.6, -2.0]},
                      "f0(1500)": {"mass": 1.50, "g": [0.30, 0.20, 0.40], "beta": [0.9, 0.4]},
                      "f0(1710)": {"mass": 1.71, "g": [0.10, 0.50, 0.30], "beta": [1.1, 2.8]}},
            "background": [[0.3, 0.1, -0.2], [0.1, -0.4, 0.05], [-0.2, 0.05, 0.15]],
            "production_background": [[0.1, 0.3], [0.2, -1.0], [0.05, 2.0]],
        },
        "grids": {"pi+ pi-": grid(0.3, 2.5, 30), "K+ K-": grid(M_KK + 1e-4, 3.0, 30),
                  "eta eta": grid(M_ETAETA + 1e-4, 3.0, 30)},
    },
]


def hp(x: float) -> sp.Float:
    """The double x exactly, as a 40-digit sympy number."""
    return sp.Float(x, DIGITS)


def channel_masses(label: str) -> tuple[float, float]:
    a, b = label.split()
    return MASSES[a], MASSES[b]


def rho_expr(s, label: str) -> sp.Expr:
    m1, m2 = channel_masses(label)
    return PhaseSpaceFactor(s, hp(m1), hp(m2)).doit()


def unpack(ls: dict):
    """Channels, pole masses, g, complex beta (first = 1), f, fP of a nested card mapping (floats)."""
    channels = ls["channels"]
    poles = list(ls["poles"].values())
    n = len(channels)
    masses = [p["mass"] for p in poles]
    g = [p["g"] for p in poles]
    beta = [(1.0, 0.0)] + [tuple(p["beta"]) for p in poles[1:]]
    f = ls.get("background") or [[0.0] * n for _ in range(n)]
    fp = ls.get("production_background") or [(0.0, 0.0)] * n
    return channels, masses, g, beta, f, fp


def polar(mag: float, phase: float) -> sp.Expr:
    return hp(mag) * sp.exp(sp.I * hp(phase))


def direct(ls: dict, m: float, k: int) -> mp.mpc:
    """F_k = [(I - i K rho)^{-1} P]_k by an mpmath solve (the self-check)."""
    channels, masses, g, beta, f, fp = unpack(ls)
    s = mp.mpf(m) ** 2
    n = len(channels)
    rho = []
    for c in channels:
        m1, m2 = (mp.mpf(x) for x in channel_masses(c))
        rho.append(mp.sqrt((s - (m1 + m2) ** 2) * (s - (m1 - m2) ** 2)) / s)
    d = [mp.mpf(ma) ** 2 - s for ma in masses]
    K = mp.matrix(n, n)
    P = mp.matrix(n, 1)
    for i in range(n):
        for j in range(n):
            K[i, j] = sum(mp.mpf(g[a][i]) * mp.mpf(g[a][j]) / d[a] for a in range(len(masses))) + mp.mpf(f[i][j])
        P[i] = sum(mp.mpf(b[0]) * mp.expj(mp.mpf(b[1])) * mp.mpf(g[a][i]) / d[a] for a, b in enumerate(beta)) \
            + mp.mpf(fp[i][0]) * mp.expj(mp.mpf(fp[i][1]))
    A = mp.eye(n) - 1j * K * mp.diag(rho)
    return mp.lu_solve(A, P)[k]


def indexed(expr: sp.Expr) -> dict[tuple, sp.Indexed]:
    return {(str(x.base), *map(int, x.indices)): x for x in expr.atoms(sp.Indexed)}


def symbol(expr: sp.Expr, name: str) -> sp.Symbol:
    return next(x for x in expr.free_symbols if isinstance(x, sp.Symbol) and x.name == name)


def f_hat_expression(n_ch: int, n_poles: int) -> sp.Matrix:
    """ampform's unparametrised f_hat: ``RelativisticPVector.formulate(parametrize=False, return_f_hat=True)``.

    For three channels ampform's own symbolic inverse (sympy's default
    Gaussian elimination) did not finish in 15 minutes; there the same lines
    as ampform's ``RelativisticPVector._create_matrices`` are used with
    ``inv(method="LU")`` (ampform 0.16.2: ``k_hat = conj(sqrt(rho))^-1 K
    sqrt(rho)^-1``, ``f_hat = (I - i k_hat rho)^-1 P``); for two channels both
    are evaluated and must agree (:data:`REPLICA_CHECK`).
    """
    if n_ch <= 2:
        return RelativisticPVector.formulate(n_channels=n_ch, n_poles=n_poles, parametrize=False,
                                             return_f_hat=True)
    return f_hat_replica(n_ch)


def f_hat_replica(n_ch: int) -> sp.Matrix:
    rho = sp.zeros(n_ch, n_ch)
    for i in range(n_ch):
        rho[i, i] = sp.Symbol(f"rho{i}")
    sqrt_rho = sp.sqrt(rho).doit()
    k_matrix = create_symbol_matrix("K", n_ch, n_ch)
    k_hat = sp.conjugate(sqrt_rho).inv() * k_matrix * sqrt_rho.inv()
    p_vector = create_symbol_matrix("P", m=n_ch, n=1)
    return (sp.eye(n_ch) - sp.I * k_hat * rho).inv(method="LU") * p_vector


#: Largest relative difference of ampform's formulate and the replica (two-channel cases).
REPLICA_CHECK: list[float] = []


def f_hat_algebra(n_ch: int, n_poles: int):
    """f_hat as an mpmath function of the entries of K, P and rho.

    ``formulate`` would substitute the parametrisations into this expression
    symbolically (far too large to evaluate for three channels); here the same
    substitution is done numerically, entry by entry.
    """
    exprs = [f_hat_expression(n_ch, n_poles)]
    if n_ch <= 2:
        exprs.append(f_hat_replica(n_ch))
    compiled = []
    for expr in exprs:
        sym = indexed(expr)
        k = [sym["K", i, j] for i in range(n_ch) for j in range(n_ch)]
        p = [sym["P", i, 0] for i in range(n_ch)]
        rho = [symbol(expr, f"rho{i}") for i in range(n_ch)]
        compiled.append([sp.lambdify(k + p + rho, expr[i], "mpmath") for i in range(n_ch)])

    def f_hat(K, P, rho_values):
        flat = [K[i][j] for i in range(n_ch) for j in range(n_ch)] + list(P) + list(rho_values)
        values = [[mp.mpc(fn(*flat)) for fn in fns] for fns in compiled]
        for other in values[1:]:
            REPLICA_CHECK.append(max(float(abs(a - b) / abs(a)) for a, b in zip(values[0], other)))
        return values[0]

    return f_hat


def in_s(expr: sp.Expr, s: sp.Symbol):
    return sp.lambdify(s, expr.doit(), "mpmath")


def parametrised(case: dict):
    """ampform's RelativisticPVector f_hat with its own parametrisations of K and P (mapped parameters)."""
    from ampform.dynamics.kmatrix import RelativisticKMatrix

    channels, masses, g, beta, f, fp = unpack(case["lineshape"])
    n_ch, n_poles = len(channels), len(masses)
    s = sp.Symbol("s", nonnegative=True)
    m_pole, width, gamma = (sp.IndexedBase(x, nonnegative=True) for x in ("m", "Gamma", "gamma"))
    m_a, m_b, beta_sym = (sp.IndexedBase(x, nonnegative=True) for x in ("m_a", "m_b", "beta"))
    R = sp.Symbol("R", integer=True, positive=True)
    values, record = {}, {"m": [], "Gamma": [], "gamma": [], "beta": []}
    for i, c in enumerate(channels):
        m1, m2 = channel_masses(c)
        values[m_a[i]], values[m_b[i]] = hp(m1), hp(m2)
    for a in range(n_poles):
        mR, W = hp(masses[a]), hp(case["W"][a])
        values[m_pole[a + 1]] = mR
        widths, gammas = [], []
        for i, c in enumerate(channels):
            rho0 = sp.N(rho_expr(mR**2, c), DIGITS)
            assert rho0.is_real and rho0 > 0, f"pole {masses[a]} below the {c} threshold"
            widths.append(W / rho0)
            gammas.append(hp(g[a][i]) * rho0 / sp.sqrt(mR * W))
            values[width[a + 1, i]], values[gamma[a + 1, i]] = widths[-1], gammas[-1]
        b = sp.N(polar(*beta[a]) / sp.sqrt(mR * W), DIGITS)
        values[beta_sym[a + 1]] = b
        record["m"].append(float(mR))
        record["Gamma"].append([float(x) for x in widths])
        record["gamma"].append([float(x) for x in gammas])
        record["beta"].append([float(sp.re(b)), float(sp.im(b))])
    common = dict(s=s, pole_position=m_pole, pole_width=width, m_a=m_a, m_b=m_b, residue_constant=gamma,
                  n_poles=n_poles, pole_id=R, angular_momentum=0, meson_radius=1)
    K = [[in_s(RelativisticKMatrix.parametrization(i=i, j=j, **common).doit().xreplace(values), s)
          for j in range(n_ch)] for i in range(n_ch)]
    P = [in_s(RelativisticPVector.parametrization(i=i, beta_constant=beta_sym, **common).doit().xreplace(values), s)
         for i in range(n_ch)]
    rho = [in_s(PhaseSpaceFactor(s, m_a[i], m_b[i]).doit().xreplace(values), s) for i in range(n_ch)]
    algebra = f_hat_algebra(n_ch, n_poles)

    def evaluate(s_value):
        return algebra([[K[i][j](s_value) for j in range(n_ch)] for i in range(n_ch)],
                       [P[i](s_value) for i in range(n_ch)], [r(s_value) for r in rho])

    return evaluate, record


def matrix_algebra(case: dict):
    """ampform's RelativisticPVector f_hat algebra with K_ij -> conj(sqrt(rho_i)) K_ij sqrt(rho_j) and this P."""
    channels, masses, g, beta, f, fp = unpack(case["lineshape"])
    n_ch = len(channels)
    s = sp.Symbol("s", positive=True)
    d = [hp(ma) ** 2 - s for ma in masses]
    rho_s = [rho_expr(s, c) for c in channels]
    K = [[in_s(sp.conjugate(sp.sqrt(rho_s[i]))
               * (sum(hp(g[a][i]) * hp(g[a][j]) / d[a] for a in range(len(masses))) + hp(f[i][j]))
               * sp.sqrt(rho_s[j]), s) for j in range(n_ch)] for i in range(n_ch)]
    P = [in_s(sum(polar(*b) * hp(g[a][i]) / d[a] for a, b in enumerate(beta)) + polar(*fp[i]), s)
         for i in range(n_ch)]
    rho = [in_s(r, s) for r in rho_s]
    algebra = f_hat_algebra(n_ch, len(masses))

    def evaluate(s_value):
        return algebra([[K[i][j](s_value) for j in range(n_ch)] for i in range(n_ch)],
                       [P[i](s_value) for i in range(n_ch)], [r(s_value) for r in rho])

    return evaluate, {}


def main() -> None:
    out = {
        "generator": "experiments/kmatrix/reference.py",
        "ampform": importlib.metadata.version("ampform"),
        "sympy": sp.__version__,
        "mpmath": mp.__version__,
        "mpmath_digits": DIGITS,
        "masses_GeV": MASSES,
        "convention": "F_k = [(I - i K rho)^-1 P]_k of pwa.kmatrix = ampform RelativisticPVector f_hat_k "
                      "(return_f_hat=True); see the generator's docstring for the parameter mapping",
        "cases": [],
    }
    worst = 0.0
    for case in CASES:
        build = parametrised if case["kind"] == "parametrised" else matrix_algebra
        evaluate, record = build(case)
        channels = case["lineshape"]["channels"]
        evaluations = []
        for label, ms in case["grids"].items():
            k = channels.index(label)
            values = []
            for m in ms:
                value = evaluate(mp.mpf(m) ** 2)[k]
                check = direct(case["lineshape"], m, k)
                worst = max(worst, float(abs(value - check) / abs(check)))
                values.append([float(value.real), float(value.imag)])
            evaluations.append({"channel": label, "channel_masses_GeV": list(channel_masses(label)),
                                "m_GeV": ms, "F": values})
        entry = {"name": case["name"], "kind": case["kind"], "lineshape": case["lineshape"],
                 "evaluations": evaluations}
        if record:
            entry["ampform_parameters"] = {"W_GeV": case["W"], **record}
        out["cases"].append(entry)
        print(f"{case['name']}: {sum(len(e['F']) for e in evaluations)} values")
    out["self_check_max_relative_difference"] = worst
    out["replica_check_max_relative_difference"] = max(REPLICA_CHECK)
    print(f"ampform vs direct mpmath solve: max relative difference {worst:.2e}; "
          f"ampform formulate vs LU replica (2 channels): {max(REPLICA_CHECK):.2e}")
    assert worst < 1e-25 and max(REPLICA_CHECK) < 1e-25, (worst, max(REPLICA_CHECK))
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
