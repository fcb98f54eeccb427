#!/usr/bin/env python
"""Benchmark of batch inference (``msaformer embed``): MSAs/s, tokens/s and peak memory.

Each configuration runs in a fresh subprocess, so peak RSS (and peak CUDA memory) belong to that run alone.
Models have random weights (nothing is downloaded); speed and memory depend only on the shape.

    # the sample alignments at 256 rows, tiny model, then ESM-MSA-1b shape on three files, CPU
    OMP_NUM_THREADS=2 python tools/bench_infer.py --preset tiny --preset esm_msa1b \\
        --esm-files esm/1a3a_1_A.a3m,openfold/bfd_uniclust_hits.a3m,hmmer/fn3.sto

    # GPU: add the 1024 x 1023 contacts memory check of the issue
    python tools/bench_infer.py --preset esm_msa1b --device cuda --large 1024x1023

Prints a markdown table; ``--json`` also writes the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "msa"  # the shared sample data beside the checkout


def _worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from msaformer.data.msa import Msa
    from msaformer.infer.msa import EmbedOptions, MsaInference, embed
    from msaformer.model import MSALanguageModel, MsaModelConfig, save_model

    torch.manual_seed(0)
    overrides = {"max_positions": 1024, "max_rows": 1024} if args.preset == "tiny" else {}
    model = MSALanguageModel(MsaModelConfig.preset(args.preset, **overrides))
    n_params = sum(p.numel() for p in model.parameters())
    from msaformer.infer.msa import resolve_device

    device = str(resolve_device(args.device))
    result = {"preset": args.preset, "params": n_params, "device": device, "threads": torch.get_num_threads(),
              "toks_per_batch": args.toks_per_batch}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.large:
            depth, length = (int(x) for x in args.large.split("x"))
            runner = MsaInference(model, device=args.device, dtype=args.dtype, toks_per_batch=args.toks_per_batch)
            rng = np.random.default_rng(0)
            letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)
            tokens = rng.choice(letters, size=(depth, length))
            msa = Msa([f"s{i}" for i in range(depth)], tokens, np.zeros_like(tokens))
            if runner.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = runner.forward(runner.encode([msa]), [runner.config.num_layers], contacts=True)
            contacts = out["contacts"][0].float().cpu()
            seconds = time.perf_counter() - start
            result.update(files=f"random {depth}x{length}", msas=1, ok=1, seconds=seconds,
                          tokens=depth * (length + 1), contacts_shape=list(contacts.shape))  # fmt: skip
        else:
            ckpt = save_model(model, Path(tmp) / "model.pt")
            files = [DATA / f for f in args.files.split(",")] if args.files else [DATA]
            opts = EmbedOptions(
                include=tuple(args.include.split(",")), max_seqs=args.max_seqs, toks_per_batch=args.toks_per_batch,
                device=args.device, dtype=args.dtype, on_error="skip", progress=False,
            )  # fmt: skip
            if device != "cpu":  # warm-up (CUDA context, kernels), not timed
                embed(files[:1] if args.files else [DATA / "hmmer" / "fn3.sto"], ckpt, Path(tmp) / "w.h5", opts)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            summary = embed(files, ckpt, Path(tmp) / "out.h5", opts)
            import csv

            with open(summary.index) as fh:
                rows = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
            tokens = sum(int(r["rows_used"]) * (int(r["length"]) + 1) for r in rows)
            result.update(files=args.files or "../shared/datasets/msa (all)", msas=summary.ok + summary.failed, ok=summary.ok,
                          seconds=summary.seconds, tokens=tokens)  # fmt: skip
    result["msas_per_s"] = result["ok"] / result["seconds"]
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    if device != "cpu":
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", choices=["tiny", "esm_msa1b"], help="model shape(s)")
    parser.add_argument("--files", default="", help="comma-separated paths under ../shared/datasets/msa (default: all)")
    parser.add_argument("--esm-files", default="esm/1a3a_1_A.a3m,openfold/bfd_uniclust_hits.a3m,hmmer/fn3.sto",
                        help="files for the esm_msa1b preset (it is slow on a CPU)")  # fmt: skip
    parser.add_argument("--max-seqs", type=int, default=256)
    parser.add_argument("--toks-per-batch", type=int, default=2**16)
    parser.add_argument("--include", default="per_tok,mean,contacts,logits")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--large", default="", help="instead of files: one random DEPTHxLENGTH MSA with contacts")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.preset = args.preset[0]
        print(json.dumps(_worker(args)))
        return

    results = []
    for preset in args.preset or ["tiny"]:
        files = args.esm_files if preset == "esm_msa1b" and not args.files and not args.large else args.files
        cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--files", files,
               "--max-seqs", str(args.max_seqs), "--toks-per-batch", str(args.toks_per_batch),
               "--include", args.include, "--device", args.device, "--dtype", args.dtype, "--large", args.large]  # fmt: skip
        print(f"# running {preset} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark worker for {preset} failed")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print("| model | params | device | inputs | MSAs ok | rows | toks/batch | s | MSAs/s | tokens/s | peak RSS GiB | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r.get('gpu', r['device'])} | {r['files']} | {r['ok']} | "
              f"{args.max_seqs if not args.large else args.large.split('x')[0]} | {r['toks_per_batch']} | {r['seconds']:.1f} | "
              f"{r['msas_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_rss_gib']:.2f} | "
              f"{r.get('peak_cuda_gib', float('nan')):.2f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
