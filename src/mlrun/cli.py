"""The ``mlrun`` command line: run, check and list.

Exit codes: 0 success, 1 a failure during training, 2 bad input (nothing written),
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from mlrun.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, MlrunError

COMMANDS = ("run", "check", "resume", "predict", "evaluate", "runs", "list", "plugins", "new")

RUN_EXAMPLES = """\
examples:
  mlrun recipes/summary.toml
  mlrun recipes/summary.toml optimizer.lr=0.003 train.epochs=1
  mlrun recipes/summary.toml --data ~/datasets train.device=cpu
  mlrun recipes/summary.toml --nproc 2 train.epochs=1     data-parallel, 2 processes

overrides are key.path=value pairs; values are TOML (1, 0.5, true, [0.5], "text"),
and a bare word (cpu, mlp) is taken as a string. transforms are indexed: transforms.1.mean=[0.3]
"""

CHECK_EXAMPLES = """\
examples:
  mlrun check recipes/summary.toml
  mlrun check recipes/summary.toml model.name=mlp criterion.name=cross_entropy
"""

LIST_EXAMPLES = """\
examples:
  mlrun list
  mlrun list model
  mlrun list optimizer --json
"""

RESUME_EXAMPLES = """\
examples:
  mlrun resume runs/summary-20261130-131159
  mlrun resume runs/summary-20261130-131159 train.epochs=10 --force   train longer
  mlrun recipes/summary.toml --resume runs/summary-20261130-131159
"""

PREDICT_EXAMPLES = """\
examples:
  mlrun predict runs/summary-20261130-131159 --index 0 --index 1
  mlrun predict runs/summary-20261130-131159 shirt.png boot.jpg --top-k 5
"""

EVALUATE_EXAMPLES = """\
examples:
  mlrun evaluate runs/summary-20261130-131159
"""

RUNS_EXAMPLES = """\
examples:
  mlrun runs
  mlrun runs --dir experiments
"""

PLUGINS_EXAMPLES = """\
examples:
  mlrun plugins
  mlrun plugins --json
  MLRUN_PLUGINS=convnet mlrun plugins        load only the named third-party plugin
  MLRUN_DISABLE_PLUGIN_AUTOLOAD=1 mlrun list built-in components only
"""

NEW_EXAMPLES = """\
examples:
  mlrun new plugin mlrun-acme
  cd mlrun-acme && pip install -e . && mlrun list model
"""

MAIN_EPILOG = """\
examples:
  mlrun recipes/summary.toml                   train the classic Fashion-MNIST classifier
  mlrun recipes/summary.toml train.epochs=1    ... for one epoch
  mlrun check recipes/summary.toml             validate and print the resolved recipe
  mlrun list                                   every component and the plugin that gave it
  mlrun plugins                                every plugin, its hooks and status
  mlrun new plugin mlrun-acme                  scaffold a plugin package

`mlrun RECIPE` is short for `mlrun run RECIPE`. Add --debug for tracebacks.
"""


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, summary, epilog in (
        ("run", "train a recipe (the default command)", RUN_EXAMPLES),
        ("check", "validate a recipe and print it fully resolved; trains nothing", CHECK_EXAMPLES),
    ):
        sub = commands.add_parser(
            name, help=summary, description=summary, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.add_argument("recipe", help="path to a TOML recipe, e.g. recipes/summary.toml")
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe values")
        sub.add_argument("--data", metavar="DIR", help="dataset root folder (sets dataset.root)")
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if name == "run":
            sub.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder (same recipe)")
            sub.add_argument("--force", action="store_true", help="with --resume: accept a changed recipe")
            sub.add_argument(
                "--nproc", type=int, metavar="N",
                help="train in N local processes (DistributedDataParallel via torch.distributed.run)",
            )  # fmt: skip
            sub.add_argument(
                "--max-restarts", type=int, default=0, metavar="R",
                help="with --nproc: restart the workers up to R times after a failure, resuming "
                "from the latest checkpoint",
            )  # fmt: skip

    resume = commands.add_parser(
        "resume", help="continue an interrupted run from its last checkpoint",
        description="Continue a run from its checkpoint, exactly where it stopped.",
        epilog=RESUME_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    resume.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. runs/summary-20261130-131159")
    resume.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="change the recipe (needs --force)")
    resume.add_argument("--force", action="store_true", help="accept a recipe that differs from the run's")
    resume.add_argument("--data", metavar="DIR", help="dataset root folder (sets dataset.root)")
    resume.add_argument(
        "--nproc", type=int, metavar="N",
        help="the run's process count (default: the same as it was trained with; another count is refused)",
    )  # fmt: skip
    resume.add_argument(
        "--max-restarts", type=int, default=0, metavar="R",
        help="with several processes: restart the workers up to R times after a failure",
    )  # fmt: skip
    resume.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    predict = commands.add_parser(
        "predict", help="classify images or test-set samples with a trained run",
        description="Classify image files (PNG/JPEG, converted like the training data) or test-set "
        "samples with a run's trained model; print the top classes and save one picture per sample.",
        epilog=PREDICT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    predict.add_argument("images", nargs="*", metavar="IMAGE", help="image files to classify")
    predict.add_argument("--index", type=int, action="append", default=[], metavar="N", help="a test-set sample (repeatable)")
    predict.add_argument("--top-k", type=int, default=3, metavar="K", help="classes to print per sample (default 3)")
    predict.add_argument("--out", metavar="DIR", help="where the pictures go (default RUN_DIR/predictions)")
    predict.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    evaluate = commands.add_parser(
        "evaluate", help="test loss, accuracy, per-class accuracy and a confusion matrix",
        description="Evaluate a run's trained model on the test split; writes confusion_matrix.png "
        "and evaluation.json into the run folder.", epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    runs = commands.add_parser(
        "runs", help="list run folders with status and accuracy",
        description="List the runs under a folder: status, recipe, epochs, best and final accuracy.",
        epilog=RUNS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    runs.add_argument("--dir", default="runs", metavar="DIR", help="the output folder (default: runs)")
    runs.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    listing = commands.add_parser(
        "list", help="list registered components", description="List every registered component, "
        "which plugin gave it, and its parameters.", epilog=LIST_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    listing.add_argument(
        "kind", nargs="?", choices=["dataset", "transform", "model", "criterion", "optimizer"],
        help="only this kind",
    )  # fmt: skip
    listing.add_argument("--json", action="store_true", help="machine-readable, with parameters")
    listing.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    plugins = commands.add_parser(
        "plugins", help="list loaded plugins", description="List every plugin: where it comes "
        "from, the hooks it implements, what it contributes, and whether it loaded.",
        epilog=PLUGINS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    plugins.add_argument("--json", action="store_true", help="machine-readable")
    plugins.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    new = commands.add_parser(
        "new", help="scaffold a new plugin package", description="Create a ready-to-install "
        "plugin package.", epilog=NEW_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    new.add_argument("what", choices=["plugin"], help="what to create")
    new.add_argument("name", help="package name, e.g. mlrun-acme")
    new.add_argument("--dir", default=".", metavar="DIR", help="parent folder (default: here)")
    new.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")


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
        if args.command in ("run", "resume") and "WORLD_SIZE" in os.environ:
            from mlrun import distributed

            distributed.die_with_parent()  # at once: loading the data can take a while
        elif args.command in ("run", "resume"):
            from mlrun import distributed

            # Validated before anything runs; a resumed run keeps its own process count.
            resume_dir = args.run_dir if args.command == "resume" else args.resume
            nproc = distributed.processes_to_launch(args.nproc, args.max_restarts, resume_dir)
            if nproc is not None:
                return _launch_distributed(args, args_list, nproc)
        return _dispatch(args)
    except MlrunError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{_rank_prefix()}error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mlrun list | head`): stop quietly, as shell tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception:  # noqa: BLE001 - an unexpected failure still ends with a clear line
        if args.debug:
            traceback.print_exc()
        exc_type, exc_value, _ = sys.exc_info()
        print(
            f"{_rank_prefix()}error: {exc_type.__name__ if exc_type else 'Error'}: {exc_value}\n"
            "  (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def _echo(line: str) -> None:
    """Progress lines go out at once, also when stdout is a pipe or a file.

    A reader that goes away (`mlrun RECIPE | head -3`) or a full device behind stdout
    must not stop a run: the run folder keeps the record, so the log is dropped instead.
    """
    global _stdout_lost
    if _stdout_lost:
        return
    try:
        print(line, flush=True)
    except OSError as exc:
        _stdout_lost = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if not isinstance(exc, BrokenPipeError):
            with contextlib.suppress(OSError):
                print(f"warning: cannot write the run log to stdout ({exc.strerror or exc}); "
                      "training goes on, the run folder keeps the record", file=sys.stderr)


_stdout_lost = False


def _rank_prefix() -> str:
    """``[rank N] `` inside a distributed job, so that a failing rank is named."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"[rank {os.environ.get('RANK', '?')}] "
    return ""


def _launch_distributed(args: argparse.Namespace, argv: list[str], nproc: int) -> int:
    """Check the recipe here, then start ``nproc`` workers under torch's elastic agent."""
    from pathlib import Path

    import torch

    from mlrun import distributed
    from mlrun.errors import UsageError
    from mlrun.plugins import PluginSettings, load_plugins
    from mlrun.recipe import load_recipe
    from mlrun.registry import build_registry
    from mlrun.runs import RECIPE_FILE

    registry = build_registry(load_plugins(PluginSettings.from_env(strict=args.strict_plugins)))
    extra = {"dataset": {"root": str(Path(args.data).expanduser().resolve())}} if args.data else None
    resume_dir = args.run_dir if args.command == "resume" else args.resume
    source = args.recipe if args.command == "run" else Path(resume_dir) / RECIPE_FILE
    if resume_dir is not None and not (Path(resume_dir) / RECIPE_FILE).is_file():
        raise UsageError(f"{resume_dir} is not a run folder: {Path(resume_dir) / RECIPE_FILE} is missing")
    # Bad input fails here, once, before any worker.
    recipe = load_recipe(source, registry, args.overrides, extra_data=extra)
    device = recipe.train.device
    uses_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    warning = distributed.check_process_count(nproc, uses_cuda=uses_cuda)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return distributed.launch(
        _without_launch_options(argv), nproc, args.max_restarts,
        output_dir=None if resume_dir else recipe.train.output_dir, resume_dir=resume_dir,
    )  # fmt: skip


def _without_launch_options(argv: list[str]) -> list[str]:
    """The command line for each worker: the same, minus --nproc and --max-restarts."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--nproc", "--max-restarts"):
            skip = True
            continue
        if arg.startswith(("--nproc=", "--max-restarts=")):
            continue
        kept.append(arg)
    return kept


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "new":
        from pathlib import Path

        from mlrun.scaffold import create_plugin

        target = create_plugin(args.name, Path(args.dir))
        print(f"created {target}\nnext: cd {target} && pip install -e . && mlrun list model")
        return EXIT_OK
    if args.command == "runs":
        from pathlib import Path

        from mlrun.runlist import format_runs, list_runs

        print(format_runs(list_runs(Path(args.dir))))
        return EXIT_OK
    from mlrun.plugins import PluginSettings, load_plugins
    from mlrun.registry import build_registry

    registry = build_registry(load_plugins(PluginSettings.from_env(strict=args.strict_plugins)))
    if args.command == "list":
        return _list(registry, args.kind, as_json=args.json)
    if args.command == "plugins":
        return _plugins(registry, as_json=args.json)
    if args.command in ("predict", "evaluate"):
        from pathlib import Path

        from mlrun import predict

        if args.command == "evaluate":
            predict.evaluate(Path(args.run_dir), registry=registry, echo=_echo)
        else:
            out = Path(args.out) if args.out else None
            predict.predict(Path(args.run_dir), [Path(i) for i in args.images], args.index,
                            top_k=args.top_k, out_dir=out, registry=registry, echo=_echo)  # fmt: skip
        return EXIT_OK
    from pathlib import Path

    from mlrun.recipe import load_recipe

    # Absolute, so that the run folder's recipe finds the data from anywhere.
    extra = {"dataset": {"root": str(Path(args.data).expanduser().resolve())}} if args.data else None
    if args.command == "resume" or getattr(args, "resume", None):
        return _resume(args, registry, extra)
    recipe = load_recipe(args.recipe, registry, args.overrides, extra_data=extra)
    if args.command == "check":
        import tomli_w

        from mlrun.runs import RunFolder

        RunFolder.check_writable(recipe.train.output_dir)

        for warning in recipe.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"# {recipe.path}: OK. Fully resolved recipe:")
        print(tomli_w.dumps(recipe.to_dict()), end="")
        return EXIT_OK
    from mlrun import engine

    engine.run(recipe, echo=_echo)
    return EXIT_OK


def _resume(args: argparse.Namespace, registry: Any, extra: dict[str, Any] | None) -> int:
    """Continue a run folder; the engine refuses changes it cannot honour (see mlrun.resume)."""
    from pathlib import Path

    from mlrun import engine
    from mlrun.errors import UsageError
    from mlrun.recipe import load_recipe
    from mlrun.runs import RECIPE_FILE, RunFolder

    folder = RunFolder(Path(args.run_dir if args.command == "resume" else args.resume))
    saved_recipe = folder.path / RECIPE_FILE
    if not saved_recipe.is_file():
        raise UsageError(f"{folder.path} is not a run folder: {saved_recipe} is missing")
    source = saved_recipe if args.command == "resume" else Path(args.recipe)
    recipe = load_recipe(source, registry, args.overrides, extra_data=extra)
    engine.run(recipe, echo=_echo, resume=folder, force=args.force)
    return EXIT_OK


def _list(registry: Any, kind: str | None, *, as_json: bool) -> int:
    from mlrun.params import parameters, to_jsonable

    entries = [e for e in registry if kind is None or e.component.kind == kind]
    if as_json:
        payload = [
            {
                "kind": e.component.kind,
                "name": e.component.name,
                "plugin": e.plugin.label,
                "summary": e.component.summary,
                "parameters": [
                    {
                        "name": p.name,
                        "type": p.type_text,
                        "required": p.required,
                        **({} if p.required else {"default": to_jsonable(p.default)}),
                    }
                    for p in parameters(e.component)
                ],
            }
            for e in entries
        ]
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    rows = [("KIND", "NAME", "PLUGIN", "SUMMARY")]
    rows += [(e.component.kind, e.component.name, e.plugin.label, e.component.summary) for e in entries]
    for (conflict_kind, name), clashing in sorted(registry.conflicts.items()):
        if kind is None or conflict_kind == kind:
            labels = " + ".join(sorted(e.plugin.label for e in clashing))
            rows.append((conflict_kind, name, labels, "UNUSABLE: two plugins give this name"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    for info in registry.plugins.failed():
        print(f"\nplugin '{info.name}' ({info.label}) failed to load: {info.error}", file=sys.stderr)
    return EXIT_OK


def _plugins(registry: Any, *, as_json: bool) -> int:
    counts: dict[str, dict[str, int]] = {}
    for entry in registry:
        per_kind = counts.setdefault(entry.plugin.name, {})
        per_kind[entry.component.kind] = per_kind.get(entry.component.kind, 0) + 1
    infos = list(registry.plugins.infos.values())
    if as_json:
        payload = [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": info.hooks,
                "components": counts.get(info.name, {}),
                "status": "ok" if info.ok else "failed",
                "error": info.error,
            }
            for info in infos
        ]
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    rows = [("NAME", "FROM", "HOOKS", "COMPONENTS", "STATUS")]
    for info in infos:
        components = ", ".join(f"{n} {k}" for k, n in counts.get(info.name, {}).items()) or "-"
        status = "ok" if info.ok else f"failed: {info.error}"
        rows.append((info.name, info.label, ", ".join(info.hooks) or "-", components, status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
