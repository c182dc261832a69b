"""`compara demo` end to end on the tiny random model: every stage runs, then nothing is redone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.io import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _demo(repo_root: Path, tmp_path: Path, *extra: str):
    from typer.testing import CliRunner

    from compara.cli import app

    sets = [f"paths.data={tmp_path / 'data'}", f"paths.index={tmp_path / 'index'}",
            f"paths.adapter={tmp_path / 'adapter'}", f"paths.runs={tmp_path / 'runs'}",
            "ingest.max_pages=12", "model.quantize=none", "finetune.max_steps=2",
            "finetune.eval_steps=2", "finetune.stop_check=2", "generation.max_new_tokens=6",
            "demo.questions=6", *extra]
    args = ["demo", "-c", str(repo_root / "configs" / "ci.yaml")]
    for s in sets:
        args += ["-s", s]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_the_demo_runs_every_stage_then_skips_what_is_up_to_date(repo_root, tmp_path):
    first = _demo(repo_root, tmp_path)
    assert first.exit_code == 0, first.output
    for stage in ("ingest", "index", "finetune", "batch"):
        assert f"• {stage}: done" in first.output
    # the model is converted once per cache (an earlier test may have done it)
    assert "• model: done" in first.output or "• model: up to date" in first.output
    # the compute line at the start, where the time went at the end
    assert "compute: " in first.output
    breakdown = next(line for line in first.output.splitlines()
                     if line.startswith("where the time went:"))
    for part in ("finetune", "(loading", "training", "evals", "stop check",
                 "batch", "answering", "answers/s", "the rest"):
        assert part in breakdown
    run = tmp_path / "runs" / "ci-demo"
    rows = read_jsonl(run / "results.jsonl")
    arms = {r["arm"] for r in rows}
    assert arms == {"base", "rag", "finetuned", "finetuned+rag"}
    # demo.questions picks a stratified sample, each question answered by every arm once
    questions = {r["question_id"] for r in rows}
    assert len(questions) == 6 and len(rows) == 6 * 4
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["per_arm"]) == arms
    assert (run / "report.html").stat().st_size > 0
    assert "report.html" in first.output.replace("\n", "")  # rich wraps long paths

    second = _demo(repo_root, tmp_path)
    assert second.exit_code == 0, second.output
    for stage in ("model", "ingest", "index", "finetune"):
        assert f"• {stage}: up to date" in second.output
    assert "0 answers generated" in second.output.replace("\n", " ")
    assert len(read_jsonl(run / "results.jsonl")) == len(rows)  # nothing written twice

    # A changed fine-tuning setting retrains; the stale adapter is kept aside.
    third = _demo(repo_root, tmp_path, "finetune.max_steps=3")
    assert third.exit_code == 0, third.output
    assert "• finetune: done" in third.output and "• index: up to date" in third.output
    assert (tmp_path / "adapter.previous" / "summary.json").exists()
    assert json.loads((tmp_path / "adapter" / "summary.json").read_text())["steps"] == 3
    # ... and the answers of the old adapter are kept aside, not mixed with the new ones:
    # the base and rag arms come from the answer cache, the fine-tuned arms are generated again.
    assert (tmp_path / "runs" / "ci-demo.previous" / "results.jsonl").exists()
    rerun = read_jsonl(run / "results.jsonl")
    assert len(rerun) == 6 * 4
    assert all(r["cached"] == (r["arm"] in ("base", "rag")) for r in rerun)


def test_the_time_breakdown_leaves_out_a_stop_check_that_did_not_run():
    from compara.demo import time_breakdown

    def line(stop_check: float) -> str:
        timing = {"load": 4.0, "train_steps": 246.0, "evals": 12.0, "stop_check": stop_check,
                  "total": 268.0 + stop_check}
        return time_breakdown({"finetune": 268.0 + stop_check},
                              {"finetune": {"timing": timing}})

    assert "stop check" not in line(0.0)  # finetune.stop_check: 0
    assert "training 246 s" in line(0.0) and "evals 12 s" in line(0.0)
    assert "stop check 70 s" in line(70.0)


def _fake_stages(monkeypatch, run, fresh=()):
    from compara import demo

    stages = [demo.Stage(name, lambda cfg, n=name: n in fresh, lambda cfg, n=name: run(n),
                         lambda cfg, result, n=name: f"{n} described")
              for name in ("model", "ingest", "index", "finetune", "batch")]
    monkeypatch.setattr(demo, "STAGES", stages)
    monkeypatch.setattr(demo, "_demo_run_dir", lambda cfg: Path("runs") / "x")


def test_the_model_is_prepared_beside_the_index_and_ready_before_the_tune(monkeypatch, capsys,
                                                                           repo_root):
    """The conversion (one core of Python) runs in a thread while ingest and index run, and has
    finished before the fine-tune starts; the output and the time breakdown say so."""
    import threading

    from compara.config import load_config
    from compara.demo import run_demo

    index_running, model_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def run(name):
        seen[name + ":thread"] = threading.current_thread().name
        if name == "model":  # waits for the index: sequentially this would time out
            seen["model saw the index running"] = index_running.wait(timeout=20)
            model_done.set()
        elif name == "index":
            index_running.set()
        elif name == "finetune":
            seen["model done before the tune"] = model_done.is_set()
        return {"stage": name}

    _fake_stages(monkeypatch, run)
    run_demo(load_config(repo_root / "configs" / "ci.yaml"))
    out = capsys.readouterr().out
    assert seen["model saw the index running"] is True
    assert seen["model done before the tune"] is True
    assert seen["model:thread"] != seen["index:thread"] == threading.main_thread().name
    assert "• model: running beside ingest and index" in " ".join(out.split())
    lines = [line for line in out.splitlines() if line.startswith("• ")]
    done = [line.split(":")[0] for line in lines if ": done in" in line]
    assert done.index("• model") < done.index("• finetune")
    breakdown = " ".join(out[out.index("where the time went:"):].split())
    assert "model 0 s (beside ingest and index)" in breakdown


def test_a_model_that_fails_beside_the_index_stops_the_demo_before_the_tune(monkeypatch,
                                                                            repo_root):
    from compara.config import load_config
    from compara.demo import run_demo

    ran = []

    def run(name):
        ran.append(name)
        if name == "model":
            raise RuntimeError("the model's file is damaged")
        return {"stage": name}

    _fake_stages(monkeypatch, run)
    with pytest.raises(RuntimeError, match="damaged"):
        run_demo(load_config(repo_root / "configs" / "ci.yaml"))
    assert "finetune" not in ran and "index" in ran


def test_the_model_runs_alone_when_ingest_and_index_are_up_to_date(monkeypatch, capsys,
                                                                   repo_root):
    import threading

    from compara.config import load_config
    from compara.demo import run_demo

    threads = {}

    def run(name):
        threads[name] = threading.current_thread().name
        return {"stage": name}

    _fake_stages(monkeypatch, run, fresh=("ingest", "index"))
    run_demo(load_config(repo_root / "configs" / "ci.yaml"))
    out = " ".join(capsys.readouterr().out.split())
    assert threads["model"] == threading.main_thread().name
    assert "• model: running ..." in out and "beside" not in out
