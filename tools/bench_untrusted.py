"""Peak memory and time of reading hostile and damaged alignment files (the reproducers of the untrusted-inputs
issue), each case in a fresh process, median of repeats; prints a markdown table.

    python tools/bench_untrusted.py                 # every case, 3 repeats
    python tools/bench_untrusted.py --cases one_line,late_bad_block --repeats 5

Cases (files are made in a temporary folder; nothing is downloaded):
  nul_gz          48 KB .a3m.gz of NUL bytes (decompresses to 48 MB)
  tar_bomb        ~200 KB .tar.gz whose member decompresses to 200 MB
  nul_dense       10 MB of tiny NUL-separated alignments (">q\\nMKV\\n\\0" repeated); with ":preprocess",
                  msaformer preprocess of it (one process), which reads such files group by group
  newline_dense   one alignment of 2.5 M one-residue rows (10 MB)
  blank_lines     50 MB of newlines inside one alignment
  one_line        one 50 MB sequence line
  late_bad_block  10,000 NUL-separated alignments (10 MB), the last one bad
Peak RSS is the child's VmHWM (its peak resident set), also less its value after the imports. Medians.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
def hwm_kib():  # this process's peak resident set (VmHWM; ru_maxrss would include the parent's before exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from msaformer.allocator import keep_freed_memory
keep_freed_memory()
from msaformer.data.parsers import read_alignments
from msaformer.data.preprocess import preprocess
from msaformer.errors import MsaformerError
base = hwm_kib()
t = time.perf_counter()
try:
    if sys.argv[2] == "preprocess":
        result = preprocess([sys.argv[1]], sys.argv[1] + ".shards", shard_size=4096)
        outcome = f"preprocess: {result.records} records"
    else:
        msas = read_alignments(sys.argv[1]); outcome = f"read {len(msas)} MSA(s)"
except MsaformerError as exc:
    outcome = "refused: " + str(exc).split(": ", 1)[-1][:70]
seconds = time.perf_counter() - t
print(json.dumps({"peak_kib": hwm_kib(), "base_kib": base, "seconds": seconds, "outcome": outcome}))
"""

def make(case: str, folder: Path) -> Path:
    if case == "nul_gz":
        path = folder / "nul.a3m.gz"
        path.write_bytes(gzip.compress(b"\x00" * (48 << 20), 9))
    elif case == "tar_bomb":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b">q\nMKV\n" + b"\x00" * (200 << 20)
            info = tarfile.TarInfo("x.a3m")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        path = folder / "bomb.tar.gz"
        path.write_bytes(gzip.compress(buf.getvalue(), 9))
    elif case == "nul_dense":
        path = folder / "dense.a3m"
        path.write_bytes(b">q\nMKV\n\x00" * ((10 << 20) // 8))
    elif case == "newline_dense":
        path = folder / "rows.a3m"
        path.write_bytes(b">q\nM\n" + b">\nM\n" * ((10 << 20) // 4))
    elif case == "blank_lines":
        path = folder / "blank.a3m"
        path.write_bytes(b">q\nMKV\n" + b"\n" * (50 << 20) + b">r\nMKV\n")
    elif case == "one_line":
        path = folder / "line.a3m"
        path.write_bytes(b">q\n" + b"M" * (50 << 20) + b"\n")
    elif case == "late_bad_block":
        block = b">q\n" + b"MKVLA" * 100 + b"\n" + (b">r\n" + b"MKVLA" * 100 + b"\n") * 1
        blocks = [block] * 9_999 + [b">q\nMKV\n>r\nMK\n"]  # the last one: rows of unequal length
        path = folder / "late.a3m"
        path.write_bytes(b"\x00".join(blocks))
    else:
        raise SystemExit(f"unknown case {case}")
    return path


CASES = ("nul_gz", "tar_bomb", "nul_dense", "nul_dense:preprocess", "newline_dense", "blank_lines", "one_line",
         "late_bad_block")


def run(path: Path, mode: str) -> dict:
    import shutil

    shutil.rmtree(str(path) + ".shards", ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f} -->")
    print("| case | file bytes | outcome | peak RSS (MB) | of which over the import (MB) | seconds |")
    print("|---|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            name, _, mode = case.partition(":")
            path = make(name, Path(tmp))
            results = [run(path, mode or "read") for _ in range(args.repeats)]
            peak = statistics.median(r["peak_kib"] / 1024 for r in results)
            over = statistics.median((r["peak_kib"] - r["base_kib"]) / 1024 for r in results)
            seconds = statistics.median(r["seconds"] for r in results)
            print(f"| {case} | {path.stat().st_size:,} | {results[0]['outcome']} | {peak:,.0f} | {over:,.0f} | {seconds:.2f} |",
                  flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
