"""GraphNeT SQLite and Parquet sources (issue 22): the same simulated events read from the Kaggle
layout, a SQLite file and a Parquet folder give bit-identical batches; pipelines train and predict on
each; Upgrade-like sensors train position-based pipelines and refuse IceCube-86-only ones; convert
round-trips; every bad input is one line naming the file, table and column, exit 2.

Fixtures are written by the tests' own writer (``graphnet_files.py``), not by icezoo's converter.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch
from graphnet_files import from_kaggle, shuffle_events, upgrade_events, write_parquet, write_sqlite
from tinyzoo import cli, tiny_pipeline

from icezoo.core.errors import IcezooError
from icezoo.data.io import list_batches, read_chunk

N_EVENTS = 600  # 10 batches of 60: default_events_per_batch(600), as simulate's files below


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{"kaggle": DIR, "sqlite": FILE.db, "parquet": DIR} holding the same simulated events."""
    from icezoo.data.simulator import simulate
    from icezoo.data.specs import default_events_per_batch

    root = tmp_path_factory.mktemp("formats")
    kaggle = simulate(root / "kaggle", N_EVENTS, events_per_batch=default_events_per_batch(N_EVENTS), seed=3)
    pulses, truth = from_kaggle(kaggle)
    tables = {"SRTInIcePulses": shuffle_events(pulses), "truth": truth}
    return {"kaggle": kaggle, "sqlite": write_sqlite(root / "sim.db", tables),
            "parquet": write_parquet(root / "pq", tables, n_files=3), "root": root, "pulses": pulses, "truth": truth}


@pytest.fixture(scope="module")
def upgrade(sources):
    """SQLite and Parquet files with IceCube-86 events and Upgrade-like events (mDOM, D-Egg)."""
    pulses, truth = sources["pulses"], sources["truth"]
    up, up_truth = upgrade_events(n_events=40)
    keep = np.isin(pulses["event_no"], truth["event_no"][:200])
    p = {c: np.concatenate([pulses[c][keep] if c in pulses else np.zeros(keep.sum()), up[c]]) for c in up}
    t = {c: np.concatenate([truth[c][:200], up_truth[c]]) for c in ("event_no", "azimuth", "zenith", "energy")}
    t["pid"] = np.r_[np.full(200, 14.0), up_truth["pid"]]
    tables = {"UpgradePulses": p, "truth": t}
    root = sources["root"]
    return {"sqlite": write_sqlite(root / "upgrade.db", tables), "parquet": write_parquet(root / "uppq", tables)}


def _batches(data, batch_size=64):
    from icezoo.data.loader import make_loader
    from icezoo.plugins.features import QE, IceProperties, KaggleNorm
    from icezoo.plugins.selection import AuxFirst

    sel = AuxFirst(AuxFirst.Config(max_pulses=48))
    feats = [KaggleNorm(KaggleNorm.Config()), QE(QE.Config()), IceProperties(IceProperties.Config())]
    ids = list_batches(data, "train")
    return list(make_loader(data, "train", ids, sel, feats, batch_size, shuffle=True, seed=5, epoch=1,
                            rank=1, world_size=2, start_step=1))


@pytest.mark.parametrize("fmt", ["sqlite", "parquet"])
def test_same_events_give_bit_identical_batches(sources, fmt):
    assert list_batches(sources[fmt], "train") == list_batches(sources["kaggle"], "train")
    for b in list_batches(sources["kaggle"], "train"):
        a, c = read_chunk(sources["kaggle"], "train", b), read_chunk(sources[fmt], "train", b)
        for f in ("sensor_id", "time", "charge", "auxiliary", "x", "y", "z", "offsets", "event_id", "azimuth", "zenith"):
            assert np.array_equal(getattr(a, f), getattr(c, f)), (b, f)
    # the loader (bucketing, a DDP rank's shard, a resumed step) over both: the same batches, bit for bit
    ref, got = _batches(sources["kaggle"]), _batches(sources[fmt])
    assert len(ref) == len(got) > 2
    for x, y in zip(ref, got):
        for f in ("features", "mask", "xyzt", "sensor_id", "event_features", "n_pulses", "event_id", "target"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f


def test_rows_in_any_order_are_grouped_and_time_ordered(sources, tmp_path):
    p = sources["pulses"]
    perm = np.random.default_rng(1).permutation(len(p["event_no"]))
    db = write_sqlite(tmp_path / "shuffled.db", {"pulses": {k: v[perm] for k, v in p.items()}, "truth": sources["truth"]})
    for b in (1, 7):
        a, c = read_chunk(sources["kaggle"], "train", b), read_chunk(db, "train", b)
        assert np.array_equal(a.offsets, c.offsets) and np.array_equal(a.time, c.time)
        ev = a.event_index
        for chunk in (a, c):
            key = np.lexsort((chunk.charge, chunk.sensor_id, chunk.time, ev))
            chunk.sorted = (chunk.sensor_id[key], chunk.charge[key], chunk.auxiliary[key])
        assert all(np.array_equal(u, v) for u, v in zip(a.sorted, c.sorted))


def test_truth_beyond_direction_is_kept_and_never_invented(sources, upgrade):
    from icezoo.data.formats import open_source

    raw = open_source(sources["sqlite"]).read_raw("train", 2)
    assert set(raw.truth) == {"energy", "position_x", "position_y", "position_z", "energy_track"}
    t = open_source(upgrade["parquet"]).truth("train", [1, 2])
    assert set(t) == {"event_id", "energy", "pid"} and len(t["event_id"]) == 48  # two batches of 24 events


@pytest.mark.parametrize("fmt", ["sqlite", "parquet"])
def test_train_one_step_and_predict(sources, fmt, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(tiny_pipeline("tinyfmt", epochs=1))
    extra = ["--pulsemap", "SRTInIcePulses"] if fmt == "sqlite" else []
    cli("train", "--pipeline-file", tmp_path / "p.toml", "--data", sources[fmt], *extra, "--max-steps", 1,
        "--runs-dir", tmp_path / "runs", "--name", "r", "--no-progress")
    cli("predict", "r", "--runs-dir", tmp_path / "runs", "--data", sources[fmt], "--out", tmp_path / "p.csv")
    capsys.readouterr()
    cli("evaluate", "r", "--runs-dir", tmp_path / "runs", "--no-plots")  # the run's own validation batch
    assert "LineFit" in capsys.readouterr().out
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "event_id,azimuth,zenith" and len(rows) == N_EVENTS + 1
    assert sorted(int(r.split(",")[0]) for r in rows[1:]) == sorted(sources["truth"]["event_no"].tolist())


def test_upgrade_trains_position_pipelines_and_refuses_sensor_ids(upgrade, tmp_path, capsys):
    cli("inspect", "--data", upgrade["sqlite"])
    out = capsys.readouterr().out
    assert "mDOM" in out and "D-Egg" in out and "IceCube-86 + other sensors" in out
    (tmp_path / "p.toml").write_text(tiny_pipeline("tinyup", epochs=1))
    cli("train", "--pipeline-file", tmp_path / "p.toml", "--data", upgrade["parquet"], "--max-steps", 1,
        "--runs-dir", tmp_path / "runs", "--name", "up", "--no-progress")
    (tmp_path / "qe.toml").write_text(tiny_pipeline("tinyqe", epochs=1).replace(
        '[{ name = "kaggle_norm" }]', '[{ name = "kaggle_norm" }, { name = "qe" }]'))
    capsys.readouterr()
    cli("train", "--pipeline-file", tmp_path / "qe.toml", "--data", upgrade["sqlite"], "--max-steps", 1,
        "--runs-dir", tmp_path / "runs", "--name", "qe", "--no-progress", expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "features 'qe' needs IceCube-86 sensor ids" in err and "mDOM" in err
    assert not (tmp_path / "runs" / "qe").exists()


def test_sensor_type_flows_from_the_upgrade_files_into_the_batch(upgrade):
    from icezoo.data.loader import make_loader
    from icezoo.plugins.features import KaggleNorm, SensorType
    from icezoo.plugins.selection import AuxFirst

    for fmt in ("sqlite", "parquet"):
        c = read_chunk(upgrade[fmt], "train", 10)  # Upgrade events beside IceCube-86 DOM pulses
        out = SensorType(SensorType.Config()).extract(c, c)
        code = c.dom_type
        assert set(code.tolist()) == {20, 120, 130} and c.pmt_dir.shape == (len(code), 3)
        for value, col in ((20, 0), (120, 2), (130, 3)):
            assert (out[code == value, col] == 1).all() and (out[code == value, :4].sum(axis=1) == 1).all()
        ic = code == 20  # the writer's IceCube DOMs: (0, 0, -1) as written (or zeros, then facing down)
        assert (out[ic, 4:] == [0, 0, -1]).all()
        assert np.array_equal(out[~ic, 4:], c.pmt_dir[~ic]) and np.allclose(np.linalg.norm(out[:, 4:], axis=1), 1)
    # through the loader (lazy chunks, selection, padding): the real slots carry the type, padding is zero and masked
    sel = AuxFirst(AuxFirst.Config(max_pulses=64))
    feats = [KaggleNorm(KaggleNorm.Config()), SensorType(SensorType.Config())]
    batches = list(make_loader(upgrade["sqlite"], "train", [9, 10], sel, feats, 16, shuffle=False, seed=0, epoch=0))
    for b in batches:
        f, m = b.features[..., 6:], b.mask
        assert (f[m][:, :4].sum(-1) == 1).all() and (f[~m] == 0).all()
        assert torch.allclose(f[m][:, 4:].norm(dim=-1), torch.ones(int(m.sum())))
    assert any((~b.mask).any() for b in batches)  # padded slots were checked
    assert any((b.features[..., 6:][b.mask][:, 3] == 1).any() for b in batches)  # mDOMs reached the batch


def test_upgrade_v0_trains_one_step_and_predicts(upgrade, tmp_path):
    tiny = ["--set", "embedder.dim=16", "--set", "backbone.depth=1", "--set", "backbone.heads=2",
            "--set", "selection.max_pulses=32"]
    cli("train", "--pipeline", "UPGRADE_V0", *tiny, "--data", upgrade["sqlite"], "--max-steps", 1,
        "--runs-dir", tmp_path / "runs", "--name", "up", "--no-progress")
    cli("predict", "up", "--runs-dir", tmp_path / "runs", "--data", upgrade["parquet"], "--out", tmp_path / "p.csv")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "event_id,azimuth,zenith" and len(rows) == 240 + 1  # 200 IceCube-86 + 40 Upgrade events
    assert all(np.isfinite([float(v) for v in r.split(",")[1:]]).all() for r in rows[1:])


def test_upgrade_sensors_keep_their_positions(upgrade):
    from icezoo.core.detector import N_SENSORS
    from icezoo.data.detector import MAX_MODULE, MAX_PMT

    c = read_chunk(upgrade["sqlite"], "train", 10)  # the last batch: Upgrade events
    up = c.sensor_id >= N_SENSORS
    assert up.any() and (~up).any() and c.pad_sensor > c.sensor_id.max()
    string = (c.sensor_id[up].astype(np.int64) - N_SENSORS) // (MAX_MODULE * MAX_PMT) + 1
    assert set(string.tolist()) <= set(range(87, 94))
    assert np.array_equal(c.x[up], 30.0 + (string - 87) * 12.5)  # the rows' own positions (the writer's rule)


def test_convert_round_trips_losslessly(sources, tmp_path):
    import polars as pl

    cli("convert", "--data", sources["kaggle"], "--out", tmp_path / "gn")
    cli("convert", "--data", tmp_path / "gn", "--out", tmp_path / "back")
    for b in list_batches(sources["kaggle"], "train"):
        name = f"train/batch_{b}.parquet"
        assert pl.read_parquet(sources["kaggle"] / name).equals(pl.read_parquet(tmp_path / "back" / name))
    meta = "train_meta.parquet"
    assert pl.read_parquet(sources["kaggle"] / meta).equals(pl.read_parquet(tmp_path / "back" / meta))
    # SQLite -> Kaggle: the converted layout reads as the same events
    cli("convert", "--data", sources["sqlite"], "--out", tmp_path / "fromdb")
    for b in (1, 10):
        a, c = read_chunk(sources["sqlite"], "train", b), read_chunk(tmp_path / "fromdb", "train", b)
        assert np.array_equal(a.time, c.time) and np.array_equal(a.sensor_id, c.sensor_id)
    cli("convert", "--data", sources["sqlite"], "--out", tmp_path / "fromdb", expect=2)  # never over a folder


def test_convert_refuses_upgrade_sensors_and_leaves_nothing(upgrade, tmp_path, capsys):
    cli("convert", "--data", upgrade["sqlite"], "--out", tmp_path / "k", expect=2)
    assert "not IceCube-86 DOMs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _db(path, tables):
    return write_sqlite(path, tables)


def _bad_inputs(sources, tmp):
    """(name, argv, substrings of the one error line)."""
    p, t = sources["pulses"], sources["truth"]
    few = np.isin(p["event_no"], t["event_no"][:30])
    small = {k: v[few] for k, v in p.items()}
    small_t = {k: v[:30] for k, v in t.items()}
    (tmp / "text.db").write_text("not a database\n")
    nan = {k: v.copy() for k, v in small.items()}
    nan["dom_y"][5] = np.nan
    moved = {k: v.copy() for k, v in small.items()}
    moved["dom_x"][3] += 2.0
    lost = {k: v[:-1] for k, v in small_t.items()}
    nocharge = {k: v for k, v in small.items() if k != "charge"}
    return [
        ("not sqlite", ["inspect", "--data", tmp / "text.db"], ["text.db", "not a SQLite file"]),
        ("no pulse table", ["inspect", "--data", _db(tmp / "a.db", {"truth": small_t})], ["a.db", "no pulse table"]),
        ("several", ["inspect", "--data", _db(tmp / "b.db", {"SRTInIcePulses": small, "InIcePulses": small,
                                                             "truth": small_t})],
         ["b.db", "several pulse tables", "InIcePulses", "SRTInIcePulses", "--pulsemap"]),
        ("unknown pulsemap", ["inspect", "--data", tmp / "b.db", "--pulsemap", "Nope"], ["b.db", "no table 'Nope'"]),
        ("missing column", ["inspect", "--data", _db(tmp / "c.db", {"P": nocharge, "truth": small_t})],
         ["c.db", "table P", "missing column charge"]),
        ("no truth row", ["linefit", "--data", _db(tmp / "d.db", {"P": small, "truth": lost})],
         ["d.db", "table P", "has pulses but no row in table truth"]),
        ("nan position", ["linefit", "--data", _db(tmp / "e.db", {"P": nan, "truth": small_t})],
         ["e.db", "table P", "dom_y is nan"]),
        ("moved dom", ["linefit", "--data", _db(tmp / "f.db", {"P": moved, "truth": small_t})],
         ["f.db", "table P", "IceCube-86 sensor_id", "apart"]),
        ("no truth table", ["linefit", "--data", _db(tmp / "g.db", {"P": small})], ["g.db", "no truth table 'truth'"]),
        ("missing truth column", ["linefit", "--data", _db(tmp / "h.db", {"P": small, "truth": {
            k: v for k, v in small_t.items() if k != "zenith"}})], ["h.db", "table truth", "missing column zenith"]),
    ]


def test_bad_inputs_are_one_line_naming_file_table_and_column(sources, tmp_path, capsys):
    for name, argv, words in _bad_inputs(sources, tmp_path):
        capsys.readouterr()
        cli(*argv, expect=2)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (name, err)
        assert all(w in err for w in words), (name, err)


def test_events_without_truth_or_pulses_are_counted_and_predict_covers_them(sources, tmp_path, capsys):
    p, t = sources["pulses"], sources["truth"]
    few = np.isin(p["event_no"], t["event_no"][:40])
    pulses = {k: v[few] for k, v in p.items()}
    truth = {k: np.r_[v[5:40], v[45:48]] for k, v in t.items()}  # 5 pulse events without truth, 3 truth-only
    db = _db(tmp_path / "gaps.db", {"P": pulses, "truth": truth})
    cli("inspect", "--data", db)
    out = capsys.readouterr().out
    assert "5 with pulses but no truth, 3 with truth but no pulses" in out
    from icezoo.data.io import split_events

    ids, _ = split_events(db, "test")  # prediction reads every event of either table
    assert len(ids) == 43


def test_list_formats_and_a_plugin_format(tmp_path, capsys, monkeypatch):
    cli("list", "formats")
    out = capsys.readouterr().out
    assert all(f in out for f in ("kaggle", "graphnet-sqlite", "graphnet-parquet"))
    from icezoo.core.hookspecs import hookimpl
    from icezoo.core.registry import build_registry
    from icezoo.data import formats
    from icezoo.plugins import DEFAULT_PLUGINS

    class Toy(formats.DataSource):
        format, summary = "toy-h5", "a collaboration's HDF5"

        @classmethod
        def detect(cls, path):
            return path.suffix == ".h5"

        def batch_ids(self, split):
            return [1]

        def pulse_counts(self, split, batch_id):
            return np.zeros(0, dtype=np.int64)

        def meta(self, split, batch_id):
            return {}

        def read_raw(self, split, batch_id, geometry=None):
            return None

        def split_events(self, split):
            return np.zeros(0, dtype=np.int64), []

        def describe(self):
            return ["toy-h5"]

    class Half(formats.DataSource):  # a format that forgets read_raw and the rest is refused when registered
        format = "half"

        @classmethod
        def detect(cls, path):
            return False

    class Plugin:
        @hookimpl
        def icezoo_formats(self):
            return [Toy]

    class HalfPlugin:
        @hookimpl
        def icezoo_formats(self):
            return [Half]

    with pytest.raises(IcezooError, match=r"format class Half \('half'\) does not implement batch_ids, describe"):
        build_registry(DEFAULT_PLUGINS, extra_plugins=[("half", HalfPlugin())], autoload=False)
    reg = build_registry(DEFAULT_PLUGINS, extra_plugins=[("toyfmt", Plugin())], autoload=False)
    assert list(reg.formats)[-1] == "toy-h5" and reg.format_plugins["toy-h5"]
    monkeypatch.setattr("icezoo.zoo.registry", lambda: reg)
    (tmp_path / "x.h5").write_text("")
    assert isinstance(formats.open_source(tmp_path / "x.h5"), Toy)


def test_sqlite_reads_an_event_no_range_through_the_index(sources):
    con = sqlite3.connect(sources["sqlite"])
    plan = " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN SELECT dom_time FROM SRTInIcePulses "
                                               "WHERE event_no >= 1 AND event_no <= 5"))
    assert "INDEX event_no_SRTInIcePulses" in plan


def test_loader_workers_reopen_the_source(sources):
    """A source pickles to worker processes without its open SQLite handle (and with its options)."""
    from icezoo.data.formats import open_source
    from icezoo.data.loader import make_loader
    from icezoo.plugins.features import KaggleNorm
    from icezoo.plugins.selection import TimeOrder

    open_source(sources["sqlite"], pulsemap="SRTInIcePulses")
    sel, feats = TimeOrder(TimeOrder.Config(max_pulses=32)), [KaggleNorm(KaggleNorm.Config())]
    runs = [list(make_loader(sources["sqlite"], "train", [2, 3], sel, feats, 64, seed=1, num_workers=w))
            for w in (0, 1)]
    assert len(runs[0]) == len(runs[1]) > 0
    assert all(torch.equal(a.features, b.features) and torch.equal(a.event_id, b.event_id) for a, b in zip(*runs))


def test_a_run_keeps_its_pulsemap_for_evaluate_and_predict(sources, tmp_path, capsys, monkeypatch):
    """A run trained with --pulsemap on a two-table file stores it (run.json split.pulsemap): evaluate and
    predict on such a file need not be told again; an explicit flag wins; a file without it is one line."""
    import json

    from icezoo.data import formats

    p, t = sources["pulses"], sources["truth"]
    few = np.isin(p["event_no"], t["event_no"][:120])
    small, small_t = {k: v[few] for k, v in p.items()}, {k: v[:120] for k, v in t.items()}
    flipped = {k: v.copy() for k, v in small.items()}
    flipped["dom_time"] = flipped["dom_time"][::-1].copy()  # not the same pulses: a wrong table would show
    two = _db(tmp_path / "two.db", {"SRTInIcePulses": small, "InIcePulses": flipped, "truth": small_t})
    other = _db(tmp_path / "other.db", {"InIcePulses": small, "OtherPulses": small, "truth": small_t})
    runs = tmp_path / "runs"
    (tmp_path / "p.toml").write_text(tiny_pipeline("tinyfmt", epochs=1))
    cli("train", "--pipeline-file", tmp_path / "p.toml", "--data", two, "--pulsemap", "SRTInIcePulses",
        "--batches", "1", "--max-steps", 1, "--runs-dir", runs, "--name", "r", "--no-progress")
    assert json.loads((runs / "r" / "run.json").read_text())["split"]["pulsemap"] == "SRTInIcePulses"
    from icezoo.engine.runs import RunDir

    assert RunDir(runs / "r").data_tables() == ("SRTInIcePulses", None)
    seen = []
    real_open = formats.open_source

    def spy(path, pulsemap=None, truth_table=None):
        src = real_open(path, pulsemap, truth_table)
        seen.append(src.pulsemap)
        return src

    for argv in (["evaluate", "r", "--no-plots"], ["predict", "r", "--data", two, "--out", tmp_path / "a.csv"]):
        monkeypatch.setattr(formats, "_OPEN", {})  # a fresh process: nothing remembered from training
        seen.clear()
        monkeypatch.setattr(formats, "open_source", spy)
        cli(*argv, "--runs-dir", runs)  # several pulse tables and no --pulsemap: the run's is used
        monkeypatch.setattr(formats, "open_source", real_open)
        assert "SRTInIcePulses" in seen and formats._OPEN[str(two.resolve())].pulsemap == "SRTInIcePulses"
    capsys.readouterr()
    monkeypatch.setattr(formats, "_OPEN", {})
    cli("predict", "r", "--data", other, "--out", tmp_path / "b.csv", "--runs-dir", runs, expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other.db" in err and "SRTInIcePulses" in err and "--pulsemap" in err
    assert not (tmp_path / "b.csv").exists()
    monkeypatch.setattr(formats, "_OPEN", {})
    cli("predict", "r", "--data", other, "--pulsemap", "InIcePulses", "--out", tmp_path / "b.csv", "--runs-dir", runs)
    assert formats._OPEN[str(other.resolve())].pulsemap == "InIcePulses"  # the explicit flag wins
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 121


def test_adbc_and_sqlite3_readers_give_bit_identical_batches(sources, upgrade, monkeypatch):
    """The ADBC reader (the ``sqlite`` extra) and the sqlite3 fallback read the same file identically:
    every range, the truth, the detector and the loader's batches, bit for bit."""
    pytest.importorskip("adbc_driver_sqlite", reason="the sqlite extra (adbc-driver-sqlite) is not installed")
    from icezoo.data import formats
    from icezoo.data.formats import sqlite as sq
    from icezoo.data.formats.sqlite import SQLiteSource

    fell_back = []  # the fast reader must really be used (not fall back to sqlite3) on these files
    read_adbc = sq._read_adbc
    monkeypatch.setattr(sq, "_read_adbc", lambda con, *a: (r := read_adbc(con, *a), fell_back.append(
        con is not None and r is None))[0])

    def opened(db, reader):
        monkeypatch.setenv("ICEZOO_SQLITE_READER", reader)
        src = SQLiteSource(db)
        assert (src._adbc() is None) == (reader == "sqlite3")
        return src

    for db in (sources["sqlite"], upgrade["sqlite"]):
        fast, slow = opened(db, "adbc"), opened(db, "sqlite3")
        cols = fast._tables()[fast.pulse_table]
        a, b = fast._read(fast.pulse_table, cols, 0, 10**9), slow._read(slow.pulse_table, cols, 0, 10**9)
        assert all(a[c].dtype == b[c].dtype == np.float64 and np.array_equal(a[c], b[c], equal_nan=True) for c in cols)
        assert fast.detector() == slow.detector()
        for split in ("train", "test"):
            ids = fast.batch_ids(split)
            assert ids == slow.batch_ids(split)
            for i in ids:
                x, y = fast.read_raw(split, i), slow.read_raw(split, i)
                for f in ("sensor_id", "time", "charge", "auxiliary", "offsets", "event_id", "azimuth", "zenith", "geo"):
                    u, v = getattr(x, f), getattr(y, f)
                    assert (u is None and v is None) or np.array_equal(u, v, equal_nan=True), (db, split, i, f)
                assert (x.truth is None) == (y.truth is None)
                if x.truth is not None:
                    assert all(np.array_equal(x.truth[k], y.truth[k], equal_nan=True) for k in x.truth)
    assert fell_back and not any(fell_back)
    runs = []
    for reader in ("adbc", "sqlite3"):
        monkeypatch.setenv("ICEZOO_SQLITE_READER", reader)
        monkeypatch.setattr(formats, "_OPEN", {})
        runs.append(_batches(sources["sqlite"]))
    assert len(runs[0]) == len(runs[1]) > 2
    for x, y in zip(*runs):
        for f in ("features", "mask", "xyzt", "sensor_id", "event_features", "n_pulses", "event_id", "target"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
