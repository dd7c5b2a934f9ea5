"""A tiny TOML writer for the values pipelines hold (str, int, float, bool, lists, tables).

None (an unset optional param) is left out, since TOML has no null."""

from __future__ import annotations

import json
import math
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v is not None]  # TOML has no null: None means "unset"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else json.dumps(key)


def pipelines_toml(tables: dict[str, dict[str, Any]]) -> str:
    """``[pipelines.NAME]`` sections, one ``key = value`` line per stage (inline tables)."""
    out = []
    for name, table in tables.items():
        out.append(f"[pipelines.{toml_key(name)}]")
        out.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None)
        out.append("")
    return "\n".join(out)
