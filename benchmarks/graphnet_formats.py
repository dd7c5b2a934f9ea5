"""Reading speed of the three built-in formats on the same events (docs/performance.md, issue 22).

    python benchmarks/graphnet_formats.py --work /tmp/formats --events 100000

Writes random toy events in the Kaggle layout (``write_toy_dataset``: I/O, not physics), converts
them to a GraphNeT Parquet folder with ``icezoo convert`` and copies that into a GraphNeT SQLite file
(one REAL column per field, an index on event_no, as GraphNeT's writer makes); then, for each,
times the event index (the one-off planning read) and runs ``icezoo bench data --max-pulses 128``
in its own process (POLARS_MAX_THREADS=1) for events per CPU-second and peak RSS. The SQLite file is
read twice: through ADBC (the ``sqlite`` extra; "graphnet-sqlite") and through Python's sqlite3
(``ICEZOO_SQLITE_READER=sqlite3``; "graphnet-sqlite (sqlite3)").
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def make_sqlite(parquet_dir: Path, db: Path) -> None:
    """GraphNeT's SQLite layout from its Parquet layout, one Parquet file at a time."""
    import pyarrow.parquet as pq

    con = sqlite3.connect(db)
    for table in sorted(p for p in parquet_dir.iterdir() if p.is_dir()):
        files = sorted(table.glob(f"{table.name}_*.parquet"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        names = pq.read_schema(files[0]).names
        decl = ", ".join(f"{c} {'INTEGER' if c == 'event_no' else 'REAL'}" for c in names)
        con.execute(f"CREATE TABLE {table.name} ({decl})")
        for f in files:
            t = pq.read_table(f)
            cols = [t[c].to_numpy().tolist() for c in names]
            con.executemany(f"INSERT INTO {table.name} VALUES ({', '.join('?' * len(names))})", zip(*cols))
        con.execute(f"CREATE INDEX event_no_{table.name} ON {table.name} (event_no)")
        con.commit()
    con.close()


def run(cmd: list[str], **extra: str) -> str:
    env = dict(os.environ, POLARS_MAX_THREADS="1", OMP_NUM_THREADS="1", **extra)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    from icezoo.data.toy import write_toy_dataset

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    kaggle, gn, db = work / "kaggle", work / "graphnet_parquet", work / "graphnet.db"
    per_file = min(50_000, args.events)
    if not kaggle.exists():
        write_toy_dataset(kaggle, n_files=-(-args.events // per_file), events_per_file=per_file, seed=0, mean_pulses=80)
    if not gn.exists():
        run([sys.executable, "-m", "icezoo", "convert", "--data", str(kaggle), "--out", str(gn)])
    if not db.exists():
        make_sqlite(gn, db)
    for name, path, env in (("kaggle", kaggle, {}), ("graphnet-parquet", gn, {}), ("graphnet-sqlite", db, {}),
                            ("graphnet-sqlite (sqlite3)", db, {"ICEZOO_SQLITE_READER": "sqlite3"})):
        t0, c0 = time.perf_counter(), time.process_time()
        code = (f"from icezoo.data.formats import open_source; import time; c=time.process_time(); "
                f"s=open_source({str(path)!r}); print(len(s.batch_ids('train')), round(time.process_time()-c, 2))")
        index = run([sys.executable, "-c", code], **env)
        bench = run([sys.executable, "-m", "icezoo", "bench", "data", "--data", str(path), "--max-pulses", "128",
                     "--passes", str(args.passes)], **env)
        print(f"{name}: index (batches, CPU s) {index} [{time.perf_counter() - t0:.0f} s wall, "
              f"{time.process_time() - c0:.1f} s here]\n  {bench}", flush=True)


if __name__ == "__main__":
    main()
