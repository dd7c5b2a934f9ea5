"""``icezoo list``: the registered components, or the named pipelines, one line each."""

from __future__ import annotations

from typing import Optional

import typer

from icezoo.cli.common import compact_table, component_details, terminal_width
from icezoo.core.errors import IcezooError


def cmd_list(
    what: Optional[str] = typer.Argument(None, help="a kind (backbone, loss, ...), 'pipelines', 'formats', or a glob "
                                                  "such as 'dyn*'"),
    details: bool = typer.Option(False, "--details", help="parameters and properties of each match (as icezoo show)"),
) -> None:
    """List registered components (name, kind, provider, description) or named pipelines; one line each."""
    from icezoo.core.components import KINDS
    from icezoo.zoo import registry

    reg = registry()
    width = terminal_width()
    if what in ("formats", "format"):
        rows = [(name, reg.format_plugins.get(name, ""), cls.summary) for name, cls in reg.formats.items()]
        print(compact_table(("format", "provider", "what --data points at"), rows, width))
        return
    if what in ("pipelines", "pipeline"):
        rows = [(src.name, str(src.table.get("experiment", "")), str(src.table.get("log_score", "")),
                 str(src.table.get("parent", "")), " ".join(str(src.table.get("description", "")).split()))
                for src in sorted(reg.pipelines.values(), key=lambda s: s.name.lower())]
        print(compact_table(("name", "experiment", "log score", "parent", "description"), rows, width))
        return
    kind = what if what in KINDS else None
    pattern = None if (what is None or kind) else what
    specs = reg.list(kind=kind, pattern=pattern)
    if not specs:
        raise IcezooError(f"no component matches '{what}' (kinds: {', '.join(KINDS)}, or 'pipelines')")
    if details:
        print("\n\n".join(component_details(spec) for spec in specs))
        return
    rows = [(spec.name, spec.kind, spec.provider,
             spec.cls.description() + (f" (alias: {', '.join(spec.cls.aliases)})" if spec.cls.aliases else ""))
            for spec in specs]
    print(compact_table(("name", "kind", "provider", "description"), rows, width))
    if width is not None:
        print("details: icezoo show NAME (parameters, defaults, properties)")
