"""Quality of a generator against held-out reference MC.

* classifier two-sample test: a gradient-boosted classifier is trained to tell
  model samples from reference events on one half of each, and its ROC AUC is
  measured on the other half (0.5: indistinguishable);
* chi^2/ndf of binned comparisons per coordinate (50 bins) and per pair of
  coordinates (20 x 20 bins);
* low-order angular moments <P_l(cos)>, <cos k phi>, <sin k phi> and
  m-binned averages (bin fractions, <P_2>, <P_4>): the quantities the
  normalisation integral of the amplitude fit is built from, compared as
  pulls (difference over its statistical error).

All numbers go to ``metrics.json``; plots to PNGs beside it.
Plain numpy / scikit-learn / matplotlib: works on any pair of samples.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from fastsim.events import HELICITY_VARIABLES, atomic_path, write_text_atomic

#: Bin counts of the 1-D and 2-D comparisons.
BINS_1D = 50
BINS_2D = 20
#: Bins with fewer entries (model + reference) are left out of the chi^2.
MIN_ENTRIES = 10
LABELS = {"m": "m(K+K-) [GeV]", "cos_theta_X": "cos theta_X", "phi_X": "phi_X",
          "cos_theta_1": "cos theta_1", "phi_1": "phi_1"}


def ranges(m_min: float, m_max: float) -> list[tuple[float, float]]:
    """Histogram range of each helicity variable (the physical box)."""
    return [(m_min, m_max), (-1.0, 1.0), (-math.pi, math.pi), (-1.0, 1.0), (-math.pi, math.pi)]


def chi2_counts(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """chi^2 and ndf of two histograms of samples of different sizes.

    chi^2 = sum_i (a_i/A - b_i/B)^2 / (a_i/A^2 + b_i/B^2) over bins with
    a_i + b_i >= MIN_ENTRIES; ndf = number of such bins - 1 (the two
    normalisations are fixed).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    A, B = a.sum(), b.sum()
    use = (a + b) >= MIN_ENTRIES
    num = (a[use] / A - b[use] / B) ** 2
    den = a[use] / A**2 + b[use] / B**2
    return float(np.sum(num / den)), max(int(use.sum()) - 1, 1)


def chi2_counts_weighted(a: np.ndarray, b: np.ndarray, b2: np.ndarray) -> tuple[float, int]:
    """:func:`chi2_counts` of an unweighted histogram a against a weighted one (sums of weights
    b, of squared weights b2): chi^2 = sum (a_i/A - b_i/B)^2 / (a_i/A^2 + b2_i/B^2) over bins
    with at least MIN_ENTRIES effective entries in all."""
    a, b, b2 = (np.asarray(x, dtype=np.float64).ravel() for x in (a, b, b2))
    A, B = a.sum(), b.sum()
    eff = np.where(b2 > 0.0, b * b / np.where(b2 > 0.0, b2, 1.0), 0.0)
    use = (a + eff) >= MIN_ENTRIES
    num = (a[use] / A - b[use] / B) ** 2
    den = a[use] / A**2 + b2[use] / B**2
    return float(np.sum(num / den)), max(int(use.sum()) - 1, 1)


#: Bins of the folded point in :func:`symmetry_test`: m, |cos theta_X|, |cos theta_1|, folded phi_1.
SYMMETRY_BINS = (6, 4, 4, 4)
#: Smallest p-value of :func:`symmetry_test` with which a sample is taken as symmetric.
SYMMETRY_P_MIN = 1e-3


def symmetry_test(hv: np.ndarray, m_range: tuple[float, float], bins: tuple[int, ...] = SYMMETRY_BINS) -> dict:
    """Is a sample invariant under the detector symmetries that ``fold=True`` assumes?

    Under them (``fastsim.coords``) the eight images of a point are equally
    likely: given the folded point, the three bits that say which image an
    event is (cos theta_X < 0; then cos theta_1 < 0; then phi_1 < 0) are fair
    coins, and phi_X is uniform. For each bit the events are counted per cell of
    the folded point (``bins``) with the bit set and unset, chi^2 = sum
    (N1 - N0)^2 / (N1 + N0) over cells; phi_X gets a 1-D chi^2 against flat
    (20 bins). Returns chi^2, ndf and p-value per test and the smallest p-value.
    """
    from scipy import stats

    from fastsim.coords import fold_helicity_variables

    hv = np.asarray(hv, dtype=np.float64)
    f = fold_helicity_variables(hv)
    lo, hi = m_range
    cols = [(f[:, 0] - lo) / (hi - lo), f[:, 1], f[:, 3], f[:, 4] / math.pi]
    cell = np.zeros(len(hv), dtype=np.int64)
    for c, nb in zip(cols, bins):
        cell = cell * nb + np.clip((c * nb).astype(np.int64), 0, nb - 1)
    n_cells = int(np.prod(bins))
    cx, c1 = hv[:, 1], hv[:, 3]
    # which image: the bits of fastsim.coords.fold_helicity_variables
    z = cx < 0.0
    p1 = np.where(z, math.pi - hv[:, 4], hv[:, 4])
    s = c1 < 0.0
    p1 = np.where(s, p1 + math.pi, p1)
    y = (math.pi - np.mod(math.pi - p1, 2.0 * math.pi)) < 0.0
    out = {}
    for name, bit in (("z_reflection", z), ("p1_p2_exchange", s), ("mirror_plane", y)):
        n1 = np.bincount(cell[bit], minlength=n_cells).astype(np.float64)
        n0 = np.bincount(cell[~bit], minlength=n_cells).astype(np.float64)
        use = (n0 + n1) > 0
        chi2 = float(np.sum((n1[use] - n0[use]) ** 2 / (n1[use] + n0[use])))
        ndf = int(use.sum())
        out[name] = {"chi2": chi2, "ndf": ndf, "p_value": float(stats.chi2.sf(chi2, ndf))}
    h = np.histogram(hv[:, 2], 20, (-math.pi, math.pi))[0].astype(np.float64)
    chi2 = float(np.sum((h - h.mean()) ** 2 / h.mean()))
    out["phi_X_uniform"] = {"chi2": chi2, "ndf": 19, "p_value": float(stats.chi2.sf(chi2, 19))}
    out["min_p_value"] = min(v["p_value"] for v in out.values())
    out["n_events"] = len(hv)
    return out


def require_symmetry(hv: np.ndarray, m_range: tuple[float, float], source: str) -> dict:
    """:func:`symmetry_test` of a training sample for folded coordinates; raises
    :class:`~fastsim.errors.TrainingError` naming ``source`` when any p-value is
    below ``SYMMETRY_P_MIN``. Returns the test's result."""
    from .errors import TrainingError

    res = symmetry_test(hv, m_range)
    if res["min_p_value"] < SYMMETRY_P_MIN:
        tests = ", ".join(f"{k} p = {v['p_value']:.2g}" for k, v in res.items() if isinstance(v, dict))
        raise TrainingError(f"{source}: the events are not symmetric under the detector symmetries that folded "
                            f"coordinates assume ({tests}; need p >= {SYMMETRY_P_MIN:g} for each); train "
                            f"without folding")
    return res


def _angle_features(x: np.ndarray, azimuths) -> np.ndarray:
    """Columns of x with each azimuth column replaced by its (cos, sin)."""
    cols = []
    for i in range(x.shape[1]):
        cols += [np.cos(x[:, i]), np.sin(x[:, i])] if i in azimuths else [x[:, i]]
    return np.column_stack(cols)


def classifier_auc(x_model: np.ndarray, x_ref: np.ndarray, seed: int = 0, azimuths=(2, 4),
                   ref_weights: np.ndarray | None = None) -> dict:
    """ROC AUC of a classifier separating model from reference events.

    Features: the columns of x (helicity variables by default), every azimuth
    (column index in ``azimuths``) as its (cos, sin).
    Half of each sample trains the classifier, the other half measures the AUC.
    ``ref_weights``: weights of the reference events (in the classifier's fit
    and in the AUC, the reference's total scaled to its number of events); the
    error then uses the reference's effective size.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    def feats(x: np.ndarray) -> np.ndarray:
        return _angle_features(x, set(azimuths))

    rng = np.random.default_rng(seed)
    X = np.concatenate([feats(x_model), feats(x_ref)])
    y = np.concatenate([np.ones(len(x_model)), np.zeros(len(x_ref))])
    train = rng.uniform(size=len(X)) < 0.5
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31,
                                         early_stopping=True, validation_fraction=0.1,
                                         random_state=seed)
    w = None
    if ref_weights is not None:
        rw = np.asarray(ref_weights, dtype=np.float64)
        w = np.concatenate([np.ones(len(x_model)), rw * len(rw) / rw.sum()])
    clf.fit(X[train], y[train], sample_weight=None if w is None else w[train])
    score = clf.predict_proba(X[~train])[:, 1]
    auc = float(roc_auc_score(y[~train], score, sample_weight=None if w is None else w[~train]))
    n1, n0 = int(y[~train].sum()), int((~train).sum() - y[~train].sum())
    if w is not None:
        w0 = w[~train][y[~train] == 0]
        n0 = max(int(w0.sum() ** 2 / (w0 ** 2).sum()), 2)
    # Hanley & McNeil (1982) standard error.
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0))
    return {"auc": auc, "auc_error": se, "n_test_model": n1, "n_test_reference": n0,
            "classifier": "sklearn HistGradientBoostingClassifier(max_iter=200)"}


def _legendre(l: int, x: np.ndarray) -> np.ndarray:
    return np.polynomial.legendre.legval(x, [0] * l + [1])


def moment_functions() -> dict[str, callable]:
    """Low-order angular moments (functions of (n, 5) helicity variables)."""
    f: dict[str, callable] = {}
    for l in range(1, 5):
        f[f"P{l}(cos_theta_X)"] = lambda hv, l=l: _legendre(l, hv[:, 1])
        f[f"P{l}(cos_theta_1)"] = lambda hv, l=l: _legendre(l, hv[:, 3])
    for k in range(1, 5):
        for name, i in (("phi_X", 2), ("phi_1", 4)):
            f[f"cos({k} {name})"] = lambda hv, k=k, i=i: np.cos(k * hv[:, i])
            f[f"sin({k} {name})"] = lambda hv, k=k, i=i: np.sin(k * hv[:, i])
    f["P2(cos_theta_X) P2(cos_theta_1)"] = lambda hv: _legendre(2, hv[:, 1]) * _legendre(2, hv[:, 3])
    f["cos(phi_1 + phi_X)"] = lambda hv: np.cos(hv[:, 2] + hv[:, 4])
    return f


def _mean_pull(fa: np.ndarray, fb: np.ndarray) -> dict:
    ma, mb = float(fa.mean()), float(fb.mean())
    err = math.sqrt(fa.var() / len(fa) + fb.var() / len(fb))
    return {"model": ma, "reference": mb, "error": err, "pull": (ma - mb) / err if err > 0 else 0.0}


def moments_comparison(hv_model: np.ndarray, hv_ref: np.ndarray, m_range: tuple[float, float],
                       n_m_bins: int = 10) -> dict:
    """Pulls of angular moments, overall and in bins of m, and of the m-bin fractions."""
    funcs = moment_functions()
    overall = {name: _mean_pull(f(hv_model), f(hv_ref)) for name, f in funcs.items()}
    edges = np.linspace(*m_range, n_m_bins + 1)
    ia = np.clip(np.digitize(hv_model[:, 0], edges) - 1, 0, n_m_bins - 1)
    ib = np.clip(np.digitize(hv_ref[:, 0], edges) - 1, 0, n_m_bins - 1)
    binned = []
    binned_funcs = {k: funcs[k] for k in ("P2(cos_theta_X)", "P2(cos_theta_1)", "P4(cos_theta_1)",
                                          "cos(2 phi_1)")}
    for j in range(n_m_bins):
        a, b = hv_model[ia == j], hv_ref[ib == j]
        fa, fb = len(a) / len(hv_model), len(b) / len(hv_ref)
        err = math.sqrt(fa * (1 - fa) / len(hv_model) + fb * (1 - fb) / len(hv_ref))
        row = {"m_low": float(edges[j]), "m_high": float(edges[j + 1]),
               "fraction": {"model": fa, "reference": fb, "error": err,
                            "pull": (fa - fb) / err if err > 0 else 0.0}}
        if len(a) >= 50 and len(b) >= 50:
            for name, f in binned_funcs.items():
                row[name] = _mean_pull(f(a), f(b))
        binned.append(row)
    pulls = [v["pull"] for v in overall.values()]
    bpulls = [r[k]["pull"] for r in binned for k in r if isinstance(r[k], dict)]
    return {"overall": overall, "m_binned": binned,
            "summary": {"n_overall": len(pulls), "chi2_overall": float(np.sum(np.square(pulls))),
                        "max_abs_pull_overall": float(np.max(np.abs(pulls))),
                        "n_m_binned": len(bpulls), "chi2_m_binned": float(np.sum(np.square(bpulls))),
                        "max_abs_pull_m_binned": float(np.max(np.abs(bpulls)))}}


def compare_samples(hv_model: np.ndarray, hv_ref: np.ndarray, m_range: tuple[float, float],
                    seed: int = 0) -> dict:
    """All metrics of two samples of helicity variables (n, 5)."""
    rng_list = ranges(*m_range)
    per_coord = {}
    hists_1d = {}
    for i, name in enumerate(HELICITY_VARIABLES):
        a, _ = np.histogram(hv_model[:, i], BINS_1D, rng_list[i])
        b, _ = np.histogram(hv_ref[:, i], BINS_1D, rng_list[i])
        c2, ndf = chi2_counts(a, b)
        per_coord[name] = {"chi2": c2, "ndf": ndf, "chi2_ndf": c2 / ndf}
        hists_1d[name] = (a, b)
    per_pair = {}
    for i, j in itertools.combinations(range(5), 2):
        rr = [rng_list[i], rng_list[j]]
        a, _, _ = np.histogram2d(hv_model[:, i], hv_model[:, j], BINS_2D, rr)
        b, _, _ = np.histogram2d(hv_ref[:, i], hv_ref[:, j], BINS_2D, rr)
        c2, ndf = chi2_counts(a, b)
        per_pair[f"{HELICITY_VARIABLES[i]}:{HELICITY_VARIABLES[j]}"] = {"chi2": c2, "ndf": ndf,
                                                                        "chi2_ndf": c2 / ndf}
    c2t = classifier_auc(hv_model, hv_ref, seed)
    return {
        "n_model": len(hv_model), "n_reference": len(hv_ref),
        "classifier_test": c2t,
        "chi2_per_coordinate": per_coord,
        "chi2_per_pair": per_pair,
        "max_chi2_ndf_coordinate": max(v["chi2_ndf"] for v in per_coord.values()),
        "max_chi2_ndf_pair": max(v["chi2_ndf"] for v in per_pair.values()),
        "moments": moments_comparison(hv_model, hv_ref, m_range),
        "binning": {"bins_1d": BINS_1D, "bins_2d": BINS_2D, "min_entries": MIN_ENTRIES},
    }


def _savefig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def plot_comparisons(hv_model: np.ndarray, hv_ref: np.ndarray, m_range: tuple[float, float],
                     out_dir: Path, label: str = "model") -> list[Path]:
    """1-D overlays with ratio panels and 2-D pull maps; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    rng_list = ranges(*m_range)
    paths = []
    fig, axes = plt.subplots(2, 5, figsize=(20, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    for i, name in enumerate(HELICITY_VARIABLES):
        a, edges = np.histogram(hv_model[:, i], BINS_1D, rng_list[i])
        b, _ = np.histogram(hv_ref[:, i], BINS_1D, rng_list[i])
        sa = b.sum() / a.sum()  # model scaled to the reference count
        ax = axes[0, i]
        ax.stairs(a * sa, edges, label=f"{label} (scaled)")
        ax.errorbar(0.5 * (edges[1:] + edges[:-1]), b, np.sqrt(b), fmt="k.", ms=3, label="reference")
        ax.set_title(LABELS[name])
        ax.legend(fontsize=7)
        ok = (a > 0) & (b > 0)
        r = a[ok] * sa / b[ok]
        re = r * np.sqrt(1 / a[ok] + 1 / b[ok])
        axes[1, i].errorbar(0.5 * (edges[1:] + edges[:-1])[ok], r, re, fmt="k.", ms=3)
        axes[1, i].axhline(1.0, color="r", lw=0.8)
        axes[1, i].set_ylim(0.8, 1.2)
        axes[1, i].set_xlabel(LABELS[name])
    axes[1, 0].set_ylabel(f"{label} / reference")
    fig.tight_layout()
    p = out_dir / "compare_1d.png"
    _savefig(fig, p)
    paths.append(p)

    pairs = list(itertools.combinations(range(5), 2))
    fig, axes = plt.subplots(2, 5, figsize=(22, 8))
    for ax, (i, j) in zip(axes.ravel(), pairs):
        rr = [rng_list[i], rng_list[j]]
        a, xe, ye = np.histogram2d(hv_model[:, i], hv_model[:, j], BINS_2D, rr)
        b, _, _ = np.histogram2d(hv_ref[:, i], hv_ref[:, j], BINS_2D, rr)
        A, B = a.sum(), b.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            pull = (a / A - b / B) / np.sqrt(a / A**2 + b / B**2)
        pull[(a + b) < MIN_ENTRIES] = np.nan
        im = ax.pcolormesh(xe, ye, pull.T, cmap="RdBu_r", vmin=-4, vmax=4)
        ax.set_xlabel(LABELS[HELICITY_VARIABLES[i]])
        ax.set_ylabel(LABELS[HELICITY_VARIABLES[j]])
    fig.colorbar(im, ax=axes.ravel().tolist(), label=f"pull ({label} - reference)")
    p = out_dir / "compare_2d_pulls.png"
    _savefig(fig, p)
    paths.append(p)
    return paths


def validate_simulator(sim, hv_ref: np.ndarray, out_dir: str | os.PathLike, *, n_model: int | None = None,
                       seed: int = 12345) -> dict:
    """Sample the generator, compare with reference helicity variables, write metrics and plots.

    Args:
        sim: a :class:`~fastsim.generator.FastSimulator`.
        hv_ref: (n, 5) helicity variables of held-out reference MC.
        out_dir: folder for ``metrics.json`` and the PNGs.
        n_model: model events (default: as many as reference events).
        seed: seed of the model sample and the classifier split.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_model = n_model or len(hv_ref)
    t0 = time.perf_counter()
    hv_model = sim.sample_hv(n_model, seed=seed)
    t_sample = time.perf_counter() - t0
    m_range = (sim.coords.m_min, sim.coords.m_max)
    metrics = compare_samples(hv_model, hv_ref, m_range, seed)
    metrics["model"] = {"kind": sim.kind, "hyperparameters": sim.model.hyperparameters,
                        "sampling_rate_hv_per_s": n_model / t_sample}
    metrics["targets"] = {"auc_max": 0.55, "chi2_ndf_per_coordinate_max": 1.5,
                          "auc_met": metrics["classifier_test"]["auc"] <= 0.55,
                          "chi2_met": metrics["max_chi2_ndf_coordinate"] <= 1.5}
    metrics["plots"] = [p.name for p in plot_comparisons(hv_model, hv_ref, m_range, out_dir, sim.kind)]
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def tree_classifier_auc(coords, model_momenta: np.ndarray, ref_momenta: np.ndarray,
                        ref_weights: np.ndarray | None, seed: int = 0) -> dict:
    """:func:`classifier_auc` on a tree map's variables (:meth:`TreeCoordinateMap.tree_variables`),
    the reference weighted as the model's training sample was."""
    names, x_model, _ = coords.tree_variables(model_momenta)
    _, x_ref, _ = coords.tree_variables(ref_momenta)
    return classifier_auc(x_model, x_ref, seed, azimuths=tuple(i for i, n in enumerate(names) if n.startswith("phi_")),
                          ref_weights=coords.training_weights(ref_momenta, ref_weights))


def validate_tree_simulator(sim, ref, out_dir: str | os.PathLike, *, n_model: int | None = None,
                            seed: int = 12345) -> dict:
    """:func:`validate_simulator` for a simulator in a decay tree's coordinates (any reaction).

    The variables compared are the chain's tree variables (intermediate masses,
    every vertex's cos theta and phi) of each event relabelled to the
    coordinates' identical-particle pairing. The model's samples are compared
    unweighted with the reference weighted as the model's training sample was
    (for proposal MC v = w / w_R, what the model learned; see
    ``cli.fastsim_app._tree_training_setup``). Classifier AUC,
    chi^2/ndf per variable (50 bins) and per pair (20 x 20), and 1-D plots.

    Args:
        sim: a tree-coordinate :class:`~fastsim.generator.FastSimulator`.
        ref: held-out reference :class:`~fastsim.events.Events`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    coords = sim.coords
    n_model = n_model or len(ref)
    t0 = time.perf_counter()
    model_events = sim.sample(n_model, seed=seed)
    t_sample = time.perf_counter() - t0
    names, x_model, ranges_ = coords.tree_variables(model_events.momenta)
    _, x_ref, _ = coords.tree_variables(ref.momenta)
    # What the model learned: the reference weighted as in training (proposal MC: v = w / w_R)
    w_ref = coords.training_weights(ref.momenta, ref.weights)
    if w_ref is None:
        w_ref = np.ones(len(x_ref))
    per_coord, per_pair = {}, {}
    for i, name in enumerate(names):
        a, _ = np.histogram(x_model[:, i], BINS_1D, ranges_[i])
        b, _ = np.histogram(x_ref[:, i], BINS_1D, ranges_[i], weights=w_ref)
        b2, _ = np.histogram(x_ref[:, i], BINS_1D, ranges_[i], weights=w_ref ** 2)
        c2, ndf = chi2_counts_weighted(a, b, b2)
        per_coord[name] = {"chi2": c2, "ndf": ndf, "chi2_ndf": c2 / ndf}
    for i, j in itertools.combinations(range(len(names)), 2):
        rr = [ranges_[i], ranges_[j]]
        a, _, _ = np.histogram2d(x_model[:, i], x_model[:, j], BINS_2D, rr)
        b, _, _ = np.histogram2d(x_ref[:, i], x_ref[:, j], BINS_2D, rr, weights=w_ref)
        b2, _, _ = np.histogram2d(x_ref[:, i], x_ref[:, j], BINS_2D, rr, weights=w_ref ** 2)
        c2, ndf = chi2_counts_weighted(a, b, b2)
        per_pair[f"{names[i]}:{names[j]}"] = {"chi2": c2, "ndf": ndf, "chi2_ndf": c2 / ndf}
    auc = tree_classifier_auc(coords, model_events.momenta, ref.momenta, ref.weights, seed)
    metrics = {
        "reaction": str(sim.reaction), "variables": list(names),
        "n_model": len(x_model), "n_reference": len(x_ref), "classifier_test": auc,
        "chi2_per_coordinate": per_coord, "chi2_per_pair": per_pair,
        "max_chi2_ndf_coordinate": max(v["chi2_ndf"] for v in per_coord.values()),
        "max_chi2_ndf_pair": max(v["chi2_ndf"] for v in per_pair.values()),
        "model": {"kind": sim.kind, "hyperparameters": sim.model.hyperparameters,
                  "sampling_rate_events_per_s": n_model / t_sample},
    }
    metrics["targets"] = {"auc_max": 0.55, "chi2_ndf_per_coordinate_max": 1.5,
                          "auc_met": auc["auc"] <= 0.55, "chi2_met": metrics["max_chi2_ndf_coordinate"] <= 1.5}
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for i, name in enumerate(names):
        ax = axes.ravel()[i]
        a, edges = np.histogram(x_model[:, i], BINS_1D, ranges_[i])
        b, _ = np.histogram(x_ref[:, i], BINS_1D, ranges_[i])
        centres = 0.5 * (edges[1:] + edges[:-1])
        ax.errorbar(centres, b / max(b.sum(), 1), np.sqrt(b) / max(b.sum(), 1), fmt=".k", ms=3, label="reference")
        ax.step(centres, a / max(a.sum(), 1), where="mid", color="C0", label=sim.kind)
        ax.set_xlabel(name)
        ax.set_title(f"chi2/ndf {per_coord[name]['chi2_ndf']:.2f}", fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, out_dir / "compare_1d.png")
    metrics["plots"] = ["compare_1d.png"]
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
