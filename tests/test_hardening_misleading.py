"""Regression tests of issue 27's misleading (M1-M11) and cosmetic items: each input here used to be
accepted, or answered, in a way that misled the user. Tiny data, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icezoo.cli.main import main
from icezoo.core import IcezooError
from tinyzoo import tiny_pipeline

TINY = tiny_pipeline(max_pulses=16, dim=8, pooler='["mean"]')


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``icezoo ARGS`` in this process."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args, contains=()) -> str:
    """Run and require: exit 2, exactly one ``error:`` line on stderr, no traceback, naming ``contains``."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in contains:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny simulated set (10 files of 30 events, a 60-event test split), a pipeline file and one
    trained run (2 epochs)."""
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("misleading")
    data = simulate(root / "data", 300, events_per_batch=30, seed=3, test=True, test_events=60)
    pf = root / "tiny.toml"
    pf.write_text(TINY)
    w = {"root": root, "data": data, "pf": pf, "runs": root / "runs"}
    try:
        main(train_args(w, "T"))
    except SystemExit as exc:
        assert exc.code in (0, None)
    w["run"] = w["runs"] / "T"
    return w


def train_args(world, name, *extra):
    return ["train", "--pipeline-file", str(world["pf"]), "--pipeline", "tiny", "--data", str(world["data"]),
            "--runs-dir", str(world["runs"]), "--name", name, "--no-progress", *map(str, extra)]


# ------------------------------------------------------------------------------ M1
def test_m1_a_log_row_without_config_name_is_not_matched_to_a_pipeline_without_experiment(tmp_path):
    from icezoo.engine.experiments import experiments_table

    rows = {r["name"]: r for r in experiments_table(tmp_path / "runs")}
    assert rows["hb_localattention"]["pipeline"] == "HB_LOCALATTENTION"
    assert all(r["pipeline"] != "default" for r in rows.values())  # no log row is the default pipeline's
