"""``msaformer convert-esm``: fair-esm MSA Transformer weights in, an msaformer model file out."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._app import command, console


class RowScaling(str, enum.Enum):
    real_rows = "real_rows"
    fair_esm = "fair_esm"


def convert_esm_cmd(
    checkpoint: Path = typer.Argument(..., help="fair-esm MSA Transformer .pt (e.g. esm_msa1b_t12_100M_UR50S.pt).",
                                      show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the msaformer model file."),
    contact_regression: Optional[Path] = typer.Option(
        None, "--contact-regression", help="The release's *-contact-regression.pt (the contact head's weights)."
    ),
    row_scaling: RowScaling = typer.Option(
        RowScaling.real_rows, "--row-scaling",
        help="real_rows: batching-invariant, equal to fair-esm on unpadded MSAs; fair_esm: fair-esm's padded-row "
        "scaling.",
    ),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Fully unpickle the checkpoint (only for files you trust)."),
) -> None:
    """Convert fair-esm MSA Transformer weights into an msaformer model file."""
    from msaformer.model.convert import convert_esm_file

    path = convert_esm_file(checkpoint, out, contact_regression, allow_pickle=allow_pickle,
                            row_scaling=row_scaling.value)
    note = "" if contact_regression else " (no --contact-regression: contact head left at zero)"
    console.print(f"wrote {path}{note}", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds ``convert-esm`` to the root app."""
    command(app, "convert-esm", convert_esm_cmd)
