"""Logging configured once (by the CLI), and progress bars that respect --quiet."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

_progress_enabled = True


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the root logger for the command line: rich output on stderr."""
    global _progress_enabled
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    _progress_enabled = not quiet
    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=verbose,
                          rich_tracebacks=verbose, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # Libraries that are chatty at INFO.
    for noisy in ("httpx", "urllib3", "filelock", "faiss", "faiss.loader", "sentence_transformers",
                  "datasets", "matplotlib", "PIL", "bitsandbytes", "bm25s"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def progress_enabled() -> bool:
    return _progress_enabled


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any):
    """A tqdm bar on stderr (off with --quiet); slower refresh when not on a terminal."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 10.0)
    kwargs["disable"] = kwargs.get("disable", False) or not _progress_enabled
    return tqdm(iterable, **kwargs)
