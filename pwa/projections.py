"""What to project for a reaction, the values per event, and the binned comparison.

Plain numpy, no plotting: :mod:`pwa.plots` draws what this module bins.

The projections of a reaction (:func:`reaction_projections`) are

* the invariant mass of every intermediate node of every decay chain, one
  histogram per distinct particle content (``m(K- pi0)``, ``m(K- pi+)``,
  ``m(pi+ pi0)`` for D0 -> K- pi+ pi0); with four or more final-state
  particles also every other distinct pair mass;
* cos theta of every vertex of the first chain (the direction of the
  vertex's first daughter in the vertex's helicity frame,
  :func:`fastsim.events.tree.chain_variables`);
* for parent -> gamma P1 P2 the first version's plots: m(P1 P2), cos theta_X,
  cos theta_1 and phi_1, under their old file names.

With identical particles a labelled variable means nothing (which K+ is
"Kp1" is arbitrary), so every histogram is filled once for each distinct
value the identical-particle relabellings give: all four K+K- pairings of
K+ K- K+ K- go into one m(K+K-) histogram (four entries per event, each with
the event's weight). The entries of one event are correlated; the bin
errors count them as such (the squared sum of an event's weights in a bin,
not the sum of squares of its entries).

For three-body final states :func:`dalitz_plot` describes the Dalitz plot
m^2(ab) against m^2(bc), (a, b, c) in event-file order, symmetrised the same
way.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fastsim.events import Events, Reaction
from fastsim.events.kinematics import invariant_mass
from fastsim.events.particles import ALIASES, DEFAULT_PREFIX, DecayChain, DecayNode, particle_info
from fastsim.events.tree import chain_variables

#: The projection kinds: a node mass (GeV), and a vertex's cos theta or phi (rad).
KINDS = ("mass", "cos_theta", "phi")

#: LaTeX spellings the ``particle`` package does not give as analysts write them.
_LATEX: dict[str, str] = {"J/psi": r"J/\psi"}


@lru_cache(maxsize=None)
def particle_latex(name: str) -> str:
    r"""Math-mode LaTeX of a particle name (``"K+"`` -> ``"K^{+}"``, ``"pi0"`` -> ``"\pi^{0}"``).

    From the ``particle`` package's PDG tables (a slow look-up, hence
    cached); a name it does not know is returned as it is.
    """
    if name in _LATEX:
        return _LATEX[name]
    from particle import Particle
    from particle.particle.particle import ParticleNotFound

    try:
        return Particle.from_name(ALIASES.get(name, name)).latex_name
    except ParticleNotFound:
        return name


def particle_slug(name: str) -> str:
    """A file-name spelling of a particle or label: ``K+`` -> ``Kp``, ``psi(2S)`` -> ``psi2S``."""
    if name in DEFAULT_PREFIX:
        return DEFAULT_PREFIX[name]
    name = name.replace("+", "p").replace("-", "m").replace("~", "bar").replace("*", "st")
    return re.sub(r"[^A-Za-z0-9]", "", name) or "x"


@dataclass(frozen=True)
class Projection:
    """One histogrammed variable of a reaction.

    Attributes:
        stem: file stem, the plot is ``fit_<stem>.png``.
        label: axis label (matplotlib mathtext, units in brackets).
        text: the same in plain text (for reports).
        kind: one of :data:`KINDS`.
        lo, hi: histogram range (the kinematic limits for a mass).
        combinations: for a mass, the final-state label sets whose invariant
            mass is filled, one entry each per event.
        chain: for an angle, the chain whose variables are filled.
        vertex: for an angle, the decaying node's label in that chain.
        relabellings: for an angle, one tuple per entry: the labels whose
            momenta play ``reaction.prefixes`` in the chain (an
            identical-particle relabelling; the identity first).
    """

    stem: str
    label: str
    text: str
    kind: str
    lo: float
    hi: float
    combinations: tuple[tuple[str, ...], ...] = ()
    chain: DecayChain | None = None
    vertex: str = ""
    relabellings: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"projection kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not self.hi > self.lo:
            raise ValueError(f"projection {self.stem}: empty range [{self.lo}, {self.hi}]")

    @property
    def entries_per_event(self) -> int:
        return len(self.combinations) if self.kind == "mass" else len(self.relabellings)


@dataclass(frozen=True)
class DalitzPlot:
    """The Dalitz plot m^2(ab) against m^2(bc) of a three-body final state.

    Attributes:
        x_label, y_label: axis labels (mathtext).
        text: plain-text description (for reports).
        entries: one (ab labels, bc labels) pair per entry of an event: the
            distinct identical-particle relabellings of (a, b, c).
        masses: (m_a, m_b, m_c) in GeV; parent_mass: M.
        x_range, y_range: kinematic limits of m^2(ab) and m^2(bc) (GeV^2).
    """

    x_label: str
    y_label: str
    text: str
    entries: tuple[tuple[tuple[str, str], tuple[str, str]], ...]
    masses: tuple[float, float, float]
    parent_mass: float

    @property
    def x_range(self) -> tuple[float, float]:
        ma, mb, mc = self.masses
        return (ma + mb) ** 2, (self.parent_mass - mc) ** 2

    @property
    def y_range(self) -> tuple[float, float]:
        ma, mb, mc = self.masses
        return (mb + mc) ** 2, (self.parent_mass - ma) ** 2

    def x_limits(self, m2_bc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) kinematic limit of m^2(ab) at given m^2(bc) (NaN outside the y range)."""
        ma, mb, mc = self.masses
        M = self.parent_mass
        m2_bc = np.asarray(m2_bc, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            m_bc = np.sqrt(m2_bc)
            # Energies of b and a in the bc rest frame.
            e_b = (m2_bc - mc**2 + mb**2) / (2 * m_bc)
            e_a = (M**2 - m2_bc - ma**2) / (2 * m_bc)
            # Clipped: rounding at the ends of the y range must not give NaN there.
            p_b = np.sqrt(np.maximum(e_b**2 - mb**2, 0.0))
            p_a = np.sqrt(np.maximum(e_a**2 - ma**2, 0.0))
            s = ma**2 + mb**2 + 2 * e_a * e_b
        y0, y1 = self.y_range
        outside = ~((m2_bc >= y0) & (m2_bc <= y1))
        return np.where(outside, np.nan, s - 2 * p_a * p_b), np.where(outside, np.nan, s + 2 * p_a * p_b)

    def contains(self, m2_ab: np.ndarray, m2_bc: np.ndarray) -> np.ndarray:
        """Whether the points lie inside the kinematic boundary."""
        lo, hi = self.x_limits(m2_bc)
        with np.errstate(invalid="ignore"):
            return (m2_ab >= lo) & (m2_ab <= hi)

    def boundary(self, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """(m^2(ab), m^2(bc)) of a closed curve along the kinematic boundary, (2 n + 1,) each."""
        y0, y1 = self.y_range
        # Points crowd at the ends, where the boundary turns.
        y = y0 + (y1 - y0) * 0.5 * (1 - np.cos(np.linspace(0, np.pi, n)))
        y[[0, -1]] = y0, y1
        lo, hi = self.x_limits(y)
        return np.concatenate([lo, hi[::-1], lo[:1]]), np.concatenate([y, y[::-1], y[:1]])


# --------------------------------------------------------------------------
# What to project
# --------------------------------------------------------------------------


def _relabellings(reaction: Reaction) -> list[dict[str, str]]:
    """One {chain label: label whose momentum it takes} per identical-particle permutation."""
    pre = reaction.prefixes
    return [{pre[i]: pre[j] for i, j in enumerate(perm)} for perm in reaction.identical_permutations()]


def _content(reaction: Reaction, labels: Sequence[str]) -> tuple[str, ...]:
    """The particle names of a label set, in event-file order (the histogram's identity)."""
    return tuple(sorted((reaction.particle_of(x) for x in labels), key=reaction.particles.index))


def _content_latex(reaction: Reaction, labels: Sequence[str]) -> str:
    # Each in braces: a \gamma followed by K would read as the unknown command \gammaK.
    return "".join("{" + particle_latex(reaction.particle_of(x)) + "}" for x in labels)


def _content_text(reaction: Reaction, labels: Sequence[str]) -> str:
    return " ".join(reaction.particle_of(x) for x in labels)


def _mass_limits(reaction: Reaction, labels: Sequence[str]) -> tuple[float, float]:
    inside = sum(particle_info(reaction.particle_of(x)).mass for x in labels)
    outside = sum(m for x, m in zip(reaction.prefixes, reaction.masses) if x not in labels)
    return inside, reaction.parent_mass - outside


def _mass_projection(reaction: Reaction, labels: tuple[str, ...], stem: str | None = None) -> Projection:
    """The mass of a label set, filled for every label set of the same particle content."""
    content = _content(reaction, labels)
    # The node's own label set first: the axis label reads as the chain writes it.
    others = [c for c in itertools.combinations(reaction.prefixes, len(labels))
              if _content(reaction, c) == content and set(c) != set(labels)]
    combos = (tuple(labels), *others)
    lo, hi = _mass_limits(reaction, labels)
    stem = stem or "m_" + "_".join(particle_slug(reaction.particle_of(x)) for x in labels)
    return Projection(stem, rf"$m({_content_latex(reaction, labels)})$ [GeV]",
                      f"m({_content_text(reaction, labels)})", "mass", lo, hi, combinations=combos)


def _path(chain: DecayChain, label: str) -> list[DecayNode]:
    """Nodes from below the root down to ``label`` (empty for the root)."""
    out = []
    node = chain.node(label)
    while node is not chain.root:
        out.append(node)
        node = chain.parent_of(node.label)
    return out[::-1]


def _angle_projection(reaction: Reaction, chain: DecayChain, vertex: DecayNode, kind: str,
                      stem: str | None = None) -> tuple[Projection, frozenset]:
    """cos theta (or phi) of a vertex, with one entry per distinct relabelling; and its entry key set."""
    # A vertex's angles depend on the label sets of the nodes along its path
    # and of its first daughter; relabellings that map them alike give the same value.
    path = _path(chain, vertex.label)
    first = vertex.daughters[0]
    keys, relabellings = [], []
    for rel in _relabellings(reaction):
        key = tuple(frozenset(rel[x] for x in n.leaves) for n in (*path, first))
        if key not in keys:
            keys.append(key)
            relabellings.append(tuple(rel[x] for x in reaction.prefixes))
    daughter, daughter_text = _content_latex(reaction, first.leaves), _content_text(reaction, first.leaves)
    if vertex is chain.root:
        frame, frame_text = f"${particle_latex(reaction.parent)}$ rest frame", f"{reaction.parent} rest frame"
        name = particle_slug(reaction.parent)
    else:
        frame = f"${_content_latex(reaction, vertex.leaves)}$ helicity frame"
        frame_text = f"{_content_text(reaction, vertex.leaves)} helicity frame"
        name = particle_slug(vertex.label)
    if kind == "cos_theta":
        label, lo, hi = rf"$\cos\theta({daughter})$ in the {frame}", -1.0, 1.0
        text = f"cos theta({daughter_text}) in the {frame_text}"
    else:
        label, lo, hi = rf"$\phi({daughter})$ in the {frame} [rad]", -np.pi, np.pi
        text = f"phi({daughter_text}) in the {frame_text}"
    proj = Projection(stem or f"{kind}_{name}", label, text, kind, lo, hi, chain=chain, vertex=vertex.label,
                      relabellings=tuple(relabellings))
    return proj, frozenset(keys)


def _is_default_radiative(reaction: Reaction) -> bool:
    """parent -> gamma P1 P2 with the one chain ``parent -> X gamma; X -> P1 P2``."""
    if not reaction.is_radiative_pair or len(reaction.chains) != 1:
        return False
    g, p1, p2 = reaction.prefixes
    return str(reaction.chains[0]) == f"{reaction.parent} -> X {g}; X -> {p1} {p2}"


def reaction_projections(reaction: Reaction) -> tuple[Projection, ...]:
    """The projections plotted for a reaction (module docstring), masses first."""
    if _is_default_radiative(reaction):
        chain = reaction.chains[0]
        x = chain.node("X")
        return (_mass_projection(reaction, x.leaves, "m"),
                _angle_projection(reaction, chain, chain.root, "cos_theta", "cos_theta_X")[0],
                _angle_projection(reaction, chain, x, "cos_theta", "cos_theta_1")[0],
                _angle_projection(reaction, chain, x, "phi", "phi_1")[0])
    out: list[Projection] = []
    seen: set[tuple[str, ...]] = set()

    def add_mass(labels: tuple[str, ...]) -> None:
        content = _content(reaction, labels)
        if content not in seen:
            seen.add(content)
            out.append(_mass_projection(reaction, labels))

    for chain in reaction.chains:
        for label in chain.inner_labels:
            add_mass(chain.node(label).leaves)
    if reaction.n_final >= 4:
        for pair in itertools.combinations(reaction.prefixes, 2):
            add_mass(pair)
    chain = reaction.chains[0]
    key_sets: list[frozenset] = []
    for vertex in chain.vertices:
        proj, keys = _angle_projection(reaction, chain, vertex, "cos_theta")
        if keys not in key_sets:  # another vertex under a relabelling (phi and f of psi(2S) -> 4K)
            key_sets.append(keys)
            out.append(proj)
    return tuple(out)


def dalitz_plot(reaction: Reaction) -> DalitzPlot | None:
    """The Dalitz plot of a three-body final state (None for other final states)."""
    if reaction.n_final != 3:
        return None
    a, b, c = reaction.prefixes
    entries, keys = [], []
    for rel in _relabellings(reaction):
        entry = ((rel[a], rel[b]), (rel[b], rel[c]))
        key = (frozenset(entry[0]), frozenset(entry[1]))
        if key not in keys:
            keys.append(key)
            entries.append(entry)
    pa, pb, pc = (_content_latex(reaction, [x]) for x in (a, b, c))
    ta, tb, tc = (reaction.particle_of(x) for x in (a, b, c))
    return DalitzPlot(rf"$m^2({pa}{pb})$ [GeV$^2$]", rf"$m^2({pb}{pc})$ [GeV$^2$]",
                      f"Dalitz plot m^2({ta} {tb}) against m^2({tb} {tc})", tuple(entries),
                      tuple(reaction.masses), reaction.parent_mass)


# --------------------------------------------------------------------------
# Values per event
# --------------------------------------------------------------------------


def projection_values(projections: Sequence[Projection], events: Events) -> list[np.ndarray]:
    """(n_events, entries_per_event) values of each projection.

    Tree variables are computed once per chain and relabelling.
    """
    p = events.by_label()
    trees: dict[tuple, dict] = {}
    out = []
    for proj in projections:
        if proj.kind == "mass":
            cols = [invariant_mass(sum(p[x] for x in combo)) for combo in proj.combinations]
        else:
            cols = []
            for rel in proj.relabellings:
                key = (proj.chain, rel)
                if key not in trees:
                    trees[key] = chain_variables(proj.chain, {x: p[y] for x, y in
                                                              zip(events.reaction.prefixes, rel)})
                v = trees[key][proj.vertex]
                cols.append(v.cos_theta if proj.kind == "cos_theta" else v.phi)
        out.append(np.stack(cols, axis=1))
    return out


def dalitz_values(dalitz: DalitzPlot, events: Events) -> np.ndarray:
    """(n_events, entries, 2) m^2(ab), m^2(bc) of every entry (GeV^2)."""
    p = events.by_label()

    def m2(labels):
        q = p[labels[0]] + p[labels[1]]
        return q[:, 0] ** 2 - np.sum(q[:, 1:] ** 2, axis=1)

    return np.stack([np.stack([m2(ab), m2(bc)], axis=-1) for ab, bc in dalitz.entries], axis=1)


# --------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------


def _bin_index(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin of each value, -1 outside [lo, hi] (hi in the last bin, as np.histogram has it).

    Values within 1e-9 of the range's width outside it (rounding at a
    kinematic limit) count as inside.
    """
    eps = 1e-9 * (hi - lo)
    inside = (x >= lo - eps) & (x <= hi + eps)  # False for NaN
    i = np.floor((np.where(inside, x, lo) - lo) / (hi - lo) * bins).astype(np.int64)
    return np.where(inside, np.clip(i, 0, bins - 1), -1)


def _weighted_counts(cells: np.ndarray, w: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of weights and its variance per cell from (n_events, k) cell indices (-1: none).

    The k entries of an event are correlated: an event with c entries in a
    cell adds c w to the sum and (c w)^2 to the variance.
    """
    cells = np.asarray(cells)
    if cells.ndim == 1:
        cells = cells[:, None]
    event = np.broadcast_to(np.arange(cells.shape[0])[:, None], cells.shape)
    ok = cells >= 0
    pair = event[ok].astype(np.int64) * n_cells + cells[ok]
    if cells.shape[1] == 1:
        u, c = pair, np.ones(pair.size)
    else:
        u, c = np.unique(pair, return_counts=True)
    ev, cell = u // n_cells, u % n_cells
    cw = w[ev] * c
    return (np.bincount(cell, weights=cw, minlength=n_cells),
            np.bincount(cell, weights=cw**2, minlength=n_cells))


def _compare(d: np.ndarray, d2: np.ndarray, m: np.ndarray, m2: np.ndarray, scale: float) -> dict:
    model, model_err = m * scale, np.sqrt(m2) * scale
    # Pearson-like: the expected count's variance, so that empty data bins
    # with a small expectation do not get a huge pull from sqrt(0).
    err = np.sqrt(np.maximum(model, d2) + model_err**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = np.where(err > 0, (d - model) / err, 0.0)
    return {"data": d, "data_err": np.sqrt(d2), "model": model, "model_err": model_err, "pull": pull}


def projection_histograms(data_x: np.ndarray, data_w: np.ndarray, mc_x: np.ndarray,
                          mc_w: np.ndarray, bins: int, lo: float, hi: float) -> dict:
    """Binned data and model with errors and pulls.

    Args:
        data_x: (n_data,) values, or (n_data, k) for k entries per event.
        data_w: (n_data,) data weights.
        mc_x: (n_mc,) or (n_mc, k) values of the normalisation MC.
        mc_w: (n_mc,) MC weight times fitted intensity.

    Returns:
        A dict of arrays: ``edges``, ``data``, ``data_err`` (square root of the
        variance of the weight sum), ``model`` (scaled to the data's total
        weight), ``model_err`` (MC statistics), ``pull`` = (data - model) /
        sqrt(max(model, data variance) + model_err^2).
    """
    data_w, mc_w = np.asarray(data_w, dtype=np.float64), np.asarray(mc_w, dtype=np.float64)
    edges = np.linspace(lo, hi, bins + 1)
    d, d2 = _weighted_counts(_bin_index(np.asarray(data_x), lo, hi, bins), data_w, bins)
    m, m2 = _weighted_counts(_bin_index(np.asarray(mc_x), lo, hi, bins), mc_w, bins)
    return {"edges": edges, **_compare(d, d2, m, m2, data_w.sum() / mc_w.sum())}


def dalitz_histograms(dalitz: DalitzPlot, data_xy: np.ndarray, data_w: np.ndarray, mc_xy: np.ndarray,
                      mc_w: np.ndarray, bins: int = 40) -> dict:
    """Binned Dalitz plot of data and model, with pulls.

    Args:
        data_xy, mc_xy: (n, k, 2) from :func:`dalitz_values`.
        data_w: (n_data,) data weights; mc_w: (n_mc,) MC weight times fitted intensity.
        bins: cells along each axis.

    Returns:
        As :func:`projection_histograms`, arrays of shape (bins, bins)
        indexed [x, y], with ``x_edges`` and ``y_edges`` instead of ``edges``.
    """
    (x0, x1), (y0, y1) = dalitz.x_range, dalitz.y_range

    def cells(xy):
        ix = _bin_index(xy[..., 0], x0, x1, bins)
        iy = _bin_index(xy[..., 1], y0, y1, bins)
        return np.where((ix >= 0) & (iy >= 0), ix * bins + iy, -1)

    data_w, mc_w = np.asarray(data_w, dtype=np.float64), np.asarray(mc_w, dtype=np.float64)
    d, d2 = _weighted_counts(cells(data_xy), data_w, bins * bins)
    m, m2 = _weighted_counts(cells(mc_xy), mc_w, bins * bins)
    h = {k: v.reshape(bins, bins) for k, v in _compare(d, d2, m, m2, data_w.sum() / mc_w.sum()).items()}
    return {"x_edges": np.linspace(x0, x1, bins + 1), "y_edges": np.linspace(y0, y1, bins + 1), **h}
