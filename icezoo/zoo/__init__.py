"""The assembled zoo: the core's registry filled with the built-in plugins and the installed ones.

It registers the built-in plugin modules listed in :data:`icezoo.plugins.DEFAULT_PLUGINS` (so that
the core itself imports no plugin), then the entry points, and builds checked pipelines into
models. Resolving a pipeline name is :mod:`icezoo.core.pipelines`' work; the zoo only assembles.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

from icezoo.core.compose import Pipeline, compose
from icezoo.core.pipelines import PipelineConfig
from icezoo.core.registry import Registry, build_registry
from icezoo.plugins import DEFAULT_PLUGINS


def make_registry(extra_plugins: Iterable[tuple[str, Any]] = (), autoload: bool | None = None) -> Registry:
    """A fresh registry: built-ins, then entry points (unless disabled), then ``extra_plugins``."""
    from icezoo.core.version import __version__

    return build_registry(DEFAULT_PLUGINS, extra_plugins=extra_plugins, autoload=autoload,
                          builtin_package=("icezoo", __version__))


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry (built once)."""
    return make_registry()


def build(config: PipelineConfig, reg: Registry | None = None) -> Pipeline:
    """Compose a validated pipeline into a torch module."""
    return compose(config, reg or registry())


__all__ = ["make_registry", "registry", "build"]
