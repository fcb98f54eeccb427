"""Root of the ``msaformer`` command. Each command group lives in its own module and registers itself here.

Heavy imports (torch, deepspeed) happen inside the commands, so ``msaformer --help`` and ``preprocess``
start fast.
"""

from __future__ import annotations

import typer

from msaformer.cli import data_cmds, infer_cmds, model_cmds, promoter_cmds, train_cmds

app = typer.Typer(
    name="msaformer",
    help="Axial-attention MSA models: preprocess alignments, train, embed, score variants; DNA promoters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (data_cmds, model_cmds, train_cmds, infer_cmds, promoter_cmds):
    _module.register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
