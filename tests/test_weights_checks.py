"""Weights that cannot be right are refused, and statistics too small for the
model are reported: event files and in-memory samples with all-zero, non-finite
or non-positive-sum weights, empty samples, and the effective-size warning of
a fit (FitResult.warnings, result.json and report.md)."""

import json

import numpy as np
import pytest

from fastsim.events import JPSI_GAMMA_KK, EventFileError, Events, read_events, write_events
from pwa.amplitude import Model
from pwa.errors import FitError
from pwa.fit import effective_size_warning, fit
from pwa.fit_result import FitConfig
from pwa.problem import FitProblem, effective_size
from pwa.report import fit_report_markdown, write_fit_outputs

from _shared import TWO_STATE_CARD, flat_events, without_floats

N = 400


@pytest.fixture(scope="module")
def model():
    return Model.from_card(without_floats(TWO_STATE_CARD))


def reweighted(events: Events, weights) -> Events:
    return Events(events.momenta, np.broadcast_to(np.asarray(weights, float), (len(events),)).copy(),
                  reaction=events.reaction)


BAD_WEIGHTS = [
    (-1.0, r"sums? to -400 \(400 events\); expected a positive sum \(negative weights are allowed"),
    (0.0, r"zero in all 400 events; expected a positive sum"),
]


@pytest.mark.parametrize("fmt", [".npz", ".parquet"])
@pytest.mark.parametrize("weight, pattern", BAD_WEIGHTS)
def test_event_file_with_unusable_weights_is_refused(tmp_path, fmt, weight, pattern):
    path = write_events(tmp_path / f"data{fmt}", reweighted(flat_events(N, 1), weight))
    with pytest.raises(EventFileError, match=pattern) as err:
        read_events(path, JPSI_GAMMA_KK)
    message = str(err.value)
    assert message.startswith(f"{path}: column 'weight' ") and "\n" not in message


def test_event_file_with_negative_weights_and_positive_sum_is_read(tmp_path):
    w = np.where(np.arange(N) % 4 == 0, -1.0, 1.0)  # sideband subtraction: sum 200
    back = read_events(write_events(tmp_path / "d.npz", reweighted(flat_events(N, 1), w)), JPSI_GAMMA_KK)
    np.testing.assert_array_equal(back.weights, w)


@pytest.mark.parametrize("label", ["data", "normalisation MC"])
@pytest.mark.parametrize("weight, pattern", BAD_WEIGHTS + [(np.nan, r"have 400 of 400 value\(s\) NaN or inf")])
def test_fit_problem_refuses_unusable_weights(model, label, weight, pattern):
    good, bad = flat_events(N, 1), reweighted(flat_events(N, 2), weight)
    data, mc = (bad, good) if label == "data" else (good, bad)
    with pytest.raises(FitError, match=pattern) as err:
        FitProblem.build(model, data, mc, quadrature_panels=20)
    assert str(err.value).startswith(f"{label}: the weights ") and "\n" not in str(err.value)


@pytest.mark.parametrize("label", ["data", "normalisation MC"])
def test_fit_problem_refuses_an_empty_sample(model, label):
    good, empty = flat_events(N, 1), flat_events(N, 2).subset(slice(0, 0))
    data, mc = (empty, good) if label == "data" else (good, empty)
    with pytest.raises(FitError, match=f"^{label}: the sample holds no events; expected at least one$"):
        FitProblem.build(model, data, mc, quadrature_panels=20)


def test_effective_size():
    assert effective_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_size(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_size(np.array([1.0, -1.0, 2.0])) == pytest.approx(4.0 / 6.0)
    assert effective_size_warning(10.0, 10) is None
    assert "fewer than the 11 free parameters" in effective_size_warning(10.0, 11)


@pytest.fixture(scope="module")
def tiny_fit(model):
    """Data whose weight sits on one event: about 1 effective event for several parameters."""
    w = np.full(N, 1e-3)
    w[0] = 10.0
    data, mc = reweighted(flat_events(N, 3), w), flat_events(4000, 4)
    problem = FitProblem.build(model, data, mc, quadrature_panels=20)
    return problem, data, mc, fit(model, data, mc, FitConfig(quadrature_panels=20), problem=problem)


def test_small_effective_size_is_a_warning_of_the_result(model, tiny_fit):
    problem, _, _, result = tiny_fit
    assert problem.effective_data_events == pytest.approx(effective_size(problem.data_cache.weights))
    assert problem.effective_data_events == pytest.approx(10.399**2 / (100 + 399e-6))
    (warning,) = result.warnings
    assert warning == (f"the data have {problem.effective_data_events:.3g} effective events "
                       f"((sum w)^2 / sum w^2), fewer than the {model.n_free} free parameters: the errors "
                       "and the convergence are not meaningful")
    assert result.to_dict()["warnings"] == [warning]
    assert json.loads(result.to_json())["warnings"] == [warning]
    text = str(result).splitlines()
    assert text[-1] == f"warning: {warning}"
    # The portable copy (worker processes) keeps the effective size.
    assert problem.portable().build().effective_data_events == problem.effective_data_events


def test_warnings_reach_result_json_and_report(tmp_path, model, tiny_fit):
    problem, data, mc, result = tiny_fit
    extra = "normalisation MC does not cover the data: 40 % of data events ..."
    paths = write_fit_outputs(tmp_path, result, problem, data=data, mc=mc, plots=False, warnings=[extra])
    d = json.loads(paths[0].read_text())
    assert d["warnings"] == [result.warnings[0], extra]
    report = paths[1].read_text()
    section = report.split("## Warnings\n\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines() == [f"- {result.warnings[0]}", f"- {extra}"]


def test_no_warnings_no_section(model):
    data, mc = flat_events(2000, 5), flat_events(4000, 6)
    result = fit(model, data, mc, FitConfig(quadrature_panels=20))
    assert result.warnings == () and result.to_dict()["warnings"] == []
    assert "warning" not in str(result)
    assert "## Warnings" not in fit_report_markdown(result, model)
