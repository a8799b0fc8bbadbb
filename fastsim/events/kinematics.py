"""Helicity variables of J/psi -> gamma X, X -> P1 P2, and their inverse.

Plain numpy (float64), shared by ``fastsim`` (torch side) and ``pwa`` (JAX
side): both convert their events to these five variables once.

Conventions (../shared/PHYSICS.md section 1):

* lab = J/psi rest frame, z = e+ beam;
* ``theta_X, phi_X``: direction of X = P1 + P2 in the lab;
* ``theta_1, phi_1``: direction of P1 in the X helicity frame, reached from
  the lab by the rotation R(phi_X, theta_X, 0) = R_z(phi_X) R_y(theta_X)
  followed by a boost along the new z axis, so z' = X direction,
  y' along z x z', x' = y' x z';
* azimuths in (-pi, pi].

Four-momenta are arrays of shape (n_events, 4) ordered (E, px, py, pz).
"""

from __future__ import annotations

import numpy as np

#: Names of the five helicity variables, in column order.
HELICITY_VARIABLES: tuple[str, ...] = ("m", "cos_theta_X", "phi_X", "cos_theta_1", "phi_1")


def two_body_momentum(M: np.ndarray | float, m1: float, m2: float) -> np.ndarray:
    """Momentum of either daughter in the rest frame of a parent of mass M.

    Returns ``sqrt(lambda(M^2, m1^2, m2^2)) / (2 M)``; zero below threshold
    (clipped), so use the lineshape code for analytic continuation.
    """
    M = np.asarray(M, dtype=np.float64)
    lam = (M**2 - (m1 + m2) ** 2) * (M**2 - (m1 - m2) ** 2)
    return np.sqrt(np.clip(lam, 0.0, None)) / (2.0 * M)


def invariant_mass(p: np.ndarray) -> np.ndarray:
    """Invariant mass of four-momenta (n, 4); negative m^2 gives -sqrt(|m^2|)."""
    m2 = p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)
    return np.sign(m2) * np.sqrt(np.abs(m2))


def _rotate_to_helicity_axes(v: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray,
                             cos_p: np.ndarray, sin_p: np.ndarray) -> np.ndarray:
    """Components of 3-vectors v (n, 3) in the frame R_z(phi) R_y(theta): R^T v."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    # R_z(-phi)
    x1 = cos_p * x + sin_p * y
    y1 = -sin_p * x + cos_p * y
    # R_y(-theta)
    x2 = cos_t * x1 - sin_t * z
    z2 = sin_t * x1 + cos_t * z
    return np.stack([x2, y1, z2], axis=-1)


def _rotate_from_helicity_axes(v: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray,
                               cos_p: np.ndarray, sin_p: np.ndarray) -> np.ndarray:
    """R_z(phi) R_y(theta) v for 3-vectors v (n, 3)."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    x1 = cos_t * x + sin_t * z
    z1 = -sin_t * x + cos_t * z
    x2 = cos_p * x1 - sin_p * y
    y2 = sin_p * x1 + cos_p * y
    return np.stack([x2, y2, z1], axis=-1)


def helicity_variables(p_gamma: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Five helicity variables from lab four-momenta.

    Args:
        p_gamma: photon four-momenta (n, 4). Unused except for shape checks:
            the event is fixed by P1 and P2 in the J/psi rest frame.
        p1, p2: four-momenta of P1 and P2 (n, 4).

    Returns:
        (n, 5) array of ``HELICITY_VARIABLES``: m, cos theta_X, phi_X,
        cos theta_1, phi_1.
    """
    p1 = np.asarray(p1, dtype=np.float64)
    p2 = np.asarray(p2, dtype=np.float64)
    if p1.shape != p2.shape or p1.ndim != 2 or p1.shape[1] != 4:
        raise ValueError(f"expected (n, 4) four-momenta, got {p1.shape} and {p2.shape}")
    if p_gamma is not None and np.shape(p_gamma) != p1.shape:
        raise ValueError(f"photon four-momenta have shape {np.shape(p_gamma)}, expected {p1.shape}")
    pX = p1 + p2
    m = invariant_mass(pX)
    vec = pX[:, 1:]
    pabs = np.linalg.norm(vec, axis=1)
    cos_t = np.clip(vec[:, 2] / pabs, -1.0, 1.0)
    phi = np.arctan2(vec[:, 1], vec[:, 0])
    # X direction from (x, y) directly: more precise than sqrt(1 - cos^2) at the poles.
    rho = np.hypot(vec[:, 0], vec[:, 1])
    sin_t = rho / pabs
    cos_p, sin_p = np.cos(phi), np.sin(phi)
    v = _rotate_to_helicity_axes(p1[:, 1:], cos_t, sin_t, cos_p, sin_p)
    # Boost along z' into the X rest frame.
    gamma = pX[:, 0] / m
    beta_gamma = pabs / m
    pz = gamma * v[:, 2] - beta_gamma * p1[:, 0]
    px, py = v[:, 0], v[:, 1]
    q = np.sqrt(px**2 + py**2 + pz**2)
    cos_1 = np.clip(pz / q, -1.0, 1.0)
    phi_1 = np.arctan2(py, px)
    return np.stack([m, cos_t, phi, cos_1, phi_1], axis=-1)


def polar_cos_and_pt(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos theta (to the beam, z) and transverse momentum of (n, 4) four-momenta."""
    pt = np.hypot(p[:, 1], p[:, 2])
    mag = np.sqrt(pt * pt + p[:, 3] ** 2)
    return p[:, 3] / np.where(mag > 0.0, mag, 1.0), pt


def four_momenta(hv: np.ndarray, parent_mass: float, m1: float, m2: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab four-momenta (photon, P1, P2) from helicity variables (inverse map).

    Args:
        hv: (n, 5) array of ``HELICITY_VARIABLES``.
        parent_mass: J/psi mass; the photon is massless.
        m1, m2: masses of P1 and P2.

    Returns:
        Three (n, 4) arrays.
    """
    hv = np.asarray(hv, dtype=np.float64)
    if hv.ndim != 2 or hv.shape[1] != 5:
        raise ValueError(f"expected (n, 5) helicity variables, got {hv.shape}")
    m, cos_t, phi, cos_1, phi_1 = hv.T
    sin_t = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
    sin_1 = np.sqrt(np.clip(1.0 - cos_1**2, 0.0, None))
    cos_p, sin_p = np.cos(phi), np.sin(phi)
    # X and photon back to back in the lab, photon massless.
    k = (parent_mass**2 - m**2) / (2.0 * parent_mass)
    E_X = np.sqrt(k**2 + m**2)
    # P1 in the X rest frame.
    q = two_body_momentum(m, m1, m2)
    E1 = np.sqrt(q**2 + m1**2)
    E2 = np.sqrt(q**2 + m2**2)
    dirn = np.stack([sin_1 * np.cos(phi_1), sin_1 * np.sin(phi_1), cos_1], axis=-1)
    v1 = q[:, None] * dirn
    # Boost along z' with the X velocity.
    g, bg = E_X / m, k / m
    pz1 = g * v1[:, 2] + bg * E1
    pz2 = -g * v1[:, 2] + bg * E2
    E1_lab = g * E1 + bg * v1[:, 2]
    E2_lab = g * E2 - bg * v1[:, 2]
    p1_vec = np.stack([v1[:, 0], v1[:, 1], pz1], axis=-1)
    p2_vec = np.stack([-v1[:, 0], -v1[:, 1], pz2], axis=-1)
    p1_lab = _rotate_from_helicity_axes(p1_vec, cos_t, sin_t, cos_p, sin_p)
    p2_lab = _rotate_from_helicity_axes(p2_vec, cos_t, sin_t, cos_p, sin_p)
    n_X = np.stack([sin_t * cos_p, sin_t * sin_p, cos_t], axis=-1)
    p_gamma = np.concatenate([k[:, None], -k[:, None] * n_X], axis=-1)
    return (
        p_gamma,
        np.concatenate([E1_lab[:, None], p1_lab], axis=-1),
        np.concatenate([E2_lab[:, None], p2_lab], axis=-1),
    )
