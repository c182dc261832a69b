"""The Ask tab: the question, answers side by side, and what stands behind each answer."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import streamlit as st

from compara.app import files, rating, rounds, state
from compara.app.i18n import Tr
from core.metrics import ANSWER_METRICS, BINARY, MEASURE_METRICS

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.config import ExperimentConfig
    from compara.pipeline import Pipeline

log = logging.getLogger(__name__)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")
STREAM_REFRESH_S = 0.1  # at most ~10 page updates per second while an answer streams


def fit(img: str) -> str:
    """A report plot (an ``<img>`` with an SVG data URI) scaled down to the column's width."""
    return img.replace("<img ", '<img style="max-width:100%;height:auto" ', 1)


def md(text: str) -> str:
    """Model text shown as itself: markdown, HTML and LaTeX characters escaped, lines kept."""
    return _MD_SPECIAL.sub(r"\\\1", text or "").replace("\n", "  \n")


# -- errors -----------------------------------------------------------------------------------

def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the user (a bad file, a missing model, an arm that
    cannot answer...): :class:`core.errors.UserError`, and a missing file or a bad value."""
    from core.errors import UserError

    return (UserError, FileNotFoundError, ValueError)


def error_message(exc: BaseException, tr: Tr, what: str) -> str:
    """A one-line message for the page; unexpected errors are logged with their traceback."""
    if isinstance(exc, user_errors()):
        log.warning("%s: %s", what, exc)
        return tr("err_during", what=what, err=str(exc))
    log.error("%s failed", what, exc_info=exc)
    return tr("err_unexpected", what=what, kind=type(exc).__name__, err=str(exc)[:300])


# -- the Ask tab ------------------------------------------------------------------------------

def question_input(cfg: ExperimentConfig, tr: Tr):
    """The question typed or picked from a file; returns a thunk that validates it."""
    source = st.radio(tr("question_source"), ["typed", "file"], horizontal=True,
                      format_func=lambda s: tr(f"source_{s}"), key="q_source")
    limit = cfg.eval.max_question_chars
    if source == "typed":
        # No max_chars on the widgets: the browser would cut a long paste silently; the limits
        # are checked on the server instead, with a message that says what was wrong.
        text = st.text_area(tr("question"), key="q_text", height=90,
                            placeholder=tr("question_placeholder"),
                            help=tr("question_help", limit=limit))
        reference = st.text_input(tr("reference_optional"), key="q_reference",
                                  help=tr("reference_help", limit=cfg.app.max_reference_chars))
        return lambda: rounds.typed_question(text, reference, limit, cfg.app.max_reference_chars)
    choices = files.question_files(cfg)
    if not choices:
        st.info(tr("no_question_files"))
        return _refuse("err_no_file")
    label = st.selectbox(tr("question_file"), list(choices), key="q_file",
                         index=_default_file(choices, cfg))
    try:
        qfile = files.load_question_file(choices[label], limit)
    except user_errors() as exc:
        st.error(error_message(exc, tr, tr("reading", path=label)))
        return _refuse("err_no_file")
    if qfile.problems or qfile.warnings:
        st.caption(tr("file_problems", n=len(qfile.problems), cut=len(qfile.warnings)))
    questions = qfile.questions
    i = st.selectbox(tr("question"), range(len(questions)), key="q_pick",
                     format_func=lambda i: f"{questions[i].id} · {questions[i].question[:90]}")
    q = questions[i]
    if q.reference:
        st.caption(tr("reference_is", ref=" | ".join(q.reference)))
    return lambda: rounds.file_question(q, limit)


def _refuse(key: str):
    def read():
        raise rounds.BadInput(key)

    return read


def _default_file(choices: dict, cfg: ExperimentConfig) -> int:
    label = files.label_of(choices, cfg.paths.questions)
    return list(choices).index(label) if label else 0


def ask_tab(cfg: ExperimentConfig, comparison: Comparison, view: Comparison, arms: list[str],
            tr: Tr) -> None:
    from compara.app import rating_view

    blind = st.toggle(tr("blind_mode"), value=cfg.app.blind_default, key="blind",
                      help=tr("blind_help"))
    read_question = question_input(cfg, tr)
    with st.container(horizontal=True):
        run = st.button(tr("ask"), type="primary", key="ask_run")
        stop = st.button(tr("stop"), key="ask_stop", help=tr("stop_help"))
    rnd: rounds.Round | None = st.session_state.get("round")
    generate = False
    if run:
        new = _new_round(cfg, view, arms, blind, read_question, tr)
        if new is not None:
            rnd, generate = new, True
            st.session_state["round"] = rnd
    elif stop and rnd is not None and not rnd.complete:
        st.info(tr("stopped"))
    if rnd is None:
        st.caption(tr("ask_hint"))
        return
    if not generate and not rnd.complete and st.button(tr("continue"), key="ask_continue"):
        generate = True
    show_round(rnd, comparison, cfg, tr, generate)
    if rnd.blind:
        rating_view.vote_panel(rnd, cfg, tr)


def _new_round(cfg, view, arms, blind, read_question, tr) -> rounds.Round | None:
    from compara.app.rating import blind_key, blind_order

    try:
        question = read_question()
    except rounds.BadInput as exc:
        st.warning(tr(exc.key, **exc.params))
        return None
    if not arms:
        st.warning(tr("err_no_arms"))
        return None
    seed = state.session_seed()
    key = blind_key(seed, question.question, arms)
    if blind and len(arms) < 2:
        st.info(tr("blind_needs_two"))
        blind = False
    if blind and key in state.blind_locked():
        st.info(tr("blind_already_seen"))
        blind = False
    order = blind_order(seed, question.question, arms) if blind else list(arms)
    return rounds.Round(number=state.next_round_number(), question=question, order=order,
                     blind=blind, blind_key=key, settings=rounds.settings_of(view),
                     model_key=state.model_key(cfg))


def column_title(rnd: rounds.Round, i: int, arm: str, tr: Tr) -> str:
    letter = rating.LETTERS[i]
    if rnd.hidden:
        return f"#### {tr('answer_letter', letter=letter)}"
    if rnd.blind:
        return f"#### {letter} · {tr.arm(arm)}"
    return f"#### {tr.arm(arm)}"


def show_round(rnd: rounds.Round, comparison: Comparison, cfg: ExperimentConfig, tr: Tr,
               generate: bool) -> None:
    """The question, then one column per arm: answers streamed when ``generate``."""
    from compara.pipeline import cache_for

    q = rnd.question
    st.markdown(f"**{md(q.question)}**")
    if q.reference:
        st.markdown(tr("reference_line", ref=" | ".join(md(r) for r in q.reference)))
    if rnd.hidden:
        st.caption(tr("blind_caption"))
    columns = st.columns(len(rnd.order))
    slots = []
    for i, arm in enumerate(rnd.order):
        with columns[i]:
            st.markdown(column_title(rnd, i, arm, tr))
            slots.append((st.empty(), st.container()))
    view = None
    if generate:
        if rnd.model_key != state.model_key(cfg):
            st.warning(tr("settings_changed"))
        else:
            view = rounds.view_for(comparison, rnd.settings)
    pipeline = rounds.pipeline_for(view, cfg, cache_for(cfg)) if view is not None else None
    t0 = time.perf_counter()
    for i, arm in enumerate(rnd.order):
        body, details = slots[i]
        if arm not in rnd.records and pipeline is not None:
            _stream_into(body, rnd, pipeline, arm, tr)
        record = rnd.records.get(arm)
        if record is None:
            body.caption(rnd.errors.get(arm) or tr("not_answered"))
            continue
        # keyed by the column's letter, never the arm: the browser check leaves the answers'
        # own words out when it looks for arm names on a blind page
        answer = body.container(key=f"answer-{rnd.number}-{rating.LETTERS[i]}")
        answer.markdown(md(record["answer"]) or f"*{tr('empty_answer')}*")
        if not rnd.hidden:
            with details:
                answer_details(record, tr)
    if rnd.complete:
        with st.container(key=f"ask-done-{rnd.number}"):  # a marker for the browser check
            st.caption(tr("all_answered", n=len(rnd.order))
                       + (f" ({time.perf_counter() - t0:.1f} s)" if generate else ""))


def _stream_into(body, rnd: rounds.Round, pipeline: Pipeline, arm: str, tr: Tr) -> None:
    pieces: list[str] = []
    last = 0.0
    body.caption(tr("generating"))
    stream = pipeline.stream(arm, rnd.question,
                             on_wait=lambda: body.info(tr("waiting_other_session")))
    try:
        for item in stream:
            if isinstance(item, dict):
                rnd.records[arm] = item
                rnd.errors.pop(arm, None)
            else:
                pieces.append(item)
                if time.perf_counter() - last > STREAM_REFRESH_S:
                    body.markdown(md("".join(pieces)) + " ▌")
                    last = time.perf_counter()
    except Exception as exc:  # one arm failing must not take the others down
        what = tr("answer_letter", letter=rating.LETTERS[rnd.order.index(arm)]) if rnd.hidden \
            else tr.arm(arm)
        message = error_message(exc, tr, what)
        rnd.errors[arm] = tr("err_arm_hidden") if rnd.hidden else message
        body.error(rnd.errors[arm])
    finally:
        stream.close()  # stops a generation cut short (a rerun, a closed tab) and frees the lock


def stats_line(record: dict[str, Any], tr: Tr) -> str:
    parts = [f"{record['latency_s']:.2f} s", f"{record['tokens_out']} tokens"]
    if record.get("tokens_per_s") is not None:
        parts.append(f"{record['tokens_per_s']:.1f} tok/s")
    reason = record.get("finish_reason") or ("eos" if record.get("stopped_on_eos") else "max")
    parts.append(tr({"eos": "stopped_eos", "stop_string": "stopped_string"}.get(reason,
                                                                                "stopped_max")))
    if record.get("retrieval_s") is not None:
        parts.append(tr("retrieval_time", s=record["retrieval_s"]))
    if record.get("cached"):
        parts.append(tr("from_cache"))
    return " · ".join(parts)


def _parts(m: dict[str, Any], names, tr: Tr) -> list[str]:
    parts = []
    for name in names:
        v = m.get(name)
        if v is None:
            continue
        value = ("✓" if v else "✗") if name in BINARY else f"{v:.2f}"
        parts.append(f"{tr('metric_' + name)} {value}")
    return parts


def metrics_line(record: dict[str, Any], tr: Tr) -> str:
    """An answer's badges against its reference, in :data:`core.metrics.ANSWER_METRICS` order."""
    m = record.get("metrics") or {}
    parts = _parts(m, ANSWER_METRICS, tr)
    if m.get("abstained"):
        parts.append(tr("metric_abstained"))
    if m.get("repetition"):
        parts.append(f"{tr('metric_repetition')} {m['repetition']:.2f}")
    return " · ".join(parts)


def measures_line(record: dict[str, Any], tr: Tr) -> str:
    """The measures without a judge a card has ("" when it has none)."""
    return " · ".join(_parts(record.get("metrics") or {}, MEASURE_METRICS, tr))


def answer_details(record: dict[str, Any], tr: Tr) -> None:
    """Under an answer: speed and stopping, metrics, passages, the exact prompt."""
    st.caption(stats_line(record, tr))
    if record.get("truncated_prompt"):
        st.caption(tr("prompt_truncated"))
    if record.get("reference"):
        st.caption(metrics_line(record, tr))
    measured = measures_line(record, tr)
    if measured:
        st.caption(measured, help=tr("measures_help"))
    passages = record.get("passages") or []
    if passages:
        with st.expander(tr("passages", n=len(passages))):
            st.html(passages_html(passages, record.get("reference") or [], tr))
    with st.expander(tr("prompt")):
        # st.code drops one leading and one trailing newline: pad so the prompt shows whole
        st.code(f"\n{record.get('prompt') or ''}\n", language=None, wrap_lines=True)


def passages_html(passages: list[dict[str, Any]], references: list[str], tr: Tr) -> str:
    """Retrieved passages with the reference answer highlighted (everything escaped)."""
    from urllib.parse import urlparse

    from compara.report_html import esc, highlight

    items = []
    for i, p in enumerate(passages, start=1):
        title = esc(p.get("title") or "")
        url = str(p.get("url") or "").strip()
        if urlparse(url).scheme in ("http", "https"):
            title = f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{title}</a>'
        section = f" — {esc(p['section'])}" if p.get("section") else ""
        score = p.get("score")
        score = f" · {tr('score')} {float(score):.3f}" if isinstance(score, (int, float)) else ""
        items.append(
            '<div style="margin:0 0 10px;padding:4px 8px;border-left:3px solid #bbb">'
            f'<div style="font-size:0.85em;color:#555">[{esc(p.get("rank", i))}] {title}'
            f"{section}{score}</div>"
            f'<div style="white-space:pre-wrap;font-size:0.9em">'
            f'{highlight(str(p.get("text") or ""), references)}</div></div>')
    return "".join(items)
