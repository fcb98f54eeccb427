"""``msaformer contacts [predict] | evaluate | fit``: contact maps, their precision against structures, and fitting
a model's contact head (thin wrappers over :mod:`msaformer.contacts`).

``msaformer contacts FILES... -c MODEL -o OUT`` stays what it always was: a first argument that is not a
subcommand's name runs ``contacts predict`` (:class:`DefaultCommandGroup`). An input file literally named
``evaluate`` or ``fit`` is given as ``msaformer contacts predict evaluate ...``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._app import MsaformerSubGroup, command, console, new_app, progress_bar
from msaformer.cli.infer_cmds import (
    ContactMethod,
    Device,
    Dtype,
    Subsample,
    _device_opt,
    _dtype_opt,
    _subsample_opt,
    _terminate_cleanly,
)

_PAIRS_HELP = ("CSV/TSV with name, msa and structure + chain (PDB/mmCIF, .gz too) or truth (contact list i,j); "
               "optional block; paths relative to it.")


class DefaultCommandGroup(MsaformerSubGroup):
    """A command group that runs :attr:`default_command` when the first argument names no subcommand."""

    default_command = "predict"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _print_table(result, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("protein", "L", "rows", "long true", "long P@L", "long P@L/5", "medium P@L/5", "short P@L/5"):
        table.add_column(column, justify="left" if column == "protein" else "right", no_wrap=column == "protein")

    def fmt(value):
        return "-" if isinstance(value, float) and math.isnan(value) else (f"{value:.3f}" if isinstance(value, float)
                                                                           else str(value))

    for row in [*result.rows, result.mean]:
        table.add_row(row["name"], fmt(row["L"]), fmt(row["rows"]), fmt(row["long_true"]), fmt(row["long_P@L"]),
                      fmt(row["long_P@L/5"]), fmt(row["medium_P@L/5"]), fmt(row["short_P@L/5"]))
    console.print(table)


def evaluate_cmd(
    pairs: Path = typer.Option(..., "--pairs", help=_PAIRS_HELP),
    method: ContactMethod = typer.Option(ContactMethod.model, "--method", help="What predicts the maps."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Model file (--method model)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write: precision.csv, maps.h5, one PNG per protein."),
    max_seqs: Optional[int] = typer.Option(
        None, "--max-seqs", show_default=False,
        help="Rows kept per MSA, query included (default: 256 for a model, every row for potts/mi); 0 = all.",
    ),  # fmt: skip
    subsample_mode: Subsample = _subsample_opt(),
    seed: int = typer.Option(0, help="Seed of --subsample random."),
    potts_iterations: int = typer.Option(100, "--potts-iterations", help="L-BFGS iterations of --method potts."),
    min_identity: float = typer.Option(0.9, "--min-identity", help="Least identity of the chain-to-query mapping."),
    device: Device = _device_opt(),
    dtype: Dtype = typer.Option(Dtype.auto, help="auto: bf16 autocast on CUDA, fp32 on CPU (--method model)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Precision of the top L, L/2, L/5 predicted contacts (short, medium, long range) against structures."""
    from msaformer.contacts.evaluate import evaluate_pairs
    from msaformer.contacts.predictors import ContactPredictor, PredictOptions

    options = PredictOptions(method=method.value, max_seqs=max_seqs, subsample=subsample_mode.value, seed=seed,
                             device=device.value, dtype=dtype.value, potts_iterations=potts_iterations)
    predictor = ContactPredictor(options, checkpoint)
    with _terminate_cleanly(), progress_bar(not quiet) as progress:
        result = evaluate_pairs(pairs, predictor, out, min_identity=min_identity, progress=progress)
    _print_table(result, f"{method.value}: precision of the top-ranked pairs ({pairs})")
    console.print(f"[green]wrote[/] {out}/ (precision.csv, maps.h5, {len(result.rows)} PNGs) in "
                  f"{result.seconds:.1f} s", highlight=False)


def fit_cmd(
    pairs: Path = typer.Option(..., "--pairs", help="Training proteins: " + _PAIRS_HELP),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="The model whose contact head is fitted."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write: the same model, its contact head fitted."),
    holdout_pairs: Optional[Path] = typer.Option(
        None, "--holdout-pairs", help="Other proteins to report the fitted head's precision on (not fitted on)."
    ),
    c: float = typer.Option(0.15, "--c", help="Inverse L1 strength of the logistic regression (ESM: 0.15)."),
    max_seqs: Optional[int] = typer.Option(
        None, "--max-seqs", show_default=False, help="Rows kept per MSA, query included (default 256); 0 = all."
    ),
    subsample_mode: Subsample = _subsample_opt(),
    seed: int = typer.Option(0, help="Seed of --subsample random."),
    min_identity: float = typer.Option(0.9, "--min-identity", help="Least identity of the chain-to-query mapping."),
    device: Device = _device_opt(),
    dtype: Dtype = _dtype_opt(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit a model's contact head on structures (L1 logistic regression on row attentions, as ESM did)."""
    from msaformer.contacts.fit import fit_contact_head
    from msaformer.contacts.predictors import PredictOptions

    options = PredictOptions(method="model", max_seqs=max_seqs, subsample=subsample_mode.value, seed=seed,
                             device=device.value, dtype=dtype.value)
    with _terminate_cleanly(), progress_bar(not quiet) as progress:
        result = fit_contact_head(pairs, checkpoint, out, holdout=holdout_pairs, C=c, options=options,
                                  min_identity=min_identity, progress=progress)  # fmt: skip
    from types import SimpleNamespace

    _print_table(SimpleNamespace(rows=result.train, mean={"name": "mean", "L": "", "rows": "", "long_true": "",
                                                          **result.train_mean}),
                 "fitted head on its training proteins")  # fmt: skip
    if result.holdout:
        _print_table(SimpleNamespace(rows=result.holdout, mean={"name": "mean", "L": "", "rows": "", "long_true": "",
                                                                **result.holdout_mean}),
                     "fitted head on the held-out proteins")  # fmt: skip
    console.print(f"[green]wrote[/] {out} (contact head fitted on {len(result.train)} proteins, {result.pairs} pairs, "
                  f"{result.positives} contacts; {result.nonzero} of {result.weight.size} weights non-zero)",
                  highlight=False)  # fmt: skip


def register(app: typer.Typer, predict_cmd) -> None:
    """Adds the ``contacts`` group (``predict``, the default, ``evaluate``, ``fit``) to the root app."""
    group = new_app(
        "Contact maps (model, potts or mi), their precision against structures, and fitting a model's contact "
        "head. 'msaformer contacts FILES... -c MODEL -o OUT' runs 'contacts predict'.",
        cls=DefaultCommandGroup,
    )
    command(group, "predict", predict_cmd)
    command(group, "evaluate", evaluate_cmd)
    command(group, "fit", fit_cmd)
    app.add_typer(group, name="contacts")
