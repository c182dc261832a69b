"""What the app keeps: the experiment config it was launched with, the comparison loaded once
per process and shared by every session, and each session's own state.

``compara app -c CONFIG -s KEY=VALUE`` hands its config to the Streamlit process through two
environment variables (:data:`ENV_CONFIG`, :data:`ENV_SET`), read here on every rerun (cheap).
The comparison — base model, adapter, index — is built by :func:`comparison` through
``st.cache_resource``, keyed on everything that changes what is loaded (model settings, the
arms, the folders and file stamps of every adapter they use and of the index, the embedder),
so reruns and other sessions reuse it and a retrained adapter, a rebuilt index or a changed
``arms:`` list is loaded afresh. :data:`LOADS` counts the builds of this process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from compara.app.config import ENV_CONFIG, ENV_SET
from core.models.loading import ADAPTER_SUMMARY
from core.prompts import TEMPLATE_FILENAME

if TYPE_CHECKING:
    from compara.comparison import Comparison
    from compara.config import ExperimentConfig

log = logging.getLogger(__name__)

LOADS = 0  # comparisons built by this process (a rerun or a second session must not add one)
_logging_done = False


def configure_logging() -> None:
    """Log like the command line does, once per process, unless the host process (a test
    runner, say) has already set logging up."""
    global _logging_done
    if not _logging_done and not logging.getLogger().handlers:
        from core.logs import setup_logging

        setup_logging()
    _logging_done = True


def launcher_config() -> ExperimentConfig:
    """The experiment config named by `compara app` (default: configs/sample.yaml)."""
    from compara.config import load_config
    from core.configbase import ConfigError

    path = os.environ.get(ENV_CONFIG) or None
    try:
        overrides = json.loads(os.environ.get(ENV_SET) or "[]")
    except ValueError:
        raise ConfigError(f"{ENV_SET} is not a JSON list of key=value overrides") from None
    return load_config(path, list(overrides))


@dataclass(frozen=True)
class ModelChoice:
    """What the sidebar chose to load (None: no adapter / no index)."""

    base: str
    quantize: str
    adapter: str | None
    index: str | None


def apply_choice(cfg: ExperimentConfig, choice: ModelChoice) -> ExperimentConfig:
    """A copy of ``cfg`` that loads what ``choice`` names."""
    out = cfg.replace(model=cfg.model.replace(base=choice.base, quantize=choice.quantize),
                      paths=cfg.paths.replace(adapter=choice.adapter, index=choice.index))
    out.source = cfg.source
    return out


def _stamps(folder: Path, patterns: Sequence[str]) -> dict[str, list[int]]:
    out = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            stat = path.stat()
            out[path.name] = [stat.st_mtime_ns, stat.st_size]
    return out


ADAPTER_FILES = ("adapter_model.*", "adapter_config.json", ADAPTER_SUMMARY, TEMPLATE_FILENAME)


def adapter_folders(cfg: ExperimentConfig) -> list[str]:
    """The adapter folders the experiment's arms use (each once, in the arms' order; those
    that exist)."""
    from compara.arms import experiment_arms

    out: dict[str, str] = {}
    for arm in experiment_arms(cfg):
        if arm.adapter and Path(arm.adapter).is_dir():
            out.setdefault(str(Path(arm.adapter).resolve()), arm.adapter)
    return list(out)


def model_key(cfg: ExperimentConfig) -> str:
    """Everything that changes what :func:`compara.comparison.build_comparison` loads: the
    model, every adapter folder the arms use (with its files' stamps: a retrained adapter is
    loaded afresh), the index, and the arms themselves (a changed ``arms:`` list builds a new
    comparison)."""
    adapters = [{"path": folder, "files": _stamps(Path(folder), ADAPTER_FILES)}
                for folder in adapter_folders(cfg)]
    index = None
    if cfg.paths.index and Path(cfg.paths.index).is_dir():
        folder = Path(cfg.paths.index)
        index = {"path": str(folder.resolve()), "files": _stamps(folder, ("manifest.json",))}
    experiment = cfg.paths.adapter
    r = cfg.retrieval
    return json.dumps({
        "model": cfg.model.to_dict(), "adapters": adapters, "index": index,
        # the experiment's adapter: the template of the arms without one
        "adapter": str(Path(experiment).resolve()) if experiment else None,
        "arms": [a.to_dict() for a in cfg.arms],
        "embedder": cfg.index.to_dict() if index else None,
        "retrieval": {"fetch_k": r.fetch_k, "rrf_k": r.rrf_k, "max_query_chars": r.max_query_chars},
        "template": cfg.ingest.instructions.template, "threads": cfg.generation.threads,
    }, sort_keys=True)


def _build(key: str, _cfg: ExperimentConfig) -> Comparison:
    """Cached by ``key`` only (``_cfg`` is not hashed: the key holds what matters of it)."""
    global LOADS
    from compara.comparison import build_comparison

    log.info("loading %s (%s), adapter(s) %s, index %s", _cfg.model.base, _cfg.model.quantize,
             ", ".join(adapter_folders(_cfg)) or "none", _cfg.paths.index or "none")
    log.debug("model key: %s", key)
    comparison = build_comparison(_cfg)
    warm_up(comparison)
    LOADS += 1
    return comparison


def warm_up(comparison: Comparison) -> None:
    """One token in each adapter state the arms use while loading — each loaded adapter once,
    and no adapter once: kernels prepare themselves on first use (bitsandbytes repacks 4-bit
    weights for the CPU, CUDA sets up its handles), and that should not be counted in the
    first answer's latency."""
    from core.generation import generate

    view = comparison.with_settings(
        decoding=comparison.decoding.replace(max_new_tokens=1, do_sample=False, batch_size=1))
    states: dict[str | None, str] = {}  # adapter folder (None: none) -> an arm in that state
    for name in comparison.arms:
        adapter = comparison.arm(name).adapter
        states.setdefault(str(Path(adapter).resolve()) if adapter else None, name)
    for arm in states.values():
        view.generate_prompts(arm, ["Olá"])
    if None not in states:  # no arm without an adapter: the plain base once all the same
        loaded = comparison.loaded
        with comparison.lock, loaded.adapter_disabled():
            generate(loaded.model, loaded.tokenizer, ["Olá"], view.decoding)


_cached = None


def comparison(cfg: ExperimentConfig) -> Comparison:
    """The comparison for ``cfg``, built once per process (and per distinct model key)."""
    global _cached
    if _cached is None:
        _cached = st.cache_resource(max_entries=cfg.app.cached_models, show_spinner=False)(_build)
    return _cached(model_key(cfg), cfg)


def clear_loaded() -> None:
    """Forget every loaded comparison (their memory is freed once no session holds them)."""
    if _cached is not None:
        _cached.clear()


# -- per session ------------------------------------------------------------------------------

def session_value(name: str, default: Any) -> Any:
    if name not in st.session_state:
        st.session_state[name] = default() if callable(default) else default
    return st.session_state[name]


def session_seed() -> str:
    """A random token per browser session: seeds the blind order, never leaves the server."""
    return session_value("session_seed", lambda: secrets.token_hex(16))


def next_round_number() -> int:
    number = session_value("round_counter", 0) + 1
    st.session_state["round_counter"] = number
    return number


def blind_locked() -> set[str]:
    """Blind keys (session × question × arms) whose names this session has already seen."""
    return session_value("blind_locked", set)
