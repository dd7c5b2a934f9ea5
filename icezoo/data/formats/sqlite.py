"""GraphNeT's SQLite databases (one ``.db`` file: a table per pulse map, a ``truth`` table), read in
``event_no`` ranges through the pulse table's ``event_no`` index (GraphNeT's writer makes one),
never the whole table. See :mod:`.graphnet` for the schema and the mapping.

Range reads go through the ADBC SQLite driver (Arrow columns straight from SQLite's C API, no Python
object per value: the ``sqlite`` extra) when it is installed, else through Python's ``sqlite3``; both
give the same float64 columns bit for bit (tests/test_formats.py). ``ICEZOO_SQLITE_READER=sqlite3``
forces the fallback (benchmarks/graphnet_formats.py compares the two)."""

from __future__ import annotations

import itertools
import os
import sqlite3
import weakref
from pathlib import Path

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.data.formats.graphnet import GraphNetSource

MAGIC = b"SQLite format 3\x00"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteSource(GraphNetSource):
    """A GraphNeT SQLite file: batches are fixed-size event_no ranges (see :mod:`.graphnet`)."""

    format = "graphnet-sqlite"
    summary = "GraphNeT SQLite database (.db): a table per pulse map + truth, one row per pulse / event"

    @classmethod
    def detect(cls, path: Path) -> bool:
        if not path.is_file():
            return False
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head == MAGIC:
            return True
        if path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
            raise IcezooError(f"{path}: not a SQLite file (no 'SQLite format 3' header)")
        return False

    @property
    def _con(self) -> sqlite3.Connection:
        con = self.__dict__.get("_h_con")
        if con is None:
            try:
                con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.DatabaseError as exc:
                raise IcezooError(f"{self.path}: not a SQLite file ({exc})") from None
            self.__dict__["_h_con"] = con
        return con

    def _sql(self, query: str, args=()):
        try:
            return self._con.execute(query, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise IcezooError(f"{self.path}: SQLite error ({exc}) in: {query[:80]}") from None

    def _tables(self) -> dict[str, list[str]]:
        cache = self.__dict__.get("_h_tables")
        if cache is None:
            names = [r[0] for r in self._sql("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            cache = {n: [r[1] for r in self._sql(f"PRAGMA table_info({_quote(n)})")] for n in names}
            self.__dict__["_h_tables"] = cache
        return cache

    def where(self, table: str) -> str:
        return f"{self.path}: table {table}"

    def _index_rows(self, table: str):
        rows = self._sql(f"SELECT event_no, COUNT(*) FROM {_quote(table)} GROUP BY event_no ORDER BY event_no")
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        arr = np.array(rows, dtype=np.float64)
        if not np.isfinite(arr[:, 0]).all():
            raise IcezooError(f"{self.where(table)}: event_no is null in some rows")
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)

    def _adbc(self):
        """The ADBC connection (read-only), or None where the driver is missing or switched off."""
        if "_h_adbc" not in self.__dict__:
            con = None
            if os.environ.get("ICEZOO_SQLITE_READER", "adbc") != "sqlite3":
                try:
                    import adbc_driver_sqlite.dbapi as adbc
                    con = adbc.connect(f"file:{self.path}?mode=ro")
                    weakref.finalize(self, con.close)  # closed when the source goes, or at exit (no warning)
                except Exception:  # not installed or cannot open: the sqlite3 path reports any real error
                    con = None
            self.__dict__["_h_adbc"] = con
        return self.__dict__["_h_adbc"]

    def _read(self, table, columns, lo=None, hi=None, distinct=False):
        sel = ", ".join(_quote(c) for c in columns)
        query = f"SELECT {'DISTINCT ' if distinct else ''}{sel} FROM {_quote(table)}"
        args: tuple = ()
        if lo is not None:
            query += " WHERE event_no >= ? AND event_no <= ?"
            args = (int(lo), int(hi))
        fast = _read_adbc(self._adbc(), query, args, columns)
        if fast is not None:
            return fast
        width, parts = len(columns), []
        try:
            cur = self._con.execute(query, args)
            while rows := cur.fetchmany(1 << 16):  # bounded Python objects: one block of rows at a time
                try:  # one flat pass per block (no numpy conversion of a list of tuples)
                    parts.append(np.fromiter(itertools.chain.from_iterable(rows), np.float64, len(rows) * width))
                except (TypeError, ValueError):
                    c, r = _non_numeric(rows, columns)
                    raise IcezooError(f"{self.where(table)}: column {c} holds {rows[r][columns.index(c)]!r} "
                                      f"(event_no {rows[r][0] if columns[0] == 'event_no' else '?'}), expected a "
                                      f"number") from None
        except sqlite3.DatabaseError as exc:
            raise IcezooError(f"{self.path}: SQLite error ({exc}) in: {query[:80]}") from None
        arr = (np.concatenate(parts) if parts else np.zeros(0)).reshape(-1, width)
        return {c: arr[:, i] for i, c in enumerate(columns)}


def _read_adbc(con, query: str, args: tuple, columns: list[str]) -> dict[str, np.ndarray] | None:
    """``columns`` as float64 arrays (NULL -> NaN, integers -> float, as the sqlite3 path makes them)
    through ADBC, one Arrow record batch at a time; None (use sqlite3) when a value is not a number
    or the driver fails, so that the sqlite3 path gives its one-line error or its result."""
    if con is None:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[list[np.ndarray]] = [[] for _ in columns]
    try:
        cur = con.cursor()
        try:  # 65,536 rows a record batch (the driver's default is 1,024): fewer Python steps per range
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(1 << 16)})
            cur.execute(query, args)
            for batch in cur.fetch_record_batch():
                for i, col in enumerate(batch.columns):
                    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
                        return None  # text or blobs: the sqlite3 path names the column and the value
                    col = pc.cast(col, pa.float64())
                    parts[i].append(col.to_numpy(zero_copy_only=False) if col.null_count == 0
                                    else pc.fill_null(col, float("nan")).to_numpy())
        finally:
            cur.close()
    except Exception:  # e.g. a later value of another type than the first batch's: sqlite3 decides
        return None
    return {c: np.concatenate(p) if p else np.zeros(0) for c, p in zip(columns, parts)}


def _non_numeric(rows, columns) -> tuple[str, int]:
    """(column, row) of the first value that is not a number."""
    for r, row in enumerate(rows):
        for i, v in enumerate(row):
            if v is not None and not isinstance(v, (int, float)):  # text or a blob (NULL reads as NaN)
                return columns[i], r
    return columns[0], 0
