"""Binary classification metrics and their plots (scikit-learn, matplotlib): what promoter training reports on
dev / test and what ``msaformer promoter evaluate`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msaformer.plotting import pyplot, save_figure


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Returns MCC, F1, accuracy and AUROC (scikit-learn) of probabilities against 0/1 labels."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    preds = (probs >= threshold).astype(np.int64)
    auroc = roc_auc_score(labels, probs) if len(np.unique(labels)) == 2 else float("nan")
    return {
        "mcc": float(matthews_corrcoef(labels, preds)),
        "f1": float(f1_score(labels, preds, zero_division=0)),
        "accuracy": float(accuracy_score(labels, preds)),
        "auroc": float(auroc),
        "n": int(len(labels)),
    }


def plot_confusion_matrix(labels, probs, path: str | Path, threshold: float = 0.5, title: str = "") -> None:
    """Writes a 2x2 confusion-matrix PNG (counts and row percentages)."""
    from sklearn.metrics import confusion_matrix

    plt = pyplot()
    preds = (np.asarray(probs) >= threshold).astype(int)
    cm = confusion_matrix(np.asarray(labels, dtype=int), preds, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=150)
    ax.imshow(cm, cmap="Blues")
    names = ["non-promoter", "promoter"]
    for i in range(2):
        for j in range(2):
            share = cm[i, j] / max(cm[i].sum(), 1)
            dark = cm[i, j] > cm.max() / 2
            ax.text(j, i, f"{cm[i, j]}\n{share:.1%}", ha="center", va="center",
                    color="white" if dark else "black", fontsize=11)
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names, rotation=90, va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (threshold {threshold:g})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_roc(labels, probs, path: str | Path, title: str = "") -> None:
    """Writes a ROC-curve PNG with the AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    fpr, tpr, _ = roc_curve(np.asarray(labels, dtype=int), np.asarray(probs))
    auc = roc_auc_score(np.asarray(labels, dtype=int), np.asarray(probs))
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC", fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def write_evaluation(labels, probs, out_dir: str | Path, *, prefix: str = "", threshold: float = 0.5,
                     title: str = "") -> dict[str, float]:
    """Writes the confusion matrix and ROC PNGs of one split; returns its metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = binary_metrics(labels, probs, threshold)
    plot_confusion_matrix(labels, probs, out_dir / f"{prefix}confusion_matrix.png", threshold,
                          title=f"{title} MCC {metrics['mcc']:.3f}".strip())
    if len(np.unique(labels)) == 2:
        plot_roc(labels, probs, out_dir / f"{prefix}roc.png", title=title)
    return metrics
