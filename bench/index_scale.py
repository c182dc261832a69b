"""Index build and load at ptwiki scale: time and peak RSS at 10k / 100k / 1M chunks.

    python bench/index_scale.py --pq-extra 96                     # 10k, 100k, 1M; every type
    python bench/index_scale.py --sizes 10000,100000 --repeats 3  # quicker
    python bench/index_scale.py --sizes 10000,100000 --bm25-only --bm25-old  # BM25 only
    flock /tmp/heavy.lock nice -n 5 python bench/index_scale.py --sizes 1000000 --repeats 1 \
        --types flat,ivfpq --threads 1                            # the 1 M case, no HNSW build

Synthetic corpus: one article per chunk of ~1,000 characters, its sentences drawn from the
sample's articles (data/amostra/articles.jsonl, after `compara ingest`), each with a token of
its own (so the BM25 vocabulary grows by one term a chunk, like ptwiki's long tail of names).
Stand-in embedder: unit vectors of dimension 384 (multilingual-e5-small's) shaped like chunk
embeddings — topics, articles around a topic (10 chunks each), chunks around their article — so
an approximate index has real neighbourhoods to find; their values do not matter for memory or
FAISS/BM25 time, but recall on them is not recall on e5 vectors of real text.

Every measurement runs in a fresh subprocess and reports its own peak RSS (VmHWM; see rss_mib):

* build: ``rag.store.build_index`` end to end (chunking, offsets, embedding with the stand-in,
  FAISS of the type ``auto`` picks, BM25, checksums), with the time of each stage;
* FAISS alone, for each type (flat, hnsw, ivfpq) from the same vectors;
* load, for each FAISS type, interleaved: the previous loading (every chunk a LangChain
  ``Document`` in an ``InMemoryDocstore`` + an id dict, BM25 read into RAM) against
  ``rag.retrieve.load_index`` (chunks read from disk on demand, BM25 memory-mapped); both
  verify every checksum first (timed apart) and answer one dense and one mmr query;
* BM25 alone: the bounded build (``BM25Index.write``) from the stream of chunk texts, and with
  ``--bm25-old`` bm25s's own build in memory (the previous way) for comparison; load in RAM and
  memory-mapped. ``--bm25-only``: chunk the articles and measure only this (no vectors, FAISS,
  loads or recall; results in bench/out/index_scale_bm25.json);
* recall@10 against exact search (sizes from ``--recall-from``): IVF-PQ (several nprobe; also
  ``--pq-extra`` bytes a vector) and HNSW (several efSearch), 1,000 queries near indexed vectors.

Then the 5 M-chunk (ptwiki) load RSS is extrapolated from the two largest sizes, with the
arithmetic printed. Results: bench/out/index_scale.json (merged across runs by size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
OUT = ROOT / "bench" / "out"
SOURCE = ROOT / "data/amostra/articles.jsonl"
DIM = 384
BLOCK = 10_000  # vectors are generated (and embedded: the build's shard size) in blocks
PER_ARTICLE = 10
TYPES = ("flat", "hnsw", "ivfpq")
TARGET = 5_000_000  # chunks of the whole ptwiki, extrapolated to


def rss_mib() -> float:
    """Peak RSS of this process (MiB): VmHWM, which starts afresh at exec. ``ru_maxrss`` does
    not: Linux carries the forking parent's high-water mark into the child across exec, so
    every worker would report at least the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # macOS: bytes; Linux: KiB


# -- synthetic data ------------------------------------------------------------------------------

def _b36(k: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        k, r = divmod(k, 36)
        out = digits[r] + out
        if not k:
            return out


def make_articles(n: int, path: Path, seed: int = 0) -> None:
    """``n`` articles of one ~1,000-character chunk each (sentences of the sample's text)."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("n") == n:
        return
    sentences = []
    for line in SOURCE.read_text(encoding="utf-8").splitlines():
        for section in json.loads(line)["sections"]:
            sentences += [s.strip() + "." for s in section["text"].split(".") if len(s) > 30]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(n):
            parts, size = [f"Registo zq{_b36(k)}."], 0
            while size < 880:
                s = rng.choice(sentences)[:300]
                parts.append(s)
                size += len(s) + 1
            rec = {"id": k + 1, "title": f"Artigo {k + 1}", "revision_id": k + 1,
                   "url": f"https://pt.wikipedia.org/wiki/Artigo_{k + 1}",
                   "sections": [{"heading": "", "level": 0, "text": " ".join(parts)[:900]}]}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    meta.write_text(json.dumps({"n": n}))


def vector_block(b: int, n_total: int, seed: int = 0) -> np.ndarray:
    """Block ``b`` (positions b*BLOCK ...) of the stand-in vectors, deterministic."""
    topics = np.random.default_rng([seed, 0]).standard_normal(
        (max(1, n_total // 1000), DIM)).astype(np.float32)
    rng = np.random.default_rng([seed, 1, b])
    articles = topics[rng.integers(0, len(topics), BLOCK // PER_ARTICLE)]
    articles += 0.6 * rng.standard_normal(articles.shape, dtype=np.float32)
    x = np.repeat(articles, PER_ARTICLE, axis=0)
    x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def vectors_for(start: int, count: int, n_total: int) -> np.ndarray:
    first, last = start // BLOCK, (start + max(count, 1) - 1) // BLOCK
    x = np.concatenate([vector_block(b, n_total) for b in range(first, last + 1)])
    return x[start - first * BLOCK:start - first * BLOCK + count]


def write_vectors(n: int, path: Path) -> None:
    if path.exists() and path.stat().st_size == n * DIM * 4:
        return
    with open(path, "wb") as fh:
        for b in range(-(-n // BLOCK)):
            fh.write(vector_block(b, n)[:n - b * BLOCK].tobytes())


def stand_in_embedder(n_total: int):
    from rag.embedders import VectorEmbeddings

    class SyntheticEmbeddings(VectorEmbeddings):
        """The stand-in vectors, handed out in the order the build asks for passages."""

        def __init__(self):
            self.dim, self.id = DIM, f"synthetic:{DIM}"
            self.info = {"backend": "synthetic", "model": "clustered unit vectors"}
            self.pos = 0

        def embed_passages(self, texts):
            x = vectors_for(self.pos, len(texts), n_total)
            self.pos += len(texts)
            return x

        def embed_query_vector(self, text):
            return vector_block(0, n_total)[len(text) % BLOCK]

    return SyntheticEmbeddings()


# -- workers (each in a fresh process) ---------------------------------------------------------

def _cfg(**kw):
    from rag.config import IndexConfig

    threads = int(os.environ.get("INDEX_SCALE_THREADS", "0"))
    return IndexConfig(batch_size=BLOCK, shard_size=BLOCK, threads=threads, **kw)


def _set_threads() -> None:
    import faiss

    if _cfg().threads:
        faiss.omp_set_num_threads(_cfg().threads)


def worker_baseline(_args) -> dict:
    import faiss  # noqa: F401
    from langchain_community.docstore.in_memory import InMemoryDocstore  # noqa: F401
    from langchain_community.vectorstores import FAISS  # noqa: F401

    import rag.retrieve  # noqa: F401
    from core.text import import_bm25s

    import_bm25s()
    return {"rss_mib": rss_mib()}


def worker_build(args) -> dict:
    import rag.store as store
    from rag.bm25 import BM25Index

    stages: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    store._write_chunks = timed("chunking", store._write_chunks)
    store.write_offsets = timed("offsets", store.write_offsets)
    store._embed_all = timed("embedding (stand-in)", store._embed_all)
    store.make_faiss_index = timed("faiss", store.make_faiss_index)
    BM25Index.write = staticmethod(timed("bm25 build", BM25Index.write))
    store._checksums = timed("checksums", store._checksums)
    n = int(args.n)
    t0 = time.perf_counter()
    manifest = store.build_index(args.articles, args.folder, _cfg(), overwrite=True,
                                 embedder=stand_in_embedder(n))
    return {"seconds": time.perf_counter() - t0, "stages": stages, "rss_mib": rss_mib(),
            "faiss": manifest["faiss"]["type"], "chunks": manifest["counts"]["chunks"]}


def worker_faiss(args) -> dict:
    import faiss

    from rag.store import make_faiss_index

    n = int(args.n)
    vectors = np.memmap(args.vectors, dtype=np.float32, mode="r", shape=(n, DIM))
    _set_threads()
    t0 = time.perf_counter()
    index = make_faiss_index(vectors, args.kind, _cfg(pq_bytes=int(args.pq_bytes or 0)))
    seconds = time.perf_counter() - t0
    faiss.write_index(index, args.out)
    return {"seconds": seconds, "rss_mib": rss_mib(), "bytes": os.path.getsize(args.out)}


def worker_chunks(args) -> dict:
    """Only the build's chunk file and offsets (for --bm25-only)."""
    import rag.store as store

    folder = Path(args.folder)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / store.WORK_DIR).mkdir(parents=True)
    t0 = time.perf_counter()
    store._write_chunks(Path(args.articles), _cfg(), folder)
    store.write_offsets(folder / store.CHUNKS, folder / store.OFFSETS)
    return {"seconds": time.perf_counter() - t0, "rss_mib": rss_mib()}


def _one_query_each(search_dense, search_mmr) -> dict:
    out = {}
    for name, fn in (("dense_ms", search_dense), ("mmr_ms", search_mmr)):
        t0 = time.perf_counter()
        hits = fn()
        out[name] = (time.perf_counter() - t0) * 1000
        assert len(hits) == 5, hits
    return out


def worker_load(args) -> dict:
    from rag.store import read_manifest, verify_files

    worker_baseline(args)  # imports outside the timed part, alike for both
    folder = Path(args.folder)
    n = int(args.n)
    embedder = stand_in_embedder(n)
    query = embedder.embed_query_vector("Rio").tolist()
    t0 = time.perf_counter()
    verify_files(folder, read_manifest(folder))
    verify_s = time.perf_counter() - t0
    rss_verified = rss_mib()
    t0 = time.perf_counter()
    if args.how == "old":
        import faiss
        from langchain_community.docstore.in_memory import InMemoryDocstore
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy
        from langchain_core.documents import Document

        from rag.bm25 import BM25Index
        from rag.store import read_chunks, tune_faiss_index

        chunks = read_chunks(folder / "chunks.jsonl")
        index = faiss.read_index(str(folder / "index.faiss"))
        tune_faiss_index(index, _cfg())
        docs = {c.id: Document(id=c.id, page_content=c.text, metadata=c.metadata())
                for c in chunks}
        store = FAISS(embedding_function=embedder, index=index, docstore=InMemoryDocstore(docs),
                      index_to_docstore_id={i: c.id for i, c in enumerate(chunks)},
                      distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
        BM25Index.load(folder / "bm25")
    else:
        from rag.retrieve import load_index

        loaded = load_index(folder, _cfg(), embedder=embedder)
        store = loaded.vectorstore
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mib()
    queries = _one_query_each(
        lambda: store.similarity_search_with_score_by_vector(query, k=5),
        lambda: store.max_marginal_relevance_search_with_score_by_vector(query, k=5, fetch_k=50))
    return {"verify_s": verify_s, "load_s": load_s, "rss_after_verify_mib": rss_verified,
            "rss_loaded_mib": rss_loaded, "rss_mib": rss_mib(), **queries}


def _bm25s_own_build(texts) -> int:
    """The previous build, for comparison: every text's token ids as a numpy array, then
    bm25s's own ``BM25.index`` (its score matrix in memory). Returns the vocabulary size."""
    from core.text import import_bm25s, tokenize

    vocab: dict[str, int] = {}
    ids = []
    for text in texts:
        toks = tokenize(text) or ["\u2205"]
        ids.append(np.fromiter((vocab.setdefault(t, len(vocab)) for t in toks), dtype=np.int32,
                               count=len(toks)))
    model = import_bm25s().BM25(k1=1.2, b=0.75, method="lucene")
    model.index((ids, vocab), show_progress=False)
    return len(vocab)


def worker_bm25(args) -> dict:
    from rag.bm25 import BM25Index
    from rag.docstore import ChunkFile

    folder = Path(args.folder)
    if args.how in ("build", "bm25s"):
        chunks = ChunkFile(folder / "chunks.jsonl", folder / "chunks.offsets.npy")
        texts = map(chunks.text_of, range(len(chunks)))
        t0 = time.perf_counter()
        if args.how == "bm25s":
            return {"vocab": _bm25s_own_build(texts), "seconds": time.perf_counter() - t0,
                    "rss_mib": rss_mib()}
        budget = {"budget_bytes": int(float(args.budget_mib) * 2**20)} if args.budget_mib else {}
        stats = BM25Index.write(texts, folder / "bm25-rebuilt", work_dir=folder, **budget)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "rss_mib": rss_mib(), "vocab": stats["terms"] + 1,  # with ""
                "entries": stats["entries"], "blocks": stats["blocks"],
                "budget_mib": stats["budget_bytes"] / 2**20}
    t0 = time.perf_counter()
    bm25 = BM25Index.load(folder / "bm25-rebuilt", mmap=args.how == "mmap")
    seconds = time.perf_counter() - t0
    bm25.search("rio serra cidade população", 10)
    return {"seconds": seconds, "rss_mib": rss_mib()}


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        s = queries @ np.asarray(vectors[start:start + 100_000]).T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.arange(start, start + s.shape[1])[None, :]
                                 .repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, 1)
        best_i = np.take_along_axis(cand_i, top, 1)
    return best_i


def worker_recall(args) -> dict:
    import faiss

    n = int(args.n)
    vectors = np.memmap(args.vectors, dtype=np.float32, mode="r", shape=(n, DIM))
    _set_threads()
    rng = np.random.default_rng(7)
    queries = np.asarray(vectors[np.sort(rng.choice(n, 1000, replace=False))])
    queries = queries + 0.1 * rng.standard_normal(queries.shape, dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    t0 = time.perf_counter()
    truth = _exact_top(vectors, queries, 10)
    out = {"exact_seconds_1000_queries": time.perf_counter() - t0, "queries": 1000, "rows": []}

    def recall(found):
        return float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found,
                                                                          strict=True)]))

    for path in args.indexes.split(","):
        index = faiss.read_index(path)
        kind = "hnsw" if hasattr(index, "hnsw") else "ivfpq"
        if kind == "hnsw":
            knobs = [("efSearch", v) for v in (32, 64, 128, 256)]
        else:
            knobs = [("nprobe", v) for v in (8, 16, 32, 64, 128)]
        for name, value in knobs:
            if kind == "hnsw":
                index.hnsw.efSearch = value
            else:
                faiss.extract_index_ivf(index).nprobe = value
            t0 = time.perf_counter()
            _, found = index.search(queries, 10)
            ms = (time.perf_counter() - t0) * 1000 / len(queries)
            row = {"index": Path(path).parent.name, "type": kind, name: value,
                   "recall@10": recall(found), "ms_per_query": ms}
            if kind == "ivfpq":
                row["pq_bytes"] = int(index.pq.M)
            out["rows"].append(row)
    return out


WORKERS = {"baseline": worker_baseline, "build": worker_build, "faiss": worker_faiss,
           "load": worker_load, "bm25": worker_bm25, "recall": worker_recall,
           "chunks": worker_chunks}


def run_worker(*argv: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the run -------------------------------------------------------------------------------------

def variant(folder: Path, kind: str, faiss_file: Path) -> Path:
    """A copy of ``folder`` (hard links) with another FAISS index and a manifest to match."""
    from core.io import sha256_file

    dest = folder.parent / f"{folder.name}-{kind}"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest, copy_function=os.link,
                    ignore=shutil.ignore_patterns("index.faiss", "manifest.json"))
    os.replace(faiss_file, dest / "index.faiss")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["faiss"] = {"type": kind, "metric": "inner_product", "ntotal": manifest["faiss"]
                         ["ntotal"]}
    manifest["files"]["index.faiss"] = {"sha256": sha256_file(dest / "index.faiss"),
                                        "bytes": (dest / "index.faiss").stat().st_size}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception as exc:  # informative only
        return f"unknown ({type(exc).__name__})"


def measure_bm25(folder: Path, old: bool, budget_mib: float = 0) -> dict:
    """BM25 alone from the folder's chunks: the bounded build, bm25s's own (``old``), loads."""
    hows = ("build", "bm25s", "ram", "mmap") if old else ("build", "ram", "mmap")
    budget = ["--budget-mib", str(budget_mib)] if budget_mib else []
    bm25 = {how: run_worker("bm25", "--folder", str(folder), "--how", how, *budget)
            for how in hows}
    new = bm25["build"]
    print(f"bm25: build {new['seconds']:.1f} s peak {new['rss_mib']:.0f} MiB (vocab "
          f"{new['vocab']:,}, {new['entries']:,} entries, {new['blocks']} term blocks of a "
          f"{new['budget_mib']:.0f} MiB budget)" + (
              f"; bm25s's own build {bm25['bm25s']['seconds']:.1f} s peak "
              f"{bm25['bm25s']['rss_mib']:.0f} MiB" if old else "") +
          f"; load in RAM {bm25['ram']['rss_mib']:.0f} MiB, mmap {bm25['mmap']['rss_mib']:.0f} MiB",
          flush=True)
    return bm25


def measure_bm25_only(n: int, work: Path, old: bool, budget_mib: float = 0) -> dict:
    articles = work / f"articles-{n}.jsonl"
    print(f"\n== {n:,} chunks, BM25 only ==  (load {loadavg()})", flush=True)
    make_articles(n, articles)
    folder = work / f"idx-{n}-bm25"
    chunks = run_worker("chunks", "--articles", str(articles), "--folder", str(folder))
    print(f"chunks: {chunks['seconds']:.1f} s", flush=True)
    return {"n": n, "chunks": chunks, "bm25": measure_bm25(folder, old, budget_mib)}


def measure_size(n: int, work: Path, types: list[str], repeats: int, recall: bool,
                 pq_extra: int = 0, bm25_old: bool = False, bm25_budget: float = 0) -> dict:
    articles = work / f"articles-{n}.jsonl"
    print(f"\n== {n:,} chunks ==  (load {loadavg()})", flush=True)
    make_articles(n, articles)
    folder = work / f"idx-{n}"
    build = run_worker("build", "--n", str(n), "--articles", str(articles), "--folder", str(folder))
    print(f"build (auto -> {build['faiss']}): {build['seconds']:.1f} s, peak RSS "
          f"{build['rss_mib']:.0f} MiB; " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                     build["stages"].items()), flush=True)
    vec_file = work / f"vectors-{n}.f32"
    write_vectors(n, vec_file)
    folders, faiss_rows = {}, {}
    for kind in types:
        tmp = work / f"tmp-{kind}.faiss"
        if kind == build["faiss"]:  # the build made this one already: reuse it and its time
            os.link(folder / "index.faiss", tmp)
            faiss_rows[kind] = {"seconds": build["stages"]["faiss"], "rss_mib": None,
                                "bytes": tmp.stat().st_size, "from_build": True}
        else:
            faiss_rows[kind] = run_worker("faiss", "--n", str(n), "--vectors", str(vec_file),
                                          "--kind", kind, "--out", str(tmp))
        folders[kind] = variant(folder, kind, tmp)
        r = faiss_rows[kind]
        peak = "in the build" if r["rss_mib"] is None else f"{r['rss_mib']:.0f} MiB"
        print(f"faiss {kind:6}: build {r['seconds']:.1f} s, peak RSS {peak}, "
              f"file {r['bytes'] / 2**20:.0f} MiB", flush=True)
    loads: dict[str, dict[str, list[dict]]] = {k: {"old": [], "new": []} for k in types}
    for _ in range(repeats):
        for kind in types:
            for how in ("old", "new"):  # interleaved
                loads[kind][how].append(run_worker("load", "--n", str(n), "--folder",
                                                   str(folders[kind]), "--how", how))
    summary = {}
    for kind in types:
        med = {how: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
               for how, rows in loads[kind].items()}
        summary[kind] = med
        o, w = med["old"], med["new"]
        print(f"load {kind:6}: RSS old {o['rss_mib']:.0f} MiB / new {w['rss_mib']:.0f} MiB "
              f"(x{o['rss_mib'] / w['rss_mib']:.2f}); load old {o['load_s']:.2f} s / new "
              f"{w['load_s']:.2f} s (x{o['load_s'] / max(w['load_s'], 1e-9):.1f}); verify "
              f"{w['verify_s']:.1f} s; dense {w['dense_ms']:.1f} ms, mmr {w['mmr_ms']:.1f} ms",
              flush=True)
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    result = {"n": n, "build": build, "faiss": faiss_rows, "load": summary, "load_runs": loads,
              "bm25": measure_bm25(folder, bm25_old, bm25_budget), "disk_bytes": disk}
    if recall:
        paths = [str(folders[k] / "index.faiss") for k in types if k in ("hnsw", "ivfpq")]
        extra = work / f"tmp-ivfpq{pq_extra}.faiss"
        if pq_extra:  # another code size, for its recall
            result["faiss"][f"ivfpq{pq_extra}"] = run_worker(
                "faiss", "--n", str(n), "--vectors", str(vec_file), "--kind", "ivfpq",
                "--out", str(extra), "--pq-bytes", str(pq_extra))
            paths.append(str(extra))
        rec = run_worker("recall", "--n", str(n), "--vectors", str(vec_file),
                         "--indexes", ",".join(paths))
        result["recall"] = rec
        for row in rec["rows"]:
            knob = "efSearch" if "efSearch" in row else "nprobe"
            label = row["type"] + (f" {row['pq_bytes']} B" if "pq_bytes" in row else "")
            print(f"recall@10 {label:10} {knob} {row[knob]:4}: {row['recall@10']:.3f} "
                  f"({row['ms_per_query']:.2f} ms/query)", flush=True)
        extra.unlink(missing_ok=True)
    vec_file.unlink()
    return result


def extrapolate(results: dict[int, dict], types: list[str]) -> list[str]:
    sizes = sorted(results)
    if len(sizes) < 2:
        return ["(two sizes are needed to extrapolate)"]
    a, b = sizes[-2], sizes[-1]
    lines = [f"extrapolated to {TARGET:,} chunks from {a:,} and {b:,} (linear in chunks):"]
    for kind in types:
        if not all(kind in results[s]["load"] for s in (a, b)):
            continue
        for how in ("old", "new"):
            ra = results[a]["load"][kind][how]["rss_mib"]
            rb = results[b]["load"][kind][how]["rss_mib"]
            slope = (rb - ra) / (b - a)
            est = rb + slope * (TARGET - b)
            goal = "" if how == "old" else (" (goal <= 8 GB: " + (
                "met)" if est * 2**20 <= 8e9 else "NOT met)"))
            lines.append(f"  load {kind:6} {how}: {rb:.0f} MiB + {slope * 1024:.2f} KiB/chunk x "
                         f"{TARGET - b:,} = {est / 1024:.1f} GiB{goal}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="/tmp/compara-index-scale")
    ap.add_argument("--keep", action="store_true", help="keep the built folders")
    ap.add_argument("--recall-from", type=int, default=100_000,
                    help="measure recall@10 at sizes from this one (0: never)")
    ap.add_argument("--pq-extra", type=int, default=0,
                    help="also build IVF-PQ with this many bytes a vector, for its recall")
    ap.add_argument("--threads", type=int, default=0,
                    help="FAISS threads in every step (0: the library's default, all cores)")
    ap.add_argument("--bm25-only", action="store_true",
                    help="measure only BM25 (chunks, build, load); bench/out/index_scale_bm25.json")
    ap.add_argument("--bm25-old", action="store_true",
                    help="also measure bm25s's own build (the previous way: its matrix in memory)")
    ap.add_argument("--bm25-budget", type=float, default=0,
                    help="MiB for the BM25 build's arrays (0: rag.bm25.BUDGET_BYTES)")
    ap.add_argument("--worker")
    for name in ("n", "articles", "folder", "vectors", "kind", "out", "how", "indexes",
                 "pq-bytes", "budget-mib"):
        ap.add_argument(f"--{name}")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    if not SOURCE.exists():
        print(f"{SOURCE} is missing: run `compara ingest` on the sample first", file=sys.stderr)
        return 2
    sizes = sorted(int(s) for s in args.sizes.split(","))
    types = [t for t in args.types.split(",") if t]
    if args.threads:
        os.environ["INDEX_SCALE_THREADS"] = str(args.threads)  # the workers read it
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import faiss

    header = {"cpu_capability": cpu_capability(), "cores": os.cpu_count(),
              "faiss_threads": args.threads or faiss.omp_get_max_threads(),
              "load_before": loadavg()}
    print(f"CPU {header['cpu_capability']}, {header['cores']} cores, FAISS threads "
          f"{header['faiss_threads']}, load {header['load_before']}")
    base = run_worker("baseline")
    print(f"imports alone (faiss, langchain, bm25s, rag): peak RSS {base['rss_mib']:.0f} MiB")
    OUT.mkdir(parents=True, exist_ok=True)
    out_file = OUT / ("index_scale_bm25.json" if args.bm25_only else "index_scale.json")
    saved = json.loads(out_file.read_text()) if out_file.exists() else {"sizes": {}}
    for n in sizes:
        if args.bm25_only:
            res = measure_bm25_only(n, work, args.bm25_old, args.bm25_budget)
        else:
            res = measure_size(n, work, types, args.repeats,
                               recall=bool(args.recall_from) and n >= args.recall_from,
                               pq_extra=args.pq_extra, bm25_old=args.bm25_old,
                               bm25_budget=args.bm25_budget)
        saved["sizes"][str(n)] = {**res, **header, "baseline_rss_mib": base["rss_mib"],
                                  "load_after": loadavg()}
        out_file.write_text(json.dumps(saved, indent=1))
        if not args.keep:
            for p in work.glob(f"idx-{n}*"):
                shutil.rmtree(p)
    if not args.bm25_only:
        all_results = {int(k): v for k, v in saved["sizes"].items()}
        lines = extrapolate(all_results, types)
        print("\n" + "\n".join(lines))
        saved["extrapolation"] = lines
        out_file.write_text(json.dumps(saved, indent=1))
    print(f"load average after: {loadavg()}; results in {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
