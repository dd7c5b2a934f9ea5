"""The iseecube backbone: TorchScale's relative buckets, DeepNorm / Sub-LN, and the paper's size."""

from __future__ import annotations

import math

import pytest
import torch

from icezoo.core import IcezooError
from icezoo.core.pipelines import pipeline_config
from icezoo.core.synthetic import synthetic_batch
from icezoo.plugins.backbones.iseecube import BeitEncoder, ISeeCube, relative_bucket
from icezoo.zoo import build, registry


def test_relative_buckets_are_t5s():
    rel = torch.tensor([0, 1, 7, 8, 9, 50, 195, 400, -1, -8, -50, -400])
    got = relative_bucket(rel, 32, 196).tolist()
    # 16 buckets per sign, 0-7 exact, then log-spaced up to 196, capped at 15; keys after the query: +16
    assert got[:4] == [0, 16 + 1, 16 + 7, 16 + 8] and got[8:10] == [1, 8]
    large = lambda n: min(8 + int(math.log(n / 8) / math.log(196 / 8) * 8), 15)  # noqa: E731
    assert got[4:8] == [16 + large(9), 16 + large(50), 16 + large(195), 16 + 15]
    assert got[10:] == [large(50), 15]


def test_deepnorm_scales_residuals_and_initial_weights():
    torch.manual_seed(0)
    enc = BeitEncoder(6, 16, 2, 32, "deepnorm", 0, 0, 0.0, 0.0)
    assert enc.layers[0].alpha == pytest.approx(12 ** 0.25)
    torch.manual_seed(0)
    sub = BeitEncoder(6, 16, 2, 32, "subln", 0, 0, 0.0, 0.0)
    ratio = enc.layers[0].fc1.weight.norm() / sub.layers[0].fc1.weight.norm()
    assert ratio.item() == pytest.approx(48 ** -0.25 / math.sqrt(math.log(12)), rel=1e-6)
    # q and k keep their init; only the value third of qkv is scaled
    d = 16
    assert torch.allclose(enc.layers[0].qkv.weight[:2 * d], sub.layers[0].qkv.weight[:2 * d])
    assert sub.final_norm is not None and enc.final_norm is None


def test_the_paper_size_within_5_percent_of_its_code():
    # ISeeCube's IceCubeModel_RegB at seq_length 196, width 384, counted from its source by hand:
    # embedding 2,451,364 (aux 196, Linear 1176->1568, LayerNorm 1568, Linear 1568->384), 18 TorchScale
    # layers of 1,774,464 (q, k, v, out 384x384+b, two LayerNorms, 384->1536->384), relative bias
    # 32 x 12, CLS 384, slots 197 x 384, head 612,678 (Linear 384->3 + 384->1568, LayerNorm, ->3)
    paper_code = 2_451_364 + 18 * 1_774_464 + 32 * 12 + 384 + 197 * 384 + 612_678
    assert paper_code == 35_080_810
    total = sum(p.numel() for p in build(pipeline_config("ISEECUBE", reg=registry())).parameters())
    assert abs(total / paper_code - 1) < 0.05, total


def test_cls_slot_and_max_len():
    cfg = ISeeCube.Config(heads=2, rel_depth=1, depth=1, max_len=8)
    model = ISeeCube(cfg, 16).eval()
    batch = synthetic_batch(16, [3, 8], seed=0)
    out = model(batch.features, batch)
    assert out.shape == (2, 9, 16) and "adds_cls_token" in ISeeCube.declared_properties(cfg)
    long = synthetic_batch(16, [9], seed=0)
    with pytest.raises(IcezooError, match="max_len is 8"):
        model(long.features, long)
