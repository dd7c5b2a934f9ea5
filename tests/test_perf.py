"""The fast paths equal the plain formulas; the benchmarks count what they claim. No timing here
(speed is measured by ``icezoo bench`` and reported in docs/performance.md)."""

from __future__ import annotations

import pytest

from tinyzoo import tiny_pipeline

torch = pytest.importorskip("torch")

F64 = torch.float64


def _events(b=3, n=13, d=16, seed=0):
    """x [b, n, d], xyzt in metres / ns, a mask with padding and one empty event."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=gen, dtype=F64)
    xyzt = torch.cat([torch.rand(b, n, 3, generator=gen, dtype=F64) * 400,
                      torch.rand(b, n, 1, generator=gen, dtype=F64) * 2000], -1)
    mask = torch.arange(n)[None] < torch.tensor([n, 6, 0])[:b, None]
    return x, xyzt, mask


def test_relative_attention_fast_path_equals_the_plain_formula():
    from icezoo.nn import RelativeAttention

    torch.manual_seed(0)
    attn = RelativeAttention(16, 4).double()
    proj = torch.nn.Linear(6, 4).double()
    x, _, mask = _events()
    e = torch.randn(3, 13, 13, 6, dtype=F64)
    params = [*attn.parameters(), *proj.parameters()]

    def run(fast):
        xx = x.clone().requires_grad_()
        out = attn(xx, mask, rel=e, proj=proj) if fast else attn(xx, mask, rel=proj(e))
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum(),
                                    [xx, *params])
        return out, grads

    (fast, fast_grads), (plain, plain_grads) = run(True), run(False)
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=1e-10)
    assert torch.equal(fast[2], attn.out.bias.expand(13, 16))  # the empty event: zeros before the output Linear
    for g_fast, g_plain in zip(fast_grads, plain_grads):
        torch.testing.assert_close(g_fast, g_plain, atol=1e-12, rtol=1e-10)
    # inference in query blocks (5 + 5 + 3 of 13) gives the same numbers as one block
    attn.eval()
    with torch.inference_mode():
        whole = attn(x, mask, rel=e, proj=proj)
        attn.query_block = 5
        blocks = attn(x, mask, rel=e, proj=proj)
    torch.testing.assert_close(blocks, whole, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(whole, plain.detach(), atol=1e-12, rtol=1e-10)


def test_transformer_fused_attention_equals_the_einsum_path():
    """The transformer backbone's fused SDPA path (the default) gives x-transformers' einsum path's
    numbers, padded slots and an event with no pulses included; gradients too (on the events with
    pulses: x-transformers' einsum path has NaN parameter gradients when a batch holds an empty event,
    the fused path has none). In float64 the two differ at the 1e-8 level only because the einsum
    path takes its softmax in float32."""
    from icezoo.core import Batch
    from icezoo.plugins.backbones.transformer import Transformer

    x, xyzt, mask = _events(d=16)
    torch.manual_seed(0)
    fused = Transformer(Transformer.Config(depth=2, heads=4), 16).double()
    plain = Transformer(Transformer.Config(depth=2, heads=4, fused_attention=False), 16).double()
    plain.load_state_dict(fused.state_dict())

    def batch(b):
        return Batch(features=x[:b], mask=mask[:b], xyzt=xyzt[:b], sensor_id=torch.zeros(mask[:b].shape, dtype=torch.long),
                     event_features=torch.zeros(b, 0, dtype=F64), n_pulses=mask[:b].sum(1), event_id=torch.arange(b))

    with torch.no_grad():
        torch.testing.assert_close(fused(x, batch(3)), plain(x, batch(3)), atol=1e-6, rtol=1e-5)
    outs, grads = [], []
    for model in (fused, plain):
        xx = x[:2].clone().requires_grad_()
        out = model(xx, batch(2))
        outs.append(out)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum(),
                                         [xx, *model.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    assert (outs[0] - outs[1]).abs().max() > 0  # two paths really ran
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    xx = x.clone().requires_grad_()
    fused(xx, batch(3)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fused.parameters())


def test_relative_attention_fast_path_on_full_events_and_in_float32():
    """Events without padding skip the masking pass (CPU); the per-event inference path and the
    batched path the hand-written backward reads agree with the plain formula in float64 and, within
    float32 rounding, in float32; the backward's gradients too."""
    from icezoo.nn import RelativeAttention

    torch.manual_seed(0)
    for dtype, tol in ((F64, 1e-10), (torch.float32, 1e-5)):
        attn = RelativeAttention(16, 4).to(dtype)
        proj = torch.nn.Linear(6, 4).to(dtype)
        x = torch.randn(2, 9, 16, dtype=dtype)
        mask = torch.ones(2, 9, dtype=torch.bool)
        e = torch.randn(2, 9, 9, 6, dtype=dtype)
        xx = [x.clone().requires_grad_() for _ in range(2)]
        fast, plain = attn(xx[0], mask, rel=e, proj=proj), attn(xx[1], mask, rel=proj(e))
        torch.testing.assert_close(fast, plain, atol=tol, rtol=tol)
        w = torch.linspace(-1, 1, fast.numel(), dtype=dtype).view_as(fast)
        g_fast, g_plain = (torch.autograd.grad((o * w).sum(), xi)[0] for o, xi in zip((fast, plain), xx))
        torch.testing.assert_close(g_fast, g_plain, atol=tol, rtol=tol)
        with torch.inference_mode():
            torch.testing.assert_close(attn(x, mask, rel=e, proj=proj), plain.detach(), atol=tol, rtol=tol)
            part = mask.clone()
            part[1, 5:] = False  # one event padded, the other full: masked keys again
            ref = attn(x, part, rel=proj(e))
            torch.testing.assert_close(attn(x, part, rel=e, proj=proj), ref, atol=tol, rtol=tol)


def test_relative_attention_fast_path_with_dropout_matches_the_plain_formula(monkeypatch):
    """Dropout scales the attention rows away from a sum of 1: the projection bias b must follow
    (b sum_j a_ij, not b). A deterministic stand-in for dropout makes both paths comparable."""
    import torch.nn.functional as F

    from icezoo.nn import RelativeAttention

    monkeypatch.setattr(F, "dropout", lambda a, p=0.5, training=True, inplace=False: a * 0.5 if training else a)
    torch.manual_seed(0)
    attn = RelativeAttention(16, 4, dropout=0.5).double().train()
    proj = torch.nn.Linear(6, 4).double()
    x, _, mask = _events()
    e = torch.randn(3, 13, 13, 6, dtype=F64)
    with torch.no_grad():
        fast, plain = attn(x, mask, rel=e, proj=proj), attn(x, mask, rel=proj(e))
        attn.eval()
        unscaled = attn(x, mask, rel=e, proj=proj)
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(fast, unscaled)  # the stand-in did act


def test_relbias_backbone_blocks_and_relation_match_the_unblocked_formula():
    from icezoo.core.synthetic import synthetic_batch
    from icezoo.nn import sinusoidal
    from icezoo.plugins.backbones.relbias import RelBiasTransformer

    cfg = RelBiasTransformer.Config(heads=4, biased_depth=2, depth=1, bias_dim=8, query_block=4)
    torch.manual_seed(0)
    bb = RelBiasTransformer(cfg, 16).double().eval()
    batch = synthetic_batch(16, [11, 7, 3], dtype=F64, seed=1)
    rel = bb.relation(batch.xyzt, batch.mask)  # in blocks of 4 rows
    p = batch.xyzt * batch.mask[..., None]
    dx2 = (p[:, :, None, :3] - p[:, None, :, :3]).pow(2).sum(-1)
    ds2 = (cfg.c * (p[:, :, None, 3] - p[:, None, :, 3])) ** 2 - dx2
    d = torch.sign(ds2) * ds2.abs().sqrt() / cfg.length_scale
    torch.testing.assert_close(rel, sinusoidal(cfg.bias_scale * d.clamp(-cfg.clip, cfg.clip), 8))
    h = torch.randn(3, 11, 16, dtype=F64)
    with torch.inference_mode():
        blocked = bb(h, batch)
        one = RelBiasTransformer(cfg.model_copy(update={"query_block": 64}), 16).double().eval()
        one.load_state_dict(bb.state_dict())
        whole = one(h, batch)
        # the plain formula, block by block, on the same weights
        x = bb.proj(h * batch.mask[..., None])
        for block, proj in zip(bb.biased, bb.bias_proj):
            x = block(x, batch.mask, rel=proj(rel))
        for block in bb.plain:
            x = block(x, batch.mask)
        plain = bb.norm(x)
    torch.testing.assert_close(blocked, whole, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(whole, plain, atol=1e-10, rtol=1e-10)


def test_flop_count_covers_matmuls_and_cpu_fused_attention():
    import torch.nn.functional as F

    from icezoo.engine.flops import count_flops, matmul_roof

    lin = torch.nn.Linear(32, 24)
    x = torch.randn(5, 32)
    assert count_flops(lambda: lin(x)) == 2 * 5 * 32 * 24
    q = torch.randn(2, 4, 64, 16)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 2 * (2 * 2 * 4 * 64 * 64 * 16)
    qg = q.clone().requires_grad_()
    fwd_bwd = count_flops(lambda: F.scaled_dot_product_attention(qg, qg, qg).sum().backward())
    assert fwd_bwd > 2 * (2 * 2 * 4 * 64 * 64 * 16)  # the backward is counted too
    assert matmul_roof(torch.device("cpu"), n=64, seconds=0.01) > 0


def test_bench_model_counts_flops_and_reads_lengths_from_a_dataset(tmp_path):
    from icezoo.data.simulator import simulate
    from icezoo.engine.bench import bench_model, format_bench

    data = simulate(tmp_path / "data", 120, events_per_batch=60, seed=3)
    over = {"backbone.depth": 1, "embedder.dim": 16, "selection.max_pulses": 160}
    full = bench_model("default", batch_size=8, steps=2, warmup=0, overrides=over)
    real = bench_model("default", batch_size=8, steps=2, warmup=0, overrides=over, lengths=f"data:{data}")
    assert full["mean_padded"] == full["mean_pulses"] == 160
    assert real["mean_pulses"] <= real["mean_padded"] < 160
    for r in (full, real):
        assert r["train_flops_per_event"] > r["infer_flops_per_event"] > 0
        assert r["roof_gflops"] > 0
        assert r["infer_roof_fraction"] == pytest.approx(r["infer_gflops"] / r["roof_gflops"])
    # shorter events cost fewer FLOPs than every event filled to max_pulses
    assert real["infer_flops_per_event"] < full["infer_flops_per_event"]
    text = format_bench(real)
    assert "MFLOP/event" in text and "of the matmul roof" in text and "lengths from" in text
    from icezoo.core.errors import IcezooError

    with pytest.raises(IcezooError, match="--lengths"):
        bench_model("default", steps=1, warmup=0, overrides=over, lengths="somewhere")


def test_bench_predict_runs_icezoo_predict_end_to_end_and_its_stages(tmp_path):
    from icezoo.engine.bench import bench_predict, format_bench_predict

    pf = tmp_path / "tiny.toml"
    pf.write_text(tiny_pipeline("tiny_predict", max_pulses=16, dim=8, pooler='["mean"]', epochs=None, description="tiny"))
    r = bench_predict("tiny_predict", str(pf), events=150, batch_size=64, echo=lambda *a: None)
    assert r["events"] == 150 and 0 < r["model_events"] <= 150
    assert r["wall_s"] > 0 and r["load_s"] > 0 and r["model_s"] > 0 and r["write_s"] > 0
    assert r["events_per_s"] == pytest.approx(150 / r["wall_s"])
    text = format_bench_predict(r)
    assert "150 test events" in text and "read+select+featurise" in text


def test_bench_export_runs_onnxruntime_beside_eager_on_the_same_batches(tmp_path):
    """``icezoo bench export``: both paths run the same batches (the outputs agree), each gets a
    throughput, the ratio is theirs; real lengths read from a dataset; an unknown level is one line."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from icezoo.core.errors import IcezooError
    from icezoo.data.simulator import simulate
    from icezoo.engine.bench_export import bench_export, format_bench_export

    data = simulate(tmp_path / "data", 80, events_per_batch=40, seed=3)
    over = {"backbone.depth": 1, "embedder.dim": 16, "selection.max_pulses": 24}
    r = bench_export("default", batch_size=4, steps=2, rounds=1, threads=1, overrides=over, lengths=f"data:{data}")
    assert r["eager_events_per_s"] > 0 and r["onnx_events_per_s"] > 0
    assert r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
    assert r["max_abs_diff"] < 1e-4  # the same model on the same batches
    assert r["mean_pulses"] <= 24 and r["threads"] == 1
    text = format_bench_export(r)
    assert "onnxruntime" in text and "lengths from" in text and "x eager" in text
    with pytest.raises(IcezooError, match="--optimization"):
        bench_export("default", steps=1, rounds=1, overrides=over, optimization="max")
