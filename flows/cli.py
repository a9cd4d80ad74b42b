"""The ``ramanscreen`` command line (Typer + Rich).

Every command lives in ``flows/commands/<stage>.py`` and registers itself on :data:`app`.
Errors are one line on stderr with a non-zero exit; ``--debug`` shows the traceback. The
vocabulary (``--out``, ``--results-root``, ``--dt-fs``, ``--stride``, units in option names)
is written down in ``docs/cli.md``.

The science layer names *fields* in its errors (``dt_fs``), never flags: :func:`main` maps a
field that is a parameter of the command being run to that parameter's option (``--dt-fs``),
so the same error reads with the TOML key in a campaign and with the flag here.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape

from ramanscreen.tasks.common import InputError

app = typer.Typer(
    name="ramanscreen",
    help="Find fast ion conductors by their ML-predicted Raman central peak.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: Modules under flows/commands that register commands on ``app`` (in --help order).
COMMAND_MODULES: list[str] = [
    "reference",
    "transport",
    "analytics",
    "structure",
    "md",
    "mlff",
    "alpha",
    "spectra",
    "campaign",
    "explore",
    "surrogate",
    "elastic",
    "peaks",
    "experiment",
]

_DEBUG_ENV = "RAMANSCREEN_DEBUG"

# Typer >= 0.22 runs on its own copy of click (typer._click): catch both kinds.
try:
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - an older typer on the real click
    _typer_click = click.exceptions
_EXIT = (click.exceptions.Exit, _typer_click.Exit) if hasattr(_typer_click, "Exit") else (click.exceptions.Exit, typer.Exit)
_CLICK_ERROR = (click.ClickException, _typer_click.ClickException)
_ABORT = (click.exceptions.Abort, typer.Abort)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """Find fast ion conductors by their ML-predicted Raman central peak."""
    if debug:
        os.environ[_DEBUG_ENV] = "1"


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {escape(str(message))}", markup=True)


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"ramanscreen.flows.commands.{name}")


def command_flags(command: Any, argv: list[str]) -> dict[str, str]:
    """Parameter name → how the user writes it (``--dt-fs``, or ``ALPHA_FILE`` for an argument)
    for the (sub)command ``argv`` runs."""
    cmd, args = command, list(argv)
    while hasattr(cmd, "commands"):
        sub = next((a for a in args if not a.startswith("-")), None)
        if sub is None or sub not in cmd.commands:
            break
        args = args[args.index(sub) + 1:]
        cmd = cmd.commands[sub]
    flags: dict[str, str] = {}
    for param in cmd.params:
        if param.name is None:
            continue
        if getattr(param, "param_type_name", "") == "option":
            longs = [o for o in param.opts if o.startswith("--")]
            flags[param.name] = (longs or param.opts)[0]
        else:
            flags[param.name] = param.name.upper()
    return flags


def _as_flag(exc: InputError, command: Any, argv: list[str]) -> InputError:
    if exc.field is None:
        return exc
    flags = command_flags(command, argv)
    if exc.field in flags:
        return InputError(exc.message, file=exc.file, field=flags[exc.field], fix=exc.fix)
    return exc


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning errors into one line + exit code."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get(_DEBUG_ENV) == "1"
    warnings.showwarning = _showwarning
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _load_commands()
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="ramanscreen", standalone_mode=False)
    except _EXIT as exc:
        sys.exit(exc.exit_code)
    except _CLICK_ERROR as exc:  # usage errors: click's own one-line message, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except _ABORT:
        err.print("aborted")
        sys.exit(130)
    except InputError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(str(_as_flag(exc, command, argv)))}", markup=True)
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        err.print(f"[red]error:[/] {type(exc).__name__}: {escape(text)} (rerun with --debug for the traceback)", markup=True)
        sys.exit(1)

