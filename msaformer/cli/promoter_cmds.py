"""``msaformer promoter train | predict | explain | evaluate``: thin wrappers over :mod:`msaformer.train.promoter`
and :mod:`msaformer.infer.promoter`. torch, deepspeed and matplotlib are imported inside the commands."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import List, Optional

import typer

from msaformer.cli._app import command, console, new_app, progress_bar

_INPUT_HELP = "Sequences: FASTA (.fa/.fasta[.gz]), CSV/TSV with a sequence column, or UCI promoters.data."


class Aggregate(str, enum.Enum):
    max = "max"
    mean = "mean"


class Precision(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"


_PRECISION_HELP = ("fp32, or bf16: bfloat16 autocast, 1.4-1.7x faster on CPUs with AMX / AVX512-BF16, "
                   "probabilities move by ~5e-4 on average (rarely > 1e-2).")


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training YAML, e.g. configs/promoter/gue_prom_core.yaml."),
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="KEY=VALUE", help="Override a config value, e.g. --set optim.epochs=3 (repeatable)."
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (overrides out_dir)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (overrides seed)."),
) -> None:
    """Train on train, select on dev MCC, score test; write model.pt, results.csv and plots into the run folder."""
    from msaformer.train.promoter import config_summary, load_train_config, train_promoter

    extra = list(overrides or [])
    if out_dir is not None:
        extra.append(f"out_dir={out_dir}")
    if seed is not None:
        extra.append(f"seed={seed}")
    cfg = load_train_config(config, extra)
    console.print(f"[bold]promoter train[/] {config_summary(cfg)}", highlight=False)
    res = train_promoter(cfg)
    for split in ("dev", "test"):
        m = res.get(split)
        if m:
            console.print(f"{split}: MCC {m['mcc']:.4f}  F1 {m['f1']:.4f}  accuracy {m['accuracy']:.4f}  "
                          f"AUROC {m['auroc']:.4f}  (n={m['n']})", highlight=False)
    where = (f"{len(res['members'])} members averaged" if res.get("members") else f"best epoch {res['best_epoch']}")
    console.print(f"model and reports in {res['run_dir']} ({where}, threshold {res.get('threshold', 0.5):.2f})",
                  highlight=False)


def predict_cmd(
    input_path: Path = typer.Argument(..., help=_INPUT_HELP, show_default=False),
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c", help="model.pt written by promoter train; "
                                          "repeat for an ensemble averaged in probability (-c a.pt -c b.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output CSV: id,length,n_windows,probability,label."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Sliding-window step for sequences longer than the "
                                         "model window (default: half the window)."),
    aggregate: Aggregate = typer.Option(Aggregate.max, "--aggregate",
                                        help="How windows make a sequence's probability: max (any promoter-like "
                                        "window) or mean."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="label = probability >= threshold (default: the checkpoint's; "
                                              "an ensemble: the mean of its members')."),
    batch_size: int = typer.Option(256, "--batch-size", help="Sequences per forward pass."),
    windows_out: Optional[Path] = typer.Option(None, "--windows-out", help="Also write per-window scores here."),
    precision: Precision = typer.Option(Precision.fp32, "--precision", help=_PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score every sequence of INPUT: streamed, batched by length; several -c average their probabilities."""
    from msaformer.infer.promoter import predict_file

    with progress_bar(not quiet) as progress:
        n = predict_file(input_path, checkpoint, out, stride=stride, aggregate=aggregate.value, threshold=threshold,
                         batch_size=batch_size, windows_out=windows_out, progress=progress,
                         precision=precision.value)
    console.print(f"wrote {n} predictions to {out}", highlight=False)


def explain_cmd(
    input_path: Path = typer.Argument(..., help=_INPUT_HELP, show_default=False),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="model.pt written by promoter train."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (replaced as a whole when done)."),
    max_plots: int = typer.Option(20, "--max-plots", help="Heatmap PNGs for at most this many sequences (0 = none)."),
    max_records: int = typer.Option(0, "--max-records", help="Explain only the first N records (0 = all)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Sliding-window step for long sequences."),
    tss: Optional[int] = typer.Option(None, "--tss", help="1-based position of the TSS, drawn as +1 (GUE 70-nt core: 34)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Attention rollout: scores.csv, a heatmap PNG per sequence, mean relevance by position."""
    from msaformer.infer.promoter import explain_file

    with progress_bar(not quiet) as progress:
        res = explain_file(input_path, checkpoint, out_dir, max_plots=max_plots, max_records=max_records,
                           stride=stride, tss=tss, progress=progress)
    console.print(f"explained {res['records']} sequences into {out_dir} ({res['heatmaps']} heatmaps, "
                  f"positional_relevance.png)", highlight=False)


def evaluate_cmd(
    input_path: Path = typer.Argument(..., help="Labelled sequences: GUE CSV, FASTA with labels, UCI .data.",
                                      show_default=False),
    checkpoint: List[Path] = typer.Option(..., "--checkpoint", "-c", help="model.pt written by promoter train; "
                                          "repeat for an ensemble averaged in probability (-c a.pt -c b.pt)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.csv, confusion_matrix.png, roc.png."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="FASTA only: a side file of id,label rows."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Decision threshold (default: the checkpoint's; "
                                              "an ensemble: the mean of its members')."),
    precision: Precision = typer.Option(Precision.fp32, "--precision", help=_PRECISION_HELP),
) -> None:
    """Score a labelled file: MCC, F1, accuracy, AUROC, confusion matrix and ROC curve."""
    from msaformer.infer.promoter import evaluate_file

    m = evaluate_file(input_path, checkpoint, out_dir, labels=labels, threshold=threshold,
                      precision=precision.value)
    console.print(f"MCC {m['mcc']:.4f}  F1 {m['f1']:.4f}  accuracy {m['accuracy']:.4f}  AUROC {m['auroc']:.4f}  "
                  f"(n={m['n']}); plots in {out_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds the ``promoter`` command group to the root app."""
    group = new_app("DNA promoter classifier: train (GUE CSV, labelled FASTA, UCI), predict, explain, evaluate.")
    command(group, "train", train_cmd)
    command(group, "predict", predict_cmd)
    command(group, "explain", explain_cmd)
    command(group, "evaluate", evaluate_cmd)
    app.add_typer(group, name="promoter")
