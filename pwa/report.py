"""Fit outputs: ``result.json``, a Markdown report laid out like seed Table 2,
and projection plots of data against the fit. Every file is written
atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from fastsim.events import write_text_atomic

from .fit import FitProblem, FitResult, Significance
from .optimize import dumps


def _pm(value: float, error: float, scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * value:.{digits}f} ± {scale * error:.{digits}f}"


def fit_report_markdown(result: FitResult, model, significance: Sequence[Significance] | None = None,
                        title: str = "Fit result") -> str:
    """Markdown report: resonance table (as seed Table 2), parameters, interference, fit status."""
    sig = {s.resonance: s for s in significance or []}
    lines = [f"# {title}", "",
             f"Model `{result.model_source}`; {result.n_data} data events (sum of weights "
             f"{result.sum_data_weights:.1f}), {result.n_mc} normalisation MC events.", "",
             f"NLL = {result.nll:.4f} (objective {result.objective:.4f}); "
             f"{'converged' if result.converged else '**not converged**'} with {result.optimizer} "
             f"in {result.wall_time:.1f} s; EDM = {result.edm:.2e}; Hessian "
             f"{'positive definite' if result.positive_definite else '**not positive definite**'} "
             f"(smallest eigenvalue {result.hessian_eigenvalues[0]:.3g}); covariance: "
             f"{'sandwich (weighted data)' if result.sandwich else 'inverse exact Hessian'}.", ""]
    if len(result.minima) > 1:
        lines += ["Distinct minima found (NLL~): " + ", ".join(f"{f:.3f}" for f, _ in result.minima), ""]
    header = "| Resonance | J^PC | Mass (GeV) | Width (GeV) | F (%) |"
    rule = "|---|---|---|---|---|"
    if sig:
        header += " Significance |"
        rule += "---|"
    lines += [header, rule]
    for i, r in enumerate(model.card.resonances):
        vals = {}
        for key in ("mass", "width"):
            name = f"{r.name}:{key}"
            if name in result.parameter_names:
                v, e = result.parameter(name)
                vals[key] = f"{v:.4f} ± {e:.4f}"
            else:
                v = r.lineshape_parameters.get(key)
                vals[key] = "—" if v is None else f"{v:.4f} (fixed)"
        if r.lineshape_type == "Flatte":
            vals["width"] = f"g_ππ = {r.lineshape_parameters.get('g_pipi', float('nan')):.3f} (Flatté)"
        row = (f"| {r.name} | {r.spin}++ | {vals['mass']} | {vals['width']} | "
               f"{_pm(result.fractions[i, i], result.fraction_errors[i, i], 100)} |")
        if sig:
            s = sig.get(r.name)
            row += (f" {s.sigma:.1f}σ (ΔNLL {s.delta_nll:.1f}, {s.n_parameters} par.) |"
                    if s else " — |")
        lines.append(row)
    lines += [f"| SF | | | | {_pm(result.sum_of_fractions, result.sum_of_fractions_error, 100)} |"
              + (" |" if sig else ""), ""]
    n = len(result.resonance_names)
    inter = [(result.resonance_names[i], result.resonance_names[j], result.fractions[i, j],
              result.fraction_errors[i, j]) for i in range(n) for j in range(i + 1, n)]
    inter = [t for t in inter if abs(t[2]) > 1e-4]
    if inter:
        lines += ["## Interference fractions", "", "| R | S | F_RS (%) |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {_pm(v, e, 100)} |" for a, b, v, e in inter]
        lines.append("")
    lines += ["## Parameters", "", "| Parameter | Value | Error |", "|---|---|---|"]
    for i, name in enumerate(result.parameter_names):
        flag = " (at limit)" if result.at_limit.size and result.at_limit[i] else ""
        lines.append(f"| {name} | {result.values[i]:.6g}{flag} | {result.errors[i]:.3g} |")
    lines.append("")
    return "\n".join(lines)


def write_fit_outputs(out_dir: str | Path, result: FitResult, problem: FitProblem, *,
                      data_hv: np.ndarray, data_weights: np.ndarray, mc_hv: np.ndarray,
                      significance: Sequence[Significance] | None = None, plots: bool = True,
                      extra: dict | None = None) -> list[Path]:
    """Write result.json, report.md and (optionally) the projection PNGs into out_dir.

    Args:
        out_dir: output folder (created).
        result: the fit.
        problem: its FitProblem (for the fitted intensity on the MC).
        data_hv: (n_data, 5) helicity variables of the data; data_weights (n_data,).
        mc_hv: (n_mc, 5) helicity variables of the normalisation MC.
        significance: optional significance of each resonance.
        extra: more keys for result.json (e.g. the MC source).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = result.to_dict()
    if significance:
        d["significance"] = {s.resonance: s.to_dict() for s in significance}
    if extra:
        d.update(extra)
    write_text_atomic(out / "result.json", dumps(d))
    write_text_atomic(out / "report.md", fit_report_markdown(result, problem.model, significance))
    paths = [out / "result.json", out / "report.md"]
    if plots:
        from .plots import plot_projections

        model = problem.model
        intensity = np.asarray(model.intensity(jnp.asarray(result.values), problem.mc_cache))
        mc_w = np.asarray(problem.mc_cache["weights"]) * intensity
        r = model.reaction
        paths += plot_projections(data_hv, data_weights, mc_hv, mc_w, out,
                                  m_range=(r.m_min, r.m_max), title=Path(result.model_source).name)
    return paths
