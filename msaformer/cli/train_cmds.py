"""``msaformer train`` and ``msaformer export-weights``: thin wrappers over :mod:`msaformer.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._common import console, user_errors


def train_command(
    config: Path = typer.Option(..., "--config", "-c", help="Training YAML, e.g. configs/train/msa_tiny.yaml."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", "-s", metavar="KEY=VALUE", help="Override a config value, e.g. --set train.steps=50 (repeatable)."
    ),
) -> None:
    """Train the MSA language model (one process here; use torchrun / deepspeed with `-m msaformer.train`)."""
    with user_errors():
        from msaformer.train.config import load_config
        from msaformer.train.loop import train

        summary = train(load_config(config, overrides or []))
        console.print(f"[green]done[/]: step {summary['step']}, checkpoints in {summary['run_dir']}/checkpoints")


def export_weights_command(
    run_dir: Path = typer.Argument(..., help="Run directory of msaformer train (holds checkpoints/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (read by load_model and msaformer embed)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Checkpoint tag, e.g. step-00000300 (default: latest)."),
) -> None:
    """Consolidate a run's ZeRO checkpoint into one msaformer model file."""
    with user_errors():
        from msaformer.train.export import export_weights

        path = export_weights(run_dir, out, tag=tag)
        console.print(f"[green]wrote[/] {path}")


def register(app: typer.Typer) -> None:
    """Adds ``train`` and ``export-weights`` to the root app."""
    app.command("train", no_args_is_help=True)(train_command)
    app.command("export-weights", no_args_is_help=True)(export_weights_command)
