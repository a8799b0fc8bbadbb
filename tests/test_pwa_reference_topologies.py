"""Agreement with ampform for psi(2S) -> phi K+ K- (identical kaons) and D0 -> K- pi+ pi0.

The reference files are copies of ../shared/reference/ (README_topologies.md
there describes them; ComPWA's qrules 0.10.14 / ampform 0.16.2 evaluated with
tensorwaves 0.4.17, nobody on this project wrote that code). With the
conventions of :mod:`pwa.helicity` (every node's helicity frame built from
its own direction, chain daughters in the order written) the coupling mapping
is the identity: the complex amplitudes themselves must agree, per unit
coupling and per parent spin projection M, to about 1e-12 of max |A|, and the
component and total intensities to 1e-12 relative (|difference| / mean near
zeros of the intensity, as that README says).
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from fastsim.events import Events
from pwa import Model

from _shared import p3_card, reference_bw

DATA = Path(__file__).parent / "data"


def _load(name):
    return dict(np.load(DATA / f"ampform_{name}.npz")), json.loads((DATA / f"ampform_{name}.json").read_text())




@pytest.fixture(scope="module")
def psi2s():
    z, _ = _load("psi2s_phi_kk")
    card = p3_card(DATA)
    model = Model.from_card(card)
    events = Events(np.stack([z[k] for k in ("p_kp1", "p_km1", "p_kp2", "p_km2")], axis=1), reaction=model.reaction)
    return model, events, z


@pytest.fixture(scope="module")
def d0():
    z, info = _load("d0_kpipi0")
    chains = {"K*(892)-": ("Kst", "D0 -> Kst pip; Kst -> Km pi0"),
              "K*(892)~0": ("Kst0", "D0 -> Kst0 pi0; Kst0 -> Km pip"),
              "rho(770)+": ("rho", "D0 -> rho Km; rho -> pip pi0")}
    resonances = [{"name": name, "node": chains[name][0], "spin": r["J"], "parity": r["P"],
                   "lineshape": reference_bw(r), "couplings": {"0 0": r["couplings"]["0"]["value_mag_phase"]}}
                  for name, r in info["resonances"].items()]
    card = {"reaction": {"parent": "D0", "final_state": {"Km": "K-", "pip": "pi+", "pi0": "pi0"},
                         "chains": [c for _, c in chains.values()]},
            "resonances": resonances, "reference": "rho(770)+"}
    model = Model.from_card(card)
    events = Events(np.stack([z[k] for k in ("p_km", "p_pip", "p_pi0")], axis=1), reaction=model.reaction)
    return model, events, z


def _per_term(model, events):
    """(terms, perms, states, n) amplitudes with lineshapes, and their permutation sum."""
    cache = model.precompute(events, fold_lineshapes=False)
    p = jnp.asarray(model.initial_values())
    L = np.asarray(model._term_lineshapes(model.full_parameters(p), cache.masses))
    K, P = L.shape[:2]
    ang = (np.asarray(cache.ang_re) + 1j * np.asarray(cache.ang_im)).reshape(K, P, -1, len(events))
    per_perm = L[:, :, None, :] * ang
    return per_perm, per_perm.sum(axis=1)


def _close(ours, ref, rel=1e-12):
    """Relative agreement, with |difference| / mean near zeros of the reference."""
    scale = np.maximum(np.abs(ref), np.mean(np.abs(ref)))
    return np.max(np.abs(ours - ref) / scale) < rel


def test_psi2s_amplitudes_components_and_total(psi2s):
    model, events, z = psi2s
    per_perm, summed = _per_term(model, events)
    assert model.amplitude.spin_states == ((1,), (-1,)) and len(model.amplitude.permutations) == 4
    checked = 0
    for k, (r, label) in enumerate(model.terms):
        lp, lf = (int(x) for x in label.removeprefix("h(").removesuffix(")").split(","))
        tag = f"{model.resonance_names[r]}_lf{lf:+d}_lphi{lp:+d}"
        assert _close(np.sum(np.abs(per_perm[k, 0]) ** 2, axis=0), z[f"unsym_component_{tag}"]), tag
        assert _close(np.sum(np.abs(summed[k]) ** 2, axis=0), z[f"component_{tag}"]), tag
        for s, M in enumerate((1, -1)):
            ref = z[f"amplitude_{tag}_M{M:+d}"]
            assert np.max(np.abs(summed[k, s] - ref)) < 1e-12 * np.max(np.abs(ref)), (tag, M)
        checked += 1
    assert checked == 9
    ours = np.asarray(model.intensity(jnp.asarray(model.initial_values()), model.precompute(events)))
    assert _close(ours, z["intensity_total"])


def test_psi2s_unsymmetrised_total_and_the_test_can_fail(psi2s):
    model, events, z = psi2s
    cache = model.precompute(events, fold_lineshapes=False)
    p = jnp.asarray(model.initial_values())
    c = np.asarray(model.couplings(p))
    per_perm, _ = _per_term(model, events)
    unsym = np.sum(np.abs(np.einsum("k,ksn->sn", c, per_perm[:, 0])) ** 2, axis=0)
    assert _close(unsym, z["unsym_intensity_total"])
    # Flipping the sign of one coupling (a convention error) must be seen.
    wrong = c.copy()
    wrong[1] *= -1
    other = np.sum(np.abs(np.einsum("k,kpsn->sn", wrong, per_perm)) ** 2, axis=0)
    assert not _close(other, z["intensity_total"], rel=1e-2)
    assert cache.masses.shape == (2 * 4, len(events))  # phi and f masses for each of four pairings


def test_d0_amplitudes_components_and_total(d0):
    model, events, z = d0
    _, summed = _per_term(model, events)
    assert model.amplitude.spin_states == ((0,),) and len(model.terms) == 3
    for k, (r, _) in enumerate(model.terms):
        name = model.resonance_names[r]
        assert _close(np.abs(summed[k, 0]) ** 2, z[f"component_{name}"]), name
        ref = z[f"amplitude_{name}"]
        assert np.max(np.abs(summed[k, 0] - ref)) < 1e-12 * np.max(np.abs(ref)), name
    ours = np.asarray(model.intensity(jnp.asarray(model.initial_values()), model.precompute(events)))
    assert _close(ours, z["intensity_total"])


@pytest.mark.parametrize("swap", [(2, 1, 0, 3), (0, 3, 2, 1), (2, 3, 0, 1)])
def test_psi2s_intensity_invariant_under_identical_swaps(psi2s, swap):
    model, events, _ = psi2s
    p = jnp.asarray(model.initial_values())
    ours = np.asarray(model.intensity(p, model.precompute(events)))
    swapped = Events(events.momenta[:, list(swap)], reaction=model.reaction)
    other = np.asarray(model.intensity(p, model.precompute(swapped)))
    assert np.max(np.abs(other / ours - 1.0)) < 1e-12
    # A swap of a K+ with a K- is no symmetry: the test can fail.
    wrong = Events(events.momenta[:, [1, 0, 2, 3]], reaction=model.reaction)
    assert np.max(np.abs(np.asarray(model.intensity(p, model.precompute(wrong))) / ours - 1.0)) > 1e-3


def test_ls_basis_equals_its_helicity_couplings(psi2s):
    """psi(2S) -> phi f0: the S wave (L, S) = (0, 1) has no barrier and H_{lphi, 0} = sqrt(1/3) for every
    lphi (Clebsch-Gordan), so the LS-basis amplitude with g_01 = 1 equals the helicity-basis one with
    h(+1,0) = h(0,0) = sqrt(1/3) (the partner h(-1,0) follows by parity); the D wave (2, 1) differs."""
    import math

    _, events, _ = psi2s
    base = {"reaction": {"parent": "psi(2S)", "final_state": {"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"},
                         "chains": ["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"]},
            "reference": "f0(1500)"}
    phi = {"name": "phi(1020)", "node": "phi", "lineshape": {"type": "BW_plain", "mass": 1.02, "width": 0.004}}
    f0 = {"name": "f0(1500)", "node": "f", "lineshape": {"type": "BW_plain", "mass": 1.522, "width": 0.108}}
    ls = Model.from_card({**base, "resonances": [phi, {**f0, "basis": "ls", "couplings": {"0 1": [1.0, 0.0]}}]})
    c = math.sqrt(1.0 / 3.0)
    hel = Model.from_card({**base, "resonances": [phi, {**f0, "couplings": {"+1 0": [c, 0.0], "0 0": [c, 0.0]}}]})
    d_wave = Model.from_card({**base, "resonances": [phi, {**f0, "basis": "ls", "couplings": {"2 1": [1.0, 0.0]}}]})
    ev = Events(events.momenta, reaction=ls.reaction)
    i_ls, i_hel, i_d = (np.asarray(m.intensity(jnp.asarray(m.initial_values()), m.precompute(ev)))
                        for m in (ls, hel, d_wave))
    assert np.max(np.abs(i_ls / i_hel - 1.0)) < 1e-12
    assert ls.parameter_names == () and np.max(np.abs(i_d / (i_d.mean()) - i_ls / i_ls.mean())) > 1e-2


def test_l_max_removes_the_higher_waves():
    from pwa import ModelCardError, parse_model_card

    card = {"reaction": {"parent": "psi(2S)", "final_state": {"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"},
                         "chains": ["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"]},
            "resonances": [{"name": "phi(1020)", "node": "phi", "lineshape": {"type": "BW_plain"}},
                           {"name": "f2(1270)", "node": "f", "basis": "ls", "l_max": 0, "lineshape": {"type": "BW"},
                            "couplings": {"0 1": [1.0, 0.0], "2 2": [0.5, 0.0]}}],
            "reference": "f2(1270)"}
    with pytest.raises(ModelCardError, match=r"resonances\[1\] \(f2\(1270\)\)\.couplings: '2 2' is not an "
                                             r"independent \(L, S\) wave .*expected one of \"0 1\"\)"):
        parse_model_card(card)
    card["resonances"][1]["couplings"] = {"0 1": [1.0, 0.0]}
    assert Model.from_card(card).n_terms == 1  # L = 0 keeps one wave; without l_max J = 2 has five
    del card["resonances"][1]["l_max"]
    card["resonances"][1]["couplings"] = {"0 1": [1.0, 0.0], "2 2": [0.5, 0.0]}
    assert Model.from_card(card).n_terms == 2
