#!/usr/bin/env python
"""Benchmark of contact prediction against structures: precision of mi, potts, a model and the model after
``contacts fit`` (leave-one-protein-out), on the shipped pairs (``../shared/datasets/structures/pairs.tsv``),
plus the Potts fit's time per protein.

    # the quickstart model (README), CPU, one thread per process; potts on the first 1,000 rows (the issue's
    # reference GREMLIN fit) and on every row
    nice python tools/bench_contacts.py --model runs/msa_tiny/model.pt --methods mi,potts,model,fit --rows 1000,0

    # a GPU: the Potts fits only
    python tools/bench_contacts.py --methods potts --rows 1000,0 --device cuda

Prints a markdown table (long-range P@L and P@L/5 per protein and their mean over proteins with a long-range
contact); ``--json`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STRUCTURES = ROOT.parent / "shared" / "datasets" / "structures"


def _row(name, method, rows, scores, seconds, setting=""):
    return {"protein": name, "method": method, "setting": setting, "rows": rows, "long_P@L": scores["long_P@L"],
            "long_P@L/5": scores["long_P@L/5"], "long_true": scores["long_true"], "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=STRUCTURES / "pairs.tsv")
    parser.add_argument("--model", type=Path, help="model file for the model and fit methods")
    parser.add_argument("--methods", default="mi,potts,model,fit")
    parser.add_argument("--rows", default="1000,0", help="rows of mi / potts, comma-separated (0 = all)")
    parser.add_argument("--model-rows", type=int, default=256, help="rows given to the model")
    parser.add_argument("--potts-iterations", type=int, default=100)
    parser.add_argument("--proteins", default="", help="only these pair names (comma-separated)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from msaformer.contacts import coevolution
    from msaformer.contacts.evaluate import load_msa, load_truth, read_pairs, score_map
    from msaformer.contacts.fit import fit_contact_head
    from msaformer.contacts.predictors import ContactPredictor, PredictOptions

    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    pairs = read_pairs(args.pairs)
    if args.proteins:
        keep = set(args.proteins.split(","))
        pairs = [p for p in pairs if p.name in keep]
    data = {p.name: load_msa(p) for p in pairs}
    truths = {p.name: load_truth(p, data[p.name].query) for p in pairs}
    results = []

    def report(row):
        results.append(row)
        print(f"{row['protein']:<18} {row['method']:<12} rows {row['rows']:>5}  long P@L {row['long_P@L']:.3f}  "
              f"P@L/5 {row['long_P@L/5']:.3f}  {row['seconds']:.1f} s", file=sys.stderr, flush=True)

    for pair in pairs:
        msa, truth = data[pair.name], truths[pair.name]
        done_depths = set()
        for rows in [int(r) for r in args.rows.split(",")]:
            tokens = msa.tokens[:rows] if rows else msa.tokens
            if tokens.shape[0] in done_depths:  # a shallow MSA: its first 1,000 rows are all its rows; counted
                for row in [r for r in results if r["protein"] == pair.name and r["rows"] == tokens.shape[0]]:
                    results.append({**row, "setting": "all rows" if not rows else f"first {rows}"})
                continue
            done_depths.add(tokens.shape[0])
            for method in ("mi", "potts"):
                if method not in methods:
                    continue
                start = time.perf_counter()
                if method == "mi":
                    scores = coevolution.mi_contacts(tokens, device=args.device)
                else:
                    options = coevolution.PottsOptions(iterations=args.potts_iterations)
                    scores = coevolution.potts_contacts(tokens, options, device=args.device)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                setting = f"first {rows}" if rows else "all rows"
                report(_row(pair.name, method, tokens.shape[0], score_map(scores, truth, msa.query), seconds,
                            setting))
        if "model" in methods:
            predictor = ContactPredictor(PredictOptions(max_seqs=args.model_rows, device=args.device), args.model)
            start = time.perf_counter()
            used = predictor.rows(msa)
            scores = predictor.predict_rows(used)
            report(_row(pair.name, "model", used.depth, score_map(scores, truth, msa.query),
                        time.perf_counter() - start))
    if "fit" in methods:  # leave one protein out: fit on the others, score the one left out
        for held in pairs:
            others = [p for p in pairs if p is not held]
            start = time.perf_counter()
            fit = fit_contact_head(others, args.model, None, holdout=[held],
                                   options=PredictOptions(max_seqs=args.model_rows, device=args.device))
            row = fit.holdout[0]
            report({**_row(held.name, "model+fit", row["rows"], row, time.perf_counter() - start),
                    "nonzero_weights": fit.nonzero, "train_long_P@L": fit.train_mean["long_P@L"]})
            print(f"  fit without {held.name}: {fit.nonzero} of {fit.weight.size} weights non-zero, "
                  f"training long P@L {fit.train_mean['long_P@L']:.3f}", file=sys.stderr, flush=True)

    print("| protein | method | rows | long true | long P@L | long P@L/5 | seconds |")
    print("|---|---|---|---|---|---|---|")
    shown = set()
    for row in results:
        if (row["protein"], row["method"], row["rows"]) in shown:
            continue
        shown.add((row["protein"], row["method"], row["rows"]))
        fmt = lambda v: "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"  # noqa: E731
        print(f"| {row['protein']} | {row['method']} | {row['rows']} | {row['long_true']} | {fmt(row['long_P@L'])} "
              f"| {fmt(row['long_P@L/5'])} | {row['seconds']:.1f} |")
    groups: dict[tuple[str, int | str], list[dict]] = {}
    for row in results:
        key = (row["method"], row["setting"])
        groups.setdefault(key, []).append(row)
    for (method, rows), group in groups.items():  # rows: the setting (first 1000 / all rows)
        usable = [r for r in group if r["long_true"] > 0]
        mean = [sum(r[m] for r in usable) / max(len(usable), 1) for m in ("long_P@L", "long_P@L/5")]
        print(f"| **mean** ({len(usable)} proteins) | {method} | {rows or 'as above'} | | {mean[0]:.3f} | "
              f"{mean[1]:.3f} | {sum(r['seconds'] for r in group):.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
