"""`compara ask`, `compara batch` and `compara report`: the comparison on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compara.cli.utils import ConfigOption, JsonOption, SetOption, fail, load_experiment, print_json

ArmsOption = Annotated[str | None, typer.Option(
    "--arms", "-a", help="Comma-separated names of the config's arms (`arms:`; by default base, "
                         "rag, finetuned, finetuned+rag). Default: every arm whose adapter and "
                         "index exist.", show_default=False)]
BaseOption = Annotated[str | None, typer.Option(
    "--base", help="Base model: registry name, local folder or hub id (overrides model.base).",
    show_default=False)]
AdapterOption = Annotated[Path | None, typer.Option(
    "--adapter", help="Adapter folder (overrides paths.adapter).", show_default=False)]
IndexOption = Annotated[Path | None, typer.Option(
    "--index", "-i", help="Index folder (overrides paths.index).", show_default=False)]


def _setup(config, set_, base, adapter, index):
    return load_experiment(config, set_, model__base=base, paths__adapter=adapter,
                           paths__index=index)


def ask(
    question: Annotated[str, typer.Argument(help="The question, in Portuguese.")],
    reference: Annotated[str | None, typer.Option(
        "--reference", "-r", help="The expected answer (several: 'a | b'): the answers are then "
                                  "scored (contains, F1, likelihood...).",
        show_default=False)] = None,
    arms: ArmsOption = None,
    base: BaseOption = None,
    adapter: AdapterOption = None,
    index: IndexOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Answer one question through every arm and show the answers side by side.

    Each answer is the record `compara batch` writes (the same cache, prompt and metrics): an
    unchanged question asked again, here, in a batch run or in the app, is answered at once.
    """
    from compara.app.i18n import Tr
    from compara.app.rounds import BadInput, typed_question
    from compara.arms import parse_names
    from compara.comparison import build_comparison
    from compara.pipeline import Pipeline, cache_for

    cfg = _setup(config, set_, base, adapter, index)
    try:  # the checks of a question typed in the app
        asked = typed_question(question, reference, cfg.eval.max_question_chars,
                               cfg.app.max_reference_chars)
    except BadInput as exc:
        fail(Tr("en")(exc.key, **exc.params))
    names = parse_names(arms)
    comparison = build_comparison(cfg, names)
    pipeline = Pipeline(comparison, cfg.eval, cache_for(cfg), index_cfg=cfg.index)
    records = [pipeline.run(arm, [asked])[0] for arm in comparison.answering(names)]
    if json_:
        print_json(records)
        return
    _show(asked.question, records, {a: comparison.arm(a).title() for a in comparison.arms})


_ENDINGS = {"eos": "parou (EOS)", "stop_string": "parou (fim da seção)"}


def _show(question: str, records, titles) -> None:
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    from core.logs import console as make_console

    console = make_console()
    console.print(Text(question, style="bold"))
    panels = []
    for r in records:
        body = [Text(r["answer"] or "(vazio)")]
        speed = "da cache" if r["cached"] else (f"{r['latency_s']:.1f} s · "
                                                f"{r['tokens_per_s'] or 0:.1f} tok/s")
        meta = (f"{r['tokens_out']} tokens · {speed} · "
                f"{_ENDINGS.get(r['finish_reason'], 'cortada')}")
        body.append(Text(meta, style="dim"))
        if r.get("reference"):
            m = r["metrics"]
            body.append(Text(f"contém a referência: {'sim' if m.get('contains') else 'não'} · "
                             f"F1 {m.get('f1') or 0:.2f}", style="dim"))
        for p in r["passages"]:
            body.append(Text(f"[{p['rank']}] {p['title']} — {p.get('section') or ''} "
                             f"({p['score']:.3f})", style="cyan"))
        panels.append(Panel(Group(*body), title=titles.get(r["arm"], r["arm"]), expand=True))
    console.print(Columns(panels, equal=True, expand=True))


def batch(
    questions: Annotated[Path | None, typer.Argument(
        help="Question file (.jsonl, .csv, .yaml). Default: the config's paths.questions.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run folder. Default: runs/<experiment name>.", show_default=False)] = None,
    arms: ArmsOption = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Only the first N questions.", show_default=False)] = None,
    sample: Annotated[int | None, typer.Option(
        "--sample", help="N questions spread evenly over the question types (stable choice).",
        show_default=False)] = None,
    base: BaseOption = None,
    adapter: AdapterOption = None,
    index: IndexOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Answer a question file through every arm; write results, summary and report.

    results.jsonl is written as answers arrive: an interrupted run loses nothing, and the same
    command continues it. Writes summary.json, summary.csv, report.html and run.json at the end.
    """
    from compara import runs
    from compara.arms import parse_names
    from compara.batch import run_batch
    from compara.report import print_summary

    cfg = _setup(config, set_, base, adapter, index)
    questions = questions or (Path(cfg.paths.questions) if cfg.paths.questions else None)
    if questions is None:
        fail("no question file: pass QUESTIONS or set paths.questions in the config")
    out = out or Path(cfg.paths.runs or "runs") / cfg.name
    if (limit is not None and limit < 1) or (sample is not None and sample < 1):
        fail("--limit and --sample must be >= 1")
    summary = run_batch(cfg, questions, out, arms=parse_names(arms), limit=limit, sample=sample)
    if json_:
        print_json(summary)
        return
    print_summary(summary)
    typer.echo(f"report: {Path(out) / runs.REPORT}")


def report(
    run: Annotated[Path, typer.Argument(help="A run folder written by `compara batch`.")],
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Re-score a run's answers and rewrite its summary and report.html."""
    from compara import runs
    from compara.report import print_summary, write_report

    cfg = load_experiment(config, set_)
    if not runs.is_run_folder(run):
        fail(f"{run} is not a run folder (no {runs.RESULTS})")
    summary = write_report(run, cfg=cfg.eval)  # the exposure saved in the run folder
    if json_:
        print_json(summary)
        return
    print_summary(summary)
    typer.echo(f"report: {run / runs.REPORT}")


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("batch")(batch)
    app.command("report")(report)
