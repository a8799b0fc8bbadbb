"""`fastsim generate` and the CLI plumbing shared by both tools."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.fastsim_app import app
from fastsim.events import read_events

runner = CliRunner()


def test_generate_writes_accepted_events(tmp_path):
    out = tmp_path / "mc.root"
    res = runner.invoke(app, ["generate", "--n", "5000", "--out", str(out), "--seed", "4",
                              "--chunk-size", "3000"])
    assert res.exit_code == 0, res.output
    assert "wrote 5000 events" in res.output
    assert "acceptance x efficiency" in res.output and "events/s" in res.output
    assert len(read_events(out)) == 5000


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


@pytest.mark.parametrize("module", ["cli.fastsim_app", "cli.pwa_app"])
def test_help_imports_no_heavy_framework(module):
    """`--help` must stay instant: neither torch nor JAX may be imported for it."""
    code = (f"import sys; sys.argv=['x','--help']\nimport {module} as m\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            "heavy=[k for k in ('torch','jax') if k in sys.modules]\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
