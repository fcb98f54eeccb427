"""The model file format shared by every kind of msaformer model: one ``torch.save`` file, read without pickle.

A model file is ``{"format": KIND, "format_version": N, "config": {...}, "state_dict": {...}, "metadata":
{...}}``: plain dicts, strings, numbers and tensors only, so :func:`load_model_file` reads it with
``torch.load(weights_only=True)`` and no code stored in a file can run. Files are written atomically.
:func:`load_weights` puts a state dict into a model and names the first tensor that does not fit.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from msaformer.errors import CheckpointError


def save_model_file(path: str | os.PathLike, *, kind: str, version: int, config: dict, state_dict: dict,
                    metadata: dict | None = None) -> Path:
    """Writes a model file atomically and returns its path."""
    from msaformer.files import atomic_path

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give the model file's name, e.g. {path / 'model.pt'}")
    payload = {
        "format": kind,
        "format_version": version,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},  # tied weights stay shared
        "metadata": dict(metadata or {}),
    }
    with atomic_path(path, make_parents=True) as tmp:
        torch.save(payload, tmp)
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
        return f"holds objects the safe loader refuses ({detail}); nothing in it was run"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot be loaded ({first[:200]})"


def load_model_file(path: str | os.PathLike, *, kind: str, versions: tuple[int, ...] = (1,),
                    how_to_make: str = "") -> dict[str, Any]:
    """Returns the payload of a model file of format ``kind``, checked: a dict with a supported
    ``format_version``, a ``config`` dict and a ``state_dict`` of tensors. Every problem is one CheckpointError
    naming the file; ``how_to_make`` ends the message of a file that is not a model file of this kind."""
    path = Path(path)
    hint = f"; {how_to_make}" if how_to_make else ""
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a model file{hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        problem = torch_file_problem(path, exc)
        if problem.startswith("a fair-esm checkpoint"):
            raise CheckpointError(f"{path}: {problem}, not an msaformer model file") from None
        raise CheckpointError(f"{path}: not a readable {kind} model file: {problem}{hint}") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        extra = ""
        if isinstance(payload, dict) and "args" in payload and "model" in payload:
            extra = " (a fair-esm checkpoint? convert it with `msaformer convert-esm`)"
        raise CheckpointError(f"{path}: not a {kind} model file (format {found!r}){extra}{hint}")
    if payload.get("format_version") not in versions:
        raise CheckpointError(
            f"{path}: {kind} format_version {payload.get('format_version')!r} is not supported "
            f"(this msaformer reads {', '.join(map(str, versions))})"
        )
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{path}: the model file has no config")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the model file's state_dict is not a mapping of tensors")
    payload.setdefault("metadata", {})
    return payload


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str,
                 ignore_missing: frozenset[str] = frozenset()) -> None:
    """Loads ``state_dict`` into ``model`` exactly; raises one CheckpointError naming ``where`` and the first
    missing, unexpected or wrongly shaped tensor (``ignore_missing``: names the file may leave out, e.g. tied
    weights stored once)."""
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict and k not in ignore_missing]
    unexpected = [k for k in state_dict if k not in target]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
        raise CheckpointError(f"{where}: weights do not match the model's config ({'; '.join(parts)})")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise CheckpointError(
                f"{where}: weight {key} has shape {tuple(value.shape)}, the model's config needs {tuple(target[key].shape)}"
            )
    model.load_state_dict(state_dict, strict=not ignore_missing)
