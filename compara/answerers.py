"""The four arms of the comparison over ONE copy of the base weights.

    comparison = build_comparison(cfg)               # loads the model, adapter and index once
    answers = comparison.answer("rag", ["Quando foi fundada Brasília?"])

``base`` and ``finetuned`` render the question with the instruction template the adapter was
trained with; ``rag`` and ``finetuned+rag`` fill it with retrieved passages (the RAG template).
The fine-tuned arms switch the LoRA adapter on, the base arms switch it off (PEFT's
``disable_adapter``): the same weights, quantisation and decoding settings serve every arm, so
only the adapter or the context differs. Generation holds a lock: the app can share one
comparison between sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.prompts import PromptTemplate, RagTemplate

if TYPE_CHECKING:
    from compara.config import ExperimentConfig
    from core.config import GenerationConfig
    from core.generation import Generation
    from core.likelihood import KnowledgeScore
    from core.models import Loaded
    from core.questions import Question
    from rag.config import RetrievalConfig

log = logging.getLogger(__name__)

ARMS = ("base", "rag", "finetuned", "finetuned+rag")
ADAPTER_ARMS = {"finetuned", "finetuned+rag"}
RETRIEVAL_ARMS = {"rag", "finetuned+rag"}


class ArmUnavailable(UserError, ValueError):
    """An arm was asked for whose adapter or index is missing."""


@dataclass
class Answer:
    """One arm's answer to one question, with everything needed to trust and reproduce it."""

    arm: str
    question: str
    text: str
    prompt: str
    passages: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    latency_s: float
    tokens_per_s: float | None
    stopped_on_eos: bool
    identity: dict[str, Any]
    finish_reason: str = "max_tokens"  # eos | stop_string | max_tokens
    truncated: bool = False
    retrieval_s: float | None = None
    cached: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The answer fields of a results.jsonl record."""
        return {"arm": self.arm, "answer": self.text, "prompt": self.prompt,
                "passages": self.passages, "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out, "latency_s": self.latency_s,
                "tokens_per_s": self.tokens_per_s, "stopped_on_eos": self.stopped_on_eos,
                "finish_reason": self.finish_reason, "truncated_prompt": self.truncated, "retrieval_s": self.retrieval_s,
                "identity": self.identity}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def adapter_hash(adapter_dir: str | Path) -> str:
    """The adapter's identity: a hash of its weights file (first 16 hex digits)."""
    folder = Path(adapter_dir)
    weights = sorted(folder.glob("adapter_model.*"))
    h = hashlib.sha256()
    for path in weights:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def index_id(index_dir: str | Path) -> str:
    """The index's identity: a hash of its verified manifest (first 16 hex digits)."""
    return hashlib.sha256((Path(index_dir) / "manifest.json").read_bytes()).hexdigest()[:16]


class Comparison:
    """Answers questions through any available arm; one model, one lock."""

    def __init__(self, loaded: Loaded, decoding: GenerationConfig, template: PromptTemplate,
                 rag_template: RagTemplate | None = None, index: Any = None,
                 retrieval: RetrievalConfig | None = None, index_dir: str | None = None,
                 adapter_dir: str | None = None):
        self.loaded = loaded
        self.decoding = decoding
        self.template = template
        self.rag_template = rag_template or RagTemplate.load()
        self.index = index
        self.retrieval = retrieval
        self.lock = threading.RLock()
        self._passages: OrderedDict[str, tuple[list[dict[str, Any]], float]] = OrderedDict()
        # Where answers end, identical for every arm (the template's markers by default).
        self.stop_strings = decoding.resolved_stop_strings(template)
        self._identity_base = {
            "base_model": loaded.info.base,
            "fingerprint": loaded.info.fingerprint,
            "quantize": loaded.info.quantize,
            "dtype": loaded.info.dtype,
            # unpacked 4-bit weights: the same values, other kernels (answers may differ in
            # the last bits); absent otherwise, so earlier identities are unchanged
            **({"unpacked": True} if loaded.info.unpacked_on_cpu else {}),
            "decoding": decoding.identity(self.stop_strings),
            "template": template.fingerprint,
        }
        self._adapter = adapter_hash(adapter_dir) if adapter_dir and loaded.adapter else None
        self._index = index_id(index_dir) if index_dir and index is not None else None

    def with_settings(self, decoding: GenerationConfig | None = None,
                      retrieval: RetrievalConfig | None = None) -> Comparison:
        """The same model, adapter, index and lock with other decoding or retrieval settings.

        The app keeps one comparison per process and gives each request its own settings
        through a view like this, so a session never changes what another one generates with.
        """
        import copy

        view = copy.copy(self)  # shares loaded, index, templates and the lock
        if decoding is not None:
            view.decoding = decoding
            view.stop_strings = decoding.resolved_stop_strings(self.template)
            view._identity_base = {**self._identity_base,
                                   "decoding": decoding.identity(view.stop_strings)}
        if retrieval is not None and retrieval != self.retrieval:
            view.retrieval = retrieval
            view._passages = OrderedDict()  # remembered passages are per retrieval setting
        return view

    # -- what is available ----------------------------------------------------------------
    @property
    def arms(self) -> list[str]:
        out = ["base"]
        if self.index is not None:
            out.append("rag")
        if self.loaded.adapter is not None:
            out.append("finetuned")
            if self.index is not None:
                out.append("finetuned+rag")
        return out

    def check(self, arm: str) -> None:
        if arm not in ARMS:
            raise ArmUnavailable(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
        if arm in ADAPTER_ARMS and self.loaded.adapter is None:
            raise ArmUnavailable(f"arm {arm!r} needs a fine-tuned adapter: none is loaded "
                                 "(run `compara finetune`, or pass --adapter DIR)")
        if arm in RETRIEVAL_ARMS and self.index is None:
            raise ArmUnavailable(f"arm {arm!r} needs an index: none is loaded "
                                 "(run `compara index`, or pass --index DIR)")

    def identity(self, arm: str) -> dict[str, Any]:
        ident = {"arm": arm, **self._identity_base,
                 "adapter": self._adapter if arm in ADAPTER_ARMS else None,
                 "index": self._index if arm in RETRIEVAL_ARMS else None}
        if arm in RETRIEVAL_ARMS and self.retrieval is not None:
            ident["retrieval"] = {"retriever": self.retrieval.retriever, "k": self.retrieval.k}
            ident["rag_template"] = self.rag_template.fingerprint
        return ident

    def cache_key(self, arm: str, prompt: str) -> str:
        """Same model, adapter, index, decoding and prompt: the same answer."""
        ident = {k: v for k, v in self.identity(arm).items() if k != "arm"}
        return _digest({"identity": ident, "prompt": prompt})

    # -- prompts --------------------------------------------------------------------------
    def retrieve(self, question: str) -> tuple[list[dict[str, Any]], float]:
        """Passages for a question (shared by rag and finetuned+rag; remembered)."""
        import time

        from rag.retrieve import prompt_passages

        if question in self._passages:
            self._passages.move_to_end(question)
            return self._passages[question]
        t0 = time.perf_counter()
        found = self.index.search(question, k=self.retrieval.k, retriever=self.retrieval.retriever)
        result = (prompt_passages(found), round(time.perf_counter() - t0, 4))
        self._passages[question] = result
        if len(self._passages) > 4096:
            self._passages.popitem(last=False)
        return result

    def _n_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer(text).input_ids)

    def prompt(self, arm: str, question: str) -> tuple[str, list[dict[str, Any]], bool, float | None]:
        """(prompt, passages, truncated, retrieval seconds) for a question through an arm.

        A prompt over ``max_prompt_tokens`` is cut: passages are dropped from the last and
        then shortened, and only then is the question itself shortened.
        """
        self.check(arm)
        budget = self.decoding.max_prompt_tokens
        passages: list[dict[str, Any]] = []
        seconds = None
        if arm in RETRIEVAL_ARMS:
            passages, seconds = self.retrieve(question)
            passages = [dict(p) for p in passages]

        def render(q: str, ps: list[dict[str, Any]]) -> str:
            if arm in RETRIEVAL_ARMS:
                return self.rag_template.render(self.template, q, ps)
            return self.template.render(q)

        prompt = render(question, passages)
        if self._n_tokens(prompt) <= budget:
            return prompt, passages, False, seconds
        while len(passages) > 1 and self._n_tokens(render(question, passages)) > budget:
            passages.pop()
        while passages and self._n_tokens(render(question, passages)) > budget:
            text = passages[-1]["text"]
            if len(text) < 40:
                passages.pop()
                continue
            passages[-1]["text"] = text[: int(len(text) * 0.8)].rstrip() + " …"
        while self._n_tokens(render(question, passages)) > budget and len(question) > 20:
            question = question[: int(len(question) * 0.8)].rstrip() + " …"
        prompt = render(question, passages)
        log.warning("prompt of arm %s over %d tokens: cut to fit (%d passage(s) kept)",
                    arm, budget, len(passages))
        return prompt, passages, True, seconds

    # -- answering ------------------------------------------------------------------------
    @contextlib.contextmanager
    def arm_state(self, arm: str):
        """The adapter on for the fine-tuned arms, off for the base arms (under the lock):
        what generation and reference likelihood (:mod:`core.likelihood`) both run in."""
        with self.lock:
            if arm in ADAPTER_ARMS:
                yield
            else:
                with self.loaded.adapter_disabled():
                    yield

    _arm_state = arm_state  # the former name

    def _answer(self, arm: str, question: str, prompt: str, passages: list[dict[str, Any]],
                truncated: bool, seconds: float | None, gen: Generation) -> Answer:
        return Answer(arm=arm, question=question, text=gen.text, prompt=prompt,
                      passages=passages, tokens_in=gen.tokens_in, tokens_out=gen.tokens_out,
                      latency_s=gen.latency_s, tokens_per_s=gen.tokens_per_s,
                      stopped_on_eos=gen.stopped_on_eos, finish_reason=gen.finish_reason,
                      identity=self.identity(arm), truncated=truncated, retrieval_s=seconds)

    def generate_prompts(self, arm: str, prompts: Sequence[str], on_batch=None,
                         score: Sequence[Sequence[str]] | None = None) -> list[Generation]:
        """Generations of ``prompts`` through ``arm``; ``score``: texts to score after each
        prompt on the same prompt pass (``Generation.scores``, see core.generation)."""
        from core.generation import generate

        self.check(arm)
        with self.arm_state(arm):
            return generate(self.loaded.model, self.loaded.tokenizer, prompts, self.decoding,
                            on_batch=on_batch, stop_strings=self.stop_strings, score=score)

    def answer(self, arm: str, questions: Sequence[str], on_batch=None) -> list[Answer]:
        """Answers of one arm to several questions (generated in batches)."""
        prepared = [self.prompt(arm, q) for q in questions]
        gens = self.generate_prompts(arm, [p[0] for p in prepared], on_batch=on_batch)
        return [self._answer(arm, q, *p, g) for q, p, g in zip(questions, prepared, gens, strict=True)]

    def answer_stream(self, arm: str, question: str) -> Iterator[str | Answer]:
        """Yield the answer's text piece by piece as it is generated, then the :class:`Answer`."""
        from core.generation import Generation, generate_stream

        prompt, passages, truncated, seconds = self.prompt(arm, question)
        with self.arm_state(arm):
            for item in generate_stream(self.loaded.model, self.loaded.tokenizer, prompt,
                                        self.decoding, stop_strings=self.stop_strings):
                if isinstance(item, Generation):
                    yield self._answer(arm, question, prompt, passages, truncated, seconds, item)
                else:
                    yield item


def build_comparison(cfg: ExperimentConfig, arms: Sequence[str] | None = None) -> Comparison:
    """Load what the requested arms need (default: every arm whose adapter/index exists),
    each once: the base model, the adapter on top of it, the index."""
    from core.models import attach_adapter, load_base

    wanted = list(arms) if arms else list(ARMS)
    unknown = [a for a in wanted if a not in ARMS]
    if unknown:
        raise ArmUnavailable(f"unknown arm(s) {', '.join(unknown)}; arms: {', '.join(ARMS)}")
    adapter_dir = cfg.paths.adapter if cfg.paths.adapter and Path(cfg.paths.adapter).is_dir() else None
    index_dir = cfg.paths.index if cfg.paths.index and Path(cfg.paths.index).is_dir() else None
    need_adapter = bool(ADAPTER_ARMS & set(wanted))
    need_index = bool(RETRIEVAL_ARMS & set(wanted))
    if arms:  # arms named explicitly must be buildable
        if need_adapter and adapter_dir is None:
            raise ArmUnavailable(f"arms {sorted(ADAPTER_ARMS & set(wanted))} need an adapter, but "
                                 f"there is none at {cfg.paths.adapter} (run `compara finetune`)")
        if need_index and index_dir is None:
            raise ArmUnavailable(f"arms {sorted(RETRIEVAL_ARMS & set(wanted))} need an index, but "
                                 f"there is none at {cfg.paths.index} (run `compara index`)")
    if cfg.generation.threads:
        import torch

        torch.set_num_threads(cfg.generation.threads)
    loaded = load_base(cfg.model)
    if loaded.info.device == "cpu" and loaded.info.quantize == "4bit":
        unpacked = 0
        if cfg.model.unpack_4bit_on_cpu:
            import psutil

            from core.models.loading import unpack_4bit

            unpacked = unpack_4bit(loaded.model, psutil.virtual_memory().available // 4)
            loaded.info.unpacked_on_cpu = unpacked > 0
            if unpacked:
                log.info("4-bit weights unpacked once into %s for answering on this CPU (%d "
                         "layers; the same values, not unpacked again at every step)",
                         loaded.info.dtype, unpacked)
        if not unpacked:
            log.info("4-bit weights on a CPU answer more slowly than unquantised ones (they are "
                     "dequantised at every step; BENCHMARKS.md); `-s model.quantize=none` answers "
                     "faster, every arm still on the one set of base weights (the adapter, "
                     "trained on the 4-bit base, is then applied to the unquantised one)")
    if need_adapter and adapter_dir:
        loaded = attach_adapter(loaded, adapter_dir)
        template = loaded.adapter.template
    else:
        template = PromptTemplate.load(cfg.ingest.instructions.template)
    index = None
    if need_index and index_dir:
        from rag.retrieve import load_index

        index = load_index(index_dir, cfg.index, cfg.retrieval)
    comparison = Comparison(loaded, cfg.generation, template, RagTemplate.load(), index,
                            cfg.retrieval, index_dir=index_dir,
                            adapter_dir=adapter_dir if need_adapter else None)
    missing = [a for a in wanted if a not in comparison.arms]
    if missing:
        log.warning("arm(s) not available: %s (%s)", ", ".join(missing),
                    "no adapter" if ADAPTER_ARMS & set(missing) else "no index")
    return comparison


# -- likelihood ---------------------------------------------------------------------------

def score_arm(comparison: Comparison, arm: str, questions: Sequence[Question],
              distractors: dict[str, list[str]] | None = None,
              prompts: Sequence[str] | None = None,
              batch_size: int | None = None) -> list[KnowledgeScore]:
    """Reference likelihood (and multiple choice, with ``distractors`` from
    :func:`core.likelihood.choose_distractors`) of each question through ``arm``, in the order given.

    ``prompts``: the arm's prompts when they are already known (a results record's
    ``prompt``); by default ``comparison.prompt(arm, question)``, the prompt its answer is
    generated from. Questions without a reference get an empty score. The forward passes run
    under the comparison's lock, in the arm's adapter state, ``batch_size`` pairs at a time
    (default: the decoding batch size).
    """
    from core.likelihood import KnowledgeScore, reference_logprobs, score_question

    comparison.check(arm)
    distractors = distractors or {}
    if prompts is None:
        prompts = [comparison.prompt(arm, q.question)[0] if q.reference else "" for q in questions]
    elif len(prompts) != len(questions):
        raise ValueError(f"{len(prompts)} prompts for {len(questions)} questions")
    flat_prompts: list[str] = []
    flat_texts: list[str] = []
    for q, prompt in zip(questions, prompts, strict=True):
        if q.reference:
            texts = [*q.reference, *distractors.get(q.id, [])]
            flat_prompts += [prompt] * len(texts)
            flat_texts += texts
    size = batch_size or comparison.decoding.batch_size
    with comparison.arm_state(arm):  # the lock, and the adapter on or off as for answers
        scores = reference_logprobs(comparison.loaded.model, comparison.loaded.tokenizer,
                                    flat_prompts, flat_texts, batch_size=size)
    out: list[KnowledgeScore] = []
    at = 0
    for q in questions:
        if not q.reference:
            out.append(KnowledgeScore(question_id=q.id, arm=arm))
            continue
        ds = distractors.get(q.id, [])
        n = len(q.reference) + len(ds)
        out.append(score_question(q.id, arm, q.reference, ds, scores[at:at + n]))
        at += n
    return out
