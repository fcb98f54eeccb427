"""The MSA language model training configuration: frozen dataclasses, loaded from YAML, validated up front.

A config has four sections plus two paths::

    model:    {preset: tiny, embed_dim: 64}       # configs/model/*.yaml's schema (or the path of such a file)
    data:     {shards: [runs/shards], strategy: random, max_len: 64, max_tokens_per_msa: 16384, ...}
    train:    {steps: 300, micro_batch_size: 2, grad_accum_steps: 1, lr: 1e-3, ...}
    deepspeed: configs/deepspeed/zero2.json
    run_dir:  runs/msa_tiny

Every mistake that can be found before starting processes is reported as a one-line ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msaformer.config import apply_overrides, check, from_dict, load_yaml, resolve_relative, to_dict
from msaformer.data.sampling import DEFAULT_MAX_TOKENS, SamplingOptions, validate_strategy
from msaformer.errors import ConfigError
from msaformer.train.optim import PRECISIONS


@dataclass(frozen=True)
class DataSection:
    shards: list = field(default_factory=list)  # shard directories (msaformer preprocess --out DIR)
    strategy: str = "random"  # random | random_with_replacement | greedy_diverse | identity_filter
    max_len: int = 1023  # column window (the model adds <cls>); must be < model.max_positions
    max_tokens_per_msa: int = DEFAULT_MAX_TOKENS  # rows x (columns + 1) budget per MSA
    max_rows: int | None = None  # extra cap on rows per MSA; None = model.max_rows
    max_depth: int | None = None  # read at most this many rows of a record from disk; None = all
    max_identity: float = 0.9  # identity_filter
    min_coverage: float = 0.5  # identity_filter
    mask_prob: float = 0.15
    val_fraction: float = 0.05  # by record content hash: stable across runs
    num_workers: int = 2  # DataLoader worker processes per rank
    prefetch_factor: int = 4


@dataclass(frozen=True)
class TrainSection:
    steps: int = 1000  # optimizer steps
    micro_batch_size: int = 1  # MSAs per rank per forward
    grad_accum_steps: int | None = None  # None: from global_batch_size, else 1
    global_batch_size: int | None = None  # MSAs per optimizer step over all ranks (optional check)
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    activation_checkpointing: int | None = None  # checkpoint every N-th block (1 = all); None = off
    compile: bool = False  # torch.compile each block
    zero_stage: int | None = None  # overrides the DeepSpeed file's stage
    log_interval: int = 10
    eval_interval: int = 100  # 0 disables validation
    eval_batches: int = 8  # validation micro-batches per rank
    save_interval: int = 500  # 0: save only at the end
    keep_last: int = 3
    seed: int = 0
    resume: bool = True  # continue from run_dir's latest checkpoint when there is one
    threads: int | None = None  # CPU only: torch intra-op threads per rank (None: OMP_NUM_THREADS / cores per rank)


@dataclass(frozen=True)
class TrainConfig:
    model: Any = field(default_factory=lambda: {"preset": "tiny"})  # see msaformer.model.load_model_config
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    deepspeed: str = "configs/deepspeed/zero2.json"
    run_dir: str = "runs/msa"

    # ---------------------------------------------------------------------------------------- derived
    def model_config(self):
        """Returns the MsaModelConfig of the ``model`` section (a preset plus fields, or a YAML file)."""
        from msaformer.model import load_model_config

        if isinstance(self.model, dict) and "overrides" in self.model:
            raise ConfigError("model.overrides is gone: put the model fields directly under model: "
                              "(e.g. model: {preset: tiny, embed_dim: 64})")
        if not isinstance(self.model, (dict, str)):
            raise ConfigError(f"model must be a section (preset and fields) or a YAML file, got {self.model!r}")
        return load_model_config(self.model, where="model")

    def execution(self):
        """Returns how the model's blocks run in training (:class:`msaformer.train.execution.ExecutionOptions`)."""
        from msaformer.train.execution import ExecutionOptions

        return ExecutionOptions(self.train.activation_checkpointing, self.train.compile)

    def sampling_options(self, max_rows_model: int | None = None) -> SamplingOptions:
        caps = [c for c in (self.data.max_rows, max_rows_model or None) if c]
        return SamplingOptions(
            strategy=self.data.strategy,
            max_len=self.data.max_len,
            max_tokens=self.data.max_tokens_per_msa,
            max_rows=min(caps) if caps else None,
            max_identity=self.data.max_identity,
            min_coverage=self.data.min_coverage,
        )

    def grad_accum(self, world_size: int) -> int:
        """Returns gradient accumulation steps for ``world_size`` ranks; a global batch that does not divide
        is a ConfigError."""
        t = self.train
        if t.global_batch_size is None:
            return t.grad_accum_steps or 1
        per_step = t.micro_batch_size * world_size
        if t.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size {t.global_batch_size} is not divisible by micro_batch_size "
                f"{t.micro_batch_size} x {world_size} rank(s)"
            )
        accum = t.global_batch_size // per_step
        if t.grad_accum_steps is not None and t.grad_accum_steps != accum:
            raise ConfigError(
                f"train.global_batch_size {t.global_batch_size} != micro_batch_size {t.micro_batch_size} x "
                f"grad_accum_steps {t.grad_accum_steps} x {world_size} rank(s); set one of them, not both"
            )
        return accum


def _positive(section: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    check(value >= 0 if allow_zero else value >= 1,
          f"{section}.{name} must be an integer {'>= 0' if allow_zero else '>= 1'}, got {value!r}")


def validate(config: TrainConfig, *, check_paths: bool = True) -> TrainConfig:
    """Returns ``config`` after checking everything knowable before launch; raises a one-line ConfigError."""
    d, t = config.data, config.train
    shards = d.shards if isinstance(d.shards, (list, tuple)) else [d.shards]
    if not shards:
        raise ConfigError("data.shards is empty: give the directory written by `msaformer preprocess ... --out DIR`")
    if check_paths:
        from msaformer.data.shards import is_shard_dir

        for s in shards:
            if not Path(s).is_dir():
                raise ConfigError(
                    f"data.shards: shard directory {s} does not exist; create it with "
                    f"`msaformer preprocess ALIGNMENTS --out {s}`"
                )
            if not is_shard_dir(s):
                raise ConfigError(f"data.shards: {s} is not a shard directory written by msaformer preprocess")
        if not Path(config.deepspeed).is_file():
            raise ConfigError(f"deepspeed: config file {config.deepspeed} not found (see configs/deepspeed/zero{{1,2,3}}.json)")
    validate_strategy(d.strategy)
    for name in ("max_len", "max_tokens_per_msa", "num_workers", "prefetch_factor"):
        _positive("data", name, getattr(d, name), allow_zero=name == "num_workers")
    for name in ("steps", "micro_batch_size", "log_interval", "keep_last", "eval_batches"):
        _positive("train", name, getattr(t, name))
    for name in ("warmup_steps", "eval_interval", "save_interval", "seed"):
        _positive("train", name, getattr(t, name), allow_zero=True)
    if t.grad_accum_steps is not None:
        _positive("train", "grad_accum_steps", t.grad_accum_steps)
    if t.threads is not None:
        _positive("train", "threads", t.threads)
    if t.global_batch_size is not None:
        _positive("train", "global_batch_size", t.global_batch_size)
        if t.global_batch_size % t.micro_batch_size:
            raise ConfigError(
                f"train.global_batch_size {t.global_batch_size} is not divisible by train.micro_batch_size "
                f"{t.micro_batch_size}"
            )
    if t.zero_stage is not None and t.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.zero_stage must be 0, 1, 2 or 3, got {t.zero_stage!r}")
    if t.precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    config.execution()  # its own checks
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    if not 0.0 < d.mask_prob < 1.0:
        raise ConfigError(f"data.mask_prob must be in (0, 1), got {d.mask_prob}")
    model = config.model_config()
    if d.max_len + 1 > model.max_positions:
        raise ConfigError(
            f"data.max_len {d.max_len} + <cls> exceeds the model's max_positions {model.max_positions}; "
            f"lower data.max_len or raise model.max_positions"
        )
    config.sampling_options(model.max_rows)  # its own checks (token budget vs max_len, identity bounds)
    if check_paths:
        from msaformer.train.optim import load_ds_config

        stage = load_ds_config(config.deepspeed).get("zero_optimization", {}).get("stage", 0)
        stage = t.zero_stage if t.zero_stage is not None else stage
        if stage not in (0, 1, 2, 3):
            raise ConfigError(f"{config.deepspeed}: ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, check_paths: bool = True) -> TrainConfig:
    """Returns the validated TrainConfig from a YAML file (or defaults, for None) with ``key=value`` overrides.

    Relative paths (shards, deepspeed config, a model YAML) are taken from the working directory, or failing that from
    the YAML file's directory and its parents (so ``configs/train/x.yaml`` can name ``configs/deepspeed``).
    """
    raw = load_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    config = from_dict(TrainConfig, raw)

    def find(value: str) -> str:
        return resolve_relative(value, path)

    data = dataclasses.replace(config.data, shards=[find(str(s)) for s in config.data.shards])
    model = find(config.model) if isinstance(config.model, str) else config.model
    config = dataclasses.replace(config, model=model, data=data, deepspeed=find(str(config.deepspeed)))
    return validate(config, check_paths=check_paths)


def config_to_dict(config: TrainConfig) -> dict:
    return to_dict(config)
