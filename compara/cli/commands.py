"""Commands about the experiment as a whole: `config`, `arms`, `plan` and `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compara.cli.utils import ConfigOption, JsonOption, SetOption, load_experiment


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


def arms(
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """List the experiment's arms (the config's `arms:`): what each adds to the base model (an
    adapter, retrieval settings) and whether what it needs is on disk, without loading a model.

    `compara ask`/`batch --arms NAME,...` pick some of them; every arm runs on the one base
    model with the same decoding settings.
    """
    from compara.arms import experiment_arms

    cfg = load_experiment(config, set_)
    rows = []
    for arm in experiment_arms(cfg):
        missing = arm.missing_files(cfg.paths.index)
        rows.append({**arm.describe(), "ready": not missing, "missing": missing})
    if json_:
        from compara.cli.utils import print_json

        print_json(rows)
        return
    from rich.table import Table

    from core.logs import console

    table = Table("arm", "label", "adapter", "retrieval", "ready")
    for row in rows:
        retrieval = row["retrieval"]
        table.add_row(row["name"], row["label"],
                      Path(row["adapter"]).name if row["adapter"] else "—",
                      " ".join(f"{k}={v}" for k, v in retrieval.items()) if retrieval else "—",
                      "yes" if row["ready"] else "[red]no[/]")
    out = console()
    out.print(table)
    for row in rows:
        for problem in row["missing"]:
            out.print(f"[red]{row['name']}:[/] {problem}", highlight=False)


def plan(
    config: ConfigOption = None,
    set_: SetOption = None,
    sample_pages: Annotated[int, typer.Option(
        "--sample-pages", help="Pages read from the dump for an estimate when the stage's "
                               "outputs do not exist yet.")] = 200,
    accelerate: Annotated[Path | None, typer.Option(
        "--accelerate", help="An accelerate config file (configs/accelerate/): plan the "
                             "fine-tune for its processes (DDP, FSDP): tokens per step, memory "
                             "per GPU, time.", show_default=False)] = None,
    probe: Annotated[bool | None, typer.Option(
        "--probe/--no-probe", help="Measure the training rate with a few real training steps "
                                   "and, on a CPU, the answering rate with one batch of "
                                   "questions per kind of arm, here (loads the model). Default: "
                                   "for models up to 1B parameters that are on this machine.",
        show_default=False)] = None,
    json_: JsonOption = False,
) -> None:
    """Size a run before it starts: per stage (ingest, index, finetune, batch) its inputs
    (pages, articles, chunks, instruction records, train tokens), disk, peak memory and time
    on this device and on a reference GPU (an A100: a bound from its datasheet peak).

    Figures are COUNTED where the stage's outputs exist (ingest_report.json,
    instructions.train.jsonl, the index manifest), else ESTIMATED (marked ~) from the first
    --sample-pages pages of the dump, ingested by the same code and scaled by the share of the
    dump's bytes they took. Every rate names its source (BENCHMARKS.md, a public datasheet);
    a rate without one is shown as unknown; the training rate is measured here by a few real
    training steps, and on a CPU the answering rate by one batch of questions through an arm
    without retrieval and one with it, where the model is small and on this machine
    (--probe/--no-probe). With
    ingest.select the counts follow the selection. Sources: docs/plan.md. `compara finetune`
    plans its own run the same way and refuses one over finetune.max_hours unless --force.
    """
    from compara.cli.utils import launch_config
    from compara.plan import build_plan, print_plan

    cfg = load_experiment(config, set_)
    launch = launch_config(accelerate) if accelerate is not None else None
    result = build_plan(cfg, sample_pages=sample_pages, launch=launch, probe=probe)
    if json_:
        from compara.cli.utils import print_json

        print_json(result)
    else:
        print_plan(result)


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
    app.command("arms")(arms)
    app.command("plan")(plan)
    app.command("demo")(demo)
