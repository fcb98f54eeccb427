"""``python -m msaformer.train --config FILE [--set key=value ...]``: the entry point for launchers.

``torchrun --nproc_per_node N -m msaformer.train ...`` and ``deepspeed --hostfile H --module
msaformer.train ...`` run this module; ``msaformer train`` runs the same function.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msaformer.train", description="Train the MSA language model.")
    parser.add_argument("--config", "-c", required=True, help="training YAML, e.g. configs/train/msa_tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=50 (repeatable)")
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from msaformer.errors import MsaformerError
    from msaformer.train.config import load_config
    from msaformer.train.loop import train

    try:
        train(load_config(args.config, args.overrides))
    except MsaformerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
