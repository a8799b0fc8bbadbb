"""fastsim generate | train | sample | validate for every shipped card, through the real entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli import fastsim_app, pwa_app
from fastsim.checkpoint import load_checkpoint
from fastsim.events import read_event_metadata, read_events
from pwa.card import load_model_card

MODELS = Path(__file__).resolve().parents[1] / "models"
TINY = ("--epochs", "1", "--batch-size", "512", "--hp", "n_layers=2", "--hp", "hidden=16", "--hp", "n_bins=4")


def run(main, argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code in (0, None)


@pytest.mark.parametrize("card,coordinates", [("jpsi_gamma_kk.yaml", "tree"), ("jpsi_gamma_pi0pi0.yaml", "auto"),
                                              ("d0_kpipi0.yaml", "auto"), ("r0.yaml", "auto")])
def test_commands_for_every_card(tmp_path, card, coordinates, capsys):
    reaction = load_model_card(MODELS / card).reaction.to_reaction()
    mc, ref = tmp_path / "mc.parquet", tmp_path / "ref.npz"
    run(fastsim_app.main, ["generate", "--model", MODELS / card, "--n", 3000, "--seed", 1, "--out", mc])
    run(fastsim_app.main, ["generate", "--model", MODELS / card, "--n", 3000, "--seed", 2, "--out", ref])
    meta = read_event_metadata(mc)
    assert meta["reaction"] == reaction.to_dict() and meta["detector"] == "besiii_like"
    weighted = bool(meta["proposals"])
    assert weighted == (card == "r0.yaml")  # the phi is narrow: a Breit-Wigner proposal
    # train takes the reaction from the file's description (no --model)
    run(fastsim_app.main, ["train", "--mc", mc, "--out", tmp_path / "f.pt", "--coordinates", coordinates, *TINY])
    ck = load_checkpoint(tmp_path / "f.pt", reaction)
    assert ck["coordinates"]["kind"] == "tree_unit_box"
    assert ck["coordinates"]["proposals"].keys() == meta["proposals"].keys()
    run(fastsim_app.main, ["sample", "--model", tmp_path / "f.pt", "--n", 2000, "--out", tmp_path / "s.parquet"])
    events = read_events(tmp_path / "s.parquet", reaction)
    assert len(events) == 2000 and (events.weights is not None) == weighted
    assert read_event_metadata(tmp_path / "s.parquet")["generator"].startswith("fastsim sample")
    run(fastsim_app.main, ["validate", "--model", tmp_path / "f.pt", "--reference", ref, "--out", tmp_path / "v"])
    out = capsys.readouterr().out
    assert "classifier AUC" in out and (tmp_path / "v" / "metrics.json").is_file()
    # the fit's flow MC for the card's reaction: the flow's events, relabelled to the card's chains
    if card == "r0.yaml":
        model = type("M", (), {"reaction": reaction})()
        flow_mc, info = pwa_app._normalisation_mc(model, "flow", tmp_path / "f.pt", 1000, 3)
        assert flow_mc.reaction == reaction and flow_mc.weights is not None and info["mc"] == "flow"
        assert np.all(np.isfinite(flow_mc.weights)) and np.all(flow_mc.weights > 0)
