"""Benchmark the training input pipeline and loop.

Two measurements:

* ``loader``: the DataLoader alone (shard reads, row selection, crop, masking, collation) in MSAs/s, for
  each ``--workers`` count; nothing else runs.
* ``loop``: the full training step (loader + DeepSpeed engine: ZeRO-2, bf16 on GPU / fp32 on CPU, AdamW)
  against the raw trunk (the same model, forward + backward + torch AdamW on one batch already on the
  device, as ``tools/bench_trunk.py`` measures it), both in real tokens/s at shape ``B x N x L`` (L counts
  the ``<cls>`` column). The ratio says whether the loader and engine starve the accelerator.

To get exactly ``N x L`` samples every step, ``--synthetic DIR`` writes shards of random alignments at
least that deep and wide (real shards vary in shape).

Examples::

    python tools/bench_train.py loader --shards runs/shards --workers 0,2,8
    python tools/bench_train.py loop --synthetic /tmp/syn --preset esm_msa1b --shape 1x64x256 --steps 30
    python tools/bench_train.py loop --synthetic /tmp/syn --preset tiny --shape 1x16x64 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_shape(text: str) -> tuple[int, int, int]:
    b, n, length = (int(v) for v in text.lower().split("x"))
    return b, n, length


def write_synthetic_shards(out: Path, *, records: int, depth: int, length: int, seed: int = 0) -> Path:
    """Writes ``records`` random alignments of ``depth x length`` as shards in ``out`` (once)."""
    import numpy as np

    from msaformer.data.msa import Msa
    from msaformer.data.preprocess import write_msas
    from msaformer.data.shards import is_shard_dir

    if is_shard_dir(out):
        return out
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)

    def msas():
        for r in range(records):
            query = letters[rng.integers(0, 20, size=length)]
            tokens = np.repeat(query[None], depth, axis=0)
            mutate = rng.random((depth, length)) < 0.4
            tokens[mutate] = letters[rng.integers(0, 21, size=int(mutate.sum()))]
            tokens[0] = query
            yield Msa(names=[f"syn{r}_{i}" for i in range(depth)], tokens=tokens, deletions=np.zeros_like(tokens),
                      source=f"synthetic#{r}")

    write_msas(out, msas(), shard_size_records=max(1, records // 4))
    return out


def make_dataset(shards: list[str], strategy: str, max_len: int, max_tokens: int, seed: int = 0):
    from msaformer.data.dataset import MsaShardDataset
    from msaformer.data.sampling import SamplingOptions

    options = SamplingOptions(strategy=strategy, max_len=max_len, max_tokens=max_tokens)
    return MsaShardDataset(shards, val_fraction=0.0, options=options, seed=seed)


def bench_loader(args) -> list[dict]:
    """Returns MSAs/s of the DataLoader alone for each worker count."""
    import torch

    from msaformer.data.dataset import StreamBatchSampler, make_loader

    torch.set_num_threads(1)
    dataset = make_dataset(args.shards, args.strategy, args.max_len, args.max_tokens)
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        sampler = StreamBatchSampler(len(dataset), micro_batch_size=args.batch, seed=0,
                                     max_batches=args.warmup + args.batches)
        loader = iter(make_loader(dataset, sampler, num_workers=workers))
        for _ in range(args.warmup):  # worker start-up and first file opens
            next(loader)
        start = time.perf_counter()
        msas = tokens = 0
        for batch in loader:
            msas += batch.tokens.shape[0]
            tokens += batch.n_tokens
        seconds = time.perf_counter() - start
        row = {"bench": "loader", "workers": workers, "msas_per_s": msas / seconds, "tokens_per_s": tokens / seconds,
               "msas": msas, "seconds": seconds, "strategy": args.strategy, "max_len": args.max_len,
               "max_tokens": args.max_tokens, "records": len(dataset)}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def _step_fn(model, optimizer):
    import torch.nn.functional as F

    from msaformer.data.collate import IGNORE_INDEX

    def step(tokens, targets):
        logits = model(tokens)["logits"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def bench_loop(args) -> list[dict]:
    """Returns tokens/s of the raw trunk and of the full loop (loader + DeepSpeed) at the same shape."""
    import dataclasses

    import torch

    from msaformer.data.dataset import StreamBatchSampler, make_loader
    from msaformer.model import MSALanguageModel, MsaModelConfig
    from msaformer.train.distributed import init_distributed
    from msaformer.train.optim import build_ds_config, initialize
    from msaformer.train.execution import ExecutionOptions, prepare_model
    from msaformer.train.loop import mlm_loss

    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    info = init_distributed()
    device = info.device
    b, n, length = parse_shape(args.shape)
    max_len = length - 1
    max_tokens = n * length
    shards = args.shards or [str(write_synthetic_shards(Path(args.synthetic), records=args.records,
                                                         depth=max(n, 2) * 2, length=length + 37))]
    dataset = make_dataset(shards, "random", max_len, max_tokens)
    config = MsaModelConfig.preset(args.preset)
    config = dataclasses.replace(config, max_positions=max(config.max_positions, length),
                                 max_rows=max(config.max_rows, n) if config.max_rows else 0)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = []

    # raw trunk: one fixed batch on the device, torch AdamW, autocast bf16 on GPU
    torch.manual_seed(0)
    model = MSALanguageModel(config)
    prepare_model(model, ExecutionOptions(activation_checkpointing=args.ckpt or None))  # as the engine does
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step = _step_fn(model, optimizer)
    from msaformer.data.collate import collate_msas

    batch = collate_msas([dataset[i % len(dataset)] for i in range(b)])
    tokens, targets = batch.tokens.to(device), batch.targets.to(device)
    assert tuple(tokens.shape) == (b, n, length), f"sample shape {tuple(tokens.shape)} != {(b, n, length)}"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for _ in range(args.warmup):
            step(tokens, targets)
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            step(tokens, targets)
        sync()
    raw_seconds = time.perf_counter() - start
    raw = batch.n_tokens * args.steps / raw_seconds
    del model, optimizer, step
    results.append({"bench": "raw_trunk", "tokens_per_s": raw, "shape": args.shape, "preset": args.preset,
                    "device": device.type, "bf16": use_bf16})
    print(json.dumps(results[-1]), flush=True)

    # full loop: loader workers + DeepSpeed ZeRO-2 engine, as msaformer.train.loop runs it
    torch.manual_seed(0)
    model = MSALanguageModel(config)
    prepare_model(model, ExecutionOptions(activation_checkpointing=args.ckpt or None))
    model = model.to(device)
    for p in model.contact_head.parameters():
        p.requires_grad_(False)
    ds_config = build_ds_config(Path(__file__).resolve().parents[1] / "configs/deepspeed/zero2.json",
                                micro_batch_size=b, grad_accum_steps=1, world_size=info.world_size,
                                device=device, grad_clip=1.0)
    engine = initialize(model, ds_config, lr=1e-4, warmup_steps=0, total_steps=10**6)
    # the engine alone on the fixed batch: separates DeepSpeed's overhead from the loader's
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            start = time.perf_counter()
        loss, _, _ = mlm_loss(engine(tokens)["logits"], targets)
        engine.backward(loss)
        engine.step()
    sync()
    engine_only = batch.n_tokens * args.steps / (time.perf_counter() - start)
    results.append({"bench": "engine_fixed_batch", "tokens_per_s": engine_only, "ratio_to_raw": engine_only / raw,
                    "shape": args.shape, "preset": args.preset, "device": device.type,
                    "bf16": ds_config["bf16"]["enabled"], "zero_stage": 2})
    print(json.dumps(results[-1]), flush=True)

    sampler = StreamBatchSampler(len(dataset), micro_batch_size=b, rank=info.rank, world_size=info.world_size,
                                 max_batches=args.warmup + args.steps)
    loader = iter(make_loader(dataset, sampler, num_workers=args.loop_workers))
    n_tokens = 0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            start = time.perf_counter()
            n_tokens = 0
        batch = next(loader)
        loss, _, _ = mlm_loss(engine(batch.tokens.to(device, non_blocking=True))["logits"],
                              batch.targets.to(device, non_blocking=True))
        engine.backward(loss)
        engine.step()
        n_tokens += batch.n_tokens
    sync()
    loop = n_tokens / (time.perf_counter() - start)
    results.append({"bench": "full_loop", "tokens_per_s": loop, "ratio_to_raw": loop / raw, "shape": args.shape,
                    "preset": args.preset, "device": device.type, "bf16": ds_config["bf16"]["enabled"],
                    "zero_stage": 2, "loader_workers": args.loop_workers})
    print(json.dumps(results[-1]), flush=True)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    lo = sub.add_parser("loader", help="DataLoader alone, MSAs/s")
    lo.add_argument("--shards", nargs="+", required=True)
    lo.add_argument("--workers", default="0,2,8")
    lo.add_argument("--strategy", default="random")
    lo.add_argument("--max-len", type=int, default=255)
    lo.add_argument("--max-tokens", type=int, default=2**14)
    lo.add_argument("--batch", type=int, default=1)
    lo.add_argument("--batches", type=int, default=200)
    lo.add_argument("--warmup", type=int, default=10)
    lp = sub.add_parser("loop", help="full loop vs raw trunk, tokens/s")
    lp.add_argument("--shards", nargs="+", default=None, help="real shards (shapes vary); default --synthetic")
    lp.add_argument("--synthetic", default="/tmp/msaformer_bench_shards")
    lp.add_argument("--records", type=int, default=64)
    lp.add_argument("--preset", default="esm_msa1b")
    lp.add_argument("--shape", default="1x64x256", help="B x N x L, L with <cls>")
    lp.add_argument("--steps", type=int, default=30)
    lp.add_argument("--warmup", type=int, default=5)
    lp.add_argument("--ckpt", type=int, default=0, help="blocks_per_ckpt (0: off)")
    lp.add_argument("--loop-workers", type=int, default=2)
    lp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    for p in (lo, lp):
        p.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    results = bench_loader(args) if args.bench == "loader" else bench_loop(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.flush()
    os._exit(0)  # DeepSpeed's gloo threads (see msaformer.train.engine.finish)


if __name__ == "__main__":
    main()
