"""The in-memory alignment record shared by parsers, shards, datasets and inference."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Msa:
    """One multiple sequence alignment, query row first.

    Attributes:
        names: one header per row (the text after ``>`` up to the end of the line, stripped).
        tokens: ``[N_seq, N_res]`` uint8, ASCII codes of the aligned characters (uppercase letters, ``-``).
        deletions: ``[N_seq, N_res]`` uint8, number of inserted residues before each aligned column,
            clipped at 255.
        source: where the alignment came from: the file path, plus ``::member`` for an archive member and
            ``#block`` for the k-th NUL-separated block (both only when relevant).
        metadata: comment lines (``#...``) found before the first record, without the ``#``.
    """

    names: list[str]
    tokens: np.ndarray
    deletions: np.ndarray
    source: str = ""
    metadata: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.tokens.dtype != np.uint8 or self.deletions.dtype != np.uint8:
            raise TypeError("Msa.tokens and Msa.deletions must be uint8 arrays")
        if self.tokens.ndim != 2 or self.tokens.shape != self.deletions.shape:
            raise ValueError(f"tokens {self.tokens.shape} and deletions {self.deletions.shape} must be equal 2-D shapes")
        if len(self.names) != self.tokens.shape[0]:
            raise ValueError(f"{len(self.names)} names for {self.tokens.shape[0]} rows")

    @property
    def depth(self) -> int:
        """Number of rows (query included)."""
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        """Number of aligned columns (the query length)."""
        return int(self.tokens.shape[1])

    @property
    def query(self) -> str:
        """The query row as text (aligned columns only)."""
        return self.tokens[0].tobytes().decode("ascii") if self.depth else ""

    @property
    def sequences(self) -> list[str]:
        """The aligned rows as text, query first."""
        width = self.length
        flat = np.ascontiguousarray(self.tokens).tobytes().decode("ascii")
        return [flat[i * width : (i + 1) * width] for i in range(self.depth)]

    def content_hash(self) -> str:
        """SHA-256 (hex) of the aligned rows joined by ``\\n`` (no trailing newline).

        This is the canonical hash of ``../shared/datasets/msa/expected.tsv``.
        """
        return content_hash(self.tokens)

    def __len__(self) -> int:
        return self.depth


def content_hash(tokens: np.ndarray) -> str:
    """Returns :meth:`Msa.content_hash` of a token matrix ``[N, L]`` (rows joined by ``\\n``), without Python
    strings."""
    n, width = tokens.shape
    # ~1 MiB of rows at a time through one reused buffer: a full [N, L + 1] copy costs more in page faults
    # than SHA-256 itself
    rows = max(1, min(n, (1 << 20) // (width + 1)))
    lines = np.empty((rows, width + 1), dtype=np.uint8)
    lines[:, width] = ord("\n")
    flat = memoryview(lines.reshape(-1))
    digest = hashlib.sha256()
    for first in range(0, n, rows):
        k = min(rows, n - first)
        lines[:k, :width] = tokens[first : first + k]
        digest.update(flat[: k * (width + 1) - (first + k == n)])  # no newline after the last row
    return digest.hexdigest()
