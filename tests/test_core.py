"""Core: registry, plugin rules, pipeline resolution, composer checks, checkpoints, conformance kit."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from icezoo.core import Backbone, Embedder, IcezooError, Pooler, hookimpl
from icezoo.core.checkpoint import load_checkpoint, save_checkpoint
from icezoo.core.pipelines import PipelineConfig, load_pipeline, merge_tables, pipeline_config, pipeline_from_table
from icezoo.core.registry import build_registry
from icezoo.core.synthetic import synthetic_batch
from icezoo.testing import check_component, tiny_pipeline
from icezoo.zoo import build, make_registry, registry

TINY = {"embedder.dim": 16, "backbone.depth": 1, "backbone.heads": 2}


def plugin(*components, pipelines=()):
    """A plugin object registered in a test (not the example package)."""
    mod = types.ModuleType("fixture_plugin")

    @hookimpl
    def icezoo_components():
        return list(components)

    @hookimpl
    def icezoo_pipeline_files():
        return list(pipelines)

    mod.icezoo_components = icezoo_components
    mod.icezoo_pipeline_files = icezoo_pipeline_files
    return mod


class ShadowMean(Pooler):
    """A second provider of 'mean'."""

    name = "Mean"

    def forward(self, h, mask, cls=None):
        return h.mean(1)


# ------------------------------------------------------------------------------- registry rules
def test_duplicate_component_names_both_providers():
    with pytest.raises(IcezooError) as err:
        make_registry(extra_plugins=[("shadow", plugin(ShadowMean))], autoload=False)
    msg = str(err.value)
    assert "pooler 'Mean' is provided twice" in msg
    assert "icezoo" in msg and "plugin icezoo.plugins.poolers" in msg and "plugin shadow" in msg


def test_a_registry_reads_the_installed_distributions_once_for_its_plugins(monkeypatch):
    """Each plugin's package comes from one scan of the installed distributions per registry (the
    scan was repeated for every plugin: ~2.5 s of every command's start on a busy machine)."""
    from importlib import metadata

    calls = []
    real = metadata.packages_distributions
    monkeypatch.setattr(metadata, "packages_distributions", lambda: calls.append(1) or real())

    def pooler(name):
        cls = type(name, (Pooler,), {"name": name, "forward": lambda self, h, mask, cls=None: h.mean(1)})
        mod = plugin(cls)
        mod.__name__ = f"pluggy.fixture_{name.lower()}"  # a module of an installed distribution (not editable)
        return mod

    reg = make_registry(extra_plugins=[("one", pooler("FirstFixture")), ("two", pooler("SecondFixture"))],
                        autoload=False)
    assert len(calls) == 1
    for name in ("firstfixture", "secondfixture"):
        spec = reg.get("pooler", name)
        assert (spec.package, spec.version) == ("pluggy", metadata.version("pluggy"))


def test_disable_env_blocks_a_plugin(monkeypatch):
    monkeypatch.setenv("ICEZOO_DISABLE_PLUGINS", "shadow")
    reg = make_registry(extra_plugins=[("shadow", plugin(ShadowMean))], autoload=False)
    assert reg.get("pooler", "mean").package == "icezoo"


def test_lookup_normalises_and_suggests():
    reg = registry()
    assert reg.get("embedder", "LINEAR").name == "linear"
    assert reg.get("head", "direction-kappa").name == "direction_kappa"
    with pytest.raises(IcezooError, match=r"unknown backbone 'transfomer'; did you mean 'transformer'"):
        reg.get("backbone", "transfomer")
    with pytest.raises(IcezooError, match="unknown kind"):
        reg.get("bakbone", "transformer")


def test_list_filters_by_kind_and_glob():
    reg = registry()
    assert {s.kind for s in reg.list(kind="loss")} == {"loss"}
    names = [s.name for s in reg.list(pattern="trans*")]
    assert "transformer" in names and all(n.lower().startswith("trans") for n in names)


def test_non_component_is_refused():
    class NotAComponent:
        kind = "pooler"
        name = "bogus"

    with pytest.raises(IcezooError, match="is not a component"):
        make_registry(extra_plugins=[("bad", plugin(NotAComponent))], autoload=False)


# ------------------------------------------------------------------------------- pipelines
def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parent_merges_tables_and_replaces_arrays(tmp_path):
    path = write(tmp_path, """
[pipelines.A]
backbone = { name = "transformer", depth = 2, heads = 2 }
pooler = ["mean", "max"]
train = { lr = 0.01, batch_size = 8 }
[pipelines.B]
parent = "A"
backbone = { depth = 3 }
pooler = ["max"]
train = { lr = 0.5 }
""")
    cfg = pipeline_config("B", path, reg=registry())
    assert cfg.backbone.name == "transformer" and cfg.backbone.params == {"depth": 3, "heads": 2}
    assert [p.name for p in cfg.pooler] == ["max"]
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 8


def test_merge_tables_is_recursive_and_copies():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = merge_tables(base, {"a": {"c": [3]}, "e": 2})
    assert out == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_parent_cycle_is_an_error(tmp_path):
    path = write(tmp_path, '[pipelines.A]\nparent = "B"\n[pipelines.B]\nparent = "C"\n[pipelines.C]\nparent = "A"\n')
    with pytest.raises(IcezooError, match=r"pipelines\.A: cycle of parents: A -> B -> C -> A"):
        pipeline_config("A", path, reg=registry())


def test_malformed_toml_names_file_and_line(tmp_path):
    path = write(tmp_path, '[pipelines.A]\nbackbone = { name = "transformer", depth = }\n')
    with pytest.raises(IcezooError) as err:
        pipeline_config("A", path, reg=registry())
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def test_invalid_param_names_the_path():
    cfg = PipelineConfig(name="X").with_overrides({"backbone.depth": 0})
    with pytest.raises(IcezooError, match=r"^pipelines\.X\.backbone\.depth: Input should be greater than 0$"):
        build(cfg)
    cfg = PipelineConfig(name="X").with_overrides({"backbone.deepth": 2})
    with pytest.raises(IcezooError, match=r"^pipelines\.X\.backbone\.deepth: unknown parameter$"):
        build(cfg)
    with pytest.raises(IcezooError, match=r"pipelines\.X\.train\.lr: Input should be greater than 0"):
        PipelineConfig(name="X").with_overrides({"train.lr": -1})


def test_every_registry_pipeline_resolves_and_validates():
    reg = registry()
    names = [p.name for p in reg.pipelines.values()]
    assert {"default", "BASELINE_HF", "BASELINE_HF_V7", "BASELINE_HF_V8", "INIT5_HB"} <= set(names)
    for name in names:
        cfg = load_pipeline(reg, name)
        assert cfg.name == name
    v8 = load_pipeline(reg, "BASELINE_HF_V8")
    assert v8.init_from == "BASELINE_HF_V7" and v8.max_pulses == 148
    assert [p.name for p in v8.pooler] == ["mean", "max"] and v8.loss[0].name == "vmf3d"


# ------------------------------------------------------------------------------- composer
def tiny(**changes) -> PipelineConfig:
    return PipelineConfig(name="T", **changes).with_overrides(TINY)


def test_compose_chains_dims_and_runs_forward_backward():
    model = build(tiny())
    assert model.embedder.in_dim == model.feature_dim == 6
    assert model.head.in_dim == 2 * model.backbone.out_dim
    batch = synthetic_batch(model.feature_dim, [1, 5, 9])
    pred = model(batch)
    assert pred.shape == (3, 3)
    loss = model.loss(pred, batch)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cls_pooler_needs_a_cls_backbone():
    reg = make_registry(autoload=False)
    if ("pooler", "cls") not in reg.components:
        pytest.skip("cls pooler not registered")
    with pytest.raises(IcezooError, match=r"pipelines\.T\.pooler: cls needs cls_token"):
        build(tiny(pooler=["cls"]), reg)
    build(tiny(pooler=["cls"]).with_overrides({"backbone.cls": True}), reg)


def test_loss_must_accept_the_head_output():
    class AnglesOnly(Pooler):
        """test fixture"""
        name = "unused"

    from icezoo.core import Loss

    class AngleLoss(Loss):
        """Only takes angles."""
        name = "angles_only_fixture"
        accepts = frozenset({"angles"})

        def forward(self, pred, target):
            return pred.sum(-1)

    reg = make_registry(extra_plugins=[("fx", plugin(AngleLoss))], autoload=False)
    with pytest.raises(IcezooError, match=r"loss: angles_only_fixture takes a head output of angles, but head 'direction_kappa' gives vector"):
        build(tiny(loss=["angles_only_fixture"]), reg)


def test_incompatible_dims_are_one_line():
    cfg = tiny().with_overrides({"embedder.dim": 18, "backbone.heads": 4})
    with pytest.raises(IcezooError, match=r"^pipelines\.T\.backbone: transformer: dim 18 is not divisible by heads 4$"):
        build(cfg)


def test_event_level_features_reach_the_head():
    reg = registry()
    event_level = [s.name for s in reg.list(kind="features") if "event_level" in s.cls.properties]
    if not event_level:
        pytest.skip("no event-level extractor registered")
    model = build(tiny(features=["kaggle_norm", event_level[0]]))
    assert model.event_dim > 0 and model.head.in_dim == 2 * model.backbone.out_dim + model.event_dim
    batch = synthetic_batch(model.feature_dim, [3, 4], event_dim=model.event_dim)
    assert model(batch).shape == (2, 3)


# ------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build(tiny())
    path = save_checkpoint(tmp_path / "c.pt", {"name": "T", **model.config.to_table()}, model.state_dict(),
                           model.provenance, step=3, rng=torch.get_rng_state())
    payload = load_checkpoint(path)
    assert payload["step"] == 3 and payload["provenance"]["backbone.transformer"].startswith("icezoo==")
    cfg = pipeline_from_table(payload["pipeline"].pop("name"), payload["pipeline"])
    again = build(cfg)
    again.load_state_dict(payload["state_dict"])
    batch = synthetic_batch(model.feature_dim, [4, 2])
    model.eval(), again.eval()
    assert torch.equal(model(batch), again(batch))
    assert not list(tmp_path.glob(".*tmp*"))


def test_failed_checkpoint_save_leaves_no_temporary(tmp_path, monkeypatch):
    def disk_full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "c.pt", {"name": "T"}, {})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_refuses_code_and_garbage(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "icezoo-checkpoint", "version": 1, "pipeline": {}, "state_dict": {}, "x": Evil()}, evil)
    with pytest.raises(IcezooError, match="not an icezoo checkpoint"):
        load_checkpoint(evil)
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(evil.read_bytes()[:40])
    with pytest.raises(IcezooError, match=str(truncated)):
        load_checkpoint(truncated)
    foreign = tmp_path / "f.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(IcezooError, match="not an icezoo checkpoint"):
        load_checkpoint(foreign)
    assert pickle  # stdlib pickle is what torch.load(weights_only=True) refuses to run


# ------------------------------------------------------------------------------- conformance kit can fail
class LeakyPooler(Pooler):
    """Reads padded slots without declaring reads_padding."""

    name = "leaky"

    def forward(self, h, mask, cls=None):
        return h.mean(1)


class OrderPooler(Pooler):
    """Declares permutation_invariant but returns the first pulse."""

    name = "first"

    def forward(self, h, mask, cls=None):
        return h[:, 0]


class CrossTalkEmbedder(Embedder):
    """Mixes events of a batch."""

    name = "crosstalk"

    def forward(self, features, batch):
        return features + features[:, :1].mean(0, keepdim=True)  # slot 0 is always a real pulse


class NaNBackbone(Backbone):
    """Non-finite for single-pulse events."""

    name = "nan_single"

    def forward(self, h, batch):
        n = batch.mask.sum(1, keepdim=True).to(h.dtype)
        return h / (n - 1)[..., None]


@pytest.mark.parametrize("cls,expect", [
    (LeakyPooler, "padding changed the pooled result"),
    (OrderPooler, "depends on pulse order"),
    (CrossTalkEmbedder, "depends on the other events"),
    (NaNBackbone, "not finite"),
])
def test_conformance_kit_catches_broken_components(cls, expect):
    reg = build_registry(extra_plugins=[("broken", plugin(cls))], autoload=False)
    spec = reg.get(cls.kind, cls.name)
    with pytest.raises(AssertionError, match=expect):
        check_component(spec, [1, 6, 3], seed=1)


def test_every_registry_pipeline_composes_and_trains_one_step():
    """Each named pipeline, shrunk to a tiny width and depth, builds and takes a finite training step."""
    reg = registry()
    for source in reg.pipelines.values():
        cfg = tiny_pipeline(load_pipeline(reg, source.name), reg)
        model = build(cfg, reg)
        batch = synthetic_batch(model.feature_dim, [1, 7, 12], event_dim=model.event_dim, seed=3)
        loss = model.loss(model(batch), batch)
        loss.backward()
        assert torch.isfinite(loss), source.name
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), source.name


def test_submission_csv_is_written_atomically(tmp_path, monkeypatch):
    import numpy as np

    import icezoo.core.atomic as atomic
    from icezoo.data.kaggle_layout import write_submission

    out = tmp_path / "sub.csv"
    write_submission(out, np.array([2_000_000_001, 7]), np.array([0.5, 6.0]), np.array([1.0, 3.0]))
    assert out.read_text().splitlines() == ["event_id,azimuth,zenith", "2000000001,0.5000000000,1.0000000000",
                                            "7,6.0000000000,3.0000000000"]

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_submission(out, np.array([1]), np.array([0.0]), np.array([0.0]))
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"] and out.read_text().startswith("event_id")
