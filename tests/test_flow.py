"""Contract tests of the fast-simulator generators (flow and VAE): bijection,
log-det, support, normalisation, sampling, determinism."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fastsim.coords import CoordinateMap
from fastsim.events import JPSI_GAMMA_KK, Events, PhaseSpace
from fastsim.flow import SplineFlow, coupling_masks
from fastsim.generator import FastSimulator, build_model
from fastsim.vae import VAE

TINY_FLOW = {"n_layers": 5, "hidden": 16, "n_blocks": 1, "n_bins": 6}
TINY_VAE = {"latent": 2, "hidden": 16, "n_hidden": 2, "n_importance": 32}


def perturbed(model: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """Move every weight away from its (identity) initialisation, seeded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.fixture
def flow64() -> SplineFlow:
    torch.manual_seed(0)
    return perturbed(SplineFlow(**TINY_FLOW).double(), 0.3)


@pytest.mark.parametrize("m_map", ["affine", "phase_space"])
def test_coordinate_map_round_trip_and_jacobian(m_map):
    cm = CoordinateMap.for_reaction(JPSI_GAMMA_KK, m_map=m_map)
    rng = np.random.default_rng(1)
    u = rng.uniform(size=(1000, 5))
    hv = cm.from_unit(u)
    assert cm.inside(hv).all()
    np.testing.assert_allclose(cm.to_unit(hv), u, atol=1e-12)
    vol = (cm.m_max - cm.m_min) * 2 * (2 * np.pi) * 2 * (2 * np.pi)
    if m_map == "affine":  # the log-Jacobian is log of 1/(box volume)
        np.testing.assert_allclose(cm.log_det(hv), -np.log(vol), rtol=1e-14)
    else:  # du_m/dm is the normalised phase-space density of m
        ps = PhaseSpace(JPSI_GAMMA_KK)
        expected = np.log(ps.m_density(hv[:, 0])) - np.log(vol / (cm.m_max - cm.m_min))
        np.testing.assert_allclose(cm.log_det(hv), expected, atol=2e-3)
    assert CoordinateMap.from_dict(cm.to_dict()) == cm
    out = hv.copy()
    out[0, 0] = cm.m_min - 1e-3
    out[1, 3] = 1.0001
    assert not cm.inside(out)[:2].any() and cm.inside(out)[2:].all()
    assert cm.to_unit(out)[0, 0] < 0.0  # outside maps outside


def test_phase_space_map_flattens_phase_space_in_m():
    """Under flat phase space u_m = G(m) is uniform (the map is the CDF of m)."""
    from scipy import stats

    cm = CoordinateMap.for_reaction(JPSI_GAMMA_KK)
    hv = PhaseSpace(JPSI_GAMMA_KK).sample(100_000, np.random.default_rng(3))
    u_m = cm.to_unit(hv)[:, 0]
    assert stats.kstest(u_m, "uniform").pvalue > 1e-3
    # negative control: the affine coordinate is far from uniform (sqrt edges)
    u_aff = CoordinateMap.for_reaction(JPSI_GAMMA_KK, m_map="affine").to_unit(hv)[:, 0]
    assert stats.kstest(u_aff, "uniform").pvalue < 1e-10


def test_masks_transform_every_coordinate_given_every_other():
    masks = np.array(coupling_masks(5))
    assert (masks.sum(axis=0) == 2).all()
    for i in range(5):
        for j in range(5):
            if i != j:
                assert any(m[i] == 1 and m[j] == 0 for m in masks), (i, j)


def test_flow_invertible(flow64):
    g = torch.Generator().manual_seed(2)
    y = 2 * torch.rand((500, 5), generator=g, dtype=torch.float64) - 1
    x, ld_f = flow64.forward_and_log_det(y)
    y2, ld_i = flow64.inverse_and_log_det(x)
    torch.testing.assert_close(y2, y, atol=1e-9, rtol=0)
    torch.testing.assert_close(ld_i, -ld_f, atol=1e-9, rtol=0)
    assert (x - y).abs().max() > 0.05  # the perturbed flow is far from the identity


def test_flow_log_det_matches_autodiff_jacobian(flow64):
    g = torch.Generator().manual_seed(3)
    y = 2 * torch.rand((8, 5), generator=g, dtype=torch.float64) - 1
    with torch.no_grad():
        _, ld = flow64.forward_and_log_det(y)
    for k in range(len(y)):
        jac = torch.autograd.functional.jacobian(lambda v: flow64.forward_and_log_det(v[None])[0][0], y[k])
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign > 0
        assert float(logabs.detach()) == pytest.approx(float(ld[k]), abs=1e-8)


def test_flow_maps_box_faces_onto_faces_and_is_periodic(flow64):
    g = torch.Generator().manual_seed(4)
    y = 2 * torch.rand((200, 5), generator=g, dtype=torch.float64) - 1
    for d in range(5):
        for face in (-1.0, 1.0):
            yf = y.clone()
            yf[:, d] = face
            x, _ = flow64.forward_and_log_det(yf)
            torch.testing.assert_close(x[:, d], yf[:, d], atol=1e-12, rtol=0)
    # Azimuths: the density at u = 0 and u = 1 (the same point) agrees.
    u = (y[:20] + 1) / 2
    for d in (2, 4):
        lo, hi = u.clone(), u.clone()
        lo[:, d], hi[:, d] = 0.0, 1.0
        torch.testing.assert_close(flow64.log_prob_unit(lo), flow64.log_prob_unit(hi), atol=1e-9, rtol=0)


def test_flow_density_is_minus_inf_outside_the_box(flow64):
    u = torch.full((3, 5), 0.5, dtype=torch.float64)
    u[0, 0], u[1, 1], u[2, 4] = -1e-9, 1.0 + 1e-9, 1.2
    assert torch.isneginf(flow64.log_prob_unit(u)).all()


def _sobol_integral(sim: FastSimulator, m: int = 15) -> float:
    """Integral of the physical density over the physical box (scrambled Sobol points)."""
    from scipy.stats import qmc

    u = qmc.Sobol(5, scramble=True, seed=7).random_base2(m)
    hv = sim.coords.from_unit(u)
    return float(np.mean(np.exp(sim.log_prob(hv) - sim.coords.log_det(hv))))


def test_flow_density_integrates_to_one_in_physical_variables():
    # A milder perturbation than flow64: the quasi-MC integral of a very peaked
    # density converges slowly (scale 0.3 gives density maxima ~ 500).
    torch.manual_seed(0)
    sim = FastSimulator(perturbed(SplineFlow(**TINY_FLOW), 0.1), reaction=JPSI_GAMMA_KK)
    assert _sobol_integral(sim) == pytest.approx(1.0, abs=5e-3)
    # Negative control: dropping the Jacobian of the coordinate map breaks it.
    from scipy.stats import qmc

    u = qmc.Sobol(5, scramble=True, seed=7).random_base2(12)
    hv = sim.coords.from_unit(u)
    assert np.exp(sim.log_prob(hv) - sim.coords.log_det(hv)).mean() == pytest.approx(1.0, abs=2e-2)
    assert np.exp(sim.log_prob(hv)).mean() < 1e-2


def test_vae_density_integrates_to_one():
    torch.manual_seed(1)
    vae = perturbed(VAE(**TINY_VAE), 0.1)
    sim = FastSimulator(vae, reaction=JPSI_GAMMA_KK)
    # Importance-sampled density estimate: consistent, slightly biased low.
    assert _sobol_integral(sim, 13) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("kind,hp", [("flow", TINY_FLOW), ("vae", TINY_VAE)])
def test_samples_lie_in_the_physical_region_and_are_seeded(kind, hp):
    torch.manual_seed(0)
    model = perturbed(build_model(kind, hp), 0.5)
    sim = FastSimulator(model, reaction=JPSI_GAMMA_KK)
    hv = sim.sample_hv(20_000, seed=3, chunk_size=7000)
    assert hv.shape == (20_000, 5)
    assert sim.coords.inside(hv).all()
    assert np.isfinite(sim.log_prob(hv[:2000])).all()
    ev = sim.sample(500, seed=3, chunk_size=7000)
    assert isinstance(ev, Events) and len(ev) == 500
    total = ev.momenta.sum(axis=1)
    np.testing.assert_allclose(total, np.tile([JPSI_GAMMA_KK.parent_mass, 0, 0, 0], (500, 1)), atol=1e-9)
    np.testing.assert_allclose(ev.helicity_variables, sim.sample_hv(500, seed=3, chunk_size=7000), atol=1e-7)
    np.testing.assert_array_equal(sim.sample_hv(20_000, seed=3, chunk_size=7000), hv)
    assert not np.array_equal(sim.sample_hv(20_000, seed=4, chunk_size=7000), hv)


def test_flow_samples_follow_its_density():
    """Samples and log_prob describe the same distribution (1-D marginal of m)."""
    torch.manual_seed(0)
    sim = FastSimulator(perturbed(SplineFlow(**TINY_FLOW), 0.1), reaction=JPSI_GAMMA_KK)
    hv = sim.sample_hv(40_000, seed=1)
    # E_p[1 / p] over the unit box is its volume, 1.
    inv_p = np.exp(-(sim.log_prob(hv) - sim.coords.log_det(hv)))
    assert inv_p.mean() == pytest.approx(1.0, abs=4 * inv_p.std() / np.sqrt(len(inv_p)))
    from scipy.stats import qmc

    u = qmc.Sobol(5, scramble=True, seed=2).random_base2(14)
    hv_u = sim.coords.from_unit(u)
    w = np.exp(sim.log_prob(hv_u) - sim.coords.log_det(hv_u))
    edges = np.linspace(0, 1, 11)
    for d in range(5):
        pred = np.histogram(u[:, d], edges, weights=w)[0] / w.sum()
        obs = np.histogram(sim.coords.to_unit(hv)[:, d], edges)[0] / len(hv)
        np.testing.assert_allclose(obs, pred, atol=0.01)


def test_float32_and_float64_densities_agree():
    torch.manual_seed(0)
    sim = FastSimulator(perturbed(SplineFlow(**TINY_FLOW), 0.3), reaction=JPSI_GAMMA_KK)
    hv = sim.sample_hv(2000, seed=5)
    d = sim.log_prob(hv, float64=False) - sim.log_prob(hv)
    assert np.abs(d).max() < 1e-3


def test_rq_spline_kernel_matches_normflows():
    from normflows.utils.splines import rational_quadratic_spline

    from fastsim.flow import rq_spline

    g = torch.Generator().manual_seed(0)
    x = 2.0 * torch.rand(500, 2, generator=g, dtype=torch.float64) - 1.0
    w, h = (torch.randn(500, 2, 7, generator=g, dtype=torch.float64) for _ in range(2))
    d = torch.randn(500, 2, 8, generator=g, dtype=torch.float64)
    for inverse in (False, True):
        a, la = rational_quadratic_spline(x, w, h, d, inverse=inverse, left=-1.0, right=1.0,
                                          bottom=-1.0, top=1.0)
        b, lb = rq_spline(x, w, h, d, inverse=inverse)
        np.testing.assert_allclose(b, a, atol=1e-12)
        np.testing.assert_allclose(lb, la, atol=1e-10)


def test_acceptance_knots_sit_at_the_photon_edges():
    from fastsim.coords import acceptance_knots
    from fastsim.events import load_detector_card

    coords = CoordinateMap.for_reaction(JPSI_GAMMA_KK)
    card = load_detector_card("default")
    sharp = card.model_copy(update={"resolution": card.resolution.model_copy(update={"enabled": False})})
    knots = acceptance_knots(sharp, coords, JPSI_GAMMA_KK.parent_mass)
    cos = 2.0 * np.array(knots[1]) - 1.0
    np.testing.assert_allclose(cos, [-0.92, -0.86, -0.80, 0.80, 0.86, 0.92], atol=1e-12)
    m = coords.m_from_unit(np.array(knots[0]))
    big_m = JPSI_GAMMA_KK.parent_mass
    np.testing.assert_allclose((big_m ** 2 - m ** 2) / (2 * big_m), [0.05, 0.025], atol=1e-10)
    assert knots[2] == knots[3] == knots[4] == []
    # With resolution: the same edges plus knots at +-2 and +-4 sigma around each.
    smeared = acceptance_knots(card, coords, JPSI_GAMMA_KK.parent_mass)
    assert len(smeared[1]) == 30 and len(smeared[0]) == 10
    for sharp_k, smeared_k in zip(knots[:2], smeared[:2]):
        assert np.all(np.min(np.abs(np.subtract.outer(sharp_k, smeared_k)), axis=1) < 1e-12)
    sigma = card.resolution.sigma_angle * np.sqrt(1 - 0.92 ** 2)
    assert np.min(np.abs(2.0 * np.array(smeared[1]) - 1.0 - (0.92 + 4 * sigma))) < 1e-12
    assert np.all(np.diff(smeared[1]) > 0) and np.all(np.diff(smeared[0]) > 0)


PRE_KNOTS = [[0.5], [0.1, 0.2, 0.8, 0.9], [], [], []]


@pytest.fixture
def flow_pre() -> SplineFlow:
    """Tiny flow with a fitted edge pre-transform (segment densities up to ~4x apart)."""
    torch.manual_seed(0)
    flow = SplineFlow(**TINY_FLOW, pre_knots=PRE_KNOTS)
    g = torch.Generator().manual_seed(1)
    u = torch.rand(20_000, 5, generator=g, dtype=torch.float64)
    u[:10_000, 1] = 0.2 + 0.6 * u[:10_000, 1]  # a step in coordinate 1 at 0.2 and 0.8
    u[:5000, 0] = 0.5 * u[:5000, 0]  # and one in coordinate 0 at 0.5
    flow.fit_pre_transform(u)
    y1 = flow.pre.y1
    assert 2.0 < float((y1[3] - y1[2]) / 0.6) / float((y1[1] - y1[0]) / 0.1) < 3.0
    return perturbed(flow, 0.1)


def test_pre_transform_is_a_box_bijection_with_its_log_det():
    flow = SplineFlow(**TINY_FLOW, pre_knots=PRE_KNOTS).double()
    flow.fit_pre_transform(torch.rand(5000, 5, dtype=torch.float64) ** 2)
    pre = flow.pre
    u = torch.rand(3000, 5, dtype=torch.float64)
    u[:4] = torch.tensor([[0.0] * 5, [1.0] * 5, [0.5, 0.1, 0.3, 0.3, 0.3], [0.5, 0.9, 0.3, 0.3, 0.3]])
    v, ld = pre(u)
    back, ld_inv = pre.inverse(v)
    np.testing.assert_allclose(back, u, atol=1e-12)
    np.testing.assert_allclose(ld + ld_inv, 0.0, atol=1e-12)
    assert v.min() >= 0.0 and v.max() <= 1.0
    np.testing.assert_array_equal(v[:2], u[:2])  # the faces stay where they are
    np.testing.assert_array_equal(v[:, 2:], u[:, 2:])  # coordinates without knots untouched
    # log-det against finite differences (the map is diagonal), away from the knots
    eps = 1e-7
    log_fd = torch.zeros(len(u), dtype=torch.float64)
    away = torch.ones(len(u), dtype=torch.bool)
    for i in (0, 1):
        du = torch.zeros_like(u)
        du[:, i] = eps
        log_fd += torch.log((pre(u + du)[0][:, i] - pre(u - du)[0][:, i]) / (2 * eps))
        for k in [0.0, 1.0, *PRE_KNOTS[i]]:
            away &= (u[:, i] - k).abs() > 1e-5
    assert away.sum() > 2900
    np.testing.assert_allclose(log_fd[away], ld[away], atol=1e-6)
    assert ld.abs().max() > 0.1  # the fitted map is not the identity
    with pytest.raises(ValueError):
        SplineFlow(**TINY_FLOW, pre_knots=[[], [], [0.5], [], []])  # periodic coordinate


def test_flow_with_pre_transform_density_integrates_to_one_and_matches_samples(flow_pre):
    sim = FastSimulator(flow_pre, reaction=JPSI_GAMMA_KK)
    assert _sobol_integral(sim) == pytest.approx(1.0, abs=5e-3)
    hv = sim.sample_hv(40_000, seed=1, chunk_size=15_000)
    assert sim.coords.inside(hv).all()
    inv_p = np.exp(-(sim.log_prob(hv) - sim.coords.log_det(hv)))
    assert inv_p.mean() == pytest.approx(1.0, abs=4 * inv_p.std() / np.sqrt(len(inv_p)))
    # Negative control: the step of the pre-transform is visible in the samples.
    u1 = sim.coords.to_unit(hv)[:, 1]
    assert np.mean((u1 > 0.2) & (u1 < 0.8)) > 0.7
    np.testing.assert_array_equal(sim.sample_hv(5000, seed=1, chunk_size=15_000), hv[:5000])


@pytest.mark.parametrize("which", ["flow64", "flow_pre"])
def test_fast_sampler_is_the_flow_map(which, request):
    """sample_unit (the row-wise sampler) equals forward_and_log_det (+ pre-transform inverse)
    on the same base points, in float64 to round-off: the sampler's own copy of the
    conditioner and spline cannot drift from the density's."""
    import copy

    flow = copy.deepcopy(request.getfixturevalue(which)).double()
    u = flow.sample_unit(3000, torch.Generator().manual_seed(3))
    y = 2.0 * torch.rand((3000, 5), generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 1.0
    with torch.no_grad():
        x, _ = flow.forward_and_log_det(y)
        v = (0.5 * (x + 1.0)).clamp(0.0, 1.0)
        if flow.pre is not None:
            v, _ = flow.pre.inverse(v)
    torch.testing.assert_close(u, v, atol=1e-10, rtol=0)
