"""The README's quickstart, executed as a user would run it (after the install steps) in a fresh directory."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
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


def _run_steps(steps, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outputs = []
    for step in steps:
        argv = [sys.executable, "-m", "msaformer", *step[1:]]
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stderr[-3000:]}"
        outputs.append(done)
    return outputs


def test_readme_quickstart_runs_on_data_the_project_makes(tmp_path):
    command = _fenced_command("quickstart")
    assert command.index("pip install torch==2.13.0") < command.index("pip install -e .")
    steps = _msaformer_steps(command)
    assert [s[1] for s in steps] == ["demo", "preprocess", "train", "export-weights", "embed"]
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the only thing of the checkout the commands read
    _run_steps(steps, tmp_path)

    index = pd.read_csv(tmp_path / "runs" / "embed.csv")
    assert len(index) == 11
    assert (index["status"] == "ok").sum() == 8  # the three broken demo files are skipped with a reason
    with h5py.File(tmp_path / "runs" / "embed.h5", "r") as f:
        group = f["demo_fam3"]
        assert group["contacts"].shape == (82, 82)
        assert group["per_tok"].shape[0] == 82
    assert len(list((tmp_path / "runs" / "embed_plots").glob("*.png"))) == 8
    metrics = pd.read_csv(tmp_path / "runs" / "msa_tiny" / "metrics.csv")
    train = metrics[metrics["split"] == "train"]
    assert train["loss"].iloc[-1] < train["loss"].iloc[0]  # the tiny model learns something

    # the command again: every step picks up what is there
    before = (tmp_path / "runs" / "embed.h5").read_bytes()
    again = _run_steps(steps, tmp_path)
    assert "skipped (--resume)" in again[1].stderr and "resuming at step 300" in again[2].stderr
    assert "8 MSA(s) reused" in again[4].stderr
    with h5py.File(tmp_path / "runs" / "embed.h5", "r") as f:
        np.testing.assert_array_equal(f["demo_fam3/per_tok"][()], h5py.File(__import__("io").BytesIO(before))["demo_fam3/per_tok"][()])


@pytest.mark.parametrize("marker", ["quickstart", "tests"])
def test_readme_commands_install_torch_first(marker):
    command = _fenced_command(marker)
    assert command.startswith("python3 -m venv .venv")


def test_readme_is_the_newcomers_page_and_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 400
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
