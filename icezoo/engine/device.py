"""Where the engine runs: the device, the torchrun process group, and the precision's autocast."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch
import torch.distributed as td

from icezoo.core.atomic import os_error_line
from icezoo.core.errors import IcezooError

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in a single process)."""
        if self.enabled:
            td.barrier()

    def on_main(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on rank 0; every rank gets its (picklable) result, or raises its
        input error as the same IcezooError, so that under torchrun all ranks stop with one and the same
        line instead of rank 1 dying in a collective."""
        result = error = None
        if self.main:
            try:
                result = fn(*args, **kwargs)
            except IcezooError as exc:
                error = str(exc)
            except OSError as exc:
                error = os_error_line(exc)
        if self.enabled:
            box = [error, result]
            td.broadcast_object_list(box, src=0)
            error, result = box
        if error is not None:
            raise IcezooError(error)
        return result


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for ``--threads N`` (None: torch's default). 0 or less is one line, not
    silently the default (0) or torch's RuntimeError (-1)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise IcezooError(f"--threads {threads}: expected a whole number of CPU threads, at least 1")
    torch.set_num_threads(threads)


def setup_distributed() -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1:
        return Distributed()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        td.init_process_group(backend)
    return Distributed(rank=td.get_rank(), world_size=td.get_world_size(), local_rank=local)


def pick_device(dist: Distributed | None = None, want: str | None = None) -> torch.device:
    """``--device want`` (a bad name, or a GPU this machine lacks, is one IcezooError), else this
    rank's GPU (any GPU without ``dist``) when there is one, else the CPU."""
    if want:
        try:
            device = torch.device(want)
        except (RuntimeError, ValueError):
            raise IcezooError(f"--device {want}: not a device (expected cpu, cuda or cuda:N)") from None
        if device.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0:
                raise IcezooError(f"--device {want}: no CUDA GPU available here (use --device cpu)")
            if device.index is not None and device.index >= n:
                raise IcezooError(f"--device {want}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank) if dist is not None else torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision (fp32: disabled)."""
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES.get(precision, torch.float32),
                          enabled=precision != "fp32")


def device_name(device) -> str:
    """The machine: GPU name or CPU model, with the core count."""
    if getattr(device, "type", str(device)) == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
