"""The Batch tab: a question file through the arms with `compara batch`'s own runner and cache.

A run goes to ``runs/app/<file>-<settings hash>/``: the same file with the same settings lands
in the same folder, so a stopped run continues where it stopped (the runner skips what
results.jsonl already holds) and a finished one is answered from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from compara.app import files
from compara.app.ask_tab import answer_details, error_message, fit, md
from compara.app.i18n import Tr
from compara.report import format_metric
from compara.runs import REPORT, RESULTS, SUMMARY, SUMMARY_CSV
from core.metrics import DISPLAY_ORDER, MEASURE_METRICS

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.config import ExperimentConfig

log = logging.getLogger(__name__)


def run_folder(cfg: ExperimentConfig, view: Comparison, arms: list[str], questions: Path) -> Path:
    """Where a run of ``questions`` with these arms and settings is written."""
    ident = {arm: view.identity(arm) for arm in arms}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return files.runs_dir(cfg) / "app" / f"{questions.stem}-{digest}"


def batch_tab(cfg: ExperimentConfig, view: Comparison | None, arms: list[str], tr: Tr) -> None:
    st.caption(tr("batch_intro"))
    choices = files.question_files(cfg)
    if view is not None and choices:
        _run_controls(cfg, view, arms, choices, tr)
    elif not choices:
        st.info(tr("no_question_files"))
    runs = files.run_folders(cfg)
    if not runs:
        return
    st.divider()
    finished = files.label_of(runs, st.session_state.pop("batch_finished", None))
    if finished:  # a run just finished: open it
        st.session_state["batch_open"] = finished
    if st.session_state.get("batch_open") not in runs:
        st.session_state.pop("batch_open", None)
    pick = st.selectbox(tr("open_run"), list(runs), key="batch_open")
    st.session_state["batch_dir"] = str(runs[pick])  # the Learn tab plots this run's exposure
    show_run(runs[pick], tr)


def _run_controls(cfg, view, arms, choices, tr) -> None:
    label = st.selectbox(tr("question_file"), list(choices), key="batch_file",
                         index=_default(choices, cfg))
    limit = st.number_input(tr("batch_limit"), 0, 100_000, 0, key="batch_limit",
                            help=tr("batch_limit_help"))
    with st.container(horizontal=True):
        run = st.button(tr("batch_run"), type="primary", key="batch_run", disabled=not arms)
        stop = st.button(tr("stop"), key="batch_stop", help=tr("batch_stop_help"))
    running = st.session_state.pop("batch_running", None)
    if running and not run:  # the last run did not finish: stopped, or interrupted by a click
        st.info(tr("batch_stopped" if stop else "batch_interrupted", path=running))
    if run:
        out = run_folder(cfg, view, arms, choices[label])
        _run(cfg, view, arms, choices[label], out, int(limit) or None, tr)


def _default(choices: dict, cfg: ExperimentConfig) -> int:
    label = files.label_of(choices, cfg.paths.questions)
    return list(choices).index(label) if label else 0


def _run(cfg, view, arms, questions: Path, out: Path, limit: int | None, tr: Tr) -> None:
    from compara.batch import run_batch

    run_cfg = cfg.replace(generation=view.decoding, retrieval=view.retrieval or cfg.retrieval)
    bar = st.progress(0.0, text=tr("batch_starting"))
    st.session_state["batch_running"] = str(out)

    def progress(done: int, total: int) -> None:
        # Any click on the page (the Stop button included) interrupts the script here, between
        # two answers: everything already in results.jsonl stays, and Run continues it.
        bar.progress(done / max(total, 1), text=tr("batch_progress", done=done, total=total))

    try:
        summary = run_batch(run_cfg, questions, out, arms=arms, limit=limit, comparison=view,
                            progress_callback=progress)
    except Exception as exc:
        st.session_state.pop("batch_running", None)
        st.error(error_message(exc, tr, tr("batch_what", path=questions.name)))
        return
    st.session_state.pop("batch_running", None)
    st.session_state["batch_finished"] = str(out)
    run = summary.get("run", {})
    bar.progress(1.0, text=tr("batch_done", generated=run.get("generated", 0),
                              cached=run.get("from_cache", 0),
                              kept=run.get("already_written", 0)))


def summary_table(summary: dict[str, Any], tr: Tr):
    """Metrics per arm (rows: metrics, in :data:`core.metrics.DISPLAY_ORDER`; columns: arms),
    means in % with their intervals."""
    import pandas as pd

    per_arm = summary["per_arm"]
    rows = {tr("col_answers"): [str(per_arm[a]["n"]) for a in per_arm]}
    for m in DISPLAY_ORDER:
        cells = [format_metric(m, per_arm[a]["metrics"].get(m)) for a in per_arm]
        if any(c != "—" for c in cells):
            rows[tr("metric_" + m)] = cells
    rows[tr("col_latency")] = [_median(per_arm[a]["latency_s"], "{:.2f} s") for a in per_arm]
    rows[tr("col_tps")] = [_median(per_arm[a]["tokens_per_s"], "{:.1f}") for a in per_arm]
    return pd.DataFrame(rows, index=[tr.arm(a) for a in per_arm]).T


def _median(stats: dict[str, Any], fmt: str) -> str:
    return "—" if stats.get("median") is None else fmt.format(stats["median"])


@lru_cache(maxsize=4)
def _read_run(folder: str, stamp: tuple[int, int]) -> tuple[dict[str, Any], list, list[str]]:
    """Summary, records and plots of a run folder (read again when its summary changes)."""
    from compara.report import load_results
    from compara.report_html import (
        plot_exposure,
        plot_exposure_likelihood,
        plot_latency,
        plot_measure,
        plot_metrics,
    )

    summary = json.loads((Path(folder) / SUMMARY).read_text(encoding="utf-8"))
    records, _ = load_results(Path(folder) / RESULTS)
    plots = [plot_metrics(summary), *(plot_measure(summary, m) for m in MEASURE_METRICS),
             plot_latency(records, summary["arms"]), plot_exposure(summary),
             plot_exposure_likelihood(summary)]
    return summary, records, [p for p in plots if p]


def show_run(folder: Path, tr: Tr) -> None:
    """A finished run: summary table, plots, answers side by side, downloads."""
    try:
        stat = (folder / SUMMARY).stat()
        summary, records, plots = _read_run(str(folder), (stat.st_mtime_ns, stat.st_size))
    except (OSError, ValueError, KeyError) as exc:
        st.error(error_message(exc, tr, tr("reading", path=folder.name)))
        return
    conf = round(100 * summary["bootstrap"]["confidence"])
    st.markdown(f"**{tr('summary_title', n=summary['n_questions'], conf=conf)}**")
    st.dataframe(summary_table(summary, tr), key="batch-summary")
    for w in summary.get("warnings") or []:
        st.warning(w)
    with st.expander(tr("plots"), expanded=True):
        for img in plots:
            st.html(fit(img))
    _browse(records, summary["arms"], tr)
    with st.container(horizontal=True):
        for name, mime in ((RESULTS, "application/jsonl"), (SUMMARY_CSV, "text/csv"),
                           (REPORT, "text/html")):
            path = folder / name
            if path.is_file():
                st.download_button(name, path.read_bytes(), file_name=name, mime=mime,
                                   key=f"batch-download-{name}")


def _browse(records: list[dict[str, Any]], arms: list[str], tr: Tr) -> None:
    by_question: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        by_question.setdefault(str(r["question_id"]), {})[r["arm"]] = r
    if not by_question:
        return
    st.markdown(f"**{tr('browse_title')}**")
    ids = list(by_question)
    first = {q: next(iter(a.values())) for q, a in by_question.items()}
    qid = st.selectbox(tr("question"), ids, key="batch_question",
                       format_func=lambda q: f"{q} · {first[q]['question'][:90]}")
    rec = first[qid]
    if rec.get("reference"):
        st.markdown(tr("reference_line", ref=" | ".join(md(r) for r in rec["reference"])))
    present = [a for a in arms if a in by_question[qid]]
    for column, arm in zip(st.columns(len(present)), present, strict=True):
        with column:
            st.markdown(f"#### {tr.arm(arm)}")
            st.markdown(md(by_question[qid][arm]["answer"]) or f"*{tr('empty_answer')}*")
            answer_details(by_question[qid][arm], tr)
