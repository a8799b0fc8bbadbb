"""Neural spline flow on the unit box [0, 1]^5 (normflows coupling splines).

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


def coupling_masks(n_layers: int, n_dim: int = N_DIM) -> list[list[int]]:
    """Masks (1 = transformed) for ``n_layers`` couplings: a window of two
    coordinates moving by two each layer, so that every coordinate is
    transformed conditioned on every other one within a few layers."""
    masks = []
    for i in range(n_layers):
        on = {(2 * i) % n_dim, (2 * i + 1) % n_dim}
        masks.append([1 if d in on else 0 for d in range(n_dim)])
    return masks


class SplineCoupling(nn.Module):
    """One coupling layer: the coordinates with ``mask == 1`` go through a
    rational-quadratic spline on [-1, 1] whose bins, heights and knot
    derivatives are predicted from the other coordinates.

    The spline kernel is normflows' ``rational_quadratic_spline`` and the
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
    (data -> base, used by the likelihood) solves the quadratic.
    """

    def __init__(self, mask: list[int], circular: tuple[int, ...], hidden: int, n_blocks: int,
                 n_bins: int) -> None:
        super().__init__()
        from normflows.nets.resnet import ResidualNet
        from normflows.utils.splines import DEFAULT_MIN_DERIVATIVE

        mask_t = torch.tensor(mask, dtype=torch.bool)
        self.register_buffer("transform_features", torch.nonzero(mask_t).flatten())
        self.register_buffer("identity_features", torch.nonzero(~mask_t).flatten())
        circ = set(circular)
        ident = [int(i) for i in self.identity_features]
        trans = [int(i) for i in self.transform_features]
        self.register_buffer("identity_circular", torch.tensor([i in circ for i in ident]))
        self.register_buffer("transform_circular", torch.tensor([i in circ for i in trans]))
        self.n_bins = n_bins
        self.hidden = hidden
        n_in = len(ident) + int(self.identity_circular.sum())
        self.net = ResidualNet(in_features=n_in, out_features=len(trans) * (3 * n_bins + 1),
                               hidden_features=hidden, num_blocks=n_blocks)
        # Identity at initialisation: uniform bins, unit derivatives.
        nn.init.zeros_(self.net.final_layer.weight)
        nn.init.constant_(self.net.final_layer.bias, float(np.log(np.expm1(1.0 - DEFAULT_MIN_DERIVATIVE))))

    def _spline_params(self, cond: torch.Tensor):
        ci = self.identity_circular
        feats = [torch.where(ci, torch.cos(math.pi * cond), cond)]
        if bool(ci.any()):
            feats.append(torch.sin(math.pi * cond[:, ci]))
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

    def _transform(self, z: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from normflows.utils.splines import rational_quadratic_spline

        cond = z[:, self.identity_features]
        w, h, d = self._spline_params(cond)
        out, lad = rational_quadratic_spline(z[:, self.transform_features], w, h, d, inverse=inverse,
                                             left=-1.0, right=1.0, bottom=-1.0, top=1.0)
        result = z.clone()
        result[:, self.transform_features] = out.clamp(-1.0, 1.0)
        return result, lad.sum(dim=1)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data: (outputs (n, 5), log|det d out / d y| (n,))."""
        return self._transform(y, inverse=False)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base: (outputs (n, 5), log|det d out / d x| (n,))."""
        return self._transform(x, inverse=True)


class SplineFlow(nn.Module):
    """Coupling rational-quadratic spline flow on [0, 1]^5.

    Args:
        n_layers: number of coupling layers.
        hidden: hidden units of each conditioner (a normflows ``ResidualNet``).
        n_blocks: residual blocks of each conditioner.
        n_bins: spline bins.
        circular: indices of the periodic coordinates.
    """

    kind = "flow"

    def __init__(self, n_layers: int = 8, hidden: int = 64, n_blocks: int = 1, n_bins: int = 16,
                 circular: tuple[int, ...] = CIRCULAR) -> None:
        super().__init__()
        self.hyperparameters = {"n_layers": int(n_layers), "hidden": int(hidden),
                                "n_blocks": int(n_blocks), "n_bins": int(n_bins),
                                "circular": [int(c) for c in circular]}
        self.layers = nn.ModuleList([
            SplineCoupling(mask, tuple(circular), hidden, n_blocks, n_bins)
            for mask in coupling_masks(n_layers)
        ])

    # -- bijection -------------------------------------------------------
    def forward_and_log_det(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base -> data on [-1, 1]^5: (y (n, 5)) -> (x (n, 5), log|det dx/dy| (n,))."""
        log_det = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for layer in self.layers:
            y, ld = layer(y)
            log_det = log_det + ld
        return y, log_det

    def inverse_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> base on [-1, 1]^5: (x (n, 5)) -> (y (n, 5), log|det dy/dx| (n,))."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            log_det = log_det + ld
        return x, log_det

    # -- density and sampling on the unit box ----------------------------
    def log_prob_unit(self, u: torch.Tensor) -> torch.Tensor:
        """log density (n,) of unit-box points u (n, 5); -inf outside the box."""
        inside = ((u >= 0.0) & (u <= 1.0)).all(dim=1)
        x = torch.where(inside[:, None], 2.0 * u - 1.0, torch.zeros_like(u))
        _, log_det = self.inverse_and_log_det(x)
        # log p_u = log p_base(y) + log|dy/dx| + log|dx/du| = -5 log 2 + log_det + 5 log 2
        return torch.where(inside, log_det, torch.full_like(log_det, -math.inf))

    def sample_unit(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, 5) on the unit box; every sample is inside by construction."""
        p = next(self.parameters())
        y = 2.0 * torch.rand((n, N_DIM), generator=generator, dtype=p.dtype, device=p.device) - 1.0
        x, _ = self.forward_and_log_det(y)
        return (0.5 * (x + 1.0)).clamp(0.0, 1.0)

    def loss(self, u: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per event on the unit box."""
        return -self.log_prob_unit(u).mean()


def n_parameters(model: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters()))
