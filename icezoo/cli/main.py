"""The ``icezoo`` command. Heavy imports (torch, the zoo) happen inside commands, so ``--help``
and usage errors are instant; every IcezooError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import sys

import click
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
    for module in ("icezoo.cli.simulate", "icezoo.cli.data", "icezoo.cli.engine"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(app, bench_app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; IcezooError -> ``error: ...`` and exit 2, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except IcezooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
