"""Two-process DeepSpeed runs (torchrun, gloo, CPU, fp32) of the tiny model on shards of the shared sample data:
ZeRO-2 with validation on both ranks and a DataLoader worker per rank, ZeRO-3, kill -9 and resume, export."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.train_fixtures import msa_shards, read_metrics, run_torchrun, tiny_overrides  # noqa: F401

pytestmark = pytest.mark.slow
STEPS = 20
# ZeRO-2 runs validate every 10 steps on both ranks and load batches in a DataLoader worker process per rank
ZERO2 = {"train.steps": STEPS, "train.zero_stage": 2, "train.eval_interval": 10, "train.eval_batches": 2,
         "data.num_workers": 1, "data.prefetch_factor": 2}


@pytest.fixture(scope="module")
def zero2_run(msa_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("zero2") / "run"
    run_torchrun(tiny_overrides(msa_shards, run_dir, **ZERO2))
    return run_dir


@pytest.fixture(scope="module")
def zero3_run(msa_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("zero3") / "run"
    run_torchrun(tiny_overrides(msa_shards, run_dir, **{"train.steps": STEPS, "train.zero_stage": 3}))
    return run_dir


def test_zero2_two_ranks_loss_falls(zero2_run):
    losses = read_metrics(zero2_run)["loss"].to_numpy()
    assert len(losses) == STEPS
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    assert (zero2_run / "checkpoints" / "latest").read_text() == f"step-{STEPS:08d}"
    # ZeRO-2 with two ranks: each rank wrote its optimizer partition
    assert len(list((zero2_run / "checkpoints" / f"step-{STEPS:08d}").glob("*optim_states.pt"))) == 2
    val = read_metrics(zero2_run, "val")
    assert list(val["step"]) == [10, 20] and (val["val_loss"] < losses[:3].mean()).all()


def test_fp32_zero3_matches_zero2(zero2_run, zero3_run):
    z2 = read_metrics(zero2_run)
    z3 = read_metrics(zero3_run)
    assert list(z2["step"]) == list(z3["step"])
    np.testing.assert_allclose(z3["loss"].to_numpy(), z2["loss"].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z3["accuracy"].to_numpy(), z2["accuracy"].to_numpy(), atol=1e-6)


def test_killed_run_resumes_with_identical_losses(msa_shards, zero2_run, tmp_path):
    run_dir = tmp_path / "killed"
    overrides = tiny_overrides(msa_shards, run_dir, **ZERO2)
    # SIGKILL every rank right after step 15: the last complete checkpoint is step 10.
    killed = run_torchrun(overrides, env_extra={"MSAFORMER_FAULT_AT_STEP": "15"}, check=False)
    assert killed.returncode != 0
    assert (run_dir / "checkpoints" / "latest").read_text() == "step-00000010"
    assert read_metrics(run_dir)["step"].max() == 14  # logged past its checkpoint, killed before logging 15

    resumed = run_torchrun(overrides)
    assert "resuming at step 10" in resumed.stderr
    full = read_metrics(zero2_run)
    again = read_metrics(run_dir)
    assert list(again["step"]) == list(range(1, STEPS + 1))  # rows 11..15 of the killed run replaced
    # fp32 on CPU: the resumed run reproduces the uninterrupted losses exactly
    np.testing.assert_array_equal(again["loss"].to_numpy()[10:], full["loss"].to_numpy()[10:])
    np.testing.assert_array_equal(again["accuracy"].to_numpy(), full["accuracy"].to_numpy())
    # validation on two ranks after the resume: the same token-weighted loss as the uninterrupted run
    np.testing.assert_array_equal(read_metrics(run_dir, "val")["val_loss"], read_metrics(zero2_run, "val")["val_loss"])


def test_export_zero3_checkpoint_matches_zero2(zero2_run, zero3_run, msa_shards, tmp_path):
    import torch

    from msaformer.data.collate import collate_msas
    from msaformer.data.dataset import MsaShardDataset
    from msaformer.data.sampling import SamplingOptions
    from msaformer.model import load_model
    from msaformer.train.export import export_weights

    m2 = load_model(export_weights(zero2_run, tmp_path / "z2.pt"))
    m3 = load_model(export_weights(zero3_run, tmp_path / "z3.pt"))
    assert m3.config == m2.config
    assert set(m2.state_dict()) == set(m3.state_dict())  # frozen contact head included
    for name, p2 in m2.state_dict().items():
        if name.endswith("qkv.bias"):
            # the key third gets zero gradient (softmax ignores it); Adam turns float noise there into
            # stage-dependent drifts that never reach the output, so it is checked through the logits below
            continue
        torch.testing.assert_close(m3.state_dict()[name], p2, rtol=1e-5, atol=1e-6, msg=name)
    data = MsaShardDataset([msa_shards], options=SamplingOptions(max_len=23, max_tokens=24 * 9))
    batch = collate_msas([data[i] for i in range(3)])
    with torch.no_grad():
        torch.testing.assert_close(m3(batch.tokens)["logits"], m2(batch.tokens)["logits"], rtol=1e-4, atol=1e-4)


def test_export_older_checkpoint_by_tag(zero2_run, tmp_path):
    from msaformer.train.export import consolidated_state_dict

    latest, tag = consolidated_state_dict(zero2_run)
    older, older_tag = consolidated_state_dict(zero2_run, "step-00000010")
    assert (tag, older_tag) == ("step-00000020", "step-00000010")
    name = "embed_tokens.weight"
    assert not np.allclose(latest[name].numpy(), older[name].numpy())
    shutil.rmtree(tmp_path, ignore_errors=True)
