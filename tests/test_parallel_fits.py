"""Many independent fits on executors: multi-start, fraction and LASSO scans.

Parallel starts must reproduce the serial multi-start (same starts, same
minima); parallel scan points are independent fits from the card's values,
which agree with the serial warm-started chain where every point has one
minimum.
"""

import pickle
import time

import numpy as np
import pytest

from fastsim.events import Detector, Events, conventional_mc, load_detector_card, JPSI_GAMMA_KK
from pwa.amplitude import Model
from pwa.fit import fit
from pwa.fit_result import FitConfig
from pwa.problem import FitProblem
from pwa.workers import worker_minimizer, worker_problem
from pwa.scans import lasso_scan, scan_fraction
from pwa.toys import iter_toys

PANELS = 40


@pytest.fixture(scope="module")
def model(small_card):
    return Model.from_card(small_card)


@pytest.fixture(scope="module")
def samples(model):
    det = Detector(load_detector_card("default"))
    data = Events.concatenate(list(iter_toys(model, 2000, det, seed=21)))
    return data, conventional_mc(15_000, det, reaction=JPSI_GAMMA_KK, seed=22)


@pytest.fixture(scope="module")
def problem(model, samples):
    return FitProblem.build(model, *samples, quadrature_panels=PANELS)


@pytest.fixture(scope="module")
def scheduler():
    """Address of a two-worker LocalCluster shared by the Dask tests."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_portable_problem_pickles_and_is_rebuilt_once(problem, model):
    portable = problem.portable()
    again = pickle.loads(pickle.dumps(portable))
    assert again.digest == portable.digest == problem.portable().digest
    rebuilt = worker_problem(again)
    assert worker_problem(portable) is rebuilt  # memo: one rebuild per process
    x = model.initial_values()
    assert float(rebuilt.nll(x)) == pytest.approx(float(problem.nll(x)), rel=1e-12)
    assert rebuilt.model.card.source == model.card.source
    config = FitConfig(sf_lambda=1.0)
    a, b = worker_minimizer(portable, config), worker_minimizer(portable, FitConfig(sf_lambda=2.0))
    assert a._vg is b._vg  # one compiled objective per structure
    assert float(a.args[-1][1]) == 1.0 and float(b.args[-1][1]) == 2.0


def test_multi_start_on_process_pool_equals_serial(model, samples, problem):
    config = FitConfig(starts=4, seed=5, quadrature_panels=PANELS)
    t0 = time.perf_counter()
    serial = fit(model, *samples, config, problem=problem)
    t1 = time.perf_counter()
    pooled = fit(model, *samples, config, problem=problem, executor="process", workers=2)
    t2 = time.perf_counter()
    print(f"\nmulti-start, 4 starts: serial {t1 - t0:.1f} s, process pool (2 workers) {t2 - t1:.1f} s")
    assert serial.converged and pooled.converged
    assert pooled.nll == pytest.approx(serial.nll, abs=1e-8)
    assert len(pooled.minima) == len(serial.minima)
    np.testing.assert_allclose([f for f, _ in pooled.minima], [f for f, _ in serial.minima], atol=1e-8)
    np.testing.assert_allclose(pooled.values, serial.values, atol=1e-8)
    np.testing.assert_allclose(pooled.errors, serial.errors, rtol=1e-6)


def test_unknown_executor_fails_before_fitting(model, samples, problem):
    with pytest.raises(ValueError, match="unknown executor 'mpi'; choose one of serial, process, dask"):
        fit(model, *samples, FitConfig(starts=2), problem=problem, executor="mpi")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fraction_scan_on_dask_matches_serial(problem, scheduler):
    targets = [0.9, 1.0, 1.1]
    config = FitConfig(sf_lambda=1.0, quadrature_panels=PANELS)
    serial = scan_fraction(problem, targets, config)
    seen = []
    parallel = scan_fraction(problem, targets, config, executor="dask", scheduler=scheduler,
                             progress=lambda p: seen.append(p.setting))
    assert sorted(seen) == targets
    assert [p.setting for p in parallel] == targets
    sf = [p.result.sum_of_fractions for p in parallel]
    assert sf[0] < sf[1] < sf[2]  # a strong constraint follows its target
    for s, p in zip(serial, parallel):
        assert p.result.converged and np.isfinite(p.result.nll)
        # One minimum per target here, so the independent fits meet the serial chain.
        assert p.result.nll == pytest.approx(s.result.nll, abs=1e-3)
        assert p.result.sum_of_fractions == pytest.approx(s.result.sum_of_fractions, abs=1e-4)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_lasso_scan_on_dask_matches_serial(model, samples, scheduler):
    lambdas = [300.0, 1.0]  # scanned in ascending order
    config = FitConfig(quadrature_panels=PANELS)
    path_s, best_s = lasso_scan(model, *samples, lambdas, config)
    path_p, best_p = lasso_scan(model, *samples, lambdas, config, executor="dask", scheduler=scheduler)
    assert [p.lam for p in path_p] == [1.0, 300.0]
    for s, p in zip(path_s, path_p):
        assert np.isfinite(p.aic) and np.isfinite(p.bic) and np.isfinite(p.result.nll)
        assert p.selected == s.selected
        assert p.refit_nll == pytest.approx(s.refit_nll, abs=1e-3)
        assert p.n_parameters == s.n_parameters
    assert best_p.lam == best_s.lam and best_p.selected == best_s.selected


def test_cli_fit_runs_starts_on_a_process_pool(tmp_path, small_card, model, samples):
    import json

    import yaml
    from typer.testing import CliRunner

    from cli.pwa_app import app
    from fastsim.events import write_events

    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump(small_card, sort_keys=False))
    write_events(tmp_path / "data.parquet", samples[0])
    write_events(tmp_path / "mc.parquet", samples[1])
    common = ["fit", "--model", str(card), "--data", str(tmp_path / "data.parquet"),
              "--mc", str(tmp_path / "mc.parquet"), "--no-plots", "--starts", "3"]
    runner = CliRunner()
    bad = runner.invoke(app, [*common, "--executor", "mpi"])
    assert bad.exit_code == 2
    text = " ".join(bad.output.replace("│", " ").split())  # the message as rich wraps it in a box
    assert "'--executor': unknown executor 'mpi'; choose one of serial, process, dask" in text
    res = runner.invoke(app, [*common, "--executor", "process", "--workers", "2", "--out", str(tmp_path / "fit")])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert d["converged"] and d["config"]["starts"] == 3 and len(d["distinct_minima"]) >= 1
