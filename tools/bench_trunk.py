"""Benchmark the msaformer axial trunk against fair-esm's MSA Transformer, side by side, identical weights.

Each (case, implementation) runs in its own subprocess, so peak memory is per case and an out-of-memory
in one case cannot disturb the next. Cases:

* ``train-BxNxL``: forward + backward + AdamW step, tokens/s and model TFLOP/s with the forward FLOPs per
  layer ``32*T*D^2 + 4*T*D*(L+N)`` (``T = B*N*L`` tokens, ``<cls>`` column included), times 3 for training;
* ``infer-BxNxL``: no-grad forward (logits);
* ``contacts-BxNxL``: no-grad forward with contacts.

Examples::

    python tools/bench_trunk.py --device cuda --json bench.json --markdown bench.md
    python tools/bench_trunk.py --device cpu --preset esm_msa1b --cases train-1x32x128,infer-1x64x128
    python tools/bench_trunk.py --device cuda --cases train-1x512x128 --ckpt 1   # checkpointing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

GPU_CASES = [
    "train-1x64x256", "train-1x16x1024", "train-1x256x256", "train-1x512x128",
    "infer-1x256x256", "infer-1x1024x256", "infer-1x512x1023",
    "contacts-1x512x256", "contacts-1x1024x1023",
]  # fmt: skip
CPU_CASES = ["train-1x16x64", "train-1x32x128", "infer-1x64x128", "contacts-1x64x128"]
IMPLS = ("fair_esm", "msaformer")
# Also: "msaformer_compile" (torch.compile of each layer), "msaformer_ckpt" (checkpointing every layer).


def parse_case(name: str) -> tuple[str, int, int, int]:
    kind, shape = name.split("-", 1)
    B, N, L = (int(v) for v in shape.split("x"))
    if kind not in ("train", "infer", "contacts"):
        raise SystemExit(f"unknown case kind {kind!r} in {name!r} (train, infer, contacts)")
    return kind, B, N, L


def token_columns(L: int, max_positions: int = 1024) -> int:
    """Returns the token columns of a case with ``L`` residues: ``L + 1`` with the ``<cls>`` column, except
    that a case at the model's position limit (the issue's ``(1, 16, 1024)``, measured on fair-esm, whose
    1024 positions include ``<cls>``) counts ``<cls>`` among its ``L`` columns."""
    return L if L + 1 > max_positions else L + 1


def model_flops(config, B: int, N: int, L: int, training: bool) -> float:
    T, D = B * N * L, config.embed_dim
    per_layer = 32 * T * D**2 + 4 * T * D * (L + N)
    return per_layer * config.num_layers * (3 if training else 1)


#: msaformer's default inference token budget (``msaformer embed --toks-per-batch``).
DEFAULT_CHUNK_TOKENS = 65536


def prepare_msaformer(model, ckpt: int, compile: bool = False, context_fn=None):
    """Applies the training execution options to an msaformer model, through the one function the training
    engine uses (:func:`msaformer.train.execution.prepare_model`)."""
    from msaformer.train.execution import ExecutionOptions, prepare_model

    return prepare_model(model, ExecutionOptions(ckpt or None, compile), context_fn=context_fn)


def make_step(model, kind: str, tokens, targets, foreach: bool | None = None, chunk_tokens: int | None = None):
    """Returns ``step(autocast)``, one benchmark iteration of ``model`` (put in train or eval mode here):
    ``train``: forward under ``autocast()``, fp32 cross-entropy, backward, AdamW step; ``infer`` /
    ``contacts``: a no-grad forward under ``autocast()`` (msaformer through its chunked runner when
    ``chunk_tokens`` is set), synchronised by reading one number. The memory estimate
    (``tools/estimate_memory.py``) runs the same iteration."""
    import torch

    forward = model
    if kind != "train" and chunk_tokens:
        from msaformer.infer.chunked import ChunkOptions, run_chunked

        options = ChunkOptions(chunk_tokens)

        def forward(tokens, return_contacts=False):
            return run_chunked(model, tokens, options, return_contacts=return_contacts)

    if kind == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=foreach)

        def step(autocast) -> None:
            with autocast():
                logits = model(tokens)["logits"]
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), targets.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    else:
        model.eval()

        def step(autocast) -> None:
            with torch.no_grad(), autocast():
                out = forward(tokens, return_contacts=kind == "contacts")
                (out["contacts"] if kind == "contacts" else out["logits"]).float().sum().item()

    return step


def run_worker(spec: dict) -> dict:
    """Runs one case of one implementation in this process; returns its measurements."""
    import torch

    from msaformer.data.alphabet import CLS_IDX
    from msaformer.model import MSALanguageModel, MsaModelConfig, from_fair_esm
    from msaformer.model.convert import build_fair_esm

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    kind, B, N, L = parse_case(spec["case"])
    config = MsaModelConfig.preset(spec["preset"])
    L_tok = token_columns(L, config.max_positions)  # the <cls> column included
    if config.max_rows not in (0, 1024):
        config = config.replace(max_rows=1024)  # fair-esm's row embedding has 1024 rows
    esm_model = build_fair_esm(config, seed=0)
    if spec["impl"] == "fair_esm":
        model = esm_model
        if kind != "train":
            model.max_tokens_per_msa_(spec["esm_max_tokens"])
    else:
        converted = from_fair_esm(esm_model)
        del esm_model
        ckpt = 1 if spec["impl"] == "msaformer_ckpt" else spec["ckpt"]
        model = MSALanguageModel(config.replace(row_scaling="real_rows"))
        model.load_state_dict(converted.state_dict())
        del converted
        compile_layers = spec["compile"] or spec["impl"] == "msaformer_compile"
        prepare_msaformer(model, ckpt if kind == "train" else 0, compile_layers)
    model.to(device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[spec["dtype"]]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 29, (B, N, L_tok), generator=g)
    tokens[..., 0] = CLS_IDX
    tokens = tokens.to(device)
    targets = torch.randint(4, 29, (B, N, L_tok), generator=g).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    chunk = spec["chunk_tokens"] if spec["chunk_tokens"] is not None else DEFAULT_CHUNK_TOKENS
    iteration = make_step(model, kind, tokens, targets, chunk_tokens=chunk if spec["impl"] != "fair_esm" else None)

    def step() -> None:
        iteration(lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32))

    result = {"case": spec["case"], "impl": spec["impl"], "status": "ok"}
    try:
        for _ in range(spec["warmup"]):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(spec["steps"]):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        return {**result, "status": "OOM"}
    seconds = sorted(times)[len(times) // 2]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, whole process
    tokens_n = B * N * L_tok
    result.update(
        ms=seconds * 1e3,
        tokens_per_s=tokens_n / seconds,
        tflops=model_flops(config, B, N, L_tok, kind == "train") / seconds / 1e12,
        peak_gib=peak,
    )
    return result


def markdown(results: list[dict], device: str, args) -> str:
    lines = [
        f"device: {device}; preset {args.preset}; {args.dtype} autocast; median of {args.steps} steps after "
        f"{args.warmup} warm-up; msaformer checkpointing: {args.ckpt or 'off'}",
        "",
        "| case | impl | ms | tokens/s | model TFLOP/s | peak GiB | speed vs fair-esm |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_case: dict[str, dict[str, dict]] = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    for case, impls in by_case.items():
        ref = impls.get("fair_esm")
        for impl, r in impls.items():
            if r["status"] != "ok":
                lines.append(f"| {case} | {impl} | {r['status']} | | | | |")
                continue
            ratio = f"{ref['ms'] / r['ms']:.2f}x" if ref and ref["status"] == "ok" else "-"
            lines.append(
                f"| {case} | {impl} | {r['ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.3f} | "
                f"{r['peak_gib']:.2f} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: the issue's GPU cases, or small CPU cases)")
    p.add_argument("--impls", default=",".join(IMPLS), help="fair_esm,msaformer,msaformer_compile,msaformer_ckpt")
    p.add_argument("--preset", default="esm_msa1b")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="autocast dtype (default bf16 on cuda, fp32 on cpu)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--ckpt", type=int, default=0,
                   help="msaformer activation checkpointing of every N-th block in training cases (0 = off)")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help=f"msaformer inference token budget (default {DEFAULT_CHUNK_TOKENS}; 0 = never chunk)")
    p.add_argument("--esm-max-tokens", type=int, default=2**14, help="fair-esm max_tokens_per_msa for inference")
    p.add_argument("--compile", action="store_true", help="torch.compile each msaformer layer")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--json", dest="json_out", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args._worker))), flush=True)
        return
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    args.steps = args.steps or (10 if args.device == "cuda" else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.device == "cuda" else 1)
    cases = args.cases.split(",") if args.cases else (GPU_CASES if args.device == "cuda" else CPU_CASES)
    for case in cases:
        parse_case(case)
    device_name = "cpu"
    results = []
    for case in cases:
        for impl in args.impls.split(","):
            spec = {
                "case": case, "impl": impl, "device": args.device, "preset": args.preset, "dtype": args.dtype,
                "steps": args.steps, "warmup": args.warmup, "ckpt": args.ckpt, "compile": args.compile,
                "chunk_tokens": args.chunk_tokens, "esm_max_tokens": args.esm_max_tokens, "threads": args.threads,
            }  # fmt: skip
            proc = subprocess.run(
                [sys.executable, __file__, "--_worker", json.dumps(spec)], capture_output=True, text=True
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                status = "OOM" if "out of memory" in proc.stderr.lower() else f"failed: {tail[:120]}"
                result = {"case": case, "impl": impl, "status": status}
            else:
                result = json.loads(line[len("RESULT ") :])
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    if args.device == "cuda":
        import torch

        device_name = torch.cuda.get_device_name(0)
    table = markdown(results, device_name, args)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"device": device_name, "args": vars(args), "results": results}, fh, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table)


if __name__ == "__main__":
    main()
