"""Does the normalisation MC cover the data? A nearest-neighbour check.

A fit normalises the intensity with the MC sample: it can only describe data
where the MC has events. MC made with a narrower acceptance than the data
(a detector with |cos theta| < 0.3 against data with |cos theta| < 0.93)
leaves data in regions the normalisation never sees; the fit then converges,
with small errors, to wrong fractions. :func:`mc_coverage` finds that.

Method:

* Coordinates: the tree variables of the reaction's first chain
  (:func:`fastsim.events.tree.chain_variables`), 3n - 4 of them for n
  final-state particles: every intermediate node's mass scaled to [0, 1] by
  its kinematic range (:attr:`fastsim.events.nbody.NBodyPhaseSpace.mass_limits`),
  and at every vertex (cos theta + 1) / 2 and phi / (2 pi) + 1/2 of the
  first daughter. The azimuths are not wrapped: balls at the seam phi = +-pi
  are one-sided for data and MC alike, which leaves the comparison
  unbiased and the KD-tree three to six times faster than a periodic one.
* For each data event i, r_i is the distance to its k-th nearest neighbour
  among the other data events, and d_i the distance to the nearest MC event
  (MC events with weight != 0; at most ``max_mc`` of them, a seeded random
  subset). The event is *uncovered* when d_i > r_i: the ball that holds its
  k nearest data neighbours holds no MC event.
* The uncovered fraction is the mean over data events (those with weight
  != 0); the MC covers the data when it is at most ``threshold``.

* A second, one-dimensional test sees thin gaps that the ball misses (a
  shell of cos theta between 0.8 and 0.93): for every final-state particle
  its lab cos theta, azimuth and momentum, and every tree coordinate above,
  are histogrammed in :data:`MARGINAL_BINS` bins over the data's range. A
  data event is also uncovered when it falls in a bin that holds no MC event
  although the MC, had it the data's shape there, would put at least
  :data:`MARGINAL_MIN_EXPECTED` events in it. (The intensity would need to
  exceed its mean by that factor over a whole bin to empty it by chance.)

Where data and MC follow densities p and q, the ball around an event holds a
data probability of about k / N, so it holds on average k (M / N) q / p MC
events: the uncovered fraction is about exp(-k (M / N) q / p), negligible for
M >> N wherever q / p is not small, and 1 where q = 0. A control gives the
baseline of the sample sizes: the same statistic for a random subset of the
MC (as many events as the data, at most half of the MC) taken as pseudo-data
against the rest of the MC.

Resolution: the check sees uncovered regions wider than the data's k-th
neighbour distance (about 0.15 of the unit range in 5 dimensions and 0.3 in
8 for 20000 events), so the uncovered fraction is a lower bound of the data
fraction outside the MC's support. MC of |cos theta| < 0.3 against data of
|cos theta| < 0.93 (J/psi -> gamma K+ K-, 90 % of the data outside) gives
0.2 (1500 data events) to 0.43 (20000); a thin shell (0.8 against 0.93, 20 % of the data) goes
unseen; a smaller k resolves finer (k = 3 flags more) at the price of a
higher baseline.

Plain numpy and scipy (:class:`scipy.spatial.cKDTree`); no JAX.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from fastsim.events import Events
from fastsim.events.nbody import NBodyPhaseSpace
from fastsim.events.tree import chain_variables, momenta_by_label

#: Name of the coordinates, for messages.
COORDINATES = "tree variables of chain 1; lab cos theta, phi and |p| of each particle"
#: Bins of the one-dimensional test, over the data's range of each variable.
MARGINAL_BINS = 50
#: MC events a bin must be expected to hold (at the data's shape) for its emptiness to count.
MARGINAL_MIN_EXPECTED = 20.0


@dataclass(frozen=True)
class CoverageResult:
    """Outcome of :func:`mc_coverage`.

    Attributes:
        covered: ``uncovered_fraction <= threshold``; True as well when the
            check could not run (``checked`` False).
        uncovered_fraction: fraction of data events with no MC event closer
            than their k-th nearest data neighbour, or in a one-dimensional
            bin the MC leaves empty (NaN when not checked).
        marginal_fraction: the fraction flagged by the one-dimensional test alone.
        control_fraction: the same for MC pseudo-data against the rest of
            the MC (the baseline of the sample sizes); NaN if the MC is too
            small for it.
        threshold: the largest uncovered fraction still called covered.
        k: the neighbour order.
        n_data: data events used (weight != 0).
        n_mc: MC events used (weight != 0, at most ``max_mc``).
        n_control: pseudo-data events of the control.
        dimensions: number of coordinates (3 n_final - 4).
        coordinates: what the coordinates are.
    """

    covered: bool
    uncovered_fraction: float
    marginal_fraction: float
    control_fraction: float
    threshold: float
    k: int
    n_data: int
    n_mc: int
    n_control: int
    dimensions: int
    coordinates: str = COORDINATES

    @property
    def checked(self) -> bool:
        """Whether the check ran: there were more than k data events of non-zero weight."""
        return not np.isnan(self.uncovered_fraction)

    @property
    def message(self) -> str:
        """One line: the verdict with its numbers."""
        if not self.checked:
            return (f"normalisation MC coverage not checked: {self.n_data} data events of non-zero weight, "
                    f"the check needs more than k = {self.k}")
        verdict = "covers the data" if self.covered else "does not cover the data"
        control = ("no control (too few MC events)" if np.isnan(self.control_fraction) else
                   f"MC against itself: {_percent(self.control_fraction)}")
        return (f"normalisation MC {verdict}: {_percent(self.uncovered_fraction)} of data events "
                f"(threshold {_percent(self.threshold)}) have no MC event within the distance of their "
                f"{_ordinal(self.k)}-nearest data neighbour ({self.dimensions} tree variables) or lie in a "
                f"one-dimensional bin without MC ({_percent(self.marginal_fraction)}; lab cos theta, phi, |p| "
                f"of each particle and the tree variables); {control}")

    def to_dict(self) -> dict:
        return {**asdict(self), "checked": self.checked, "message": self.message}


def _percent(x: float) -> str:
    return f"{100.0 * x:.3g} %"


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def tree_coordinates(events: Events) -> np.ndarray:
    """(n_events, 3 n_final - 4) coordinates of the coverage check, in [0, 1] (module docstring).

    Order: the intermediate masses (``chain.inner_labels``), then for every
    vertex (``chain.vertices``) its (cos theta + 1) / 2 and phi / (2 pi) + 1/2.
    """
    reaction = events.reaction
    chain = reaction.chains[0]
    variables = chain_variables(chain, momenta_by_label(reaction, events.momenta))
    limits = NBodyPhaseSpace(reaction, chain).mass_limits
    columns = []
    for label in chain.inner_labels:
        lo, hi = limits[label]
        columns.append((variables[label].m - lo) / (hi - lo))
    for vertex in chain.vertices:
        v = variables[vertex.label]
        columns += [(v.cos_theta + 1.0) / 2.0, v.phi / (2.0 * np.pi) + 0.5]
    return np.stack(columns, axis=1)


def lab_coordinates(events: Events) -> np.ndarray:
    """(n_events, 3 n_final) lab cos theta, phi and |p| of each final-state particle (the detector's variables)."""
    p = events.momenta[..., 1:]  # (n, n_final, 3)
    norm = np.linalg.norm(p, axis=-1)
    cos = np.divide(p[..., 2], norm, out=np.zeros_like(norm), where=norm > 0)
    phi = np.arctan2(p[..., 1], p[..., 0])
    return np.concatenate([cos, phi, norm], axis=1)


def marginal_uncovered(points: np.ndarray, reference: np.ndarray, *, bins: int = MARGINAL_BINS,
                       min_expected: float = MARGINAL_MIN_EXPECTED) -> np.ndarray:
    """(n,) whether each of ``points`` lies in a one-dimensional bin that ``reference`` leaves empty.

    Args:
        points: (n, d) the sample to test.
        reference: (m, d) the sample that should cover it.
        bins: bins per coordinate over the range of ``points``.
        min_expected: an empty bin counts only when ``reference``, had it the
            shape of ``points``, would put at least this many events in it.
    """
    flagged = np.zeros(len(points), dtype=bool)
    for j in range(points.shape[1]):
        lo, hi = float(points[:, j].min()), float(points[:, j].max())
        if not hi > lo:
            continue
        edges = np.linspace(lo, hi, bins + 1)
        i_points = np.clip(np.searchsorted(edges, points[:, j], side="right") - 1, 0, bins - 1)
        n_points = np.bincount(i_points, minlength=bins)
        inside = (reference[:, j] >= lo) & (reference[:, j] <= hi)
        i_ref = np.clip(np.searchsorted(edges, reference[inside, j], side="right") - 1, 0, bins - 1)
        n_ref = np.bincount(i_ref, minlength=bins)
        expected = len(reference) * n_points / len(points)
        empty = (n_ref == 0) & (expected >= min_expected)
        flagged |= empty[i_points]
    return flagged


def uncovered_fraction(points: np.ndarray, reference: np.ndarray, k: int) -> float:
    """Fraction of ``points`` with no ``reference`` point closer than their k-th nearest other point.

    Args:
        points: (n, d) the sample to test (more than k points).
        reference: (m, d) the sample that should cover it (m >= 1).
        k: neighbour order.
    """
    return float(np.mean(ball_uncovered(points, reference, k)))


def ball_uncovered(points: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """(n,) whether each of ``points`` has no ``reference`` point closer than its k-th nearest other point."""
    # k + 1: the nearest point of the sample to itself is itself.
    r = cKDTree(points).query(points, k=[k + 1], workers=-1)[0][:, 0]
    # Beyond the largest r an event is uncovered whatever its distance: the bound
    # stops the search early for events far from the reference (exactly the
    # slow ones of a KD-tree).
    bound = float(np.nextafter(r.max(), np.inf))
    d = cKDTree(reference).query(points, k=1, workers=-1, distance_upper_bound=bound)[0]
    return d > r


def _uncovered(data: Events, mc: Events, x: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float]:
    """(fraction uncovered by either test, fraction by the one-dimensional test alone)."""
    marginal = marginal_uncovered(np.concatenate([x, lab_coordinates(data)], axis=1),
                                  np.concatenate([y, lab_coordinates(mc)], axis=1))
    either = ball_uncovered(x, y, k) | marginal
    return float(np.mean(either)), float(np.mean(marginal))


def mc_coverage(data: Events, mc: Events, *, k: int = 10, threshold: float = 0.01, seed: int = 0,
                max_mc: int = 500_000) -> CoverageResult:
    """Whether the normalisation MC covers the data (module docstring: the method).

    Args:
        data: data events (events of weight 0 are left out).
        mc: normalisation MC events (events of weight 0 are left out).
        k: neighbour order: an event is uncovered when no MC event is closer
            to it than its k-th nearest data neighbour.
        threshold: largest uncovered fraction called covered.
        seed: seed of the MC subsample and of the control's split.
        max_mc: at most this many MC events are used (a random subset).

    Returns:
        :class:`CoverageResult`; with at most k data events of non-zero
        weight the check cannot run: ``checked`` is False and the message says so.

    Raises:
        ValueError: data and MC of different reactions, k < 1, or no MC event
            of non-zero weight.
    """
    if data.reaction != mc.reaction:
        raise ValueError(f"data ({data.reaction}) and MC ({mc.reaction}) are of different reactions")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    data = data.subset(data.weight_array != 0)
    x = tree_coordinates(data)
    mc_index = np.flatnonzero(mc.weight_array != 0)
    if len(mc_index) == 0:
        raise ValueError("the normalisation MC has no event of non-zero weight")
    if len(x) <= k:
        nan = float("nan")
        return CoverageResult(covered=True, uncovered_fraction=nan, marginal_fraction=nan, control_fraction=nan,
                              threshold=float(threshold), k=int(k), n_data=len(x), n_mc=len(mc_index),
                              n_control=0, dimensions=x.shape[1])
    if len(mc_index) > max_mc:
        mc_index = np.sort(rng.choice(mc_index, size=max_mc, replace=False))
    mc = mc.subset(mc_index)
    y = tree_coordinates(mc)
    fraction, marginal = _uncovered(data, mc, x, y, k)
    n_control = min(len(x), len(y) // 2)
    control = float("nan")
    if n_control > k:
        pseudo = np.zeros(len(y), dtype=bool)
        pseudo[rng.choice(len(y), size=n_control, replace=False)] = True
        control = _uncovered(mc.subset(pseudo), mc.subset(~pseudo), y[pseudo], y[~pseudo], k)[0]
    else:
        n_control = 0
    return CoverageResult(covered=bool(fraction <= threshold), uncovered_fraction=fraction,
                          marginal_fraction=marginal, control_fraction=control, threshold=float(threshold), k=int(k), n_data=len(x),
                          n_mc=len(y), n_control=n_control, dimensions=x.shape[1])
