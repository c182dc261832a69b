"""From (arm, question) to the scored record `results.jsonl` holds: the one answer path.

`compara batch`, `compara ask` and the app's Ask tab all answer through :class:`Pipeline`::

    pipeline = Pipeline(comparison, cfg.eval, cache_for(cfg))
    records = pipeline.run("rag", questions)          # batched; cached answers reused
    for piece in pipeline.stream("rag", question):    # the same record, streamed
        ...

Every record is made the same way: the arm's prompt (:meth:`Comparison.prepare`), the cache
key from the arm's identity and the prompt, the answer (from the answer cache, else
generated), the measures without a judge (:class:`Measurer`: reference likelihood and
multiple choice on the answer's own prompt pass when it is generated, similarity) and the
text metrics (:func:`core.metrics.score_answer`, with ``eval.keep_accents`` and the RAG
template's abstention sentence). The answer cache (SQLite) is shared by every run of a project
and by the app: an unchanged question asked again is answered at once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compara.comparison import Comparison, Prepared
    from compara.config import EvalConfig, ExperimentConfig
    from core.exposure import Exposure
    from core.questions import Question
    from rag.config import IndexConfig

log = logging.getLogger(__name__)

CACHE_FILE = "answers.sqlite"
# The fields of a record that an answer cache entry holds.
ANSWER_FIELDS = ("answer", "prompt", "passages", "tokens_in", "tokens_out", "latency_s",
                 "tokens_per_s", "stopped_on_eos", "finish_reason", "truncated_prompt",
                 "retrieval_s")


# Batches of prompts handed to generation at once by Pipeline.run (written down after each).
WINDOW_BATCHES = 4


class AnswerCache:
    """Answers by key in SQLite (safe across threads and processes; survives crashes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, record TEXT)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT record FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)",
                       (key, json.dumps(record, ensure_ascii=False)))


def cache_for(cfg: ExperimentConfig) -> AnswerCache:
    """The answer cache of an experiment: ``<paths.runs>/.cache/answers.sqlite``."""
    from core.paths import cache_dir

    base = Path(cfg.paths.runs) if cfg.paths.runs else cache_dir()
    return AnswerCache(base / ".cache" / CACHE_FILE)


def with_finish_reason(record: dict[str, Any]) -> dict[str, Any]:
    """A cached answer of an older version lacks ``finish_reason``: it had no stop strings,
    so it ended on EOS or at max_new_tokens."""
    if "finish_reason" not in record:
        record = {**record,
                  "finish_reason": "eos" if record.get("stopped_on_eos") else "max_tokens"}
    return record


class Measurer:
    """The measures without a judge of a batch of records, as ``eval.measures`` asks.

    Likelihood and multiple choice (with ``distractors``; without them, the likelihood only):
    scored on the answer's own prompt pass when given, else one :func:`score_arm` call per
    batch for the records not in the cache; similarity with the index's embedder (else the
    one of ``index_cfg``, loaded on first use and kept on the comparison). ``seconds`` adds
    up the time spent here, and ``per_arm`` per arm.
    """

    def __init__(self, measures: Sequence[str], comparison: Comparison,
                 cache: AnswerCache | None, distractors: dict[str, list[str]] | None = None,
                 index_cfg: IndexConfig | None = None):
        self.comparison = comparison
        self.cache = cache
        self.measures = set(measures)
        self.distractors = (distractors or {}) if "choice" in self.measures else {}
        self.index_cfg = index_cfg
        self.seconds = 0.0
        self.per_arm: dict[str, float] = {}
        self.scored = 0  # (question, arm) pairs put through the model, not from the cache

    def embed(self):
        """The similarity's embedder; None (similarity off, said once) when it cannot load."""
        from core.measures import query_side

        shared = self.comparison.shared
        if "similarity_embedder" not in shared:
            index = self.comparison.index
            embedder = getattr(index, "embedder", None) if index is not None else None
            if embedder is None and self.index_cfg is not None:
                from rag.embedders import EmbedderError, make_embedder

                try:
                    embedder = make_embedder(self.index_cfg)
                except (EmbedderError, OSError, ValueError) as exc:
                    log.warning("semantic similarity left out: the embedder of index.embedder "
                                "could not be loaded (%s)", exc)
            shared["similarity_embedder"] = query_side(embedder) if embedder is not None else None
        return shared["similarity_embedder"]

    @property
    def scores_texts(self) -> bool:
        """Whether reference likelihood or multiple choice is measured."""
        return bool({"likelihood", "choice"} & self.measures)

    def texts(self, question: Question) -> list[str]:
        """What is scored after a question's prompt: its references, then its distractors."""
        if not question.reference:
            return []
        return [*question.reference, *self.distractors.get(question.id, [])]

    def pending(self, arm: str, question: Question, prompt: str) -> list[str]:
        """The texts to score with the answer's generation: none when the scores are
        cached (or not measured)."""
        texts = self.texts(question) if self.scores_texts else []
        if texts and self.cache is not None and \
                self.cache.get(self._key(arm, prompt, texts)) is not None:
            return []
        return texts

    def _key(self, arm: str, prompt: str, texts: Sequence[str]) -> str:
        from core.likelihood import cache_key

        return cache_key(self.comparison, arm, prompt, texts)

    def measure(self, arm: str, questions: Sequence[Question],
                records: Sequence[dict[str, Any]],
                given: dict[int, tuple[list[float | None], float]] | None = None) -> None:
        """Put each record's model measures in ``record["metrics"]`` (before score_answer).

        ``given``: record index -> (scores of :meth:`texts`, seconds) already computed on the
        prompt pass of the answer's generation; they are cached and counted here."""
        t0 = time.perf_counter()
        for r in records:
            r.setdefault("metrics", {})
        if self.scores_texts:
            self._knowledge(arm, questions, records, given or {})
        if "similarity" in self.measures:
            from core.measures import semantic_similarity

            for q, r in zip(questions, records, strict=True):
                if q.reference and (r.get("answer") or "").strip() and self.embed():
                    r["metrics"]["similarity"] = semantic_similarity(r["answer"], q.reference,
                                                                     self.embed())
        spent = time.perf_counter() - t0 + sum(s for _, s in (given or {}).values())
        self.seconds += spent
        self.per_arm[arm] = self.per_arm.get(arm, 0.0) + spent

    def _knowledge(self, arm: str, questions: Sequence[Question],
                   records: Sequence[dict[str, Any]],
                   given: dict[int, tuple[list[float | None], float]]) -> None:
        from compara.comparison import score_arm
        from core.likelihood import score_question
        from core.metrics import MEASURES

        keep = [f for name in ("likelihood", "choice") if name in self.measures
                for f in MEASURES[name]]
        keys, found = {}, {}
        for i, (q, r) in enumerate(zip(questions, records, strict=True)):
            if q.reference:
                texts = self.texts(q)
                keys[i] = self._key(arm, r["prompt"], texts)
                if i in given and len(given[i][0]) == len(texts):
                    found[i] = score_question(q.id, arm, q.reference,
                                              self.distractors.get(q.id, []),
                                              given[i][0]).to_record()
                    self._put(keys[i], found[i])
                    self.scored += 1
                    continue
                hit = self.cache.get(keys[i]) if self.cache is not None else None
                if hit is not None:
                    found[i] = hit
        todo = [i for i in keys if i not in found]
        if todo:
            scores = score_arm(self.comparison, arm, [questions[i] for i in todo],
                               self.distractors, prompts=[records[i]["prompt"] for i in todo])
            for i, score in zip(todo, scores, strict=True):
                found[i] = score.to_record()
                self._put(keys[i], found[i])
            self.scored += len(todo)
        for i, values in found.items():
            records[i]["metrics"].update({k: values.get(k) for k in keep})

    def _put(self, key: str, value: dict[str, Any]) -> None:
        if self.cache is not None:
            self.cache.put(key, value)


class Pipeline:
    """Questions through arms into scored records, the same way for every caller.

    ``eval_cfg``: measures, accents, abstention; ``cache``: the answer cache (None: none);
    ``distractors``: the multiple choice's (question id -> wrong answers; a batch run chooses
    them once per run folder); ``exposure``: question id -> how often its answer was in
    training (adds the exposure metrics); ``index_cfg``: the embedder of the similarity when
    no index is loaded.
    """

    def __init__(self, comparison: Comparison, eval_cfg: EvalConfig,
                 cache: AnswerCache | None = None, *,
                 distractors: dict[str, list[str]] | None = None,
                 exposure: dict[str, Exposure] | None = None,
                 index_cfg: IndexConfig | None = None):
        self.comparison = comparison
        self.eval = eval_cfg
        self.cache = cache
        self.exposure = exposure
        self.measurer = Measurer(eval_cfg.measures, comparison, cache, distractors, index_cfg)
        self.stats = {"generated": 0, "cached": 0, "generation_s": 0.0, "scoring_s": 0.0}
        self.generation_per_arm: dict[str, float] = {}

    # -- the pieces every record is made of --------------------------------------------------
    def key(self, arm: str, prepared: Prepared) -> str:
        return self.comparison.cache_key(arm, prepared.prompt)

    def _cached(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key) if self.cache is not None else None

    def _record(self, arm: str, question: Question, key: str,
                answer: dict[str, Any] | None, hit: dict[str, Any] | None) -> dict[str, Any]:
        """The unscored record of a generated ``answer`` (``Answer.to_record()``, put in the
        cache) or of a cache ``hit``."""
        if answer is not None:
            if self.cache is not None:
                self.cache.put(key, {k: answer[k] for k in ANSWER_FIELDS})
            fields, cached = answer, False
        else:
            fields = {"arm": arm, "identity": self.comparison.identity(arm),
                      **with_finish_reason(hit)}
            cached = True
        self.stats["cached" if cached else "generated"] += 1
        return {"key": key, **question.to_dict(), **fields, "cached": cached}

    def _finish(self, arm: str, questions: Sequence[Question], records: list[dict[str, Any]],
                given: dict[int, tuple[list[float | None], float]] | None = None,
                tolerant: bool = False) -> None:
        """The measures, then the text metrics, of records of ``arm``. ``tolerant``: a
        measure that fails is logged and left out (an answer on a page is still shown)."""
        from core.metrics import score_answer

        try:
            self.measurer.measure(arm, questions, records, given)
        except Exception:
            if not tolerant:
                raise
            log.warning("measures of arm %s left out", arm, exc_info=True)
        abstain = [self.comparison.rag_template.abstain]
        for record in records:
            t0 = time.perf_counter()
            score_answer(record, self.exposure, keep_accents=self.eval.keep_accents,
                         abstain_phrases=abstain, measures=self.eval.measures)
            self.stats["scoring_s"] += time.perf_counter() - t0

    # -- batched ----------------------------------------------------------------------------
    def run(self, arm: str, questions: Sequence[Question],
            on_records: Callable[[list[dict[str, Any]]], None] | None = None
            ) -> list[dict[str, Any]]:
        """The scored records of ``questions`` through ``arm``, generated
        ``generation.batch_size`` at a time, :data:`WINDOW_BATCHES` batches per window;
        ``on_records`` gets each window's records as soon as they exist (to be written down)."""
        comparison = self.comparison
        comparison.check(arm)
        # several batches per call: continuous batching fills a finished row's place with the
        # next prompt (one batch per call would leave nothing to fill it with); the records
        # are written after each window
        size = comparison.decoding.batch_size * WINDOW_BATCHES
        out: list[dict[str, Any]] = []
        for start in range(0, len(questions), size):
            batch = list(questions[start:start + size])
            prepared = [comparison.prepare(arm, q.question) for q in batch]
            keys = [self.key(arm, p) for p in prepared]
            hits = [self._cached(k) for k in keys]
            missing = [i for i, h in enumerate(hits) if h is None]
            gens, given = {}, {}
            if missing:
                # the reference likelihood rides on the answer's prompt pass
                score = [self.measurer.pending(arm, batch[i], prepared[i].prompt)
                         for i in missing]
                t0 = time.perf_counter()
                made = comparison.generate_prompts(arm, [prepared[i].prompt for i in missing],
                                                   score=score if any(score) else None)
                spent = time.perf_counter() - t0 - sum(g.scoring_s for g in made)
                self.stats["generation_s"] += spent
                self.generation_per_arm[arm] = self.generation_per_arm.get(arm, 0.0) + spent
                gens = dict(zip(missing, made, strict=True))
                given = {i: (g.scores, g.scoring_s) for i, g in gens.items()
                         if g.scores is not None}
            records = []
            for i, q in enumerate(batch):
                answer = None
                if i in gens:
                    answer = comparison.answer_of(arm, q.question, prepared[i],
                                                  gens[i]).to_record()
                records.append(self._record(arm, q, keys[i], answer, hits[i]))
            self._finish(arm, batch, records, given)
            if on_records is not None:
                on_records(records)
            out.extend(records)
        return out

    # -- streamed ---------------------------------------------------------------------------
    def stream(self, arm: str, question: Question,
               on_wait: Callable[[], None] | None = None) -> Iterator[str | dict[str, Any]]:
        """Yield the answer's text piece by piece, then its scored record (a cached answer:
        the record at once).

        Holds the comparison's lock for the whole answer (retrieval, generation, measures),
        so sessions take turns on the one model; ``on_wait`` is called first when another
        session holds it. Closing this generator early stops the generation and releases
        the lock.
        """
        from compara.comparison import Answer

        lock = self.comparison.lock
        if not lock.acquire(blocking=False):
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            prepared = self.comparison.prepare(arm, question.question)
            key = self.key(arm, prepared)
            hit = self._cached(key)
            if hit is not None:
                record = self._record(arm, question, key, None, hit)
                self._finish(arm, [question], [record], tolerant=True)
                yield record
                return
            stream = self.comparison.answer_stream(arm, question.question, prepared)
            try:
                for item in stream:
                    if isinstance(item, Answer):
                        record = self._record(arm, question, key, item.to_record(), None)
                        self._finish(arm, [question], [record], tolerant=True)
                        yield record
                    else:
                        yield item
            finally:
                stream.close()
        finally:
            lock.release()
