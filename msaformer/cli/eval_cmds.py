"""``msaformer evaluate``: masked-token accuracy and perplexity of an MSA model beside a column-profile baseline
(a thin wrapper over :func:`msaformer.infer.masked_lm.evaluate_lm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._app import command, console, progress_bar
from msaformer.cli.infer_cmds import (
    _INPUTS_HELP,
    Device,
    Dtype,
    OnError,
    Subsample,
    _device_opt,
    _dtype_opt,
    _subsample_opt,
    _terminate_cleanly,
)


def evaluate_cmd(
    inputs: list[Path] = typer.Argument(..., help=_INPUTS_HELP + " Databases too.", show_default=False),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Model file (export-weights or convert-esm)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV to write: one row per MSA, then 'all'."),
    max_seqs: Optional[int] = typer.Option(
        None, "--max-seqs", show_default=False,
        help="Rows kept per MSA, query included (default: 256, or the model's max_rows if fewer); 0 = all.",
    ),  # fmt: skip
    subsample_mode: Subsample = _subsample_opt(),
    seed: int = typer.Option(0, help="Seed of the masking (and of --subsample random)."),
    toks_per_batch: int = typer.Option(2**16, "--toks-per-batch", help="Chunking budget of large MSAs (tokens)."),
    device: Device = _device_opt(),
    dtype: Dtype = _dtype_opt(),
    on_error: OnError = typer.Option(OnError.fail, "--on-error", help="fail: stop at an unusable MSA; skip: go on."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Masked-token accuracy and perplexity (ESM masking, fixed seed) beside a column-profile baseline."""
    from msaformer.infer.masked_lm import evaluate_lm

    with _terminate_cleanly(), progress_bar(not quiet) as progress:
        result = evaluate_lm(inputs, checkpoint, out, max_seqs=max_seqs, subsample=subsample_mode.value, seed=seed,
                             device=device.value, dtype=dtype.value, toks_per_batch=toks_per_batch,
                             on_error=on_error.value, progress=progress)  # fmt: skip
    o = result.overall
    console.print(
        f"{len(result.rows)} MSAs, {o['masked']} masked positions: model accuracy {o['model_accuracy']:.3f}, "
        f"perplexity {o['model_perplexity']:.2f}; column profile accuracy {o['profile_accuracy']:.3f}, "
        f"perplexity {o['profile_perplexity']:.2f}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    for source, reason in result.errors[:5]:
        console.print(f"[yellow]skipped[/] {source}: {reason}", highlight=False, soft_wrap=True)
    if out is not None:
        console.print(f"[green]wrote[/] {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds ``evaluate`` to the root app."""
    command(app, "evaluate", evaluate_cmd)
