"""The Kaggle-layout reader: golden fixture, direction convention, batch ranges, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from icezoo.core import IcezooError
from icezoo.data.io import (chunk_to_batch, list_batches, load_geometry, parse_batches, read_chunk, split_batches,
                            write_toy_dataset)
from icezoo.data.kaggle_layout import write_batch, write_meta
from icezoo.plugins.features import KaggleNorm
from icezoo.plugins.selection import TimeOrder

GEO = load_geometry()

# three events in batch 1, one in batch 2; event 20 has a single pulse
EVENTS = {
    1: [  # (event_id, [(sensor_id, time, charge, aux)], azimuth, zenith)
        (10, [(0, 6000, 1.025, False), (1, 6080, 0.5, True), (2, 6160, 2.0, False)], 1.0, 0.3),
        (20, [(4000, 7000, 0.975, False)], 2.0, 2.5),
        (30, [(5159, 9000, 3.5, True), (5100, 9100, 0.25, False)], 3.0, 1.2),
    ],
    2: [(40, [(100, 10000, 1.0, False), (101, 10050, 1.0, False)], 0.5, 1.5)],
}


def write_fixture(root, events=EVENTS, meta_rows=None, truth=True, split="train"):
    metas = []
    for b, evs in events.items():
        eid = np.concatenate([[e] * len(p) for e, p, *_ in evs])
        pulses = [x for _, p, *_ in evs for x in p]
        write_batch(root / split / f"batch_{b}.parquet", eid, [p[0] for p in pulses], [p[1] for p in pulses],
                    [p[2] for p in pulses], [p[3] for p in pulses])
        first = 0
        for e, p, az, ze in evs:
            metas.append((b, e, first, first + len(p) - 1, az, ze))
            first += len(p)
    m = np.array(meta_rows if meta_rows is not None else metas, dtype=object)
    write_meta(root / f"{split}_meta.parquet", m[:, 0].astype(int), m[:, 1].astype(int), m[:, 2].astype(int),
               m[:, 3].astype(int), m[:, 4].astype(float) if truth else None, m[:, 5].astype(float) if truth else None)
    return root


@pytest.fixture
def fixture_dir(tmp_path):
    return write_fixture(tmp_path / "data")


def test_golden_fixture_schema(fixture_dir):
    table = pq.read_table(fixture_dir / "train" / "batch_1.parquet")
    types = {f.name: f.type for f in table.schema}
    assert types == {"sensor_id": pa.int16(), "time": pa.int64(), "charge": pa.float64(),
                     "auxiliary": pa.bool_(), "event_id": pa.int64()}
    assert b'"index_columns": ["event_id"]' in table.schema.metadata[b"pandas"]
    meta = pq.read_table(fixture_dir / "train_meta.parquet")
    assert meta.column_names == ["batch_id", "event_id", "first_pulse_index", "last_pulse_index", "azimuth", "zenith"]


def test_golden_fixture_reads_back(fixture_dir):
    assert list_batches(fixture_dir) == [1, 2]
    c = read_chunk(fixture_dir, "train", 1)
    assert c.event_id.tolist() == [10, 20, 30]
    assert c.offsets.tolist() == [0, 3, 4, 6]
    assert c.n_pulses.tolist() == [3, 1, 2]
    assert c.sensor_id.tolist() == [0, 1, 2, 4000, 5159, 5100]
    assert c.time.tolist() == [6000, 6080, 6160, 7000, 9000, 9100]
    assert c.charge.tolist() == [1.025, 0.5, 2.0, 0.975, 3.5, 0.25]
    assert c.auxiliary.tolist() == [False, True, False, False, True, False]
    np.testing.assert_allclose(c.x, GEO[c.sensor_id, 0])
    np.testing.assert_allclose(c.z, GEO[c.sensor_id, 2])
    assert (c.x[0], c.y[0], c.z[0]) == (-256.14, -521.08, 496.03)  # sensor 0 of the shipped table
    np.testing.assert_allclose(c.azimuth, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(c.zenith, [0.3, 2.5, 1.2])
    c2 = read_chunk(fixture_dir, "train", 2)
    assert c2.event_id.tolist() == [40] and c2.offsets.tolist() == [0, 2]


def test_test_split_has_no_truth(tmp_path):
    root = write_fixture(tmp_path / "d", truth=False, split="test")
    c = read_chunk(root, "test", 1)
    assert c.azimuth is None and c.zenith is None
    batch = chunk_to_batch(c, TimeOrder(TimeOrder.Config(max_pulses=8)), [KaggleNorm(KaggleNorm.Config())],
                           np.random.default_rng(0))
    assert batch.target is None


def test_chunk_to_batch_padding_and_units(fixture_dir):
    c = read_chunk(fixture_dir, "train", 1)
    b = chunk_to_batch(c, TimeOrder(TimeOrder.Config(max_pulses=2)), [KaggleNorm(KaggleNorm.Config())],
                       np.random.default_rng(0))
    assert b.features.shape == (3, 2, 6) and b.mask.tolist() == [[True, True], [True, False], [True, True]]
    assert b.n_pulses.tolist() == [3, 1, 2] and b.event_id.tolist() == [10, 20, 30]
    # xyzt: metres and ns relative to the first selected pulse; padding zero and PAD_SENSOR
    assert b.xyzt[0, :, 3].tolist() == [0.0, 80.0]
    assert b.xyzt[2, :, 3].tolist() == [0.0, 100.0]
    assert b.xyzt[1, 1].tolist() == [0.0, 0.0, 0.0, 0.0] and b.sensor_id[1, 1] == 5160
    assert b.sensor_id[2].tolist() == [5159, 5100]
    np.testing.assert_allclose(b.xyzt[0, 0, :3].numpy(), [-256.14, -521.08, 496.03], rtol=1e-6)
    np.testing.assert_allclose(b.features[0, 1].numpy(), [GEO[1, 0] / 500, GEO[1, 1] / 500, GEO[1, 2] / 500,
                                                           (6080 - 1e4) / 3e4, np.log10(0.5) / 3, 0.5], rtol=1e-5)
    np.testing.assert_allclose(b.target.norm(dim=1).numpy(), 1.0, rtol=1e-6)


def test_direction_convention_downward_event(tmp_path):
    """Pulses moving down a string over time: the particle comes from above, zenith < pi/2, target z > 0."""
    sensors = np.arange(10, 20)  # string 1, DOMs 11..20: z decreases with the DOM number
    assert (np.diff(GEO[sensors, 2]) < 0).all()
    times = 6000 + np.arange(10) * 17.0 / 0.3  # ~ one DOM spacing per 57 ns, moving down
    root = write_fixture(tmp_path / "d", {1: [(1, [(int(s), int(t), 1.0, False) for s, t in zip(sensors, times)],
                                               0.7, 0.2)]})
    b = chunk_to_batch(read_chunk(root, "train", 1), TimeOrder(TimeOrder.Config(max_pulses=16)),
                       [KaggleNorm(KaggleNorm.Config())], np.random.default_rng(0))
    assert b.target[0, 2] > 0  # zenith 0.2 < pi/2 -> the vector points up, where the particle came from
    # a LineFit on the batch's xyzt: velocity points down, the derived direction -v/|v| up, near the truth
    xyz, t = b.xyzt[0, :, :3].double().numpy(), b.xyzt[0, :, 3].double().numpy()
    v = ((xyz * t[:, None]).mean(0) - xyz.mean(0) * t.mean()) / (t.var())
    u = -v / np.linalg.norm(v)
    assert v[2] < 0 and u[2] > 0.9 and np.arccos(u[2]) < np.pi / 2


def test_batch_ranges():
    avail = list(range(1, 11))
    assert parse_batches("3:5", avail) == [3, 4, 5]
    assert parse_batches("(1, 600)", avail) == avail  # the log's form, clipped to what exists
    assert parse_batches("1,4,7", avail) == [1, 4, 7]
    assert parse_batches("cycle", avail) == avail
    with pytest.raises(IcezooError, match="11"):
        parse_batches("1,11", avail)
    with pytest.raises(IcezooError, match="expected"):
        parse_batches("abc", avail)
    with pytest.raises(IcezooError, match="no available"):
        parse_batches("20:30", avail)


@given(ids=st.lists(st.integers(0, 700), min_size=1, max_size=60),
       extra=st.lists(st.integers(0, 700), max_size=60))
def test_format_batches_round_trips_through_parse_batches(ids, extra):
    """What the ledger and the evaluation write as a batch range reads back as the same files."""
    from icezoo.data.io import format_batches

    text = format_batches(ids)
    assert parse_batches(text, ids + extra) == sorted(set(ids))
    assert format_batches(parse_batches(text, ids)) == text


def test_format_batches_writes_runs_as_ranges():
    from icezoo.data.io import format_batches

    assert format_batches([5, 1, 2, 3]) == "1-3,5" and format_batches([7]) == "7" and format_batches([]) == "-"
    assert parse_batches("1-3,5", list(range(1, 11))) == [1, 2, 3, 5]
    assert parse_batches("1:3,9", list(range(1, 11))) == [1, 2, 3, 9]
    with pytest.raises(IcezooError, match="empty range"):
        parse_batches("4-2", list(range(1, 11)))


def test_split_batches_holds_out_validation():
    train, val = split_batches(list(range(1, 21)))
    assert val == [19, 20] and train == list(range(1, 19))
    train, val = split_batches([1, 2, 3], "1:2")
    assert (train, val) == ([1, 2], [3])
    train, val = split_batches(list(range(1, 11)), "cycle", "1")
    assert val == [1] and 1 not in train and len(train) == 9
    with pytest.raises(IcezooError, match="also training"):
        split_batches([1, 2, 3], "1:3", "3")
    with pytest.raises(IcezooError, match="no training batch"):
        split_batches([1])
    # one file (e.g. icezoo simulate below its default 50,000 events per file): say what to do
    with pytest.raises(IcezooError, match="at least 2 batch files.*--events-per-batch"):
        split_batches([1])


# ---------------------------------------------------------------------------------------------
# Bad input: one IcezooError line naming the file (and row / event)


def _raises(fn, *needles):
    with pytest.raises(IcezooError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert str(n) in msg, msg
    return msg


def test_missing_file_and_meta(fixture_dir):
    _raises(lambda: read_chunk(fixture_dir, "train", 7), "batch_7.parquet", "not found")
    (fixture_dir / "train_meta.parquet").unlink()
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "train_meta.parquet", "not found")


def test_empty_or_missing_directory(tmp_path):
    (tmp_path / "train").mkdir()
    _raises(lambda: list_batches(tmp_path), "train", "empty")
    _raises(lambda: list_batches(tmp_path / "nope"), "nope", "not found")
    _raises(lambda: read_chunk(tmp_path / "nope", "train", 1), "nope", "train")


def _rewrite(path, **columns):
    table = pq.read_table(path)
    for name, values in columns.items():
        if values is None:
            table = table.drop_columns([name])
        else:
            table = table.set_column(table.column_names.index(name), name, values)
    pq.write_table(table, path)


def test_missing_column(fixture_dir):
    _rewrite(fixture_dir / "train" / "batch_1.parquet", charge=None)
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "batch_1.parquet", "charge")


def test_wrong_dtype(fixture_dir):
    _rewrite(fixture_dir / "train" / "batch_1.parquet", time=pa.array(["a"] * 6))
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "batch_1.parquet", "time", "dtype")


def test_sensor_outside_geometry(fixture_dir):
    _rewrite(fixture_dir / "train" / "batch_1.parquet", sensor_id=pa.array([0, 1, 2, 6000, 5, 6], pa.int16()))
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "batch_1.parquet", "row 3", "event 20", "6000")


def test_nan_charge_and_time(fixture_dir):
    path = fixture_dir / "train" / "batch_1.parquet"
    _rewrite(path, charge=pa.array([1.0, 1.0, 1.0, 1.0, float("nan"), 1.0]))
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "batch_1.parquet", "row 4", "event 30", "charge")
    _rewrite(path, charge=pa.array([1.0] * 6), time=pa.array([1.0, float("nan"), 3.0, 4.0, 5.0, 6.0]))
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "batch_1.parquet", "row 1", "event 10", "time")


def test_meta_indices_not_matching(tmp_path):
    rows = [(1, 10, 0, 2, 1.0, 0.3), (1, 20, 3, 4, 2.0, 2.5), (1, 30, 5, 5, 3.0, 1.2),
            (2, 40, 0, 1, 0.5, 1.5)]  # event 20 claims 2 pulses, event 30 one
    root = write_fixture(tmp_path / "d", meta_rows=rows)
    _raises(lambda: read_chunk(root, "train", 1), "batch_1.parquet", "row 4", "event")
    rows = [(1, 10, 0, 2, 1.0, 0.3), (1, 20, 3, 3, 2.0, 2.5), (1, 30, 4, 6, 3.0, 1.2), (2, 40, 0, 1, 0.5, 1.5)]
    root = write_fixture(tmp_path / "e", meta_rows=rows)
    _raises(lambda: read_chunk(root, "train", 1), "train_meta.parquet", "batch 1", "rows 0..6")
    rows = [(1, 10, 0, 2, 1.0, 0.3), (1, 20, 4, 4, 2.0, 2.5), (1, 30, 5, 5, 3.0, 1.2), (2, 40, 0, 1, 0.5, 1.5)]
    root = write_fixture(tmp_path / "f", meta_rows=rows)
    _raises(lambda: read_chunk(root, "train", 1), "train_meta.parquet", "event 20", "expected first_pulse_index 3")


def test_bad_meta_dtype_and_nulls(fixture_dir):
    meta = fixture_dir / "train_meta.parquet"
    table = pq.read_table(meta)
    pq.write_table(table.set_column(2, "first_pulse_index", pa.array([0.0, 3.0, 4.0, 0.0])), meta)
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "train_meta.parquet", "first_pulse_index", "dtype")
    pq.write_table(table.set_column(3, "last_pulse_index", pa.array([2, None, 5, 1], pa.int64())), meta)
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "train_meta.parquet", "event 20", "null")


def test_truncated_parquet(fixture_dir):
    path = fixture_dir / "train" / "batch_1.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises(lambda: read_chunk(fixture_dir, "train", 1), "batch_1.parquet", "truncated")
    meta = fixture_dir / "train_meta.parquet"
    meta.write_bytes(meta.read_bytes()[:100])
    _raises(lambda: read_chunk(fixture_dir, "train", 2), "train_meta.parquet")


def test_unsorted_times_are_sorted_within_events(tmp_path):
    root = write_fixture(tmp_path / "d", {1: [(5, [(0, 7000, 1.0, False), (1, 6000, 2.0, True), (2, 6500, 3.0, False)],
                                               0.1, 0.2), (6, [(3, 100, 1.0, False), (4, 50, 1.0, False)], 0.1, 0.2)]})
    c = read_chunk(root, "train", 1)
    assert c.time.tolist() == [6000, 6500, 7000, 50, 100]
    assert c.sensor_id.tolist() == [1, 2, 0, 4, 3] and c.charge.tolist() == [2.0, 3.0, 1.0, 1.0, 1.0]


def test_cli_error_exits_2_with_one_line(capsys):
    from icezoo.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "data", "--data", "/nonexistent/icezoo"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "/nonexistent/icezoo" in err and len(err.splitlines()) == 1


def test_cli_inspect(tmp_path, capsys):
    from icezoo.cli.main import main

    write_toy_dataset(tmp_path / "d", n_files=2, events_per_file=50, seed=1)
    main(["inspect", "--data", str(tmp_path / "d")])  # returns normally on success
    out = capsys.readouterr().out
    assert "train: 2 batch file(s)" in out and "100 events" in out
