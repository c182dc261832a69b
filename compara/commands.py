"""Commands of the shared core: `config` and `demo`."""

from __future__ import annotations

from typing import Annotated

import typer

from compara.cliutils import ConfigOption, SetOption, load_experiment


def config(
    config: ConfigOption = None,
    set_: SetOption = None,
    describe: Annotated[bool, typer.Option(
        "--describe", help="List every setting with its help text and default.")] = False,
) -> None:
    """Print the resolved experiment config (YAML + overrides, paths made absolute)."""
    import yaml

    if describe:
        from rich.console import Console
        from rich.table import Table

        from compara.config import ExperimentConfig

        table = Table("setting", "default", "meaning", show_lines=False)
        for name, help_text, default in ExperimentConfig.describe():
            table.add_row(name, repr(default), help_text)
        Console().print(table)
        return
    cfg = load_experiment(config, set_)
    typer.echo(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False))


def demo(
    config: ConfigOption = None,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run every stage.")] = False,
) -> None:
    """Run the whole pipeline on the shipped sample and print what it produced.

    Stages whose outputs are already up to date (same inputs, same settings) are skipped.
    """
    from compara.demo import run_demo

    cfg = load_experiment(config, set_)
    run_demo(cfg, force=force)


def register(app: typer.Typer) -> None:
    app.command("config")(config)
    app.command("demo")(demo)
