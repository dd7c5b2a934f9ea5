"""``icezoo show``: a named pipeline fully resolved as TOML, or a component's details."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from icezoo.cli.common import component_details
from icezoo.core.errors import IcezooError


def cmd_show(
    name: str = typer.Argument(..., help="pipeline name, component name (its parameters and properties), or a "
                               "model bundle directory (icezoo export)"),
    pipeline_file: Optional[Path] = typer.Option(None, help="look the name up in this TOML file too"),
    toml: bool = typer.Option(False, "--toml", help="plain TOML, never wrapped (also the output when piped)"),
) -> None:
    """A named pipeline fully resolved (parents merged, every param with its default) as TOML that
    ``--pipeline-file`` reloads; or a component's details; or a model bundle's manifest."""
    import sys

    from icezoo.core.names import normalise
    from icezoo.core.pipelines import pipeline_config, resolved_table
    from icezoo.core.tomlwrite import pipelines_toml
    from icezoo.zoo import registry

    reg = registry()
    if Path(name).is_dir() and ((Path(name) / "manifest.json").exists() or normalise(name) not in reg.pipelines):
        from icezoo.engine.bundle import read_bundle
        from icezoo.engine.model_card import describe_bundle

        print(describe_bundle(read_bundle(name), name))  # a model bundle (icezoo export)
        return
    is_pipeline = pipeline_file is not None or normalise(name) in reg.pipelines
    if not is_pipeline:
        specs = [spec for spec in reg.list() if normalise(name) in (normalise(spec.name),
                                                                     *map(normalise, spec.cls.aliases))]
        if specs:
            print("\n\n".join(component_details(spec) for spec in specs))
            return
        try:
            reg.pipelines.find(name)
        except IcezooError as exc:
            raise IcezooError(f"{exc} (nor a component: icezoo list shows them)") from None
    config = pipeline_config(name, pipeline_file, reg=reg)
    text = pipelines_toml({config.name: resolved_table(config, reg)})
    if toml or not sys.stdout.isatty():
        sys.stdout.write(text)  # exactly the TOML: no colours, no wrapping
        return
    from rich.console import Console
    from rich.syntax import Syntax

    Console().print(Syntax(text, "toml", word_wrap=True))
