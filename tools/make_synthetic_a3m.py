"""Write a large synthetic A3M file (deterministic from a seed) for parser and preprocess benchmarks.

The file looks like HHblits / ColabFold output: a ColabFold ``#`` line, hh-suite ``>ss_pred``/``>ss_conf``
pseudo-sequences before the query, a query without gaps, then hits with ``-`` gaps, lowercase insertions,
occasional ``.`` and a final ``*``, tab-separated headers, a share of records wrapped at 60 / 80 columns, and
CRLF line ends in a few records. The default (140,000 rows x 640 columns) is about 108 MB (103 MiB).

    python tools/make_synthetic_a3m.py /tmp/synthetic.a3m --rows 130000 --length 640 --seed 0
    python tools/make_synthetic_a3m.py /tmp/blocks.a3m --blocks 4000 --rows 10 --length 50   # NUL-separated

``make_synthetic(rows, length, seed)`` returns the bytes plus the expected token and deletion matrices, so
tests can check a parser against an independent construction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

RESIDUES = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
LOWER = RESIDUES + 32


def _rows(rng: np.random.Generator, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(tokens [n, L], insertion counts [n, L + 1])`` of hits: mutated query, gaps, insertions."""
    length = query.size
    tokens = np.where(rng.random((n, length)) < 0.3, RESIDUES[rng.integers(0, 20, (n, length))], query)
    # Gapped stretches at the ends (local hits) and a few gaps inside.
    left = rng.integers(0, max(length // 4, 1), n)[:, None]
    right = length - rng.integers(0, max(length // 4, 1), n)[:, None]
    columns = np.arange(length)[None, :]
    tokens[(columns < left) | (columns >= right) | (rng.random((n, length)) < 0.05)] = ord("-")
    counts = np.where(rng.random((n, length + 1)) < 0.02, rng.integers(1, 12, (n, length + 1)), 0)
    counts[rng.random(n) < 0.001, rng.integers(0, length)] = 300  # a few long insertions (clipped at 255)
    return tokens.astype(np.uint8), counts


def _row_text(rng: np.random.Generator, tokens: np.ndarray, counts: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """Return the A3M text of each row and the lowercase insertions before each column [n, L].

    Insert slots hold lowercase letters and a few '.' (dropped, not counted), then the column's token.
    """
    n, length = tokens.shape
    sizes = counts.copy()
    sizes[:, :length] += 1
    flat_sizes = sizes.ravel()
    ends = np.cumsum(flat_sizes)
    buf = LOWER[rng.integers(0, 20, int(ends[-1]))]
    buf[rng.random(buf.size) < 0.01] = ord(".")
    token_at = (ends.reshape(n, length + 1)[:, :length] - 1).ravel()
    buf[token_at] = tokens.ravel()
    row_ends = ends.reshape(n, length + 1)[:, -1]
    row_starts = np.concatenate(([0], row_ends[:-1]))
    dots = np.concatenate(([0], np.cumsum(buf == ord("."))))
    slot_starts = ends - flat_sizes
    lowercase = (flat_sizes - (dots[ends] - dots[slot_starts])).reshape(n, length + 1)[:, :length]
    lowercase[:, :length] -= 1  # the token itself
    data = buf.tobytes()
    return [data[s:e] for s, e in zip(row_starts.tolist(), row_ends.tolist())], lowercase


def make_synthetic(rows: int, length: int, seed=0, chunk: int = 8192, pseudo: bool = True):
    """Return ``(a3m_bytes, tokens [rows, L] uint8, deletions [rows, L] uint8)``; row 0 is the query.

    ``pseudo=False`` leaves out the ``>ss_pred``/``>ss_conf`` records (ColabFold server output has none).
    """
    rng = np.random.default_rng(seed)
    query = RESIDUES[rng.integers(0, 20, length)]
    out = [b"#%d\t1\n" % length]
    if pseudo:
        out += [b">ss_pred\n", b"C" * length + b"\n", b">ss_conf\n", b"9" * length + b"\n"]
    out += [b">101\n", query.tobytes() + b"\n"]
    all_tokens, all_deletions = [query[None, :].astype(np.uint8)], [np.zeros((1, length), np.uint8)]
    for start in range(1, rows, chunk):
        n = min(chunk, rows - start)
        tokens, counts = _rows(rng, query, n)
        texts, inserted = _row_text(rng, tokens, counts)
        wrap = rng.random(n)
        score = rng.random(n)
        for i, text in enumerate(texts):
            index = start + i
            if score[i] < 0.05:
                text += b"*"
            header = b">UniRef100_A0A%07d\t%d\t%.2f\t%.3E\t1\t%d\t%d" % (index, 100 + index % 900, score[i], score[i] / 1e30, length, length)
            if wrap[i] < 0.2:
                width = 60 if wrap[i] < 0.1 else 80
                text = b"\n".join(text[j : j + width] for j in range(0, len(text), width))
            if wrap[i] > 0.99:
                out.append(header + b"\r\n" + text.replace(b"\n", b"\r\n") + b"\r\n")
            else:
                out.append(header + b"\n" + text + b"\n")
        all_tokens.append(tokens)
        all_deletions.append(np.minimum(inserted, 255).astype(np.uint8))
    return b"".join(out), np.concatenate(all_tokens), np.concatenate(all_deletions)


def make_blocks(blocks: int, rows: int, length: int, seed: int = 0, vary: bool = False):
    """Return ``(bytes, [(tokens, deletions)] per block)`` of a file of NUL-separated small alignments.

    Like MMseqs2 / ColabFold server output (many small ``#L\t1`` blocks, each ending with a NUL byte); block k is
    ``make_synthetic(rows, length, seed=(seed, k), pseudo=False)``, with ``vary`` rows in [1, 2 * rows] and
    columns in [1, 2 * length] drawn per block.
    """
    rng = np.random.default_rng((seed, blocks))
    parts, expected = [], []
    for k in range(blocks):
        n, width = (int(rng.integers(1, 2 * rows + 1)), int(rng.integers(1, 2 * length + 1))) if vary else (rows, length)
        data, tokens, deletions = make_synthetic(n, width, seed=(seed, k), pseudo=False)
        parts.append(data)
        expected.append((tokens, deletions))
    return b"\x00".join(parts) + b"\x00", expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output .a3m path")
    parser.add_argument("--rows", type=int, default=140_000, help="rows, query included (default 140000)")
    parser.add_argument("--length", type=int, default=640, help="aligned columns (default 640)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=0,
                        help="write this many NUL-separated alignments of --rows x --length instead (ColabFold style)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.blocks:
        data, _ = make_blocks(args.blocks, args.rows, args.length, args.seed)
        shape = f"{args.blocks} blocks of {args.rows} rows x {args.length} columns"
    else:
        data, tokens, _ = make_synthetic(args.rows, args.length, args.seed)
        shape = f"{tokens.shape[0]} rows x {tokens.shape[1]} columns"
    args.out.write_bytes(data)
    print(f"wrote {args.out}: {len(data) / 1e6:.1f} MB, {shape} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
