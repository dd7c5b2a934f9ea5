"""Small helpers every reader uses to turn a problem into one line naming the file and row."""

from __future__ import annotations

import numpy as np


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's multi-line error, cut to one line)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def first_null(df, columns) -> tuple[str, int] | None:
    """(column, row) of the first null among ``columns`` of a polars frame, or None."""
    for name in columns:
        if df[name].null_count():
            return name, int(np.flatnonzero(df[name].is_null().to_numpy())[0])
    return None
