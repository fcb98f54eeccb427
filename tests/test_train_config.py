"""Training configuration: loading, overrides and one-line errors; the train / export-weights CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from msaformer.errors import ConfigError
from msaformer.train.config import load_config
from tests.train_fixtures import REPO, msa_shards  # noqa: F401

TINY = REPO / "configs" / "train" / "msa_tiny.yaml"


def test_shipped_configs_load(msa_shards):
    cfg = load_config(TINY, [f"data.shards={msa_shards}"])
    assert cfg.data.shards == [str(msa_shards)] and cfg.deepspeed.endswith("configs/deepspeed/zero2.json")
    assert cfg.model_config().embed_dim == 64 and cfg.grad_accum(2) == 1
    big = load_config(REPO / "configs/train/msa_100m.yaml", [f"data.shards=[{msa_shards}]"])
    model = big.model_config()
    assert (model.num_layers, model.embed_dim, model.num_heads) == (12, 768, 12)
    assert big.data.max_tokens_per_msa == 2**14 and big.grad_accum(8) == 64


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.shards=/nonexistent/shards", "shard directory /nonexistent/shards does not exist"),
        ("data.strategy=hhblits", "unknown row selection strategy 'hhblits'"),
        ("train.global_batch_size=7", "global_batch_size 7 is not divisible by train.micro_batch_size 2"),
        ("train.zero_stage=4", "zero_stage must be 0, 1, 2 or 3, got 4"),
        ("train.stepz=3", "unknown key(s) stepz in train"),
        ("model.embed_dimm=3", "unknown key(s) embed_dimm in model"),
        ("model.overrides.dropout=0", "model.overrides is gone: put the model fields directly under model:"),
        ("model.blocks_per_ckpt=1", "model.blocks_per_ckpt is not a model field any more"),
        ("train.activation_checkpointing=0", "activation_checkpointing must be an integer >= 1"),
        ("train.precision=fp16", "train.precision must be one of auto, fp32, bf16"),
        ("data.max_len=2000", "exceeds the model's max_positions 1024"),
        ("deepspeed=configs/deepspeed/zero9.json", "zero9.json not found"),
        ("train.micro_batch_size=0", "train.micro_batch_size must be an integer >= 1"),
        # values of the wrong type: one line naming the key, not a TypeError (or silently accepted)
        ("train.lr=fast", "train.lr must be a number, got 'fast'"),
        ("train.grad_clip=[1]", "train.grad_clip must be a number, got [1]"),
        ("train.resume=maybe", "train.resume must be true or false, got 'maybe'"),
        ("data.max_rows=abc", "data.max_rows must be an integer, got 'abc'"),
        ("data.mask_prob=x", "data.mask_prob must be a number"),
        ("data=5", "data must be a section"),
        ("model=5", "model must be a section"),
        ("model.dropout=abc", "model.dropout must be a number, got 'abc'"),
        ("model.dropout=1.5", "model.dropout must be a number in [0, 1)"),
        ("model.embed_dim=abc", "model.embed_dim must be an integer, got 'abc'"),
    ],
)
def test_bad_configs_fail_up_front_with_one_line(msa_shards, override, message):
    overrides = [f"data.shards={msa_shards}", override] if "data.shards" not in override else [override]
    with pytest.raises(ConfigError) as info:
        load_config(TINY, overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_exponent_notation_is_a_number(msa_shards):
    # PyYAML reads 1e-4 (no dot) as a string, in files and --set alike
    cfg = load_config(TINY, [f"data.shards={msa_shards}", "train.lr=1e-4", "train.weight_decay=0"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)


def test_global_batch_must_divide_over_ranks(msa_shards):
    cfg = load_config(TINY, [f"data.shards={msa_shards}", "train.global_batch_size=6", "train.grad_accum_steps=null"])
    assert cfg.grad_accum(1) == 3 and cfg.grad_accum(3) == 1
    with pytest.raises(ConfigError, match="not divisible by micro_batch_size 2 x 2 rank"):
        cfg.grad_accum(2)


def test_zero_stage_in_deepspeed_file_is_checked(msa_shards, tmp_path):
    bad = tmp_path / "zero7.json"
    bad.write_text('{"zero_optimization": {"stage": 7}}')
    with pytest.raises(ConfigError, match="ZeRO stage must be 0, 1, 2 or 3, got 7"):
        load_config(TINY, [f"data.shards={msa_shards}", f"deepspeed={bad}"])


def test_cli_reports_config_errors_in_one_line():
    from msaformer.cli.main import app

    result = CliRunner().invoke(app, ["train", "--config", str(TINY), "--set", "data.shards=/nonexistent/x"])
    assert result.exit_code == 1
    assert "shard directory /nonexistent/x does not exist" in result.output
    assert "Traceback" not in result.output


def test_export_weights_refuses_a_directory_as_out_up_front(tmp_path):
    from msaformer.cli.main import app

    (tmp_path / "run").mkdir()  # no checkpoints either: the --out check must come first
    result = CliRunner().invoke(app, ["export-weights", str(tmp_path / "run"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "is a directory" in result.output and "Traceback" not in result.output
    assert list((tmp_path / "run").iterdir()) == []


def test_cli_export_weights_without_checkpoints_fails_cleanly(tmp_path):
    from msaformer.cli.main import app

    result = CliRunner().invoke(app, ["export-weights", str(tmp_path), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 1 and "model_config.json not found" in result.output


def test_cli_train_single_process_then_export(msa_shards, tmp_path):
    """`msaformer train` with no launcher variables, then `export-weights`, then load_model."""
    import pandas as pd

    from msaformer.cli.main import app
    from msaformer.model import load_model
    from tests.train_fixtures import tiny_overrides

    run_dir = tmp_path / "run"
    args = ["train", "--config", str(TINY)]
    for item in tiny_overrides(msa_shards, run_dir, **{"train.steps": 4, "train.eval_interval": 2,
                                                      "train.save_interval": 2}):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(run_dir / "metrics.csv")
    assert list(frame.loc[frame["split"] == "train", "step"]) == [1, 2, 3, 4]
    assert frame["val_loss"].notna().sum() == 2
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(app, ["export-weights", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_model(out).config.num_layers == 3
    assert Path(run_dir / "checkpoints" / "latest").read_text() == "step-00000004"
    # the same command again: already at train.steps, nothing to do, nothing lost
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "resuming at step 4" in result.output
    result = CliRunner().invoke(app, args + ["--set", "train.resume=false"])
    assert result.exit_code == 1 and "already holds checkpoints" in result.output


def test_module_entry_parses_like_the_cli_and_accepts_deepspeed_local_rank():
    import subprocess
    import sys

    # python -m msaformer.train: what torchrun and the deepspeed launcher run (which appends --local_rank=N)
    argv = [sys.executable, "-m", "msaformer.train", "--config", str(TINY), "--set", "data.shards=/nonexistent/y",
            "--local_rank=1"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == "error: data.shards: shard directory /nonexistent/y does not exist; create it " \
        "with `msaformer preprocess ALIGNMENTS --out /nonexistent/y`"
    done = subprocess.run([sys.executable, "-m", "msaformer.train", "--confg", "x"], capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "--confg" in done.stderr


def test_non_finite_loss_stops_before_saving_and_keeps_the_good_checkpoint(msa_shards, tmp_path):
    """A run whose weights diverged stops at its first non-finite loss in one line, before saving: keep_last=1
    cannot push the last checkpoint out."""
    from msaformer.cli.main import app
    from tests.train_fixtures import tiny_overrides

    run_dir = tmp_path / "run"

    def args(**extra):
        out = ["train", "--config", str(TINY)]
        for item in tiny_overrides(msa_shards, run_dir, **{"train.save_interval": 1, "train.keep_last": 1, **extra}):
            out += ["--set", item]
        return out

    result = CliRunner().invoke(app, args(**{"train.steps": 2}))
    assert result.exit_code == 0, result.output
    import torch

    from msaformer.train.checkpoints import write_checksums

    folder = run_dir / "checkpoints" / "step-00000002"
    states = next(folder.glob("*model_states.pt"))
    payload = torch.load(states, weights_only=True)
    first = next(iter(payload["module"]))
    payload["module"][first].fill_(float("inf"))  # weights that diverged (consistent checksums: it loads)
    torch.save(payload, states)
    write_checksums(folder)
    result = CliRunner().invoke(app, args(**{"train.steps": 8}))
    assert result.exit_code == 1, result.output
    assert "step 3: the training loss is not finite" in result.output, result.output
    last = result.output.strip().splitlines()[-1]  # (earlier CliRunner runs can leave logging noise before it)
    assert last.startswith("error: step 3: the training loss is not finite") and "step-00000002, is untouched" in last
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert checkpoints == ["step-00000002"] and (run_dir / "checkpoints" / "latest").read_text() == "step-00000002"
