"""Names and registration: one "did you mean", one "defined twice" check, components registered by
being defined, and the loss extension point (``forward``) under the base class's checks."""

from __future__ import annotations

import importlib
import textwrap
import types

import pytest
import torch

from icezoo.core import IcezooError, Loss, hookimpl
from icezoo.core.names import add_once, did_you_mean
from icezoo.core.pipelines import Pipelines, PipelineSource
from icezoo.core.registry import defined_components
from icezoo.zoo import make_registry, registry


# ------------------------------------------------------------------------------- did you mean
def test_did_you_mean_compares_lookup_keys_and_shows_names_as_written():
    assert did_you_mean("transfomer", ["transformer", "mat", "dynedge"]) == "; did you mean 'transformer'?"
    assert did_you_mean("baseline-hf-v5", ["BASELINE_HF_V5", "EXP_40"]) == "; did you mean 'BASELINE_HF_V5'?"
    assert did_you_mean("zzzz", ["transformer", "mat"]) == ""
    assert did_you_mean("anything", []) == ""
    hint = did_you_mean("meen", ["mean", "men", "mea", "meat", "max"])
    assert hint.count("'") == 6  # at most three names


def test_every_lookup_says_did_you_mean_through_the_one_helper(tmp_path):
    from icezoo.engine.studies import get_study

    reg = registry()
    messages = []
    for lookup in (lambda: reg.get("backbone", "transfomer"), lambda: reg.pipelines.find("BASELINE_HF_V77"),
                   lambda: get_study("losess", reg)):
        with pytest.raises(IcezooError) as err:
            lookup()
        messages.append(str(err.value))
    backbones = [spec.name for spec in reg.list(kind="backbone")]
    assert messages[0] == "unknown backbone 'transfomer'" + did_you_mean("transfomer", backbones)
    assert "; did you mean 'transformer'" in messages[0]
    names = [src.name for src in reg.pipelines.values()]
    assert messages[1] == "unknown pipeline 'BASELINE_HF_V77'" + did_you_mean("BASELINE_HF_V77", names)
    assert "; did you mean 'BASELINE_HF_V7" in messages[1]
    assert messages[2].startswith("unknown study 'losess'; did you mean 'losses'?")


def test_a_miss_without_a_close_name_lists_the_kind_s_components():
    with pytest.raises(IcezooError, match=r"^unknown head 'zzzz' \(known: .*direction_kappa"):
        registry().get("head", "zzzz")


# ------------------------------------------------------------------------------- defined twice
def test_add_once_refuses_a_name_defined_twice_naming_both_files():
    book: dict[str, PipelineSource] = {}
    add_once(book, "My-Pipe", PipelineSource("My-Pipe", {}, "a.toml"), "a.toml", "pipeline")
    assert list(book) == ["my_pipe"]
    with pytest.raises(IcezooError, match=r"^pipeline 'my_pipe' is defined twice: in a\.toml and in b\.toml$"):
        add_once(book, "my_pipe", PipelineSource("my_pipe", {}, "b.toml"), "b.toml", "pipeline")
    assert book["my_pipe"].file == "a.toml"  # the first one stays


def test_two_pipeline_files_defining_one_name_is_an_error_naming_both(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[pipelines.P]\nbackbone = "transformer"\n')
    b.write_text('[pipelines.p]\nbackbone = "mat"\n')
    pipelines = Pipelines()
    pipelines.add_file(a)
    with pytest.raises(IcezooError, match=rf"^pipeline 'p' is defined twice: in {a} and in {b}$"):
        pipelines.add_file(b)


def test_a_pipeline_file_replaces_the_registered_pipeline_of_its_name_in_any_spelling(tmp_path):
    from icezoo.core.pipelines import pipeline_config

    path = tmp_path / "p.toml"
    path.write_text('[pipelines.Default]\nparent = "BASELINE_HF"\ndescription = "mine"\n')
    config = pipeline_config("default", path, reg=registry())
    assert (config.name, config.description) == ("Default", "mine")
    assert registry().pipelines.find("default").name == "default"  # the registry itself is unchanged


# ------------------------------------------------------------------------------- registered by definition
PLUGIN_MODULE = '''
"""A third-party plugin module with component classes and no list of them."""
import torch

from icezoo.core import Pooler
from icezoo.plugins.poolers import MeanPool  # imported, not defined here: not registered again


class FixtureBase(Pooler):
    """A shared base without a name of its own: not a component."""

    def forward(self, h, mask, cls=None):
        return h.sum(1)


class FixtureSumPool(FixtureBase):
    """Sum over every slot (fixture)."""

    name = "fixture_sum"


class FixtureFirstPool(MeanPool):
    """The first slot (fixture)."""

    name = "fixture_first"

    def forward(self, h, mask, cls=None):
        return h[:, 0]
'''


def test_a_component_is_registered_by_being_defined(tmp_path, monkeypatch):
    (tmp_path / "fixture_defined_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("fixture_defined_plugin")
    assert [cls.__name__ for cls in defined_components(module)] == ["FixtureSumPool", "FixtureFirstPool"]
    reg = make_registry(extra_plugins=[("defined", module)], autoload=False)
    for name, cls_name in (("fixture_sum", "FixtureSumPool"), ("fixture_first", "FixtureFirstPool")):
        spec = reg.get("pooler", name)
        assert spec.cls.__name__ == cls_name and spec.plugin == "defined"
    assert reg.get("pooler", "mean").plugin == "icezoo.plugins.poolers"  # the import did not move it
    assert not [s for s in reg.list(kind="pooler") if s.cls.__name__ == "FixtureBase"]


def test_a_hook_listing_a_defined_class_again_registers_it_once(tmp_path, monkeypatch):
    (tmp_path / "fixture_listed_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE) + textwrap.dedent('''
        from icezoo.core import hookimpl


        @hookimpl
        def icezoo_components():
            return [FixtureSumPool]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = make_registry(extra_plugins=[("listed", importlib.import_module("fixture_listed_plugin"))],
                        autoload=False)
    assert [s.name for s in reg.list(kind="pooler", pattern="fixture_*")] == ["fixture_first", "fixture_sum"]


def test_the_built_ins_keep_no_component_lists():
    from icezoo.plugins import DEFAULT_PLUGINS

    for name in DEFAULT_PLUGINS:
        assert not hasattr(importlib.import_module(name), "icezoo_components"), name
    registered = {(s.kind, s.name) for s in registry().list() if s.package == "icezoo"}
    defined = {(cls.kind, cls.name) for name in DEFAULT_PLUGINS
               for cls in defined_components(importlib.import_module(name))}
    assert registered == defined and len(registered) > 30


# ------------------------------------------------------------------------------- the loss extension point
class HalfSquared(Loss):
    """0.5 |pred - target|^2 per event (fixture): only ``forward`` is written."""

    name = "half_squared_fixture"

    def forward(self, pred, target):
        self.seen_dtype = pred.dtype
        return 0.5 * ((pred - target) ** 2).sum(-1)


class BatchMean(Loss):
    """A broken fixture: forward reduces over the batch itself."""

    name = "batch_mean_fixture"

    def forward(self, pred, target):
        return ((pred - target) ** 2).sum(-1).mean()


def test_a_loss_writing_forward_gets_the_base_reduction_and_float32():
    loss = HalfSquared(HalfSquared.Config())
    pred, target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(loss.forward(pred, target), torch.tensor([0.0, 0.5]))
    assert torch.allclose(loss(pred, target), torch.tensor(0.25))
    assert torch.allclose(loss(pred, target, torch.tensor([1.0, 3.0])), torch.tensor(0.375))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(pred.bfloat16(), target)
    assert value.dtype == torch.float32 and loss.seen_dtype == torch.float32
    assert loss(pred.double(), target.double()).dtype == torch.float64


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(2, 2), torch.zeros(2, 3)), r"pred of shape \(2, 2\) is not a head output it accepts \(vector"),
    ((torch.zeros(2, 4), torch.zeros(2, 3)), r"pred of shape \(2, 4\) is not a head output"),
    ((torch.zeros(3), torch.zeros(3)), r"pred of shape \(3,\) is not a head output"),
    ((torch.zeros(2, 3), torch.zeros(3, 3)), r"target of shape \(3, 3\), expected \(2, 3\)"),
    ((torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 1)), r"weight of shape \(2, 1\), expected \(2,\)"),
])
def test_a_loss_writing_forward_gets_the_base_shape_checks(args, message):
    with pytest.raises(ValueError, match=rf"^loss half_squared_fixture: {message}"):
        HalfSquared(HalfSquared.Config())(*args)


def test_a_forward_that_does_not_give_one_term_per_event_is_refused():
    with pytest.raises(ValueError, match=r"^loss batch_mean_fixture: forward gave shape \(\), expected one term "
                                         r"per event \(2,\)"):
        BatchMean(BatchMean.Config())(torch.zeros(2, 3), torch.zeros(2, 3))


def test_a_loss_without_forward_is_refused_at_registration():
    class NoForward(Loss):
        """No per-event terms (fixture)."""

        name = "no_forward_fixture"

    fixture = types.ModuleType("fixture_no_forward")
    fixture.icezoo_components = hookimpl(lambda: [NoForward])
    fixture.icezoo_components.__name__ = "icezoo_components"
    with pytest.raises(IcezooError, match=r"loss class NoForward \('no_forward_fixture'\) does not implement "
                                          r"forward\(\) \(abstract in Loss\)"):
        make_registry(extra_plugins=[("nf", fixture)], autoload=False)
