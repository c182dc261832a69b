import pytest

from core.prompts import PromptTemplate, RagTemplate
from rag.config import IndexConfig, RetrievalConfig
from rag.embedders import HashEmbeddings
from rag.retrieve import load_index, prompt_passages, rrf_fuse
from rag.store import build_index


def test_rrf_rewards_agreement_and_keeps_a_deterministic_order():
    fused = rrf_fuse({"dense": [10, 20, 30], "bm25": [30, 20, 40]}, rrf_k=60)
    order = [pos for pos, _ in fused]
    # 30 (ranks 3 and 1) edges out 20 (2 and 2): 1/63 + 1/61 > 2/62; 10 (1) beats 40 (3)
    assert order == [30, 20, 10, 40]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    # a document found by one list only ranks below one found by both at equal ranks
    fused = rrf_fuse({"a": [1, 2], "b": [2, 3]}, rrf_k=0)
    assert [p for p, _ in fused][0] == 2
    # ties are broken by best single rank, then position
    tie = rrf_fuse({"a": [5, 6], "b": [6, 5]}, rrf_k=60)
    assert [p for p, _ in tie] == [5, 6]


@pytest.fixture(scope="module")
def index(tmp_path_factory, fixtures_dir):
    out = tmp_path_factory.mktemp("rag") / "idx"
    cfg = IndexConfig()
    build_index(fixtures_dir / "articles.jsonl", out, cfg, embedder=HashEmbeddings())
    return load_index(out, cfg, RetrievalConfig(k=3, retriever="hybrid", fetch_k=10),
                      embedder=HashEmbeddings())


def test_hybrid_keeps_the_ranks_of_both_sources(index):
    q = "gentílico de Vila Serena"
    hybrid = index.search(q)
    assert len(hybrid) == 3 and all(p.retriever == "hybrid" for p in hybrid)
    dense = {p.chunk_id: p.rank for p in index.search(q, 10, "dense")}
    bm25 = {p.chunk_id: p.rank for p in index.search(q, 10, "bm25")}
    for p in hybrid:
        assert set(p.ranks) <= {"dense", "bm25"} and p.ranks
        if "dense" in p.ranks:
            assert p.ranks["dense"] == dense[p.chunk_id]
        if "bm25" in p.ranks:
            assert p.ranks["bm25"] == bm25[p.chunk_id]

    def fused(c):
        return sum(1 / (60 + r[c]) for r in (dense, bm25) if c in r)

    for p in hybrid:
        assert p.score == pytest.approx(fused(p.chunk_id))
    left_out = (set(dense) | set(bm25)) - {p.chunk_id for p in hybrid}
    assert all(fused(c) <= hybrid[-1].score + 1e-12 for c in left_out)
    assert [p.score for p in hybrid] == sorted((p.score for p in hybrid), reverse=True)


def test_passages_fill_the_rag_prompt(index):
    passages = index.search("Quem foi Ana Lúcia Prado?", 2, "hybrid")
    dicts = prompt_passages(list(reversed(passages)))
    assert [d["rank"] for d in dicts] == [1, 2]
    for d in dicts:
        assert {"title", "section", "text", "url", "score", "rank", "chunk_id"} <= set(d)
        assert not d["text"].startswith(d["title"] + "\n")  # the header is not repeated
    prompt = RagTemplate.load().render(PromptTemplate.load(), "Quem foi Ana Lúcia Prado?", dicts)
    assert "[1] " + dicts[0]["title"] in prompt and "[2] " in prompt
    assert dicts[0]["text"][:40] in prompt


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_mmr_is_the_dense_order_at_lambda_one_and_spreads_out_below(tmp_path, fixtures_dir,
                                                                    index_type):
    cfg = IndexConfig(batch_size=4, index_type=index_type, chunk_size=120, chunk_overlap=0,
                      min_chunk_chars=10)
    out = tmp_path / index_type
    build_index(fixtures_dir / "articles.jsonl", out, cfg, embedder=HashEmbeddings())
    idx = load_index(out, cfg, RetrievalConfig(), embedder=HashEmbeddings())
    query = "Onde nasce o Rio Verde-Claro e qual é a sua extensão?"
    k = 4
    dense = idx.search(query, settings=RetrievalConfig(retriever="dense", k=k))
    same = idx.search(query, settings=RetrievalConfig(retriever="mmr", k=k, mmr_lambda=1.0,
                                                      fetch_k=len(idx)))
    assert [p.chunk_id for p in same] == [p.chunk_id for p in dense]
    assert all(p.retriever == "mmr" and p.ranks["mmr"] == p.rank for p in same)
    spread = idx.search(query, settings=RetrievalConfig(retriever="mmr", k=k, mmr_lambda=0.0,
                                                        fetch_k=len(idx)))
    assert len(spread) == k and len({p.chunk_id for p in spread}) == k
    assert spread[0].chunk_id == dense[0].chunk_id  # the most relevant comes first
    assert [p.chunk_id for p in spread] != [p.chunk_id for p in dense]  # then the different
    with pytest.raises(Exception, match="mmr_lambda"):
        RetrievalConfig(mmr_lambda=1.5)
