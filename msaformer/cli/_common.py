"""Helpers shared by CLI modules: one-line user errors, stderr console."""

from __future__ import annotations

import contextlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from msaformer.errors import MsaformerError

#: Progress bars, logs and tables go to stderr; stdout is for data.
console = Console(stderr=True)


@contextlib.contextmanager
def user_errors():
    """Turns a MsaformerError (a user mistake) into a one-line message and exit code 1, no traceback."""
    try:
        yield
    except MsaformerError as exc:
        # escape: messages name config sections as "[train]", which rich would read as markup
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
