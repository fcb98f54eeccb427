"""Row subsampling of an alignment for inference: the query is always kept, as row 0.

- ``first``: the query and the next ``max_seqs - 1`` rows in file order (search tools sort hits by score,
  so this keeps the best hits).
- ``random``: the query and ``max_seqs - 1`` other rows drawn without replacement; the draw depends only on
  ``seed`` and the alignment's content, so a result does not change with the order of the inputs.
- ``greedy_diverse``: fair-esm's ``greedy_select`` (contact-prediction example): repeatedly add the row with
  the largest mean Hamming distance to the rows already chosen. Computed with a running sum, O(K N L).

Kept rows stay in their original order.
"""

from __future__ import annotations

import zlib

import numpy as np

from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError

SUBSAMPLE_MODES = ("first", "random", "greedy_diverse")


def select_rows(tokens: np.ndarray, max_seqs: int, mode: str = "first", seed: int = 0) -> np.ndarray:
    """Returns the sorted row indices to keep (``0`` first) of a ``[N, L]`` uint8 alignment.

    Raises:
        MsaformerError: an unknown ``mode`` or ``max_seqs < 1``.
    """
    if mode not in SUBSAMPLE_MODES:
        raise MsaformerError(f"unknown subsample mode {mode!r}; choose one of {', '.join(SUBSAMPLE_MODES)}")
    if max_seqs < 1:
        raise MsaformerError(f"--max-seqs must be at least 1 (the query), got {max_seqs}")
    n = tokens.shape[0]
    if n <= max_seqs:
        return np.arange(n)
    if mode == "first":
        return np.arange(max_seqs)
    if mode == "random":
        # content-derived stream: same rows for the same alignment whatever else is in the run
        digest = zlib.crc32(np.ascontiguousarray(tokens[0]).tobytes()) ^ (n << 16) ^ tokens.shape[1]
        rng = np.random.default_rng([seed, digest])
        others = rng.choice(np.arange(1, n), size=max_seqs - 1, replace=False)
        return np.concatenate([[0], np.sort(others)])
    return _greedy_diverse(tokens, max_seqs)


def _greedy_diverse(tokens: np.ndarray, max_seqs: int) -> np.ndarray:
    """Returns fair-esm's greedy max-mean-Hamming selection, query first, in row order."""
    n = tokens.shape[0]
    chosen = np.zeros(n, dtype=bool)
    chosen[0] = True
    dist_sum = np.zeros(n, dtype=np.int64)  # integer mismatch counts: ties are exact, broken by row order
    last = 0
    for _ in range(max_seqs - 1):
        dist_sum += (tokens != tokens[last]).sum(axis=1)
        # first index of the maximum among unchosen rows, as np.argmax over fair-esm's deleted array
        candidates = np.where(chosen, -1, dist_sum)
        last = int(np.argmax(candidates))
        chosen[last] = True
    return np.flatnonzero(chosen)


def subsample(msa: Msa, max_seqs: int | None, mode: str = "first", seed: int = 0) -> Msa:
    """Returns ``msa`` restricted to at most ``max_seqs`` rows (the query kept first); ``None`` keeps all."""
    if max_seqs is None or msa.depth <= max_seqs:
        if mode not in SUBSAMPLE_MODES:
            raise MsaformerError(f"unknown subsample mode {mode!r}; choose one of {', '.join(SUBSAMPLE_MODES)}")
        return msa
    rows = select_rows(msa.tokens, max_seqs, mode, seed)
    return Msa(
        names=[msa.names[i] for i in rows],
        tokens=np.ascontiguousarray(msa.tokens[rows]),
        deletions=np.ascontiguousarray(msa.deletions[rows]),
        source=msa.source,
        metadata=msa.metadata,
    )
