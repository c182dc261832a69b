"""The bounded BM25 build (rag.bm25.BM25Index.write) against bm25s's own: the same files, the
same scores, whatever the budget; loaded memory-mapped; a stopped build never loads."""

import random

import numpy as np
import pytest

from core.text import import_bm25s, tokenize
from rag.bm25 import DATA, INDICES, INDPTR, PARAMS, TOKENIZER_FILE, VOCAB, BM25Index

TEXTS = [
    "O rio São Francisco nasce na serra da Canastra; o rio corre para o norte, rio abaixo.",
    "",  # no token: indexed as the empty-text token, found by no query
    "A cidade de Ribeirão Preto fica no interior. Cidade, cidade, cidade!",
    "Botânica e botânicos: a botânica estuda as plantas da serra.",
    "!!! ... ???",  # only punctuation: no token either
    "Sao Paulo e São Paulo são a mesma cidade para o índice.",
    "A Serra da Estrela é a serra mais alta de Portugal continental.",
    "O Tejo e o Douro são rios; o Tejo passa em Lisboa.",
] * 3 + ["Um texto único com palavras únicas: xilofone, zarabatana, quimera."]
QUERIES = ["rio serra", "cidade de São Paulo", "sao paulo", "botanico planta", "Tejo Lisboa rio",
           "xilofone", "serra serra estrela"]


def _bm25s_as_before(texts):
    """bm25s's own build on the same token ids (what BM25Index.build did before)."""
    bm25s = import_bm25s()
    vocab, ids = {}, []
    for text in texts:
        toks = tokenize(text) or ["\u2205"]
        ids.append(np.array([vocab.setdefault(t, len(vocab)) for t in toks], dtype=np.int32))
    model = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    model.index((ids, vocab), show_progress=False)
    return model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bm25s") / "index"
    _bm25s_as_before(TEXTS).save(str(folder), show_progress=False, allow_pickle=False)
    return folder


@pytest.mark.parametrize("budget", [1 << 30, 300, 1])
def test_written_files_are_bm25s_own_byte_for_byte(tmp_path, reference, budget):
    """Budgets that force one segment per text and several terms a block (300) or one term a
    block (1) give the same bytes as one block, and as bm25s saves its own index."""
    stats = BM25Index.write(iter(TEXTS), tmp_path / "bm25", budget_bytes=budget)
    blocks = {1 << 30: 1, 300: range(2, stats["terms"]), 1: stats["terms"]}[budget]
    assert stats["blocks"] in blocks if isinstance(blocks, range) else stats["blocks"] == blocks
    assert stats["segments"] == (1 if budget == 1 << 30 else len(TEXTS))
    for name in (DATA, INDICES, INDPTR, VOCAB, PARAMS):
        assert (tmp_path / "bm25" / name).read_bytes() == (reference / name).read_bytes(), name
    assert [p.name for p in tmp_path.iterdir()] == ["bm25"]  # the spill is gone


def test_many_segments_and_blocks_of_a_larger_corpus_are_bm25s_own_bytes(tmp_path):
    """400 texts of 1 to 120 words drawn from 400 (a long tail of rare terms and a few common
    ones), through ~85 segments and ~20 term blocks."""
    rng = random.Random(0)
    words = [f"palavra{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words[:rng.randint(5, 400)]) for _ in range(rng.randint(1, 120)))
             for _ in range(400)]
    _bm25s_as_before(texts).save(str(tmp_path / "bm25s"), show_progress=False)
    stats = BM25Index.write(texts, tmp_path / "ours", budget_bytes=40_000)
    assert stats["segments"] > 50 and stats["blocks"] > 10
    for name in (DATA, INDICES, INDPTR, VOCAB, PARAMS):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "bm25s" / name).read_bytes()


def test_scores_are_bm25s_own_on_token_lists():
    """Against bm25s indexing the token lists itself (its own vocabulary and ids)."""
    bm25s = import_bm25s()
    own = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    own.index([tokenize(t) or ["\u2205"] for t in TEXTS], show_progress=False)
    ours = BM25Index.build(iter(TEXTS), budget_bytes=300)
    assert ours.n_docs == len(TEXTS)
    for query in QUERIES:
        tokens = [t for t in tokenize(query) if t in own.vocab_dict]
        assert tokens, query
        np.testing.assert_allclose(ours._model.get_scores(tokens), own.get_scores(tokens),
                                   rtol=1e-6, atol=1e-6)


def test_search_repeated_terms_accents_and_empty_texts():
    index = BM25Index.build(TEXTS)
    positions, scores = index.search("cidade", 5)
    assert positions[0] % 8 == 2  # "cidade" four times in a short text
    assert np.all(np.diff(scores) <= 0)
    accented, folded = index.search("São Paulo", 30), index.search("sao paulo", 30)
    np.testing.assert_array_equal(accented[0], folded[0])
    found = set(index.search(" ".join(QUERIES), len(TEXTS))[0].tolist())
    assert not found & {1, 4, 9, 12, 17, 20}  # the texts without a token


def test_query_terms_absent_from_the_index():
    index = BM25Index.build(TEXTS)
    for query in ("ornitorrinco", "", "de a o"):  # unknown, nothing, stop words only
        positions, scores = index.search(query, 5)
        assert positions.size == scores.size == 0
    mixed, mixed_scores = index.search("ornitorrinco xilofone", 5)
    alone, alone_scores = index.search("xilofone", 5)
    assert mixed.tolist() == alone.tolist() == [len(TEXTS) - 1]
    np.testing.assert_array_equal(mixed_scores, alone_scores)


def test_loaded_memory_mapped_it_searches_as_in_memory(tmp_path):
    BM25Index.write(TEXTS, tmp_path / "bm25", budget_bytes=300)
    mapped = BM25Index.load(tmp_path / "bm25", mmap=True)
    assert isinstance(mapped._model.scores["data"], np.memmap)
    in_ram = BM25Index.build(TEXTS)
    for query in QUERIES:
        got, want = mapped.search(query, 10), in_ram.search(query, 10)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_a_build_stopped_midway_leaves_no_index_that_loads(tmp_path):
    folder, work = tmp_path / "bm25", tmp_path / "work"
    work.mkdir()
    BM25Index.write(TEXTS, folder, work_dir=work)  # an earlier, finished build in the folder

    def stopped():
        yield from TEXTS[:5]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BM25Index.write(stopped(), folder, budget_bytes=300, work_dir=work)
    assert not (folder / TOKENIZER_FILE).exists()
    with pytest.raises(FileNotFoundError):
        BM25Index.load(folder)
    assert not list(work.iterdir())  # no spill left behind
    with pytest.raises(ValueError, match="no text"):
        BM25Index.write([], tmp_path / "empty", work_dir=work)
