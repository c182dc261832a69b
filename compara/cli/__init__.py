"""The `compara` command. Each subcommand is a thin function over the library.

Subcommands are registered by the modules of this package (`compara.cli.ingest`,
`compara.cli.index`, ...), which import only typer at import time, so `compara --help` stays instant; heavy libraries (torch,
transformers, faiss) are imported inside the commands that need them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

from compara import __version__

# The subcommand modules are imported before the typer app is defined: importing
# compara.cli.app binds the package's name `app` to that module, and the typer app below
# takes the name back.
from compara.cli import app as app_cli
from compara.cli import commands
from compara.cli import compare as compare_cli
from compara.cli import finetune as finetune_cli
from compara.cli import index as rag_cli
from compara.cli import ingest as ingest_cli
from compara.cli.utils import fail

app = typer.Typer(
    name="compara",
    help="Compare how a language model answers questions about Portuguese Wikipedia: base, "
         "retrieval (RAG), fine-tuned (QLoRA) and fine-tuned + retrieval, side by side.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compara {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Warnings and errors only; no progress bars.")] = False,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = None,
) -> None:
    from core.logs import setup_logging

    setup_logging(verbose=verbose, quiet=quiet)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose :class:`core.errors.UserError` (or a missing file) is printed as one
    ``error:`` line (exit 2) instead of a traceback: the one place the command line turns
    them into messages."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from core.errors import UserError

        try:
            return command(*args, **kwargs)
        except (UserError, FileNotFoundError) as exc:
            fail(str(exc))

    return run


def _register_commands() -> None:
    for module in (ingest_cli, rag_cli, finetune_cli, compare_cli, commands, app_cli):
        module.register(app)
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = user_errors(info.callback)


_register_commands()


def main() -> None:
    import os

    # Idle OpenMP threads that sleep instead of spinning: on a CPU shared with anything else
    # (a laptop, the app's own threads) spinning waiters slow generation 2-4x (BENCHMARKS.md).
    # Set before torch is imported; OMP_WAIT_POLICY=ACTIVE in the environment keeps the default.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()
