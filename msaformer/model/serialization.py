"""Saving and loading MSA language models: config and weights in one model file (:mod:`msaformer.model.files`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from msaformer.config import from_dict
from msaformer.errors import CheckpointError, ConfigError
from msaformer.model.files import load_model_file, load_weights, save_model_file
from msaformer.model.msa_lm import REMOVED_FIELDS, MSALanguageModel, MsaModelConfig

FORMAT = "msaformer-msa-lm"
FORMAT_VERSION = 1
_HOW_TO_MAKE = "write one with `msaformer export-weights`, `msaformer convert-esm` or save_model"


def save_model(model: MSALanguageModel, path: str | Path, metadata: dict | None = None) -> Path:
    """Writes ``model`` (its config and weights) to ``path`` atomically; returns the path."""
    return save_model_file(path, kind=FORMAT, version=FORMAT_VERSION, config=dataclasses.asdict(model.config),
                           state_dict=model.state_dict(), metadata=metadata)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MSALanguageModel:
    """Returns the model stored by :func:`save_model`, in eval mode. No pickled code is run.

    Files written before the execution options left the architecture (``blocks_per_ckpt``,
    ``inference_chunk_tokens`` in their config) load too: those fields are dropped.
    """
    payload = load_model_file(path, kind=FORMAT, versions=(FORMAT_VERSION,), how_to_make=_HOW_TO_MAKE)
    config = {k: v for k, v in payload["config"].items() if k not in REMOVED_FIELDS}
    try:
        config = from_dict(MsaModelConfig, config, "model")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = MSALanguageModel(config)
    load_weights(model, payload["state_dict"], str(path))
    return model.to(map_location).eval()
