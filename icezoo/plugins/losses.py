"""Losses on the head output against the true unit vector; fp32, outside autocast (core.Loss)."""

from __future__ import annotations

import math

import torch

from icezoo.core import Loss, hookimpl


def log_c3(kappa: torch.Tensor) -> torch.Tensor:
    """log of the 3D von Mises-Fisher normaliser C3(k) = k / (4 pi sinh k), stable for all k >= 0.

    log(k / sinh k) is -k^2/6 + k^4/180 for small k (series), and log(2k) - k - log(1 - e^{-2k})
    otherwise (no overflow for large k).
    """
    small = kappa < 1e-3
    k_small = kappa.clamp(max=1e-3)
    series = -k_small**2 / 6 + k_small**4 / 180
    k_big = kappa.clamp(min=1e-3)
    asym = torch.log(2 * k_big) - k_big - torch.log(-torch.expm1(-2 * k_big))
    return torch.where(small, series, asym) - math.log(4 * math.pi)


class VonMisesFisher3D(Loss):
    """Negative log-likelihood of a 3D von Mises-Fisher with mean pred/|pred|, kappa |pred| (EXP_16 on)."""

    name = "vmf3d"

    def _forward(self, pred, target):
        kappa = torch.sqrt((pred * pred).sum(-1) + torch.finfo(pred.dtype).eps)
        return -log_c3(kappa) - (pred * target).sum(-1)


class CosineLoss(Loss):
    """1 - cosine similarity between prediction and truth (CosineSimilarityLoss, EXP_20/24)."""

    name = "cosine"

    def _forward(self, pred, target):
        return 1.0 - torch.nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-8)


@hookimpl
def icezoo_components():
    return [VonMisesFisher3D, CosineLoss]
