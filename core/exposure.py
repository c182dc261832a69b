"""Fact exposure: how often the answer to a question was in the fine-tuning data.

For each question with a reference, :func:`compute_exposure` counts the training instruction
records (``instructions.train.jsonl``: instruction, input, output, source_title, task) that
contain one of its reference answers, with the same test as the ``contains`` metric (normalised
whole words, articles ignored): in any field (``records``) and in the ``output`` alone
(``outputs``, what the model was trained to produce; the prompt is masked in training). The
report then shows the fine-tuned arms' accuracy by how often the fact was seen, next to the
retrieval arms, which do not depend on it.

Cost. Every reference of every question goes into one matcher: a hash table from token tuples
to the questions they answer, plus, for each first token, the few reference lengths that start
with it. Each record is normalised once and scanned once: at each token only the lengths that
start with that token are tried. Time is O(T · L) for T tokens in the training set and L the
number of distinct reference lengths sharing a first token (1–3 in practice), plus O(R) to
build the table for R reference tokens; it does not grow with the number of questions, unlike
testing every question against every record (O(Q · T)). Memory: O(R) and the counters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.metrics import ARTICLES, tokens, words

log = logging.getLogger(__name__)

TEXT_FIELDS = ("instruction", "input", "output")
# Lower edges of the exposure bins: 0, 1–2, 3–5, 6–10, 11+ records. The instruction set asks
# each fact several ways (3 by default), so one fact seen once lands in "3–5".
DEFAULT_BIN_EDGES = (0, 1, 3, 6, 11)


@dataclass(frozen=True)
class Exposure:
    """Training records of one question that contain one of its reference answers."""

    question_id: str
    records: int  # in any of instruction, input, output
    outputs: int  # in the output

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _NeedleTable:
    """Token tuples → question indices, and for each first token the lengths starting with it."""

    def __init__(self) -> None:
        self.needles: dict[tuple[str, ...], set[int]] = {}
        self.lengths: dict[str, set[int]] = {}

    def add(self, needle: tuple[str, ...], qi: int) -> None:
        self.needles.setdefault(needle, set()).add(qi)
        self.lengths.setdefault(needle[0], set()).add(len(needle))

    def scan(self, toks: list[str], found: set[int]) -> None:
        lengths, needles = self.lengths, self.needles
        for i, tok in enumerate(toks):
            for n in lengths.get(tok, ()):
                hit = needles.get(tuple(toks[i:i + n]))
                if hit:
                    found |= hit


class ReferenceMatcher:
    """Finds, in one pass over a text, every question whose reference occurs in it (the test
    of :func:`core.metrics.contains`, for all questions at once)."""

    def __init__(self, references: Mapping[str, Sequence[str]], keep_accents: bool = False):
        self.keep_accents = keep_accents
        self.ids: list[str] = list(references)
        self._tokens = _NeedleTable()
        # references made only of articles ("um") are matched with articles kept, as in metrics
        self._words = _NeedleTable()
        for qi, qid in enumerate(self.ids):
            for ref in references[qid]:
                ws = words(ref, keep_accents)
                if ws and all(w in ARTICLES for w in ws):
                    self._words.add(tuple(ws), qi)
                elif ws:
                    self._tokens.add(tuple(tokens(ref, keep_accents)), qi)

    def __len__(self) -> int:
        return len(self._tokens.needles) + len(self._words.needles)

    def match(self, text: str) -> set[int]:
        """Indices (into ``ids``) of the questions with a reference in ``text``."""
        found: set[int] = set()
        if self._tokens.needles:
            self._tokens.scan(tokens(text, self.keep_accents), found)
        if self._words.needles:
            self._words.scan(words(text, self.keep_accents), found)
        return found


def _question_refs(questions: Iterable[Any]) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for q in questions:
        if isinstance(q, Mapping):
            qid = q.get("question_id", q.get("id"))
            reference = q.get("reference") or []
        else:
            qid, reference = q.id, q.reference
        if isinstance(reference, str):
            reference = [reference]
        reference = [r for r in reference if isinstance(r, str) and r.strip()]
        if qid is not None and reference:
            refs[str(qid)] = reference
    return refs


def _records(instructions: str | Path | Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    if not isinstance(instructions, (str, Path)):
        return instructions
    from core.io import iter_jsonl

    def bad(line: Any) -> None:
        log.warning("skipped: %s", line)

    return (rec for _, rec in iter_jsonl(instructions, on_error=bad))


def compute_exposure(questions: Iterable[Any],
                     instructions: str | Path | Iterable[Mapping[str, Any]],
                     keep_accents: bool = False) -> dict[str, Exposure]:
    """Exposure of every question with a reference (question id → :class:`Exposure`).

    ``questions``: :class:`core.questions.Question` objects or records with ``id`` /
    ``question_id`` and ``reference``. ``instructions``: the training JSONL file (bad lines are
    skipped with a warning) or an iterable of records. Questions without a reference are left
    out: nothing to look for.
    """
    from core.logs import progress

    refs = _question_refs(questions)
    matcher = ReferenceMatcher(refs, keep_accents)
    records = [0] * len(matcher.ids)
    outputs = [0] * len(matcher.ids)
    # delay: no bar at all for the few thousand records of the sample (well under a second)
    for rec in progress(_records(instructions), desc="fact exposure", unit=" records",
                        leave=False, delay=2.0):
        found_out = matcher.match(str(rec.get("output") or ""))
        found = set(found_out)
        for name in TEXT_FIELDS:
            if name != "output" and rec.get(name):
                found |= matcher.match(str(rec[name]))
        for qi in found:
            records[qi] += 1
        for qi in found_out:
            outputs[qi] += 1
    return {qid: Exposure(qid, records[i], outputs[i]) for i, qid in enumerate(matcher.ids)}


def exposure_bin(count: int | None, edges: Sequence[int] = DEFAULT_BIN_EDGES) -> str | None:
    """The label of the bin ``count`` falls in ("0", "1–2", "3–5", "6–10", "11+")."""
    if count is None:
        return None
    labels = bin_labels(edges)
    for i in range(len(edges) - 1, -1, -1):
        if count >= edges[i]:
            return labels[i]
    return labels[0]


def bin_labels(edges: Sequence[int] = DEFAULT_BIN_EDGES) -> list[str]:
    labels = []
    for i, lo in enumerate(edges):
        if i == len(edges) - 1:
            labels.append(f"{lo}+")
        else:
            hi = edges[i + 1] - 1
            labels.append(str(lo) if hi == lo else f"{lo}–{hi}")
    return labels


def write_exposure(path: str | Path, exposure: Mapping[str, Exposure]) -> None:
    """Save exposures as JSONL (one line per question), atomically."""
    from core.io import write_jsonl

    write_jsonl(path, (e.to_dict() for e in exposure.values()))


def read_exposure(path: str | Path) -> dict[str, Exposure]:
    """Exposures saved by :func:`write_exposure`; a bad line is an error naming it."""
    from core.io import InputError, iter_jsonl

    out = {}
    for line, rec in iter_jsonl(path):
        try:
            e = Exposure(str(rec["question_id"]), int(rec["records"]), int(rec["outputs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}:{line}: not an exposure record ({exc!r})") from None
        out[e.question_id] = e
    return out
