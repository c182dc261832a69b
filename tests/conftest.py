"""Shared fixtures. Tests never touch the network: a missing file must fail fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted models and caches go to a per-session temp folder, not the user's cache,
    unless COMPARA_TEST_CACHE points at a persistent one (speeds up slow tests locally)."""
    persistent = os.environ.get("COMPARA_TEST_CACHE")
    cache = Path(persistent) if persistent else tmp_path_factory.getbasetemp() / "compara-cache"
    monkeypatch.setenv("COMPARA_CACHE", str(cache))


@pytest.fixture(scope="session")
def sample_dump() -> Path:
    return ROOT / "data/sample/ptwiki-amostra-pages-articles.xml"


@pytest.fixture(scope="session")
def sample_ingest(tmp_path_factory, sample_dump) -> Path:
    """The shipped sample dump ingested once per test session (default settings)."""
    from ingest.config import IngestConfig
    from ingest.pipeline import run_ingest

    out = tmp_path_factory.mktemp("sample-ingest")
    run_ingest(sample_dump, out, IngestConfig())
    return out


@pytest.fixture(scope="session")
def sample_articles(sample_ingest) -> list[dict]:
    from core.io import read_jsonl

    return read_jsonl(sample_ingest / "articles.jsonl")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run thousands of tiny ops: with 2 threads on a shared 2-core machine each
    op waits for the busy core (10x slower); one thread never waits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
