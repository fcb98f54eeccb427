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
from msaformer.model.trunk import AxialLayer, AxialMask

ROW_SCALINGS = ("real_rows", "fair_esm")


#: Fields that older model files and configs carry but that are no longer part of the architecture: how the
#: model is run is an execution option now (train.activation_checkpointing, the inference token budget).
REMOVED_FIELDS = {
    "blocks_per_ckpt": "train.activation_checkpointing in the training config",
    "inference_chunk_tokens": "the inference token budget (--toks-per-batch)",
}


@dataclass(frozen=True)
class MsaModelConfig:
    """The architecture of an :class:`MSALanguageModel` (defaults = ESM-MSA-1b). Nothing here says how the
    model is run: activation checkpointing and compilation are training options, chunking an inference one."""

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

    def __post_init__(self) -> None:
        from msaformer.config import check, check_fields

        check_fields(self)
        for name in ("num_layers", "embed_dim", "num_heads", "ffn_dim", "max_positions"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.max_rows >= 0, f"max_rows must be >= 0 (0 disables row embeddings), got {self.max_rows}")
        check(self.row_embed_dim is None or self.row_embed_dim >= 1, "row_embed_dim must be >= 1 or null")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            check(0.0 <= value < 1.0, f"{name} must be a number in [0, 1), got {value!r}")
        check(self.embed_dim % self.num_heads == 0,
              f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        check(self.row_scaling in ROW_SCALINGS,
              f"row_scaling must be one of {', '.join(ROW_SCALINGS)}, got {self.row_scaling!r}")

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

    def check_shape(self, tokens: torch.Tensor) -> None:
        """Raises a one-line ConfigError if ``tokens [B, N, L+1]`` does not fit the model's positions / rows."""
        if tokens.ndim != 3:
            raise ConfigError(f"tokens must be [B, N, L+1], got shape {tuple(tokens.shape)}")
        _, N, L = tokens.shape
        c = self.config
        if L > c.max_positions:
            raise ConfigError(f"MSA has {L} columns (<cls> included) but the model allows max_positions={c.max_positions}")
        if self.row_embedding is not None and N > self.row_embedding.shape[1]:
            raise ConfigError(f"MSA has {N} rows but the model's row embedding allows max_rows={self.row_embedding.shape[1]}")

    def embed(self, tokens: torch.Tensor, pad: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Returns the embedded rows ``rows`` of an MSA ``[B, n, L, D]`` (after ``emb_layer_norm_before`` and
        dropout; padding zeroed). ``tokens`` and ``pad`` (True = padding) are the whole ``[B, N, L]`` batch."""
        tokens, keep = tokens[:, rows], ~pad[:, rows]
        positions = torch.cumsum(keep, dim=-1) * keep + PAD_IDX  # (B, n, L)
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        if self.row_embedding is not None:
            x = x + self.row_embedding[:, rows][:, : tokens.shape[1]]
        x = self.emb_layer_norm_before(x)
        x = F.dropout(x, self.config.dropout, self.training)
        return x * keep[..., None].to(x.dtype)

    def mask(self, pad: torch.Tensor) -> AxialMask:
        """Returns the batch's :class:`~msaformer.model.trunk.AxialMask` from ``pad [B, N, L]``."""
        c = self.config
        return AxialMask.build(pad, c.embed_dim // c.num_heads, c.row_scaling, torch.float32)

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
        self.check_shape(tokens)
        c = self.config
        repr_layers = check_repr_layers(repr_layers, c.num_layers)
        pad = tokens.eq(PAD_IDX)
        mask = self.mask(pad)
        x = self.embed(tokens, pad)  # (B, N, L, D)
        representations: dict[int, torch.Tensor] = {0: x} if 0 in repr_layers else {}
        row_attentions: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers, start=1):
            x, row_attn = layer(x, mask)
            if i in repr_layers and i < c.num_layers:
                representations[i] = x
            if need_row_attentions or return_contacts:
                row_attentions.append(row_attn)
        x = self.emb_layer_norm_after(x)
        if c.num_layers in repr_layers:
            representations[c.num_layers] = x
        result: dict[str, Any] = {"logits": self.lm_head(x), "representations": representations}
        if row_attentions:
            attn = torch.stack(row_attentions, dim=1)  # (B, layers, H, L+1, L+1)
            if need_row_attentions:
                result["row_attentions"] = attn
            if return_contacts:
                result["contacts"] = self.contact_head(attn, mask.column_pad)
        return result


def check_repr_layers(layers: Iterable[int], num_layers: int) -> set[int]:
    """Returns the set of requested representation layers; raises a ConfigError for one outside 0..num_layers."""
    layers = {int(i) for i in layers}
    bad = sorted(i for i in layers if not 0 <= i <= num_layers)
    if bad:
        raise ConfigError(f"repr_layers {bad} out of range 0..{num_layers}")
    return layers


def load_model_config(spec: str | dict | MsaModelConfig, overrides: list[str] | None = None, *,
                      where: str = "model") -> MsaModelConfig:
    """Returns a model config from a preset name, a YAML file or a dict, with dotted ``key=value`` overrides.

    The one schema of ``configs/model/*.yaml`` and of a training config's ``model:`` section: an optional
    ``preset: NAME`` (``tiny``, ``esm_msa1b``) plus any :class:`MsaModelConfig` fields, which override the
    preset's. A training config may also give ``model: configs/model/tiny.yaml``.
    """
    from pathlib import Path

    from msaformer.config import apply_overrides, from_dict, load_yaml

    if isinstance(spec, MsaModelConfig):
        data = dataclasses.asdict(spec)
    elif isinstance(spec, dict):
        data = dict(spec)
    elif spec in PRESETS:
        data = {"preset": spec}
    elif isinstance(spec, str) and (Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file()):
        data = load_yaml(spec)
    else:
        raise ConfigError(f"{where}: {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    data = apply_overrides(data, overrides)
    for name, replacement in REMOVED_FIELDS.items():
        if name in data:
            raise ConfigError(f"{where}.{name} is not a model field any more; use {replacement}")
    preset = data.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{where}.preset must be a preset name, got {preset!r}")
    base = dataclasses.asdict(MsaModelConfig.preset(preset)) if preset is not None else {}
    return from_dict(MsaModelConfig, {**base, **data}, where)
