"""Saving and loading msaformer MSA-LM checkpoints: config and weights in one file, read without pickle code."""

from __future__ import annotations

import dataclasses
import os
import zipfile
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
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give the model file's name, e.g. {path / 'model.pt'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(model.config),
        "state_dict": state,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def torch_file_problem(path: Path, exc: BaseException) -> str:
    """Returns a short reason why ``torch.load(path, weights_only=True)`` failed: not a ``torch.save`` file at
    all, or one holding objects that the safe loader refuses (torch's own message is a paragraph)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch.save: a zip, or a legacy pickle
        return f"not a torch.save file (it starts with {head!r})"
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        lines = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        detail = (lines[0].strip() if lines else "unsupported object").split(". Please")[0]
        detail = detail.split(" was not an allowed global")[0]
        if "argparse.Namespace" in detail:
            return "a fair-esm checkpoint ({'args', 'model'}); convert it with `msaformer convert-esm` first"
        return f"holds objects the safe loader refuses ({detail})"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot be loaded ({first[:200]})"


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MSALanguageModel:
    """Returns the model stored by :func:`save_model` (in eval mode), loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        problem = torch_file_problem(path, exc)
        if problem.startswith("a fair-esm checkpoint"):
            raise CheckpointError(f"{path}: {problem}, not an msaformer model file") from None
        raise CheckpointError(
            f"{path}: not a readable msaformer model file: {problem}; write one with "
            "`msaformer export-weights`, `msaformer convert-esm` or save_model"
        ) from None
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
