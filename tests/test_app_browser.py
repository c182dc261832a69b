"""The app in a real browser (headless Chromium over its DevTools protocol): slow, and only
where Debian's chromium is installed (`make app-check` installs it)."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_page_answers_a_question_in_chromium(tmp_path, fixtures_dir, repo_root, capsys):
    from compara.app.check import main
    from rag.config import IndexConfig
    from rag.store import build_index

    build_index(fixtures_dir / "articles.jsonl", tmp_path / "index", IndexConfig())
    out = tmp_path / "shots" / "app.png"
    code = main(["-c", str(repo_root / "configs/ci.yaml"),
                 "-s", "model.base=tiny-random-llama", "-s", "model.quantize=none",
                 "-s", f"paths.index={tmp_path / 'index'}", "-s", f"paths.runs={tmp_path / 'runs'}",
                 "-s", f"paths.adapter={tmp_path / 'no-adapter'}",
                 "-s", "generation.max_new_tokens=16",
                 "--question", "Onde nasce o Rio Verde-Claro?", "--out", str(out),
                 "--timeout", "300"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["columns"] == 2 and report["errors_on_page"] == 0  # base and rag
    assert report["names_in_blind_page"] == []
    assert len(report["two_sessions"]) == 2  # two tabs asking at once both got their answers
    for shot in (out, out.with_name("app-blind.png")):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
