"""Pieces shared by the subcommands: config options, errors, JSON summaries."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

log = logging.getLogger("compara")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Experiment YAML (default: configs/sample.yaml).",
                 show_default=False),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: -s finetune.lr=1e-4 (repeatable).",
                 show_default=False),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear one-line error (no traceback, never wrapped off a terminal) and exit."""
    from core.logs import console

    console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


ForceOption = Annotated[bool, typer.Option(
    "--force", help="Run even when the planned time exceeds the stage's max_hours.")]


def check_budget(estimate: dict[str, Any], max_hours: float, force: bool,
                 json_: bool) -> dict[str, Any]:
    """A stage's ``estimate`` (:func:`compara.plan.ingest_estimate`, ``index_estimate``)
    against its budget (``ingest.max_hours``, ``index.max_hours``): the estimate and its
    verdict, logged in one line. A run over the budget without ``force`` ends here with one
    error line (exit 2; with ``--json`` the estimate is printed first)."""
    from compara.plan import StageOverBudget
    from compara.plan import check_budget as against_budget

    try:
        return against_budget(estimate, max_hours, force=force)
    except StageOverBudget as exc:
        if json_:
            print_json({"budget": exc.estimate})
        fail(str(exc))


def launch_config(path: Path) -> dict[str, Any]:
    """An ``--accelerate`` file read by accelerate's loader, or one error line naming it."""
    from finetune.gpus import read_launch_config

    if not path.is_file():
        fail(f"{path}: no such accelerate config")
    try:
        return read_launch_config(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        fail(f"{path}: not an accelerate config ({exc})")


def load_experiment(config: Path | None, sets: list[str] | None, **flags: Any):
    """Load the experiment config; ``flags`` are dotted keys set by command-line options
    (None values are ignored, so an option left out keeps the YAML's value)."""
    from compara.config import load_config

    cfg = load_config(config, list(sets or []))
    extra = {k.replace("__", "."): str(v) if isinstance(v, Path) else v
             for k, v in flags.items() if v is not None}
    if extra:
        source, paths = cfg.source, cfg.paths
        cfg = cfg.with_overrides(extra)
        cfg.source = source
        # Paths given on the command line are relative to the current directory.
        path_flags = {k.split(".", 1)[1]: str(Path(v).resolve())
                      for k, v in extra.items() if k.startswith("paths.")}
        cfg.paths = paths.replace(**path_flags) if path_flags else paths
    return cfg


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()
