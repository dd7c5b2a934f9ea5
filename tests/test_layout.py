"""The house rules: component aliases, constants defined once, shared layers in icezoo.nn."""

from __future__ import annotations

import ast
import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from icezoo.cli.main import main
from icezoo.core import IcezooError
from icezoo.core.checkpoint import save_checkpoint
from icezoo.core.pipelines import PipelineConfig
from icezoo.core.detector import DETECTOR_MAX, DETECTOR_MIN, N_SENSORS
from icezoo.core.synthetic import synthetic_batch
from icezoo.zoo import build, registry

PACKAGE = Path(__file__).resolve().parents[1] / "icezoo"
MAT_TINY = {"embedder.dim": 16, "backbone.depth": 1, "backbone.heads": 2, "backbone.radius": 0.3}


def _mat_config(backbone_name: str) -> PipelineConfig:
    return PipelineConfig(name="mat_alias", backbone=backbone_name).with_overrides(MAT_TINY)


# ------------------------------------------------------------------------------- aliases
def test_alias_resolves_to_the_same_component():
    reg = registry()
    assert reg.get("backbone", "graph_transformer") is reg.get("backbone", "mat")
    assert reg.get("backbone", "Graph-Transformer").name == "mat"
    assert [s.name for s in reg.list(pattern="graph_trans*")] == ["mat"]


def test_alias_and_new_name_build_the_same_model():
    torch.manual_seed(0)
    old = build(_mat_config("graph_transformer"))
    torch.manual_seed(0)
    new = build(_mat_config("mat"))
    assert type(old.backbone) is type(new.backbone)
    state_old, state_new = old.state_dict(), new.state_dict()
    assert state_old.keys() == state_new.keys()
    assert all(torch.equal(state_old[k], state_new[k]) for k in state_old)


def test_alias_works_in_set_overrides():
    config = PipelineConfig(name="x").with_overrides({"backbone.name": "graph_transformer", **MAT_TINY})
    assert type(build(config).backbone).name == "mat"


def test_checkpoint_saved_with_the_old_name_loads(tmp_path):
    """A checkpoint whose table names graph_transformer (as every one saved before the rename does) loads."""
    from icezoo.engine.checkpoints import checkpoint_pipeline_table, model_from_checkpoint

    torch.manual_seed(1)
    model = build(_mat_config("mat"))
    table = checkpoint_pipeline_table(model.config)
    table["backbone"] = {**table["backbone"], "name": "graph_transformer"}  # the table of an old checkpoint
    path = save_checkpoint(tmp_path / "old.pt", table, model.state_dict())
    config, loaded, _ = model_from_checkpoint(path)
    assert config.backbone.name == "graph_transformer" and type(loaded.backbone).name == "mat"
    batch = synthetic_batch(loaded.feature_dim, [3, 5], seed=2)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def test_an_alias_taken_by_another_component_is_refused():
    from icezoo.core import Backbone, Batch, hookimpl
    from icezoo.zoo import make_registry

    class Clash(Backbone):
        """A backbone claiming the old name of mat."""

        name = "clash"
        aliases = ("graph_transformer",)

        def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
            return h

    class Plugin:
        @hookimpl
        def icezoo_components(self):
            return [Clash]

    with pytest.raises(IcezooError, match="backbone 'graph_transformer' is provided twice"):
        make_registry(extra_plugins=[("clash", Plugin())], autoload=False)


def test_list_shows_aliases(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")
    main(["list", "backbone"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["mat"])
    assert "alias: graph_transformer" in line


def test_compose_old_and_new_names_print_the_same_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")
    outputs = []
    for name in ("graph_transformer", "mat"):
        main(["compose", "--backbone", name, *[f"--set={k}={v}" for k, v in MAT_TINY.items()]])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert re.search(r"backbone\s.*\smat\s", outputs[1]) and "total parameters:" in outputs[1]


# ------------------------------------------------------------------------------- constants once
def test_detector_bounds_are_the_shipped_geometry():
    from icezoo.resources import geometry_csv

    with open(geometry_csv()) as fh:
        rows = np.array([[float(r["x"]), float(r["y"]), float(r["z"])] for r in csv.DictReader(fh)])
    assert len(rows) == N_SENSORS
    np.testing.assert_array_equal(rows.min(axis=0), DETECTOR_MIN)
    np.testing.assert_array_equal(rows.max(axis=0), DETECTOR_MAX)


def _literal_homes(found) -> list[str]:
    """Modules of icezoo whose code (not docstrings or comments) has a node for which ``found`` is true."""
    homes = set()
    for path in PACKAGE.rglob("*.py"):
        if any(found(node) for node in ast.walk(ast.parse(path.read_text(), str(path)))):
            homes.add(str(path.relative_to(PACKAGE)))
    return sorted(homes)


def _is_const(node, *values) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in values


def _is_int(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def _max_pulses_default(node) -> bool:
    """``max_pulses: int = 128`` or ``.get("max_pulses", 128)``: a default max_pulses written as a number."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "max_pulses":
        return _is_int(node.value)
    if isinstance(node, ast.Call) and len(node.args) == 2 and isinstance(node.args[0], ast.Constant):
        return node.args[0].value == "max_pulses" and _is_int(node.args[1])
    return False


def test_constants_are_written_once():
    """The sensor count, the detector box and the default max_pulses are numbers in one module each."""
    assert _literal_homes(lambda n: _is_const(n, 5160, 5159, 5161)) == ["core/detector.py"]
    assert _literal_homes(lambda n: _is_const(n, 570.9, 521.08, 512.82, 576.37, 524.56)) == ["core/detector.py"]
    assert _literal_homes(lambda n: isinstance(n, ast.Assign) and any(
        getattr(t, "id", "") == "DEFAULT_MAX_PULSES" for t in n.targets)) == ["core/components.py"]
    assert _literal_homes(_max_pulses_default) == []


# ------------------------------------------------------------------------------- icezoo.nn
def test_every_shared_layer_documents_its_shapes():
    import icezoo.nn as nn_pkg

    not_layers = {"activation", "neg_fill"}  # a module factory by name and a dtype's fill value: no tensors in
    for name in nn_pkg.__all__:
        obj = getattr(nn_pkg, name)
        if callable(obj) and name not in not_layers:
            assert "Shapes:" in (obj.__doc__ or ""), f"icezoo.nn.{name} has no 'Shapes:' in its docstring"


# ------------------------------------------------------------------------------- abstract methods
def _incomplete_plugin():
    from icezoo.core import Head, Selection, hookimpl

    class Forgetful(Selection):
        """A selection without select()."""

        name = "forgetful"

    class HalfHead(Head):
        """A head with forward() but no direction()."""

        name = "half_head"

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z

    class Plugin:
        def __init__(self, *classes):
            self.classes = classes

        @hookimpl
        def icezoo_components(self):
            return list(self.classes)

    return Plugin, Forgetful, HalfHead


def test_a_component_missing_an_abstract_method_is_refused_in_one_line():
    from icezoo.zoo import make_registry

    Plugin, Forgetful, HalfHead = _incomplete_plugin()
    with pytest.raises(IcezooError) as err:
        make_registry(extra_plugins=[("forgetful_plugin", Plugin(Forgetful))], autoload=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "Forgetful" in msg and "select()" in msg and "forgetful_plugin" in msg and "(abstract in Selection)" in msg
    with pytest.raises(IcezooError, match=r"class HalfHead \('half_head'\) does not implement direction\(\)"):
        make_registry(extra_plugins=[("half", Plugin(HalfHead))], autoload=False)


def test_cli_exits_2_on_a_component_missing_an_abstract_method(capsys, monkeypatch):
    import icezoo.zoo as zoo

    Plugin, Forgetful, _ = _incomplete_plugin()
    monkeypatch.setattr(zoo, "registry", lambda: zoo.make_registry(
        extra_plugins=[("forgetful_plugin", Plugin(Forgetful))], autoload=False))
    with pytest.raises(SystemExit) as exc:
        main(["list"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "Forgetful" in err and "select()" in err


# ------------------------------------------------------------------------------- who may import whom
def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """icezoo module -> the icezoo modules it imports (anywhere in it, lazily inside functions too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def test_core_imports_no_plugin_and_nothing_imports_the_cli():
    graph = _import_graph()
    core = {m: sorted(t for t in deps if not t.startswith("icezoo.core")) for m, deps in graph.items()
            if m.startswith("icezoo.core")}
    assert all(not deps for deps in core.values()), {m: d for m, d in core.items() if d}
    cli_users = sorted(m for m, deps in graph.items()
                       if any(t.startswith("icezoo.cli") for t in deps) and not m.startswith("icezoo.cli"))
    assert cli_users == ["icezoo.__main__"]
    assert any(t.startswith("icezoo.plugins") for t in graph["icezoo.zoo"])  # the one place naming the built-ins


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, [*path, dep])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert len(graph) > 40 and "icezoo.engine.predict" in graph["icezoo.engine.train.loop"]  # the walk saw edges
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The walk itself: two modules importing each other (one lazily, one relatively) are reported."""
    pkg = tmp_path / "icezoo"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from icezoo.a import y\n")
    (pkg / "a" / "y.py").write_text("from .x import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = _import_graph()
    assert graph["icezoo.a.x"] == {"icezoo.a.y"} and graph["icezoo.a.y"] == {"icezoo.a.x"}
    assert _find_cycle(graph) == ["icezoo.a.x", "icezoo.a.y", "icezoo.a.x"]


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 600, 80


def _too_long(package: Path) -> list[str]:
    """Modules over MAX_MODULE_LINES lines and functions or methods over MAX_FUNCTION_LINES (def line to
    last line) under ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text, rel = path.read_text(), path.relative_to(package).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{rel} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.name} ({n} lines)")
    return found


def test_no_module_over_600_lines_and_no_function_over_80():
    """The whole package stays readable: no module over 600 lines, no function or method over 80."""
    assert _too_long(PACKAGE) == []


def test_the_size_check_finds_a_long_module_and_a_long_method(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "big.py").write_text("x = 1\n" * 601)
    (tmp_path / "ok.py").write_text("def f():\n" + "    y = 1\n" * 79)  # 80 lines: allowed
    (tmp_path / "cls.py").write_text("class C:\n    def g(self):\n" + "        y = 1\n" * 80)  # 81 lines
    assert _too_long(tmp_path) == ["cls.py:g (81 lines)", "sub/big.py (601 lines)"]


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _family(module: str) -> str:
    """The plugin family of a plugin module: icezoo.plugins.backbones.mat -> icezoo.plugins.backbones."""
    return ".".join(module.split(".")[:3])


def _layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the rules of docs/architecture.md: the CLI imports no plugin module (it reaches
    components through the zoo); a plugin imports only icezoo.core, icezoo.nn, icezoo.resources and
    its own family (backbones/common.py), never another family, the engine, data or the zoo. The one
    exception: plugins/formats.py registers the built-in data formats from icezoo.data.formats, where
    their base class lives."""
    breaks = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _in(module, "icezoo.cli") and _in(dep, "icezoo.plugins"):
                breaks.append(f"{module} -> {dep}")
            elif _in(module, "icezoo.plugins") and module != "icezoo.plugins" and not (
                    _in(dep, "icezoo.core", "icezoo.nn", "icezoo.resources") or _family(dep) == _family(module)
                    or (module == "icezoo.plugins.formats" and _in(dep, "icezoo.data.formats"))):
                breaks.append(f"{module} -> {dep}")
    return breaks


def test_cli_imports_no_plugin_and_plugins_import_only_core_nn_resources():
    graph = _import_graph()
    assert any(_in(d, "icezoo.nn") for d in graph["icezoo.plugins.backbones.transformer"])  # the walk saw edges
    assert _layer_breaks(graph) == []


def test_the_layer_check_finds_each_broken_rule():
    graph = {"icezoo.cli.bench": {"icezoo.plugins.features", "icezoo.engine.bench"},
             "icezoo.plugins.heads": {"icezoo.core.components", "icezoo.engine.train", "icezoo.nn.mlp"},
             "icezoo.plugins.backbones.mat": {"icezoo.plugins.backbones.common", "icezoo.plugins.embedders.linear",
                                              "icezoo.resources"},
             "icezoo.plugins.features": {"icezoo.resources", "icezoo.data.io", "icezoo.data.formats"},
             "icezoo.plugins.formats": {"icezoo.core", "icezoo.data.formats", "icezoo.data.io"}}
    assert _layer_breaks(graph) == ["icezoo.cli.bench -> icezoo.plugins.features",
                                    "icezoo.plugins.backbones.mat -> icezoo.plugins.embedders.linear",
                                    "icezoo.plugins.features -> icezoo.data.formats",
                                    "icezoo.plugins.features -> icezoo.data.io",
                                    "icezoo.plugins.formats -> icezoo.data.io",
                                    "icezoo.plugins.heads -> icezoo.engine.train"]


def test_python_dash_m_icezoo_runs_the_command():
    """`python -m icezoo` (so `torchrun ... -m icezoo train`) is the `icezoo` command."""
    import subprocess

    res = subprocess.run([sys.executable, "-m", "icezoo", "--help"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "compose" in res.stdout and "train" in res.stdout, res.stderr
    res = subprocess.run([sys.executable, "-m", "icezoo", "list", "nosuch*"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and res.stderr.strip() == "error: no component matches 'nosuch*' (kinds: selection, " \
        "features, embedder, backbone, pooler, head, loss, task, pretrain, or 'pipelines')"
