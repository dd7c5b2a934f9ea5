"""The assembled zoo: the core's registry filled with the built-ins and installed plugins.

This is the one place that names the built-in plugins, so the core itself imports none.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from icezoo.core.components import STAGES
from icezoo.core.compose import Pipeline, compose
from icezoo.core.config import PipelineConfig, load_pipeline, pipeline_from_table
from icezoo.core.registry import Registry, build_registry, read_toml
from icezoo.core.errors import IcezooError
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


def pipeline_config(name: str | None = None, pipeline_file: str | Path | None = None,
                    reg: Registry | None = None) -> PipelineConfig:
    """A named pipeline, from the registry or from ``pipeline_file`` (whose pipelines may name
    registry pipelines as parents). With a file and no name, the file must hold exactly one."""
    reg = reg or registry()
    if pipeline_file is not None:
        tables = read_toml(Path(pipeline_file)).get("pipelines", {})
        if not isinstance(tables, dict) or not tables:
            raise IcezooError(f"{pipeline_file}: no [pipelines.NAME] table")
        if name is None:
            if len(tables) != 1:
                raise IcezooError(f"{pipeline_file}: holds {len(tables)} pipelines; say which with --pipeline")
            name = next(iter(tables))
        local = Registry(components=reg.components, pipelines=dict(reg.pipelines), plugins=reg.plugins,
                         aliases=reg.aliases)
        for key in [k for k, src in local.pipelines.items() if src.name in tables]:
            del local.pipelines[key]
        local.add_pipeline_file(pipeline_file)
        return checked_pipeline(local, name)
    if name is None:
        raise IcezooError("name a pipeline (--pipeline NAME) or a file (--pipeline-file F)")
    return checked_pipeline(reg, name)


def checked_pipeline(reg: Registry, name: str) -> PipelineConfig:
    """A named pipeline, its shape and every component's params validated now, so that an error
    names the file the pipeline came from (``FILE: pipelines.NAME.backbone.dpeth: unknown parameter``)."""
    source = reg.pipeline(name)
    try:
        config = load_pipeline(reg, name)
        resolved_table(config, reg)
    except IcezooError as exc:
        msg = str(exc)
        raise IcezooError(msg if msg.startswith(str(source.file)) else f"{source.file}: {msg}") from None
    return config


def resolved_table(config: PipelineConfig, reg: Registry | None = None) -> dict[str, Any]:
    """The pipeline's table with every component's params filled in with their defaults."""
    from icezoo.core.compose import validate_params

    reg = reg or registry()
    table = config.to_table()
    root = f"pipelines.{config.name}"
    for stage in STAGES:
        kind, many = stage.kind, stage.many
        refs = config.refs(kind)
        out = []
        for i, ref in enumerate(refs):
            path = f"{root}.{kind}" + (f".{i}" if len(refs) > 1 else "")
            try:
                spec = reg.get(kind, ref.name)
            except IcezooError as exc:
                raise IcezooError(f"{path}: {exc}") from None
            params = validate_params(spec, ref.params, path).model_dump()
            entry = {"name": spec.name, **params}
            if kind == "loss":
                entry["weight"] = ref.weight
            out.append({**entry, **ref.options()})
        table[kind] = out if many or len(out) > 1 else out[0]
    table["train"] = config.train.model_dump()
    return table


def build(config: PipelineConfig, reg: Registry | None = None) -> Pipeline:
    """Compose a validated pipeline into a torch module."""
    return compose(config, reg or registry())


__all__ = ["make_registry", "registry", "pipeline_config", "build", "resolved_table", "pipeline_from_table"]
