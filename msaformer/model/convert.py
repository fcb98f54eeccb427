"""fair-esm compatibility: build an :class:`MSALanguageModel` from an ``esm`` MSA Transformer.

Accepts a live ``esm.model.msa_transformer.MSATransformer`` or a checkpoint dict in fair-esm's original
release format (``{"args": Namespace, "model": state_dict}``, keys prefixed ``encoder.sentence_encoder.`` /
``encoder.``, and the row/column attention names swapped), plus the separate contact-regression file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from msaformer.errors import CheckpointError
from msaformer.model.files import load_weights
from msaformer.model.msa_lm import MSALanguageModel, MsaModelConfig

_LAYER = re.compile(r"^layers\.(\d+)\.(row_self_attention|column_self_attention|feed_forward_layer)\.(.+)$")
_BLOCK = {"row_self_attention": "row", "column_self_attention": "column", "feed_forward_layer": "ffn"}
_DIRECT = {
    "embed_tokens.weight": "embed_tokens.weight",
    "embed_positions.weight": "embed_positions.weight",
    "msa_position_embedding": "row_embedding",
    "emb_layer_norm_before.weight": "emb_layer_norm_before.weight",
    "emb_layer_norm_before.bias": "emb_layer_norm_before.bias",
    "emb_layer_norm_after.weight": "emb_layer_norm_after.weight",
    "emb_layer_norm_after.bias": "emb_layer_norm_after.bias",
    "lm_head.dense.weight": "lm_head.dense.weight",
    "lm_head.dense.bias": "lm_head.dense.bias",
    "lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
    "lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
    "lm_head.bias": "lm_head.bias",
    "contact_head.regression.weight": "contact_head.regression.weight",
    "contact_head.regression.bias": "contact_head.regression.bias",
}


def upgrade_release_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns fair-esm module names of a release state dict (``esm.pretrained._load_model_and_alphabet_core_v1``)."""

    def rename(key: str) -> str:
        key = key.replace("row", "column") if "row" in key else key.replace("column", "row")
        if "sentence_encoder" in key:
            key = "".join(key.split("sentence_encoder.")[1:])
        if "encoder" in key:
            key = "".join(key.split("encoder.")[1:])
        return key

    return {rename(k): v for k, v in state.items()}


def upgrade_release_args(args: Any) -> dict[str, Any]:
    """Returns fair-esm's argument names (``encoder_layers`` -> ``layers``) of release ``args``."""
    items = vars(args).items() if isinstance(args, argparse.Namespace) else dict(args).items()
    return {("".join(k.split("encoder_")[1:]) if "encoder" in k else k): v for k, v in items}


def config_from_fair_esm_args(args: Mapping[str, Any], row_embed_dim: int | None,
                              row_scaling: str = "real_rows") -> MsaModelConfig:
    """Returns the config of a fair-esm model with (upgraded) ``args``.

    ``row_scaling="real_rows"`` (the default) scales tied row attention by each MSA's own row count: identical to
    fair-esm on unpadded MSAs and batching-invariant; ``"fair_esm"`` keeps fair-esm's padded-row count.
    """
    try:
        embed_dim = int(args["embed_dim"])
        dropout = float(args.get("dropout", 0.1))
        return MsaModelConfig(
            num_layers=int(args["layers"]),
            embed_dim=embed_dim,
            num_heads=int(args["attention_heads"]),
            ffn_dim=int(args["ffn_embed_dim"]),
            max_positions=int(args["max_positions"]),
            max_rows=1024 if args.get("embed_positions_msa", False) else 0,
            row_embed_dim=None if row_embed_dim in (None, embed_dim) else int(row_embed_dim),
            dropout=dropout,
            attention_dropout=dropout,  # fair-esm's axial attention drops its probabilities with `dropout`
            activation_dropout=float(args.get("activation_dropout", 0.1)),
            row_scaling=row_scaling,
        )
    except KeyError as exc:
        raise CheckpointError(f"fair-esm checkpoint args lack {exc.args[0]!r}; is this an MSA Transformer?") from None


def convert_state_dict(esm_state: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Returns msaformer weights from a fair-esm ``MSATransformer`` state dict (fair-esm module names)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in esm_state.items():
        if key in _DIRECT:
            out[_DIRECT[key]] = value
            continue
        if key == "lm_head.weight":
            continue  # tied to embed_tokens.weight
        m = _LAYER.match(key)
        if m is None:
            raise CheckpointError(f"unexpected fair-esm weight {key!r}")
        layer, block, rest = int(m.group(1)), _BLOCK[m.group(2)], m.group(3)
        prefix = f"layers.{layer}"
        if rest.startswith("layer_norm."):
            out[f"{prefix}.{block}_norm.{rest.split('.', 1)[1]}"] = value
        elif block == "ffn":
            out[f"{prefix}.ffn.{rest.split('.', 1)[1]}"] = value  # layer.fc1.weight -> fc1.weight
        else:
            name = rest.split(".", 1)[1]  # layer.q_proj.weight -> q_proj.weight
            proj, param = name.split(".")
            if proj == "out_proj":
                out[f"{prefix}.{block}_attention.out_proj.{param}"] = value
            else:
                qkv.setdefault((layer, f"{block}_attention.qkv.{param}"), {})[proj] = value
    for (layer, name), parts in qkv.items():
        if set(parts) != {"q_proj", "k_proj", "v_proj"}:
            raise CheckpointError(f"layer {layer} {name}: incomplete q/k/v projections in the fair-esm weights")
        out[f"layers.{layer}.{name}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def from_fair_esm(obj: Any, contact_regression: Mapping[str, Any] | str | Path | None = None, *,
                  row_scaling: str = "real_rows") -> MSALanguageModel:
    """Returns an msaformer model (eval mode) with the weights of a fair-esm MSA Transformer: a live module or a
    release checkpoint dict; ``contact_regression`` is the separate ``*-contact-regression.pt`` dict (or its path)
    of the release. ``row_scaling``: see :func:`config_from_fair_esm_args` (``real_rows`` equals fair-esm on
    unpadded MSAs and gives an MSA the same outputs whatever it is batched with)."""
    if isinstance(obj, torch.nn.Module):
        args = dict(vars(obj.args))
        esm_state = obj.state_dict()
    elif isinstance(obj, Mapping) and "model" in obj and "args" in obj:
        if upgrade_release_args(obj["args"]).get("arch", "msa_transformer") != "msa_transformer":
            raise CheckpointError("fair-esm checkpoint is not an MSA Transformer (args.arch != 'msa_transformer')")
        args = upgrade_release_args(obj["args"])
        esm_state = upgrade_release_state_dict(obj["model"])
    else:
        found = "an msaformer model file (use it directly; no conversion needed)" if isinstance(obj, Mapping) and \
            obj.get("format") == "msaformer-msa-lm" else (
            f"a dict with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, Mapping) else type(obj).__name__)
        raise CheckpointError(
            f"expected a fair-esm MSA Transformer release file ({{'args', 'model'}}) or module, found {found}"
        )
    if contact_regression is not None:
        if isinstance(contact_regression, (str, Path)):
            where = str(contact_regression)
            contact_regression = load_fair_esm_checkpoint(contact_regression)
        else:
            where = "contact regression"
        reg = upgrade_release_state_dict(contact_regression.get("model", contact_regression))
        if set(reg) != {"contact_head.regression.weight", "contact_head.regression.bias"}:
            raise CheckpointError(
                f"{where}: not a contact-regression file: expected only contact_head.regression.weight/bias, "
                f"found {len(reg)} tensor(s) ({', '.join(sorted(reg)[:3])}{', ...' if len(reg) > 3 else ''})"
            )
        esm_state = {**esm_state, **reg}
    row = esm_state.get("msa_position_embedding")
    config = config_from_fair_esm_args(args, None if row is None else int(row.shape[-1]), row_scaling)
    state = convert_state_dict(esm_state, config.num_layers)
    model = MSALanguageModel(config)
    target = model.state_dict()
    state.setdefault("lm_head.weight", state.get("embed_tokens.weight"))
    for key in ("contact_head.regression.weight", "contact_head.regression.bias"):
        state.setdefault(key, target[key].new_zeros(target[key].shape))  # no regression given: contacts untrained
    load_weights(model, state, "fair-esm weights")
    return model.eval()


def convert_esm_file(checkpoint: str | Path, out: str | Path, contact_regression: str | Path | None = None, *,
                     allow_pickle: bool = False, row_scaling: str = "real_rows") -> Path:
    """Converts a fair-esm MSA Transformer release file (and its contact regression) into an msaformer model
    file at ``out``; returns its path. Errors name the file at fault."""
    from msaformer.model.serialization import save_model

    data = load_fair_esm_checkpoint(checkpoint, allow_pickle=allow_pickle)
    regression = None
    if contact_regression is not None:
        regression = load_fair_esm_checkpoint(contact_regression, allow_pickle=allow_pickle)
    try:
        model = from_fair_esm(data, contact_regression=regression, row_scaling=row_scaling)
    except CheckpointError as exc:  # name the file at fault
        where = contact_regression if str(exc).startswith("contact regression:") else checkpoint
        message = str(exc).removeprefix("contact regression: ")
        raise CheckpointError(f"{where}: {message}") from None
    return save_model(model, out)


def load_fair_esm_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Returns a fair-esm ``.pt`` file's dict, read with ``weights_only=True`` (``argparse.Namespace`` allowed).

    ``allow_pickle=True`` falls back to full unpickling, for trusted files that hold other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        from msaformer.model.files import torch_file_problem

        problem = torch_file_problem(path, exc)
        if problem.startswith("not a torch.save file"):
            raise CheckpointError(f"{path}: {problem}; expected a fair-esm release .pt file") from None
        if not allow_pickle:
            raise CheckpointError(f"{path}: {problem}; if you trust the file, pass --allow-pickle") from None
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot be unpickled ({type(exc2).__name__}: {exc2})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    return data


def fair_esm_args(config: MsaModelConfig) -> argparse.Namespace:
    """Returns the ``args`` namespace of a fair-esm MSA Transformer with the shape of ``config``."""
    return argparse.Namespace(
        arch="msa_transformer",
        layers=config.num_layers,
        embed_dim=config.embed_dim,
        ffn_embed_dim=config.ffn_dim,
        attention_heads=config.num_heads,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        max_tokens_per_msa=2**14,
        max_tokens=2**14,
        max_positions=config.max_positions,
        embed_positions_msa=bool(config.max_rows),
        embed_positions_msa_dim=config.row_embed_dim or config.embed_dim,
        logit_bias=False,
    )


def build_fair_esm(config: MsaModelConfig, seed: int = 0, *, perturb: float = 0.0):
    """Returns a randomly initialised fair-esm ``MSATransformer`` of the shape of ``config`` (needs ``fair-esm``).

    ``perturb > 0`` adds Gaussian noise of that scale to every weight (layer norms and biases included), so
    parity tests exercise all of them.
    """
    import esm  # test / benchmark dependency

    if config.max_rows not in (0, 1024):
        raise CheckpointError("fair-esm's MSA row embedding is fixed at 1024 rows; use max_rows=1024 or 0")
    torch.manual_seed(seed)
    model = esm.model.msa_transformer.MSATransformer(
        fair_esm_args(config), esm.Alphabet.from_architecture("msa_transformer")
    )
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn_like(p))
    return model.eval()
