"""The ``icezoo`` command. Heavy imports (torch, the zoo) happen inside commands, so ``--help``
and usage errors are instant; every IcezooError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys

import typer

from icezoo.core.errors import IcezooError

app = typer.Typer(
    name="icezoo",
    help="A plugin model zoo for IceCube neutrino direction reconstruction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: speed and memory (figures go to docs/performance.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _register_commands() -> None:
    """Each command family lives in its own module and adds itself here."""
    from icezoo.cli import components

    components.register(app, bench_app)
    for module in ("icezoo.cli.simulate", "icezoo.cli.data", "icezoo.cli.engine", "icezoo.cli.studies"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(app, bench_app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point. Typer handles usage errors (exit 2) and --help (exit 0, returning normally); an IcezooError raised by a
    command becomes ``error: ...`` on stderr and exit 2, never a traceback; so does an OSError
    (one line: the path and the OS's reason)."""
    from icezoo.core.memory import keep_freed_memory

    keep_freed_memory()  # every command: the hot loops reuse freed blocks (icezoo/core/memory.py)
    try:
        app(args=argv, prog_name="icezoo")
    except SystemExit as exc:  # typer exits after every command; success returns normally
        if exc.code not in (0, None):
            raise
    except IcezooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # read-only filesystem, disk full, permissions: the path and the OS's reason
        from icezoo.core.atomic import os_error_line

        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # under torchrun: a peer rank stopped (its own error line is above)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and type(exc).__module__.startswith("torch"):
            print(f"error: rank {os.environ.get('RANK', '?')}: stopped because another rank failed "
                  f"({type(exc).__name__})", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
