"""Shared fixtures of the training tests: shards built from ../shared/datasets/msa once per session.

Import the fixtures into a test module with ``from tests.train_fixtures import msa_shards  # noqa: F401``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import MSA, REPO

DATASETS = MSA


@pytest.fixture(scope="session")
def msa_shards(tmp_path_factory) -> Path:
    """Returns a shard directory holding every valid alignment of ../shared/datasets/msa (the bad ones skipped)."""
    from msaformer.data.preprocess import preprocess

    if not DATASETS.is_dir():
        pytest.skip(f"the shared sample data is not at {DATASETS}")
    out = tmp_path_factory.mktemp("train_shards") / "shards"
    preprocess([str(DATASETS)], out, on_error="skip", workers=1)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_overrides(shards: Path, run_dir: Path, **extra) -> list[str]:
    """Returns --set overrides for a fast run of the tiny preset on ``shards``."""
    values = {
        "model": "{preset: tiny}",
        "data.shards": str(shards),
        "data.max_len": 23,
        "data.max_tokens_per_msa": 24 * 9,  # 9 rows x 23 columns (+ <cls>)
        "data.val_fraction": 0.2,
        "data.num_workers": 0,
        "train.micro_batch_size": 2,
        "train.grad_accum_steps": 1,
        "train.lr": 3e-3,
        "train.warmup_steps": 3,
        "train.log_interval": 1,
        "train.eval_interval": 0,
        "train.save_interval": 10,
        "train.keep_last": 5,
        "run_dir": str(run_dir),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def run_torchrun(overrides: list[str], *, nproc: int = 2, env_extra: dict | None = None, timeout: float = 240,
                 check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``torchrun --nproc_per_node nproc -m msaformer.train`` on configs/train/msa_tiny.yaml."""
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # an in-process test may have set these
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
           "-m", "msaformer.train", "--config", str(REPO / "configs/train/msa_tiny.yaml")]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def read_metrics(run_dir: Path, split: str = "train"):
    """Returns the rows of ``run_dir/metrics.csv`` of one split as a pandas DataFrame."""
    import pandas as pd

    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame[frame["split"] == split].reset_index(drop=True)
