"""The exact Hessian of the NLL at the cost of a few gradients, from the amplitude's structure.

Forward-over-reverse autodiff builds a Hessian column by column: every one of
the n_par columns sends a tangent through the whole per-event computation, so
the exact Hessian costs 3-5 n_par gradients (101-208 binned gradients for the
38 parameters of J/psi -> gamma K+ K- with every mass and width free). But
the amplitude is linear in the couplings, and a lineshape parameter touches
only the terms of its own resonance. Written out, with

    A_s(x) = sum_k c_k(p) G_ks(x),   G_ks = sum_perm L_k,perm(m; theta) Ang_k,perm,s(x),
    I(x) = sum_s sigma_s |A_s|^2,

the derivatives of an event's intensity are

    dI/dp_a      = u_a = 2 Re sum_s sigma_s conj(A_s) B_sa,
    B_sa         = dA_s/dp_a = sum_k [dc_k/dp_a G_ks + c_k dG_ks/dp_a],
    d2I/dp_a dp_b = 2 Re sum_s sigma_s [conj(B_sa) B_sb + conj(A_s) d2A_s/dp_a dp_b],

and the second derivative of A needs only the couplings' own second
derivatives and those of each resonance's lineshape in its own parameters
(a handful of forward tangents of the lineshape alone, never of the
angular sums). The sums over events then reduce to two dense products,
sum_n alpha_n u_n u_n^T and sum_n beta_n Re conj(B_n) B_n^T (real GEMMs of
n_par x (n_states n)), and a few contractions of the lineshape jets
with the per-event adjoint h_k,perm = sum_s sigma_s conj(A_s) Ang_k,perm,s.

For the data term -sum w ln I: alpha = w / I^2, beta = -w / I. For the
normalisation N = sum v I / sum v: alpha = 0, beta = v / sum v, and
d2 ln N = d2N / N - dN dN^T / N^2. A normalisation stored as a matrix
(fixed lineshapes) is a quadratic form in the couplings, differentiated
directly. A binned normalisation (:mod:`pwa.binned`) enters as pseudo-events:
each bin's Hermitian form over the Taylor coefficients (k, order) is
factorised once into at most 3 n_terms weighted "states"
(:attr:`pwa.binned.BinnedCache.pseudo_re`), so that the same code applies.

Nothing is approximated: the result equals ``jax.hessian`` of
:meth:`pwa.amplitude.Model.nll` to rounding (tests/test_hessian.py, against
autodiff and finite differences, for every shipped reaction, folded and
unfolded, weighted, binned). Events are processed in chunks of
:data:`CHUNK`, so the memory is bounded whatever the sample size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .amplitude import Model

#: Events per chunk (memory: n_par x n_states x CHUNK complex numbers at once).
CHUNK = 16_384


@dataclass(frozen=True)
class _Group:
    """Terms that share one lineshape product (the same resonances on the same columns).

    terms: the terms' indices; first: one of them (whose lineshape row is evaluated);
    local: indices into p of the free lineshape parameters the product depends on.
    """

    terms: np.ndarray
    first: int
    local: np.ndarray


def _groups(model: Model) -> tuple[_Group, ...]:
    n_perm = len(model.amplitude.permutations)
    position = {int(i): j for j, i in enumerate(model._free)}
    by_signature: dict[tuple, list[int]] = {}
    for k in range(model.n_terms):
        signature = tuple(model._sub_factors[k * n_perm:(k + 1) * n_perm])
        by_signature.setdefault(signature, []).append(k)
    groups = []
    for signature, terms in by_signature.items():
        resonances = sorted({r for factors in signature for r, _ in factors})
        local = sorted(position[i] for r in resonances for i in model._lineshape_index[r].values()
                       if i in position)
        groups.append(_Group(np.asarray(terms), terms[0], np.asarray(local, dtype=int)))
    return tuple(groups)


def _jets(fn: Callable[[jnp.ndarray], jnp.ndarray], theta: jnp.ndarray):
    """fn(theta), its Jacobian (..., d) and Hessian (..., d, d) by forward mode (d is small)."""
    value = fn(theta)
    if theta.shape[0] == 0:
        shape = value.shape
        return value, jnp.zeros(shape + (0,), value.dtype), jnp.zeros(shape + (0, 0), value.dtype)
    return value, jax.jacfwd(fn)(theta), jax.jacfwd(jax.jacfwd(fn))(theta)


class StructuredHessian:
    """The exact Hessian of ``model.nll(p, data_cache, mc_cache)`` (module docstring).

    ``StructuredHessian(model)(p, data_cache, mc_cache)`` is pure and jittable;
    the caches may be folded or unfolded event caches, a stored-matrix
    normalisation or a :class:`~pwa.binned.BinnedCache`.
    """

    def __init__(self, model: Model, chunk: int = CHUNK) -> None:
        self.model = model
        self.chunk = int(chunk)
        self.groups = _groups(model)
        self.n_perm = len(model.amplitude.permutations)
        self._term_group = tuple(next(i for i, g in enumerate(self.groups) if k in g.terms)
                                 for k in range(model.n_terms))

    # --- pieces -----------------------------------------------------------------

    def _couplings(self, p):
        c = self.model.couplings
        return c(p), jax.jacfwd(c)(p), jax.jacfwd(jax.jacfwd(c))(p)

    def _lineshape_jets(self, p, row: Callable[[jnp.ndarray, int], jnp.ndarray]):
        """Per group: the lineshape product (n_perm, n), its Jacobian (n_perm, n, d) and Hessian.

        ``row(full, k)`` gives term k's (n_perm, n) lineshape products at a full parameter vector.
        """
        model = self.model
        full = model.full_parameters(p)
        free = jnp.asarray(model._free)
        jets = []
        for g in self.groups:
            slots = free[g.local]

            def fn(theta, g=g, slots=slots):
                return row(full.at[slots].set(theta), g.first)

            jets.append(_jets(fn, p[g.local]))
        return jets

    def _moments(self, p, coupling, jets, ang, sign, alpha, beta_of_intensity, weights):
        """sum_n alpha_n u u^T + sum_n beta_n d2I_n, sum_n beta_n u_n and sum_n weights_n I_n over one chunk.

        ang: (n_terms, n_perm, n_states, n) complex; sign: (n_states, n) or None;
        alpha, beta_of_intensity: callables of the chunk's intensities (n,) giving the
        per-event multipliers (alpha None: no outer-product term).
        """
        c, dc, d2c = coupling
        n_par = p.shape[0]
        L = jnp.stack([jets[g][0] for g in self._term_group])  # (K, P, n)
        G = jnp.einsum("kpn,kpsn->ksn", L, ang)
        A = jnp.einsum("k,ksn->sn", c, G)
        sA = jnp.conj(A) if sign is None else sign * jnp.conj(A)
        intensity = jnp.real(jnp.sum(sA * A, axis=0))
        B = jnp.einsum("ka,ksn->asn", dc, G)  # coupling directions
        for g, (_, dL, _) in zip(self.groups, jets):
            if g.local.size:
                abar = jnp.einsum("k,kpsn->psn", c[g.terms], ang[g.terms])
                B = B.at[g.local].add(jnp.einsum("pnd,psn->dsn", dL, abar))
        u = 2.0 * jnp.real(jnp.einsum("sn,asn->an", sA, B))
        beta = beta_of_intensity(intensity)
        rho = beta[None, :] if sign is None else beta[None, :] * sign
        Br, Bi = jnp.real(B), jnp.imag(B)
        H = 2.0 * (jnp.einsum("asn,bsn->ab", Br * rho, Br) + jnp.einsum("asn,bsn->ab", Bi * rho, Bi))
        if alpha is not None:
            H = H + (u * alpha(intensity)) @ u.T
        h = jnp.einsum("sn,kpsn->kpn", sA, ang) * beta  # the adjoint, beta included
        second = jnp.einsum("kab,k->ab", d2c, jnp.einsum("kpn,kpn->k", h, L))
        cross = jnp.zeros((n_par, n_par), dtype=second.dtype)
        for g, (_, dL, d2L) in zip(self.groups, jets):
            if g.local.size:
                delta = jnp.einsum("kpn,pnd->kd", h[g.terms], dL)  # (|g|, d)
                cross = cross.at[:, g.local].add(jnp.einsum("ka,kd->ad", dc[g.terms], delta))
                hbar = jnp.einsum("k,kpn->pn", c[g.terms], h[g.terms])
                block = jnp.einsum("pn,pnde->de", hbar, d2L)
                second = second.at[jnp.ix_(g.local, g.local)].add(block)
        H = H + 2.0 * jnp.real(second + cross + cross.T)
        return H, jnp.sum(u * beta, axis=1), jnp.sum(weights * intensity)

    def _event_rows(self, masses):
        model = self.model
        return lambda full, k: model._term_lineshape_row(full, masses, k)

    def _over_events(self, p, cache, alpha, beta_of_intensity, weight_of_events, by_resonance=False):
        """The chunk moments summed over an event cache (padded to whole chunks with zero weight).

        ``by_resonance``: split every helicity state into one state per resonance
        (term k contributes to state (R, s) only when it belongs to R), so that the
        chunk's "intensity" is the incoherent sum sum_R sum_s |A_R,s|^2 of the
        fit fractions' numerators.
        """
        model = self.model
        coupling = self._couplings(p)
        n = int(cache.weights.shape[-1])
        chunk = min(self.chunk, n)
        n_chunks = -(-n // chunk)
        pad = n_chunks * chunk - n

        def blocks(x):  # (..., n) -> (n_chunks, ..., chunk), padded by copies of the first event
            if pad:
                x = jnp.concatenate([x, jnp.repeat(x[..., :1], pad, axis=-1)], axis=-1)
            x = x.reshape(x.shape[:-1] + (n_chunks, chunk))
            return jnp.moveaxis(x, -2, 0)

        w = cache.weights
        if pad:
            w = jnp.concatenate([w, jnp.zeros(pad, w.dtype)])
        w = w.reshape(n_chunks, chunk)
        ang = (cache.ang_re + 1j * cache.ang_im)
        if cache.folded:
            ang = ang[:, None]  # one "permutation", lineshape 1
        else:
            ang = ang.reshape((model.n_terms, self.n_perm) + ang.shape[1:])
        parts = (blocks(cache.masses), blocks(ang), w)

        split = None
        if by_resonance:
            split = jnp.asarray(model.term_resonances.T, dtype=ang.dtype)  # (K, R)

        def one(part):
            masses, a, wc = part
            if split is not None:  # (K, P, S, n) -> (K, P, R * S, n)
                a = (a[:, :, None] * split[:, None, :, None, None]).reshape(
                    a.shape[:2] + (split.shape[1] * a.shape[2], a.shape[3]))
            if cache.folded:
                jets = [(jnp.ones((1, chunk), a.dtype), jnp.zeros((1, chunk, g.local.size), a.dtype),
                         jnp.zeros((1, chunk, g.local.size, g.local.size), a.dtype)) for g in self.groups]
            else:
                jets = self._lineshape_jets(p, self._event_rows(masses))
            return self._moments(p, coupling, jets, a, None,
                                 None if alpha is None else (lambda i: alpha(wc, i)),
                                 lambda i: beta_of_intensity(wc, i), weight_of_events(wc))

        H, g, s = jax.lax.map(one, parts)
        return H.sum(0), g.sum(0), s.sum()

    def _over_bins(self, p, cache):
        """(N, dN, d2N) of a binned normalisation, from its pseudo-events."""
        model = self.model
        coupling = self._couplings(p)
        ang = (cache.pseudo_re + 1j * cache.pseudo_im)  # (K, 3, S, n_bins)
        jets = self._lineshape_jets(p, lambda full, k: cache.taylor_lineshapes(model, full, scaled=True, term=k))
        n_bins = ang.shape[-1]
        omega = jnp.full(n_bins, 1.0 / cache.weights[0])
        H, g, s = self._moments(p, coupling, jets, ang, cache.pseudo_sign, None,
                                lambda i: omega, omega)
        return s, g, H

    # --- the Hessians -------------------------------------------------------------

    def data_hessian(self, p, data_cache):
        """Hessian of -sum_i w_i ln I(x_i)."""
        H, _, _ = self._over_events(p, data_cache, lambda w, i: w / i**2, lambda w, i: -w / i,
                                    lambda w: w)
        return H

    def log_normalisation_hessian(self, p, mc_cache):
        """Hessian of ln N(p) (model.normalisation) over any normalisation cache."""
        model = self.model
        if mc_cache.normalisation_matrix is not None:
            return jax.hessian(lambda q: jnp.log(model.normalisation(q, mc_cache)))(p)
        if hasattr(mc_cache, "pseudo_re"):
            N, dN, d2N = self._over_bins(p, mc_cache)
        else:
            N, dN, d2N = self.intensity_sum(p, mc_cache)
        return d2N / N - jnp.outer(dN, dN) / N**2

    def intensity_sum(self, p, cache):
        """(S, dS, d2S) of S = sum_n w_n I(x_n) over an event cache."""
        d2S, dS, S = self._over_events(p, cache, None, lambda w, i: w, lambda w: w)
        return S, dS, d2S

    def fraction_sum(self, p, gen_cache):
        """(SF, dSF, d2SF) of the sum of fit fractions SF = S / N over a generator-level event cache.

        S = sum_n w_n sum_R sum_s |A_R,s|^2 (the diagonal fractions' numerators) and
        N = sum_n w_n I_n, each with its exact derivatives from :meth:`_over_events`;
        then dSF = dS / N - S dN / N^2 and
        d2SF = d2S / N - (dS dN^T + dN dS^T) / N^2 - S d2N / N^2 + 2 S dN dN^T / N^3.
        """
        N, dN, d2N = self.intensity_sum(p, gen_cache)
        d2S, dS, S = self._over_events(p, gen_cache, None, lambda w, i: w, lambda w: w, by_resonance=True)
        sf = S / N
        dsf = dS / N - S * dN / N**2
        cross = jnp.outer(dS, dN)
        d2sf = d2S / N - (cross + cross.T) / N**2 - S * d2N / N**2 + 2.0 * S * jnp.outer(dN, dN) / N**3
        return sf, dsf, 0.5 * (d2sf + d2sf.T)

    def __call__(self, p, data_cache, mc_cache):
        """Exact Hessian of ``model.nll(p, data_cache, mc_cache)``."""
        H = self.data_hessian(p, data_cache)
        H = H + jnp.sum(data_cache.weights) * self.log_normalisation_hessian(p, mc_cache)
        return 0.5 * (H + H.T)


__all__ = ["CHUNK", "StructuredHessian"]
