"""Toy-based significance of a resonance: the likelihood-ratio test calibrated by pseudo-experiments.

Wilks' theorem (:func:`pwa.fit.significances`) is asymptotic: for a
resonance whose several complex couplings vanish under the null hypothesis,
with its phases undefined there and a finite data set, the distribution of
2 Delta NLL need not be chi2 with k degrees of freedom. Here it is measured:

1. H1 is the fitted model, H0 the model without the resonance R, fitted to
   the data: the observed t_obs = NLL_H0 - NLL_H1 (the ``delta_nll`` of
   :class:`~pwa.fit_result.Significance`).
2. Each toy draws N = len(data) events, with replacement, from the
   normalisation MC with probabilities proportional to v_j p0(x_j), p0 the
   fitted H0 density: v_j I0(x_j) for signal only, v_j ((1 - f_b) I0_j / N0
   + f_b B_j) with a background term (B on the MC: ``mc_density``). The MC is
   a detector-level sample, so the toys carry the acceptance and resolution
   of the data without a detector model, for any reaction and for flow MC
   alike. The toys are fitted with the same MC as normalisation: the overlap
   of a toy with it is negligible while N is small against the MC's size,
   so an MC of fewer than :data:`MIN_MC_PER_EVENT` events per data event is
   refused.
3. Both hypotheses are fitted to each toy (H0 from its fitted values, H1
   from the data fit's), t_i = NLL_H0 - NLL_H1.
4. p = (1 + #{t_i >= t_obs}) / (1 + n), the conservative estimate that is
   never zero; Z = Phi^-1(1 - p/2), the convention of
   :func:`pwa.fit.significance_from_delta_nll`, so that toy and Wilks
   significances compare directly. Toys whose fits fail or do not converge
   are counted and left out.

Unweighted data only: the toys of sideband-subtracted data would have to
reproduce the signed-weight sample; for those the scaled Wilks test of
:func:`pwa.fit.significances` is the one offered (checked by null toys in
``experiments/results/background/significance.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import jax.numpy as jnp
import numpy as np
from scipy import stats

from fastsim.events import Events

from .amplitude import Model
from .background import BackgroundModel
from .errors import FitError
from .fit import fit, significance_from_delta_nll
from .fit_result import FitConfig, FitResult
from .problem import FitProblem

#: The MC must hold at least this many events per data event (module docstring, step 2).
MIN_MC_PER_EVENT = 10


@dataclass(frozen=True)
class ToySignificance:
    """The toy-calibrated likelihood-ratio test of one resonance.

    Attributes:
        resonance: its name.
        delta_nll: observed NLL_H0 - NLL_H1 on the data.
        n_parameters: k, the free parameters it removes.
        n_toys: toys whose fits converged (used).
        n_failed: toys left out (a fit failed or did not converge).
        n_above: toys with t_i >= delta_nll.
        p_value: (1 + n_above) / (1 + n_toys).
        sigma: Z = Phi^-1(1 - p/2); a lower bound when n_above is 0.
        wilks_p_value, wilks_sigma: the asymptotic (chi2_k) values for the same delta_nll.
        toy_delta_nll: (n_toys,) t_i of the used toys.
        toy_wilks_mean: mean of 2 t_i (chi2_k: k).
    """

    resonance: str
    delta_nll: float
    n_parameters: int
    n_toys: int
    n_failed: int
    n_above: int
    p_value: float
    sigma: float
    wilks_p_value: float
    wilks_sigma: float
    toy_delta_nll: np.ndarray
    toy_wilks_mean: float

    @property
    def lower_bound(self) -> bool:
        """True when no toy reached the observed value: sigma is then only a lower bound."""
        return self.n_above == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["toy_delta_nll"] = np.asarray(self.toy_delta_nll).tolist()
        d["lower_bound"] = self.lower_bound
        return d

    def __str__(self) -> str:
        bound = ">" if self.lower_bound else " "
        return (f"{self.resonance:<14} {bound}{self.sigma:5.2f} sigma from {self.n_toys} toys "
                f"(p = {self.p_value:.3g}; Wilks {self.wilks_sigma:.2f} sigma, p = {self.wilks_p_value:.3g}; "
                f"toy mean 2 Delta NLL {self.toy_wilks_mean:.2f} for k = {self.n_parameters})")


def _null_probabilities(problem: FitProblem, p: np.ndarray) -> np.ndarray:
    """(n_mc,) the fitted H0 density times the MC weights on the MC events, normalised to 1."""
    model = problem.model
    q = problem.signal_parameters(np.asarray(p))
    intensity = np.asarray(model.intensity(jnp.asarray(q), problem.mc_cache))
    v = np.asarray(problem.mc_cache.weights)
    density = intensity / float(np.sum(v * intensity) / np.sum(v))
    if problem.background is not None:
        fb = problem.background_fraction(np.asarray(p))
        density = (1.0 - fb) * density + fb * problem.background.mc_density
    w = v * density
    return w / w.sum()


def toy_significances(model: Model, data: Events, mc: Events, result: FitResult, n_toys: int,
                      config: FitConfig = FitConfig(), *, names: Sequence[str] | None = None, seed: int = 0,
                      background: BackgroundModel | None = None,
                      progress: Callable[[str, int], None] | None = None) -> list[ToySignificance]:
    """Toy-calibrated significance of each resonance in ``names`` (module docstring).

    Args:
        model: the model ``result`` was fitted with (H1).
        data, mc: the fit's (unweighted) data and its normalisation MC (per-event, weights >= 0).
        result: a plain-NLL fit of ``model`` (no fraction-sum or LASSO term).
        n_toys: pseudo-experiments per resonance.
        config: fit options of the toy fits (one start each).
        names: the resonances to test (default: every one).
        seed: seed of the toys (each resonance's toys use their own stream of it).
        background: the background term ``result`` was fitted with, with its density on the
            MC (``mc_density``, as :func:`pwa.background.background_model` gives).
        progress: called with (resonance, number of its finished toys).

    Raises:
        FitError: weighted data, penalties, too small an MC, negative MC weights, a background
            term without its MC density, an unknown resonance, or a failed data refit.
    """
    names = list(model.resonance_names if names is None else names)
    if config.sf_lambda or config.lasso:
        raise FitError("the toy significance compares plain NLLs: switch off --sf-lambda and --lasso")
    if n_toys < 1:
        raise FitError(f"the toy significance needs at least one toy, got {n_toys}")
    for name in names:
        if name not in model.resonance_names:
            raise FitError(f"no resonance {name!r} in the model ({', '.join(model.resonance_names)})")
    if len(model.resonance_names) < 2:
        raise FitError("the model has one resonance: there is no reduced model to compare with")
    if np.any(data.weight_array != 1.0):
        raise FitError("the toy significance needs unweighted data (the toys are unweighted); for weighted "
                       "(e.g. sideband-subtracted) data use the scaled Wilks significance, --significance")
    if np.any(mc.weight_array < 0):
        raise FitError("the toy significance draws its toys from the MC and needs MC weights >= 0")
    if len(mc) < MIN_MC_PER_EVENT * len(data):
        raise FitError(f"the toy significance draws its toys from the normalisation MC: it needs at least "
                       f"{MIN_MC_PER_EVENT} MC events per data event, got {len(mc)} for {len(data)}")
    if background is not None and (background.mc_density is None or background.mc_density.shape != (len(mc),)):
        raise FitError("the toy significance with a background term needs the background density on the MC "
                       "(mc_density of pwa.background.background_model)")
    plain = replace(config, starts=1)
    if background is not None and background.float_fraction:
        background = background.with_fraction(float(np.clip(result.values[-1], 1e-6, 1 - 1e-6)))
    build = dict(quadrature_panels=config.quadrature_panels, gen_events=config.gen_events,
                 gen_seed=config.gen_seed, background=background)
    h1 = _Hypothesis(model, FitProblem.build(model, data, mc, **build), plain, result.values)
    fitted = Model.from_card(model.card_at(result.values[: model.n_free]))
    out = []
    for k, name in enumerate(names):
        h0_model = fitted.without(name)
        h0 = _Hypothesis(h0_model, FitProblem.build(h0_model, data, mc, **build), plain, None)
        data_h0 = h0.fit(h0.problem)
        if data_h0 is None:
            raise FitError(f"the fit without {name} to the data did not converge")
        h0.start = data_h0.values
        observed = data_h0.nll - result.nll
        rng = np.random.default_rng([seed, k])
        prob = _null_probabilities(h0.problem, data_h0.values)
        t, failed = [], 0
        for i in range(n_toys):
            idx = rng.choice(len(mc), size=len(data), p=prob)
            toy = mc.subset(idx)
            toy = Events(toy.momenta, None, reaction=toy.reaction)
            density = None if background is None else background.mc_density[idx]
            r0, r1 = h0.fit_toy(toy, density), h1.fit_toy(toy, density)
            if r0 is None or r1 is None:
                failed += 1
            else:
                t.append(r0.nll - r1.nll)
            if progress:
                progress(name, i + 1)
        if not t:
            raise FitError(f"no toy fit of the {name} significance converged ({n_toys} toys)")
        t = np.asarray(t)
        above = int(np.sum(t >= observed))
        p = (1 + above) / (1 + len(t))
        n_par = model.n_free - h0_model.n_free
        wilks_p, wilks_z = significance_from_delta_nll(observed, n_par)
        out.append(ToySignificance(name, float(observed), n_par, len(t), failed, above, float(p),
                                   float(stats.norm.isf(p / 2.0)), wilks_p, wilks_z, t, float(np.mean(2 * t))))
    return out


class _Hypothesis:
    """A model with its problem on the data and one compiled minimiser for its data and toy fits."""

    def __init__(self, model: Model, problem: FitProblem, config: FitConfig, start):
        self.model, self.problem, self.config, self.start = model, problem, config, start
        self.minimizer = problem.minimizer(config)

    def fit(self, problem: FitProblem) -> FitResult | None:
        """The converged fit of ``problem`` (same shapes as the data's), or None."""
        try:
            res = fit(self.model, None, None, self.config, problem=problem, x0=self.start,
                      minimizer=self.minimizer)
        except FitError:
            return None
        return res if res.converged else None

    def fit_toy(self, toy: Events, density: np.ndarray | None) -> FitResult | None:
        bm = None if density is None else replace(self.problem.background, density=density)
        return self.fit(replace(self.problem, data_cache=self.model.precompute(toy), background=bm))


__all__ = ["MIN_MC_PER_EVENT", "ToySignificance", "toy_significances"]
