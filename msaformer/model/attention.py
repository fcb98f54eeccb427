"""Attention blocks: a generic self-attention, and the MSA trunk's tied row attention and column attention.

Every MSA tensor keeps one layout through the stack, ``[B, N, L, D]`` (batch, rows, columns, channels);
the attention modules take the already layer-normed input and return the update (the residual lives in
:mod:`msaformer.model.trunk`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: CUDA attention kernels put the flattened batch (times heads) in a grid dimension capped at 65,535.
MAX_KERNEL_BATCH = 65_535

QKTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class FusedQKVAttention(nn.Module):
    """Shared parameters of the attention blocks: one fused ``qkv`` projection and ``out_proj``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)


class SelfAttention(FusedQKVAttention):
    """Multi-head self-attention over ``[B, T, D]`` with a fused QKV projection.

    ``forward`` uses :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient
    kernels on GPU) unless the attention weights are asked for; then it runs the same math with an explicit
    softmax and returns the ``[B, H, T, T]`` probabilities too.
    """

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        qk_transform: QKTransform | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(out [B, T, D], attn [B, H, T, T] | None)``.

        Args:
            x: ``[B, T, D]`` input.
            key_padding_mask: ``[B, T]`` bool, True where the token is padding (never attended to). Every
                sequence needs at least one real token (e.g. a CLS token).
            need_weights: also return the attention probabilities (explicit softmax path).
            qk_transform: applied to ``q, k`` of shape ``[B, H, T, head_dim]`` before the dot product
                (where rotary position embeddings plug in).
        """
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        if qk_transform is not None:
            q, k = qk_transform(q, k)
        dropout_p = self.dropout if self.training else 0.0
        keep = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
        if need_weights:
            logits = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5  # (B, H, T, T)
            if keep is not None:
                logits = logits.masked_fill(~keep, float("-inf"))
            attn = logits.float().softmax(-1).to(q.dtype)
            out = torch.matmul(F.dropout(attn, dropout_p, self.training), v)  # (B, H, T, hd)
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(B, T, D)
        return self.out_proj(out), attn


class RowSelfAttention(FusedQKVAttention):
    """Tied row attention: one ``[L, L]`` map per head, shared by all rows of an MSA.

    The logits are the dot products of queries and keys summed over the MSA's real rows, scaled by
    ``head_dim**-0.5 / sqrt(rows)``. With ``row_scaling="real_rows"`` ``rows`` counts the real rows of that
    MSA, so its output does not depend on what it is batched with; ``"fair_esm"`` counts padded rows too,
    reproducing fair-esm exactly.

    ``forward`` does it in one pass. The pieces (:meth:`tied_logits` of a block of rows, :meth:`probs`,
    :meth:`attend` a block of rows) let a caller sum the logits over blocks of rows and attend block by block,
    which is how :mod:`msaformer.infer.chunked` bounds memory without another copy of the math.
    """

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, self.head_dim))  # (B, n, L, H, hd)

    @staticmethod
    def _scaled(q: torch.Tensor, mask, rows: slice) -> torch.Tensor:
        q = q * mask.row_scale.to(q.dtype)  # (B, 1, 1, 1, 1): head_dim**-0.5 / sqrt(rows)
        if mask.token_keep is not None:
            q = q * mask.token_keep[:, rows].to(q.dtype)  # padded rows / columns add nothing to the sum
        return q

    def forward(self, x: torch.Tensor, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(update [B, N, L, D], attn [B, H, L, L])`` for normed input ``x [B, N, L, D]``.

        ``mask`` is the batch's :class:`~msaformer.model.trunk.AxialMask`.
        """
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))  # each (B, N, L, H, hd)
        q = self._scaled(q, mask, slice(None))
        logits = torch.einsum("bnihd,bnjhd->bhij", q, k)  # (B, H, L, L)
        probs = self.probs(logits, mask)
        out = torch.einsum("bhij,bnjhd->bnihd", probs.to(v.dtype), v).flatten(-2)  # (B, N, L, D)
        return self.out_proj(out), probs

    def tied_logits(self, x: torch.Tensor, mask, rows: slice) -> torch.Tensor:
        """Returns the part ``[B, H, L, L]`` of the tied logits contributed by normed rows ``x [B, n, L, D]``
        (rows ``rows`` of the MSA); the logits of the MSA are the sum over all its rows."""
        D = self.embed_dim
        qk = F.linear(x, self.qkv.weight[: 2 * D], None if self.qkv.bias is None else self.qkv.bias[: 2 * D])
        q, k = (self._split(t) for t in qk.chunk(2, dim=-1))
        return torch.einsum("bnihd,bnjhd->bhij", self._scaled(q, mask, rows), k)

    def probs(self, logits: torch.Tensor, mask) -> torch.Tensor:
        """Returns the attention probabilities ``[B, H, L, L]`` (fp32) of tied logits; padded columns get 0."""
        if mask.column_pad is not None:
            logits = logits.masked_fill(mask.column_pad[:, None, None, :], float("-inf"))
        probs = logits.float().softmax(-1)
        return F.dropout(probs, self.dropout, self.training)

    def attend(self, probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Returns the update ``[B, n, L, D]`` of normed rows ``x [B, n, L, D]`` under ``probs [B, H, L, L]``."""
        D = self.embed_dim
        v = self._split(F.linear(x, self.qkv.weight[2 * D :], None if self.qkv.bias is None else self.qkv.bias[2 * D :]))
        return self.out_proj(torch.einsum("bhij,bnjhd->bnihd", probs.to(v.dtype), v).flatten(-2))


class ColumnSelfAttention(FusedQKVAttention):
    """Column attention: each column attends over its rows, through scaled_dot_product_attention.

    Column-attention maps are never materialised; padded rows are masked out as keys. A column's update reads
    only that column, so :meth:`column_blocks` of the MSA can be attended one at a time (:meth:`attend`).
    """

    def attend(self, x: torch.Tensor, mask, cols: slice) -> torch.Tensor:
        """Returns the update ``[B, N, C, D]`` of normed columns ``x [B, N, C, D]`` (columns ``cols`` of the MSA)."""
        B, N, C, D = x.shape
        H, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).view(B, N, C, 3, H, hd).permute(3, 0, 2, 4, 1, 5)  # (3, B, C, H, N, hd)
        q, k, v = qkv.reshape(3, B * C, H, N, hd).unbind(0)
        key_keep = None if mask.column_key_keep is None else mask.column_key_keep[:, cols]  # (B, C, N)
        attn_mask = None if key_keep is None else key_keep.reshape(B * C, 1, 1, N)
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        out = out.view(B, C, H, N, hd).permute(0, 3, 1, 2, 4).reshape(B, N, C, D)
        return self.out_proj(out)

    def column_blocks(self, B: int, L: int, max_columns: int | None = None) -> list[slice]:
        """Returns blocks of at most ``max_columns`` columns, few enough for the attention kernel's flattened
        batch ``B * columns * heads`` to stay below 65,535 (a CUDA grid limit)."""
        limit = max(1, (MAX_KERNEL_BATCH - 1) // (B * self.num_heads))
        step = min(limit, max_columns or L)
        return [slice(start, start + step) for start in range(0, L, step)]

    def forward(self, x: torch.Tensor, mask) -> torch.Tensor:
        """Returns the update ``[B, N, L, D]`` of normed input ``x [B, N, L, D]``."""
        B, N, L, D = x.shape
        blocks = self.column_blocks(B, L)
        if len(blocks) == 1:
            return self.attend(x, mask, slice(None))
        return torch.cat([self.attend(x[:, :, cols], mask, cols) for cols in blocks], dim=2)
