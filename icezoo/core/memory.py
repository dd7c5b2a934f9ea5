"""Process memory: keep freed blocks for reuse instead of handing them back to the kernel.

icezoo's hot loops (the simulator's arrays, the model's activations, the loader's columns) allocate
and free blocks of a few MiB thousands of times. glibc serves each such block from a fresh mmap and
unmaps it on free, so the kernel zero-fills every page again: 20% of the simulator's CPU time and
~7% of ``icezoo predict``'s wall time on 2 cores (docs/performance.md). ``keep_freed_memory`` raises
glibc's mmap and trim thresholds once per process; a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)


@lru_cache(maxsize=1)
def keep_freed_memory(mmap_below: int = 256 << 20, trim_above: int = 512 << 20) -> bool:
    """Serve blocks below ``mmap_below`` bytes from the heap and return free heap memory to the
    kernel only beyond ``trim_above`` bytes (costs tens of MiB of peak RSS). Returns whether it took."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's, where it is glibc
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_below))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_above)))


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch (or Python) refusing an allocation (CPU or CUDA)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
