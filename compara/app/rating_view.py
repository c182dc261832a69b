"""The blind vote under a round's answers, and the Leaderboard tab.

Every widget of the vote is keyed by the round number and the answer's letter, never by an
arm: nothing sent to the browser before the vote is saved says which arm wrote which answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import streamlit as st

from compara.app import files, rating, state
from compara.app.i18n import Tr

if TYPE_CHECKING:
    from compara.app.rounds import Round
    from compara.config import ExperimentConfig

log = logging.getLogger(__name__)
MAX_COMMENT_CHARS = 1000


def vote_panel(rnd: Round, cfg: ExperimentConfig, tr: Tr) -> None:
    """The vote form (before the reveal), or the saved vote with the names (after)."""
    if rnd.vote is not None:
        st.success(tr("vote_saved", path=files.votes_path(cfg).name))
        ranks = rnd.vote["ranks"]
        st.markdown(" · ".join(f"**{tr('rank_n', n=ranks[arm])}** {letter} = {tr.arm(arm)}"
                               for letter, arm in rnd.vote["shown_as"].items()))
        return
    if rnd.revealed:
        st.info(tr("revealed_without_vote"))
        return
    if not rnd.complete:
        st.info(tr("vote_needs_all"))
        return
    letters = rating.letters(len(rnd.order))
    options = [None, *range(1, len(letters) + 1)]
    with st.form(key=f"vote-{rnd.number}"):
        st.markdown(f"**{tr('vote_title')}**")
        st.caption(tr("vote_help"))
        columns = st.columns(len(letters))
        chosen = {}
        for column, letter in zip(columns, letters, strict=True):
            chosen[letter] = column.selectbox(
                tr("answer_letter", letter=letter), options, key=f"vote-{rnd.number}-{letter}",
                format_func=lambda r: "—" if r is None else tr("rank_n", n=r))
        comment = st.text_area(tr("comment_optional"), max_chars=MAX_COMMENT_CHARS,
                               key=f"vote-{rnd.number}-comment", height=68)
        submitted = st.form_submit_button(tr("save_vote"), type="primary")
    skip = st.button(tr("reveal_without_vote"), key=f"vote-{rnd.number}-skip",
                     help=tr("reveal_without_vote_help"))
    if submitted:
        _save(rnd, cfg, tr, chosen, comment)
    elif skip:
        rnd.revealed = True
        state.blind_locked().add(rnd.blind_key)
        st.rerun()


def _save(rnd: Round, cfg: ExperimentConfig, tr: Tr, chosen: dict[str, int | None],
          comment: str) -> None:
    try:
        vote = rating.make_vote(
            order=rnd.order, letter_ranks=chosen, question=rnd.question.question,
            question_id=rnd.question.id, reference=rnd.question.reference,
            answers={a: r["answer"] for a, r in rnd.records.items()},
            keys={a: r.get("key", "") for a, r in rnd.records.items()},
            comment=(comment or "")[:MAX_COMMENT_CHARS], session=state.session_seed(),
            settings={"model": state.model_key(cfg), **rnd.settings})
    except rating.VoteError:
        st.warning(tr("vote_rank_one"))
        return
    try:
        rating.append_vote(files.votes_path(cfg), vote)
    except OSError as exc:
        log.error("could not save the vote to %s: %s", files.votes_path(cfg), exc)
        st.error(tr("vote_not_saved", err=str(exc)))
        return
    rnd.vote, rnd.revealed = vote, True
    state.blind_locked().add(rnd.blind_key)
    st.rerun()


# -- the Leaderboard tab ----------------------------------------------------------------------

_boards: dict[tuple, tuple[dict[str, Any], list]] = {}


def board(cfg: ExperimentConfig) -> tuple[dict[str, Any], list]:
    """The leaderboard of the votes file, computed again only when the file changed."""
    path = files.votes_path(cfg)
    stat = path.stat() if path.is_file() else None
    key = (str(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0,
           cfg.app.leaderboard_resamples, cfg.app.elo_k, cfg.eval.confidence, cfg.seed)
    if key not in _boards:
        votes, problems = rating.read_votes(path)
        result = rating.leaderboard(votes, cfg.app.leaderboard_resamples, cfg.seed,
                                    cfg.app.elo_k, cfg.eval.confidence)
        _boards.clear()  # only the latest is worth keeping
        _boards[key] = (result, problems)
    return _boards[key]


def _iv(value: float | None, lo: float | None, hi: float | None, pct: bool = False) -> str:
    if value is None:
        return "—"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.0f}")
    return f(value) + (f" ({f(lo)}–{f(hi)})" if lo is not None and hi is not None else "")


def leaderboard_tab(cfg: ExperimentConfig, tr: Tr) -> None:
    import pandas as pd

    result, problems = board(cfg)
    path = files.votes_path(cfg)
    if not result["votes"]:
        st.info(tr("no_votes", path=path.name))
    else:
        st.caption(tr("board_caption", n=result["votes"], conf=round(100 * result["confidence"]),
                      resamples=result["resamples"]))
        rows = [{tr("col_arm"): tr.arm(r["arm"]), tr("col_votes"): r["votes"],
                 tr("col_first"): r["first"],
                 tr("col_wtl"): f"{r['wins']} / {r['ties']} / {r['losses']}",
                 tr("col_win_rate"): _iv(r["win_rate"], r.get("win_rate_lo"),
                                         r.get("win_rate_hi"), pct=True),
                 tr("col_bt"): _iv(r["bt"], r.get("bt_lo"), r.get("bt_hi")),
                 tr("col_elo"): _iv(r["elo"], r.get("elo_lo"), r.get("elo_hi"))}
                for r in result["arms"]]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="board-table")
        st.markdown(f"**{tr('pairwise_title')}**")
        st.caption(tr("pairwise_help"))
        arms = [r["arm"] for r in result["arms"]]
        matrix = {tr.arm(b): [_pct(result["pairwise"][a].get(b)) if a != b else "·" for a in arms]
                  for b in arms}
        st.dataframe(pd.DataFrame(matrix, index=[tr.arm(a) for a in arms]), key="board-pairs")
        with st.expander(tr("board_how")):
            st.markdown(tr("board_explained"))
    for p in problems[:20]:
        st.warning(tr("bad_vote_line", line=p.line, reason=p.reason))
    if path.is_file():
        st.download_button(tr("download_votes"), path.read_bytes(), file_name=path.name,
                           mime="application/jsonl", key="board-download")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"
