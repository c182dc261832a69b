"""Retrieval quality over a question file: title hit@k, answer hit@k, MRR, latency.

* title hit@k — a passage from the question's ``source_title`` is in the top k;
* answer hit@k — one of the reference answers appears (as whole words, ignoring accents and
  case) in a top-k passage, title/section line included (the model reads it too);
* MRR — mean of 1 / rank of the first passage holding an answer (0 when none in the top k);
* latency — wall time of one search (query embedding + search + fusion), median and p95.

Unanswerable questions (``answerable: false`` or no reference) are left out of the hit rates
and counted apart.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from core.io import BadLine
from core.text import fold

log = logging.getLogger(__name__)


def normalise(text: str) -> str:
    """Case, accents and spacing folded (titles compared across sources)."""
    return fold(text)


def contains_answer(text: str, references: Iterable[str]) -> bool:
    """Whether any reference occurs in ``text`` as whole words, accent- and case-insensitive
    (the same test as everywhere in compara: :func:`core.text.contains_answer`)."""
    from core.text import contains_answer as contains

    return any(contains(text, str(ref)) for ref in references)


def references_of(q: dict[str, Any]) -> list[str]:
    ref = q.get("reference")
    if ref is None:
        return []
    refs = [ref] if isinstance(ref, str) else list(ref)
    return [str(r) for r in refs if str(r).strip()]


def is_answerable(q: dict[str, Any]) -> bool:
    return q.get("answerable", True) is not False and bool(references_of(q))


def load_questions(path: str | Path, on_error: Callable[[BadLine], None]) -> list[dict[str, Any]]:
    """Questions of a question file (JSONL, CSV or YAML, through compara's reader); records it
    skips go to ``on_error`` with their file and line."""
    from core.questions import load_questions as read

    qfile = read(path)
    for bad in qfile.problems:
        on_error(bad)
    return [{"id": q.id, "question": q.question, "reference": list(q.reference),
             "source_title": q.source_title, "answerable": q.answerable, "type": q.type,
             "source_titles": q.source_titles} for q in qfile]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def score_question(q: dict[str, Any], passages: Sequence[Any]) -> dict[str, Any]:
    """Ranks (1-based, None if absent) of the first answer passage and first title passage.

    ``passages`` are objects with ``title`` and ``full_text`` (or ``text``), best first."""
    refs = references_of(q)
    title = normalise(str(q.get("source_title") or ""))
    answer_rank = title_rank = None
    for rank, p in enumerate(passages, start=1):
        text = getattr(p, "full_text", "") or getattr(p, "text", "")
        if answer_rank is None and refs and contains_answer(text, refs):
            answer_rank = rank
        if title_rank is None and title and normalise(p.title) == title:
            title_rank = rank
    return {"answer_rank": answer_rank, "title_rank": title_rank}


def summarise(rows: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """Metrics over per-question rows (``answerable``, ``answer_rank``, ``title_rank``,
    ``has_title``, ``latency_s``)."""
    answerable = [r for r in rows if r["answerable"]]
    titled = [r for r in answerable if r["has_title"]]
    out: dict[str, Any] = {"questions": len(rows), "answerable": len(answerable),
                           "unanswerable": len(rows) - len(answerable),
                           "with_source_title": len(titled)}
    for k in ks:
        out[f"answer_hit@{k}"] = (sum(1 for r in answerable if r["answer_rank"] and
                                      r["answer_rank"] <= k) / len(answerable)
                                  if answerable else None)
        out[f"title_hit@{k}"] = (sum(1 for r in titled if r["title_rank"] and
                                     r["title_rank"] <= k) / len(titled) if titled else None)
    out["mrr"] = (sum(1.0 / r["answer_rank"] for r in answerable if r["answer_rank"])
                  / len(answerable) if answerable else None)
    out["title_mrr"] = (sum(1.0 / r["title_rank"] for r in titled if r["title_rank"])
                        / len(titled) if titled else None)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in answerable:
        by_type.setdefault(str(r.get("type") or "-"), []).append(r)
    kmax = max(ks)
    out[f"answer_hit@{kmax}_by_type"] = {
        t: round(sum(1 for r in rs if r["answer_rank"] and r["answer_rank"] <= kmax) / len(rs), 4)
        for t, rs in sorted(by_type.items())}
    lat = [r["latency_s"] * 1000 for r in rows if r.get("latency_s") is not None]
    out["latency_ms"] = {"median": statistics.median(lat) if lat else None,
                         "p95": percentile(lat, 0.95) if lat else None, "n": len(lat)}
    return out


def _label(passage: Any) -> str:
    section = getattr(passage, "section", "")
    return f"{passage.title} — {section}" if section else passage.title


def evaluate(index, questions: list[dict[str, Any]], ks: Sequence[int],
             retrievers: Sequence[str]) -> dict[str, Any]:
    """Metrics per retriever, plus the per-question rows (for a details file)."""
    from core.logs import progress

    depth = max(ks)
    results: dict[str, Any] = {"k": list(ks), "retrievers": {}, "details": []}
    details: dict[str, dict[str, Any]] = {}
    # Warm up the query embedder so the first question does not pay for loading it.
    index.search(questions[0]["question"] if questions else "teste", 1, "dense")
    for name in retrievers:
        rows = []
        for q in progress(questions, desc=f"eval {name}", unit=" q"):
            passages, seconds = index.timed_search(q["question"], depth, name)
            row = {"id": q.get("id"), "type": q.get("type"), "answerable": is_answerable(q),
                   "has_title": bool(q.get("source_title")), "latency_s": seconds,
                   **score_question(q, passages)}
            rows.append(row)
            d = details.setdefault(str(q.get("id")), {"id": q.get("id"),
                                                      "question": q["question"],
                                                      "type": q.get("type")})
            d[name] = {"answer_rank": row["answer_rank"], "title_rank": row["title_rank"],
                       "top": [_label(p) for p in passages[:3]]}
        results["retrievers"][name] = summarise(rows, ks)
    results["details"] = list(details.values())
    return results
