"""A user's error on the command line is one `error:` line (exit 2), never a traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.errors import UserError
from rag.store import IndexRefused


@pytest.fixture
def tampered_index(tmp_path, fixtures_dir):
    """An index folder whose manifest was edited by hand: refused when loaded."""
    from rag.config import IndexConfig
    from rag.embedders import HashEmbeddings
    from rag.store import build_index

    out = tmp_path / "idx"
    build_index(fixtures_dir / "articles.jsonl", out, IndexConfig(batch_size=4),
                embedder=HashEmbeddings())
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = "something-else"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _invoke(repo_root, *args):
    from compara.cli import app

    return CliRunner().invoke(app, ["-q", *map(str, args), "-c",
                                    str(repo_root / "configs" / "ci.yaml"),
                                    "-s", "model.quantize=none"])


def _clean_error(result):
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "manifest" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # typer's exit, not the error itself


def test_ask_with_a_tampered_index_prints_one_error_line(repo_root, tampered_index):
    result = _invoke(repo_root, "ask", "Onde nasce o Rio Verde-Claro?", "--arms", "rag",
                     "--index", tampered_index)
    _clean_error(result)


def test_batch_with_a_tampered_index_prints_one_error_line(repo_root, fixtures_dir,
                                                          tampered_index, tmp_path):
    result = _invoke(repo_root, "batch", repo_root / "questions" / "amostra.jsonl", "--arms",
                     "rag", "--limit", "1", "--index", tampered_index, "--out", tmp_path / "run")
    _clean_error(result)


def test_every_error_meant_for_a_user_is_a_user_error():
    from compara.batch import StaleRun
    from compara.comparison import ArmUnavailable
    from core.configbase import ConfigError
    from core.io import InputError
    from core.models import AdapterMismatch, ModelNotFound
    from core.questions import QuestionFileError
    from finetune.train import OverBudget, RunConflict
    from ingest.generated import GeneratorError
    from ingest.pipeline import IngestFailed
    from rag.embedders import EmbedderError
    from rag.retrieve import QueryError

    for cls in (ConfigError, InputError, QuestionFileError, StaleRun, RunConflict, OverBudget,
                ArmUnavailable, ModelNotFound, AdapterMismatch, IndexRefused, QueryError,
                EmbedderError, GeneratorError, IngestFailed):
        assert issubclass(cls, UserError), cls
    # the other bases stay: existing `except ValueError` / `except RuntimeError` still catch them
    assert issubclass(ConfigError, ValueError) and issubclass(IndexRefused, RuntimeError)
