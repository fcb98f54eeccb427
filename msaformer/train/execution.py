"""How a model is run for training, applied from outside the model (torchtitan's split).

The model's ``forward`` is one plain loop over ``model.layers``. :func:`prepare_model` changes how those blocks
run without touching the model code: activation checkpointing wraps blocks (non-reentrant
``torch.utils.checkpoint``, so the block's activations are recomputed in the backward pass instead of stored),
then ``torch.compile`` compiles each block in place. The training engine, the trunk benchmark and the GPU
memory estimator all call it, so they measure the same program.

State-dict names stay those of the plain model (the checkpoint wrapper strips its prefix from ``state_dict()``
and accepts plain names in ``load_state_dict()``); :func:`plain_names` removes the wrapper's prefix from names
that come from ``named_parameters()``, as DeepSpeed's ZeRO-3 checkpoints record them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from msaformer.errors import ConfigError

_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")


@dataclass(frozen=True)
class ExecutionOptions:
    """How the blocks of a model run during training.

    Attributes:
        activation_checkpointing: checkpoint every N-th block of ``model.layers`` (1 = every block, 2 = every
            other block, ...); None = off. Non-reentrant; a no-op when gradients are off.
        compile: compile each block with ``torch.compile`` (after checkpointing is applied).
    """

    activation_checkpointing: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        every = self.activation_checkpointing
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ConfigError(f"train.activation_checkpointing must be an integer >= 1 (every N-th block) or null, got {every!r}")


def apply_activation_checkpointing(
    model: nn.Module, every: int = 1, context_fn: Callable[[], tuple[Any, Any]] | None = None
) -> nn.Module:
    """Wraps every ``every``-th block of ``model.layers`` in a non-reentrant activation checkpoint; returns
    ``model``. ``context_fn`` is passed to ``torch.utils.checkpoint.checkpoint`` (the contexts of the forward
    and of the recomputation), e.g. to recompute under the same emulation as the forward."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    kwargs = {"context_fn": context_fn} if context_fn is not None else {}
    for i, block in enumerate(model.layers):
        if i % every == 0 and not is_checkpointed(block):
            model.layers[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT, **kwargs)
    return model


def is_checkpointed(block: nn.Module) -> bool:
    """Returns whether ``block`` is wrapped by :func:`apply_activation_checkpointing`."""
    return hasattr(block, "_checkpoint_wrapped_module")


def apply_compile(model: nn.Module) -> nn.Module:
    """Compiles each block of ``model.layers`` in place (``nn.Module.compile``: parameter names unchanged)."""
    for block in model.layers:
        block.compile()
    return model


def prepare_model(model: nn.Module, options: ExecutionOptions,
                  context_fn: Callable[[], tuple[Any, Any]] | None = None) -> nn.Module:
    """Applies ``options`` to ``model`` (checkpointing, then compilation) and returns it."""
    if options.activation_checkpointing:
        apply_activation_checkpointing(model, options.activation_checkpointing, context_fn)
    if options.compile:
        apply_compile(model)
    return model


def plain_names(state: dict[str, Any]) -> dict[str, Any]:
    """Returns ``state`` with the checkpoint / compile wrappers' prefixes removed from its keys."""
    out = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.replace(prefix, "")
        out[key] = value
    return out
