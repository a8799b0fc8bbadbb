"""Acceptance gates: the detector's geometric cuts as a learned factor of the flow density.

A detector accepts an event when each particle passes cuts on its own lab
variables: |cos theta| < c_max and pT > pT_min for a charged track; for the
photon |cos theta| < barrel max (barrel) or endcap min < |cos theta| < endcap
max (end cap), each with an energy threshold. In the helicity variables of
the event these are curved surfaces (a kaon's lab polar angle depends on m,
theta_X, theta_1 and phi_1), across which the detector-level density drops to
zero. A smooth spline flow trained on the accepted events blurs such an edge:
it spreads probability over the edge (4 % of the samples of a flow trained on
50,000 BESIII-like events lie outside the cuts, against 0.5 % of the MC,
whose edges are blurred only by the resolution) and takes it from just inside,
where an S wave at the K+K- threshold sits.

A gated flow writes the density as

    p(x) = q(x) g(x) / Z,    Z = integral q g = E_q[g],

q a spline flow, g = prod over the cuts of soft steps Phi((t - v(x)) / w) in
the per-particle lab variable v (Phi the normal CDF: a hard cut seen through a
Gaussian resolution of width w), the photon's barrel and end cap combined as
g_barrel + g_endcap - g_barrel g_endcap. Above its pT threshold each track
also gets the card's tracking-efficiency turn-on 1 - exp(-(pT - t) / tau), tau
fitted (without it the flow has to draw the ramp from zero itself, and the
bias maps put the largest remaining shifts of the fit fractions at kaon
pT < 0.15 GeV). The positions t start at the detector
card's cut values and the widths w at the card's resolution; both are fitted
with the flow. Outside the cuts q is free, so it can continue smoothly across
an edge instead of bending down to it; the edge itself is carried by g.

Training maximises sum_i log p(x_i): the gradient of log Z is
(E_q[grad g] - E_q[(1 - g) grad log q]) / E_q[g], estimated on each step from
a batch of the flow's own samples (``SplineFlow.loss`` in :mod:`fastsim.flow`;
the form with 1 - g is a control variate: only points of q outside the cuts
carry the score term). Sampling draws from q and keeps each point with
probability g (exact: the accepted points follow q g / Z). log Z is estimated
once per trained model from 2^20 samples of q (standard error about 5e-4 when
a quarter of q lies outside the cuts; a constant that cancels in any
normalised use of the samples).

A neutral hadron of the final state gets the gate of the detector's rule for
its species (:mod:`fastsim.events.detector`). One reconstructed from two
photons (pi0, eta: ``geometry: photon``) shares the photon's barrel and end
cap positions in its own |cos theta|, and its energy threshold is the card's
exact fraction of isotropic two-photon decays with both photons above the
region's threshold t, clip((E - 2 t) / |p|, 0, 1), smoothed by a Gaussian of
width 2 w (w the threshold's width; the threshold positions are shared with
the photon's):

    R = [G(E - 2t) - G(E - 2t - |p|)] / |p|,   G(y) = y Phi(y / s) + s phi(y / s),  s = 2 w,

the clip convolved with the Gaussian (G is the integral of Phi), so
g = g_barrel R_barrel + (1 - g_barrel) g_endcap R_endcap with the region steps
in |cos theta| alone. One reconstructed from two tracks (K_S0, ``geometry:
charged``) gets the tracks' |cos theta| gate (its rule uses the ``pi+``
track acceptance). The region efficiencies are constants per region, left to
the flow, as for the photon.

The lab variables come straight from the helicity variables
(:func:`lab_features`); for folded coordinates the point of the fundamental
domain stands for all its images, which have the same lab polar angles and
transverse momenta up to the exchange of P1 and P2 (the gates are the same
for both) and the reflection z -> -z (the cuts are on |cos theta|).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: Columns of :func:`lab_features`.
FEATURES = ("cos_1", "pt_1", "cos_2", "pt_2", "cos_gamma", "e_gamma")


def lab_features(hv: np.ndarray, parent_mass: float, m1: float, m2: float) -> np.ndarray:
    """Per-particle lab variables (n, 6) of events given by helicity variables hv (n, 5).

    Columns (:data:`FEATURES`): cos theta and pT (GeV) of P1 and of P2,
    cos theta and energy (GeV) of the photon, in the parent's rest frame with
    z along the beam (the four-momenta of :func:`fastsim.events.kinematics.four_momenta`).
    """
    from fastsim.events.kinematics import four_momenta, polar_cos_and_pt

    p_gamma, p1, p2 = four_momenta(hv, parent_mass, m1, m2)
    cos_1, pt_1 = polar_cos_and_pt(p1)
    cos_2, pt_2 = polar_cos_and_pt(p2)
    return np.stack([cos_1, pt_1, cos_2, pt_2, polar_cos_and_pt(p_gamma)[0], p_gamma[:, 0]], axis=1)


def gate_settings(card) -> dict:
    """Initial gate positions and widths from a detector card (a JSON-able dict).

    Widths: the card's angular resolution times sin theta at each polar-angle
    edge (at least 1e-3), 5 MeV for the momentum and energy thresholds.
    """
    res = card.resolution
    sigma = res.sigma_angle if res.enabled else 0.0

    def w_cos(c: float) -> float:
        return max(sigma * math.sqrt(max(1.0 - c * c, 0.0)), 1e-3)

    ch, b, e = card.charged, card.photon.barrel, card.photon.endcap
    return {
        "charged_cos_max": [ch.cos_theta_max, w_cos(ch.cos_theta_max)],
        "charged_pt_min": [ch.pt_min, 0.005],
        "barrel_cos_max": [b.cos_theta_max, w_cos(b.cos_theta_max)],
        "barrel_e_min": [b.e_min, 0.005],
        "endcap_cos_min": [e.cos_theta_min, w_cos(e.cos_theta_min)],
        "endcap_cos_max": [e.cos_theta_max, w_cos(e.cos_theta_max)],
        "endcap_e_min": [e.e_min, 0.005],
        "charged_pt_turn_on": [ch.turn_on],
    }


def tree_gate_settings(card, reaction) -> dict:
    """:func:`gate_settings` for any reaction (tree coordinates): the tracks and the photon of
    its final state, in ``reaction.prefixes`` order (``charged``, ``photon``: their indices).

    Raises:
        ValueError: the card has different rules for two charged species of the
            final state (one gate per cut is shared by every track), or the final
            state has more than one photon.
    """
    from fastsim.events.detector import Detector, species_kind

    kinds = [species_kind(p) for p in reaction.particles]
    charged = [i for i, k in enumerate(kinds) if k == "charged"]
    photons = [i for i, k in enumerate(kinds) if k == "photon"]
    neutral = [i for i, k in enumerate(kinds) if k == "neutral"]
    if len(photons) > 1:
        raise ValueError(f"acceptance gates: {reaction} has {len(photons)} photons; the gates model one")
    rules = {card.charged.rules_for(reaction.particles[i]).model_dump_json() for i in charged}
    if len(rules) > 1:
        raise ValueError(f"acceptance gates: the detector card has different rules for the charged species of "
                         f"{reaction}; train with --no-gates")
    out = gate_settings(card)
    geometries = []
    for i in neutral:
        name = reaction.particles[i]
        rule = Detector(card).rules_for(name)
        if rule.e_min > 0.0 or rule.pt_min > 0.0:
            raise ValueError(f"acceptance gates: the detector card's neutral.species.{name} has its own e_min or "
                             "pt_min cut, which the gates do not model; train with --no-gates")
        if rule.geometry == "charged":  # two pion tracks: the pi+ track's polar-angle cut
            pion_cos = card.charged.rules_for("pi+").cos_theta_max
            if charged and card.charged.rules_for(reaction.particles[charged[0]]).cos_theta_max != pion_cos:
                raise ValueError(f"acceptance gates: {name} is reconstructed in the pi+ track acceptance, "
                                 f"|cos theta| < {pion_cos}, which differs from the tracks' of {reaction}; "
                                 "train with --no-gates")
            out["charged_cos_max"] = [pion_cos, out["charged_cos_max"][1]]
        geometries.append(rule.geometry)
    out["charged"] = charged
    out["photon"] = photons
    if neutral:
        out["neutral"] = neutral
        out["neutral_geometry"] = geometries
    return out


def tree_lab_features(momenta: np.ndarray, settings: dict) -> np.ndarray:
    """Lab variables (n, 2 n_charged + 2 n_photon + 3 n_neutral) of four-momenta (n, n_final, 4):
    cos theta and pT of each track of ``settings['charged']``, cos theta and energy of the photon,
    then cos theta, energy and |p| of each neutral hadron of ``settings['neutral']``."""
    from fastsim.events.kinematics import polar_cos_and_pt

    cols = []
    for i in settings["charged"]:
        cols += list(polar_cos_and_pt(momenta[:, i]))
    for i in settings["photon"]:
        cols += [polar_cos_and_pt(momenta[:, i])[0], momenta[:, i, 0]]
    for i in settings.get("neutral", ()):
        cols += [polar_cos_and_pt(momenta[:, i])[0], momenta[:, i, 0], np.linalg.norm(momenta[:, i, 1:], axis=1)]
    return np.stack(cols, axis=1)


class AcceptanceGates(nn.Module):
    """log g(x) from :func:`lab_features`, with learnable positions, log-widths and turn-on.

    Args:
        settings: {cut name: [position, width]} and optionally
            ``charged_pt_turn_on: [tau]`` (:func:`gate_settings`).
    """

    NAMES = ("charged_cos_max", "charged_pt_min", "barrel_cos_max", "barrel_e_min",
             "endcap_cos_min", "endcap_cos_max", "endcap_e_min")

    def __init__(self, settings: dict) -> None:
        super().__init__()
        missing = [k for k in self.NAMES if k not in settings]
        if missing:
            raise ValueError(f"acceptance gates need settings for {', '.join(missing)}")
        pos = [float(settings[k][0]) for k in self.NAMES]
        width = [float(settings[k][1]) for k in self.NAMES]
        if any(not w > 0.0 for w in width):
            raise ValueError(f"gate widths must be positive, got {dict(zip(self.NAMES, width))}")
        self._init_width = width
        # layout of the features: tracks first, then the photon (J/psi -> gamma P1 P2: 2 and 1)
        self.charged = [int(i) for i in settings.get("charged", (1, 2))]
        self.photon = [int(i) for i in settings.get("photon", (0,))]
        self.neutral = [int(i) for i in settings.get("neutral", ())]
        self.neutral_geometry = [str(g) for g in settings.get("neutral_geometry", ())]
        if len(self.neutral_geometry) != len(self.neutral) or not set(self.neutral_geometry) <= {"photon", "charged"}:
            raise ValueError(f"acceptance gates: neutral_geometry must name photon or charged for each neutral "
                             f"hadron {self.neutral}, got {self.neutral_geometry}")
        self._layout_stored = "charged" in settings
        self._init_turn_on = float(settings["charged_pt_turn_on"][0]) if settings.get("charged_pt_turn_on") else None
        self.register_buffer("start", torch.tensor(pos, dtype=torch.float64))
        # position = start + POSITION_SCALE * shift: an optimiser step of the
        # learning rate's size moves a cut by 1e-5, not by 1e-3 (of a cosine)
        self.shift = nn.Parameter(torch.zeros(len(pos), dtype=torch.float64))
        self.log_width = nn.Parameter(torch.tensor(width, dtype=torch.float64).log())
        # tracking-efficiency turn-on above the pT threshold (None: a plain step)
        turn_on = settings.get("charged_pt_turn_on")
        self.log_turn_on = None
        if turn_on is not None:
            if not float(turn_on[0]) > 0.0:
                raise ValueError(f"charged_pt_turn_on must be positive, got {turn_on[0]}")
            self.log_turn_on = nn.Parameter(torch.tensor(float(turn_on[0]), dtype=torch.float64).log())

    POSITION_SCALE = 0.01

    @property
    def position(self) -> torch.Tensor:
        return self.start + self.POSITION_SCALE * self.shift

    def _step(self, v: torch.Tensor, k: int, upper: bool) -> torch.Tensor:
        """log Phi of the signed distance inside cut k (upper: v < t; else v > t)."""
        t, w = self.position[k], self.log_width[k].exp()
        z = (t - v) / w if upper else (v - t) / w
        return torch.special.log_ndtr(z)

    def _turn_on(self, pt: torch.Tensor) -> torch.Tensor:
        """log(1 - exp(-r / tau)), r = w softplus((pT - t) / w) the smoothed distance above threshold."""
        t, w = self.position[1], self.log_width[1].exp()
        r = w * torch.nn.functional.softplus((pt - t) / w)
        return torch.log(-torch.expm1(-r / self.log_turn_on.exp()))

    def settings(self) -> dict:
        """The constructor's settings (initial values) as stored in hyperparameters."""
        out = {k: [float(p), float(w)] for k, p, w in zip(self.NAMES, self.start.cpu(), self._init_width)}
        if self.log_turn_on is not None:
            out["charged_pt_turn_on"] = [self._init_turn_on]
        if self._layout_stored:
            out.update(charged=list(self.charged), photon=list(self.photon))
        if self.neutral:
            out.update(neutral=list(self.neutral), neutral_geometry=list(self.neutral_geometry))
        return out

    def _log_two_photon_threshold(self, e: torch.Tensor, pabs: torch.Tensor, k: int) -> torch.Tensor:
        """log R: the share of isotropic two-photon decays of a hadron (energy e, momentum pabs)
        with both photons above threshold k, clip((e - 2t) / |p|, 0, 1) convolved with a Gaussian
        of width 2 w (module docstring)."""
        t, s = self.position[k], 2.0 * self.log_width[k].exp()
        normal = torch.distributions.Normal(torch.zeros((), dtype=e.dtype), torch.ones((), dtype=e.dtype))

        def G(y):  # integral of Phi(y / s) dy
            z = y / s
            return y * torch.special.ndtr(z) + s * normal.log_prob(z).exp()

        p = pabs.clamp(min=1e-9)
        x = e - 2.0 * t
        return torch.log(((G(x) - G(x - p)) / p).clamp(min=1e-300))

    def log_g(self, feats: torch.Tensor) -> torch.Tensor:
        """log g (n,) for lab features (n, 2 n_charged + 2 n_photon + 3 n_neutral) (float64):
        (cos, pT) of each track, (cos, E) of the photon (6 columns for J/psi -> gamma P1 P2),
        then (cos, E, |p|) of each neutral hadron."""
        f = feats.to(self.position.dtype)
        lg = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
        for k in range(0, 2 * len(self.charged), 2):  # charged tracks
            lg = lg + self._step(f[:, k].abs(), 0, True) + self._step(f[:, k + 1], 1, False)
            if self.log_turn_on is not None:
                lg = lg + self._turn_on(f[:, k + 1])
        k = 2 * len(self.charged)
        if self.photon:
            c, e = f[:, k].abs(), f[:, k + 1]
            lb = self._step(c, 2, True) + self._step(e, 3, False)
            le = self._step(c, 4, False) + self._step(c, 5, True) + self._step(e, 6, False)
            lg = lg + _log_union(lb, le)
            k += 2
        for geometry in self.neutral_geometry:
            c = f[:, k].abs()
            if geometry == "charged":  # K_S0 -> pi+ pi-: inside the tracks' polar-angle cut
                lg = lg + self._step(c, 0, True)
            else:  # two photons: the calorimeter region of the hadron's direction, both above threshold
                e, pabs = f[:, k + 1], f[:, k + 2]
                lb = self._step(c, 2, True)
                le = self._step(c, 4, False) + self._step(c, 5, True)
                lg = lg + torch.logaddexp(lb + self._log_two_photon_threshold(e, pabs, 3),
                                          _log1m_exp(lb) + le + self._log_two_photon_threshold(e, pabs, 6))
            k += 3
        return lg

    def summary(self) -> dict:
        """{cut: (position, width)} as floats."""
        out = {k: (float(p), float(w)) for k, p, w in
               zip(self.NAMES, self.position.detach().cpu(), self.log_width.detach().exp().cpu())}
        if self.log_turn_on is not None:
            out["charged_pt_turn_on"] = (float(self.log_turn_on.detach().exp()),)
        return out


def _log1m_exp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0."""
    return torch.log1p(-a.exp().clamp(max=1.0 - 1e-15))


def _log_union(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """log(g_a + g_b - g_a g_b) = log(g_a + g_b (1 - g_a)) from log g_a and log g_b."""
    return torch.logaddexp(la, lb + _log1m_exp(la))
