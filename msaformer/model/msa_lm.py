"""The MSA language model: embeddings, axial trunk, masked-LM head and contact head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from msaformer.data.alphabet import PAD_IDX, VOCAB_SIZE
from msaformer.errors import ConfigError
from msaformer.model.heads import ContactHead, LMHead
from msaformer.model.trunk import AxialLayer, AxialMask, run_layers

ROW_SCALINGS = ("real_rows", "fair_esm")


@dataclass(frozen=True)
class MsaModelConfig:
    """Shape and behaviour of an :class:`MSALanguageModel` (defaults = ESM-MSA-1b)."""

    num_layers: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    ffn_dim: int = 3072
    max_positions: int = 1024  # columns, <cls> included
    max_rows: int = 1024  # learned row embeddings; 0 disables them
    row_embed_dim: int | None = None  # None = embed_dim (fair-esm's first release used 1, broadcast)
    dropout: float = 0.1  # on embeddings and every residual update
    attention_dropout: float = 0.1  # on row-attention probabilities and inside column attention
    activation_dropout: float = 0.1  # after the feed-forward GELU
    row_scaling: str = "real_rows"  # "real_rows": batching-invariant; "fair_esm": counts padded rows
    blocks_per_ckpt: int | None = None  # activation checkpointing of groups of layers (training only)
    inference_chunk_tokens: int | None = 65536  # no-grad token budget per projection; None = never chunk

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("num_layers", "embed_dim", "num_heads", "ffn_dim", "max_positions", "max_rows"):
            if not is_int(getattr(self, name)):
                raise ConfigError(f"model.{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("row_embed_dim", "blocks_per_ckpt", "inference_chunk_tokens"):
            if getattr(self, name) is not None and not is_int(getattr(self, name)):
                raise ConfigError(f"model.{name} must be an integer or null, got {getattr(self, name)!r}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{name} must be a number in [0, 1), got {value!r}")
        if self.max_rows < 0:
            raise ConfigError(f"model.max_rows must be >= 0 (0 disables row embeddings), got {self.max_rows}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"model.embed_dim {self.embed_dim} must be divisible by model.num_heads {self.num_heads}")
        if self.row_scaling not in ROW_SCALINGS:
            raise ConfigError(f"model.row_scaling must be one of {', '.join(ROW_SCALINGS)}, got {self.row_scaling!r}")
        for name in ("num_layers", "embed_dim", "num_heads", "ffn_dim", "max_positions"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.blocks_per_ckpt is not None and self.blocks_per_ckpt < 1:
            raise ConfigError(f"model.blocks_per_ckpt must be >= 1 or null, got {self.blocks_per_ckpt}")
        if self.inference_chunk_tokens is not None and self.inference_chunk_tokens < 1:
            raise ConfigError(f"model.inference_chunk_tokens must be >= 1 or null, got {self.inference_chunk_tokens}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MsaModelConfig":
        """Returns a named preset (``tiny`` for tests, ``esm_msa1b`` = ESM-MSA-1b), with field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def replace(self, **changes: Any) -> "MsaModelConfig":
        """Returns a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, MsaModelConfig] = {
    "tiny": MsaModelConfig(
        num_layers=3, embed_dim=30, num_heads=3, ffn_dim=52, max_positions=67, max_rows=37,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    ),
    "esm_msa1b": MsaModelConfig(),
}  # fmt: skip


class MSALanguageModel(nn.Module):
    """Axial-attention MSA language model (the MSA Transformer architecture).

    Input tokens are ``[B, N, L+1]`` ids of :mod:`msaformer.data.alphabet`, a ``<cls>`` column first;
    padding is ``tokens == PAD_IDX`` (padded rows are all-PAD, padded columns are PAD in every row).
    """

    def __init__(self, config: MsaModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed_tokens = nn.Embedding(VOCAB_SIZE, c.embed_dim, padding_idx=PAD_IDX)
        # fair-esm's learned positions: index = running count of non-pad tokens + PAD_IDX (PAD -> PAD_IDX).
        self.embed_positions = nn.Embedding(c.max_positions + PAD_IDX + 1, c.embed_dim, padding_idx=PAD_IDX)
        if c.max_rows:
            self.row_embedding = nn.Parameter(0.01 * torch.randn(1, c.max_rows, 1, c.row_embed_dim or c.embed_dim))
        else:
            self.register_parameter("row_embedding", None)
        self.emb_layer_norm_before = nn.LayerNorm(c.embed_dim)
        self.layers = nn.ModuleList(
            AxialLayer(c.embed_dim, c.num_heads, c.ffn_dim, c.dropout, c.attention_dropout, c.activation_dropout)
            for _ in range(c.num_layers)
        )
        self.emb_layer_norm_after = nn.LayerNorm(c.embed_dim)
        self.lm_head = LMHead(c.embed_dim, self.embed_tokens.weight)
        self.contact_head = ContactHead(c.num_layers * c.num_heads)
        # nn.Embedding's N(0, 1) start, through the tied LM head, gives logits of std ~sqrt(D) and an initial
        # loss far above ln(33); N(0, D^-1/2) starts near uniform predictions. Token and position embeddings
        # keep the same scale relative to each other (both feed emb_layer_norm_before).
        for table in (self.embed_tokens, self.embed_positions):
            nn.init.normal_(table.weight, std=c.embed_dim**-0.5)
            with torch.no_grad():
                table.weight[PAD_IDX].zero_()

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def embed(self, tokens: torch.Tensor, pad: torch.Tensor, chunk_tokens: int | None = None) -> torch.Tensor:
        """Returns the embedded MSA ``[B, N, L, D]`` (after ``emb_layer_norm_before`` and dropout; padding zeroed).

        With ``chunk_tokens`` and no grad, blocks of rows of about that many tokens are embedded straight
        into the output, so the sums and the layer norm never hold more than a block.
        """
        B, N, L = tokens.shape
        c = self.config
        if L > c.max_positions:
            raise ConfigError(f"MSA has {L} columns (<cls> included) but the model allows max_positions={c.max_positions}")
        if self.row_embedding is not None and N > self.row_embedding.shape[1]:
            raise ConfigError(f"MSA has {N} rows but the model's row embedding allows max_rows={self.row_embedding.shape[1]}")
        keep = ~pad
        positions = torch.cumsum(keep, dim=-1) * keep + PAD_IDX  # (B, N, L)
        if chunk_tokens is None or torch.is_grad_enabled():
            return self._embed_rows(tokens, positions, keep, slice(0, N))
        step = max(1, chunk_tokens // max(1, B * L))
        out = None
        for start in range(0, N, step):
            rows = slice(start, min(start + step, N))
            block = self._embed_rows(tokens[:, rows], positions[:, rows], keep[:, rows], rows)
            if out is None:
                out = block.new_empty((B, N, L, block.shape[-1]))
            out[:, rows] = block
        return out

    def _embed_rows(self, tokens: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor, rows: slice) -> torch.Tensor:
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        if self.row_embedding is not None:
            x = x + self.row_embedding[:, rows]
        x = self.emb_layer_norm_before(x)
        x = F.dropout(x, self.config.dropout, self.training)
        return x * keep[..., None].to(x.dtype)

    def forward(
        self,
        tokens: torch.Tensor,
        repr_layers: Iterable[int] = (),
        need_row_attentions: bool = False,
        return_contacts: bool = False,
    ) -> dict[str, Any]:
        """Returns ``{"logits": [B, N, L+1, 33], "representations": {layer: [B, N, L+1, D]}}`` and, when asked,
        ``"row_attentions"`` ``[B, layers, heads, L+1, L+1]`` and ``"contacts"`` ``[B, L, L]``.

        Representation 0 is the embedding, ``i`` the output of layer ``i``; the last layer's is taken after
        ``emb_layer_norm_after`` (fair-esm's conventions). Contacts exclude the ``<cls>`` column.
        """
        if tokens.ndim != 3:
            raise ConfigError(f"tokens must be [B, N, L+1], got shape {tuple(tokens.shape)}")
        c = self.config
        pad = tokens.eq(PAD_IDX)
        chunk = c.inference_chunk_tokens
        if chunk is not None and tokens.numel() <= chunk:
            chunk = None  # small enough: no chunking
        x = self.embed(tokens, pad, chunk)
        mask = AxialMask.build(pad, c.embed_dim // c.num_heads, c.row_scaling, torch.float32)

        repr_layers = {int(i) for i in repr_layers}
        bad = sorted(i for i in repr_layers if not 0 <= i <= c.num_layers)
        if bad:
            raise ConfigError(f"repr_layers {bad} out of range 0..{c.num_layers}")
        representations: dict[int, torch.Tensor] = {}
        if 0 in repr_layers:
            representations[0] = x
        keep_attn = need_row_attentions or return_contacts
        row_attentions: list[torch.Tensor] = []

        def on_layer(i: int, h: torch.Tensor | None, row_attn: torch.Tensor) -> None:
            if i + 1 in repr_layers and i + 1 < c.num_layers:
                representations[i + 1] = h
            if keep_attn:
                row_attentions.append(row_attn)

        x = run_layers(
            self.layers, x, mask,
            blocks_per_ckpt=c.blocks_per_ckpt if self.training else None,
            chunk_tokens=chunk,
            keep_outputs=frozenset(i - 1 for i in repr_layers if 0 < i < c.num_layers),
            keep_input=0 in repr_layers,
            on_layer=on_layer,
        )  # fmt: skip
        if chunk is None or torch.is_grad_enabled():
            x = self.emb_layer_norm_after(x)
            logits = self.lm_head(x)
        else:
            x, logits = self._chunked_output(x, chunk, in_place=all(x is not r for r in representations.values()))
        if c.num_layers in repr_layers:
            representations[c.num_layers] = x
        result: dict[str, Any] = {"logits": logits, "representations": representations}
        if keep_attn:
            attn = torch.stack(row_attentions, dim=1)  # (B, layers, H, L+1, L+1)
            if need_row_attentions:
                result["row_attentions"] = attn
            if return_contacts:
                result["contacts"] = self.contact_head(attn, mask.column_pad)
        return result

    @torch.no_grad()
    def _chunked_output(self, x: torch.Tensor, chunk: int, in_place: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb_layer_norm_after`` and the LM head over blocks of ``chunk`` tokens (no-grad), so the head's
        ``D``-wide intermediates never exist for the whole MSA; returns ``(normed x, logits)``."""
        in_place = in_place and x.is_contiguous()  # flat must be a view of x
        flat = x.reshape(-1, x.shape[-1])
        normed, logits = [], []
        for start in range(0, flat.shape[0], chunk):
            h = self.emb_layer_norm_after(flat[start : start + chunk])
            logits.append(self.lm_head(h))
            if in_place:
                flat[start : start + chunk] = h
            else:
                normed.append(h)
        out = x if in_place else torch.cat(normed).view(x.shape)
        return out, torch.cat(logits).view(*x.shape[:-1], -1)

    def predict_contacts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Returns contact probabilities ``[B, L, L]``."""
        return self(tokens, return_contacts=True)["contacts"]


def load_model_config(spec: str | dict, overrides: list[str] | None = None) -> MsaModelConfig:
    """Returns a config from a preset name, a YAML file (optionally ``preset: name`` plus fields) or a dict,
    with dotted ``key=value`` overrides applied."""
    from pathlib import Path

    from msaformer.config import apply_overrides, from_dict, load_yaml

    if isinstance(spec, dict):
        data = dict(spec)
    elif spec in PRESETS:
        data = {"preset": spec}
    elif Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file():
        data = load_yaml(spec)
    else:
        raise ConfigError(f"model config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    data = apply_overrides(data, overrides)
    preset = data.pop("preset", None)
    base = dataclasses.asdict(MsaModelConfig.preset(preset)) if preset is not None else {}
    return from_dict(MsaModelConfig, {**base, **data}, "model")
