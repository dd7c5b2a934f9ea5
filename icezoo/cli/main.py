"""The ``icezoo`` command. Each command lives in the module of its name (``icezoo bench ...`` in
bench.py) and only parses flags, calls one engine or data function and prints; heavy imports
(torch, the zoo) happen inside the commands, so ``--help`` and usage errors are instant. Every
IcezooError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys

import typer

from icezoo.cli.bench import cmd_bench_data, cmd_bench_export, cmd_bench_model, cmd_bench_predict, cmd_bench_sim
from icezoo.cli.calibrate import cmd_calibrate
from icezoo.cli.compose import cmd_compose
from icezoo.cli.convert import cmd_convert
from icezoo.cli.evaluate import cmd_evaluate
from icezoo.cli.experiments import cmd_experiments
from icezoo.cli.export import cmd_export
from icezoo.cli.inspect import cmd_inspect
from icezoo.cli.linefit import cmd_linefit
from icezoo.cli.list import cmd_list
from icezoo.cli.predict import cmd_predict
from icezoo.cli.pretrain import cmd_pretrain
from icezoo.cli.reproduce import cmd_reproduce
from icezoo.cli.runs import cmd_runs
from icezoo.cli.show import cmd_show
from icezoo.cli.stack import cmd_stack
from icezoo.cli.simulate import cmd_simulate
from icezoo.cli.train import cmd_train
from icezoo.core.errors import IcezooError

#: ``icezoo NAME``: the function each command runs (a new command: its module, then one line here)
COMMANDS = {
    "list": cmd_list, "compose": cmd_compose, "show": cmd_show,
    "simulate": cmd_simulate, "linefit": cmd_linefit, "inspect": cmd_inspect, "convert": cmd_convert,
    "train": cmd_train, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "predict": cmd_predict, "runs": cmd_runs,
    "experiments": cmd_experiments, "reproduce": cmd_reproduce, "stack": cmd_stack,
    "calibrate": cmd_calibrate, "export": cmd_export,
}
#: ``icezoo bench NAME``
BENCH_COMMANDS = {"sim": cmd_bench_sim, "data": cmd_bench_data, "model": cmd_bench_model,
                  "predict": cmd_bench_predict, "export": cmd_bench_export}

app = typer.Typer(
    name="icezoo",
    help="A plugin model zoo for IceCube neutrino direction reconstruction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: speed and memory (figures go to docs/performance.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)
for _name, _fn in BENCH_COMMANDS.items():
    bench_app.command(_name)(_fn)


def _oom_reason(exc: BaseException) -> str:
    """``an allocation of 37.3 GiB was refused`` from torch's words, else its first line."""
    import re

    asked = re.search(r"[Tt]ried to allocate ([\d.]+) ?(\w+)", str(exc))
    if asked:
        n, unit = asked.groups()
        size = f"{float(n) / 2**30:.1f} GiB" if unit == "bytes" else f"{n} {unit}"
        return f"an allocation of {size} was refused"
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


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
    except Exception as exc:  # an allocation refused; under torchrun: a peer rank stopped (its own error line is above)
        from icezoo.core.memory import out_of_memory

        if out_of_memory(exc):
            print(f"error: out of memory ({_oom_reason(exc)}): lower train.batch_size, selection.max_pulses or the "
                  f"model's sizes", file=sys.stderr)
            sys.exit(2)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and type(exc).__module__.startswith("torch"):
            print(f"error: rank {os.environ.get('RANK', '?')}: stopped because another rank failed "
                  f"({type(exc).__name__})", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
