"""Ranked contact lists and contact-map pictures of one predicted ``[L, L]`` contact map.

Ranking follows the CASP / ESM evaluation classes of sequence separation ``s = j - i``: long range
(``s >= 24``) first, then medium (``12 <= s < 24``), then short (``6 <= s < 12``); within each class pairs are
sorted by decreasing probability (ties by ``i``, then ``j``). Pairs closer than 6 are not listed: they are in
contact by chain geometry. Positions ``i < j`` are 1-based columns of the query row as aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: (name, smallest separation, largest separation or None) in output order.
RANGES = (("long", 24, None), ("medium", 12, 23), ("short", 6, 11))
MIN_SEPARATION = 6

CONTACT_COLUMNS = ("i", "j", "probability", "separation", "range")


def rank_contacts(contacts: np.ndarray, top: int | None = None) -> list[tuple[int, int, float, int, str]]:
    """Returns ``(i, j, probability, separation, range)`` rows, long range first, each class by probability.

    Args:
        contacts: ``[L, L]`` contact probabilities (the upper triangle is read).
        top: keep at most this many pairs per range class (``None`` or ``0``: all).
    """
    length = contacts.shape[0]
    ii, jj = np.triu_indices(length, k=MIN_SEPARATION)
    sep = jj - ii
    prob = np.asarray(contacts, dtype=np.float64)[ii, jj]
    rows: list[tuple[int, int, float, int, str]] = []
    for name, lo, hi in RANGES:
        keep = sep >= lo if hi is None else (sep >= lo) & (sep <= hi)
        ci, cj, cp, cs = ii[keep], jj[keep], prob[keep], sep[keep]
        order = np.lexsort((cj, ci, -cp))  # last key is primary: probability descending
        if top:
            order = order[:top]
        rows.extend((int(ci[k]) + 1, int(cj[k]) + 1, float(cp[k]), int(cs[k]), name) for k in order)
    return rows


def write_ranked_contacts(path: str | Path, contacts: np.ndarray, top: int | None = None,
                          value_name: str = "probability") -> int:
    """Writes the ranked contact CSV (:data:`CONTACT_COLUMNS`) of one map; returns the number of rows.
    ``value_name`` heads the third column: ``score`` for a coevolution map, whose values are not probabilities."""
    from msaformer.files import write_csv

    rows = rank_contacts(contacts, top)
    header = ("i", "j", value_name, "separation", "range")
    write_csv(path, header, ((i, j, f"{p:.6g}", s, r) for i, j, p, s, r in rows))
    return len(rows)


def plot_contacts(path: str | Path, contacts: np.ndarray, title: str = "", value_name: str = "probability") -> None:
    """Saves a PNG of a contact map: probabilities below the diagonal (colour range = the map's 1st-99th
    percentile), the top-L medium/long-range pairs above it. Axes are 1-based query columns, as in the CSVs."""
    from msaformer.plotting import pyplot, save_figure

    plt = pyplot()
    length = contacts.shape[0]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    lower = np.where(np.tril(np.ones_like(contacts, dtype=bool)), contacts, np.nan)
    # colour range from the map itself (1st-99th percentile of pairs >= 6 apart), so an untrained or
    # low-confidence contact head still shows its structure; the colour bar gives the real values
    ii, jj = np.triu_indices(length, k=MIN_SEPARATION)
    vmin, vmax = (np.percentile(contacts[ii, jj], [1, 99]) if ii.size else (0.0, 1.0))
    if not vmax - vmin > 1e-6:
        vmin, vmax = 0.0, 1.0
    # pixel k is centred on column k + 1: the axes read 1..L like the ranked CSVs
    extent = (0.5, length + 0.5, length + 0.5, 0.5)
    image = ax.imshow(lower, cmap="Blues", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    top = [r for r in rank_contacts(contacts) if r[4] != "short"][:length]
    if top:
        ax.scatter([r[1] for r in top], [r[0] for r in top], s=4, c="tab:red", marker="s", linewidths=0)
    ax.set_xlim(0.5, length + 0.5)
    ax.set_ylim(length + 0.5, 0.5)
    ax.set_xlabel("residue j (query column, 1-based)")
    ax.set_ylabel("residue i (query column, 1-based)")
    ax.set_title(f"{title or 'predicted contacts'}\nred: top-{len(top)} pairs with separation >= 12", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="P(contact)" if value_name == "probability" else value_name)
    fig.tight_layout()
    save_figure(fig, path)
