"""No-grad inference of MSAs larger than a token budget: the one chunked runner.

:func:`run_chunked` gives the outputs of ``model(tokens, ...)`` (same keys, same values up to float rounding)
while no projection, layer norm or feed-forward block ever sees more than ``ChunkOptions.token_budget`` tokens
at once, and the whole stack runs in one MSA-sized buffer updated in place:

* the embedding is computed for blocks of rows, straight into the buffer;
* tied row attention sums its logits over blocks of rows, then attends and adds each block's update: the
  update of a block reads only that block's (not yet updated) rows, so updating in place is exact;
* column attention runs over blocks of columns (a column's update reads only that column);
* the feed-forward block, the final layer norm and the LM head run over blocks of tokens.

A requested representation is copied out of the buffer at its layer (the last one is the normed buffer
itself). Inputs within the budget run the model's own ``forward`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from msaformer.data.alphabet import PAD_IDX
from msaformer.errors import MsaformerError
from msaformer.model.msa_lm import check_repr_layers


@dataclass(frozen=True)
class ChunkOptions:
    """How much of an MSA one step of no-grad inference may hold.

    Attributes:
        token_budget: tokens (rows x columns, summed over the batch, ``<cls>`` column included) that an
            embedding, layer norm, projection, feed-forward block or the LM head sees at once.
    """

    token_budget: int = 65536

    def __post_init__(self) -> None:
        if not isinstance(self.token_budget, int) or self.token_budget < 1:
            raise MsaformerError(f"the token budget must be a positive integer, got {self.token_budget!r}")


def _blocks(n: int, size: int) -> list[slice]:
    size = max(1, size)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _layer_in_place(layer, x: torch.Tensor, mask, budget: int) -> torch.Tensor:
    """Applies one :class:`~msaformer.model.trunk.AxialLayer` to ``x [B, N, L, D]`` in place; returns its
    row attention ``[B, H, L, L]``."""
    B, N, L, D = x.shape
    row_blocks = _blocks(N, budget // (B * L))
    rows = layer.row_attention
    logits = None
    for block in row_blocks:
        part = rows.tied_logits(layer.row_norm(x[:, block]), mask, block)
        logits = part if logits is None else logits.add_(part)
    probs = rows.probs(logits, mask)
    for block in row_blocks:
        x[:, block] += rows.attend(probs, layer.row_norm(x[:, block]))
    columns = layer.column_attention
    for cols in columns.column_blocks(B, L, max(1, budget // (B * N))):
        x[:, :, cols] += columns.attend(layer.column_norm(x[:, :, cols]), mask, cols)
    flat = x.view(-1, D)
    for tokens in _blocks(flat.shape[0], budget):
        part = flat[tokens]
        part += layer.ffn(layer.ffn_norm(part))
    return probs


@torch.no_grad()
def run_chunked(
    model,
    tokens: torch.Tensor,
    options: ChunkOptions,
    repr_layers: Iterable[int] = (),
    need_row_attentions: bool = False,
    return_contacts: bool = False,
) -> dict[str, Any]:
    """Returns what ``model(tokens, repr_layers, need_row_attentions, return_contacts)`` returns (see
    :meth:`MSALanguageModel.forward <msaformer.model.msa_lm.MSALanguageModel.forward>`), computed within the
    token budget of ``options``. The model must be in eval mode."""
    if model.training:
        raise MsaformerError("run_chunked is for inference: call model.eval() first")
    if tokens.numel() <= options.token_budget:
        return model(tokens, repr_layers, need_row_attentions=need_row_attentions, return_contacts=return_contacts)
    model.check_shape(tokens)
    n_layers = model.config.num_layers
    repr_layers = check_repr_layers(repr_layers, n_layers)
    budget = options.token_budget
    B, N, L = tokens.shape
    pad = tokens.eq(PAD_IDX)
    mask = model.mask(pad)

    x = None  # the one [B, N, L, D] buffer the stack runs in
    for rows in _blocks(N, budget // (B * L)):
        block = model.embed(tokens, pad, rows)
        if x is None:
            x = block.new_empty((B, N, L, block.shape[-1]))
        x[:, rows] = block
    representations: dict[int, torch.Tensor] = {0: x.clone()} if 0 in repr_layers else {}
    row_attentions = []
    for i, layer in enumerate(model.layers, start=1):
        attn = _layer_in_place(layer, x, mask, budget)
        if i in repr_layers and i < n_layers:
            representations[i] = x.clone()
        if need_row_attentions or return_contacts:
            row_attentions.append(attn)

    flat = x.view(-1, x.shape[-1])
    logits = None
    for block in _blocks(flat.shape[0], budget):
        h = model.emb_layer_norm_after(flat[block])
        out = model.lm_head(h)
        if logits is None:
            logits = out.new_empty((flat.shape[0], out.shape[-1]))
        logits[block] = out
        flat[block] = h  # the buffer now holds the final, normed representation
    if n_layers in repr_layers:
        representations[n_layers] = x
    result: dict[str, Any] = {"logits": logits.view(B, N, L, -1), "representations": representations}
    if row_attentions:
        attn = torch.stack(row_attentions, dim=1)  # (B, layers, H, L, L)
        if need_row_attentions:
            result["row_attentions"] = attn
        if return_contacts:
            result["contacts"] = model.contact_head(attn, mask.column_pad)
    return result
