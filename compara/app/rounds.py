"""One question through the arms, the way the Ask tab needs it (no Streamlit in here).

A *round* is one question asked once: the arms in the order they are shown, whether it is
blind, and each arm's record as it completes — the same record `compara batch` writes to
results.jsonl (question fields, answer, prompt, passages, timing, identity, metrics), so the
page, the batch runner and the report all read one format. Answers go through the answer
cache `compara batch` uses: an unchanged question with unchanged settings is answered at once.
A card also gets the measures without a judge that one question allows (:func:`card_measures`):
reference likelihood and similarity when the question has a reference, language and
faithfulness always; multiple choice needs other questions' answers, so only batch runs have it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.questions import Question, RecordError, parse_question

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.pipeline import AnswerCache

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """Input the page refuses; ``key`` names the message in :mod:`compara.app.i18n`."""

    def __init__(self, key: str, **params: Any):
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass
class Round:
    """One question asked once, and what each arm answered so far."""

    number: int
    question: Question
    order: list[str]  # arms, in the order of the columns (A, B, ... when blind)
    blind: bool
    blind_key: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # decoding + retrieval used
    model_key: str = ""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    vote: dict[str, Any] | None = None
    revealed: bool = False  # blind rounds: names shown (after the vote, or by choice)

    @property
    def complete(self) -> bool:
        return all(arm in self.records for arm in self.order)

    @property
    def hidden(self) -> bool:
        """Arm names must not appear anywhere on the page."""
        return self.blind and not self.revealed


def typed_question(text: str | None, reference: str | None, max_chars: int,
                   max_reference_chars: int) -> Question:
    """A question typed by the user, with an optional reference ("a | b" for several)."""
    text = (text or "").strip()
    if not text:
        raise BadInput("err_empty")
    if len(text) > max_chars:
        raise BadInput("err_too_long", n=len(text), limit=max_chars)
    reference = (reference or "").strip()
    if len(reference) > max_reference_chars:
        raise BadInput("err_reference_too_long", n=len(reference), limit=max_reference_chars)
    try:
        return parse_question({"question": text, "reference": reference or None})
    except RecordError as exc:
        raise BadInput("err_question", reason=str(exc)) from None


def file_question(question: Question, max_chars: int) -> Question:
    """A question picked from a file (already validated when the file was read)."""
    if len(question.question) > max_chars:
        raise BadInput("err_too_long", n=len(question.question), limit=max_chars)
    return question


def record_of(question: Question, answer: dict[str, Any], key: str, cached: bool,
              abstain: Sequence[str] = (), measured: dict[str, Any] | None = None,
              measures: Sequence[str] | None = None) -> dict[str, Any]:
    """The results.jsonl record of one answer, scored; ``measured``: the model's measures
    (:func:`card_measures`), ``measures``: ``eval.measures`` (default: all)."""
    from core.metrics import MEASURES, score_answer

    record = {"key": key, **question.to_dict(), **answer, "cached": cached,
              "metrics": dict(measured or {})}
    score_answer(record, abstain_phrases=list(abstain),
                 measures=tuple(MEASURES) if measures is None else measures)
    return record


def card_measures(view: Comparison, arm: str, question: Question, prompt: str, answer: str,
                  measures: Sequence[str] | None = None,
                  cache: AnswerCache | None = None) -> dict[str, Any]:
    """Reference likelihood (cached like the batch runner's) and semantic similarity (with the
    index's embedder; none without an index) of one answer to a question with a reference.
    A measure that fails is logged and left out: the answer itself is still shown."""
    try:
        return _card_measures(view, arm, question, prompt, answer, measures, cache)
    except Exception:  # a measure must not take the answer's card down
        log.warning("measures of arm %s left out", arm, exc_info=True)
        return {}


def _card_measures(view: Comparison, arm: str, question: Question, prompt: str, answer: str,
                   measures: Sequence[str] | None, cache: AnswerCache | None) -> dict[str, Any]:
    from core.metrics import MEASURES

    wanted = set(MEASURES if measures is None else measures)
    out: dict[str, Any] = {}
    if not question.reference:
        return out
    if "likelihood" in wanted:
        from compara.comparison import score_arm
        from core.likelihood import cache_key

        key = cache_key(view, arm, prompt, list(question.reference))
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            (score,) = score_arm(view, arm, [question], prompts=[prompt])
            hit = score.to_record()
            if cache is not None:
                cache.put(key, hit)
        out.update({k: hit.get(k) for k in MEASURES["likelihood"]})
    embedder = getattr(view.index, "embedder", None)
    if "similarity" in wanted and embedder is not None and answer.strip():
        from core.measures import query_side, semantic_similarity

        out["similarity"] = semantic_similarity(answer, question.reference, query_side(embedder))
    return out


def stream_answer(view: Comparison, arm: str, question: Question,
                  cache: AnswerCache | None = None,
                  on_wait: Callable[[], None] | None = None,
                  measures: Sequence[str] | None = None) -> Iterator[str | dict[str, Any]]:
    """Yield the answer's text piece by piece, then its scored record (with the measures of
    ``measures``, ``eval.measures``; default all).

    Holds the comparison's lock for the whole answer (retrieval and generation), so sessions
    take turns on the one model; ``on_wait`` is called first when another session holds it.
    Closing this generator early stops the generation and releases the lock.
    """
    from compara.comparison import Answer
    from compara.pipeline import with_finish_reason

    lock = view.lock
    if not lock.acquire(blocking=False):
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        prompt, _, _, _ = view.prompt(arm, question.question)
        key = view.cache_key(arm, prompt)
        hit = cache.get(key) if cache is not None else None
        abstain = [view.rag_template.abstain]
        if hit is not None:
            answer = {"arm": arm, "identity": view.identity(arm), **with_finish_reason(hit)}
            measured = card_measures(view, arm, question, prompt, answer["answer"], measures,
                                     cache)
            yield record_of(question, answer, key, True, abstain, measured, measures)
            return
        stream = view.answer_stream(arm, question.question)
        try:
            for item in stream:
                if isinstance(item, Answer):
                    answer = item.to_record()
                    if cache is not None:
                        cache.put(key, {k: v for k, v in answer.items()
                                        if k not in ("arm", "identity")})
                    measured = card_measures(view, arm, question, prompt, answer["answer"],
                                             measures, cache)
                    yield record_of(question, answer, key, False, abstain, measured, measures)
                else:
                    yield item
        finally:
            stream.close()
    finally:
        lock.release()


def settings_of(view: Comparison) -> dict[str, Any]:
    """The per-request settings of a view: what a round remembers to be continued alike."""
    retrieval = view.retrieval
    return {"decoding": view.decoding.to_dict(),
            "retrieval": retrieval.to_dict() if retrieval is not None else None}


def view_for(comparison: Comparison, settings: dict[str, Any]) -> Comparison:
    """A view of ``comparison`` with the settings :func:`settings_of` recorded."""
    from core.config import GenerationConfig
    from rag.config import RetrievalConfig

    retrieval = settings.get("retrieval")
    return comparison.with_settings(
        decoding=GenerationConfig.from_dict(settings["decoding"]),
        retrieval=RetrievalConfig.from_dict(retrieval) if retrieval else None)
