"""The graph family: dense layers against PyG (the oracle), EGNN symmetries, global variables,
the components' promises and their one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icezoo.core import IcezooError
from icezoo.core.synthetic import synthetic_batch
from icezoo.nn.graph import (EdgeConv, EGNNLayer, edge_mlp, gather_neighbours, global_variables, homophily,
                             knn_graph, knn_space, to_edge_index)
from icezoo.zoo import build, registry

F64 = torch.float64
LENGTHS = [1, 9, 4, 17]  # unequal events, one without neighbours


def padded_graph(seed: int = 0, dim: int = 5, k: int = 4, width: int = 20):
    """Features and a kNN graph of unequal events, with garbage in the padding."""
    batch = synthetic_batch(dim, LENGTHS, width=width, seed=seed, dtype=F64, pad_value=1e6)
    index, valid = knn_graph(batch.xyzt[..., :3], batch.mask, k, time=batch.xyzt[..., 3])
    return batch, index, valid


# ------------------------------------------------------------------------------------ the PyG oracle
@pytest.mark.parametrize("aggr", ["sum", "mean", "max"])
def test_dense_edgeconv_equals_pyg_edgeconv(aggr):
    """icezoo's dense EdgeConv == torch_geometric.nn.EdgeConv with the same weights and edges (1e-5),
    values and gradients, on events of unequal length with padding."""
    from torch_geometric.nn import EdgeConv as PyGEdgeConv

    torch.manual_seed(0)
    batch, index, valid = padded_graph()
    phi = edge_mlp(5, [16, 8], "leaky_relu").double()
    dense = EdgeConv(phi, aggr=aggr)
    sparse = PyGEdgeConv(phi, aggr="add" if aggr == "sum" else aggr)
    x = batch.features.clone().requires_grad_(True)
    out = dense(x, batch.mask, index, valid)
    edge_index = to_edge_index(index, valid, batch.mask)
    assert edge_index.shape == (2, int(valid.sum()))
    x_flat = batch.features[batch.mask].clone().requires_grad_(True)
    ref = sparse(x_flat, edge_index)
    assert torch.allclose(out[batch.mask], ref, atol=1e-5, rtol=0)
    assert torch.all(out[~batch.mask] == 0)
    # the lone pulse of event 0 has no neighbour: zeros, as PyG
    assert torch.all(out[0, 0] == 0)
    # gradients of the shared weights and of the inputs agree too
    g_dense = torch.autograd.grad(out[batch.mask].pow(2).sum(), [x, *phi.parameters()])
    g_sparse = torch.autograd.grad(ref.pow(2).sum(), [x_flat, *phi.parameters()])
    assert torch.allclose(g_dense[0][batch.mask], g_sparse[0], atol=1e-5)
    for a, b in zip(g_dense[1:], g_sparse[1:]):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("aggr", ["sum", "max"])
def test_tito_message_matches_its_definition(aggr):
    """phi([x_i, x_j - x_i, x_j]) built edge by edge, aggregated, equals the dense layer."""
    torch.manual_seed(1)
    batch, index, valid = padded_graph()
    phi = edge_mlp(5, [12, 6], "leaky_relu", tito=True).double()
    out = EdgeConv(phi, aggr=aggr, tito=True)(batch.features, batch.mask, index, valid)
    x = batch.features
    for b, n in enumerate(LENGTHS):
        for i in range(n):
            msgs = [phi(torch.cat([x[b, i], x[b, j] - x[b, i], x[b, j]])) for j in index[b, i][valid[b, i]].tolist()]
            if not msgs:
                expect = torch.zeros(6, dtype=F64)
            else:
                m = torch.stack(msgs)
                expect = m.sum(0) if aggr == "sum" else m.amax(0)
            assert torch.allclose(out[b, i], expect, atol=1e-10)


def test_pyg_homophily_equals_ours():
    """The global variables' homophily is PyG's edge homophily, per event."""
    from torch_geometric.utils import homophily as pyg_homophily

    batch, index, valid = padded_graph(k=3)
    xyzt = batch.xyzt.clone()
    xyzt[:, :, :2] = torch.round(xyzt[:, :, :2] / 300.0)  # a few "strings": many shared x, y
    xyzt[:, :, 2] = torch.round(xyzt[:, :, 2] / 400.0)
    ours = homophily(xyzt, batch.mask, index, valid)
    edge_index = to_edge_index(index, valid, batch.mask)
    event = torch.arange(len(LENGTHS))[:, None].expand_as(batch.mask)[batch.mask]
    for c in range(4):
        ref = pyg_homophily(edge_index, xyzt[batch.mask][:, c], event, method="edge")
        assert torch.allclose(ours[:, c], ref.to(F64)), c
    assert ours[0].tolist() == [0.0] * 4  # no edges


def test_global_variables_by_hand():
    xyzt = torch.tensor([[[0.0, 0, 0, 0], [0.0, 0, 17, 5], [125.0, 0, 0, 0], [9, 9, 9, 9]]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    x = torch.tensor([[[1.0], [2.0], [6.0], [1e9]]], dtype=F64)
    index, valid = knn_graph(xyzt[..., :3], mask, 1)
    # nearest: 0 <-> 1 (17 m), 2 -> 0 (125 m): edges 0-1, 1-0 share x and y; 2-0 shares y, z and t
    g = global_variables(x, xyzt, mask, index, valid)
    assert torch.allclose(g, torch.tensor([[3.0, 2 / 3, 1.0, 1 / 3, 1 / 3, math.log10(3)]], dtype=F64))


def test_knn_space_units():
    xyzt = torch.tensor([[[1.0, 2.0, 3.0, 100.0]]])
    feats = torch.tensor([[[0.0, 0.0, 0.5]]])
    assert knn_space(xyzt, "xyz").tolist() == [[[1.0, 2.0, 3.0]]]
    from icezoo.core.detector import C_ICE

    assert 0.21 < C_ICE < 0.23  # m/ns
    assert torch.allclose(knn_space(xyzt, "xyzt")[..., 3], torch.tensor(100 * C_ICE))
    assert knn_space(xyzt, "xyztc", feats, 2, charge_scale=10.0)[0, 0, 4] == 5.0
    with pytest.raises(ValueError, match="charge column"):
        knn_space(xyzt, "xyztc")


# ------------------------------------------------------------------------------------ EGNN
def random_orthogonal(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return q


@pytest.mark.parametrize("normalize,tanh,coords_agg", [(False, False, "mean"), (True, True, "sum")])
def test_egnn_layer_invariant_states_equivariant_coordinates(normalize, tanh, coords_agg):
    """Under any rotation/reflection Q and translation s of the coordinates: h unchanged, x -> Q x + s."""
    torch.manual_seed(2)
    batch, index, valid = padded_graph(dim=8)
    layer = EGNNLayer(8, 16, normalize=normalize, tanh=tanh, coords_agg=coords_agg).double()
    torch.nn.init.normal_(layer.coord[-2 if tanh else -1].weight, std=0.5)  # coordinates that really move
    x = batch.xyzt[..., :3] / 500.0
    h, x1 = layer(batch.features, x, batch.mask, index, valid)
    q, s = random_orthogonal(3), torch.tensor([0.3, -1.2, 0.7], dtype=F64)
    h2, x2 = layer(batch.features, x @ q.T + s, batch.mask, index, valid)
    m = batch.mask
    assert torch.allclose(h2[m], h[m], atol=1e-10)
    assert torch.allclose(x2[m], x1[m] @ q.T + s, atol=1e-10)
    assert not torch.allclose(x1[m], x[m])  # the coordinates did move


def test_egnn_layer_matches_the_reference_edge_form():
    """The dense layer computes Satorras et al.'s E_GCL as written on an edge list."""
    torch.manual_seed(4)
    batch, index, valid = padded_graph(dim=6)
    layer = EGNNLayer(6, 10, coords_agg="mean").double()
    torch.nn.init.normal_(layer.coord[-1].weight, std=0.5)
    m = batch.mask
    x = batch.xyzt[..., :3] / 500.0
    h_out, x_out = layer(batch.features, x, m, index, valid)
    row_col = to_edge_index(index, valid, m)
    col, row = row_col  # edge j -> i: row = i (the pulse updated), col = j
    h, xf = batch.features[m], x[m]
    diff = xf[row] - xf[col]
    radial = diff.pow(2).sum(-1, keepdim=True)
    e = layer.edge(torch.cat([h[row], h[col], radial], dim=-1))
    n = h.shape[0]
    agg = torch.zeros(n, e.shape[-1], dtype=F64).index_add_(0, row, e)
    trans = torch.zeros(n, 3, dtype=F64).index_add_(0, row, diff * layer.coord(e))
    count = torch.zeros(n, dtype=F64).index_add_(0, row, torch.ones_like(row, dtype=F64)).clamp_min(1)
    assert torch.allclose(x_out[m], xf + trans / count[:, None], atol=1e-10)
    assert torch.allclose(h_out[m], h + layer.node(torch.cat([h, agg], dim=-1)), atol=1e-10)


def test_egnn_backbone_rebuilds_edges_on_updated_coordinates(monkeypatch):
    import icezoo.plugins.backbones.egnn as egnn_module

    seen = []
    real = egnn_module.knn_graph
    monkeypatch.setattr(egnn_module, "knn_graph", lambda pos, *a, **kw: (seen.append(pos.clone()), real(pos, *a, **kw))[1])
    bb, _ = component("backbone", {"name": "egnn", "dim": 8, "depth": 3, "k": 3, "rebuild_edges": True}, 8)
    for layer in bb.layers:
        if layer.update_coords:
            torch.nn.init.normal_(layer.coord[-1].weight, std=0.5)
    batch = synthetic_batch(8, [12, 5], dtype=F64, seed=1)
    bb(batch.features, batch)
    assert len(seen) == 3
    assert torch.allclose(seen[0][..., :3], batch.xyzt[..., :3] / 500.0)
    assert not torch.allclose(seen[1], seen[0]) and not torch.allclose(seen[2], seen[1])
    seen.clear()
    bb, _ = component("backbone", {"name": "egnn", "dim": 8, "depth": 3, "k": 3}, 8)
    bb(batch.features, batch)
    assert len(seen) == 1


def test_egnn_coordinates_as_features_break_the_invariances():
    cls = registry().get("backbone", "egnn").cls
    assert {"translation_invariant", "vertical_rotation_invariant"} <= cls.declared_properties(cls.Config())
    assert cls.declared_properties(cls.Config(coords_as_features=True)) == {"permutation_invariant"}
    bb, _ = component("backbone", {"name": "egnn", "dim": 8, "depth": 1, "k": 3, "coords_as_features": True}, 8)
    batch = synthetic_batch(8, [6], dtype=F64)
    moved = batch.with_(xyzt=batch.xyzt + torch.tensor([50.0, 0, 0, 0], dtype=F64))
    assert not torch.allclose(bb(batch.features, moved), bb(batch.features, batch))


# ------------------------------------------------------------------------------------ components
def component(kind, params, in_dim):
    spec = registry().get(kind, params["name"])
    cfg = spec.cls.Config.model_validate({k: v for k, v in params.items() if k != "name"})
    return spec.cls(cfg, in_dim).double().eval(), cfg


def graphnet_dynedge_parameters(nb_inputs=6, layers=((128, 256), (336, 256), (336, 256), (336, 256)),
                                post=(336, 256), readout=(128,), poolings=4) -> tuple[int, int]:
    """GraphNeT's DynEdge parameter count (its constructor's arithmetic): (without, with) the readout."""
    linear = lambda i, o: i * o + o  # noqa: E731
    width = nb_inputs + (5 + nb_inputs)
    total, skip = 0, width
    for sizes in layers:
        dims = [2 * width, *sizes]
        total += sum(linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        width = sizes[-1]
        skip += width
    dims = [skip, *post]
    total += sum(linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    dims = [post[-1] * poolings, *readout]
    return total, total + sum(linear(a, b) for a, b in zip(dims[:-1], dims[1:]))


def test_dynedge_parameter_count_matches_graphnet():
    """Defaults with 6 inputs: exactly GraphNeT's DynEdge without its readout (1,249,808); with the
    readout as the head's hidden 128 after min/max/mean/sum pooling, within 0.1% of its 1,381,008."""
    without, with_readout = graphnet_dynedge_parameters()
    assert (without, with_readout) == (1_249_808, 1_381_008)
    bb, _ = component("backbone", {"name": "dynedge"}, 6)
    assert sum(p.numel() for p in bb.parameters()) == without
    from icezoo.core.pipelines import PipelineConfig

    cfg = PipelineConfig.model_validate({
        "name": "t", "features": ["kaggle_norm"], "embedder": "identity", "backbone": "dynedge",
        "pooler": ["min", "max", "mean", "sum"], "head": {"name": "direction_kappa", "hidden": 128}})
    model = build(cfg)
    ours = sum(p.numel() for p in model.parameters())
    assert ours == without + 4 * 256 * 128 + 128 + 128 * 3 + 3  # + GraphNeT's own task head Linear(128, 3)
    assert abs(ours - with_readout) / with_readout < 0.05


def test_dynedge_rebuilds_on_latent_features_and_dynnet_on_all(monkeypatch):
    import icezoo.plugins.backbones.dynedge as dyn

    seen = []
    real = dyn.knn_graph
    monkeypatch.setattr(dyn, "knn_graph", lambda pos, *a, **kw: (seen.append(pos.shape[-1]), real(pos, *a, **kw))[1])
    batch = synthetic_batch(6, [10, 3], dtype=F64)
    bb, _ = component("backbone", {"name": "dynedge", "layers": [[8, 8]] * 3, "post": [8]}, 6)
    bb(batch.features, batch)
    assert seen == [3, 3, 3]  # xyz, then the first three latent features twice
    seen.clear()
    bb, _ = component("backbone", {"name": "dynnet", "layers": [[8, 8]] * 3, "post": [8]}, 6)
    bb(batch.features, batch)
    assert seen == [5, 8, 8]  # xyztc, then every latent feature
    assert bb.config.act == "gelu"


def test_dynedge_tito_residual_and_static_graph(monkeypatch):
    import icezoo.plugins.backbones.dynedge as dyn

    calls = []
    real = dyn.knn_graph
    monkeypatch.setattr(dyn, "knn_graph", lambda pos, *a, **kw: (calls.append(pos.shape[-1]), real(pos, *a, **kw))[1])
    bb, _ = component("backbone", {"name": "dynedge_tito", "layers": [[16, 16]] * 2, "post": [8], "heads": 2,
                                   "ff_mult": 1}, 6)
    batch = synthetic_batch(6, [7, 2, 1], dtype=F64)
    out = bb(batch.features, batch)
    assert calls == [4]  # one graph, on xyzt
    assert out.shape == (3, 7, 8) and torch.all(out[~batch.mask] == 0)
    assert bb.convs[0].tito and bb.convs[0].aggr == "max"


def test_graphnet_embedder_widths():
    emb, _ = component("embedder", {"name": "graphnet", "dim": 0}, 9)
    assert emb.out_dim == 9 + 14 + 256 == 279  # EXP_31's 279 for 9 features
    emb, _ = component("embedder", {"name": "graphnet", "dim": 32, "encode_dim": 8, "widths": [16]}, 9)
    batch = synthetic_batch(9, [5, 2], dtype=F64)
    out = emb(batch.features, batch)
    assert out.shape == (2, 5, 32)
    # the raw columns are not encoded: the conv sees 4 raw + 8 encoded, plus global variables
    assert emb.conv.in_dim == 2 * 12 + 5
    with pytest.raises(IcezooError, match="raw_columns=4 leaves none"):
        build_pipeline(embedder={"name": "graphnet", "encode_dim": 8}, features=[{"name": "qe"}])


def build_pipeline(**stages):
    from icezoo.core.pipelines import PipelineConfig

    base = {"name": "t", "features": ["kaggle_norm"], "embedder": {"name": "linear", "dim": 16},
            "backbone": {"name": "transformer", "depth": 1, "heads": 2}}
    return build(PipelineConfig.model_validate({**base, **stages}))


# ------------------------------------------------------------------------------------ pyg adapter
def test_pyg_graphconv_equals_the_dense_formula():
    """GraphConv on icezoo's kNN graph: W1 x_i + W2 sum_j x_j, over the same neighbours as the dense layers."""
    bb, _ = component("backbone", {"name": "pyg", "conv": "GraphConv", "depth": 1, "k": 3, "act": "tanh",
                                   "residual": False, "dim": 4}, 5)
    batch, index, valid = padded_graph(k=3)
    out = bb(batch.features, batch)
    conv = bb.convs[0]
    x = torch.where(batch.mask[..., None], batch.features, 0.0)
    neigh = torch.where(valid[..., None], gather_neighbours(x, index), 0.0).sum(2)
    expect = torch.tanh(conv.lin_root(x) + conv.lin_rel(neigh))
    assert torch.allclose(out[batch.mask], expect[batch.mask], atol=1e-10)
    assert torch.all(out[~batch.mask] == 0)


def test_pyg_output_width_from_the_conv():
    bb, _ = component("backbone", {"name": "pyg", "conv": "GATv2Conv", "depth": 2, "dim": 8,
                                   "params": {"heads": 3}}, 5)
    assert bb.out_dim == 24 and bb.convs[1].in_channels == 24


@pytest.mark.parametrize("conv,params,message", [
    ("NotAConv", {}, "conv 'NotAConv' is not a message-passing class of torch_geometric.nn"),
    ("GATv2Conv", {"hedas": 2}, "GATv2Conv has no parameter hedas"),
    ("GINConv", {}, r"GINConv cannot be built from \(in_channels, out_channels, params\)"),
    ("GravNetConv", {}, "GravNetConv needs space_dimensions, propagate_dimensions, k"),
    ("GravNetConv", {"space_dimensions": 2, "propagate_dimensions": 2, "k": 2}, "GravNetConv builds its own graph"),
    ("GATv2Conv", {"out_channels": 3}, "out_channels is set by icezoo"),
    ("GATv2Conv", {"heads": 0}, r"GATv2Conv\(16, 16, \{'heads': 0\}\) failed"),
])
def test_pyg_errors_are_one_line_naming_the_conv(conv, params, message):
    with pytest.raises(IcezooError, match=message) as err:
        build_pipeline(backbone={"name": "pyg", "conv": conv, "params": params})
    assert "\n" not in str(err.value) and str(err.value).startswith("pipelines.t.backbone: pyg: ")


# ------------------------------------------------------------------------------------ feature extractors
def test_homophily_extractor_equals_the_model_side_homophily():
    from icezoo.plugins.features import GlobalVariables, Homophily
    from icezoo.testing import synthetic_chunk

    chunk = synthetic_chunk([1, 30, 7, 64, 2, 0, 12], seed=3)  # real DOMs: strings share x, y
    ext = Homophily(Homophily.Config(level="event"))
    h = ext.extract(chunk, chunk)
    assert h.shape == (7, 4) and ext.event_level
    for e in range(chunk.num_events):
        a, b = chunk.offsets[e], chunk.offsets[e + 1]
        xyzt = torch.tensor(np.stack([chunk.x[a:b], chunk.y[a:b], chunk.z[a:b], chunk.time[a:b] - (chunk.time[a] if b > a else 0)], -1),
                            dtype=torch.float32)[None]
        mask = torch.ones(1, b - a, dtype=torch.bool)
        if b - a == 0:
            assert h[e].tolist() == [0.0] * 4
            continue
        index, valid = knn_graph(xyzt[..., :3], mask, 8, time=xyzt[..., 3])
        assert np.allclose(h[e], homophily(xyzt, mask, index, valid)[0].numpy(), atol=1e-6), e
    assert h[:, 0].max() > 0  # pulses on one string share x
    per_pulse = Homophily(Homophily.Config()).extract(chunk, chunk)
    assert np.array_equal(per_pulse, np.repeat(h, chunk.lengths, axis=0))
    g = GlobalVariables(GlobalVariables.Config()).extract(chunk, chunk)
    assert g.shape == (7, 11) and np.array_equal(g[:, 6:10], h)
    assert np.allclose(g[:, 10], np.log10(np.maximum(chunk.lengths, 1)))


# ------------------------------------------------------------------------------------ the log's graph rows
GRAPH_PIPELINES = sorted(s.name for s in registry().pipelines.values()
                         if s.name.startswith("BASELINE_graph") or s.name in ("EXP_40", "EXP_100", "EXP_101", "HB_EGNN"))


def test_every_graph_row_of_the_log_is_a_pipeline():
    """Every graph config name of the log is a pipeline (each also takes a tiny training step in
    tests/test_core.py::test_every_registry_pipeline_composes_and_trains_one_step)."""
    from icezoo.core.pipelines import load_pipeline

    names = set(GRAPH_PIPELINES)
    for v in [f"V{i}" for i in range(14)]:
        assert f"BASELINE_graph_{v}" in names
    for extra in ("V1_FT", "V8_FT", "V8_FT_2", "V8_FT_3", "V9_FT", "V9_FT_2", "V13_FT", "V13_FT_2"):
        assert f"BASELINE_graph_{extra}" in names
    assert {"EXP_40", "EXP_100", "EXP_101", "HB_EGNN"} <= names
    for name in names:
        cfg = load_pipeline(registry(), name)
        assert cfg.experiment and cfg.description, name
        if "_FT" in name:
            assert cfg.init_from, name


# ------------------------------------------------------------------------------------ backbone lists
CHAIN = [{"name": "egnn", "dim": 16, "depth": 2, "k": 3}, {"name": "transformer", "depth": 1, "heads": 2}]


def test_backbone_list_chains_dims_and_properties():
    from icezoo.core.compose import BackboneChain

    model = build_pipeline(backbone=CHAIN)
    chain = model.backbone
    assert isinstance(chain, BackboneChain) and chain.name == "egnn -> transformer"
    assert chain.stages[0].in_dim == 16 and chain.stages[1].in_dim == 16 and chain.out_dim == 16
    assert chain.properties == {"permutation_invariant"}  # the transformer is not translation invariant
    cls = build_pipeline(backbone=[CHAIN[0], {**CHAIN[1], "cls": True}], pooler=["cls"])
    assert cls.cls_token and "adds_cls_token" in cls.backbone.properties
    with pytest.raises(IcezooError, match=r"^pipelines\.t\.backbone\.0: transformer adds a CLS token: only the last"):
        build_pipeline(backbone=[{**CHAIN[1], "cls": True}, CHAIN[0]])
    with pytest.raises(IcezooError, match=r"^pipelines\.t\.backbone\.1\.dpeth: unknown parameter"):
        build_pipeline(backbone=[CHAIN[0], {**CHAIN[1], "dpeth": 2}])
    # a one-stage list is the plain backbone (same state-dict keys as before lists existed)
    assert type(build_pipeline(backbone=[CHAIN[1]]).backbone).__name__ == "Transformer"
    # the list round-trips through to_table / --set overrides
    cfg = model.config.with_overrides({"backbone.1.depth": 2})
    assert cfg.to_table()["backbone"][1]["depth"] == 2 and build(cfg).backbone.stages[1].config.depth == 2


def test_backbone_list_concat_hands_a_stage_to_the_poolers():
    model = build_pipeline(backbone=[{**CHAIN[0], "concat": True}, CHAIN[1]], pooler=["mean"])
    assert model.backbone.out_dim == 32 and model.head.in_dim == 32
    batch = synthetic_batch(model.feature_dim, [4, 2], seed=2)
    h = model.embedder(batch.features, batch)
    gnn = model.backbone.stages[0](h, batch)
    out = model.backbone(h, batch)
    assert torch.equal(out[..., 16:], gnn) and torch.equal(out[..., :16], model.backbone.stages[1](gnn, batch))
    with pytest.raises(IcezooError, match="concat is for the stages of a backbone list before the last"):
        build_pipeline(backbone=[CHAIN[0], {**CHAIN[1], "concat": True}])
    with pytest.raises(IcezooError, match="concat needs a last stage without a CLS token"):
        build_pipeline(backbone=[{**CHAIN[0], "concat": True}, {**CHAIN[1], "cls": True}], pooler=["cls"])


def test_frozen_stage_keeps_its_weights():
    torch.manual_seed(0)
    model = build_pipeline(backbone=[{**CHAIN[0], "freeze": True}, CHAIN[1]])
    gnn, tf = model.backbone.stages
    before_gnn = [p.detach().clone() for p in gnn.parameters()]
    before_tf = [p.detach().clone() for p in tf.parameters()]
    model.train()
    assert not gnn.training and tf.training and model.frozen == [gnn]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    batch = synthetic_batch(model.feature_dim, [5, 3], seed=4)
    for _ in range(2):
        opt.zero_grad()
        model.loss(model(batch), batch).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before_gnn, gnn.parameters()))
    assert all(p.grad is None for p in gnn.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before_tf, tf.parameters()))
    with pytest.raises(IcezooError, match=r"pipelines\.t\.features: freeze and init_from are for stages with weights"):
        build_pipeline(features=[{"name": "kaggle_norm", "freeze": True}])


def test_stage_init_from_takes_one_component_from_another_run(tmp_path):
    """EXP_100's mechanism: stage 0 of a backbone list starts from the backbone of another pipeline's run."""
    import json

    from icezoo.core.checkpoint import save_checkpoint
    from icezoo.engine.checkpoints import init_stages

    torch.manual_seed(1)
    source = build_pipeline(backbone=CHAIN[0])  # a run of pipeline "donor" whose backbone is one egnn
    run = tmp_path / "donor-1"
    save_checkpoint(run / "checkpoints" / "best.pt", source.config.to_table(), source.state_dict())
    (run / "run.json").write_text(json.dumps({"pipeline": "donor", "status": "done", "finished": "2026-01-01"}))
    model = build_pipeline(backbone=[{**CHAIN[0], "init_from": "donor", "freeze": True}, CHAIN[1]])
    assert [(p, s, k, n) for p, _, s, k, n in model.stage_inits] == [("pipelines.t.backbone.0", "donor", "backbone", "egnn")]
    lines = []
    reports = init_stages(model, tmp_path, lines.append)
    assert reports[0]["loaded"] == len(source.backbone.state_dict()) and "egnn initialised from" in lines[0]
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.stages[0].state_dict()[key], value)
    # and back: a chain's stage is found in a chain checkpoint too
    again = build_pipeline(backbone=[{**CHAIN[0], "init_from": "donor2"}, CHAIN[1]])
    run2 = tmp_path / "donor-2"
    save_checkpoint(run2 / "checkpoints" / "best.pt", model.config.to_table(), model.state_dict())
    (run2 / "run.json").write_text(json.dumps({"pipeline": "donor2", "status": "done", "finished": "2026-01-02"}))
    init_stages(again, tmp_path, lines.append)
    assert torch.equal(next(again.backbone.stages[0].parameters()), next(model.backbone.stages[0].parameters()))
    # a stage that does not fit is one line naming it
    wrong = build_pipeline(backbone=[{**CHAIN[0], "dim": 8, "init_from": "donor"}, CHAIN[1]])
    with pytest.raises(IcezooError, match=r"^pipelines\.t\.backbone\.0\.init_from: .*its egnn does not match this one"):
        init_stages(wrong, tmp_path, lines.append)
    missing = build_pipeline(backbone=[{**CHAIN[1], "init_from": "donor"}])
    with pytest.raises(IcezooError, match="has no backbone 'transformer' to take weights from"):
        init_stages(missing, tmp_path, lines.append)
    with pytest.raises(IcezooError, match=r"^pipelines\.t\.backbone\.0\.init_from: init_from = 'nobody': no successful run"):
        init_stages(build_pipeline(backbone=[{**CHAIN[0], "init_from": "nobody"}, CHAIN[1]]), tmp_path, lines.append)
