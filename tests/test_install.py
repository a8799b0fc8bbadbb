"""An installed wheel works outside the checkout: shipped defaults are package data.

The wheel is built from a copy of the sources (a stale ``build/`` in the checkout cannot leak
into it), installed with ``pip --target`` and imported through ``PYTHONPATH`` from an empty
working directory, so neither the checkout nor the editable install is on the path.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fastsim.events import load_detector_card
from fastsim.events.resources import ShippedFileError, shipped, shipped_files

ROOT = Path(__file__).resolve().parents[1]
#: What the wheel is built from (the fixed layout's installable part).
SOURCES = ("pyproject.toml", "README.md", "fastsim", "pwa", "cli", "models")
SHIPPED_SUFFIXES = (".yaml", ".pt", ".json")


def _run(args, cwd, env, timeout=120):
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, args))}\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, site folder, environment with only the site folder on the path)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    # No network: the venv's setuptools builds the wheel (setuptools >= 70.1 needs no `wheel`).
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
          "-q", str(src), "-w", str(tmp / "dist")], cwd=tmp, env=dict(os.environ))
    (wheel,) = (tmp / "dist").glob("pwa_fastsim-*.whl")
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q", "--target", str(site),
          str(wheel)], cwd=tmp, env=dict(os.environ))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["PYTHONPATH"] = str(site)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile time, as in conftest.py; one device
    return wheel, site, env


def test_wheel_holds_every_module_and_every_shipped_file(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for pkg in ("fastsim", "pwa", "cli")
               for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set(), "modules missing from the wheel: add their package to " \
                                     "[tool.setuptools] packages in pyproject.toml"
    shipped_in_checkout = {f"pwa_fastsim_models/{p.relative_to(ROOT / 'models').as_posix()}"
                           for p in (ROOT / "models").rglob("*") if p.suffix in SHIPPED_SUFFIXES}
    data = {n for n in names if n.startswith("pwa_fastsim_models/") and not n.endswith(".py")}
    assert data == shipped_in_checkout
    for required in ("r0.yaml", "jpsi_gamma_kk.yaml", "d0_kpipi0.yaml", "detector/besiii_like.yaml",
                     "flow_besiii_like.pt", "flow_besiii_like.metrics.json"):
        assert f"pwa_fastsim_models/{required}" in data


def test_installed_commands_run_outside_the_checkout(installed, tmp_path):
    """fastsim generate, pwa fractions, pwa generate and pwa fit --mc flow on shipped defaults."""
    _, site, env = installed
    py = sys.executable
    where = _run([py, "-c", "import cli, fastsim, pwa\n"
                            "from fastsim.events.resources import shipped\n"
                            "for m in (cli, fastsim, pwa): print(m.__file__)\n"
                            "print(shipped('r0.yaml')); print(shipped('jpsi_gamma_kk.yaml'))"],
                 cwd=tmp_path, env=env).split()
    for path in where:
        assert Path(path).is_relative_to(site), where
    r0, kk = where[3:]
    assert Path(r0) == site / "pwa_fastsim_models" / "r0.yaml"

    out = _run([py, "-m", "cli.fastsim_app", "generate", "--n", "2000", "--out", "x.parquet",
                "--detector", "default", "--seed", "1"], cwd=tmp_path, env=env)
    assert "wrote 2000 events" in out and "detector besiii_like" in out
    out = _run([py, "-m", "cli.pwa_app", "fractions", "--model", r0, "--n-mc", "20000"], cwd=tmp_path, env=env)
    assert "f0(980)" in out and "SF" in out
    # The console scripts as installed ([project.scripts]), run by this interpreter.
    _run([py, site / "bin" / "pwa", "generate", "--model", kk, "--n", "500", "--out", "data.parquet",
          "--seed", "3"], cwd=tmp_path, env=env)
    res = subprocess.run([py, site / "bin" / "pwa", "fit", "--model", kk, "--data", "data.parquet", "--mc", "flow",
                          "--n-mc", "20000", "--starts", "1", "--no-plots", "--out", "fit"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"flow MC: 20000 events from {site / 'pwa_fastsim_models' / 'flow_besiii_like.pt'}" in res.stderr
    assert (tmp_path / "fit" / "result.json").is_file()


def test_shipped_finds_the_defaults():
    assert shipped("detector/besiii_like.yaml").is_file()
    assert load_detector_card("default")._source == str(shipped("detector/besiii_like.yaml"))
    assert {"r0.yaml", "jpsi_gamma_kk.yaml", "detector/besiii_like.yaml",
            "flow_besiii_like.pt"} <= set(shipped_files())


def test_a_missing_shipped_file_is_a_clear_error():
    with pytest.raises(ShippedFileError, match=r"no_such\.yaml: not a shipped file.*shipped: .*r0\.yaml"):
        shipped("no_such.yaml")
    with pytest.raises(ValueError, match="relative to the models folder"):
        shipped("../pyproject.toml")


def test_fit_names_a_missing_shipped_flow(tmp_path, monkeypatch):
    """--mc flow without --flow-model on an installation that lacks the flow: one line, exit 2."""
    from typer.testing import CliRunner

    import cli.pwa_app as pwa_app

    runner = CliRunner()
    card = str(shipped("jpsi_gamma_kk.yaml"))
    data = tmp_path / "data.npz"
    res = runner.invoke(pwa_app.app, ["generate", "--model", card, "--n", "50", "--out", str(data),
                                      "--detector", "none", "--seed", "1"])
    assert res.exit_code == 0, res.output
    monkeypatch.setattr(pwa_app, "DEFAULT_FLOW", "no_such_flow.pt")
    res = runner.invoke(pwa_app.app, ["fit", "--model", card, "--data", str(data), "--mc", "flow",
                                      "--n-mc", "100", "--no-plots", "--out", str(tmp_path / "fit")])
    assert res.exit_code == 2, res.output
    assert "no_such_flow.pt: not a shipped file" in " ".join(res.output.split())
    assert "Traceback" not in res.output
