"""The DeepSpeed training parts in one process: config building, schedule, checkpoints, export, metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
import math

import numpy as np
import pytest
import torch

from msaformer.errors import ConfigError
from msaformer.train import checkpoints as C
from msaformer.train import distributed as D
from msaformer.train import metrics as M
from msaformer.train import optim as O


def test_build_ds_config_fills_batch_and_fp32_on_cpu():
    cfg = O.build_ds_config(
        {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}, "optimizer": {"type": "Adam"}},
        micro_batch_size=3, grad_accum_steps=5, world_size=7, device=torch.device("cpu"), grad_clip=0.5,
    )
    assert cfg["train_batch_size"] == 3 * 5 * 7
    assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["gradient_accumulation_steps"] == 5
    assert cfg["bf16"]["enabled"] is False  # CPU: fp32, so stages agree exactly
    assert "optimizer" not in cfg  # torch AdamW is passed instead: nothing compiles
    assert cfg["gradient_clipping"] == 0.5


def test_build_ds_config_rejects_unknown_stage_and_sets_offload_flag():
    with pytest.raises(ConfigError, match="ZeRO stage must be 0, 1, 2 or 3, got 4"):
        O.build_ds_config({"zero_optimization": {"stage": 4}}, micro_batch_size=1, grad_accum_steps=1,
                          world_size=1, device="cpu")
    cfg = O.build_ds_config({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}},
                            micro_batch_size=1, grad_accum_steps=1, world_size=1, device="cpu", zero_stage=3)
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["zero_force_ds_cpu_optimizer"] is False


def test_shipped_deepspeed_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"
    for stage in (1, 2, 3):
        cfg = O.build_ds_config(root / f"zero{stage}.json", micro_batch_size=1, grad_accum_steps=1,
                                world_size=1, device="cpu")
        assert cfg["zero_optimization"]["stage"] == stage


def test_lr_schedule_warms_up_then_decays_to_floor():
    f = [O.lr_lambda(s, warmup_steps=4, total_steps=24, min_lr_ratio=0.1) for s in range(30)]
    np.testing.assert_allclose(f[:4], [0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(f[3:], f[4:]))
    assert math.isclose(f[24], 0.1) and math.isclose(f[29], 0.1)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7))
    decay, no_decay = O.param_groups(model, 0.05)
    assert [p.dim() for p in decay["params"]] == [2] and decay["weight_decay"] == 0.05
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def _tiny_engine(stage: int = 2, checkpointing: int | None = None, **model_overrides):
    from msaformer.model import MSALanguageModel, MsaModelConfig
    from msaformer.train.execution import ExecutionOptions, prepare_model

    info = D.init_distributed()
    torch.manual_seed(3)
    model = MSALanguageModel(MsaModelConfig.preset("tiny", **model_overrides))
    prepare_model(model, ExecutionOptions(activation_checkpointing=checkpointing))
    cfg = O.build_ds_config({"zero_optimization": {"stage": stage}}, micro_batch_size=2, grad_accum_steps=1,
                            world_size=info.world_size, device=info.device)
    return O.initialize(model, cfg, lr=1e-2, warmup_steps=1, total_steps=20), model.config


def _batch(seed: int = 0):
    from msaformer.data.collate import MsaSample, collate_msas, mask_tokens

    rng = np.random.default_rng(seed)
    samples = []
    for n, length in ((5, 11), (3, 8)):
        ids = np.concatenate([np.zeros((n, 1), np.int64), rng.integers(4, 24, size=(n, length))], axis=1)
        tokens, targets = mask_tokens(ids, rng)
        samples.append(MsaSample(tokens, targets))
    return collate_msas(samples)


def _step(engine, batch):
    from msaformer.train.loop import mlm_loss

    loss, _, _ = mlm_loss(engine(batch.tokens)["logits"], batch.targets)
    engine.backward(loss)
    engine.step()
    return float(loss.detach())


def test_export_weights_gives_the_engine_models_logits(tmp_path):
    from msaformer.model import load_model
    from msaformer.train.export import export_weights
    from msaformer.train.loop import MODEL_CONFIG_FILE

    engine, model_config = _tiny_engine()
    for s in range(3):
        _step(engine, _batch(s))
    C.save_checkpoint(engine, tmp_path, 3, {"note": "x"})
    (tmp_path / MODEL_CONFIG_FILE).write_text(json.dumps(__import__("dataclasses").asdict(model_config)))
    model = load_model(export_weights(tmp_path, tmp_path / "model.pt"))
    tokens = _batch(9).tokens
    engine.eval()
    with torch.no_grad():
        expected = engine(tokens)["logits"]
        got = model(tokens)["logits"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_resume_reproduces_next_loss_and_restores_rng(tmp_path):
    engine, _ = _tiny_engine()
    _step(engine, _batch(0))
    C.save_checkpoint(engine, tmp_path, 1, {"data": {"consumed": 2}})
    after_save = torch.rand(3)
    expected = _step(engine, _batch(1))

    fresh, _ = _tiny_engine()
    torch.manual_seed(1234)  # a different RNG state, which loading must undo
    state = C.load_latest_checkpoint(fresh, tmp_path)
    assert state["step"] == 1 and state["data"] == {"consumed": 2} and state["tag"] == "step-00000001"
    torch.testing.assert_close(torch.rand(3), after_save)
    assert _step(fresh, _batch(1)) == expected


def test_activation_checkpointing_under_zero3_gives_the_same_losses():
    plain, _ = _tiny_engine(stage=3)
    checkpointed, _ = _tiny_engine(stage=3, checkpointing=1)
    for s in range(3):
        a, b = _step(plain, _batch(s)), _step(checkpointed, _batch(s))
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_crash_mid_save_leaves_previous_checkpoint_latest(tmp_path, monkeypatch):
    engine, _ = _tiny_engine()
    _step(engine, _batch(0))
    C.save_checkpoint(engine, tmp_path, 1)
    _step(engine, _batch(1))

    real_save = engine.save_checkpoint

    def crash_after_some_files(save_dir, tag=None, **kwargs):
        real_save(save_dir, tag=tag, **kwargs)  # files written ...
        raise KeyboardInterrupt("killed before the checkpoint was committed")  # ... but never committed

    monkeypatch.setattr(engine, "save_checkpoint", crash_after_some_files)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(engine, tmp_path, 2)
    root = tmp_path / C.CHECKPOINT_DIR
    assert (root / "step-00000002").is_dir() and not (root / "step-00000002" / C.COMPLETE_MARKER).exists()
    assert (root / C.LATEST_MARKER).read_text() == "step-00000001"
    # even a marker pointing at the half-written folder (written by hand or another tool) is not trusted
    (root / C.LATEST_MARKER).write_text("step-00000002")
    assert C.latest_checkpoint(tmp_path) == "step-00000001"
    fresh, _ = _tiny_engine()
    assert C.load_latest_checkpoint(fresh, tmp_path)["step"] == 1


def test_keep_last_deletes_oldest(tmp_path):
    engine, _ = _tiny_engine(stage=1)
    for step in range(1, 5):
        _step(engine, _batch(step))
        C.save_checkpoint(engine, tmp_path, step, keep_last=2)
    assert C.complete_checkpoints(tmp_path) == ["step-00000003", "step-00000004"]
    assert not (tmp_path / C.CHECKPOINT_DIR / "step-00000001").exists()
    assert C.latest_checkpoint(tmp_path) == "step-00000004"


def test_metrics_logger_csv_rows_and_resume_truncation(tmp_path):
    import pandas as pd

    log = M.MetricsLogger(tmp_path, rank=0)
    for step in (1, 2, 3):
        log.log(step, {"loss": 3.0 / step, "lr": 0.1})
    log.log(3, {"loss": 0.7}, split="val")
    log.close()
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame.columns) == ["step", "split", "loss", "lr", "val_loss"]
    assert list(frame["step"]) == [1, 2, 3, 3] and frame["val_loss"].iloc[3] == 0.7
    M.MetricsLogger(tmp_path, rank=0, start_step=2).close()  # a run resumed at step 2
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == [1, 2]
    M.MetricsLogger(tmp_path / "other", rank=1).log(1, {"loss": 1.0})
    assert not (tmp_path / "other" / "metrics.csv").exists()


class _Payload:
    """A pickle that would run code when loaded with weights_only=False."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _poison(path: Path) -> None:
    """Replaces a torch file by one holding an object whose unpickling would run a command."""
    torch.save({"module": _Payload()}, path)


@pytest.mark.parametrize("stage", [0, 2])
def test_files_of_a_run_directory_never_run_code(tmp_path, monkeypatch, stage):
    from msaformer.errors import CheckpointError
    from msaformer.train.export import export_weights
    from msaformer.train.loop import MODEL_CONFIG_FILE

    monkeypatch.chdir(tmp_path)
    engine, model_config = _tiny_engine(stage=stage)
    _step(engine, _batch(0))
    tag = C.save_checkpoint(engine, tmp_path, 1, {"data": {"consumed": 2}})
    (tmp_path / MODEL_CONFIG_FILE).write_text(json.dumps(__import__("dataclasses").asdict(model_config)))
    folder = tmp_path / C.CHECKPOINT_DIR / tag
    for name in sorted(p.name for p in folder.glob("*.pt")):
        target = folder / name
        saved = target.read_bytes()
        _poison(target)
        C.write_checksums(folder)  # a consistent, tampered checkpoint: the checksums cannot catch it
        with pytest.raises(CheckpointError, match=name):
            fresh, _ = _tiny_engine(stage=stage)
            C.load_latest_checkpoint(fresh, tmp_path, warn=lambda message: None)
        if "model_states" in name:
            with pytest.raises(CheckpointError, match=name):
                export_weights(tmp_path, tmp_path / "model.pt")
        target.write_bytes(saved)
        C.write_checksums(folder)
        assert not (tmp_path / "PWNED").exists()


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    from msaformer.errors import CheckpointError

    engine, _ = _tiny_engine()
    _step(engine, _batch(0))
    C.save_checkpoint(engine, tmp_path, 1, {"data": {"consumed": 2}})
    _step(engine, _batch(1))
    tag = C.save_checkpoint(engine, tmp_path, 2, {"data": {"consumed": 4}})
    folder = tmp_path / C.CHECKPOINT_DIR / tag
    optim = next(folder.glob("*optim_states.pt"))
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the optimizer state
    optim.write_bytes(bytes(data))
    seen = []
    fresh, _ = _tiny_engine()
    state = C.load_latest_checkpoint(fresh, tmp_path, warn=seen.append)
    assert state["tag"] == "step-00000001" and len(seen) == 1
    assert "step-00000002" in seen[0] and "content differs from its checksum" in seen[0]
    optim.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    seen.clear()
    assert C.load_latest_checkpoint(_tiny_engine()[0], tmp_path, warn=seen.append)["step"] == 1
    assert "truncated" in seen[0]
    for other in (tmp_path / C.CHECKPOINT_DIR).glob("step-00000001/*model_states.pt"):
        other.unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint loads"):
        C.load_latest_checkpoint(_tiny_engine()[0], tmp_path, warn=seen.append)
