"""The built-in data formats, registered through the same hook (``icezoo_formats``) a third party's
format uses: the Kaggle layout, GraphNeT SQLite and GraphNeT Parquet (:mod:`icezoo.data.formats`)."""

from __future__ import annotations

from icezoo.core import hookimpl


@hookimpl
def icezoo_formats():
    from icezoo.data.formats import format_classes

    return format_classes(include_plugins=False)
