"""One ``[L, L]`` contact map per alignment from any method: ``model`` (an msaformer model file's contact head,
fair-esm models converted with ``msaformer convert-esm`` included), ``potts`` or ``mi``
(:mod:`~msaformer.contacts.coevolution`); and :func:`predict_contacts`, the ``msaformer contacts --method
potts|mi`` pipeline, which writes the same HDF5 file, index and ranked CSVs as the model's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError
from msaformer.progress import Counter, ProgressCallback

METHODS = ("model", "potts", "mi")


@dataclass(frozen=True)
class PredictOptions:
    """How a contact map is made (the CLI flags). ``max_seqs``: rows kept, query included (None: the model's
    default of 256 for ``model``, every row for ``potts`` and ``mi``; 0: every row)."""

    method: str = "model"
    max_seqs: int | None = None
    subsample: str = "first"
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    toks_per_batch: int = 2**16
    potts_iterations: int = 100

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MsaformerError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.max_seqs is not None and self.max_seqs < 0:
            raise MsaformerError(f"--max-seqs must be at least 1 (the query), or 0 for all rows; got {self.max_seqs}")


class ContactPredictor:
    """Predicts contact maps of alignments with one method; a model is loaded once.

    Args:
        options: see :class:`PredictOptions`.
        checkpoint: the model file (``method="model"`` only).
        model: an already loaded :class:`~msaformer.model.MSALanguageModel` instead of ``checkpoint``.
    """

    def __init__(self, options: PredictOptions, checkpoint: str | Path | None = None, model=None):
        from msaformer.infer.msa import MsaInference

        self.options = options
        self.checkpoint = checkpoint
        self.runner = None
        if options.method == "model":
            kwargs = dict(device=options.device, dtype=options.dtype, toks_per_batch=options.toks_per_batch)
            if model is not None:
                self.runner = MsaInference(model, **kwargs)
            elif checkpoint is None:
                raise MsaformerError("--method model needs --checkpoint MODEL (or use --method potts or mi)")
            else:
                self.runner = MsaInference.from_checkpoint(checkpoint, **kwargs)
        elif checkpoint is not None:
            raise MsaformerError(f"--checkpoint is only read by --method model, not {options.method}")

    def rows(self, msa: Msa) -> Msa:
        """Returns the rows the method uses (subsampled as the options say)."""
        from msaformer.data.sampling import subsample

        opts = self.options
        limit = self.runner.rows_limit(opts.max_seqs) if self.runner is not None else (opts.max_seqs or None)
        return subsample(msa, limit, opts.subsample, opts.seed)

    def check(self, msa: Msa) -> str | None:
        """Returns why ``msa`` (after :meth:`rows`) cannot be predicted, or None."""
        if msa.length < 2:
            return f"{msa.length} column(s): a contact map needs at least 2"
        return self.runner.check(msa) if self.runner is not None else None

    def predict_rows(self, msa: Msa, progress: ProgressCallback | None = None) -> np.ndarray:
        """Returns the float32 ``[L, L]`` map of an alignment already reduced by :meth:`rows`."""
        from msaformer.contacts import coevolution

        reason = self.check(msa)
        if reason is not None:
            raise MsaformerError(f"{msa.source or 'alignment'}: {reason}")
        method = self.options.method
        if method == "model":
            out = self.runner.forward(self.runner.encode([msa]), contacts=True)
            return out["contacts"][0, : msa.length, : msa.length].float().cpu().numpy()
        counter = Counter("potts", "evaluations", progress)

        def step(done: int, total: int) -> None:
            counter.total, counter.done = max(total, done), done  # line searches may evaluate a few more
            counter.report()

        try:
            if method == "mi":
                return coevolution.mi_contacts(msa.tokens, device=self.options.device)
            options = coevolution.PottsOptions(iterations=self.options.potts_iterations)
            return coevolution.potts_contacts(msa.tokens, options, device=self.options.device, progress=step)
        except MsaformerError as exc:  # name the alignment (e.g. too large for the memory)
            raise MsaformerError(f"{msa.source or 'alignment'}: {exc}") from None

    def predict(self, msa: Msa, progress: ProgressCallback | None = None) -> np.ndarray:
        """Returns the float32 ``[L, L]`` contact map of ``msa`` (query columns)."""
        return self.predict_rows(self.rows(msa), progress)

    @property
    def value_name(self) -> str:
        """What the map holds: ``probability`` for a model's contact head, ``score`` for a coevolution method."""
        return "probability" if self.options.method == "model" else "score"


def predict_contacts(inputs: Sequence[str | Path], out: str | Path, options: PredictOptions, *,
                     index: str | Path | None = None, top: int | None = None, plot: bool = False,
                     on_error: str = "fail", progress: ProgressCallback | None = None):
    """Writes ``out`` (HDF5: one group per MSA with dataset ``contacts``), its index CSV, ranked CSVs in
    ``OUT_contacts/`` and (``plot``) PNGs in ``OUT_plots/`` for ``--method potts`` or ``mi``: the layout of
    :func:`msaformer.infer.msa.embed`. Returns its :class:`~msaformer.infer.msa.EmbedSummary`."""
    from msaformer import __version__
    from msaformer.data.inputs import UniqueNames, iter_inputs
    from msaformer.data.msa import content_hash
    from msaformer.infer.contacts import plot_contacts, write_ranked_contacts
    from msaformer.infer.msa import ON_ERROR, EmbedSummary, run_key
    from msaformer.infer.writer import ResultWriter

    if options.method == "model":
        raise MsaformerError("predict_contacts writes coevolution maps; use msaformer.infer.msa.embed for a model")
    if on_error not in ON_ERROR:
        raise MsaformerError(f"--on-error {on_error!r}: choose one of {', '.join(ON_ERROR)}")
    predictor = ContactPredictor(options)
    out = Path(out)
    stem = out.with_suffix("") if out.suffix else out
    side = {"contacts": stem.with_name(stem.name + "_contacts")}
    if plot:
        side["plots"] = stem.with_name(stem.name + "_plots")
    recorded = {k: v for k, v in asdict(options).items() if k not in ("device", "dtype", "toks_per_batch")}
    recorded["top"] = top or 0
    if options.method == "mi":
        recorded.pop("potts_iterations")
    root = {"checkpoint": "", "method": options.method, "msaformer_version": __version__, "options": recorded}
    key = run_key("", {"method": options.method}, recorded)
    summary, names = EmbedSummary(), UniqueNames()
    counter = Counter("contacts", "MSAs", progress)
    start = time.perf_counter()
    with ResultWriter(out, index, root, side, run_key=key) as writer:

        def record(item, group, depth, rows, length, status):
            writer.record(item.ordinal, dict(name=item.name, group=group, source=item.source, depth=depth,
                                             rows_used=rows, length=length, status=status))  # fmt: skip
            counter.advance(detail=f"{summary.failed} failed")

        for item in iter_inputs(inputs):
            reason, depth = item.error, item.msa.depth if item.msa is not None else 0
            msa = None
            if reason is None:
                input_hash = content_hash(item.msa.tokens)
                if writer.can_reuse(item.source, input_hash):
                    group = names(item.name)
                    attrs = writer.reuse(item.source, input_hash, group)
                    summary.ok += 1
                    summary.reused += 1
                    record(item, group, depth, int(attrs["rows_used"]), int(attrs["length"]), "ok")
                    continue
                msa = predictor.rows(item.msa)
                reason = predictor.check(msa)
            if reason is not None:
                if on_error == "fail":
                    raise MsaformerError(f"{item.source}: {reason} (use --on-error skip to record it and go on)")
                summary.failed += 1
                summary.errors.append((item.source, reason))
                record(item, "", depth, msa.depth if msa is not None else 0, msa.length if msa is not None else 0,
                       reason)
                continue
            item = replace(item, msa=None)  # the full alignment is not needed any more
            contacts = predictor.predict_rows(msa, progress)  # a Potts fit reports its evaluations
            group = names(item.name)
            writer.write(group, dict(name=item.name, source=item.source, input_hash=input_hash, depth=depth,
                                     rows_used=msa.depth, length=msa.length, query=msa.query),
                         {"contacts": contacts})  # fmt: skip
            write_ranked_contacts(writer.side["contacts"].path(group + ".csv"), contacts, top,
                                  value_name=predictor.value_name)
            if "plots" in writer.side:
                plot_contacts(writer.side["plots"].path(group + ".png"), contacts,
                              title=f"{item.name} ({options.method}; L={msa.length}, rows={msa.depth})",
                              value_name=predictor.value_name)  # fmt: skip
            summary.ok += 1
            record(item, group, depth, msa.depth, msa.length, "ok")
    summary.seconds = time.perf_counter() - start
    summary.out, summary.index, summary.side_dirs = out, writer.index, side
    return summary


__all__ = ["METHODS", "ContactPredictor", "PredictOptions", "predict_contacts"]
