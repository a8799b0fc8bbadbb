"""Event files: round trips in every format and every bad-file path."""

from pathlib import Path

import numpy as np
import pytest

from fastsim.events import (JPSI_GAMMA_KK, Detector, EventFileError, Events, EventWriter, PhaseSpace, read_events,
                            write_events)
from fastsim.events.io import events_to_columns

FORMATS = [".parquet", ".root", ".npz"]


@pytest.fixture(scope="module")
def events():
    hv = PhaseSpace(JPSI_GAMMA_KK).sample(500, np.random.default_rng(11))
    return Events.from_helicity_variables(hv, JPSI_GAMMA_KK, weights=np.linspace(0.5, 1.5, 500))


def write_columns(path, cols, tree="events"):
    """Write raw columns (possibly invalid) in the format of path."""
    if path.suffix == ".npz":
        np.savez(path, **cols)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    else:
        import uproot

        with uproot.recreate(path) as f:
            f[tree] = cols


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, events, fmt):
    path = write_events(tmp_path / f"ev{fmt}", events)
    back = read_events(path, events.reaction)
    np.testing.assert_array_equal(back.momenta, events.momenta)
    np.testing.assert_array_equal(back.weights, events.weights)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_writer_equals_one_shot(tmp_path, events, fmt):
    with EventWriter(tmp_path / f"s{fmt}", events.reaction) as w:
        for i in range(0, 500, 128):
            w.write(events.subset(slice(i, i + 128)))
    np.testing.assert_array_equal(read_events(tmp_path / f"s{fmt}", events.reaction).momenta, events.momenta)


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_write_leaves_no_file(tmp_path, events, fmt):
    target = tmp_path / f"x{fmt}"
    with pytest.raises(KeyboardInterrupt):
        with EventWriter(target, events.reaction) as w:
            w.write(events)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def corrupt(events, how):
    cols = events_to_columns(events)
    if how == "missing":
        del cols["Km_pz"]
    elif how == "nan":
        cols["Kp_px"] = cols["Kp_px"].copy()
        cols["Kp_px"][[3, 7]] = np.nan
    elif how == "inf_weight":
        cols["weight"] = cols["weight"].copy()
        cols["weight"][0] = np.inf
    elif how == "spacelike":
        cols["Km_E"] = cols["Km_E"].copy()
        cols["Km_E"][:5] = 0.01
    elif how == "mass":
        # Rescale the K+ energy upward a little: still timelike, wrong mass.
        cols["Kp_E"] = cols["Kp_E"] + 0.05
    elif how == "total":
        # Boost-free shift of all three momenta by the same rotation-breaking
        # amount keeps masses but breaks momentum balance.
        for p in ("Kp", "Km"):
            cols[f"{p}_px"] = cols[f"{p}_px"].copy()
        cols["Kp_px"][:9] *= -1.0
    return cols


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("how, pattern", [
    ("missing", r"missing column\(s\) Km_pz"),
    ("nan", r"column Kp_px has 2 row\(s\) with NaN or inf"),
    ("inf_weight", r"column weight has 1 row\(s\) with NaN or inf"),
    ("spacelike", r"column Km_E is below \|p\| .* in 5 row\(s\)"),
    ("mass", r"Kp_E/px/py/pz give an invariant mass .* K\+ mass .* in 500 row\(s\)"),
    ("total", r"total four-momentum .* in \d+ row\(s\)"),
])
def test_bad_files(tmp_path, events, fmt, how, pattern):
    path = tmp_path / f"bad{fmt}"
    write_columns(path, corrupt(events, how))
    with pytest.raises(EventFileError, match=pattern) as err:
        read_events(path, events.reaction)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file(tmp_path, events, fmt):
    path = tmp_path / f"empty{fmt}"
    write_columns(path, {k: v[:0] for k, v in events_to_columns(events).items()})
    with pytest.raises(EventFileError, match="holds no events"):
        read_events(path, events.reaction)


def test_missing_file_unknown_format_and_tree(tmp_path, events):
    with pytest.raises(EventFileError, match="no such file"):
        read_events(tmp_path / "nope.parquet", events.reaction)
    with pytest.raises(EventFileError, match="unknown event-file format '.csv'"):
        read_events(tmp_path / "x.csv", events.reaction)
    path = tmp_path / "t.root"
    write_columns(path, events_to_columns(events), tree="ntuple")
    with pytest.raises(EventFileError, match=r"no TTree 'events' in the file; it holds \['ntuple'\]"):
        read_events(path, events.reaction)
    assert len(read_events(path, events.reaction, tree="ntuple")) == 500


@pytest.mark.parametrize("fmt", FORMATS)
def test_garbage_file(tmp_path, fmt):
    path = tmp_path / f"garbage{fmt}"
    path.write_bytes(b"not an event file at all" * 10)
    with pytest.raises(EventFileError, match=str(path.name)):
        read_events(path, JPSI_GAMMA_KK)


def test_total_momentum_check_can_be_disabled(tmp_path, events):
    path = tmp_path / "t.npz"
    write_columns(path, corrupt(events, "total"))
    assert len(read_events(path, events.reaction, check_total_momentum=False)) == 500


def test_detector_level_events_pass_validation(tmp_path):
    from fastsim.events import conventional_mc, load_detector_card

    ev = conventional_mc(2000, Detector(load_detector_card("default")), reaction=JPSI_GAMMA_KK, seed=1)
    assert len(read_events(write_events(tmp_path / "mc.parquet", ev), JPSI_GAMMA_KK)) == 2000


@pytest.mark.parametrize("fmt", FORMATS)
def test_four_body_detector_level_round_trip(tmp_path, fmt):
    """psi(2S) -> K+ K- K+ K-: four particles' columns, written and read back unchanged."""
    from fastsim.events import Reaction, conventional_mc, load_detector_card

    reaction = Reaction.from_final_state({"Kp1": "K+", "Km1": "K-", "Kp2": "K+", "Km2": "K-"}, "psi(2S)",
                                         chains=["psi(2S) -> phi f; phi -> Kp1 Km1; f -> Kp2 Km2"])
    ev = conventional_mc(1000, Detector(load_detector_card("default")), reaction=reaction, seed=2,
                         chunk_size=2000)
    path = write_events(tmp_path / f"mc{fmt}", ev)
    back = read_events(path, reaction)
    np.testing.assert_array_equal(back.momenta, ev.momenta)
    assert set(events_to_columns(back)) == set(reaction.columns)
    with pytest.raises(EventFileError, match="missing column"):
        read_events(path, JPSI_GAMMA_KK)  # not a J/psi -> gamma K+ K- file


@pytest.mark.parametrize("ext", [".parquet", ".npz", ".root"])
def test_event_files_record_their_reaction(tmp_path, ext):
    """EventWriter stores the reaction and a description; files of other programs have none."""
    from fastsim.events import EventWriter, reaction_of_file, read_event_metadata
    from fastsim.events.nbody import NBodyPhaseSpace
    from pwa.card import load_model_card

    r0 = load_model_card(Path(__file__).resolve().parents[1] / "models" / "r0.yaml").reaction.to_reaction()
    ev = Events(NBodyPhaseSpace(r0).sample(50, np.random.default_rng(0)), reaction=r0)
    path = tmp_path / f"a{ext}"
    with EventWriter(path, r0, metadata={"proposals": {"phi": [1.019, 0.004]}}) as writer:
        writer.write(ev)
        writer.write(ev)
    assert reaction_of_file(path) == r0
    assert read_event_metadata(path)["proposals"] == {"phi": [1.019, 0.004]}
    assert len(read_events(path, r0)) == 100
    plain = tmp_path / f"b{ext}"
    write_events(plain, ev)
    assert read_event_metadata(plain) == {} and reaction_of_file(plain) is None
