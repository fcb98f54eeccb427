"""Training of the DNA promoter classifier through the project's DeepSpeed engine.

One run: read train / dev / test, train with AdamW (warmup then cosine), evaluate on dev after every epoch
(or every ``eval_every`` steps), keep the weights with the best dev MCC, score test with them, and write
``model.pt``, ``metrics.csv``, ``results.csv``, ``confusion_matrix.png`` and ``roc.png`` into the run folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msaformer.config import apply_overrides, check, from_dict, load_yaml, resolve_relative
from msaformer.errors import ConfigError
from msaformer.files import write_csv, write_text
from msaformer.model.promoter import MAX_ENSEMBLE, PromoterModelConfig
from msaformer.evaluation import binary_metrics, write_evaluation

RESULT_COLUMNS = ("run", "seed", "split", "n", "mcc", "f1", "accuracy", "auroc", "best_epoch", "best_step",
                  "train_seconds", "weights", "threshold")
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)  # candidate decision thresholds of tune_threshold


@dataclass(frozen=True)
class PromoterDataConfig:
    train: str = ""  # labelled CSV / FASTA / UCI file
    dev: str = ""  # model selection (best MCC)
    test: str = ""  # scored once with the selected weights; optional
    max_train_records: int = 0  # > 0: random subsample of train (quick experiments)


@dataclass(frozen=True)
class PromoterOptimConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 0  # evaluate dev every N optimizer steps; 0 = after every epoch
    patience: int = 0  # stop after N evaluations without a better dev MCC; 0 = never
    ema_decay: float = 0.0  # > 0: also keep an exponential moving average of the weights (e.g. 0.999); every
    #                        evaluation scores both the raw and the averaged weights on dev, the best is kept
    tune_threshold: bool = False  # pick the decision threshold of the kept weights by dev MCC (grid 0.05-0.95)
    label_smoothing: float = 0.0  # targets 0/1 become eps/2 and 1 - eps/2

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "patience"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check(0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class PromoterPretrainConfig:
    """Masked-nucleotide pre-training of the encoder on the train sequences (labels unused), before fine-tuning.

    The pre-trained encoder is written to ``encoder.pt`` in the run folder; ``init_from`` of another run
    reuses it without pre-training again."""

    epochs: int = 0  # > 0: pre-train for this many epochs over the train sequences; 0 = none
    mask_prob: float = 0.15  # share of nucleotides masked per sequence (80 % <mask>, 10 % random, 10 % kept)
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05

    def __post_init__(self):
        check(self.epochs >= 0 and self.batch_size >= 1 and self.warmup_steps >= 0,
              "pretrain epochs and warmup_steps must be >= 0, batch_size >= 1")
        check(0.0 < self.mask_prob < 1.0, f"pretrain mask_prob must be in (0, 1), got {self.mask_prob}")
        check(self.lr > 0, f"pretrain lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class PromoterTrainConfig:
    model: PromoterModelConfig = field(default_factory=PromoterModelConfig)
    data: PromoterDataConfig = field(default_factory=PromoterDataConfig)
    optim: PromoterOptimConfig = field(default_factory=PromoterOptimConfig)
    pretrain: PromoterPretrainConfig = field(default_factory=PromoterPretrainConfig)
    init_from: str = ""  # encoder.pt / model.pt whose weights (all but the head) start the fine-tuning
    distill_from: str = ""  # a trained model file (one model, or an ensemble run's model.pt): its probabilities
    #                         on the train sequences become the training targets (knowledge distillation)
    distill_weight: float = 1.0  # target = w * teacher probability + (1 - w) * label; 1 = the teacher alone
    ensemble: int = 1  # > 1: train this many members (seeds seed * ensemble + i, each a run in member-i/) and
    #                    keep them as one model averaged in probability
    seed: int = 0
    out_dir: str = "runs/promoter"
    threads: int = 0  # torch intra-op threads; 0 = leave as is
    deepspeed: dict = field(default_factory=dict)  # extra DeepSpeed config (e.g. zero_optimization)


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> PromoterTrainConfig:
    """Returns the training config of a YAML file (or defaults) with dotted ``key=value`` overrides."""
    raw = load_yaml(path) if path else {}
    raw = apply_overrides(raw, overrides)
    cfg = from_dict(PromoterTrainConfig, raw)
    if not cfg.data.train or not cfg.data.dev:
        raise ConfigError("data needs train and dev files (data.train=..., data.dev=...)")
    files = {k: resolve_relative(v, path) if v else v for k, v in dataclasses.asdict(cfg.data).items()
             if k in ("train", "dev", "test")}
    check(1 <= cfg.ensemble <= MAX_ENSEMBLE, f"ensemble must be in 1..{MAX_ENSEMBLE}, got {cfg.ensemble}")
    if cfg.init_from and cfg.pretrain.epochs:
        raise ConfigError("init_from and pretrain.epochs exclude each other: pre-train here or reuse an encoder")
    check(0.0 <= cfg.distill_weight <= 1.0, f"distill_weight must be in [0, 1], got {cfg.distill_weight}")
    init_from = resolve_relative(cfg.init_from, path) if cfg.init_from else ""
    distill_from = resolve_relative(cfg.distill_from, path) if cfg.distill_from else ""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **files), init_from=init_from,
                               distill_from=distill_from)


# ---------------------------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_split(path: str, max_length: int, what: str):
    from msaformer.data.promoter import read_promoters

    data = read_promoters(path, require_labels=True)
    tokens = data.tokens()
    longest = max(len(t) for t in tokens)
    if longest > max_length:
        raise ConfigError(
            f"{path}: {what} sequences reach {longest} nt but model.max_length is {max_length}; "
            f"set model.max_length={longest} (training does not use sliding windows)"
        )
    return data, tokens


def train_promoter(cfg: PromoterTrainConfig, *, run_name: str | None = None) -> dict[str, Any]:
    """Trains one model (or, with ``ensemble`` > 1, its members and then the ensemble); returns
    ``{"dev": metrics, "test": metrics | None, "run_dir", "best_epoch", ...}``."""
    if cfg.ensemble > 1:
        return train_ensemble(cfg, run_name=run_name)
    import torch

    from msaformer.files import AtomicDir
    from msaformer.model.promoter import PromoterClassifier, save_promoter_model
    from msaformer.train.distributed import init_distributed
    from msaformer.train.optim import build_ds_config, initialize

    dist = init_distributed()
    if cfg.threads:  # after init_distributed, which sets its own per-rank default (cores / local ranks)
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run_dir = Path(cfg.out_dir)
    run_name = run_name or run_dir.name
    max_length = cfg.model.max_length

    train, train_tokens = _load_split(cfg.data.train, max_length, "train")
    if cfg.data.max_train_records and cfg.data.max_train_records < len(train):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(train), cfg.data.max_train_records, replace=False))
        train = train.subset(keep)
        train_tokens = [train_tokens[i] for i in keep]
    dev, dev_tokens = _load_split(cfg.data.dev, max_length, "dev")
    test, test_tokens = _load_split(cfg.data.test, max_length, "test") if cfg.data.test else (None, None)
    train_labels = torch.from_numpy(train.labels.astype(np.float32))
    if cfg.distill_from:
        train_labels = distillation_targets(cfg, train_tokens, train_labels, dist.device)
    lengths = train.lengths()

    opt = cfg.optim
    model = PromoterClassifier(cfg.model)
    pretrain_info = None
    if cfg.init_from:
        from msaformer.model.promoter import load_encoder_weights

        load_encoder_weights(model, cfg.init_from)
    elif cfg.pretrain.epochs:
        pretrain_info = pretrain_encoder(cfg, model, train_tokens, lengths, dist)
        seed_everything(cfg.seed)  # fine-tuning draws the same batches with or without pre-training
    # Every rank must take the same number of steps (gradient all-reduce): drop the remainder batches.
    steps_per_epoch = max(1, math.ceil(len(train) / opt.batch_size) // dist.world_size)
    total_steps = max(1, steps_per_epoch * opt.epochs)
    ds_config = build_ds_config(
        dict(cfg.deepspeed), micro_batch_size=opt.batch_size, grad_accum_steps=1,
        world_size=dist.world_size, device=dist.device, grad_clip=opt.grad_clip,
    )
    engine = initialize(
        model, ds_config, lr=opt.lr, weight_decay=opt.weight_decay, warmup_steps=opt.warmup_steps,
        total_steps=total_steps, min_lr_ratio=opt.min_lr_ratio,
    )
    is_main = dist.rank == 0
    # The run folder is built under a temporary name and swapped in at the end: a failed or interrupted run
    # leaves a previous run folder of the same name as it was.
    if is_main:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        folder = AtomicDir(run_dir)
        work = folder.tmp
        write_text(work / "config.yaml", _to_yaml(cfg))
        if pretrain_info is not None:
            save_promoter_model(model, work / "encoder.pt", metadata=pretrain_info)
    else:
        folder, work = None, run_dir
    try:
        results = _train_loop(cfg, engine, model, dist, work, run_dir, run_name, train_tokens, train_labels,
                              lengths, steps_per_epoch, dev, dev_tokens, test, test_tokens)
    except BaseException:
        if folder is not None:
            folder.abort()
        raise
    if folder is not None:
        folder.commit()
    return results


def distillation_targets(cfg: PromoterTrainConfig, train_tokens, labels, device):
    """Returns the soft targets ``[n]`` of knowledge distillation: ``distill_weight`` x the teacher's
    probabilities on the train sequences + the rest x the labels. Only the train split is scored; dev stays the
    selection set and test is never seen."""
    import torch

    from msaformer.model.promoter import load_promoter_model, promoter_probabilities

    teacher, _ = load_promoter_model(cfg.distill_from)
    if teacher.config.max_length != cfg.model.max_length:
        raise ConfigError(f"distill_from {cfg.distill_from}: the teacher's window ({teacher.config.max_length} nt) "
                          f"differs from this run's model.max_length ({cfg.model.max_length})")
    probs = torch.from_numpy(promoter_probabilities(teacher.to(device), train_tokens, batch_size=512,
                                                    device=device).astype(np.float32))
    return cfg.distill_weight * probs + (1.0 - cfg.distill_weight) * labels


def member_config(cfg: PromoterTrainConfig, index: int) -> PromoterTrainConfig:
    """The run config of member ``index`` of an ensemble run: seed ``seed * ensemble + index`` (so seeds 0, 1,
    2 of a recipe use disjoint members), folder ``out_dir/member-index``."""
    return dataclasses.replace(cfg, ensemble=1, seed=cfg.seed * cfg.ensemble + index,
                               out_dir=str(Path(cfg.out_dir) / f"member-{index}"))


def _finished(cfg: PromoterTrainConfig) -> bool:
    """True when ``cfg.out_dir`` holds a finished run of exactly this config (its model.pt and results.csv).

    The stored config.yaml is read back as a config, so a key added since (at its default) still matches."""
    folder = Path(cfg.out_dir)
    try:
        stored = from_dict(PromoterTrainConfig, load_yaml(folder / "config.yaml"))
    except (OSError, UnicodeDecodeError, ConfigError):
        return False
    return stored == cfg and (folder / "model.pt").is_file() and (folder / "results.csv").is_file()


def train_ensemble(cfg: PromoterTrainConfig, *, run_name: str | None = None) -> dict[str, Any]:
    """Trains ``cfg.ensemble`` members one after the other (each an ordinary run in ``member-i/``; a member
    already finished with the same config is kept, so an interrupted ensemble run resumes), then scores their
    average in probability on dev and test, picks its threshold on dev (``tune_threshold``) and writes the
    ensemble as one ``model.pt`` with ``results.csv`` and plots beside the member folders."""
    import csv

    from msaformer.model.promoter import PromoterEnsemble, load_promoter_model, promoter_probabilities, \
        save_promoter_model
    from msaformer.train.distributed import init_distributed

    run_dir = Path(cfg.out_dir)
    run_name = run_name or run_dir.name
    run_dir.mkdir(parents=True, exist_ok=True)
    members = [member_config(cfg, i) for i in range(cfg.ensemble)]
    train_seconds = 0.0
    for i, member in enumerate(members):
        if _finished(member):
            print(f"member {i + 1}/{cfg.ensemble} (seed {member.seed}): finished run kept in {member.out_dir}",
                  file=sys.stderr, flush=True)
        else:
            print(f"member {i + 1}/{cfg.ensemble} (seed {member.seed})", file=sys.stderr, flush=True)
            train_promoter(member, run_name=f"{run_name}/member-{i}")
        rows = list(csv.DictReader(open(Path(member.out_dir) / "results.csv", newline="")))
        train_seconds += float(rows[-1]["train_seconds"])
    dist = init_distributed()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    if dist.rank != 0:
        return {"run_dir": str(run_dir), "dev": None, "test": None, "best_epoch": 0, "weights": "ensemble",
                "threshold": 0.5, "train_seconds": train_seconds}

    ensemble = PromoterEnsemble([load_promoter_model(Path(m.out_dir) / "model.pt")[0] for m in members]).eval()
    max_length = cfg.model.max_length
    dev, dev_tokens = _load_split(cfg.data.dev, max_length, "dev")
    test, test_tokens = _load_split(cfg.data.test, max_length, "test") if cfg.data.test else (None, None)
    probs = {"dev": promoter_probabilities(ensemble, dev_tokens, batch_size=512)}
    if test is not None:
        probs["test"] = promoter_probabilities(ensemble, test_tokens, batch_size=512)
    threshold = tune_threshold(dev.labels, probs["dev"]) if cfg.optim.tune_threshold else 0.5
    weights = f"ensemble of {cfg.ensemble}"
    results: dict[str, Any] = {"run_dir": str(run_dir), "best_epoch": 0, "weights": weights, "threshold": threshold,
                               "train_seconds": train_seconds, "members": [m.out_dir for m in members], "test": None}
    rows, main_rows = [], []
    for split, data in (("dev", dev), ("test", test)):
        if data is None:
            continue
        base = {"run": run_name, "seed": cfg.seed, "split": split, "best_epoch": 0, "best_step": 0,
                "train_seconds": round(train_seconds, 1), "weights": weights}
        if threshold != 0.5:
            results[f"{split}_t0.5"] = binary_metrics(data.labels, probs[split], threshold=0.5)
            rows.append({**base, "split": f"{split}_t0.5", **results[f"{split}_t0.5"], "threshold": 0.5})
        results[split] = write_evaluation(data.labels, probs[split], run_dir, prefix="" if split == "test" else "dev_",
                                          title=f"{run_name} {split}", threshold=threshold)
        _write_predictions(run_dir / f"{split}_predictions.csv", data.ids, data.labels, probs[split])
        main_rows.append({**base, **results[split], "threshold": threshold})
    rows.extend(main_rows)
    save_promoter_model(ensemble, run_dir / "model.pt", metadata={
        "threshold": threshold, "seed": cfg.seed, "member_seeds": [m.seed for m in members],
        "dev_mcc": results["dev"]["mcc"], "train_file": cfg.data.train,
    })
    write_text(run_dir / "config.yaml", _to_yaml(cfg))
    write_csv(run_dir / "results.csv", RESULT_COLUMNS, ([row.get(c, "") for c in RESULT_COLUMNS] for row in rows))
    return results


class _MaskedNucleotideModel:
    """Built lazily (torch imported inside): the classifier's encoder with a per-token A/C/G/T head."""

    @staticmethod
    def build(classifier):
        from torch import nn

        class MaskedNucleotideModel(nn.Module):
            def __init__(self, encoder):
                super().__init__()
                D = encoder.config.embed_dim
                self.encoder = encoder
                self.lm_head = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D), nn.Linear(D, 4))

            def forward(self, tokens):
                return self.lm_head(self.encoder.hidden_states(tokens)[0])  # (B, T, 4)

        return MaskedNucleotideModel(classifier)


def mask_nucleotides(tokens, mask_prob: float, generator):
    """Returns ``(inputs, targets)`` for masked-nucleotide training of a ``[B, T]`` batch: a ``mask_prob``
    share of the A/C/G/T positions is chosen (at least one per sequence), 80 % of them become ``<mask>``, 10 % a
    random nucleotide and 10 % stay; ``targets`` is 0-3 (A, C, G, T) there and -100 (ignored) elsewhere."""
    import torch

    from msaformer.data.promoter import MASK_IDX, NUCLEOTIDE_IDS

    first, last = NUCLEOTIDE_IDS["A"], NUCLEOTIDE_IDS["T"]
    candidates = (tokens >= first) & (tokens <= last)
    scores = torch.rand(tokens.shape, generator=generator)
    chosen = candidates & (scores < mask_prob)
    # At least one per sequence: the candidate with the lowest score.
    lowest = torch.where(candidates, scores, torch.full_like(scores, 2.0)).argmin(dim=1)
    has_any = candidates.any(dim=1)
    chosen[has_any, lowest[has_any]] = True
    targets = torch.where(chosen, tokens - first, torch.full_like(tokens, -100))
    action = torch.rand(tokens.shape, generator=generator)
    inputs = tokens.clone()
    inputs[chosen & (action < 0.8)] = MASK_IDX
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = torch.randint(first, last + 1, tokens.shape, generator=generator)[swap]
    return inputs, targets


def pretrain_encoder(cfg: PromoterTrainConfig, model, train_tokens, lengths, dist) -> dict:
    """Masked-nucleotide pre-training of ``model``'s encoder (in place) on the train sequences, through the
    DeepSpeed engine; returns the metadata stored with ``encoder.pt`` (final masked accuracy and loss)."""
    import torch
    import torch.nn.functional as F

    from msaformer.data.promoter import length_bucketed_batches
    from msaformer.train.optim import build_ds_config, initialize

    pre = cfg.pretrain
    wrapper = _MaskedNucleotideModel.build(model)
    steps_per_epoch = max(1, math.ceil(len(train_tokens) / pre.batch_size) // dist.world_size)
    ds_config = build_ds_config({}, micro_batch_size=pre.batch_size, grad_accum_steps=1,
                                world_size=dist.world_size, device=dist.device, grad_clip=cfg.optim.grad_clip)
    engine = initialize(wrapper, ds_config, lr=pre.lr, weight_decay=pre.weight_decay,
                        warmup_steps=pre.warmup_steps, total_steps=steps_per_epoch * pre.epochs,
                        min_lr_ratio=pre.min_lr_ratio)
    generator = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
    start = time.perf_counter()
    step, loss_sum, correct, counted = 0, 0.0, 0, 0
    for epoch in range(1, pre.epochs + 1):
        engine.train()
        batches = length_bucketed_batches(lengths, pre.batch_size, shuffle=True, seed=cfg.seed * 100_019 + epoch)
        batches = batches[dist.rank :: dist.world_size][:steps_per_epoch]
        loss_sum, correct, counted = 0.0, 0, 0
        for index in batches:
            tokens = _collate_tensor([train_tokens[i] for i in index])
            inputs, targets = mask_nucleotides(tokens, pre.mask_prob, generator)
            logits = engine(inputs.to(dist.device)).float()
            targets = targets.to(dist.device)
            loss = F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1), ignore_index=-100)
            engine.backward(loss)
            engine.step()
            step += 1
            with torch.no_grad():
                seen = targets.ne(-100)
                correct += int((logits.argmax(-1).eq(targets) & seen).sum())
                counted += int(seen.sum())
                loss_sum += float(loss.detach())
        if dist.rank == 0:
            print(f"pretrain epoch {epoch}/{pre.epochs}: masked loss {loss_sum / max(1, len(batches)):.4f}, "
                f"masked accuracy {correct / max(1, counted):.4f}", file=sys.stderr, flush=True)
    model.train()
    return {"pretrained": "masked-nucleotide", "pretrain_epochs": pre.epochs, "mask_prob": pre.mask_prob,
            "masked_accuracy": correct / max(1, counted), "masked_loss": loss_sum / max(1, steps_per_epoch),
            "pretrain_seconds": round(time.perf_counter() - start, 1), "seed": cfg.seed,
            "train_file": cfg.data.train, "steps": step}


def tune_threshold(labels, probs) -> float:
    """Returns the threshold of :data:`THRESHOLD_GRID` with the best MCC on ``(labels, probs)`` (ties: nearest
    0.5). Meant for the dev split only."""
    from sklearn.metrics import matthews_corrcoef

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    scores = [matthews_corrcoef(labels, (probs >= t).astype(np.int64)) for t in THRESHOLD_GRID]
    best = max(range(len(THRESHOLD_GRID)), key=lambda i: (round(scores[i], 12), -abs(THRESHOLD_GRID[i] - 0.5)))
    return float(THRESHOLD_GRID[best])


class _WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers (kept on the model's
    device): ``avg = d * avg + (1 - d) * current`` after every optimizer step, with ``d = min(decay,
    (1 + n) / (10 + n))`` after ``n`` earlier updates, so the random initial weights fade out quickly."""

    def __init__(self, model, decay: float):
        import torch

        self.decay = decay
        self.names = [k for k, v in model.state_dict().items() if torch.is_floating_point(v)]
        state = model.state_dict()
        self.avg = [state[k].detach().clone() for k in self.names]
        self.updates = 0

    def update(self, model) -> None:
        import torch

        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        state = model.state_dict()
        with torch.no_grad():
            torch._foreach_lerp_(self.avg, [state[k].detach() for k in self.names], 1.0 - decay)

    def state(self, model) -> dict:
        out = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        out.update({k: v.detach().cpu().clone() for k, v in zip(self.names, self.avg)})
        return out


def _train_loop(cfg, engine, model, dist, work: Path, run_dir: Path, run_name: str, train_tokens, train_labels,
                lengths, steps_per_epoch, dev, dev_tokens, test, test_tokens) -> dict[str, Any]:
    import torch.nn.functional as F

    from msaformer.data.promoter import length_bucketed_batches
    from msaformer.model.promoter import promoter_probabilities, save_promoter_model
    from msaformer.train.metrics import MetricsLogger

    opt = cfg.optim
    is_main = dist.rank == 0
    logger = MetricsLogger(work, dist.rank)
    ema = _WeightAverage(model, opt.ema_decay) if opt.ema_decay else None

    # The best snapshot per kind of weights ("raw", "ema"); the kept model is the best of them on dev.
    best = {kind: {"mcc": -2.0, "epoch": 0, "step": 0, "state": None} for kind in ("raw", "ema")}
    evals_since_best = 0
    step = 0
    start = time.perf_counter()

    def score_dev(state=None) -> dict:
        if state is not None:
            model.load_state_dict(state)
        probs = promoter_probabilities(model, dev_tokens, batch_size=512, device=dist.device)
        metrics = binary_metrics(dev.labels, probs)
        metrics.pop("n")
        return metrics

    def evaluate(epoch: int) -> bool:
        nonlocal evals_since_best
        before = max(b["mcc"] for b in best.values())
        candidates = [("raw", None)]
        if ema is not None:
            raw_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            candidates.append(("ema", ema.state(model)))
        for kind, state in candidates:
            metrics = score_dev(state)
            logger.log(step, {"epoch": epoch, **metrics} if kind == "raw" else
                       {"epoch": epoch, **{f"ema_{k}": v for k, v in metrics.items()}}, split="dev")
            if metrics["mcc"] > best[kind]["mcc"]:
                snapshot = state if state is not None else \
                    {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                best[kind].update(mcc=metrics["mcc"], epoch=epoch, step=step, state=snapshot)
        improved = max(b["mcc"] for b in best.values()) > before
        if ema is not None:
            model.load_state_dict(raw_state)
        evals_since_best = 0 if improved else evals_since_best + 1
        model.train()
        return bool(opt.patience and evals_since_best >= opt.patience)

    eps = opt.label_smoothing
    stop = False
    for epoch in range(1, opt.epochs + 1):
        engine.train()
        batches = length_bucketed_batches(lengths, opt.batch_size, shuffle=True, seed=cfg.seed * 100_003 + epoch)
        batches = batches[dist.rank :: dist.world_size][:steps_per_epoch]
        loss_sum, loss_n = 0.0, 0
        for index in batches:
            tokens = _collate_tensor([train_tokens[i] for i in index]).to(dist.device)
            labels = train_labels[index].to(dist.device)
            if eps:
                labels = labels * (1.0 - eps) + 0.5 * eps
            logits = engine(tokens)["logits"]
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            engine.backward(loss)
            engine.step()
            if ema is not None:
                ema.update(model)
            step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            if step % 50 == 0:
                logger.log(step, {"epoch": epoch, "loss": loss_sum / loss_n,
                                  "lr": engine.get_lr()[0]})
                loss_sum, loss_n = 0.0, 0
            if opt.eval_every and step % opt.eval_every == 0 and evaluate(epoch):
                stop = True
                break
        if stop:
            break
        if not opt.eval_every and evaluate(epoch):
            break
    if opt.eval_every and step % opt.eval_every:
        evaluate(epoch)
    train_seconds = time.perf_counter() - start

    kept = max(("raw", "ema"), key=lambda k: best[k]["mcc"])  # raw on ties (and always without EMA)
    chosen = best[kept]
    results: dict[str, Any] = {"run_dir": str(run_dir), "best_epoch": chosen["epoch"], "best_step": chosen["step"],
                               "train_seconds": train_seconds, "steps": step, "weights": kept}
    rows = []

    def score(split, data, tokens, threshold, kind, write):
        probs = promoter_probabilities(model, tokens, batch_size=512, device=dist.device)
        if is_main and write:
            metrics = write_evaluation(data.labels, probs, work, prefix="" if split == "test" else "dev_",
                                       title=f"{run_name} {split}", threshold=threshold)
            _write_predictions(work / f"{split}_predictions.csv", data.ids, data.labels, probs)
        else:
            metrics = binary_metrics(data.labels, probs, threshold=threshold)
        b = best[kind]
        rows.append({"run": run_name, "seed": cfg.seed, "split": split, **metrics, "best_epoch": b["epoch"],
                     "best_step": b["step"], "train_seconds": round(train_seconds, 1), "weights": kind,
                     "threshold": threshold})
        return probs, metrics

    # Reference rows first (other weights, threshold 0.5), so that what EMA and the threshold bought is on
    # record; the kept model's rows ("dev", "test") are written last and are the run's result.
    if ema is not None:
        other = "raw" if kept == "ema" else "ema"
        if best[other]["state"] is not None:
            model.load_state_dict(best[other]["state"])
            model.eval()
            for split, data, tokens in (("dev", dev, dev_tokens), ("test", test, test_tokens)):
                if data is not None:
                    results[f"{split}_{other}"] = score(f"{split}_{other}", data, tokens, 0.5, other, False)[1]
    model.load_state_dict(chosen["state"])
    model.eval()
    threshold = 0.5
    if opt.tune_threshold:
        dev_probs = promoter_probabilities(model, dev_tokens, batch_size=512, device=dist.device)
        threshold = tune_threshold(dev.labels, dev_probs)
        for split, data, tokens in (("dev", dev, dev_tokens), ("test", test, test_tokens)):
            if data is not None:
                results[f"{split}_t0.5"] = score(f"{split}_t0.5", data, tokens, 0.5, kept, False)[1]
    results["threshold"] = threshold
    main_rows = []
    for split, data, tokens in (("dev", dev, dev_tokens), ("test", test, test_tokens)):
        if data is None:
            results[split] = None
            continue
        results[split] = score(split, data, tokens, threshold, kept, True)[1]
        main_rows.append(rows.pop())
    rows.extend(main_rows)
    if is_main:
        save_promoter_model(model, work / "model.pt", metadata={
            "threshold": threshold, "seed": cfg.seed, "best_epoch": chosen["epoch"], "dev_mcc": chosen["mcc"],
            "weights": kept, "train_file": cfg.data.train,
        })
        write_csv(work / "results.csv", RESULT_COLUMNS, ([row.get(c, "") for c in RESULT_COLUMNS] for row in rows))
    logger.close()
    return results


def _collate_tensor(token_arrays):
    import torch

    from msaformer.data.promoter import collate

    return torch.from_numpy(collate(token_arrays))


def _write_predictions(path: Path, ids, labels, probs) -> None:
    write_csv(path, ["id", "label", "probability"], ([i, int(y), f"{p:.6f}"] for i, y, p in zip(ids, labels, probs)))


def _to_yaml(cfg: PromoterTrainConfig) -> str:
    import yaml

    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def config_summary(cfg: PromoterTrainConfig) -> str:
    """Returns a one-line description of the model and optimisation settings."""
    m, o = cfg.model, cfg.optim
    return (f"{m.num_layers} layers x {m.embed_dim} ({m.num_heads} heads, ffn {m.ffn_dim}), {m.positional} "
            f"positions, conv stem {m.conv_stem or 'none'}"
            + (f" + {m.conv_layers} conv blocks" if m.conv_layers else "") + f", {m.pooling} pooling; {o.epochs} epochs x batch "
            f"{o.batch_size}, lr {o.lr:g}"
            + (f", EMA {o.ema_decay:g}" if o.ema_decay else "") + (", dev-chosen threshold" if o.tune_threshold else "")
            + (f"; {cfg.pretrain.epochs} epochs of masked-nucleotide pre-training" if cfg.pretrain.epochs else "")
            + (f"; encoder from {cfg.init_from}" if cfg.init_from else "")
            + (f"; distilled from {cfg.distill_from} (weight {cfg.distill_weight:g})" if cfg.distill_from else "")
            + (f"; ensemble of {cfg.ensemble} (member seeds {cfg.seed * cfg.ensemble}-"
               f"{cfg.seed * cfg.ensemble + cfg.ensemble - 1})" if cfg.ensemble > 1 else f"; seed {cfg.seed}")
            + f"; threads {cfg.threads or os.cpu_count()}")
