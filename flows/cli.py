"""The ``ramanscreen`` command line (Typer + Rich).

Every command lives in ``flows/commands/<stage>.py`` and registers itself on :data:`app`.
Errors are one line on stderr with a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

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
    "md",
    "mlff",
    "alpha",
    "spectra",
    "campaign",
]

_DEBUG_ENV = "RAMANSCREEN_DEBUG"


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
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except InputError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(str(exc))}", markup=True)
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        err.print(f"[red]error:[/] {type(exc).__name__}: {escape(text)} (rerun with --debug for the traceback)", markup=True)
        sys.exit(1)

