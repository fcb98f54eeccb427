"""Batch inference commands: ``embed``, ``contacts``, ``score-variants`` (thin wrappers over msaformer.infer)."""

from __future__ import annotations

import contextlib
import enum
import signal
from pathlib import Path
from typing import Optional

import typer

from msaformer.cli._app import command, console, progress_bar
from msaformer.errors import MsaformerError

_INPUTS_HELP = "Alignment files (.a3m .a2m .fasta .sto ..., also .gz, .tar.gz), directories of them, shard directories."
_MAX_SEQS_HELP = "Rows kept per MSA, query included (default: 256, or the model's max_rows if fewer); 0 = all."


class Subsample(str, enum.Enum):
    first = "first"
    random = "random"
    greedy_diverse = "greedy_diverse"
    identity_filter = "identity_filter"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Dtype(str, enum.Enum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class OnError(str, enum.Enum):
    fail = "fail"
    skip = "skip"


class ContactMethod(str, enum.Enum):
    model = "model"
    potts = "potts"
    mi = "mi"


def _split_csv(text: str, option: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise MsaformerError(f"{option} is empty")
    return items


def _parse_layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _split_csv(text, "--repr-layers"))
    except ValueError:
        raise MsaformerError(f"--repr-layers {text!r}: expected comma-separated integers, e.g. -1 or 6,12") from None


@contextlib.contextmanager
def _terminate_cleanly():
    """Turns SIGTERM (a batch scheduler's kill) into SystemExit, so temporary outputs are removed."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. some test runners): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(summary, what: str) -> None:
    from msaformer.infer.distributed import launcher_ranks

    if not launcher_ranks().is_main:  # under a launcher rank 0 reports the whole run
        return
    rate = summary.msas_per_second
    console.print(
        f"[green]wrote[/] {summary.out} ({summary.ok} MSAs {what}, {summary.failed} skipped, {rate:.2f} MSAs/s); "
        f"index {summary.index}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    for key, path in summary.side_dirs.items():
        console.print(f"[green]wrote[/] {key}: {path}/", highlight=False)
    for source, reason in summary.errors[:5]:
        console.print(f"[yellow]skipped[/] {source}: {reason}", highlight=False, soft_wrap=True)
    if summary.reused:
        console.print(f"{summary.reused} MSA(s) reused from the previous {summary.out} (same model and options)",
                      highlight=False)
    if getattr(summary, "resumed_batches", 0):
        console.print(f"resumed: {summary.resumed_batches} of {summary.batches} batches were computed by the "
                      "interrupted run, the rest now", highlight=False)
    if len(summary.errors) > 5:
        console.print(f"[yellow]... and {len(summary.errors) - 5} more (see the index)[/]", highlight=False)


# Options shared by the commands (a fresh OptionInfo per use).
def _checkpoint_opt():
    return typer.Option(..., "--checkpoint", "-c", help="Model file (save_model, export-weights or convert-esm).")


def _index_opt():
    return typer.Option(None, "--index", help="Index CSV (default: OUT with suffix .csv).")


def _max_seqs_opt():
    return typer.Option(None, "--max-seqs", help=_MAX_SEQS_HELP, show_default=False)


def _subsample_opt():
    return typer.Option(Subsample.first, "--subsample", help="How rows are chosen when an MSA is deeper than --max-seqs.")


def _seed_opt():
    return typer.Option(0, help="Seed of --subsample random.")


def _toks_opt():
    return typer.Option(
        2**16, "--toks-per-batch",
        help="Padded tokens per forward, rows x (columns + 1) summed; also the chunking budget of larger MSAs.",
    )  # fmt: skip


def _device_opt():
    return typer.Option(Device.auto, help="auto: CUDA when visible, else CPU.")


def _dtype_opt():
    return typer.Option(Dtype.auto, help="auto: bf16 autocast on CUDA, fp32 on CPU.")


def _on_error_opt():
    return typer.Option(
        OnError.fail, "--on-error",
        help="fail: stop at the first unusable MSA and write nothing; skip: record it in the index and go on.",
    )  # fmt: skip


def _plot_opt():
    return typer.Option(False, "--plot", help="Also write a contact-map PNG per MSA into OUT_plots/.")


def _quiet_opt():
    return typer.Option(False, "--quiet", "-q", help="No progress bar.")


# New sequences (FASTA, no MSA yet) and long MSAs: the options embed, contacts and score-variants share.
def _db_opt():
    return typer.Option(None, "--db", help="INPUTS are FASTA files of sequences: search each against this FASTA "
                        "database first (jackhmmer, `msaformer search` defaults), then run the model.")


def _single_sequence_opt():
    return typer.Option(False, "--single-sequence", help="INPUTS are FASTA files of sequences: run each as a one-row "
                        "MSA (no search; weaker than a real MSA).")


def _msa_dir_opt():
    return typer.Option(None, "--msa-dir", help="Where --db / --single-sequence write the A3M files (default: "
                        "OUT without suffix + _msas/).")


def _window_opt():
    return typer.Option(0, "--window", help="Score MSAs longer than this many columns in overlapping windows of it "
                        "(at most the model's positions - 1); 0 = longer than the model: skipped.")


def _stride_opt():
    return typer.Option(None, "--stride", help="Columns between window starts (default: --window / 2).",
                        show_default=False)


def _alignment_inputs(inputs, out: Path, db, single_sequence: bool, msa_dir, progress) -> list:
    """Returns the alignments to run: ``inputs`` themselves, or the A3M files made for FASTA sequences."""
    if db is None and not single_sequence:
        if msa_dir is not None:
            raise MsaformerError("--msa-dir is only used with --db or --single-sequence")
        return list(inputs)
    from msaformer.infer.search import sequence_inputs

    if msa_dir is None:
        stem = out.with_suffix("") if out.suffix else out
        msa_dir = stem.with_name(stem.name + "_msas")
    return sequence_inputs(inputs, msa_dir, db=db, single_sequence=single_sequence, progress=progress)


@contextlib.contextmanager
def _launcher_group(out: Path, device: str = "auto"):
    """Holds one process group for a whole command under torchrun / deepspeed / srun (no-op otherwise)."""
    from msaformer.infer.distributed import ProcessGroup, launched_world_size, parts_dir

    if launched_world_size() <= 1:
        yield
        return
    with ProcessGroup(parts_dir(out), device):
        yield


def embed_cmd(
    inputs: list[Path] = typer.Argument(..., help=_INPUTS_HELP, show_default=False),
    checkpoint: Path = _checkpoint_opt(),
    out: Path = typer.Option(..., "--out", "-o", help="HDF5 file to write (atomically)."),
    index: Path = _index_opt(),
    include: str = typer.Option(
        "per_tok,mean,contacts,logits", help="Comma-separated: per_tok, mean, contacts, logits, contacts_csv."
    ),
    repr_layers: str = typer.Option(
        "-1", "--repr-layers", help="Comma-separated layers: 0 = embeddings, negative = counted from the end."
    ),
    max_seqs: Optional[int] = _max_seqs_opt(),
    subsample_mode: Subsample = _subsample_opt(),
    seed: int = _seed_opt(),
    toks_per_batch: int = _toks_opt(),
    device: Device = _device_opt(),
    dtype: Dtype = _dtype_opt(),
    on_error: OnError = _on_error_opt(),
    plot: bool = _plot_opt(),
    top_contacts: int = typer.Option(0, "--top-contacts", help="With contacts_csv: pairs kept per range class (0 = all)."),
    db: Optional[Path] = _db_opt(),
    single_sequence: bool = _single_sequence_opt(),
    msa_dir: Optional[Path] = _msa_dir_opt(),
    window: int = _window_opt(),
    stride: Optional[int] = _stride_opt(),
    quiet: bool = _quiet_opt(),
) -> None:
    """Embeddings, contacts and logits of the query of every MSA: one HDF5 group per MSA plus an index CSV."""
    from msaformer.infer.msa import EmbedOptions, embed

    opts = EmbedOptions(
        include=_split_csv(include, "--include"), repr_layers=_parse_layers(repr_layers),
        max_seqs=max_seqs, subsample=subsample_mode.value, seed=seed, toks_per_batch=toks_per_batch,
        device=device.value, dtype=dtype.value, on_error=on_error.value, plot=plot,
        top_contacts=top_contacts or None, window=window, stride=stride,
    )  # fmt: skip
    with _terminate_cleanly(), _launcher_group(out, device.value), progress_bar(not quiet) as progress:
        inputs = _alignment_inputs(inputs, out, db, single_sequence, msa_dir, progress)
        summary = embed(inputs, checkpoint, out, opts, index=index, progress=progress)
    _report(summary, "embedded")


def contacts_cmd(
    inputs: list[Path] = typer.Argument(..., help=_INPUTS_HELP, show_default=False),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", "-c", help="Model file (save_model, export-weights or convert-esm); --method model only."
    ),
    method: ContactMethod = typer.Option(
        ContactMethod.model, "--method",
        help="model: the model's contact head; potts: GREMLIN-style Potts fit; mi: mutual information (both APC, every row unless --max-seqs).",
    ),  # fmt: skip
    out: Path = typer.Option(..., "--out", "-o", help="HDF5 file of contact maps; ranked CSVs go to OUT_contacts/."),
    index: Path = _index_opt(),
    top: int = typer.Option(0, "--top", help="Pairs kept per range class in each ranked CSV (0 = all, separation >= 6)."),
    max_seqs: Optional[int] = _max_seqs_opt(),
    subsample_mode: Subsample = _subsample_opt(),
    seed: int = _seed_opt(),
    toks_per_batch: int = _toks_opt(),
    device: Device = _device_opt(),
    dtype: Dtype = _dtype_opt(),
    on_error: OnError = _on_error_opt(),
    plot: bool = _plot_opt(),
    db: Optional[Path] = _db_opt(),
    single_sequence: bool = _single_sequence_opt(),
    msa_dir: Optional[Path] = _msa_dir_opt(),
    window: int = _window_opt(),
    stride: Optional[int] = _stride_opt(),
    quiet: bool = _quiet_opt(),
) -> None:
    """Contact maps of every MSA's query, plus a ranked CSV per MSA (long range first, then medium, short)."""
    from msaformer.infer.msa import EmbedOptions, embed

    if method != ContactMethod.model:  # coevolution: no model; every row unless --max-seqs says otherwise
        from msaformer.contacts.predictors import PredictOptions, predict_contacts

        options = PredictOptions(method=method.value, max_seqs=max_seqs, subsample=subsample_mode.value, seed=seed,
                                 device=device.value)  # fmt: skip
        if checkpoint is not None:
            raise MsaformerError(f"--checkpoint is only read by --method model, not {method.value}")
        if window:
            raise MsaformerError(f"--window is only used by --method model, not {method.value}")
        from msaformer.infer.distributed import launched_world_size

        if launched_world_size() > 1:
            raise MsaformerError(f"--method {method.value} runs in one process: start it without torchrun / srun")
        with _terminate_cleanly(), progress_bar(not quiet) as progress:
            inputs = _alignment_inputs(inputs, out, db, single_sequence, msa_dir, progress)
            summary = predict_contacts(inputs, out, options, index=index, top=top or None, plot=plot,
                                       on_error=on_error.value, progress=progress)  # fmt: skip
        _report(summary, "predicted")
        return
    if checkpoint is None:
        raise MsaformerError("--method model needs --checkpoint MODEL (or use --method potts or mi)")
    opts = EmbedOptions(
        include=("contacts", "contacts_csv"), repr_layers=(), max_seqs=max_seqs,
        subsample=subsample_mode.value, seed=seed, toks_per_batch=toks_per_batch, device=device.value,
        dtype=dtype.value, on_error=on_error.value, plot=plot, top_contacts=top or None, window=window, stride=stride,
    )  # fmt: skip
    with _terminate_cleanly(), _launcher_group(out, device.value), progress_bar(not quiet) as progress:
        inputs = _alignment_inputs(inputs, out, db, single_sequence, msa_dir, progress)
        summary = embed(inputs, checkpoint, out, opts, index=index, progress=progress)
    _report(summary, "predicted")


def score_variants_cmd(
    msa: Path = typer.Option(..., "--msa", help="The alignment of the protein (query = first row)."),
    mutations: Path = typer.Option(
        ..., "--mutations", help="CSV with a 'mutation' (or 'mutant') column, or one per line: A23V, A23V:G40W."
    ),
    checkpoint: Path = _checkpoint_opt(),
    out: Path = typer.Option(..., "--out", "-o", help="CSV to write: the input columns plus 'score'."),
    max_seqs: Optional[int] = _max_seqs_opt(),
    subsample_mode: Subsample = _subsample_opt(),
    seed: int = _seed_opt(),
    toks_per_batch: int = _toks_opt(),
    device: Device = _device_opt(),
    dtype: Dtype = _dtype_opt(),
    db: Optional[Path] = typer.Option(None, "--db", help="--msa is a FASTA file of one sequence: search it against "
                                      "this FASTA database first (jackhmmer), then score."),
    single_sequence: bool = typer.Option(False, "--single-sequence", help="--msa is a FASTA file of one sequence: "
                                         "score it as a one-row MSA (weaker than a real MSA)."),
    msa_dir: Optional[Path] = _msa_dir_opt(),
) -> None:
    """Zero-shot masked-marginal variant scores: log p(mutant) - log p(wild type), the position masked."""
    from msaformer.infer.variants import score_variants

    with _terminate_cleanly(), _launcher_group(out, device.value):
        if db is not None or single_sequence:
            made = _alignment_inputs([msa], out, db, single_sequence, msa_dir, None)
            if len(made) != 1:
                raise MsaformerError(f"{msa}: holds {len(made)} sequences; score-variants needs exactly one")
            msa = made[0]
        elif msa_dir is not None:
            raise MsaformerError("--msa-dir is only used with --db or --single-sequence")
        rows = score_variants(
            msa, mutations, checkpoint, out, max_seqs=max_seqs, subsample_mode=subsample_mode.value, seed=seed,
            toks_per_batch=toks_per_batch, device=device.value, dtype=dtype.value,
        )  # fmt: skip
    from msaformer.infer.distributed import launcher_ranks

    if launcher_ranks().is_main:
        console.print(f"[green]wrote[/] {out} ({len(rows)} mutations scored)", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds ``embed``, ``contacts`` and ``score-variants`` to the root app."""
    command(app, "embed", embed_cmd)
    from msaformer.cli import contacts_cmds

    contacts_cmds.register(app, contacts_cmd)  # ``contacts`` (= ``contacts predict``), ``evaluate``, ``fit``
    command(app, "score-variants", score_variants_cmd)
    from msaformer.cli import search_cmds

    search_cmds.register(app)  # ``search``: MSAs for new sequences, the inputs of --db
