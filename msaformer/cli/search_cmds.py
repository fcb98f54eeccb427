"""``msaformer search QUERIES.fasta --db TARGETS.fasta[.gz] --out DIR``: MSAs for new sequences (thin wrapper over
:mod:`msaformer.infer.search`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._app import command, console, progress_bar


def search_cmd(
    queries: Path = typer.Argument(..., help="FASTA file of the query sequences (.gz too).", show_default=False),
    db: Optional[Path] = typer.Option(None, "--db", help="FASTA file of the target sequences (.gz too); "
                                      "--db sample: the 2,100-protein proteome pyhmmer ships.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for one A3M per query and summary.csv (created)."),
    iterations: int = typer.Option(3, "--iterations", "-N", help="Search rounds at most (jackhmmer -N)."),
    e_value: float = typer.Option(10.0, "--e-value", "-E", help="Report hits with E-value <= this (jackhmmer -E)."),
    inc_e_value: float = typer.Option(0.001, "--inc-e-value", help="Include hits with E-value <= this in the next "
                                      "round's model and the MSA (jackhmmer --incE)."),
    max_seqs: int = typer.Option(10000, "--max-seqs", help="Rows per A3M at most, the query included, best first."),
    cpus: int = typer.Option(0, "--cpus", help="Threads, one query each (0 = every core)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Iterative jackhmmer search (pyhmmer, HMMER3) of each query against a FASTA database: one A3M per query."""
    from msaformer.errors import MsaformerError
    from msaformer.infer.search import SearchOptions, search_command

    if db is None:
        raise MsaformerError("--db TARGETS.fasta is required (or --db sample for the proteome pyhmmer ships)")
    options = SearchOptions(iterations=iterations, e_value=e_value, inc_e_value=inc_e_value, max_seqs=max_seqs,
                            cpus=cpus)  # fmt: skip
    with progress_bar(not quiet) as progress:
        summary = search_command(queries, db, out, options, progress=progress)
    empty = sum(r.depth == 1 for r in summary.results)
    console.print(f"[green]wrote[/] {len(summary.results)} A3M files and {summary.summary_csv} "
                  f"({summary.targets} targets searched, {empty} without hits, "
                  f"{summary.queries_per_second:.2f} queries/s)", highlight=False, soft_wrap=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    """Adds ``search`` to the root app."""
    command(app, "search", search_cmd)
