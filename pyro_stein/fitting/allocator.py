"""Keep freed memory in the process while a fit runs.

PyTorch's CPU tensors come from the C library's ``malloc``.  A step of a fit allocates and
frees the same few large temporaries (the model's ``(particles, rows)`` likelihood terms,
the ``N x N`` kernel) over and over.  glibc returns such memory to the kernel as soon as it
is freed, either because the block was ``mmap``-ed (above ``M_MMAP_THRESHOLD``, 128 KiB
at the start of a process) or because the free space at the top of the heap passed
``M_TRIM_THRESHOLD``, so the next step faults in and zeroes the same pages again.  glibc
raises both thresholds by itself once the process has freed a large block, which is why a
second fit in a process ran faster than the first (docs/benchmarks.md, "The main job").

`retain_freed_memory()` sets the thresholds for the duration of a fit: blocks up to
32 MiB (glibc's own ceiling for the dynamic threshold on 64-bit systems) come from the heap,
and free memory is not handed back until the fit ends, when ``malloc_trim`` returns it.
Afterwards the thresholds stay at the values glibc's dynamic rule reaches in a process that
has freed a 32 MiB block (mmap threshold 32 MiB, trim threshold 64 MiB); setting them turns
that rule off for the rest of the process.  Elsewhere than on Linux with glibc, or with
`RETAIN_FREED_MEMORY` set to ``False``, it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["RETAIN_FREED_MEMORY", "retain_freed_memory"]

#: Whether `fit` keeps freed memory in the process while it runs (see the module's
#: docstring); set to ``False`` to leave the C library's allocator as it is.
RETAIN_FREED_MEMORY = True

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's ceiling for its dynamic mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``).
_MMAP_THRESHOLD = 32 * 1024 * 1024
#: While a fit runs: free memory stays in the process up to this much.
_TRIM_THRESHOLD_DURING = 1024 * 1024 * 1024
#: Afterwards: twice the mmap threshold, as glibc's dynamic rule sets it.
_TRIM_THRESHOLD_AFTER = 2 * _MMAP_THRESHOLD


@functools.lru_cache(maxsize=1)
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def retain_freed_memory() -> Iterator[bool]:
    """Within this context glibc keeps freed memory for reuse instead of returning it to
    the kernel after every step; on leaving, it returns what is free.

    Yields:
        Whether the allocator was tuned (``False``: not glibc, or `RETAIN_FREED_MEMORY`
        is off).

    Example:
        >>> import torch
        >>> with retain_freed_memory():
        ...     total = sum(float(torch.ones(1 << 20).sum()) for _ in range(3))
        >>> total
        3145728.0
    """
    libc = _glibc() if RETAIN_FREED_MEMORY else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_DURING)
    try:
        yield True
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_AFTER)
        libc.malloc_trim(0)
