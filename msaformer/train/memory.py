"""Device-free accounting of a model's peak tensor memory, to plan GPU runs from a CPU-only machine.

The model runs on the ``meta`` device (shapes and dtypes, no data, no compute), under two modes:

* :class:`MemoryTracker` (a ``TorchDispatchMode``) sees every tensor an operator returns, counts the bytes
  of each new storage (rounded up to the CUDA caching allocator's 512-byte blocks) until the storage is
  freed, and keeps the running peak: what ``torch.cuda.max_memory_allocated`` reports for the same program.
* :class:`EmulatedAutocast` (a ``TorchFunctionMode``) applies CUDA autocast's casting rules for the ops
  these models use (matmuls in the low precision dtype, layer norm / softmax / reductions in fp32, cast
  parameters cached for the region), so saved activations get the dtypes they would have on a GPU.
  ``scaled_dot_product_attention`` is replaced by a stand-in with the memory behaviour of the flash /
  memory-efficient kernels: it keeps ``q, k, v``, the output and an fp32 log-sum-exp, never the
  ``[..., N, N]`` map, and its backward allocates an fp32 ``dq`` accumulator. ``dropout`` is replaced by
  one with the memory of CUDA's fused kernel (output + a 1-byte mask).

What it does not see: the allocator's fragmentation and cached-but-free blocks (``max_memory_reserved``),
cuBLAS / cuDNN workspaces, the CUDA context (~0.5 GiB outside PyTorch's counters) and NCCL buffers. Meta
tensors hold no values, so every data-dependent branch (``bool(t)``, ``t.item()``) reads 0 / False: the
inputs are taken to be unpadded MSAs. Compare the estimate with a measurement whenever a GPU is at hand;
``tools/estimate_memory.py`` checks it against fair-esm's published H100 figures.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

GiB = 2**30
#: The CUDA caching allocator hands out blocks in multiples of 512 bytes.
BLOCK_BYTES = 512

_aten = torch.ops.aten
_SCALAR_OPS = {_aten._local_scalar_dense.default, _aten.item.default, _aten.is_nonzero.default}


class MemoryTracker(TorchDispatchMode):
    """Counts live tensor storage bytes and their peak while active.

    Storages that exist before the tracker starts (parameters, say) are counted by :meth:`track`; storages
    created inside are counted when an operator returns them and released when Python frees them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, tuple[int, weakref.ref]] = {}

    def track(self, tensors: Iterable[torch.Tensor]) -> None:
        """Counts already-existing tensors (e.g. a model's parameters and buffers)."""
        for t in tensors:
            self._add(t)

    def reset_peak(self) -> None:
        """Starts a new peak from the current live bytes (``torch.cuda.reset_peak_memory_stats``)."""
        self.peak = self.current

    def _add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        nbytes = math.ceil(storage.nbytes() / BLOCK_BYTES) * BLOCK_BYTES
        self._live[key] = (nbytes, weakref.ref(storage, lambda _, key=key: self._free(key)))
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SCALAR_OPS:
            flat, _ = tree_flatten((args, kwargs))
            if any(isinstance(a, torch.Tensor) and a.is_meta for a in flat):
                return 0  # no data on meta: every data-dependent test reads False (no padding)
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out


class _FlashAttention(torch.autograd.Function):
    """Memory stand-in for the fused attention kernels (outputs are uninitialised: meta tensors only)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v, _, _ = ctx.saved_tensors
        dq_accum = q.new_empty(q.shape, dtype=torch.float32)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        del dq_accum
        return dq, dk, dv


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    # With a mask the memory-efficient kernel runs instead of flash; it keeps no more than flash does.
    return _FlashAttention.apply(q, k, v)


class _FusedDropout(torch.autograd.Function):
    """Memory stand-in for CUDA's fused dropout: the output plus a 1-byte mask, which the backward keeps.

    (Off CUDA, ``F.dropout`` draws an input-sized float noise tensor and multiplies, keeping both the
    input and the noise for the backward: 8 bytes per fp32 element instead of 1.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        ctx.save_for_backward(mask)
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.empty_like(grad)


def _dropout(x, p=0.5, training=True, inplace=False):
    if not training or p == 0.0:
        return x
    return _FusedDropout.apply(x)


class _CudaKernels(TorchFunctionMode):
    """Swaps the ops whose CUDA kernels allocate differently from their generic versions for stand-ins."""

    def _kernel(self, func, args, kwargs):
        if func is F.scaled_dot_product_attention:
            return _sdpa(*args, **kwargs)
        if func is F.dropout:
            return _dropout(*args, **kwargs)
        return func(*args, **kwargs)


class EmulatedAutocast(_CudaKernels):
    """CUDA autocast's casting rules, applied to the ops the MSA models call, on any device.

    Low precision: ``linear``, ``matmul``/``@``, ``mm``, ``bmm``, ``baddbmm``, ``addmm``, ``einsum``,
    attention. FP32: ``layer_norm``, ``softmax``, ``log_softmax``, ``cross_entropy``, ``sum``, ``cumsum``.
    Everything else runs on its inputs' dtypes, as under autocast. Casts of parameters (leaf tensors that
    require grad) are cached until the mode exits, as autocast caches them for its region.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16, cache: bool = True):
        super().__init__()
        self.dtype = dtype
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        T = torch.Tensor
        self._low = {
            F.linear, torch.matmul, T.matmul, T.__matmul__, torch.mm, T.mm, torch.bmm, T.bmm,
            torch.baddbmm, torch.addmm, torch.einsum,
        }  # fmt: skip
        self._fp32 = {
            F.layer_norm, F.softmax, torch.softmax, T.softmax, F.log_softmax, torch.log_softmax,
            T.log_softmax, F.cross_entropy, torch.sum, T.sum, torch.cumsum, T.cumsum,
        }  # fmt: skip

    def __exit__(self, *exc):
        self._cache.clear()
        return super().__exit__(*exc)

    def _cast(self, dtype: torch.dtype) -> Callable[[Any], Any]:
        def cast(a):
            if not (isinstance(a, torch.Tensor) and a.is_floating_point()) or a.dtype == dtype:
                return a
            if self.cache and dtype == self.dtype and a.is_leaf and a.requires_grad and not a._is_view():
                hit = self._cache.get(id(a))
                if hit is None or hit[0] is not a:
                    hit = self._cache[id(a)] = (a, a.to(dtype))
                return hit[1]
            return a.to(dtype)

        return cast

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention or func in self._low:
            args, kwargs = tree_map(self._cast(self.dtype), (args, kwargs))
        elif func in self._fp32 and kwargs.get("dtype") is None:
            args, kwargs = tree_map(self._cast(torch.float32), (args, kwargs))
        return self._kernel(func, args, kwargs)


class CudaKernelsOnly(_CudaKernels):
    """Without autocast (fp32 runs): only the attention and dropout stand-ins."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._kernel(func, args, kwargs or {})


def emulation(dtype: torch.dtype | None, cache: bool = True) -> TorchFunctionMode:
    """Returns the torch-function mode that stands for CUDA's kernels (and autocast to ``dtype`` unless None)."""
    return EmulatedAutocast(dtype, cache) if dtype is not None else CudaKernelsOnly()


def recompute_context(dtype: torch.dtype | None) -> Callable[[], tuple[Any, Any]]:
    """Returns the ``context_fn`` that makes checkpointed blocks recompute under the emulation: torch-function
    modes are not active in the backward pass, where checkpointing recomputes. Pass it to
    :func:`msaformer.train.execution.apply_activation_checkpointing` of a model measured by :func:`measure_step`."""
    return lambda: (contextlib.nullcontext(), emulation(dtype, cache=False))


def measure_step(
    model: torch.nn.Module,
    step: Callable[[Callable[[], Any]], None],
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    warmup: int = 1,
    extra: Iterable[torch.Tensor] = (),
) -> tuple[float, float]:
    """Returns ``(peak GiB, GiB live before the measured step)`` of running ``step`` once after ``warmup``
    runs, for a ``model`` on the meta device.

    ``step(autocast)`` does one whole iteration (forward, and backward + optimizer step for training), like
    the benchmark loop whose ``torch.cuda.max_memory_allocated`` it stands for, entering ``autocast()``
    where the real loop enters ``torch.autocast``. A model with activation checkpointing must be prepared
    with ``context_fn=recompute_context(dtype)``, so its blocks recompute under the emulation too, as
    ``torch.utils.checkpoint`` restores autocast for recomputation. ``dtype`` is the autocast dtype (None:
    fp32, no autocast; attention and dropout still go through the kernel stand-ins). ``extra`` are other
    tensors that exist before the step (inputs, say).
    """

    def autocast(cache: bool = True) -> TorchFunctionMode:
        return emulation(dtype, cache)

    tracker = MemoryTracker()
    tracker.track(list(model.parameters()) + list(model.buffers()) + list(extra))
    with tracker:
        for _ in range(warmup):
            step(autocast)
        base = tracker.current
        tracker.reset_peak()
        step(autocast)
    return tracker.peak / GiB, base / GiB
