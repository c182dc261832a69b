"""`compara demo`: the whole pipeline on the configured experiment, skipping what is up to date.

Each stage knows its output and how to tell whether that output still matches its inputs and
settings (a stamp of them is kept in the output folder), so running the demo twice does the
work once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compara import runs
from compara.config import ExperimentConfig
from core.models.loading import ADAPTER_SUMMARY

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    fresh: Callable[[ExperimentConfig], bool]
    run: Callable[[ExperimentConfig], dict[str, Any]]
    describe: Callable[[ExperimentConfig, dict[str, Any] | None], str]


def _model_fresh(cfg: ExperimentConfig) -> bool:
    """A registered model is converted once into the cache; other models need nothing."""
    from core.models import resolve
    from core.models.convert import cached_path

    source = resolve(cfg.model.base, cfg.model.revision)
    return source.kind != "registry" or cached_path(source.spec) is not None


def _model_run(cfg: ExperimentConfig) -> dict[str, Any]:
    from core.models import resolve
    from core.models.convert import ensure_converted

    return {"path": str(ensure_converted(resolve(cfg.model.base, cfg.model.revision).spec))}


def _model_describe(cfg: ExperimentConfig, result: dict[str, Any] | None) -> str:
    from core.models import resolve
    from core.models.loading import source_path

    source = resolve(cfg.model.base, cfg.model.revision)
    return f"{cfg.model.base} ({source_path(source) if source.kind != 'hub' else 'hub cache'})"


def _ingest_fresh(cfg: ExperimentConfig) -> bool:
    import json

    report_path = Path(cfg.paths.data) / "ingest_report.json"
    if not report_path.exists():
        return False
    report = json.loads(report_path.read_text(encoding="utf-8"))
    dump = Path(cfg.paths.dump)
    current = cfg.ingest.to_dict()
    recorded = dict(report.get("config", {}))
    for key in ("workers", "batch_pages", "max_hours"):  # not settings of the outputs
        current.pop(key, None)
        recorded.pop(key, None)
    from compara import __version__

    return (report.get("status") == "complete" and report.get("dump") == str(dump.resolve())
            and report.get("versions", {}).get("compara") == __version__
            and report.get("dump_bytes") == dump.stat().st_size
            and report_path.stat().st_mtime >= dump.stat().st_mtime and recorded == current)


def _ingest_run(cfg: ExperimentConfig) -> dict[str, Any]:
    from ingest.pipeline import run_ingest

    return run_ingest(cfg.paths.dump, cfg.paths.data, cfg.ingest)


def _ingest_describe(cfg: ExperimentConfig, report: dict[str, Any] | None) -> str:
    import json

    if report is None:
        report = json.loads((Path(cfg.paths.data) / "ingest_report.json").read_text(encoding="utf-8"))
    ins = report["instructions"]
    cov = ins.get("coverage") or {}
    carried = (f", {cov['sentence_coverage_train']:.0%} of the prose's {cov['sentences']} sentences "
               "in training outputs" if cov.get("sentences") else "")
    return (f"{report['articles']} articles, {report['redirects']} redirects, "
            f"{ins['train']} + {ins['val']} instructions (train + val){carried} in {cfg.paths.data}")


def _index_fresh(cfg: ExperimentConfig) -> bool:
    import json

    from core.io import sha256_file

    folder = Path(cfg.paths.index)
    manifest_path, config_path = folder / "manifest.json", folder / "config.json"
    articles = Path(cfg.paths.data) / "articles.jsonl"
    if not (manifest_path.exists() and config_path.exists() and articles.exists()):
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    built_with = json.loads(config_path.read_text(encoding="utf-8"))
    return (manifest.get("source", {}).get("sha256") == sha256_file(articles)
            and _without_budget(built_with) == _without_budget(cfg.index.to_dict()))


def _without_budget(settings: dict[str, Any]) -> dict[str, Any]:
    """Index settings but index.max_hours, a budget checked before a build, not a setting of it
    (an index built before the option existed holds none)."""
    return {k: v for k, v in settings.items() if k != "max_hours"}


def _index_run(cfg: ExperimentConfig) -> dict[str, Any]:
    from rag.store import build_index

    return build_index(Path(cfg.paths.data) / "articles.jsonl", cfg.paths.index, cfg.index,
                       overwrite=True)


def _index_describe(cfg: ExperimentConfig, manifest: dict[str, Any] | None) -> str:
    import json

    if manifest is None:
        manifest = json.loads((Path(cfg.paths.index) / "manifest.json").read_text(encoding="utf-8"))
    return (f"{manifest['counts']['chunks']} chunks, {manifest['embedder']['id']} "
            f"({manifest['faiss']['type']}) in {cfg.paths.index}")


def _finetune_fresh(cfg: ExperimentConfig) -> bool:
    import json

    from core.io import sha256_file

    summary_path = Path(cfg.paths.adapter) / ADAPTER_SUMMARY
    config_path = Path(cfg.paths.adapter) / "config.yaml"
    train = Path(cfg.paths.data) / "instructions.train.jsonl"
    if not (summary_path.exists() and config_path.exists() and train.exists()):
        return False
    import yaml

    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    trained = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    same_data = summary.get("data", {}).get("sha256", {}).get("train") == sha256_file(train)
    return (same_data and trained.get("finetune") == cfg.finetune.to_dict()
            and trained.get("model", {}).get("base") == cfg.model.base
            and summary_path.stat().st_mtime >= train.stat().st_mtime)


def _finetune_run(cfg: ExperimentConfig) -> dict[str, Any]:
    """Continue an interrupted tune; a finished but stale adapter is kept as `<dir>.previous`
    and a new one trained."""
    import shutil

    from finetune.train import run_finetune

    adapter = Path(cfg.paths.adapter)
    if (adapter / ADAPTER_SUMMARY).exists():
        previous = adapter.with_name(adapter.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        adapter.rename(previous)
        log.warning("the adapter in %s was trained on other data or settings: kept as %s, "
                    "training a new one", adapter, previous)
    return run_finetune(cfg, cfg.paths.data, adapter, resume=True)


def _finetune_describe(cfg: ExperimentConfig, summary: dict[str, Any] | None) -> str:
    import json

    if summary is None:
        summary = json.loads((Path(cfg.paths.adapter) / ADAPTER_SUMMARY).read_text(encoding="utf-8"))
    parts = [f"{summary.get('steps')} steps"]
    start, final = summary.get("eval_loss_start"), summary.get("eval_loss_final")
    if start is not None and final is not None:
        parts.append(f"val loss {start:.3f} → {final:.3f}")
    data = summary.get("data") or {}
    sel, reading = data.get("selection") or {}, data.get("reading") or {}
    if sel.get("questions"):
        parts.append(f"answers of {sel['questions_with_answer_in_data']}/{sel['questions']} "
                     "demo questions in its data")
    if reading.get("records"):
        parts.append(f"{reading['records']} reading tasks")
    stop = summary.get("stop_check") or {}
    tuned, base = stop.get("finetuned", {}), stop.get("base", {})
    if tuned.get("stop_rate") is not None and base.get("stop_rate") is not None:
        parts.append(f"stops on EOS {tuned['stop_rate']:.0%} (base {base['stop_rate']:.0%})")
    return ", ".join(parts) + f" in {cfg.paths.adapter}"


def _demo_run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.paths.runs or "runs") / f"{cfg.name}-demo"


def _batch_run(cfg: ExperimentConfig) -> dict[str, Any]:
    """Answer the demo's questions; a run made with an older adapter, index or settings is
    kept as `<run>.previous` and the run redone (unchanged arms come from the answer cache)."""
    import shutil

    from compara.batch import StaleRun, run_batch
    from compara.comparison import build_comparison

    sample = cfg.demo.questions or None
    run_dir = _demo_run_dir(cfg)
    t0 = time.monotonic()
    comparison = build_comparison(cfg)  # loaded once, also for a second attempt
    loading = time.monotonic() - t0
    try:
        summary = run_batch(cfg, cfg.paths.questions, run_dir, comparison=comparison,
                            sample=sample)
    except StaleRun as exc:
        previous = run_dir.with_name(run_dir.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        run_dir.rename(previous)
        log.warning("%s; kept it as %s and starting the run again", exc, previous)
        summary = run_batch(cfg, cfg.paths.questions, run_dir, comparison=comparison,
                            sample=sample)
    summary["run"]["load_s"] = round(loading, 1)
    return summary


def _batch_describe(cfg: ExperimentConfig, summary: dict[str, Any] | None) -> str:
    run = (summary or {}).get("run", {})
    return (f"{run.get('generated', 0)} answers generated, {run.get('from_cache', 0)} from the "
            f"cache, {run.get('already_written', 0)} already written — "
            f"{_demo_run_dir(cfg) / runs.REPORT}")


STAGES = [
    Stage("model", _model_fresh, _model_run, _model_describe),
    Stage("ingest", _ingest_fresh, _ingest_run, _ingest_describe),
    Stage("index", _index_fresh, _index_run, _index_describe),
    Stage("finetune", _finetune_fresh, _finetune_run, _finetune_describe),
    # The batch runner skips what is written and answers the rest from its cache: it is
    # always run, and costs nothing when nothing changed.
    Stage("batch", lambda cfg: False, _batch_run, _batch_describe),
]


def time_breakdown(seconds: dict[str, float], results: dict[str, dict[str, Any]],
                   notes: dict[str, str] | None = None) -> str:
    """Where the demo's time went: each stage that ran, the tune and the answers in parts;
    ``notes``: a stage's remark (one run beside others)."""
    parts = []
    for name, s in seconds.items():
        text = f"{name} {s:.0f} s"
        if (notes or {}).get(name):
            text += f" ({notes[name]})"
        inner: list[str] = []
        if name == "finetune":
            timing = results[name].get("timing") or {}
            inner = [f"{label} {timing[key]:.0f} s" for key, label in (
                ("load", "loading"), ("train_steps", "training"), ("evals", "evals"),
                ("stop_check", "stop check"))
                # a stop check that did not run (finetune.stop_check: 0) is not a part
                if (timing.get(key) if key == "stop_check" else timing.get(key) is not None)]
            counted = sum(timing.get(k) or 0 for k in ("load", "train_steps", "evals",
                                                      "stop_check"))
        elif name == "batch":
            run = results[name].get("run") or {}
            answers = run.get("generated", 0)
            inner = [f"loading {run['load_s']:.0f} s"] if run.get("load_s") is not None else []
            if run.get("elapsed_s"):
                inner.append(f"answering {run['elapsed_s']:.0f} s for {answers} answers "
                             f"({answers / run['elapsed_s']:.2f} answers/s)")
                measures = (run.get("timing") or {}).get("measures_s")
                if measures:  # part of the answering time: the likelihood passes, similarity
                    inner.append(f"of which measures {measures:.0f} s "
                                 f"({measures / run['elapsed_s']:.0%})")
            counted = (run.get("load_s") or 0) + (run.get("elapsed_s") or 0)
        if inner:
            inner.append(f"the rest {max(s - counted, 0):.0f} s")
            text += f" ({', '.join(inner)})"
        parts.append(text)
    return ", ".join(parts) if parts else "nothing to do: every stage was up to date"


class _Beside(threading.Thread):
    """A stage run in a thread while the stages that do not need its output run: the model's
    conversion (mostly one core of Python parsing a GGUF file) beside the index's embedding."""

    def __init__(self, stage: Stage, cfg: ExperimentConfig):
        super().__init__(name=f"compara-{stage.name}", daemon=True)
        self.stage, self.cfg = stage, cfg
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.note = ""

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            self.result = self.stage.run(self.cfg)
        except BaseException as exc:  # re-raised in the main thread by finish()
            self.error = exc
        self.seconds = time.monotonic() - t0

    def finish(self) -> dict[str, Any]:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# Stages that may run beside others, and the stages that can run meanwhile (they do not read
# its output): the model is needed from the fine-tune on.
BESIDE = {"model": ("ingest", "index")}


def run_demo(cfg: ExperimentConfig, force: bool = False) -> None:
    from core.logs import console as make_console

    console = make_console()
    console.print(f"[bold]compara demo[/] — experiment [cyan]{cfg.name}[/] "
                  f"({cfg.source or 'built-in defaults'})")
    from core.models.loading import compute_plan

    console.print(f"  {compute_plan(cfg.model)}")
    start = time.monotonic()
    result: dict[str, Any] | None = None
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    stale = [stage for stage in STAGES if force or not stage.fresh(cfg)]
    names = {stage.name for stage in stale}
    started: dict[str, _Beside] = {}
    notes: dict[str, str] = {}  # "beside ingest and index" for a stage that ran so

    def finish(name: str) -> dict[str, Any]:
        job = started.pop(name)
        done = results[name] = job.finish()
        seconds[name] = job.seconds
        console.print(f"• {name}: done in {job.seconds:.1f} s ({job.note}) — "
                      f"{job.stage.describe(cfg, done)}")
        return done

    for stage in STAGES:
        # a stage run beside others finishes before the first stage that may need its output
        for name in [n for n in started if stage.name not in BESIDE[n]]:
            result = finish(name)
        if stage not in stale:
            console.print(f"• {stage.name}: up to date — {stage.describe(cfg, None)}")
            continue
        with_ = [n for n in BESIDE.get(stage.name, ()) if n in names]
        if with_:  # one of the stages it can run beside has work to do
            job = started[stage.name] = _Beside(stage, cfg)
            job.note = notes[stage.name] = "beside " + " and ".join(with_)
            console.print(f"• {stage.name}: running {job.note} ...")
            job.start()
            continue
        t0 = time.monotonic()
        console.print(f"• {stage.name}: running ...")
        result = results[stage.name] = stage.run(cfg)
        seconds[stage.name] = time.monotonic() - t0
        console.print(f"• {stage.name}: done in {seconds[stage.name]:.1f} s — "
                      f"{stage.describe(cfg, result)}")
    for name in list(started):
        result = finish(name)
    from compara.report import print_summary

    if result is not None and "per_arm" in result:
        print_summary(result, console=console)
    console.print(f"where the time went: {time_breakdown(seconds, results, notes)}")
    console.print(f"demo finished in {time.monotonic() - start:.0f} s; open "
                  f"{_demo_run_dir(cfg) / runs.REPORT} for every answer side by side, or run "
                  f"`make app` to ask your own questions.")
