"""Benchmarks of the promoter classifier.

    python tools/bench_promoter.py seeds --config configs/promoter/gue_prom_core.yaml --seeds 0 1 2
    python tools/bench_promoter.py compare --config configs/promoter/tiny.yaml \
        --variant learned model.positional=learned --variant rotary model.positional=rotary
    python tools/bench_promoter.py kmer --data ../shared/datasets/promoter/gue_prom_core_all --k 6
    python tools/bench_promoter.py throughput --checkpoint runs/x/model.pt --n 20000 --threads 2 \
        --precision fp32 bf16
    python tools/bench_promoter.py conv-layout --threads 2 --repeats 5
    python tools/bench_promoter.py table runs/promoter/gue_prom_core/seed-{0,1,2}
    python tools/bench_promoter.py ensemble runs/promoter/gue_prom_core/seed-{0,1,2} --size 3 \
        --data ../shared/datasets/promoter/gue_prom_core_all

``seeds`` trains one run per seed (out_dir/seed-N) and prints test MCC mean +- sd as a Markdown table;
``compare`` trains one run per named variant (a list of dotted overrides) and prints dev/test MCC;
``kmer`` fits k-mer counts + logistic regression (scikit-learn) on train, picks C on dev, scores test;
``throughput`` times ``predict_file`` on synthetic 70-nt sequences (FASTA in, CSV out, end to end);
``conv-layout`` times one convolution block's convolution (forward, and forward + backward) as ``nn.Conv1d`` of
the transposed tensor against ``conv_over_tokens`` (the model's channels-last 2-D convolution), alternating;
``table`` re-prints the seed table of finished runs; ``ensemble`` scores groups of finished runs averaged in
probability on dev and test.
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
              f"AUROC {res['test']['auroc']:.4f}  best epoch {res['best_epoch']}  weights {res['weights']}  "
              f"threshold {res['threshold']:.2f}  {res['train_seconds']:.0f} s", flush=True)
    print_seed_table([(seed, _reference_figures(res)) for seed, res in rows])


def _reference_figures(res) -> dict:
    """The run's figures plus, where the run has them, those of the raw (non-averaged) weights and of the kept
    weights at threshold 0.5 (each picked on dev like the run itself)."""
    out = {"best_epoch": res["best_epoch"], "weights": res.get("weights", "raw"),
           "threshold": res.get("threshold", 0.5), "train_seconds": res["train_seconds"], "dev": res["dev"],
           "test": res["test"]}
    raw = res.get("test_raw") if res.get("dev_raw") else None
    raw_dev = res.get("dev_raw")
    if res.get("weights") == "raw" or raw is None:  # the kept weights are the raw ones (or there is no EMA)
        raw_dev, raw = res.get("dev_t0.5", res["dev"]), res.get("test_t0.5", res["test"])
    out["raw"] = (raw_dev, raw)
    out["t05"] = (res.get("dev_t0.5", res["dev"]), res.get("test_t0.5", res["test"]))
    return out


def print_seed_table(rows) -> None:
    print("\n| seed | best epoch | weights | threshold | dev MCC | test MCC | test F1 | test acc | test AUROC | "
          "test MCC, raw weights, t=0.5 | test MCC, kept weights, t=0.5 | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed, r in rows:
        t = r["test"]
        print(f"| {seed} | {r['best_epoch']} | {r['weights']} | {r['threshold']:.2f} | {r['dev']['mcc']:.4f} | "
              f"{t['mcc']:.4f} | {t['f1']:.4f} | {t['accuracy']:.4f} | {t['auroc']:.4f} | "
              f"{r['raw'][1]['mcc']:.4f} | {r['t05'][1]['mcc']:.4f} | {r['train_seconds']:.0f} |")
    for name, get in (("test MCC", lambda r: r["test"]["mcc"]), ("raw weights, t=0.5", lambda r: r["raw"][1]["mcc"]),
                      ("kept weights, t=0.5", lambda r: r["t05"][1]["mcc"])):
        mccs = [get(r) for _, r in rows]
        sd = statistics.stdev(mccs) if len(mccs) > 1 else 0.0
        print(f"{name}: {statistics.mean(mccs):.4f} +- {sd:.4f} over {len(mccs)} seed(s)")


def cmd_table(args) -> None:
    """Re-prints the seed table from finished run folders (results.csv), without training."""
    import csv

    rows = []
    for run in args.runs:
        by_split = {r["split"]: r for r in csv.DictReader(open(Path(run) / "results.csv"))}
        res = {k: {m: float(v[m]) for m in ("mcc", "f1", "accuracy", "auroc")} for k, v in by_split.items()}
        main = by_split["test"]
        res.update(best_epoch=int(main["best_epoch"]), weights=main.get("weights") or "raw",
                   threshold=float(main.get("threshold") or 0.5), train_seconds=float(main["train_seconds"]))
        rows.append((int(main["seed"]), _reference_figures(res)))
    print_seed_table(rows)


def cmd_ensemble(args) -> None:
    """Ensembles of finished runs averaged in probability (``promoter evaluate -c a.pt -c b.pt``), scored on dev
    and test with the members' mean threshold; groups of ``--size`` consecutive runs, mean +- sd over groups."""
    from msaformer.infer.promoter import evaluate_file

    runs = [Path(r) for r in args.runs]
    if len(runs) % args.size:
        raise SystemExit(f"{len(runs)} runs do not split into groups of {args.size}")
    groups = [runs[i : i + args.size] for i in range(0, len(runs), args.size)]
    data = Path(args.data)
    print("| members | dev MCC | test MCC | test AUROC |")
    print("|---|---|---|---|")
    mccs = []
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            ckpts = [g / "model.pt" for g in group]
            dev = evaluate_file(data / "dev.csv", ckpts, Path(tmp) / "dev", threshold=args.threshold)
            test = evaluate_file(data / "test.csv", ckpts, Path(tmp) / "test", threshold=args.threshold)
            mccs.append(test["mcc"])
            print(f"| {' + '.join(g.name for g in group)} | {dev['mcc']:.4f} | {test['mcc']:.4f} | "
                  f"{test['auroc']:.4f} |", flush=True)
    sd = statistics.stdev(mccs) if len(mccs) > 1 else 0.0
    print(f"\nensembles of {args.size}: test MCC {statistics.mean(mccs):.4f} +- {sd:.4f} over {len(mccs)} group(s)")


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
    """End-to-end ``predict_file`` timings; with several ``--precision`` values they alternate repeat by repeat,
    so their ratio is measured side by side under the same machine load."""
    import torch

    from msaformer.infer.promoter import predict_file
    from msaformer.model.promoter import PromoterClassifier, save_promoter_model

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:  # untrained members of --config (as fast as trained ones)
            from msaformer.train.promoter import load_train_config

            cfg = load_train_config(args.config, ["data.train=x", "data.dev=x"])
            checkpoint = [tmp / f"model-{i}.pt" for i in range(cfg.ensemble)]
            for i, path in enumerate(checkpoint):
                torch.manual_seed(i)
                save_promoter_model(PromoterClassifier(cfg.model).eval(), path)
        fasta = tmp / "in.fa"
        letters = np.array(list("ACGT"))
        with open(fasta, "w") as fh:
            for i in range(args.n):
                fh.write(f">s{i}\n{''.join(letters[rng.integers(0, 4, args.length)])}\n")
        times = {p: [] for p in args.precision}
        cpu = {p: [] for p in args.precision}
        for precision in args.precision:  # warm-up passes
            predict_file(fasta, checkpoint, tmp / "warm.csv", batch_size=args.batch_size, precision=precision)
        for _ in range(args.repeats):
            for precision in args.precision:
                start, start_cpu = time.perf_counter(), time.process_time()
                predict_file(fasta, checkpoint, tmp / "out.csv", batch_size=args.batch_size, precision=precision)
                times[precision].append(time.perf_counter() - start)
                cpu[precision].append(time.process_time() - start_cpu)
        for precision in args.precision:
            best = min(times[precision])
            # On a shared machine wall time depends on the neighbours; CPU time (all threads) does much less.
            print(f"predict ({len(checkpoint)} file(s), {precision}): {args.n} x {args.length} nt, batch "
                  f"{args.batch_size}, {args.threads} thread(s): best {args.n / best:,.0f} seq/s, median "
                  f"{args.n / statistics.median(times[precision]):,.0f} seq/s wall; "
                  f"{args.n / min(cpu[precision]):,.0f} seq per CPU-second ({args.repeats} repeats)", flush=True)


def cmd_conv_layout(args) -> None:
    """Side-by-side timings of the two ways to convolve ``[B, T, D]`` along T (same numbers, different layout)."""
    import torch

    from msaformer.model.promoter import conv_over_tokens

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(args.dim, args.dim, args.kernel, padding=args.kernel // 2)
    ways = {"Conv1d(x.transpose(1, 2))": lambda x: conv(x.transpose(1, 2)).transpose(1, 2),
            "conv_over_tokens(x)": lambda x: conv_over_tokens(conv, x)}
    for batch, backward in ((256, False), (32, True)):  # predict's batch; training's batch with gradients
        x = torch.randn(batch, args.length + 1, args.dim, requires_grad=backward)
        times = {name: [] for name in ways}
        calls = 20 if backward else 10
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, fn in ways.items():
                start = time.perf_counter()
                with torch.set_grad_enabled(backward):
                    for _ in range(calls):
                        out = fn(x)
                        if backward:
                            out.sum().backward()
                times[name].append((time.perf_counter() - start) / calls)
        medians = {name: statistics.median(t[1:]) * 1e3 for name, t in times.items()}
        base = medians["Conv1d(x.transpose(1, 2))"]
        for name, ms in medians.items():
            print(f"batch {batch} x {args.length + 1} x {args.dim}, kernel {args.kernel}, "
                  f"{'forward + backward' if backward else 'forward'}, {args.threads} thread(s): {name} "
                  f"{ms:.2f} ms median ({base / ms:.2f}x)", flush=True)
    # The whole forward of --config's model (its ensemble, untrained) with each way, alternating.
    import msaformer.model.promoter as promoter_model
    from msaformer.data.promoter import CLS_IDX, NUCLEOTIDE_IDS
    from msaformer.train.promoter import load_train_config

    cfg = load_train_config(args.config, ["data.train=x", "data.dev=x"])
    members = []
    for i in range(cfg.ensemble):
        torch.manual_seed(i)
        members.append(promoter_model.PromoterClassifier(cfg.model).eval())
    model = promoter_model.PromoterEnsemble(members) if len(members) > 1 else members[0]
    acgt = torch.tensor([NUCLEOTIDE_IDS[c] for c in "ACGT"])
    tokens = acgt[torch.randint(0, 4, (24 * 256, args.length + 1))]
    tokens[:, 0] = CLS_IDX
    fast = promoter_model.conv_over_tokens
    ways = {"Conv1d": lambda conv, x: conv(x.transpose(1, 2)).transpose(1, 2), "conv_over_tokens": fast}
    try:
        for precision in ("fp32", "bf16"):
            rates = {name: [] for name in ways}
            for _ in range(args.repeats + 1):
                for name, fn in ways.items():
                    promoter_model.conv_over_tokens = fn
                    start = time.perf_counter()
                    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                        for batch in tokens.split(256):
                            model(batch)
                    rates[name].append(len(tokens) / (time.perf_counter() - start))
            medians = {name: statistics.median(r[1:]) for name, r in rates.items()}
            print(f"forward of {Path(args.config).name} ({len(members)} member(s)), {precision}, batch 256: "
                  + ", ".join(f"{name} {rate:,.0f} seq/s" for name, rate in medians.items())
                  + f" ({medians['conv_over_tokens'] / medians['Conv1d']:.2f}x)", flush=True)
    finally:
        promoter_model.conv_over_tokens = fast


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
    p = sub.add_parser("table")
    p.add_argument("runs", nargs="+", help="finished run folders (with results.csv)")
    p.set_defaults(fn=cmd_table)
    p = sub.add_parser("ensemble")
    p.add_argument("runs", nargs="+", help="finished run folders (with model.pt), grouped in order")
    p.add_argument("--data", required=True, help="folder with dev.csv and test.csv")
    p.add_argument("--size", type=int, default=3, help="members per ensemble")
    p.add_argument("--threshold", type=float, default=None, help="default: the members' mean threshold")
    p.set_defaults(fn=cmd_ensemble)
    p = sub.add_parser("kmer")
    p.add_argument("--data", required=True, help="folder with train.csv, dev.csv, test.csv")
    p.add_argument("--k", type=int, nargs="+", default=[6])
    p.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p.set_defaults(fn=cmd_kmer)
    p = sub.add_parser("conv-layout")
    p.add_argument("--dim", type=int, default=48)
    p.add_argument("--kernel", type=int, default=9)
    p.add_argument("--length", type=int, default=70)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--config", default=str(ROOT / "configs/promoter/gue_prom_core_notata.yaml"))
    p.set_defaults(fn=cmd_conv_layout)
    p = sub.add_parser("throughput")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="trained model.pt, repeatable for an ensemble (default: untrained model of --config)")
    p.add_argument("--config", default=str(ROOT / "configs/promoter/gue_prom_core.yaml"))
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--length", type=int, default=70)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.set_defaults(fn=cmd_throughput)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
