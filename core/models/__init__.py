"""The model layer: the registry of offline defaults, loading, adapters.

Importing this package is cheap (torch and transformers load inside the functions).

- :func:`resolve` / :data:`REGISTRY` (``core.models.registry``): what ``--base`` names.
- :func:`load_base` -> :class:`Loaded` (model, tokenizer, info): one base for every arm.
- :func:`attach_adapter`: the LoRA adapter on top, switched off with ``loaded.adapter_disabled()``.
"""

from core.models.loading import (
    AdapterInfo,
    AdapterMismatch,
    Loaded,
    ModelInfo,
    attach_adapter,
    load_base,
    read_adapter_summary,
)
from core.models.registry import REGISTRY, ModelNotFound, ModelSource, ModelSpec, resolve

__all__ = [
    "REGISTRY", "AdapterInfo", "AdapterMismatch", "Loaded", "ModelInfo", "ModelNotFound",
    "ModelSource", "ModelSpec", "attach_adapter", "load_base", "read_adapter_summary", "resolve",
]
