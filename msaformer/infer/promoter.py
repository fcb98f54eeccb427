"""Promoter inference: batched scoring with sliding windows, evaluation, and attention-rollout explanations.

Sequences longer than the model window (``config.max_length`` nucleotides) are cut into windows starting
every ``stride`` nucleotides, the last one aligned to the sequence end so every nucleotide is covered; the
sequence's probability is the max (default: "is there a promoter anywhere?") or the mean of its windows.

Every output (prediction CSVs, the explanation folder, the evaluation folder) is written under a temporary
name and put in place only when the command succeeded: a failed or interrupted run leaves a previous output of
the same name as it was.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from msaformer.data.promoter import collate, encode, length_bucketed_batches
from msaformer.errors import MsaformerError
from msaformer.files import OutputSet, atomic_dir, csv_writer, write_csv
from msaformer.model.promoter import promoter_probabilities
from msaformer.plotting import pyplot, save_figure
from msaformer.progress import Counter, ProgressCallback

AGGREGATES = ("max", "mean")


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Returns the 0-based starts of windows covering ``length`` nt; the last window ends at the end."""
    if length <= window:
        return [0]
    if stride < 1:
        raise MsaformerError(f"stride must be >= 1, got {stride}")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def predict_records(
    model,
    records: Iterable[tuple[str, str]],
    *,
    stride: int | None = None,
    aggregate: str = "max",
    threshold: float = 0.5,
    batch_size: int = 256,
    chunk_size: int = 16384,
    source: str = "",
    on_progress=None,
    precision: str = "fp32",
) -> Iterator[tuple[dict, list[tuple[int, float]]]]:
    """Yields ``(row, windows)`` per record, in input order, streaming over chunks of ``chunk_size`` records.

    ``row`` = ``{"id", "length", "n_windows", "probability", "label"}``; ``windows`` = ``[(start, p), ...]``
    (0-based starts). ``stride`` defaults to half the window; ``precision`` as in
    :func:`~msaformer.model.promoter.promoter_probabilities` ("fp32" or "bf16").
    """
    if aggregate not in AGGREGATES:
        raise MsaformerError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    window = model.config.max_length
    stride = stride or max(1, window // 2)
    chunk: list[tuple[str, str]] = []

    def flush(chunk):
        tokens, owners, starts = [], [], []
        encoded = [encode(seq, record=name, source=source) for name, seq in chunk]
        for k, ids in enumerate(encoded):
            for s in window_starts(len(ids), window, stride):
                tokens.append(ids[s : s + window])
                owners.append(k)
                starts.append(s)
        probs = promoter_probabilities(model, tokens, batch_size=batch_size, precision=precision)
        bounds = np.searchsorted(np.asarray(owners), np.arange(len(chunk) + 1))
        for k, (name, _) in enumerate(chunk):
            p = probs[bounds[k] : bounds[k + 1]]
            value = float(p.max() if aggregate == "max" else p.mean())
            row = {"id": name, "length": len(encoded[k]), "n_windows": len(p), "probability": value,
                   "label": int(value >= threshold)}
            yield row, list(zip(starts[bounds[k] : bounds[k + 1]], p.tolist()))
        if on_progress is not None:
            on_progress(len(chunk))

    for record in records:
        chunk.append(record)
        if len(chunk) >= chunk_size:
            yield from flush(chunk)
            chunk = []
    if chunk:
        yield from flush(chunk)


def predict_file(
    input_path: str | Path,
    checkpoint: str | Path | list,
    out: str | Path,
    *,
    stride: int | None = None,
    aggregate: str = "max",
    threshold: float | None = None,
    batch_size: int = 256,
    windows_out: str | Path | None = None,
    progress: ProgressCallback | None = None,
    precision: str = "fp32",
) -> int:
    """Writes ``id,length,n_windows,probability,label`` per input record to ``out``; returns the count.

    ``threshold`` defaults to the one stored in the checkpoint (0.5; with several checkpoints, an ensemble
    averaged in probability, the mean of theirs). ``windows_out`` also writes one row per window
    (``id,window,start,end,probability``, 1-based inclusive coordinates). ``precision="bf16"``: bfloat16
    autocast (faster on CPUs with AMX / AVX512-BF16; probabilities move by ~5e-4 on average).
    """
    from msaformer.data.promoter import iter_promoter_records
    from msaformer.model.promoter import load_promoter_models

    model, meta = load_promoter_models(checkpoint)
    threshold = float(meta.get("threshold", 0.5)) if threshold is None else threshold
    window = model.config.max_length
    counter = Counter("predict", "sequences", progress)
    count = 0
    with OutputSet() as outputs:
        out_tmp = outputs.file(out, make_parents=True)
        windows_tmp = outputs.file(windows_out, make_parents=True) if windows_out else None
        with open(out_tmp, "w", newline="", encoding="utf-8") as fh, \
                (open(windows_tmp, "w", newline="", encoding="utf-8") if windows_tmp else contextlib.nullcontext()) as wfh:
            writer = csv_writer(fh)
            writer.writerow(["id", "length", "n_windows", "probability", "label"])
            wwriter = csv_writer(wfh) if windows_tmp else None
            if wwriter:
                wwriter.writerow(["id", "window", "start", "end", "probability"])
            records = iter_promoter_records(input_path)
            for row, wins in predict_records(model, records, stride=stride, aggregate=aggregate, threshold=threshold,
                                             batch_size=batch_size, source=str(input_path), on_progress=counter.advance,
                                             precision=precision):
                writer.writerow([row["id"], row["length"], row["n_windows"], f"{row['probability']:.6f}", row["label"]])
                if wwriter:
                    for w, (s, p) in enumerate(wins):
                        wwriter.writerow([row["id"], w + 1, s + 1, min(s + window, row["length"]), f"{p:.6f}"])
                count += 1
        if count == 0:
            raise MsaformerError(f"{input_path}: no sequences found")
    return count


def evaluate_file(
    input_path: str | Path,
    checkpoint: str | Path | list,
    out_dir: str | Path,
    *,
    labels: str | Path | None = None,
    threshold: float | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Scores a labelled file; writes ``metrics.csv``, ``confusion_matrix.png`` and ``roc.png`` into ``out_dir``
    (replaced as a whole); returns the metrics (MCC, F1, accuracy, AUROC, n). ``checkpoint`` may be a list of
    paths: an ensemble averaged in probability."""
    from msaformer.data.promoter import read_promoters
    from msaformer.evaluation import write_evaluation
    from msaformer.model.promoter import load_promoter_models

    data = read_promoters(input_path, labels=labels, require_labels=True)
    model, meta = load_promoter_models(checkpoint)
    thr = float(meta.get("threshold", 0.5)) if threshold is None else threshold
    rows = [row for row, _ in predict_records(model, zip(data.ids, data.sequences), threshold=thr,
                                              source=str(input_path), precision=precision)]
    probs = [r["probability"] for r in rows]
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as folder:
        metrics = write_evaluation(data.labels, probs, folder.tmp, threshold=thr, title=Path(input_path).name)
        header = ["input", "threshold", *metrics]
        write_csv(folder.path("metrics.csv"), header, [[str(input_path), thr, *metrics.values()]])
    return metrics


# ---------------------------------------------------------------------------------------------- rollout


def attention_rollout(attentions, key_padding_mask=None):
    """Returns the rollout ``[B, T, T]`` of per-layer attention probabilities ``[B, H, T, T]`` (first layer
    first): heads averaged, the residual identity added, rows renormalised, then multiplied through the layers
    (Abnar & Zuidema 2020). Row ``0`` is the relevance of every token for the ``<cls>`` output.

    Rows of padded queries are set to the identity, so every row of the result sums to 1.
    """
    import torch

    rollout = None
    for attn in attentions:
        a = attn.float().mean(dim=1)  # (B, T, T)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        if key_padding_mask is not None:
            a = torch.where(key_padding_mask[:, :, None], eye, a)
        rollout = a if rollout is None else torch.bmm(a, rollout)  # later layers on the left
    return rollout


def explain_tokens(model, tokens: list[np.ndarray], *, batch_size: int = 128) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns ``(probabilities [n], relevances)``: per nucleotide, the ``<cls>`` row of the rollout.

    Each relevance array has one value per nucleotide; together with the ``<cls>`` share they sum to 1. For a
    mean-pooling model the head reads the nucleotide outputs, not ``<cls>``: the relevance is then the mean of
    the rollout rows of the nucleotides.
    """
    import torch

    from msaformer.data.promoter import PAD_IDX

    model.eval()
    mean_pooled = model.config.pooling == "mean"
    probs = np.empty(len(tokens))
    relevance: list[np.ndarray | None] = [None] * len(tokens)
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    with torch.inference_mode():
        for index in length_bucketed_batches(lengths, batch_size):
            batch = torch.from_numpy(collate([tokens[i] for i in index]))
            out = model(batch, need_weights=True)
            roll = attention_rollout(out["attentions"], batch.eq(PAD_IDX))  # (B, T, T)
            probs[index] = torch.sigmoid(out["logits"]).numpy()
            for row, i in enumerate(index):
                end = 1 + lengths[i]
                if mean_pooled:  # the head reads the mean of the nucleotide outputs: average their rows
                    relevance[i] = roll[row, 1:end, 1:end].mean(0).numpy().astype(np.float64)
                else:
                    relevance[i] = roll[row, 0, 1:end].numpy().astype(np.float64)
    return probs, relevance  # type: ignore[return-value]


def explain_sequence_windows(model, ids: np.ndarray, stride: int) -> tuple[float, np.ndarray]:
    """Returns (max window probability, relevance per nucleotide averaged over the windows covering it)."""
    window = model.config.max_length
    starts = window_starts(len(ids), window, stride)
    probs, rels = explain_tokens(model, [ids[s : s + window] for s in starts])
    total = np.zeros(len(ids))
    cover = np.zeros(len(ids))
    for s, r in zip(starts, rels):
        total[s : s + len(r)] += r
        cover[s : s + len(r)] += 1
    return float(probs.max()), total / np.maximum(cover, 1)


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def plot_sequence_heatmap(sequence: str, relevance: np.ndarray, path: str | Path, *, title: str = "",
                          wrap: int = 70, tss: int | None = None) -> None:
    """Writes a heatmap PNG of per-nucleotide relevance with the letters drawn in their cells.

    Long sequences wrap onto several strips of ``wrap`` nucleotides; ``tss`` (1-based) marks a position.
    """
    plt = pyplot()

    n = len(sequence)
    strips = max(1, math.ceil(n / wrap))
    width = min(n, wrap)
    grid = np.full((strips, width), np.nan)
    grid.flat[:n] = relevance
    # Colour from the sequence's own min to max: rollout values sit close to uniform, so an absolute 0-max
    # scale would render every cell the same grey.
    vmin = float(np.nanmin(relevance)) if n else 0.0
    vmax = float(np.nanmax(relevance)) if n else 1.0
    if vmax <= vmin:
        vmax = vmin + 1e-12
    fig, axes = plt.subplots(strips, 1, figsize=(max(6.0, 0.19 * width + 1.6), 1.0 * strips + 0.8), dpi=150,
                             squeeze=False, gridspec_kw={"hspace": 0.9})
    for s, ax in enumerate(axes[:, 0]):
        im = ax.imshow(grid[s : s + 1], aspect="auto", cmap="YlOrRd", vmin=vmin, vmax=vmax,
                       extent=(0.5, width + 0.5, 0, 1))
        for j in range(width):
            pos = s * wrap + j
            if pos >= n:
                break
            ax.text(j + 1, 0.5, sequence[pos].upper(), ha="center", va="center", fontsize=7,
                    family="monospace", fontweight="bold", color="black")
        ticks = [t for t in range(10, width + 1, 10)]
        ax.set_xticks(ticks, [str(s * wrap + t) for t in ticks], fontsize=7)
        ax.set_yticks([])
        if tss is not None and s * wrap < tss <= (s + 1) * wrap:
            ax.axvline(tss - s * wrap, color="#7b3294", lw=1.2)
            ax.text(tss - s * wrap, 1.02, "TSS", color="#7b3294", fontsize=7, ha="center", va="bottom",
                    transform=ax.get_xaxis_transform())
    axes[0, 0].set_title(title, fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("position (nt)", fontsize=8)
    cbar = fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.025, pad=0.01)
    cbar.ax.tick_params(labelsize=6)
    cbar.set_label("rollout relevance", fontsize=7)
    save_figure(fig, path, bbox_inches="tight")


def tss_coordinate(position: int, tss: int) -> int:
    """Returns the promoter coordinate of 1-based ``position`` for a TSS at 1-based ``tss``: the TSS is +1, the
    nucleotide before it -1, and there is no 0 (the convention of promoter biology)."""
    offset = position - tss
    return offset + 1 if offset >= 0 else offset


def plot_positional_profile(profiles: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                            tss: int | None = None, title: str = "") -> None:
    """Writes a line plot of mean relevance by position (one line per group, +- 1 standard error).

    With ``tss`` (1-based), the axis reads promoter coordinates: the TSS is +1, upstream nucleotides are
    negative, and there is no position 0 (:func:`tss_coordinate`).
    """
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig, ax = plt.subplots(figsize=(8.0, 3.4), dpi=150)
    for name, (mean, sem) in profiles.items():
        x = np.arange(1, len(mean) + 1)
        if tss is not None:
            x = x - tss  # 0 at the TSS on the drawing axis; the tick labels say +1 there
        line, = ax.plot(x, mean, lw=1.6, label=name)
        ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.2, lw=0)
    if tss is not None:
        ax.axvline(0, color="grey", ls="--", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(x) + 1:+d}" if x >= 0 else f"{int(x):d}"))
        ax.set_xlabel("position relative to the TSS (nt; TSS = +1, no position 0)")
    else:
        ax.set_xlabel("position (nt, 1-based)")
    ax.set_ylabel("mean rollout relevance")
    ax.set_title(title or "mean relevance by position", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def explain_file(
    input_path: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    max_plots: int = 20,
    max_records: int = 0,
    stride: int | None = None,
    tss: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Explains every record of ``input_path`` (first ``max_records`` if > 0) into the folder ``out_dir``.

    Writes ``scores.csv`` (``id,position,nucleotide,relevance``, 1-based positions), ``predictions.csv``,
    ``heatmaps/NNNN_<id>.png`` for the first ``max_plots`` records, and ``positional_relevance.{png,csv}``: the
    mean relevance by position over all records, and over the records predicted promoter / non-promoter (with
    ``tss``, the CSV also gives each position's promoter coordinate, TSS = +1). The folder is built under a
    temporary name and replaces ``out_dir`` as a whole at the end. Returns a summary dict.
    """
    from msaformer.data.promoter import iter_promoter_records
    from msaformer.model.promoter import load_promoter_models

    model, meta = load_promoter_models(checkpoint)
    threshold = float(meta.get("threshold", 0.5))
    window = model.config.max_length
    stride = stride or max(1, window // 2)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    counter = Counter("explain", "sequences", progress)
    with atomic_dir(out_dir) as folder:
        n, n_plots, profiles = _explain_into(folder.tmp, model, iter_promoter_records(input_path), str(input_path),
                                             threshold, window, stride, max_plots, max_records, tss, counter)
        if n == 0:
            raise MsaformerError(f"{input_path}: no sequences found")
        source = "the nucleotides (mean pooling)" if model.config.pooling == "mean" else "<cls>"
        plot_positional_profile(profiles, folder.path("positional_relevance.png"), tss=tss,
                                title=f"attention rollout from {source}, {Path(input_path).name}")
    return {"records": n, "heatmaps": n_plots, "out_dir": str(out_dir)}


def _explain_into(work: Path, model, records, source: str, threshold: float, window: int, stride: int,
                  max_plots: int, max_records: int, tss: int | None, counter: Counter):
    """Writes the CSVs and heatmaps of :func:`explain_file` into ``work``; returns ``(records, heatmaps,
    positional profiles)``."""
    (work / "heatmaps").mkdir()
    sums: dict[str, list] = {}
    n_plots = n = 0

    def accumulate(group: str, rel: np.ndarray) -> None:
        acc = sums.setdefault(group, [np.zeros(0), np.zeros(0), np.zeros(0)])
        if len(rel) > len(acc[0]):
            for k in range(3):
                acc[k] = np.pad(acc[k], (0, len(rel) - len(acc[k])))
        acc[0][: len(rel)] += rel
        acc[1][: len(rel)] += rel**2
        acc[2][: len(rel)] += 1

    with open(work / "scores.csv", "w", newline="", encoding="utf-8") as sfh, \
            open(work / "predictions.csv", "w", newline="", encoding="utf-8") as pfh:
        scores = csv_writer(sfh)
        scores.writerow(["id", "position", "nucleotide", "relevance"])
        preds = csv_writer(pfh)
        preds.writerow(["id", "length", "probability", "label"])
        batch: list[tuple[str, str, np.ndarray]] = []

        def flush():
            nonlocal n_plots
            short = [b for b in batch if len(b[2]) <= window]
            probs, rels = explain_tokens(model, [b[2] for b in short])
            results = {id(b): (p, r) for b, p, r in zip(short, probs, rels)}
            for b in batch:
                name, seq, ids = b
                p, rel = results[id(b)] if id(b) in results else explain_sequence_windows(model, ids, stride)
                label = int(p >= threshold)
                preds.writerow([name, len(seq), f"{p:.6f}", label])
                scores.writerows([name, i + 1, seq[i].upper(), f"{r:.6g}"] for i, r in enumerate(rel))
                accumulate("all", rel)
                accumulate("predicted promoter" if label else "predicted non-promoter", rel)
                if n_plots < max_plots:
                    n_plots += 1
                    png = work / "heatmaps" / f"{n_plots:04d}_{_SAFE.sub('_', name)[:60]}.png"
                    plot_sequence_heatmap(seq, rel, png, title=f"{name}  P(promoter) = {p:.3f}", tss=tss)
            counter.advance(len(batch))

        for name, seq in records:
            if max_records and n >= max_records:
                break
            batch.append((name, seq, encode(seq, record=name, source=source)))
            n += 1
            if len(batch) >= 512:
                flush()
                batch = []
        if batch:
            flush()

    profiles = {}
    header = ["group", "position", "n", "mean", "sem"] + (["tss_coordinate"] if tss is not None else [])
    rows = []
    for group in ("all", "predicted promoter", "predicted non-promoter"):
        if group not in sums:
            continue
        total, squares, count = sums[group]
        mean = total / np.maximum(count, 1)
        var = np.maximum(squares / np.maximum(count, 1) - mean**2, 0)
        sem = np.sqrt(var / np.maximum(count, 1))
        profiles[f"{group} (n={int(count.max())})"] = (mean, sem)
        for i, (c, m, e) in enumerate(zip(count, mean, sem)):
            rows.append([group, i + 1, int(c), f"{m:.6g}", f"{e:.6g}"]
                        + ([tss_coordinate(i + 1, tss)] if tss is not None else []))
    write_csv(work / "positional_relevance.csv", header, rows)
    return n, n_plots, profiles
