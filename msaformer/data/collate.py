"""Masked-language-model corruption of one MSA, and padding of several into a typed batch.

BERT / MSA Transformer masking: 15% of the real tokens (not ``<cls>``, not padding) are chosen; of those
80% become ``<mask>``, 10% a random standard residue, 10% stay unchanged. The loss is computed on chosen
positions only: targets elsewhere are :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from msaformer.data.alphabet import CLS_IDX, EOS_IDX, MASK_IDX, PAD_IDX, RESIDUE_IDS

#: Target value of positions that carry no loss (``torch.nn.functional.cross_entropy``'s default).
IGNORE_INDEX = -100

_SPECIAL = np.array([CLS_IDX, PAD_IDX, EOS_IDX], dtype=np.int64)
_RESIDUES = np.array(RESIDUE_IDS, dtype=np.int64)


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(inputs, targets)`` for token ids ``ids`` (any shape, int64).

    ``targets`` holds the original id at chosen positions and :data:`IGNORE_INDEX` elsewhere. Each
    maskable position is chosen independently with probability ``mask_prob``; when none is chosen (short
    inputs), one maskable position is forced so every sample carries a loss.
    """
    ids = np.asarray(ids, dtype=np.int64)
    maskable = ~np.isin(ids, _SPECIAL)
    chosen = (rng.random(ids.shape) < mask_prob) & maskable
    if not chosen.any() and maskable.any():
        flat = np.flatnonzero(maskable)
        chosen.flat[flat[rng.integers(len(flat))]] = True
    action = rng.random(ids.shape)
    replacements = _RESIDUES[rng.integers(len(_RESIDUES), size=ids.shape)]
    inputs = ids.copy()
    to_mask = chosen & (action < mask_token_prob)
    to_random = chosen & (action >= mask_token_prob) & (action < mask_token_prob + random_token_prob)
    inputs[to_mask] = MASK_IDX
    inputs[to_random] = replacements[to_random]
    targets = np.where(chosen, ids, IGNORE_INDEX)
    return inputs, targets


def pad_stack(arrays: Sequence[np.ndarray], fill: int, min_shape: tuple[int, ...] = ()) -> np.ndarray:
    """Returns int64 ``[B, *max shape]``: each array of ``arrays`` (all of the same rank) in front, ``fill``
    after its end along every axis. ``min_shape`` sets a smallest padded shape (e.g. a model window).

    The one padding routine of every batch msaformer builds: MSA training samples, MSAs for inference and
    promoter sequences.
    """
    if not arrays:
        raise ValueError("pad_stack needs at least one array")
    rank = arrays[0].ndim
    shape = [max(a.shape[d] for a in arrays) for d in range(rank)]
    for d, size in enumerate(min_shape):
        shape[d] = max(shape[d], size)
    out = np.full((len(arrays), *shape), fill, dtype=np.int64)
    for b, a in enumerate(arrays):
        out[(b, *(slice(0, n) for n in a.shape))] = a
    return out


@dataclass(frozen=True)
class MsaSample:
    """One training MSA: masked token ids and their targets, int64 ``[N, L + 1]`` (``<cls>`` column first).

    ``targets`` holds the original id at masked positions and :data:`IGNORE_INDEX` elsewhere; ``record`` is the
    record's position in its split.
    """

    tokens: np.ndarray
    targets: np.ndarray
    record: int = -1


@dataclass(frozen=True)
class MsaBatch:
    """A padded batch of training MSAs.

    Attributes:
        tokens: ``[B, N, L + 1]`` int64, ``<pad>`` wherever an MSA is shallower or shorter than the batch
            (padded rows are all ``<pad>``, the model's convention).
        targets: ``[B, N, L + 1]`` int64, :data:`IGNORE_INDEX` at unmasked and padded positions.
        n_tokens: real (unpadded) tokens in the batch.
    """

    tokens: Any  # torch.Tensor
    targets: Any  # torch.Tensor
    n_tokens: int

    def to(self, device, non_blocking: bool = False) -> "MsaBatch":
        """Returns the batch with its tensors on ``device``."""
        return MsaBatch(self.tokens.to(device, non_blocking=non_blocking),
                        self.targets.to(device, non_blocking=non_blocking), self.n_tokens)


def collate_msas(samples: Sequence[MsaSample]) -> MsaBatch:
    """Returns the padded batch of ``samples``."""
    import torch

    if not samples:
        raise ValueError("collate_msas needs at least one sample")
    return MsaBatch(
        tokens=torch.from_numpy(pad_stack([s.tokens for s in samples], PAD_IDX)),
        targets=torch.from_numpy(pad_stack([s.targets for s in samples], IGNORE_INDEX)),
        n_tokens=int(sum(s.tokens.size for s in samples)),
    )
