"""GraphNeT's Parquet folders (its merged writer): ``DIR/<table>/<table>_<i>.parquet``, chunk ``i``
of every table holding the same events. Read lazily with polars: an ``event_no`` range is a
predicate the row-group statistics push down, never the whole table. See :mod:`.graphnet` for the
schema and the mapping."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from icezoo.core.errors import IcezooError
from icezoo.data.checks import first_line
from icezoo.data.formats.graphnet import GraphNetSource


def table_files(folder: Path) -> list[Path]:
    """``folder/<name>_<i>.parquet`` in chunk order (``folder`` is ``DIR/<name>``)."""
    pat = re.compile(rf"^{re.escape(folder.name)}_(\d+)\.parquet$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pat.match(p.name))]
    return [p for _, p in sorted(found)]


class ParquetSource(GraphNetSource):
    """A GraphNeT Parquet folder: batches are fixed-size event_no ranges, as for SQLite."""

    format = "graphnet-parquet"
    summary = "GraphNeT Parquet folder: DIR/<table>/<table>_<i>.parquet per pulse map and truth"

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_dir() and any(sub.is_dir() and table_files(sub) for sub in path.iterdir())

    def _tables(self) -> dict[str, list[str]]:
        cache = self.__dict__.get("_h_tables")
        if cache is None:
            import polars as pl

            cache = {}
            for sub in sorted(self.path.iterdir()):
                files = table_files(sub) if sub.is_dir() else []
                if files:
                    try:
                        cache[sub.name] = list(pl.read_parquet_schema(files[0]))
                    except Exception as exc:  # noqa: BLE001
                        raise IcezooError(f"{files[0]}: cannot read parquet (truncated or corrupt?): "
                                          f"{first_line(exc)}") from None
            self.__dict__["_h_tables"] = cache
        return cache

    def where(self, table: str) -> str:
        return str(self.path / table)

    def _scan(self, table: str):
        import polars as pl

        return pl.scan_parquet(table_files(self.path / table))

    def _collect(self, table: str, lf):
        try:
            return lf.collect()
        except Exception as exc:  # noqa: BLE001
            raise IcezooError(f"{self.where(table)}: cannot read parquet: {first_line(exc)}") from None

    def _index_rows(self, table: str):
        import polars as pl

        df = self._collect(table, self._scan(table).group_by("event_no").agg(pl.len().alias("n")).sort("event_no"))
        if df["event_no"].null_count():
            raise IcezooError(f"{self.where(table)}: event_no is null in some rows")
        return df["event_no"].to_numpy().astype(np.int64), df["n"].to_numpy().astype(np.int64)

    def _read(self, table, columns, lo=None, hi=None, distinct=False):
        import polars as pl

        lf = self._scan(table)
        if lo is not None:
            lf = lf.filter(pl.col("event_no").is_between(int(lo), int(hi)))
        lf = lf.select(columns)
        if distinct:
            lf = lf.unique()
        df = self._collect(table, lf)
        out = {}
        for c in columns:
            col = df[c]
            if not col.dtype.is_numeric() and col.dtype != pl.Boolean:
                raise IcezooError(f"{self.where(table)}: column {c} has dtype {col.dtype}, expected a number")
            out[c] = col.cast(pl.Float64).fill_null(np.nan).to_numpy() if col.null_count() else col.to_numpy()
        return out
