"""Registered models become normal Hugging Face folders in the cache, once.

The bundled models ship as GGUF files; reading GGUF means de-quantising every tensor (tens of
seconds, GBs of memory), so the first use converts the model into
``<cache>/models/<name>-v<version>/`` (safetensors in bfloat16, plus the tokenizer) and
every later load takes seconds. bfloat16, not float32: the weights come from a 4-bit file
anyway, the models compute in bf16 where the CPU can, and loading (and 4-bit quantising) a
bf16 file peaks at a third of the memory (0.7 GB instead of 2.1 GB for Gemma 3 270M). The conversion is written into a temporary folder beside the final
one and renamed into place when complete, under a file lock: a killed conversion leaves no
half-written model, and two processes never convert the same model at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from core.models.registry import ModelSpec, _find_package

log = logging.getLogger(__name__)

MARKER = "compara_model.json"


def models_dir() -> Path:
    from core.paths import cache_dir

    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_path(spec: ModelSpec) -> Path | None:
    """The converted folder, if a complete conversion exists."""
    path = models_dir() / spec.cache_name
    return path if (path / MARKER).is_file() else None


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_converted(spec: ModelSpec) -> Path:
    """The HF folder of a registered model, converting it on first use."""
    done = cached_path(spec)
    if done is not None:
        return done
    root = models_dir()
    final = root / spec.cache_name
    with _lock(root / f".{spec.cache_name}.lock"):
        if (final / MARKER).is_file():  # another process finished it while we waited
            return final
        # Holding the lock, anything left under a temporary name is debris of a killed run.
        for stale in root.glob(f".{spec.cache_name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # a folder without the marker: incomplete, rebuild it
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.cache_name}.tmp-", dir=root))
        start = time.monotonic()
        log.info("Preparing %s in %s (first use only; later loads take seconds)...",
                 spec.name, final)
        try:
            _BUILDERS[spec.extra["format"]](spec, tmp)
            (tmp / MARKER).write_text(json.dumps({
                "name": spec.name, "version": spec.version, "package": spec.package,
                "licence": spec.licence, "built_seconds": round(time.monotonic() - start, 1),
            }, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _release_freed_memory()
    log.info("%s ready in %.0f s", spec.name, time.monotonic() - start)
    return final


def _release_freed_memory() -> None:
    """Give the memory the conversion freed back to the system. Reading the GGUF file makes
    millions of small objects (the vocabulary's strings and scores): freed, glibc keeps their
    pages, ~0.75 GB for the bundled Gemma, which a process that goes on to train or answer (the
    demo) would carry to its end. ``malloc_trim`` returns them; elsewhere than glibc, nothing."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def _gguf_bar_quiet():
    """transformers reads GGUF tensors under a plain tqdm bar that its own switch does not
    reach: off too when third-party bars are (``core.logs.quiet_libraries``, without -v)."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") != "1":
        yield
        return
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


@contextlib.contextmanager
def _gguf_read_once():
    """transformers opens a GGUF file three times to build a model (tokenizer, config, weights)
    and parses all its metadata each time: for Gemma 3's 262k-entry vocabulary that is ~15 s a
    time on a 2-core CPU, most of the conversion. Within, a file is parsed once and its reader
    (read-only, memory-mapped) shared.

    The reader slices its ``numpy.memmap`` once per value, a million times for that vocabulary,
    and every slice of a memmap runs Python code of numpy's (``__getitem__``,
    ``__array_finalize__``): over a plain array view of the same mapping the parse takes half
    the time (10 -> 5 s) and the values it returns are the same."""
    import gguf
    import gguf.gguf_reader as reader_module

    real = gguf.GGUFReader
    readers: dict[tuple, Any] = {}

    def shared(path, *args, **kwargs):
        key = (str(Path(path).resolve()), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            numpy = reader_module.np
            reader_module.np = _PlainMapNumpy(numpy)
            try:
                readers[key] = real(path, *args, **kwargs)
            finally:
                reader_module.np = numpy
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield readers
    finally:
        gguf.GGUFReader = real


class _PlainMapNumpy:
    """numpy, but ``memmap(...)`` is a plain ndarray view of the mapping (it keeps the mapping
    alive; read-only stays read-only)."""

    def __init__(self, numpy):
        self._numpy = numpy

    def __getattr__(self, name):
        return getattr(self._numpy, name)

    def memmap(self, *args, **kwargs):
        return self._numpy.memmap(*args, **kwargs).view(self._numpy.ndarray)


def _save_from_gguf(folder: Path, gguf_file: str, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_bar_quiet(), _gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file,
                                                     dtype=torch.float32)
    model.to(torch.bfloat16)
    # transformers refuses to save a model it still believes GGUF-quantised; its tensors are
    # already de-quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = ""
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _build_gguf_parts(spec: ModelSpec, dest: Path) -> None:
    import importlib

    package = importlib.import_module(spec.extra["module"])
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{spec.cache_name}.tmp-gguf-") as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)
        _save_from_gguf(gguf.parent, gguf.name, dest)


def _build_gguf_file(spec: ModelSpec, dest: Path) -> None:
    folder = _find_package(spec.extra["module"])
    _save_from_gguf(folder, spec.extra["gguf_file"], dest)


def _build_tiny(spec: ModelSpec, dest: Path) -> None:
    from core.models.tiny import build

    build(dest)


_BUILDERS = {"gguf-parts": _build_gguf_parts, "gguf-file": _build_gguf_file, "tiny": _build_tiny}
