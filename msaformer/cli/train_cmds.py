"""``msaformer train`` and ``msaformer export-weights``: thin wrappers over :mod:`msaformer.train`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from msaformer.cli._app import command, console


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training YAML, e.g. configs/train/msa_tiny.yaml."),
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="KEY=VALUE", help="Override a config value, e.g. --set train.steps=50 (repeatable)."
    ),
    local_rank: Optional[int] = typer.Option(None, "--local_rank", "--local-rank", hidden=True,
                                             help="Set by the deepspeed launcher (LOCAL_RANK says the same)."),
) -> None:
    """Train the MSA language model (one process here; torchrun / deepspeed run `-m msaformer.train`)."""
    from msaformer.train.config import load_config
    from msaformer.train.loop import train

    summary = train(load_config(config, overrides or []))
    console.print(f"[green]done[/]: step {summary['step']}, checkpoints in {summary['run_dir']}/checkpoints",
                  highlight=False)


def export_weights_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory of msaformer train (holds checkpoints/).", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (read by load_model and msaformer embed)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Checkpoint tag, e.g. step-00000300 (default: the latest)."),
) -> None:
    """Consolidate a run's ZeRO checkpoint into one msaformer model file."""
    from msaformer.train.export import export_weights

    path = export_weights(run_dir, out, tag=tag)
    console.print(f"[green]wrote[/] {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds ``train`` and ``export-weights`` to the root app."""
    command(app, "train", train_cmd)
    command(app, "export-weights", export_weights_cmd)
