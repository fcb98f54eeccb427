"""The meta-device memory estimator: exact accounting, autocast emulation, and the trunk's memory targets."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from msaformer.model import MSALanguageModel, MsaModelConfig
from msaformer.train.execution import apply_activation_checkpointing
from msaformer.train.memory import GiB, EmulatedAutocast, MemoryTracker, measure_step, recompute_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import estimate_memory  # noqa: E402


def test_tracker_counts_allocations_frees_and_peak():
    tracker = MemoryTracker()
    with tracker:
        a = torch.empty(1000)  # 4000 bytes -> one 4096-byte block
        b = torch.empty(10)  # 40 bytes -> 512
        view = a.view(10, 100)  # same storage: not counted again
        assert tracker.current == 4096 + 512
        del a
        assert tracker.current == 4096 + 512  # still alive through the view
        del view
        assert tracker.current == 512
        c = torch.empty(256)  # 1024 bytes
        assert tracker.current == 512 + 1024
    assert tracker.peak == 4096 + 512
    del b, c


def test_tracker_counts_existing_tensors_and_reads_meta_conditions_as_false():
    weight = torch.empty(1024, device="meta")
    tracker = MemoryTracker()
    tracker.track([weight])
    with tracker:
        assert tracker.current == 4096
        assert not bool(torch.ones(3, device="meta").any())  # no data: "no padding"
        torch.empty(2048, device="meta")  # freed at once
    assert tracker.peak == 4096 + 8192


def test_emulated_autocast_follows_cuda_autocast_dtypes():
    with torch.device("meta"):
        lin = torch.nn.Linear(8, 24)
        norm = torch.nn.LayerNorm(8)
    x = torch.empty(4, 8, device="meta")
    with EmulatedAutocast(torch.bfloat16) as mode:
        assert lin(x).dtype == torch.bfloat16
        assert norm(x.bfloat16()).dtype == torch.float32
        assert lin(x).softmax(-1).dtype == torch.float32
        assert torch.einsum("ij,kj->ik", x, x).dtype == torch.bfloat16
        lin(x)
        assert len(mode._cache) == 2  # the weight's and bias's casts are cached, as autocast caches them
        # Two different slices of one parameter are views: never served from the cache (their ids may repeat).
        w1, w2 = lin.weight[:8], lin.weight[16:]
        assert F.linear(x, w1).shape == (4, 8)
        del w1
        assert F.linear(x, lin.weight[8:16]).shape == (4, 8)
        assert F.linear(x, w2).shape == (4, 8)


def _tiny(**changes) -> MsaModelConfig:
    return MsaModelConfig.preset("tiny").replace(**changes)


def _train_peak(model: torch.nn.Module, tokens: torch.Tensor) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)

    def step(autocast) -> None:
        with autocast():
            logits = model(tokens)["logits"]
        logits.float().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return measure_step(model, step, dtype=torch.bfloat16, warmup=1, extra=[tokens])[0]


def test_meta_estimate_equals_the_same_run_on_cpu():
    # The accounting is device-independent: meta kernels allocate what CPU kernels allocate.
    def run(device: str) -> float:
        torch.manual_seed(0)
        with torch.device(device):
            model = MSALanguageModel(_tiny(dropout=0.1, attention_dropout=0.1)).train()
        tokens = torch.full((2, 6, 11), 5, dtype=torch.long, device=device)
        return _train_peak(model, tokens)

    assert run("meta") == pytest.approx(run("cpu"), rel=1e-6)


def test_checkpointing_is_recomputed_under_the_emulation_and_saves_memory():
    tokens = torch.full((1, 32, 65), 5, dtype=torch.long, device="meta")
    peaks = {}
    for ckpt in (None, 1):
        with torch.device("meta"):
            model = MSALanguageModel(_tiny(num_layers=4)).train()
        if ckpt:  # the engine's checkpointing, with the estimator's recomputation context: no monkeypatching
            apply_activation_checkpointing(model, ckpt, context_fn=recompute_context(torch.bfloat16))
        peaks[ckpt] = _train_peak(model, tokens)
    assert peaks[1] < 0.6 * peaks[None]


ARGS = Namespace(preset="esm_msa1b", ckpt=0, chunk_tokens=None, esm_max_tokens=2**14, dtype="bf16")


@pytest.mark.parametrize("case", ["train-1x64x256", "train-1x16x1024", "train-1x512x128", "infer-1x1024x256"])
def test_fair_esm_estimate_matches_its_published_h100_measurement(case):
    # Calibration against fair-esm's measured torch.cuda.max_memory_allocated on an H100 (the trunk issue).
    est = estimate_memory.estimate(case, "fair_esm", ARGS)["peak_gib"]
    assert est == pytest.approx(estimate_memory.FAIR_ESM_H100[case], rel=0.03)


def test_inference_memory_is_a_quarter_of_fair_esm_at_1024_by_256():
    theirs = estimate_memory.estimate("infer-1x1024x256", "fair_esm", ARGS)["peak_gib"]
    ours = estimate_memory.estimate("infer-1x1024x256", "msaformer", ARGS)["peak_gib"]
    assert ours <= theirs / 4  # the target: at most a quarter of fair-esm's memory


def test_checkpointed_training_at_512_by_128_fits_9_gib():
    args = Namespace(**{**vars(ARGS), "ckpt": 1})
    assert estimate_memory.estimate("train-1x512x128", "msaformer", args)["peak_gib"] <= 9.0


def test_contacts_of_a_1024_by_1023_msa_fit_in_20_gib():
    est = estimate_memory.estimate("contacts-1x1024x1023", "msaformer", ARGS)["peak_gib"]
    assert est <= 20.0
    x_bytes = 1024 * 1024 * 768 * 4 / GiB  # one fp32 copy of the MSA's activations: 3 GiB
    assert est < 3 * x_bytes  # the chunked stack runs in one x-sized buffer (plus the contact head)
