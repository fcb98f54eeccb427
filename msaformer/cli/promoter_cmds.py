"""``msaformer promoter``: train, predict, explain and evaluate the DNA promoter classifier.

Thin wrappers over :mod:`msaformer.train.promoter` and :mod:`msaformer.infer.promoter`; torch, deepspeed and
matplotlib are imported inside the commands so ``msaformer --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._common import console, user_errors

promoter_app = typer.Typer(
    help="DNA promoter classifier: train (GUE CSV / labelled FASTA / UCI), predict, explain, evaluate.",
    no_args_is_help=True,
    add_completion=False,
)


@promoter_app.command("train")
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config, e.g. configs/promoter/gue_prom_core.yaml"),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="dotted override key=value, repeatable"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run folder (overrides out_dir)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed (overrides seed)"),
) -> None:
    """Train on train, select on dev MCC, score test; writes model.pt, results.csv, PNGs into the run folder."""
    with user_errors():
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
        console.print(f"model and reports in {res['run_dir']} (best epoch {res['best_epoch']})", highlight=False)


@promoter_app.command("predict")
def predict(
    input_path: Path = typer.Argument(..., help="sequences: FASTA (.fa/.fasta[.gz]) or CSV with a sequence column"),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.pt written by 'promoter train'"),
    out: Path = typer.Option(..., "--out", "-o", help="output CSV: id,length,n_windows,probability,label"),
    stride: Optional[int] = typer.Option(None, help="sliding-window step for sequences longer than the model "
                                         "window (default: half the window)"),
    aggregate: str = typer.Option("max", help="window aggregation: max (any promoter-like window) or mean"),
    threshold: Optional[float] = typer.Option(None, help="label = probability >= threshold (default: checkpoint's, 0.5)"),
    batch_size: int = typer.Option(256, help="sequences per forward pass"),
    windows_out: Optional[Path] = typer.Option(None, "--windows-out", help="also write per-window scores here"),
) -> None:
    """Score every sequence of INPUT; streaming, batched by length, with a progress bar on stderr."""
    with user_errors():
        from msaformer.infer.promoter import predict_file

        n = predict_file(input_path, checkpoint, out, stride=stride, aggregate=aggregate, threshold=threshold,
                         batch_size=batch_size, windows_out=windows_out, progress=True)
        console.print(f"wrote {n} predictions to {out}", highlight=False)


@promoter_app.command("explain")
def explain(
    input_path: Path = typer.Argument(..., help="sequences: FASTA or CSV"),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.pt written by 'promoter train'"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="output folder"),
    max_plots: int = typer.Option(20, help="heatmap PNGs for at most this many sequences (0 = none)"),
    max_records: int = typer.Option(0, help="explain only the first N records (0 = all)"),
    stride: Optional[int] = typer.Option(None, help="sliding-window step for long sequences"),
    tss: Optional[int] = typer.Option(None, help="1-based TSS position to mark (GUE 70-nt core: 34)"),
) -> None:
    """Attention rollout from <cls>: scores.csv, a heatmap PNG per sequence, mean relevance by position."""
    with user_errors():
        from msaformer.infer.promoter import explain_file

        res = explain_file(input_path, checkpoint, out_dir, max_plots=max_plots, max_records=max_records,
                           stride=stride, tss=tss, progress=True)
        console.print(f"explained {res['records']} sequences into {out_dir} ({res['heatmaps']} heatmaps, "
                      f"positional_relevance.png)", highlight=False)


@promoter_app.command("evaluate")
def evaluate(
    input_path: Path = typer.Argument(..., help="labelled sequences: GUE CSV, FASTA with labels, UCI .data"),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.pt written by 'promoter train'"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="folder for metrics.csv, confusion_matrix.png, roc.png"),
    labels: Optional[Path] = typer.Option(None, help="FASTA only: side file of id,label"),
    threshold: Optional[float] = typer.Option(None, help="decision threshold (default: checkpoint's, 0.5)"),
) -> None:
    """Score a labelled file: MCC, F1, accuracy, AUROC, confusion matrix and ROC curve."""
    with user_errors():
        import csv

        from msaformer.data.promoter import read_promoters
        from msaformer.infer.promoter import predict_records
        from msaformer.model.promoter import load_promoter_model
        from msaformer.train.promoter import write_evaluation

        data = read_promoters(input_path, labels=labels, require_labels=True)
        model, meta = load_promoter_model(checkpoint)
        thr = float(meta.get("threshold", 0.5)) if threshold is None else threshold
        rows = [row for row, _ in predict_records(model, zip(data.ids, data.sequences), threshold=thr,
                                                  source=str(input_path))]
        probs = [r["probability"] for r in rows]
        metrics = write_evaluation(data.labels, probs, out_dir, threshold=thr, title=input_path.name)
        with open(Path(out_dir) / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["input", "threshold", *metrics])
            writer.writeheader()
            writer.writerow({"input": str(input_path), "threshold": thr, **metrics})
        console.print(f"MCC {metrics['mcc']:.4f}  F1 {metrics['f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
                      f"AUROC {metrics['auroc']:.4f}  (n={metrics['n']}); plots in {out_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds the ``promoter`` command group to the root app."""
    app.add_typer(promoter_app, name="promoter")
