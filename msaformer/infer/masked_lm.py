"""``msaformer evaluate``: how good an MSA language model is at its own task, beside a baseline that needs no model.

Every alignment is corrupted once the way training corrupts it (:func:`msaformer.data.collate.mask_tokens`:
15 % of the residues chosen; of those 80 % ``<mask>``, 10 % a random residue, 10 % unchanged), from a generator
seeded by ``seed`` and the alignment's content (:func:`msaformer.data.sampling.content_rng`), so a rerun masks
the same positions. On the chosen positions:

* the model: accuracy of its most likely token, and perplexity ``exp(mean -log p(true token))``;
* the column profile: each chosen position predicted from its column's tokens in the other rows that the
  model sees uncorrupted (the chosen positions of every row are left out), ``p = (count + u) / (n + 1)``
  with ``u`` uniform over the 27 letter and gap tokens (one pseudo-observation); its accuracy (most frequent
  token) and perplexity.

A model that has learned nothing beyond column statistics matches the profile; one that uses the other rows'
residues at other columns (coevolution) or its own row beats it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from msaformer.data.alphabet import VOCAB_SIZE, encode_msa
from msaformer.data.collate import IGNORE_INDEX, mask_tokens
from msaformer.errors import MsaformerError
from msaformer.progress import Counter, ProgressCallback

#: Token ids the profile's pseudocount is spread over: the letters and the gaps ('L' .. '-').
PROFILE_IDS = np.arange(4, 31)
COLUMNS = ("name", "source", "rows", "length", "masked", "model_accuracy", "model_perplexity", "profile_accuracy",
           "profile_perplexity")


@dataclass
class _Tally:
    masked: int = 0
    model_correct: int = 0
    model_nll: float = 0.0
    profile_correct: int = 0
    profile_nll: float = 0.0

    def add(self, other: _Tally) -> None:
        for key in ("masked", "model_correct", "model_nll", "profile_correct", "profile_nll"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def metrics(self) -> dict[str, float]:
        n = max(self.masked, 1)
        return {"masked": self.masked, "model_accuracy": self.model_correct / n,
                "model_perplexity": math.exp(self.model_nll / n), "profile_accuracy": self.profile_correct / n,
                "profile_perplexity": math.exp(self.profile_nll / n)}  # fmt: skip


@dataclass
class LmEvaluation:
    """Per-MSA rows (:data:`COLUMNS`), the pooled metrics over every masked position, and the failures."""

    rows: list[dict] = field(default_factory=list)
    overall: dict = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def profile_predictions(ids: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(predicted id, log p(target))`` of the column profile at the chosen positions
    (``targets != IGNORE_INDEX``) of ``ids [N, L]``, in ``np.nonzero`` order."""
    chosen = targets != IGNORE_INDEX
    length = ids.shape[1]
    counts = np.zeros((length, VOCAB_SIZE), dtype=np.float64)
    visible_rows, visible_cols = np.nonzero(~chosen)
    np.add.at(counts, (visible_cols, ids[visible_rows, visible_cols]), 1.0)
    pseudo = np.zeros(VOCAB_SIZE)
    pseudo[PROFILE_IDS] = 1.0 / PROFILE_IDS.size
    probs = (counts + pseudo) / (counts.sum(1, keepdims=True) + 1.0)  # (L, V)
    rows, cols = np.nonzero(chosen)
    target = targets[rows, cols]
    p = probs[cols, target]
    return probs.argmax(1)[cols], np.log(np.maximum(p, 1e-12))


def _evaluate_one(runner, msa, seed: int) -> _Tally:
    from msaformer.data.sampling import content_rng

    ids = encode_msa(msa.tokens)  # (N, L + 1), <cls> first
    inputs, targets = mask_tokens(ids, content_rng(msa.tokens, seed))
    out = runner.forward(torch.from_numpy(inputs)[None])
    logits = out["logits"][0].float()  # (N, L + 1, V)
    chosen = torch.from_numpy(targets != IGNORE_INDEX)
    target = torch.from_numpy(targets)[chosen]
    picked = logits[chosen.to(logits.device)].cpu()
    nll = torch.nn.functional.cross_entropy(picked, target, reduction="sum").item()
    correct = int((picked.argmax(-1) == target).sum())
    predicted, log_p = profile_predictions(ids[:, 1:], targets[:, 1:])
    target_np = targets[:, 1:][targets[:, 1:] != IGNORE_INDEX]
    return _Tally(masked=int(target.numel()), model_correct=correct, model_nll=nll,
                  profile_correct=int((predicted == target_np).sum()), profile_nll=float(-log_p.sum()))


def evaluate_lm(inputs: Sequence[str | Path], checkpoint: str | Path, out: str | Path | None = None, *,
                max_seqs: int | None = None, subsample: str = "first", seed: int = 0, device: str = "auto",
                dtype: str = "auto", toks_per_batch: int = 2**16, on_error: str = "fail", model=None,
                progress: ProgressCallback | None = None) -> LmEvaluation:
    """Evaluates the model at ``checkpoint`` (or ``model``) on every alignment of ``inputs`` (files, folders,
    shards, databases); writes the per-MSA CSV ``out`` (plus a final ``all`` row) when given."""
    from msaformer.data.inputs import iter_inputs
    from msaformer.data.sampling import subsample as take_rows
    from msaformer.files import write_csv
    from msaformer.infer.msa import ON_ERROR, MsaInference

    if on_error not in ON_ERROR:
        raise MsaformerError(f"--on-error {on_error!r}: choose one of {', '.join(ON_ERROR)}")
    started = time.perf_counter()
    kwargs = dict(device=device, dtype=dtype, toks_per_batch=toks_per_batch)
    runner = MsaInference(model, **kwargs) if model is not None else MsaInference.from_checkpoint(checkpoint, **kwargs)
    limit = runner.rows_limit(max_seqs)
    result, total = LmEvaluation(), _Tally()
    counter = Counter("evaluate", "MSAs", progress)
    for item in iter_inputs(inputs):
        reason = item.error
        msa = None
        if reason is None:
            msa = take_rows(item.msa, limit, subsample, seed)
            reason = runner.check(msa)
        if reason is not None:
            if on_error == "fail":
                raise MsaformerError(f"{item.source}: {reason} (use --on-error skip to go on without it)")
            result.errors.append((item.source, reason))
            counter.advance(detail=f"{len(result.errors)} skipped")
            continue
        tally = _evaluate_one(runner, msa, seed)
        total.add(tally)
        result.rows.append({"name": item.name, "source": item.source, "rows": msa.depth, "length": msa.length,
                            **tally.metrics()})  # fmt: skip
        counter.advance(detail=f"{len(result.errors)} skipped")
    if not result.rows:
        raise MsaformerError("no alignment could be evaluated" + (f" ({result.errors[0][0]}: {result.errors[0][1]})"
                                                                   if result.errors else ""))
    result.overall = {"name": "all", "source": "", "rows": sum(r["rows"] for r in result.rows), "length": "",
                      **total.metrics()}  # fmt: skip
    if out is not None:
        def fmt(v):
            return f"{v:.4f}" if isinstance(v, float) else v

        write_csv(out, COLUMNS, ([fmt(r[c]) for c in COLUMNS] for r in [*result.rows, result.overall]))
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["COLUMNS", "LmEvaluation", "evaluate_lm", "profile_predictions"]
