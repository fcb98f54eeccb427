"""``msaformer contacts fit``: fit a model's contact head on structures, the way ESM fitted its released ones.

Features of a pair ``(i, j)``: the symmetrised, APC-corrected row-attention maps of every layer and head (what
:class:`msaformer.model.heads.ContactHead` computes before its regression), read off the query's columns;
labels: the true contacts of the pairs at separation >= 6 whose truth is known. An L1-regularised logistic
regression (scikit-learn, ``liblinear``, ``C = 0.15`` by default, ESM's choice) is fitted on the pairs of
every training protein together, and its weights become the contact head's regression in a new model file;
nothing else of the model changes. The fit's precision is reported on the training proteins and, given
others, on held-out ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from msaformer.contacts.evaluate import Pair, load_msa, load_truth, query_length, read_pairs, score_map
from msaformer.contacts.precision import METRICS, mean_row
from msaformer.contacts.predictors import ContactPredictor, PredictOptions
from msaformer.errors import MsaformerError
from msaformer.progress import Counter, ProgressCallback

MIN_SEPARATION = 6


@torch.no_grad()
def attention_features(predictor: ContactPredictor, msa) -> np.ndarray:
    """Returns float32 ``[layers * heads, L, L]``: the contact head's input features of ``msa`` (already
    reduced by ``predictor.rows``), layer-major as the head's regression weights are ordered."""
    from msaformer.model.heads import apc, symmetrize

    runner = predictor.runner
    reason = predictor.check(msa)
    if reason is not None:
        raise MsaformerError(f"{msa.source or 'alignment'}: {reason}")
    tokens = runner.encode([msa]).to(runner.device)
    with runner.autocast():
        out = runner.model(tokens, need_row_attentions=True)
    attn = out["row_attentions"][0, :, :, 1:, 1:].float()  # (layers, heads, L, L), <cls> dropped
    layers, heads, length, _ = attn.shape
    return apc(symmetrize(attn.reshape(layers * heads, length, length))).cpu().numpy()


@dataclass
class _Protein:
    name: str
    features: np.ndarray  # [C, L, L]
    truth: object  # StructureMaps
    query: str
    rows: int


def _proteins(pairs: Sequence[Pair], predictor: ContactPredictor, min_identity: float,
              counter: Counter) -> list[_Protein]:
    out = []
    for pair in pairs:
        msa = load_msa(pair)
        truth = load_truth(pair, msa.query, min_identity)
        used = predictor.rows(msa)
        out.append(_Protein(pair.name, attention_features(predictor, used), truth, msa.query, used.depth))
        counter.advance(detail=pair.name)
    return out


def _training_pairs(protein: _Protein) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(X [n, C], y [n])`` of the pairs ``i < j``, separation >= 6, truth known, query residues."""
    length = protein.features.shape[-1]
    residue = np.array([c not in "-." for c in protein.query])
    valid = protein.truth.valid & residue[:, None] & residue[None, :]
    i, j = np.triu_indices(length, k=MIN_SEPARATION)
    keep = valid[i, j]
    i, j = i[keep], j[keep]
    return protein.features[:, i, j].T.astype(np.float64), protein.truth.contacts[i, j].astype(np.int64)


def _precision_rows(proteins: Sequence[_Protein], weight: np.ndarray, bias: float) -> list[dict]:
    rows = []
    for p in proteins:
        logits = np.einsum("cij,c->ij", p.features.astype(np.float64), weight) + bias
        predicted = 1.0 / (1.0 + np.exp(-logits))
        scores = score_map(predicted, p.truth, p.query)
        rows.append({"name": p.name, "L": query_length(p.query), "rows": p.rows, "long_true": scores["long_true"],
                     **{m: scores[m] for m in METRICS}})
    return rows


def _l1() -> dict:
    """Returns the keyword that asks scikit-learn for an L1 penalty (``l1_ratio=1`` from 1.8 on, which
    deprecates ``penalty``)."""
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


@dataclass
class FitResult:
    """A fitted contact head: its weights, what it was fitted on, and its precision (rows per protein)."""

    weight: np.ndarray
    bias: float
    train: list[dict]
    holdout: list[dict] = field(default_factory=list)
    pairs: int = 0
    positives: int = 0
    nonzero: int = 0
    out: Path | None = None

    @property
    def train_mean(self) -> dict:
        return mean_row(self.train)

    @property
    def holdout_mean(self) -> dict:
        return mean_row(self.holdout) if self.holdout else {m: math.nan for m in METRICS}


def fit_contact_head(pairs: str | Path | Sequence[Pair], checkpoint: str | Path | None, out: str | Path | None, *,
                     holdout: str | Path | Sequence[Pair] | None = None, C: float = 0.15,
                     options: PredictOptions | None = None, model=None, min_identity: float = 0.9,
                     progress: ProgressCallback | None = None) -> FitResult:
    """Fits the contact head of the model at ``checkpoint`` (or ``model``) on ``pairs`` and writes the model with
    the fitted head to ``out`` (skipped when None). Returns the fit and its precision on ``pairs`` and
    ``holdout``."""
    from sklearn.linear_model import LogisticRegression

    from msaformer.model import save_model

    if not C > 0:
        raise MsaformerError(f"--c must be positive, got {C}")
    options = options or PredictOptions()
    if options.method != "model":
        raise MsaformerError("contacts fit fits a model's contact head; --method must be model")
    train_pairs = read_pairs(pairs) if isinstance(pairs, (str, Path)) else list(pairs)
    test_pairs = read_pairs(holdout) if isinstance(holdout, (str, Path)) else list(holdout or [])
    predictor = ContactPredictor(options, checkpoint, model=model)
    counter = Counter("features", "proteins", progress, total=len(train_pairs) + len(test_pairs))
    train = _proteins(train_pairs, predictor, min_identity, counter)
    test = _proteins(test_pairs, predictor, min_identity, counter)
    parts = [_training_pairs(p) for p in train]
    X = np.concatenate([x for x, _ in parts])
    y = np.concatenate([t for _, t in parts])
    if y.min(initial=1) == y.max(initial=0):
        raise MsaformerError("the training proteins have no true contact (or only contacts) at separation >= 6: "
                             "nothing to fit")
    regression = LogisticRegression(C=C, solver="liblinear", max_iter=1000, **_l1())
    regression.fit(X, y)
    weight = regression.coef_.reshape(-1).astype(np.float64)
    bias = float(regression.intercept_[0])
    result = FitResult(weight=weight, bias=bias, train=_precision_rows(train, weight, bias),
                       holdout=_precision_rows(test, weight, bias), pairs=int(y.size), positives=int(y.sum()),
                       nonzero=int(np.count_nonzero(weight)))  # fmt: skip
    if out is not None:
        fitted = predictor.runner.model.cpu()
        head = fitted.contact_head.regression
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype).view_as(head.weight))
            head.bias.fill_(bias)
        metadata = {"contact_head": {"fitted_on": [p.name for p in train], "C": C, "solver": "liblinear",
                                     "penalty": "l1", "pairs": result.pairs, "positives": result.positives,
                                     "source_model": str(checkpoint) if checkpoint is not None else "",
                                     "long_P@L_train": result.train_mean["long_P@L"]}}  # fmt: skip
        result.out = save_model(fitted, out, metadata=metadata)
    return result


__all__ = ["FitResult", "attention_features", "fit_contact_head"]
