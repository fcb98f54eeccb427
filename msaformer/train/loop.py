"""The MSA masked-language-model training loop: data stream -> DeepSpeed engine -> logs and checkpoints.

One function, :func:`train`, is the whole program behind ``msaformer train`` and ``python -m
msaformer.train``; it runs unchanged with one process and no launcher, under ``torchrun`` and under the
``deepspeed`` launcher. Resuming restores weights, optimizer, LR schedule, the data stream position and
RNG states, so a killed run continues with the loss an uninterrupted run would have had.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

from msaformer.errors import ConfigError, MsaformerError
from msaformer.files import write_text
from msaformer.train.checkpoints import complete_checkpoints, load_latest_checkpoint, save_checkpoint
from msaformer.train.config import TrainConfig, config_to_dict
from msaformer.train.distributed import all_reduce_sum, finish, init_distributed
from msaformer.train.metrics import MetricsLogger, Throughput
from msaformer.train.optim import build_ds_config, initialize

#: Written in the run directory by rank 0: what ``export-weights`` needs to rebuild the model.
MODEL_CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"

#: Test hook: ``MSAFORMER_FAULT_AT_STEP=N`` kills every rank with SIGKILL right after optimizer step N
#: (no cleanup at all, as a preempted job), to test resume. Unset in normal use.
FAULT_ENV = "MSAFORMER_FAULT_AT_STEP"


def mlm_loss(logits, targets):
    """Returns ``(loss, n_masked, n_correct)``: mean cross-entropy over masked positions of ``[B, N, L, V]``."""
    import torch.nn.functional as F

    from msaformer.data.collate import IGNORE_INDEX

    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_targets = targets.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX)
    selected = flat_targets != IGNORE_INDEX
    n_masked = selected.sum()
    n_correct = (flat_logits.argmax(-1)[selected] == flat_targets[selected]).sum()
    return loss, n_masked, n_correct


def _metrics(loss_sum: float, n_batches: float, n_masked: float, n_correct: float) -> dict:
    loss = loss_sum / max(n_batches, 1)
    return {
        "loss": loss,
        "accuracy": n_correct / max(n_masked, 1),
        "perplexity": math.exp(min(loss, 50.0)),
    }


def evaluate(engine, dataset, batches, device) -> dict | None:
    """Returns validation loss (token-weighted over all ranks), masked accuracy and perplexity; None if empty."""
    import torch

    from msaformer.data.collate import collate_msas

    if not batches:
        return None
    engine.eval()
    loss_tokens = n_masked = n_correct = 0.0
    with torch.no_grad():
        for keys in batches:
            batch = collate_msas([dataset[k] for k in keys]).to(device)
            loss, masked, correct = mlm_loss(engine(batch.tokens)["logits"], batch.targets)
            loss_tokens += float(loss) * float(masked)
            n_masked += float(masked)
            n_correct += float(correct)
    engine.train()
    loss_tokens, n_masked, n_correct = all_reduce_sum([loss_tokens, n_masked, n_correct], device)
    loss = loss_tokens / max(n_masked, 1)
    return {"loss": loss, "accuracy": n_correct / max(n_masked, 1), "perplexity": math.exp(min(loss, 50.0))}


def _write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def train(config: TrainConfig, *, exit_at_end: bool | None = None) -> dict:
    """Trains the MSA language model of ``config``; returns a summary (final step, last losses, run dir).

    Multi-rank CPU jobs leave with ``os._exit(0)`` at the end (DeepSpeed's gloo exit trap); pass
    ``exit_at_end=False`` to return instead.
    """
    import torch

    from msaformer.data.dataset import MsaShardDataset, StreamBatchSampler, eval_keys, make_loader, position_state
    from msaformer.model import MSALanguageModel
    from msaformer.train.execution import prepare_model

    t, d = config.train, config.data
    run_dir = Path(config.run_dir)
    if not t.resume and complete_checkpoints(run_dir):
        raise ConfigError(
            f"run_dir {run_dir} already holds checkpoints and train.resume is false; delete it or pick another run_dir"
        )
    dist_info = init_distributed()
    if t.threads and dist_info.device.type == "cpu":
        # small models gain nothing from intra-op threads, and on a busy CPU they lose a lot (25x seen)
        torch.set_num_threads(t.threads)
    model_config = config.model_config()
    grad_accum = config.grad_accum(dist_info.world_size)
    options = config.sampling_options(model_config.max_rows)

    # Same initial weights on every rank and in every run with this seed; dropout streams differ per rank.
    torch.manual_seed(t.seed)
    model = MSALanguageModel(model_config)
    # The contact regression is fitted after pretraining (as in fair-esm); the MLM loss gives it no gradient.
    for param in model.contact_head.parameters():
        param.requires_grad_(False)
    prepare_model(model, config.execution())  # activation checkpointing, compilation: outside the model
    torch.manual_seed(t.seed + 1000 * dist_info.rank)
    params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them

    train_set = MsaShardDataset(
        d.shards, split="train", val_fraction=d.val_fraction, options=options, mask_prob=d.mask_prob,
        seed=t.seed, max_depth=d.max_depth,
    )  # fmt: skip
    val_set = MsaShardDataset(
        d.shards, split="val", val_fraction=d.val_fraction, options=options, mask_prob=d.mask_prob,
        seed=t.seed, max_depth=d.max_depth, readers=train_set.readers,
    )  # fmt: skip

    ds_config = build_ds_config(
        config.deepspeed,
        micro_batch_size=t.micro_batch_size,
        grad_accum_steps=grad_accum,
        world_size=dist_info.world_size,
        device=dist_info.device,
        grad_clip=t.grad_clip,
        zero_stage=t.zero_stage,
        precision=t.precision,
    )
    engine = initialize(
        model.to(dist_info.device), ds_config, lr=t.lr, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps, total_steps=t.steps, min_lr_ratio=t.min_lr_ratio,
    )  # fmt: skip

    start_step, position = 0, 0
    state = load_latest_checkpoint(engine, run_dir) if t.resume else None
    if state is not None:
        start_step = int(state["step"])
        position = int(state["data"]["consumed"])
        changed = [
            f"{what} {before} -> {now}"
            for what, before, now in (
                ("training records", state["data"].get("n_records"), len(train_set)),
                ("ranks", state.get("world_size"), dist_info.world_size),
                ("micro batch size", state.get("micro_batch_size"), t.micro_batch_size),
            )
            if before is not None and before != now
        ]
        if changed and dist_info.is_main:
            from rich.console import Console

            Console(stderr=True).print(
                f"[yellow]warning:[/] resuming {state['tag']} with {', '.join(changed)}: the data stream continues "
                "from the same position, but batches will differ from an uninterrupted run", highlight=False,
                soft_wrap=True)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / MODEL_CONFIG_FILE, dataclasses.asdict(model_config))
        _write_json(run_dir / TRAIN_CONFIG_FILE, config_to_dict(config) | {
            "world_size": dist_info.world_size, "grad_accum_steps": grad_accum, "deepspeed_config": ds_config})
    logger = MetricsLogger(run_dir, dist_info.rank, start_step=start_step)
    if dist_info.is_main:
        from rich.console import Console

        Console(stderr=True).print(
            f"msaformer train: {params / 1e6:.2f}M parameters, {dist_info.world_size} rank(s) on "
            f"{dist_info.device.type}, ZeRO-{ds_config['zero_optimization']['stage']}, "
            f"{'bf16' if ds_config['bf16']['enabled'] else 'fp32'}, {len(train_set)} train / {len(val_set)} val "
            f"MSAs, {'resuming at step ' + str(start_step) if start_step else 'from scratch'}", highlight=False, soft_wrap=True)

    sampler = StreamBatchSampler(
        len(train_set), micro_batch_size=t.micro_batch_size, rank=dist_info.rank,
        world_size=dist_info.world_size, seed=t.seed, start=position,
        max_batches=(t.steps - start_step) * grad_accum,
    )  # fmt: skip
    loader = make_loader(train_set, sampler, num_workers=d.num_workers, prefetch_factor=d.prefetch_factor)
    val_batches = eval_keys(
        len(val_set), rank=dist_info.rank, world_size=dist_info.world_size,
        micro_batch_size=t.micro_batch_size, max_batches=t.eval_batches,
    )  # fmt: skip
    fault_step = int(os.environ.get(FAULT_ENV, "0") or 0)

    def client_state(micro_batches_done: int) -> dict:
        return {"data": position_state(sampler.position_after(micro_batches_done), len(train_set)),
                "world_size": dist_info.world_size, "micro_batch_size": t.micro_batch_size}

    engine.train()
    throughput = Throughput()
    window = [0.0, 0.0, 0.0, 0.0]  # loss sum, micro-batches, masked tokens, correct
    last_train, last_val = None, None
    step, micro = start_step, 0
    saved_at = start_step
    batches = iter(loader)
    while step < t.steps:
        step_loss = 0.0
        for _ in range(grad_accum):
            batch = next(batches).to(dist_info.device, non_blocking=True)
            loss, n_masked, n_correct = mlm_loss(engine(batch.tokens)["logits"], batch.targets)
            engine.backward(loss)
            engine.step()
            micro += 1
            value = float(loss.detach())
            step_loss += value
            window[0] += value
            window[1] += 1
            window[2] += float(n_masked)
            window[3] += float(n_correct)
            throughput.add(batch.n_tokens)
        step += 1
        # a non-finite loss on any rank stops every rank before anything is saved: the weights it produced
        # must never become a checkpoint (nor push a good one out of keep_last)
        if all_reduce_sum([0.0 if math.isfinite(step_loss) else 1.0], dist_info.device)[0]:
            from msaformer.train.checkpoints import latest_checkpoint

            kept = latest_checkpoint(run_dir)
            raise MsaformerError(
                f"step {step}: the training loss is not finite ({step_loss}); stopped before saving anything "
                f"({'the last checkpoint, ' + kept + ', is untouched' if kept else 'no checkpoint was written'}). "
                "Lower train.lr or raise train.warmup_steps, or check the data, then resume"
            )
        if step == fault_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if step % t.log_interval == 0 or step == t.steps:
            rate = throughput.rate()
            totals = all_reduce_sum(window + [rate], dist_info.device)
            last_train = _metrics(*totals[:4])
            last_train["tokens_per_s"] = totals[4]
            last_train["lr"] = float(engine.get_lr()[0])
            logger.log(step, last_train)
            window = [0.0, 0.0, 0.0, 0.0]
        if t.eval_interval and (step % t.eval_interval == 0 or step == t.steps):
            last_val = evaluate(engine, val_set, val_batches, dist_info.device)
            if last_val is not None:
                logger.log(step, last_val, split="val")
        if (t.save_interval and step % t.save_interval == 0) or step == t.steps:
            save_checkpoint(engine, run_dir, step, client_state(micro), keep_last=t.keep_last)
            saved_at = step
    if saved_at != step:  # nothing to train (already at t.steps): make sure the final state is on disk
        save_checkpoint(engine, run_dir, step, client_state(micro), keep_last=t.keep_last)
    logger.close()
    summary = {"step": step, "run_dir": str(run_dir), "train": last_train, "val": last_val}
    finish(exit_process=exit_at_end)
    return summary
