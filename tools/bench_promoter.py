"""Benchmarks of the promoter classifier.

    python tools/bench_promoter.py seeds --config configs/promoter/gue_prom_core.yaml --seeds 0 1 2
    python tools/bench_promoter.py compare --config configs/promoter/tiny.yaml \
        --variant learned model.positional=learned --variant rotary model.positional=rotary
    python tools/bench_promoter.py kmer --data ../shared/datasets/promoter/gue_prom_core_all --k 6
    python tools/bench_promoter.py throughput --checkpoint runs/x/model.pt --n 20000 --threads 2

``seeds`` trains one run per seed (out_dir/seed-N) and prints test MCC mean +- sd as a Markdown table;
``compare`` trains one run per named variant (a list of dotted overrides) and prints dev/test MCC;
``kmer`` fits k-mer counts + logistic regression (scikit-learn) on train, picks C on dev, scores test;
``throughput`` times ``predict_file`` on synthetic 70-nt sequences (FASTA in, CSV out, end to end).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cmd_seeds(args) -> None:
    from msaformer.train.promoter import config_summary, load_train_config, train_promoter

    rows = []
    for seed in args.seeds:
        overrides = [*args.set, f"seed={seed}"]
        base = load_train_config(args.config, overrides)
        overrides.append(f"out_dir={Path(base.out_dir) / f'seed-{seed}'}")
        cfg = load_train_config(args.config, overrides)
        print(f"# seed {seed}: {config_summary(cfg)}", file=sys.stderr, flush=True)
        res = train_promoter(cfg, run_name=f"seed-{seed}")
        rows.append((seed, res))
        print(f"seed {seed}: dev MCC {res['dev']['mcc']:.4f}  test MCC {res['test']['mcc']:.4f}  "
              f"AUROC {res['test']['auroc']:.4f}  best epoch {res['best_epoch']}  "
              f"{res['train_seconds']:.0f} s", flush=True)
    print("\n| seed | best epoch | dev MCC | test MCC | test F1 | test acc | test AUROC | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for seed, r in rows:
        t = r["test"]
        print(f"| {seed} | {r['best_epoch']} | {r['dev']['mcc']:.4f} | {t['mcc']:.4f} | {t['f1']:.4f} | "
              f"{t['accuracy']:.4f} | {t['auroc']:.4f} | {r['train_seconds']:.0f} |")
    mccs = [r["test"]["mcc"] for _, r in rows]
    sd = statistics.stdev(mccs) if len(mccs) > 1 else 0.0
    print(f"\ntest MCC {statistics.mean(mccs):.4f} +- {sd:.4f} over {len(mccs)} seed(s)")


def cmd_compare(args) -> None:
    from msaformer.train.promoter import config_summary, load_train_config, train_promoter

    results = []
    for name, *overrides in args.variant:
        base = load_train_config(args.config, [*args.set, *overrides])
        cfg = load_train_config(args.config, [*args.set, *overrides, f"out_dir={Path(base.out_dir) / name}"])
        print(f"# {name}: {config_summary(cfg)}", file=sys.stderr, flush=True)
        res = train_promoter(cfg, run_name=name)
        test = res["test"]["mcc"] if res["test"] else float("nan")
        results.append((name, " ".join(overrides), res["dev"]["mcc"], test, res["best_epoch"], res["train_seconds"]))
        print(f"{name}: dev MCC {res['dev']['mcc']:.4f} test MCC {test:.4f} ({res['train_seconds']:.0f} s)", flush=True)
    print("\n| variant | overrides | dev MCC | test MCC | best epoch | train s |")
    print("|---|---|---|---|---|---|")
    for name, ov, dev, test, epoch, secs in results:
        print(f"| {name} | `{ov}` | {dev:.4f} | {test:.4f} | {epoch} | {secs:.0f} |")


def _kmer_counts(sequences, k: int):
    from scipy.sparse import csr_matrix

    index = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    rows, cols = [], []
    for r, seq in enumerate(sequences):
        seq = seq.upper()
        for j in range(len(seq) - k + 1):
            col = index.get(seq[j : j + k])
            if col is not None:
                rows.append(r)
                cols.append(col)
    data = np.ones(len(rows), dtype=np.float32)
    return csr_matrix((data, (rows, cols)), shape=(len(sequences), len(index)))


def cmd_kmer(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import matthews_corrcoef

    from msaformer.data.promoter import read_promoters

    data = Path(args.data)
    splits = {s: read_promoters(data / f"{s}.csv", require_labels=True) for s in ("train", "dev", "test")}
    for k in args.k:
        x = {s: _kmer_counts(d.sequences, k) for s, d in splits.items()}
        best = None
        for c in args.c:
            clf = LogisticRegression(C=c, max_iter=2000).fit(x["train"], splits["train"].labels)
            dev = matthews_corrcoef(splits["dev"].labels, clf.predict(x["dev"]))
            if best is None or dev > best[0]:
                best = (dev, c, clf)
        dev, c, clf = best
        test = matthews_corrcoef(splits["test"].labels, clf.predict(x["test"]))
        print(f"| {data.name} | {k}-mer counts + logistic regression (C={c:g}, chosen on dev) | {dev:.4f} | {test:.4f} |",
              flush=True)


def cmd_throughput(args) -> None:
    import torch

    from msaformer.infer.promoter import predict_file
    from msaformer.model.promoter import PromoterClassifier, save_promoter_model

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from msaformer.train.promoter import load_train_config

            cfg = load_train_config(args.config, ["data.train=x", "data.dev=x"])
            checkpoint = tmp / "model.pt"
            save_promoter_model(PromoterClassifier(cfg.model).eval(), checkpoint)
        fasta = tmp / "in.fa"
        letters = np.array(list("ACGT"))
        with open(fasta, "w") as fh:
            for i in range(args.n):
                fh.write(f">s{i}\n{''.join(letters[rng.integers(0, 4, args.length)])}\n")
        predict_file(fasta, checkpoint, tmp / "warm.csv", batch_size=args.batch_size)  # warm-up pass
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            predict_file(fasta, checkpoint, tmp / "out.csv", batch_size=args.batch_size)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        best = min(times)
        # On a shared machine wall time depends on the neighbours; CPU time (all threads) does much less.
        print(f"predict: {args.n} x {args.length} nt, batch {args.batch_size}, {args.threads} thread(s): "
              f"best {args.n / best:,.0f} seq/s, median {args.n / statistics.median(times):,.0f} seq/s wall; "
              f"{args.n / min(cpu):,.0f} seq per CPU-second ({args.repeats} repeats)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("seeds")
    p.add_argument("--config", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], help="dotted override, repeatable")
    p.set_defaults(fn=cmd_seeds)
    p = sub.add_parser("compare")
    p.add_argument("--config", required=True)
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [OVERRIDE ...]")
    p.add_argument("--set", action="append", default=[])
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("kmer")
    p.add_argument("--data", required=True, help="folder with train.csv, dev.csv, test.csv")
    p.add_argument("--k", type=int, nargs="+", default=[6])
    p.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p.set_defaults(fn=cmd_kmer)
    p = sub.add_parser("throughput")
    p.add_argument("--checkpoint", default=None, help="trained model.pt (default: untrained model of --config)")
    p.add_argument("--config", default=str(ROOT / "configs/promoter/gue_prom_core.yaml"))
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--length", type=int, default=70)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(fn=cmd_throughput)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
