"""``msaformer preprocess / inspect / export``: thin wrappers over :mod:`msaformer.data.preprocess` and
:mod:`msaformer.data.shards`."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from msaformer.cli._app import command, console, progress_bar


class OnError(str, enum.Enum):
    fail = "fail"
    skip = "skip"


class Compression(str, enum.Enum):
    gzip = "gzip"
    none = "none"


def preprocess(
    inputs: List[str] = typer.Argument(..., help="Alignment files, directories (searched recursively), glob "
                                       "patterns, and databases: HH-suite ffindex (X, X.ffdata or X.ffindex), MMseqs2 "
                                       "(DB or DB.index), OpenFold alignment_db (its folder or super index).",
                                       show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for the shards and their index."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes of the local Dask cluster (1 = run in "
                                "this process, 0 = one per CPU core, at most 8)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS", help="Run on an existing Dask "
                                            "cluster: its scheduler's tcp:// address or scheduler file."),
    task_size: Optional[str] = typer.Option(None, "--task-size", metavar="BYTES", help="Input bytes per task (K, "
                                            "M, G suffixes); a task commits its own shards. Default: about 1/64 of "
                                            "the corpus, a power of two from 1M to 64M."),
    merge_per_chain: bool = typer.Option(False, "--merge-per-chain", help="Join each OpenFold chain's alignments "
                                         "(a chain directory's files, an alignment_db chain) into one record."),
    shard_size: int = typer.Option(4096, "--shard-size", help="Records per shard file."),
    max_seqs: Optional[int] = typer.Option(None, "--max-seqs", help="Keep the query and the first K-1 rows."),
    min_seqs: int = typer.Option(1, "--min-seqs", help="Drop alignments with fewer rows (after --dedup/--max-seqs)."),
    dedup: bool = typer.Option(False, "--dedup", help="Remove exact duplicate aligned rows (first kept)."),
    on_error: OnError = typer.Option(OnError.fail, "--on-error", help="fail: stop at the first bad input; "
                                     "skip: go on and list rejected inputs in a CSV report."),  # fmt: skip
    report: Optional[Path] = typer.Option(None, "--report", help="Rejected-inputs CSV (default OUT/rejected.csv)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the tasks already in OUT whose inputs are unchanged "
                                "(same key and content); redo the others."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the shards already in OUT."),
    compression: Compression = typer.Option(Compression.gzip, "--compression",
                                           help="gzip: HDF5 deflate, compressed by the workers; none: raw chunks."),
    max_expansion: int = typer.Option(64, "--max-expansion", help="A .gz input may decompress to this many times its "
                                      "size (and always to 64 MiB); beyond it is refused as a decompression bomb."),
    max_decompressed: str = typer.Option("16G", "--max-decompressed", metavar="BYTES", help="Ceiling of any .gz "
                                         "input's decompressed size, whatever --max-expansion allows."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Parse alignments (A3M, A2M, aligned FASTA, Stockholm; .gz, .tar; ffindex, MMseqs2 and OpenFold
    databases) into HDF5 shards."""
    from msaformer.data.preprocess import preprocess as run_preprocess

    with progress_bar(not quiet) as progress:
        result = run_preprocess(
            inputs, out, workers=workers, scheduler=scheduler, task_bytes=parse_size(task_size, "--task-size") if task_size else None,
            shard_size=shard_size, max_seqs=max_seqs, min_seqs=min_seqs, dedup=dedup, on_error=on_error.value,
            report=report, resume=resume, overwrite=overwrite, compression=compression.value,
            merge_per_chain=merge_per_chain, max_expansion=max_expansion,
            max_decompressed=parse_size(max_decompressed, "--max-decompressed"), progress=progress,
        )  # fmt: skip
    _print_summary(result)


def parse_size(text: str, option: str) -> int:
    """Returns the bytes of ``64M``, ``1G``, ``512K`` or a plain number."""
    from msaformer.errors import MsaformerError

    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("B")
    unit = value[-1:] if value[-1:] in units and value[-1:] else ""
    try:
        number = float(value[: len(value) - len(unit)] if unit else value)
    except ValueError:
        raise MsaformerError(f"{option} {text!r}: expected a size such as 64M, 1G or 500000") from None
    if number <= 0:
        raise MsaformerError(f"{option} {text!r} must be positive")
    return int(number * units[unit])


def _print_summary(result) -> None:
    from rich.table import Table

    table = Table(title=f"preprocess -> {result.out_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("inputs", f"{result.inputs:,}"),
        ("parsed", f"{result.parsed:,}"),
        ("skipped (--resume)", f"{result.skipped:,}"),
        ("rejected", f"{result.rejected:,}"),
        ("records written", f"{result.records:,}"),
        ("records filtered (--min-seqs)", f"{result.filtered:,}"),
        ("rows", f"{result.rows:,}"),
        ("MB read", f"{result.bytes_in / 1e6:,.2f}"),
        ("MB written", f"{result.bytes_out / 1e6:,.2f} in {result.shards} shard(s), {result.tasks} task(s)"),
        ("seconds", f"{result.seconds:,.2f}"),
        ("MB/s", f"{result.mb_per_s:,.1f}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for problem in result.repaired:
        console.print(f"[yellow]repaired[/] (inputs parsed again) {problem}", highlight=False, soft_wrap=True)
    if result.report is not None:
        console.print(f"[yellow]{result.rejected} input(s) rejected[/]; reasons in {result.report}", highlight=False)


def inspect(
    directory: Path = typer.Argument(..., help="A shard directory written by msaformer preprocess."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    records: bool = typer.Option(False, "--records", help="List every record (TSV: name, source, n_seq, n_res, shard, "
                                 "record, hash)."),
    verify_: bool = typer.Option(False, "--verify", help="First check every record's content hash (as msaformer "
                                 "verify); exit 1 on damage."),
) -> None:
    """Summarize a shard directory: records, rows, length and depth distributions, shards, bytes."""
    from msaformer.data.shards import ShardReader, summarize

    if verify_:
        verify(directory, quiet=False)
    if records:
        index = ShardReader(directory).index
        index[["name", "source", "n_seq", "n_res", "shard", "record", "hash"]].to_csv(sys.stdout, sep="\t", index=False)
        return
    summary = summarize(directory)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()  # the summary is the command's data: stdout
    head = Table(title=str(directory), title_justify="left", show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    for key in ("records", "rows", "cells", "inputs", "shards"):
        head.add_row(key, f"{summary[key]:,}")
    head.add_row("bytes on disk", f"{summary['bytes']:,} ({summary['bytes'] / 1e6:.2f} MB)")
    head.add_row("bytes per cell", f"{summary['bytes'] / max(summary['cells'], 1):.3f}")
    out.print(head)
    dist = Table(show_header=True)
    dist.add_column("")
    for key in ("min", "p5", "median", "p95", "max", "mean"):
        dist.add_column(key, justify="right")
    for label, key in (("length (columns)", "length"), ("depth (rows)", "depth")):
        values = summary[key]
        dist.add_row(label, *(f"{values[k]:,.0f}" if k in ("min", "max") else f"{values[k]:,.1f}" for k in
                              ("min", "p5", "median", "p95", "max", "mean")))  # fmt: skip
    out.print(dist)


def verify(
    directory: Path = typer.Argument(..., help="A shard directory written by msaformer preprocess."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Check a shard directory: index, shard layout and every record's content hash; exit 1 on any damage."""
    from msaformer.data.verify import verify_directory
    from msaformer.errors import ShardError

    with progress_bar(not quiet) as progress:
        report = verify_directory(directory, progress=progress)
    for problem in report.problems:
        console.print(f"[red]damaged[/] {problem}", highlight=False, soft_wrap=True)
    if report.problems:
        raise ShardError(
            f"{directory}: {len(report.problems)} of {report.tasks} task(s) damaged ({report.verified:,} of "
            f"{report.records:,} records verified); run msaformer preprocess --resume with the "
            "same inputs to re-parse them"
        )
    console.print(f"[green]ok[/] {directory}: {report.records:,} records in {report.shards} shard(s) verified "
                  "(content hashes match)", highlight=False)


def export(
    directory: Path = typer.Argument(..., help="A shard directory written by msaformer preprocess."),
    out: str = typer.Option(..., "--out", "-o", help="Output A3M file ('-' for stdout)."),
    record: Optional[str] = typer.Option(None, "--record", "-r", help="Only records with this name or source."),
) -> None:
    """Write records back as A3M (aligned rows with their stored headers; NUL between records)."""
    from msaformer.data.shards import export_a3m

    n = export_a3m(directory, sys.stdout.buffer if out == "-" else out, record=record)
    if out != "-":
        console.print(f"wrote {n} record(s) to {out}")


def demo(
    out: Path = typer.Argument(..., help="Folder to write the demo corpus into (msa/, truth/, promoter/).",
                               show_default=False),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed writes the same bytes)."),
) -> None:
    """Write a small synthetic corpus: Potts-model MSAs with planted contacts in every format, promoter sets."""
    from msaformer.demo import make_demo

    summary = make_demo(out, seed=seed)
    console.print(
        f"wrote {summary.alignment_files} alignment files ({summary.families} families, every format msaformer "
        f"reads) and {summary.broken_files} broken ones to {out}/msa, their planted contacts to {out}/truth, "
        f"{summary.promoter_records:,} promoter sequences to {out}/promoter ({summary.seconds:.1f} s)",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    """Adds ``demo``, ``preprocess``, ``inspect``, ``verify`` and ``export`` to the root app."""
    command(app, "demo", demo)
    command(app, "preprocess", preprocess)
    command(app, "inspect", inspect)
    command(app, "verify", verify)
    command(app, "export", export)
