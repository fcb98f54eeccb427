"""Model commands: ``convert-esm`` (fair-esm MSA Transformer weights -> msaformer model file)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._common import console, user_errors


def convert_esm(
    checkpoint: Path, out: Path, contact_regression: Path | None = None, allow_pickle: bool = False
) -> Path:
    """Converts a fair-esm MSA Transformer release checkpoint to an msaformer model file; returns its path."""
    from msaformer.model import save_model
    from msaformer.model.convert import from_fair_esm, load_fair_esm_checkpoint

    from msaformer.errors import CheckpointError

    data = load_fair_esm_checkpoint(checkpoint, allow_pickle=allow_pickle)
    regression = None
    if contact_regression is not None:
        regression = load_fair_esm_checkpoint(contact_regression, allow_pickle=allow_pickle)
    try:
        model = from_fair_esm(data, contact_regression=regression)
    except CheckpointError as exc:  # name the file at fault
        where = contact_regression if str(exc).startswith("contact regression:") else checkpoint
        message = str(exc).removeprefix("contact regression: ")
        raise CheckpointError(f"{where}: {message}") from None
    return save_model(model, out)


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""

    @app.command("convert-esm", no_args_is_help=True)
    def convert_esm_cmd(
        checkpoint: Path = typer.Argument(..., help="fair-esm MSA Transformer .pt (e.g. esm_msa1b_t12_100M_UR50S.pt)."),
        out: Path = typer.Option(..., "--out", "-o", help="Where to write the msaformer model file."),
        contact_regression: Optional[Path] = typer.Option(
            None, "--contact-regression", help="The release's *-contact-regression.pt (contact head weights)."
        ),
        allow_pickle: bool = typer.Option(
            False, "--allow-pickle", help="Fully unpickle the checkpoint (only for files you trust)."
        ),
    ) -> None:
        """Convert fair-esm MSA Transformer weights into an msaformer model file (load with load_model)."""
        with user_errors():
            path = convert_esm(checkpoint, out, contact_regression, allow_pickle)
            note = "" if contact_regression else " (no --contact-regression: contact head left at zero)"
            console.print(f"wrote {path}{note}")
