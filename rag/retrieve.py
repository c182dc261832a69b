"""Search a verified index: dense (FAISS through LangChain), BM25, or both fused (RRF).

The public API the comparison stage uses::

    index = load_index("indexes/amostra", cfg.index)          # verified, or IndexRefused
    passages = index.search("Quando nasceu Tiradentes?", k=4, retriever="hybrid")
    prompt_passages(passages)   # -> dicts for core.prompts.RagTemplate
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from rag.config import RETRIEVERS, IndexConfig, RetrievalConfig
from rag.store import (
    BM25_DIR,
    CHUNKS,
    FAISS_FILE,
    OFFSETS,
    IndexRefused,
    check_embedder,
    read_manifest,
    tune_faiss_index,
    verify_files,
)

log = logging.getLogger(__name__)


class QueryError(UserError, ValueError):
    """A query that cannot be searched (empty)."""


@dataclass
class Passage:
    """One retrieved chunk with where it comes from and how it ranked."""

    title: str
    section: str
    text: str  # the section text of the chunk (without the title/section header line)
    url: str
    page_id: int | str
    revision_id: int | str | None
    chunk_id: str
    chunk_no: int
    score: float  # of the retriever asked for (cosine, BM25 or RRF); higher is better
    rank: int  # 1-based
    retriever: str
    ranks: dict[str, int] = field(default_factory=dict)  # per source retriever, 1-based
    scores: dict[str, float] = field(default_factory=dict)  # per source retriever
    full_text: str = ""  # header + text: what was embedded and keyword-indexed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def prompt_dict(self) -> dict[str, Any]:
        """What :class:`core.prompts.RagTemplate` takes (title, section, text) + metadata."""
        return {"title": self.title, "section": self.section, "text": self.text,
                "url": self.url, "page_id": self.page_id, "chunk_id": self.chunk_id,
                "score": self.score, "rank": self.rank, "retriever": self.retriever,
                "ranks": dict(self.ranks)}


def prompt_passages(passages: list[Passage]) -> list[dict[str, Any]]:
    """Retrieved passages as the dicts the RAG prompt template renders, in rank order."""
    return [p.prompt_dict() for p in sorted(passages, key=lambda p: p.rank)]


def rrf_fuse(rankings: dict[str, list[int]], rrf_k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (rrf_k + rank of d).

    ``rankings`` maps a source name to positions, best first. Ties are broken by the best
    single rank, then by position, so the order is deterministic.
    """
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in rankings.values():
        for rank, pos in enumerate(ranking, start=1):
            scores[pos] = scores.get(pos, 0.0) + 1.0 / (rrf_k + rank)
            best[pos] = min(best.get(pos, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


class Index:
    """A loaded, verified index: chunks + FAISS (via LangChain) + BM25 + the query embedder.

    ``chunks`` is a sequence of :class:`rag.chunking.Chunk`: a :class:`rag.docstore.ChunkFile`
    (read from disk when a chunk is returned) when loaded by :func:`load_index`, or a list.
    LangChain's FAISS store gets a docstore keyed by position over it, so loading builds no
    ``Document`` and no id map."""

    def __init__(self, folder: Path, manifest: dict[str, Any], chunks, faiss_index, bm25,
                 embedder, retrieval: RetrievalConfig | None = None):
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy

        from rag.docstore import ChunkDocstore, PositionIds

        self.folder = folder
        self.manifest = manifest
        self.chunks = chunks
        self.bm25 = bm25
        self.embedder = embedder
        self.retrieval = retrieval or RetrievalConfig()
        self.vectorstore = FAISS(
            embedding_function=embedder, index=faiss_index, docstore=ChunkDocstore(chunks),
            index_to_docstore_id=PositionIds(len(chunks)),
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)

    def __len__(self) -> int:
        return len(self.chunks)

    # -- the three retrievers ------------------------------------------------------------------
    def clean_query(self, query: str, limit: int | None = None) -> str:
        query = " ".join(str(query or "").split())
        if not query:
            raise QueryError("the query is empty")
        limit = limit or self.retrieval.max_query_chars
        if len(query) > limit:
            log.warning("query of %d characters cut to %d", len(query), limit)
            query = query[:limit]
        return query

    def dense(self, query: str, k: int) -> list[tuple[int, float]]:
        vector = self.embedder.embed_query_vector(query)
        hits = self.vectorstore.similarity_search_with_score_by_vector(vector.tolist(), k=k)
        return [(int(doc.metadata["position"]), float(score)) for doc, score in hits]

    def diverse(self, query: str, k: int, fetch_k: int,
                lambda_mult: float) -> list[tuple[int, float]]:
        """Maximal marginal relevance over the ``fetch_k`` nearest chunks: each next passage
        the most similar to the query less ``1 - lambda_mult`` times its similarity to those
        chosen (LangChain's FAISS MMR); scores are the query similarities."""
        vector = self.embedder.embed_query_vector(query)
        hits = self.vectorstore.max_marginal_relevance_search_with_score_by_vector(
            vector.tolist(), k=k, fetch_k=fetch_k, lambda_mult=lambda_mult)
        return [(int(doc.metadata["position"]), float(score)) for doc, score in hits]

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        positions, scores = self.bm25.search(query, k)
        return [(int(p), float(s)) for p, s in zip(positions, scores, strict=False)]

    def search(self, query: str, k: int | None = None, retriever: str | None = None,
               settings: RetrievalConfig | None = None) -> list[Passage]:
        """The ``k`` best passages for ``query``. ``settings``: the retrieval settings to use
        (an arm's), default the index's; ``k`` and ``retriever`` override theirs."""
        settings = settings or self.retrieval
        k = k or settings.k
        retriever = retriever or settings.retriever
        if retriever not in RETRIEVERS:
            raise ValueError(f"unknown retriever {retriever!r}; choose one of {RETRIEVERS}")
        if k < 1:
            raise ValueError("k must be >= 1")
        query = self.clean_query(query, settings.max_query_chars)
        results: dict[str, list[tuple[int, float]]] = {}
        fetch = k if retriever not in ("hybrid", "mmr") else max(k, settings.fetch_k)
        if retriever in ("dense", "hybrid"):
            results["dense"] = self.dense(query, fetch)
        if retriever == "mmr":
            results["mmr"] = self.diverse(query, k, fetch, settings.mmr_lambda)
        if retriever in ("bm25", "hybrid"):
            results["bm25"] = self.keyword(query, fetch)
        if retriever == "hybrid":
            ranked = rrf_fuse({name: [p for p, _ in hits] for name, hits in results.items()},
                              settings.rrf_k)[:k]
        else:
            ranked = results[retriever][:k]
        per_rank = {name: {p: r for r, (p, _) in enumerate(hits, start=1)}
                    for name, hits in results.items()}
        per_score = {name: dict(hits) for name, hits in results.items()}
        passages = []
        for rank, (pos, score) in enumerate(ranked, start=1):
            c = self.chunks[pos]
            passages.append(Passage(
                title=c.title, section=c.section, text=c.body, url=c.url, page_id=c.page_id,
                revision_id=c.revision_id, chunk_id=c.id, chunk_no=c.chunk_no,
                score=float(score), rank=rank, retriever=retriever,
                ranks={n: r[pos] for n, r in per_rank.items() if pos in r},
                scores={n: s[pos] for n, s in per_score.items() if pos in s},
                full_text=c.text))
        return passages

    def timed_search(self, query: str, k: int, retriever: str) -> tuple[list[Passage], float]:
        t0 = time.perf_counter()
        passages = self.search(query, k, retriever)
        return passages, time.perf_counter() - t0


def load_index(folder: str | Path, cfg: IndexConfig | None = None,
               retrieval: RetrievalConfig | None = None, embedder=None) -> Index:
    """Load an index folder after checking it: every file against the manifest's checksums,
    the configured embedder against the one it was built with. Raises :class:`IndexRefused`."""
    import faiss

    from rag.bm25 import BM25Index
    from rag.embedders import expected_embedder_id, make_embedder

    folder = Path(folder)
    cfg = cfg or IndexConfig()
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    if embedder is None:
        expected = expected_embedder_id(cfg)
        if expected is not None:  # refuse before paying for loading a model
            check_embedder(manifest, expected, folder)
        embedder = make_embedder(cfg)
    check_embedder(manifest, embedder.id, folder)
    if int(manifest["embedder"].get("dim", -1)) != embedder.dim:
        raise IndexRefused(f"{folder}: dimension {manifest['embedder'].get('dim')} != "
                           f"embedder's {embedder.dim}")
    if cfg.threads:
        faiss.omp_set_num_threads(cfg.threads)
    # Only now, with every checksum verified, is anything in the folder parsed.
    from rag.docstore import ChunkFile

    offsets = OFFSETS in (manifest.get("files") or {})
    try:  # an index from before the offsets file: its lines are found by one scan
        chunks = ChunkFile(folder / CHUNKS, folder / OFFSETS if offsets else None)
    except ValueError as exc:
        raise IndexRefused(f"{folder}: {exc}; rebuild it with `compara index`") from None
    faiss_index = faiss.read_index(str(folder / FAISS_FILE))
    tune_faiss_index(faiss_index, cfg)
    if faiss_index.ntotal != len(chunks) or faiss_index.d != embedder.dim:
        raise IndexRefused(f"{folder}: FAISS holds {faiss_index.ntotal} vectors of dimension "
                           f"{faiss_index.d} for {len(chunks)} chunks; rebuild the index")
    # memory-mapped: the score arrays stay in the (verified) files, paged in as queries need
    bm25 = BM25Index.load(folder / BM25_DIR, mmap=True) if (folder / BM25_DIR).is_dir() else None
    if bm25 is None or bm25.n_docs != len(chunks):
        raise IndexRefused(f"{folder}: the BM25 index is missing or does not match the chunks")
    return Index(folder, manifest, chunks, faiss_index, bm25, embedder, retrieval)
