"""Masked-language-model corruption of one MSA, and padding of several into a batch.

BERT / MSA Transformer masking: 15% of the real tokens (not ``<cls>``, not padding) are chosen; of those
80% become ``<mask>``, 10% a random standard residue, 10% stay unchanged. The loss is computed on chosen
positions only: targets elsewhere are :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

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


def collate_msas(samples: list[dict]) -> dict:
    """Returns a padded batch of MSA samples as torch tensors.

    Each sample has ``tokens`` and ``targets`` (int64 ``[N_i, L_i + 1]``, ``<cls>`` column first) and may
    have ``index`` (the record it came from). The batch has:

    - ``tokens`` ``[B, N, L + 1]`` padded with ``<pad>`` (padded rows are all ``<pad>``, the model's
      convention), ``targets`` ``[B, N, L + 1]`` padded with :data:`IGNORE_INDEX`;
    - ``row_mask`` ``[B, N]`` and ``column_mask`` ``[B, L + 1]``: True for real rows / columns;
    - ``padding_mask`` ``[B, N, L + 1]``: True at padding;
    - ``index`` ``[B]`` (``-1`` when absent), and ``n_tokens``: the number of real tokens.
    """
    import torch

    if not samples:
        raise ValueError("collate_msas needs at least one sample")
    depth = max(s["tokens"].shape[0] for s in samples)
    width = max(s["tokens"].shape[1] for s in samples)
    batch = len(samples)
    tokens = np.full((batch, depth, width), PAD_IDX, dtype=np.int64)
    targets = np.full((batch, depth, width), IGNORE_INDEX, dtype=np.int64)
    row_mask = np.zeros((batch, depth), dtype=bool)
    column_mask = np.zeros((batch, width), dtype=bool)
    for b, sample in enumerate(samples):
        n, w = sample["tokens"].shape
        tokens[b, :n, :w] = sample["tokens"]
        targets[b, :n, :w] = sample["targets"]
        row_mask[b, :n] = True
        column_mask[b, :w] = True
    padding_mask = ~(row_mask[:, :, None] & column_mask[:, None, :])
    return {
        "tokens": torch.from_numpy(tokens),
        "targets": torch.from_numpy(targets),
        "row_mask": torch.from_numpy(row_mask),
        "column_mask": torch.from_numpy(column_mask),
        "padding_mask": torch.from_numpy(padding_mask),
        "index": torch.tensor([int(s.get("index", -1)) for s in samples], dtype=torch.int64),
        "n_tokens": int((~padding_mask).sum()),
    }
