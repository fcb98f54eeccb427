"""``python -m msaformer.train --config FILE [--set key=value ...]``: ``msaformer train`` for launchers.

``torchrun --nproc_per_node N -m msaformer.train ...`` and ``deepspeed --hostfile H --module msaformer.train ...``
run this module: the same command, the same option parsing and the same one-line errors as ``msaformer train``
(a launcher entry point, like the console script). The ``deepspeed`` launcher's ``--local_rank=N`` is accepted,
and so are ``msaformer``'s own ``--verbose`` / ``-v`` (third-party log lines on stderr) anywhere in the line.
"""

import sys

from msaformer.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    root = [a for a in args if a in ("--verbose", "-v")]
    main([*root, "train", *(a for a in args if a not in root)])
