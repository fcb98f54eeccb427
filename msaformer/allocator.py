"""Keep freed memory for reuse: glibc's allocator tuned for numpy's large short-lived buffers.

glibc serves allocations of 128 KiB and more with ``mmap`` and gives them back to the system when freed, and it
returns the top of the heap once more than a few hundred KiB of it are free. numpy's temporaries in the parsers
(byte masks the size of a file) are exactly that: each call then pays a page fault per 4 KiB of every temporary,
which on a virtual machine costs more than the arithmetic (measured: parsing the sample files takes 2x longer).
:func:`keep_freed_memory` raises both thresholds, so freed buffers stay in the heap and the next call reuses them;
a process keeps at most ``trim`` bytes it does not use. msaformer calls it in the processes it runs (the command
line, preprocess workers); a program using msaformer as a library may call it too. A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(mmap_threshold: int = 64 << 20, trim: int = 256 << 20) -> bool:
    """Makes glibc serve allocations below ``mmap_threshold`` from the heap and keep up to ``trim`` free bytes
    at its top; returns whether the settings took effect (False off Linux / glibc). Idempotent."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim)))
    return _done


def keeps_freed_memory() -> bool:
    """Returns whether :func:`keep_freed_memory` took effect in this process."""
    return _done
