"""Which rows and columns of an MSA the model sees: the one row-selection module of training and inference.

All functions are pure: arrays and a ``numpy.random.Generator`` in, indices out. The query (row 0) is always
the first row chosen, and the other rows keep their alignment order (except with replacement). Strategies:

* ``first``: the query and the next rows in file order (search tools sort hits by score, so this keeps the
  best hits);
* ``random``: uniform without replacement;
* ``random_with_replacement``;
* ``greedy_diverse``: fair-esm's ``greedy_select``: repeatedly add the row with the largest mean Hamming
  distance to the rows already chosen (exact integer counts; ties go to the earlier row);
* ``identity_filter``: an hhfilter-style identity / coverage filter, then uniform sampling.

Training (:func:`sample_msa`) also places a column window and fits the row count to a token budget; inference
(:func:`subsample`) keeps at most ``max_rows`` rows, drawing ``random`` rows from a generator seeded by the
alignment's content, so a result does not depend on the other inputs of a run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from msaformer.errors import ConfigError

#: Names accepted by :func:`select_rows` (``data.strategy`` in training configs, ``--subsample`` at inference).
STRATEGIES = ("first", "random", "random_with_replacement", "greedy_diverse", "identity_filter")

#: The MSA Transformer's training budget: rows x columns per MSA.
DEFAULT_MAX_TOKENS = 2**14

_GAP_CODES = np.frombuffer(b"-.", dtype=np.uint8)


@dataclass(frozen=True)
class SamplingOptions:
    """How one training MSA is cut from a record.

    ``max_tokens`` bounds rows x (columns + 1): the ``+ 1`` is the ``<cls>`` column the model adds.
    """

    strategy: str = "random"
    max_len: int = 1023  # columns of the window (the model adds one <cls> column)
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_rows: int | None = None  # extra cap on rows (e.g. the model's max_rows), None = budget only
    max_identity: float = 0.9  # identity_filter: drop rows more identical than this to a kept row
    min_coverage: float = 0.5  # identity_filter: drop rows covering less than this of the query residues
    filter_oversample: int = 4  # identity_filter: stop scanning once this many times the rows needed are kept

    def __post_init__(self) -> None:
        validate_strategy(self.strategy)
        if self.max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {self.max_len}")
        if self.max_tokens < self.max_len + 1:
            raise ConfigError(
                f"max_tokens_per_msa ({self.max_tokens}) must allow at least the query row: >= max_len + 1 "
                f"({self.max_len + 1})"
            )
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1 or null, got {self.max_rows}")
        if not 0.0 < self.max_identity <= 1.0:
            raise ConfigError(f"max_identity must be in (0, 1], got {self.max_identity}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"min_coverage must be in [0, 1], got {self.min_coverage}")


def validate_strategy(name: str) -> str:
    """Returns ``name`` if it is a known row selection strategy, else raises a one-line ConfigError."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown row selection strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def crop_window(length: int, max_len: int, rng: np.random.Generator) -> tuple[int, int]:
    """Returns ``(start, stop)`` of a uniformly placed window of ``min(length, max_len)`` columns."""
    width = min(length, max_len)
    start = int(rng.integers(0, length - width + 1)) if length > width else 0
    return start, start + width


def rows_in_budget(depth: int, n_cols: int, max_tokens: int, max_rows: int | None = None) -> int:
    """Returns how many rows fit: ``rows x (n_cols + 1) <= max_tokens``, at most ``depth``, at least 1."""
    rows = max(1, max_tokens // (n_cols + 1))
    if max_rows is not None:
        rows = min(rows, max_rows)
    return min(depth, rows)


def _is_residue(tokens: np.ndarray) -> np.ndarray:
    return ~np.isin(tokens, _GAP_CODES)


def greedy_diverse(tokens: np.ndarray, n_rows: int) -> np.ndarray:
    """Returns ``n_rows`` row indices of ``tokens [N, L]`` in row order, the query first: fair-esm's greedy
    selection, each next row the one with the largest summed Hamming distance to those already chosen (ties:
    the lowest index)."""
    depth = tokens.shape[0]
    n_rows = min(n_rows, depth)
    chosen = np.zeros(depth, dtype=bool)
    chosen[0] = True
    distance = np.zeros(depth, dtype=np.int64)  # integer mismatch counts: ties are exact
    last = 0
    for _ in range(n_rows - 1):
        distance += (tokens != tokens[last]).sum(axis=1)
        last = int(np.argmax(np.where(chosen, -1, distance)))
        chosen[last] = True
    return np.flatnonzero(chosen)


def identity_filter(
    tokens: np.ndarray,
    *,
    max_identity: float,
    min_coverage: float,
    max_kept: int | None = None,
) -> np.ndarray:
    """Returns indices of rows kept by an hhfilter-style pass, query first.

    Rows are scanned in order; a row is dropped if it covers less than ``min_coverage`` of the query's
    residue columns, or if its identity to an already kept row (matching residues over columns where
    both have a residue) exceeds ``max_identity``. Scanning stops once ``max_kept`` rows are kept.
    """
    depth = tokens.shape[0]
    residue = _is_residue(tokens)  # [N, L]
    query_res = residue[0]
    n_query = max(int(query_res.sum()), 1)
    coverage = (residue & query_res).sum(axis=1) / n_query  # [N]
    kept = [0]
    kept_tokens = [tokens[0]]
    kept_residue = [residue[0]]
    limit = depth if max_kept is None else max_kept
    for i in range(1, depth):
        if len(kept) >= limit:
            break
        if coverage[i] < min_coverage:
            continue
        ktok = np.asarray(kept_tokens)  # [K, L]
        kres = np.asarray(kept_residue)
        both = kres & residue[i]  # [K, L]
        n_both = both.sum(axis=1)
        same = ((ktok == tokens[i]) & both).sum(axis=1)
        identity = np.where(n_both > 0, same / np.maximum(n_both, 1), 0.0)
        if (identity > max_identity).any():
            continue
        kept.append(i)
        kept_tokens.append(tokens[i])
        kept_residue.append(residue[i])
    return np.asarray(kept, dtype=np.int64)


def select_rows(tokens: np.ndarray, n_rows: int, strategy: str, rng: np.random.Generator,
                options: SamplingOptions | None = None) -> np.ndarray:
    """Returns row indices into ``tokens`` ``[N, L]``: ``index[0] == 0`` (the query), ``len <= n_rows``.

    ``random`` samples the other rows uniformly without replacement (all rows if they fit),
    ``random_with_replacement`` with replacement (exactly ``n_rows`` rows when N > 1), ``first`` and
    ``greedy_diverse`` are deterministic, ``identity_filter`` filters (see :func:`identity_filter`) then
    samples uniformly. Rows other than the query keep their alignment order, except with replacement.
    """
    validate_strategy(strategy)
    options = options or SamplingOptions(strategy=strategy)
    depth = tokens.shape[0]
    n_rows = max(1, min(n_rows, depth if strategy != "random_with_replacement" else n_rows))
    query = np.zeros(1, dtype=np.int64)
    if depth == 1 or n_rows == 1:
        return query
    if strategy == "first":
        return np.arange(n_rows, dtype=np.int64)
    if strategy == "random":
        others = rng.choice(np.arange(1, depth), size=min(n_rows, depth) - 1, replace=False)
        return np.concatenate([query, np.sort(others)])
    if strategy == "random_with_replacement":
        others = rng.integers(1, depth, size=n_rows - 1)
        return np.concatenate([query, others]).astype(np.int64)
    if strategy == "greedy_diverse":
        return greedy_diverse(tokens, n_rows)
    kept = identity_filter(
        tokens,
        max_identity=options.max_identity,
        min_coverage=options.min_coverage,
        max_kept=max(n_rows, n_rows * options.filter_oversample),
    )
    if len(kept) <= n_rows:
        return kept
    others = rng.choice(kept[1:], size=n_rows - 1, replace=False)
    return np.concatenate([query, np.sort(others)])


def content_rng(tokens: np.ndarray, seed: int) -> np.random.Generator:
    """Returns a generator seeded by ``seed`` and the alignment's content (its query row and shape), so that a
    draw from one alignment does not change with the other alignments of a run or their order."""
    digest = zlib.crc32(np.ascontiguousarray(tokens[0]).tobytes()) ^ (tokens.shape[0] << 16) ^ tokens.shape[1]
    return np.random.default_rng([int(seed), digest])


def subsample(msa, max_rows: int | None, strategy: str = "first", seed: int = 0):
    """Returns ``msa`` (an :class:`~msaformer.data.msa.Msa`) with at most ``max_rows`` rows chosen by
    ``strategy``, the query first; ``None`` keeps every row. For inference."""
    from msaformer.data.msa import Msa

    validate_strategy(strategy)
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"--max-seqs must be at least 1 (the query), got {max_rows}")
    if max_rows is None or msa.depth <= max_rows:
        return msa
    rows = select_rows(msa.tokens, max_rows, strategy, content_rng(msa.tokens, seed))
    return Msa(
        names=[msa.names[i] for i in rows.tolist()],
        tokens=np.ascontiguousarray(msa.tokens[rows]),
        deletions=np.ascontiguousarray(msa.deletions[rows]),
        source=msa.source,
        metadata=msa.metadata,
    )


def sample_msa(tokens: np.ndarray, options: SamplingOptions, rng: np.random.Generator) -> tuple[np.ndarray, slice]:
    """Returns ``(row_indices, column_slice)`` of one training view of an ``[N, L]`` alignment.

    A window of at most ``max_len`` columns is placed uniformly, the row count is fitted to the token
    budget, then rows are chosen by ``options.strategy`` on the window's columns.
    """
    depth, length = tokens.shape
    start, stop = crop_window(length, options.max_len, rng)
    n_rows = rows_in_budget(depth, stop - start, options.max_tokens, options.max_rows)
    window = tokens[:, start:stop]
    rows = select_rows(window, n_rows, options.strategy, rng, options)
    return rows, slice(start, stop)
