"""Names a user types (components, pipelines, studies) and the TOML files that define them.

One lookup key (case and ``-``/``_`` do not matter), one "did you mean" hint for a miss, one
"defined twice" check for a name that two files define, and one TOML reader whose errors name the
file. The registry, :mod:`icezoo.core.pipelines` and the studies all use these, so a user sees the
same messages whatever they mistyped.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, MutableMapping, TypeVar

from icezoo.core.errors import IcezooError

T = TypeVar("T")


def normalise(name: str) -> str:
    """Lookup key of a component, pipeline or study name: case and ``-``/``_`` do not matter."""
    return name.strip().lower().replace("-", "_")


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"; did you mean 'a', 'b'?"`` naming up to three of ``names`` close to ``name``, else ``""``.

    Names are compared by their lookup keys and shown as written.
    """
    by_key = {normalise(n): n for n in names}
    close = difflib.get_close_matches(normalise(name), list(by_key), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(by_key[c]) for c in close)}?" if close else ""


def add_once(book: MutableMapping[str, T], name: str, value: T, file: str | Path, what: str) -> None:
    """Add ``value`` under ``name``'s lookup key; a name already there is an error naming both files
    (the earlier entry's ``file`` attribute, then ``file``)."""
    key = normalise(name)
    if key in book:
        raise IcezooError(f"{what} '{name}' is defined twice: in {getattr(book[key], 'file')} and in {file}")
    book[key] = value


def read_tables(path: str | Path, section: str, make: Callable[[str, dict[str, Any], str], T],
                what: str) -> dict[str, T]:
    """The ``[SECTION.NAME]`` tables of a TOML file as ``make(name, table, file)``, keyed by lookup key
    (two spellings of one name in the file are an error); no such section is an empty dict."""
    tables = read_toml(path).get(section, {})
    if not isinstance(tables, dict):
        raise IcezooError(f"{path}: '{section}' must be a table of [{section}.NAME] tables")
    out: dict[str, T] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise IcezooError(f"{path}: {section}.{name} must be a table")
        add_once(out, name, make(name, table, str(path)), path, what)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; errors name the file and line."""
    from icezoo.core.atomic import readable_file

    try:
        text = readable_file(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IcezooError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IcezooError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IcezooError(f"{path}: malformed TOML: {exc}") from None
