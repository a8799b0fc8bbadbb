"""Bad inputs and faults across the ten commands (issue "Nothing silent, nothing lost").

Every case runs a command in this process through its real entry point
(``cli.fastsim_app.main`` / ``cli.pwa_app.main``, as the console scripts do)
and asserts:

* the exit code;
* exactly one ``error:`` line on stderr, naming the culprit (file, field or
  option) and what was expected;
* no traceback (an unexpected exception fails the test by propagating);
* no input file changed (every file of the shared inputs folder is hashed
  before and after).

Cases that need more than one command (resume, interrupted runs, kept
results) follow the table.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from cli import fastsim_app, pwa_app
from fastsim.events import JPSI_GAMMA_KK, Detector, Events, conventional_mc, load_detector_card, write_events
from fastsim.events.resources import shipped

ROOT = Path(__file__).resolve().parents[1]
FLOW = shipped("flow_besiii_like.pt")


def run(capsys, main, argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one command line."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), out.out, out.err


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(err: str) -> str:
    """The one ``error:`` line of stderr (asserting there is exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------
# Shared inputs (written once; the table checks that no case changes them)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, small_card) -> Path:
    """Cards, detector cards, event files and checkpoints, good and bad."""
    w = tmp_path_factory.mktemp("inputs")
    (w / "card.yaml").write_text(yaml.safe_dump(small_card, sort_keys=False))
    one = {**small_card, "resonances": small_card["resonances"][:1]}
    (w / "one.yaml").write_text(yaml.safe_dump(one, sort_keys=False))

    from pwa import Model, load_model_card
    from pwa.toys import iter_toys

    det = Detector(load_detector_card("default"))
    mc = conventional_mc(20_000, det, reaction=JPSI_GAMMA_KK, seed=1)
    write_events(w / "mc.npz", mc)
    model = Model.from_card(load_model_card(w / "card.yaml"))
    data = Events.concatenate(list(iter_toys(model, 1500, det, seed=2)))
    write_events(w / "data.npz", data)
    n = len(data)
    write_events(w / "data_wneg.npz", Events(data.momenta, -np.ones(n), reaction=JPSI_GAMMA_KK))
    write_events(w / "data_w0.npz", Events(data.momenta, np.zeros(n), reaction=JPSI_GAMMA_KK))
    write_events(w / "mc_wneg.npz", Events(mc.momenta, -np.ones(len(mc)), reaction=JPSI_GAMMA_KK))
    write_events(w / "data_few.npz", data.subset(slice(0, 5)))
    write_events(w / "mc_b.npz", mc.subset(slice(0, 3000)))  # a flat "background" sample
    cols = dict(np.load(w / "data.npz"))
    np.savez(w / "data_nokp.npz", **{k: v for k, v in cols.items() if k != "Kp_E"})
    nan = dict(cols)
    nan["Kp_px"] = nan["Kp_px"].copy()
    nan["Kp_px"][3] = np.nan
    np.savez(w / "data_nan.npz", **nan)
    heavy = dict(cols)
    heavy["Kp_E"] = heavy["Kp_E"] + 0.2  # K+ no longer on its mass shell
    np.savez(w / "data_offshell.npz", **heavy)
    np.savez(w / "data_zero.npz", **{k: v[:0] for k, v in cols.items()})
    (w / "empty.npz").write_bytes(b"")
    (w / "junk.parquet").write_bytes(b"PAR1 this is not parquet" * 10)
    (w / "data.csv").write_text("a,b\n1,2\n")

    # A normalisation MC of a much tighter detector than the data's.
    (w / "tight.yaml").write_text("charged: {cos_theta_max: 0.3}\nphoton: {barrel: {cos_theta_max: 0.3}}\n")
    tight = conventional_mc(20_000, Detector(load_detector_card(w / "tight.yaml")), reaction=JPSI_GAMMA_KK,
                            seed=3)
    write_events(w / "mc_tight.npz", tight)

    r0 = load_model_card(ROOT / "models" / "r0.yaml").reaction.to_reaction()
    from fastsim.events.nbody import NBodyPhaseSpace

    write_events(w / "four_kaons.npz", Events(NBodyPhaseSpace(r0).sample(200, np.random.default_rng(0)),
                                              reaction=r0))
    d0 = load_model_card(ROOT / "models" / "d0_kpipi0.yaml").reaction.to_reaction()
    write_events(w / "d0.npz", Events(NBodyPhaseSpace(d0).sample(200, np.random.default_rng(2)), reaction=d0))
    from fastsim.events import EventWriter

    with EventWriter(w / "four_kaons_described.npz", r0) as writer:  # records its reaction
        writer.write(Events(NBodyPhaseSpace(r0).sample(300, np.random.default_rng(1)), reaction=r0))
    pi0pi0 = load_model_card(ROOT / "models" / "jpsi_gamma_pi0pi0.yaml").reaction.to_reaction()
    with EventWriter(w / "pi0pi0.npz", pi0pi0) as writer:
        writer.write(Events(NBodyPhaseSpace(pi0pi0).sample(300, np.random.default_rng(3)), reaction=pi0pi0))
    # A (random) flow of the four-kaon reaction, in its tree coordinates.
    import torch

    from fastsim.checkpoint import save_checkpoint
    from fastsim.flow import SplineFlow
    from fastsim.tree_coords import TreeCoordinateMap

    tree = TreeCoordinateMap(r0)
    torch.manual_seed(0)
    four_flow = SplineFlow(n_layers=2, hidden=8, n_bins=4, n_dim=tree.n_dim, circular=tree.circular)
    save_checkpoint(w / "four_kaons_flow.pt", {"kind": "flow", "hyperparameters": four_flow.hyperparameters,
                                               "coordinates": tree.to_dict(), "reaction": r0.to_dict(),
                                               "model_state": four_flow.state_dict()})

    # Cards that do not validate.
    def card(name: str, **changes) -> None:
        raw = copy.deepcopy(small_card)
        for key, value in changes.items():
            if key.startswith("res0_"):
                raw["resonances"][0][key[5:]] = value
            elif key.startswith("res1_"):
                raw["resonances"][1][key[5:]] = value
            else:
                raw[key] = value
        (w / name).write_text(yaml.safe_dump(raw, sort_keys=False))

    card("bad_reference.yaml", reference="f0(500)")
    card("bad_coupling.yaml", res1_couplings={0: [6.0, 1.2], 3: [1.0, 0.0]})
    card("bad_spin.yaml", res1_spin=1)
    card("bad_lineshape.yaml", res1_lineshape={"type": "Gauss", "mass": 1.5, "width": 0.1})
    card("bad_width.yaml", res1_lineshape={"type": "BW", "mass": 1.5223, "width": -0.1})
    card("bad_typo.yaml", res1_couplngs={0: [1.0, 0.0]})
    card("bad_particle.yaml", reaction={"parent": "J/psi", "final_state": {"gamma": "gamma", "Kp": "K+",
                                                                             "Km": "K-minus"}})
    card("bad_chain.yaml", reaction={"parent": "J/psi", "final_state": {"gamma": "gamma", "Kp": "K+", "Km": "K-"},
                                     "chains": ["J/psi -> f gamma; f -> Kp Kp"]})
    card("bad_float.yaml", res1_float=["mass", "colour"])
    (w / "bad_yaml.yaml").write_text("reaction: {parent: J/psi\nresonances: [\n")
    (w / "bad_list.yaml").write_text("- 1\n- 2\n")
    (w / "bad_empty.yaml").write_text("")
    # Fit cards: two channels of the same files (paths relative to the card), bad ones.
    channels = "channels:\n  a: {model: card.yaml, data: data.npz, mc: mc.npz}\n" \
               "  b: {model: card.yaml, data: data_b.npz, mc: mc.npz}\n"
    write_events(w / "data_b.npz", Events.concatenate(list(iter_toys(model, 1500, det, seed=7))))
    (w / "joint.yaml").write_text("channels:\n  a: {model: card.yaml, data: data.npz, mc: mc.npz}\n"
                                  "  b: {model: card.yaml, data: data_b.npz, mc: mc.npz,\n"
                                  "      sideband: {sample: mc_b.npz, scale: 0.01}}\n"
                                  "shared: ['f0(1710):c0.mag', 'f0(1710):c0.phase']\n")
    (w / "joint_bad.yaml").write_text(channels + "shared: ['f0(1710):mass']\n")
    (w / "joint_nomc.yaml").write_text("channels:\n  a: {model: card.yaml, data: data.npz}\n")
    # Detector cards that do not validate, and one that accepts nothing.
    (w / "det_typo.yaml").write_text("charged: {cos_theta_mx: 0.9}\n")
    (w / "det_cos.yaml").write_text("charged: {cos_theta_max: 1.5}\n")
    (w / "det_sigma.yaml").write_text("resolution: {sigma_m: -0.004}\n")
    (w / "det_list.yaml").write_text("- charged\n")
    (w / "dead.yaml").write_text("charged: {pt_min: 5.0}\n")
    # Checkpoints: good, truncated, text, non-finite.
    (w / "flow.pt").write_bytes(FLOW.read_bytes())
    (w / "truncated.pt").write_bytes(FLOW.read_bytes()[:5000])
    (w / "text.pt").write_text("not a checkpoint\n")
    import torch

    ck = torch.load(FLOW, map_location="cpu", weights_only=False)
    name = next(k for k, v in ck["model_state"].items() if torch.is_floating_point(v) and v.numel() > 1)
    ck["model_state"][name] = ck["model_state"][name].clone()
    ck["model_state"][name].view(-1)[0] = float("nan")
    torch.save(ck, w / "nan.pt")
    return w


@dataclass(frozen=True)
class Case:
    """One command line, its exit code and the words its error line must hold."""

    id: str
    app: str  # "fastsim" or "pwa"
    argv: tuple
    code: int = 2
    says: tuple = ()


M, D, C = "{w}/card.yaml", "{w}/data.npz", "{w}/mc.npz"
FIT = ("fit", "--model", M, "--data", D, "--mc", C, "--out", "{o}/fit", "--no-plots")


def fit(*changes: str, **options: str) -> tuple:
    """The fit command line with options replaced (``data="{w}/x.npz"``) or added."""
    argv = list(FIT)
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        argv[argv.index(flag) + 1] = value
    return tuple(argv) + changes


CASES = [
    # --- event files ---------------------------------------------------------------------------------
    Case("data-missing", "pwa", fit(data="{w}/missing.npz"), says=("missing.npz", "no such file")),
    Case("data-empty-file", "pwa", fit(data="{w}/empty.npz"), says=("empty.npz", "not a readable")),
    Case("data-extension", "pwa", fit(data="{w}/data.csv"), says=("data.csv", ".parquet")),
    Case("data-missing-column", "pwa", fit(data="{w}/data_nokp.npz"), says=("data_nokp.npz", "Kp_E")),
    Case("data-nan", "pwa", fit(data="{w}/data_nan.npz"), says=("data_nan.npz", "Kp_px", "NaN")),
    Case("data-off-shell", "pwa", fit(data="{w}/data_offshell.npz"), says=("data_offshell.npz", "mass")),
    Case("data-zero-rows", "pwa", fit(data="{w}/data_zero.npz"), says=("data_zero.npz",)),
    Case("data-junk-parquet", "pwa", fit(data="{w}/junk.parquet"), says=("junk.parquet",)),
    Case("data-weights-all-minus-one", "pwa", fit(data="{w}/data_wneg.npz"),
         says=("data_wneg.npz", "weight", "positive")),
    Case("data-weights-all-zero", "pwa", fit(data="{w}/data_w0.npz"), says=("data_w0.npz", "weight")),
    Case("mc-weights-negative-sum", "pwa", fit(mc="{w}/mc_wneg.npz"), says=("mc_wneg.npz", "weight")),
    Case("data-of-another-reaction", "pwa", fit(data="{w}/four_kaons.npz"), says=("four_kaons.npz", "gamma_E")),
    Case("mc-of-another-reaction", "pwa", fit(mc="{w}/four_kaons.npz"), says=("four_kaons.npz", "gamma_E")),
    Case("train-mc-missing", "fastsim", ("train", "--mc", "{w}/nope.npz", "--out", "{o}/f.pt"), says=("nope.npz",)),
    Case("train-model-of-another-reaction", "fastsim",
         ("train", "--mc", "{w}/four_kaons_described.npz", "--model", M, "--out", "{o}/f.pt"),
         says=("four_kaons_described.npz", "psi(2S) -> K+ K- K+ K-", "J/psi -> gamma K+ K-")),
    Case("train-coordinates-unknown", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt", "--coordinates", "polar"),
         says=("--coordinates", "polar")),
    Case("train-helicity-coordinates-four-body", "fastsim",
         ("train", "--mc", "{w}/four_kaons_described.npz", "--out", "{o}/f.pt", "--coordinates", "helicity"),
         says=("--coordinates helicity", "psi(2S)")),
    Case("train-helicity-gates-on-neutral-pions", "fastsim",
         ("train", "--mc", "{w}/pi0pi0.npz", "--out", "{o}/f.pt", "--coordinates", "helicity"),
         says=("--coordinates helicity --gates", "gamma pi0 pi0", "--coordinates tree")),
    Case("fit-flow-of-another-reaction", "pwa", fit("--flow-model", "{w}/four_kaons_flow.pt", mc="flow"),
         says=("four_kaons_flow.pt", "psi(2S) -> K+ K- K+ K-", "J/psi -> gamma K+ K-")),
    Case("train-mc-is-a-card", "fastsim", ("train", "--mc", M, "--out", "{o}/f.pt"), says=("card.yaml",)),
    Case("fit-refine-without-coarse-stage", "pwa", fit("--refine", "2"), says=("--refine", "--coarse-mc")),
    Case("validate-reference-missing", "fastsim",
         ("validate", "--model", "{w}/flow.pt", "--reference", "{w}/nope.npz", "--out", "{o}/v"), says=("nope.npz",)),
    Case("mc-does-not-cover-data-strict", "pwa", fit("--strict", mc="{w}/mc_tight.npz"),
         says=("--strict", "does not cover")),
    Case("few-events-strict", "pwa", fit("--strict", data="{w}/data_few.npz"),
         says=("--strict", "effective events", "free parameters")),
    # --- model cards ---------------------------------------------------------------------------------
    Case("card-missing", "pwa", ("fractions", "--model", "{w}/nope.yaml", "--n-mc", "1000"), says=("nope.yaml",)),
    Case("card-not-yaml", "pwa", ("fractions", "--model", "{w}/bad_yaml.yaml"), says=("bad_yaml.yaml",)),
    Case("card-a-list", "pwa", ("fractions", "--model", "{w}/bad_list.yaml"), says=("bad_list.yaml", "mapping")),
    Case("card-empty", "pwa", ("fractions", "--model", "{w}/bad_empty.yaml"), says=("bad_empty.yaml",)),
    Case("card-reference-unknown", "pwa", ("fractions", "--model", "{w}/bad_reference.yaml"),
         says=("bad_reference.yaml", "reference", "f0(500)")),
    Case("card-coupling-not-allowed", "pwa", ("fractions", "--model", "{w}/bad_coupling.yaml"),
         says=("bad_coupling.yaml", "f2'(1525)")),
    Case("card-odd-spin-into-kk", "pwa", ("fractions", "--model", "{w}/bad_spin.yaml"), says=("bad_spin.yaml",)),
    Case("card-unknown-lineshape", "pwa", ("fractions", "--model", "{w}/bad_lineshape.yaml"),
         says=("bad_lineshape.yaml", "Gauss")),
    Case("card-negative-width", "pwa", ("fractions", "--model", "{w}/bad_width.yaml"),
         says=("bad_width.yaml", "width")),
    Case("card-misspelt-field", "pwa", ("fractions", "--model", "{w}/bad_typo.yaml"),
         says=("bad_typo.yaml", "couplngs")),
    Case("card-unknown-particle", "pwa", ("fractions", "--model", "{w}/bad_particle.yaml"),
         says=("bad_particle.yaml", "K-minus")),
    Case("card-chain-not-final-state", "pwa", ("fractions", "--model", "{w}/bad_chain.yaml"),
         says=("bad_chain.yaml",)),
    Case("card-float-unknown-parameter", "pwa", ("fractions", "--model", "{w}/bad_float.yaml"),
         says=("bad_float.yaml", "colour")),
    Case("generate-card-missing", "fastsim", ("generate", "--model", "{w}/nope.yaml", "--n", "10", "--out", "{o}/x.npz"),
         says=("nope.yaml",)),
    # --- detector cards ------------------------------------------------------------------------------
    Case("detector-missing", "fastsim", ("generate", "--n", "10", "--out", "{o}/x.npz", "--detector", "{w}/nope.yaml"),
         says=("nope.yaml",)),
    Case("detector-misspelt-field", "fastsim",
         ("generate", "--n", "10", "--out", "{o}/x.npz", "--detector", "{w}/det_typo.yaml"),
         says=("det_typo.yaml", "cos_theta_mx")),
    Case("detector-cos-above-one", "pwa",
         ("generate", "--model", M, "--n", "10", "--out", "{o}/x.npz", "--detector", "{w}/det_cos.yaml"),
         says=("det_cos.yaml", "cos_theta_max")),
    Case("detector-negative-resolution", "fastsim",
         ("generate", "--n", "10", "--out", "{o}/x.npz", "--detector", "{w}/det_sigma.yaml"),
         says=("det_sigma.yaml", "sigma_m")),
    Case("detector-a-list", "fastsim", ("generate", "--n", "10", "--out", "{o}/x.npz", "--detector", "{w}/det_list.yaml"),
         says=("det_list.yaml", "mapping")),
    Case("detector-accepts-nothing-toys", "pwa",
         ("generate", "--model", M, "--n", "100", "--out", "{o}/x.npz", "--detector", "{w}/dead.yaml"),
         says=("dead.yaml", "passed", "detector card")),
    Case("detector-accepts-nothing-mc", "fastsim",
         ("generate", "--n", "100", "--out", "{o}/x.npz", "--detector", "{w}/dead.yaml", "--chunk-size", "250000"),
         says=("dead.yaml", "passed")),
    Case("closure-detector-missing", "pwa", ("closure", "--model", M, "--out", "{o}/c", "--detector", "{w}/nope.yaml"),
         says=("nope.yaml",)),
    # --- option values -------------------------------------------------------------------------------
    *[Case(f"seed-negative-{name}", app, (*argv, "--seed", "-1"), says=("--seed", "greater than or equal to 0"))
      for name, app, argv in [
          ("fastsim-generate", "fastsim", ("generate", "--n", "10", "--out", "{o}/x.npz")),
          ("train", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt")),
          ("sample", "fastsim", ("sample", "--model", "{w}/flow.pt", "--n", "10", "--out", "{o}/x.npz")),
          ("validate", "fastsim", ("validate", "--model", "{w}/flow.pt", "--reference", C, "--out", "{o}/v")),
          ("fractions", "pwa", ("fractions", "--model", M)),
          ("pwa-generate", "pwa", ("generate", "--model", M, "--n", "10", "--out", "{o}/x.npz")),
          ("fit", "pwa", FIT),
          ("scan-fraction", "pwa", ("scan-fraction", "--model", M, "--data", D, "--mc", C)),
          ("lasso-scan", "pwa", ("lasso-scan", "--model", M, "--data", D, "--mc", C)),
          ("closure", "pwa", ("closure", "--model", M, "--out", "{o}/c")),
      ]],
    Case("n-zero", "fastsim", ("generate", "--n", "0", "--out", "{o}/x.npz"), says=("--n",)),
    Case("n-not-a-number", "pwa", ("generate", "--model", M, "--n", "many", "--out", "{o}/x.npz"), says=("--n",)),
    Case("unknown-option", "pwa", (*FIT, "--startz", "3"), says=("--startz",)),
    Case("missing-required-option", "pwa", ("fit", "--model", M, "--mc", C), says=("--data",)),
    Case("fit-card-with-model", "pwa", ("fit", "--fit-card", "{w}/joint.yaml", "--model", M), says=("--fit-card",)),
    Case("fit-card-shared-not-free", "pwa", ("fit", "--fit-card", "{w}/joint_bad.yaml", "--out", "{o}/j"),
         says=("shared", "f0(1710):mass")),
    Case("fit-card-missing-mc", "pwa", ("fit", "--fit-card", "{w}/joint_nomc.yaml", "--out", "{o}/j"),
         says=("joint_nomc.yaml", "mc")),
    Case("unknown-optimizer", "pwa", (*FIT, "--optimizer", "newton"),
         says=("--optimizer", "newton")),
    Case("unknown-kind", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt", "--kind", "gan"), says=("--kind", "gan")),
    Case("device-cuda-absent", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt", "--device", "cuda"),
         says=("cuda",)),
    Case("hyperparameter-not-key-value", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt", "--hp", "layers"),
         says=("--hp", "key=value")),
    Case("hyperparameter-not-a-number", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt", "--hp", "hidden=wide"),
         says=("--hp", "hidden")),
    Case("scan-grid-unreadable", "pwa", ("scan-fraction", "--model", M, "--data", D, "--mc", C, "--targets", "1.0:x"),
         says=("grid", "1.0:x")),
    Case("lasso-grid-unreadable", "pwa", ("lasso-scan", "--model", M, "--data", D, "--mc", C, "--lambdas", "a,b"),
         says=("grid", "a,b")),
    Case("lasso-background-method-unknown", "pwa", ("lasso-scan", "--model", M, "--data", D, "--mc", C,
                                                    "--background", C, "--background-method", "histogram"),
         says=("--background-method", "histogram")),
    Case("scan-sideband-missing", "pwa", ("scan-fraction", "--model", M, "--data", D, "--mc", C,
                                          "--sideband", "{w}/no_sideband.npz"), says=("no_sideband.npz",)),
    Case("devices-too-many", "pwa", (*FIT, "--devices", "99"), says=("--devices", "99")),
    Case("executor-unknown", "pwa", (*FIT, "--executor", "slurm"), says=("slurm",)),
    Case("sf-lambda-negative", "pwa", (*FIT, "--sf-lambda", "-1"), says=("--sf-lambda",)),
    Case("significance-with-constraint", "pwa", (*FIT, "--significance", "--sf-lambda", "0.01"),
         says=("--significance", "--sf-lambda")),
    Case("significance-one-resonance", "pwa", (*fit(model="{w}/one.yaml"), "--significance"),
         says=("--significance", "one resonance")),
    Case("significance-toys-with-sideband", "pwa", (*FIT, "--significance-toys", "5", "--sideband", C),
         says=("--significance-toys", "unweighted")),
    Case("significance-toys-with-lasso", "pwa", (*FIT, "--significance-toys", "5", "--lasso", "1"),
         says=("--significance-toys", "--lasso")),
    Case("profile-with-constraint", "pwa", (*FIT, "--profile", "fractions", "--sf-lambda", "0.01"),
         says=("--profile", "--sf-lambda")),
    Case("binned-mc-without-floating-lineshapes", "pwa", (*FIT, "--binned-mc", "500"),
         says=("binned normalisation", "no lineshape floats")),
    Case("fractions-n-mc-zero", "pwa", ("fractions", "--model", M, "--n-mc", "0"), says=("--n-mc",)),
    Case("closure-n-data-tiny", "pwa", ("closure", "--model", M, "--n-data", "5"), says=("--n-data",)),
    Case("closure-unknown-optimizer", "pwa", ("closure", "--model", M, "--out", "{o}/c", "--optimizer", "adam"),
         says=("--optimizer", "adam")),
    Case("no-flow-shipped-for-the-reaction", "pwa",
         ("fit", "--model", str(ROOT / "models" / "d0_kpipi0.yaml"), "--data", "{w}/d0.npz", "--mc", "flow",
          "--out", "{o}/fit", "--n-mc", "1000"), says=("--mc flow", "no flow is shipped for D0 -> K- pi+ pi0")),
    Case("reweight-without-flow", "pwa", (*FIT, "--reweight", C), says=("--reweight",)),
    # --- outputs -------------------------------------------------------------------------------------
    Case("fit-out-is-a-file", "pwa", fit(out=D), says=("--out", "data.npz")),
    Case("fit-out-unwritable", "pwa", fit(out="/proc/no-such-folder/fit"), says=("--out", "cannot write")),
    Case("fit-out-under-a-file", "pwa", fit(out="{w}/data.npz/fit"), says=("--out", "not a folder")),
    Case("train-out-is-the-mc", "fastsim", ("train", "--mc", C, "--out", C), says=("--out", "--mc", "overwrite")),
    Case("sample-out-is-the-model", "fastsim", ("sample", "--model", "{w}/flow.pt", "--n", "10", "--out", "{w}/flow.pt"),
         says=("--out", "overwrite")),
    Case("generate-out-is-the-detector", "fastsim",
         ("generate", "--n", "10", "--out", "{w}/tight.yaml", "--detector", "{w}/tight.yaml"), says=("--out",)),
    Case("generate-out-is-a-folder", "fastsim", ("generate", "--n", "10", "--out", "{w}"), says=("--out", "folder")),
    Case("generate-out-extension", "pwa", ("generate", "--model", M, "--n", "10", "--out", "{o}/x.txt"),
         says=("x.txt",)),
    Case("validate-out-is-the-checkpoint", "fastsim",
         ("validate", "--model", "{w}/flow.pt", "--reference", C, "--out", "{w}/flow.pt"), says=("--out",)),
    Case("validate-record-shipped", "fastsim",
         ("validate", "--model", str(FLOW), "--reference", C, "--out", "{o}/v", "--record"), says=("--record", "shipped")),
    Case("scan-out-is-the-data", "pwa", ("scan-fraction", "--model", M, "--data", D, "--mc", C, "--out", D),
         says=("--out",)),
    Case("lasso-out-unwritable", "pwa", ("lasso-scan", "--model", M, "--data", D, "--mc", C,
                                         "--out", "/proc/no-such-folder/l"), says=("--out", "cannot write")),
    Case("closure-out-is-a-file", "pwa", ("closure", "--model", M, "--out", D), says=("--out",)),
    # --- checkpoints ---------------------------------------------------------------------------------
    Case("checkpoint-missing", "fastsim", ("sample", "--model", "{w}/nope.pt", "--n", "10", "--out", "{o}/x.npz"),
         says=("nope.pt",)),
    Case("checkpoint-truncated", "fastsim", ("sample", "--model", "{w}/truncated.pt", "--n", "10", "--out", "{o}/x.npz"),
         says=("truncated.pt",)),
    Case("checkpoint-text", "fastsim", ("sample", "--model", "{w}/text.pt", "--n", "10", "--out", "{o}/x.npz"),
         says=("text.pt",)),
    Case("checkpoint-nan-weights", "fastsim", ("sample", "--model", "{w}/nan.pt", "--n", "10", "--out", "{o}/x.npz"),
         says=("nan.pt", "non-finite")),
    Case("checkpoint-nan-weights-fit", "pwa", (*fit(mc="flow"), "--flow-model", "{w}/nan.pt", "--n-mc", "1000"),
         says=("nan.pt", "non-finite")),
    Case("flow-model-is-a-card", "pwa", (*fit(mc="flow"), "--flow-model", M, "--n-mc", "1000"), says=("card.yaml",)),
    Case("train-on-undescribed-file-of-another-reaction", "fastsim",
         ("train", "--mc", "{w}/four_kaons.npz", "--out", "{o}/f.pt"),
         says=("four_kaons.npz", "gamma_E", "no reaction description", "--model CARD")),
    Case("resume-without-checkpoint", "fastsim", ("train", "--mc", C, "--out", "{o}/f.pt", "--resume"),
         says=("f.pt",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: Path, tmp_path: Path, capsys):
    argv = [a.replace("{w}", str(world)).replace("{o}", str(tmp_path)) for a in case.argv]
    before = hashes(world)
    t0 = time.perf_counter()
    code, out, err = run(capsys, fastsim_app.main if case.app == "fastsim" else pwa_app.main, argv)
    seconds = time.perf_counter() - t0
    assert code == case.code, out + err
    assert "Traceback" not in out + err
    line = error_line(err)
    for word in case.says:
        assert word.replace("{w}", str(world)) in line, line
    assert hashes(world) == before, "an input file changed"
    assert not any(tmp_path.rglob("*.npz")) and not any(tmp_path.rglob("*.pt")), "a partial output was left"
    assert seconds < 60, f"{case.id} took {seconds:.0f} s to refuse"
    if os.environ.get("BAD_INPUTS_TABLE"):  # the issue note's table: id, exit code, seconds, message
        with open(os.environ["BAD_INPUTS_TABLE"], "a") as f:
            f.write(json.dumps({"id": case.id, "command": f"{case.app} {case.argv[0]}", "code": code,
                                "seconds": round(seconds, 2),
                                "error": line.replace(str(world), "IN").replace(str(tmp_path), "OUT")}) + "\n")


def test_the_table_is_large_enough():
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------
# Faults that need more than one command
# ---------------------------------------------------------------------------

def test_mc_that_does_not_cover_the_data_is_a_warning_in_the_result_and_report(world, tmp_path, capsys):
    """The issue's case: MC of |cos theta| < 0.3 for data of the default detector converged, exit 0, to
    wrong fractions. Now the fit says so on stderr, in result.json and in report.md."""
    out = tmp_path / "fit"
    code, _, err = run(capsys, pwa_app.main, [a.replace("{w}", str(world)).replace("{o}", str(tmp_path))
                                              for a in fit(mc="{w}/mc_tight.npz")])
    assert code in (0, 3), err
    assert "warning: normalisation MC does not cover the data" in err
    result = json.loads((out / "result.json").read_text())
    assert any("does not cover" in w for w in result["warnings"])
    assert result["mc_coverage"]["covered"] is False
    assert "does not cover" in (out / "report.md").read_text()


def test_a_finished_fit_is_kept_when_the_significance_fails(world, tmp_path, capsys, monkeypatch):
    import importlib

    from pwa.errors import ModelCardError

    def fails(*args, **kwargs):
        raise ModelCardError("card.yaml without f0(980): new reference 'f2'(1525)' has a zero first coupling")

    monkeypatch.setattr(importlib.import_module("pwa.fit"), "significances", fails)
    argv = [a.replace("{w}", str(world)).replace("{o}", str(tmp_path)) for a in fit("--significance")]
    code, out, err = run(capsys, pwa_app.main, argv)
    assert code == 2
    line = error_line(err)
    assert "--significance" in line and "result.json" in line
    result = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert result["converged"] and len(result["parameters"]) == 6


def test_an_interrupted_generation_leaves_no_file(tmp_path, capsys, monkeypatch):
    import fastsim.events as events

    real = events.iter_conventional_mc

    def interrupted(*args, **kwargs):
        it = real(*args, **kwargs)
        yield next(it)
        raise KeyboardInterrupt

    monkeypatch.setattr(events, "iter_conventional_mc", interrupted)
    out = tmp_path / "mc.npz"
    code, _, err = run(capsys, fastsim_app.main, ["generate", "--n", "500000", "--out", out, "--chunk-size", "20000"])
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_validate_reads_the_checkpoint_only(world, tmp_path, capsys):
    """The README's validate command used to rewrite the metrics stored in the shipped flow."""
    ck = tmp_path / "flow.pt"
    ck.write_bytes((world / "flow.pt").read_bytes())
    before = ck.read_bytes()
    code, out, err = run(capsys, fastsim_app.main, ["validate", "--model", ck, "--reference", world / "mc.npz",
                                                    "--out", tmp_path / "v", "--n-model", "5000"])
    assert code == 0, out + err
    assert ck.read_bytes() == before and (tmp_path / "v" / "metrics.json").exists()


def test_train_refuses_another_file_on_resume_by_content(world, tmp_path, capsys):
    """Resume keys on the MC's content: the same content under another name resumes, other content does not."""
    ck = tmp_path / "f.pt"
    base = ["train", "--out", ck, "--epochs", "2", "--hp", "n_layers=1", "--hp", "hidden=8", "--no-fold",
            "--max-minutes", "0.01"]
    code, out, err = run(capsys, fastsim_app.main, [*base[:1], "--mc", world / "mc.npz", *base[1:]])
    assert code == 0, out + err
    copy = tmp_path / "same_content.npz"
    copy.write_bytes((world / "mc.npz").read_bytes())
    code, out, err = run(capsys, fastsim_app.main, ["train", "--mc", copy, "--out", ck, "--resume"])
    assert code == 0, out + err
    code, out, err = run(capsys, fastsim_app.main, ["train", "--mc", world / "mc_tight.npz", "--out", ck, "--resume"])
    assert code == 2 and "another file" in error_line(err)


def test_closure_refuses_toys_of_an_edited_card(world, tmp_path, capsys, small_card):
    """Toys are keyed on what the cards say: a toy file from before an in-place edit is not reused."""
    from cli.closure import ClosureSettings, input_hashes
    from pwa import load_model_card

    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump(small_card, sort_keys=False))
    det = load_detector_card("default")

    def settings(path) -> ClosureSettings:
        return ClosureSettings(model=str(path), inputs=input_hashes(load_model_card(path), det))

    moved = tmp_path / "moved.yaml"
    moved.write_text("# the same card, commented, elsewhere\n" + card.read_text())
    assert settings(card).digest() != settings(moved).digest()  # the path is part of the settings...
    assert settings(card).inputs == settings(moved).inputs  # ...and the content hash ignores comments
    old = settings(card)
    edited = copy.deepcopy(small_card)
    edited["resonances"][1]["couplings"][0] = [5.0, 1.2]
    card.write_text(yaml.safe_dump(edited, sort_keys=False))
    assert settings(card).digest() != old.digest()
    out = tmp_path / "closure"
    (out / "toys").mkdir(parents=True)
    (out / "toys" / "toy_000.json").write_text(json.dumps({"toy": 0, "settings_digest": old.digest()}))
    code, _, err = run(capsys, pwa_app.main, ["closure", "--model", card, "--out", out, "--toys", "1"])
    assert code == 2
    line = error_line(err)
    assert "toy_000.json" in line and "other card contents" in line
    assert json.loads((out / "toys" / "toy_000.json").read_text())["settings_digest"] == old.digest()


def test_the_reference_coupling_means_what_the_card_says(small_card):
    """A card saying 0: [5.0, 1.0] for the reference used to give toys byte-identical to [1, 0]: the
    reference coupling is fixed at the card's value, so the other couplings are relative to it."""
    import jax.numpy as jnp

    from _shared import flat_events
    from pwa import Model
    from pwa.card import parse_model_card

    events = flat_events(2000, seed=4)
    intensities = []
    for ref in ([1.0, 0.0], [5.0, 1.0]):
        raw = copy.deepcopy(small_card)
        raw["resonances"][0]["couplings"] = {0: ref}
        model = Model.from_card(parse_model_card(raw, source="<test>"))
        full = dict(zip(model.all_parameter_names, np.asarray(model.full_parameters(model.initial_values()))))
        assert (full["f0(980):c0.mag"], full["f0(980):c0.phase"]) == tuple(ref)
        intensities.append(np.asarray(model.intensity(jnp.asarray(model.initial_values()),
                                                      model.precompute(events))))
    ratio = intensities[1] / intensities[0]
    assert np.std(ratio) / np.mean(ratio) > 0.05  # other physics, not just another normalisation


def test_train_honours_the_weights_of_weighted_mc(world, tmp_path, capsys):
    """fastsim train used to ignore a weighted MC's 'weight' column; now the NLL is weighted by it."""
    from fastsim.checkpoint import load_checkpoint
    from fastsim.events import read_events

    mc = read_events(world / "mc.npz", JPSI_GAMMA_KK)
    w = np.random.default_rng(5).uniform(0.2, 1.8, len(mc))
    write_events(tmp_path / "weighted.npz", Events(mc.momenta, w, reaction=JPSI_GAMMA_KK))
    ck = tmp_path / "f.pt"
    code, out, err = run(capsys, fastsim_app.main, ["train", "--mc", tmp_path / "weighted.npz", "--out", ck,
                                                    "--epochs", "1", "--hp", "n_layers=1", "--hp", "hidden=8",
                                                    "--no-fold"])
    assert code == 0, out + err
    assert "weighted" in out
    state = load_checkpoint(ck)["training"]
    assert state["weighted"] and state["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w**2).sum(),
                                                                                 rel=0.2)


def test_joint_fit_from_the_command_line(world, tmp_path, capsys):
    """pwa fit --fit-card: two channels sharing the f0(1710) coupling, b with a sideband subtracted; joint and
    per-channel outputs."""
    out = tmp_path / "joint"
    code, stdout, err = run(capsys, pwa_app.main, ["fit", "--fit-card", world / "joint.yaml", "--out", out,
                                                   "--no-plots"])
    assert code == 0, stdout + err
    joint = json.loads((out / "joint.json").read_text())
    assert joint["converged"] and joint["shared"] == ["f0(1710):c0.mag", "f0(1710):c0.phase"]
    assert "f0(1710):c0.mag" in joint["parameters"] and "a/f2'(1525):c0.mag" in joint["parameters"]
    for c in ("a", "b"):
        result = json.loads((out / c / "result.json").read_text())
        assert result["channel"] == c and "f0(1710)" in result["fractions"]
        assert (out / c / "report.md").exists()
    assert result["parameters"]["f0(1710):c0.mag"]["value"] == joint["parameters"]["f0(1710):c0.mag"]["value"]
    # channel b: the sideband joined its data with weight -0.01 (signed weights: the sandwich)
    assert result["sum_data_weights"] == pytest.approx(1500 - 0.01 * 3000)
    assert result["sideband"]["scale"] == 0.01 and result["covariance_kind"].startswith("sandwich")


def test_toy_significance_from_the_command_line(world, tmp_path, capsys):
    """pwa fit --significance-toys 2: every resonance's toy significance lands in result.json."""
    out = tmp_path / "toys"
    code, stdout, err = run(capsys, pwa_app.main, [*[a.replace("{w}", str(world)).replace("{o}", str(tmp_path))
                                                     for a in fit(out=str(out))], "--significance-toys", "2",
                                                   "--no-mc-statistics"])
    assert code in (0, 3), stdout + err
    toys = json.loads((out / "result.json").read_text())["significance_toys"]
    assert set(toys) == {"f0(980)", "f2'(1525)", "f0(1710)"}
    for t in toys.values():
        assert t["n_toys"] + t["n_failed"] == 2 and 0 < t["p_value"] <= 1
    assert "sigma from" in stdout


def test_background_term_and_sideband_subtraction_from_the_command_line(world, tmp_path, capsys):
    """pwa fit --background (explicit term, f_b fitted) and --sideband (signed weights, sandwich errors)."""
    out = tmp_path / "bkg"
    code, stdout, err = run(capsys, pwa_app.main, [*[a.replace("{w}", str(world)).replace("{o}", str(tmp_path))
                                                     for a in fit(out=str(out))][:-1],
                                                   "--background", world / "mc_b.npz", "--background-fraction", "0.05"])
    assert code in (0, 3), stdout + err
    result = json.loads((out / "result.json").read_text())
    f_b = result["parameters"]["background_fraction"]
    assert 0.0 <= f_b["value"] < 0.5 and f_b["error"] > 0 and result["background"]["sample"].endswith("mc_b.npz")
    assert "background_fraction" in result["mc_statistics"]["parameters"]  # the MC error with the term
    assert any(p.suffix == ".png" for p in out.iterdir())  # projections of signal + background
    out = tmp_path / "sb"
    code, stdout, err = run(capsys, pwa_app.main, [*[a.replace("{w}", str(world)).replace("{o}", str(tmp_path))
                                                     for a in fit(out=str(out))],
                                                   "--sideband", world / "mc_b.npz", "--sideband-scale", "0.01"])
    assert code in (0, 3), stdout + err
    result = json.loads((out / "result.json").read_text())
    assert result["covariance_kind"].startswith("sandwich")
    assert result["sum_data_weights"] == pytest.approx(1500 - 0.01 * 3000)
