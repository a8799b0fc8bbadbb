"""Neural spline flow on the unit box [0, 1]^d (normflows coupling splines).

d = 5 for the helicity variables, 4 for folded coordinates (``fastsim.coords``);
the description below is for d = 5.

Construction, chosen so that no probability mass can leave the physical region:

* base: uniform on the box y in [-1, 1]^5 (y = 2 u - 1);
* layers: ``normflows.flows.CircularCoupledRationalQuadraticSpline`` with
  ``tail_bound = 1``. Every rational-quadratic spline maps [-1, 1] onto
  itself monotonically (knots pinned at -1 and +1), the azimuths
  (``ind_circ``) use circular splines (equal end derivatives, periodic
  conditioner features), the other three coordinates bounded splines;
* which coordinates a layer transforms is chosen by its coupling mask; there
  are no permutation or linear-mixing layers at all, so the azimuths are never
  mixed with other coordinates and stay circular.

Every layer is therefore a bijection of the box onto itself: samples lie
inside by construction (not by rejection), and the density integrates to one
over the box with no renormalisation. The uniform base density 2^-5 and the
Jacobian 2^5 of u -> y cancel, so log p(u) is the sum of the layers' log-dets.
Points outside the box get log p = -inf.

Optionally (``pre_knots``) a fixed, data-fitted piecewise-linear map of each
non-periodic coordinate onto [0, 1] (:class:`PiecewiseLinear`, knots at
detector acceptance edges) comes first: it divides out steps of the data
density, its log-Jacobian is part of log p(u) and it keeps 0 and 1 fixed, so
the box is still mapped onto itself.

Optionally (``acceptance``) the density is multiplied by acceptance gates,
soft steps at the detector's per-particle cuts in lab variables, and
renormalised: p = q g / Z with q the flow above (:mod:`fastsim.acceptance`;
samples are points of q kept with probability g, log Z an estimate).

normflows leaves inputs outside the spline interval unchanged only for a single
tail type; with mixed (bounded and circular) tails it sets them to 0, so
intermediate values are clamped back onto the box after every layer to remove
round-off excursions of order 1 ulp.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .coords import CIRCULAR

N_DIM = 5
MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
#: Events per internal block when sampling: large enough to hide the dispatch
#: overhead of the ~50 tensor operations per layer and block, small enough for
#: one layer's (hidden, block) and (bins, block) tensors to stay in the L2
#: cache (on the 2-core Xeon, 4096-8192 are equally fast, 16384 is slower).
SAMPLE_BLOCK = 8192
#: Points of the flow behind the stored log Z of a gated flow, the validation-loss estimate, their seed.
Z_SAMPLES = 2 ** 20
Z_EVAL_SAMPLES = 2 ** 18
Z_SEED = 12345
DEFAULT_Z_BLOCK = 2 ** 17


def rq_spline(x: torch.Tensor, uw: torch.Tensor, uh: torch.Tensor, ud: torch.Tensor,
              inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline of [-1, 1] onto itself (Durkan et al. 2019).

    Same parameterisation and formulae as normflows' ``rational_quadratic_spline``
    (softmax bin widths/heights with a 1e-3 floor, softplus knot derivatives
    with a 1e-3 floor, knots pinned at -1 and +1), written without the
    inside/outside masking and with the bin found by counting knots, which is
    several times cheaper on a CPU. ``x`` (n, d) must lie in [-1, 1];
    ``uw, uh`` (n, d, K), ``ud`` (n, d, K + 1) are unnormalised. Returns
    (outputs (n, d), log|d out / d x| (n, d)). Sampling uses
    :meth:`SplineCoupling.sample_rows`, the same spline laid out for speed.
    """
    k = uw.shape[-1]
    widths = MIN_BIN + (1.0 - MIN_BIN * k) * torch.softmax(uw, dim=-1)
    heights = MIN_BIN + (1.0 - MIN_BIN * k) * torch.softmax(uh, dim=-1)
    cw = torch.nn.functional.pad(torch.cumsum(widths, dim=-1)[..., :-1], (1, 0)) * 2.0 - 1.0
    ch = torch.nn.functional.pad(torch.cumsum(heights, dim=-1)[..., :-1], (1, 0)) * 2.0 - 1.0
    widths = 2.0 * widths
    heights = 2.0 * heights
    knots = ch if inverse else cw
    idx = (x[..., None] >= knots[..., 1:]).sum(dim=-1, keepdim=True)
    xk = cw.gather(-1, idx)[..., 0]
    wk = widths.gather(-1, idx)[..., 0]
    yk = ch.gather(-1, idx)[..., 0]
    hk = heights.gather(-1, idx)[..., 0]
    # knot derivatives: softplus of the two gathered values only (elementwise, so identical)
    dd = MIN_DERIVATIVE + torch.nn.functional.softplus(ud.gather(-1, torch.cat([idx, idx + 1], dim=-1)))
    dk, dk1 = dd[..., 0], dd[..., 1]
    delta = hk / wk
    s2 = dk + dk1 - 2.0 * delta
    if inverse:
        dy = x - yk
        a = hk * (delta - dk) + dy * s2
        b = hk * dk - dy * s2
        c = -delta * dy
        disc = (b * b - 4.0 * a * c).clamp_min(0.0)
        theta = (2.0 * c) / (-b - torch.sqrt(disc))
        out = theta * wk + xk
    else:
        theta = (x - xk) / wk
    omt = 1.0 - theta
    tt = theta * omt
    den = delta + s2 * tt
    dnum = delta * delta * (dk1 * theta * theta + 2.0 * delta * tt + dk * omt * omt)
    lad = torch.log(dnum) - 2.0 * torch.log(den)
    if inverse:
        return out, -lad
    out = yk + hk * (delta * theta * theta + dk * tt) / den
    return out, lad


class PiecewiseLinear(nn.Module):
    """Fixed monotone piecewise-linear maps of [0, 1] onto itself, one per coordinate.

    Coordinate i has knots ``0 < t_1 < ... < 1`` (``knots[i]``, interior only;
    an empty list is the identity). The values at the knots are fitted once to
    the training sample (:meth:`fit`): each segment gets the sample's fraction
    of events in it, so the map is the CDF of a piecewise-constant density and
    a step of the data density at a knot (a detector acceptance edge) is
    divided out; the flow then sees a density without the step. The map is
    part of the model: its log-Jacobian (log of the segment slope) enters the
    density, its inverse the sampling. 0 and 1 stay fixed, so the box is mapped
    onto itself.
    """

    def __init__(self, knots: list[list[float]]) -> None:
        super().__init__()
        self.active = [i for i, k in enumerate(knots) if len(k) > 0]
        for i in self.active:
            t = sorted(float(v) for v in knots[i])
            if not (0.0 < t[0] and t[-1] < 1.0 and all(a < b for a, b in zip(t, t[1:]))):
                raise ValueError(f"knots of coordinate {i} must be increasing inside (0, 1), got {knots[i]}")
            x = torch.tensor([0.0] + t + [1.0], dtype=torch.float64)
            self.register_buffer(f"x{i}", x)
            self.register_buffer(f"y{i}", x.clone())  # identity until fitted

    @torch.no_grad()
    def fit(self, u: torch.Tensor, floor: float = 1e-6) -> None:
        """Knot values from the fractions of ``u`` (n, d) per segment (each at least ``floor``)."""
        for i in self.active:
            x = getattr(self, f"x{i}")
            col = u[:, i].to(x.dtype)
            seg = torch.bucketize(col.contiguous(), x[1:-1], right=True)
            frac = torch.bincount(seg, minlength=len(x) - 1).to(x.dtype) / len(col)
            frac = frac.clamp_min(floor)
            frac = frac / frac.sum()
            y = torch.cat([torch.zeros(1, dtype=x.dtype, device=x.device), torch.cumsum(frac, 0)])
            y[-1] = 1.0
            getattr(self, f"y{i}").copy_(y)

    def _apply_map(self, u: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = u.clone()
        lad = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        for i in self.active:
            x = getattr(self, f"x{i}").to(u.dtype)
            y = getattr(self, f"y{i}").to(u.dtype)
            src, dst = (y, x) if inverse else (x, y)
            slope = (dst[1:] - dst[:-1]) / (src[1:] - src[:-1])
            col = u[:, i]
            seg = torch.bucketize(col.contiguous(), src[1:-1], right=True)
            out[:, i] = (dst[seg] + (col - src[seg]) * slope[seg]).clamp(0.0, 1.0)
            lad = lad + torch.log(slope[seg])
        return out, lad

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> flow coordinates: (v (n, d), log|dv/du| (n,))."""
        return self._apply_map(u, inverse=False)

    def inverse(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow coordinates -> data: (u (n, d), log|du/dv| (n,))."""
        return self._apply_map(v, inverse=True)


def coupling_masks(n_layers: int, n_dim: int = N_DIM) -> list[list[int]]:
    """Masks (1 = transformed) for ``n_layers`` couplings, so that every
    coordinate is transformed conditioned on every other one within a few layers.

    Odd ``n_dim``: a window of two coordinates moving by two each layer. Even
    ``n_dim`` (where that window would always pair the same coordinates): the
    two halves of each split of the coordinates into pairs in turn, e.g. for
    4: {0,1} {2,3} {0,2} {1,3} {0,3} {1,2}.
    """
    if n_dim % 2 == 0 and n_dim >= 4:
        import itertools

        halves = []
        for first in itertools.combinations(range(1, n_dim), n_dim // 2 - 1):
            a = {0, *first}
            halves += [a, set(range(n_dim)) - a]
        return [[1 if d in halves[i % len(halves)] else 0 for d in range(n_dim)] for i in range(n_layers)]
    masks = []
    for i in range(n_layers):
        on = {(2 * i) % n_dim, (2 * i + 1) % n_dim}
        masks.append([1 if d in on else 0 for d in range(n_dim)])
    return masks


def _cbrt_unit(y: torch.Tensor) -> torch.Tensor:
    """Cube root of the unit-box value of y in [-1, 1], mapped back onto [-1, 1].

    A conditioner feature for u_m = G(m): at a two-body threshold G grows like
    p^3 (p the breakup momentum), so the acceptance, smooth in p, changes over
    a tiny range of u_m; in G^(1/3) that range is stretched out.
    """
    u = (0.5 * (y + 1.0)).clamp_min(0.0)
    # (u + eps)^(1/3): a finite slope at u = 0 (1e3), where the plain cube root has none
    return 2.0 * torch.pow(u + 1e-6, 1.0 / 3.0) - 1.0


class SplineCoupling(nn.Module):
    """One coupling layer: the coordinates with ``mask == 1`` go through a
    rational-quadratic spline on [-1, 1] whose bins, heights and knot
    derivatives are predicted from the other coordinates.

    The spline kernel is :func:`rq_spline` (normflows' parameterisation) and the
    conditioner normflows' ``ResidualNet``; the layer itself is written here
    (instead of ``CircularCoupledRationalQuadraticSpline``) to (a) call the
    spline on the whole box without normflows' inside/outside masking, which
    dominates the cost on a CPU and sets out-of-interval values to 0 for mixed
    tails, (b) leave the end-knot derivatives of the bounded coordinates free
    (normflows pins them to 1 for linear tails; here there are no tails, and a
    free derivative lets the density vanish at thresholds such as m -> m1 + m2),
    and (c) feed periodic coordinates to the conditioner as (sin, cos) pairs.
    Circular coordinates get equal derivatives at -1 and +1 (a circle
    diffeomorphism fixing the point -1 = +1).

    ``forward`` (base -> data) evaluates the spline directly, ``inverse``
    (data -> base, used by the likelihood) solves the quadratic;
    ``sample_rows`` is ``forward`` without the log-det, laid out for fast
    sampling.
    """

    def __init__(self, mask: list[int], circular: tuple[int, ...], hidden: int, n_blocks: int,
                 n_bins: int, cbrt_features: tuple[int, ...] = ()) -> None:
        super().__init__()
        from normflows.nets.resnet import ResidualNet

        mask_t = torch.tensor(mask, dtype=torch.bool)
        self.register_buffer("transform_features", torch.nonzero(mask_t).flatten())
        self.register_buffer("identity_features", torch.nonzero(~mask_t).flatten())
        circ = set(circular)
        ident = [int(i) for i in self.identity_features]
        trans = [int(i) for i in self.transform_features]
        self.register_buffer("identity_circular", torch.tensor([i in circ for i in ident]))
        self.register_buffer("transform_circular", torch.tensor([i in circ for i in trans]))
        # The same masks as plain Python for the sampler's per-row indexing.
        self._ident = tuple((i, i in circ) for i in ident)
        self._trans = tuple(trans)
        self.n_bins = n_bins
        self.hidden = hidden
        # conditioner inputs that also enter as the cube root of their unit-box value
        self._cbrt = tuple(k for k, i in enumerate(ident) if i in set(cbrt_features))
        self.register_buffer("cbrt_positions", torch.tensor(self._cbrt, dtype=torch.long), persistent=False)
        n_in = len(ident) + int(self.identity_circular.sum()) + len(self._cbrt)
        self.net = ResidualNet(in_features=n_in, out_features=len(trans) * (3 * n_bins + 1),
                               hidden_features=hidden, num_blocks=n_blocks)
        # Identity at initialisation: uniform bins, unit derivatives.
        nn.init.zeros_(self.net.final_layer.weight)
        nn.init.constant_(self.net.final_layer.bias, float(np.log(np.expm1(1.0 - MIN_DERIVATIVE))))

    def _spline_params(self, cond: torch.Tensor):
        ci = self.identity_circular
        feats = [torch.where(ci, torch.cos(math.pi * cond), cond)]
        if bool(ci.any()):
            feats.append(torch.sin(math.pi * cond[:, ci]))
        if self._cbrt:
            feats.append(_cbrt_unit(cond[:, self.cbrt_positions]))
        params = self.net(torch.cat(feats, dim=1))
        k = self.n_bins
        params = params.view(cond.shape[0], len(self.transform_features), 3 * k + 1)
        scale = 1.0 / math.sqrt(self.hidden)
        widths = params[..., :k] * scale
        heights = params[..., k:2 * k] * scale
        derivs = params[..., 2 * k:]
        last = torch.where(self.transform_circular, derivs[..., 0], derivs[..., k])
        derivs = torch.cat([derivs[..., :k], last[..., None]], dim=-1)
        return widths, heights, derivs

    def _transform(self, z: torch.Tensor, inverse: bool):
        cond = z[:, self.identity_features]
        w, h, d = self._spline_params(cond)
        out, lad = rq_spline(z[:, self.transform_features], w, h, d, inverse=inverse)
        result = z.clone()
        result[:, self.transform_features] = out.clamp(-1.0, 1.0)
        return result, lad.sum(dim=1)

    def sampling_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constants of :meth:`sample_rows`, derived from the current weights.

        Returns (head weight (R, hidden), head bias (R, 1), cumulative-sum
        matrix (K + 1, K), interior knot offsets (K - 1, 1)). The head is the
        conditioner's final layer with its R = T (3K + 1) rows (T transformed
        coordinates) reordered to [widths of every coordinate, heights of
        every coordinate, knot derivatives of every coordinate] and the
        1/sqrt(hidden) logit scale folded in; a circular coordinate's last
        derivative row is a copy of its first (equal end derivatives). Row j
        of the matrix sums the bins below knot j (a matmul: torch's cumsum
        along a non-last dimension is a slow strided loop). With s_j that
        sum of the exponentiated logits, knot j on [-1, 1] is
        2 MIN_BIN j - 1 + (2 - 2 MIN_BIN K) s_j / s_K; the offsets are its
        first term for the interior knots j = 1 .. K - 1. A few kB, rebuilt
        on every sampling call so that they can never be stale.
        """
        k, n_t = self.n_bins, len(self._trans)
        per = 3 * k + 1
        final = self.net.final_layer
        order = [t * per + part * k + j for part in (0, 1) for t in range(n_t) for j in range(k)]
        scale = torch.ones(per * n_t, dtype=final.weight.dtype, device=final.weight.device)
        scale[:len(order)] = 1.0 / math.sqrt(self.hidden)
        for t, circular in enumerate(self.transform_circular.tolist()):
            order += [t * per + 2 * k + j for j in range(k)] + [t * per + 2 * k + (0 if circular else k)]
        order = torch.tensor(order, device=final.weight.device)
        weight = (final.weight[order] * scale[:, None]).contiguous()
        bias = (final.bias[order] * scale)[:, None].contiguous()
        cum = torch.ones(k + 1, k, dtype=weight.dtype, device=weight.device).tril_(diagonal=-1)
        j = torch.arange(1, k, dtype=weight.dtype, device=weight.device)
        offsets = (2.0 * MIN_BIN * j - 1.0)[:, None]
        return weight, bias, cum, offsets

    def sample_rows(self, rows: list[torch.Tensor], consts: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Base -> data without the log-det, for sampling.

        ``rows`` holds one (B,) tensor per coordinate (in [-1, 1]), ``consts``
        is :meth:`sampling_tensors`; returns the list with the transformed
        coordinates replaced. The same map as :meth:`forward` up to float
        rounding, arranged for a CPU: the conditioner runs as W @ X with the
        events along the contiguous axis (its layers are those of normflows'
        ``ResidualNet.forward`` as built here: ReLU, no batch norm, no
        context, dropout inactive in eval), so the softmax, cumulative sums,
        bin search and gathers work on (bins, B) slabs vectorised over events
        instead of on rows of K bins. Only what sampling needs is computed:
        the bin of x, the two knots and knot derivatives around it; the
        softmax is normalised at those two knots only.
        """
        weight, bias, cum, offsets = consts
        net = self.net
        feats = [torch.cos(math.pi * rows[i]) if circular else rows[i] for i, circular in self._ident]
        feats += [torch.sin(math.pi * rows[i]) for i, circular in self._ident if circular]
        feats += [_cbrt_unit(rows[self._ident[k][0]]) for k in self._cbrt]
        h = torch.addmm(net.initial_layer.bias[:, None], net.initial_layer.weight, torch.stack(feats))
        for block in net.blocks:
            first, second = block.linear_layers
            z = torch.addmm(first.bias[:, None], first.weight, torch.relu(h)).relu_()
            h = torch.addmm(second.bias[:, None], second.weight, z).add_(h)
        params = torch.addmm(bias, weight, h)
        k = self.n_bins
        n_t, b = len(self._trans), h.shape[1]
        logits = params[:2 * n_t * k].view(2 * n_t, k, b)
        e = (logits - logits.amax(dim=1, keepdim=True)).exp_()
        # below[0 = widths | 1 = heights, coordinate, knot j, event]: sum of e over the bins below knot j
        below = torch.matmul(cum, e).view(2, n_t, k + 1, b)
        to_knot = (2.0 - 2.0 * MIN_BIN * k) / below[:, :, k:]
        x = torch.stack([rows[i] for i in self._trans])
        # bin of x: the number of interior knots at or below it, counted in
        # float arithmetic (several times cheaper than bool comparisons here)
        interior = torch.addcmul(offsets, below[0, :, 1:k], to_knot[0])
        bin_ = interior.sub_(x[:, None]).le_(0.0).sum(dim=1, keepdim=True)
        ends = torch.cat([bin_, bin_ + 1.0], dim=1)
        ends_i = ends.long()
        # knots[widths | heights, coordinate, left | right, event] on [-1, 1]
        below_ends = below.gather(2, ends_i.expand(2, n_t, 2, b))
        knots = torch.addcmul(ends.mul(2.0 * MIN_BIN).sub_(1.0), below_ends, to_knot)
        size = knots[:, :, 1] - knots[:, :, 0]
        xk, yk, wk, hk = knots[0, :, 0], knots[1, :, 0], size[0], size[1]
        derivs = params[2 * n_t * k:].view(n_t, k + 1, b).gather(1, ends_i)
        derivs = torch.nn.functional.softplus(derivs).add_(MIN_DERIVATIVE)
        dk, dk1 = derivs[:, 0], derivs[:, 1]
        # (round-off can put x an ulp outside its bin)
        theta = ((x - xk) / wk).clamp_(0.0, 1.0)
        delta = hk / wk
        tt = theta * (1.0 - theta)
        den = delta + (dk + dk1 - 2.0 * delta) * tt
        y = (yk + hk * (delta * theta * theta + dk * tt) / den).clamp_(-1.0, 1.0)
        rows = list(rows)
        for r, i in enumerate(self._trans):
            rows[i] = y[r]
        return rows

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: (outputs (n, d), log|det d out / d y| (n,))."""
        return self._transform(y, inverse=False)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base: (outputs (n, d), log|det d out / d x| (n,))."""
        return self._transform(x, inverse=True)


class SplineFlow(nn.Module):
    """Coupling rational-quadratic spline flow on [0, 1]^n_dim (5 by default, 4 for folded coordinates).

    Args:
        n_layers: number of coupling layers.
        hidden: hidden units of each conditioner (a normflows ``ResidualNet``).
        n_blocks: residual blocks of each conditioner.
        n_bins: spline bins.
        circular: indices of the periodic coordinates.
        pre_knots: per coordinate, interior knots in [0, 1] of a fixed
            piecewise-linear pre-transform (:class:`PiecewiseLinear`, fitted to
            the training sample by :meth:`fit_pre_transform`), e.g. at detector
            acceptance edges; None or empty lists: none. Only non-periodic
            coordinates may have knots.
        n_dim: number of coordinates (``CoordinateMap.n_dim``).
        cbrt_features: coordinates whose cube root is an extra conditioner
            input (e.g. [0]: u_m near the P1 P2 threshold, see ``_cbrt_unit``).
    """

    kind = "flow"

    def __init__(self, n_layers: int = 8, hidden: int = 64, n_blocks: int = 1, n_bins: int = 16,
                 circular: tuple[int, ...] = CIRCULAR, pre_knots: list[list[float]] | None = None,
                 n_dim: int = N_DIM, cbrt_features: tuple[int, ...] = (),
                 acceptance: dict | None = None) -> None:
        super().__init__()
        if n_dim < 2 or any(not 0 <= c < n_dim for c in circular):
            raise ValueError(f"need n_dim >= 2 and periodic coordinates among 0..{n_dim - 1}, "
                             f"got n_dim={n_dim}, circular={tuple(circular)}")
        self.n_dim = int(n_dim)
        self.hyperparameters = {"n_layers": int(n_layers), "hidden": int(hidden),
                                "n_blocks": int(n_blocks), "n_bins": int(n_bins),
                                "circular": [int(c) for c in circular]}
        if self.n_dim != N_DIM:
            self.hyperparameters["n_dim"] = self.n_dim
        cbrt_features = tuple(int(c) for c in cbrt_features)
        if any(not 0 <= c < self.n_dim or c in circular for c in cbrt_features):
            raise ValueError(f"cbrt_features must be non-periodic coordinates, got {cbrt_features}")
        if cbrt_features:
            self.hyperparameters["cbrt_features"] = list(cbrt_features)
        self.pre = None
        if pre_knots is not None and any(len(k) for k in pre_knots):
            if len(pre_knots) != self.n_dim:
                raise ValueError(f"pre_knots needs one list per coordinate ({self.n_dim}), got {len(pre_knots)}")
            if any(len(pre_knots[c]) for c in circular):
                raise ValueError("periodic coordinates cannot have pre-transform knots")
            self.hyperparameters["pre_knots"] = [[float(v) for v in k] for k in pre_knots]
            self.pre = PiecewiseLinear(pre_knots)
        self.layers = nn.ModuleList([
            SplineCoupling(mask, tuple(circular), hidden, n_blocks, n_bins, cbrt_features)
            for mask in coupling_masks(n_layers, self.n_dim)
        ])
        self.gates = None
        if acceptance is not None:
            from .acceptance import AcceptanceGates
            from .checkpoint import coordinates_from_dict

            try:
                self._gate_coords = coordinates_from_dict(acceptance["coords"])
                gates = AcceptanceGates(acceptance["gates"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"acceptance needs 'coords' (a coordinate map) and 'gates' "
                                 f"(fastsim.acceptance.gate_settings): {exc}") from None
            tree = self._gate_coords.physical == "momenta"
            if self._gate_coords.n_dim != self.n_dim or (not tree and self._gate_coords.parent_mass is None):
                raise ValueError(f"acceptance coordinates must have {self.n_dim} dimensions and the "
                                 f"reaction's masses")
            self.gates = gates
            self.hyperparameters["acceptance"] = {"coords": self._gate_coords.to_dict(),
                                                  "gates": gates.settings()}
            # log Z = log E_q[g], estimated lazily from Z_SAMPLES points of q (seeded)
            self.register_buffer("log_z", torch.tensor(math.nan, dtype=torch.float64), persistent=False)

    # -- bijection -------------------------------------------------------
    def forward_and_log_det(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data on [-1, 1]^d: (y (n, d)) -> (x (n, d), log|det dx/dy| (n,))."""
        log_det = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for layer in self.layers:
            y, ld = layer(y)
            log_det = log_det + ld
        return y, log_det

    def inverse_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base on [-1, 1]^d: (x (n, d)) -> (y (n, d), log|det dy/dx| (n,))."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            log_det = log_det + ld
        return x, log_det

    # -- density and sampling on the unit box ----------------------------
    @torch.no_grad()
    def fit_pre_transform(self, u: torch.Tensor) -> None:
        """Fit the piecewise-linear pre-transform (if any) to a training sample u (n, d)."""
        if self.pre is not None:
            self.pre.fit(u)

    def log_prob_unit(self, u: torch.Tensor) -> torch.Tensor:
        """log density (n,) of unit-box points u (n, d); -inf outside the box.

        With acceptance gates: log q(u) + log g(u) - log Z (module docstring of
        :mod:`fastsim.acceptance`).
        """
        lq = self.log_q_unit(u)
        if self.gates is None:
            return lq
        return lq.to(torch.float64) + self.gates.log_g(self._lab_features(u)) - self._log_z()

    # -- acceptance gates --------------------------------------------------
    def _lab_features(self, u: torch.Tensor) -> torch.Tensor:
        """Per-particle lab variables (n, 6) of unit-box points (no gradient with respect to u)."""
        from .acceptance import lab_features, tree_lab_features

        c = self._gate_coords
        x = c.from_unit(u.detach().to(torch.float64).cpu().numpy())
        if c.physical == "momenta":  # the domain point stands for all its images
            return torch.as_tensor(tree_lab_features(x, self.gates.settings()), device=u.device)
        hv = x
        return torch.as_tensor(lab_features(hv, c.parent_mass, c.m1, c.m2), device=u.device)

    def _gate_values(self, u: torch.Tensor) -> torch.Tensor:
        """g (n,) at unit-box points u (float64)."""
        return self.gates.log_g(self._lab_features(u)).exp()

    def train(self, mode: bool = True) -> "SplineFlow":
        if self.gates is not None:  # the weights are about to change: log Z goes stale
            self.log_z.fill_(math.nan)
        return super().train(mode)

    @torch.no_grad()
    def _log_z(self) -> torch.Tensor:
        if torch.isnan(self.log_z):
            gen = torch.Generator(device=self.log_z.device).manual_seed(Z_SEED)
            self.log_z.fill_(self._log_mean_g(Z_SAMPLES, gen))
        return self.log_z

    @torch.no_grad()
    def _log_mean_g(self, n: int, generator: torch.Generator | None) -> float:
        total = 0.0
        for s in range(0, n, DEFAULT_Z_BLOCK):
            y = self._sample_q(min(DEFAULT_Z_BLOCK, n - s), generator)
            total += float(self._gate_values(y).sum())
        return math.log(total / n)

    def _log_z_surrogate(self, m: int, generator: torch.Generator | None) -> torch.Tensor:
        """log of the mean of g over m fresh points y_j of q, with the gradient of log Z.

        grad log Z = (E_q[grad g] + E_q[g grad log q]) / Z. As E_q[grad log q] = 0,
        the second term is -E_q[(1 - g) grad log q]: only the points of q outside
        the cuts carry it, which removes the large variance of the plain score
        over the points inside (a control variate). Returns
        log mean_j g_j - mean_j (1 - g_j) (log q_j - stop_grad log q_j) / stop_grad mean_j g_j:
        the value is the estimate of log Z, the gradient the estimate above.
        """
        with torch.no_grad():
            y = self._sample_q(m, generator).clone()
        g = self._gate_values(y)
        z = g.mean()
        if not torch.is_grad_enabled():
            return z.log()
        lq = self.log_q_unit(y).to(torch.float64)
        score = ((1.0 - g.detach()) * (lq - lq.detach())).mean() / z.detach()
        return z.log() - score

    def log_q_unit(self, u: torch.Tensor) -> torch.Tensor:
        """log density (n,) of the spline flow alone (no gates); -inf outside the box."""
        inside = ((u >= 0.0) & (u <= 1.0)).all(dim=1)
        v = torch.where(inside[:, None], u, torch.full_like(u, 0.5))
        log_pre = 0.0
        if self.pre is not None:
            v, log_pre = self.pre(v)
        _, log_det = self.inverse_and_log_det(2.0 * v - 1.0)
        # log p_u = log p_base(y) + log|dy/dx| + log|dx/dv| + log|dv/du|
        #         = -5 log 2 + log_det + 5 log 2 + log_pre
        log_det = log_det + log_pre
        return torch.where(inside, log_det, torch.full_like(log_det, -math.inf))

    def sample_unit(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, d) on the unit box; every sample is inside by construction.

        With acceptance gates, points of the spline flow kept with probability g
        (rounds of draws from the same generator until n are kept).
        """
        if self.gates is None:
            return self._sample_q(n, generator)
        kept: list[torch.Tensor] = []
        have, rate = 0, 0.9
        with torch.no_grad():
            while have < n:
                k = int((n - have) / rate * 1.05) + 64
                y = self._sample_q(k, generator)
                g = self._gate_values(y)
                r = torch.rand(k, generator=generator, dtype=g.dtype, device=g.device)
                keep = r < g
                rate = max(float(keep.float().mean()), 0.01)
                kept.append(y[keep])
                have += int(keep.sum())
        return torch.cat(kept)[:n]

    def _sample_q(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, d) of the spline flow alone; every sample is inside by construction.

        The base points are drawn at once (so the numbers do not depend on the
        block size); the flow runs in blocks of ``SAMPLE_BLOCK`` events under
        ``torch.inference_mode`` (no autograd bookkeeping, cache-sized tensors),
        each block as one row per coordinate (:meth:`SplineCoupling.sample_rows`).
        """
        p = next(self.parameters())
        y = 2.0 * torch.rand((n, self.n_dim), generator=generator, dtype=p.dtype, device=p.device) - 1.0
        out = torch.empty_like(y)
        with torch.inference_mode():
            consts = [layer.sampling_tensors() for layer in self.layers]
            for s in range(0, n, SAMPLE_BLOCK):
                rows = list(y[s:s + SAMPLE_BLOCK].t().contiguous())
                for layer, c in zip(self.layers, consts):
                    rows = layer.sample_rows(rows, c)
                v = (0.5 * (torch.stack(rows, dim=1) + 1.0)).clamp(0.0, 1.0)
                if self.pre is not None:
                    v, _ = self.pre.inverse(v)
                out[s:s + SAMPLE_BLOCK] = v
        return out

    def loss(self, u: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood per event on the unit box.

        With ``weights`` (n,), the mean of w_i times event i's negative
        log-likelihood: the weighted NLL when the weights have mean 1 over the
        sample (:func:`fastsim.training.fit` scales them so).

        With acceptance gates, log Z is estimated from points of the flow: in
        training from as many fresh ones as the batch has (torch's global
        generator, seeded per epoch by :func:`fastsim.training.fit`), in
        evaluation from ``Z_EVAL_SAMPLES`` drawn with a fixed seed (the same
        base points every epoch, so that validation losses compare).
        """
        if self.gates is None:
            nll = -self.log_q_unit(u)
            return nll.mean() if weights is None else (weights.to(nll.dtype) * nll).mean()
        data = self.log_q_unit(u).to(torch.float64) + self.gates.log_g(self._lab_features(u))
        if self.training:
            log_z = self._log_z_surrogate(len(u), None)
        else:
            log_z = self._log_z_surrogate(Z_EVAL_SAMPLES, torch.Generator(device=u.device).manual_seed(Z_SEED))
        if weights is None:
            return log_z - data.mean()
        return (weights.to(data.dtype) * (log_z - data)).mean()


def n_parameters(model: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters()))
