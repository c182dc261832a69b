"""`compara ingest`: a ptwiki dump to articles.jsonl, redirects.jsonl and the instruction set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compara.cli.utils import (
    ConfigOption,
    ForceOption,
    JsonOption,
    SetOption,
    check_budget,
    fail,
    load_experiment,
    print_json,
)


def ingest(
    dump: Annotated[Path | None, typer.Argument(
        help="ptwiki XML dump (.xml, .xml.bz2, multistream bz2). Default: the config's paths.dump.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder. Default: the config's paths.data.",
        show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", help="Cleaning processes beside the reader (0 = clean in the reading process). "
             "Output order is stable.",
        show_default=False)] = None,
    max_pages: Annotated[int | None, typer.Option(
        "--max-pages", help="Stop after this many pages (quick runs).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run in OUT instead of starting over.")] = False,
    force: ForceOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Stream a Wikipedia dump into clean articles and an Alpaca-PT instruction set.

    Keeps main-namespace articles, records redirects as aliases, skips disambiguation pages and
    stubs, cleans wikitext to text with sections, infobox fields and categories, then derives
    instruction/response pairs for fine-tuning with a stable train/val split. Writes
    articles.jsonl, redirects.jsonl, instructions.train.jsonl, instructions.val.jsonl and
    ingest_report.json in OUT, replacing earlier outputs only when the run completes. With
    ingest.max_hours set, the run is planned first (the dump's pages, counted over its first
    16 MB, at the sourced rate, as `compara plan` plans it): one over it is refused unless --force.
    """
    from ingest.pipeline import IngestFailed, run_ingest

    cfg = load_experiment(config, set_, paths__dump=dump, paths__data=out,
                          ingest__workers=workers, ingest__max_pages=max_pages)
    if not cfg.paths.dump:
        fail("no dump given: pass DUMP or set paths.dump in the config")
    if not cfg.paths.data:
        fail("no output folder: pass --out or set paths.data in the config")
    budget = None  # no budget, no estimate; a missing dump is run_ingest's error
    if cfg.ingest.max_hours is not None and Path(cfg.paths.dump).is_file():
        from compara.plan import ingest_estimate

        budget = check_budget(ingest_estimate(cfg, Path(cfg.paths.dump)), cfg.ingest.max_hours,
                              force, json_)
    try:
        report = run_ingest(cfg.paths.dump, cfg.paths.data, cfg.ingest, resume=resume)
    except IngestFailed as exc:
        if json_:
            print_json(exc.report)
        fail(str(exc), code=1)
    if budget is not None:
        report["budget"] = budget
    if cfg.ingest.instructions.generator.enabled:
        report["generated"] = _add_generated(cfg)
    if json_:
        print_json(report)
    else:
        from ingest.pipeline import print_report

        print_report(report, cfg.paths.data)
        if "generated" in report:
            from ingest.generated import summary_line

            print(summary_line(report["generated"]))


def _add_generated(cfg) -> dict:
    """Model-written questions on top of the published set (ingest.instructions.generator)."""
    from core.models import ModelNotFound
    from ingest.generated import GeneratorError, add_generated_instructions

    try:
        return add_generated_instructions(cfg.paths.data, cfg.ingest)
    except (GeneratorError, ModelNotFound) as exc:
        fail(f"model-written questions: {exc} (the rule-based instruction set in "
             f"{cfg.paths.data} is complete)")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
