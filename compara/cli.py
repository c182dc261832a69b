"""The `compara` command. Each subcommand is a thin function over the library.

Subcommands are registered by each package (`ingest.cli`, `rag.cli`, ...), whose modules
import only typer at import time, so `compara --help` stays instant; heavy libraries (torch,
transformers, faiss) are imported inside the commands that need them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from compara import __version__

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
    from compara.logs import setup_logging

    setup_logging(verbose=verbose, quiet=quiet)


def _register_commands() -> None:
    from compara import commands, compare_cli
    from compara.app import cli as app_cli
    from finetune import cli as finetune_cli
    from ingest import cli as ingest_cli
    from rag import cli as rag_cli

    for module in (ingest_cli, rag_cli, finetune_cli, compare_cli, commands, app_cli):
        module.register(app)


_register_commands()


def main() -> None:
    import os

    # Idle OpenMP threads that sleep instead of spinning: on a CPU shared with anything else
    # (a laptop, the app's own threads) spinning waiters slow generation 2-4x (BENCHMARKS.md).
    # Set before torch is imported; OMP_WAIT_POLICY=ACTIVE in the environment keeps the default.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()
