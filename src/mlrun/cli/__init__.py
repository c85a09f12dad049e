"""The ``mlrun`` command line: one module per command, dispatched from a table.

Each command module has ``add_parser(subparsers, parent)`` and ``run(args) -> int``.
This module builds the top-level parser, makes ``mlrun RECIPE`` mean ``mlrun run RECIPE``,
lets ``key.path=value`` overrides stand anywhere, and turns errors into exit codes.

Exit codes: 0 success, 1 a failure during training, 2 bad input (nothing written),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from mlrun.cli import check, evaluate, export, launch, listing, new, plugins, predict, resume, run, runs, schema
from mlrun.cli import sweep as sweep_command
from mlrun.cli.output import rank_prefix, silence_stdout
from mlrun.errors import EXIT_BAD_INPUT, EXIT_FAILURE, MlrunError

#: Every command and its module, in the order ``mlrun --help`` lists them.
COMMANDS: dict[str, ModuleType] = {
    "run": run,
    "check": check,
    "resume": resume,
    "predict": predict,
    "evaluate": evaluate,
    "sweep": sweep_command,
    "export": export,
    "runs": runs,
    "list": listing,
    "plugins": plugins,
    "new": new,
    "schema": schema,
}

MAIN_EPILOG = """\
examples:
  mlrun recipes/summary.toml                   train the classic Fashion-MNIST classifier
  mlrun recipes/summary.toml train.epochs=1    ... for one epoch
  mlrun check recipes/summary.toml             validate and print the resolved recipe
  mlrun export runs/NAME --format onnx         the trained model for deployment (+ sidecar JSON)
  mlrun list                                   every component and the plugin that gave it
  mlrun plugins                                every plugin, its hooks and status
  mlrun new plugin mlrun-acme                  scaffold a plugin package

`mlrun RECIPE` is short for `mlrun run RECIPE`. Add --debug for tracebacks.
"""

OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from mlrun import __version__

    parser = argparse.ArgumentParser(
        prog="mlrun",
        description="Train PyTorch models from TOML recipes built from plugin components.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlrun {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--strict-plugins", action="store_true",
        help="a plugin that fails to load is an error (also: MLRUN_STRICT_PLUGINS=1)",
    )  # fmt: skip
    # What every subcommand accepts too. SUPPRESS: a subcommand without --debug must not
    # reset `mlrun --debug COMMAND`, and its help stays about the command itself.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(subparsers, parent)
    return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull out ``key.path=value`` words, so they may stand anywhere among the options."""
    overrides = [arg for arg in argv if OVERRIDE.match(arg)]
    return [arg for arg in argv if not OVERRIDE.match(arg)], overrides


def _with_default_command(argv: list[str]) -> list[str]:
    """``mlrun RECIPE ...`` means ``mlrun run RECIPE ...``."""
    for index, arg in enumerate(argv):
        if arg.startswith("-"):
            if arg in ("-h", "--help", "--version"):
                return argv
            continue
        if arg in COMMANDS:
            return argv
        return [*argv[:index], "run", *argv[index:]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlrun`` console script; returns the exit code."""
    from mlrun import CONFLICT

    if CONFLICT:  # the unrelated `mlrun` package replaced some of our files: say so, not a random error
        print(f"error: {CONFLICT}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (cli/completion.py): answer, exit
        from mlrun.cli.completion import complete

        complete(build_parser())
    args_list = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    options, overrides = _split_overrides(args_list)
    args = parser.parse_args(options)
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *overrides]
    elif overrides:
        parser.error(f"unexpected argument(s): {' '.join(overrides)}")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        # A command with --nproc may start workers instead of running here.
        launched = launch.launch_if_asked(args, args_list) if hasattr(args, "nproc") else None
        return _dispatch(args) if launched is None else launched
    except MlrunError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{rank_prefix()}error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mlrun list | head`): stop quietly, as shell tools do.
        silence_stdout()
        return EXIT_FAILURE
    except Exception:  # noqa: BLE001 - an unexpected failure still ends with a clear line
        if args.debug:
            traceback.print_exc()
        exc_type, exc_value, _ = sys.exc_info()
        print(
            f"{rank_prefix()}error: {exc_type.__name__ if exc_type else 'Error'}: {exc_value}\n"
            "  (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command in this process."""
    return COMMANDS[args.command].run(args)
