"""The arms of the comparison over ONE copy of the base weights.

    comparison = build_comparison(cfg)      # loads the model, each adapter and the index once
    answers = comparison.answer("rag", ["Quando foi fundada Brasília?"])

The arms are data (:mod:`compara.arms`, the config's ``arms:`` list). An arm without retrieval
renders the question with the instruction template the adapters were trained with; an arm with
retrieval fills the RAG template with the passages its retrieval settings find. An arm with an
adapter switches that adapter on (PEFT's ``set_adapter``; several adapters sit side by side on
the same weights), an arm without one switches adapters off (``disable_adapter``): the same
weights, quantisation and decoding settings serve every arm, so only the adapter or the context
differs. Generation holds a lock: the app can share one comparison between sessions.

From (arm, question) to a scored record — cache, measures, metrics — is
:mod:`compara.pipeline`, the one path of `compara batch`, `compara ask` and the app.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compara.arms import Arm, ArmUnavailable, experiment_arms, resolve_arms, select
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

__all__ = ["Answer", "ArmUnavailable", "Comparison", "adapter_hash", "build_comparison",
           "index_id", "score_arm"]


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
                "finish_reason": self.finish_reason, "truncated_prompt": self.truncated,
                "retrieval_s": self.retrieval_s, "identity": self.identity}


@dataclass
class Prepared:
    """An arm's prompt for a question: what it is rendered from and how long retrieval took."""

    prompt: str
    passages: list[dict[str, Any]]
    truncated: bool
    retrieval_s: float | None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def adapter_hash(adapter_dir: str | Path) -> str:
    """The adapter's identity: a hash of its weights file (first 16 hex digits)."""
    folder = Path(adapter_dir)
    h = hashlib.sha256()
    for path in sorted(folder.glob("adapter_model.*")):
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def index_id(index_dir: str | Path) -> str:
    """The index's identity: a hash of its verified manifest (first 16 hex digits)."""
    return hashlib.sha256((Path(index_dir) / "manifest.json").read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _folder_key(folder: str | Path) -> str:
    return str(Path(folder).resolve())


class Comparison:
    """Answers questions through any available arm; one model, one lock.

    ``arms``: the arms (default: the four of the study over ``loaded``'s adapter and
    ``retrieval``). An arm is available when its adapter is loaded and, with retrieval, an
    index is; :attr:`arms` lists those, :meth:`check` says why another one is not.
    """

    def __init__(self, loaded: Loaded, decoding: GenerationConfig, template: PromptTemplate,
                 rag_template: RagTemplate | None = None, index: Any = None,
                 retrieval: RetrievalConfig | None = None, index_dir: str | None = None,
                 arms: Sequence[Arm] | None = None):
        from compara.arms import default_arm_configs
        from rag.config import RetrievalConfig

        self.loaded = loaded
        self.decoding = decoding
        self.template = template  # of the arms without an adapter
        self.rag_template = rag_template or RagTemplate.load()
        self.index = index
        self.retrieval = retrieval or RetrievalConfig()
        self.lock = threading.RLock()
        self.shared: dict[str, Any] = {}  # what views share besides the model (an embedder)
        self._passages: OrderedDict[tuple[str, str], tuple[list[dict[str, Any]], float]] = \
            OrderedDict()
        if arms is None:
            default = loaded.adapter.path if loaded.adapter is not None else None
            arms = resolve_arms(default_arm_configs(), default, self.retrieval)
        self.all_arms = {a.name: a for a in arms}
        self._identity_base = {
            "base_model": loaded.info.base,
            "fingerprint": loaded.info.fingerprint,
            "quantize": loaded.info.quantize,
            "dtype": loaded.info.dtype,
            # unpacked 4-bit weights: the same values, other kernels (answers may differ in
            # the last bits); absent otherwise, so earlier identities are unchanged
            **({"unpacked": True} if loaded.info.unpacked_on_cpu else {}),
            # the head's product by fbgemm's fp16-weight kernel: the same weights, sums in
            # another order (answers may differ in the last bits)
            **({"head_fp16": True} if loaded.info.head_fp16 else {}),
        }
        # the loaded adapters by folder (AdapterInfo), and the hash of each (for the identity)
        self._adapters = {_folder_key(info.path): info for info in loaded.adapters.values()}
        self._adapter_ids = {key: adapter_hash(info.path) for key, info in self._adapters.items()}
        self._index = index_id(index_dir) if index_dir and index is not None else None

    def with_settings(self, decoding: GenerationConfig | None = None,
                      retrieval: RetrievalConfig | None = None) -> Comparison:
        """The same model, adapters, index and lock with other decoding or retrieval settings
        (``retrieval`` replaces the experiment's; arms keep the settings they change).

        The app keeps one comparison per process and gives each request its own settings
        through a view like this, so a session never changes what another one generates with.
        """
        import copy

        view = copy.copy(self)  # shares loaded, index, templates and the lock
        if decoding is not None:
            view.decoding = decoding
        if retrieval is not None and retrieval != self.retrieval:
            view.retrieval = retrieval
            view.all_arms = {n: a.with_retrieval(retrieval) for n, a in self.all_arms.items()}
            view._passages = OrderedDict()
        return view

    # -- what is available ----------------------------------------------------------------
    def arm(self, name: str) -> Arm:
        """The arm called ``name`` (available or not)."""
        try:
            return self.all_arms[name]
        except KeyError:
            raise ArmUnavailable(f"unknown arm {name!r}; arms: {', '.join(self.all_arms)} "
                                 "(the config's `arms:` list)") from None

    def missing(self, arm: Arm) -> str | None:
        """Why ``arm`` cannot answer here (None: it can)."""
        if arm.needs_adapter and self._peft_name(arm) is None:
            if not arm.adapter:
                return (f"arm {arm.name!r} needs the experiment's fine-tuned adapter: none is "
                        "loaded (run `compara finetune`, or pass --adapter DIR)")
            return (f"arm {arm.name!r} needs the adapter in {arm.adapter}: it is not loaded "
                    "(is it an adapter folder of `compara finetune`?)")
        if arm.needs_index and self.index is None:
            return (f"arm {arm.name!r} needs an index: none is loaded (run `compara index`, or "
                    "pass --index DIR)")
        return None

    @property
    def arms(self) -> list[str]:
        """The names of the arms that can answer, in the configured order."""
        return [n for n, a in self.all_arms.items() if self.missing(a) is None]

    def check(self, arm: str) -> Arm:
        """The arm called ``arm``; :class:`ArmUnavailable` saying why if it cannot answer."""
        spec = self.arm(arm)
        reason = self.missing(spec)
        if reason:
            raise ArmUnavailable(reason)
        return spec

    def adapter_id(self, folder: str | Path) -> str | None:
        """The identity (weights hash) of the adapter loaded from ``folder``; None if none is."""
        return self._adapter_ids.get(_folder_key(folder))

    def answering(self, names: Sequence[str] | None = None) -> list[str]:
        """The arms named (once each, each able to answer, else :class:`ArmUnavailable`), or
        every arm that can answer."""
        if not names:
            return self.arms
        for name in names:
            self.check(name)
        return list(dict.fromkeys(names))

    def _peft_name(self, arm: Arm) -> str | None:
        if not arm.adapter:
            return None
        info = self._adapters.get(_folder_key(arm.adapter))
        return info.name if info is not None else None

    def template_of(self, arm: str | Arm) -> PromptTemplate:
        """The instruction template of an arm: its adapter's (the one it was trained with)."""
        spec = self.arm(arm) if isinstance(arm, str) else arm
        if spec.adapter:
            info = self._adapters.get(_folder_key(spec.adapter))
            if info is not None:
                return info.template
        return self.template

    def stop_strings(self, arm: str | Arm) -> list[str]:
        """Where an arm's answers end: the decoding's stop strings (the template's markers)."""
        return self.decoding.resolved_stop_strings(self.template_of(arm))

    def identity(self, arm: str) -> dict[str, Any]:
        """What an answer of ``arm`` depends on: model, adapter, index, retrieval, template,
        decoding (the cache key and the run's identity come from it)."""
        spec = self.arm(arm)
        adapter = self.adapter_id(spec.adapter) if spec.adapter else None
        template = self.template_of(spec)
        ident = {"arm": arm, **self._identity_base,
                 "decoding": self.decoding.identity(self.decoding.resolved_stop_strings(template)),
                 "template": template.fingerprint,
                 "adapter": adapter,
                 "index": self._index if spec.needs_index else None}
        if spec.needs_index:
            ident["retrieval"] = spec.retrieval_identity()
            ident["rag_template"] = self.rag_template.fingerprint
        return ident

    def cache_key(self, arm: str, prompt: str) -> str:
        """Same model, adapter, index, decoding and prompt: the same answer (the arm's name
        is not part of it: two arms that are the same share their answers)."""
        ident = {k: v for k, v in self.identity(arm).items() if k != "arm"}
        return _digest({"identity": ident, "prompt": prompt})

    # -- prompts --------------------------------------------------------------------------
    def retrieve(self, question: str, arm: str | Arm | None = None
                 ) -> tuple[list[dict[str, Any]], float]:
        """Passages for a question with an arm's retrieval settings (default: the
        experiment's); remembered per settings, so arms that retrieve alike share them."""
        from rag.retrieve import prompt_passages

        spec = self.arm(arm) if isinstance(arm, str) else arm
        settings = spec.retrieval if spec is not None and spec.retrieval else self.retrieval
        memo = (json.dumps(settings.to_dict(), sort_keys=True), question)
        if memo in self._passages:
            self._passages.move_to_end(memo)
            return self._passages[memo]
        t0 = time.perf_counter()
        found = self.index.search(question, settings=settings)
        result = (prompt_passages(found), round(time.perf_counter() - t0, 4))
        self._passages[memo] = result
        if len(self._passages) > 4096:
            self._passages.popitem(last=False)
        return result

    def _n_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer(text).input_ids)

    def prepare(self, arm: str, question: str) -> Prepared:
        """An arm's prompt for ``question``. A prompt over ``max_prompt_tokens`` is cut:
        passages are dropped from the last and then shortened, and only then is the question
        itself shortened."""
        spec = self.check(arm)
        budget = self.decoding.max_prompt_tokens
        template = self.template_of(spec)
        passages: list[dict[str, Any]] = []
        seconds = None
        if spec.needs_index:
            passages, seconds = self.retrieve(question, spec)
            passages = [dict(p) for p in passages]

        def render(q: str, ps: list[dict[str, Any]]) -> str:
            if spec.needs_index:
                return self.rag_template.render(template, q, ps)
            return template.render(q)

        prompt = render(question, passages)
        if self._n_tokens(prompt) <= budget:
            return Prepared(prompt, passages, False, seconds)
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
        log.warning("prompt of arm %s over %d tokens: cut to fit (%d passage(s) kept)",
                    arm, budget, len(passages))
        return Prepared(render(question, passages), passages, True, seconds)

    # -- answering ------------------------------------------------------------------------
    @contextlib.contextmanager
    def arm_state(self, arm: str):
        """The arm's adapter on (or every adapter off), under the lock: what generation and
        reference likelihood (:mod:`core.likelihood`) both run in."""
        spec = self.check(arm)
        with self.lock:
            name = self._peft_name(spec)
            if name is None:
                with self.loaded.adapter_disabled():
                    yield
            else:
                self.loaded.use_adapter(name)
                yield

    def answer_of(self, arm: str, question: str, prepared: Prepared, gen: Generation) -> Answer:
        """The :class:`Answer` of a generation from ``prepared``."""
        return Answer(arm=arm, question=question, text=gen.text, prompt=prepared.prompt,
                      passages=prepared.passages, tokens_in=gen.tokens_in,
                      tokens_out=gen.tokens_out, latency_s=gen.latency_s,
                      tokens_per_s=gen.tokens_per_s, stopped_on_eos=gen.stopped_on_eos,
                      finish_reason=gen.finish_reason, identity=self.identity(arm),
                      truncated=prepared.truncated, retrieval_s=prepared.retrieval_s)

    def generate_prompts(self, arm: str, prompts: Sequence[str], on_batch=None,
                         score: Sequence[Sequence[str]] | None = None) -> list[Generation]:
        """Generations of ``prompts`` through ``arm``; ``score``: texts to score after each
        prompt on the same prompt pass (``Generation.scores``, see core.generation)."""
        from core.generation import generate

        with self.arm_state(arm):
            return generate(self.loaded.model, self.loaded.tokenizer, prompts, self.decoding,
                            on_batch=on_batch, stop_strings=self.stop_strings(arm), score=score)

    def answer(self, arm: str, questions: Sequence[str], on_batch=None) -> list[Answer]:
        """Answers of one arm to several questions (generated in batches; no cache: see
        :mod:`compara.pipeline` for the cached, measured path)."""
        prepared = [self.prepare(arm, q) for q in questions]
        gens = self.generate_prompts(arm, [p.prompt for p in prepared], on_batch=on_batch)
        return [self.answer_of(arm, q, p, g) for q, p, g in zip(questions, prepared, gens,
                                                                strict=True)]

    def answer_stream(self, arm: str, question: str,
                      prepared: Prepared | None = None) -> Iterator[str | Answer]:
        """Yield the answer's text piece by piece as it is generated, then the :class:`Answer`."""
        from core.generation import Generation, generate_stream

        prepared = prepared or self.prepare(arm, question)
        with self.arm_state(arm):
            for item in generate_stream(self.loaded.model, self.loaded.tokenizer,
                                        prepared.prompt, self.decoding,
                                        stop_strings=self.stop_strings(arm)):
                if isinstance(item, Generation):
                    yield self.answer_of(arm, question, prepared, item)
                else:
                    yield item


def build_comparison(cfg: ExperimentConfig, arms: Sequence[str] | None = None) -> Comparison:
    """Load what the arms need (default: every arm of the config whose adapter and index
    exist; arms named explicitly must be buildable), each once: the base model, each adapter
    on top of it, the index."""
    from core.models import attach_adapter, load_base

    every = experiment_arms(cfg)
    wanted = select(every, arms)
    index_dir = cfg.paths.index if cfg.paths.index and Path(cfg.paths.index).is_dir() else None
    adapter_dirs: list[str] = []
    problems = []
    for arm in wanted:
        problems += arm.missing_files(cfg.paths.index)
        if arm.needs_adapter and arm.adapter_on_disk and \
                _folder_key(arm.adapter) not in map(_folder_key, adapter_dirs):
            adapter_dirs.append(arm.adapter)
    if arms and problems:
        raise ArmUnavailable("; ".join(problems))
    if cfg.generation.threads:
        import torch

        torch.set_num_threads(cfg.generation.threads)
    loaded = load_base(cfg.model)
    _ready_for_answering_on_cpu(cfg, loaded)
    # the experiment's adapter first: the arms without one use its template
    experiment = cfg.paths.adapter
    adapter_dirs.sort(key=lambda d: not (experiment and _folder_key(d) == _folder_key(experiment)))
    for folder in adapter_dirs:
        loaded = attach_adapter(loaded, folder)
    if loaded.adapter is not None:
        template = loaded.adapter.template
        others = {a.path for a in loaded.adapters.values()
                  if a.template.fingerprint != template.fingerprint}
        if others:
            log.warning("adapter(s) %s were trained with another prompt template than %s: "
                        "their arms use their own, the arms without an adapter that of %s",
                        ", ".join(sorted(others)), loaded.adapter.path, loaded.adapter.path)
    else:
        template = PromptTemplate.load(cfg.ingest.instructions.template)
    index = None
    if index_dir and any(a.needs_index for a in wanted):
        from rag.retrieve import load_index

        index = load_index(index_dir, cfg.index, cfg.retrieval)
    comparison = Comparison(loaded, cfg.generation, template, RagTemplate.load(), index,
                            cfg.retrieval, index_dir=index_dir, arms=wanted)
    for problem in problems:
        log.warning("%s: left out", problem)
    return comparison


def _ready_for_answering_on_cpu(cfg: ExperimentConfig, loaded: Loaded) -> None:
    """4-bit weights on a CPU: unpacked once into the compute dtype when they fit; an fp32
    output head computed by fbgemm's fp16-weight kernel when its weights are fp16 values."""
    if loaded.info.device != "cpu":
        return
    if cfg.model.fp16_head_on_cpu:
        from core.models.loading import pack_head_fp16

        loaded.info.head_fp16 = pack_head_fp16(loaded.model)
        if loaded.info.head_fp16:
            log.info("output head computed with its weights packed in fp16 (the same values; "
                     "fbgemm's kernel, faster than the fp32 product on a CPU)")
    if loaded.info.quantize != "4bit":
        return
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


# -- likelihood ---------------------------------------------------------------------------

def score_arm(comparison: Comparison, arm: str, questions: Sequence[Question],
              distractors: dict[str, list[str]] | None = None,
              prompts: Sequence[str] | None = None,
              batch_size: int | None = None) -> list[KnowledgeScore]:
    """Reference likelihood (and multiple choice, with ``distractors`` from
    :func:`core.likelihood.choose_distractors`) of each question through ``arm``, in the order given.

    ``prompts``: the arm's prompts when they are already known (a results record's
    ``prompt``); by default ``comparison.prepare(arm, question).prompt``, the prompt its answer is
    generated from. Questions without a reference get an empty score. The forward passes run
    under the comparison's lock, in the arm's adapter state, ``batch_size`` pairs at a time
    (default: the decoding batch size).
    """
    from core.likelihood import KnowledgeScore, logprobs_per_prompt, score_question

    comparison.check(arm)
    distractors = distractors or {}
    if prompts is None:
        prompts = [comparison.prepare(arm, q.question).prompt if q.reference else ""
                   for q in questions]
    elif len(prompts) != len(questions):
        raise ValueError(f"{len(prompts)} prompts for {len(questions)} questions")
    texts = [[*q.reference, *distractors.get(q.id, [])] if q.reference else []
             for q in questions]
    size = batch_size or comparison.decoding.batch_size
    with comparison.arm_state(arm):  # the lock, and the adapter on or off as for answers
        scores = logprobs_per_prompt(comparison.loaded.model, comparison.loaded.tokenizer,
                                     prompts, texts, batch_size=size)
    return [score_question(q.id, arm, q.reference, distractors.get(q.id, []), s)
            if q.reference else KnowledgeScore(question_id=q.id, arm=arm)
            for q, s in zip(questions, scores, strict=True)]
