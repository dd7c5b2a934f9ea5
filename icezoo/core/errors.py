"""One exception type for every user-facing error: the CLI prints its message as one line, exit 2."""

from __future__ import annotations


class IcezooError(Exception):
    """A clear, one-line error about the user's input (a file, a field, a name)."""


def format_validation_error(prefix: str, error) -> str:
    """A pydantic ValidationError as ``prefix.field.sub: message`` (first error; count of others)."""
    items = error.errors()
    first = items[0]
    path = ".".join([prefix, *(str(p) for p in first["loc"])]) if prefix else ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown parameter"
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{path}: {msg}{more}"
