"""The axial trunk: pre-LayerNorm residual blocks of tied row attention, column attention and a GELU
feed-forward network, and the batch's padding masks.

How the blocks are run (activation checkpointing, ``torch.compile``, token-budget chunking) is decided outside
the model: :mod:`msaformer.train.execution` and :mod:`msaformer.infer.chunked`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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

    def forward(self, x: torch.Tensor, mask: AxialMask) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(x [B, N, L, D], row attention [B, H, L, L])``."""
        update, row_attn = self.row_attention(self.row_norm(x), mask)
        x = x + F.dropout(update, self.dropout, self.training)
        update = self.column_attention(self.column_norm(x), mask)
        x = x + F.dropout(update, self.dropout, self.training)
        x = x + F.dropout(self.ffn(self.ffn_norm(x)), self.dropout, self.training)
        return x, row_attn
