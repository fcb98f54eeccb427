"""Output heads: the masked-LM head (tied to the token embedding) and the contact head over row attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LMHead(nn.Module):
    """Masked-LM head: dense -> GELU -> LayerNorm -> projection onto the (tied) token embedding + bias."""

    def __init__(self, embed_dim: int, weight: nn.Parameter):
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.weight = weight  # shared with the token embedding
        self.bias = nn.Parameter(torch.zeros(weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns logits ``[..., vocab]`` of features ``[..., D]``."""
        return F.linear(self.layer_norm(F.gelu(self.dense(x))), self.weight) + self.bias


def symmetrize(x: torch.Tensor) -> torch.Tensor:
    """Returns ``x + x^T`` over the last two dimensions."""
    return x + x.transpose(-1, -2)


def apc(x: torch.Tensor) -> torch.Tensor:
    """Returns ``x`` minus its average product correction (row sum * column sum / total)."""
    a1 = x.sum(-1, keepdim=True)
    a2 = x.sum(-2, keepdim=True)
    a12 = x.sum((-1, -2), keepdim=True)
    return x - a1 * a2 / a12


class ContactHead(nn.Module):
    """Contact probabilities from every layer's and head's row-attention map: symmetrise, APC, then a
    logistic regression over the ``layers * heads`` features (fair-esm's ``ContactPredictionHead``).
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.regression = nn.Linear(in_features, 1)

    def forward(self, row_attentions: torch.Tensor, column_pad: torch.Tensor | None) -> torch.Tensor:
        """Returns contacts ``[B, L, L]`` from ``row_attentions [B, layers, heads, L+1, L+1]``.

        The ``<cls>`` column is dropped. Padded columns (``column_pad [B, L+1]``, True = padding) are zeroed
        before the APC, so an MSA's contacts do not depend on the batch's padding; they read 0 in the output.
        """
        attn = row_attentions[..., 1:, 1:].float()
        B, layers, heads, L, _ = attn.shape
        attn = attn.reshape(B, layers * heads, L, L)
        keep = None
        if column_pad is not None:
            keep = (~column_pad[:, 1:]).to(attn.dtype)
            keep = keep[:, :, None] * keep[:, None, :]  # (B, L, L)
            attn = attn * keep[:, None]
        features = apc(symmetrize(attn))
        weight = self.regression.weight.float().view(-1)
        logits = torch.einsum("bcij,c->bij", features, weight) + self.regression.bias.float()
        contacts = torch.sigmoid(logits)
        return contacts if keep is None else contacts * keep
