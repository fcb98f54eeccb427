"""DeepSpeed configuration, the optimizer and the learning-rate schedule of every training job.

msaformer passes DeepSpeed a torch AdamW (no fused op to compile) and a warmup-then-cosine ``LambdaLR``; the
ZeRO stage, batch sizes, clipping and precision of the DeepSpeed config are filled in from the training config.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from msaformer.errors import ConfigError, MsaformerError
from msaformer.files import read_user_text

#: Training precisions: ``auto`` is bf16 on a GPU that supports it, fp32 otherwise.
PRECISIONS = ("auto", "fp32", "bf16")


def load_ds_config(path_or_dict: str | Path | dict) -> dict:
    """Returns a DeepSpeed config as a dict, read from a JSON file or copied from a dict."""
    if isinstance(path_or_dict, dict):
        return copy.deepcopy(path_or_dict)
    path = Path(path_or_dict)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config not found: {path} (see configs/deepspeed/zero{{1,2,3}}.json)")
    try:
        text = read_user_text(path, "DeepSpeed config")
    except MsaformerError as exc:
        raise ConfigError(str(exc)) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a DeepSpeed config is a JSON object, found {type(config).__name__}")
    return config


def build_ds_config(
    path_or_dict: str | Path | dict,
    *,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    device: Any,
    grad_clip: float | None = 1.0,
    zero_stage: int | None = None,
    precision: str = "auto",
) -> dict:
    """Returns a complete DeepSpeed config: batch sizes, clipping, precision and ZeRO stage filled in.

    ``precision="auto"`` gives bf16 on a GPU that supports it and fp32 on CPU (so CPU runs are exact and
    comparable across stages). The optimizer and scheduler sections are dropped: :func:`initialize` passes
    a torch AdamW and a LambdaLR, so nothing is JIT-compiled.
    """
    cfg = load_ds_config(path_or_dict)
    for name, value in (("micro_batch_size", micro_batch_size), ("grad_accum_steps", grad_accum_steps)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    cfg.pop("optimizer", None)
    cfg.pop("scheduler", None)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch_size
    cfg["gradient_accumulation_steps"] = grad_accum_steps
    cfg["train_batch_size"] = micro_batch_size * grad_accum_steps * world_size
    if grad_clip is not None and grad_clip > 0:
        cfg["gradient_clipping"] = float(grad_clip)
    else:
        cfg.pop("gradient_clipping", None)

    zero = dict(cfg.get("zero_optimization") or {})
    stage = zero.get("stage", 0) if zero_stage is None else zero_stage
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    zero["stage"] = stage
    cfg["zero_optimization"] = zero
    if zero.get("offload_optimizer") or zero.get("offload_param"):
        # Offload with a torch optimizer: otherwise DeepSpeed insists on DeepSpeedCPUAdam (a 40 s compile).
        cfg["zero_force_ds_cpu_optimizer"] = False

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_gpu = getattr(device, "type", str(device)) == "cuda"
    if precision == "auto":
        import torch

        precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and stage == 0:
        # Stage 0 keeps bf16 gradients and accumulates in bf16; stage 1 adds fp32 master weights.
        zero["stage"] = 1
    cfg["bf16"] = {"enabled": precision == "bf16"}
    cfg.pop("fp16", None)  # fp16 needs loss scaling, which msaformer does not set up: bf16 or fp32 only
    cfg.setdefault("steps_per_print", 10**9)  # msaformer logs itself
    cfg.setdefault("wall_clock_breakdown", False)
    return cfg


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Returns the learning-rate multiplier at ``step``: linear warmup, then cosine decay to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _WarmupCosine:
    """Picklable LR lambda (a LambdaLR stores callable objects in its state dict, but not closures)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_lambda(
            step, warmup_steps=self.warmup_steps, total_steps=self.total_steps, min_lr_ratio=self.min_lr_ratio
        )


def param_groups(model, weight_decay: float) -> list[dict]:
    """Returns AdamW parameter groups: weight decay on matrices (dim >= 2) only, not on biases and norms."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def initialize(
    model,
    ds_config: dict,
    *,
    lr: float,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    total_steps: int = 1,
    min_lr_ratio: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
):
    """Returns a DeepSpeed engine wrapping ``model`` with torch AdamW and warmup-then-cosine LR.

    The scheduler steps once per optimizer step (DeepSpeed calls it at gradient-accumulation boundaries),
    and its state is saved and restored with DeepSpeed checkpoints.
    """
    import torch

    from msaformer.train.distributed import import_deepspeed

    deepspeed = import_deepspeed()
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    schedule = _WarmupCosine(warmup_steps, total_steps, min_lr_ratio)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        # A callable gets the optimizer DeepSpeed wrapped (ZeRO), so the schedule drives the real param groups.
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=ds_config,
    )
    return engine
