"""The zoo's embedders, backbones, poolers, heads and losses: a training step each, the promises
beyond the conformance kit, the shared blocks (masked kNN, attention), and the slow cross-product."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from icezoo.core import PAD_SENSOR, IcezooError
from icezoo.core.pipelines import PipelineConfig
from icezoo.core.synthetic import synthetic_batch
from icezoo.nn import BiasedAttention, RelativeAttention, TransformerBlock, knn_mask, masked_knn, mlp, sinusoidal
from icezoo.zoo import build, registry

F64 = torch.float64
LENGTHS = [1, 5, 17, 40]

# ------------------------------------------------------------------------------------ pipelines
#: the reference partner of every stage (tiny)
REFERENCE = {
    "features": [{"name": "kaggle_norm"}],
    "selection": {"name": "time_order", "max_pulses": 64},
    "embedder": {"name": "linear", "dim": 32},
    "backbone": {"name": "transformer", "depth": 1, "heads": 4},
    "pooler": ["mean", "max"],
    "head": {"name": "direction_kappa"},
    "loss": [{"name": "vmf3d"}],
}
CLS_BACKBONE = {"name": "transformer", "depth": 1, "heads": 4, "cls": True}

EMBEDDERS = {
    "linear": {"name": "linear", "dim": 32},
    "linear_post_norm": {"name": "linear", "dim": 32, "post_norm": True},
    "mlp": {"name": "mlp", "dim": 32, "hidden": 16, "layers": 3},
    "sensor_add": {"name": "sensor_embedding", "dim": 32},
    "sensor_concat": {"name": "sensor_embedding", "dim": 32, "mode": "concat", "sensor_dim": 8,
                      "padding_idx": True, "post_norm": True},
    "fourier": {"name": "fourier", "dim": 32, "base_dim": 8},
    "identity": {"name": "identity"},
    "graphnet": {"name": "graphnet", "dim": 32, "k": 4, "widths": [16]},
    "graphnet_encoded_xyzt": {"name": "graphnet", "dim": 0, "k": 3, "widths": [8, 11], "space": "xyzt",
                              "encode_dim": 4},  # 2 (4 + 4) + 5 + 11 = 32 wide
    "sensor_agg": {"name": "sensor_agg", "dim": 32},  # with the sensors selection (test_embedder_trains)
    "sensor_agg_transformer": {"name": "sensor_agg", "dim": 32, "hidden": 16, "encoder": "transformer", "heads": 2},
}
BACKBONES = {
    "transformer": {"name": "transformer", "depth": 1, "heads": 4},
    "transformer_cls": CLS_BACKBONE,
    "transformer_rotary_glu": {"name": "transformer", "depth": 2, "heads": 4, "rotary_pos_emb": True,
                               "ff_glu": True, "use_rmsnorm": True},
    "relbias": {"name": "relbias_transformer", "heads": 4, "biased_depth": 1, "depth": 1, "bias_dim": 8},
    "relbias_dim_additive": {"name": "relbias_transformer", "heads": 2, "biased_depth": 2, "depth": 0,
                             "bias_dim": 8, "dim": 16, "bias_mode": "additive"},
    "graph": {"name": "mat", "depth": 1, "heads": 4, "radius": 0.05},
    "graph_no_attention": {"name": "mat", "depth": 1, "heads": 4, "lambda_g": 0.5, "lambda_d": 0.5},
    "local": {"name": "local_attention", "k": 4, "local_depth": 1, "depth": 1, "heads": 4},
    "local_xyzt_bigk": {"name": "local_attention", "k": 100, "local_depth": 1, "depth": 0, "heads": 4,
                        "space": "xyzt"},
    "dynedge": {"name": "dynedge", "k": 4, "layers": [[16, 16], [16, 16]], "post": [16]},
    "dynnet": {"name": "dynnet", "k": 4, "layers": [[16], [16], [16]], "post": [16]},
    "dynedge_tito": {"name": "dynedge_tito", "k": 4, "layers": [[16, 16], [16, 16]], "post": [16], "heads": 2,
                     "ff_mult": 1},
    "egnn": {"name": "egnn", "dim": 16, "depth": 2, "k": 4},
    "egnn_rebuild_xyztc_coords": {"name": "egnn", "dim": 16, "depth": 3, "k": 3, "space": "xyztc",
                                  "rebuild_edges": True, "coords_as_features": True, "act": "gelu"},
    "iseecube": {"name": "iseecube", "heads": 4, "rel_depth": 1, "depth": 1, "max_len": 64},
    "iseecube_subln_nocls": {"name": "iseecube", "heads": 2, "rel_depth": 2, "depth": 1, "max_len": 64,
                             "norm": "subln", "cls": False},
    "pyg_gatv2": {"name": "pyg", "conv": "GATv2Conv", "depth": 2, "k": 4, "dim": 16, "params": {"heads": 2}},
}
POOLERS = {
    "mean": ["mean"], "max": ["max"], "min": ["min"], "sum": ["sum"], "mean_unmasked": ["mean_unmasked"],
    "cls": ["cls"], "mean_max_cls": ["mean", "max", "cls"],
    "ae": [{"name": "ae", "bottleneck": 8}],
    "ae_code": [{"name": "ae", "pools": ["sum", "max"], "bottleneck": 8, "decode": False, "act": "tanh"}],
}
HEADS = {
    "direction_kappa": {"name": "direction_kappa"},
    "direction_kappa_mlp": {"name": "direction_kappa", "hidden": 16},
    "angles": {"name": "angles"},
    "angles_sigmoid": {"name": "angles", "sigmoid_range": True, "hidden": 16},
    "direction_bins": {"name": "direction_bins", "azimuth_bins": 16, "zenith_bins": 8},
    "direction_bins_regression_cos_mode": {"name": "direction_bins", "azimuth_bins": 16, "zenith_bins": 8,
                                           "zenith": "cos", "decode": "mode", "regression": True},
}
LOSSES = {
    "vmf3d": [{"name": "vmf3d"}],
    "cosine": [{"name": "cosine"}],
    "euclidean": [{"name": "euclidean"}],
    "logcosh": [{"name": "logcosh"}],
    "angular": [{"name": "angular"}],
    "bins_ce": [{"name": "bins_ce", "width": 2.0}],
    "vmf_cos_euc": [{"name": "vmf3d"}, {"name": "cosine", "weight": 0.5}, {"name": "euclidean"}],
}


def pipeline(**stages) -> PipelineConfig:
    return PipelineConfig.model_validate({"name": "test", **REFERENCE, **stages})


def train_step(config: PipelineConfig, lengths=LENGTHS, seed: int = 0, steps: int = 2):
    """Build, take ``steps`` optimiser steps on one synthetic batch; returns the model and losses."""
    torch.manual_seed(seed)
    model = build(config)
    batch = synthetic_batch(model.feature_dim, lengths, width=max(lengths) + 3, event_dim=model.event_dim,
                            seed=seed, pad_value=1e3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        pred = model(batch)
        loss = model.loss(pred, batch)
        loss.backward()
        assert torch.isfinite(loss), f"{config}: loss not finite"
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"gradient of {name} not finite"
        opt.step()
        losses.append(float(loss.detach()))
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    assert changed > 0, "no parameter moved"
    model.eval()
    with torch.no_grad():
        direction = model.direction(model(batch))
    assert torch.allclose(direction.norm(dim=-1), torch.ones(len(lengths)), atol=1e-5)
    return model, losses


@pytest.mark.parametrize("key", EMBEDDERS)
def test_embedder_trains(key):
    extra = {"backbone": {"name": "transformer", "depth": 1, "heads": 2}} if key == "identity" else {}  # 6 features
    if key.startswith("sensor_agg"):  # sensor tokens need a selection of whole sensors
        extra["selection"] = {"name": "sensors"}
    train_step(pipeline(embedder=EMBEDDERS[key], **extra))


@pytest.mark.parametrize("key", BACKBONES)
def test_backbone_trains(key):
    with_cls = key in ("transformer_cls", "iseecube")
    extra = {"pooler": ["mean", "cls"]} if with_cls else {}
    model, _ = train_step(pipeline(backbone=BACKBONES[key], **extra))
    assert model.cls_token == with_cls


@pytest.mark.parametrize("key", POOLERS)
def test_pooler_trains(key):
    backbone = CLS_BACKBONE if "cls" in key else REFERENCE["backbone"]
    train_step(pipeline(pooler=POOLERS[key], backbone=backbone))


@pytest.mark.parametrize("key", HEADS)
def test_head_trains(key):
    loss = {"direction_kappa": [{"name": "vmf3d"}], "angles": [{"name": "angular"}],
            "direction_bins": [{"name": "bins_ce"}] + ([{"name": "vmf3d"}] if HEADS[key].get("regression") else [])}
    loss = loss[HEADS[key]["name"]]
    train_step(pipeline(head=HEADS[key], loss=loss))


@pytest.mark.parametrize("key", LOSSES)
@pytest.mark.parametrize("head", ["direction_kappa", "angles"])
def test_loss_trains(key, head):
    spec_accepts = set.intersection(*[set(registry().get("loss", ref["name"]).cls.accepts) for ref in LOSSES[key]])
    output = "vector" if head == "direction_kappa" else "angles"
    config = pipeline(loss=LOSSES[key], head={"name": head})
    if output not in spec_accepts:
        with pytest.raises(IcezooError, match="takes a head output"):
            build(config)
        return
    train_step(config)


def test_every_zoo_component_is_exercised():
    """Each embedder/backbone/pooler/head/loss that icezoo registers appears in the tables above."""
    used = {
        "embedder": {v["name"] for v in EMBEDDERS.values()},
        "backbone": {v["name"] for v in BACKBONES.values()},
        "pooler": {p if isinstance(p, str) else p["name"] for v in POOLERS.values() for p in v},
        "head": {v["name"] for v in HEADS.values()},
        "loss": {r["name"] for v in LOSSES.values() for r in v},
    }
    for kind, names in used.items():
        registered = {s.name for s in registry().list(kind=kind) if s.package == "icezoo"}
        assert registered <= names, f"{kind}: not exercised: {sorted(registered - names)}"


def test_training_reduces_the_loss():
    """A few steps on one batch fit it (the relbias model of INIT5_HB, tiny)."""
    _, losses = train_step(pipeline(embedder=EMBEDDERS["fourier"], backbone=BACKBONES["relbias"]), steps=10)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["INIT5_HB", "MATGRAPH", "HB_LOCALATTENTION", "BASELINE_HF_V9", "NANO_TRANSFORMER",
                                  "BASELINE_EMBED_V0", "BASELINE_HF_V13_CLS", "BASELINE_EMBED_V4", "BASELINE_HF"])
def test_named_pipelines_build_tiny(name):
    from icezoo.core.pipelines import pipeline_config

    cfg = pipeline_config(name, reg=registry())
    over = {"backbone.depth": 1, "backbone.heads": 4, "embedder.dim": 32}
    if cfg.backbone.name == "relbias_transformer":
        over["backbone.biased_depth"] = 1
    if cfg.backbone.name == "local_attention":
        over["backbone.local_depth"] = 1
    cfg = cfg.with_overrides(over)
    train_step(cfg.model_copy(update={"selection": pipeline().selection}), steps=1)


# ------------------------------------------------------------------------------------ component promises
def _component(kind, params, in_dim):
    spec = registry().get(kind, params["name"])
    cfg = spec.cls.Config.model_validate({k: v for k, v in params.items() if k != "name"})
    return spec.cls(cfg, in_dim).double().eval(), spec, cfg


def test_declared_properties():
    reg = registry()
    tf = reg.get("backbone", "transformer").cls
    assert tf.declared_properties(tf.Config()) == {"permutation_invariant"}
    assert tf.declared_properties(tf.Config(cls=True)) == {"permutation_invariant", "adds_cls_token"}
    assert tf.declared_properties(tf.Config(cls=True, rotary_pos_emb=True)) == {"adds_cls_token"}
    for name in ("relbias_transformer", "mat", "local_attention"):
        cls = reg.get("backbone", name).cls
        assert cls.declared_properties(cls.Config()) == {"permutation_invariant"}
        assert cls.declared_requires(cls.Config()) == {"xyzt"}
    assert reg.get("pooler", "cls").cls.requires == {"cls_token"}
    assert reg.get("pooler", "mean_unmasked").cls.properties == {"permutation_invariant", "reads_padding"}
    assert reg.get("embedder", "sensor_embedding").cls.requires == {"sensor_id"}
    assert reg.get("embedder", "fourier").cls.requires == {"xyzt"}
    assert reg.get("head", "angles").cls.output == "angles"


def test_cls_pooler_needs_a_cls_backbone():
    with pytest.raises(IcezooError, match="cls_token"):
        build(pipeline(pooler=["cls"]))


def test_config_errors_name_the_path():
    with pytest.raises(IcezooError, match=r"backbone.*lambda_g \+ lambda_d"):
        build(pipeline(backbone={"name": "mat", "lambda_g": 0.7, "lambda_d": 0.5}))
    with pytest.raises(IcezooError, match="sensor_dim"):
        build(pipeline(embedder={"name": "sensor_embedding", "dim": 32, "sensor_dim": 8}))
    with pytest.raises(IcezooError, match="aux_column=7 but the features have only 6 columns"):
        build(pipeline(embedder={"name": "fourier", "dim": 32, "aux_column": 7}))
    with pytest.raises(IcezooError, match="not divisible"):
        build(pipeline(backbone={"name": "relbias_transformer", "heads": 5}))


def test_sensor_embedding_padding_index():
    emb, _, _ = _component("embedder", EMBEDDERS["sensor_concat"], 6)
    assert emb.sensor.padding_idx == PAD_SENSOR
    assert torch.count_nonzero(emb.sensor.weight[PAD_SENSOR]) == 0
    # sensor 0 is a real DOM with its own (non-zero) vector
    assert torch.count_nonzero(emb.sensor.weight[0]) > 0
    off, _, _ = _component("embedder", EMBEDDERS["sensor_add"], 6)
    assert off.sensor.padding_idx is None
    batch = synthetic_batch(6, [3, 7], dtype=F64)
    batch.sensor_id[0, :3] = torch.tensor([0, 0, 5])
    out = off(batch.features, batch)
    same = batch.with_(features=torch.zeros_like(batch.features))
    o2 = off(same.features, same)
    assert torch.allclose(o2[0, 0], o2[0, 1]) and not torch.allclose(o2[0, 0], o2[0, 2])
    assert out.shape == (2, 7, 32)


def test_fourier_reads_positions_time_charge_and_aux():
    emb, _, _ = _component("embedder", EMBEDDERS["fourier"], 6)
    batch = synthetic_batch(6, [4], dtype=F64)
    base = emb(batch.features, batch)
    for change in ("xyzt", "charge", "aux"):
        b = batch
        if change == "xyzt":
            b = batch.with_(xyzt=batch.xyzt + 10.0)
        elif change == "charge":
            f = batch.features.clone(); f[..., 4] += 0.1; b = batch.with_(features=f)  # noqa: E702
        else:
            f = batch.features.clone(); f[..., 5] = -f[..., 5]; b = batch.with_(features=f)  # noqa: E702
        assert not torch.allclose(emb(b.features, b), base), change


def test_relbias_interval_bias():
    bb, _, _ = _component("backbone", BACKBONES["relbias"], 32)
    xyzt = torch.tensor([[[0.0, 0, 0, 0], [300.0, 0, 0, 1000], [0.0, 0, 0, 0]]], dtype=F64)
    mask = torch.tensor([[True, True, False]])
    rel = bb.relation(xyzt, mask)
    assert rel.shape == (1, 3, 3, 8)
    assert torch.allclose(rel, rel.transpose(1, 2))  # ds^2 is symmetric
    zero = sinusoidal(torch.zeros((), dtype=F64), 8)
    assert torch.allclose(rel[0, 0, 0], zero) and torch.allclose(rel[0, 1, 1], zero)
    # 300 m apart, 1000 ns later: c dt = 299.8 m, a (barely) space-like pair with a non-zero interval
    assert not torch.allclose(rel[0, 0, 1], zero)
    # each biased block has its own bias projection: to the head width (content) or to the heads (additive)
    assert len(bb.bias_proj) == len(bb.biased) == 1
    assert bb.bias_proj[0].out_features == 32 // 4
    add, _, _ = _component("backbone", {**BACKBONES["relbias"], "bias_mode": "additive"}, 32)
    assert add.bias_proj[0].out_features == 4


def test_mat_units_and_adjacency():
    bb, _, _ = _component("backbone", {"name": "mat", "depth": 1, "heads": 4, "radius": 0.015}, 32)
    # 10 m apart along x is ~0.0087 detector units (adjacent at 0.015); 30 m is ~0.026 (not adjacent)
    xyzt = torch.tensor([[[0.0, 0, 0, 0], [10.0, 0, 0, 5], [40.0, 0, 0, 9], [0.0, 0, 0, 0]]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    dist, adj = bb.graph(xyzt, mask)
    a = adj[0, 0]
    assert torch.allclose(a[0], torch.tensor([0.5, 0.5, 0, 0], dtype=F64))
    assert torch.allclose(a[2], torch.tensor([0, 0, 1.0, 0], dtype=F64))
    assert torch.all(a[3] == 0) and torch.all(dist[0, 0, 3] == 0)
    assert torch.allclose(dist[0, 0, :3].sum(-1), torch.ones(3, dtype=F64))
    assert dist[0, 0, 0, 3] == 0  # padded keys get no weight
    no_att, _, _ = _component("backbone", BACKBONES["graph_no_attention"], 32)
    assert all(block.attn.qk is None for block in no_att.blocks)


def test_local_attention_sees_only_neighbours():
    """With one local block and no global ones, a pulse's output ignores pulses outside its kNN."""
    params = {"name": "local_attention", "k": 2, "local_depth": 1, "depth": 0, "heads": 4}
    bb, _, _ = _component("backbone", params, 32)
    batch = synthetic_batch(32, [12], dtype=F64, seed=3)
    allowed = bb.neighbours(batch.xyzt, batch.mask)[0]
    assert allowed.sum(-1).tolist() == [3] * 12  # itself + 2
    out = bb(batch.features, batch)
    i = 0
    far = int((~allowed[i]).nonzero()[0])
    f = batch.features.clone()
    f[0, far] += torch.randn(32, dtype=F64)
    out2 = bb(f, batch)
    assert torch.allclose(out2[0, i], out[0, i])
    near = [j for j in allowed[i].nonzero().flatten().tolist() if j != i][0]
    f = batch.features.clone()
    f[0, near] += torch.randn(32, dtype=F64)
    assert not torch.allclose(bb(f, batch)[0, i], out[0, i])


GEOMETRY = {"relbias": "relation", "relbias_dim_additive": "relation", "graph": "graph", "local": "neighbours",
            "local_xyzt_bigk": "neighbours"}


@pytest.mark.parametrize("key", GEOMETRY)
def test_geometry_backbones_under_half_precision_autocast(key):
    """Under fp16 autocast the states are half precision, but the pair geometry (intervals, distances,
    neighbours) is computed from the batch's exact float32 metres and ns: in fp16 c^2 dt^2 and |dx|^2
    overflow (ds^2 = inf - inf = NaN) and far pairs stop being neighbours."""
    bb, _, _ = _component("backbone", BACKBONES[key], 32)
    bb.float()
    batch = synthetic_batch(32, [30, 12, 1], seed=5, dtype=torch.float32)
    batch = batch.with_(xyzt=batch.xyzt * torch.tensor([1.0, 1.0, 1.0, 20.0]))  # times over ~10 us
    method = GEOMETRY[key]
    real, seen = getattr(bb, method), []
    setattr(bb, method, lambda xyzt, mask: (seen.append(xyzt), real(xyzt, mask))[1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = bb(torch.nn.Linear(32, 32)(batch.features), batch)
    assert torch.equal(seen[0], batch.xyzt)
    assert torch.isfinite(out[batch.mask]).all()


def test_ae_pooler_shapes():
    ae, _, _ = _component("pooler", {"name": "ae", "bottleneck": 8}, 16)
    assert ae.out_dim == 48
    code, _, _ = _component("pooler", {"name": "ae", "pools": ["mean"], "bottleneck": 5, "decode": False}, 16)
    assert code.out_dim == 5
    h = torch.randn(3, 7, 16, dtype=F64)
    mask = torch.arange(7)[None] < torch.tensor([[1], [7], [4]])
    assert ae(h, mask).shape == (3, 48) and code(h, mask).shape == (3, 5)


def test_masked_poolers_values():
    from icezoo.nn import masked_max, masked_mean, masked_min, masked_sum

    h = torch.tensor([[[1.0], [3.0], [float("nan")]], [[-2.0], [float("inf")], [0.0]]], dtype=F64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_mean(h, mask).flatten().tolist() == [2.0, -2.0]
    assert masked_max(h, mask).flatten().tolist() == [3.0, -2.0]
    assert masked_min(h, mask).flatten().tolist() == [1.0, -2.0]
    assert masked_sum(h, mask).flatten().tolist() == [4.0, -2.0]
    empty = torch.zeros(1, 3, dtype=torch.bool)
    for fn in (masked_mean, masked_max, masked_min, masked_sum):
        assert fn(h[:1], empty).tolist() == [[0.0]]


def test_angles_head_ranges():
    head, _, _ = _component("head", {"name": "angles", "sigmoid_range": True}, 8)
    z = torch.randn(64, 8, dtype=F64) * 50
    pred = head(z)
    assert (pred[:, 0] >= 0).all() and (pred[:, 0] <= 2 * math.pi).all()
    assert (pred[:, 1] >= 0).all() and (pred[:, 1] <= math.pi).all()
    d = head.direction(pred)
    assert torch.allclose(d.norm(dim=-1), torch.ones(64, dtype=F64))
    assert head.kappa(pred) is None


# ------------------------------------------------------------------------------------ kit on variants
#: the conformance kit builds each component from example_params only; these run its checks on the
#: param choices that change behaviour (CLS slot, rotary order dependence, no learned attention, ...)
KIT_VARIANTS = [
    ("backbone", "transformer", {"depth": 1, "heads": 4, "cls": True}),
    ("backbone", "transformer", {"depth": 1, "heads": 4, "cls": True, "rotary_pos_emb": True, "ff_glu": True}),
    ("backbone", "relbias_transformer", {"heads": 2, "biased_depth": 1, "depth": 0, "bias_dim": 4, "dim": 8,
                                         "c": 0.22, "bias_mode": "additive"}),
    ("backbone", "mat", {"depth": 1, "heads": 4, "lambda_g": 0.5, "lambda_d": 0.5, "radius": 0.3}),
    ("backbone", "local_attention", {"k": 30, "local_depth": 1, "depth": 0, "heads": 4, "space": "xyzt"}),
    ("backbone", "local_attention", {"k": 1, "local_depth": 2, "depth": 0, "heads": 2}),
    ("embedder", "linear", {"dim": 16, "post_norm": True}),
    ("embedder", "linear", {"dim": 16, "standardize": True}),
    ("embedder", "mlp", {"dim": 16, "layers": 1}),
    ("embedder", "sensor_embedding", {"dim": 16, "mode": "concat", "sensor_dim": 8, "padding_idx": True,
                                      "post_norm": True}),
    ("embedder", "fourier", {"dim": 16, "base_dim": 4, "charge_column": None, "aux_column": None}),
    ("pooler", "ae", {"pools": ["sum", "min"], "decode": False, "bottleneck": 4}),
    ("backbone", "egnn", {"dim": 8, "depth": 2, "k": 3, "space": "xyztc", "charge_column": 2, "rebuild_edges": True,
                          "normalize": True, "tanh": True, "coords_agg": "sum"}),
    ("backbone", "egnn", {"dim": 8, "depth": 1, "k": 30, "aggr": "max", "coords_as_features": True}),
    ("backbone", "dynedge", {"k": 30, "layers": [[8]], "post": [8], "aggr": "max", "global_variables": False,
                             "space": "xyzt"}),
    ("backbone", "dynedge_tito", {"k": 2, "layers": [[8, 8], [16]], "post": [8], "heads": 2, "ff_mult": 1,
                                  "aggr": "mean"}),
    ("backbone", "pyg", {"conv": "TransformerConv", "depth": 1, "k": 3, "dim": 8, "params": {"heads": 2}}),
    ("embedder", "graphnet", {"dim": 0, "k": 2, "widths": [8], "space": "xyzt", "encode_dim": 4, "raw_columns": 2}),
    ("features", "homophily", {"level": "event", "space": "xyzt", "k": 3}),
    ("head", "angles", {"sigmoid_range": True, "hidden": 8}),
    ("head", "direction_kappa", {"hidden": 8}),
]


@pytest.mark.parametrize("kind,name,params", KIT_VARIANTS, ids=[f"{k}:{n}:{i}" for i, (k, n, _) in
                                                                 enumerate(KIT_VARIANTS)])
def test_conformance_kit_on_variants(kind, name, params):
    from icezoo.core.registry import ComponentSpec
    from icezoo.testing import check_component

    base = registry().get(kind, name)
    variant = type(base.cls.__name__, (base.cls,), {"example_params": params})
    spec = ComponentSpec(variant, base.plugin, base.package, base.version)
    for lengths, seed in (([1, 24, 2], 0), ([7, 3, 13, 1], 5)):
        check_component(spec, lengths, seed)


# ------------------------------------------------------------------------------------ shared blocks
def brute_knn(pos, mask, time, k, include_self):
    """Reference: per event, sort by (distance, time) in plain Python."""
    out = []
    for b in range(pos.shape[0]):
        rows = []
        for i in range(pos.shape[1]):
            if not mask[b, i]:
                rows.append(set())
                continue
            cands = [j for j in range(pos.shape[1]) if mask[b, j] and (include_self or j != i)]
            cands.sort(key=lambda j: (float(((pos[b, i] - pos[b, j]) ** 2).sum()), float(time[b, j])))
            rows.append(set(cands[:k]))
        out.append(rows)
    return out


def as_sets(index, valid):
    return [[set(index[b, i][valid[b, i]].tolist()) for i in range(index.shape[1])] for b in range(index.shape[0])]


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("k", [1, 3, 8, 50])
def test_knn_matches_brute_force(k, include_self):
    gen = torch.Generator().manual_seed(k)
    lengths = torch.tensor([1, 2, 9, 20])
    mask = torch.arange(20)[None] < lengths[:, None]
    pos = torch.randint(0, 4, (4, 20, 3), generator=gen).to(F64)  # a coarse grid: many distance ties
    pos[~mask] = 1e6 * torch.randn(int((~mask).sum()), 3, generator=gen, dtype=F64)  # garbage padding
    time = torch.randperm(80, generator=gen)[:80].view(4, 20).to(F64)
    index, valid = masked_knn(pos, mask, k, time=time, include_self=include_self)
    assert index.shape == valid.shape == (4, 20, k)
    assert as_sets(index, valid) == brute_knn(pos, mask, time, k, include_self)
    # padded pulses are never neighbours, padded rows have none, invalid entries point at the query
    assert not (valid & ~mask.gather(1, index.flatten(1)).view_as(valid)).any()
    assert not valid[~mask].any()
    slots = torch.arange(20)[None, :, None].expand_as(index)
    assert torch.equal(index[~valid], slots[~valid])
    # k larger than the pulse count: every other real pulse, surplus invalid
    n_valid = valid.sum(-1)
    expect = (lengths[:, None] - (0 if include_self else 1)).clamp(max=k).clamp(min=0).expand(4, 20)
    assert torch.equal(n_valid[mask], expect[mask])


def test_knn_independent_of_pulse_order():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 3, (1, 30, 3), generator=gen).to(F64)  # ties everywhere
    time = torch.rand(1, 30, generator=gen, dtype=F64)
    mask = torch.ones(1, 30, dtype=torch.bool)
    perm = torch.randperm(30, generator=gen)
    i1, v1 = masked_knn(pos, mask, 5, time=time)
    i2, v2 = masked_knn(pos[:, perm], mask, 5, time=time[:, perm])
    # neighbours of permuted pulse p are the permuted neighbours of pulse perm[p], in the same order
    assert torch.equal(perm[i2[0]], i1[0, perm])
    assert torch.equal(v2, v1)


def test_knn_mask_and_no_grad():
    pos = torch.randn(2, 6, 3, requires_grad=True)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    index, valid = masked_knn(pos, mask, 3)
    allowed = knn_mask(index, valid)
    assert allowed.shape == (2, 6, 6)
    assert torch.equal(allowed.sum(-1), valid.sum(-1))
    assert not allowed[1, :, 2:].any() and not allowed[1, 2:].any()
    with pytest.raises(ValueError):
        masked_knn(pos, mask, 0)


def test_biased_attention_masks_and_guards():
    torch.manual_seed(0)
    att = BiasedAttention(16, 4).double()
    x = torch.randn(2, 5, 16, dtype=F64, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    bias = torch.randn(2, 4, 5, 5, dtype=F64, requires_grad=True)
    allowed = torch.ones(2, 5, 5, dtype=torch.bool)
    allowed[0, 1] = False  # a query with no key at all
    out = att(x, mask, bias=bias, allowed=allowed)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 1], att.out.bias)  # zero attention output, then the output projection
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(bias.grad).all()
    # padding keys never matter, even with huge bias on them
    bias2 = bias.detach().clone()
    bias2[1, :, :, 2:] = 1e9
    x2 = x.detach().clone()
    x2[1, 2:] = 1e6
    ref = att(x.detach(), mask, bias=bias.detach())
    assert torch.allclose(att(x2, mask, bias=bias2)[1, :2], ref[1, :2])
    # a block works with no bias
    block = TransformerBlock(16, 4).double()
    assert torch.isfinite(block(x.detach(), mask)).all()


def test_relative_attention_masks_and_reads_the_relation():
    torch.manual_seed(0)
    att = RelativeAttention(16, 4).double()
    x = torch.randn(2, 5, 16, dtype=F64)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    rel = torch.randn(2, 5, 5, 4, dtype=F64, requires_grad=True)
    out = att(x, mask, rel=rel)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(rel.grad).all()
    assert torch.all(rel.grad[1, :, 3:] == 0)  # padded keys: no attention, no gradient
    rel2 = rel.detach().clone()
    rel2[1, :, 3:] = 1e6
    x2 = x.clone()
    x2[1, 3:] = 1e6
    assert torch.allclose(att(x2, mask, rel=rel2)[1, :3], out[1, :3])
    rel3 = rel.detach().clone()
    rel3[0, 0, 1] += 1.0
    assert not torch.allclose(att(x, mask, rel=rel3)[0, 0], out[0, 0])
    empty = torch.zeros(1, 5, dtype=torch.bool)
    assert torch.isfinite(att(x[:1], empty, rel=rel[:1])).all()


def test_mlp_builder():
    net = mlp(4, [8, 8], 2, act="silu", norm=True, dropout=0.1)
    assert net(torch.randn(3, 4)).shape == (3, 2)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in net) == 2
    with pytest.raises(ValueError, match="unknown activation"):
        mlp(4, [8], 2, act="nope")


# ------------------------------------------------------------------------------------ cross-product
TINY_EMBEDDERS = {"linear": {"name": "linear", "dim": 16}, "mlp": {"name": "mlp", "dim": 16},
                  "sensor_embedding": {"name": "sensor_embedding", "dim": 16},
                  "fourier": {"name": "fourier", "dim": 16, "base_dim": 4}}
TINY_BACKBONES = {"transformer": {"name": "transformer", "depth": 1, "heads": 2},
                  "transformer_cls": {"name": "transformer", "depth": 1, "heads": 2, "cls": True},
                  "relbias_transformer": {"name": "relbias_transformer", "heads": 2, "biased_depth": 1, "depth": 1,
                                          "bias_dim": 4},
                  "mat": {"name": "mat", "depth": 1, "heads": 2},
                  "local_attention": {"name": "local_attention", "k": 3, "local_depth": 1, "depth": 1, "heads": 2}}
TINY_POOLERS = ["mean", "max", "min", "sum", "cls", "mean_unmasked", "ae"]


@pytest.mark.slow
@pytest.mark.parametrize("embedder,backbone,pooler",
                         list(itertools.product(TINY_EMBEDDERS, TINY_BACKBONES, TINY_POOLERS)))
def test_cross_product(embedder, backbone, pooler):
    config = pipeline(embedder=TINY_EMBEDDERS[embedder], backbone=TINY_BACKBONES[backbone],
                      pooler=[pooler if pooler != "ae" else {"name": "ae", "bottleneck": 4}])
    if pooler == "cls" and backbone != "transformer_cls":
        with pytest.raises(IcezooError, match="cls_token"):
            build(config)
        return
    train_step(config, lengths=[1, 3, 9], steps=1)
