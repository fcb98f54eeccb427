"""Benchmark the whole ``msaformer preprocess`` (read, hash, parse, compress, write shards) in MB/s.

Three workloads: the sample alignments in ``datasets/msa`` (21 files, 5 MB, mixed formats), one large
synthetic A3M (``tools/make_synthetic_a3m.py``, default 140,000 rows x 640 columns, ~108 MB), and the same
kind of alignments split over many files (the usual case: one alignment per protein). Each is run with
1 and 2 workers and both compressions; the best of ``--repeats`` runs is kept. Besides wall-clock MB/s the
table gives MB per CPU-second (this process plus its workers), which a shared, noisy machine distorts less.

    nice -n 10 python tools/bench_preprocess.py --out bench.md
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


def run_once(inputs: list[Path], workers: int, compression: str, scratch: Path) -> dict:
    from msaformer.data.preprocess import preprocess

    out = scratch / "shards"
    shutil.rmtree(out, ignore_errors=True)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    result = preprocess(inputs, out, workers=workers, compression=compression, on_error="skip")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {"wall": wall, "cpu": cpu, "mb": result.bytes_in / 1e6, "out_mb": result.bytes_out / 1e6,
            "records": result.records, "rows": result.rows, "rejected": len(result.rejected)}  # fmt: skip


def bench(label: str, inputs: list[Path], scratch: Path, repeats: int, configs) -> list[dict]:
    rows = []
    for workers, compression in configs:
        runs = [run_once(inputs, workers, compression, scratch) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["wall"])
        best.update(workload=label, workers=workers, compression=compression, files=len(inputs),
                    cpu=min(r["cpu"] for r in runs))  # fmt: skip
        rows.append(best)
        print(
            f"{label:<28} w={workers} {compression:<4} {best['mb']:8.1f} MB  {best['wall']:7.2f} s  "
            f"{best['mb'] / best['wall']:7.1f} MB/s  {best['mb'] / best['cpu']:6.1f} MB/cpu-s  "
            f"-> {best['out_mb']:.1f} MB",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, default=Path(tempfile.gettempdir()) / "msaformer-synthetic.a3m",
                        help="large synthetic A3M (made with tools/make_synthetic_a3m.py when missing)")  # fmt: skip
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--length", type=int, default=640)
    parser.add_argument("--many", type=int, default=48, help="number of files of the many-files workload")
    parser.add_argument("--many-rows", type=int, default=2_000, help="rows per file of the many-files workload")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="sample files and many-files workloads only")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="msaformer-bench-"))
    configs = [(1, "gzip"), (2, "gzip"), (1, "none"), (2, "none")]
    results, reads = [], []
    try:
        samples = sorted(p for p in (ROOT / "datasets" / "msa").rglob("*") if p.is_file() and p.suffix not in (".md", ".tsv"))
        results += bench("datasets/msa (21 files)", samples, scratch, args.repeats, configs)
        many = synthetic_files(Path(tempfile.gettempdir()) / "msaformer-synthetic-many", args.many, args.many_rows, args.length)
        results += bench(f"synthetic, {args.many} files", many, scratch, args.repeats, configs)
        reads = [bench_reads(many, scratch, c) for c in ("gzip", "none")]
        if not args.skip_large:
            if not args.synthetic.exists():
                from make_synthetic_a3m import main as make

                make([str(args.synthetic), "--rows", str(args.rows), "--length", str(args.length)])
            results += bench("synthetic, 1 large file", [args.synthetic], scratch, max(1, args.repeats - 1),
                             [(1, "gzip"), (1, "none")])  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    lines = [
        "| workload | files | MB in | workers | compression | wall s | MB/s | MB per CPU-s | MB out | records | rows |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['workload']} | {r['files']} | {r['mb']:.1f} | {r['workers']} | {r['compression']} | {r['wall']:.2f} | "
            f"{r['mb'] / r['wall']:.1f} | {r['mb'] / r['cpu']:.1f} | {r['out_mb']:.1f} | {r['records']} | {r['rows']} |"
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
