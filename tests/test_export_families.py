"""Export of every backbone family besides the plain transformer (issue 24): ONNX and TorchScript parity.

One tiny pipeline per family, exported per format from a 3-event, 12-slot example and run
(onnxruntime; torch.jit.load) on batches of other sizes and widths, with uneven lengths, padding,
an empty event, and pulses that share a sensor and a time (ties in every kNN); the outputs must equal
the torch pipeline's within 1e-4. The cases between them use every embedder, pooler and head these
families are trained with. test_export.py covers the transformer family.
"""

from __future__ import annotations

import pytest
import torch

from icezoo.core.errors import IcezooError
from icezoo.core.synthetic import synthetic_batch

TOL = 1e-4

#: the stages of each case beyond the shared ones (kaggle_norm features, 40 pulses, mean+max, direction_kappa)
FAMILIES = {
    "relbias_transformer": {
        "embedder": {"name": "fourier", "dim": 16, "base_dim": 4, "charge_column": 4, "aux_column": 5},
        "backbone": {"name": "relbias_transformer", "heads": 2, "biased_depth": 1, "depth": 1, "bias_dim": 4,
                     "ff_mult": 1, "query_block": 8}},
    "relbias_additive": {
        "backbone": {"name": "relbias_transformer", "heads": 2, "biased_depth": 1, "depth": 0, "bias_dim": 4,
                     "ff_mult": 1, "bias_mode": "additive"}},
    "mat": {"embedder": {"name": "mlp", "dim": 16}, "pooler": ["sum", "min"], "head": {"name": "angles"},
            "backbone": {"name": "mat", "heads": 2, "depth": 1, "radius": 0.3, "ff_mult": 1}},
    "local_attention": {
        "embedder": {"name": "sensor_embedding", "dim": 16}, "pooler": ["mean_unmasked"],
        "head": {"name": "direction_bins", "azimuth_bins": 8, "zenith_bins": 4},
        "backbone": {"name": "local_attention", "heads": 2, "k": 3, "local_depth": 1, "depth": 1, "ff_mult": 1,
                     "space": "xyzt"}},
    "dynedge": {"embedder": {"name": "identity"}, "pooler": ["min", "max", "mean", "sum"],
                "backbone": {"name": "dynedge", "k": 3, "layers": [[16, 16], [16, 16]], "post": [16]}},
    "dynedge_tito": {"embedder": {"name": "identity"}, "pooler": [{"name": "ae", "bottleneck": 8}],
                     "backbone": {"name": "dynedge_tito", "k": 3, "layers": [[16, 16], [16, 16]], "post": [16],
                                  "heads": 2, "ff_mult": 1}},
    "egnn": {"backbone": {"name": "egnn", "dim": 16, "depth": 2, "k": 3, "rebuild_edges": True, "space": "xyztc"}},
    "dynnet": {"backbone": {"name": "dynnet", "k": 3, "layers": [[16, 16], [16, 16]], "post": [16]}},
    "iseecube": {"pooler": ["cls"],
                 "backbone": {"name": "iseecube", "heads": 2, "rel_depth": 1, "depth": 1, "max_len": 40, "ff_mult": 1}},
    "graphnet_embedder_and_chain": {
        "embedder": {"name": "graphnet", "dim": 16, "k": 3, "widths": [16], "encode_dim": 8, "raw_columns": 4},
        "backbone": [{"name": "egnn", "dim": 16, "depth": 1, "k": 3, "concat": True},
                     {"name": "local_attention", "heads": 2, "k": 3, "local_depth": 1, "depth": 0, "ff_mult": 1}]},
    "pyg_GATv2Conv": {"backbone": {"name": "pyg", "conv": "GATv2Conv", "depth": 2, "k": 3, "params": {"heads": 2}}},
    "pyg_TransformerConv": {"backbone": {"name": "pyg", "conv": "TransformerConv", "depth": 2, "k": 3,
                                         "params": {"heads": 2}}},
    "pyg_EdgeConv": {"backbone": {"name": "pyg", "conv": "EdgeConv", "depth": 2, "k": 3, "params": {"aggr": "max"}}},
    # the other convs icezoo exports, one layer each, chained: one export for all of them
    "pyg_other_convs": {"backbone": [{"name": "pyg", "conv": conv, "depth": 1, "k": 3}
                                     for conv in ("SAGEConv", "GCNConv", "GATConv", "GENConv", "ResGatedGraphConv",
                                                  "GraphConv")]},
}
BASE = {"features": [{"name": "kaggle_norm"}], "selection": {"name": "time_order", "max_pulses": 40},
        "embedder": {"name": "linear", "dim": 16}, "pooler": ["mean", "max"], "head": {"name": "direction_kappa"},
        "loss": [{"name": "vmf3d"}]}


def tiny(family: str):
    """The family's tiny pipeline, eval mode, fixed seed."""
    from icezoo.core.pipelines import pipeline_from_table
    from icezoo.zoo import build

    table = {**BASE, **FAMILIES[family]}
    if table["head"]["name"] != "direction_kappa":
        table["loss"] = [{"name": {"angles": "logcosh", "direction_bins": "bins_ce"}[table["head"]["name"]]}]
    torch.manual_seed(0)
    return build(pipeline_from_table(family, table)).eval()


def example(p):
    return synthetic_batch(p.feature_dim, [5, 12, 2], width=12, event_dim=p.event_dim)


def with_ties(batch):
    """The batch with positions on a 150 m grid and times on a 200 ns grid: pulses sharing a sensor,
    equal distances and equal times, so every kNN has to break ties as the torch model does."""
    xyz = torch.round(batch.xyzt[..., :3] / 150.0) * 150.0
    t = torch.round(batch.xyzt[..., 3:] / 200.0) * 200.0
    return batch.with_(xyzt=torch.where(batch.mask[..., None], torch.cat([xyz, t], -1), 0.0))


def uneven(p):
    """Batches unlike the export example: 7 events in 40 slots (one empty), one event, equal lengths, ties."""
    shapes = [([2, 30, 17, 4, 0, 9, 2], 40), ([3], 3), ([20, 20], 20), ([25, 7, 16, 1, 11], 31)]
    batches = [synthetic_batch(p.feature_dim, lengths, width=width, seed=seed + 1, event_dim=p.event_dim)
               for seed, (lengths, width) in enumerate(shapes)]
    return batches[:3] + [with_ties(batches[3])]


#: the ONNX exports in the default run (one of each kind: attention with a pair bias, kNN graph, PyG);
#: the others are ``slow`` (each ONNX export takes 10-60 s on 2 shared cores)
FAST_ONNX = ("relbias_transformer", "dynedge", "pyg_GATv2Conv")


@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f in FAST_ONNX else pytest.mark.slow)
                                    for f in sorted(FAMILIES)])
def test_onnx_parity(tmp_path, family):
    """onnxruntime gives the torch pipeline's outputs within 1e-4 at batch sizes and pulse counts other
    than the export example's (ties in the kNN included)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from icezoo.engine.export import check_parity, export_onnx, export_refusal

    p = tiny(family)
    assert export_refusal(p) is None
    export_onnx(p, tmp_path / "m.onnx", example(p))
    assert check_parity(p, tmp_path / "m.onnx", uneven(p)) < TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_torchscript_parity(tmp_path, family):
    """torch.jit.load of the traced model gives the torch pipeline's outputs within 1e-4 at batch sizes
    and pulse counts other than the trace's (a trace records one path: checked, not assumed)."""
    from icezoo.engine.export import check_parity, export_torchscript

    p = tiny(family)
    export_torchscript(p, tmp_path / "m.pt", example(p))
    assert check_parity(p, tmp_path / "m.pt", uneven(p)) < TOL


def test_pyg_every_slot_graph_equals_the_flat_graph(monkeypatch):
    """The pyg adapter's export path (every slot a node, a sink for missing edges) gives the eager outputs."""
    import icezoo.plugins.backbones.pyg as pyg

    for family in ("pyg_GATv2Conv", "pyg_EdgeConv"):
        p = tiny(family)
        batch = uneven(p)[0]
        with torch.no_grad():
            want = p.backbone(p.embedder(batch.features, batch), batch)
            monkeypatch.setattr(pyg, "exporting", lambda: True)
            got = p.backbone(p.embedder(batch.features, batch), batch)
            monkeypatch.setattr(pyg, "exporting", lambda: False)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_refusal_names_the_component(tmp_path):
    """A pyg conv without an export parity test is refused in one line naming it; nothing is written."""
    from icezoo.core.pipelines import pipeline_from_table
    from icezoo.engine.export import export_onnx, export_refusal
    from icezoo.zoo import build

    p = build(pipeline_from_table("t", {**BASE, "backbone": {"name": "pyg", "conv": "LEConv", "k": 3}}))
    reason = export_refusal(p)
    assert reason.startswith("backbone pyg: conv LEConv") and "\n" not in reason
    with pytest.raises(IcezooError, match="backbone pyg: conv LEConv"):
        export_onnx(p, tmp_path / "m.onnx", example(p))
    assert not (tmp_path / "m.onnx").exists()


def test_export_failure_names_the_component(tmp_path, monkeypatch):
    """A component whose code branches on a tensor's value (no graph can hold that) fails torch.export:
    the one line names the stage and component it failed in; nothing is written."""
    from icezoo.engine.export import export_onnx
    from icezoo.plugins.backbones.relbias import RelBiasTransformer

    relation = RelBiasTransformer.relation

    def branching(self, xyzt, mask):
        return relation(self, xyzt if bool(mask.all()) else xyzt * 1.0, mask)

    monkeypatch.setattr(RelBiasTransformer, "relation", branching)
    p = tiny("relbias_transformer")
    with pytest.raises(IcezooError, match=r"batch and pulse axes \(in backbone relbias_transformer\): ") as err:
        export_onnx(p, tmp_path / "m.onnx", example(p))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m.onnx").exists()
