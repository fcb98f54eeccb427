#!/usr/bin/env python
"""Multi-process inference scaling: ``msaformer embed`` on 1 process and under ``torchrun`` with N processes,
side by side in one run, on the same synthetic MSAs and the same random-weight model; checks that every run
wrote exactly the 1-process output.

    # 2 CPU cores: 1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread
    nice python tools/bench_infer_scaling.py --procs 1,2 --threads 1,2 --repeats 3

    # GPUs (tools/gpu_checks.sh): 1 process on one GPU vs one process per GPU
    python tools/bench_infer_scaling.py --device cuda --procs 1,8 --threads 4 --msas 512 --rows 128 --length 256

Each run is a fresh command (interpreter start, model load, scan, merge included: the wall time a user waits);
``in embed`` is the time inside ``embed`` (its MSAs/s line). Prints a markdown table (medians of repeats).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, msas: int, rows: int, length: int, preset: str, layers: int) -> Path:
    """Writes ``msas`` random A3M files (depth and length varied by up to a quarter) and a model; returns it."""
    import numpy as np
    import torch

    from msaformer.model import MSALanguageModel, MsaModelConfig, save_model

    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)
    (folder / "msas").mkdir(parents=True)
    for i in range(msas):
        n = int(rows * rng.uniform(0.75, 1.0))
        n_cols = int(length * rng.uniform(0.75, 1.0))
        grid = letters[rng.integers(0, 21, size=(n, n_cols))]
        grid[0] = letters[rng.integers(0, 20, size=n_cols)]
        (folder / "msas" / f"m{i:04d}.a3m").write_bytes(b"".join(b">s%d\n%s\n" % (k, r.tobytes())
                                                                 for k, r in enumerate(grid)))  # fmt: skip
    torch.manual_seed(0)
    overrides = {"max_positions": length + 1, "max_rows": max(rows, 1024)}
    if layers:
        overrides["num_layers"] = layers
    return save_model(MSALanguageModel(MsaModelConfig.preset(preset, **overrides)), folder / "model.pt")


def run(folder: Path, procs: int, threads: int, device: str, toks: int, tag: str) -> dict:
    out = folder / tag / "e.h5"
    out.parent.mkdir(exist_ok=True)
    args = ["embed", str(folder / "msas"), "-c", str(folder / "model.pt"), "-o", str(out), "--include", "mean,contacts",
            "--device", device, "--toks-per-batch", str(toks), "-q"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_"))}
    env["OMP_NUM_THREADS"] = str(threads)
    if procs == 1:
        cmd = [sys.executable, "-m", "msaformer", *args]
    else:
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(procs), "--master_port",
               str(29400 + os.getpid() % 500), "-m", "msaformer", *args]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rate = re.search(r"([\d.]+) MSAs/s", proc.stderr + proc.stdout)
    return {"wall": wall, "rate": float(rate.group(1)) if rate else float("nan"), "out": out}


def same_output(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a) as x, h5py.File(b) as y:
        if sorted(x) != sorted(y):
            return False
        for group in x:
            for key in x[group]:
                if not np.array_equal(x[group][key][()], y[group][key][()]):
                    return False
    return a.with_suffix(".csv").read_bytes() == b.with_suffix(".csv").read_bytes()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated (1 = no launcher)")
    parser.add_argument("--threads", default="1,2", help="threads per process (OMP_NUM_THREADS), comma-separated; "
                        "a configuration is run when procs x threads <= --cores")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--msas", type=int, default=48)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--length", type=int, default=120)
    parser.add_argument("--preset", default="esm_msa1b")
    parser.add_argument("--layers", type=int, default=2, help="layers of the model (0 = the preset's)")
    parser.add_argument("--toks-per-batch", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    procs = [int(x) for x in args.procs.split(",")]
    threads = [int(x) for x in args.threads.split(",")]
    configs = [(p, t) for p in procs for t in threads if args.device != "cpu" or p * t <= args.cores]
    if not configs:
        raise SystemExit(f"no configuration fits {args.cores} cores (--procs {args.procs} x --threads {args.threads})")
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        folder = Path(tmp)
        make_inputs(folder, args.msas, args.rows, args.length, args.preset, args.layers)
        results = {c: [] for c in configs}
        for r in range(args.repeats):  # interleaved, so drifting load on a shared machine hits every config
            for p, t in configs:
                results[(p, t)].append(run(folder, p, t, args.device, args.toks_per_batch, f"p{p}t{t}r{r}"))
        reference = results[configs[0]][0]["out"]
        base = statistics.median(x["wall"] for x in results[configs[0]])
        print(f"{args.msas} MSAs of ~{args.rows} x {args.length} (75-100 % each), {args.preset} with "
              f"{args.layers or 'all'} layers, --include mean,contacts, --toks-per-batch {args.toks_per_batch}, "
              f"{args.device}; medians of {args.repeats}\n")
        print("| processes | threads each | wall s | MSAs/s (wall) | in embed MSAs/s | speed-up (wall) | output = 1st row's |")
        print("|---|---|---|---|---|---|---|")
        for p, t in configs:
            wall = statistics.median(x["wall"] for x in results[(p, t)])
            rate = statistics.median(x["rate"] for x in results[(p, t)])
            same = all(same_output(reference, x["out"]) for x in results[(p, t)])
            print(f"| {p} | {t} | {wall:.1f} | {args.msas / wall:.2f} | {rate:.2f} | {base / wall:.2f}x | "
                  f"{'identical' if same else 'DIFFERENT'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
