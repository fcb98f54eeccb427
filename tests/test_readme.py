"""The README's quickstart, executed as a user would run it (after the install steps) in a fresh directory."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fenced_command(marker: str) -> str:
    """Returns the one-line shell command of the code block right after ``<!-- marker -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)\n```", text, re.S)
    assert match, f"README.md has no ```bash block after <!-- {marker} -->"
    return match.group(1).strip()


def _msaformer_steps(command: str) -> list[list[str]]:
    """The ``msaformer ...`` steps of an ``a && b && c`` command line (install steps are CI's job)."""
    steps = [shlex.split(part) for part in command.split("&&")]
    return [step for step in steps if step and step[0] == "msaformer"]


def test_readme_test_command_is_what_ci_runs():
    command = _fenced_command("tests")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0" in command and "pip install -q torch==2.13.0" in ci
    assert "pip install -e '.[dev]'" in command and "pip install -q -e '.[dev]'" in ci
    assert "pytest -q tests" in command and "pytest -q -p no:cacheprovider tests" in ci
    assert command.index("torch==2.13.0") < command.index("-e '.[dev]'")


def test_readme_quickstart_runs_on_bundled_data(tmp_path):
    command = _fenced_command("quickstart")
    assert command.index("pip install torch==2.13.0") < command.index("pip install -e .")
    steps = _msaformer_steps(command)
    assert [s[1] for s in steps] == ["preprocess", "train", "export-weights", "embed"]
    for name in ("datasets", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for step in steps:
        argv = [sys.executable, "-m", "msaformer.cli.main", *step[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stderr[-3000:]}"

    index = pd.read_csv(tmp_path / "runs" / "embed.csv")
    assert len(index) == 21
    assert (index["status"] == "ok").sum() == 18  # the three negative samples are skipped with a reason
    with h5py.File(tmp_path / "runs" / "embed.h5", "r") as f:
        group = f["fn3"]
        assert group["contacts"].shape == (86, 86)
        assert group["per_tok"].shape[0] == 86
    assert len(list((tmp_path / "runs" / "embed_plots").glob("*.png"))) == 18
    metrics = pd.read_csv(tmp_path / "runs" / "msa_tiny" / "metrics.csv")
    train = metrics[metrics["split"] == "train"]
    assert train["loss"].iloc[-1] < train["loss"].iloc[0]  # the tiny model learns something


@pytest.mark.parametrize("marker", ["quickstart", "tests"])
def test_readme_commands_install_torch_first(marker):
    command = _fenced_command(marker)
    assert command.startswith("python3 -m venv .venv")


def test_readme_and_benchmarks_are_assembled_from_docs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("assemble", ROOT / "docs" / "assemble.py")
    assemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(assemble)
    for name, text in assemble.documents().items():
        assert (ROOT / name).read_text() == text, f"{name} is stale: run python docs/assemble.py"
