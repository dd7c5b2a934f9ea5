"""Side by side in one process: icezoo's relative-bias backbone against the plain formula and the peer.

Three backbones of the 2nd-place model's shape (d192, head width 16, 4 relative-bias blocks + 4
plain blocks, feed-forward 4x), on the same batch of real pulses (every event full, as in the
issue's measurement), taking turns round after round:

* ``icezoo``: :class:`~icezoo.plugins.backbones.relbias.RelBiasTransformer` (the fast path);
* ``plain``: the same module and weights through the plain formula (each block forms its pair
  vectors rel = W e + b, [B, L, L, 16], and reads them with einsums);
* ``peer``: a re-implementation, written for this benchmark from the 2nd-place solution's public
  description, of its DeepIceModel blocks: one shared pair projection computed once (its
  ``Rel_ds``), blocks with separate bias-free q/k/v projections that read the pair vectors through
  the query (scores and output), its float key-padding bias, then a CLS token and
  ``nn.MultiheadAttention`` blocks with layer scales. All four sandwich blocks get the bias
  (``n_rel = 4``, the same math as icezoo's 4 biased blocks).

A training step is forward + backward of a scalar loss; inference a forward under
``torch.inference_mode``. Reported: the median over rounds of each variant's time and of the
per-round ratios (other / icezoo: above 1 means icezoo is faster). Usage:

    python benchmarks/relbias_side_by_side.py [--batch 16] [--pulses 128] [--bias-dim 16] [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from icezoo.core.synthetic import synthetic_batch
from icezoo.plugins.backbones.relbias import RelBiasTransformer


# --------------------------------------------------------------------------------------------
# the peer (re-implemented): pair vectors shared by the biased blocks, attention reading them


class PeerRelAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, key_pad, rel):
        b, n, d = x.shape
        q, k, v = (f(x).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        q = q * self.scale
        att = q @ k.transpose(-2, -1) + torch.einsum("bhic,bijc->bhij", q, rel)
        pair = torch.minimum(key_pad[:, None, :], key_pad[:, :, None])  # its float padding bias
        pair = pair.masked_fill(torch.maximum(key_pad[:, None, :], key_pad[:, :, None]) < 0, 0)
        att = (att + pair[:, None]).softmax(-1)
        out = (att @ v).transpose(1, 2) + torch.einsum("bhij,bijc->bihc", att, rel)
        return self.proj(out.reshape(b, n, d))


class PeerMlp(nn.Sequential):
    def __init__(self, dim, mult=4):
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))


class PeerRelBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), PeerRelAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), PeerMlp(dim)

    def forward(self, x, key_pad, rel):
        x = x + self.attn(self.norm1(x), key_pad, rel)
        return x + self.mlp(self.norm2(x))


class PeerBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2, self.mlp = nn.LayerNorm(dim), PeerMlp(dim)
        self.gamma1, self.gamma2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))

    def forward(self, x, key_pad):
        h = self.norm1(x)
        x = x + self.gamma1 * self.attn(h, h, h, key_padding_mask=key_pad, need_weights=False)[0]
        return x + self.gamma2 * self.mlp(self.norm2(x))


class PeerBackbone(nn.Module):
    """Its sandwich (relative-bias) blocks and plain blocks, from the width-``dim`` pulse states on."""

    def __init__(self, dim=192, head=16, depth_rel=4, depth=4, c=299_792_458e-9):
        super().__init__()
        heads = dim // head
        self.head, self.c = head, c
        self.rel_proj = nn.Linear(head, head)
        self.sandwich = nn.ModuleList([PeerRelBlock(dim, heads) for _ in range(depth_rel)])
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([PeerBlock(dim, heads) for _ in range(depth)])

    def pair_encoding(self, xyzt):
        pos, t = xyzt[..., :3], xyzt[..., 3]
        ds2 = (pos[:, :, None] - pos[:, None, :]).pow(2).sum(-1) - (self.c * (t[:, :, None] - t[:, None, :])).pow(2)
        d = torch.sign(ds2) * torch.sqrt(ds2.abs()) / 500.0
        half = self.head // 2
        freq = torch.exp(torch.arange(half, dtype=xyzt.dtype) * (-math.log(10000.0) / half))
        arg = (1024 * d.clip(-4, 4))[..., None] * freq
        return torch.cat([arg.sin(), arg.cos()], -1)

    def forward(self, x, xyzt, mask):
        key_pad = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, -torch.inf)
        rel = self.rel_proj(self.pair_encoding(xyzt))  # once, shared by the sandwich blocks
        for blk in self.sandwich:
            x = blk(x, key_pad, rel)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1)
        pad = torch.cat([torch.zeros(len(x), 1, dtype=torch.bool), ~mask], 1)
        for blk in self.blocks:
            x = blk(x, pad)
        return x


# --------------------------------------------------------------------------------------------


def plain_forward(bb: RelBiasTransformer, h, batch):
    """icezoo's backbone through the plain formula: each block forms rel = W e + b and reads it with einsums."""
    mask = batch.mask
    x = bb.proj(h * mask[..., None])
    e = bb.relation(batch.xyzt, mask)
    for block, proj in zip(bb.biased, bb.bias_proj):
        x = block(x, mask, rel=proj(e))
    for block in bb.plain:
        x = block(x, mask)
    return bb.norm(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pulses", type=int, default=128)
    ap.add_argument("--bias-dim", type=int, default=16, help="icezoo's sinusoids (the peer uses the head width, 16)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dim = 192
    cfg = RelBiasTransformer.Config(dim=dim, heads=12, biased_depth=4, depth=4, bias_dim=args.bias_dim)
    ours, peer = RelBiasTransformer(cfg, dim), PeerBackbone(dim)
    batch = synthetic_batch(dim, [args.pulses] * args.batch, seed=0)
    h = batch.features
    variants = {
        "icezoo": (ours, lambda: ours(h, batch)),
        "plain": (ours, lambda: plain_forward(ours, h, batch)),
        "peer": (peer, lambda: peer(h, batch.xyzt, batch.mask)),
    }
    with torch.no_grad():
        torch.testing.assert_close(variants["icezoo"][1](), variants["plain"][1](), atol=1e-4, rtol=1e-4)

    def train(model, fn):
        model.train()
        fn().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def infer(model, fn):
        model.eval()
        with torch.inference_mode():
            fn()

    times = {(name, phase): [] for name in variants for phase in ("train", "infer")}
    for r in range(args.rounds + 1):  # round 0 warms up
        for phase, step in (("train", train), ("infer", infer)):
            for name, (model, fn) in variants.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(model, fn)
                if r:
                    times[name, phase].append((time.perf_counter() - t0) / args.steps)
    params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in variants.items()}
    print(f"batch {args.batch} x {args.pulses} pulses (all real), d{dim}, head width 16, 4 biased + 4 plain blocks; "
          f"icezoo bias_dim {args.bias_dim}; {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"median of {args.rounds} rounds x {args.steps} steps")
    print(f"parameters: icezoo {params['icezoo']:,}, peer {params['peer']:,}")
    for phase in ("train", "infer"):
        base = times["icezoo", phase]
        parts = [f"icezoo {1000 * statistics.median(base):.0f} ms"]
        for other in ("plain", "peer"):
            ratio = statistics.median(o / b for o, b in zip(times[other, phase], base))
            parts.append(f"{other} {1000 * statistics.median(times[other, phase]):.0f} ms (icezoo {ratio:.2f}x as fast)")
        print(f"{phase}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
