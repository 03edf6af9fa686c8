"""The ``scripts-engine`` command line.

Commands live in small modules, each with a ``register(group)`` function, listed in
``COMMAND_MODULES``; this module only builds the group and turns engine errors into one
clear line on stderr and a non-zero exit status (never a stack trace).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from pydantic import ValidationError

from scripts_engine.errors import ScriptsEngineError

#: Modules that add commands to the group, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "scripts_engine.cli_core",
    "scripts_engine.cli_voice",
    "scripts_engine.cli_scripts",
    "scripts_engine.cli_service",
    "scripts_engine.cli_reports",
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScriptsEngineError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except ValidationError as exc:  # settings from the environment or .env
            if exc.title != "Settings":
                raise
            for e in exc.errors():
                where = ".".join(str(p) for p in e["loc"])
                name = f"SCRIPTS_ENGINE_{where.upper()}" if where else "settings"
                msg = e["msg"].removeprefix("Value error, ")
                click.secho(f"error: {name}: {msg}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scripts-engine")
def main() -> None:
    """Persona-driven call scripts and dialect voices for retail banks."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(main)
