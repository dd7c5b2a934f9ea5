"""The `icezoo` command: list / compose / show, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from icezoo.cli.main import main

TINY = ["--set", "embedder.dim=16", "--set", "backbone.depth=1", "--set", "backbone.heads=2"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")


def run(args, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def cli(*args, env=None):
    """Run the CLI in a fresh interpreter (for import-cost and entry-point checks)."""
    return subprocess.run([sys.executable, "-m", "icezoo.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)


def test_list_shows_every_kind_with_provider_params_and_properties(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0
    for word in ("selection", "features", "embedder", "backbone", "pooler", "head", "loss",
                 "transformer", "vmf3d", "icezoo 0.1.0"):
        assert word in out, word
    code, out, _ = run(["list", "transformer", "--details"], capsys)
    assert code == 0 and "permutation_invariant" in out and "depth: int = 6" in out


def test_list_filters(capsys):
    code, out, _ = run(["list", "loss"], capsys)
    assert code == 0 and "vmf3d" in out and "transformer" not in out
    code, out, _ = run(["list", "trans*"], capsys)
    assert code == 0 and "transformer" in out and "vmf3d" not in out
    code, out, _ = run(["list", "pipelines"], capsys)
    assert code == 0 and "BASELINE_HF_V7" in out and "EXP_16" in out
    code, _, err = run(["list", "zzz*"], capsys)
    assert code == 2 and "no component matches 'zzz*'" in err


def test_compose_prints_stages_and_saves_a_pipeline(tmp_path, capsys):
    saved = tmp_path / "my.toml"
    code, out, err = run(["compose", "--embed", "linear", "--backbone", "transformer", "--pool", "mean,max",
                          "--loss", "vmf3d,cosine", "--features", "kaggle_norm", *TINY, "--name", "mine",
                          "--save", str(saved)], capsys)
    assert code == 0, err
    for word in ("embedder", "backbone", "pooler", "head", "(4, 32, 16)", "gradients finite: True"):
        assert word in out, word
    table = tomllib.loads(saved.read_text())["pipelines"]["mine"]
    assert table["backbone"] == {"name": "transformer", "depth": 1, "heads": 2}
    assert [p["name"] for p in table["pooler"]] == ["mean", "max"]
    code, out, err = run(["compose", "--pipeline-file", str(saved)], capsys)
    assert code == 0, err
    code, out, err = run(["show", "mine", "--pipeline-file", str(saved)], capsys)
    assert code == 0 and "rotary_pos_emb = false" in out and "depth = 1" in out
    # --save naming a directory: one line, exit 2, no temporary file left beside it
    code, out, err = run(["compose", *TINY, "--save", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err and "Traceback" not in err
    assert list(tmp_path.parent.glob(f".{tmp_path.name}.tmp*")) == []


def test_show_resolves_parents_and_defaults(capsys):
    code, out, err = run(["show", "BASELINE_HF_V8"], capsys)
    if code == 2 and "unknown" in err:
        pytest.skip(f"a component of BASELINE_HF_V8 is not registered yet: {err}")
    assert code == 0, err
    assert "max_pulses = 148" in out and 'init_from = "BASELINE_HF_V7"' in out and "depth = 6" in out


@pytest.mark.parametrize("args,message", [
    (["compose", "--backbone", "transfomer"], "unknown backbone 'transfomer'; did you mean 'transformer'"),
    (["compose", "--set", "backbone.depth=0"], "pipelines.composed.backbone.depth: Input should be greater than 0"),
    (["compose", "--set", "backbone.depht=2"], "pipelines.composed.backbone.depht: unknown parameter"),
    (["compose", "--set", "embedder.dim=18", "--set", "backbone.heads=4"], "dim 18 is not divisible by heads 4"),
    (["compose", "--set", "nonsense"], "--set nonsense: expected key=value"),
    (["show", "BASELINE_HF_V77"], "unknown pipeline 'BASELINE_HF_V77'; did you mean"),
])
def test_errors_are_one_line_exit_2(args, message, capsys):
    code, out, err = run(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipelines.A]\nbackbone = { name = "transformer", depth = }\n')
    code, _, err = run(["compose", "--pipeline-file", str(bad)], capsys)
    assert code == 2 and str(bad) in err and "line 2" in err and len(err.strip().splitlines()) == 1
    cyc = tmp_path / "cyc.toml"
    cyc.write_text('[pipelines.A]\nparent = "B"\n[pipelines.B]\nparent = "A"\n')
    code, _, err = run(["show", "A", "--pipeline-file", str(cyc)], capsys)
    assert code == 2 and "cycle of parents" in err
    code, _, err = run(["compose", "--pipeline-file", str(tmp_path / "missing.toml")], capsys)
    assert code == 2 and "missing.toml: no such file" in err
    code, _, err = run(["compose", "--pool", "cls", *TINY], capsys)
    if "unknown pooler" not in err:
        assert code == 2 and "needs cls_token" in err


def test_help_and_errors_stay_light():
    """`--help` imports neither torch nor torch_geometric; `list` never imports torch_geometric; neither
    imports onnx, onnxruntime or onnxscript (the optional export extra)."""
    probe = ("import sys, runpy; sys.argv=['icezoo', '--help']\n"
             "try:\n    runpy.run_module('icezoo.cli.main', run_name='__main__')\nexcept SystemExit: pass\n"
             "print('HEAVY', 'torch' in sys.modules, 'torch_geometric' in sys.modules)\n"
             "print('ONNX', any(m in sys.modules for m in ('onnx', 'onnxruntime', 'onnxscript')))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "HEAVY False False" in res.stdout and "ONNX False" in res.stdout, res.stdout + res.stderr
    probe = probe.replace("'--help'", "'list'")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "HEAVY True False" in res.stdout and "ONNX False" in res.stdout, res.stdout + res.stderr


def test_example_plugin_is_listed_and_composes():
    """The example package, installed by the README's test command, is found through its entry point."""
    pytest.importorskip("icezoo_gru", reason="examples/icezoo-gru is installed by the README's test command")
    env = {"ICEZOO_NO_AUTOLOAD": ""}
    res = cli("list", "backbone", env=env)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.split()[:1] == ["gru"])
    assert "icezoo-gru" in line and "0.1.0" in line
    res = cli("compose", "--backbone", "gru", "--set", "backbone.hidden=8", "--set", "embedder.dim=16", env=env)
    assert res.returncode == 0 and "gru" in res.stdout, res.stderr
    res = cli("list", "pipelines", env=env)
    assert "GRU_BASELINE" in res.stdout
    res = cli("list", "backbone", env={"ICEZOO_NO_AUTOLOAD": "", "ICEZOO_DISABLE_PLUGINS": "gru"})
    assert not [ln for ln in res.stdout.splitlines() if ln.split()[:1] == ["gru"]]


def test_usage_errors_exit_2_without_traceback(capsys):
    code, out, err = run(["compose", "--no-such-flag"], capsys)
    assert code == 2 and "Traceback" not in err and "No such option" in err
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "compose" in out


def test_every_command_module_is_registered_under_its_name():
    """Each command lives in the module of its name and is registered from cli/main.py; a command
    module nobody registers, or a command function not named cmd_*, fails here."""
    import ast
    from pathlib import Path

    import typer.main

    from icezoo.cli import main as cli_main

    group = typer.main.get_command(cli_main.app)
    assert set(group.commands) == {*cli_main.COMMANDS, "bench"}
    assert set(group.commands["bench"].commands) == set(cli_main.BENCH_COMMANDS) == {"data", "sim", "model", "predict", "export"}
    registered = {f"{fn.__module__}.{fn.__name__}" for fn in (*cli_main.COMMANDS.values(),
                                                                *cli_main.BENCH_COMMANDS.values())}
    assert registered == {f"icezoo.cli.{name}.cmd_{name}" for name in cli_main.COMMANDS} | {
        f"icezoo.cli.bench.cmd_bench_{name}" for name in cli_main.BENCH_COMMANDS}
    shared = {"__init__", "main", "common"}
    for path in Path(cli_main.__file__).parent.glob("*.py"):
        if path.stem in shared:
            continue
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        commands = {d for d in defined if d.startswith("cmd_")}
        assert commands and {f"icezoo.cli.{path.stem}.{d}" for d in commands} <= registered, path.name
        assert not {d for d in defined if d.endswith("_cmd")}, path.name


def test_a_missing_command_module_fails_loudly():
    """A command module that cannot be imported stops `icezoo` with the import error, never a silently
    missing command."""
    probe = ("import sys; sys.modules['icezoo.cli.linefit'] = None\n"
             "import icezoo.cli.main")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr and "icezoo.cli.linefit" in res.stderr
