"""Benchmark the whole ``msaformer preprocess`` (read, hash, parse, compress, write shards) in MB/s.

Four workloads: the sample alignments in ``../shared/datasets/msa`` (21 files, 5 MB, mixed formats), the same kind
of synthetic alignments split over many files (the usual case: one alignment per protein), many tiny
alignments (10 x 50) in one NUL-separated file (what chunk padding would blow up on disk), and one large
synthetic A3M (``tools/make_synthetic_a3m.py``, default 140,000 rows x 640 columns, ~108 MB). Each is run
with the ``--workers`` counts, ``none`` and ``gzip`` with every ``--deflate`` encoder (side by side, in one
run); the best of ``--repeats`` runs is kept. Besides wall-clock MB/s the table gives MB per CPU-second
(this process plus its workers), which a shared, noisy machine distorts less, and the 1-minute load
average when each configuration finished.

    nice -n 10 python tools/bench_preprocess.py --workers 2 --deflate zlib,isal --out bench.md
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_once(inputs: list[Path], workers: int, compression: str, scratch: Path, deflate: str = "auto") -> dict:
    from msaformer.data.preprocess import preprocess
    from msaformer.data.chunks import use_deflate

    deflate = deflate if compression == "gzip" else "auto"
    os.environ["MSAFORMER_DEFLATE"] = deflate  # forked workers inherit the choice; spawned ones read this
    use_deflate(deflate)

    out = scratch / "shards"
    shutil.rmtree(out, ignore_errors=True)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    result = preprocess(inputs, out, workers=workers, compression=compression, on_error="skip")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {"wall": wall, "cpu": cpu, "mb": result.bytes_in / 1e6, "out_mb": result.bytes_out / 1e6,
            "records": result.records, "rows": result.rows, "rejected": result.rejected}  # fmt: skip


def bench(label: str, inputs: list[Path], scratch: Path, repeats: int, configs) -> list[dict]:
    rows = []
    for workers, compression, deflate in configs:
        runs = [run_once(inputs, workers, compression, scratch, deflate) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["wall"])
        best.update(workload=label, workers=workers, compression=compression, files=len(inputs),
                    deflate=deflate if compression == "gzip" else "-", cpu=min(r["cpu"] for r in runs),
                    load=os.getloadavg()[0])  # fmt: skip
        rows.append(best)
        print(
            f"{label:<28} w={workers} {compression:<4} {best['deflate']:<4} {best['mb']:8.1f} MB  {best['wall']:7.2f} s  "
            f"{best['mb'] / best['wall']:7.1f} MB/s  {best['mb'] / best['cpu']:6.1f} MB/cpu-s  "
            f"-> {best['out_mb']:.1f} MB  load {best['load']:.1f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def bench_reads(inputs: list[Path], scratch: Path, compression: str, max_rows: int = 128, n: int = 2000) -> dict:
    """Random ``ShardReader.read(i, max_rows)`` calls per second (what a training DataLoader does)."""
    import numpy as np

    from msaformer.data.preprocess import preprocess
    from msaformer.data.shards import ShardReader

    out = scratch / "shards"
    shutil.rmtree(out, ignore_errors=True)
    preprocess(inputs, out, compression=compression, shard_size=16)
    reader = ShardReader(out)
    order = np.random.default_rng(0).integers(0, len(reader), n)
    reader.read(0, max_rows=max_rows)
    t0 = time.perf_counter()
    cells = sum(reader.read(int(i), max_rows=max_rows, names=False).tokens.size for i in order)
    wall = time.perf_counter() - t0
    row = {"compression": compression, "reads_per_s": n / wall, "mb_per_s": cells / 1e6 / wall, "max_rows": max_rows}
    print(f"random reads {compression:<4} max_rows={max_rows}: {row['reads_per_s']:.0f} reads/s, "
          f"{row['mb_per_s']:.0f} MB/s of tokens", file=sys.stderr, flush=True)  # fmt: skip
    return row


def synthetic_files(directory: Path, n_files: int, rows: int, length: int) -> list[Path]:
    from make_synthetic_a3m import make_synthetic

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        path = directory / f"protein_{i:04d}.a3m"
        if not path.exists():
            path.write_bytes(make_synthetic(rows, length, seed=1000 + i)[0])
        paths.append(path)
    return paths


def tiny_file(path: Path, n: int, rows: int = 10, length: int = 50) -> Path:
    """One A3M of ``n`` tiny alignments separated by NUL bytes (as MMseqs2 / ColabFold write them)."""
    from make_synthetic_a3m import make_synthetic

    if not path.exists():
        path.write_bytes(b"\x00".join(make_synthetic(rows, length, seed=i)[0] for i in range(n)))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, default=Path(tempfile.gettempdir()) / "msaformer-synthetic.a3m",
                        help="large synthetic A3M (made with tools/make_synthetic_a3m.py when missing)")  # fmt: skip
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--length", type=int, default=640)
    parser.add_argument("--many", type=int, default=48, help="number of files of the many-files workload")
    parser.add_argument("--many-rows", type=int, default=2_000, help="rows per file of the many-files workload")
    parser.add_argument("--tiny", type=int, default=4000, help="alignments (10 x 50) of the tiny workload")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--deflate", default="zlib,isal", help="comma-separated gzip encoders (zlib, isal)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="sample files and many-files workloads only")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="msaformer-bench-"))
    workers = [int(w) for w in args.workers.split(",")]
    deflates = [d.strip() for d in args.deflate.split(",")]
    configs = [(w, "gzip", d) for w in workers for d in deflates] + [(w, "none", "-") for w in workers]
    results, reads = [], []
    try:
        samples = sorted(p for p in (ROOT.parent / "shared" / "datasets" / "msa").rglob("*") if p.is_file() and p.suffix not in (".md", ".tsv"))
        results += bench("../shared/datasets/msa (21 files)", samples, scratch, args.repeats, configs)
        many = synthetic_files(Path(tempfile.gettempdir()) / "msaformer-synthetic-many", args.many, args.many_rows, args.length)
        results += bench(f"synthetic, {args.many} files", many, scratch, args.repeats, configs)
        reads = [bench_reads(many, scratch, c) for c in ("gzip", "none")]
        tiny = tiny_file(Path(tempfile.gettempdir()) / f"msaformer-synthetic-tiny-{args.tiny}.a3m", args.tiny)
        results += bench(f"{args.tiny} tiny (10 x 50), 1 file", [tiny], scratch, args.repeats,
                         [(1, "gzip", d) for d in deflates] + [(1, "none", "-")])  # fmt: skip
        if not args.skip_large:
            if not args.synthetic.exists():
                from make_synthetic_a3m import main as make

                make([str(args.synthetic), "--rows", str(args.rows), "--length", str(args.length)])
            results += bench("synthetic, 1 large file", [args.synthetic], scratch, max(1, args.repeats - 1),
                             [(1, "gzip", d) for d in deflates] + [(1, "none", "-")])  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    lines = [
        "| workload | files | MB in | workers | compression | deflate | wall s | MB/s | MB per CPU-s | MB out | records | rows | load |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['workload']} | {r['files']} | {r['mb']:.1f} | {r['workers']} | {r['compression']} | {r['deflate']} | "
            f"{r['wall']:.2f} | {r['mb'] / r['wall']:.1f} | {r['mb'] / r['cpu']:.1f} | {r['out_mb']:.1f} | {r['records']} | "
            f"{r['rows']} | {r['load']:.1f} |"
        )
    lines += ["", "| random `ShardReader.read(i, max_rows)` | max_rows | reads/s | MB/s of tokens |", "|---|---:|---:|---:|"]
    for r in reads:
        lines.append(f"| {r['compression']} | {r['max_rows']} | {r['reads_per_s']:.0f} | {r['mb_per_s']:.0f} |")
    table = "\n".join(lines)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table += f"\n\n(best of {args.repeats}; load average at the end {load:.1f} on {os.cpu_count()} CPUs)\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
