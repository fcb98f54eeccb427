"""Training of the DNA promoter classifier through the project's DeepSpeed engine.

One run: read train / dev / test, train with AdamW (warmup then cosine), evaluate on dev after every epoch
(or every ``eval_every`` steps), keep the weights with the best dev MCC, score test with them, and write
``model.pt``, ``metrics.csv``, ``results.csv``, ``confusion_matrix.png`` and ``roc.png`` into the run folder.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msaformer.config import apply_overrides, from_dict, load_yaml
from msaformer.errors import ConfigError
from msaformer.model.promoter import PromoterModelConfig

RESULT_COLUMNS = ("run", "seed", "split", "n", "mcc", "f1", "accuracy", "auroc", "best_epoch", "best_step",
                  "train_seconds")


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

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class PromoterTrainConfig:
    model: PromoterModelConfig = field(default_factory=PromoterModelConfig)
    data: PromoterDataConfig = field(default_factory=PromoterDataConfig)
    optim: PromoterOptimConfig = field(default_factory=PromoterOptimConfig)
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
        raise ConfigError("[data] needs train and dev files (data.train=..., data.dev=...)")
    return cfg


# ------------------------------------------------------------------------------------------------- metrics


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Returns MCC, F1, accuracy and AUROC (scikit-learn) of probabilities against 0/1 labels."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    preds = (probs >= threshold).astype(np.int64)
    auroc = roc_auc_score(labels, probs) if len(np.unique(labels)) == 2 else float("nan")
    return {
        "mcc": float(matthews_corrcoef(labels, preds)),
        "f1": float(f1_score(labels, preds, zero_division=0)),
        "accuracy": float(accuracy_score(labels, preds)),
        "auroc": float(auroc),
        "n": int(len(labels)),
    }


def plot_confusion_matrix(labels, probs, path: str | Path, threshold: float = 0.5, title: str = "") -> None:
    """Writes a 2x2 confusion-matrix PNG (counts and row percentages)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    preds = (np.asarray(probs) >= threshold).astype(int)
    cm = confusion_matrix(np.asarray(labels, dtype=int), preds, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=150)
    ax.imshow(cm, cmap="Blues")
    names = ["non-promoter", "promoter"]
    for i in range(2):
        for j in range(2):
            share = cm[i, j] / max(cm[i].sum(), 1)
            dark = cm[i, j] > cm.max() / 2
            ax.text(j, i, f"{cm[i, j]}\n{share:.1%}", ha="center", va="center",
                    color="white" if dark else "black", fontsize=11)
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names, rotation=90, va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (threshold {threshold:g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(labels, probs, path: str | Path, title: str = "") -> None:
    """Writes a ROC-curve PNG with the AUROC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels, dtype=int), np.asarray(probs))
    auc = roc_auc_score(np.asarray(labels, dtype=int), np.asarray(probs))
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC", fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_evaluation(labels, probs, out_dir: str | Path, *, prefix: str = "", threshold: float = 0.5,
                     title: str = "") -> dict[str, float]:
    """Writes the confusion matrix and ROC PNGs of one split; returns its metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = binary_metrics(labels, probs, threshold)
    plot_confusion_matrix(labels, probs, out_dir / f"{prefix}confusion_matrix.png", threshold,
                          title=f"{title} MCC {metrics['mcc']:.3f}".strip())
    if len(np.unique(labels)) == 2:
        plot_roc(labels, probs, out_dir / f"{prefix}roc.png", title=title)
    return metrics


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
    """Trains one model; returns ``{"dev": metrics, "test": metrics | None, "run_dir", "best_epoch", ...}``."""
    import torch
    import torch.nn.functional as F

    from msaformer.data.promoter import length_bucketed_batches
    from msaformer.infer.promoter import score_tokens
    from msaformer.model.promoter import PromoterClassifier, save_promoter_model
    from msaformer.train.engine import MetricsLogger, build_ds_config, init_distributed, initialize

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = init_distributed()
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
    lengths = train.lengths()

    opt = cfg.optim
    model = PromoterClassifier(cfg.model)
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
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(_to_yaml(cfg))
    logger = MetricsLogger(run_dir, dist.rank)

    best = {"mcc": -2.0, "epoch": 0, "step": 0}
    best_state = None
    evals_since_best = 0
    step = 0
    start = time.perf_counter()

    def evaluate(epoch: int) -> bool:
        nonlocal best_state, evals_since_best
        probs = score_tokens(model, dev_tokens, batch_size=512, device=dist.device)
        metrics = binary_metrics(dev.labels, probs)
        metrics.pop("n")
        logger.log(step, {"epoch": epoch, **metrics}, split="dev")
        if metrics["mcc"] > best["mcc"]:
            best.update(mcc=metrics["mcc"], epoch=epoch, step=step)
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            evals_since_best = 0
        else:
            evals_since_best += 1
        model.train()
        return bool(opt.patience and evals_since_best >= opt.patience)

    stop = False
    for epoch in range(1, opt.epochs + 1):
        engine.train()
        batches = length_bucketed_batches(lengths, opt.batch_size, shuffle=True, seed=cfg.seed * 100_003 + epoch)
        batches = batches[dist.rank :: dist.world_size][:steps_per_epoch]
        loss_sum, loss_n = 0.0, 0
        for index in batches:
            tokens = _collate_tensor([train_tokens[i] for i in index]).to(dist.device)
            labels = train_labels[index].to(dist.device)
            logits = engine(tokens)["logits"]
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            engine.backward(loss)
            engine.step()
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

    model.load_state_dict(best_state)
    model.eval()
    results: dict[str, Any] = {"run_dir": str(run_dir), "best_epoch": best["epoch"], "best_step": best["step"],
                               "train_seconds": train_seconds, "steps": step}
    rows = []
    for split, data, tokens in (("dev", dev, dev_tokens), ("test", test, test_tokens)):
        if data is None:
            results[split] = None
            continue
        probs = score_tokens(model, tokens, batch_size=512, device=dist.device)
        if is_main:
            metrics = write_evaluation(data.labels, probs, run_dir, prefix="" if split == "test" else "dev_",
                                       title=f"{run_name} {split}")
            _write_predictions(run_dir / f"{split}_predictions.csv", data.ids, data.labels, probs)
        else:
            metrics = binary_metrics(data.labels, probs)
        results[split] = metrics
        rows.append({"run": run_name, "seed": cfg.seed, "split": split, **metrics, "best_epoch": best["epoch"],
                     "best_step": best["step"], "train_seconds": round(train_seconds, 1)})
    if is_main:
        save_promoter_model(model, run_dir / "model.pt", metadata={
            "threshold": 0.5, "seed": cfg.seed, "best_epoch": best["epoch"], "dev_mcc": best["mcc"],
            "train_file": cfg.data.train,
        })
        with open(run_dir / "results.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    logger.close()
    return results


def _collate_tensor(token_arrays):
    import torch

    from msaformer.data.promoter import collate

    return torch.from_numpy(collate(token_arrays))


def _write_predictions(path: Path, ids, labels, probs) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "label", "probability"])
        for i, y, p in zip(ids, labels, probs):
            writer.writerow([i, int(y), f"{p:.6f}"])


def _to_yaml(cfg: PromoterTrainConfig) -> str:
    import yaml

    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def config_summary(cfg: PromoterTrainConfig) -> str:
    """Returns a one-line description of the model and optimisation settings."""
    m, o = cfg.model, cfg.optim
    return (f"{m.num_layers} layers x {m.embed_dim} ({m.num_heads} heads, ffn {m.ffn_dim}), {m.positional} "
            f"positions, conv stem {m.conv_stem or 'none'}, {m.pooling} pooling; {o.epochs} epochs x batch "
            f"{o.batch_size}, lr {o.lr:g}; seed {cfg.seed}; threads {cfg.threads or os.cpu_count()}")
