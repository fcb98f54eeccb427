"""Corpus-scale preprocess benchmark: throughput for 1 and 2 workers side by side, peak memory, loader speed,
index opening, and a projection to OpenProteinSet / UniClust30 sizes.

Corpora (generated under ``--work``, deterministic, kept between runs):

* ``small``: ``--small`` tiny A3M entries (4 rows x ~60 columns, a ``#`` line and ``>ss_pred`` each, like
  UniClust30's) in one HH-suite ffindex database (tools/make_databases.py);
* ``realistic``: loose A3M files with the shapes (rows x columns) of the real sample files of
  ``../shared/datasets/msa`` (HHblits / ColabFold style text from tools/make_synthetic_a3m.py), repeated up to
  ``--realistic-mb``;
* ``flat-50k`` / ``flat-200k``: the first 50,000 / 200,000 small entries, for memory against corpus size.

Every run is a fresh ``python`` process calling :func:`msaformer.data.preprocess.preprocess`; its peak RSS
(``ru_maxrss``) is the client's (with ``-w 1`` also the worker's, which runs in-process) and the largest child
process's is the largest Dask worker's. Runs of 1 and 2 workers alternate, ``--repeats`` times; medians.

    nice -n 10 python tools/bench_corpus.py --work /tmp/corpus-bench --out /tmp/corpus.md
    python tools/bench_corpus.py --small 20000 --realistic-mb 20 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
SHARED_MSA = ROOT.parent / "shared" / "datasets" / "msa"
sys.path.insert(0, str(TOOLS))

from make_databases import synthetic_entries, write_ffindex  # noqa: E402
from make_synthetic_a3m import make_synthetic  # noqa: E402

#: Fallback shapes (rows, columns) when ../shared is absent: those of the sample A3M files.
SAMPLE_SHAPES = [(1024, 145), (1631, 125), (17, 98), (5397, 286), (1024, 73), (4, 70), (1428, 191), (249, 384),
                 (53, 420), (5, 95), (3, 621)]  # fmt: skip

RUN = r"""
import json, resource, sys, time
from msaformer.data.preprocess import preprocess
a = json.loads(sys.argv[1])
start = time.perf_counter()
r = preprocess(a["inputs"], a["out"], workers=a["workers"], overwrite=True, on_error="skip")
wall = time.perf_counter() - start
print(json.dumps({"wall": wall, "records": r.records, "bytes": r.bytes_in, "tasks": r.tasks, "rejected": r.rejected,
                  "startup": r.startup_seconds,
                  "client_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "worker_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""

LOADER = r"""
import json, sys, time
from msaformer.data.dataset import MsaShardDataset, StreamBatchSampler, make_loader
from msaformer.data.sampling import SamplingOptions
a = json.loads(sys.argv[1])
ds = MsaShardDataset([a["shards"]], split="train", val_fraction=0.0, options=SamplingOptions(max_len=256, max_tokens=16384))
sampler = StreamBatchSampler(len(ds), micro_batch_size=4, seed=0, max_batches=a["batches"])
loader = make_loader(ds, sampler, num_workers=a["num_workers"])
n, start = 0, None
for i, batch in enumerate(loader):
    if i == 5:
        start, n = time.perf_counter(), 0  # after the workers started
    n += batch.tokens.shape[0]
print(json.dumps({"msas_per_s": n / (time.perf_counter() - start), "records": len(ds)}))
"""

OPEN_INDEX = r"""
import json, sys, time
start = time.perf_counter()
from msaformer.data.shards import ShardReader
r = ShardReader(sys.argv[1])
seconds = time.perf_counter() - start
import resource
print(json.dumps({"seconds": seconds, "records": len(r), "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def sample_shapes() -> list[tuple[int, int]]:
    expected = SHARED_MSA / "expected.tsv"
    if not expected.is_file():
        return SAMPLE_SHAPES
    rows = csv.DictReader(open(expected, newline=""), delimiter="\t")
    return [(int(r["n_seqs"]), int(r["query_len"])) for r in rows if r["status"] == "OK" and r["format"] == "a3m"]


def make_corpora(work: Path, n_small: int, realistic_mb: float) -> dict[str, Path]:
    """Writes the corpora (once; a marker file says a corpus is complete) and returns their input paths."""
    paths = {}

    def once(name: str, make) -> Path:
        folder = work / name
        if not (folder / ".complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            start = time.perf_counter()
            make(folder)
            (folder / ".complete").write_text("")
            print(f"made {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        return folder

    for name, n in (("small", n_small), ("flat-50k", 50_000), ("flat-200k", 200_000)):
        paths[name] = once(f"{name}-{n}", lambda f, n=n: write_ffindex(f / "uc_a3m", synthetic_entries(n, 4, 60, seed=0))) / "uc_a3m"

    def realistic(folder: Path) -> None:
        total, k = 0, 0
        shapes = sample_shapes()
        while total < realistic_mb * 1e6:
            rows, length = shapes[k % len(shapes)]
            data = make_synthetic(rows, length, seed=k)[0]
            (folder / f"m{k:05d}.a3m").write_bytes(data)
            total += len(data)
            k += 1

    paths["realistic"] = once(f"realistic-{realistic_mb:g}MB", realistic)
    return paths


def run_preprocess(inputs: Path, out: Path, workers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = json.dumps({"inputs": [str(inputs)], "out": str(out), "workers": workers})
    done = subprocess.run([sys.executable, "-c", RUN, args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"preprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_runs(inputs: Path, out: Path, repeats: int) -> dict[int, dict]:
    """Runs 1 and 2 workers alternately; returns the median figures per worker count."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(repeats):
        for workers in (1, 2):
            runs[workers].append(run_preprocess(inputs, out, workers))
            print(f"  {inputs.name} -w {workers}: {runs[workers][-1]['wall']:.1f} s", file=sys.stderr)
    return {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in runs.items()}


def synthetic_index(folder: Path, n_records: int, parts: int = 64) -> Path:
    """Writes a shard directory's index (``parts`` committed tasks, ``n_records`` rows with realistic names,
    sources and hashes) without the shards: enough to time how long ``ShardReader`` takes to open it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from msaformer.data.shard_format import index_schema, inputs_schema, shard_name, write_manifest, write_task_order

    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "index").mkdir(parents=True)
    (folder / "inputs").mkdir()
    write_manifest(folder, {"compression": "gzip", "max_seqs": None, "min_seqs": 1, "dedup": False,
                            "merge_per_chain": False, "written_by": "tools/bench_corpus.py (index only)"})  # fmt: skip
    rng = np.random.default_rng(0)
    per = n_records // parts
    tasks = []
    for p in range(parts):
        task = f"{p:016x}"
        tasks.append(task)
        record = np.arange(per) % 4096
        shard = [shard_name(task, k) for k in range(-(-per // 4096))]
        keys = rng.integers(0, 2**63, per, dtype=np.int64).astype(np.uint64)
        names = [f"UniRef100_A0A{p:03d}{i:07d}" for i in range(per)]
        table = pa.table({
            "shard": pa.array([shard[i // 4096] for i in range(per)]).dictionary_encode().cast(pa.string()),
            "record": record.astype(np.int32), "name": names,
            "source": [f"/data/uniclust30/uc_a3m::{n}" for n in names], "input": [f"uc_a3m::{n}" for n in names],
            "input_sha256": [""] * per, "n_seq": rng.integers(1, 5000, per).astype(np.int32),
            "n_res": rng.integers(30, 1000, per).astype(np.int32), "hash": [f"{k:016x}" + "0" * 48 for k in keys],
            "hash_key": keys, "aliases": pa.array([[]] * per, type=pa.list_(pa.string())),
        }, schema=index_schema())  # fmt: skip
        pq.write_table(table, folder / "index" / f"{task}.parquet", compression="zstd")
        pq.write_table(pa.table({c: [] for c in inputs_schema().names}, schema=inputs_schema()),
                       folder / "inputs" / f"{task}.parquet")
    write_task_order(folder, tasks)
    (folder / ".complete").write_text("")
    return folder


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def subprocess_json(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/msaformer-corpus-bench"))
    parser.add_argument("--small", type=int, default=1_000_000, help="entries of the small-entry ffindex corpus")
    parser.add_argument("--realistic-mb", type=float, default=400, help="size of the realistic corpus")
    parser.add_argument("--index-records", type=int, default=16_000_000, help="records of the index-open test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="small,realistic,memory,loader,index",
                        help="what to measure (comma-separated): small, realistic, memory, loader, index")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    corpora = make_corpora(args.work, args.small, args.realistic_mb)
    out = args.work / "shards"

    lines = [f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}; "
             f"{time.strftime('%Y-%m-%d')}; medians of {args.repeats} runs, 1 and 2 workers alternating.", "",
             "| corpus | input | workers | wall s | of which cluster start s | records/s | MB/s | MB/s after the start "
             "| tasks | client peak RSS MB | largest worker peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    results = {}
    for name in [p for p in ("small", "realistic") if p in parts]:
        results[name] = median_runs(corpora[name], out / name, args.repeats)
        size = sum(p.stat().st_size for p in corpora[name].parent.glob(f"{corpora[name].name}*")) if name == "small" else \
            sum(p.stat().st_size for p in corpora[name].glob("*.a3m"))
        for workers, r in results[name].items():
            worker_rss = "(in-process)" if workers == 1 else f"{r['worker_rss'] / 1e6:.0f}"
            after = r["bytes"] / 1e6 / max(r["wall"] - r["startup"], 1e-9)
            lines.append(f"| {name} | {r['records']:,.0f} records, {size / 1e6:,.0f} MB | {workers} | {r['wall']:.1f} | "
                         f"{r['startup']:.1f} | {r['records'] / r['wall']:,.0f} | {r['bytes'] / 1e6 / r['wall']:.1f} | "
                         f"{after:.1f} | {r['tasks']:.0f} | {r['client_rss'] / 1e6:.0f} | {worker_rss} |")
    flat = {}
    if "memory" in parts:
        lines += ["", "Memory against corpus size (ffindex of small entries, 2 workers, median peak RSS):", "",
                  "| records | client MB | largest worker MB |", "|---:|---:|---:|"]
    for name in ("flat-50k", "flat-200k") if "memory" in parts else ():
        runs = [run_preprocess(corpora[name], out / name, 2) for _ in range(args.repeats)]
        flat[name] = {k: statistics.median(r[k] for r in runs) for k in ("client_rss", "worker_rss", "records")}
        lines.append(f"| {flat[name]['records']:,.0f} | {flat[name]['client_rss'] / 1e6:.0f} | "
                     f"{flat[name]['worker_rss'] / 1e6:.0f} |")
    if flat:
        ratio_c = flat["flat-200k"]["client_rss"] / flat["flat-50k"]["client_rss"]
        ratio_w = flat["flat-200k"]["worker_rss"] / flat["flat-50k"]["worker_rss"]
        lines += ["", f"200k / 50k: client {ratio_c:.2f}x, worker {ratio_w:.2f}x (target: within 1.3x).", ""]

    if "loader" in parts:
        if not (out / "realistic").is_dir():
            run_preprocess(corpora["realistic"], out / "realistic", 2)
        loader = {nw: subprocess_json(LOADER, json.dumps({"shards": str(out / "realistic"), "batches": 200,
                                                          "num_workers": nw})) for nw in (0, 2)}  # fmt: skip
        lines += ["Training loader on the realistic shards (MsaShardDataset, 4 MSAs a batch, windows of 256 columns "
                  "x 16,384 tokens, random rows, masking; after the first 5 batches):", "",
                  "| DataLoader workers | MSAs/s |", "|---:|---:|"]
        lines += [f"| {nw} | {r['msas_per_s']:,.0f} |" for nw, r in loader.items()]
    if "index" in parts:
        index_dir = synthetic_index(args.work / f"index-{args.index_records}", args.index_records)
        opened = [subprocess_json(OPEN_INDEX, str(index_dir)) for _ in range(args.repeats)]
        seconds = statistics.median(o["seconds"] for o in opened)
        lines += ["", f"Opening a {opened[0]['records']:,}-record index (64 Parquet parts, names and sources "
                  f"included; `ShardReader(dir)` in a fresh process, imports included): {seconds:.1f} s, peak RSS "
                  f"{statistics.median(o['rss'] for o in opened) / 1e6:.0f} MB.", ""]
    if not {"small", "realistic"} <= parts:
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)
        return 0

    # projection: measured per-core throughput of the 2-worker runs, scaled to N nodes of 32 cores
    small, real = results["small"][2], results["realistic"][2]
    per_core_records = small["records"] / small["wall"] / 2
    per_core_mb = real["bytes"] / 1e6 / real["wall"] / 2
    mean_mb = real["bytes"] / 1e6 / real["records"]
    lines += ["Projection (not measured: the 2-worker figures above per core, assumed to scale linearly over 32-core "
              "nodes reading a shared filesystem fast enough):", "",
              "| corpus | records | assumed size | bound by | 1 node | 8 nodes | 64 nodes |", "|---|---:|---:|---|---:|---:|---:|"]
    for label, n, mb_each in (("OpenProteinSet", 16_000_000, mean_mb), ("UniClust30 (ESM-MSA-1b's 26M MSAs)", 26_000_000, mean_mb),
                              ("UniClust30, small entries", 26_000_000, None)):  # fmt: skip
        if mb_each is None:
            seconds_1 = n / (per_core_records * 32)
            size, bound = f"{n * small['bytes'] / small['records'] / 1e9:,.0f} GB", "records/s (small)"
        else:
            seconds_1 = n * mb_each / (per_core_mb * 32)
            size, bound = f"{n * mb_each / 1e6:,.1f} TB", "MB/s (realistic)"
        cells = [_duration(seconds_1 / nodes) for nodes in (1, 8, 64)]
        lines.append(f"| {label} | {n:,} | {size} | {bound} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
