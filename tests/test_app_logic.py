"""The app's logic without a page: blind order, votes, leaderboard, pickers, input bounds,
strings, streaming under the shared lock, and the `compara app` command line."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from compara.app import files, rating, rounds
from compara.app.i18n import STRINGS, Tr
from compara.arms import DEFAULT_LABELS
from compara.config import ExperimentConfig

ARMS = ["base", "rag", "finetuned", "finetuned+rag"]


# -- blind order and votes ----------------------------------------------------------------------

def test_blind_order_is_fixed_per_session_and_question_and_varies_otherwise():
    first = rating.blind_order("s1", "Quem fundou Brasília?", ARMS)
    assert sorted(first) == sorted(ARMS)
    assert rating.blind_order("s1", "Quem  fundou Brasília? ", ARMS) == first  # a rerun
    orders = {tuple(rating.blind_order(f"s{i}", "Quem fundou Brasília?", ARMS)) for i in range(40)}
    assert len(orders) > 5  # other sessions see other orders
    counts = {arm: 0 for arm in ARMS}
    for i in range(400):
        counts[rating.blind_order(f"s{i}", f"q{i}", ARMS)[0]] += 1
    assert min(counts.values()) > 50  # every arm is shown first about a quarter of the time


def test_ranks_allow_ties_and_picking_only_the_best():
    order = ["rag", "base", "finetuned"]
    assert rating.ranks_by_arm(order, {"A": 1, "B": 1, "C": 2}) == \
        {"rag": 1, "base": 1, "finetuned": 2}
    assert rating.ranks_by_arm(order, {"A": None, "B": 1, "C": None}) == \
        {"rag": 2, "base": 1, "finetuned": 2}  # pick the best: the others share second place
    assert rating.ranks_by_arm(order, {"A": 1, "B": 3, "C": 3}) == \
        {"rag": 1, "base": 2, "finetuned": 2}  # dense ranks
    with pytest.raises(rating.VoteError):
        rating.ranks_by_arm(order, {"A": None, "B": None, "C": None})
    with pytest.raises(rating.VoteError):
        rating.ranks_by_arm(order, {"A": 4})


def test_concurrent_votes_append_whole_lines(tmp_path):
    path = tmp_path / "runs" / "votes.jsonl"
    comment = "x" * 20000  # long lines: a torn or interleaved write would show

    def vote(i):
        rating.append_vote(path, rating.make_vote(
            order=["base", "rag"], letter_ranks={"A": 1, "B": 2}, question=f"q{i}",
            comment=comment, session=f"s{i}"))

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    votes, problems = rating.read_votes(path)
    assert not problems and len(votes) == 24
    assert {v["question"] for v in votes} == {f"q{i}" for i in range(24)}
    assert all(v["session"] and v["session"] != "s0" for v in votes)  # the seed never leaves


def test_a_torn_vote_line_is_reported_and_the_rest_read(tmp_path):
    path = tmp_path / "votes.jsonl"
    rating.append_vote(path, rating.make_vote(order=["base", "rag"], letter_ranks={"A": 1},
                                              question="q"))
    with open(path, "a") as fh:
        fh.write('{"ranks": {"base": 1, "rag"\n{"no": "ranks"}\n')
    votes, problems = rating.read_votes(path)
    assert len(votes) == 1 and [p.line for p in problems] == [2, 3]


def _votes(results):
    return [{"ranks": r} for r in results]


def test_leaderboard_orders_the_arms_and_gives_intervals():
    votes = _votes([{"rag": 1, "base": 2}] * 8 + [{"rag": 2, "base": 1}] * 2
                   + [{"rag": 1, "finetuned": 1}] * 4 + [{"finetuned": 1, "base": 2}] * 5)
    board = rating.leaderboard(votes, resamples=200, seed=1)
    rows = {r["arm"]: r for r in board["arms"]}
    assert [r["arm"] for r in board["arms"]][-1] == "base"
    assert rows["rag"]["bt"] > rows["base"]["bt"] and rows["finetuned"]["bt"] > rows["base"]["bt"]
    assert rows["rag"]["wins"] == 8 and rows["rag"]["losses"] == 2 and rows["rag"]["ties"] == 4
    assert rows["base"]["win_rate"] == pytest.approx(2 / 15)
    assert board["pairwise"]["rag"]["base"] == pytest.approx(0.8)
    for r in board["arms"]:
        for name in ("win_rate", "bt", "elo"):
            assert r[f"{name}_lo"] <= r[name] + 1e-9 and r[name] <= r[f"{name}_hi"] + 1e-9
    again = rating.leaderboard(votes, resamples=200, seed=1)
    assert again == board  # seeded: the same file gives the same page


def test_symmetric_votes_give_equal_ratings_and_ties_count_half():
    board = rating.leaderboard(_votes([{"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 1, "b": 1}]),
                               resamples=0)
    a, b = sorted(board["arms"], key=lambda r: r["arm"])
    assert a["bt"] == pytest.approx(1000) and b["bt"] == pytest.approx(1000)
    assert a["win_rate"] == pytest.approx(0.5) and a["ties"] == 1
    assert rating.leaderboard([], resamples=10)["arms"] == []


def test_bradley_terry_recovers_strength_order():
    import numpy as np

    rng = np.random.default_rng(0)
    strength = {"a": 3.0, "b": 1.0, "c": 0.3}
    votes = []
    for _ in range(600):
        x, y = rng.choice(list(strength), size=2, replace=False)
        win = rng.random() < strength[x] / (strength[x] + strength[y])
        votes.append({"ranks": {x: 1 if win else 2, y: 2 if win else 1}})
    board = rating.leaderboard(votes, resamples=0)
    bt = {r["arm"]: r["bt"] for r in board["arms"]}
    # 400 log10 of the strength ratio, within sampling error
    assert bt["a"] - bt["b"] == pytest.approx(400 * np.log10(3.0), abs=60)
    assert bt["b"] - bt["c"] == pytest.approx(400 * np.log10(1 / 0.3), abs=60)


# -- pickers and inputs ---------------------------------------------------------------------------

def test_pickers_list_only_files_under_questions_and_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "project_dir", lambda name: tmp_path / name)
    (tmp_path / "questions/sub").mkdir(parents=True)
    (tmp_path / "questions/a.jsonl").write_text('{"question": "q"}\n')
    (tmp_path / "questions/sub/b.csv").write_text("question\nq\n")
    (tmp_path / "questions/notes.txt").write_text("x")
    (tmp_path / "questions/.hidden").mkdir()
    (tmp_path / "questions/.hidden/c.jsonl").write_text('{"question": "q"}\n')
    run = tmp_path / "runs/r1"
    run.mkdir(parents=True)
    for name in ("results.jsonl", "exposure.jsonl", "summary.json", "mine.yaml"):
        (run / name).write_text("{}\n")
    (tmp_path / "elsewhere.jsonl").write_text('{"question": "q"}\n')
    cfg = ExperimentConfig()
    cfg.paths = cfg.paths.replace(runs=str(tmp_path / "runs"))
    found = files.question_files(cfg)
    assert sorted(p.name for p in found.values()) == ["a.jsonl", "b.csv", "mine.yaml"]
    assert all(tmp_path / "elsewhere.jsonl" != p for p in found.values())
    assert list(files.run_folders(cfg).values()) == [run]


def test_typed_questions_are_bounded():
    q = rounds.typed_question("  Onde nasce o rio?  ", "Serra A | Serra B", 100, 50)
    assert q.question == "Onde nasce o rio?" and q.reference == ["Serra A", "Serra B"]
    for text, ref, key in (("", "", "err_empty"), ("   ", "", "err_empty"),
                           ("x" * 101, "", "err_too_long"), ("ok", "r" * 51, "err_reference_too_long")):
        with pytest.raises(rounds.BadInput) as err:
            rounds.typed_question(text, ref, 100, 50)
        assert err.value.key == key and err.value.key in STRINGS


def test_every_string_the_app_uses_exists_in_both_languages():
    used = set()
    for path in Path(rounds.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""tr\(\s*["']([a-z0-9_]+)["']\s*[,)]""", text))
        used |= set(re.findall(r"""BadInput\(\s*["']([a-z0-9_]+)["']""", text))
    used |= {f"metric_{m}" for m in ("contains", "em", "f1", "rouge_l", "support", "retrieval_hit",
                                    "abstained_correctly", "abstained", "repetition",
                                    "stopped_on_eos")}
    used |= {f"retriever_{k}" for k in ("hybrid", "dense", "bm25")}
    used |= {"source_typed", "source_file", "batch_stopped", "batch_interrupted"}
    missing = sorted(used - set(STRINGS))
    assert not missing, missing
    for key, (pt, en) in STRINGS.items():
        assert pt and en, key
        assert set(re.findall(r"{(\w+)", pt)) == set(re.findall(r"{(\w+)", en)), key
    assert Tr("en")("tab_ask") == "Ask" and Tr("pt")("tab_ask") == "Perguntar"
    assert {Tr("pt").arm(a) for a in DEFAULT_LABELS} == {v["pt"] for v in DEFAULT_LABELS.values()}


def test_arms_are_named_from_the_config():
    from compara.arms import experiment_arms

    cfg = ExperimentConfig.from_dict({"arms": [
        {"name": "base"}, {"name": "rag", "retrieval": True,
                           "label": {"pt": "Recuperação", "en": "Retrieval"}},
        {"name": "rag-dense", "retrieval": {"retriever": "dense"}},
        {"name": "rag-k1", "retrieval": {"k": 1}, "label": {"pt": "Denso", "en": "Dense"}}]})
    pt, en = Tr("pt", experiment_arms(cfg)), Tr("en", experiment_arms(cfg))
    assert [pt.arm(a.name) for a in cfg.arms] == ["Base", "Recuperação", "rag-dense", "Denso"]
    assert [en.arm(a.name) for a in cfg.arms] == ["Base", "Retrieval", "rag-dense", "Dense"]
    # an arm of another config (an old vote, a run): a default arm's usual name, else itself
    assert en.arm("finetuned") == "Fine-tuned (QLoRA)" and en.arm("r64") == "r64"


# -- streaming under the shared lock ------------------------------------------------------------

@pytest.fixture(scope="module")
def comparison(tmp_path_factory, fixtures_dir):
    from compara.comparison import Comparison
    from core.config import GenerationConfig, ModelConfig
    from core.models import load_base
    from core.prompts import PromptTemplate, RagTemplate
    from rag.config import IndexConfig, RetrievalConfig
    from rag.embedders import HashEmbeddings
    from rag.retrieve import load_index
    from rag.store import build_index

    out = tmp_path_factory.mktemp("app-logic") / "idx"
    build_index(fixtures_dir / "articles.jsonl", out, IndexConfig(), embedder=HashEmbeddings())
    index = load_index(out, IndexConfig(), RetrievalConfig(k=2), embedder=HashEmbeddings())
    loaded = load_base(ModelConfig(base="tiny-random-llama", quantize="none", dtype="float32"))
    return Comparison(loaded, GenerationConfig(max_new_tokens=8), PromptTemplate.load(),
                      RagTemplate.load(), index, RetrievalConfig(k=2), index_dir=str(out))


def _stream(view, arm, question, cache=None, on_wait=None, **eval_settings):
    """The Ask tab's answer path: the pipeline of `compara batch`, streamed."""
    cfg = ExperimentConfig()
    cfg.eval = cfg.eval.replace(**eval_settings)
    return rounds.pipeline_for(view, cfg, cache).stream(arm, question, on_wait=on_wait)


def _answer(view, arm, question, cache=None, on_wait=None):
    items = list(_stream(view, arm, question, cache, on_wait))
    assert all(isinstance(i, str) for i in items[:-1]) and isinstance(items[-1], dict)
    return items[-1]


def test_a_view_changes_settings_for_one_request_only(comparison):
    from core.config import GenerationConfig

    view = comparison.with_settings(decoding=GenerationConfig(max_new_tokens=3),
                                    retrieval=comparison.retrieval.replace(k=1))
    assert view.lock is comparison.lock and view.loaded is comparison.loaded
    assert comparison.decoding.max_new_tokens == 8 and comparison.retrieval.k == 2
    q = rounds.typed_question("Onde nasce o Rio Verde-Claro?", "Serra do Lajeado", 200, 200)
    rec = _answer(view, "rag", q)
    assert rec["tokens_out"] <= 3 and len(rec["passages"]) == 1
    assert rec["identity"]["decoding"]["max_new_tokens"] == 3
    assert rec["metrics"]["support"] is not None and rec["question_id"] == q.id
    assert len(_answer(comparison, "rag", q)["passages"]) == 2


def test_a_second_ask_comes_from_the_answer_cache(comparison, tmp_path):
    from compara.pipeline import AnswerCache

    cache = AnswerCache(tmp_path / "answers.sqlite")
    q = rounds.typed_question("Qual era a profissão de Ana Lúcia Prado?", "", 200, 200)
    first = _answer(comparison, "base", q, cache)
    second = _answer(comparison, "base", q, cache)
    assert not first["cached"] and second["cached"]
    assert second["answer"] == first["answer"] and second["key"] == first["key"]


def test_closing_a_stream_early_stops_generation_and_frees_the_lock(comparison):
    from core.config import GenerationConfig

    view = comparison.with_settings(decoding=GenerationConfig(max_new_tokens=2000))
    q = rounds.typed_question("Onde nasce o Rio Verde-Claro?", "", 200, 200)
    threads_before = threading.active_count()
    stream = _stream(view, "base", q)
    next(stream)  # the first piece: generation is running
    stream.close()  # the page went away
    assert threading.active_count() == threads_before  # the generation thread has ended
    got = []

    def another_session():
        got.append(comparison.lock.acquire(timeout=5))
        if got[-1]:
            comparison.lock.release()

    other = threading.Thread(target=another_session)
    other.start()
    other.join()
    assert got == [True]


def test_two_sessions_take_turns_on_the_model(comparison):
    q = rounds.typed_question("Qual é o gentílico de Vila Serena?", "", 200, 200)
    expected = _answer(comparison, "rag", q)["answer"]
    waited, results = [], {}
    comparison.lock.acquire()  # another session is generating
    worker = threading.Thread(target=lambda: results.update(
        b=_answer(comparison, "rag", q, on_wait=lambda: waited.append(True))))
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive() and waited == [True]  # told to wait, and waiting
    comparison.lock.release()
    worker.join(timeout=60)
    assert results["b"]["answer"] == expected
    both = [threading.Thread(target=lambda k=k: results.update({k: _answer(comparison, "rag", q)}))
            for k in ("c", "d")]
    for t in both:
        t.start()
    for t in both:
        t.join(timeout=60)
    assert results["c"]["answer"] == results["d"]["answer"] == expected


# -- the command line ---------------------------------------------------------------------------

def test_the_app_command_binds_to_localhost_and_hands_over_the_config(tmp_path):
    from typer.testing import CliRunner

    from compara.app.config import ENV_CONFIG, ENV_SET
    from compara.cli import app
    from compara.cli.app import app_environment, streamlit_command

    cmd = streamlit_command(Path("compare_app.py"), "127.0.0.1", 8600, open_browser=False)
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=False))
    assert cmd[2:5] == ["streamlit", "run", "compare_app.py"]
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--client.showErrorDetails"] == "none"
    env = app_environment(tmp_path / "x.yaml", ["model.base=tiny-random-llama"])
    assert env[ENV_CONFIG] == str((tmp_path / "x.yaml").resolve())
    assert json.loads(env[ENV_SET]) == ["model.base=tiny-random-llama"]
    assert env["OMP_WAIT_POLICY"] in ("PASSIVE", os.environ.get("OMP_WAIT_POLICY"))
    result = CliRunner().invoke(app, ["app", "-s", "app.port=0"])
    assert result.exit_code != 0 and "app.port" in result.output


def test_a_card_carries_the_measures_and_survives_a_failing_one(comparison, tmp_path,
                                                                monkeypatch):
    import compara.comparison as answerers
    from compara.pipeline import AnswerCache

    cache = AnswerCache(tmp_path / "answers.sqlite")
    q = rounds.typed_question("Onde nasce o Rio Verde-Claro?", "Serra do Lajeado", 200, 200)
    rec = _answer(comparison, "rag", q, cache)
    m = rec["metrics"]
    assert m["ref_logprob"] < 0 and m["ref_best"] == "Serra do Lajeado"
    assert "similarity" in m and "portuguese" in m and "faithfulness" in m
    assert m.get("mc_correct") is None  # one question has no distractors: batch runs only
    # the second time the likelihood comes from the cache, like the answer
    monkeypatch.setattr(answerers, "score_arm", lambda *a, **k: 1 / 0)
    again = _answer(comparison, "rag", q, cache)
    assert again["cached"] and again["metrics"]["ref_logprob"] == m["ref_logprob"]
    other = rounds.typed_question("Qual é o gentílico de Vila Serena?", "serenense", 200, 200)
    failed = _answer(comparison, "base", other, cache)  # the measure fails, the answer stays
    assert failed["answer"] is not None and "ref_logprob" not in failed["metrics"]
    off = list(_stream(comparison, "base", other, cache, measures=[]))[-1]
    assert not {"ref_logprob", "similarity", "portuguese", "faithfulness"} & set(off["metrics"])


def test_the_ask_tab_scores_with_keep_accents(comparison, tmp_path):
    """A cached answer "botanica" to the reference "botânica": a hit folding accents, a miss
    keeping them (eval.keep_accents), as `compara batch` scores it."""
    from compara.pipeline import ANSWER_FIELDS, AnswerCache

    cache = AnswerCache(tmp_path / "answers.sqlite")
    q = rounds.typed_question("De que ciência era Ana Lúcia Prado?", "botânica", 200, 200)
    prompt = comparison.prepare("base", q.question).prompt
    cache.put(comparison.cache_key("base", prompt),
              {**dict.fromkeys(ANSWER_FIELDS), "answer": "Ela era da botanica.", "prompt": prompt,
               "passages": [], "tokens_in": 1, "tokens_out": 5, "latency_s": 0.1,
               "stopped_on_eos": True, "finish_reason": "eos", "truncated_prompt": False})
    folded = _answer(comparison, "base", q, cache)
    kept = list(_stream(comparison, "base", q, cache, keep_accents=True))[-1]
    assert folded["cached"] and kept["cached"] and kept["answer"] == "Ela era da botanica."
    assert folded["metrics"]["contains"] == 1.0 and kept["metrics"]["contains"] == 0.0


# -- the arms in the app's state ----------------------------------------------------------------

def test_the_model_key_holds_every_adapter_the_arms_use_and_the_arms(tmp_path):
    from compara.app import state

    folders = []
    for name in ("main", "r64"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"w" * 10)
        folders.append(folder)
    cfg = ExperimentConfig.from_dict({
        "paths": {"adapter": str(folders[0])},
        "arms": [{"name": "base"}, {"name": "finetuned", "adapter": True},
                 {"name": "ft-r64", "adapter": str(folders[1])},
                 {"name": "ft-r64+rag", "adapter": str(folders[1]), "retrieval": True}]})
    assert state.adapter_folders(cfg) == [str(f.resolve()) for f in folders]  # each once
    key = json.loads(state.model_key(cfg))
    assert [a["path"] for a in key["adapters"]] == [str(f.resolve()) for f in folders]
    before = state.model_key(cfg)
    (folders[1] / "adapter_model.safetensors").write_bytes(b"w" * 11)  # retrained
    assert state.model_key(cfg) != before
    again = state.model_key(cfg)
    fewer = cfg.replace(arms=cfg.arms[:2])
    assert state.model_key(fewer) != again  # another arms: list, another comparison
    assert json.loads(state.model_key(fewer))["adapters"][0]["path"] == str(folders[0].resolve())


def test_warm_up_runs_each_adapter_state_once():
    from types import SimpleNamespace

    from compara.app import state
    from compara.arms import Arm
    from core.config import GenerationConfig

    arms = {a.name: a for a in (Arm("base"), Arm("rag", retrieval=object()),
                                Arm("ft", adapter="/a/main"), Arm("ft+rag", adapter="/a/main"),
                                Arm("r64", adapter="/a/r64"))}
    warmed = []
    comparison = SimpleNamespace(arms=list(arms), arm=arms.get,
                                 decoding=GenerationConfig(max_new_tokens=64))
    comparison.with_settings = lambda decoding: SimpleNamespace(
        generate_prompts=lambda arm, prompts: warmed.append((arm, decoding.max_new_tokens)))
    state.warm_up(comparison)
    assert warmed == [("base", 1), ("ft", 1), ("r64", 1)]


def test_the_browser_check_looks_for_every_arm_name_and_label():
    from compara.app.check import hidden_in_blind, names_in
    from compara.arms import experiment_arms

    cfg = ExperimentConfig.from_dict({"arms": [
        {"name": "base"}, {"name": "rag", "retrieval": True},
        {"name": "rag-k1", "retrieval": {"k": 1}, "label": {"pt": "Denso", "en": "Dense"}}]})
    hidden = hidden_in_blind(experiment_arms(cfg))
    assert {"base", "Base", "rag", "Base + RAG", "rag-k1", "Denso", "Dense",
            "st-key-rag-k1"} <= set(hidden)
    assert names_in("<div class='st-key-answer-1-A'>Resposta A</div> fragment database",
                    hidden) == []
    assert names_in("<h4>A · Denso</h4>", hidden) == ["Denso"]
    assert {"rag-k1", "st-key-rag-k1"} <= set(names_in("<div class='st-key-rag-k1'>", hidden))


def test_the_learn_tab_describes_any_arm():
    from compara.app.teach import ARMS_TEXT, arms_text
    from compara.arms import experiment_arms

    cfg = ExperimentConfig.from_dict({"arms": [
        {"name": "base"}, {"name": "rag", "retrieval": {"retriever": "dense"}},
        {"name": "ft-r64", "adapter": "adapters/r64", "label": {"pt": "Ajustado r64"}}]})
    text = arms_text(cfg, Tr("pt", experiment_arms(cfg)))
    parts = text.split("\n\n")
    assert parts[0] == ARMS_TEXT["pt"]["base"]
    assert parts[1].startswith("**Base + RAG** (`rag`).") and "retriever = dense" in parts[1]
    assert parts[2].startswith("**Ajustado r64** (`ft-r64`). O adaptador `r64` ligado")
    assert arms_text(ExperimentConfig(), Tr("en")) == "\n\n".join(ARMS_TEXT["en"].values())
