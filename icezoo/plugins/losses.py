"""Losses on the head output against the true unit vector, one class each, registered by being defined.

Each writes ``forward(pred, target)``, the per-event terms [B]; the base class (:class:`icezoo.core.Loss`)
checks the shapes, computes in fp32 outside autocast and averages the terms when the loss is called.

Losses that take both head outputs (``accepts = {"vector", "angles"}``) convert: an angles
prediction [B, 2] becomes a unit vector, a vector prediction [B, 3] becomes (azimuth, zenith). The
conversions are guarded (a zero vector, a pole) so every loss has finite values and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from icezoo.core import Config, Loss, angles_to_vector
from icezoo.nn.bins import BinLayout, smoothed_targets

BOTH = frozenset({"vector", "angles"})


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


def as_vector(pred: torch.Tensor) -> torch.Tensor:
    """Head output -> unit vector [B, 3]: normalises a vector, converts (azimuth, zenith) angles."""
    if pred.shape[-1] == 2:
        return angles_to_vector(pred[..., 0], pred[..., 1])
    eps = 1e-12 if pred.dtype == torch.float64 else 1e-6
    return pred / torch.sqrt((pred * pred).sum(-1, keepdim=True).clamp_min(eps * eps))


def as_angles(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output -> (azimuth, zenith); a vector's azimuth is atan2(y, x) (any branch: the losses wrap
    it), its zenith atan2(rho, z). Degenerate vectors (on the z axis, or zero) get finite zero gradients."""
    if pred.shape[-1] == 2:
        return pred[..., 0], pred[..., 1]
    x, y, z = pred.unbind(-1)
    tiny = torch.finfo(pred.dtype).tiny ** 0.5
    rho2 = x * x + y * y
    off_axis = rho2 > tiny
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    azimuth = torch.atan2(torch.where(off_axis, y, zero), torch.where(off_axis, x, one))
    rho = torch.where(off_axis, torch.sqrt(torch.where(off_axis, rho2, one)), zero)
    nonzero = (rho2 + z * z) > tiny
    zenith = torch.atan2(torch.where(nonzero, rho, zero), torch.where(nonzero, z, one))
    return azimuth, zenith


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Angle difference wrapped into [-pi, pi) (gradient 1 almost everywhere)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def logcosh(x: torch.Tensor) -> torch.Tensor:
    """log(cosh x) without overflow: |x| + softplus(-2|x|) - log 2."""
    ax = x.abs()
    return ax + F.softplus(-2 * ax) - math.log(2.0)


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis with a zero (not NaN) gradient at the zero vector."""
    sq = (v * v).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


class VonMisesFisher3D(Loss):
    """Negative log-likelihood of a 3D von Mises-Fisher with mean pred/|pred|, kappa |pred| (EXP_16 on)."""

    name = "vmf3d"
    accepts = frozenset({"vector"})

    def forward(self, pred, target):
        kappa = torch.sqrt((pred * pred).sum(-1) + torch.finfo(pred.dtype).eps)
        return -log_c3(kappa) - (pred * target).sum(-1)


class CosineLoss(Loss):
    """1 - cosine similarity between prediction and truth (CosineSimilarityLoss, EXP_20/24)."""

    name = "cosine"
    accepts = BOTH

    def forward(self, pred, target):
        if pred.shape[-1] == 2:
            pred = as_vector(pred)
        return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)


class EuclideanLoss(Loss):
    """Distance between the unit prediction and the truth, |u - t| = 2 sin(angle/2) (EucLadianDistanceLoss, EXP_21/22)."""

    name = "euclidean"
    accepts = BOTH

    def forward(self, pred, target):
        return _safe_norm(as_vector(pred) - target)


class LogCoshLoss(Loss):
    """log-cosh of the azimuth and zenith errors, averaged (EXP_02-EXP_14); the azimuth error wraps around 2 pi.

    A vector prediction is converted to angles first. The azimuth error is taken modulo 2 pi into
    [-pi, pi), so 6.2 vs 0.1 rad is an error of ~0.18, not 6.1.
    """

    name = "logcosh"
    accepts = BOTH

    def forward(self, pred, target):
        az, ze = as_angles(pred)
        with torch.no_grad():
            taz, tze = as_angles(target)
        return 0.5 * (logcosh(wrap_angle(az - taz)) + logcosh(ze - tze))


class AngularLoss(Loss):
    """The competition metric itself: arccos of the cosine between prediction and truth (EXP_00's assumed loss).

    The arccos input is clamped to [-1 + eps, 1 - eps], so the gradient stays finite (it is zero
    within eps of a perfect or an opposite prediction).
    """

    name = "angular"
    accepts = BOTH

    def forward(self, pred, target):
        eps = 1e-7 if pred.dtype == torch.float64 else 1e-6
        cos = (as_vector(pred) * as_vector(target)).sum(-1)
        return torch.arccos(cos.clamp(-1.0 + eps, 1.0 - eps))


class BinsCrossEntropy(Loss):
    """Cross-entropy of the azimuth and zenith bins against Gaussian-smoothed labels (3rd place, IceCube Kaggle 2023).

    The true direction's continuous bin position gets a Gaussian of ``width`` bins over the bin
    centres (circular for the azimuth; ``width = 0``: one-hot), and the loss is the azimuth
    cross-entropy plus the zenith one. The bin layout is the head's (``direction_bins``), read when
    the pipeline is composed; unbound, the head's defaults (128 x 128, uniform in angle).
    """

    name = "bins_ce"
    accepts = frozenset({"bins"})

    class Config(Config):
        width: float = Field(1.0, ge=0, le=64, allow_inf_nan=False, description="Gaussian label smoothing, "
                             "its standard deviation in bins (0: one-hot labels)")

    def __init__(self, config: Config):
        super().__init__(config)
        self.layout = BinLayout()

    def bind(self, head) -> None:
        self.layout = head.layout

    def forward(self, pred, target):
        ta, tz = smoothed_targets(self.layout, target, self.config.width)
        la, lz = self.layout.split(pred)
        return -(ta * F.log_softmax(la, -1)).sum(-1) - (tz * F.log_softmax(lz, -1)).sum(-1)
