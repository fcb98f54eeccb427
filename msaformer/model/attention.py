"""Attention blocks: a generic self-attention, and the MSA trunk's tied row attention and column attention.

Every MSA tensor keeps one layout through the stack, ``[B, N, L, D]`` (batch, rows, columns, channels);
the attention modules take the already layer-normed input and return the update (the residual lives in
:mod:`msaformer.model.trunk`).
"""

from __future__ import annotations

import math
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
    """

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, self.head_dim))  # (B, n, L, H, hd)

    def forward(self, x: torch.Tensor, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(update [B, N, L, D], attn [B, H, L, L])`` for normed input ``x [B, N, L, D]``.

        ``mask`` is the batch's :class:`~msaformer.model.trunk.AxialMask`.
        """
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))  # each (B, N, L, H, hd)
        q = q * mask.row_scale.to(q.dtype)  # (B, 1, 1, 1, 1): head_dim**-0.5 / sqrt(rows)
        if mask.token_keep is not None:
            q = q * mask.token_keep.to(q.dtype)  # padded rows / columns add nothing to the sum over rows
        logits = torch.einsum("bnihd,bnjhd->bhij", q, k)  # (B, H, L, L)
        probs = self._probs(logits, mask)
        out = torch.einsum("bhij,bnjhd->bnihd", probs.to(v.dtype), v).flatten(-2)  # (B, N, L, D)
        return self.out_proj(out), probs

    def _probs(self, logits: torch.Tensor, mask) -> torch.Tensor:
        if mask.column_pad is not None:
            logits = logits.masked_fill(mask.column_pad[:, None, None, :], float("-inf"))
        probs = logits.float().softmax(-1)
        return F.dropout(probs, self.dropout, self.training)

    @torch.no_grad()
    def add_to_(self, x: torch.Tensor, norm: nn.Module, mask, chunk_rows: int) -> torch.Tensor:
        """Adds the update of ``norm(x)`` to ``x [B, N, L, D]`` in place, over blocks of ``chunk_rows`` rows;
        returns the attention ``[B, H, L, L]``. No-grad only.

        Two passes: the logits are summed over row blocks, then each block's values are attended and its
        update added. Block ``r`` of the second pass reads only rows ``r`` of ``x``, so updating in place is
        exact, and nothing of size ``N x L x D`` is allocated beyond ``x`` itself.
        """
        D = x.shape[-1]
        w_qk, w_v = self.qkv.weight[: 2 * D], self.qkv.weight[2 * D :]
        b_qk, b_v = self.qkv.bias[: 2 * D], self.qkv.bias[2 * D :]
        blocks = [slice(start, start + chunk_rows) for start in range(0, x.shape[1], chunk_rows)]
        logits = None
        for rows in blocks:
            q, k = (self._split(t) for t in F.linear(norm(x[:, rows]), w_qk, b_qk).chunk(2, dim=-1))
            q = q * mask.row_scale.to(q.dtype)
            if mask.token_keep is not None:
                q = q * mask.token_keep[:, rows].to(q.dtype)
            part = torch.einsum("bnihd,bnjhd->bhij", q, k)
            logits = part if logits is None else logits.add_(part)
        probs = self._probs(logits, mask)
        for rows in blocks:
            v = self._split(F.linear(norm(x[:, rows]), w_v, b_v))
            ctx = torch.einsum("bhij,bnjhd->bnihd", probs.to(v.dtype), v).flatten(-2)
            x[:, rows] += self.out_proj(ctx)
        return probs


class ColumnSelfAttention(FusedQKVAttention):
    """Column attention: each column attends over its rows, through scaled_dot_product_attention.

    Column-attention maps are never materialised; padded rows are masked out as keys.
    """

    def _attend(self, x: torch.Tensor, key_keep: torch.Tensor | None) -> torch.Tensor:
        """Returns the update of columns ``x [B, N, C, D]``; ``key_keep [B, C, N]`` True = row is attended."""
        B, N, C, D = x.shape
        H, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).view(B, N, C, 3, H, hd).permute(3, 0, 2, 4, 1, 5)  # (3, B, C, H, N, hd)
        q, k, v = qkv.reshape(3, B * C, H, N, hd).unbind(0)
        attn_mask = None if key_keep is None else key_keep.reshape(B * C, 1, 1, N)
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        out = out.view(B, C, H, N, hd).permute(0, 3, 1, 2, 4).reshape(B, N, C, D)
        return self.out_proj(out)

    def _blocks(self, B: int, L: int, chunk_columns: int | None) -> list[slice]:
        """Column blocks of at most ``chunk_columns``, few enough for the kernel's flattened batch
        ``B * columns * H`` to stay below 65,535."""
        limit = max(1, (MAX_KERNEL_BATCH - 1) // (B * self.num_heads))
        step = min(limit, chunk_columns or L)
        return [slice(start, start + step) for start in range(0, L, step)]

    def _keep(self, mask, cols: slice) -> torch.Tensor | None:
        return None if mask.column_key_keep is None else mask.column_key_keep[:, cols]

    def forward(self, x: torch.Tensor, mask) -> torch.Tensor:
        """Returns the update ``[B, N, L, D]`` of normed input ``x [B, N, L, D]``."""
        B, N, L, D = x.shape
        blocks = self._blocks(B, L, None)
        if len(blocks) == 1:
            return self._attend(x, mask.column_key_keep)
        return torch.cat([self._attend(x[:, :, cols], self._keep(mask, cols)) for cols in blocks], dim=2)

    @torch.no_grad()
    def add_to_(self, x: torch.Tensor, norm: nn.Module, mask, chunk_columns: int) -> None:
        """Adds the update of ``norm(x)`` to ``x [B, N, L, D]`` in place, over blocks of ``chunk_columns``
        columns (no-grad only; exact, since a column's attention reads only that column)."""
        for cols in self._blocks(x.shape[0], x.shape[2], chunk_columns):
            x[:, :, cols] += self._attend(norm(x[:, :, cols]), self._keep(mask, cols))
