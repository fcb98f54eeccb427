"""DNA promoter classifier: a pre-LayerNorm Transformer encoder with a learned ``<cls>`` token.

Tokens are one per nucleotide (:mod:`msaformer.data.promoter`), ``<cls>`` first, ``<pad>`` after each
sequence's end. Padding is masked out of attention, of the optional convolutional stem and of mean pooling, so
a sequence gets the same prediction alone or inside a padded batch.
"""

from __future__ import annotations

import contextlib

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from msaformer.config import from_dict
from msaformer.data.promoter import CLS_IDX, PAD_IDX, VOCAB_SIZE
from msaformer.errors import CheckpointError, ConfigError, MsaformerError
from msaformer.model.attention import SelfAttention
from msaformer.model.files import load_model_file, load_weights, save_model_file

FORMAT = "msaformer-promoter"
FORMAT_VERSION = 1
POSITIONALS = ("learned", "sinusoidal", "rotary")
POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class PromoterModelConfig:
    embed_dim: int = 128  # D, channels per token
    num_layers: int = 3
    num_heads: int = 4
    ffn_dim: int = 256  # hidden width of each feed-forward block
    dropout: float = 0.1  # on residual updates and the head
    attention_dropout: float = 0.0
    positional: str = "learned"  # "learned" | "sinusoidal" | "rotary"
    max_length: int = 70  # model window in nucleotides; longer inputs are scored with sliding windows
    conv_stem: int = 0  # kernel width of a k-mer-like convolution on one-hot nucleotides (odd); 0 = none
    pooling: str = "cls"  # "cls" (the <cls> representation) | "mean" (over real nucleotides)
    conv_layers: int = 0  # residual convolution blocks (kernel conv_stem) between the stem and the attention

    def __post_init__(self):
        from msaformer.config import check, check_fields

        check_fields(self)
        for name in ("embed_dim", "num_layers", "num_heads", "ffn_dim", "max_length"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(0.0 <= self.dropout < 1.0 and 0.0 <= self.attention_dropout < 1.0, "dropout rates must be in [0, 1)")
        check(self.positional in POSITIONALS, f"positional must be one of {', '.join(POSITIONALS)}, got {self.positional!r}")
        check(self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        check(self.embed_dim % self.num_heads == 0,
              f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        check(self.positional != "rotary" or (self.embed_dim // self.num_heads) % 2 == 0,
              "positional rotary needs an even head dimension (embed_dim / num_heads)")
        check(self.conv_stem >= 0 and (self.conv_stem == 0 or self.conv_stem % 2 == 1),
              f"conv_stem must be 0 (none) or an odd kernel width, got {self.conv_stem}")
        check(self.conv_layers >= 0, f"conv_layers must be >= 0, got {self.conv_layers}")
        check(not self.conv_layers or self.conv_stem, "conv_layers needs a conv_stem (their kernel width)")


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """Returns the fixed ``[num_positions, dim]`` sine/cosine position table of Vaswani et al."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer), applied to ``q, k [B, H, T, hd]`` through ``qk_transform``."""

    def __init__(self, head_dim: int):
        super().__init__()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def tables(self, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # (T, hd)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class EncoderLayer(nn.Module):
    """Pre-LN block: ``x + attn(LN(x))`` then ``x + ffn(LN(x))``."""

    def __init__(self, cfg: PromoterModelConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.embed_dim)
        self.attn = SelfAttention(cfg.embed_dim, cfg.num_heads, dropout=cfg.attention_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.ffn_dim), nn.GELU(), nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, key_padding_mask, need_weights=False, qk_transform=None):
        update, attn = self.attn(self.attn_norm(x), key_padding_mask, need_weights, qk_transform)
        x = x + self.dropout(update)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, attn


def conv_over_tokens(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Applies ``conv`` along the tokens of ``x [B, T, C_in]``; returns ``[B, T, C_out]``.

    The same numbers as ``conv(x.transpose(1, 2)).transpose(1, 2)``, computed as a 2-D convolution of the
    channels-last view ``[B, C, 1, T]`` (no copy in or out): on CPU oneDNN runs that layout 2-2.5x faster than a
    1-D convolution of the transposed tensor, forward and backward (BENCHMARKS.md)."""
    out = F.conv2d(x.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                   padding=(0, conv.padding[0]))  # (B, C_out, 1, T), channels-last
    return out.squeeze(2).transpose(1, 2)


class ConvBlock(nn.Module):
    """Pre-LN residual convolution over the nucleotides: ``x + conv(LN(x))``, with ``<cls>`` and ``<pad>``
    zeroed on the way in and left unchanged on the way out (so padding never changes a prediction)."""

    def __init__(self, cfg: PromoterModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.conv = nn.Conv1d(cfg.embed_dim, cfg.embed_dim, cfg.conv_stem, padding=cfg.conv_stem // 2)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, nucleotide: torch.Tensor) -> torch.Tensor:
        keep = nucleotide[..., None].to(x.dtype)  # (B, T, 1)
        update = F.gelu(conv_over_tokens(self.conv, self.norm(x) * keep))  # (B, T, D)
        return x + self.dropout(update) * keep


class PromoterClassifier(nn.Module):
    """Binary promoter classifier; ``forward`` returns one logit per sequence (sigmoid = P(promoter))."""

    def __init__(self, cfg: PromoterModelConfig):
        super().__init__()
        self.config = cfg
        D = cfg.embed_dim
        self.embed_tokens = nn.Embedding(VOCAB_SIZE, D, padding_idx=PAD_IDX)
        # The k-mer stem sees one-hot nucleotides; <cls> and <pad> are zero columns, so the convolution of a
        # padded sequence equals the convolution of the sequence alone (zero padding on both sides).
        self.stem = nn.Conv1d(VOCAB_SIZE, D, cfg.conv_stem, padding=cfg.conv_stem // 2) if cfg.conv_stem else None
        if cfg.positional == "learned":
            self.embed_positions = nn.Embedding(cfg.max_length + 1, D)
        elif cfg.positional == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_table(cfg.max_length + 1, D), persistent=False)
        self.rotary = Rotary(D // cfg.num_heads) if cfg.positional == "rotary" else None
        self.convs = nn.ModuleList(ConvBlock(cfg) for _ in range(cfg.conv_layers))
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(D)
        self.head = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(D, 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def forward(self, tokens: torch.Tensor, need_weights: bool = False) -> dict[str, torch.Tensor]:
        """Returns ``{"logits": [B], "representation": [B, D]}`` plus ``"attentions"`` (list over layers of
        ``[B, H, T, T]`` probabilities) when ``need_weights``.

        Args:
            tokens: ``[B, T]`` int64 ids, ``<cls>`` at position 0, ``<pad>`` after each sequence;
                ``T - 1 <= max_length`` (position tables are that long; rotary has no such limit).
        """
        x, attentions = self.hidden_states(tokens, need_weights)
        cfg = self.config
        pad = tokens.eq(PAD_IDX)
        if cfg.pooling == "cls":
            rep = x[:, 0]  # (B, D)
        else:
            real = (~pad & tokens.ne(CLS_IDX)).to(x.dtype)[..., None]  # (B, T, 1)
            rep = (x * real).sum(1) / real.sum(1).clamp_min(1.0)
        out = {"logits": self.head(rep).squeeze(-1), "representation": rep}
        if need_weights:
            out["attentions"] = attentions
        return out

    def hidden_states(self, tokens: torch.Tensor, need_weights: bool = False):
        """Returns ``(x [B, T, D] after the final LayerNorm, attentions)``: the encoder without the head (what
        masked-nucleotide pre-training trains and :func:`load_encoder_weights` carries over)."""
        B, T = tokens.shape
        cfg = self.config
        if cfg.positional != "rotary" and T > cfg.max_length + 1:
            raise MsaformerError(
                f"input of {T - 1} nucleotides exceeds the model window ({cfg.max_length}); use sliding windows"
            )
        pad = tokens.eq(PAD_IDX)  # (B, T)
        nucleotide = ~pad & tokens.ne(CLS_IDX)  # (B, T)
        x = self.embed_tokens(tokens)  # (B, T, D)
        if self.stem is not None:
            onehot = F.one_hot(tokens, VOCAB_SIZE).to(x.dtype) * nucleotide[..., None]  # (B, T, V)
            local = F.gelu(conv_over_tokens(self.stem, onehot))  # (B, T, D)
            x = x + local * nucleotide[..., None]
        if cfg.positional == "learned":
            x = x + self.embed_positions.weight[:T]
        elif cfg.positional == "sinusoidal":
            x = x + self.position_table[:T].to(x.dtype)
        for conv in self.convs:
            x = conv(x, nucleotide)  # (B, T, D)
        qk_transform = None
        if self.rotary is not None:
            cos, sin = self.rotary.tables(T, x.device, x.dtype)

            def qk_transform(q, k):
                return Rotary.rotate(q, cos, sin), Rotary.rotate(k, cos, sin)

        attentions = []
        # Equal-length batches (the common case in bucketed inference) take the unmasked attention kernel.
        key_padding_mask = pad if bool(pad.any()) else None
        for layer in self.layers:
            x, attn = layer(x, key_padding_mask, need_weights, qk_transform)  # (B, T, D), (B, H, T, T) | None
            if need_weights:
                attentions.append(attn)
        return self.final_norm(x), attentions


MAX_ENSEMBLE = 64  # members one model file may declare (bounds what an untrusted file can make us build)


def save_promoter_model(model: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Writes the model (config + weights + plain metadata) to ``path`` atomically; returns the path.

    A :class:`PromoterEnsemble` of members with one config is written as one file (metadata ``ensemble``: the
    number of members) that :func:`load_promoter_model` reads back as the ensemble."""
    metadata = dict(metadata or {})
    if isinstance(model, PromoterEnsemble):
        configs = {m.config for m in model.members}
        if len(configs) > 1:
            raise ConfigError("one ensemble file holds members of one model config; save the members apart")
        metadata["ensemble"] = len(model.members)
    return save_model_file(path, kind=FORMAT, version=FORMAT_VERSION, config=dataclasses.asdict(model.config),
                           state_dict=model.state_dict(), metadata=metadata)


def load_promoter_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Returns ``(model in eval mode, metadata)`` from a file written by :func:`save_promoter_model`: a
    :class:`PromoterClassifier`, or a :class:`PromoterEnsemble` where the file holds one."""
    payload = load_model_file(path, kind=FORMAT, versions=(FORMAT_VERSION,),
                              how_to_make="write one with `msaformer promoter train`")
    try:
        cfg = from_dict(PromoterModelConfig, payload["config"], "model")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    meta = dict(payload["metadata"])
    members = meta.get("ensemble", 0)
    if members:
        if type(members) is not int or not 2 <= members <= MAX_ENSEMBLE:
            raise CheckpointError(f"{path}: metadata 'ensemble' must be a member count in 2..{MAX_ENSEMBLE}, "
                                  f"got {members!r}")
        model = PromoterEnsemble([PromoterClassifier(cfg) for _ in range(members)])
    else:
        model = PromoterClassifier(cfg)
    load_weights(model, payload["state_dict"], str(path))
    return model.to(map_location).eval(), meta


def load_encoder_weights(model: PromoterClassifier, path: str | Path) -> dict:
    """Copies every weight but the classification head from a promoter model file (``encoder.pt`` of a
    pre-training run, or any ``model.pt``) into ``model``; the two model configs must be equal. Returns the
    file's metadata."""
    source, meta = load_promoter_model(path)
    if isinstance(source, PromoterEnsemble):
        raise ConfigError(f"{path} is an ensemble of {len(source.members)} models; start from one member's model.pt")
    if source.config != model.config:
        theirs, ours = dataclasses.asdict(source.config), dataclasses.asdict(model.config)
        diff = ", ".join(f"{k} {theirs[k]!r} vs {ours[k]!r}" for k in ours if theirs[k] != ours[k])
        raise ConfigError(f"{path}: the encoder's model config differs from this run's ({diff})")
    encoder = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    model.load_state_dict(encoder, strict=False)  # equal configs: only head.* is left as initialised
    return meta


PRECISIONS = ("fp32", "bf16")


def promoter_probabilities(model: PromoterClassifier, tokens: list[np.ndarray], *, batch_size: int = 256,
                           device="cpu", precision: str = "fp32") -> np.ndarray:
    """Returns P(promoter) ``[n]`` of token arrays (no ``<cls>``), batched by length, in input order (no grad).

    The one scoring routine of training (dev / test evaluation) and of ``promoter predict``. ``precision="bf16"``
    runs the convolutions and matrix products under bfloat16 autocast (LayerNorm and softmax stay float32):
    1.4-1.7x faster on CPUs with AVX512-BF16 / AMX; probabilities move by ~5e-4 on average, rarely by more than 1e-2
    (BENCHMARKS.md)."""
    from msaformer.data.promoter import collate, length_bucketed_batches

    if precision not in PRECISIONS:
        raise MsaformerError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    probs = np.empty(len(tokens), dtype=np.float64)
    if not tokens:
        return probs
    was_training = model.training
    model.eval()
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    device_type = torch.device(device).type
    autocast = (torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for index in length_bucketed_batches(lengths, batch_size):
            batch = torch.from_numpy(collate([tokens[i] for i in index])).to(device)
            probs[index] = torch.sigmoid(model(batch)["logits"].float()).cpu().numpy()
    model.train(was_training)
    return probs


class PromoterEnsemble(nn.Module):
    """Several promoter classifiers averaged in probability: ``forward`` returns the logit of the mean of the
    members' sigmoids, so :func:`promoter_probabilities` (and everything built on it) scores the ensemble as
    one model. Members must share ``max_length`` (the sliding-window size)."""

    def __init__(self, members: list[PromoterClassifier]):
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one model")
        windows = {m.config.max_length for m in members}
        if len(windows) > 1:
            raise CheckpointError(f"ensemble members have different model windows (max_length {sorted(windows)})")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, tokens: torch.Tensor, need_weights: bool = False) -> dict[str, torch.Tensor]:
        if need_weights:
            raise MsaformerError("attention rollout explains one model, not an ensemble; pass one checkpoint")
        probs = torch.stack([torch.sigmoid(m(tokens)["logits"].float()) for m in self.members]).mean(0)
        probs = probs.clamp(1e-7, 1.0 - 1e-7)
        return {"logits": torch.log(probs) - torch.log1p(-probs)}


def load_promoter_models(paths, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Returns ``(model, metadata)`` of one checkpoint path, or of several as one :class:`PromoterEnsemble`
    (ensemble files among them contribute all their members).

    Several files: the ``threshold`` is the mean of the files' stored thresholds; the metadata lists the files
    under ``"members"``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ConfigError("no checkpoint given")
    loaded = [load_promoter_model(p, map_location) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    members = []
    for model, _ in loaded:
        members.extend(model.members if isinstance(model, PromoterEnsemble) else [model])
    meta = {"threshold": float(np.mean([float(m.get("threshold", 0.5)) for _, m in loaded])),
            "members": [str(p) for p in paths]}
    return PromoterEnsemble(members).eval(), meta
