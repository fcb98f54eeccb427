"""CLI commands of one group (see msaformer/cli/main.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
