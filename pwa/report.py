"""Fit outputs: ``result.json``, a Markdown report laid out like seed Table 2,
and projection plots of data against the fit (:mod:`pwa.plots`, for any
reaction). Every file is written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from fastsim.events import Events, write_text_atomic

from .fit_result import MINIMA_TOLERANCE, FitResult, Significance
from .problem import FitProblem
from .optimize import dumps
from .plots import PlotFile, reaction_title, write_fit_plots

if TYPE_CHECKING:
    from .mc_statistics import MCStatistics


def _pm(value: float, error: float, scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * value:.{digits}f} ± {scale * error:.{digits}f}"


def _jp(spin: int | None, parity: int | None, c_parity: int | None = None) -> str:
    if spin is None:
        return ""
    sign = {1: "+", -1: "-"}
    return f"{spin}{sign.get(parity, '')}{sign.get(c_parity, '')}"


def fit_report_markdown(result: FitResult, model, significance: Sequence[Significance] | None = None,
                        title: str = "Fit result", plots: Sequence[PlotFile] = (),
                        warnings: Sequence[str] = (), mc_statistics: "MCStatistics | None" = None) -> str:
    """Markdown report: fit status, the distinct minima of a multi-start fit, warnings, resonance
    table (as seed Table 2), interference, parameters, plots.

    A resonance without couplings of its own (the phi of psi(2S) -> phi f_J)
    is listed without a fraction: it is part of every component. The
    "Warnings" section lists ``result.warnings`` and then ``warnings`` (e.g.
    the MC coverage check of the command line), when there are any. With
    ``mc_statistics`` (:func:`pwa.mc_statistics.mc_statistical_covariance`)
    the fraction tables get a column "MC stat." with the error the finite
    normalisation sample adds to each fraction.
    """
    sig = {s.resonance: s for s in significance or []}
    reaction = model.reaction
    lines = [f"# {title}", "",
             f"Reaction {reaction}; model `{result.model_source}`; {result.n_data} data events (sum of weights "
             f"{result.sum_data_weights:.1f}), {result.n_mc} normalisation MC events.", "",
             f"NLL = {result.nll:.4f} (objective {result.objective:.4f}); "
             f"{'converged' if result.converged else '**not converged**'} with {result.optimizer} "
             f"in {result.wall_time:.1f} s; EDM = {result.edm:.2e}; Hessian "
             f"{'positive definite' if result.positive_definite else '**not positive definite**'} "
             f"(smallest eigenvalue {result.hessian_eigenvalues[0]:.3g}); covariance: "
             f"{'sandwich (weighted data)' if result.sandwich else 'inverse exact Hessian'}.", ""]
    lines += _minima_lines(result)
    all_warnings = _merge_warnings(result.warnings, warnings)
    if all_warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in all_warnings] + [""]
    # Resonances of parent -> gamma P1 P2 are produced with a photon and decay
    # into P1 P2: C = + (the first version's J^PC column); elsewhere J^P.
    radiative = reaction.is_radiative_pair
    header = f"| Resonance | {'J^PC' if radiative else 'J^P'} | Mass (GeV) | Width (GeV) | F (%) |"
    rule = "|---|---|---|---|---|"
    mcs = mc_statistics
    if mcs is not None:
        header += " MC stat. (%) |"
        rule += "---|"
    if sig:
        header += " Significance |"
        rule += "---|"
    lines += [header, rule]
    for r in model.card.resonances:
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
        if r.name in result.resonance_names:
            i = result.resonance_names.index(r.name)
            fraction = _pm(result.fractions[i, i], result.fraction_errors[i, i], 100)
        else:
            fraction = "— (in every component)"
        jp = _jp(r.spin, 1, 1) if radiative else _jp(r.spin, r.parity)
        row = f"| {r.name} | {jp} | {vals['mass']} | {vals['width']} | {fraction} |"
        if mcs is not None:
            row += (f" {100 * mcs.fraction_error(r.name):.2f} |" if r.name in mcs.resonance_names else " — |")
        if sig:
            s = sig.get(r.name)
            row += (f" {s.sigma:.1f}σ (ΔNLL {s.delta_nll:.1f}, {s.n_parameters} par.) |"
                    if s else " — |")
        lines.append(row)
    lines += [f"| SF | | | | {_pm(result.sum_of_fractions, result.sum_of_fractions_error, 100)} |"
              + (f" {100 * mcs.sum_of_fractions_error:.2f} |" if mcs is not None else "")
              + (" |" if sig else ""), ""]
    if mcs is not None:
        lines += [f"The F errors are the data's. The normalisation sample of {mcs.n_mc} events (effective "
                  f"{mcs.effective_mc_events:.0f}, (sum v)^2 / sum v^2; for the normalisation "
                  f"{mcs.effective_normalisation_events:.0f}, (sum v I)^2 / sum (v I)^2) adds the errors of "
                  "column MC stat.; they scale as 1/sqrt(M) and add to the F errors in quadrature.", ""]
    n = len(result.resonance_names)
    inter = [(result.resonance_names[i], result.resonance_names[j], result.fractions[i, j],
              result.fraction_errors[i, j]) for i in range(n) for j in range(i + 1, n)]
    inter = [t for t in inter if abs(t[2]) > 1e-4]
    if inter:
        if mcs is None:
            lines += ["## Interference fractions", "", "| R | S | F_RS (%) |", "|---|---|---|"]
            lines += [f"| {a} | {b} | {_pm(v, e, 100)} |" for a, b, v, e in inter]
        else:
            index = {name: i for i, name in enumerate(mcs.resonance_names)}
            lines += ["## Interference fractions", "", "| R | S | F_RS (%) | MC stat. (%) |", "|---|---|---|---|"]
            lines += [f"| {a} | {b} | {_pm(v, e, 100)} | {100 * mcs.fraction_errors[index[a], index[b]]:.2f} |"
                      for a, b, v, e in inter]
        lines.append("")
    lines += ["## Parameters", "", "| Parameter | Value | Error |", "|---|---|---|"]
    for i, name in enumerate(result.parameter_names):
        flag = " (at limit)" if result.at_limit.size and result.at_limit[i] else ""
        lines.append(f"| {name} | {result.values[i]:.6g}{flag} | {result.errors[i]:.3g} |")
    lines.append("")
    if plots:
        lines += ["## Plots", "",
                  "Data against the fit (normalisation MC weighted by the fitted intensity, scaled to the "
                  "data's sum of weights); chi2 is the sum of squared pulls over the non-empty bins.", "",
                  "| File | Shows | chi2 / bins |", "|---|---|---|"]
        lines += [f"| [{p.path.name}]({p.path.name}) | {p.what} | {p.chi2:.1f} / {p.n_bins} |" for p in plots]
        lines.append("")
    return "\n".join(lines)


def _minima_lines(result: FitResult) -> list[str]:
    """The "Starts" section of a multi-start fit: one row per distinct minimum."""
    minima = result.distinct_minima
    if not minima:
        if len(result.minima) > 1:
            return ["Distinct minima found (NLL~): " + ", ".join(f"{f:.3f}" for f, _ in result.minima), ""]
        return []
    n = sum(m.n_starts for m in minima) + result.failed_starts + result.unrefined_starts
    if n <= 1:
        return []
    best = minima[0].objective
    lines = ["## Starts", "",
             f"{n} starts; {len(minima)} distinct minim{'um' if len(minima) == 1 else 'a'} (starts whose final "
             f"NLL~ agree within {MINIMA_TOLERANCE:g} are one minimum; start 0 is the card's values)"
             + (f"; {result.failed_starts} start(s) failed" if result.failed_starts else "")
             + (f"; {result.unrefined_starts} start(s) stopped after the coarse stage (MC of "
                f"~{result.config.coarse_mc} events), their coarse NLL~ above the {result.config.refine} refined"
                if result.unrefined_starts else "") + ".", "",
             "| Minimum | NLL~ | Δ NLL~ | NLL | Starts | Converged | Start indices |", "|---|---|---|---|---|---|---|"]
    for i, m in enumerate(minima):
        lines.append(f"| {i + 1} | {m.objective:.3f} | {m.objective - best:+.3f} | {m.nll:.3f} | {m.n_starts} | "
                     f"{m.n_converged} | {', '.join(map(str, m.starts))} |")
    lines.append("")
    return lines


def _merge_warnings(*groups: Sequence[str]) -> list[str]:
    """The warnings of all groups in order, each once."""
    return list(dict.fromkeys(w for group in groups for w in group))


def write_fit_outputs(out_dir: str | Path, result: FitResult, problem: FitProblem, *,
                      data: Events, mc: Events, significance: Sequence[Significance] | None = None,
                      plots: bool = True, extra: dict | None = None,
                      warnings: Sequence[str] = (),
                      mc_statistics: "MCStatistics | None" = None) -> list[Path]:
    """Write result.json, report.md and (optionally) the projection PNGs into out_dir.

    Args:
        out_dir: output folder (created).
        result: the fit.
        problem: its FitProblem on one device (for the fitted intensity on the MC).
        data: the fitted data events (with their weights).
        mc: the normalisation MC events of ``problem`` (with their weights).
        significance: optional significance of each resonance.
        plots: write the plots of :func:`pwa.plots.write_fit_plots`, listed in report.md.
        extra: more keys for result.json (e.g. the MC source).
        warnings: more warnings (e.g. the MC coverage check), added after
            ``result.warnings`` to result.json's "warnings" and to the
            report's "Warnings" section.
        mc_statistics: the normalisation sample's statistical errors
            (:func:`pwa.mc_statistics.mc_statistical_covariance`), written to
            result.json's "mc_statistics" and the report's "MC stat." column.

    Returns:
        result.json, report.md, then the plots.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = result.to_dict()
    if significance:
        d["significance"] = {s.resonance: s.to_dict() for s in significance}
    if mc_statistics is not None:
        d["mc_statistics"] = mc_statistics.to_dict()
    if extra:
        d.update(extra)
    d["warnings"] = _merge_warnings(result.warnings, d.get("warnings", ()), warnings)
    written: list[PlotFile] = []
    if plots:
        values = jnp.asarray(problem.signal_parameters(np.asarray(result.values)))
        intensity = np.asarray(problem.model.intensity(values, problem.mc_cache))
        if intensity.shape != (len(mc),):
            raise ValueError(f"the problem's MC cache holds {intensity.shape[0]} events, the MC {len(mc)}: "
                             "pass the MC the problem was built from (and the problem on one device)")
        title = reaction_title(problem.model.reaction)
        if not result.model_source.startswith("<"):  # a card file, not a dictionary
            title += f"   ({Path(result.model_source).name})"
        weights = mc.weight_array * intensity
        if getattr(problem, "background", None) is not None:  # the model is signal + background
            signal, background = problem.mc_component_weights(result.values)
            weights = signal + background
        written = write_fit_plots(data, mc, weights, out, title=title)
    write_text_atomic(out / "result.json", dumps(d))
    write_text_atomic(out / "report.md", fit_report_markdown(result, problem.model, significance, plots=written,
                                                             warnings=d["warnings"],
                                                             mc_statistics=mc_statistics))
    return [out / "result.json", out / "report.md"] + [p.path for p in written]
