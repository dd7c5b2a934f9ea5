"""Studies and the log: paired statistics against hand-computed cases, study-file validation (one-line
errors naming file and path), plugin study files, `icezoo experiments`, and `icezoo reproduce` end to end
on a tiny simulated set, with an interrupted study resumed without retraining its finished variant."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from icezoo.cli.main import main
from icezoo.core import hookimpl
from icezoo.core.errors import IcezooError
from icezoo.engine.stats import paired, reading
from icezoo.engine.studies import Budget, load_studies, parse_study_file, variant_config
from tinyzoo import cli




# ------------------------------------------------------------------------------ paired statistics
def test_paired_matches_events_by_id_and_computes_the_mean_difference():
    # a scored events 3, 1, 2; b scored 1, 2, 3, 4: only 1-3 are common; d = a - b = -0.1, 0, +0.3
    p = paired([3, 1, 2], [0.5, 0.1, 0.2], [1, 2, 3, 4], [0.2, 0.2, 0.2, 9.0])
    assert p.n == 3
    assert p.mean_a == pytest.approx((0.1 + 0.2 + 0.5) / 3)
    assert p.mean_b == pytest.approx(0.2)
    assert p.diff == pytest.approx((-0.1 + 0.0 + 0.3) / 3)
    assert p.frac_a_better == pytest.approx(1 / 3)
    assert p.sd == pytest.approx(np.std([-0.1, 0.0, 0.3], ddof=1))


def test_paired_ci_of_two_events_by_hand():
    # d = (-1, +1): a resample of 2 has mean -1 (p = 1/4), 0 (1/2) or +1 (1/4); the 2.5% and 97.5%
    # percentiles of that distribution are -1 and +1
    p = paired([1, 2], [0.0, 2.0], [1, 2], [1.0, 1.0], n_boot=4000)
    assert p.diff == 0.0
    assert p.ci95 == (-1.0, 1.0)
    assert not p.excludes_zero


def test_paired_ci_agrees_with_the_exact_bootstrap_distribution():
    d = np.array([0.0, 0.1, 0.5, 0.2])
    # every one of the 4^4 equally likely resamples, enumerated
    means = np.sort([np.mean(d[list(idx)]) for idx in itertools.product(range(4), repeat=4)])
    lo, hi = means[int(0.025 * len(means))], means[int(np.ceil(0.975 * len(means))) - 1]
    p = paired(np.arange(4), d + 1.0, np.arange(4), np.ones(4), n_boot=40_000)
    assert p.ci95[0] == pytest.approx(lo, abs=0.015)
    assert p.ci95[1] == pytest.approx(hi, abs=0.015)
    assert p.diff == pytest.approx(0.2)


def test_pairing_removes_the_shared_event_difficulty():
    rng = np.random.default_rng(0)
    hard = rng.exponential(1.0, 2000)  # per-event difficulty both models share
    a = hard + rng.normal(0, 0.01, 2000) - 0.01
    b = hard + rng.normal(0, 0.01, 2000)
    p = paired(np.arange(2000), a, np.arange(2000), b)
    assert p.ci95[1] < 0  # a's 0.01 rad advantage is resolved although the errors spread over ~1 rad
    assert p.ci95[1] - p.ci95[0] < 0.002


def test_events_to_resolve_by_hand():
    p = paired([1, 2, 3], [1.0, 2.0, 3.0], [1, 2, 3], [0.0, 0.0, 0.0])  # d = 1, 2, 3: sd = 1
    # n = ((1.96 + 0.8416) * sd / effect)^2 = (2.8016 * 10)^2 = 784.9 -> 785
    assert p.events_to_resolve(0.1) == 785


@pytest.mark.parametrize("diffs, log, expected", [
    ([-0.2, -0.1, -0.3], "better", "reproduced"),
    ([0.2, 0.1, 0.3], "better", "contradicted"),
    ([-0.2, 0.2, 0.01], "better", "inconclusive (CI includes 0)"),
    ([-0.2, 0.2, 0.01], "same", "consistent (no difference resolved)"),
    ([0.2, 0.1, 0.3], "same", "contradicted (a difference was resolved)"),
    ([0.2, 0.1, 0.3], "unknown", "worse (log silent)"),
])
def test_reading_against_the_log(diffs, log, expected):
    p = paired([1, 2, 3], np.array(diffs) + 1.0, [1, 2, 3], [1.0, 1.0, 1.0])
    assert reading(p, log) == expected


# ------------------------------------------------------------------------------ study files
GOOD = """
[studies.tiny]
question = "q"
reference = "a"
budget = "2k"
size = { "embedder.dim" = 16 }
[studies.tiny.variants]
a = "BASELINE_HF"
b = { pipeline = "BASELINE_HF_V1", log = "better" }
"""


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('b = { pipeline = "BASELINE_HF_V1"', 'b = { pipeline = "NOPE"'),
     "studies.tiny.variants.b.pipeline: unknown pipeline 'NOPE'"),
    (GOOD.replace('reference = "a"', 'reference = "c"'), "studies.tiny: Value error, reference 'c' is not a variant"),
    (GOOD.replace('budget = "2k"', 'budget = "lots"'), "studies.tiny.budget: Value error, budget 'lots'"),
    (GOOD.replace('question = "q"', 'question = "q"\ncolour = 1'), "studies.tiny.colour: unknown parameter"),
    (GOOD.replace('log = "better"', 'log = "great"'), "studies.tiny.variants.b.log: Input should be"),
    (GOOD.replace('b = { pipeline = "BASELINE_HF_V1", log = "better" }', ''), "needs at least two variants"),
    (GOOD.replace('a = "BASELINE_HF"', 'a = { pipeline = "BASELINE_HF", init_from = "b" }')
         .replace('log = "better"', 'init_from = "a"'), "init_from cycle"),
    (GOOD.replace("[studies.tiny]", "[studies.tiny]\nseeds = []"), "studies.tiny.seeds: Value error, needs at least one seed"),
    ("[studies.tiny\n", "malformed TOML"),
])
def test_bad_study_files_are_one_line_errors_naming_file_and_path(tmp_path, text, message):
    from icezoo.zoo import registry

    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(IcezooError) as err:
        parse_study_file(f, registry())
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(f)) and message in text, text


def test_bad_variant_overrides_name_the_variant(tmp_path):
    from icezoo.zoo import registry

    f = tmp_path / "s.toml"
    f.write_text(GOOD.replace('log = "better"', 'set = { "backbone.bogus" = 3 }'))
    study = parse_study_file(f, registry())["tiny"]
    with pytest.raises(IcezooError) as err:
        variant_config(study, "b")
    assert str(err.value).startswith(f"{f}: studies.tiny.variants.b") and "bogus" in str(err.value)


def test_fine_tune_pipeline_without_init_from_variant_is_an_error(tmp_path):
    from icezoo.zoo import registry

    f = tmp_path / "s.toml"
    f.write_text(GOOD.replace('"BASELINE_HF_V1"', '"BASELINE_HF_V8"'))
    study = parse_study_file(f, registry())["tiny"]
    with pytest.raises(IcezooError, match=r"variants.b: pipeline BASELINE_HF_V8 fine-tunes from BASELINE_HF_V7"):
        variant_config(study, "b")


@pytest.mark.parametrize("text, events, minutes", [
    ("30000", 30000, None), ("30k", 30000, None), ("1.5M events", 1_500_000, None), (2000, 2000, None),
    ("5min", None, 5.0), ("90s", None, 1.5), ("2 minutes", None, 2.0)])
def test_budget_units(text, events, minutes):
    b = Budget.parse(text)
    assert (b.events, b.minutes) == (events, minutes)


def test_plugins_add_study_files_through_the_hook(tmp_path):
    from icezoo.zoo import make_registry

    f = tmp_path / "more.toml"
    f.write_text(GOOD)

    class Plugin:
        @hookimpl
        def icezoo_study_files(self):
            return [f]

    reg = make_registry(extra_plugins=[("more-studies", Plugin())], autoload=False)
    studies = load_studies(reg)
    assert "tiny" in studies and "losses" in studies  # the plugin's and the shipped ones
    f.write_text(GOOD.replace("[studies.tiny", "[studies.losses"))
    with pytest.raises(IcezooError, match=r"study 'losses' is defined twice: in .*studies.toml and in .*more.toml"):
        load_studies(reg)


def test_every_shipped_study_resolves_and_is_listed(capsys):
    studies = load_studies()
    assert {"pooling_mask", "losses", "pulse_selection", "extra_features", "pooling_combinations", "backbones",
            "finetune_longer"} <= set(studies)
    for study in studies.values():
        configs = {label: variant_config(study, label) for label in study.order()}
        # one model size per study: the width every variant trains at is the same
        assert len({c.embedder.params.get("dim") for c in configs.values()}) == 1, study.name
        assert {c.train.batches for c in configs.values()} == {"cycle"}, study.name
    cli("reproduce", "--list")
    assert "pooling_mask" in capsys.readouterr().out


def test_unknown_study_is_one_line_exit_2(capsys):
    cli("reproduce", "losess", expect=2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown study 'losess'; did you mean 'losses'" in err


# ------------------------------------------------------------------------------ icezoo experiments
def _log_names() -> list[str]:
    from icezoo.engine.experiments import log_rows

    return [r["name"] for r in log_rows()]


def test_experiments_prints_every_log_row_in_order_keeping_the_logs_words(tmp_path, capsys):
    cli("experiments", "--markdown", "--runs-dir", tmp_path / "none")
    lines = capsys.readouterr().out.splitlines()[2:]
    names = [line.split(" | ")[0].lstrip("| ") for line in lines]
    assert names == _log_names() and len(names) == 58
    assert names[:3] == ["EXP_00", "EXP_01", "EXP_02"] and names[-1] == "hb_localattention"
    by = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines}
    assert by["EXP_10"][3] == "NG" and by["EXP_32"][3] == "BAD" and by["EXP_03"][3] == "nan"
    assert by["EXP_01"][1] == "BASELINE_HF_V1" and by["EXP_22"][1] == "BASELINE_HF_V11_EC"
    assert by["init5_hb_ft-2.ipynb"][1] == "INIT5_HB"


def test_graph_rows_fill_in_when_a_plugin_registers_their_pipeline(tmp_path):
    from icezoo.engine.experiments import experiments_table
    from icezoo.zoo import make_registry, registry

    rows = {r["name"]: r for r in experiments_table(tmp_path, reg=registry())}
    if "pending" not in rows["EXP_23"]["pipeline"]:
        pytest.skip("the graph pipelines are registered here")
    assert rows["EXP_23"]["pipeline"] == "BASELINE_graph_V0 (pipeline pending)"
    f = tmp_path / "graph.toml"
    f.write_text('[pipelines.GRAPH_ZERO]\nexperiment = "EXP_23"\ndescription = "the graph row"\n')

    class Plugin:
        @hookimpl
        def icezoo_pipeline_files(self):
            return [f]

    reg = make_registry(extra_plugins=[("graph", Plugin())], autoload=False)
    rows = {r["name"]: r for r in experiments_table(tmp_path, reg=reg)}
    assert rows["EXP_23"]["pipeline"] == "GRAPH_ZERO" and rows["EXP_23"]["description"] == "the graph row"


def test_experiments_shows_the_best_run_with_its_data_and_budget(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, mean in (("a", 0.91), ("b", 0.85), ("c", None)):
        (runs / name).mkdir(parents=True)
        info = {"name": name, "pipeline": "BASELINE_HF_V1", "status": "done", "events_seen": 12800,
                "train_time_s": 61.5, "device": "test cpu",
                "split": {"data_dir": str(tmp_path / "d"), "data": "default simulated set", "val_batches": [11, 12]}}
        if mean is not None:
            info["evaluation"] = {"mean": mean, "ci95": [mean - 0.01, mean + 0.01], "split": "val",
                                  "n_events": 4000, "data": str(tmp_path / "d")}
        (runs / name / "run.json").write_text(json.dumps(info))
    cli("experiments", "--markdown", "--runs-dir", runs)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| EXP_01 "))
    assert "`0.8500` [0.8400, 0.8600] (b)" in row
    assert "val files 11-12, n=4,000" in row and "12,800 events, 62 s on test cpu" in row
    cli("experiments", "--markdown", "--runs-dir", runs, "--data", tmp_path / "elsewhere")
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| EXP_01 "))
    assert row.endswith("| - | - | - |")


# ------------------------------------------------------------------------------ icezoo reproduce
STUDY = """
[studies.tinystudy]
question = "does masked pooling help a tiny model?"
pipeline = "BASELINE_HF"
reference = "plain"
budget = "192"
seeds = [0]
size = { "embedder.dim" = 16, "backbone.depth" = 1, "backbone.heads" = 2 }
common = { "selection.max_pulses" = 32, "train.batch_size" = 32 }
[studies.tinystudy.variants]
plain = {}
masked = { pipeline = "BASELINE_HF_V1", log = "better", log_score = "1.169" }
tuned = { init_from = "plain", set = { "train.lr" = 1e-4 } }
"""


@pytest.fixture(scope="module")
def study_world(tmp_path_factory):
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("study")
    data = simulate(root / "data", 500, events_per_batch=100, seed=3)
    f = root / "studies.toml"
    f.write_text(STUDY)
    return {"root": root, "data": data, "file": f}


@pytest.fixture
def with_study(study_world, monkeypatch):
    """The registry seen by the engine, with the tiny study file added through the hook."""
    import icezoo.zoo as zoo

    class Plugin:
        @hookimpl
        def icezoo_study_files(self):
            return [study_world["file"]]

    reg = zoo.make_registry(extra_plugins=[("tiny-study", Plugin())], autoload=False)
    monkeypatch.setattr(zoo, "registry", lambda: reg)
    return study_world


def test_reproduce_runs_resumes_and_reuses(with_study, monkeypatch, capsys):
    import icezoo.engine.train as T
    from icezoo.engine.reproduce import StudyInterrupted, plan_study, reproduce
    from icezoo.engine.train.state import TrainState

    runs = with_study["root"] / "runs"
    data = str(with_study["data"])
    real_step = TrainState.optimizer_step
    calls = {"n": 0}

    def interrupt_in_second_run(self, *args, **kwargs):  # Ctrl-C at the 3rd optimizer step of 'masked'
        calls["n"] += 1
        if calls["n"] == 6 + 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(TrainState, "optimizer_step", interrupt_in_second_run)
    with pytest.raises(StudyInterrupted, match="masked-s0 interrupted"):
        reproduce("tinystudy", data=data, runs_dir=runs, progress=False, echo=lambda *a: None)
    monkeypatch.setattr(TrainState, "optimizer_step", real_step)
    plan = plan_study("tinystudy", data=data, runs_dir=runs, log=lambda *a: None)
    plain, masked = plan.run_dir("plain", 0), plan.run_dir("masked", 0)
    assert json.loads((masked / "run.json").read_text())["status"] == "interrupted"
    plain_finished = json.loads((plain / "run.json").read_text())["finished"]

    out = reproduce("tinystudy", data=data, runs_dir=runs, progress=False, echo=print)
    text = capsys.readouterr().out
    assert "plain-s0: reused" in text and "masked-s0: resumed" in text and "tuned-s0: trained" in text
    info = {label: json.loads((plan.run_dir(label, 0) / "run.json").read_text()) for label in plan.configs}
    assert info["plain"]["finished"] == plain_finished  # not retrained
    assert info["masked"]["resumed"] == 1 and info["masked"]["step"] == 6  # 192 events / 32 per step
    assert all(i["step"] == 6 and i["status"] == "done" for i in info.values())
    # the same seed walks the same batches (a file's last batch is short, so fewer than 6 x 32 events);
    # the interrupted run counts the events of its dropped half-step once, like an uninterrupted one
    assert info["plain"]["events_seen"] == info["tuned"]["events_seen"] == info["masked"]["events_seen"] <= 192
    assert len({json.dumps(i["split"], sort_keys=True) for i in info.values()}) == 1  # same files, same validation
    assert info["tuned"]["init_from"].endswith("plain-s0/checkpoints/best.pt")
    for label in ("masked", "tuned"):
        p = out[label]["paired"]
        assert p.n == out["plain"]["summary"]["n_events"] > 0 and p.ci95[0] <= p.diff <= p.ci95[1]
    results = (plan.study_dir / "results.md").read_text()
    assert "| masked | BASELINE_HF_V1 |" in results and "Δ vs plain" in results
    assert (plan.study_dir / "forest.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(plan.study_dir.rglob(".*.tmp*"))

    def no_training(*a, **k):
        raise AssertionError("a finished study retrained")

    monkeypatch.setattr(T, "train", no_training)
    again = reproduce("tinystudy", data=data, runs_dir=runs, progress=False, echo=lambda *a: None)
    assert again["masked"]["paired"] == out["masked"]["paired"]
    # another budget is another study directory: nothing of this one is reused for it
    assert plan_study("tinystudy", data=data, budget="320", runs_dir=runs, log=lambda *a: None).study_dir != plan.study_dir


def test_a_budget_beyond_the_pipelines_epochs_is_trained_in_full(with_study):
    """The budget decides a run's length: 960 events is several epochs of the 400 training events,
    more than the pipeline's own epochs, and every variant still trains 960 / 32 steps."""
    from icezoo.engine.reproduce import plan_study, reproduce

    runs = with_study["root"] / "long"
    reproduce("tinystudy", data=str(with_study["data"]), budget="960", runs_dir=runs, progress=False,
              echo=lambda *a: None)
    plan = plan_study("tinystudy", data=str(with_study["data"]), budget="960", runs_dir=runs, log=lambda *a: None)
    for label in plan.configs:
        info = json.loads((plan.run_dir(label, 0) / "run.json").read_text())
        assert info["step"] == 30 and info["status"] == "done"
        assert info["events_seen"] > len(info["split"]["train_batches"]) * 100  # more than one pass over the files


def test_forest_plot_names_the_logs_cross_when_the_bottom_row_has_none(tmp_path):
    import warnings
    from types import SimpleNamespace

    from icezoo.engine.reproduce import forest_plot

    study = SimpleNamespace(name="s", reference="ref", compared=lambda: ["with_log", "silent"])
    plan = SimpleNamespace(study=study, budget="30k", seeds=[0])
    per = {"ref": {"summary": {"n_events": 10}},
           "with_log": {"paired": paired([1, 2], [0.5, 0.6], [1, 2], [0.7, 0.7]), "log_delta": -0.01},
           "silent": {"paired": paired([1, 2], [0.8, 0.9], [1, 2], [0.7, 0.7]), "log_delta": None}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forest_plot(plan, per, tmp_path / "forest.png")
    assert not [w for w in caught if "No artists with labels" in str(w.message)]
    assert (tmp_path / "forest.png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_that_disagree_make_a_resolved_difference_inconclusive():
    p = paired([1, 2, 3], [0.8, 0.9, 0.7], [1, 2, 3], [1.0, 1.0, 1.0])
    assert reading(p, "better", [-0.2, -0.1]) == "reproduced"
    assert reading(p, "better", [-0.2, +0.1]) == "inconclusive (the seeds disagree)"


def test_one_reproduce_per_study_directory(tmp_path):
    import os
    import subprocess
    import sys

    from icezoo.engine.reproduce import study_lock

    with study_lock(tmp_path):
        with pytest.raises(IcezooError, match=rf"another icezoo reproduce \(pid {os.getpid()}\)"):
            with study_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout.strip())  # left by a process that has exited
    with study_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_a_wall_clock_budget_becomes_steps_measured_once(with_study, monkeypatch):
    import icezoo.engine.bench as bench
    from icezoo.engine.reproduce import fix_steps, plan_study, write_manifest

    calls = []

    def fake_bench(pipeline, overrides=None, **kw):
        calls.append(pipeline)
        return {"train_events_per_s": 64.0}  # 2 steps of 32 events per second

    monkeypatch.setattr(bench, "bench_model", fake_bench)
    plan = plan_study("tinystudy", data=str(with_study["data"]), budget="0.5min",
                     runs_dir=with_study["root"] / "wall", log=lambda *a: None)
    plan.study_dir.mkdir(parents=True)
    fix_steps(plan, None, lambda *a: None)
    # one probe per model size (issue 27 M8): the three variants differ in pooling and lr, not in size
    assert plan.steps == {"plain": 60, "masked": 60, "tuned": 60} and len(calls) == 1
    write_manifest(plan)
    again = plan_study("tinystudy", data=str(with_study["data"]), budget="0.5min",
                      runs_dir=with_study["root"] / "wall", log=lambda *a: None)
    fix_steps(again, None, lambda *a: None)  # kept in the manifest: not measured again
    assert again.steps == plan.steps and len(calls) == 1


def test_reproduce_on_a_graphnet_sqlite_file_with_a_pulsemap(with_study, capsys, monkeypatch):
    """A study on a GraphNeT SQLite file with two pulse maps: --pulsemap picks one, every run stores it,
    the study key and command name it; a bad pulse map or a missing file is one line, exit 2, before
    any study directory exists."""
    from graphnet_files import from_kaggle, write_sqlite
    from tinyzoo import cli

    from icezoo.data import formats
    from icezoo.engine.reproduce import plan_study, reproduce

    root = with_study["root"]
    pulses, truth = from_kaggle(with_study["data"])
    db = write_sqlite(root / "study.db", {"SRTInIcePulses": pulses, "InIcePulses": pulses, "truth": truth})
    runs = root / "gn-runs"
    for argv, words in ((["--data", db, "--pulsemap", "Nope"], ["study.db", "no table 'Nope'"]),
                        (["--data", db], ["study.db", "several pulse tables", "--pulsemap"]),
                        (["--data", root / "absent.db"], ["absent.db", "no such file"])):
        capsys.readouterr()
        monkeypatch.setattr(formats, "_OPEN", {})  # each command a fresh process: no tables remembered
        cli("reproduce", "tinystudy", *argv, "--budget", "64", "--runs-dir", runs, expect=2)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
        assert not runs.exists()
    monkeypatch.setattr(formats, "_OPEN", {})
    out = reproduce("tinystudy", data=str(db), budget="64", runs_dir=runs, progress=False, echo=lambda *a: None,
                    pulsemap="SRTInIcePulses")
    assert {"plain", "masked", "tuned"} <= set(out) and len(out["masked"]["ids"]) > 0  # scored, paired
    plan = plan_study("tinystudy", data=str(db), budget="64", runs_dir=runs, log=lambda *a: None,
                      tables=("SRTInIcePulses", None))
    assert "--pulsemap SRTInIcePulses" in plan.command and plan.study_dir.is_dir()
    assert plan.study_dir != plan_study("tinystudy", data=str(db), budget="64", runs_dir=runs,
                                        log=lambda *a: None, tables=("InIcePulses", None)).study_dir
    for label in plan.configs:
        info = json.loads((plan.run_dir(label, 0) / "run.json").read_text())
        assert info["status"] == "done" and info["split"]["pulsemap"] == "SRTInIcePulses"
        assert info["split"]["data_dir"] == str(db.resolve())
    assert "not simulated by icezoo" in (plan.study_dir / "results.md").read_text()
