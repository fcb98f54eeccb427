"""Saving and loading msaformer MSA-LM checkpoints: config and weights in one file, read without pickle code."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from msaformer.config import from_dict
from msaformer.errors import CheckpointError, ConfigError
from msaformer.model.msa_lm import MSALanguageModel, MsaModelConfig

FORMAT = "msaformer-msa-lm"
FORMAT_VERSION = 1


def save_model(model: MSALanguageModel, path: str | Path) -> Path:
    """Writes ``{"format", "format_version", "config", "state_dict"}`` atomically and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(model.config),
        "state_dict": state,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MSALanguageModel:
    """Returns the model stored by :func:`save_model` (in eval mode), loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable msaformer model file ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = " (a fair-esm checkpoint? convert it with `msaformer convert-esm`)" if isinstance(payload, dict) and "args" in payload else ""
        raise CheckpointError(f"{path}: not a {FORMAT} file{hint}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {payload.get('format_version')} is not supported (expected {FORMAT_VERSION})")
    try:
        config = from_dict(MsaModelConfig, payload["config"], "model")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = MSALanguageModel(config)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the stored config (missing: {', '.join(missing[:5]) or '-'}; "
            f"unexpected: {', '.join(unexpected[:5]) or '-'})"
        )
    return model.to(map_location).eval()
