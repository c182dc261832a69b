"""Rounds: one question through the arms, the way the Ask tab needs it (no Streamlit in here).

A *round* is one question asked once: the arms in the order they are shown, whether it is
blind, and each arm's record as it completes. Each record comes from
:meth:`compara.pipeline.Pipeline.stream`, the answer path of `compara batch`: the same record
results.jsonl holds (question fields, answer, prompt, passages, timing, identity, metrics),
under the same cache key and scored the same way, so the page, the batch runner and the report
all read one format. This module holds what a round is made of: the question (typed or from a
file, bounded), the round itself, and the per-request settings it was asked with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.questions import Question, RecordError, parse_question

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.config import ExperimentConfig
    from compara.pipeline import AnswerCache, Pipeline


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


def pipeline_for(view: Comparison, cfg: ExperimentConfig, cache: AnswerCache | None) -> Pipeline:
    """The answer path of one request: :class:`compara.pipeline.Pipeline` over ``view`` (this
    session's settings) with the launcher config's ``eval`` (measures, accents, abstention) —
    the records `compara batch` writes, under the same cache keys."""
    from compara.pipeline import Pipeline

    return Pipeline(view, cfg.eval, cache, index_cfg=cfg.index)
