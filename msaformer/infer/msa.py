"""Batch inference of an MSA language model on new alignments: embeddings, contacts, logits.

:func:`embed` is the whole ``msaformer embed`` / ``msaformer contacts`` pipeline: stream inputs
(:mod:`msaformer.data.inputs`), subsample rows (:func:`msaformer.data.sampling.subsample`), batch by token budget
(:mod:`~msaformer.infer.batching`), run the model (:mod:`~msaformer.infer.chunked` for MSAs larger than the
budget), and write one HDF5 group per MSA plus an index CSV (:mod:`~msaformer.infer.writer`); MSAs that a
previous output of the same run already holds are copied, not computed again. :class:`MsaInference` is the
reusable part: a model on a device with its precision and token budget, able to validate, batch and run
alignments; :mod:`~msaformer.infer.variants` builds on it too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msaformer.data.alphabet import GAP_IDX, PAD_IDX, encode_msa
from msaformer.data.collate import pad_stack
from msaformer.data.inputs import InputItem, UniqueNames, iter_inputs
from msaformer.data.msa import Msa, content_hash
from msaformer.data.sampling import STRATEGIES, subsample
from msaformer.errors import MsaformerError
from msaformer.infer.batching import stream_batches
from msaformer.infer.chunked import ChunkOptions, run_chunked
from msaformer.infer.windows import combine_windows, slice_columns, window_spans
from msaformer.progress import Counter, ProgressCallback

#: What ``--include`` may ask for. ``contacts_csv`` writes a ranked contact list per MSA (implies contacts).
INCLUDE_CHOICES = ("per_tok", "mean", "contacts", "logits", "contacts_csv")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bf16", "fp32")
ON_ERROR = ("fail", "skip")
#: Rows kept per MSA unless asked otherwise: the depth fair-esm's ESM-MSA-1b examples use.
DEFAULT_MAX_SEQS = 256


@dataclass(frozen=True)
class EmbedOptions:
    """Options of one ``embed`` run (the CLI flags, one to one)."""

    include: tuple[str, ...] = ("per_tok", "mean", "contacts", "logits")
    repr_layers: tuple[int, ...] = (-1,)  # negative = from the end; -1 = final layer (after the last norm)
    max_seqs: int | None = None  # rows kept per MSA, query included; None = min(256, model's max_rows); 0 = all
    subsample: str = "first"  # first | random | random_with_replacement | greedy_diverse | identity_filter
    seed: int = 0  # for the random strategies
    toks_per_batch: int = 2**16  # padded tokens per forward; also the model's chunking budget
    device: str = "auto"
    dtype: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    on_error: str = "fail"
    plot: bool = False
    top_contacts: int | None = None  # per range class in the ranked CSV; None = all pairs with s >= 6
    window: int = 0  # columns per window for longer MSAs (msaformer.infer.windows); 0 = longer MSAs are skipped
    stride: int | None = None  # columns between window starts; None = window // 2

    def __post_init__(self) -> None:
        bad = [x for x in self.include if x not in INCLUDE_CHOICES]
        if bad or not self.include:
            raise MsaformerError(
                f"--include {','.join(bad) or '(empty)'}: choose from {', '.join(INCLUDE_CHOICES)}"
            )
        for name, value, choices in (
            ("--subsample", self.subsample, STRATEGIES),
            ("--device", self.device, DEVICES),
            ("--dtype", self.dtype, DTYPES),
            ("--on-error", self.on_error, ON_ERROR),
        ):
            if value not in choices:
                raise MsaformerError(f"{name} {value!r}: choose one of {', '.join(choices)}")
        if self.max_seqs is not None and self.max_seqs < 0:
            raise MsaformerError(f"--max-seqs must be at least 1 (the query), or 0 for all rows; got {self.max_seqs}")
        if self.top_contacts is not None and self.top_contacts < 0:
            raise MsaformerError(
                f"--top-contacts (contacts: --top) must be 0 (all pairs) or positive, got {self.top_contacts}"
            )
        if self.window < 0 or (self.stride is not None and not 1 <= self.stride <= max(self.window, 1)):
            raise MsaformerError(
                f"--window {self.window} / --stride {self.stride}: the window must be >= 0 (0 = off) and the "
                "stride between 1 and the window"
            )
        if self.toks_per_batch < 1:
            raise MsaformerError(f"--toks-per-batch must be positive, got {self.toks_per_batch}")
        if not self.repr_layers and ({"per_tok", "mean"} & set(self.include)):
            raise MsaformerError("--repr-layers is empty but --include asks for per_tok/mean")

    @property
    def wants_contacts(self) -> bool:
        return "contacts" in self.include or "contacts_csv" in self.include or self.plot


@dataclass
class EmbedSummary:
    """What an ``embed`` run did: counts, time, and the files it wrote."""

    ok: int = 0
    failed: int = 0
    reused: int = 0  # of ok: copied from the previous output of the same run
    seconds: float = 0.0
    out: Path | None = None
    index: Path | None = None
    side_dirs: dict[str, Path] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    batches: int = 0  # multi-process runs: batches of the plan
    resumed_batches: int = 0  # of them: found in the part files of an interrupted run, not computed again

    @property
    def msas_per_second(self) -> float:
        return (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0


def resolve_device(device: str) -> torch.device:
    """Returns the torch device of ``auto | cpu | cuda`` (auto = CUDA when available)."""
    if device not in DEVICES:
        raise MsaformerError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MsaformerError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    return torch.device(device)


def resolve_repr_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Returns absolute layer indices (0 = embeddings, ``num_layers`` = final), negatives counted from the end."""
    out: list[int] = []
    for layer in layers:
        absolute = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= absolute <= num_layers:
            raise MsaformerError(
                f"--repr-layers {layer}: the model has layers 0..{num_layers} (or -{num_layers + 1}..-1)"
            )
        if absolute not in out:
            out.append(absolute)
    return out


class MsaInference:
    """A model ready for inference: eval mode, on a device, with its precision and token budget.

    Args:
        model: an :class:`~msaformer.model.MSALanguageModel`.
        device: ``auto | cpu | cuda``.
        dtype: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        toks_per_batch: padded tokens per forward; the model's no-grad chunking budget is set to it too,
            so one MSA larger than the budget runs chunked instead of running out of memory.
    """

    def __init__(self, model, device: str = "auto", dtype: str = "auto", toks_per_batch: int = 2**16):
        if dtype not in DTYPES:
            raise MsaformerError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        self.device = resolve_device(device)
        self.autocast_dtype = None
        if dtype == "bf16" or (dtype == "auto" and self.device.type == "cuda"):
            self.autocast_dtype = torch.bfloat16
        self.toks_per_batch = int(toks_per_batch)
        self.chunking = ChunkOptions(self.toks_per_batch)
        self.model = model.to(self.device).eval()
        self.config = model.config

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> MsaInference:
        """Returns an inference wrapper of the model saved at ``path`` (``save_model`` format)."""
        from msaformer.model import load_model

        path = Path(path)
        if not path.is_file():
            raise MsaformerError(f"checkpoint not found: {path} (export one with `msaformer export-weights`)")
        return cls(load_model(path, map_location="cpu"), **kwargs)

    @property
    def max_length(self) -> int:
        """Returns the longest alignment (columns, ``<cls>`` excluded) the model accepts."""
        return self.config.max_positions - 1

    @property
    def same_depth_batches(self) -> bool:
        """Whether only equal-depth MSAs may share a batch (fair-esm row scaling counts padded rows)."""
        return self.config.row_scaling == "fair_esm"

    def rows_limit(self, max_seqs: int | None) -> int | None:
        """Returns the rows to keep per MSA for a ``--max-seqs`` value: None -> the default
        (:data:`DEFAULT_MAX_SEQS`, or the model's ``max_rows`` when smaller), 0 -> no limit (``None``)."""
        if max_seqs is None:
            return min(DEFAULT_MAX_SEQS, self.config.max_rows or DEFAULT_MAX_SEQS)
        return max_seqs or None

    def check(self, msa: Msa) -> str | None:
        """Returns why the model cannot take ``msa`` (too long / too deep), or None when it can."""
        if msa.length > self.max_length:
            return (f"{msa.length} columns, longer than the model's {self.max_length} positions (crop the alignment, "
                "or score it in windows: --window)")
        if self.config.max_rows and msa.depth > self.config.max_rows:
            return (
                f"{msa.depth} rows after subsampling, deeper than the model's {self.config.max_rows} "
                "row embeddings (lower --max-seqs)"
            )
        return None

    def autocast(self):
        """Returns the autocast context of the chosen precision (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def encode(self, msas: Sequence[Msa]) -> torch.Tensor:
        """Returns padded token ids ``[B, max N, max L + 1]`` of alignments (``<cls>`` column first)."""
        return torch.from_numpy(pad_stack([encode_msa(m.tokens) for m in msas], PAD_IDX))

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, repr_layers: Sequence[int] = (), contacts: bool = False) -> dict:
        """Returns the model's output dict for ``tokens`` (moved to the device), under the chosen precision and
        within the token budget (:func:`msaformer.infer.chunked.run_chunked`)."""
        with self.autocast():
            return run_chunked(self.model, tokens.to(self.device), self.chunking, repr_layers,
                               return_contacts=contacts)


def _query_residue_mask(msa: Msa) -> np.ndarray:
    """Returns a bool ``[L]`` mask of the query's non-gap columns (all True if the query is all gaps)."""
    ids = encode_msa(msa.tokens[:1])[0, 1:]
    keep = (ids != GAP_IDX) & (msa.tokens[0] != ord("."))
    return keep if keep.any() else np.ones_like(keep)


def extract_results(
    out: dict, b: int, msa: Msa, include: Sequence[str], repr_layers: Sequence[int]
) -> dict[str, np.ndarray]:
    """Returns the float32 arrays of batch entry ``b`` (an ``msa`` of the batch): query row, ``<cls>`` excluded.

    Keys: ``per_tok`` ``[L, D]`` and ``mean`` ``[D]`` (or ``per_tok_layer{k}`` / ``mean_layer{k}`` for each
    layer when several are asked for), ``contacts`` ``[L, L]``, ``logits`` ``[L, 33]``.
    """
    length = msa.length
    arrays: dict[str, np.ndarray] = {}
    if "per_tok" in include or "mean" in include:
        residues = torch.from_numpy(_query_residue_mask(msa))
        for layer in repr_layers:
            per_tok = out["representations"][layer][b, 0, 1 : length + 1].float().cpu()
            suffix = "" if len(repr_layers) == 1 else f"_layer{layer}"
            if "per_tok" in include:
                arrays["per_tok" + suffix] = per_tok.numpy()
            if "mean" in include:
                arrays["mean" + suffix] = per_tok[residues].mean(dim=0).numpy()
    if "contacts" in include:
        arrays["contacts"] = out["contacts"][b, :length, :length].float().cpu().numpy()
    if "logits" in include:
        arrays["logits"] = out["logits"][b, 0, 1 : length + 1].float().cpu().numpy()
    return arrays


@dataclass
class _Prepared:
    item: InputItem  # without its full alignment, which can be much deeper than the rows kept
    depth: int  # rows in the file
    msa: Msa  # after subsampling
    group: str  # its group in the output (named in input order)
    input_hash: str  # SHA-256 of the full alignment
    spans: list[tuple[int, int]] = field(default_factory=list)  # column windows; one span = the whole MSA


@dataclass
class _Piece:
    """One window of one prepared alignment: what a batch entry is."""

    prepared: _Prepared
    k: int  # which window of ``prepared.spans``
    msa: Msa  # the window's columns (the whole alignment when there is one span)

    @property
    def shape(self) -> tuple[int, int]:
        return self.msa.depth, self.msa.length


def run_key(checkpoint: str | Path, model_config: dict, options: dict) -> str:
    """Returns the SHA-256 that says whether a previous output's results can be reused: of the model file's
    bytes (or its config when there is no file) and of the options that change results."""
    import hashlib

    digest = hashlib.sha256()
    path = Path(checkpoint)
    if path.is_file():
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
    else:
        digest.update(json.dumps(model_config, sort_keys=True).encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class EmbedRun:
    """What every step of one ``embed`` run needs: the model on its device and the resolved options.

    Shared by the one-process pipeline (:func:`embed`) and the multi-process one
    (:mod:`msaformer.infer.distributed`), so both prepare, batch, compute and write alignments the same way.
    """

    opts: EmbedOptions
    runner: MsaInference
    checkpoint: str | Path
    layers: list[int]
    max_rows: int | None
    stored: list[str]  # datasets written to the HDF5 file
    computed: list[str]  # what each alignment's forward returns (stored + contacts for the side files)
    side: dict[str, Path]
    root_attrs: dict[str, Any]
    key: str  # run_key of the output

    @classmethod
    def create(cls, checkpoint: str | Path, out: Path, opts: EmbedOptions, model=None) -> EmbedRun:
        from msaformer import __version__

        if model is None:
            runner = MsaInference.from_checkpoint(checkpoint, device=opts.device, dtype=opts.dtype,
                                                  toks_per_batch=opts.toks_per_batch)  # fmt: skip
        else:
            runner = MsaInference(model, device=opts.device, dtype=opts.dtype, toks_per_batch=opts.toks_per_batch)
        if opts.window > runner.max_length:
            raise MsaformerError(
                f"--window {opts.window} is wider than the model's {runner.max_length} positions; "
                f"use at most {runner.max_length}"
            )
        layers = resolve_repr_layers(opts.repr_layers, runner.config.num_layers)
        max_rows = runner.rows_limit(opts.max_seqs)
        if not ({"per_tok", "mean"} & set(opts.include)):
            layers = []
        stored = [x for x in opts.include if x != "contacts_csv"]
        computed = stored + (["contacts"] if opts.wants_contacts and "contacts" not in stored else [])
        side: dict[str, Path] = {}
        stem = out.with_suffix("") if out.suffix else out
        if opts.plot:
            side["plots"] = stem.with_name(stem.name + "_plots")
        if "contacts_csv" in opts.include:
            side["contacts"] = stem.with_name(stem.name + "_contacts")
        result_options = {**asdict(opts), "max_seqs": max_rows or 0}
        for name in ("toks_per_batch", "on_error", "device"):  # they do not change the stored results
            result_options.pop(name)
        result_options["device_type"] = runner.device.type
        root_attrs = {
            "checkpoint": str(checkpoint),
            "model_config": asdict(runner.config),
            "msaformer_version": __version__,
            "options": {**asdict(opts), "max_seqs": max_rows or 0},
            "repr_layers": layers,
            "device": str(runner.device),
            "precision": "bf16" if runner.autocast_dtype is not None else "fp32",
        }
        key = run_key(checkpoint, asdict(runner.config), result_options)
        return cls(opts, runner, checkpoint, layers, max_rows, stored, computed, side, root_attrs, key)

    def prepare(self, item: InputItem, group: str = "") -> _Prepared | str:
        """Returns the subsampled alignment of ``item`` with its column windows, or why the model cannot take it."""
        opts = self.opts
        msa = subsample(item.msa, self.max_rows, opts.subsample, opts.seed)
        spans = [(0, msa.length)]
        view = msa
        if opts.window and msa.length > opts.window:
            spans = window_spans(msa.length, opts.window, opts.stride or max(1, opts.window // 2))
            view = slice_columns(msa, *spans[0])
        reason = self.runner.check(view)
        if reason is not None:
            return reason
        return _Prepared(replace(item, msa=None), item.msa.depth, msa, group, content_hash(item.msa.tokens), spans)

    def pieces(self, p: _Prepared) -> list[_Piece]:
        """Returns the batch entries of a prepared alignment: one per column window."""
        if len(p.spans) == 1:
            return [_Piece(p, 0, p.msa)]
        return [_Piece(p, k, slice_columns(p.msa, a, b)) for k, (a, b) in enumerate(p.spans)]

    def piece_include(self, p: _Prepared) -> list[str]:
        """Returns what each window's forward must return (per_tok too when a windowed mean is asked for)."""
        if len(p.spans) > 1 and "mean" in self.computed and "per_tok" not in self.computed:
            return [*self.computed, "per_tok"]
        return self.computed

    def batches(self, pieces: Iterator[_Piece]) -> Iterator[list[_Piece]]:
        """Yields the batches of a stream of pieces (token budget, sorted within windows of the stream)."""
        return stream_batches(pieces, lambda piece: piece.shape, self.opts.toks_per_batch,
                              same_depth=self.runner.same_depth_batches)  # fmt: skip

    def compute(self, batch: Sequence[_Piece]) -> list[dict[str, np.ndarray]]:
        """Returns the arrays of every piece of ``batch`` (one forward)."""
        layers = self.layers
        result = self.runner.forward(self.runner.encode([piece.msa for piece in batch]), layers,
                                     contacts=self.opts.wants_contacts)  # fmt: skip
        out = [extract_results(result, b, piece.msa, self.piece_include(piece.prepared), layers)
               for b, piece in enumerate(batch)]  # fmt: skip
        del result
        return out

    def finish(self, p: _Prepared, pieces: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Returns the full-length arrays of an alignment from its windows' arrays (see
        :mod:`msaformer.infer.windows`); one window is returned as it is."""
        if len(p.spans) == 1:
            return dict(pieces[0])
        arrays = combine_windows(p.msa.length, p.spans, pieces)
        suffixes = [""] if len(self.layers) == 1 else [f"_layer{layer}" for layer in self.layers]
        if "mean" in self.computed:
            residues = _query_residue_mask(p.msa)
            for suffix in suffixes:
                arrays["mean" + suffix] = arrays["per_tok" + suffix][residues].mean(axis=0, dtype=np.float32)
        if "per_tok" not in self.computed:
            for suffix in suffixes:
                arrays.pop("per_tok" + suffix, None)
        return arrays

    def attrs(self, p: _Prepared) -> dict[str, Any]:
        """Returns the group attributes of a computed alignment."""
        return dict(name=p.item.name, source=p.item.source, input_hash=p.input_hash, depth=p.depth,
                    rows_used=p.msa.depth, length=p.msa.length, query=p.msa.query)  # fmt: skip

    def write(self, writer, group: str, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Writes one alignment's group and its side files (ranked contacts, plot)."""
        from msaformer.infer.contacts import plot_contacts, write_ranked_contacts

        arrays = dict(arrays)
        contacts = arrays.get("contacts")
        if "contacts" not in self.stored:
            arrays.pop("contacts", None)
        writer.write(group, attrs, arrays)
        if "contacts" in writer.side:
            write_ranked_contacts(writer.side["contacts"].path(group + ".csv"), contacts, self.opts.top_contacts)
        if "plots" in writer.side:
            plot_contacts(writer.side["plots"].path(group + ".png"), contacts,
                          title=f"{attrs['name']}  (L={attrs['length']}, rows={attrs['rows_used']})")  # fmt: skip


def embed(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out: str | Path,
    options: EmbedOptions | None = None,
    *,
    index: str | Path | None = None,
    model=None,
    progress: ProgressCallback | None = None,
) -> EmbedSummary:
    """Runs the model on every alignment of ``inputs`` and writes ``out`` (HDF5) and its index CSV.

    Under a launcher (``torchrun``, ``deepspeed``, SLURM ``srun``; more than one rank) the work is shared out
    by :func:`msaformer.infer.distributed.embed_distributed`, which writes the same files.

    Args:
        inputs: alignment files, directories of them, shard directories or alignment databases.
        checkpoint: a ``save_model`` file; recorded in the output (``model`` may pass an already loaded model).
        out: the HDF5 file to write (atomically).
        options: see :class:`EmbedOptions`.
        index: the index CSV (default ``out`` with suffix ``.csv``).
        progress: called as MSAs are done (see :mod:`msaformer.progress`).

    Returns:
        What was written, with per-MSA failures (only under ``on_error="skip"``).

    Raises:
        MsaformerError: a bad option or input, or (``on_error="fail"``) the first unusable alignment; in
            that case nothing is written.
    """
    from msaformer.infer import distributed
    from msaformer.infer.writer import ResultWriter

    opts = options or EmbedOptions()
    out = Path(out)
    if distributed.launched_world_size() > 1:
        return distributed.embed_distributed(inputs, checkpoint, out, opts, index=index, model=model,
                                             progress=progress)  # fmt: skip
    run = EmbedRun.create(checkpoint, out, opts, model)
    summary = EmbedSummary()
    names = UniqueNames()
    counter = Counter("embed", "MSAs", progress)
    start = time.perf_counter()

    def advance() -> None:
        counter.advance(detail=f"{summary.failed} failed" + (f", {summary.reused} reused" if summary.reused else ""))

    with ResultWriter(out, index, run.root_attrs, run.side, run_key=run.key) as writer:

        def fail(item: InputItem, reason: str, depth: int = 0, rows: int = 0, length: int = 0) -> None:
            if opts.on_error == "fail":
                raise MsaformerError(f"{item.source}: {reason} (use --on-error skip to record it and go on)")
            summary.failed += 1
            summary.errors.append((item.source, reason))
            writer.record(item.ordinal, dict(name=item.name, group="", source=item.source, depth=depth,
                                             rows_used=rows, length=length, status=reason))  # fmt: skip
            advance()

        def ok(item: InputItem, group: str, depth: int, rows: int, length: int) -> None:
            writer.record(item.ordinal, dict(name=item.name, group=group, source=item.source, depth=depth,
                                             rows_used=rows, length=length, status="ok"))  # fmt: skip
            summary.ok += 1
            advance()

        def pieces() -> Iterator[_Piece]:
            for item in iter_inputs(inputs):
                if item.error is not None:
                    fail(item, item.error)
                    continue
                input_hash = content_hash(item.msa.tokens)
                if writer.can_reuse(item.source, input_hash):
                    group = names(item.name)
                    attrs = writer.reuse(item.source, input_hash, group)
                    summary.reused += 1
                    ok(item, group, int(attrs["depth"]), int(attrs["rows_used"]), int(attrs["length"]))
                    continue
                prepared = run.prepare(item)
                if isinstance(prepared, str):
                    msa = subsample(item.msa, run.max_rows, opts.subsample, opts.seed)
                    fail(item, prepared, item.msa.depth, msa.depth, msa.length)
                    continue
                prepared.group = names(item.name)
                yield from run.pieces(prepared)

        windows: dict[int, dict[int, dict[str, np.ndarray]]] = {}  # windowed alignments still incomplete
        for batch in run.batches(pieces()):
            for piece, arrays in zip(batch, run.compute(batch)):
                p = piece.prepared
                done = windows.setdefault(id(p), {})
                done[piece.k] = arrays
                if len(done) < len(p.spans):
                    continue
                del windows[id(p)]
                run.write(writer, p.group, run.attrs(p), run.finish(p, [done[k] for k in range(len(p.spans))]))
                ok(p.item, p.group, p.depth, p.msa.depth, p.msa.length)

    summary.seconds = time.perf_counter() - start
    summary.out, summary.index = out, writer.index
    summary.side_dirs = run.side
    return summary


def read_embeddings(path: str | Path) -> dict[str, dict[str, Any]]:
    """Returns ``{group: {"attrs": {...}, dataset: np.ndarray}}`` of an ``embed`` output file (small files)."""
    import h5py

    out: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "r") as h5:
        for name, grp in h5.items():
            entry: dict[str, Any] = {"attrs": dict(grp.attrs)}
            for key, ds in grp.items():
                entry[key] = ds[()]
            out[name] = entry
    return out


def root_attributes(path: str | Path) -> dict[str, Any]:
    """Returns the root attributes of an ``embed`` output, JSON fields decoded."""
    import h5py

    with h5py.File(path, "r") as h5:
        attrs = dict(h5.attrs)
    for key in ("model_config", "options", "repr_layers"):
        if key in attrs and isinstance(attrs[key], str):
            attrs[key] = json.loads(attrs[key])
    return attrs


__all__ = [
    "EmbedOptions",
    "EmbedRun",
    "EmbedSummary",
    "MsaInference",
    "embed",
    "extract_results",
    "read_embeddings",
    "resolve_repr_layers",
    "root_attributes",
]
