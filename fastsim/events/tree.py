"""Kinematics of any decay tree: node masses and helicity angles, and back.

A decay chain (:class:`~fastsim.events.particles.DecayChain`) is a tree of
two-body decays a -> b c. Its natural coordinates are, at every decaying node
a, the invariant mass m_a and the direction (theta, phi) of the FIRST
daughter b in a's helicity frame (:class:`NodeVariables`).

Frames (PHYSICS.md sections 1 and 5b; the convention of the independent
reference, ``reference/README_topologies.md`` section 3):

* the parent's frame is the lab (its rest frame, z = beam);
* the helicity frame of a node d is reached from its parent's helicity frame
  by the rotation R_y(-theta_d) R_z(-phi_d) applied to vectors, (theta_d,
  phi_d) the direction of d in the parent's frame, followed by the boost along
  the new z axis into d's rest frame;
* this holds for EVERY node from its OWN direction: the second daughter c of a
  vertex uses (pi - theta_b, phi_b + pi), not the Jacob-Wick second-particle
  frame (which differs from it by a rotation of pi about z, i.e. a phase
  (-1)^lambda_c that a coupling absorbs).

For ``J/psi -> X gamma; X -> Kp Km`` the variables are those of
:func:`fastsim.events.kinematics.helicity_variables`, whose rotation helpers
this module reuses. Azimuths are in (-pi, pi].

Four-momenta are (E, px, py, pz) in GeV, arrays of shape (n_events, 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .kinematics import (_rotate_from_helicity_axes, _rotate_to_helicity_axes, invariant_mass,
                         two_body_momentum)
from .particles import DecayChain, DecayNode, Reaction


@dataclass(frozen=True)
class NodeVariables:
    """Mass and decay angles of one decaying node.

    Attributes:
        m: (n_events,) invariant mass of the node (GeV).
        cos_theta: (n_events,) cos theta of the node's first daughter in the
            node's helicity frame.
        phi: (n_events,) azimuth of that daughter, in (-pi, pi].
    """

    m: np.ndarray
    cos_theta: np.ndarray
    phi: np.ndarray


@dataclass(frozen=True)
class _Axes:
    """Helicity axes of a node: the rotation R_z(phi) R_y(theta) to its direction.

    Attributes are (n_events,) arrays: cos/sin of the polar angle and of the
    azimuth, and the azimuth itself.
    """

    cos_t: np.ndarray
    sin_t: np.ndarray
    phi: np.ndarray
    cos_p: np.ndarray
    sin_p: np.ndarray

    @classmethod
    def along(cls, vec: np.ndarray) -> "_Axes":
        """Axes along 3-vectors (n, 3), as :func:`helicity_variables` computes them."""
        pabs = np.linalg.norm(vec, axis=1)
        # A node at rest in its parent's frame has no direction: take +z (measure zero).
        moving = pabs > 0.0
        safe = np.where(moving, pabs, 1.0)
        cos_t = np.where(moving, np.clip(vec[:, 2] / safe, -1.0, 1.0), 1.0)
        # sin from (x, y) directly: more precise than sqrt(1 - cos^2) at the poles.
        sin_t = np.hypot(vec[:, 0], vec[:, 1]) / safe
        phi = _wrap(np.arctan2(vec[:, 1], vec[:, 0]))
        return cls(cos_t, sin_t, phi, np.cos(phi), np.sin(phi))

    @classmethod
    def from_angles(cls, cos_theta: np.ndarray, phi: np.ndarray) -> "_Axes":
        cos_t = np.clip(np.asarray(cos_theta, dtype=np.float64), -1.0, 1.0)
        phi = np.asarray(phi, dtype=np.float64)
        sin_t = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
        return cls(cos_t, sin_t, phi, np.cos(phi), np.sin(phi))

    def reversed(self) -> "_Axes":
        """Axes of the opposite direction (pi - theta, phi + pi): the second daughter's."""
        return _Axes(-self.cos_t, self.sin_t, _wrap(self.phi + np.pi), -self.cos_p, -self.sin_p)

    def unit_vector(self) -> np.ndarray:
        """(n, 3) direction (sin t cos p, sin t sin p, cos t)."""
        return np.stack([self.sin_t * self.cos_p, self.sin_t * self.sin_p, self.cos_t], axis=-1)


def _wrap(phi: np.ndarray) -> np.ndarray:
    """Azimuths into (-pi, pi] (arctan2 gives -pi for y = -0.0; x + pi may exceed pi)."""
    phi = np.where(phi > np.pi, phi - 2.0 * np.pi, phi)
    return np.where(phi <= -np.pi, phi + 2.0 * np.pi, phi)


def _into_frame(p: np.ndarray, axes: _Axes, gamma: np.ndarray, beta_gamma: np.ndarray) -> np.ndarray:
    """Four-momenta (n, 4) seen in a node's helicity frame: rotate to its axes, boost along z."""
    v = _rotate_to_helicity_axes(p[:, 1:], axes.cos_t, axes.sin_t, axes.cos_p, axes.sin_p)
    E = gamma * p[:, 0] - beta_gamma * v[:, 2]
    pz = gamma * v[:, 2] - beta_gamma * p[:, 0]
    return np.stack([E, v[:, 0], v[:, 1], pz], axis=-1)


def _out_of_frame(p: np.ndarray, axes: _Axes, gamma: np.ndarray, beta_gamma: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_into_frame`: boost back along z, rotate back to the parent's axes."""
    E = gamma * p[:, 0] + beta_gamma * p[:, 3]
    pz = gamma * p[:, 3] + beta_gamma * p[:, 0]
    v = np.stack([p[:, 1], p[:, 2], pz], axis=-1)
    return np.concatenate([E[:, None], _rotate_from_helicity_axes(v, axes.cos_t, axes.sin_t,
                                                                  axes.cos_p, axes.sin_p)], axis=-1)


def _total(node: DecayNode, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Four-momentum (n, 4) of a node: the sum over its final-state leaves."""
    return sum(p[leaf] for leaf in node.leaves)


def chain_variables(chain: DecayChain, momenta: Mapping[str, np.ndarray]) -> dict[str, NodeVariables]:
    """Masses and helicity angles of every decaying node of a chain.

    Args:
        chain: the decay tree.
        momenta: final-state label -> (n_events, 4) four-momenta in the parent
            rest frame (the lab, z = beam). Extra labels are ignored.

    Returns:
        Decaying-node label (the parent's included) -> :class:`NodeVariables`;
        the parent's ``m`` is the invariant mass of the whole final state.

    Raises:
        ValueError: a final-state label of the chain is missing, or the arrays
            are not (n_events, 4) of one length.
    """
    leaves = chain.root.leaves
    missing = [leaf for leaf in leaves if leaf not in momenta]
    if missing:
        raise ValueError(f"chain {chain}: no four-momenta for {', '.join(missing)}")
    p = {leaf: np.asarray(momenta[leaf], dtype=np.float64) for leaf in leaves}
    shapes = {v.shape for v in p.values()}
    if len(shapes) != 1 or next(iter(shapes))[1:] != (4,) or len(next(iter(shapes))) != 2:
        raise ValueError(f"chain {chain}: expected (n, 4) four-momenta of one length, got "
                         f"{ {k: v.shape for k, v in p.items()} }")
    out: dict[str, NodeVariables] = {}
    _descend(chain.root, p, out)
    return out


def _descend(node: DecayNode, p: dict[str, np.ndarray], out: dict[str, NodeVariables]) -> None:
    """Record the node's variables; recurse with the leaves below each decaying daughter.

    ``p`` holds the node's leaves in the node's own helicity frame.
    """
    b, c = node.daughters
    p_b, p_c = _total(b, p), _total(c, p)
    axes_b = _Axes.along(p_b[:, 1:])
    out[node.label] = NodeVariables(invariant_mass(p_b + p_c), axes_b.cos_t, axes_b.phi)
    for daughter, p_d, axes in ((b, p_b, axes_b), (c, p_c, axes_b.reversed())):
        if daughter.is_final:
            continue
        m_d = invariant_mass(p_d)
        gamma, beta_gamma = p_d[:, 0] / m_d, np.linalg.norm(p_d[:, 1:], axis=1) / m_d
        _descend(daughter, {leaf: _into_frame(p[leaf], axes, gamma, beta_gamma)
                            for leaf in daughter.leaves}, out)


def chain_momenta(chain: DecayChain, variables: Mapping[str, NodeVariables],
                  final_masses: Mapping[str, float], parent_mass: float) -> dict[str, np.ndarray]:
    """Final-state four-momenta from node masses and angles (inverse of :func:`chain_variables`).

    Args:
        chain: the decay tree.
        variables: decaying-node label -> :class:`NodeVariables` of (n_events,)
            arrays; the parent's ``m`` is not read (``parent_mass`` is).
        final_masses: final-state label -> mass (GeV).
        parent_mass: the parent's mass (GeV); the parent is at rest.

    Returns:
        Final-state label -> (n_events, 4) four-momenta in the lab. A node mass
        below the sum of its daughters' masses gives daughters at rest in it
        (the break-up momentum is clipped to zero).

    Raises:
        ValueError: a decaying node or final-state mass is missing.
    """
    missing = [n.label for n in chain.vertices if n.label not in variables]
    missing += [leaf for leaf in chain.root.leaves if leaf not in final_masses]
    if missing:
        raise ValueError(f"chain {chain}: no variables or masses for {', '.join(missing)}")
    n = np.shape(variables[chain.root.label].cos_theta)[0]

    def mass(node: DecayNode) -> np.ndarray:
        if node is chain.root:
            return np.full(n, float(parent_mass))
        if node.is_final:
            return np.full(n, float(final_masses[node.label]))
        return np.asarray(variables[node.label].m, dtype=np.float64)

    def build(node: DecayNode) -> dict[str, np.ndarray]:
        """The node's leaves in its own helicity frame."""
        b, c = node.daughters
        m_b, m_c = mass(b), mass(c)
        q = two_body_momentum(mass(node), m_b, m_c)
        v = variables[node.label]
        axes_b = _Axes.from_angles(v.cos_theta, v.phi)
        leaves: dict[str, np.ndarray] = {}
        for daughter, m_d, axes in ((b, m_b, axes_b), (c, m_c, axes_b.reversed())):
            E_d = np.sqrt(q**2 + m_d**2)
            if daughter.is_final:
                leaves[daughter.label] = np.concatenate([E_d[:, None], q[:, None] * axes.unit_vector()],
                                                        axis=-1)
                continue
            gamma, beta_gamma = E_d / m_d, q / m_d
            for leaf, p in build(daughter).items():
                leaves[leaf] = _out_of_frame(p, axes, gamma, beta_gamma)
        return leaves

    return build(chain.root)


def momenta_by_label(reaction: Reaction, momenta: np.ndarray) -> dict[str, np.ndarray]:
    """{label: (n_events, 4)} from an (n_events, n_final, 4) array in ``reaction.prefixes`` order."""
    momenta = np.asarray(momenta, dtype=np.float64)
    if momenta.ndim != 3 or momenta.shape[1:] != (reaction.n_final, 4):
        raise ValueError(f"expected (n, {reaction.n_final}, 4) four-momenta for {reaction}, got {momenta.shape}")
    return {label: momenta[:, i] for i, label in enumerate(reaction.prefixes)}


def stack_momenta(reaction: Reaction, momenta: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n_events, n_final, 4) array in ``reaction.prefixes`` order from {label: (n_events, 4)}."""
    return np.stack([np.asarray(momenta[label], dtype=np.float64) for label in reaction.prefixes], axis=1)
