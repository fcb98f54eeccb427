"""Token-budget batching of alignments, fair-esm's ``get_batch_indices`` idea applied to MSAs.

An alignment of ``N`` rows and ``L`` columns costs ``N * (L + 1)`` tokens (the ``<cls>`` column included);
a padded batch costs ``len(batch) * max_N * max(L + 1)``. Alignments are sorted by shape inside a bounded
window of the input stream (so thousands of inputs are never all held in memory) and cut into batches whose
padded cost stays within ``toks_per_batch`` and whose padding stays a small fraction of it; one alignment
larger than the budget is a batch of its own
(the model then chunks its attention, see :mod:`msaformer.infer.msa`).

``same_depth=True`` only groups alignments with the same number of rows, so no padding rows are ever added.
Inference uses it for models whose row attention is scaled by the padded row count (fair-esm's convention,
``row_scaling="fair_esm"``), where a padding row would change the other MSAs' results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def msa_tokens(depth: int, length: int) -> int:
    """Returns the token count of one ``depth x length`` alignment with its ``<cls>`` column."""
    return depth * (length + 1)


def batch_indices(
    shapes: list[tuple[int, int]], toks_per_batch: int, *, same_depth: bool = False, max_padding: float = 0.25
) -> list[list[int]]:
    """Returns batches of indices into ``shapes`` (``(depth, length)`` pairs), padded cost <= budget.

    Indices are sorted by ``(depth, length)`` first, so alignments of similar shape land together. A batch
    is also closed when padding would exceed ``max_padding`` of its padded cost: padded rows and columns
    are computed (then masked) like real ones, so a 98-row MSA in a batch with a 256-row one would cost
    as much as a 256-row MSA.
    """
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0], shapes[i][1], i))
    batches: list[list[int]] = []
    buf: list[int] = []
    max_n = max_l = real = 0
    for i in order:
        n, length = shapes[i]
        if buf:
            padded = (len(buf) + 1) * msa_tokens(max(max_n, n), max(max_l, length))
            wasteful = padded - (real + msa_tokens(n, length)) > max_padding * padded
            if padded > toks_per_batch or wasteful or (same_depth and n != max_n):
                batches.append(buf)
                buf, max_n, max_l, real = [], 0, 0, 0
        buf.append(i)
        max_n, max_l, real = max(max_n, n), max(max_l, length), real + msa_tokens(n, length)
    if buf:
        batches.append(buf)
    return batches


def stream_batches(
    items: Iterable[T],
    shape: Callable[[T], tuple[int, int]],
    toks_per_batch: int,
    *,
    window: int = 256,
    same_depth: bool = False,
) -> Iterator[list[T]]:
    """Yields batches of ``items`` under the token budget, sorting within windows of ``window`` items."""
    pending: list[T] = []

    def flush() -> Iterator[list[T]]:
        shapes = [shape(x) for x in pending]
        for idx in batch_indices(shapes, toks_per_batch, same_depth=same_depth):
            yield [pending[i] for i in idx]
        pending.clear()

    for item in items:
        pending.append(item)
        if len(pending) >= window:
            yield from flush()
    if pending:
        yield from flush()
