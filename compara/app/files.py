"""What the app's pickers may offer: files found under the project's own folders, nothing else.

A user never types a path: question files are listed from ``questions/`` (and the folder of
the configured question file) and ``runs/``; run folders from ``runs/``; adapters and indexes
from ``adapters/`` and ``indexes/`` (and the configured ones). Each picker maps a label to a
path this module found, so a request can only ever name one of those.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from compara.app.rating import VOTES_FILE
from compara.runs import EXPOSURE, RESULTS, SUMMARY
from core.questions import SUFFIXES

if TYPE_CHECKING:
    from compara.config import ExperimentConfig
    from core.questions import QuestionFile

# Files of a run folder that look like question files but are not.
NOT_QUESTIONS = {RESULTS, EXPOSURE, VOTES_FILE, "metrics.jsonl"}
MAX_DEPTH = 3
MAX_FILES = 500


def project_dir(name: str) -> Path:
    from core.paths import project_root

    return project_root() / name


def runs_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.paths.runs) if cfg.paths.runs else project_dir("runs")


def votes_path(cfg: ExperimentConfig) -> Path:
    return runs_dir(cfg) / VOTES_FILE


def _roots(*roots: Path | None) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        if root is not None and root.is_dir() and root.resolve() not in {r.resolve() for r in out}:
            out.append(root)
    return out


def _label(path: Path, root: Path) -> str:
    """``questions/amostra.jsonl``: the path from the project root, or from the folder's name
    for a folder outside the project."""
    from core.paths import project_root

    try:
        return path.relative_to(project_root()).as_posix()
    except ValueError:
        return f"{root.name}/{path.relative_to(root).as_posix()}"


def _add(found: dict[str, Path], label: str, path: Path) -> None:
    """Add under ``label``, or under the full path when another file has that label."""
    if label in found and found[label] != path:
        label = str(path)
    found.setdefault(label, path)


def _walk(root: Path, max_depth: int = MAX_DEPTH):
    """(folder, file names) under ``root``, skipping hidden folders, at most ``max_depth`` deep."""
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < max_depth)
        yield Path(folder), sorted(f for f in files if not f.startswith("."))


def question_roots(cfg: ExperimentConfig) -> list[Path]:
    configured = Path(cfg.paths.questions).parent if cfg.paths.questions else None
    return _roots(project_dir("questions"), configured, runs_dir(cfg))


def question_files(cfg: ExperimentConfig) -> dict[str, Path]:
    """Question files (.jsonl, .csv, .yaml ...) under ``questions/`` and ``runs/``."""
    found: dict[str, Path] = {}
    for root in question_roots(cfg):
        for folder, names in _walk(root):
            for name in names:
                path = folder / name
                if path.suffix.lower() in SUFFIXES and name not in NOT_QUESTIONS:
                    _add(found, _label(path, root), path)
                if len(found) >= MAX_FILES:
                    return found
    return found


def run_folders(cfg: ExperimentConfig) -> dict[str, Path]:
    """Finished batch run folders (answers and a summary) under ``runs/``, newest first."""
    root = runs_dir(cfg)
    if not root.is_dir():
        return {}
    found = [folder for folder, names in _walk(root)
             if SUMMARY in names and RESULTS in names]
    found.sort(key=lambda f: (f / SUMMARY).stat().st_mtime, reverse=True)
    return {_label(f, root): f for f in found[:MAX_FILES]}


def _children(root: Path | None, marker: str) -> dict[str, Path]:
    if root is None or not root.is_dir():
        return {}
    return {_label(p, root): p for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p / marker).is_file()}


def adapter_folders(cfg: ExperimentConfig) -> dict[str, Path]:
    """Adapter folders (with adapter_config.json) in ``adapters/`` and the configured one."""
    return _folders(cfg.paths.adapter, project_dir("adapters"), "adapter_config.json")


def index_folders(cfg: ExperimentConfig) -> dict[str, Path]:
    """Index folders (with manifest.json) in ``indexes/`` and the configured one."""
    return _folders(cfg.paths.index, project_dir("indexes"), "manifest.json")


def _folders(configured: str | None, default_root: Path, marker: str) -> dict[str, Path]:
    found = _children(default_root, marker)
    if configured:
        path = Path(configured)
        if (path / marker).is_file() and path.resolve() not in {p.resolve() for p in found.values()}:
            _add(found, _label(path, path.parent), path)
    return found


def label_of(choices: dict[str, Path], path: str | Path | None) -> str | None:
    """The label under which ``path`` is offered, if it is."""
    if not path:
        return None
    target = Path(path).resolve()
    return next((label for label, p in choices.items() if p.resolve() == target), None)


def load_question_file(path: Path, max_chars: int) -> QuestionFile:
    """A question file, read again only when it changed (bad records are listed, not fatal)."""
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size, max_chars)


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, size: int, max_chars: int) -> QuestionFile:
    from core.questions import load_questions

    return load_questions(path, max_chars)
