"""MSAs for new sequences: iterative jackhmmer search (HMMER3 through pyhmmer) against a FASTA database.

:func:`search` is ``msaformer search QUERIES.fasta --db TARGETS.fasta[.gz] --out DIR``. Each query is searched
on its own thread (``--cpus``) with pyhmmer's ``jackhmmer``: the query's HMM finds hits, the hits included by
E-value build the next HMM, for ``--iterations`` rounds or until no new hit is included. The final
iteration's alignment of the query and its included hits (HMMER's own ``jackhmmer -A`` alignment, the query
first) is written as one A3M file per query:

* the query first, every residue an aligned column (uppercase);
* the columns where the query has a residue are match columns: a hit's residues there are uppercase, its
  gaps ``-``;
* a hit's residues in the columns where the query has none are insertions, lowercase (the query's gaps there
  are dropped, as A3M does);
* a hit row identical to an earlier row is written once; ``--max-seqs`` rows at most, the query included,
  best hits first.

A query that finds nothing gives a one-row MSA and a note in the summary, not an error. File names are the
query identifiers made safe (``[A-Za-z0-9_.-]``) and unique (:class:`msaformer.data.inputs.UniqueNames`).
``DIR/summary.csv`` has one row per query: ``query, file, length, hits, depth, neff, time, note`` (``hits``:
target sequences included in the last iteration; ``depth``: A3M rows; ``neff``: :func:`neff`).

The target database is read into memory once (about one byte per residue, its names and descriptions).
Under a launcher (torchrun, deepspeed, srun) every rank searches every N-th query and rank 0 writes the
summary.
"""

from __future__ import annotations

import gzip
import io
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msaformer.errors import MsaformerError
from msaformer.progress import Counter, ProgressCallback

#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = ("query", "file", "length", "hits", "depth", "neff", "time", "note")
#: Identity at which two rows count as one in :func:`neff` (the usual 80 %).
NEFF_IDENTITY = 0.8
#: The largest FASTA file read (queries or targets), uncompressed.
MAX_FASTA_BYTES = 16 << 30


@dataclass(frozen=True)
class SearchOptions:
    """Options of one search (HMMER's ``jackhmmer`` flags in brackets)."""

    iterations: int = 3  # rounds at most [-N]; HMMER's default is 5, AlphaFold's and ColabFold's 1-3
    e_value: float = 10.0  # report hits with E <= this [-E]
    inc_e_value: float = 1e-3  # include hits with E <= this in the next round's model [--incE]
    max_seqs: int = 10000  # rows of each A3M at most, the query included
    cpus: int = 0  # threads; 0 = every core this process may use [--cpu]

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise MsaformerError(f"--iterations must be at least 1, got {self.iterations}")
        for name, value in (("--e-value", self.e_value), ("--inc-e-value", self.inc_e_value)):
            if not value > 0:
                raise MsaformerError(f"{name} must be positive, got {value}")
        if self.inc_e_value > self.e_value:
            raise MsaformerError(
                f"--inc-e-value {self.inc_e_value} is above --e-value {self.e_value}: included hits must be reported"
            )
        if self.max_seqs < 1:
            raise MsaformerError(f"--max-seqs must be at least 1 (the query), got {self.max_seqs}")
        if self.cpus < 0:
            raise MsaformerError(f"--cpus must be 0 (all) or positive, got {self.cpus}")

    @property
    def threads(self) -> int:
        if self.cpus:
            return self.cpus
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)


@dataclass
class QueryResult:
    """One query's search: its A3M file and the summary row."""

    query: str  # the identifier as in the FASTA file
    file: str  # the A3M file name (in the output folder)
    length: int
    hits: int = 0
    depth: int = 1
    neff: float = 1.0
    seconds: float = 0.0
    note: str = ""
    included: list[str] = field(default_factory=list)  # the included target sequences (not in the CSV)

    def row(self) -> list:
        return [self.query, self.file, self.length, self.hits, self.depth, f"{self.neff:.2f}",
                f"{self.seconds:.3f}", self.note]  # fmt: skip


@dataclass
class SearchSummary:
    """What a search wrote."""

    out: Path
    summary_csv: Path
    results: list[QueryResult] = field(default_factory=list)
    seconds: float = 0.0
    targets: int = 0  # sequences in the database

    @property
    def files(self) -> list[Path]:
        """The A3M files, in query order."""
        return [self.out / r.file for r in self.results]

    @property
    def queries_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0


# --- FASTA ------------------------------------------------------------------------------------------------------


def _open_bytes(path: Path, what: str) -> bytes:
    """Returns a FASTA file's bytes (gzip decompressed), at most :data:`MAX_FASTA_BYTES`."""
    if not path.is_file():
        raise MsaformerError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw
            chunks, size = [], 0
            while size <= MAX_FASTA_BYTES:
                chunk = stream.read(1 << 24)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise MsaformerError(f"{path}: cannot read this {what} ({type(exc).__name__}: {exc})") from None
    if len(data) > MAX_FASTA_BYTES:
        raise MsaformerError(f"{path}: larger than {MAX_FASTA_BYTES >> 30} GiB uncompressed; split it")
    return data


def read_fasta(path: str | os.PathLike, what: str = "FASTA file") -> list[tuple[str, str, str]]:
    """Returns ``(identifier, description, sequence)`` of every record of a (gzipped) FASTA file.

    Sequences are upper-cased, whitespace and a final ``*`` removed. Raises MsaformerError, naming the file and
    record, for an empty file, text before the first ``>``, an empty record, or a character that is not a
    residue letter (``-`` and ``.`` included: give unaligned sequences).
    """
    path = Path(path)
    data = _open_bytes(path, what)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MsaformerError(f"{path}: not an ASCII FASTA file (byte {exc.start})") from None
    records: list[tuple[str, str, str]] = []
    header: str | None = None
    chunks: list[str] = []
    line_no = 0

    def close() -> None:
        seq = "".join("".join(chunks).split()).upper().rstrip("*")
        ident, _, desc = header.partition(" ")
        if not ident:
            raise MsaformerError(f"{path}, record {len(records) + 1}: a '>' line without an identifier")
        if not seq:
            raise MsaformerError(f"{path}, record {len(records) + 1} ({ident}): no sequence")
        if not seq.isalpha():
            bad = next(c for c in seq if not c.isalpha())
            raise MsaformerError(
                f"{path}, record {len(records) + 1} ({ident}): {bad!r} is not a residue letter (give unaligned sequences)"
            )
        records.append((ident, desc.strip(), seq))

    for line_no, line in enumerate(text.splitlines(), 1):
        if line.startswith(">"):
            if header is not None:
                close()
            header, chunks = line[1:].strip(), []
        elif line.strip() and not line.startswith(";"):
            if header is None:
                raise MsaformerError(f"{path}, line {line_no}: sequence text before the first '>' header")
            chunks.append(line)
    if header is not None:
        close()
    if not records:
        raise MsaformerError(f"{path}: no FASTA records in this file")
    return records


def _digital(numbered, path: Path, alphabet):
    """Returns a pyhmmer DigitalSequenceBlock of ``(record number, FASTA record)`` pairs."""
    from pyhmmer import easel

    block = easel.DigitalSequenceBlock(alphabet)
    for n, (ident, desc, seq) in numbered:
        try:
            text = easel.TextSequence(name=ident.encode(), description=desc.encode(), sequence=seq)
            block.append(text.digitize(alphabet))
        except ValueError:
            bad = sorted({c for c in seq if c not in "ACDEFGHIKLMNPQRSTVWYBJZOUX"})
            raise MsaformerError(f"{path}, record {n} ({ident}): letters {''.join(bad)} are not amino acids") from None
    return block


def read_targets(path: str | os.PathLike):
    """Returns the target database as a pyhmmer DigitalSequenceBlock (amino acids)."""
    from pyhmmer import easel

    path = Path(path)
    alphabet = easel.Alphabet.amino()
    data = _open_bytes(path, "target database")
    try:
        with easel.SequenceFile(io.BytesIO(data), format="fasta", digital=True, alphabet=alphabet) as fh:
            block = fh.read_block()
    except (ValueError, EOFError, OSError) as exc:
        # easel's own message is terse: the Python reader names the record
        read_fasta(path, "target database")
        raise MsaformerError(f"{path}: cannot read this target database ({exc})") from None
    if len(block) == 0:
        raise MsaformerError(f"{path}: no sequences in this target database")
    return block


# --- A3M --------------------------------------------------------------------------------------------------------


def to_a3m_rows(query: str, rows: Sequence[str]) -> list[str]:
    """Returns A3M rows of an alignment whose first row is the query (as aligned, ``-`` / ``.`` gaps).

    Match columns are those where the query row has a residue; a query residue the alignment does not cover is
    added as a match column where every hit has a gap, so the first row is always the whole ``query``.
    """
    width = len(rows[0])
    grid = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), width).copy()
    grid[grid == ord("*")] = ord("-")
    grid[grid == ord("~")] = ord("-")
    grid[grid == ord(".")] = ord("-")
    match = grid[0] != ord("-")
    aligned_query = grid[0, match].tobytes().decode("ascii").upper()
    offset = query.find(aligned_query) if aligned_query else -1
    if offset < 0:
        raise MsaformerError(f"the search alignment's query row is not part of the query {query[:20]}...")
    before, after = offset, len(query) - offset - len(aligned_query)
    gaps = grid == ord("-")
    shaped = np.where(gaps, grid, grid & 0xDF)  # match columns: residues upper case, gaps '-'
    inserted = np.where(gaps, 0, grid | 0x20)  # other columns: residues lower case, gaps dropped (0)
    shaped[:, ~match] = inserted[:, ~match]
    pad_before, pad_after = b"-" * before, b"-" * after
    out = [query]
    for r in range(1, len(rows)):
        out.append((pad_before + shaped[r].tobytes().replace(b"\0", b"") + pad_after).decode("ascii"))
    return out


def neff(rows: Sequence[str], identity: float = NEFF_IDENTITY) -> float:
    """Returns the effective number of sequences of A3M rows: the sum over rows of 1 / (rows at least
    ``identity`` identical to it, itself included), identity = identical residues / match columns where both
    rows have a residue (insertions ignored)."""
    if len(rows) <= 1:
        return float(len(rows))
    matches = [bytes(c for c in row.encode("ascii") if not 97 <= c <= 122) for row in rows]
    grid = np.frombuffer(b"".join(matches), dtype=np.uint8).reshape(len(rows), -1)
    residues = grid != ord("-")
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWYX", dtype=np.uint8)
    onehot = np.concatenate([(grid == c) for c in letters], axis=1).astype(np.float32)  # [N, 21 L]
    both_res = residues.astype(np.float32)
    counts = np.zeros(len(rows), dtype=np.int64)
    block = 512
    for start in range(0, len(rows), block):
        same = onehot[start : start + block] @ onehot.T  # identical residues
        both = both_res[start : start + block] @ both_res.T  # columns where both have one
        ident = np.divide(same, both, out=np.zeros_like(same), where=both > 0)
        counts[start : start + block] = (ident >= identity).sum(axis=1)
    counts = np.maximum(counts, 1)
    return float((1.0 / counts).sum())


def a3m_text(names: Sequence[str], rows: Sequence[str]) -> str:
    """Returns an A3M file's text."""
    return "".join(f">{name}\n{row}\n" for name, row in zip(names, rows))


# --- the search -------------------------------------------------------------------------------------------------


def _search_one(query, targets, opts: SearchOptions):
    """Returns the final iteration of one query's jackhmmer search (one thread)."""
    from pyhmmer import hmmer

    return next(iter(hmmer.jackhmmer(query, targets, max_iterations=opts.iterations, cpus=1,
                                     E=opts.e_value, incE=opts.inc_e_value)))  # fmt: skip


def _result(ident: str, desc: str, seq: str, file: str, iteration, opts: SearchOptions) -> tuple[QueryResult, str]:
    """Returns the summary row and the A3M text of one query's final iteration."""
    included = [hit for hit in iteration.hits if hit.included]
    header = f"{ident} {desc}".strip()
    result = QueryResult(ident, file, len(seq), hits=len(included), included=[str(hit.name) for hit in included])
    msa = iteration.msa
    if not included or msa is None or len(msa.sequences) < 2:
        result.note = "no hits: one-row MSA" if not included else "no aligned hits: one-row MSA"
        return result, a3m_text([header], [seq])
    text = msa.textize()
    rows = to_a3m_rows(seq, list(text.alignment))
    names = [header] + [str(n) for n in list(text.names)[1:]]
    seen = {rows[0]}
    kept_names, kept = [names[0]], [rows[0]]
    for name, row in zip(names[1:], rows[1:]):
        if row in seen:
            continue
        seen.add(row)
        kept_names.append(name)
        kept.append(row)
        if len(kept) >= opts.max_seqs:
            break
    result.depth = len(kept)
    result.neff = neff(kept)
    if len(kept) == 1:
        result.note = "every hit is identical to the query: one-row MSA"
    return result, a3m_text(kept_names, kept)


def search(
    queries: str | os.PathLike,
    db: str | os.PathLike,
    out: str | os.PathLike,
    options: SearchOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    share: tuple[int, int] = (0, 1),
) -> SearchSummary:
    """Searches every sequence of ``queries`` against ``db`` and writes one A3M per query plus ``summary.csv``
    into ``out`` (created if missing); see the module docstring.

    ``share=(rank, world)`` searches only the queries ``rank, rank + world, ...`` and writes no summary
    (:func:`search_command` gathers the ranks' rows).
    """
    from pyhmmer import easel

    from msaformer.data.inputs import UniqueNames
    from msaformer.files import write_csv, write_text

    opts = options or SearchOptions()
    queries, out = Path(queries), Path(out)
    records = read_fasta(queries, "query file")
    names = UniqueNames()
    files = [names(ident) + ".a3m" for ident, _, _ in records]
    if out.exists() and not out.is_dir():
        raise MsaformerError(f"--out {out} exists and is not a folder")
    start = time.perf_counter()
    targets = read_targets(resolve_db(db))
    out.mkdir(parents=True, exist_ok=True)
    alphabet = easel.Alphabet.amino()
    rank, world = share
    mine = [i for i in range(len(records)) if i % world == rank]
    digital = _digital([(i + 1, records[i]) for i in mine], queries, alphabet)
    summary = SearchSummary(out, out / "summary.csv", targets=len(targets))
    counter = Counter("search", "queries", progress, total=len(mine))
    no_hits = 0

    def timed(k: int):
        t = time.perf_counter()
        return _search_one(digital[k], targets, opts), time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=opts.threads) as pool:
        for k, future in _bounded(pool, timed, range(len(mine)), 2 * opts.threads):
            iteration, seconds = future.result()
            ident, desc, seq = records[mine[k]]
            result, text = _result(ident, desc, seq, files[mine[k]], iteration, opts)
            result.seconds = seconds
            write_text(out / result.file, text)
            summary.results.append(result)
            no_hits += result.depth == 1
            counter.advance(detail=f"{no_hits} without hits")
    summary.seconds = time.perf_counter() - start
    if world == 1:
        write_csv(summary.summary_csv, SUMMARY_COLUMNS, (r.row() for r in summary.results))
    return summary


def _bounded(pool, fn, items, window: int) -> Iterator:
    """Yields ``(item, future)`` in order, with at most ``window`` calls submitted ahead."""
    pending = []
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            yield pending.pop(0)
    while pending:
        yield pending.pop(0)


def search_command(queries, db, out, options: SearchOptions | None = None, *,
                   progress: ProgressCallback | None = None) -> SearchSummary:
    """:func:`search` on one process, or on every rank of a launcher's job (each every N-th query, rank 0
    writing ``summary.csv``; ``cpus=0`` then means the node's cores / its ranks); returns the whole run's
    summary on every rank."""
    from msaformer.files import write_csv
    from msaformer.infer.distributed import ProcessGroup, launched_world_size

    if launched_world_size() <= 1:
        return search(queries, db, out, options, progress=progress)
    import dataclasses

    out = Path(out)
    opts = options or SearchOptions()
    with ProcessGroup(out / ".store", "cpu") as group:
        ranks = group.ranks
        if not opts.cpus:  # the node's cores shared by its ranks
            opts = dataclasses.replace(opts, cpus=max(1, opts.threads // max(1, ranks.local_world_size)))
        part = search(queries, db, out, opts, progress=progress if ranks.is_main else None,
                      share=(ranks.rank, ranks.world_size))  # fmt: skip
        shares = group.all_gather([(r.query, r.file, r.length, r.hits, r.depth, r.neff, r.seconds, r.note)
                                   for r in part.results])  # fmt: skip
        merged = [None] * sum(len(s) for s in shares)
        for rank, rows in enumerate(shares):
            for k, row in enumerate(rows):
                merged[rank + k * ranks.world_size] = QueryResult(*row)
        part.results = merged
        if ranks.is_main:
            write_csv(part.summary_csv, SUMMARY_COLUMNS, (r.row() for r in merged))
    return part


def single_sequence_msas(queries: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Writes a one-row A3M per sequence of ``queries`` into ``out`` (the ``--single-sequence`` inputs);
    returns the files in query order."""
    from msaformer.data.inputs import UniqueNames
    from msaformer.files import write_text

    records = read_fasta(queries, "query file")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = UniqueNames()
    paths = []
    for ident, desc, seq in records:
        path = out / (names(ident) + ".a3m")
        text = a3m_text([f"{ident} {desc}".strip()], [seq])
        if not path.is_file() or path.read_text() != text:  # unchanged files keep their reuse in embed
            write_text(path, text)
        paths.append(path)
    return paths


def resolve_db(db: str | os.PathLike) -> Path:
    """Returns the target database path: ``sample`` (when no such file exists) is :func:`sample_database`."""
    path = Path(db)
    if str(db) == "sample" and not path.exists():
        return sample_database()
    return path


def sample_database() -> Path:
    """Returns the bacterial proteome pyhmmer's wheel ships (2,100 proteins): a target database that needs no
    download."""
    import pyhmmer

    path = Path(pyhmmer.__file__).parent / "tests" / "data" / "seqs" / "938293.PRJEB85.HG003687.faa"
    if not path.is_file():
        raise MsaformerError(f"pyhmmer's sample proteome is not at {path} (this pyhmmer build leaves out its test data)")
    return path


def sequence_inputs(
    fasta: Sequence[str | os.PathLike],
    msa_dir: str | os.PathLike,
    *,
    db: str | os.PathLike | None = None,
    single_sequence: bool = False,
    options: SearchOptions | None = None,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Returns the A3M files made for FASTA files of new sequences: searched against ``db``
    (:func:`search_command`), or one-row MSAs with ``single_sequence``; the inputs of ``embed --db`` /
    ``--single-sequence``. With several FASTA files each gets its own subfolder of ``msa_dir`` (its name).

    Under a launcher every rank must call it (the search is shared out; one-row files are written by rank 0).
    """
    from msaformer.data.inputs import UniqueNames, display_name
    from msaformer.infer.distributed import launcher_ranks

    if (db is None) == (not single_sequence):
        raise MsaformerError("give either --db TARGETS.fasta (search first) or --single-sequence, not both")
    if not fasta:
        raise MsaformerError("no FASTA files of sequences given")
    msa_dir = Path(msa_dir)
    folders = UniqueNames()
    paths: list[Path] = []
    ranks = launcher_ranks()
    for path in map(Path, fasta):
        if path.is_dir():
            raise MsaformerError(f"{path} is a folder: with --db / --single-sequence give FASTA files of sequences")
        folder = msa_dir if len(fasta) == 1 else msa_dir / folders(display_name(path))
        if db is not None:
            paths += search_command(path, db, folder, options, progress=progress).files
        elif ranks.is_main:
            paths += single_sequence_msas(path, folder)
        else:
            names = UniqueNames()
            paths += [folder / (names(ident) + ".a3m") for ident, _, _ in read_fasta(path, "query file")]
    if single_sequence and ranks.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()  # the one-row files are written before any rank reads them
    return paths
