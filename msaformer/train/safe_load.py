"""Loading checkpoint files without unpickling code: ``torch.load(weights_only=True)`` everywhere.

A ``.pt`` file is a pickle; loading one with ``weights_only=False`` runs whatever its ``__reduce__`` entries
say, so a run directory someone shares or a download could execute code. msaformer writes its own states as
tensors, numbers and strings, and loads every file -- its own, and DeepSpeed's engine, optimizer and scheduler
states -- with ``weights_only=True``, allowing by name only the few plain data classes DeepSpeed stores
(:func:`deepspeed_safe_globals`). A file holding anything else is refused with one line naming it.

* :func:`safe_load` -- one file;
* :class:`SafeCheckpointEngine` / :func:`install_safe_loader` -- DeepSpeed's checkpoint engine with that loader,
  so that ``engine.load_checkpoint`` (training resume) never unpickles;
* :func:`safe_zero_to_fp32` -- DeepSpeed's ZeRO consolidation (``export-weights``) reading its files the same way.
"""

from __future__ import annotations

import contextlib
import os
import types
from pathlib import Path

from msaformer.errors import CheckpointError


def deepspeed_safe_globals() -> list:
    """Returns the classes DeepSpeed pickles into its checkpoint files that may be rebuilt from data: plain
    containers and enums of its configuration and ZeRO bookkeeping (no code runs when they are rebuilt)."""
    import collections

    from msaformer.train.distributed import import_deepspeed

    import_deepspeed()
    found = [collections.OrderedDict]
    names = (
        ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
        ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
        ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
        ("deepspeed.utils.tensor_fragment", "fragment_address"),
        ("deepspeed.runtime.zero.stage3", "ZeroParamStatus"),
    )
    import importlib

    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # not in this DeepSpeed version
            pass
    return found


def safe_load(path: str | os.PathLike, map_location="cpu", **kwargs):
    """Returns ``torch.load(path, weights_only=True)`` with DeepSpeed's data classes allowed.

    Raises:
        CheckpointError: the file is missing, damaged, not a torch file, or holds objects that are not plain
            data (what would have run is named; nothing runs).
    """
    import torch

    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types; one line names the file
        from msaformer.model.files import torch_file_problem

        raise CheckpointError(f"{path}: {torch_file_problem(Path(path), exc)}") from None


def _torch_checkpoint_engine():
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    return TorchCheckpointEngine


def install_safe_loader(engine) -> None:
    """Makes ``engine`` (a DeepSpeed engine) load checkpoint files with :func:`safe_load`."""
    base = _torch_checkpoint_engine()
    current = getattr(engine, "checkpoint_engine", None)
    if current is None or isinstance(current, SafeCheckpointEngine()):
        return
    if type(current) is not base:
        raise CheckpointError(f"DeepSpeed checkpoint engine {type(current).__name__} is not supported by msaformer "
                              "(it would load files with pickle); use the default torch checkpoint engine")
    current.__class__ = SafeCheckpointEngine()


_SAFE_ENGINE = []


def SafeCheckpointEngine():  # noqa: N802 - a class made on first use (DeepSpeed is imported lazily)
    """Returns the subclass of DeepSpeed's ``TorchCheckpointEngine`` whose ``load`` is :func:`safe_load`."""
    if not _SAFE_ENGINE:
        base = _torch_checkpoint_engine()

        class _Safe(base):
            def load(self, path: str, map_location=None):
                return safe_load(path, map_location=map_location)

        _Safe.__name__ = _Safe.__qualname__ = "SafeCheckpointEngine"
        _SAFE_ENGINE.append(_Safe)
    return _SAFE_ENGINE[0]


@contextlib.contextmanager
def _zero_to_fp32_reading_safely():
    """While inside, DeepSpeed's ``zero_to_fp32`` module sees a ``torch`` whose ``load`` is :func:`safe_load`
    (the module calls ``torch.load(..., weights_only=False)``; only that name of that module is replaced)."""
    from deepspeed.utils import zero_to_fp32

    import torch

    def load(path, map_location=None, weights_only=None, mmap=None, **kwargs):  # noqa: ARG001 - forced safe
        return safe_load(path, map_location=map_location or "cpu", **({"mmap": True} if mmap else {}))

    proxy = types.SimpleNamespace(**{name: getattr(torch, name) for name in dir(torch) if not name.startswith("__")})
    proxy.load = load
    saved = zero_to_fp32.torch
    zero_to_fp32.torch = proxy
    try:
        yield zero_to_fp32
    finally:
        zero_to_fp32.torch = saved


def safe_zero_to_fp32(checkpoint_root: str | os.PathLike, tag: str) -> dict:
    """Returns the fp32 state dict of a ZeRO (1-3) checkpoint, DeepSpeed's consolidation reading its files
    with :func:`safe_load`."""
    with _zero_to_fp32_reading_safely() as zero_to_fp32:
        return zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root), tag=tag)
