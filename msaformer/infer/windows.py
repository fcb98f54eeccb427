"""Alignments longer than the model's positions, scored in overlapping column windows.

A model with ``P`` learned positions sees at most ``P - 1`` aligned columns (one position is ``<cls>``).
With ``--window W`` (at most ``P - 1``) and ``--stride S`` (default ``W // 2``), an alignment of ``L > W``
columns is cut into the windows ``[0, W), [S, S + W), ...``, the last one moved back to end at ``L`` so every
window is ``W`` columns wide; each window (all rows kept by ``--max-seqs``, the columns sliced) is run like an
alignment of its own, positions starting again at 1. The query's full length is then restored:

* ``per_tok`` and ``logits``: each column's vectors averaged over the windows holding that column;
* ``contacts``: the contact *logits* ``log(p / (1 - p))`` averaged over the windows holding both columns,
  then turned back into probabilities; pairs further apart than any window spans (never seen together) are 0;
* ``mean``: the mean of the restored ``per_tok`` over the query's residues, as for a whole alignment.

An alignment of at most ``W`` columns is one window, run exactly as without windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError

#: Contact probabilities are clipped to [EPS, 1 - EPS] before their logits are averaged.
EPS = 1e-6


def window_spans(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Returns the ``(start, stop)`` column spans covering ``length`` columns (one span if it fits)."""
    if window < 1 or stride < 1:
        raise MsaformerError(f"--window and --stride must be positive, got {window} and {stride}")
    if stride > window:
        raise MsaformerError(f"--stride {stride} is larger than --window {window}: columns would be left out")
    if length <= window:
        return [(0, length)]
    spans = []
    start = 0
    while True:
        stop = start + window
        if stop >= length:
            spans.append((length - window, length))
            break
        spans.append((start, stop))
        start += stride
    return spans


def slice_columns(msa: Msa, start: int, stop: int) -> Msa:
    """Returns the columns ``[start, stop)`` of ``msa`` (every row), as an alignment of its own."""
    return Msa(
        names=list(msa.names),
        tokens=np.ascontiguousarray(msa.tokens[:, start:stop]),
        deletions=np.ascontiguousarray(msa.deletions[:, start:stop]),
        source=msa.source,
        metadata=msa.metadata,
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def combine_windows(
    length: int, spans: Sequence[tuple[int, int]], pieces: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Returns the full-length float32 arrays of an alignment from the arrays of its windows (same keys):
    ``[w, ...]`` arrays averaged per column, ``contacts`` ``[w, w]`` averaged in logit space per pair.

    Keys other than per-column arrays and ``contacts`` (e.g. ``mean``) are dropped: the caller computes them
    from the restored arrays.
    """
    if len(spans) == 1 and spans[0] == (0, length):
        return dict(pieces[0])
    out: dict[str, np.ndarray] = {}
    keys = [k for k in pieces[0] if not k.startswith("mean")]
    for key in keys:
        if key == "contacts":
            total = np.zeros((length, length), dtype=np.float64)
            count = np.zeros((length, length), dtype=np.int32)
            for (a, b), piece in zip(spans, pieces):
                total[a:b, a:b] += _logit(piece[key])
                count[a:b, a:b] += 1
            seen = count > 0
            probs = np.zeros((length, length), dtype=np.float64)
            probs[seen] = 1.0 / (1.0 + np.exp(-(total[seen] / count[seen])))
            out[key] = probs.astype(np.float32)
        else:
            first = pieces[0][key]
            total = np.zeros((length, *first.shape[1:]), dtype=np.float64)
            count = np.zeros(length, dtype=np.int32)
            for (a, b), piece in zip(spans, pieces):
                total[a:b] += piece[key]
                count[a:b] += 1
            shape = (length,) + (1,) * (total.ndim - 1)
            out[key] = (total / count.reshape(shape)).astype(np.float32)
    return out
