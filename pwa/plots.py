"""Projection plots of data against a fitted model, with pulls.

The model prediction is the normalisation MC weighted by the fitted
intensity (and by its own MC weights), scaled to the data's sum of weights,
so the plots include the detector acceptance exactly as the fit does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: (column in the helicity-variable array, axis label, file stem)
PROJECTIONS: tuple[tuple[int, str, str], ...] = (
    (0, r"$m(K^+K^-)$ [GeV]", "m"),
    (1, r"$\cos\theta_X$", "cos_theta_X"),
    (3, r"$\cos\theta_1$", "cos_theta_1"),
    (4, r"$\phi_1$ [rad]", "phi_1"),
)


def projection_histograms(data_x: np.ndarray, data_w: np.ndarray, mc_x: np.ndarray,
                          mc_w: np.ndarray, bins: int, lo: float, hi: float) -> dict:
    """Binned data and model with Poisson-like errors and pulls.

    Returns a dict of arrays: ``edges``, ``data``, ``data_err`` (sqrt of the
    sum of squared weights), ``model`` (scaled to the data's total weight),
    ``model_err`` (MC statistics), ``pull`` = (data - model) / sqrt(max(model,
    sum w^2) + model_err^2).
    """
    edges = np.linspace(lo, hi, bins + 1)
    d, _ = np.histogram(data_x, edges, weights=data_w)
    d2, _ = np.histogram(data_x, edges, weights=data_w**2)
    m, _ = np.histogram(mc_x, edges, weights=mc_w)
    m2, _ = np.histogram(mc_x, edges, weights=mc_w**2)
    scale = data_w.sum() / mc_w.sum()
    model, model_err = m * scale, np.sqrt(m2) * scale
    # Pearson-like: the expected count's variance, so that empty data bins
    # with a small expectation do not get a huge pull from sqrt(0).
    err = np.sqrt(np.maximum(model, d2) + model_err**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = np.where(err > 0, (d - model) / err, 0.0)
    return {"edges": edges, "data": d, "data_err": np.sqrt(d2), "model": model,
            "model_err": model_err, "pull": pull}


def plot_projections(data_hv: np.ndarray, data_w: np.ndarray, mc_hv: np.ndarray,
                     mc_w: np.ndarray, out_dir: str | Path, *, bins: int = 50,
                     m_range: tuple[float, float] | None = None, title: str = "") -> list[Path]:
    """Write one PNG per projection (data points, model histogram, pull panel).

    Args:
        data_hv: (n_data, 5) helicity variables of the data.
        data_w: (n_data,) data weights.
        mc_hv: (n_mc, 5) helicity variables of the normalisation MC.
        mc_w: (n_mc,) MC weight times fitted intensity.
        out_dir: folder for ``fit_<variable>.png``.

    Returns:
        The paths written (each written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsim.events import atomic_path

    out_dir = Path(out_dir)
    paths = []
    for col, label, stem in PROJECTIONS:
        if col == 0:
            lo, hi = m_range or (min(data_hv[:, 0].min(), mc_hv[:, 0].min()),
                                 max(data_hv[:, 0].max(), mc_hv[:, 0].max()))
        elif col in (1, 3):
            lo, hi = -1.0, 1.0
        else:
            lo, hi = -np.pi, np.pi
        h = projection_histograms(data_hv[:, col], data_w, mc_hv[:, col], mc_w, bins, lo, hi)
        centres = 0.5 * (h["edges"][1:] + h["edges"][:-1])
        fig, (ax, axp) = plt.subplots(2, 1, figsize=(6, 5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        ax.stairs(h["model"], h["edges"], color="tab:red", label="fit (weighted MC)")
        ax.errorbar(centres, h["data"], yerr=h["data_err"], fmt="k.", ms=3, label="data")
        ax.set_ylabel("events / bin")
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False)
        if title:
            ax.set_title(title)
        axp.bar(centres, h["pull"], width=h["edges"][1] - h["edges"][0], color="tab:gray")
        axp.axhline(0, color="k", lw=0.5)
        axp.set_ylabel("pull")
        axp.set_xlabel(label)
        chi2 = float(np.sum(h["pull"] ** 2))
        axp.text(0.01, 0.8, f"chi2/bins = {chi2:.1f}/{bins}", transform=axp.transAxes, fontsize=8)
        path = out_dir / f"fit_{stem}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        paths.append(path)
    return paths
