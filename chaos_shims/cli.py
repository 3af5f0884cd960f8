"""The ``chaos-shims`` command line.

Each subcommand is one ``_add_<name>`` function that declares its parser and sets its handler;
``COMMANDS`` lists them in the order ``--help`` shows them. A handler takes the parsed arguments
and returns the exit status. Status 2 means bad input (usage, config), as argparse uses it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from chaos_shims._version import __version__
from chaos_shims.core import env

if TYPE_CHECKING:
    from chaos_shims.core.config import ChaosConfig

PROG = "chaos-shims"
USAGE_ERROR = 2
#: what a shell returns for a command it cannot find / cannot execute
NOT_FOUND = 127
NOT_EXECUTABLE = 126

#: The folder ``run`` puts first on PYTHONPATH: it holds only ``sitecustomize.py``.
BOOTSTRAP_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")

#: Source names of the layers the command line adds to the config.
SET_SOURCE = "--set"
RUN_SOURCE = "chaos-shims run"

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad command-line input found after argparse: printed as ``chaos-shims: <message>``."""


# -- helpers shared by subcommands ------------------------------------------------------------

def parse_assignments(items: Sequence[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a mapping; a later item for the same key wins."""
    values: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        values[key] = value
    return values


def format_value(value: Any) -> str:
    """A config value as a person reads it (and as the environment accepts it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (frozenset, set, list, tuple)):
        return ",".join(sorted(str(item) for item in value)) or "-"
    if value is None:
        return "-"
    return str(value)


def print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Left-aligned columns; the last column is never padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show the config's clamp warnings (logger ``chaos_shims``) on stderr while resolving."""
    logger = logging.getLogger("chaos_shims")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_CliFormatter())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _resolve(sets: Mapping[str, str], *,
             implied: Mapping[str, Any] | None = None) -> ChaosConfig:
    """The config from YAML, the environment and ``--set`` (``implied`` just below ``--set``)."""
    from chaos_shims.activation import resolve

    layers: list[tuple[str, Mapping[str, Any]]] = []
    if implied:
        layers.append((RUN_SOURCE, implied))
    if sets:
        layers.append((SET_SOURCE, sets))
    with _warnings_to_stderr():
        config = resolve(layers=layers, environ=os.environ)
    from chaos_shims.exporter import exporter_settings

    exporter_settings(os.environ)  # bad CHAOS_SHIMS_METRICS_* exits 2 here, not in the child
    return config


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="sets", action="append", metavar="KEY=VALUE", default=[],
        help="set a config key (repeatable); beats the environment and the YAML file",
    )


def describe_config(config: ChaosConfig) -> str:
    """One line: live or dry-run, duty cycle, the scenarios that are on."""
    if not config.enabled:
        return f"chaos is off (enabled=false, from {config.sources['enabled']})"
    mode = "dry-run (decisions logged, nothing injected)" if config.dry_run else "LIVE"
    on, off = config["burst_on_sec"], config["burst_off_sec"]
    cycle = "always ON" if on == 0 else f"ON {on:g}s / OFF {off:g}s"
    active = ", ".join(f"{s.key}={format_value(v)}" for s, v in config.active_scenarios())
    return f"{mode}, {cycle}, scenarios: {active or 'none'}"


# -- run --------------------------------------------------------------------------------------

def bootstrap_pythonpath(current: str | None, folder: str = BOOTSTRAP_FOLDER) -> str:
    """PYTHONPATH with ``folder`` first and only once (a nested ``run`` does not stack it)."""
    def same(entry: str) -> bool:
        return bool(entry) and os.path.realpath(entry) == os.path.realpath(folder)

    rest = [entry for entry in (current or "").split(os.pathsep) if not same(entry)]
    return os.pathsep.join([folder, *rest]) if current else folder


def child_environment(config: ChaosConfig, sets: Mapping[str, str],
                      base: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ``base`` plus what makes every Python process in it agree.

    ``--set`` values become ``CHAOS_SHIMS_<KEY>`` (numbers as resolved, so a clamped value is
    warned about once, here); ``enabled`` is pinned as resolved; a random seed is pinned so all
    processes of the run share it.
    """
    from chaos_shims.core.config import key_table
    from chaos_shims.core.values import Number

    table = key_table(config.catalog)
    child = dict(base)
    for key, raw in sets.items():
        numeric = isinstance(table[key].kind, Number)
        child[env.env_name(key)] = str(config[key]) if numeric else raw
    child[env.ENABLED] = "1" if config.enabled else "0"
    if config.sources["seed"] == "random":
        child[env.env_name("seed")] = str(config.seed)
    config_file = child.get(env.CONFIG_FILE)
    if config_file:
        # Children may start in another directory; they must read the file validated here.
        child[env.CONFIG_FILE] = os.path.abspath(config_file)
    child["PYTHONPATH"] = bootstrap_pythonpath(child.get("PYTHONPATH"))
    child[env.BOOTSTRAP_DIR] = BOOTSTRAP_FOLDER
    return child


def _find_command(command: str, environ: Mapping[str, str]) -> str | None:
    if os.sep in command or (os.altsep and os.altsep in command):
        return command if os.path.exists(command) else None
    return shutil.which(command, path=environ.get("PATH", os.defpath))


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        args.parser.print_usage(sys.stderr)
        raise UsageError("run: no COMMAND given")
    sets = parse_assignments(args.sets)
    # `run` means chaos on, unless --set or the environment says otherwise: an operator's
    # CHAOS_SHIMS_ENABLED=0 stays a kill switch, as DD_TRACE_ENABLED=false is for ddtrace-run.
    implied = {} if env.ENABLED in os.environ else {"enabled": True}
    config = _resolve(sets, implied=implied)
    child = child_environment(config, sets, os.environ)

    if _find_command(command[0], child) is None:
        print(f"{PROG}: command not found: {command[0]}", file=sys.stderr)
        return NOT_FOUND

    line = describe_config(config)
    if config.enabled and config.sources["seed"] == "random":
        line += f"; seed {config.seed} (random); rerun with --set seed={config.seed}"
    print(f"{PROG}: {line}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # no real exec there: run it and pass its status on
            import subprocess

            return subprocess.call(command, env=child)
        # The command replaces this process: its exit status and signals are its own.
        os.execvpe(command[0], command, child)
    except FileNotFoundError:
        print(f"{PROG}: command not found: {command[0]}", file=sys.stderr)
        return NOT_FOUND
    except OSError as exc:
        print(f"{PROG}: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return NOT_EXECUTABLE
    return 0  # not reached: exec does not return


def _add_run(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run a command with chaos active in every Python process it starts",
        description="Run COMMAND with chaos active, like ddtrace-run: a bootstrap "
                    "sitecustomize goes first on PYTHONPATH (it chains to your own) and every "
                    "Python process the command starts inherits it. `run` turns chaos on unless "
                    "CHAOS_SHIMS_ENABLED or --set says otherwise; the config is checked before "
                    "the command starts, and a random seed is pinned for the whole run.",
        usage=f"{PROG} run [--set KEY=VALUE ...] -- COMMAND ARGS...",
        epilog=f"example: {PROG} run --set exch_429=0.2 -- python bot.py",
    )
    _add_set_option(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    parser.set_defaults(handler=cmd_run, parser=parser)


# -- scenarios --------------------------------------------------------------------------------

def scenario_table() -> list[dict[str, Any]]:
    from chaos_shims.scenarios import CATALOG

    def plain(value: Any) -> Any:
        return sorted(value) if isinstance(value, frozenset) else value

    return [
        {
            "key": scenario.key,
            "kind": scenario.kind.describe(),
            "default": plain(scenario.default),
            "summary": scenario.summary,
            "simulates": scenario.simulates,
            "parameters": [
                {"key": spec.name, "kind": spec.kind.describe(), "default": plain(spec.default),
                 "summary": spec.summary}
                for spec in scenario.parameters
            ],
        }
        for scenario in CATALOG
    ]


def cmd_scenarios(args: argparse.Namespace) -> int:
    table = scenario_table()
    if args.json:
        json.dump(table, sys.stdout, indent=2)
        print()
        return 0
    rows = [("KEY", "VALUE", "DEFAULT", "SUMMARY")]
    for entry in table:
        rows.append((entry["key"], entry["kind"], format_value(entry["default"]),
                     entry["summary"]))
        if entry["parameters"]:
            names = ", ".join(p["key"] for p in entry["parameters"])
            rows.append(("", "", "", f"parameters: {names}"))
    print_table(rows, sys.stdout)
    print(f"\nSet one with CHAOS_SHIMS_<KEY> or --set KEY=VALUE; `{PROG} config` shows every key.")
    return 0


def _add_scenarios(subparsers: Any) -> None:
    parser = subparsers.add_parser("scenarios", help="list the fault scenarios",
                                   description="List every fault scenario with its config key.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_scenarios)


# -- config -----------------------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    config = _resolve(parse_assignments(args.sets))
    settings = {name: os.environ.get(name) for name in env.PROCESS_SETTINGS}
    if args.json:
        values = config.as_dict()
        document = {
            "enabled": config.enabled,
            "dry_run": config.dry_run,
            "seed": config.seed,
            "active_scenarios": {s.key: values[s.key] for s, _ in config.active_scenarios()},
            "keys": {key: {"value": value, "source": config.sources[key]}
                     for key, value in values.items()},
            "process_settings": settings,
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(describe_config(config))
    print()
    rows = [("KEY", "VALUE", "SOURCE")]
    rows += [(key, format_value(value), config.sources[key])
             for key, value in config.values.items()]
    print_table(rows, sys.stdout)
    given = {name: value for name, value in settings.items() if value}
    if given:
        print()
        print_table([("PROCESS SETTING", "VALUE"), *given.items()], sys.stdout)
    return 0


def _add_config(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config", help="print the resolved config and where each value came from",
        description="Resolve the config as a process started now would (defaults < YAML "
                    "< environment < --set) and print every key, its value and its source. "
                    "Exits 2 on bad input.",
    )
    _add_set_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_config)


# -- report and findings (their modules hold the arguments and the work) -------------------------

def _add_module_command(subparsers: Any, name: str, summary: str) -> None:
    """The subcommand ``name`` of module ``chaos_shims.<name>`` (imported only now): its
    ``add_arguments`` and ``run``, described by the first paragraph of its docstring."""
    module = importlib.import_module(f"chaos_shims.{name}")
    parser = subparsers.add_parser(
        name, help=summary, description=(module.__doc__ or "").split("\n\n")[0])
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run)


def _add_report(subparsers: Any) -> None:
    _add_module_command(subparsers, "report",
                        "compare run artifacts with the baseline and judge each scenario")


def _add_demo(subparsers: Any) -> None:
    _add_module_command(subparsers, "demo",
                        "run a whole chaos campaign of an example bot against an embedded exchange")


def _add_findings(subparsers: Any) -> None:
    _add_module_command(subparsers, "findings",
                        "turn a report into findings with severity and recommendations")


# -- the program ------------------------------------------------------------------------------

#: Subcommand registrations, in --help order.
COMMANDS: list[Callable[[Any], None]] = [_add_demo, _add_run, _add_scenarios, _add_config,
                                         _add_report, _add_findings]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="In-process fault injection for trading bots (ccxt, websockets).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    from chaos_shims.core.errors import ChaosConfigError

    try:
        return handler(args)
    except (UsageError, ChaosConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:
        # `chaos-shims config | head`: the reader is gone; no traceback at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
