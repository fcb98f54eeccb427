"""Write alignment databases in the layouts ``msaformer preprocess`` reads, from alignment files or generated.

Four writers, each following the format's own rules (the readers are :mod:`msaformer.data.databases` and
:mod:`msaformer.data.inputs`):

* :func:`write_ffindex` -- HH-suite ``X.ffdata`` + ``X.ffindex``: entries back to back, each ended by one NUL;
  index lines ``name<TAB>offset<TAB>length`` (length counts the NUL), sorted by name as ``ffindex_build -s``
  writes them.
* :func:`write_mmseqs` -- MMseqs2 ``DB`` + ``DB.index`` + ``DB.dbtype`` (4 bytes, little-endian int: 11 = MSA
  database), numeric keys, NUL-terminated entries; ``split=k`` writes the data as ``DB.0`` ... ``DB.{k-1}``
  whose concatenation the index offsets address (as MMseqs2's threaded writers leave it before merging).
* :func:`write_alignment_db` -- OpenFold ``<name>_<k>.db`` files of raw alignment files back to back plus a
  super index ``<name>.index``: ``{chain: {"db": FILE, "files": [[fname, offset, length], ...]}}``; a duplicate
  chain gets a copy of its representative's entry (the same bytes), as OpenFold's duplicate-chain handling does.
* :func:`write_openfold_dir` -- ``<root>/<chain>/<file>`` (or ``<root>/<chain>/a3m/<file>``, OpenProteinSet's
  layout), plus a ``.hhr`` file per chain that readers must ignore.

Command line (the corpus ``bench_corpus.py`` and the tests use)::

    python tools/make_databases.py ffindex OUT/uniclust ../shared/datasets/msa/esm/*.a3m
    python tools/make_databases.py mmseqs OUT/msa --split 2 ../shared/datasets/msa/colabfold/*.a3m
    python tools/make_databases.py alignment_db OUT/adb ../shared/datasets/msa/openfold/*
    python tools/make_databases.py synthetic-ffindex OUT/small --entries 1000000 --rows 4 --length 60
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

#: MMseqs2 database types (the low 16 bits of DB.dbtype) this writer uses.
MMSEQS_MSA, MMSEQS_SEQUENCES = 11, 0


def write_ffindex(base: str | os.PathLike, entries: Iterable[tuple[str, bytes]]) -> Path:
    """Writes ``base.ffdata`` and ``base.ffindex`` holding ``entries`` (name, bytes); returns ``base``."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    index = []
    offset = 0
    with open(f"{base}.ffdata", "wb") as data:
        for name, payload in entries:
            if "\t" in name or "\n" in name:
                raise ValueError(f"ffindex names hold no tabs or newlines: {name!r}")
            data.write(payload + b"\x00")
            index.append((name, offset, len(payload) + 1))
            offset += len(payload) + 1
    index.sort()
    with open(f"{base}.ffindex", "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(f"{name}\t{off}\t{length}\n" for name, off, length in index)
    return base


def write_mmseqs(base: str | os.PathLike, entries: Iterable[bytes], *, dbtype: int = MMSEQS_MSA, split: int = 1,
                 compressed: bool = False) -> Path:
    """Writes an MMseqs2 database of ``entries`` (keys 0, 1, ...): ``base`` (or ``base.0`` ... when ``split`` > 1),
    ``base.index`` and ``base.dbtype``; returns ``base``."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    payloads = [p + b"\x00" for p in entries]
    index, offset = [], 0
    for key, payload in enumerate(payloads):
        index.append((key, offset, len(payload)))
        offset += len(payload)
    blob = b"".join(payloads)
    if split <= 1:
        Path(base).write_bytes(blob)
    else:  # cut at entry ends, about evenly
        cuts = [0] + [index[min(len(index) - 1, (i * len(index)) // split)][1] for i in range(1, split)] + [len(blob)]
        for k in range(split):
            Path(f"{base}.{k}").write_bytes(blob[cuts[k] : cuts[k + 1]])
    with open(f"{base}.index", "w", encoding="ascii", newline="\n") as fh:
        fh.writelines(f"{key}\t{off}\t{length}\n" for key, off, length in index)
    Path(f"{base}.dbtype").write_bytes(struct.pack("<i", dbtype | (1 << 16 if compressed else 0)))
    return base


def write_alignment_db(folder: str | os.PathLike, chains: dict[str, list[tuple[str, bytes]]], *,
                       duplicates: dict[str, str] | None = None, name: str = "alignments", n_files: int = 2) -> Path:
    """Writes ``chains`` ({chain: [(file name, bytes), ...]}) as an OpenFold alignment_db under ``folder``:
    ``n_files`` ``.db`` files and the super index ``name.index``; ``duplicates`` ({alias: chain}) get the
    representative's entry. Returns the super index path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(chains)
    super_index: dict[str, dict] = {}
    handles = [open(folder / f"{name}_{k}.db", "wb") for k in range(n_files)]
    try:
        for i, chain in enumerate(order):
            k = i % n_files
            fh = handles[k]
            files = []
            for file_name, payload in chains[chain]:
                files.append([file_name, fh.tell(), len(payload)])
                fh.write(payload)
            super_index[chain] = {"db": f"{name}_{k}.db", "files": files}
    finally:
        for fh in handles:
            fh.close()
    for alias, chain in (duplicates or {}).items():
        super_index[alias] = json.loads(json.dumps(super_index[chain]))
    path = folder / f"{name}.index"
    path.write_text(json.dumps(super_index) + "\n", encoding="utf-8")
    return path


def write_openfold_dir(root: str | os.PathLike, chains: dict[str, list[tuple[str, bytes]]], *,
                       a3m_subdir: bool = False) -> Path:
    """Writes ``chains`` as an OpenFold alignment directory (``root/<chain>/<file>``; with ``a3m_subdir``,
    OpenProteinSet's ``root/<chain>/a3m/<file>``), with an hhsearch ``.hhr`` file per chain; returns ``root``."""
    root = Path(root)
    for chain, files in chains.items():
        folder = root / chain / ("a3m" if a3m_subdir else "")
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, payload in files:
            (folder / file_name).write_bytes(payload)
        hhr = root / chain / ("hhr" if a3m_subdir else "") / "pdb70_hits.hhr"
        hhr.parent.mkdir(parents=True, exist_ok=True)
        hhr.write_text(f"Query         {chain}\nMatch_columns 0\nNo_of_seqs    0 out of 0\n")
    return root


# ------------------------------------------------------------------------------------------ synthetic


def synthetic_entries(n: int, rows: int, length: int, seed: int = 0, *, vary: bool = True) -> Iterable[tuple[str, bytes]]:
    """Yields ``n`` small A3M entries (name, bytes): a ``#`` line, an ``ss_pred`` row, a query and ``rows - 1``
    hits with gaps and lowercase insertions, like HH-suite's UniClust30 A3M entries. Lengths vary around
    ``length`` when ``vary``. Deterministic from ``seed``; made in batches, so a million entries take seconds."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
    batch = 4096
    for first in range(0, n, batch):
        k = min(batch, n - first)
        widths = rng.integers(max(8, length // 2), length * 3 // 2 + 1, k) if vary else np.full(k, length)
        for j in range(k):
            width = int(widths[j])
            query = letters[rng.integers(0, 20, width)]
            hits = np.where(rng.random((rows - 1, width)) < 0.25, letters[rng.integers(0, 20, (rows - 1, width))], query)
            hits[rng.random((rows - 1, width)) < 0.1] = ord("-")
            name = f"uc{first + j:08d}"
            lines = [f"#{width} 1\n>ss_pred\n{'C' * width}\n>{name}\n".encode(), query.tobytes(), b"\n"]
            for r in range(rows - 1):
                text = hits[r].tobytes()
                cut = int(rng.integers(1, width))
                lines += [f">{name}_{r}\n".encode(), text[:cut], b"kl", text[cut:], b"\n"]
            yield name, b"".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("layout", choices=["ffindex", "mmseqs", "alignment_db", "openfold_dir", "synthetic-ffindex"])
    parser.add_argument("out", type=Path, help="the database base path (a folder for alignment_db / openfold_dir)")
    parser.add_argument("files", nargs="*", type=Path, help="alignment files to put in (one entry each)")
    parser.add_argument("--split", type=int, default=1, help="mmseqs: data files DB.0 ... (default 1: DB)")
    parser.add_argument("--entries", type=int, default=100_000, help="synthetic-ffindex: entries")
    parser.add_argument("--rows", type=int, default=4, help="synthetic-ffindex: rows per entry")
    parser.add_argument("--length", type=int, default=60, help="synthetic-ffindex: mean columns per entry")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.layout == "synthetic-ffindex":
        write_ffindex(args.out, synthetic_entries(args.entries, args.rows, args.length, args.seed))
    elif not args.files:
        parser.error("give the alignment files to put in the database")
    elif args.layout == "ffindex":
        write_ffindex(args.out, ((f.name, f.read_bytes()) for f in args.files))
    elif args.layout == "mmseqs":
        write_mmseqs(args.out, (f.read_bytes() for f in args.files), split=args.split)
    else:
        chains = {f.stem: [(f.name, f.read_bytes())] for f in args.files}
        if args.layout == "alignment_db":
            write_alignment_db(args.out, chains)
        else:
            write_openfold_dir(args.out, chains)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
