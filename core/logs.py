"""Logging configured once (by the CLI), and progress bars that respect --quiet."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

_progress_enabled = True


def console(stderr: bool = False):
    """A rich Console for the command line's own lines. Off a terminal (a pipe, a file, a test)
    lines are never wrapped at a guessed width: a pasted error or path stays whole."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=not _isatty(stream))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test runner swaps it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the root logger for the command line: rich output on a terminal's stderr,
    plain unwrapped lines when stderr is a pipe or a file."""
    global _progress_enabled
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    _progress_enabled = not quiet
    if _isatty(sys.stderr):
        handler: logging.Handler = RichHandler(console=console(stderr=True), show_path=False,
                                               show_time=verbose, rich_tracebacks=verbose,
                                               markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Libraries that are chatty at INFO.
    for noisy in ("httpx", "urllib3", "filelock", "faiss", "faiss.loader", "sentence_transformers",
                  "datasets", "matplotlib", "PIL", "bitsandbytes", "bm25s"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    quiet_libraries(verbose)


def quiet_libraries(verbose: bool) -> None:
    """Third-party progress bars and warnings stay out of the command's own lines; with -v
    they are shown (warnings through the log)."""
    import os

    # Python warnings go through the log, as "py.warnings" (off and on again: something may
    # have put its own warnings.showwarning in place since an earlier call).
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    # Library warnings (deprecations, "harmless" kernel notes) are for whoever debugs: -v.
    level = logging.WARNING if verbose else logging.ERROR
    for name in ("py.warnings", "transformers", "peft", "accelerate", "bitsandbytes",
                 "huggingface_hub", "sentence_transformers"):
        logging.getLogger(name).setLevel(level)
    if verbose:
        return
    # Read when huggingface_hub / transformers are imported (they are not yet: lazy imports).
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if "transformers" in sys.modules:  # already imported (a test, the app): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any):
    """A tqdm bar on stderr (off with --quiet); slower refresh when not on a terminal."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 10.0)
    kwargs["disable"] = kwargs.get("disable", False) or not _progress_enabled
    return tqdm(iterable, **kwargs)
