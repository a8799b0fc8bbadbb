"""`fastsim generate` and the CLI plumbing shared by both tools."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.fastsim_app import app
from fastsim.events import JPSI_GAMMA_KK, read_events

runner = CliRunner()


def test_generate_writes_accepted_events(tmp_path):
    out = tmp_path / "mc.root"
    res = runner.invoke(app, ["generate", "--n", "5000", "--out", str(out), "--seed", "4",
                              "--chunk-size", "3000"])
    assert res.exit_code == 0, res.output
    assert "wrote 5000 events" in res.output
    assert "acceptance x efficiency" in res.output and "events/s" in res.output
    assert len(read_events(out, JPSI_GAMMA_KK)) == 5000  # no --model: J/psi -> gamma K+ K-


def test_generate_same_seed_same_file(tmp_path):
    for name in ("a", "b"):
        res = runner.invoke(app, ["generate", "--n", "1000", "--out", str(tmp_path / f"{name}.npz"),
                                  "--seed", "2", "--detector", "none"])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/x.csv"], "unknown event-file format '.csv'"),
    (["--out", "{tmp}/x.npz", "--detector", "{tmp}/missing.yaml"], "no such detector card"),
])
def test_generate_bad_input_is_one_line_error(tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    res = runner.invoke(app, ["generate", "--n", "10", *args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_generate_for_a_model_card_writes_its_final_state(tmp_path):
    """D0 -> K- pi+ pi0 from its card: the card's columns, readable with the card's reaction."""
    from pwa.card import load_model_card

    card = Path(__file__).resolve().parents[1] / "models" / "d0_kpipi0.yaml"
    out = tmp_path / "d0.parquet"
    res = runner.invoke(app, ["generate", "--model", str(card), "--n", "3000", "--out", str(out),
                              "--seed", "4", "--chunk-size", "5000"])
    assert res.exit_code == 0, res.output
    assert "wrote 3000 events of D0 -> K- pi+ pi0" in res.output
    import pyarrow.parquet as pq

    assert pq.read_table(out).column_names == [f"{p}_{c}" for p in ("Km", "pip", "pi0")
                                               for c in ("E", "px", "py", "pz")]
    reaction = load_model_card(card).reaction.to_reaction()
    ev = read_events(out, reaction)
    assert len(ev) == 3000 and ev.momenta.shape == (3000, 3, 4)
    # The same events as the library call with the same seed.
    from fastsim.events import Detector, conventional_mc, load_detector_card

    ref = conventional_mc(3000, Detector(load_detector_card("default")), reaction=reaction, seed=4,
                          chunk_size=5000)
    np.testing.assert_allclose(ev.momenta, ref.momenta, rtol=0, atol=0)


@pytest.mark.parametrize("card_text, message", [
    (None, "no such model card"),
    ("reaction:\n  parent: D0\n  final_state: {Km: K-, pip: pi+, pi0: pi0}\n"
     "  chains: [D0 -> Kst pip; Kst -> Km pi0x]\nresonances: []\nreference: x\n",
     "field reaction: chain"),
])
def test_generate_bad_model_card_is_one_line_error(tmp_path, card_text, message):
    card = tmp_path / "card.yaml"
    if card_text is not None:
        card.write_text(card_text)
    out = tmp_path / "x.npz"
    res = runner.invoke(app, ["generate", "--model", str(card), "--n", "10", "--out", str(out)])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert text.startswith("error: ") and str(card) in text and message in text
    assert "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize("module", ["cli.fastsim_app", "cli.pwa_app"])
def test_help_imports_no_heavy_framework(module):
    """`--help` must stay instant: neither torch nor JAX may be imported for it."""
    code = (f"import sys; sys.argv=['x','--help']\nimport {module} as m\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            "heavy=[k for k in ('torch','jax') if k in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_generate_with_a_detector_that_accepts_nothing_stops_with_one_line(tmp_path):
    card = Path(__file__).resolve().parents[1] / "models" / "d0_kpipi0.yaml"
    dead = tmp_path / "dead.yaml"
    dead.write_text("charged: {pt_min: 5.0}\n")
    out = tmp_path / "x.npz"
    res = runner.invoke(app, ["generate", "--model", str(card), "--detector", str(dead), "--n", "100",
                              "--out", str(out), "--chunk-size", "250000"])
    assert res.exit_code == 2
    assert f"error: {dead}: 0 of 1000000 generated" in " ".join(res.output.split())
    assert "Traceback" not in res.output and not out.exists()


def test_generate_weights_a_narrow_resonance_and_the_weights_integrate_phase_space(tmp_path):
    """models/r0.yaml: the phi (4 MeV) gets a Breit-Wigner proposal and flat / proposal weights; at generator
    level the weighted sample reproduces flat phase space (the mean of a smooth function and of the phi-peaked
    pair-mass indicator agree with flat events within errors), while --flat writes no weights."""
    from fastsim.events.nbody import NBodyPhaseSpace
    from pwa.card import load_model_card

    reaction = load_model_card("models/r0.yaml").reaction.to_reaction()
    weighted, flat = tmp_path / "w.npz", tmp_path / "f.npz"
    for path, flag in ((weighted, "--weighted"), (flat, "--flat")):
        res = runner.invoke(app, ["generate", "--model", "models/r0.yaml", "--n", "40000", "--out", str(path),
                                  "--detector", "none", "--seed", "5", flag])
        assert res.exit_code == 0, res.output
        assert ("Breit-Wigner proposals phi (1.02, 0.004 GeV)" in res.output) == (flag == "--weighted")
    ev_w, ev_f = read_events(weighted, reaction), read_events(flat, reaction)
    assert ev_f.weights is None and ev_w.weights is not None and np.all(ev_w.weights > 0)
    ref = NBodyPhaseSpace(reaction).sample(400_000, np.random.default_rng(9))

    def near_phi(m):  # the share of events with m(Kp1 Km1) within 10 MeV of the phi
        p = m[:, 0] + m[:, 1]
        mass = np.sqrt(np.maximum(p[:, 0] ** 2 - np.sum(p[:, 1:] ** 2, axis=1), 0.0))
        return (np.abs(mass - 1.02) < 0.01).astype(float)

    w = ev_w.weights
    for f in (near_phi, lambda m: m[:, 0, 0]):
        a, b = f(ev_w.momenta), f(ref)
        mean_w = np.sum(w * a) / np.sum(w)
        err_w = np.sqrt(np.sum((w * (a - mean_w)) ** 2)) / np.sum(w)
        assert abs(mean_w - b.mean()) < 4 * np.hypot(err_w, b.std() / np.sqrt(len(b)))
    # the peaked sample puts far more events under the phi than flat phase space
    assert near_phi(ev_w.momenta).mean() > 10 * near_phi(ref).mean()
