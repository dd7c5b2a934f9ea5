"""FLOPs of a step and the matmul roof of this machine, for ``icezoo bench model``.

:func:`count_flops` counts the floating-point operations of the matrix products a function runs
(``torch.utils.flop_counter``: mm, bmm, addmm, baddbmm, convolutions and fused attention, forward and
backward; 2 per multiply-add). torch's counter knows the GPU attention kernels but not the CPU
one, so it is added here. Elementwise work (softmax, norms, activations, the optimizer) is not
counted: the figure is the matmul work, which is what a matmul roof bounds.

:func:`matmul_roof` measures the GFLOP/s of one large square matmul in the given precision, on
the same device and threads, in the same process: the practical ceiling the model's achieved
GFLOP/s is compared with.
"""

from __future__ import annotations

import time
from typing import Callable


def _cpu_attention_formulas() -> dict:
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    table = {}
    for name, fn in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                     ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        op = getattr(aten, name, None)
        if op is not None:
            table[op] = fn
    return table


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul FLOPs of one call of ``fn`` (which runs normally, side effects included)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_roof(device, dtype=None, n: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of an ``n`` x ``n`` matmul on ``device`` in ``dtype`` (fp32 by default), best of
    repeated timings over about ``seconds``."""
    import torch

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b)
    sync()
    best, spent, reps = float("inf"), 0.0, 1
    while spent < seconds:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync()
        dt = (time.perf_counter() - t0) / reps
        spent += dt * reps
        best = min(best, dt)
        reps = min(reps * 2, 64)
    return 2 * n**3 / best / 1e9
