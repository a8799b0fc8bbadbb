"""Contract tests every registered lineshape passes (STYLE.md rule 10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastsim.events import JPSI_GAMMA_KK
from pwa.lineshapes import LINESHAPES, LineshapeContext, blatt_weisskopf_squared, phase_space_factor

M = jnp.linspace(JPSI_GAMMA_KK.m_min + 1e-4, JPSI_GAMMA_KK.m_max - 1e-4, 301)


def _bound(name):
    ls = LINESHAPES[name]
    ctx = LineshapeContext(ls.example_spin, JPSI_GAMMA_KK.m1, JPSI_GAMMA_KK.m2)
    return ls, ls.bind(ctx)


@pytest.mark.parametrize("name", sorted(LINESHAPES))
def test_shape_dtype_finite(name):
    ls, fn = _bound(name)
    params = {k: jnp.asarray(v) for k, v in ls.example.items()}
    out = jax.jit(fn)(M, params)
    assert out.shape == M.shape
    assert jnp.iscomplexobj(out) and out.dtype == jnp.complex128
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("name", sorted(LINESHAPES))
def test_gradient_matches_finite_differences(name):
    ls, fn = _bound(name)
    if not ls.parameters:
        pytest.skip(f"{name} has no parameters")
    weights = jnp.cos(7.0 * M)  # a generic real functional of F

    def functional(x):
        f = fn(M, dict(zip(ls.parameters, x)))
        return jnp.sum(weights * (jnp.real(f) + 0.3 * jnp.imag(f) + 0.1 * jnp.abs(f) ** 2))

    x0 = jnp.asarray([ls.example[k] for k in ls.parameters])
    grad = np.asarray(jax.grad(functional)(x0))
    for i in range(len(x0)):
        h = 1e-6 * max(1.0, abs(float(x0[i])))
        e = jnp.zeros_like(x0).at[i].set(h)
        fd = (functional(x0 + e) - functional(x0 - e)) / (2 * h)
        assert grad[i] == pytest.approx(float(fd), rel=1e-5, abs=1e-7 * float(jnp.abs(fd)) + 1e-9), ls.parameters[i]


@pytest.mark.parametrize("name", sorted(LINESHAPES))
def test_finite_with_gradient_at_the_kk_threshold(name):
    """Values and every parameter's gradient are finite at and just above m = 2 m_K (L > 0: B_L = 0 there)."""
    ls, fn = _bound(name)
    mk = JPSI_GAMMA_KK.m1
    m = jnp.asarray([2 * mk, 2 * mk * (1 + 1e-15), 2 * mk * (1 + 1e-12), 2 * mk + 1e-8, 2 * mk + 1e-4])
    params = {k: jnp.asarray(v) for k, v in ls.example.items()}
    assert np.all(np.isfinite(np.asarray(fn(m, params))))
    if not ls.parameters:
        return
    for i in range(len(m)):
        grad = jax.grad(lambda p: jnp.real(fn(m, p)[i]) + jnp.imag(fn(m, p)[i]))(params)
        assert all(np.isfinite(float(g)) for g in grad.values()), (float(m[i]), grad)


def test_breit_wigner_at_pole_mass():
    """At m = m0 the BW is i B_L(q0) (pure imaginary): the peak of the resonance."""
    ls, fn = _bound("BW")
    m0 = ls.example["mass"]
    f = fn(jnp.asarray([m0]), {k: jnp.asarray(v) for k, v in ls.example.items()})[0]
    ctx_q2 = (m0**2 / 4 - JPSI_GAMMA_KK.m1**2) * ls.example["radius"] ** 2
    assert complex(f) == pytest.approx(1j * np.sqrt(float(blatt_weisskopf_squared(ctx_q2, 2))), rel=1e-13)


def test_blatt_weisskopf_small_z_limit():
    """B_L^2 -> z^L times a constant, and B_L^2(z) stays finite and positive."""
    z = np.array([1e-6, 1e-4])
    for L in range(5):
        b = np.asarray(blatt_weisskopf_squared(jnp.asarray(z), L))
        assert np.all(b > 0)
        assert b[1] / b[0] == pytest.approx(100.0**L, rel=1e-3)
    with pytest.raises(ValueError):
        blatt_weisskopf_squared(jnp.asarray(z), 5)


def test_phase_space_factor_continuation():
    """rho = 2q/m above threshold, i |rho| below (Flatte convention of PHYSICS.md section 3)."""
    mk = JPSI_GAMMA_KK.m1
    above, below = 1.2, 0.9
    rho = np.asarray(phase_space_factor(jnp.asarray([above, below]), mk, mk))
    assert rho[0] == pytest.approx(np.sqrt(1 - 4 * mk**2 / above**2), rel=1e-14)
    assert rho[1] == pytest.approx(1j * np.sqrt(4 * mk**2 / below**2 - 1), rel=1e-14)
