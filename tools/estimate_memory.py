"""Estimate the GPU memory of msaformer and fair-esm at the trunk benchmark's shapes, without a GPU.

Runs the same iteration as ``tools/bench_trunk.py`` (training: bf16-autocast forward, fp32 loss, backward,
AdamW step; inference: no-grad forward, optionally with contacts) on the ``meta`` device under
:mod:`msaformer.train.memory`'s tracker, and prints the estimated ``torch.cuda.max_memory_allocated`` per
case beside fair-esm's published H100 measurements (the issue's figures), which calibrate the estimator.
Takes seconds per case: nothing is computed.

Examples::

    python tools/estimate_memory.py                                   # the issue's GPU cases, both models
    python tools/estimate_memory.py --cases train-1x512x128 --ckpt 1  # msaformer with checkpointing
    python tools/estimate_memory.py --cases contacts-1x1024x1023 --impls msaformer --chunk-tokens 65536
    python tools/estimate_memory.py --preset configs/model/esm_msa1b.yaml --impls msaformer --cases infer-4x256x255
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trunk import (  # noqa: E402
    DEFAULT_CHUNK_TOKENS,
    GPU_CASES,
    IMPLS,
    make_step,
    parse_case,
    prepare_msaformer,
    token_columns,
)

from msaformer.model import MSALanguageModel, load_model_config  # noqa: E402
from msaformer.model.convert import build_fair_esm  # noqa: E402
from msaformer.train.memory import measure_step, recompute_context  # noqa: E402

#: fair-esm on an H100 80GB, bf16 autocast, from the trunk issue (GiB; "OOM" = more than 80 GB).
FAIR_ESM_H100 = {
    "train-1x64x256": 12.2,
    "train-1x16x1024": 12.4,
    "train-1x512x128": 72.0,
    "infer-1x1024x256": 27.7,
    "contacts-1x512x256": "OOM",
}


def build(impl: str, preset: str, ckpt: int, esm_max_tokens: int, train: bool, dtype):
    config = load_model_config(preset)
    if config.max_rows not in (0, 1024):
        config = config.replace(max_rows=1024)
    with torch.device("meta"):
        if impl == "fair_esm":
            model = build_fair_esm(config, seed=0)
            if not train:
                model.max_tokens_per_msa_(esm_max_tokens)
        else:
            model = MSALanguageModel(config.replace(row_scaling="real_rows"))
            if train and ckpt:  # the training engine's checkpointing, recomputed under the emulation
                prepare_msaformer(model, ckpt, context_fn=recompute_context(dtype))
    return model


def estimate(case: str, impl: str, args) -> dict:
    kind, B, N, L = parse_case(case)
    train = kind == "train"
    dtype = {"bf16": torch.bfloat16, "fp32": None}[args.dtype]
    model = build(impl, args.preset, args.ckpt, args.esm_max_tokens, train, dtype)
    L_tok = token_columns(L, load_model_config(args.preset).max_positions)
    tokens = torch.full((B, N, L_tok), 5, dtype=torch.long, device="meta")
    targets = torch.full((B, N, L_tok), 5, dtype=torch.long, device="meta")
    chunk = args.chunk_tokens if args.chunk_tokens is not None else DEFAULT_CHUNK_TOKENS
    step = make_step(model, kind, tokens, targets, foreach=False,
                     chunk_tokens=chunk if impl != "fair_esm" else None)  # the benchmark's iteration
    peak, base = measure_step(model, step, dtype=dtype, warmup=1 if train else 0, extra=[tokens, targets])
    del model, step
    gc.collect()
    return {"case": case, "impl": impl, "peak_gib": peak, "base_gib": base}


def markdown(results: list[dict], args) -> str:
    lines = [
        f"estimated peak (GiB, `max_memory_allocated`); preset {args.preset}, {args.dtype} autocast, "
        f"msaformer checkpointing {args.ckpt or 'off'}, inference chunk tokens "
        f"{'default' if args.chunk_tokens is None else args.chunk_tokens or 'off'}, fair-esm max_tokens_per_msa "
        f"{args.esm_max_tokens}",
        "",
        "| case | impl | estimated peak GiB | of which weights/grads/optimizer | fair-esm measured on H100 (issue) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        ref = FAIR_ESM_H100.get(r["case"], "") if r["impl"] == "fair_esm" else ""
        lines.append(f"| {r['case']} | {r['impl']} | {r['peak_gib']:.2f} | {r['base_gib']:.2f} | {ref} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(GPU_CASES))
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--preset", default="esm_msa1b", help="model preset name or model config YAML")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--ckpt", type=int, default=0,
                   help="msaformer activation checkpointing of every N-th block in training cases (0 = off)")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help=f"msaformer inference token budget (default {DEFAULT_CHUNK_TOKENS}; 0 = never chunk)")
    p.add_argument("--esm-max-tokens", type=int, default=2**14, help="fair-esm max_tokens_per_msa for inference")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    results = []
    for case in args.cases.split(","):
        for impl in args.impls.split(","):
            r = estimate(case, impl, args)
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    print(markdown(results, args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
