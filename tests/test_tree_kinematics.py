"""Decay-tree kinematics: node masses and helicity angles of any chain, and back.

The events come from a generator written here (sequential two-body decays
with lab-parallel axes and general Lorentz boosts), not from the module under
test; the frame convention is checked against an explicit 4x4-matrix
construction of README_topologies.md section 3 and, where the reference files
are present, against ampform's psi(2S) -> K+ K- K+ K- intensities.
"""

from math import factorial
from pathlib import Path

import numpy as np
import pytest

from fastsim.events import JPSI_GAMMA_KK, PhaseSpace, Reaction, four_momenta, helicity_variables
from fastsim.events.tree import (NodeVariables, chain_momenta, chain_variables, momenta_by_label,
                                 stack_momenta)

PSI = Reaction.from_final_state({"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"}, "psi(2S)",
                                chains=["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2",
                                        "psi(2S) -> f phi; f -> Kp2 Km2; phi -> Kp1 Km1",
                                        "psi(2S) -> Y Km2; Y -> Kp2 Z; Z -> Kp1 Km1"])
D0 = Reaction.from_final_state({"Km": "K-", "pip": "pi+", "pi0": "pi0"}, "D0",
                               chains=["D0 -> Kst pip; Kst -> Km pi0", "D0 -> rho Km; rho -> pip pi0"])
JPSI_PHOTON_INSIDE = Reaction.from_final_state({"gamma": "gamma", "Kp": "K+", "Km": "K-"}, "J/psi",
                                               chains=["J/psi -> Km Y; Y -> gamma Kp"])

#: (reaction, chain index) of every topology tested.
TOPOLOGIES = [(JPSI_GAMMA_KK, 0), (JPSI_PHOTON_INSIDE, 0), (D0, 0), (D0, 1), (PSI, 0), (PSI, 1), (PSI, 2)]
IDS = ["jpsi", "jpsi-photon-inside", "d0-kst", "d0-rho", "psi-phi-f", "psi-f-phi", "psi-sequential"]


def _final_masses(reaction):
    return dict(zip(reaction.prefixes, reaction.masses))


def _boost(p, beta):
    """General Lorentz boost of (n, 4) four-momenta by velocities beta (n, 3)."""
    b2 = np.sum(beta**2, axis=1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p[:, 1:], axis=1)
    k = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    vec = p[:, 1:] + (k * bp + gamma * p[:, 0])[:, None] * beta
    return np.concatenate([(gamma * (p[:, 0] + bp))[:, None], vec], axis=1)


def _generate(reaction, chain, n, rng):
    """Lab four-momenta of sequential two-body decays: masses anywhere allowed, isotropic directions."""
    masses = _final_masses(reaction)

    def threshold(node):
        return sum(masses[leaf] for leaf in node.leaves)

    def decay(node, m):
        b, c = node.daughters
        mb = np.full(n, masses[b.label]) if b.is_final else \
            threshold(b) + rng.random(n) * (m - threshold(b) - threshold(c))
        mc = np.full(n, masses[c.label]) if c.is_final else threshold(c) + rng.random(n) * (m - mb - threshold(c))
        q = np.sqrt((m**2 - (mb + mc) ** 2) * (m**2 - (mb - mc) ** 2)) / (2 * m)
        u = rng.normal(size=(n, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        out = {}
        for d, md, sign in ((b, mb, 1.0), (c, mc, -1.0)):
            pd = np.concatenate([np.sqrt(q**2 + md**2)[:, None], sign * q[:, None] * u], axis=1)
            if d.is_final:
                out[d.label] = pd
            else:
                beta = pd[:, 1:] / pd[:, :1]
                out.update({k: _boost(v, beta) for k, v in decay(d, md).items()})
        return out

    return decay(chain.root, np.full(n, reaction.parent_mass))


def _wrapped(a, b):
    return np.abs(np.angle(np.exp(1j * (a - b))))


def test_reproduces_helicity_variables_of_jpsi_gamma_kk():
    r = JPSI_GAMMA_KK
    assert str(r.chains[0]) == "J/psi -> X gamma; X -> Kp Km"
    hv = PhaseSpace(r).sample(20_000, np.random.default_rng(1))
    pg, p1, p2 = four_momenta(hv, r.parent_mass, r.m1, r.m2)
    v = chain_variables(r.chains[0], {"gamma": pg, "Kp": p1, "Km": p2})
    assert set(v) == {"J/psi", "X"}
    mine = np.stack([v["X"].m, v["J/psi"].cos_theta, v["J/psi"].phi, v["X"].cos_theta, v["X"].phi], axis=-1)
    np.testing.assert_allclose(mine, helicity_variables(pg, p1, p2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(v["J/psi"].m, r.parent_mass, rtol=1e-13)


@pytest.mark.parametrize("reaction, k", TOPOLOGIES, ids=IDS)
def test_momenta_variables_momenta(reaction, k):
    chain = reaction.chains[k]
    p = _generate(reaction, chain, 5_000, np.random.default_rng(10 + k))
    v = chain_variables(chain, p)
    assert set(v) == {n.label for n in chain.vertices}
    for var in v.values():
        assert var.m.shape == var.cos_theta.shape == var.phi.shape == (5_000,)
        assert np.all(np.abs(var.cos_theta) <= 1) and np.all(np.abs(var.phi) <= np.pi)
    back = chain_momenta(chain, v, _final_masses(reaction), reaction.parent_mass)
    assert set(back) == set(reaction.prefixes)
    for label in reaction.prefixes:
        np.testing.assert_allclose(back[label], p[label], rtol=0, atol=1e-10, err_msg=label)


@pytest.mark.parametrize("reaction, k", TOPOLOGIES, ids=IDS)
def test_variables_momenta_variables(reaction, k):
    """Any masses inside the region and any angles, including the poles, come back."""
    chain = reaction.chains[k]
    rng = np.random.default_rng(20 + k)
    n = 5_000
    masses = chain_variables(chain, _generate(reaction, chain, n, rng))
    v = {}
    for j, label in enumerate(masses):
        cos = rng.uniform(-1, 1, n)
        cos[:4] = [1.0, -1.0, 1 - 1e-13, -1 + 1e-13]  # the poles, and next to them
        v[label] = NodeVariables(masses[label].m, cos, rng.uniform(-np.pi, np.pi, n))
    p = chain_momenta(chain, v, _final_masses(reaction), reaction.parent_mass)
    assert all(np.all(np.isfinite(x)) for x in p.values())
    again = chain_variables(chain, p)
    for label, var in v.items():
        np.testing.assert_allclose(again[label].m, var.m, rtol=1e-12, err_msg=label)
        np.testing.assert_allclose(again[label].cos_theta, var.cos_theta, rtol=0, atol=1e-12, err_msg=label)
        # The azimuth is undefined at the poles themselves.
        np.testing.assert_array_less(_wrapped(again[label].phi[2:], var.phi[2:]), 1e-10, err_msg=label)


@pytest.mark.parametrize("reaction, k", TOPOLOGIES, ids=IDS)
def test_conservation_and_mass_shell(reaction, k):
    chain = reaction.chains[k]
    rng = np.random.default_rng(30 + k)
    n = 2_000
    v = chain_variables(chain, _generate(reaction, chain, n, rng))
    for label in v:  # new angles: the momenta below come from chain_momenta alone
        v[label] = NodeVariables(v[label].m, rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n))
    p = chain_momenta(chain, v, _final_masses(reaction), reaction.parent_mass)
    total = sum(p.values())
    np.testing.assert_allclose(total, np.tile([reaction.parent_mass, 0, 0, 0], (n, 1)), rtol=0, atol=1e-12)
    for label, m in _final_masses(reaction).items():
        m2 = p[label][:, 0] ** 2 - np.sum(p[label][:, 1:] ** 2, axis=1)
        np.testing.assert_allclose(m2, m**2, rtol=0, atol=1e-12, err_msg=label)
    for node in chain.vertices[1:]:
        pn = sum(p[leaf] for leaf in node.leaves)
        np.testing.assert_allclose(np.sqrt(pn[:, 0] ** 2 - np.sum(pn[:, 1:] ** 2, axis=1)), v[node.label].m,
                                   rtol=1e-12, err_msg=node.label)


def _direction(p):
    vec = p[1:]
    return np.arccos(vec[2] / np.linalg.norm(vec)), np.arctan2(vec[1], vec[0])


def _to_helicity_frame(p_node):
    """4x4 matrix of README_topologies.md section 3: R_y(-theta) R_z(-phi), then the boost along z."""
    theta, phi = _direction(p_node)
    rz = np.array([[np.cos(phi), np.sin(phi), 0], [-np.sin(phi), np.cos(phi), 0], [0, 0, 1]])
    ry = np.array([[np.cos(theta), 0, -np.sin(theta)], [0, 1, 0], [np.sin(theta), 0, np.cos(theta)]])
    rot = np.eye(4)
    rot[1:, 1:] = ry @ rz
    m = np.sqrt(p_node[0] ** 2 - p_node[1:] @ p_node[1:])
    g, bg = p_node[0] / m, np.linalg.norm(p_node[1:]) / m
    boost = np.array([[g, 0, 0, -bg], [0, 1, 0, 0], [0, 0, 1, 0], [-bg, 0, 0, g]])
    return boost @ rot


def test_frames_match_an_explicit_matrix_construction():
    """Every node's frame from its OWN direction, the second daughter's too (not Jacob-Wick)."""
    for reaction, k in [(PSI, 0), (PSI, 2), (D0, 1)]:
        chain = reaction.chains[k]
        p = _generate(reaction, chain, 30, np.random.default_rng(40 + k))
        v = chain_variables(chain, p)
        for i in range(30):
            def visit(node, frame):
                b = node.daughters[0]
                pb = frame @ sum(p[leaf][i] for leaf in b.leaves)
                theta, phi = _direction(pb)
                assert abs(np.cos(theta) - v[node.label].cos_theta[i]) < 1e-12
                assert _wrapped(phi, v[node.label].phi[i]) < 1e-11
                for d in node.daughters:
                    if not d.is_final:
                        visit(d, _to_helicity_frame(frame @ sum(p[leaf][i] for leaf in d.leaves)) @ frame)

            visit(chain.root, np.eye(4))


def test_node_frame_does_not_depend_on_daughter_order():
    """f first or second at the psi(2S) vertex: the same f frame; the root angles flip."""
    p = _generate(PSI, PSI.chains[0], 5_000, np.random.default_rng(50))
    a = chain_variables(PSI.chains[0], p)
    b = chain_variables(PSI.chains[1], p)
    for label in ("phi", "f"):
        np.testing.assert_allclose(a[label].m, b[label].m, rtol=1e-13)
        np.testing.assert_allclose(a[label].cos_theta, b[label].cos_theta, rtol=0, atol=1e-12)
        np.testing.assert_array_less(_wrapped(a[label].phi, b[label].phi), 1e-10)
    np.testing.assert_allclose(b["psi(2S)"].cos_theta, -a["psi(2S)"].cos_theta, rtol=0, atol=1e-12)
    np.testing.assert_array_less(_wrapped(b["psi(2S)"].phi, a["psi(2S)"].phi + np.pi), 1e-10)


def test_labelled_arrays_and_errors():
    p = _generate(D0, D0.chains[0], 10, np.random.default_rng(60))
    stacked = stack_momenta(D0, p)
    assert stacked.shape == (10, 3, 4)
    np.testing.assert_array_equal(stacked[:, D0.index("pip")], p["pip"])
    assert momenta_by_label(D0, stacked).keys() == p.keys()
    with pytest.raises(ValueError, match="pi0"):
        chain_variables(D0.chains[0], {"Km": p["Km"], "pip": p["pip"]})
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        chain_variables(D0.chains[0], {k: x[:, :3] for k, x in p.items()})
    with pytest.raises(ValueError, match="Kst"):
        chain_momenta(D0.chains[0], {"D0": chain_variables(D0.chains[0], p)["D0"]}, _final_masses(D0), 1.86484)
    with pytest.raises(ValueError, match=r"\(n, 3, 4\)"):
        momenta_by_label(D0, stacked[:, :2])


# --- the independent reference: ampform's psi(2S) -> K+ K- K+ K- --------------------------

_REFERENCE = [Path(__file__).parent / "data" / "ampform_psi2s_phi_kk.npz",
              Path(__file__).parents[2] / "shared" / "reference" / "ampform_psi2s_phi_kk.npz"]


def _small_d(j, mp, m, beta):
    """Wigner d^j_{m' m}(beta), the standard (Wigner's) formula: d^1_{10} = -sin(beta) / sqrt(2)."""
    out = np.zeros_like(beta)
    for s in range(0, 2 * j + 1):
        if j + m - s < 0 or mp - m + s < 0 or j - mp - s < 0:
            continue
        num = np.sqrt(float(factorial(j + mp) * factorial(j - mp) * factorial(j + m) * factorial(j - m)))
        den = factorial(j + m - s) * factorial(s) * factorial(mp - m + s) * factorial(j - mp - s)
        out = out + (-1) ** (mp - m + s) * num / den * np.cos(beta / 2) ** (2 * j + m - mp - 2 * s) \
            * np.sin(beta / 2) ** (mp - m + 2 * s)
    return out


def _d_conj(j, m, mp, phi, cos_theta):
    return np.exp(1j * m * phi) * _small_d(j, m, mp, np.arccos(np.clip(cos_theta, -1, 1)))


@pytest.mark.skipif(not any(f.exists() for f in _REFERENCE), reason="ampform_psi2s_phi_kk.npz not found")
def test_angles_reproduce_ampform_component_intensities():
    """Unsymmetrised unit-coupling intensities of one resonance differ from ampform's only by
    its lineshapes |F_phi F_R|^2 (the same for every coupling of it) and a constant each."""
    ref = np.load(next(f for f in _REFERENCE if f.exists()))
    p = {"Kp1": ref["p_kp1"], "Km1": ref["p_km1"], "Kp2": ref["p_kp2"], "Km2": ref["p_km2"]}
    v = chain_variables(PSI.chains[0], p)
    top, phi, f = v["psi(2S)"], v["phi"], v["f"]

    def intensity(spin, lf, lp):
        terms = {(lf, lp), (-lf, -lp)}  # the parity partner shares the coupling
        total = 0.0
        for mm in (1, -1):
            a = sum(_d_conj(1, mm, l_p - l_f, top.phi, top.cos_theta) * _d_conj(1, l_p, 0, phi.phi, phi.cos_theta)
                    * _d_conj(spin, l_f, 0, f.phi, f.cos_theta) for l_f, l_p in terms)
            total = total + np.abs(a) ** 2
        return total

    for name, spin, pairs in [("f(2)(1270)", 2, [(2, 1), (1, 1), (0, 1), (1, 0), (0, 0)]),
                              ("f(0)(1500)", 0, [(0, 1), (0, 0)])]:
        ratios = np.stack([ref[f"unsym_component_{name}_lf{lf:+d}_lphi{lp:+d}"] / intensity(spin, lf, lp)
                           for lf, lp in pairs])
        good = np.all(np.stack([intensity(spin, *lp) for lp in pairs]) > 1e-6, axis=0)
        shape = ratios[:, good] / ratios[:1, good]  # the lineshapes cancel
        spread = np.std(shape, axis=1) / np.mean(shape, axis=1)
        assert good.sum() > 1900 and np.all(spread < 1e-9), (name, spread)
