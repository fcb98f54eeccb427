"""Precision of the top ``L / k`` predicted contacts per range class: the field's yardstick (CASP, ESM).

For a predicted score map ``[L, L]`` and a true contact map with its mask of known pairs:

* pairs ``i < j`` are split by separation ``s = j - i``: short ``6 <= s <= 11``, medium ``12 <= s <= 23``,
  long ``s >= 24`` (:data:`msaformer.infer.contacts.RANGES`);
* within a class, the pairs whose truth is known (both residues have coordinates) are ranked by decreasing
  score; ties are broken by ``i``, then ``j`` (both ascending), the order of the ranked CSVs;
* ``P@L/k`` is the number of true contacts among the first ``n = max(1, L // k)`` ranked pairs, divided by
  ``n``; when a class has fewer than ``n`` known pairs the missing ones count as wrong (ESM's convention);
* ``L`` is the number of query residues (columns whose query letter is not a gap);
* a class without a single true contact among its known pairs has no precision (NaN): nothing could be
  found there, so it is left out of means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from msaformer.infer.contacts import RANGES

#: The divisors k of P@L/k that are reported.
DIVISORS = (1, 2, 5)


def metric_name(range_name: str, divisor: int) -> str:
    """Returns a column name: ``long_P@L``, ``long_P@L/2``, ..."""
    return f"{range_name}_P@L" + (f"/{divisor}" if divisor != 1 else "")


METRICS = tuple(metric_name(r, d) for r, _, _ in RANGES for d in DIVISORS)


def precisions(predicted: np.ndarray, contacts: np.ndarray, valid: np.ndarray | None = None,
               length: int | None = None, divisors: Sequence[int] = DIVISORS) -> dict[str, float]:
    """Returns ``{metric_name: precision}`` (see the module docstring) and ``{range}_true`` (true contacts).

    Args:
        predicted: ``[L, L]`` scores (the upper triangle is read).
        contacts: ``[L, L]`` bool true contacts.
        valid: ``[L, L]`` bool, pairs whose truth is known (default: all).
        length: ``L`` of ``L / k`` (default: ``predicted.shape[0]``).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    size = predicted.shape[0]
    if predicted.shape != (size, size) or np.shape(contacts) != (size, size):
        raise ValueError(f"predicted {predicted.shape} and true {np.shape(contacts)} maps must be equal [L, L]")
    length = size if length is None else int(length)
    valid = np.ones((size, size), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    ii, jj = np.triu_indices(size, k=6)
    keep = valid[ii, jj]
    ii, jj = ii[keep], jj[keep]
    sep, score, truth = jj - ii, predicted[ii, jj], np.asarray(contacts, dtype=bool)[ii, jj]
    score = np.where(np.isnan(score), -np.inf, score)  # an undefined prediction ranks last
    out: dict[str, float] = {}
    for name, lo, hi in RANGES:
        inside = sep >= lo if hi is None else (sep >= lo) & (sep <= hi)
        order = np.lexsort((jj[inside], ii[inside], -score[inside]))  # last key first: score descending
        ranked = truth[inside][order]
        out[f"{name}_true"] = int(ranked.sum())
        for d in divisors:
            n = max(1, length // d)
            out[metric_name(name, d)] = float(ranked[:n].sum()) / n if ranked.any() else math.nan
    return out


def mean_row(rows: Sequence[dict[str, float]], keys: Sequence[str] = METRICS) -> dict[str, float]:
    """Returns the mean of each metric over the rows that have it (NaN where none has)."""
    out = {}
    for key in keys:
        values = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


__all__ = ["DIVISORS", "METRICS", "mean_row", "metric_name", "precisions"]
