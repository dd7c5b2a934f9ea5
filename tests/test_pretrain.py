"""``icezoo pretrain`` (issue 26, item 2): the masked-pulse objective learns, hides the masked pulses from
every input, writes a run that resumes exactly, and a fine-tune loads its embedder and backbone."""

from __future__ import annotations

import json

import pytest
import torch

from icezoo.cli.main import main
from icezoo.core.pipelines import pipeline_from_table
from icezoo.core.pretraining import PretrainModel, compose_pretrain, hide_pulses
from icezoo.core.synthetic import synthetic_batch
from icezoo.zoo import build, registry
from tinyzoo import tiny_pipeline

TINY = tiny_pipeline(max_pulses=16, dim=8, pooler='["mean"]', epochs=1) + tiny_pipeline(
    "tiny_pre", max_pulses=16, dim=8, pooler='["mean"]', epochs=1).replace(
    'embedder = { name = "linear", dim = 8 }', 'embedder = { name = "linear", dim = 8, init_from = "pretrain:tiny" }')

#: encoders that read every per-pulse input: features only; sensor ids + space-time bias; kNN graphs on xyz
ENCODERS = {
    "transformer": {"embedder": {"name": "linear", "dim": 16}, "backbone": {"name": "transformer", "depth": 1,
                                                                           "heads": 2}},
    "sensor_relbias": {"embedder": {"name": "sensor_embedding", "dim": 16},
                       "backbone": {"name": "relbias_transformer", "biased_depth": 1, "depth": 0, "heads": 2,
                                    "bias_dim": 8}},
    "graphnet_dynedge": {"embedder": {"name": "graphnet", "dim": 16, "k": 4, "widths": [16, 16]},
                         "backbone": {"name": "dynedge", "k": 4, "layers": [[16, 16], [16, 16]], "post": [16]}},
}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args, contains=()) -> str:
    code, out, err = run_cli(capsys, *args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in err
    for text in contains:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


def model_for(encoder: dict, **objective) -> PretrainModel:
    table = {"features": [{"name": "kaggle_norm"}], "pooler": ["mean"], **encoder}
    torch.manual_seed(0)
    return compose_pretrain(pipeline_from_table("enc", table), objective, registry()).double().eval()


def batch_of(lengths, seed=0):
    return synthetic_batch(6, lengths, seed=seed, dtype=torch.float64)


# ------------------------------------------------------------------------------ the objective
def test_masking_chooses_real_pulses_and_keeps_one_visible():
    model = model_for(ENCODERS["transformer"], mask_ratio=0.5)
    batch = batch_of([1, 2, 7, 12])
    masked = model.objective.choose(batch, torch.Generator().manual_seed(1))
    assert masked.sum(1).tolist() == [0, 1, 4, 6]  # round(0.5 n), at least 1, at most n - 1
    assert not (masked & ~batch.mask).any()


def test_masked_objective_is_finite_and_decreases_on_a_tiny_model():
    model = model_for(ENCODERS["transformer"], mask_ratio=0.3).train()
    batch = batch_of([5, 9, 14, 16, 3], seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(40):
        pred = model(batch, generator=torch.Generator().manual_seed(step % 4))
        terms = model.terms(pred, batch)
        assert set(terms) == {"position", "sensor", "charge", "loss"}
        assert all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_outputs_do_not_depend_on_what_is_hidden_of_the_masked_pulses(encoder):
    """Every slot's state (masked or not: the objective's head reads them) is the same whatever the masked
    pulses' sensors, positions, charges and features were; changing a visible pulse changes them (the
    check can fail)."""
    model = model_for(ENCODERS[encoder], mask_ratio=0.4)
    batch = batch_of([6, 11, 4], seed=3)
    masked = model.objective.choose(batch, torch.Generator().manual_seed(0))
    other = batch_of([6, 11, 4], seed=9)
    m = masked[..., None]
    moved = batch.with_(features=torch.where(m, other.features, batch.features),
                        sensor_id=torch.where(masked, other.sensor_id, batch.sensor_id),
                        xyzt=torch.cat([torch.where(m, other.xyzt[..., :3], batch.xyzt[..., :3]),
                                        batch.xyzt[..., 3:]], -1))
    with torch.no_grad():
        out = model.encode(batch, masked)
        out_moved = model.encode(moved, masked)
        visible = batch.mask & ~masked
        nudged = batch.with_(sensor_id=torch.where(visible, (batch.sensor_id + 17) % 5160, batch.sensor_id),
                             xyzt=batch.xyzt + 50.0 * visible[..., None],
                             features=batch.features + 1.0 * visible[..., None])
        out_nudged = model.encode(nudged, masked)
    torch.testing.assert_close(out_moved[batch.mask], out[batch.mask], atol=1e-9, rtol=0)
    assert not torch.allclose(out_nudged[batch.mask], out[batch.mask], atol=1e-6)


def test_the_conformance_check_catches_a_leak(monkeypatch):
    """A hiding that forgets sensor ids and positions fails the kit's check (it reads both)."""
    import icezoo.core.pretraining as P
    from icezoo.testing import check_component

    spec = registry().get("pretrain", "masked_pulse")
    check_component(spec, [5, 8], seed=0)
    leaky = lambda batch, masked, neutral, keep: batch.with_(  # noqa: E731
        features=torch.where(masked[..., None], torch.zeros((), dtype=batch.features.dtype), batch.features))
    monkeypatch.setattr(P, "hide_pulses", leaky)
    with pytest.raises(AssertionError, match="leak"):
        check_component(spec, [5, 8], seed=0)


def test_time_is_hidden_unless_kept():
    batch = batch_of([4], seed=1)
    masked = torch.tensor([[True, False, True, False]])
    kept = hide_pulses(batch, masked, 5160, keep_time=True)
    gone = hide_pulses(batch, masked, 5160, keep_time=False)
    assert torch.equal(kept.xyzt[..., 3], batch.xyzt[..., 3]) and (gone.xyzt[masked] == 0).all()
    assert (kept.xyzt[masked][:, :3] == 0).all() and (kept.sensor_id[masked] == 5160).all()
    assert (kept.features[masked] == 0).all() and torch.equal(kept.features[~masked], batch.features[~masked])


# ------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny simulated set: 10 training files of 30 events and a 60-event test split in 2 files."""
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("pretrain")
    data = simulate(root / "data", 300, events_per_batch=30, seed=5, test=True, test_events=60)
    pf = root / "tiny.toml"
    pf.write_text(TINY)
    return {"root": root, "data": data, "pf": pf}


def pretrain_args(world, runs, name, *extra):
    return ["pretrain", "--pipeline-file", world["pf"], "--pipeline", "tiny", "--data", world["data"],
            "--split", "test", "--runs-dir", runs, "--name", name, "--no-progress", "--batch-size", 8, *extra]


def test_sensor_tokens_hide_their_packed_pulses_too(world):
    """SENSOR_AGG (a slot is a hit sensor, its pulses packed in batch.pulses): a masked token's pulses
    are hidden as well, so no output depends on them."""
    from dataclasses import replace

    from icezoo.core.pipelines import pipeline_config
    from icezoo.engine import loaders

    config = pipeline_config("SENSOR_AGG", reg=registry()).with_overrides(
        {"embedder.dim": 16, "backbone.depth": 1, "backbone.heads": 2})
    torch.manual_seed(0)
    model = compose_pretrain(config, {"mask_ratio": 0.5}, registry()).eval()
    batch = next(iter(loaders.make_eval_loader(world["data"], "train", [1], model, 8)))
    assert batch.pulses is not None and batch.pulses.num_pulses > int(batch.mask.sum())
    masked = model.objective.choose(batch, torch.Generator().manual_seed(0))
    hit = masked.reshape(-1)[batch.pulses.token(masked.shape[1])]
    gen = torch.Generator().manual_seed(1)
    p = batch.pulses
    noise = replace(p, features=torch.where(hit[:, None], torch.randn(p.features.shape, generator=gen), p.features),
                    dt=torch.where(hit, p.dt + 100.0, p.dt), charge=torch.where(hit, p.charge * 3 + 1, p.charge))
    moved = batch.with_(pulses=noise, features=torch.where(masked[..., None], -batch.features, batch.features),
                        sensor_id=torch.where(masked, (batch.sensor_id + 5) % 5160, batch.sensor_id))
    with torch.no_grad():
        out = model.encode(batch, masked)
        out_moved = model.encode(moved, masked)
        unmasked = masked & False  # the same noise without masking changes the states: the check can fail
        changed = model.encode(batch.with_(pulses=noise), unmasked)
        plain = model.encode(batch, unmasked)
    torch.testing.assert_close(out_moved[batch.mask], out[batch.mask], atol=1e-5, rtol=0)
    assert not torch.allclose(changed[batch.mask], plain[batch.mask])


def test_pretrain_writes_a_run_that_resumes_to_the_same_weights(world, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    assert run_cli(capsys, *pretrain_args(world, runs, "FULL", "--epochs", 2))[0] == 0
    info = json.loads((runs / "FULL" / "run.json").read_text())
    assert info["status"] == "done" and info["objective"] == {} and info["split"]["files"] == "test"
    assert info["split"]["train_batches"] == [1] and info["split"]["val_batches"] == [2]
    assert info["command"].startswith("icezoo pretrain") and "--split test" in info["command"]
    hist = json.loads((runs / "FULL" / "metrics.json").read_text())["history"]
    assert len(hist) == 2 and all(h["val_mean"] > 0 for h in hist)
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def interrupt_at_the_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupt_at_the_third)
    code, _, err = run_cli(capsys, *pretrain_args(world, runs, "CUT", "--epochs", 2))
    assert code == 130 and "icezoo pretrain --resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    assert run_cli(capsys, "pretrain", "--resume", runs / "CUT", "--no-progress")[0] == 0
    a = torch.load(runs / "FULL" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(runs / "CUT" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and "mask_token" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    cut = json.loads((runs / "CUT" / "run.json").read_text())
    assert cut["status"] == "done" and cut["resumed"] == 1 and cut["objective"] == {}
    # the ledger shows the objective's loss as such, never among the angular errors
    from icezoo.engine.runs import ledger_rows

    row = next(r for r in ledger_rows(runs) if r["name"] == "FULL")
    assert row["value"] is None and "masked-pulse loss, pretraining" in row["score"]


def test_fine_tuning_loads_the_pretrained_encoder(world, tmp_path, capsys):
    from icezoo.core.checkpoint import load_checkpoint
    from icezoo.core.pipelines import pipeline_config
    from icezoo.engine.checkpoints import init_stages

    runs = tmp_path / "runs"
    assert run_cli(capsys, *pretrain_args(world, runs, "PRE", "--steps", 3, "--set", "pretrain.mask_ratio=0.5"))[0] == 0
    pre = load_checkpoint(runs / "PRE" / "checkpoints" / "best.pt")["state_dict"]
    # the registry form: tiny_pre's embedder says init_from = "pretrain:tiny"; --set gives the backbone a run
    config = pipeline_config("tiny_pre", world["pf"], reg=registry()).with_overrides(
        {"backbone.init_from": str(runs / "PRE")})
    model = build(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    reports = init_stages(model, runs, log=lambda *_: None)
    assert [r["stage"].rsplit(".", 1)[-1] for r in reports] == ["embedder", "backbone"]
    own = model.state_dict()
    encoder = [k for k in own if k.startswith(("embedder.", "backbone."))]
    assert encoder and all(torch.equal(own[k], pre[k]) for k in encoder)
    assert any(not torch.equal(fresh[k], pre[k]) for k in encoder)  # they were not equal before
    assert all(torch.equal(own[k], fresh[k]) for k in own if k.startswith("head."))
    # the CLI: --init-from a pretraining run loads the encoder and reports the discarded objective
    code, out, _ = run_cli(capsys, "train", "--pipeline-file", world["pf"], "--pipeline", "tiny", "--data",
                           world["data"], "--runs-dir", runs, "--name", "FT", "--no-progress", "--max-steps", 2,
                           "--init-from", "PRE")
    assert code == 0 and "unused from checkpoint: mask_token" in out
    rep = json.loads((runs / "FT" / "run.json").read_text())["init_report"]
    assert rep["loaded"] == len(encoder) and "objective.net.0.weight" in rep["unused_from_checkpoint"]
    code, _, _ = run_cli(capsys, "train", "--pipeline-file", world["pf"], "--pipeline", "tiny_pre", "--data",
                         world["data"], "--runs-dir", runs, "--name", "FT2", "--no-progress", "--max-steps", 1)
    assert code == 0
    stages = json.loads((runs / "FT2" / "run.json").read_text())["stage_inits"]
    assert stages[0]["source"] == str(runs / "PRE" / "checkpoints" / "best.pt")
    # a pipeline name alone still means its newest *training* run, never a pretraining one
    assert run_cli(capsys, "train", "--pipeline-file", world["pf"], "--pipeline", "tiny", "--data", world["data"],
                   "--runs-dir", runs, "--name", "FT3", "--no-progress", "--max-steps", 1,
                   "--set", "embedder.init_from=tiny")[0] == 0
    source = json.loads((runs / "FT3" / "run.json").read_text())["stage_inits"][0]["source"]
    assert source == str(runs / "FT" / "checkpoints" / "best.pt")
    one_line_error(capsys, "evaluate", runs / "PRE", "--data", world["data"], contains=["pretraining checkpoint"])


def test_bad_input_is_one_line(world, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["pretrain", "--runs-dir", runs, "--no-progress", "--data", world["data"]]
    one_line_error(capsys, *base, "--pipeline", "NOPE", contains=["unknown pipeline 'NOPE'"])
    one_line_error(capsys, "pretrain", "--runs-dir", runs, "--data", tmp_path / "nowhere", contains=["no such"])
    one_line_error(capsys, *base, "--split", "val", contains=["--split val"])
    one_line_error(capsys, *base, "--set", "pretrain.mask_ratio=1.5", contains=["pretrain.mask_ratio"])
    one_line_error(capsys, *base, "--set", "pretrain.bogus=1", contains=["pretrain.bogus"])
    one_line_error(capsys, *base, "--set", "pretrain.name=nope", contains=["pretrain.name", "masked_pulse"])
    one_line_error(capsys, *base, "--set", "features=[{name = \"qe\"}, {name = \"kaggle_norm\", positions = false}]",
                   "--set", "pretrain.charge_column=9", contains=["pretrain.charge_column"])
    one_line_error(capsys, *base, "--set", "features=[{name = \"qe\"}]", contains=["charge_weight"])
    no_test = world["root"] / "no_test"
    from icezoo.data.simulator import simulate

    simulate(no_test, 60, events_per_batch=30, seed=1)
    one_line_error(capsys, "pretrain", "--runs-dir", runs, "--data", no_test, "--split", "test",
                   contains=["test"])
    one_test = world["root"] / "one_test"
    simulate(one_test, 60, events_per_batch=30, seed=1, test=True, test_events=20)
    one_line_error(capsys, "pretrain", "--runs-dir", runs, "--data", one_test, "--split", "test",
                   contains=["the test split has one batch file", "--events-per-batch"])
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-written


def test_pretrain_runs_under_torchrun_on_two_cpu_ranks(world, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ICEZOO_NO_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "icezoo",
           *map(str, pretrain_args(world, tmp_path / "runs", "DDP", "--steps", 2, "--save-every-steps", 1))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["DDP"]
    info = json.loads((tmp_path / "runs" / "DDP" / "run.json").read_text())
    assert info["status"] == "done" and info["world_size"] == 2 and info["objective"] == {}
    assert info["command"].startswith("torchrun --nproc_per_node 2 -m icezoo pretrain")


# ------------------------------------------------------------------------------ few labels and the study
def test_train_fraction_is_a_fixed_nested_subset(world):
    import numpy as np

    from icezoo.engine.train.plan import fraction_events

    files = list(range(1, 11))
    five, quarter = fraction_events(0.05, world["data"], files), fraction_events(0.25, world["data"], files)
    n5, n25 = sum(len(v) for v in five.values()), sum(len(v) for v in quarter.values())
    assert 0 < n5 < n25 < 300 and abs(n25 / 300 - 0.25) < 0.1
    assert all(np.isin(five[b], quarter[b]).all() for b in files)
    assert fraction_events(None, world["data"], files) is None and fraction_events(1.0, world["data"], files) is None
    kappa = {b: quarter[b][:2] for b in files}  # within the kappa filter's events when there is one
    assert all(set(v) <= set(kappa[b]) for b, v in fraction_events(0.25, world["data"], files, keep=kappa).items())


STUDY = """
[studies.tiny_pre]
question = "q"
pipeline = "default"
reference = "scratch"
budget = "96"
seeds = [0]
size = { "embedder.dim" = 8, "backbone.depth" = 1, "backbone.heads" = 2 }
common = { "selection.max_pulses" = 16, "train.batch_size" = 16 }
[studies.tiny_pre.variants]
pre = { pretrain = { mask_ratio = 0.5 } }
scratch = { set = { "train.fraction" = 0.5 } }
tuned = { set = { "train.fraction" = 0.5 }, init_from = "pre" }
other = { set = { "train.fraction" = 0.25 } }
tuned_other = { set = { "train.fraction" = 0.25 }, init_from = "pre", reference = "other" }
"""


def test_a_study_pretrains_fine_tunes_and_pairs_each_variant_with_its_reference(world, tmp_path, monkeypatch):
    import icezoo.zoo as zoo
    from icezoo.core import hookimpl
    from icezoo.engine.reproduce import reproduce

    f = tmp_path / "studies.toml"
    f.write_text(STUDY)

    class Plugin:
        @hookimpl
        def icezoo_study_files(self):
            return [f]

    reg = zoo.make_registry(extra_plugins=[("tiny-study", Plugin())], autoload=False)
    monkeypatch.setattr(zoo, "registry", lambda: reg)
    per = reproduce("tiny_pre", data=str(world["data"]), runs_dir=tmp_path / "runs", progress=False, echo=lambda *a: None)
    assert set(per) == {"scratch", "tuned", "other", "tuned_other"}  # the pretraining run is not scored
    study_dir = next((tmp_path / "runs" / "studies").iterdir())
    pre = json.loads((study_dir / "pre-s0" / "run.json").read_text())
    assert pre["objective"] == {"mask_ratio": 0.5} and pre["status"] == "done"
    tuned = json.loads((study_dir / "tuned-s0" / "run.json").read_text())
    assert tuned["init_from"].endswith("pre-s0/checkpoints/best.pt") and tuned["init_report"]["loaded"] > 0
    assert per["tuned_other"]["paired"].n == per["tuned"]["paired"].n > 0
    report = (study_dir / "results.md").read_text()
    assert "vs other |" in report and "Pretraining variants" in report and "pre (mask_ratio=0.5)" in report


@pytest.mark.parametrize("variants, message", [
    ('a = { pretrain = {} }\nb = "tiny"', "a pretraining variant is not scored"),
    ('a = "tiny"\nb = { pipeline = "tiny", reference = "zz" }', "reference 'zz' is not another variant"),
    ('a = "tiny"\np = { pretrain = {} }\nb = { pipeline = "tiny", reference = "p" }', "is a pretraining variant"),
])
def test_bad_pretraining_studies_are_one_line(world, tmp_path, variants, message):
    from icezoo.engine.studies import parse_study_file

    f = tmp_path / "bad.toml"
    f.write_text(f'[studies.x]\nquestion = "q"\nreference = "a"\npipeline = "tiny"\n[studies.x.variants]\n{variants}\n')
    from icezoo.core.errors import IcezooError

    with pytest.raises(IcezooError) as err:
        parse_study_file(f)
    assert "\n" not in str(err.value) and message in str(err.value), str(err.value)
