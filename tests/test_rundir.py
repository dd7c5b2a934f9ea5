"""The run directory object (engine/runs.py: RunDir) and the engine functions behind the small
commands (bench data/sim, linefit, compose's forward/backward try): called directly, not through
the CLI, on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from icezoo.core.errors import IcezooError
from icezoo.engine.runs import RunDir, ledger_rows


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from icezoo.data.simulator import simulate

    out = tmp_path_factory.mktemp("rundir") / "sim"
    simulate(out, 60, events_per_batch=20, seed=3, test=True, test_events=10)
    return out


def test_rundir_writes_and_reads_every_file_of_a_run(tmp_path):
    run = RunDir.create(tmp_path / "runs", "a b")  # unsafe characters become '_'
    assert run.name == "a_b" and (run.path / "checkpoints").is_dir()
    assert RunDir.create(tmp_path / "runs", "a b").name == "a_b-2"  # a taken name gets a suffix
    assert not run.is_run()
    run.start({"name": run.name, "status": "running", "started": "2026-01-01T00:00:00Z",
               "split": {"train_batches": [1, 2, 3], "val_batches": [5]}}, "[pipelines.x]\n", "icezoo train")
    assert run.is_run() and (run.path / "config.toml").read_text() == "[pipelines.x]\n"
    assert (run.path / "command.txt").read_text() == "icezoo train\n"
    assert run.update(status="done")["status"] == "done" and run.info()["status"] == "done"
    assert run.history() == []
    run.write_history([{"epoch": 0, "step": 4, "val_mean": 1.25}], best_val=1.25)
    assert run.history()[0]["val_mean"] == 1.25
    assert (run.path / "metrics.csv").read_text().splitlines()[1].startswith("0,4,,1.25")
    run.record_evaluation({"mean": 1.0, "split": "val", "n_events": 3}, ledger=False)
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["evaluation"]["mean"] == 1.0 and metrics["history"][0]["step"] == 4  # history kept
    assert "evaluation" not in run.info()
    run.record_evaluation({"mean": 0.5, "split": "val", "n_events": 3}, ledger=True)
    assert run.info()["evaluation"]["mean"] == 0.5
    run.log()("hello")
    assert run.log_file.read_text().strip().endswith("hello")
    assert run.checkpoint("best") == run.path / "checkpoints" / "best.pt" and run.plots == run.path / "plots"
    with pytest.raises(ValueError):
        run.checkpoint("middle")
    assert run.val_errors() is None  # no best.pt, no cache
    run.checkpoint("best").write_bytes(b"")
    run.write_val_errors({"event_id": np.arange(3), "error": np.ones(3), "kappa": np.full(3, 2.0)})
    assert run.val_errors()["error"].tolist() == [1.0, 1.0, 1.0]
    assert RunDir.find(run.name, tmp_path / "runs").path == run.path
    row = next(r for r in ledger_rows(tmp_path / "runs", names=[run.name]))
    assert "train 1-3, val 5" in row["trn_set"] and "0.5000" in row["score"]


def test_an_unreadable_metrics_file_stops_an_evaluation_not_a_training_epoch(tmp_path):
    run = RunDir.create(tmp_path, "r")
    (run.path / "metrics.json").write_text("{truncated")
    run.write_history([{"epoch": 0}], best_val=None)  # training starts the file afresh
    assert run.history() == [{"epoch": 0}]
    (run.path / "metrics.json").write_text("{truncated")
    with pytest.raises(IcezooError, match="metrics.json: unreadable"):
        run.record_evaluation({"mean": 1.0}, ledger=False)


def test_bench_data_and_sim_measure_the_tiny_set(tiny_data):
    from icezoo.core.memory import peak_rss_mib
    from icezoo.engine.bench_data import bench_chain, bench_data, bench_sim, format_bench_data, format_bench_sim

    sel, feats = bench_chain(16)
    assert sel.max_pulses == 16 and [f.name for f in feats] == ["kaggle_norm", "qe", "ice_properties"]
    results = list(bench_data(tiny_data, [8, 16], batch_size=16, batches="1:2", passes=1, echo=None))
    assert [r["max_pulses"] for r in results] == [8, 16]
    assert all(r["events"] == 40 and r["files"] == 2 and r["steps"] >= 3 for r in results)
    assert "max_pulses=8:" in format_bench_data(results[0])
    r = bench_sim(30, seed=1)
    assert r["events"] == 30 and r["cpu_s"] > 0 and r["peak_rss_mib"] >= 1 and "simulate: 30 events" in format_bench_sim(r)
    assert peak_rss_mib() >= r["peak_rss_mib"]


def test_linefit_split_scores_train_and_joins_the_test_truth(tiny_data, tmp_path):
    from icezoo.engine.baseline import linefit_split

    train = linefit_split(tiny_data, "train")
    assert len(train["event_id"]) == 60 and train["error"] is not None and len(train["error"]) == 60
    test = linefit_split(tiny_data, "test", improved=True, out=tmp_path / "p.csv")
    assert test["name"] == "linefit_improved" and len(test["error"]) == 10  # truth from test_truth.parquet
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "event_id,azimuth,zenith"
    assert np.isfinite(test["error"]).all()
    with pytest.raises(IcezooError, match="--split"):
        linefit_split(tiny_data, "val")


def test_compose_config_and_smoke_step():
    from icezoo.engine.smoke import compose_config, smoke_step

    stages = {"backbone": ("transformer", "--backbone"), "pooler": (["mean"], "--pool"), "head": (None, "--head")}
    config, origin = compose_config(None, None, stages, "mine", keep_base_name=False,
                                    overrides={"embedder.dim": 16, "backbone.depth": 1, "backbone.heads": 2})
    assert config.name == "mine" and origin["backbone"] == "--backbone, default's params"
    assert origin["pooler"] == "--pool" and origin["head"] == "default"
    step = smoke_step(config, events=3, seed=1)
    assert step.ok and step.lengths[-1] == min(config.max_pulses, 32) and len(step.lengths) == 3
    assert [row.stage for row in step.trace][:2] == ["embedder", "backbone"] and step.parameters > 0
