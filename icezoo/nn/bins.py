"""Directions as azimuth and zenith bins: the layout, smoothed bin targets, and decoding (3rd place, Kaggle 2023).

The 3rd-place solution of the IceCube Kaggle competition classified the azimuth and the zenith into
128 bins each, trained on locally smoothed labels; ISeeCube (arXiv:2308.13285) compares such a
classification head with regression. Shapes: logits [B, A + Z] (azimuth bins first), directions [B, 3].

* Bin positions: azimuth bin j covers [2 pi j / A, 2 pi (j+1) / A) (circular); zenith bins are uniform
  in the angle (``zenith = "angle"``, bin 0 at zenith 0) or in cos(zenith) (``"cos"``, bin 0 at
  cos = 1, i.e. zenith 0, so equal solid angle per bin).
* Smoothed targets: a Gaussian over the bin centres around the true (continuous) bin position, width
  ``sigma`` in bins (circular distance for the azimuth); ``sigma = 0`` is the one-hot label.
* Decoding: the expectation of the unit vector under the product of the two bin distributions,
  ``m = (E[sin ze] E[cos az], E[sin ze] E[sin az], E[cos ze])``; its azimuth is exactly the circular mean
  of the azimuth distribution. ``mode`` takes the centres of the two most probable bins instead.
* Confidence: the mean resultant length R = |m| (1 for a point mass, 0 for a uniform sky) turned into a
  von Mises-Fisher concentration with Banerjee et al.'s approximation kappa = R (3 - R^2) / (1 - R^2)
  (JMLR 2005, for 3 dimensions), so kappa-weighted ensembles and the kappa calibration apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: R is clamped below 1 - R_EPS before the kappa formula (a point mass gives kappa ~ 2 / R_EPS)
R_EPS = 1e-4


@dataclass(frozen=True)
class BinLayout:
    """How many azimuth and zenith bins, and whether the zenith bins are uniform in the angle or its cosine."""

    azimuth_bins: int = 128
    zenith_bins: int = 128
    zenith: str = "angle"  # "angle" | "cos"

    @property
    def size(self) -> int:
        return self.azimuth_bins + self.zenith_bins

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits[..., :self.azimuth_bins], logits[..., self.azimuth_bins:self.size]

    def positions(self, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous bin coordinates (bin j's centre is j + 0.5) of unit vectors [B, 3]."""
        x, y, z = direction.unbind(-1)
        az = torch.remainder(torch.atan2(y, x), 2 * math.pi)
        cz = z.clamp(-1.0, 1.0)
        u_az = az / (2 * math.pi) * self.azimuth_bins
        if self.zenith == "cos":
            u_ze = (1.0 - cz) / 2.0 * self.zenith_bins
        else:
            u_ze = torch.arccos(cz) / math.pi * self.zenith_bins
        return u_az, u_ze

    def centres(self, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(azimuth centres [A], cos and sin of the zenith centres [Z] x 2), radians."""
        j = torch.arange(self.azimuth_bins, dtype=dtype, device=device) + 0.5
        az = j * (2 * math.pi / self.azimuth_bins)
        k = torch.arange(self.zenith_bins, dtype=dtype, device=device) + 0.5
        if self.zenith == "cos":
            cz = 1.0 - 2.0 * k / self.zenith_bins
            sz = torch.sqrt((1.0 - cz * cz).clamp_min(0.0))
        else:
            ze = k * (math.pi / self.zenith_bins)
            cz, sz = torch.cos(ze), torch.sin(ze)
        return az, cz, sz


def _gaussian(dist: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised weights over the last axis from distances in bins (one-hot at the nearest for sigma 0)."""
    if sigma <= 0:
        return torch.nn.functional.one_hot(dist.abs().argmin(-1), dist.shape[-1]).to(dist.dtype)
    w = torch.exp(-0.5 * (dist / sigma) ** 2)
    return w / w.sum(-1, keepdim=True)


def smoothed_targets(layout: BinLayout, direction: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Target distributions ([B, A], [B, Z]) of true unit directions, Gaussian of width ``sigma`` bins."""
    u_az, u_ze = layout.positions(direction)
    j = torch.arange(layout.azimuth_bins, dtype=direction.dtype, device=direction.device) + 0.5
    d_az = torch.remainder(j - u_az[:, None] + layout.azimuth_bins / 2, layout.azimuth_bins) - layout.azimuth_bins / 2
    k = torch.arange(layout.zenith_bins, dtype=direction.dtype, device=direction.device) + 0.5
    return _gaussian(d_az, sigma), _gaussian(k - u_ze[:, None], sigma)


def expected_vector(layout: BinLayout, logits: torch.Tensor) -> torch.Tensor:
    """m = E[v] [B, 3] under the product of the softmaxed azimuth and zenith distributions (|m| <= 1)."""
    la, lz = layout.split(logits)
    pa, pz = torch.softmax(la, -1), torch.softmax(lz, -1)
    az, cz, sz = layout.centres(logits.dtype, logits.device)
    e_sin = pz @ sz
    return torch.stack([e_sin * (pa @ torch.cos(az)), e_sin * (pa @ torch.sin(az)), pz @ cz], -1)


def mode_vector(layout: BinLayout, logits: torch.Tensor) -> torch.Tensor:
    """The unit vector at the centres of the most probable azimuth and zenith bins [B, 3]."""
    la, lz = layout.split(logits)
    az, cz, sz = layout.centres(logits.dtype, logits.device)
    a, k = az[la.argmax(-1)], lz.argmax(-1)
    return torch.stack([sz[k] * torch.cos(a), sz[k] * torch.sin(a), cz[k]], -1)


def kappa_from_resultant(r: torch.Tensor) -> torch.Tensor:
    """vMF concentration of mean resultant length r in 3D (Banerjee et al. 2005: r (3 - r^2) / (1 - r^2))."""
    r = r.clamp(0.0, 1.0 - R_EPS)
    return r * (3.0 - r * r) / (1.0 - r * r)


def peaked_logits(layout: BinLayout, direction: torch.Tensor, scale: float) -> torch.Tensor:
    """Logits [B, A + Z] peaked at ``direction`` (``scale`` times minus the squared bin distance): for tests."""
    u_az, u_ze = layout.positions(direction)
    j = torch.arange(layout.azimuth_bins, dtype=direction.dtype, device=direction.device) + 0.5
    d_az = torch.remainder(j - u_az[:, None] + layout.azimuth_bins / 2, layout.azimuth_bins) - layout.azimuth_bins / 2
    k = torch.arange(layout.zenith_bins, dtype=direction.dtype, device=direction.device) + 0.5
    return torch.cat([-scale * d_az**2, -scale * (k - u_ze[:, None]) ** 2], -1)
