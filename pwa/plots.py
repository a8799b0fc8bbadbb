"""Projection plots of data against a fitted model, with pulls, for any reaction.

The model prediction is the normalisation MC weighted by the fitted
intensity (and by its own MC weights), scaled to the data's sum of weights,
so the plots include the detector acceptance exactly as the fit does. What
is projected, and how identical particles are symmetrised, is
:mod:`pwa.projections`.

The ``draw_*`` functions draw on the matplotlib Axes they are given and
never choose a backend; :func:`write_fit_plots` makes its figures with
:class:`matplotlib.figure.Figure` (no pyplot, no global state), which
renders PNG files under any backend the entry point has chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastsim.events import Events, Reaction

from .projections import (DalitzPlot, Projection, dalitz_histograms, dalitz_plot, dalitz_values,
                          particle_latex, projection_histograms, projection_values, reaction_projections)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PlotFile", "draw_dalitz", "draw_dalitz_pulls", "draw_projection", "projection_histograms",
           "reaction_title", "write_fit_plots"]

#: Pulls beyond this are drawn in the extreme colour of the pull map.
PULL_RANGE = 4.0


@dataclass(frozen=True)
class PlotFile:
    """One written plot.

    Attributes:
        path: the PNG.
        what: what it shows, in plain text.
        chi2: sum of squared pulls over its non-empty bins.
        n_bins: number of those bins.
    """

    path: Path
    what: str
    chi2: float
    n_bins: int


def reaction_title(reaction: Reaction) -> str:
    r"""Mathtext of a reaction: ``$D^{0} \to K^{-}\pi^{+}\pi^{0}$``."""
    final = "".join("{" + particle_latex(p) + "}" for p in reaction.particles)
    return rf"${particle_latex(reaction.parent)} \to {final}$"


def _bin_unit(projection: Projection, width: float) -> str:
    if projection.kind == "mass":
        return f"{1000 * width:.3g} MeV"
    if projection.kind == "phi":
        return f"{width:.3g} rad"
    return f"{width:.3g}"


def draw_projection(ax: Axes, ax_pull: Axes, projection: Projection, h: dict, *, title: str = "") -> float:
    """Data points and model histogram on ``ax``, pulls on ``ax_pull`` below it.

    Args:
        ax, ax_pull: the two Axes (``ax_pull`` shares the x axis).
        projection: what is shown (axis label, entries per event).
        h: :func:`pwa.projections.projection_histograms` of it.
        title: drawn above ``ax``.

    Returns:
        chi^2 = the sum of squared pulls (empty bins have none).
    """
    edges = h["edges"]
    centres = 0.5 * (edges[1:] + edges[:-1])
    k = projection.entries_per_event
    ax.stairs(h["model"] + h["model_err"], edges, baseline=h["model"] - h["model_err"], fill=True,
              color="tab:red", alpha=0.25, lw=0, label="MC statistics")
    ax.stairs(h["model"], edges, color="tab:red", label="fit (weighted MC)")
    ax.errorbar(centres, h["data"], yerr=h["data_err"], fmt="k.", ms=3, label="data")
    what = "events" if k == 1 else "entries"
    ax.set_ylabel(f"{what} / {_bin_unit(projection, edges[1] - edges[0])}")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, title=None if k == 1 else f"{k} entries per event", title_fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax_pull.bar(centres, h["pull"], width=edges[1] - edges[0], color="tab:gray")
    ax_pull.axhline(0, color="k", lw=0.5)
    ax_pull.set_ylabel("pull")
    ax_pull.set_xlabel(projection.label)
    ax_pull.set_xlim(edges[0], edges[-1])
    chi2 = float(np.sum(h["pull"] ** 2))
    ax_pull.text(0.01, 0.8, f"chi2/bins = {chi2:.1f}/{int(_populated(h).sum())}", transform=ax_pull.transAxes,
                 fontsize=8)
    return chi2


def _dalitz_axes(ax: Axes, dalitz: DalitzPlot, h: dict, title: str) -> None:
    x, y = dalitz.boundary()
    ax.plot(x, y, color="k", lw=0.7)
    ax.set_xlim(h["x_edges"][0], h["x_edges"][-1])
    ax.set_ylim(h["y_edges"][0], h["y_edges"][-1])
    ax.set_xlabel(dalitz.x_label)
    ax.set_ylabel(dalitz.y_label)
    if title:
        ax.set_title(title, fontsize=10)


def _populated(h: dict) -> np.ndarray:
    """Cells with data or model: the rest lies outside the kinematic boundary or is empty."""
    return (h["data"] != 0) | (h["model"] != 0)


def draw_dalitz(ax: Axes, dalitz: DalitzPlot, h: dict, which: str = "data", *, title: str = "",
                vmax: float | None = None):
    """The data (``which="data"``) or model (``"model"``) Dalitz plot as a colour map, with its boundary.

    Args:
        h: :func:`pwa.projections.dalitz_histograms`.
        vmax: top of the colour scale (default: the larger of data and model,
            so that both plots share one scale).

    Returns:
        The QuadMesh (for a colour bar).
    """
    if which not in ("data", "model"):
        raise ValueError(f"which = {which!r}: expected 'data' or 'model'")
    z = np.ma.masked_where(~_populated(h), h[which])
    vmax = vmax if vmax is not None else float(max(h["data"].max(), h["model"].max(), 1e-12))
    mesh = ax.pcolormesh(h["x_edges"], h["y_edges"], z.T, cmap="viridis", vmin=0.0, vmax=vmax)
    _dalitz_axes(ax, dalitz, h, title)
    return mesh


def draw_dalitz_pulls(ax: Axes, dalitz: DalitzPlot, h: dict, *, title: str = ""):
    """The pull map (data - model) / error of a Dalitz plot, clipped at +-:data:`PULL_RANGE`.

    Returns:
        The QuadMesh (for a colour bar).
    """
    z = np.ma.masked_where(~_populated(h), h["pull"])
    mesh = ax.pcolormesh(h["x_edges"], h["y_edges"], z.T, cmap="RdBu_r", vmin=-PULL_RANGE, vmax=PULL_RANGE)
    _dalitz_axes(ax, dalitz, h, title)
    return mesh


def _save(fig, path: Path) -> None:
    from fastsim.events import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def write_fit_plots(data: Events, mc: Events, mc_weights: np.ndarray, out_dir: str | Path, *,
                    bins: int = 50, dalitz_bins: int = 40, title: str = "") -> list[PlotFile]:
    """Write every projection of the reaction, and its Dalitz plot, as PNG files.

    One ``fit_<stem>.png`` per :func:`pwa.projections.reaction_projections`
    entry (data points, model histogram, pull panel) and, for three-body
    final states, ``fit_dalitz.png`` (data, fit and pull map side by side).

    Args:
        data: data events (their weights are the data weights).
        mc: normalisation MC events.
        mc_weights: (n_mc,) MC weight times fitted intensity.
        out_dir: an existing folder.
        bins: bins of each projection; dalitz_bins: cells per Dalitz axis.
        title: drawn above each plot (default: the reaction).

    Returns:
        The plots written (each atomically), projections first.
    """
    from matplotlib.figure import Figure

    if data.reaction != mc.reaction:
        raise ValueError(f"data are {data.reaction} events, the MC {mc.reaction}")
    mc_weights = np.asarray(mc_weights, dtype=np.float64)
    if mc_weights.shape != (len(mc),):
        raise ValueError(f"mc_weights must have shape ({len(mc)},), got {mc_weights.shape}")
    reaction = data.reaction
    title = title or reaction_title(reaction)
    out_dir = Path(out_dir)
    data_w = data.weight_array
    written = []
    projections = reaction_projections(reaction)
    for proj, xd, xm in zip(projections, projection_values(projections, data),
                            projection_values(projections, mc)):
        h = projection_histograms(xd, data_w, xm, mc_weights, bins, proj.lo, proj.hi)
        fig = Figure(figsize=(6, 5))
        ax, ax_pull = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        chi2 = draw_projection(ax, ax_pull, proj, h, title=title)
        path = out_dir / f"fit_{proj.stem}.png"
        _save(fig, path)
        written.append(PlotFile(path, proj.text, chi2, int(_populated(h).sum())))
    dalitz = dalitz_plot(reaction)
    if dalitz is not None:
        h = dalitz_histograms(dalitz, dalitz_values(dalitz, data), data_w, dalitz_values(dalitz, mc),
                              mc_weights, dalitz_bins)
        fig = Figure(figsize=(17, 4.8))
        axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.3})
        k = len(dalitz.entries)
        per_event = "" if k == 1 else f", {k} entries per event"
        for ax, which in zip(axes[:2], ("data", "model")):
            mesh = draw_dalitz(ax, dalitz, h, which,
                               title=f"{'data' if which == 'data' else 'fit (weighted MC)'}{per_event}")
            fig.colorbar(mesh, ax=ax, label="entries / cell" if k > 1 else "events / cell")
        mesh = draw_dalitz_pulls(axes[2], dalitz, h, title="pulls (data - fit) / error")
        fig.colorbar(mesh, ax=axes[2], label="pull")
        fig.suptitle(title, fontsize=11)
        path = out_dir / "fit_dalitz.png"
        _save(fig, path)
        populated = _populated(h)
        written.append(PlotFile(path, dalitz.text, float(np.sum(h["pull"][populated] ** 2)),
                                int(populated.sum())))
    return written
