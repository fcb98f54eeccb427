"""The axial trunk: pre-LayerNorm residual blocks of tied row attention, column attention and a GELU
feed-forward network, with block checkpointing for training and token-budget chunking for inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from msaformer.model.attention import ColumnSelfAttention, RowSelfAttention


@dataclass(frozen=True)
class AxialMask:
    """Everything the blocks need to know about a batch's padding, computed once per forward.

    Attributes:
        row_scale: ``[B, 1, 1, 1, 1]`` float, ``head_dim**-0.5 / sqrt(rows)`` of each MSA.
        token_keep: ``[B, N, L, 1, 1]`` float, 0 at padded tokens (None when nothing is padded).
        column_pad: ``[B, L]`` bool, True at padded columns (from the query row; None when none).
        column_key_keep: ``[B, L, N]`` bool, True for the rows a column attends to (None when none padded).
    """

    row_scale: torch.Tensor
    token_keep: torch.Tensor | None
    column_pad: torch.Tensor | None
    column_key_keep: torch.Tensor | None

    @classmethod
    def build(cls, pad: torch.Tensor, head_dim: int, row_scaling: str, dtype: torch.dtype) -> "AxialMask":
        """Returns the mask of a batch from ``pad [B, N, L]`` (True = padding token)."""
        B, N, L = pad.shape
        if row_scaling == "real_rows":
            rows = (~pad.all(dim=-1)).sum(dim=-1).clamp_min(1).to(dtype)  # (B,)
        else:  # "fair_esm": the padded row count, identical for every MSA of the batch
            rows = torch.full((B,), float(N), dtype=dtype, device=pad.device)
        row_scale = (head_dim**-0.5 / rows.sqrt()).view(B, 1, 1, 1, 1)
        if not bool(pad.any()):
            return cls(row_scale, None, None, None)
        token_keep = (~pad).to(dtype)[..., None, None]
        column_pad = pad[:, 0]  # the query row is never padded inside a real column
        # An all-padding column would give an empty softmax (NaN); let it attend to everything instead:
        # its output is never read by a real token.
        key_keep = (~pad | pad.all(dim=1, keepdim=True)).transpose(1, 2)  # (B, L, N)
        return cls(row_scale, token_keep, column_pad, key_keep.contiguous())


class FeedForward(nn.Module):
    """GELU (erf) feed-forward network with dropout after the activation."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        return self.fc2(F.dropout(h, self.activation_dropout, self.training))


class AxialLayer(nn.Module):
    """One axial block: ``x += row_attn(LN(x)); x += column_attn(LN(x)); x += ffn(LN(x))``, with dropout
    on each update (fair-esm's ``AxialTransformerLayer``)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
    ):
        super().__init__()
        self.dropout = dropout
        self.row_norm = nn.LayerNorm(embed_dim)
        self.row_attention = RowSelfAttention(embed_dim, num_heads, attention_dropout)
        self.column_norm = nn.LayerNorm(embed_dim)
        self.column_attention = ColumnSelfAttention(embed_dim, num_heads, attention_dropout)
        self.ffn_norm = nn.LayerNorm(embed_dim)
        self.ffn = FeedForward(embed_dim, ffn_dim, activation_dropout)

    def forward(
        self, x: torch.Tensor, mask: AxialMask, chunk_tokens: int | None = None, in_place: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(x [B, N, L, D], row attention [B, H, L, L])``.

        ``chunk_tokens`` (honoured only without grad) bounds the tokens each projection sees at once; with
        ``in_place`` as well, the chunked path updates and returns ``x`` itself instead of a copy.
        """
        if chunk_tokens is not None and not torch.is_grad_enabled():
            return self._chunked_forward(x, mask, chunk_tokens, in_place)
        update, row_attn = self.row_attention(self.row_norm(x), mask)
        x = x + F.dropout(update, self.dropout, self.training)
        update = self.column_attention(self.column_norm(x), mask)
        x = x + F.dropout(update, self.dropout, self.training)
        x = x + F.dropout(self.ffn(self.ffn_norm(x)), self.dropout, self.training)
        return x, row_attn

    @torch.no_grad()
    def _chunked_forward(self, x: torch.Tensor, mask: AxialMask, chunk_tokens: int, in_place: bool):
        B, N, L, D = x.shape
        # Same math as forward, in place (on a copy unless the caller gives x away), with every projection
        # and layer norm bounded by the budget: besides x, only blocks of chunk_tokens tokens are allocated.
        if not in_place or not x.is_contiguous():
            x = x.clone(memory_format=torch.contiguous_format)
        row_attn = self.row_attention.add_to_(x, self.row_norm, mask, max(1, chunk_tokens // max(1, B * L)))
        self.column_attention.add_to_(x, self.column_norm, mask, max(1, chunk_tokens // max(1, B * N)))
        flat = x.view(-1, D)
        for start in range(0, flat.shape[0], chunk_tokens):
            part = flat[start : start + chunk_tokens]
            part += self.ffn(self.ffn_norm(part))
        return x, row_attn


def run_layers(
    layers: Sequence[AxialLayer],
    x: torch.Tensor,
    mask: AxialMask,
    *,
    blocks_per_ckpt: int | None = None,
    chunk_tokens: int | None = None,
    keep_outputs: frozenset[int] = frozenset(),
    keep_input: bool = True,
    on_layer=None,
) -> torch.Tensor:
    """Runs ``x`` through ``layers`` and returns the output.

    ``on_layer(i, x_i, row_attn_i)`` is called after every layer; ``x_i`` is the layer's output when
    ``i`` is in ``keep_outputs`` (or always, without checkpointing) and None otherwise. Only the outputs
    in ``keep_outputs`` (and the input ``x`` when ``keep_input``) are guaranteed to stay unchanged: the
    no-grad chunked path updates the others in place, so the whole stack runs in one ``x``-sized buffer. With
    ``blocks_per_ckpt`` and grad enabled, groups of up to that many layers (ending early at a layer in
    ``keep_outputs``) are recomputed in the backward pass (non-reentrant checkpointing); without grad
    checkpointing is a no-op.
    """
    if not (blocks_per_ckpt and torch.is_grad_enabled()):
        for i, layer in enumerate(layers):
            in_place = (i - 1 not in keep_outputs) if i else not keep_input
            x, row_attn = layer(x, mask, chunk_tokens, in_place=in_place)
            if on_layer is not None:
                on_layer(i, x, row_attn)
        return x

    def run_group(start: int, end: int, h: torch.Tensor):
        attns = []
        for layer in layers[start:end]:
            h, row_attn = layer(h, mask)
            attns.append(row_attn)
        return h, attns

    start = 0
    while start < len(layers):
        end = min(start + blocks_per_ckpt, len(layers))
        end = min([i + 1 for i in keep_outputs if start <= i < end] + [end])
        x, attns = checkpoint(run_group, start, end, x, use_reentrant=False)
        if on_layer is not None:
            for i, row_attn in enumerate(attns, start):
                on_layer(i, x if i == end - 1 else None, row_attn)
        start = end
    return x
