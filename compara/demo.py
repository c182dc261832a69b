"""`compara demo`: the whole pipeline on the configured experiment, skipping what is up to date.

Each stage knows its output and how to tell whether that output still matches its inputs and
settings (a stamp of them is kept in the output folder), so running the demo twice does the
work once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compara.config import ExperimentConfig

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    fresh: Callable[[ExperimentConfig], bool]
    run: Callable[[ExperimentConfig], dict[str, Any]]
    describe: Callable[[ExperimentConfig, dict[str, Any] | None], str]


def _ingest_fresh(cfg: ExperimentConfig) -> bool:
    import json

    report_path = Path(cfg.paths.data) / "ingest_report.json"
    if not report_path.exists():
        return False
    report = json.loads(report_path.read_text(encoding="utf-8"))
    dump = Path(cfg.paths.dump)
    current = cfg.ingest.to_dict()
    recorded = dict(report.get("config", {}))
    for key in ("workers", "batch_pages"):
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
    return (f"{report['articles']} articles, {report['redirects']} redirects, "
            f"{ins['train']} + {ins['val']} instructions (train + val) in {cfg.paths.data}")


def _index_fresh(cfg: ExperimentConfig) -> bool:
    import json

    from compara.io import sha256_file

    folder = Path(cfg.paths.index)
    manifest_path, config_path = folder / "manifest.json", folder / "config.json"
    articles = Path(cfg.paths.data) / "articles.jsonl"
    if not (manifest_path.exists() and config_path.exists() and articles.exists()):
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    built_with = json.loads(config_path.read_text(encoding="utf-8"))
    return (manifest.get("source", {}).get("sha256") == sha256_file(articles)
            and built_with == cfg.index.to_dict())


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


STAGES = [
    Stage("ingest", _ingest_fresh, _ingest_run, _ingest_describe),
    Stage("index", _index_fresh, _index_run, _index_describe),
]


def run_demo(cfg: ExperimentConfig, force: bool = False) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"[bold]compara demo[/] — experiment [cyan]{cfg.name}[/] "
                  f"({cfg.source or 'built-in defaults'})")
    for stage in STAGES:
        if not force and stage.fresh(cfg):
            console.print(f"• {stage.name}: up to date — {stage.describe(cfg, None)}")
            continue
        t0 = time.monotonic()
        console.print(f"• {stage.name}: running ...")
        result = stage.run(cfg)
        console.print(f"• {stage.name}: done in {time.monotonic() - t0:.1f} s — "
                      f"{stage.describe(cfg, result)}")
