"""The hooks a plugin implements. Built-ins use exactly these hooks too.

A plugin is a module (or object) registered from the entry-point group ``icezoo``
(``[project.entry-points.icezoo] name = "package.module"``) or, for built-ins, from
:data:`icezoo.plugins.DEFAULT_PLUGINS`. The component classes a plugin module defines are registered
without a hook (:func:`icezoo.core.registry.defined_components`); the ``@hookimpl`` functions below
add what a module does not define itself.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("icezoo")
hookimpl = pluggy.HookimplMarker("icezoo")


@hookspec
def icezoo_components():
    """Return an iterable of component classes (subclasses of the core's base classes) defined
    outside the plugin module (those it defines are registered already; listing one again is harmless).

    Each class names its ``kind`` and ``name``; two providers of the same (kind, name) is an error.
    """


@hookspec
def icezoo_pipeline_files():
    """Return an iterable of paths to TOML files with ``[pipelines.NAME]`` tables to add.

    A pipeline name defined twice (across files) is an error naming both files.
    """


@hookspec
def icezoo_study_files():
    """Return an iterable of paths to TOML files with ``[studies.NAME]`` tables (``icezoo reproduce``).

    A study name defined twice (across files) is an error naming both files.
    """


@hookspec
def icezoo_formats():
    """Return an iterable of data-source classes (subclasses of ``icezoo.data.formats.DataSource``).

    Each names its ``format``; the first whose ``detect(path)`` accepts ``--data`` reads it (the
    built-ins are tried first). Two providers of one format name is an error.
    """
