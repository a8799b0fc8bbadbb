"""The binned normalisation (pwa.binned) against the exact per-event sum.

Floating f2'(1525) mass and width (and a Flatte f0(980) mass and coupling in the three-resonance card): ln N,
its gradient and its Hessian agree with the exact sum to 1e-7 with 2000 bins, the error falls at least
eightfold from 100 to 200 bins (third order; below ~1e-8 rounding takes over), and a fit with the binned normalisation lands on the exact
fit's minimum to a small fraction of the MC-statistics error; a binning too coarse for the lineshape is caught at
its minimum by the exact sum's gradient and refitted exactly.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _shared import SMALL_CARD, TWO_STATE_CARD, flat_events, without_floats
from fastsim.events import Detector, Events
from pwa import Model
from pwa.binned import binned_cache, eligibility, with_binned_normalisation
from pwa.errors import FitError
from pwa.fit import fit
from pwa.fit_result import FitConfig
from pwa.mc_statistics import mc_statistics_of_fit
from pwa.problem import FitProblem
from pwa.toys import iter_toys


def floating_small_card() -> dict:
    card = copy.deepcopy(SMALL_CARD)
    for r in card["resonances"]:
        r["float"] = [k for k in ("mass", "width", "g_pipi") if k in r["lineshape"]]
    return card


@pytest.fixture(scope="module")
def mc():
    return flat_events(60_000, 71)


@pytest.mark.parametrize("card", [TWO_STATE_CARD, floating_small_card()], ids=["bw", "flatte-and-bw"])
def test_binned_normalisation_matches_the_exact_sum(card, mc):
    model = Model.from_card(card)
    exact = model.precompute(mc)
    p = jnp.asarray(model.initial_values() * (1 + 0.01 * np.cos(np.arange(model.n_free))))

    @jax.jit
    def ln_norm(q, cache):
        return jnp.log(model.normalisation(q, cache))

    errors = {}
    for n_bins in (100, 200, 2000):
        binned = binned_cache(model, exact, n_bins)
        errors[n_bins] = abs(float(ln_norm(p, binned) - ln_norm(p, exact)))
        if n_bins == 2000:
            g_e, g_b = (np.asarray(jax.jit(jax.grad(ln_norm))(p, c)) for c in (exact, binned))
            h_e, h_b = (np.asarray(jax.jit(jax.hessian(ln_norm))(p, c)) for c in (exact, binned))
            assert errors[n_bins] < 1e-7
            np.testing.assert_allclose(g_b, g_e, rtol=0, atol=1e-6 * np.abs(g_e).max())
            np.testing.assert_allclose(h_b, h_e, rtol=0, atol=1e-5 * np.abs(h_e).max())
    assert errors[200] < errors[100] / 8, errors  # third order (observed 15x)


def test_binned_fit_lands_on_the_exact_minimum():
    model = Model.from_card(TWO_STATE_CARD)
    mc = flat_events(25_000, 73)
    data = Events.concatenate(list(iter_toys(model, 2000, Detector(None), seed=72)))
    config = FitConfig(quadrature_panels=40)
    problem = FitProblem.build(model, data, mc, quadrature_panels=40)
    exact = fit(model, None, None, config, problem=problem)
    binned = fit(model, None, None, config, problem=with_binned_normalisation(problem))
    assert exact.converged and binned.converged
    mc_error = mc_statistics_of_fit(problem, exact, mc=mc)
    shift = np.abs(np.diag(binned.fractions) - np.diag(exact.fractions))
    assert np.all(shift < 0.01 * np.diag(mc_error.fraction_errors)), (shift, np.diag(mc_error.fraction_errors))
    assert np.all(np.abs(binned.values - exact.values) < 0.01 * exact.errors)
    assert abs(binned.nll - exact.nll) < 1e-3
    # checked against the exact sum at its minimum, and kept: the reported NLL is the exact one there
    check = binned.binned_check
    assert check is not None and not check.refitted and check.max_shift_sigma < check.tolerance
    assert binned.nll == pytest.approx(float(problem.nll(jnp.asarray(binned.values))), abs=1e-9)
    assert binned.objective == pytest.approx(check.objective_exact, abs=1e-12)
    assert exact.binned_check is None

    # Eight bins cannot hold the lineshape: the binned minimum is off, the check sees it and refits
    # with the exact sum from there, landing on the exact minimum.
    coarse = fit(model, None, None, config, problem=with_binned_normalisation(problem, 8))
    check = coarse.binned_check
    assert check.refitted and check.max_shift_sigma > check.tolerance, check
    assert any("refitted with the exact sum" in w for w in coarse.warnings)
    assert coarse.converged
    assert np.all(np.abs(coarse.values - exact.values) < 0.01 * exact.errors)
    assert coarse.nll == pytest.approx(exact.nll, abs=1e-6)
    assert "binned normalisation: exact-sum Newton shift" in str(coarse)
    assert coarse.to_dict()["binned_check"]["refit_iterations"] == check.refit_iterations


def test_what_cannot_be_binned_is_refused(mc):
    fixed = Model.from_card(without_floats(TWO_STATE_CARD))
    assert "no lineshape floats" in eligibility(fixed)
    with pytest.raises(FitError, match="binned normalisation: no lineshape floats"):
        binned_cache(fixed, mc)


def test_pwa_fit_binned_mc_from_the_command_line(tmp_path, capsys):
    import json

    import yaml

    from cli import pwa_app
    from fastsim.events import write_events

    model = Model.from_card(TWO_STATE_CARD)
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(TWO_STATE_CARD, sort_keys=False))
    write_events(tmp_path / "data.npz", Events.concatenate(list(iter_toys(model, 1000, Detector(None), seed=74))))
    write_events(tmp_path / "mc.npz", flat_events(12_000, 75))
    try:
        code = pwa_app.main(["fit", "--model", str(tmp_path / "card.yaml"), "--data", str(tmp_path / "data.npz"),
                             "--mc", str(tmp_path / "mc.npz"), "--out", str(tmp_path / "fit"), "--binned-mc", "1000",
                             "--starts", "1", "--no-plots", "--no-mc-statistics"])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code in (0, None, 3), out.err
    assert "binned in 1000 mass bins" in out.err
    result = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert "f2'(1525):mass" in result["parameters"]
