"""Export of the transformer family (issue 24): plain-tensor model, ONNX and TorchScript files, parity.

Parity is measured on batches of uneven lengths with padding, at batch sizes and widths other than
the example used at export (B = 1 included). ONNX exports take seconds each: few of them here.
"""

from __future__ import annotations

import pytest
import torch

from icezoo.core.errors import IcezooError
from icezoo.core.synthetic import synthetic_batch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

#: the `default` pipeline at test size, and the variants of its transformer the issue names
VARIANTS = {
    "plain": {},
    "rotary": {"backbone.rotary_pos_emb": True},
    "glu": {"backbone.ff_glu": True},
    "cls": {"backbone.cls": True, "pooler": ["cls"]},
    "rotary_glu_cls": {"backbone.rotary_pos_emb": True, "backbone.ff_glu": True, "backbone.cls": True,
                       "pooler": ["cls", "mean"]},
}


def tiny_default(**sets):
    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import build, registry

    reg = registry()
    config = pipeline_config("default", reg=reg).with_overrides({"embedder.dim": 32, "backbone.heads": 4, **sets})
    torch.manual_seed(0)
    return build(config, reg).eval()


def example(pipeline):
    return synthetic_batch(pipeline.feature_dim, [5, 9, 3, 7], width=9, event_dim=pipeline.event_dim)


def uneven(pipeline):
    """Batches unlike the export example: 7 events up to 64 slots, one event, two short ones, equal lengths."""
    shapes = [([2, 30, 17, 4, 64, 9, 2], 64), ([3], 3), ([2, 2], 5), ([40, 40, 40], 40)]
    return [synthetic_batch(pipeline.feature_dim, lengths, width=width, seed=seed, event_dim=pipeline.event_dim)
            for seed, (lengths, width) in enumerate(shapes)]


@pytest.mark.parametrize("variant", ["plain", "rotary_glu_cls"])
def test_onnx_parity(tmp_path, variant):
    """onnxruntime gives the torch pipeline's direction and kappa within 1e-4 at other shapes."""
    import onnx

    from icezoo.engine.export import check_parity, export_onnx

    p = tiny_default(**VARIANTS[variant])
    info = export_onnx(p, tmp_path / "m.onnx", example(p))
    assert info["inputs"] == ["features", "mask", "xyzt", "sensor_id"]
    assert info["outputs"] == ["direction", "kappa"]
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["features"] == ["batch", "pulses", p.feature_dim] and dims["xyzt"] == ["batch", "pulses", 4]
    assert check_parity(p, tmp_path / "m.onnx", uneven(p)) < 1e-4


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_torchscript_parity(tmp_path, variant):
    """torch.jit.load gives the pipeline's outputs within 1e-4 at batch sizes and lengths other than the trace's."""
    from icezoo.engine.export import check_parity, export_torchscript

    p = tiny_default(**VARIANTS[variant])
    export_torchscript(p, tmp_path / "m.pt", example(p))
    assert check_parity(p, tmp_path / "m.pt", uneven(p)) < 1e-4


def test_export_model_is_the_pipeline():
    """The plain-tensor wrapper returns exactly the pipeline's unit direction and kappa."""
    from icezoo.engine.export import ExportModel, example_inputs

    p = tiny_default()
    batch = uneven(p)[0]
    with torch.no_grad():
        pred = p(batch)
        direction, kappa = ExportModel(p)(*example_inputs(p, batch))
    torch.testing.assert_close(direction, p.direction(pred))
    torch.testing.assert_close(kappa, p.kappa(pred))
    torch.testing.assert_close(direction.norm(dim=-1), torch.ones(len(direction)))


def test_exportable_restores_einx():
    """The export-time einx shim is gone afterwards, and masks like einx.where does."""
    import x_transformers.x_transformers as xt

    from icezoo.engine.export import exportable

    before = xt.einx
    with exportable():
        mask = torch.tensor([[True, False]])
        x = torch.ones(1, 2, 3)
        assert xt.einx.where("b n, b n d, -> b n d", mask, x, 0.0).sum() == 3
    assert xt.einx is before


def test_fixed_axis_is_refused(tmp_path, monkeypatch):
    """A model whose code turns the batch size into a Python int cannot be exported: one line, no file."""
    from icezoo.engine.export import export_onnx

    p = tiny_default()
    forward = p.embedder.forward

    def fixed(features, batch):  # int() of a shape: fixes the axis at the example's size
        return forward(features.reshape(int(features.shape[0]), features.shape[1], -1), batch)

    monkeypatch.setattr(p.embedder, "forward", fixed)
    with pytest.raises(IcezooError, match="dynamic batch and pulse axes"):
        export_onnx(p, tmp_path / "m.onnx", example(p))
    assert not (tmp_path / "m.onnx").exists()


def test_example_too_small():
    from icezoo.engine.export import export_torchscript

    p = tiny_default()
    with pytest.raises(ValueError, match="at least 2 events"):
        export_torchscript(p, "unused.pt", synthetic_batch(p.feature_dim, [4], width=4))


def test_sensor_tokens_are_refused():
    """Sensor aggregation reads Batch.pulses (packed, unpadded): no plain-tensor input carries it yet."""
    from icezoo.core.pipelines import pipeline_config
    from icezoo.engine.export import export_torchscript
    from icezoo.zoo import build, registry

    reg = registry()
    p = build(pipeline_config("SENSOR_AGG", reg=reg).with_overrides({"embedder.dim": 16}), reg).eval()
    with pytest.raises(IcezooError, match="sensor tokens.*not exportable"):
        export_torchscript(p, "unused.pt", example(p))


def test_event_features_are_an_input(tmp_path):
    """A pipeline with event-level features exports them as a fifth input [batch, E]; parity in both formats."""
    import onnx

    from icezoo.engine.export import check_parity, export_onnx, export_torchscript, input_names

    p = tiny_default(features=[{"name": "kaggle_norm"}, {"name": "pulse_count"}])
    assert p.event_dim == 2 and input_names(p)[-1] == "event_features"
    export_torchscript(p, tmp_path / "m.pt", example(p))
    assert check_parity(p, tmp_path / "m.pt", uneven(p)) < 1e-4
    export_onnx(p, tmp_path / "m.onnx", example(p))
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["event_features"] == ["batch", 2]
    assert check_parity(p, tmp_path / "m.onnx", uneven(p)) < 1e-4


@pytest.mark.parametrize("head", [{"name": "angles"}, {"name": "direction_bins", "azimuth_bins": 8, "zenith_bins": 8}])
def test_other_heads(tmp_path, head):
    """An angles head exports its direction alone; a bins head its direction and kappa."""
    from icezoo.engine.export import check_parity, export_torchscript, output_names

    loss = "angular" if head["name"] == "angles" else "bins_ce"
    p = tiny_default(head=head, loss=[{"name": loss}])
    assert output_names(p) == (["direction"] if head["name"] == "angles" else ["direction", "kappa"])
    export_torchscript(p, tmp_path / "m.pt", example(p))
    assert check_parity(p, tmp_path / "m.pt", uneven(p)) < 1e-4


def test_tasks_export_every_output(tmp_path):
    """MULTITASK_V0's energy, event type and vertex heads export beside the direction, in predict's column order."""
    from icezoo.core.pipelines import pipeline_config
    from icezoo.engine.bundle import output_specs
    from icezoo.engine.export import check_parity, export_onnx, output_names
    from icezoo.zoo import build, registry

    reg = registry()
    torch.manual_seed(0)
    p = build(pipeline_config("MULTITASK_V0", reg=reg).with_overrides({"embedder.dim": 32, "backbone.heads": 4}),
              reg).eval()
    names = output_names(p)
    with torch.no_grad():
        _, outs = p.forward_tasks(uneven(p)[0])
    assert names == ["direction", "kappa", *p.task_outputs(outs)]
    specs = {s["name"]: s for s in output_specs(p, names)}
    assert specs["energy"]["task"] == "energy" and specs["energy"]["meaning"].startswith("log10(E / GeV)")
    assert specs["p_track"]["family"] == "classification" and specs["vertex_z"]["task"] == "vertex"
    export_onnx(p, tmp_path / "m.onnx", example(p))
    assert check_parity(p, tmp_path / "m.onnx", uneven(p), relative=True) < 1e-4
