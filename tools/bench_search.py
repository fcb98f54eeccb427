#!/usr/bin/env python
"""``msaformer search`` (pyhmmer's jackhmmer) beside HMMER's own ``jackhmmer`` program, same inputs and settings.

100 queries (every 21st protein of the sample proteome pyhmmer ships, see ``msaformer.infer.search.sample_database``)
are searched against that proteome (2,100 proteins) by both, with ``-N 3 -E 10 --incE 0.001`` and 2 threads;
prints queries/s (medians of repeats) and how far the included hit lists agree.

    apt-get install hmmer            # Debian's package: /usr/bin/jackhmmer
    nice python tools/bench_search.py --queries 100 --cpus 2 --repeats 3

``msaformer search`` time: the library call (database read, searches, A3M and summary writing), without the
interpreter's start. ``jackhmmer`` time: the whole program (``--noali -o /dev/null --tblout``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def jackhmmer_hits(tblout: Path, inc_e: float) -> dict[str, set[str]]:
    """Returns ``{query: included targets}`` of a jackhmmer ``--tblout`` (sequence E-value <= inc_e)."""
    hits: dict[str, set[str]] = {}
    for line in tblout.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        target, query, evalue = fields[0], fields[2], float(fields[4])
        hits.setdefault(query, set())
        if evalue <= inc_e:
            hits[query].add(target)
    return hits


def main(argv=None) -> int:
    from msaformer.infer.search import SearchOptions, read_fasta, sample_database, search

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jackhmmer", default=shutil.which("jackhmmer") or "")
    args = parser.parse_args(argv)
    db = sample_database()
    records = read_fasta(db)
    step = max(1, len(records) // args.queries)
    chosen = records[::step][: args.queries]
    opts = SearchOptions(iterations=args.iterations, cpus=args.cpus)
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        tmp = Path(tmp)
        queries = tmp / "queries.fasta"
        queries.write_text("".join(f">{ident}\n{seq}\n" for ident, _, seq in chosen))
        ours, theirs, summary = [], [], None
        version = ""
        if args.jackhmmer:
            version = subprocess.run([args.jackhmmer, "-h"], capture_output=True, text=True).stdout.splitlines()[1]
        for r in range(args.repeats):
            start = time.perf_counter()
            summary = search(queries, db, tmp / f"msas{r}", opts)
            ours.append(time.perf_counter() - start)
            if args.jackhmmer:
                cmd = [args.jackhmmer, "--cpu", str(args.cpus), "-N", str(args.iterations), "-E", str(opts.e_value),
                       "--incE", str(opts.inc_e_value), "--noali", "-o", "/dev/null", "--tblout", str(tmp / "t.txt"),
                       str(queries), str(db)]  # fmt: skip
                start = time.perf_counter()
                subprocess.run(cmd, check=True)
                theirs.append(time.perf_counter() - start)
        n = len(chosen)
        print(f"{n} queries against {len(records)} proteins ({db.name}), -N {args.iterations} -E {opts.e_value} "
              f"--incE {opts.inc_e_value}, {args.cpus} threads; medians of {args.repeats}\n")
        print("| program | seconds | queries/s |")
        print("|---|---|---|")
        import pyhmmer

        t = statistics.median(ours)
        print(f"| msaformer search (pyhmmer {pyhmmer.__version__}) | {t:.2f} | {n / t:.2f} |")
        if not args.jackhmmer:
            print("| jackhmmer | not installed (apt-get install hmmer) | |")
            return 0
        t = statistics.median(theirs)
        print(f"| jackhmmer ({version.strip('# ').strip()}) | {t:.2f} | {n / t:.2f} |")
        reference = jackhmmer_hits(tmp / "t.txt", opts.inc_e_value)
        same = jaccard = 0.0
        ours_total = theirs_total = both = 0
        for result in summary.results:
            a, b = set(result.included), reference.get(result.query, set())
            same += a == b
            jaccard += len(a & b) / len(a | b) if a | b else 1.0
            ours_total, theirs_total, both = ours_total + len(a), theirs_total + len(b), both + len(a & b)
        print(f"\nIncluded hits: msaformer {ours_total}, jackhmmer {theirs_total}, in both {both}; identical hit "
              f"lists for {int(same)} of {n} queries; mean Jaccard {jaccard / n:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
