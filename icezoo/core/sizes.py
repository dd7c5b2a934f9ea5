"""Model sizes beyond the machine, refused in one line (issue 27, C2).

``embedder.dim = 1e9`` or ``backbone.depth = 1e9`` used to end in an allocation traceback or, worse,
in the kernel's OOM killer after a minute of swapping. While a component is built, its parameters
and submodules are counted as they are registered (torch's global registration hooks); the build is
stopped as soon as the fp32 weights would exceed the memory available to this process, or the
submodules exceed :data:`MAX_MODULES` (a depth no real model has: each costs Python memory even
when small). A parameter is registered before it is initialised, so the weights that stop the build
were never written (never resident). An allocation torch refuses outright is the same one line.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from icezoo.core.errors import IcezooError
from icezoo.core.memory import out_of_memory

#: submodules one component may create (the zoo's largest has a few thousand)
MAX_MODULES = 100_000
BYTES_PER_PARAM = 4  # fp32 weights; training needs about 4x that (gradients, two Adam moments)


class _TooBig(Exception):
    pass


def available_bytes() -> int | None:
    """Memory this process may still use: MemAvailable (Linux), else the physical memory; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _too_big(path: str, counts: dict, limit: int | None) -> IcezooError:
    if counts["modules"] > MAX_MODULES:
        return IcezooError(f"{path}: more than {MAX_MODULES:,} submodules (a depth or count far beyond any model): "
                           f"refused while building")
    return IcezooError(f"{path}: more than {counts['params']:,} parameters ({_gib(counts['params'] * BYTES_PER_PARAM)} "
                       f"of fp32 weights) exceed {_gib(limit or 0)}, half the memory available (training needs about 4x "
                       f"the weights): refused while building (lower the sizes)")


@contextmanager
def size_guard(path: str, limit_bytes: int | None = None) -> Iterator[None]:
    """Count what the ``with`` block registers; stop it with an IcezooError naming ``path`` when its
    weights would not fit in ``limit_bytes`` (default: half the memory available now: training holds
    the weights, their gradients and two Adam moments), it makes too many modules, or an allocation
    is refused (the address space is capped at the same margin while the block runs)."""
    if limit_bytes is None:
        avail = available_bytes()
        limit_bytes = avail // 2 if avail else None  # training needs about 4x the weights
    limit = limit_bytes
    counts = {"params": 0, "modules": 0, "over": False}

    def on_param(module, name, param):
        if param is not None:
            counts["params"] += param.numel()
            if limit is not None and counts["params"] * BYTES_PER_PARAM > limit:
                counts["over"] = True
                raise _TooBig
        return None

    def on_module(module, name, sub):
        counts["modules"] += 1
        if counts["modules"] > MAX_MODULES:
            counts["over"] = True
            raise _TooBig
        return None

    hooks = [nn.modules.module.register_module_parameter_registration_hook(on_param),
             nn.modules.module.register_module_module_registration_hook(on_module)]
    restore = _cap_address_space(limit)
    try:
        yield
    except Exception as exc:  # _TooBig, perhaps re-raised by the component as another type
        if counts["over"]:
            raise _too_big(path, counts, limit) from None
        if out_of_memory(exc):
            asked = re.search(r"tried to allocate (\d+) bytes", str(exc))
            what = f"an allocation of {_gib(int(asked.group(1)))} was refused" if asked else "memory ran out"
            raise IcezooError(f"{path}: {what} while building (this build may use {_gib(limit or 0)}, half the "
                              f"memory available): refused (lower the sizes)") from None
        raise
    finally:
        restore()
        for h in hooks:
            h.remove()


def _cap_address_space(extra: int | None):
    """Cap this process's address space at its current size + ``extra`` bytes (Linux, soft limit
    only) for the duration of a build, so that a size driving a Python loop or list (a depth of 1e9
    in a third-party encoder) ends in a MemoryError here, not in the OOM killer. Returns the undo."""
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as fh:
            size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + int(extra) if extra else None
        if cap is None or (soft != resource.RLIM_INFINITY and soft <= cap) or (hard != resource.RLIM_INFINITY
                                                                               and hard < cap):
            return lambda: None
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError, IndexError):
        return lambda: None
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
