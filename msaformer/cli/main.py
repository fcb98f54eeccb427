"""Root of the ``msaformer`` command (also ``python -m msaformer``). Each command group lives in its own module
and registers its commands here; see :mod:`msaformer.cli._app` for the contract every command follows.

Heavy imports (torch, deepspeed) happen inside the commands, so ``msaformer --help`` starts fast.
"""

from __future__ import annotations

import typer

from msaformer import __version__
from msaformer.cli import data_cmds, eval_cmds, infer_cmds, model_cmds, promoter_cmds, train_cmds
from msaformer.cli._app import MsaformerGroup, new_app, set_verbose

app = new_app(
    "Axial-attention MSA models: preprocess alignments, train, embed, predict contacts, score variants; "
    "DNA promoters.",
    cls=MsaformerGroup,
    name="msaformer",
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"msaformer {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version, metavar="",
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="",
                                 help="Show third-party log lines (DeepSpeed's) on stderr."),
) -> None:
    """Axial-attention MSA models: preprocess alignments, train, embed, predict contacts, score variants;
    DNA promoters."""
    set_verbose(verbose)


for _module in (data_cmds, model_cmds, train_cmds, infer_cmds, eval_cmds, promoter_cmds):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Runs the command line (``argv`` defaults to ``sys.argv[1:]``); exits with its code."""
    from msaformer.allocator import keep_freed_memory

    keep_freed_memory()  # this process is msaformer's: numpy's large temporaries are reused, not page-faulted
    app(args=argv, prog_name="msaformer")


if __name__ == "__main__":  # pragma: no cover
    main()
