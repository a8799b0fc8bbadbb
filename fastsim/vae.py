"""Variational autoencoder baseline on the unit box [0, 1]^5.

Same interface as :class:`fastsim.flow.SplineFlow` (``log_prob_unit``,
``sample_unit``, ``loss``), so every comparison has a second generator.

Decoder likelihood p(u | z), chosen so that no mass falls outside the box:

* m and the two cosines: logit-normal on (0, 1) (a Gaussian in logit u);
* the two azimuths: wrapped normal on the circle of circumference 1
  (density summed over windings k = -3..3, exact for the decoder widths
  that are allowed, sigma <= 0.5).

The density of a VAE is an intractable integral over the latent space;
``log_prob_unit`` returns the importance-weighted estimate
log (1/K sum_k p(u|z_k) p(z_k) / q(z_k|u)), z_k ~ q(z|u), a consistent
estimate (exact as K -> infinity, biased low by O(1/K) in the log).
It is seeded (``generator``) so that the same call gives the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .coords import CIRCULAR

N_DIM = 5
#: Inputs to the logit are kept this far from 0 and 1 (cos theta = +-1 exactly, m = m_min).
EDGE = 1e-6
_WINDINGS = torch.arange(-3, 4, dtype=torch.float64)
_LOG_2PI = math.log(2.0 * math.pi)


def _mlp(n_in: int, n_out: int, hidden: int, n_hidden: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian-latent VAE with a logit-normal / wrapped-normal decoder.

    Args:
        latent: latent dimension.
        hidden: hidden units of encoder and decoder.
        n_hidden: hidden layers of each.
        n_importance: importance samples K of the density estimate.
        circular: indices of the periodic coordinates.
        n_dim: number of coordinates (``CoordinateMap.n_dim``: 5, or 4 folded).
    """

    kind = "vae"

    def __init__(self, latent: int = 4, hidden: int = 128, n_hidden: int = 3, n_importance: int = 64,
                 circular: tuple[int, ...] = CIRCULAR, n_dim: int = N_DIM) -> None:
        super().__init__()
        self.n_dim = int(n_dim)
        self.hyperparameters = {"latent": int(latent), "hidden": int(hidden), "n_hidden": int(n_hidden),
                                "n_importance": int(n_importance), "circular": [int(c) for c in circular]}
        if self.n_dim != N_DIM:
            self.hyperparameters["n_dim"] = self.n_dim
        circ = torch.tensor([i in circular for i in range(self.n_dim)], dtype=torch.bool)
        self.register_buffer("is_circ", circ)
        self.latent = latent
        self.n_importance = n_importance
        self.encoder = _mlp(self.n_dim + int(circ.sum()), 2 * latent, hidden, n_hidden)
        self.decoder = _mlp(latent, 2 * self.n_dim, hidden, n_hidden)

    # -- pieces ----------------------------------------------------------
    def _features(self, u: torch.Tensor) -> torch.Tensor:
        """Encoder input: logit of bounded coordinates, (cos, sin) of the azimuths."""
        c = self.is_circ
        uc = u.clamp(EDGE, 1.0 - EDGE)
        lin = torch.where(c, torch.cos(2 * math.pi * u), torch.logit(uc) / 4.0)
        return torch.cat([lin, torch.sin(2 * math.pi * u[:, c])], dim=1)

    def _encode(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self._features(u))
        mu, log_sig = h[:, :self.latent], h[:, self.latent:].clamp(-8.0, 4.0)
        return mu, log_sig

    def _decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.decoder(z)
        d = self.n_dim
        mu = h[..., :d]
        # Bounded widths: wrapped normal needs sigma <= 0.5 for the truncated winding sum.
        sig = torch.where(self.is_circ, 0.5 * torch.sigmoid(h[..., d:]), torch.exp(h[..., d:].clamp(-9.0, 3.0)))
        sig = sig.clamp_min(1e-4)
        return mu, sig

    def _log_lik(self, u: torch.Tensor, mu: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        """log p(u | z) summed over coordinates; u (..., d) broadcast against mu, sig."""
        uc = u.clamp(EDGE, 1.0 - EDGE)
        y = torch.logit(uc)
        lin = (-0.5 * ((y - mu) / sig) ** 2 - torch.log(sig) - 0.5 * _LOG_2PI
               - torch.log(uc) - torch.log1p(-uc))
        k = _WINDINGS.to(dtype=u.dtype, device=u.device)
        d = (u - torch.remainder(mu, 1.0))[..., None] + k
        wrapped = torch.logsumexp(-0.5 * (d / sig[..., None]) ** 2, dim=-1) - torch.log(sig) - 0.5 * _LOG_2PI
        return torch.where(self.is_circ, wrapped, lin).sum(dim=-1)

    # -- interface -------------------------------------------------------
    def loss(self, u: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO per event (one reparameterised latent sample).

        With ``weights`` (n,), the mean of w_i times event i's negative ELBO
        (weights of mean 1 over the sample, as in :meth:`fastsim.flow.SplineFlow.loss`).
        """
        mu, log_sig = self._encode(u)
        z = mu + torch.exp(log_sig) * torch.randn_like(mu)
        dmu, dsig = self._decode(z)
        kl = 0.5 * (mu**2 + torch.exp(2 * log_sig) - 1.0 - 2 * log_sig).sum(dim=1)
        neg_elbo = kl - self._log_lik(u, dmu, dsig)
        return neg_elbo.mean() if weights is None else (weights.to(neg_elbo.dtype) * neg_elbo).mean()

    def log_prob_unit(self, u: torch.Tensor, generator: torch.Generator | None = None,
                      n_importance: int | None = None) -> torch.Tensor:
        """Importance-weighted estimate of log p(u) (n,); -inf outside the box."""
        k = n_importance or self.n_importance
        inside = ((u >= 0.0) & (u <= 1.0)).all(dim=1)
        mu, log_sig = self._encode(u)
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(log_sig) * eps
        log_q = (-0.5 * eps**2 - log_sig - 0.5 * _LOG_2PI).sum(dim=-1)
        log_pz = (-0.5 * z**2 - 0.5 * _LOG_2PI).sum(dim=-1)
        dmu, dsig = self._decode(z)
        log_w = self._log_lik(u[None], dmu, dsig) + log_pz - log_q
        lp = torch.logsumexp(log_w, dim=0) - math.log(k)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def sample_unit(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, d) on the unit box (inside by construction)."""
        p = next(self.parameters())
        z = torch.randn((n, self.latent), generator=generator, dtype=p.dtype, device=p.device)
        mu, sig = self._decode(z)
        e = torch.randn((n, self.n_dim), generator=generator, dtype=p.dtype, device=p.device)
        x = mu + sig * e
        u = torch.where(self.is_circ, torch.remainder(x, 1.0), torch.sigmoid(x))
        return u.clamp(0.0, 1.0)
