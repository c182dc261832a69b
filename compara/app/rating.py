"""Blind rating: the order answers are shown in, the votes file, and the leaderboard.

A rater sees the answers of one question as A, B, C, D in an order drawn from the session's
seed and the question (a rerun shows the same order; another session or question, another
order) and ranks them: 1 = best, equal ranks = a tie, answers left unranked share the place
after the last ranked one (so "pick the best" is ranking one answer 1). Each vote becomes the
pairwise outcomes it implies (a ranked above b: a wins; equal: a tie) and the leaderboard
summarises them per arm:

- win rate: (wins + ties / 2) / pairwise comparisons;
- Bradley–Terry strengths, fitted by maximum likelihood (ties count half a win each way)
  and shown on the Elo scale (1000 = the geometric mean of the arms; +400 = 10:1 odds);
- online Elo (each comparison updates the two ratings, in vote order, K = ``elo_k``).

Intervals are percentile bootstraps over votes (a vote and its comparisons are resampled
together); for Elo the resampled votes are also shuffled, since online Elo depends on order.
Votes are appended to a JSONL file, one line per vote, under an exclusive lock, so concurrent
sessions (and processes) never interleave or tear lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

from core.io import BadLine, iter_jsonl

LETTERS = "ABCDEFGH"
VOTES_FILE = "votes.jsonl"
BT_PRIOR = 0.5  # pseudo-wins each way between every two arms: finite ratings for 0 or 100% wins
_append_lock = threading.Lock()  # within the process; flock between processes


class VoteError(ValueError):
    """A vote that cannot be recorded (nothing ranked, a rank out of range)."""


# -- the order shown --------------------------------------------------------------------------

def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def blind_key(session_seed: str, question: str, arms: Sequence[str]) -> str:
    """Identifies one (session, question, set of arms): the unit a rater votes on once."""
    return _digest(session_seed, " ".join(question.split()), ",".join(sorted(arms)))[:20]


def blind_order(session_seed: str, question: str, arms: Sequence[str]) -> list[str]:
    """The arms in the order shown as A, B, C...: random, fixed for this session and question."""
    rng = random.Random(int(blind_key(session_seed, question, arms), 16))
    order = sorted(arms)
    rng.shuffle(order)
    return order


def letters(n: int) -> list[str]:
    if n > len(LETTERS):
        raise VoteError(f"at most {len(LETTERS)} answers can be rated together")
    return list(LETTERS[:n])


# -- votes ------------------------------------------------------------------------------------

def ranks_by_arm(order: Sequence[str], letter_ranks: Mapping[str, int | None]) -> dict[str, int]:
    """Ranks (1 = best) per arm from the rater's ranks per letter; unranked answers share the
    place after the worst ranked one. Ranks are made dense (1, 1, 2 — never 1, 1, 3)."""
    given = {letter: r for letter, r in letter_ranks.items() if r is not None}
    if not given:
        raise VoteError("rank at least one answer (1 = best)")
    names = letters(len(order))
    for letter, r in given.items():
        if letter not in names:
            raise VoteError(f"there is no answer {letter!r}")
        if not 1 <= int(r) <= len(order):
            raise VoteError(f"rank {r} of answer {letter} is not between 1 and {len(order)}")
    last = max(given.values()) + 1
    raw = {arm: int(given.get(letter, last)) for letter, arm in zip(names, order, strict=True)}
    dense = {v: i for i, v in enumerate(sorted(set(raw.values())), start=1)}
    return {arm: dense[v] for arm, v in raw.items()}


def make_vote(*, order: Sequence[str], letter_ranks: Mapping[str, int | None], question: str,
              question_id: str | None = None, reference: Sequence[str] = (),
              answers: Mapping[str, str] | None = None, keys: Mapping[str, str] | None = None,
              comment: str = "", session: str = "", settings: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """One vote as written to the votes file."""
    ranks = ranks_by_arm(order, letter_ranks)
    return {
        "vote_id": uuid.uuid4().hex,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "session": _digest("session", session)[:12] if session else "",
        "question_id": question_id, "question": question, "reference": list(reference),
        "shown_as": dict(zip(letters(len(order)), order, strict=True)),
        "ranks": ranks,
        "ranked_by_rater": sorted(k for k, v in letter_ranks.items() if v is not None),
        "comment": comment.strip(),
        "answers": dict(answers or {}), "answer_keys": dict(keys or {}),
        "settings": dict(settings or {}),
    }


def append_vote(path: str | Path, vote: Mapping[str, Any]) -> None:
    """Append one vote as one line, flushed to disk, under an exclusive lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(vote, ensure_ascii=False) + "\n").encode("utf-8")
    with _append_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _lock(fd)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: the process lock above still serialises this process
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def read_votes(path: str | Path) -> tuple[list[dict[str, Any]], list[BadLine]]:
    """The valid votes of a votes file (a missing file has none) and the lines skipped."""
    path = Path(path)
    if not path.is_file():
        return [], []
    problems: list[BadLine] = []
    votes = []
    for line, rec in iter_jsonl(path, on_error=problems.append):
        ranks = rec.get("ranks")
        if not isinstance(ranks, dict) or not all(
                isinstance(a, str) and isinstance(r, int) and not isinstance(r, bool)
                for a, r in ranks.items()):
            problems.append(BadLine(str(path), line, "no 'ranks' mapping of arm to rank"))
            continue
        votes.append(rec)
    return votes, problems


# -- the leaderboard --------------------------------------------------------------------------

def outcomes(vote: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """The pairwise results a vote implies: (a, b, score of a) with 1 win, 0.5 tie, 0 loss."""
    ranks = vote["ranks"]
    out = []
    for a, b in combinations(sorted(ranks), 2):
        ra, rb = ranks[a], ranks[b]
        out.append((a, b, 1.0 if ra < rb else 0.5 if ra == rb else 0.0))
    return out


def _win_tensor(votes: Sequence[Mapping[str, Any]], arms: list[str]):
    """(votes, arms, arms) array: entry [v, i, j] = what arm i scored against arm j in vote v."""
    import numpy as np

    pos = {a: i for i, a in enumerate(arms)}
    w = np.zeros((len(votes), len(arms), len(arms)))
    for v, vote in enumerate(votes):
        for a, b, s in outcomes(vote):
            w[v, pos[a], pos[b]] += s
            w[v, pos[b], pos[a]] += 1.0 - s
    return w


def bradley_terry(wins, prior: float = BT_PRIOR, iters: int = 1000, tol: float = 1e-10):
    """Bradley–Terry ratings on the Elo scale from win matrices ``wins[..., i, j]`` (what i
    scored against j), by the minorise–maximise iteration; batched over leading axes."""
    import numpy as np

    n = wins.shape[-1]
    w = wins + prior * (1.0 - np.eye(n))
    games = w + np.swapaxes(w, -1, -2)
    total = w.sum(axis=-1)
    p = np.ones(w.shape[:-1])
    for _ in range(iters):
        denom = (games / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        new = total / denom
        new = new / np.exp(np.log(new).mean(axis=-1, keepdims=True))
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    return 1000.0 + 400.0 * np.log10(p)


def _elo_sequences(votes: Sequence[Mapping[str, Any]], arms: list[str]):
    """Per vote, its comparisons as index arrays padded to the same length (mask for padding)."""
    import numpy as np

    pos = {a: i for i, a in enumerate(arms)}
    per_vote = [outcomes(v) for v in votes]
    width = max((len(o) for o in per_vote), default=0)
    a = np.zeros((len(votes), width), dtype=int)
    b = np.zeros((len(votes), width), dtype=int)
    s = np.zeros((len(votes), width))
    m = np.zeros((len(votes), width))
    for v, outs in enumerate(per_vote):
        for k, (x, y, score) in enumerate(outs):
            a[v, k], b[v, k], s[v, k], m[v, k] = pos[x], pos[y], score, 1.0
    return a, b, s, m


def online_elo(a, b, s, m, n_arms: int, k: float):
    """Online Elo over comparison sequences ``a, b, s, m`` of shape (runs, steps)."""
    import numpy as np

    runs = a.shape[0]
    ratings = np.full((runs, n_arms), 1000.0)
    rows = np.arange(runs)
    for t in range(a.shape[1]):
        ra, rb = ratings[rows, a[:, t]], ratings[rows, b[:, t]]
        expected = 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))
        delta = k * (s[:, t] - expected) * m[:, t]
        ratings[rows, a[:, t]] += delta
        ratings[rows, b[:, t]] -= delta
    return ratings


def _interval(samples, confidence: float) -> tuple[Any, Any]:
    import numpy as np

    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def leaderboard(votes: Sequence[Mapping[str, Any]], resamples: int = 500, seed: int = 0,
                elo_k: float = 16.0, confidence: float = 0.95) -> dict[str, Any]:
    """Per arm: votes, first places, wins / ties / losses, win rate, Bradley–Terry and online
    Elo ratings, each rating with its bootstrap interval; and the pairwise win-rate matrix."""
    import numpy as np

    votes = [v for v in votes if len(v.get("ranks") or {}) >= 2]
    arms = sorted({a for v in votes for a in v["ranks"]})
    result: dict[str, Any] = {"votes": len(votes), "arms": [], "pairwise": {},
                              "resamples": resamples, "confidence": confidence}
    if not votes:
        return result
    w = _win_tensor(votes, arms)
    total = w.sum(axis=0)
    games = total + total.T
    bt = bradley_terry(total)
    seqs = _elo_sequences(votes, arms)
    flat = [x.reshape(1, -1) for x in seqs]
    elo = online_elo(*flat, len(arms), elo_k)[0]
    played = games.sum(axis=1)
    win_rate = np.divide(total.sum(axis=1), played, out=np.full(len(arms), np.nan),
                         where=played > 0)
    bounds: dict[str, tuple[Any, Any]] = {}
    if resamples > 0 and len(votes) > 1:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(votes), size=(resamples, len(votes)))
        counts = np.zeros((resamples, len(votes)))
        np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)
        boot = np.einsum("rv,vij->rij", counts, w)
        boot_played = (boot + np.swapaxes(boot, 1, 2)).sum(axis=2)
        boot_rate = np.divide(boot.sum(axis=2), boot_played,
                              out=np.full_like(boot_played, np.nan), where=boot_played > 0)
        bounds["win_rate"] = _interval_nan(boot_rate, confidence)
        bounds["bt"] = _interval(bradley_terry(boot), confidence)
        elo_runs = online_elo(*(x[picks].reshape(resamples, -1) for x in seqs), len(arms), elo_k)
        bounds["elo"] = _interval(elo_runs, confidence)
    tally = {a: {"votes": 0, "first": 0, "wins": 0, "ties": 0, "losses": 0} for a in arms}
    for v in votes:
        for a, r in v["ranks"].items():
            tally[a]["votes"] += 1
            tally[a]["first"] += r == 1
        for a, b, s in outcomes(v):
            if s == 0.5:
                tally[a]["ties"] += 1
                tally[b]["ties"] += 1
            else:
                winner, loser = (a, b) if s == 1.0 else (b, a)
                tally[winner]["wins"] += 1
                tally[loser]["losses"] += 1
    for i, arm in enumerate(arms):
        row = {"arm": arm, **tally[arm], "comparisons": int(played[i]),
               "win_rate": _num(win_rate[i]), "bt": float(bt[i]), "elo": float(elo[i])}
        for name, (lo, hi) in bounds.items():
            row[f"{name}_lo"], row[f"{name}_hi"] = _num(lo[i]), _num(hi[i])
        result["arms"].append(row)
    result["arms"].sort(key=lambda r: -r["bt"])
    for i, a in enumerate(arms):
        result["pairwise"][a] = {b: (_num(total[i, j] / games[i, j]) if games[i, j] else None)
                                 for j, b in enumerate(arms) if j != i}
    return result


def _interval_nan(samples, confidence: float) -> tuple[Any, Any]:
    """Like :func:`_interval`, ignoring resamples in which an arm was never compared."""
    import warnings

    import numpy as np

    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an arm absent from every resample
        lo, hi = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _num(x: Any) -> float | None:
    import math

    x = float(x)
    return None if math.isnan(x) else x
