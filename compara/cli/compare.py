"""`compara ask`, `compara batch` and `compara report`: the comparison on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compara.cli.utils import ConfigOption, JsonOption, SetOption, fail, load_experiment, print_json

ArmsOption = Annotated[str | None, typer.Option(
    "--arms", "-a", help="Comma-separated arms: base, rag, finetuned, finetuned+rag "
                         "(default: every arm whose adapter/index exists).", show_default=False)]
BaseOption = Annotated[str | None, typer.Option(
    "--base", help="Base model: registry name, local folder or hub id (overrides model.base).",
    show_default=False)]
AdapterOption = Annotated[Path | None, typer.Option(
    "--adapter", help="Adapter folder (overrides paths.adapter).", show_default=False)]
IndexOption = Annotated[Path | None, typer.Option(
    "--index", "-i", help="Index folder (overrides paths.index).", show_default=False)]


def _arms(value: str | None) -> list[str] | None:
    return [a.strip() for a in value.split(",") if a.strip()] if value else None


def _setup(config, set_, base, adapter, index):
    return load_experiment(config, set_, model__base=base, paths__adapter=adapter,
                           paths__index=index)


def ask(
    question: Annotated[str, typer.Argument(help="The question, in Portuguese.")],
    arms: ArmsOption = None,
    base: BaseOption = None,
    adapter: AdapterOption = None,
    index: IndexOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Answer one question through every arm and show the answers side by side."""
    from compara.answerers import build_comparison
    from compara.batch import resolve_arms

    cfg = _setup(config, set_, base, adapter, index)
    text = question.strip()
    if not text:
        fail("the question is empty")
    if len(text) > cfg.eval.max_question_chars:
        fail(f"the question has {len(text)} characters; at most {cfg.eval.max_question_chars} "
             "(eval.max_question_chars)")
    try:
        comparison = build_comparison(cfg, _arms(arms))
        chosen = resolve_arms(comparison, _arms(arms))
        answers = [comparison.answer(arm, [text])[0] for arm in chosen]
    except FileNotFoundError as exc:
        fail(str(exc))
    if json_:
        print_json([{"question": text, **a.to_record()} for a in answers])
        return
    _show(text, answers)


_ENDINGS = {"eos": "parou (EOS)", "stop_string": "parou (fim da seção)"}


def _show(question: str, answers) -> None:
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    from core.logs import console as make_console

    console = make_console()
    console.print(Text(question, style="bold"))
    panels = []
    for a in answers:
        body = [Text(a.text or "(vazio)")]
        meta = (f"{a.tokens_out} tokens · {a.latency_s:.1f} s · "
                f"{a.tokens_per_s or 0:.1f} tok/s · {_ENDINGS.get(a.finish_reason, 'cortada')}")
        body.append(Text(meta, style="dim"))
        for p in a.passages:
            body.append(Text(f"[{p['rank']}] {p['title']} — {p.get('section') or ''} "
                             f"({p['score']:.3f})", style="cyan"))
        panels.append(Panel(Group(*body), title=a.arm, expand=True))
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
    from compara.batch import run_batch
    from compara.report import print_summary

    cfg = _setup(config, set_, base, adapter, index)
    questions = questions or (Path(cfg.paths.questions) if cfg.paths.questions else None)
    if questions is None:
        fail("no question file: pass QUESTIONS or set paths.questions in the config")
    out = out or Path(cfg.paths.runs or "runs") / cfg.name
    if (limit is not None and limit < 1) or (sample is not None and sample < 1):
        fail("--limit and --sample must be >= 1")
    try:
        summary = run_batch(cfg, questions, out, arms=_arms(arms), limit=limit, sample=sample)
    except FileNotFoundError as exc:
        fail(str(exc))
    if json_:
        print_json(summary)
        return
    print_summary(summary)
    typer.echo(f"report: {Path(out) / 'report.html'}")


def report(
    run: Annotated[Path, typer.Argument(help="A run folder written by `compara batch`.")],
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Re-score a run's answers and rewrite its summary and report.html."""
    from compara.report import print_summary, write_report
    from core.exposure import read_exposure

    cfg = load_experiment(config, set_)
    if not (run / "results.jsonl").is_file():
        fail(f"{run} is not a run folder (no results.jsonl)")
    exposure = read_exposure(run / "exposure.jsonl") if (run / "exposure.jsonl").exists() else None
    summary = write_report(run, exposure=exposure, cfg=cfg.eval)
    if json_:
        print_json(summary)
        return
    print_summary(summary)
    typer.echo(f"report: {run / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("batch")(batch)
    app.command("report")(report)
