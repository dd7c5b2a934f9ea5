"""What the layers do differently while a model is being exported (torch.export or torch.jit.trace).

An exported graph has to run for any batch size and pulse count, so under export a layer takes the
path whose shapes follow its inputs (no Python loop over the pulse axis, no Python branch on a
size) and whose operations ONNX has (TopK instead of a stable sort). Both paths compute the same
numbers; eager training keeps the faster one.
"""

from __future__ import annotations

import torch


def exporting() -> bool:
    """True inside ``torch.export`` (the ONNX route) or ``torch.jit.trace`` (TorchScript)."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting())


def smallest(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of the last axis, ascending, ties in index order (a stable sort's
    first k). Shapes: x [..., N] (N >= k) -> (values, indices), each [..., k].

    Eager: ``torch.sort(stable=True)``. Under ``torch.export``: ``torch.topk``, which becomes ONNX
    TopK, whose ties go to the lower index by the operator's definition (onnxruntime keeps it), so
    the exported graph picks the same entries; ONNX has no stable sort. TorchScript keeps the sort.
    """
    if torch.compiler.is_exporting():
        return torch.topk(x, k, dim=-1, largest=False, sorted=True)
    values, indices = torch.sort(x, dim=-1, stable=True)
    return values[..., :k], indices[..., :k]


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """Attention output heads side by side. Shapes: [B, h, L, d] -> [B, L, h d].

    Under export the transposed result is first copied to a contiguous tensor: the layout of
    ``scaled_dot_product_attention``'s eager kernel makes the reshape a view, which no longer holds
    once the ONNX exporter decomposes the attention into plain operations.
    """
    b, h, n, d = out.shape
    out = out.transpose(1, 2)
    if exporting():
        out = out.clone(memory_format=torch.contiguous_format)
    return out.reshape(b, n, h * d)


__all__ = ["exporting", "smallest", "merge_heads"]
